//! The real go command with GOCACHEPROG set to our freshly built binary.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::util::*;

struct Setup {
    t: TestDir,
    module: std::path::PathBuf,
    cache: std::path::PathBuf,
}

fn setup() -> Setup {
    let t = TestDir::new();
    let module = t.path("mod");
    write_module(&module);
    let cache = t.path("cache");
    Setup { t, module, cache }
}

impl Setup {
    fn ours(&self, stats: &str) -> (GoEnv, std::path::PathBuf) {
        let s = self.t.path(stats);
        (GoEnv::ours(&self.t, &self.module, &self.cache, &s), s)
    }
}

#[test]
fn second_build_is_all_hits() {
    let s = setup();
    let (go, st1) = s.ours("s1.json");
    go.ok(&["build", "./..."]);
    let first = stats(&st1);
    assert!(first.misses > 0 && first.puts > 0, "{first:?}");
    assert_eq!(
        first.put_errors + first.get_errors + first.protocol_errors,
        0
    );

    // A fresh GOCACHE too, so every hit can only come from our cache dir.
    let (go, st2) = s.ours("s2.json");
    go.ok(&["build", "./..."]);
    assert_warm(&stats(&st2), 1);
    // Without a main package to link, every single get is a hit.
    let (go, st3) = s.ours("s3.json");
    go.ok(&["build", "./mathx", "./greet"]);
    let third = stats(&st3);
    assert_warm(&third, 0);
    assert_eq!(third.puts, 0);
}

#[test]
fn go_test_second_run_is_cached() {
    let s = setup();
    let (go, _) = s.ours("s1.json");
    let out = go.ok(&["test", "./..."]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("(cached)"), "{text}");
    let (go, st) = s.ours("s2.json");
    let out = go.ok(&["test", "./..."]);
    let text = String::from_utf8_lossy(&out.stdout);
    for pkg in ["example.com/gbctest/mathx", "example.com/gbctest/greet"] {
        let line = text.lines().find(|l| l.contains(pkg)).unwrap_or("");
        assert!(line.contains("(cached)"), "{pkg} not cached:\n{text}");
    }
    assert_warm(&stats(&st), 0);
}

#[test]
fn go_vet_and_list_export_work() {
    let s = setup();
    let (go, _) = s.ours("s1.json");
    go.ok(&["vet", "./..."]);
    // list -export needs the put answered with a DiskPath holding the export data.
    let out = go.ok(&["list", "-export", "-f", "{{.Export}}", "./greet", "./mathx"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let paths: Vec<&str> = text.lines().collect();
    assert_eq!(paths.len(), 2, "{text}");
    for p in paths {
        assert!(
            p.starts_with(s.cache.to_str().unwrap()),
            "{p} is not in our cache"
        );
        assert!(std::fs::metadata(p).unwrap().len() > 0);
    }
    // Second vet: all from the cache.
    let (go, st) = s.ours("s2.json");
    go.ok(&["vet", "./..."]);
    // The go command reruns vet on the packages named (one miss each, nothing put);
    // everything under them comes from the cache.
    assert_warm(&stats(&st), 3);
    assert_eq!(stats(&st).puts, 0);
}

#[test]
fn binaries_are_identical_to_native_ones() {
    let s = setup();
    let native = GoEnv::native(&s.t, &s.module, &s.t.path("native-gocache"));
    let out_native = s.t.path("app-native");
    native.ok(&["build", "-o", out_native.to_str().unwrap(), "./cmd/app"]);

    let (cold, _) = s.ours("s1.json");
    let out_cold = s.t.path("app-cold");
    cold.ok(&["build", "-o", out_cold.to_str().unwrap(), "./cmd/app"]);

    let (warm, st) = s.ours("s2.json");
    let out_warm = s.t.path("app-warm");
    warm.ok(&["build", "-o", out_warm.to_str().unwrap(), "./cmd/app"]);
    assert_warm(&stats(&st), 1);

    let n = std::fs::read(&out_native).unwrap();
    assert_eq!(
        n,
        std::fs::read(&out_cold).unwrap(),
        "cold build differs from native"
    );
    assert_eq!(
        n,
        std::fs::read(&out_warm).unwrap(),
        "warm build differs from native"
    );
    let run = std::process::Command::new(&out_warm).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&run.stdout).trim(),
        "\"hello WORLD 13\""
    );
}

#[test]
fn four_concurrent_builds_share_one_cache_dir() {
    let s = setup();
    let mut children = Vec::new();
    for i in 0..4 {
        let (go, st) = s.ours(&format!("c{i}.json"));
        let out = s.t.path(&format!("app{i}"));
        let args: Vec<String> = if i % 2 == 0 {
            vec![
                "build".into(),
                "-o".into(),
                out.to_str().unwrap().into(),
                "./cmd/app".into(),
            ]
        } else {
            vec!["test".into(), "./...".into()]
        };
        let child = go
            .command(&args.iter().map(String::as_str).collect::<Vec<_>>())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        children.push((child, st));
    }
    for (child, st) in children {
        let out = wait_bounded(child, Duration::from_secs(600), "concurrent go");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let st = stats(&st);
        assert_eq!(
            st.put_errors + st.get_errors + st.corrupt_dropped,
            0,
            "{st:?}"
        );
    }
    let a0 = std::fs::read(s.t.path("app0")).unwrap();
    assert_eq!(a0, std::fs::read(s.t.path("app2")).unwrap());
    assert!(
        files_under(&s.cache.join("v1/tmp")).is_empty(),
        "temp files left: {:?}",
        files_under(&s.cache.join("v1/tmp"))
    );
    assert!(assert_bodies_intact(&s.cache) > 0);
    // And the shared result is complete: a fifth build is all hits.
    let (go, st) = s.ours("c5.json");
    go.ok(&["build", "./..."]);
    assert_warm(&stats(&st), 1);
}

/// Our helper's PIDs among the go command's children.
fn helper_pids(go_pid: u32) -> Vec<i32> {
    let me = bin();
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the parenthesised command name: state, ppid, ...
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let ppid: u32 = rest
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
        if ppid == go_pid && exe.as_deref() == Some(me.as_path()) {
            pids.push(pid);
        }
    }
    pids
}

#[test]
fn a_helper_killed_mid_build_leaves_nothing_served_wrong() {
    let s = setup();
    for round in 0..3 {
        let (go, _) = s.ours(&format!("k{round}.json"));
        let mut child = go
            .command(&["build", "-a", "./..."])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Wait until puts are landing, then SIGKILL the helper in the middle of them.
        let start = Instant::now();
        let target = 10 + round * 15;
        let mut killed = false;
        while start.elapsed() < Duration::from_secs(120) {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            if files_under(&s.cache.join("v1/o")).len() >= target {
                for pid in helper_pids(child.id()) {
                    // SAFETY: plain kill(2) on a PID we just found as our helper.
                    unsafe { libc_kill(pid, 9) };
                    killed = true;
                }
                if killed {
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let out = wait_bounded(child, Duration::from_secs(300), "killed build");
        assert!(killed, "never caught the helper mid-build");
        assert!(
            !out.status.success(),
            "go build cannot succeed without its helper"
        );
        assert_bodies_intact(&s.cache);
    }
    // Whatever survived is whole, and a new build from it is correct.
    let (go, st) = s.ours("after.json");
    let app = s.t.path("app");
    go.ok(&["build", "-o", app.to_str().unwrap(), "./cmd/app"]);
    assert_eq!(stats(&st).corrupt_dropped, 0);
    let native = GoEnv::native(&s.t, &s.module, &s.t.path("native-gocache"));
    let app_native = s.t.path("app-native");
    native.ok(&["build", "-o", app_native.to_str().unwrap(), "./cmd/app"]);
    assert_eq!(
        std::fs::read(app).unwrap(),
        std::fs::read(app_native).unwrap()
    );
    // The killed helpers' temp files go in one trim cycle.
    let trim = std::process::Command::new(bin())
        .args([
            "trim",
            "-cache-dir",
            s.cache.to_str().unwrap(),
            "-stats=false",
        ])
        .output()
        .unwrap();
    assert!(
        trim.status.success(),
        "{}",
        String::from_utf8_lossy(&trim.stderr)
    );
    assert!(files_under(&s.cache.join("v1/tmp")).is_empty());
    assert!(files_under(&s.cache.join("v1/live")).is_empty());
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}
