//! A real TCP fault proxy for the tests: Shopify's toxiproxy (`toxiproxy-server`, installed by
//! `scripts/test-servers.sh`), one process per `Toxiproxy`, its API on a free port of
//! 127.0.0.1, killed on drop. A test that needs it fails (never skips) when it is missing.
//!
//! A [`Proxy`] listens on 127.0.0.1 and forwards to a test server (moto_server,
//! fake-gcs-server); [`Toxic`]s added to it slow, cut or black-hole the traffic, and
//! [`Proxy::set_enabled`] drops every connection and refuses new ones.

#![allow(dead_code)]

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::server::{Process, Spec};
use crate::util::http_request;

const HOW: &str = "toxiproxy-server is not on PATH: run `bash scripts/test-servers.sh` and put \
                   ~/.cache/gobuildcache-tools on PATH (scripts/test.sh does both)";

pub struct Toxiproxy {
    server: Process,
    api: u16,
}

/// Which direction a toxic acts on: `Downstream` is server → client (response bodies),
/// `Upstream` client → server (request bodies, e.g. uploads).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Upstream,
    Downstream,
}

impl Stream {
    fn as_str(self) -> &'static str {
        match self {
            Stream::Upstream => "upstream",
            Stream::Downstream => "downstream",
        }
    }
}

/// The toxics this suite uses (toxiproxy's names and attributes; times in milliseconds).
#[derive(Clone, Debug)]
pub enum Toxic {
    /// Delays all data by `ms` (± `jitter_ms`).
    Latency { ms: u64, jitter_ms: u64 },
    /// Caps each connection at `kb_per_sec` KB/s.
    Bandwidth { kb_per_sec: u64 },
    /// Closes each connection once `bytes` have passed (a body cut short mid-stream).
    LimitData { bytes: u64 },
    /// Resets each connection (TCP RST) after `ms`; 0 resets at once.
    ResetPeer { ms: u64 },
    /// Passes no data and closes the connection after `ms`; 0 never closes it: a server that
    /// accepts and never answers.
    Timeout { ms: u64 },
    /// Passes data in slices of about `bytes`, waiting `delay_ms` between them (a server that
    /// sends its headers, then stalls the body).
    Slicer { bytes: u64, delay_ms: u64 },
}

impl Toxic {
    fn kind(&self) -> &'static str {
        match self {
            Toxic::Latency { .. } => "latency",
            Toxic::Bandwidth { .. } => "bandwidth",
            Toxic::LimitData { .. } => "limit_data",
            Toxic::ResetPeer { .. } => "reset_peer",
            Toxic::Timeout { .. } => "timeout",
            Toxic::Slicer { .. } => "slicer",
        }
    }

    fn attributes(&self) -> Value {
        match *self {
            Toxic::Latency { ms, jitter_ms } => json!({"latency": ms, "jitter": jitter_ms}),
            Toxic::Bandwidth { kb_per_sec } => json!({"rate": kb_per_sec}),
            Toxic::LimitData { bytes } => json!({"bytes": bytes}),
            Toxic::ResetPeer { ms } => json!({"timeout": ms}),
            Toxic::Timeout { ms } => json!({"timeout": ms}),
            // toxiproxy takes the slicer's delay in microseconds.
            Toxic::Slicer { bytes, delay_ms } => {
                json!({"average_size": bytes, "size_variation": 0, "delay": delay_ms * 1000})
            }
        }
    }
}

impl Toxiproxy {
    /// Starts the server and waits (bounded) until its API answers.
    pub fn start() -> Toxiproxy {
        let server = Process::start(Spec {
            name: "toxiproxy-server",
            how: HOW,
            ready_within: Duration::from_secs(20),
            command: Box::new(|port, _| {
                let mut c = Command::new("toxiproxy-server");
                c.args(["-host", "127.0.0.1", "-port"])
                    .arg(port.to_string());
                c
            }),
            ready: Box::new(|port| {
                matches!(
                    http_request(port, "GET", "/version", None, b""),
                    Ok((200, _))
                )
            }),
        });
        Toxiproxy {
            api: server.port,
            server,
        }
    }

    /// A new proxy named `name` on a free port of 127.0.0.1, forwarding to
    /// `127.0.0.1:upstream_port`, enabled and without toxics.
    pub fn proxy(&self, name: &str, upstream_port: u16) -> Proxy {
        // Port 0: toxiproxy binds a free port itself and reports it, so no other process can
        // take it in between; re-enabling a disabled proxy binds that same port again.
        let body = json!({
            "name": name,
            "listen": "127.0.0.1:0",
            "upstream": format!("127.0.0.1:{upstream_port}"),
            "enabled": true,
        });
        let v = api(self.api, "POST", "/proxies", &body, 201);
        let listen = v["listen"].as_str().expect("listen address");
        let port = listen
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("bad listen address {listen}"));
        Proxy {
            api: self.api,
            name: name.to_string(),
            port,
        }
    }

    pub fn api_port(&self) -> u16 {
        self.api
    }

    /// The server's log so far, for assertion messages.
    pub fn log(&self) -> String {
        self.server.log()
    }

    pub fn stop(&mut self) {
        self.server.stop();
    }
}

/// One proxy of a running [`Toxiproxy`] (it does not keep the server alive).
#[derive(Clone, Debug)]
pub struct Proxy {
    api: u16,
    pub name: String,
    port: u16,
}

impl Proxy {
    /// The port clients connect to instead of the server's.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`: the endpoint to give the helper instead of the server's.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Adds a toxic acting on every connection, new and open ones.
    pub fn add(&self, name: &str, stream: Stream, toxic: Toxic) {
        self.add_with_toxicity(name, stream, toxic, 1.0)
    }

    /// Adds a toxic acting on a random `toxicity` fraction (0.0-1.0) of connections.
    pub fn add_with_toxicity(&self, name: &str, stream: Stream, toxic: Toxic, toxicity: f64) {
        let body = json!({
            "name": name,
            "type": toxic.kind(),
            "stream": stream.as_str(),
            "toxicity": toxicity,
            "attributes": toxic.attributes(),
        });
        api(
            self.api,
            "POST",
            &format!("/proxies/{}/toxics", self.name),
            &body,
            200,
        );
    }

    /// Removes a toxic. Toxiproxy answers 503 when its links are slow to let go of a
    /// latency toxic still holding data (seen with 3 s of latency): that is retried, and a
    /// 404 after a retry means the earlier call did remove it.
    pub fn remove(&self, name: &str) {
        for attempt in 1.. {
            let (status, resp) = http_request(
                self.api,
                "DELETE",
                &format!("/proxies/{}/toxics/{name}", self.name),
                None,
                b"",
            )
            .unwrap_or_else(|e| panic!("toxiproxy API: {e}"));
            match status {
                204 => return,
                404 if attempt > 1 => return,
                503 if attempt < 5 => std::thread::sleep(Duration::from_secs(1)),
                _ => panic!(
                    "removing toxic {name}: {status} {}",
                    String::from_utf8_lossy(&resp)
                ),
            }
        }
    }

    /// Removes every toxic of this proxy.
    pub fn clear(&self) {
        let (status, resp) = http_request(
            self.api,
            "GET",
            &format!("/proxies/{}/toxics", self.name),
            None,
            b"",
        )
        .unwrap_or_else(|e| panic!("toxiproxy API: {e}"));
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&resp));
        let toxics: Vec<Value> = serde_json::from_slice(&resp).unwrap();
        for t in toxics {
            self.remove(t["name"].as_str().unwrap());
        }
    }

    /// Disabled: every open connection is closed and new ones are refused ("the server
    /// went away"); enabled again: it listens on the same port.
    pub fn set_enabled(&self, enabled: bool) {
        api(
            self.api,
            "POST",
            &format!("/proxies/{}", self.name),
            &json!({ "enabled": enabled }),
            200,
        );
    }
}

/// One JSON call to the API; panics unless the status is `want`.
fn api(port: u16, method: &str, path: &str, body: &Value, want: u16) -> Value {
    let (status, resp) = http_request(
        port,
        method,
        path,
        Some("application/json"),
        body.to_string().as_bytes(),
    )
    .unwrap_or_else(|e| panic!("toxiproxy API {method} {path}: {e}"));
    assert_eq!(
        status,
        want,
        "toxiproxy API {method} {path}: {}",
        String::from_utf8_lossy(&resp)
    );
    serde_json::from_slice(&resp).unwrap_or(Value::Null)
}

/// The harness itself: a proxy forwards, a black hole holds, a disabled proxy refuses and
/// comes back on the same port.
#[test]
fn proxy_forwards_and_faults() {
    use std::io::{Read, Write};
    let tp = Toxiproxy::start();
    let echo = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let echo_port = echo.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in echo.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    let p = tp.proxy("echo", echo_port);
    let roundtrip = || -> std::io::Result<Vec<u8>> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", p.port()))?;
        s.set_read_timeout(Some(Duration::from_millis(1500)))?;
        s.write_all(b"ping")?;
        let mut got = [0u8; 4];
        s.read_exact(&mut got)?;
        Ok(got.to_vec())
    };
    assert_eq!(roundtrip().unwrap(), b"ping");

    p.add("hole", Stream::Downstream, Toxic::Timeout { ms: 0 });
    assert!(roundtrip().is_err(), "a black hole answers nothing");
    p.clear();
    assert_eq!(roundtrip().unwrap(), b"ping");

    p.set_enabled(false);
    assert!(roundtrip().is_err(), "a disabled proxy refuses");
    p.set_enabled(true);
    assert_eq!(roundtrip().unwrap(), b"ping");
}
