//! Hostile GOCACHEPROG input, generated from a seed, and a checker that runs it through the
//! request parser and the whole server loop. One source for two users: the bounded CI test
//! (`tests/robust.rs`) and the long run (`tools/src/bin/fuzz_protocol.rs`, which includes this file
//! by path), so both always exercise the same cases.
//!
//! Every generated item says what it must get: an answer (a put's DiskPath holding its body),
//! an `Err`, the end of the session (input that cannot be trusted), or anything but a panic.
//! Invalid puts only ever use "poison" ActionIDs, which must never appear in the cache.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use gobuildcache::protocol::{parse_request, MAX_LINE};
use gobuildcache::{ActionId, Cache, Ended, Error, OutputId};
use sha2::Digest;

/// splitmix64: tiny, seedable, the same numbers on every platform.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0; the bias is irrelevant here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    pub fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
}

pub fn b64(b: impl AsRef<[u8]>) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// What an item must get.
#[derive(Clone, Debug)]
pub enum Expect {
    /// An answer without `Err`; for a put, a DiskPath holding exactly `Some(body)`.
    Answer(Option<Vec<u8>>),
    /// An answer with `Err`, and the stream stays usable.
    Err,
    /// No answer can be trusted after it: the session ends with a protocol error.
    Fatal,
    /// Mutated or random input: anything but a panic, malformed output or a poisoned store.
    /// The session ends after it (the stream may be out of step).
    Any,
    /// Blank lines: no answer, no effect.
    Nothing,
}

pub struct Item {
    /// Which hostile case this is, for the tally.
    pub case: &'static str,
    /// The ID an answer must carry (unique in its session unless `case` is "duplicate-id").
    pub id: Option<i64>,
    pub bytes: Vec<u8>,
    pub expect: Expect,
}

impl Item {
    fn ends_session(&self) -> bool {
        matches!(self.expect, Expect::Fatal | Expect::Any)
    }
}

/// Fixed pools, so the cache directory stays small however long the run is.
pub struct Pools {
    /// ActionIDs valid puts use.
    good: Vec<[u8; 32]>,
    /// ActionIDs only invalid puts use: none may ever be stored.
    pub poison: Vec<[u8; 32]>,
    bodies: Vec<Vec<u8>>,
}

impl Pools {
    pub fn new() -> Pools {
        let mut r = Rng::new(0x600d_cafe);
        let id = |r: &mut Rng| -> [u8; 32] { r.bytes(32).try_into().unwrap() };
        let mut good: Vec<[u8; 32]> = (0..48).map(|_| id(&mut r)).collect();
        // 32 arbitrary bytes are a valid ActionID even when they spell a path: they only ever
        // reach the disk as hex.
        good.push(*b"../../../../../../../etc/passwd\0");
        good.push(*b"a/b\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0");
        let poison = (0..8).map(|_| id(&mut r)).collect();
        let mut bodies: Vec<Vec<u8>> = vec![Vec::new(), b"x".to_vec(), b"hello".to_vec()];
        for _ in 0..24 {
            let n = r.below(3000) as usize;
            bodies.push(r.bytes(n));
        }
        // Across the decoder's 64 KiB step, and text-like (compressible) output.
        bodies.push(r.bytes(70_000));
        bodies.push(b"package main\n".repeat(2000));
        Pools {
            good,
            poison,
            bodies,
        }
    }
}

impl Default for Pools {
    fn default() -> Self {
        Pools::new()
    }
}

fn get_line(id: i64, action: &str) -> String {
    format!("{{\"ID\":{id},\"Command\":\"get\",\"ActionID\":\"{action}\"}}\n")
}

fn put_line(id: i64, action: &str, output: &str, size: &str) -> String {
    format!(
        "{{\"ID\":{id},\"Command\":\"put\",\"ActionID\":\"{action}\",\"OutputID\":\"{output}\",\"BodySize\":{size}}}\n"
    )
}

/// IDs that must be refused before they touch a path: wrong lengths, traversal strings,
/// NUL bytes, unicode. (Base64 of these decodes to the wrong length.)
const BAD_ID_BYTES: &[&[u8]] = &[
    b"",
    b"../../etc/passwd",
    b"a/b",
    b"\0",
    b"..\0/..",
    "ünïcödé/../..".as_bytes(),
    &[7; 31],
    &[7; 33],
    &[7; 64],
];

/// The same as raw JSON strings, not base64 at all.
const BAD_ID_STRINGS: &[&str] = &[
    "../../etc/passwd",
    "a/b",
    "\\u0000\\u0000",
    "ünïcödé",
    "abc",
    "AAAA=AAA",
    "%2e%2e%2f",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
];

/// One session's worth of items (the last may end it).
pub struct Session {
    pub items: Vec<Item>,
    next_id: i64,
    used: HashSet<i64>,
    /// IDs of requests that parse: the server remembers these, so a repeat is refused.
    parsed: Vec<i64>,
}

impl Session {
    fn push(&mut self, it: Item) {
        if let Some(id) = it.id {
            let line = it.bytes.split(|b| *b == b'\n').next().unwrap_or(&[]);
            if parse_request(line).is_ok() {
                self.parsed.push(id);
            }
        }
        self.items.push(it);
    }

    fn fresh_id(&mut self, rng: &mut Rng) -> i64 {
        loop {
            let id = match rng.below(20) {
                0 => -(rng.below(1000) as i64) - 1,
                1 => i64::MAX - rng.below(4) as i64,
                2 => i64::MIN + rng.below(4) as i64,
                _ => {
                    self.next_id += 1;
                    self.next_id
                }
            };
            if id != 0 && self.used.insert(id) {
                return id;
            }
        }
    }
}

/// A whole session: items, then `close` or end of input.
pub fn session(rng: &mut Rng, pools: &Pools, max_items: usize) -> (Session, Vec<u8>, Option<i64>) {
    let mut s = Session {
        items: Vec::new(),
        next_id: 0,
        used: HashSet::new(),
        parsed: Vec::new(),
    };
    let n = 1 + rng.below(max_items as u64) as usize;
    while s.items.len() < n {
        let it = item(rng, pools, &mut s);
        let end = it.ends_session();
        // A put whose body is missing is refused by looking at the next line, which must
        // then be a request.
        let then_get = it.case == "put-body-missing";
        s.push(it);
        if then_get {
            let id = s.fresh_id(rng);
            let line = get_line(id, &b64(rng.pick(&pools.good)));
            s.push(Item {
                case: "get",
                id: Some(id),
                bytes: line.into_bytes(),
                expect: Expect::Answer(None),
            });
        }
        if end {
            break;
        }
    }
    let mut input = Vec::new();
    for it in &s.items {
        input.extend_from_slice(&it.bytes);
    }
    let last_ends = s.items.last().is_some_and(Item::ends_session);
    let close = if !last_ends && !rng.chance(5) {
        let id = s.fresh_id(rng);
        input.extend_from_slice(format!("{{\"ID\":{id},\"Command\":\"close\"}}\n").as_bytes());
        Some(id)
    } else {
        None
    };
    (s, input, close)
}

/// One request (and its body), chosen among the hostile cases.
pub fn item(rng: &mut Rng, p: &Pools, s: &mut Session) -> Item {
    let good = b64(rng.pick(&p.good));
    let poison = b64(rng.pick(&p.poison));
    let body = rng.pick(&p.bodies).clone();
    let out = b64(OutputId::of(&body).as_bytes());
    let body_line = |b: &[u8]| format!("\n\"{}\"\n", b64(b));
    // With BodySize 0 no body line follows.
    let with_body = |line: String, b: &[u8]| {
        if b.is_empty() {
            line
        } else {
            line + &body_line(b)
        }
    };
    let mk = |case, id, text: String, expect| Item {
        case,
        id,
        bytes: text.into_bytes(),
        expect,
    };
    let roll = rng.below(1000);
    // Session-ending cases are rare, so most sessions carry many items.
    if roll >= 960 {
        return terminal(rng, p, s, roll);
    }
    let id = s.fresh_id(rng);
    match roll % 24 {
        0..=5 => mk("get", Some(id), get_line(id, &good), Expect::Answer(None)),
        6..=10 => {
            let t = with_body(put_line(id, &good, &out, &body.len().to_string()), &body);
            mk("put", Some(id), t, Expect::Answer(Some(body)))
        }
        11 => {
            let wrong = b64(OutputId::of(b"something else").as_bytes());
            let t = with_body(
                put_line(id, &poison, &wrong, &body.len().to_string()),
                &body,
            );
            mk("put-wrong-output-id", Some(id), t, Expect::Err)
        }
        12 => {
            // The body is shorter than announced.
            let t = put_line(
                id,
                &poison,
                &out,
                &(body.len() + 1 + rng.below(50) as usize).to_string(),
            ) + &body_line(&body);
            mk("put-body-short", Some(id), t, Expect::Err)
        }
        13 => {
            let body = if body.is_empty() { b"x".to_vec() } else { body };
            let out = b64(OutputId::of(&body).as_bytes());
            let mut longer = body.clone();
            let extra = 1 + rng.below(100) as usize;
            longer.extend_from_slice(&rng.bytes(extra));
            let t = put_line(id, &poison, &out, &body.len().to_string()) + &body_line(&longer);
            mk("put-body-long", Some(id), t, Expect::Err)
        }
        14 => {
            let mut enc = b64(&body).into_bytes();
            enc.push(b'A');
            let i = rng.below(enc.len() as u64) as usize;
            enc[i] = *rng.pick(b"*!-_.~ \t\\\x01\x7f");
            let t = put_line(id, &poison, &out, &(body.len() + 1).to_string())
                + &format!("\n\"{}\"\n", String::from_utf8_lossy(&enc));
            mk("put-base64-garbage", Some(id), t, Expect::Err)
        }
        15 => {
            let body = if body.is_empty() {
                b"xyz".to_vec()
            } else {
                body
            };
            let out = b64(OutputId::of(&body).as_bytes());
            let enc = b64(&body);
            let cut = enc.trim_end_matches('=').len() - 1;
            let t = put_line(id, &poison, &out, &body.len().to_string())
                + &format!("\n\"{}\"\n", &enc[..cut]);
            mk("put-base64-truncated", Some(id), t, Expect::Err)
        }
        16 => {
            let size = *rng.pick(&[
                "9223372036854775807",
                "18446744073709551615",
                "1e30",
                "4611686018427387904",
            ]);
            let t = put_line(id, &poison, &out, size) + &body_line(&body);
            mk("put-huge-body-size", Some(id), t, Expect::Err)
        }
        17 => {
            // No body line where one is due: refused, the next request is still read.
            let t = put_line(id, &poison, &out, &(body.len() + 1).to_string());
            mk("put-body-missing", Some(id), t, Expect::Err)
        }
        18 => {
            let t = put_line(id, &poison, &out, &format!("-{}", 1 + rng.below(1 << 40)));
            mk("put-negative-body-size", Some(id), t, Expect::Err)
        }
        19 => {
            let bad = b64(rng.pick(BAD_ID_BYTES));
            let t = match rng.below(3) {
                0 => get_line(id, &bad),
                1 => with_body(put_line(id, &bad, &out, &body.len().to_string()), &body),
                _ => with_body(put_line(id, &good, &bad, &body.len().to_string()), &body),
            };
            mk("bad-id-length", Some(id), t, Expect::Err)
        }
        20 => {
            let bad = rng.pick(BAD_ID_STRINGS);
            let t = if rng.chance(2) {
                get_line(id, bad)
            } else {
                with_body(put_line(id, bad, &out, &body.len().to_string()), &body)
            };
            mk("bad-id-not-base64", Some(id), t, Expect::Err)
        }
        21 => {
            let cmd = rng.pick(&["", "GET", "delete", "get ", "put\\u0000", "clöse", "../x"]);
            let t = format!("{{\"ID\":{id},\"Command\":\"{cmd}\",\"ActionID\":\"{good}\"}}\n");
            mk("unknown-command", Some(id), t, Expect::Err)
        }
        22 => {
            // Valid JSON with an ID but the wrong shape: answered, stream in step.
            let t = match rng.below(4) {
                0 => format!("{{\"ID\":{id},\"Command\":[]}}\n"),
                1 => format!("{{\"ID\":{id}}}\n"),
                2 => format!("{{\"ID\":{id},\"Command\":\"get\",\"ActionID\":7}}\n"),
                _ => format!("{{\"ID\":{id},\"Command\":\"get\",\"ActionID\":{{\"a\":[1,2]}}}}\n"),
            };
            mk("wrong-shape", Some(id), t, Expect::Err)
        }
        _ => {
            if rng.chance(2) && !s.parsed.is_empty() {
                // A repeat of an ID already used: refused, never answered twice as a success.
                s.used.remove(&id);
                let dup = *rng.pick(&s.parsed);
                return mk("duplicate-id", Some(dup), get_line(dup, &good), Expect::Err);
            }
            let blank = rng.pick(&["\n", "\n\n\n", "   \t \n", "\r\n"]).to_string();
            s.used.remove(&id);
            mk("blank", None, blank, Expect::Nothing)
        }
    }
}

/// Cases after which the stream cannot be trusted: they end the session.
fn terminal(rng: &mut Rng, p: &Pools, s: &mut Session, roll: u64) -> Item {
    let good = b64(rng.pick(&p.good));
    let mk = |case, bytes: Vec<u8>, expect| Item {
        case,
        id: None,
        bytes,
        expect,
    };
    match roll % 10 {
        0 => {
            let id = rng.pick(&["\"7\"", "null", "1.5", "[]", "\"../x\""]);
            let t = format!("{{\"ID\":{id},\"Command\":\"get\",\"ActionID\":\"{good}\"}}\n");
            mk("string-or-odd-id", t.into_bytes(), Expect::Fatal)
        }
        1 => {
            let t = format!("{{\"Command\":\"get\",\"ActionID\":\"{good}\"}}\n");
            mk("absent-id", t.into_bytes(), Expect::Fatal)
        }
        2 => {
            // Deep nesting where it is skipped (an unknown field) is answered; where it must be
            // read (a known field) it is beyond serde_json's depth limit, and so is the salvage
            // of the ID.
            let depth = 200 + rng.below(200_000) as usize;
            let nest = "[".repeat(depth) + &"]".repeat(depth);
            let id = s.fresh_id(rng);
            if rng.chance(2) {
                let t = format!("{{\"ID\":{id},\"Command\":\"get\",\"X\":{nest}}}\n");
                Item {
                    case: "json-nesting-bomb-skipped",
                    id: Some(id),
                    bytes: t.into_bytes(),
                    expect: Expect::Err,
                }
            } else {
                let t = format!("{{\"ID\":{id},\"Command\":\"get\",\"ActionID\":{nest}}}\n");
                mk("json-nesting-bomb", t.into_bytes(), Expect::Fatal)
            }
        }
        3 => {
            let mut t = format!(
                "{{\"ID\":{},\"Command\":\"get\",\"ActionID\":\"",
                s.fresh_id(rng)
            )
            .into_bytes();
            let bad: [&[u8]; 4] = [b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\x80"];
            let b = bad[rng.below(4) as usize];
            t.extend_from_slice(b);
            t.extend_from_slice(b"\"}\n");
            mk("invalid-utf8", t, Expect::Fatal)
        }
        4 => {
            // Just over the line cap: refused without being buffered.
            let mut t = vec![b' '; MAX_LINE + 1 + rng.below(1000) as usize];
            t[0] = b'{';
            t.push(b'\n');
            mk("line-too-long", t, Expect::Fatal)
        }
        5 => {
            // Cut inside a body: input ends there.
            let body = rng.pick(&p.bodies);
            let body = if body.len() < 8 { &p.bodies[3] } else { body };
            let id = s.fresh_id(rng);
            let mut t = put_line(
                id,
                &good,
                &b64(OutputId::of(body).as_bytes()),
                &body.len().to_string(),
            ) + "\n\""
                + &b64(body);
            t.truncate(t.len() - 1 - rng.below(4) as usize);
            mk("input-ends-in-body", t.into_bytes(), Expect::Fatal)
        }
        6 => {
            let t = *rng.pick(&[
                "not json\n",
                "\"aGVsbG8=\"\n",
                "7\n",
                "[1,2]\n",
                "{\"ID\":3,\"Comm\n",
                "}\n",
            ]);
            mk("not-a-request", t.as_bytes().to_vec(), Expect::Fatal)
        }
        7 => {
            let n = rng.below(300) as usize;
            let mut t = rng.bytes(n);
            t.push(b'\n');
            mk("random-bytes", t, Expect::Any)
        }
        _ => {
            // A valid request with random damage.
            let id = s.fresh_id(rng);
            let body = rng.pick(&p.bodies).clone();
            let mut t = if rng.chance(2) {
                get_line(id, &good).into_bytes()
            } else {
                let mut t = put_line(
                    id,
                    &good,
                    &b64(OutputId::of(&body).as_bytes()),
                    &body.len().to_string(),
                );
                if !body.is_empty() {
                    t += &format!("\n\"{}\"\n", b64(&body));
                }
                t.into_bytes()
            };
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(t.len() as u64) as usize;
                match rng.below(3) {
                    0 => t[i] = rng.next_u64() as u8,
                    1 => {
                        t.remove(i);
                    }
                    _ => t.insert(i, *rng.pick(b"\"{}[]:,\\\n0-9e")),
                }
            }
            mk("mutated", t, Expect::Any)
        }
    }
}

/// What a run saw.
#[derive(Default)]
pub struct Tally {
    /// Items run through both the parser and the server loop.
    pub inputs: u64,
    pub sessions: u64,
    pub bytes: u64,
    /// Inputs per hostile case.
    pub cases: BTreeMap<&'static str, u64>,
    /// Distinct error kinds (`Err` answers and session-ending errors), with counts.
    pub kinds: BTreeMap<String, u64>,
    /// Sessions that ended with `close`, at end of input, or with a protocol error.
    pub closed: u64,
    pub eof: u64,
    pub fatal: u64,
}

/// An error message with the variable parts blanked (numbers, hashes, quoted text, the
/// quoted input and serde's position): its kind.
pub fn kind_of(msg: &str) -> String {
    let msg = msg.split(" in \"").next().unwrap_or(msg);
    let msg = msg.split(" at line ").next().unwrap_or(msg);
    let mut words = Vec::new();
    let mut quoted = false;
    for w in msg.split(' ') {
        if quoted || w.starts_with('"') {
            quoted = !(w.len() > 1 && w.ends_with(['"', ',', ':'])) || (quoted && !w.contains('"'));
            if words.last() != Some(&"\"…\"".to_string()) {
                words.push("\"…\"".to_string());
            }
            continue;
        }
        let digits = w.bytes().filter(u8::is_ascii_digit).count();
        words.push(
            if digits > 0
                && (w.len() > 8
                    || digits
                        == w.trim_end_matches([',', '.', '`', ':'])
                            .trim_start_matches(['`', '-'])
                            .len())
            {
                "#".to_string()
            } else {
                w.to_string()
            },
        );
    }
    words.join(" ").chars().take(100).collect()
}

/// A writer the checker reads back after `serve` took ownership of it.
#[derive(Clone, Default)]
pub struct Sink(pub Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Runs `sessions` generated sessions (or until `inputs` items ran) against `cache` (whose
/// directory is `dir`), checking every item's outcome; panics with the seed and the input on
/// the first violation.
pub fn run(cache: &Cache, dir: &Path, seed: u64, inputs: u64, tally: &mut Tally) {
    let pools = Pools::new();
    let mut rng = Rng::new(seed);
    let v1 = dir.join("v1");
    while tally.inputs < inputs {
        let (s, input, close) = session(&mut rng, &pools, 64);
        let session_no = tally.sessions;
        let fail = |why: String| -> ! {
            let cases: Vec<_> = s.items.iter().map(|i| (i.case, i.id)).collect();
            panic!(
                "seed {seed}, session {session_no}: {why}\nitems: {cases:?}\ninput: {}",
                gobuildcache::protocol::preview(&input)
            )
        };
        // The parser alone, on each item's request line.
        for it in &s.items {
            let line = it.bytes.split(|b| *b == b'\n').next().unwrap_or(&[]);
            let _ = parse_request(line.trim_ascii());
        }
        let out = Sink::default();
        let res = gobuildcache::serve(cache, std::io::Cursor::new(&input[..]), out.clone());
        let out = out.0.lock().unwrap().clone();

        // Every response is one JSON object with an ID; the first is the handshake.
        let mut resps: HashMap<i64, Vec<serde_json::Value>> = HashMap::new();
        for (i, line) in out
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .enumerate()
        {
            let v: serde_json::Value = serde_json::from_slice(line).unwrap_or_else(|e| {
                fail(format!(
                    "response is not JSON ({e}): {}",
                    String::from_utf8_lossy(line)
                ))
            });
            let Some(id) = v["ID"].as_i64() else {
                fail(format!("response without ID: {v}"))
            };
            if i == 0 && (id != 0 || v["KnownCommands"].is_null()) {
                fail(format!("first response is not the handshake: {v}"));
            }
            if let Some(path) = v["DiskPath"].as_str() {
                check_disk_path(&v1, path, &v).unwrap_or_else(|e| fail(e));
            }
            if let Some(e) = v["Err"].as_str() {
                *tally.kinds.entry(kind_of(e)).or_default() += 1;
            }
            resps.entry(id).or_default().push(v);
        }
        let mut asked: HashMap<i64, usize> = HashMap::new();
        for id in s.items.iter().filter_map(|i| i.id).chain(close) {
            *asked.entry(id).or_default() += 1;
        }
        // Damaged input may carry any ID, once more than the items do.
        let damaged = s
            .items
            .last()
            .is_some_and(|i| matches!(i.expect, Expect::Any)) as usize;
        for (id, rs) in &resps {
            let n = asked.get(id).copied().unwrap_or(0) + (*id == 0) as usize + damaged;
            if rs.len() > n {
                fail(format!(
                    "ID {id} answered {} times, asked {n} times: {rs:?}",
                    rs.len()
                ));
            }
        }

        let ends = s.items.last().map(|i| i.expect.clone());
        match (&res, &ends, close) {
            (Ok(Ended::Closed), _, Some(c))
                if resps
                    .get(&c)
                    .is_some_and(|r| r[0] == serde_json::json!({"ID": c})) =>
            {
                tally.closed += 1
            }
            (
                Ok(Ended::Eof),
                Some(Expect::Answer(_) | Expect::Err | Expect::Nothing) | None,
                None,
            ) => tally.eof += 1,
            (Err(Error::Protocol(m)), Some(Expect::Fatal | Expect::Any), None) => {
                tally.fatal += 1;
                *tally
                    .kinds
                    .entry(format!("fatal: {}", kind_of(m)))
                    .or_default() += 1;
            }
            (Ok(_), Some(Expect::Any), None) => tally.eof += 1,
            _ => fail(format!(
                "session ended with {res:?}; last item {ends:?}, close {close:?}"
            )),
        }

        for it in &s.items {
            *tally.cases.entry(it.case).or_default() += 1;
            let Some(id) = it.id else { continue };
            let got = resps.get(&id);
            let dup = it.case == "duplicate-id";
            match &it.expect {
                Expect::Answer(body) => {
                    let Some(r) = got.map(|r| &r[0]) else {
                        fail(format!("{} ID {id}: no answer", it.case))
                    };
                    if r.get("Err").is_some() {
                        fail(format!("{} ID {id}: {r}", it.case));
                    }
                    if let Some(body) = body {
                        let path = r["DiskPath"]
                            .as_str()
                            .unwrap_or_else(|| fail(format!("put {id} without DiskPath: {r}")));
                        if std::fs::read(path).ok().as_ref() != Some(body) {
                            fail(format!("put {id}: {path} does not hold the body"));
                        }
                    }
                }
                Expect::Err => {
                    let errs = got.map_or(0, |r| r.iter().filter(|v| v["Err"].is_string()).count());
                    if errs == 0 {
                        fail(format!("{} ID {id}: no Err answer: {got:?}", it.case));
                    }
                    if dup
                        && got.is_some_and(|r| {
                            r.iter().filter(|v| v.get("Err").is_none()).count() > 1
                        })
                    {
                        fail(format!("duplicate ID {id} answered twice as a success"));
                    }
                }
                Expect::Fatal | Expect::Any | Expect::Nothing => {}
            }
        }

        // Nothing invalid was stored, nothing half-written was left.
        for a in &pools.poison {
            let a = ActionId::from_bytes(a).unwrap();
            if cache.get(&a).ok().flatten().is_some() {
                fail(format!("poison ActionID {a} was stored"));
            }
        }
        if let Some(f) = std::fs::read_dir(v1.join("tmp"))
            .ok()
            .and_then(|mut d| d.next())
        {
            fail(format!("temp file left behind: {f:?}"));
        }

        tally.inputs += s.items.len() as u64;
        tally.bytes += input.len() as u64;
        tally.sessions += 1;
    }
}

/// A DiskPath is a body file inside the cache, named by the SHA-256 of its content.
fn check_disk_path(v1: &Path, path: &str, resp: &serde_json::Value) -> Result<(), String> {
    let p = Path::new(path);
    if !p.starts_with(v1)
        || p.components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(format!("DiskPath outside the cache: {resp}"));
    }
    let data = std::fs::read(p).map_err(|e| format!("DiskPath {path}: {e}"))?;
    let sum = hex(&sha2::Sha256::digest(&data));
    if p.file_name().and_then(|n| n.to_str()) != Some(sum.as_str()) {
        return Err(format!("DiskPath {path} does not hash to its name"));
    }
    if let Some(o) = resp["OutputID"].as_str() {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(o)
            .unwrap_or_default();
        if hex(&raw) != sum {
            return Err(format!("OutputID does not match the body: {resp}"));
        }
    }
    Ok(())
}

/// A cache for the run: local only, quiet.
pub fn open_cache(dir: &Path) -> Cache {
    let cfg = gobuildcache::Config::builder()
        .flag("cache-dir", dir.to_str().unwrap())
        .flag("stats", "false")
        .build_with_env(&|_| None)
        .unwrap();
    Cache::open(cfg).unwrap()
}

/// Peak resident memory of this process (VmHWM), in bytes; 0 where /proc is missing.
pub fn peak_rss() -> u64 {
    gobuildcache::peak_rss_bytes()
}
