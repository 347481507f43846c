//! Shared test plumbing: a private directory per test, a small Go module, and a way to run
//! the go command against our helper with nothing inherited from the developer's setup.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use gobuildcache::StatsSnapshot;

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_gobuildcache"))
}

/// The go command; a test that needs it fails (never skips) when it is missing.
pub fn go_path() -> PathBuf {
    let out = Command::new("go").arg("env").arg("GOROOT").output();
    match out {
        Ok(o) if o.status.success() => {
            let root = String::from_utf8(o.stdout).unwrap();
            PathBuf::from(root.trim()).join("bin").join("go")
        }
        _ => panic!("these tests need the `go` command (Go 1.24+) on PATH; install Go first"),
    }
}

pub struct TestDir {
    pub dir: tempfile::TempDir,
}

impl Default for TestDir {
    fn default() -> Self {
        Self::new()
    }
}

impl TestDir {
    pub fn new() -> TestDir {
        TestDir {
            dir: tempfile::Builder::new()
                .prefix("gbc-test-")
                .tempdir()
                .unwrap(),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
}

/// A module with a dependency chain, a test in each library and a main package.
pub fn write_module(root: &Path) {
    let files: &[(&str, &str)] = &[
        ("go.mod", "module example.com/gbctest\n\ngo 1.22\n"),
        (
            "mathx/mathx.go",
            "package mathx\n\n// Fib returns the nth Fibonacci number.\nfunc Fib(n int) int {\n\tif n < 2 {\n\t\treturn n\n\t}\n\treturn Fib(n-1) + Fib(n-2)\n}\n",
        ),
        (
            "mathx/mathx_test.go",
            "package mathx\n\nimport \"testing\"\n\nfunc TestFib(t *testing.T) {\n\tif Fib(10) != 55 {\n\t\tt.Fatal(Fib(10))\n\t}\n}\n",
        ),
        (
            "greet/greet.go",
            "package greet\n\nimport (\n\t\"fmt\"\n\t\"strings\"\n\n\t\"example.com/gbctest/mathx\"\n)\n\nfunc Hello(name string) string {\n\treturn fmt.Sprintf(\"hello %s %d\", strings.ToUpper(name), mathx.Fib(7))\n}\n",
        ),
        (
            "greet/greet_test.go",
            "package greet\n\nimport \"testing\"\n\nfunc TestHello(t *testing.T) {\n\tif got := Hello(\"go\"); got != \"hello GO 13\" {\n\t\tt.Fatal(got)\n\t}\n}\n",
        ),
        (
            "cmd/app/main.go",
            "package main\n\nimport (\n\t\"encoding/json\"\n\t\"os\"\n\n\t\"example.com/gbctest/greet\"\n)\n\nfunc main() {\n\tjson.NewEncoder(os.Stdout).Encode(greet.Hello(\"world\"))\n}\n",
        ),
    ];
    for (name, body) in files {
        write_old_file(&root.join(name), body);
    }
}

/// Writes a source file dated an hour ago: the go command does not index (so does not
/// cache) files modified in the last few seconds; old sources make a first build fill the
/// cache completely.
fn write_old_file(p: &Path, body: &str) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, body).unwrap();
    let f = std::fs::File::options().write(true).open(p).unwrap();
    f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(3600))
        .unwrap();
}

/// A warm build's gets are all hits, except `expected` lookups the go command never stores
/// a result for, such as linking a main package for `go build` (the native cache misses
/// there too).
pub fn assert_warm(s: &StatsSnapshot, expected: u64) {
    assert!(s.gets > 0, "{s:?}");
    assert_eq!(
        s.misses, expected,
        "only uncacheable actions may miss: {s:?}"
    );
    assert_eq!(s.hits + s.misses, s.gets);
    assert_eq!(s.corrupt_dropped + s.get_errors + s.put_errors, 0, "{s:?}");
}

/// One go command environment: private GOCACHE/GOPATH and (optionally) our helper.
pub struct GoEnv {
    pub module: PathBuf,
    pub gocache: PathBuf,
    pub gopath: PathBuf,
    /// `None`: Go's native cache. `Some(args)`: GOCACHEPROG = our binary + args.
    pub prog_args: Option<Vec<String>>,
    pub extra_env: Vec<(String, String)>,
}

impl GoEnv {
    /// Our helper on `cache_dir`, writing its stats to `stats`.
    pub fn ours(t: &TestDir, module: &Path, cache_dir: &Path, stats: &Path) -> GoEnv {
        GoEnv {
            module: module.to_path_buf(),
            gocache: t.path(&format!("gocache-{}", unique())),
            gopath: t.path("gopath"),
            prog_args: Some(vec![
                "-cache-dir".into(),
                cache_dir.to_str().unwrap().into(),
                "-stats-json".into(),
                stats.to_str().unwrap().into(),
            ]),
            extra_env: Vec::new(),
        }
    }

    pub fn native(t: &TestDir, module: &Path, gocache: &Path) -> GoEnv {
        GoEnv {
            module: module.to_path_buf(),
            gocache: gocache.to_path_buf(),
            gopath: t.path("gopath"),
            prog_args: None,
            extra_env: Vec::new(),
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(go_path());
        c.args(args).current_dir(&self.module).env_clear();
        for k in ["PATH", "HOME", "TMPDIR"] {
            if let Some(v) = std::env::var_os(k) {
                c.env(k, v);
            }
        }
        c.env("GOTOOLCHAIN", "local")
            .env("GOCACHE", &self.gocache)
            .env("GOPATH", &self.gopath)
            .env("GOFLAGS", "-mod=mod")
            .env("GOPROXY", "off")
            .env("GOENV", "off")
            .env("CGO_ENABLED", "0");
        if let Some(args) = &self.prog_args {
            let mut prog = bin().to_str().unwrap().to_string();
            for a in args {
                prog.push(' ');
                prog += a;
            }
            c.env("GOCACHEPROG", prog);
        }
        for (k, v) in &self.extra_env {
            c.env(k, v);
        }
        c
    }

    /// Runs a go command to completion (bounded: a hung helper fails the test).
    pub fn run(&self, args: &[&str]) -> Output {
        let child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting go");
        wait_bounded(
            child,
            Duration::from_secs(600),
            &format!("go {}", args.join(" ")),
        )
    }

    /// As [`run`], and the command must succeed.
    pub fn ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "go {} failed: {}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

pub fn wait_bounded(mut child: Child, limit: Duration, what: &str) -> Output {
    // Drain the pipes meanwhile: a child writing more than a pipe holds would block forever.
    fn drain<R: std::io::Read + Send + 'static>(r: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    }
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} did not finish within {limit:?}: {}",
                String::from_utf8_lossy(&err.join().unwrap())
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

pub fn stats(path: &Path) -> StatsSnapshot {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("reading stats {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

pub fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Files in a directory, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Every body in a cache dir hashes to its file name: nothing torn or foreign is stored.
pub fn assert_bodies_intact(cache_dir: &Path) -> usize {
    use sha2::Digest;
    let bodies = files_under(&cache_dir.join("v1/o"));
    for b in &bodies {
        let data = std::fs::read(b).unwrap();
        let name = b.file_name().unwrap().to_str().unwrap();
        let sum = sha2::Sha256::digest(&data);
        let hex: String = sum.iter().map(|x| format!("{x:02x}")).collect();
        assert_eq!(hex, name, "body {} does not match its name", b.display());
    }
    bodies.len()
}

// For the store harnesses (moto, fake_gcs, …), which the store features switch on.
#[allow(unused_imports)]
pub use crate::net::{free_port, http_request};

/// The smallest useful module for fault and load tests: a library with a test and a main
/// package importing only `os` and `strconv` (a cold build compiles little of the standard
/// library). `n` varies the module path, the code and the output, so modules built side by
/// side have distinct actions; [`small_module_output`] is what its binary prints.
pub fn write_small_module(root: &Path, n: u32) {
    let files = [
        ("go.mod".to_string(), format!("module example.com/small{n}\n\ngo 1.22\n")),
        (
            "lib/lib.go".to_string(),
            format!(
                "package lib\n\n// Sum adds the numbers, times {n}.\nfunc Sum(xs ...int) int {{\n\tt := 0\n\tfor _, x := range xs {{\n\t\tt += x\n\t}}\n\treturn t * {n}\n}}\n"
            ),
        ),
        (
            "lib/lib_test.go".to_string(),
            format!(
                "package lib\n\nimport \"testing\"\n\nfunc TestSum(t *testing.T) {{\n\tif got := Sum(1, 2, 3); got != 6*{n} {{\n\t\tt.Fatal(got)\n\t}}\n}}\n"
            ),
        ),
        (
            "cmd/app/main.go".to_string(),
            format!(
                "package main\n\nimport (\n\t\"os\"\n\t\"strconv\"\n\n\t\"example.com/small{n}/lib\"\n)\n\nfunc main() {{\n\tos.Stdout.WriteString(\"small{n} sum=\" + strconv.Itoa(lib.Sum(1, 2, 3, 4)) + \"\\n\")\n}}\n"
            ),
        ),
    ];
    for (name, body) in &files {
        write_old_file(&root.join(name), body);
    }
}

/// What the binary of [`write_small_module`]`(_, n)` prints.
pub fn small_module_output(n: u32) -> String {
    format!("small{n} sum={}\n", 10 * n)
}

/// Runs our binary with `args` and only `env` (plus PATH), feeding `input` on stdin from a
/// thread (the helper answers while we write); bounded.
pub fn run_helper(args: &[&str], env: &[(String, String)], input: Vec<u8>) -> Output {
    use std::io::Write;
    let mut c = Command::new(bin());
    c.args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c.spawn().expect("starting gobuildcache");
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = wait_bounded(child, Duration::from_secs(120), "gobuildcache");
    writer.join().unwrap();
    out
}
