//! What only the GCS store has, against a real fake-gcs-server: list pages, a missing
//! bucket's answers, a file that is not the size given, and the requests on the wire. The
//! contract every store keeps (round trips, create-only puts, deletes, errors) is in
//! `stores.rs`.

use std::time::Duration;

use gobuildcache::store::gcs::GcsBackend;
use gobuildcache::store::{Backend, BackendError, Payload, PutOutcome};

use crate::fake_gcs::FakeGcs;
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
            b.put(&key, &Payload::file(&src, i as u64)).await.unwrap(),
            PutOutcome::Stored
        );
        want.push((key, i as u64));
    }
    for other in ["gobuildcache-other/x", "elsewhere/y"] {
        let src = write(&t, "other", b"zz");
        b.put(other, &Payload::file(&src, 2)).await.unwrap();
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
    let e = missing
        .put("gobuildcache/k", &Payload::file(&src, 5))
        .await
        .unwrap_err();
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
async fn a_file_of_the_wrong_size_is_not_uploaded() {
    let (server, b) = setup("sizes");
    let t = TestDir::new();
    let src = write(&t, "body", b"12345");
    let e = b
        .put("gobuildcache/k", &Payload::file(&src, 9))
        .await
        .unwrap_err();
    assert!(!e.is_transient(), "{e}");
    let e = b
        .put("gobuildcache/k", &Payload::file(t.path("absent"), 1))
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
        b.put("gobuildcache/k", &Payload::file(&src, body.len() as u64))
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
