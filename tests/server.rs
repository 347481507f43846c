//! One child-process harness for the test servers (moto_server, fake-gcs-server, Azurite,
//! wsgidav/rclone, toxiproxy): each picks a free port, starts its process with its output in
//! a log file (never an undrained pipe), waits a bounded time until it answers, starts again
//! on a new port if it died at once (another process can take a port between picking and
//! binding), and is killed on drop. Each server's file says only how to start and ask it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::free_port;

/// The command for a server on a port, given its private temp dir.
pub type CommandFn = Box<dyn Fn(u16, &Path) -> Command + Send + Sync>;
/// True once the server on a port answers.
pub type ReadyFn = Box<dyn Fn(u16) -> bool + Send + Sync>;

/// How to run one kind of server.
pub struct Spec {
    /// For messages and the temp dir's name.
    pub name: &'static str,
    /// What to tell a developer whose machine lacks the server.
    pub how: &'static str,
    /// How long it may take to answer after starting.
    pub ready_within: Duration,
    /// The command for the server on `port`, with `dir` its private temp dir.
    pub command: CommandFn,
    /// True once the server on `port` answers.
    pub ready: ReadyFn,
}

pub struct Process {
    spec: Spec,
    child: Option<Child>,
    pub port: u16,
    log: PathBuf,
    dir: tempfile::TempDir,
}

impl Process {
    /// Starts the server and waits until it answers; panics with its log if it never does.
    pub fn start(spec: Spec) -> Process {
        let dir = tempfile::Builder::new()
            .prefix(&format!("gbc-{}-", spec.name))
            .tempdir()
            .unwrap();
        let mut p = Process {
            log: dir.path().join("server.log"),
            spec,
            child: None,
            port: 0,
            dir,
        };
        for _ in 0..3 {
            p.port = free_port();
            if p.spawn() {
                return p;
            }
        }
        panic!("{} did not start; its log:\n{}", p.spec.name, p.log());
    }

    /// Starts the process on `self.port`; true once it answers.
    fn spawn(&mut self) -> bool {
        self.stop();
        let mut cmd = (self.spec.command)(self.port, self.dir.path());
        // Servers log to either stream, some a line per request: one file, never a pipe.
        let log = std::fs::File::create(&self.log).unwrap();
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        match cmd.spawn() {
            Ok(c) => self.child = Some(c),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!("{}", self.spec.how),
            Err(e) => panic!("starting {}: {e}", self.spec.name),
        }
        let start = Instant::now();
        while start.elapsed() < self.spec.ready_within {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                return false;
            }
            if (self.spec.ready)(self.port) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Starts the server again on the same port (same endpoint); what it held in memory is
    /// gone.
    pub fn restart(&mut self) {
        if !self.spawn() {
            panic!(
                "{} did not restart on port {}; its log:\n{}",
                self.spec.name,
                self.port,
                self.log()
            );
        }
    }

    /// Kills the server (e.g. "the store died mid-build"); idempotent.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The server's private temp dir (removed on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's stderr so far, for assertion messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}
