//! A real Azure Blob Storage emulator on 127.0.0.1 for the tests: Microsoft's Azurite
//! (npm `azurite@3.35.0`, installed into the tools dir by `scripts/test-servers.sh`), one
//! in-memory process per `Azurite`, killed on drop. A test that needs it fails (never skips)
//! when it is missing.
//!
//! The account and key are Azurite's well-known development values, public test values.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use gobuildcache::config::{AzureSettings, Secret};
use gobuildcache::store::azure::AzureBackend;
use gobuildcache::store::{Backend, Payload};
use sha2::{Digest, Sha256};

use crate::moto::block_on;
use crate::server::{Process, Spec};
use crate::util::http_request;

pub const ACCOUNT: &str = "devstoreaccount1";
pub const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Where `scripts/test-servers.sh` installs Azurite.
pub fn binary() -> PathBuf {
    let tools = std::env::var_os("GOBUILDCACHE_TOOLS")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("gobuildcache-tools"))
        })
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/gobuildcache-tools")
        });
    let p = tools.join("azurite/node_modules/.bin/azurite-blob");
    assert!(
        p.is_file(),
        "Azurite is missing ({} not found): run `bash scripts/test-servers.sh` \
         (it installs the npm package azurite@3.35.0)",
        p.display()
    );
    p
}

pub struct Azurite {
    server: Process,
    port: u16,
}

impl Azurite {
    /// Starts an in-memory blob service and waits (bounded) until it answers.
    pub fn start() -> Azurite {
        let bin = binary();
        let server = Process::start(Spec {
            name: "azurite",
            how: "Azurite is missing: run `bash scripts/test-servers.sh`",
            ready_within: Duration::from_secs(30),
            command: Box::new(move |port, dir| {
                let mut c = Command::new(&bin);
                c.args(["--blobHost", "127.0.0.1", "--blobPort"])
                    .arg(port.to_string())
                    .args([
                        "--inMemoryPersistence",
                        "--skipApiVersionCheck",
                        "--disableTelemetry",
                        "--silent",
                    ])
                    // Its debug log and nothing else land in the cwd (no --location with
                    // in-memory persistence).
                    .current_dir(dir);
                c
            }),
            ready: Box::new(|port| http_request(port, "GET", "/", None, b"").is_ok()),
        });
        Azurite {
            port: server.port,
            server,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The blob service URL for `127.0.0.1:port` (the server, or a proxy in front of it).
    pub fn endpoint_for(port: u16) -> String {
        format!("http://127.0.0.1:{port}/{ACCOUNT}")
    }

    /// A connection string as Azurite documents it, for the service at `port`.
    pub fn connection_string_for(port: u16) -> String {
        format!(
            "DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};BlobEndpoint={};",
            Azurite::endpoint_for(port)
        )
    }

    /// The helper's environment for this server and `container`, through `port` (the
    /// server's own, or a proxy's).
    pub fn env_via(port: u16, container: &str) -> Vec<(String, String)> {
        vec![
            ("GOBUILDCACHE_BACKEND".into(), "azure".into()),
            ("GOBUILDCACHE_AZURE_CONTAINER".into(), container.into()),
            (
                "GOBUILDCACHE_AZURE_STORAGE_CONNECTION_STRING".into(),
                Azurite::connection_string_for(port),
            ),
        ]
    }

    pub fn env(&self, container: &str) -> Vec<(String, String)> {
        Azurite::env_via(self.port, container)
    }

    pub fn settings(&self) -> AzureSettings {
        AzureSettings {
            connection_string: Some(Secret::new(Azurite::connection_string_for(self.port))),
            ..AzureSettings::default()
        }
    }

    /// Our backend on this server and `container`.
    pub fn backend(&self, container: &str) -> AzureBackend {
        AzureBackend::new(container, &self.settings())
            .unwrap_or_else(|e| panic!("AzureBackend::new({container}): {e}"))
    }

    /// Creates a container: a Put Container signed with the development key (Shared Key).
    pub fn create_container(&self, name: &str) {
        let date = http_date(std::time::SystemTime::now());
        let version = "2021-08-06";
        let to_sign = format!(
            "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n/{ACCOUNT}/{ACCOUNT}/{name}\nrestype:container"
        );
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let sig = b64.encode(hmac_sha256(&b64.decode(KEY).unwrap(), to_sign.as_bytes()));
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "PUT /{ACCOUNT}/{name}?restype=container HTTP/1.0\r\nHost: 127.0.0.1:{}\r\n\
             x-ms-date: {date}\r\nx-ms-version: {version}\r\n\
             Authorization: SharedKey {ACCOUNT}:{sig}\r\nContent-Length: 0\r\n\r\n",
            self.port
        )
        .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        assert!(
            resp.starts_with("HTTP/1.1 201") || resp.starts_with("HTTP/1.0 201"),
            "creating container {name}: {resp}"
        );
    }

    /// Every blob name in `container`, sorted.
    pub fn keys(&self, container: &str) -> Vec<String> {
        let b = self.backend(container);
        block_on(async { b.list("").await.unwrap() })
            .into_iter()
            .map(|o| o.key)
            .collect()
    }

    /// A blob's bytes, read through our backend; `None` if missing.
    pub fn get_object(&self, container: &str, key: &str) -> Option<Vec<u8>> {
        let b = self.backend(container);
        block_on(async {
            use tokio::io::AsyncReadExt;
            let mut r = b.get(key).await.unwrap()?;
            let mut v = Vec::new();
            r.read_to_end(&mut v).await.unwrap();
            Some(v)
        })
    }

    /// Writes a blob, replacing any (our puts are create-only: delete first).
    pub fn put_object(&self, container: &str, key: &str, data: &[u8]) {
        let b = self.backend(container);
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), data).unwrap();
        block_on(async {
            b.delete(key).await.unwrap();
            b.put(key, &Payload::file(f.path(), data.len() as u64))
                .await
                .unwrap();
        });
    }

    /// Kills the server; idempotent.
    pub fn stop(&mut self) {
        self.server.stop();
    }

    pub fn log(&self) -> String {
        self.server.log()
    }
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .to_vec()
}

/// RFC 1123 date, as `x-ms-date` wants it.
fn http_date(t: std::time::SystemTime) -> String {
    let secs = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let wd = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][days.rem_euclid(7) as usize];
    let mon = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(m - 1) as usize];
    format!(
        "{wd}, {d:02} {mon} {y} {:02}:{:02}:{:02} GMT",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[test]
fn http_dates() {
    let t = std::time::UNIX_EPOCH + Duration::from_secs(1_796_040_000);
    assert_eq!(http_date(t), "Mon, 30 Nov 2026 12:00:00 GMT");
}
