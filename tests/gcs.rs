//! The GCS backend through the `Backend` trait, against a real fake-gcs-server: every call the
//! client makes (get, put, delete, list with pages, check) and its error classification.

use std::time::{Duration, Instant};

use gobuildcache::store::gcs::GcsBackend;
use gobuildcache::store::{Backend, BackendError, PutOutcome};
use tokio::io::AsyncReadExt;

use crate::fake_gcs::FakeGcs;
use crate::util::free_port;
use crate::util::TestDir;

fn backend(server: &FakeGcs, bucket: &str) -> GcsBackend {
    GcsBackend::builder(bucket)
        .emulator(&server.endpoint())
        .build()
        .unwrap()
}

/// A server with one bucket, and a backend on it.
fn setup(bucket: &str) -> (FakeGcs, GcsBackend) {
    let server = FakeGcs::start();
    server.create_bucket(bucket);
    let b = backend(&server, bucket);
    (server, b)
}

fn write(t: &TestDir, name: &str, body: &[u8]) -> std::path::PathBuf {
    let p = t.path(name);
    std::fs::write(&p, body).unwrap();
    p
}

async fn read(b: &GcsBackend, key: &str) -> Option<Vec<u8>> {
    let mut r = b.get(key).await.unwrap()?;
    let mut out = Vec::new();
    r.read_to_end(&mut out).await.unwrap();
    Some(out)
}

/// Bytes that differ at every offset, so a dropped or repeated chunk shows.
fn pattern(n: usize) -> Vec<u8> {
    (0..n as u64)
        .map(|i| (i.wrapping_mul(2654435761) >> 7) as u8)
        .collect()
}

/// Error text is shown to users: it must never carry credentials.
fn assert_no_secrets(e: &BackendError) {
    let m = e.to_string().to_lowercase();
    for bad in [
        "authorization",
        "bearer",
        "token",
        "x-goog-signature",
        "signature=",
    ] {
        assert!(!m.contains(bad), "{bad:?} in error message: {e}");
    }
}

#[tokio::test]
async fn put_get_round_trip_streams_a_multi_mb_body() {
    let (server, b) = setup("round-trip");
    let t = TestDir::new();
    let body = pattern(5 * 1024 * 1024 + 17);
    let src = write(&t, "body", &body);
    let key = "gobuildcache/ab/abcdef0123-o";
    assert_eq!(
        b.put(key, &src, body.len() as u64).await.unwrap(),
        PutOutcome::Stored
    );
    // Read in small pieces, as the layer above does, to exercise the streamed reader.
    let mut r = b.get(key).await.unwrap().expect("just stored");
    let mut got = Vec::with_capacity(body.len());
    let mut buf = vec![0u8; 8192];
    loop {
        let n = r.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    assert!(
        got == body,
        "body differs ({} vs {} bytes)",
        got.len(),
        body.len()
    );
    // Stored under the exact name (the `/`s percent-encoded on the wire, not in the name).
    assert_eq!(server.object_names("round-trip"), [key]);
    assert!(server.get_object("round-trip", key).unwrap() == body);
    // An empty body too.
    let empty = write(&t, "empty", b"");
    assert_eq!(
        b.put("gobuildcache/empty", &empty, 0).await.unwrap(),
        PutOutcome::Stored
    );
    assert_eq!(read(&b, "gobuildcache/empty").await.unwrap(), b"");
}

#[tokio::test]
async fn a_missing_key_is_none() {
    let (_server, b) = setup("missing-key");
    assert!(b.get("gobuildcache/nope").await.unwrap().is_none());
    assert!(b.get("no/such/deep/key").await.unwrap().is_none());
}

#[tokio::test]
async fn put_never_overwrites_an_existing_object() {
    let (server, b) = setup("conditional");
    let t = TestDir::new();
    let first = write(&t, "first", b"the original body");
    let second = write(&t, "second", b"a different body");
    let key = "gobuildcache/k";
    assert_eq!(b.put(key, &first, 17).await.unwrap(), PutOutcome::Stored);
    assert_eq!(
        b.put(key, &second, 16).await.unwrap(),
        PutOutcome::AlreadyExists
    );
    assert_eq!(read(&b, key).await.unwrap(), b"the original body");
    assert_eq!(
        server.get_object("conditional", key).unwrap(),
        b"the original body"
    );
}

#[tokio::test]
async fn list_by_prefix_across_pages() {
    let server = FakeGcs::start();
    server.create_bucket("listing");
    let b = GcsBackend::builder("listing")
        .emulator(&server.endpoint())
        .page_size(3)
        .build()
        .unwrap();
    let t = TestDir::new();
    let mut want = Vec::new();
    for i in 0..11 {
        let key = format!("gobuildcache/{i:02}/obj");
        let body = vec![b'x'; i];
        let src = write(&t, &format!("f{i}"), &body);
        assert_eq!(
            b.put(&key, &src, i as u64).await.unwrap(),
            PutOutcome::Stored
        );
        want.push((key, i as u64));
    }
    for other in ["gobuildcache-other/x", "elsewhere/y"] {
        let src = write(&t, "other", b"zz");
        b.put(other, &src, 2).await.unwrap();
    }
    // The emulator must really paginate, or this test would not exercise our page loop.
    let (status, page) = server.request("GET", "/storage/v1/b/listing/o?maxResults=2", b"");
    assert_eq!(status, 200);
    let page: serde_json::Value = serde_json::from_slice(&page).unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 2, "{page}");
    assert!(
        page["nextPageToken"].as_str().is_some(),
        "fake-gcs-server did not paginate: {page}"
    );

    let got: Vec<(String, u64)> = b
        .list("gobuildcache/")
        .await
        .unwrap()
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect();
    assert_eq!(got, want);
    assert_eq!(b.list("").await.unwrap().len(), 13);
    assert_eq!(b.list("gobuildcache/0").await.unwrap().len(), 10);
    assert!(b.list("nothing-here/").await.unwrap().is_empty());
}

#[tokio::test]
async fn delete_removes_and_a_missing_key_is_fine() {
    let (server, b) = setup("deleting");
    let t = TestDir::new();
    let src = write(&t, "body", b"bytes");
    b.put("gobuildcache/a", &src, 5).await.unwrap();
    b.put("gobuildcache/b", &src, 5).await.unwrap();
    b.delete("gobuildcache/a").await.unwrap();
    assert!(b.get("gobuildcache/a").await.unwrap().is_none());
    b.delete("gobuildcache/a").await.unwrap();
    b.delete("gobuildcache/never-was").await.unwrap();
    assert_eq!(server.object_names("deleting"), ["gobuildcache/b"]);
    // A deleted key can be written again.
    assert_eq!(
        b.put("gobuildcache/a", &src, 5).await.unwrap(),
        PutOutcome::Stored
    );
}

#[tokio::test]
async fn check_passes_on_a_bucket_and_fails_permanently_on_a_missing_one() {
    let (server, b) = setup("present");
    b.check().await.unwrap();
    assert_eq!(b.location(), "gs://present");
    assert_eq!(b.name(), "gcs");

    let missing = backend(&server, "no-such-bucket");
    let e = missing.check().await.unwrap_err();
    assert!(!e.is_transient(), "{e}");
    let m = e.to_string();
    assert!(m.contains("gcs check gs://no-such-bucket"), "{m}");
    assert!(m.contains("404"), "{m}");
    assert_no_secrets(&e);

    // Uploading into it is permanent too; a get is just a miss.
    let t = TestDir::new();
    let src = write(&t, "body", b"bytes");
    let e = missing.put("gobuildcache/k", &src, 5).await.unwrap_err();
    assert!(!e.is_transient(), "{e}");
    assert!(
        e.to_string().contains("gs://no-such-bucket/gobuildcache/k"),
        "{e}"
    );
    assert_no_secrets(&e);
    let e = missing.list("gobuildcache/").await.unwrap_err();
    assert!(!e.is_transient(), "{e}");
    assert!(missing.get("gobuildcache/k").await.unwrap().is_none());
}

#[tokio::test]
async fn a_closed_port_is_transient_and_quick() {
    let b = GcsBackend::builder("bkt")
        .emulator(&format!("127.0.0.1:{}", free_port()))
        .build()
        .unwrap();
    let t = TestDir::new();
    let src = write(&t, "body", b"bytes");
    let start = Instant::now();
    let errors = [
        b.check().await.unwrap_err(),
        b.get("gobuildcache/k").await.err().unwrap(),
        b.put("gobuildcache/k", &src, 5).await.unwrap_err(),
        b.delete("gobuildcache/k").await.unwrap_err(),
        b.list("gobuildcache/").await.unwrap_err(),
    ];
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    for e in &errors {
        assert!(e.is_transient(), "{e}");
        assert!(e.to_string().contains("gs://bkt"), "{e}");
        assert_no_secrets(e);
    }
}

#[tokio::test]
async fn a_server_stopped_mid_use_gives_transient_errors() {
    let (mut server, b) = setup("stopping");
    let t = TestDir::new();
    let src = write(&t, "body", b"bytes");
    b.put("gobuildcache/k", &src, 5).await.unwrap();
    assert!(read(&b, "gobuildcache/k").await.is_some());
    server.stop();
    let start = Instant::now();
    let e = b.get("gobuildcache/k").await.err().unwrap();
    assert!(e.is_transient(), "{e}");
    let e = b.put("gobuildcache/k2", &src, 5).await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_file_of_the_wrong_size_is_not_uploaded() {
    let (server, b) = setup("sizes");
    let t = TestDir::new();
    let src = write(&t, "body", b"12345");
    let e = b.put("gobuildcache/k", &src, 9).await.unwrap_err();
    assert!(!e.is_transient(), "{e}");
    let e = b
        .put("gobuildcache/k", &t.path("absent"), 1)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("absent"), "{e}");
    assert!(server.object_names("sizes").is_empty());
}

#[tokio::test]
async fn harness_env_points_the_helper_at_the_server() {
    let server = FakeGcs::start();
    let env = server.env("bkt");
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(get("GOBUILDCACHE_BACKEND").as_deref(), Some("gcs"));
    assert_eq!(get("GOBUILDCACHE_GCS_BUCKET").as_deref(), Some("bkt"));
    assert_eq!(get("STORAGE_EMULATOR_HOST"), Some(server.endpoint()));
}

/// What goes on the wire, which no emulator reports: an upload carries its length (not
/// chunked), and nothing resembling credentials is sent to an emulator. A bare socket stands in
/// for the server, since only the request's bytes matter here.
#[tokio::test]
async fn uploads_have_a_length_and_send_no_credentials_to_an_emulator() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut req = Vec::new();
        let mut buf = [0u8; 65536];
        let head_end = loop {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "request ended early");
            req.extend_from_slice(&buf[..n]);
            if let Some(i) = req.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8_lossy(&req[..head_end]).to_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .expect("a content-length header")
            .trim()
            .parse()
            .unwrap();
        while req.len() < head_end + len {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "body shorter than its length");
            req.extend_from_slice(&buf[..n]);
        }
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
            .unwrap();
        (head, req[head_end..].to_vec())
    });
    let b = GcsBackend::builder("bkt")
        .emulator(&format!("127.0.0.1:{port}"))
        .build()
        .unwrap();
    let t = TestDir::new();
    let body = pattern(300_000);
    let src = write(&t, "body", &body);
    assert_eq!(
        b.put("gobuildcache/k", &src, body.len() as u64)
            .await
            .unwrap(),
        PutOutcome::Stored
    );
    let (head, sent) = server.join().unwrap();
    assert!(
        head.starts_with("post /upload/storage/v1/b/bkt/o?"),
        "{head}"
    );
    assert!(head.contains("ifgenerationmatch=0"), "{head}");
    assert!(!head.contains("transfer-encoding"), "{head}");
    assert!(!head.contains("authorization"), "{head}");
    assert!(
        sent.windows(body.len()).any(|w| w == body.as_slice()),
        "the body is sent whole and unchanged"
    );
}
