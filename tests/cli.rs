//! The binary's configuration surface: errors are one clear line and never hang the go command.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util::*;

fn helper(t: &TestDir) -> Command {
    let mut c = Command::new(bin());
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", t.path("home"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn run(mut c: Command, input: &str) -> std::process::Output {
    let mut child = c.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(input.as_bytes());
    drop(stdin);
    wait_bounded(child, Duration::from_secs(30), "gobuildcache")
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

// A build without the store says which cargo feature adds it, before asking for a bucket.
const S3_NO_BUCKET: &str = if cfg!(feature = "s3") {
    "s3-bucket"
} else {
    "cargo feature \"s3\""
};
const AZURE_NO_CONTAINER: &str = if cfg!(feature = "azure") {
    "azure-container"
} else {
    "cargo feature \"azure\""
};
const HTTP_NO_URL: &str = if cfg!(feature = "http") {
    "http-url"
} else {
    "cargo feature \"http\""
};

#[cfg(not(all(feature = "s3", feature = "gcs")))]
#[test]
fn a_compiled_out_store_is_one_line_naming_its_feature() {
    let t = TestDir::new();
    for (name, on) in [("s3", cfg!(feature = "s3")), ("gcs", cfg!(feature = "gcs"))] {
        if on {
            continue;
        }
        let mut c = helper(&t);
        c.args(["-backend", name, &format!("-{name}-bucket"), "b"])
            .env("GOBUILDCACHE_CACHE_DIR", t.path("c"));
        let o = run(c, "");
        let err = stderr(&o);
        assert!(!o.status.success(), "{name} was accepted: {err}");
        assert!(
            err.contains(&format!("cargo feature \"{name}\"")) && err.contains("flag -backend"),
            "{err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(o.stdout.is_empty(), "no handshake without the store");
    }
}

#[test]
fn bad_values_are_one_line_naming_their_source() {
    let t = TestDir::new();
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str], &'a str);
    let cases: &[Case] = &[
        (
            &[("GOBUILDCACHE_ERROR_RATE", "abc")],
            &[],
            "GOBUILDCACHE_ERROR_RATE",
        ),
        (&[("ERROR_RATE", "2")], &[], "ERROR_RATE"),
        (&[], &["-backend", "ftp"], "flag -backend"),
        (&[("GOBUILDCACHE_BACKEND", "s3")], &[], S3_NO_BUCKET),
        (
            &[("GOBUILDCACHE_BACKEND", "azure")],
            &[],
            AZURE_NO_CONTAINER,
        ),
        (&[], &["-backend", "http"], HTTP_NO_URL),
        (
            &[("GOBUILDCACHE_MAX_SIZE", "lots")],
            &[],
            "GOBUILDCACHE_MAX_SIZE",
        ),
        (&[], &["-debug=perhaps"], "flag -debug"),
    ];
    for (env, args, want) in cases {
        let mut c = helper(&t);
        c.args(*args).env("GOBUILDCACHE_CACHE_DIR", t.path("c"));
        for (k, v) in *env {
            c.env(k, v);
        }
        let o = run(c, "");
        let err = stderr(&o);
        assert!(!o.status.success(), "{env:?} {args:?} was accepted");
        assert!(err.contains(want), "{env:?} {args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(o.stdout.is_empty(), "no handshake on a bad config");
    }
}

#[test]
fn an_unusable_cache_dir_names_its_flag() {
    let t = TestDir::new();
    let file = t.path("file");
    std::fs::write(&file, b"").unwrap();
    let mut c = helper(&t);
    c.arg("-cache-dir").arg(&file);
    let o = run(c, "");
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("flag -cache-dir") && err.contains("file"),
        "{err}"
    );
}

#[test]
fn a_bad_config_fails_the_go_command_fast() {
    let t = TestDir::new();
    let module = t.path("mod");
    write_module(&module);
    let mut go = GoEnv::ours(&t, &module, &t.path("cache"), &t.path("s.json"));
    go.extra_env
        .push(("GOBUILDCACHE_ERROR_RATE".into(), "abc".into()));
    let out = go.run(&["build", "./..."]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("GOBUILDCACHE_ERROR_RATE"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn flag_spellings_and_precedence() {
    let t = TestDir::new();
    let stats = t.path("s.json");
    // Env says one dir, the single-dash flag another: the flag wins.
    let mut c = helper(&t);
    c.env("GOBUILDCACHE_CACHE_DIR", t.path("from-env"))
        .args(["-cache-dir", t.path("from-flag").to_str().unwrap()])
        .arg(format!("--stats-json={}", stats.display()))
        .arg("-stats=false");
    let o = run(c, "{\"ID\":1,\"Command\":\"close\"}\n");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(t.path("from-flag/v1").is_dir());
    assert!(!t.path("from-env").exists());
    assert!(stats.exists());
    assert!(
        stderr(&o).is_empty(),
        "-stats=false prints nothing: {}",
        stderr(&o)
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        out,
        "{\"ID\":0,\"KnownCommands\":[\"get\",\"put\",\"close\"]}\n{\"ID\":1}\n"
    );

    // An empty prefixed variable falls through to the plain one.
    let mut c = helper(&t);
    c.env("GOBUILDCACHE_CACHE_DIR", "")
        .env("CACHE_DIR", t.path("plain"));
    let o = run(c, "{\"ID\":1,\"Command\":\"close\"}\n");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(t.path("plain/v1").is_dir());
    assert!(
        stderr(&o).contains("gobuildcache: 0 gets"),
        "stats on by default"
    );
}

#[test]
fn garbage_on_stdin_exits_non_zero_with_a_message() {
    let t = TestDir::new();
    let mut c = helper(&t);
    c.arg("-cache-dir").arg(t.path("c"));
    let o = run(c, "this is not json\n");
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("malformed request"), "{}", stderr(&o));
}

#[test]
fn clear_local_and_help() {
    let t = TestDir::new();
    let cache = t.path("c");
    let mut c = helper(&t);
    c.arg("-cache-dir").arg(&cache);
    let put_body = "{\"ID\":1,\"Command\":\"put\",\"ActionID\":\"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\",\"OutputID\":\"LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=\",\"BodySize\":5}\n\n\"aGVsbG8=\"\n{\"ID\":2,\"Command\":\"close\"}\n";
    let o = run(c, put_body);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(files_under(&cache.join("v1/o")).len(), 1);

    let mut c = helper(&t);
    c.args(["clear-local", "-cache-dir"]).arg(&cache);
    let o = run(c, "");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(files_under(&cache.join("v1/o")).is_empty());

    let mut c = helper(&t);
    c.args(["clear-remote", "-cache-dir"]).arg(&cache);
    let o = run(c, "");
    assert!(!o.status.success(), "no remote configured");
    assert!(stderr(&o).contains("local only"), "{}", stderr(&o));

    let mut c = helper(&t);
    c.arg("help");
    let o = run(c, "");
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    for want in [
        "clear-local",
        "GOBUILDCACHE_CACHE_DIR",
        "-max-size",
        "GOCACHEPROG",
    ] {
        assert!(text.contains(want), "help lacks {want}");
    }
}
