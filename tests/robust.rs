//! Protocol robustness: hostile input through the whole server loop (in memory and through
//! the real binary's stdin). No panic, bounded memory, a clear error, the session goes on where
//! the protocol allows, and nothing is stored for an invalid put.

use crate::hostile;

/// The long run's generator and checks (`tools/src/bin/fuzz_protocol.rs`), bounded for CI.
#[test]
fn randomized_hostile_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let cache = hostile::open_cache(dir.path());
    let mut tally = hostile::Tally::default();
    hostile::run(&cache, dir.path(), 7, 20_000, &mut tally);
    assert!(tally.inputs >= 20_000);
    // Every case came up, and each kind of session ending.
    for case in [
        "get",
        "put",
        "put-wrong-output-id",
        "put-body-short",
        "put-body-long",
        "put-base64-garbage",
        "put-base64-truncated",
        "put-huge-body-size",
        "put-body-missing",
        "put-negative-body-size",
        "bad-id-length",
        "bad-id-not-base64",
        "unknown-command",
        "wrong-shape",
        "duplicate-id",
        "blank",
        "string-or-odd-id",
        "absent-id",
        "json-nesting-bomb",
        "json-nesting-bomb-skipped",
        "invalid-utf8",
        "line-too-long",
        "input-ends-in-body",
        "not-a-request",
        "random-bytes",
        "mutated",
    ] {
        assert!(
            tally.cases.get(case).copied().unwrap_or(0) > 0,
            "{case} never ran: {:?}",
            tally.cases
        );
    }
    assert!(tally.closed > 0 && tally.eof > 0 && tally.fatal > 0);
    assert!(cache.stats().puts > 0);
}

use std::collections::HashMap;
use std::io::Cursor;
use std::path::Path;

use gobuildcache::{ActionId, Ended, Error, OutputId};
use serde_json::Value;

use crate::hostile::b64;
use crate::util::*;

/// The only ActionID the hostile requests name: it must never be stored.
const POISON: [u8; 32] = [0xEE; 32];
const BODY: &[u8] = b"hello";

pub fn put(id: i64, action: &[u8], output: &[u8], size: &str, body: Option<&str>) -> String {
    let mut s = format!(
        "{{\"ID\":{id},\"Command\":\"put\",\"ActionID\":\"{}\",\"OutputID\":\"{}\",\"BodySize\":{size}}}\n",
        b64(action),
        b64(output)
    );
    if let Some(b) = body {
        s += &format!("\n\"{b}\"\n");
    }
    s
}

pub fn get_raw(id: i64, action_json: &str) -> String {
    format!("{{\"ID\":{id},\"Command\":\"get\",\"ActionID\":{action_json}}}\n")
}

/// Hand-written hostile requests that each deserve an `Err` answer, after which the session
/// goes on. `id` is the request's ID.
fn answered_with_err(id: i64) -> Vec<(&'static str, String)> {
    let out = OutputId::of(BODY);
    let o = out.as_bytes();
    let hello = b64(BODY);
    let nest = "[".repeat(100_000) + &"]".repeat(100_000);
    vec![
        (
            "BodySize int64 max, short body",
            put(id, &POISON, o, "9223372036854775807", Some(&hello)),
        ),
        (
            "BodySize u64 max",
            put(id, &POISON, o, "18446744073709551615", Some(&hello)),
        ),
        (
            "BodySize beyond any file system",
            put(id, &POISON, o, "4611686018427387904", Some(&hello)),
        ),
        ("BodySize 1e30", put(id, &POISON, o, "1e30", Some(&hello))),
        ("BodySize negative", put(id, &POISON, o, "-5", None)),
        (
            "BodySize a string, no body",
            put(id, &POISON, o, "\"5\"", None),
        ),
        (
            "body shorter than BodySize",
            put(id, &POISON, o, "6", Some(&hello)),
        ),
        (
            "body longer than BodySize",
            put(id, &POISON, o, "4", Some(&hello)),
        ),
        ("body missing", put(id, &POISON, o, "5", None)),
        (
            "base64 with garbage",
            put(id, &POISON, o, "5", Some("aGV*bG8=")),
        ),
        ("base64 truncated", put(id, &POISON, o, "5", Some("aGVsbG"))),
        (
            "base64 with JSON escapes",
            put(id, &POISON, o, "5", Some("aGVs\\u0062G8=")),
        ),
        (
            "OutputID not the body's hash",
            put(id, &POISON, &[9; 32], "5", Some(&hello)),
        ),
        (
            "OutputID path traversal",
            put(id, &POISON, b"../../../../etc/passwd", "5", Some(&hello)),
        ),
        (
            "ActionID base64 of ../../etc/passwd",
            put(id, b"../../etc/passwd", o, "5", Some(&hello)),
        ),
        (
            "ActionID base64 of a/b",
            get_raw(id, &format!("\"{}\"", b64(b"a/b"))),
        ),
        (
            "ActionID base64 of NUL bytes",
            get_raw(id, &format!("\"{}\"", b64([0u8; 7]))),
        ),
        (
            "ActionID base64 of unicode",
            get_raw(id, &format!("\"{}\"", b64("ünïcödé/..".as_bytes()))),
        ),
        (
            "ActionID 31 bytes",
            get_raw(id, &format!("\"{}\"", b64([1u8; 31]))),
        ),
        (
            "ActionID 33 bytes",
            get_raw(id, &format!("\"{}\"", b64([1u8; 33]))),
        ),
        ("ActionID empty", get_raw(id, "\"\"")),
        (
            "ActionID raw traversal string",
            get_raw(id, "\"../../etc/passwd\""),
        ),
        ("ActionID raw a/b", get_raw(id, "\"a/b\"")),
        (
            "ActionID NUL escapes",
            get_raw(id, "\"\\u0000\\u0000\\u0000\\u0000\""),
        ),
        ("ActionID unicode", get_raw(id, "\"ünïcödé\"")),
        (
            "ActionID 64 hex digits (not base64 of 32 bytes)",
            get_raw(id, &format!("\"{}\"", "ab".repeat(32))),
        ),
        ("ActionID a number", get_raw(id, "7")),
        (
            "ActionID missing",
            format!("{{\"ID\":{id},\"Command\":\"get\"}}\n"),
        ),
        (
            "unknown command",
            format!("{{\"ID\":{id},\"Command\":\"delete\"}}\n"),
        ),
        (
            "empty command",
            format!("{{\"ID\":{id},\"Command\":\"\"}}\n"),
        ),
        (
            "command of the wrong type",
            format!("{{\"ID\":{id},\"Command\":[\"get\"]}}\n"),
        ),
        (
            "nesting bomb in an unknown field",
            format!("{{\"ID\":{id},\"Command\":\"get\",\"X\":{nest}}}\n"),
        ),
    ]
}

/// Input after which nothing can be trusted: the session ends with a protocol error naming
/// the problem. Each comes after a valid put, which must have been answered and stored.
fn fatal() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let a = b64([1u8; 32]);
    let nest = "[".repeat(100_000) + &"]".repeat(100_000);
    let mut utf8 = br#"{"ID":5,"Command":"get","ActionID":""#.to_vec();
    utf8.extend_from_slice(b"\xff\xfe\xc3\x28\"}\n");
    let mut long = b"{\"ID\":5,\"Command\":\"get\",\"X\":\"".to_vec();
    long.resize(3 << 20, b'x');
    long.extend_from_slice(b"\"}\n");
    let cut = put(
        5,
        &[2; 32],
        OutputId::of(BODY).as_bytes(),
        "5",
        Some("aGVsbG8="),
    );
    vec![
        (
            "string ID",
            format!("{{\"ID\":\"5\",\"Command\":\"get\",\"ActionID\":\"{a}\"}}\n").into_bytes(),
            "malformed request",
        ),
        (
            "absent ID",
            format!("{{\"Command\":\"get\",\"ActionID\":\"{a}\"}}\n").into_bytes(),
            "missing field `ID`",
        ),
        (
            "null ID",
            format!("{{\"ID\":null,\"Command\":\"get\",\"ActionID\":\"{a}\"}}\n").into_bytes(),
            "malformed request",
        ),
        (
            "fractional ID",
            format!("{{\"ID\":1.5,\"Command\":\"get\",\"ActionID\":\"{a}\"}}\n").into_bytes(),
            "malformed request",
        ),
        (
            "ID beyond int64",
            format!("{{\"ID\":9223372036854775808,\"Command\":\"get\",\"ActionID\":\"{a}\"}}\n")
                .into_bytes(),
            "malformed request",
        ),
        (
            "nesting bomb in a known field",
            get_raw(5, &nest).into_bytes(),
            "malformed request",
        ),
        ("invalid UTF-8", utf8, "malformed request"),
        (
            "not JSON",
            b"GET / HTTP/1.1\n".to_vec(),
            "malformed request",
        ),
        (
            "a JSON string where a request is due",
            b"\"aGVsbG8=\"\n".to_vec(),
            "malformed request",
        ),
        (
            "BodySize a string, body follows",
            put(
                5,
                &[2; 32],
                OutputId::of(BODY).as_bytes(),
                "\"5\"",
                Some("aGVsbG8="),
            )
            .into_bytes(),
            "malformed request",
        ),
        ("a 3 MB line", long, "longer than"),
        (
            "input ends inside a body",
            cut.as_bytes()[..cut.len() - 4].to_vec(),
            "inside",
        ),
    ]
}

/// A valid put of `body` under `action`.
pub fn good_put(id: i64, action: u8, body: &[u8]) -> String {
    let mut s = put(
        id,
        &[action; 32],
        OutputId::of(body).as_bytes(),
        &body.len().to_string(),
        None,
    );
    if !body.is_empty() {
        s += &format!("\n\"{}\"\n", b64(body));
    }
    s
}

pub fn responses(out: &[u8]) -> HashMap<i64, Vec<Value>> {
    let mut m: HashMap<i64, Vec<Value>> = HashMap::new();
    for l in out.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let v: Value = serde_json::from_slice(l).expect("every response is JSON");
        m.entry(v["ID"].as_i64().expect("every response has an ID"))
            .or_default()
            .push(v);
    }
    m
}

/// The input, the (ID, case) of each hostile request and the (ID, body) of each valid put.
type HostileSession = (String, Vec<(i64, &'static str)>, Vec<(i64, Vec<u8>)>);

/// One session with every in-step hostile request, each followed by a valid put and get.
fn hostile_session() -> HostileSession {
    let mut input = String::new();
    let mut bad = Vec::new();
    let mut good = Vec::new();
    let n = answered_with_err(0).len();
    for i in 0..n {
        let id = 100 + i as i64;
        let (name, text) = answered_with_err(id).swap_remove(i);
        input += &text;
        bad.push((id, name));
        let body = format!("body {i}").into_bytes();
        input += &good_put(1000 + i as i64, i as u8, &body);
        input += &get_raw(2000 + i as i64, &format!("\"{}\"", b64([i as u8; 32])));
        good.push((1000 + i as i64, body));
    }
    // A negative ID is still an ID; a repeated one is refused.
    input += &get_raw(-7, &format!("\"{}\"", b64([0u8; 32])));
    input += &get_raw(-7, &format!("\"{}\"", b64([0u8; 32])));
    bad.push((-7, "duplicate ID"));
    input += "{\"ID\":9999,\"Command\":\"close\"}\n";
    (input, bad, good)
}

fn check_hostile_session(dir: &Path, out: &[u8], bad: &[(i64, &str)], good: &[(i64, Vec<u8>)]) {
    let r = responses(out);
    for (id, name) in bad {
        let errs: Vec<&Value> = r[id].iter().filter(|v| v["Err"].is_string()).collect();
        assert_eq!(errs.len(), 1, "{name} (ID {id}): {:?}", r.get(id));
        let msg = errs[0]["Err"].as_str().unwrap();
        assert!(
            !msg.is_empty() && msg.len() < 400,
            "{name}: unclear error {msg:?}"
        );
    }
    for (i, (id, body)) in good.iter().enumerate() {
        let path = r[id][0]["DiskPath"]
            .as_str()
            .unwrap_or_else(|| panic!("put {id}: {:?}", r[id]));
        assert_eq!(&std::fs::read(path).unwrap(), body);
        let hit = &r[&(2000 + i as i64)][0];
        assert_eq!(
            hit["DiskPath"], path,
            "the session went on after a bad request"
        );
    }
    assert_eq!(r[&9999][0], serde_json::json!({"ID": 9999}));
    // Nothing was stored for an invalid put: the only bodies are the valid ones.
    let cache = hostile::open_cache(dir);
    assert!(cache
        .get(&ActionId::from_bytes(&POISON).unwrap())
        .unwrap()
        .is_none());
    assert_eq!(files_under(&dir.join("v1/o")).len(), good.len());
    assert!(files_under(&dir.join("v1/tmp")).is_empty());
}

#[test]
fn hand_written_hostile_requests_through_the_server_loop() {
    let dir = tempfile::tempdir().unwrap();
    let cache = hostile::open_cache(dir.path());
    let (input, bad, good) = hostile_session();
    let out = crate::hostile::Sink::default();
    let ended = gobuildcache::serve(&cache, Cursor::new(input), out.clone());
    assert_eq!(ended.unwrap(), Ended::Closed);
    let out = out.0.lock().unwrap().clone();
    check_hostile_session(dir.path(), &out, &bad, &good);
    // Each is counted: as a protocol error, or as a put error when the body did not match.
    let s = cache.stats();
    assert_eq!(s.protocol_errors + s.put_errors, bad.len() as u64, "{s:?}");
}

#[test]
fn hand_written_fatal_inputs_end_the_session_with_a_clear_error() {
    for (name, bytes, want) in fatal() {
        let dir = tempfile::tempdir().unwrap();
        let cache = hostile::open_cache(dir.path());
        let mut input = good_put(1, 1, BODY).into_bytes();
        input.extend_from_slice(&bytes);
        if !name.starts_with("input ends") {
            input.extend_from_slice(good_put(2, 2, b"after").as_bytes());
        }
        let out = crate::hostile::Sink::default();
        let ended = gobuildcache::serve(&cache, Cursor::new(input), out.clone());
        match ended {
            Err(Error::Protocol(m)) => assert!(m.contains(want), "{name}: {m}"),
            other => panic!("{name}: {other:?}"),
        }
        let r = responses(&out.0.lock().unwrap());
        assert!(
            r[&1][0]["DiskPath"].is_string(),
            "{name}: the put before was answered"
        );
        assert!(
            !r.contains_key(&2),
            "{name}: nothing after the break is trusted"
        );
        assert!(files_under(&dir.path().join("v1/tmp")).is_empty(), "{name}");
    }
}

/// The real binary on its stdin. Returns (exit status, stdout, stderr).
fn helper(dir: &Path, stats: &Path, input: Vec<u8>) -> (std::process::ExitStatus, Vec<u8>, String) {
    let args = [
        "-cache-dir",
        dir.to_str().unwrap(),
        "-stats-json",
        stats.to_str().unwrap(),
    ];
    let env = [("HOME".to_string(), dir.to_str().unwrap().to_string())];
    let out = run_helper(&args, &env, input);
    (
        out.status,
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_binary_survives_a_hostile_session() {
    let t = TestDir::new();
    let dir = t.path("cache");
    let stats_path = t.path("stats.json");
    let (input, bad, good) = hostile_session();
    let (status, out, err) = helper(&dir, &stats_path, input.into_bytes());
    assert!(status.success(), "{err}");
    check_hostile_session(&dir, &out, &bad, &good);
    // One clear line per kind of problem (protocol, refused put), the counts in the stats.
    let warns: Vec<&str> = err.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warns.len(), 2, "{err}");
    for kind in ["protocol", "put"] {
        let line = format!("further {kind} problems are counted");
        assert_eq!(
            warns.iter().filter(|w| w.contains(&line)).count(),
            1,
            "{err}"
        );
    }
    let s = stats(&stats_path);
    assert_eq!(s.protocol_errors + s.put_errors, bad.len() as u64, "{s:?}");
}

#[test]
fn the_binary_refuses_a_100_mb_line_in_bounded_memory() {
    let t = TestDir::new();
    let dir = t.path("cache");
    let stats_path = t.path("stats.json");
    let mut input = good_put(1, 1, BODY).into_bytes();
    input.extend_from_slice(b"{\"ID\":2,\"Command\":\"get\",\"X\":\"");
    input.resize(input.len() + (100 << 20), b'x');
    input.extend_from_slice(b"\"}\n");
    input.extend_from_slice(good_put(3, 3, b"after").as_bytes());
    let (status, out, err) = helper(&dir, &stats_path, input);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("gobuildcache: fatal:") && err.contains("longer than"),
        "{err}"
    );
    let r = responses(&out);
    assert!(r[&1][0]["DiskPath"].is_string());
    assert!(!r.contains_key(&2) && !r.contains_key(&3));
    let s = stats(&stats_path);
    // The line is skipped, not held: a few MiB of buffers, not 100.
    assert!(s.peak_rss_bytes > 0, "{s:?}");
    assert!(
        s.peak_rss_bytes < 40 << 20,
        "peak RSS {} bytes",
        s.peak_rss_bytes
    );
}

#[test]
fn the_binary_ends_on_untrustworthy_input_with_one_clear_line() {
    let t = TestDir::new();
    for (i, (name, bytes, want)) in fatal().into_iter().enumerate() {
        let dir = t.path(&format!("cache{i}"));
        let stats_path = t.path(&format!("stats{i}.json"));
        let mut input = good_put(1, 1, BODY).into_bytes();
        input.extend_from_slice(&bytes);
        let (status, out, err) = helper(&dir, &stats_path, input);
        assert_eq!(status.code(), Some(1), "{name}: {err}");
        let fatal: Vec<&str> = err
            .lines()
            .filter(|l| l.starts_with("gobuildcache: fatal:"))
            .collect();
        assert_eq!(fatal.len(), 1, "{name}: {err}");
        assert!(
            fatal[0].contains(want) && fatal[0].len() < 400,
            "{name}: {err}"
        );
        assert!(responses(&out)[&1][0]["DiskPath"].is_string(), "{name}");
    }
}
