//! The library's public API as a Rust CI tool uses it: from inside a tokio runtime (both
//! flavours) and from a plain thread, with an S3 remote (moto_server). Nothing may nest
//! runtimes, and every call's result is checked, not only the absence of a panic.

use std::io::Write;
use std::path::Path;

use gobuildcache::{ActionId, BackendKind, Cache, Config, Ended, Error, OutputId};

use crate::moto::Moto;
use crate::util::{unique, TestDir};

fn open(m: &Moto, bucket: &str, prefix: &str, dir: &Path) -> Cache {
    let env = m.env(bucket);
    let lookup = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let config = Config::builder()
        .env(true)
        .flag("cache-dir", dir.to_str().unwrap())
        .flag("s3-prefix", prefix)
        .flag("stats", "false")
        .build_with_env(&lookup)
        .unwrap();
    Cache::open(config).unwrap()
}

fn id(n: u8) -> ActionId {
    ActionId::from_bytes(&[n; 32]).unwrap()
}

fn body(n: u8) -> Vec<u8> {
    format!("body number {n}").into_bytes()
}

fn is_manifest(key: &str) -> bool {
    key.contains("manifests/")
}

/// Every public method of `Cache` (and `serve`) against one bucket, results checked.
fn exercise() {
    let m = Moto::start();
    let bucket = "gbc-api";
    m.create_bucket(bucket);
    let t = TestDir::new();
    let prefix = format!("{}/", unique());
    let objects = || m.keys(bucket, &prefix);

    let a = open(&m, bucket, &prefix, &t.path("a"));
    assert_eq!(a.config().backend, BackendKind::S3);
    assert_eq!(a.get(&id(1)).unwrap(), None, "an empty bucket misses");
    let e1 = a
        .put_bytes(&id(1), &OutputId::of(&body(1)), &body(1))
        .unwrap();
    assert_eq!(e1.size, body(1).len() as u64);
    let b2 = body(2);
    a.put_reader(&id(2), &OutputId::of(&b2), Some(b2.len() as u64), &b2[..])
        .unwrap();
    std::fs::write(t.path("three"), body(3)).unwrap();
    a.put_file(&id(3), &OutputId::of(&body(3)), &t.path("three"))
        .unwrap();
    let mut w = a.begin_put().unwrap();
    w.write_all(&body(4)).unwrap();
    assert_eq!(w.size(), body(4).len() as u64);
    w.commit(&id(4), &OutputId::of(&body(4)), None).unwrap();
    let hit = a.get(&id(1)).unwrap().expect("just put");
    assert_eq!(hit.path, e1.path);
    assert_eq!(std::fs::read(&hit.path).unwrap(), body(1));
    assert!(a.trim().is_ok());

    assert_eq!(a.flush(), 0, "flush uploads everything put so far");
    assert_eq!(objects().len(), 4, "{:?}", objects());
    // Put, then close without a flush: close waits for the upload.
    a.put_bytes(&id(5), &OutputId::of(&body(5)), &body(5))
        .unwrap();
    let s = a.stats();
    assert_eq!((s.puts, s.hits, s.misses), (5, 1, 1), "{s:?}");
    assert_eq!(a.close(), 0);
    assert!(matches!(a.get(&id(1)), Err(Error::Closed)));
    assert_eq!(a.close(), 0, "close is idempotent");
    let keys = objects();
    assert_eq!(keys.len(), 5, "{keys:?}");
    assert!(
        !keys.iter().any(|k| is_manifest(k)),
        "a library user publishes no warm-start manifest: {keys:?}"
    );

    // A fresh dir finds every entry in the bucket.
    let b = open(&m, bucket, &prefix, &t.path("b"));
    b.wait_for_prefetch();
    for n in 1..=5 {
        let e = b
            .get(&id(n))
            .unwrap()
            .unwrap_or_else(|| panic!("entry {n}"));
        assert_eq!(std::fs::read(&e.path).unwrap(), body(n));
    }
    assert_eq!(b.stats().remote_hits, 5, "{:?}", b.stats());
    b.clear_local().unwrap();
    assert_eq!(b.report().unwrap().remote_hits, 5);
    // `wait_for_prefetch` is the warm-up step: its close publishes the manifest.
    assert_eq!(b.close(), 0);
    assert!(objects().iter().any(|k| is_manifest(k)), "{:?}", objects());

    // A GOCACHEPROG session through `serve`: a remote hit, then close.
    let c = open(&m, bucket, &prefix, &t.path("c"));
    let action = base64_std(id(3).as_bytes());
    let input = format!(
        "{{\"ID\":1,\"Command\":\"get\",\"ActionID\":\"{action}\"}}\n\n{{\"ID\":2,\"Command\":\"close\"}}\n\n"
    );
    let out_path = t.path("responses");
    let out = std::fs::File::create(&out_path).unwrap();
    assert_eq!(
        gobuildcache::serve(&c, input.as_bytes(), out).unwrap(),
        Ended::Closed
    );
    let responses = std::fs::read_to_string(&out_path).unwrap();
    assert!(
        responses.contains("\"DiskPath\"") && responses.contains("\"ID\":2"),
        "{responses}"
    );
    assert_eq!(c.stats().remote_hits, 1);

    let mut announced = 0;
    let announce = std::sync::Mutex::new(&mut announced);
    let deleted = c
        .clear_remote(false, &|n, _| **announce.lock().unwrap() = n)
        .unwrap();
    assert!(deleted >= 6, "5 entries and a manifest: {deleted}");
    assert_eq!(announced as u64, deleted);
    assert!(objects().is_empty(), "{:?}", objects());
    c.close();
}

fn base64_std(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[tokio::test(flavor = "current_thread")]
async fn from_a_current_thread_runtime() {
    exercise();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_a_multi_thread_runtime() {
    exercise();
}

#[test]
fn from_a_plain_thread() {
    exercise();
}

/// A cache opened in async code, used and dropped in another task, never panics.
#[tokio::test(flavor = "current_thread")]
async fn dropped_inside_a_runtime() {
    let m = Moto::start();
    m.create_bucket("gbc-drop");
    let t = TestDir::new();
    let c = open(&m, "gbc-drop", "p/", &t.path("d"));
    tokio::task::spawn(async move {
        assert_eq!(c.get(&id(9)).unwrap(), None);
        drop(c);
    })
    .await
    .unwrap();
}
