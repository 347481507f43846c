use std::io::{BufReader, Cursor};

use base64::Engine as _;
use proptest::prelude::*;

use super::body::{read_body, read_line, BodyError, Line};
use super::*;

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[test]
fn parses_get_and_put() {
    let a = b64(&[1u8; 32]);
    let o = b64(&[2u8; 32]);
    let r = parse_request(format!(r#"{{"ID":7,"Command":"get","ActionID":"{a}"}}"#).as_bytes())
        .unwrap();
    assert_eq!(r.id, 7);
    assert_eq!(r.command, Command::Get);
    assert_eq!(r.action_id().unwrap().as_bytes(), &[1u8; 32]);
    assert_eq!(r.body_size, 0);

    let line = format!(
        r#"{{"ID":8,"Command":"put","ActionID":"{a}","OutputID":"{o}","BodySize":5,"Future":1}}"#
    );
    let r = parse_request(line.as_bytes()).unwrap();
    assert_eq!((r.command.clone(), r.body_size), (Command::Put, 5));
    assert_eq!(r.output_id().unwrap().as_bytes(), &[2u8; 32]);
}

#[test]
fn legacy_object_id_is_accepted_but_not_required() {
    let a = b64(&[1u8; 32]);
    let o = b64(&[3u8; 32]);
    let r = parse_request(
        format!(r#"{{"ID":1,"Command":"put","ActionID":"{a}","ObjectID":"{o}"}}"#).as_bytes(),
    )
    .unwrap();
    assert_eq!(r.output_id().unwrap().as_bytes(), &[3u8; 32]);
    // OutputID wins when both are there.
    let o2 = b64(&[4u8; 32]);
    let r = parse_request(
        format!(
            r#"{{"ID":1,"Command":"put","ActionID":"{a}","ObjectID":"{o}","OutputID":"{o2}"}}"#
        )
        .as_bytes(),
    )
    .unwrap();
    assert_eq!(r.output_id().unwrap().as_bytes(), &[4u8; 32]);
}

#[test]
fn bad_requests_keep_their_id_when_possible() {
    let e = parse_request(br#"{"ID":9,"Command":"get","ActionID":"!!notbase64"}"#).unwrap_err();
    assert_eq!(e.id, Some(9));
    assert!(e.message.contains("ActionID"), "{}", e.message);

    let e = parse_request(br#"{"ID":10,"Command":5,"BodySize":12}"#).unwrap_err();
    assert_eq!((e.id, e.body_size), (Some(10), 12));

    let e = parse_request(br#"{"ID":"ten","Command":"get"}"#).unwrap_err();
    assert_eq!(e.id, None);

    let e = parse_request(b"{\"ID\":11,\"Comm").unwrap_err();
    assert_eq!(e.id, None);
    assert!(e.message.contains("malformed"), "{}", e.message);

    // Valid base64 but the wrong length: a per-request error, not a parse error.
    let r = parse_request(br#"{"ID":12,"Command":"get","ActionID":"AAAA"}"#).unwrap();
    assert!(r.action_id().unwrap_err().contains("32 bytes"));
    let r = parse_request(br#"{"ID":13,"Command":"get"}"#).unwrap();
    assert!(r.action_id().is_err());
}

#[test]
fn responses_encode_like_go() {
    let mut out = Vec::new();
    Response::hello().encode_into(&mut out);
    assert_eq!(
        out,
        b"{\"ID\":0,\"KnownCommands\":[\"get\",\"put\",\"close\"]}\n"
    );
    out.clear();
    Response::miss(3).encode_into(&mut out);
    assert_eq!(out, b"{\"ID\":3,\"Miss\":true}\n");
    out.clear();
    Response::error(4, "nope").encode_into(&mut out);
    assert_eq!(out, b"{\"ID\":4,\"Err\":\"nope\"}\n");

    let e = Entry {
        output_id: OutputId::of(b"x"),
        size: 1,
        time: UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 5),
        path: "/c/o/2d/x".into(),
    };
    out.clear();
    Response::hit(5, &e).encode_into(&mut out);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["ID"], 5);
    assert_eq!(v["Size"], 1);
    assert_eq!(v["DiskPath"], "/c/o/2d/x");
    assert_eq!(v["Time"], "2023-11-14T22:13:20.000000005Z");
    assert_eq!(v["OutputID"], b64(e.output_id.as_bytes()));
    assert!(v.get("Miss").is_none());
}

#[test]
fn times_outside_go_range_are_omitted() {
    assert_eq!(
        rfc3339(UNIX_EPOCH - std::time::Duration::from_secs(1)),
        None
    );
    assert_eq!(
        rfc3339(UNIX_EPOCH + std::time::Duration::from_secs(253_402_300_800)),
        None
    );
    assert!(rfc3339(SystemTime::now()).is_some());
}

fn body_of(input: &[u8], cap: usize, limit: u64) -> (Result<u64, BodyError>, Vec<u8>, Vec<u8>) {
    let mut r = BufReader::with_capacity(cap, Cursor::new(input.to_vec()));
    let mut out = Vec::new();
    let res = read_body(&mut r, &mut out, limit);
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut r, &mut rest).unwrap();
    (res, out, rest)
}

#[test]
fn body_after_blank_line_decodes() {
    let (res, out, rest) = body_of(b"\n\"aGVsbG8=\"\n{next}", 4096, 5);
    assert_eq!(res.unwrap(), 5);
    assert_eq!(out, b"hello");
    assert_eq!(rest, b"\n{next}");
}

#[test]
fn missing_body_consumes_nothing_but_whitespace() {
    let (res, _, rest) = body_of(b"\n{\"ID\":2}\n", 4096, 5);
    assert!(matches!(res, Err(BodyError::Missing)));
    assert_eq!(rest, b"{\"ID\":2}\n");
}

#[test]
fn invalid_bodies_resync_at_their_end() {
    for bad in [
        &b"\"aGVs*G8=\"\n{next}"[..],    // bad character
        b"\"aGVsbG8\"\n{next}",          // not a multiple of 4
        b"\"aGU=bG8=\"\n{next}",         // data after padding
        b"\"aGVsbG8=aGVsbG8=\"\n{next}", // ditto, across groups
        b"\"aGVs\\/G8=\"\n{next}",       // JSON escapes are not base64
        b"\"aGVsbG9=\"\n{next}",         // trailing bits set: not the canonical encoding
    ] {
        let (res, _, rest) = body_of(bad, 4096, 100);
        assert!(
            matches!(res, Err(BodyError::Invalid(_))),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
        assert_eq!(rest, b"\n{next}");
    }
    // A body cut at a newline leaves the next line for the request reader.
    let (res, _, rest) = body_of(b"\"aGVsbG8=\n{next}", 4096, 100);
    assert!(matches!(res, Err(BodyError::Invalid(_))));
    assert_eq!(rest, b"\n{next}");
}

#[test]
fn body_longer_than_announced_is_rejected_without_writing_past_it() {
    let body = vec![7u8; 100_000];
    let input = format!("\"{}\"\n", b64(&body));
    let (res, out, rest) = body_of(input.as_bytes(), 4096, 1000);
    assert!(matches!(res, Err(BodyError::Invalid(m)) if m.contains("BodySize")));
    assert!(out.len() <= 1000);
    assert_eq!(rest, b"\n");
}

#[test]
fn truncated_body_is_fatal() {
    let (res, _, _) = body_of(b"\"aGVsbG8", 4096, 100);
    assert!(matches!(res, Err(BodyError::Truncated(_))));
    let (res, _, _) = body_of(b"\n\n", 4096, 100);
    assert!(matches!(res, Err(BodyError::Truncated(_))));
}

#[test]
fn lines_longer_than_the_cap_are_skipped_not_buffered() {
    let mut input = vec![b'x'; 5000];
    input.extend_from_slice(b"\nok\nlast");
    let mut r = BufReader::with_capacity(64, Cursor::new(input));
    let mut buf = Vec::new();
    assert_eq!(
        read_line(&mut r, &mut buf, 100).unwrap(),
        Line::TooLong(5000)
    );
    assert!(buf.len() <= 100);
    assert_eq!(read_line(&mut r, &mut buf, 100).unwrap(), Line::Line);
    assert_eq!(buf, b"ok");
    assert_eq!(read_line(&mut r, &mut buf, 100).unwrap(), Line::Line);
    assert_eq!(buf, b"last");
    assert_eq!(read_line(&mut r, &mut buf, 100).unwrap(), Line::Eof);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any body, any buffer size: what comes out is what went in.
    #[test]
    fn body_round_trip(body in proptest::collection::vec(any::<u8>(), 0..20_000), cap in 1usize..300) {
        let input = format!("\n\"{}\"\nrest", b64(&body));
        let (res, out, rest) = body_of(input.as_bytes(), cap, body.len() as u64);
        prop_assert_eq!(res.unwrap(), body.len() as u64);
        prop_assert_eq!(out, body);
        prop_assert_eq!(rest, b"\nrest".to_vec());
    }

    /// Garbage never panics and never yields more than the limit.
    #[test]
    fn body_garbage_is_safe(input in proptest::collection::vec(any::<u8>(), 0..2000), cap in 1usize..64) {
        let (res, out, _) = body_of(&input, cap, 64);
        prop_assert!(out.len() <= 64);
        if let Ok(n) = res { prop_assert_eq!(n as usize, out.len()); }
    }

    /// The SIMD decoder accepts exactly what the strict scalar `base64` crate accepts, and
    /// decodes it alike: valid encodings with one character changed (padding moved, trailing
    /// bits set, a character from outside the alphabet) are where decoders differ.
    #[test]
    fn body_decoding_agrees_with_the_base64_crate(
        body in proptest::collection::vec(any::<u8>(), 0..300),
        at in any::<proptest::sample::Index>(),
        to in proptest::sample::select(b"AZaz09+/=*-_ ".to_vec()),
        change in any::<bool>(),
        cap in 1usize..64,
    ) {
        let mut text = b64(&body).into_bytes();
        if change && !text.is_empty() {
            let i = at.index(text.len());
            text[i] = to;
        }
        let text = String::from_utf8(text).unwrap();
        let input = format!("\"{text}\"\n");
        let (res, out, _) = body_of(input.as_bytes(), cap, 1 << 20);
        match base64::engine::general_purpose::STANDARD.decode(&text) {
            Ok(want) => {
                prop_assert_eq!(res.ok(), Some(want.len() as u64));
                prop_assert_eq!(out, want);
            }
            Err(_) => prop_assert!(res.is_err(), "accepted {:?}", text),
        }
    }

    /// The request parser takes any bytes without panicking.
    #[test]
    fn parser_survives_any_bytes(line in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = parse_request(&line);
    }

    /// Structured but hostile JSON: wrong types, huge numbers, odd IDs.
    #[test]
    fn parser_survives_hostile_json(
        id in prop_oneof![any::<i64>().prop_map(|i| i.to_string()), Just("1e400".to_string()), Just("-0".to_string()), Just("\"7\"".to_string()), Just("null".to_string())],
        cmd in prop_oneof![Just("\"get\""), Just("\"put\""), Just("\"close\""), Just("\"\""), Just("7"), Just("[]")],
        aid in "[A-Za-z0-9+/=!\\\\ ]{0,60}",
        size in prop_oneof![any::<i64>().prop_map(|i| i.to_string()), Just("1e30".to_string()), Just("\"5\"".to_string())],
    ) {
        let line = format!(r#"{{"ID":{id},"Command":{cmd},"ActionID":"{aid}","OutputID":"{aid}","BodySize":{size}}}"#);
        match parse_request(line.as_bytes()) {
            Ok(r) => {
                let _ = r.action_id();
                let _ = r.output_id();
            }
            Err(bad) => prop_assert!(!bad.message.is_empty()),
        }
    }
}
