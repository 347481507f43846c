//! What only the S3 store has, against a real S3 server (moto_server): list pages, a missing
//! bucket's answers, credentials refused and never printed, a server that never answers,
//! one that comes back, and the harness's environment. The contract every store keeps is in
//! `stores.rs`.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use gobuildcache::store::s3::S3Backend;
use gobuildcache::store::{Backend, BackendError, Payload};

use crate::moto::Moto;
use crate::util::TestDir;

/// Deterministic, incompressible-looking bytes.
fn body(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn message(e: &BackendError) -> &str {
    match e {
        BackendError::Transient(m) | BackendError::Permanent(m) | BackendError::Unavailable(m) => m,
    }
}

#[tokio::test]
async fn list_paginates_under_prefix() {
    let t = TestDir::new();
    let m = Moto::start();
    m.create_bucket("gbc");
    let b = m.backend("gbc").await.with_list_page_size(7);
    let src = t.path("src");
    let mut want = Vec::new();
    for i in 0..25 {
        let data = body(i + 1, i as u64);
        std::fs::write(&src, &data).unwrap();
        let key = format!("p/{i:03}");
        b.put(&key, &Payload::file(&src, data.len() as u64))
            .await
            .unwrap();
        want.push((key, data.len() as u64));
    }
    for i in 0..3 {
        std::fs::write(&src, b"q").unwrap();
        b.put(&format!("q/{i}"), &Payload::file(&src, 1))
            .await
            .unwrap();
    }
    let got: Vec<(String, u64)> = b
        .list("p/")
        .await
        .unwrap()
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect();
    assert_eq!(got, want);
    let pages = m
        .log()
        .lines()
        .filter(|l| l.contains("list-type=2") && l.contains("prefix=p"))
        .count();
    assert!(pages >= 4, "25 keys at 7 per page: {pages} list requests");
    assert_eq!(b.list("").await.unwrap().len(), 28);
    assert!(b.list("nothing/").await.unwrap().is_empty());
}

#[tokio::test]
async fn missing_bucket_is_a_permanent_error_naming_it() {
    let t = TestDir::new();
    let m = Moto::start();
    let b = m.backend("no-such-bucket").await;
    let e = b.check().await.unwrap_err();
    assert!(!e.is_transient(), "{e}");
    assert!(message(&e).contains("s3://no-such-bucket"), "{e}");
    assert!(message(&e).contains("404"), "{e}");

    // A get is not a miss when the bucket itself is missing.
    let e = b.get("k/1").await.err().expect("an error, not a miss");
    assert!(!e.is_transient(), "{e}");
    assert!(message(&e).contains("s3://no-such-bucket/k/1"), "{e}");
    assert!(message(&e).contains("NoSuchBucket"), "{e}");

    let src = t.path("src");
    std::fs::write(&src, b"x").unwrap();
    let e = b.put("k/1", &Payload::file(&src, 1)).await.unwrap_err();
    assert!(!e.is_transient(), "{e}");
    assert!(message(&e).contains("put s3://no-such-bucket/k/1"), "{e}");
    assert!(b.list("k/").await.unwrap_err().to_string().contains("list"));
}

/// moto checks keys only with INITIAL_NO_AUTH_ACTION_COUNT=0, against its own empty IAM, so
/// every key is unknown there: the store's answer to bad credentials.
#[tokio::test]
async fn bad_credentials_are_permanent_and_never_printed() {
    let m = Moto::start_with_auth();
    let secret = "gbcSECRETkeyDoNotPrint0123456789";
    let b = S3Backend::new("gbc", &m.aws_settings_with_keys("AKIAGBCFAKEKEY", secret))
        .await
        .unwrap();
    let t = TestDir::new();
    let src = t.path("src");
    std::fs::write(&src, b"x").unwrap();
    let errors = vec![
        b.check().await.unwrap_err(),
        b.get("k/1").await.err().expect("refused"),
        b.put("k/1", &Payload::file(&src, 1)).await.unwrap_err(),
        b.list("k/").await.unwrap_err(),
        b.delete("k/1").await.unwrap_err(),
    ];
    for e in &errors {
        let msg = message(e);
        assert!(!e.is_transient(), "{msg}");
        assert!(msg.contains("403"), "{msg}");
        for bad in [
            secret,
            "AKIAGBCFAKEKEY",
            "Signature",
            "X-Amz-Credential",
            "Credential=",
            "Authorization",
        ] {
            assert!(!msg.contains(bad), "{bad:?} in {msg:?}");
        }
    }
    let get = message(&errors[1]);
    assert!(get.contains("get s3://gbc/k/1"), "{get}");
    assert!(get.contains("InvalidAccessKeyId"), "{get}");
    assert!(message(&errors[0]).contains("access denied"), "{errors:?}");
}

/// A server that accepts connections and never answers: the attempt timeout ends each call.
#[tokio::test]
async fn hung_server_times_out_as_transient() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    let aws = Moto::settings_for(&format!("http://127.0.0.1:{port}"));
    let b = S3Backend::new("gbc", &aws)
        .await
        .unwrap()
        .with_timeouts(Duration::from_secs(1), Duration::from_secs(1));
    let t = TestDir::new();
    let src = t.path("src");
    std::fs::write(&src, b"x").unwrap();
    let start = Instant::now();
    let e = b.get("k/1").await.err().expect("an error, not a miss");
    assert!(e.is_transient(), "{e}");
    assert!(message(&e).contains("timed out"), "{e}");
    let e = b.put("k/1", &Payload::file(&src, 1)).await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(
        start.elapsed() < Duration::from_secs(6),
        "{:?}",
        start.elapsed()
    );
}

/// The server dies and comes back on the same endpoint: calls fail as transient meanwhile,
/// then work again (on a fresh, empty server).
#[tokio::test]
async fn server_stop_and_restart() {
    let mut m = Moto::start();
    m.create_bucket("gbc");
    let b = m.backend("gbc").await;
    b.check().await.unwrap();
    m.stop();
    let e = b.check().await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    m.restart();
    m.create_bucket("gbc");
    b.check().await.unwrap();
    assert!(b.get("k").await.unwrap().is_none());
}

/// `Moto::env` names the variables the library really reads: the config built from it alone
/// reaches the server.
#[tokio::test]
async fn harness_env_configures_the_backend() {
    let m = Moto::start();
    m.create_bucket("gbc-env");
    let env = m.env("gbc-env");
    let lookup = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let cfg = gobuildcache::Config::builder()
        .env(true)
        .build_with_env(&lookup)
        .unwrap();
    assert_eq!(cfg.backend, gobuildcache::BackendKind::S3);
    assert_eq!(cfg.s3_bucket, "gbc-env");
    assert!(cfg.aws.force_path_style);
    assert_eq!(cfg.aws.endpoint_url.as_deref(), Some(m.endpoint().as_str()));
    let b = S3Backend::new(&cfg.s3_bucket, &cfg.aws).await.unwrap();
    b.check().await.unwrap();
    let t = TestDir::new();
    let src = t.path("src");
    std::fs::write(&src, b"hello").unwrap();
    b.put("gobuildcache/x", &Payload::file(&src, 5))
        .await
        .unwrap();
    assert_eq!(m.keys("gbc-env", ""), ["gobuildcache/x"]);
    assert_eq!(m.get_object("gbc-env", "gobuildcache/x").unwrap(), b"hello");
}
