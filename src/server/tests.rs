use std::collections::HashSet;
use std::io::{Cursor, Read};

use base64::Engine as _;
use proptest::prelude::*;
use serde_json::Value;

use super::*;
use crate::{ActionId, Config, OutputId};

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn cache(dir: &std::path::Path) -> Cache {
    let cfg = Config::builder()
        .flag("cache-dir", dir.to_str().unwrap())
        .flag("stats", "false")
        .build_with_env(&|_| None)
        .unwrap();
    Cache::open(cfg).unwrap()
}

/// A writer the test can read back after `serve` took ownership of it.
#[derive(Clone, Default)]
struct SharedBuf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for SharedBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn run(c: &Cache, input: impl Read) -> (Result<Ended>, Vec<Value>) {
    let buf = SharedBuf::default();
    let res = serve(c, input, buf.clone());
    let out = buf.0.lock().unwrap().clone();
    let lines = out
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).expect("every response is JSON"))
        .collect();
    (res, lines)
}

fn get(id: i64, action: u8) -> String {
    format!(
        "{{\"ID\":{id},\"Command\":\"get\",\"ActionID\":\"{}\"}}\n\n",
        b64(&[action; 32])
    )
}

fn put(id: i64, action: u8, body: &[u8]) -> String {
    let mut s = format!(
        "{{\"ID\":{id},\"Command\":\"put\",\"ActionID\":\"{}\",\"OutputID\":\"{}\",\"BodySize\":{}}}\n\n",
        b64(&[action; 32]),
        b64(OutputId::of(body).as_bytes()),
        body.len()
    );
    if !body.is_empty() {
        s += &format!("\"{}\"\n", b64(body));
    }
    s
}

const CLOSE: &str = "{\"ID\":999,\"Command\":\"close\"}\n";

fn by_id(resps: &[Value], id: i64) -> &Value {
    let found: Vec<&Value> = resps.iter().filter(|r| r["ID"] == id).collect();
    assert_eq!(found.len(), 1, "want one response for ID {id}: {resps:?}");
    found[0]
}

#[test]
fn a_session_round_trip() {
    let d = tempfile::tempdir().unwrap();
    let c = cache(d.path());
    let input = [
        get(1, 1),
        put(2, 1, b"hello"),
        get(3, 1),
        put(4, 2, b""),
        get(5, 2),
        CLOSE.into(),
    ]
    .concat();
    let (res, r) = run(&c, Cursor::new(input));
    assert_eq!(res.unwrap(), Ended::Closed);
    assert_eq!(
        r[0],
        serde_json::json!({"ID": 0, "KnownCommands": ["get", "put", "close"]})
    );
    assert_eq!(by_id(&r, 1)["Miss"], true);
    let path = by_id(&r, 2)["DiskPath"].as_str().unwrap().to_string();
    assert_eq!(std::fs::read(&path).unwrap(), b"hello");
    let hit = by_id(&r, 3);
    assert_eq!(hit["DiskPath"], path.as_str());
    assert_eq!(hit["Size"], 5);
    assert_eq!(hit["OutputID"], b64(OutputId::of(b"hello").as_bytes()));
    assert!(hit["Time"].as_str().unwrap().ends_with('Z'));
    assert!(by_id(&r, 4)["DiskPath"].is_string());
    assert!(
        by_id(&r, 5).get("Size").is_none(),
        "empty body: Size 0 omitted"
    );
    assert!(by_id(&r, 5)["DiskPath"].is_string());
    assert_eq!(by_id(&r, 999), &serde_json::json!({"ID": 999}));
    let s = c.stats();
    assert_eq!((s.gets, s.hits, s.misses, s.puts), (3, 2, 1, 2));
}

#[test]
fn bad_requests_with_an_id_get_err_and_the_session_goes_on() {
    let d = tempfile::tempdir().unwrap();
    let c = cache(d.path());
    let a = b64(&[1; 32]);
    let good = OutputId::of(b"hello");
    let input = [
        // invalid JSON that still carries an ID
        "{\"ID\":1,\"Command\":[]}\n".to_string(),
        // invalid base64 body: consumed, rejected, nothing stored
        format!("{{\"ID\":2,\"Command\":\"put\",\"ActionID\":\"{a}\",\"OutputID\":\"{}\",\"BodySize\":5}}\n\n\"aGV*bG8=\"\n", b64(good.as_bytes())),
        // BodySize says 6, body has 5
        format!("{{\"ID\":3,\"Command\":\"put\",\"ActionID\":\"{a}\",\"OutputID\":\"{}\",\"BodySize\":6}}\n\n\"aGVsbG8=\"\n", b64(good.as_bytes())),
        // hash mismatch
        format!("{{\"ID\":4,\"Command\":\"put\",\"ActionID\":\"{a}\",\"OutputID\":\"{}\",\"BodySize\":5}}\n\n\"aGVsbG8=\"\n", b64(&[9; 32])),
        "{\"ID\":5,\"Command\":\"get2\"}\n".to_string(),
        get(6, 1),
        get(6, 1), // duplicate ID
        "{\"ID\":7,\"Command\":\"get\",\"ActionID\":\"AAAA\"}\n".to_string(), // wrong length
        format!("{{\"ID\":8,\"Command\":\"put\",\"ActionID\":\"{a}\",\"OutputID\":\"{a}\",\"BodySize\":-5}}\n"),
        // ID of a path-traversal attempt: base64 of "../../../etc/passwd" is not 32 bytes
        format!("{{\"ID\":9,\"Command\":\"get\",\"ActionID\":\"{}\"}}\n", b64(b"../../../../../../etc/passwd")),
        // huge BodySize, short body
        format!("{{\"ID\":10,\"Command\":\"put\",\"ActionID\":\"{a}\",\"OutputID\":\"{}\",\"BodySize\":9223372036854775807}}\n\n\"aGVsbG8=\"\n", b64(good.as_bytes())),
        put(11, 1, b"hello"),
        CLOSE.to_string(),
    ]
    .concat();
    let (res, r) = run(&c, Cursor::new(input));
    assert_eq!(res.unwrap(), Ended::Closed);
    for id in [1, 2, 3, 4, 5, 7, 8, 9, 10] {
        assert!(by_id(&r, id)["Err"].is_string(), "ID {id}: {r:?}");
    }
    let sixes: Vec<_> = r.iter().filter(|v| v["ID"] == 6).collect();
    assert_eq!(sixes.len(), 2);
    assert_eq!(sixes[0]["Miss"], true);
    assert!(sixes[1]["Err"].as_str().unwrap().contains("duplicate"));
    assert!(by_id(&r, 11)["DiskPath"].is_string());
    assert_eq!(c.stats().puts, 1);
    // Nothing half-written is left or served.
    let tmp = d.path().join("v1/tmp");
    assert_eq!(std::fs::read_dir(tmp).unwrap().count(), 0);
    let hit = c
        .get(&ActionId::from_bytes(&[1; 32]).unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(std::fs::read(hit.path).unwrap(), b"hello");
}

#[test]
fn unparseable_lines_are_fatal_with_a_message() {
    let d = tempfile::tempdir().unwrap();
    let c = cache(d.path());
    for input in [
        "not json\n",
        "{\"ID\":\"x\",\"Command\":\"get\"}\n",
        "{\"ID\":3,\"Comm",
    ] {
        let (res, r) = run(&c, Cursor::new([get(1, 1), input.to_string()].concat()));
        let err = res.unwrap_err();
        assert!(matches!(err, Error::Protocol(_)), "{err}");
        assert_eq!(r.len(), 2, "handshake and the get were answered: {r:?}");
    }
}

#[test]
fn input_cut_inside_a_body_is_fatal_and_stores_nothing() {
    let d = tempfile::tempdir().unwrap();
    let c = cache(d.path());
    let full = put(1, 1, &[7u8; 10_000]);
    let cut = &full[..full.len() - 100];
    let (res, _) = run(&c, Cursor::new(cut.to_string()));
    assert!(matches!(res, Err(Error::Protocol(_))));
    assert!(c
        .get(&ActionId::from_bytes(&[1; 32]).unwrap())
        .unwrap()
        .is_none());
    assert_eq!(
        std::fs::read_dir(d.path().join("v1/tmp")).unwrap().count(),
        0
    );
}

#[test]
fn end_of_input_without_close() {
    let d = tempfile::tempdir().unwrap();
    let c = cache(d.path());
    let (res, r) = run(&c, Cursor::new(get(1, 1)));
    assert_eq!(res.unwrap(), Ended::Eof);
    assert_eq!(r.len(), 2);
}

/// A reader producing one endless line, to show the cap holds without buffering it all.
struct Endless(usize);
impl Read for Endless {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.0 == 0 {
            return Ok(0);
        }
        let n = buf.len().min(self.0);
        buf[..n].fill(b'x');
        self.0 -= n;
        Ok(n)
    }
}

#[test]
fn a_100_mb_line_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let c = cache(d.path());
    let (res, _) = run(&c, Endless(100 << 20));
    let err = res.unwrap_err().to_string();
    assert!(err.contains("longer than"), "{err}");
}

#[test]
fn a_large_body_streams() {
    let d = tempfile::tempdir().unwrap();
    let c = cache(d.path());
    let body: Vec<u8> = (0..(8u32 << 20)).map(|i| (i * 7 % 251) as u8).collect();
    let input = [put(1, 1, &body), CLOSE.into()].concat();
    let (res, r) = run(&c, Cursor::new(input));
    assert_eq!(res.unwrap(), Ended::Closed);
    let path = by_id(&r, 1)["DiskPath"].as_str().unwrap().to_string();
    assert_eq!(std::fs::read(path).unwrap(), body);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any mix of good, bad and garbage lines: no panic, every response is JSON, no response
    /// ID is repeated, and whatever a put answered with a path holds exactly its body.
    #[test]
    fn the_server_loop_survives_any_mix(ops in proptest::collection::vec((0u8..8, any::<u8>(), proptest::collection::vec(any::<u8>(), 0..64)), 0..40)) {
        let d = tempfile::tempdir().unwrap();
        let c = cache(d.path());
        let mut input = String::new();
        let mut bodies = std::collections::HashMap::new();
        for (i, (kind, action, bytes)) in ops.iter().enumerate() {
            let id = i as i64 + 1;
            let action = action % 4;
            match kind {
                0 | 1 => input += &get(id, action),
                2 | 3 => { input += &put(id, action, bytes); bodies.insert(id, bytes.clone()); }
                4 => input += &format!("{{\"ID\":{id},\"Command\":\"put\",\"ActionID\":\"{}\",\"OutputID\":\"{}\",\"BodySize\":{}}}\n\"{}\"\n", b64(&[action; 32]), b64(&[0; 32]), bytes.len(), String::from_utf8_lossy(bytes).replace(['"', '\n'], "")),
                5 => input += &format!("{{\"ID\":{id},\"Command\":\"{}\"}}\n", String::from_utf8_lossy(bytes).replace(['"', '\\', '\n'], "")),
                6 => { input += &String::from_utf8_lossy(bytes).replace('\n', " "); input.push('\n'); }
                _ => input.push('\n'),
            }
        }
        let (_, r) = run(&c, Cursor::new(input));
        let mut seen = HashSet::new();
        for v in &r {
            let id = v["ID"].as_i64().unwrap();
            prop_assert!(seen.insert(id), "repeated ID {}", id);
            if let (Some(path), Some(body)) = (v["DiskPath"].as_str(), bodies.get(&id)) {
                if v.get("Miss").is_none() && v.get("OutputID").is_none() {
                    prop_assert_eq!(&std::fs::read(path).unwrap(), body);
                }
            }
        }
    }
}
