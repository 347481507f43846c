//! The `Backend` contract, once for every store against its real server (moto_server,
//! fake-gcs-server, Azurite, wsgidav) and for the directory store: what the tiers above rely
//! on. A new store adds one [`Subject`] and one line to `contract!`. What only one store has
//! (S3's credentials and timeouts, GCS's requests on the wire, page sizes) stays in its own
//! file (`s3.rs`, `gcs.rs`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use gobuildcache::config::HttpSettings;
use gobuildcache::store::azure::AzureBackend;
use gobuildcache::store::disk::DiskBackend;
use gobuildcache::store::gcs::GcsBackend;
use gobuildcache::store::http::HttpBackend;
use gobuildcache::store::s3::S3Backend;
use gobuildcache::store::{Backend, BackendError, Payload, PutOutcome};
use tokio::io::AsyncReadExt;

use crate::azurite::Azurite;
use crate::fake_gcs::FakeGcs;
use crate::moto::Moto;
use crate::util::{files_under, free_port, TestDir};
use crate::webdav::WebDav;

/// A store under test: a server with its bucket (container, base URL), or a directory.
trait Subject: Sized {
    async fn start() -> Self;
    fn backend(&self) -> Arc<dyn Backend>;
    /// A backend on a bucket that does not exist, and what its errors must name.
    async fn missing(&self) -> (Arc<dyn Backend>, String);
    /// The object names, as the server itself has them.
    fn keys(&self) -> Vec<String>;
    /// Stops the server; false for a store without one.
    fn stop(&mut self) -> bool;
    /// A backend on a port nothing listens on; `None` for a store without one.
    async fn unreachable() -> Option<Arc<dyn Backend>>;
}

struct S3(Moto, Arc<dyn Backend>);

impl Subject for S3 {
    async fn start() -> Self {
        let m = Moto::start();
        m.create_bucket("gbc");
        let b = Arc::new(m.backend("gbc").await);
        S3(m, b)
    }
    fn backend(&self) -> Arc<dyn Backend> {
        Arc::clone(&self.1)
    }
    async fn missing(&self) -> (Arc<dyn Backend>, String) {
        (
            Arc::new(self.0.backend("no-such-bucket").await),
            "s3://no-such-bucket".into(),
        )
    }
    fn keys(&self) -> Vec<String> {
        self.0.keys("gbc", "")
    }
    fn stop(&mut self) -> bool {
        self.0.stop();
        true
    }
    async fn unreachable() -> Option<Arc<dyn Backend>> {
        let aws = Moto::settings_for(&format!("http://127.0.0.1:{}", free_port()));
        Some(Arc::new(S3Backend::new("gbc", &aws).await.unwrap()))
    }
}

struct Gcs(FakeGcs, Arc<dyn Backend>);

fn gcs_on(endpoint: &str, bucket: &str) -> Arc<dyn Backend> {
    Arc::new(
        GcsBackend::builder(bucket)
            .emulator(endpoint)
            .build()
            .unwrap(),
    )
}

impl Subject for Gcs {
    async fn start() -> Self {
        let g = FakeGcs::start();
        g.create_bucket("gbc");
        let b = gcs_on(&g.endpoint(), "gbc");
        Gcs(g, b)
    }
    fn backend(&self) -> Arc<dyn Backend> {
        Arc::clone(&self.1)
    }
    async fn missing(&self) -> (Arc<dyn Backend>, String) {
        (
            gcs_on(&self.0.endpoint(), "no-such-bucket"),
            "gs://no-such-bucket".into(),
        )
    }
    fn keys(&self) -> Vec<String> {
        self.0.object_names("gbc")
    }
    fn stop(&mut self) -> bool {
        self.0.stop();
        true
    }
    async fn unreachable() -> Option<Arc<dyn Backend>> {
        Some(gcs_on(&format!("127.0.0.1:{}", free_port()), "gbc"))
    }
}

struct Azure(Azurite, Arc<dyn Backend>);

impl Subject for Azure {
    async fn start() -> Self {
        let a = Azurite::start();
        a.create_container("gbc");
        let b = Arc::new(a.backend("gbc"));
        Azure(a, b)
    }
    fn backend(&self) -> Arc<dyn Backend> {
        Arc::clone(&self.1)
    }
    async fn missing(&self) -> (Arc<dyn Backend>, String) {
        (
            Arc::new(self.0.backend("no-such-container")),
            "no-such-container".into(),
        )
    }
    fn keys(&self) -> Vec<String> {
        self.0.keys("gbc")
    }
    fn stop(&mut self) -> bool {
        self.0.stop();
        true
    }
    async fn unreachable() -> Option<Arc<dyn Backend>> {
        let s = gobuildcache::config::AzureSettings {
            connection_string: Some(gobuildcache::config::Secret::new(
                Azurite::connection_string_for(free_port()),
            )),
            ..Default::default()
        };
        Some(Arc::new(AzureBackend::new("gbc", &s).unwrap()))
    }
}

struct Http(WebDav, Arc<dyn Backend>);

fn http_on(url: &str) -> Arc<dyn Backend> {
    Arc::new(HttpBackend::new(url, &HttpSettings::default()).unwrap())
}

impl Subject for Http {
    async fn start() -> Self {
        let w = WebDav::start();
        let b = http_on(&WebDav::url_via(w.port()));
        Http(w, b)
    }
    fn backend(&self) -> Arc<dyn Backend> {
        Arc::clone(&self.1)
    }
    async fn missing(&self) -> (Arc<dyn Backend>, String) {
        let url = format!("http://127.0.0.1:{}/no-such-base/", self.0.port());
        (http_on(&url), url)
    }
    fn keys(&self) -> Vec<String> {
        self.0.keys()
    }
    fn stop(&mut self) -> bool {
        self.0.stop();
        true
    }
    async fn unreachable() -> Option<Arc<dyn Backend>> {
        Some(http_on(&WebDav::url_via(free_port())))
    }
}

struct Dir(TestDir, Arc<dyn Backend>);

impl Subject for Dir {
    async fn start() -> Self {
        let t = TestDir::new();
        let root = t.path("store");
        std::fs::create_dir(&root).unwrap();
        let b = Arc::new(DiskBackend::new(&root));
        Dir(t, b)
    }
    fn backend(&self) -> Arc<dyn Backend> {
        Arc::clone(&self.1)
    }
    async fn missing(&self) -> (Arc<dyn Backend>, String) {
        let root = self.0.path("no-such-dir");
        let name = root.display().to_string();
        (Arc::new(DiskBackend::new(root)), name)
    }
    fn keys(&self) -> Vec<String> {
        let root = self.0.path("store");
        let mut keys: Vec<String> = files_under(&root)
            .iter()
            .map(|p| p.strip_prefix(&root).unwrap().display().to_string())
            .collect();
        keys.sort();
        keys
    }
    fn stop(&mut self) -> bool {
        false
    }
    async fn unreachable() -> Option<Arc<dyn Backend>> {
        None
    }
}

/// Bytes that differ at every offset, so a dropped or repeated chunk shows.
fn pattern(n: usize) -> Vec<u8> {
    (0..n as u64)
        .map(|i| (i.wrapping_mul(2654435761) >> 7) as u8)
        .collect()
}

/// Reads a body in small pieces, as the tier does, to exercise the streamed reader.
async fn read(b: &dyn Backend, key: &str) -> Option<Vec<u8>> {
    let mut r = b.get(key).await.unwrap()?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 8192];
    loop {
        let n = r.read(&mut buf).await.unwrap();
        if n == 0 {
            return Some(out);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// Errors are shown to users: they say which store, never a credential.
fn names(e: &BackendError, what: &str) {
    let m = e.to_string();
    assert!(m.contains(what), "{what:?} not in {m:?}");
    let lower = m.to_lowercase();
    for bad in ["authorization", "bearer", "signature=", "accountkey="] {
        assert!(!lower.contains(bad), "{bad:?} in {m:?}");
    }
}

async fn keeps_the_contract<S: Subject>() {
    let mut s = S::start().await;
    let b = s.backend();
    let t = TestDir::new();
    let file = |name: &str, body: &[u8]| {
        let p = t.path(name);
        std::fs::write(&p, body).unwrap();
        p
    };
    b.check().await.expect("check on a store that is there");

    // A missing key is a miss, at any depth.
    assert!(b.get("gobuildcache/nope").await.unwrap().is_none());
    assert!(b.get("no/such/deep/key").await.unwrap().is_none());

    // A multi-MB body streams both ways, under its exact name; an empty one is an object too.
    let big = pattern((5 << 20) + 17);
    let key = "gobuildcache/ab/abcdef0123";
    let put = b
        .put(key, &Payload::file(file("big", &big), big.len() as u64))
        .await;
    assert_eq!(put.unwrap(), PutOutcome::Stored);
    let got = read(&*b, key).await.expect("just stored");
    assert!(
        got == big,
        "body differs ({} vs {} bytes)",
        got.len(),
        big.len()
    );
    let put = b
        .put("gobuildcache/empty", &Payload::file(file("empty", b""), 0))
        .await;
    assert_eq!(put.unwrap(), PutOutcome::Stored);
    assert_eq!(read(&*b, "gobuildcache/empty").await.unwrap(), b"");
    assert_eq!(
        s.keys(),
        ["gobuildcache/ab/abcdef0123", "gobuildcache/empty"]
    );

    // Create-only: a second put of a key leaves the first body.
    let other = file("other", b"a different body");
    assert_eq!(
        b.put(key, &Payload::file(&other, 16)).await.unwrap(),
        PutOutcome::AlreadyExists
    );
    assert!(read(&*b, key).await.unwrap() == big, "the first body stays");

    // Delete: gone, again is fine, never-was is fine, and the key can be stored again.
    b.delete(key).await.unwrap();
    assert!(b.get(key).await.unwrap().is_none());
    b.delete(key).await.unwrap();
    b.delete("gobuildcache/never-was").await.unwrap();
    assert_eq!(
        b.put(key, &Payload::file(&other, 16)).await.unwrap(),
        PutOutcome::Stored
    );
    assert_eq!(read(&*b, key).await.unwrap(), b"a different body");

    // List: every object under a prefix with its size, nothing outside it.
    let mut want = vec![
        ("gobuildcache/ab/abcdef0123".to_string(), 16),
        ("gobuildcache/empty".to_string(), 0),
    ];
    for i in 0..11usize {
        let k = format!("gobuildcache/{i:02}/obj");
        b.put(
            &k,
            &Payload::file(file(&format!("f{i}"), &vec![b'x'; i]), i as u64),
        )
        .await
        .unwrap();
        want.push((k, i as u64));
    }
    b.put("gobuildcache-other/x", &Payload::file(file("o", b"zz"), 2))
        .await
        .unwrap();
    let list = |prefix: &'static str| {
        let b = Arc::clone(&b);
        async move {
            let mut got: Vec<(String, u64)> = b
                .list(prefix)
                .await
                .unwrap()
                .into_iter()
                .map(|o| (o.key, o.size))
                .collect();
            got.sort();
            got
        }
    };
    want.sort();
    assert_eq!(list("gobuildcache/").await, want);
    assert_eq!(list("gobuildcache/0").await.len(), 10);
    assert_eq!(list("").await.len(), 14);
    assert!(list("nothing-here/").await.is_empty());

    // A bucket that is not there: a permanent error naming it, not a transient one that
    // would be retried; a get is a miss or that same error.
    let (missing, name) = s.missing().await;
    let e = missing.check().await.unwrap_err();
    assert!(!e.is_transient(), "{e}");
    names(&e, &name);
    let e = missing
        .put("gobuildcache/k", &Payload::file(&other, 16))
        .await
        .unwrap_err();
    assert!(!e.is_transient(), "{e}");
    names(&e, &name);
    if let Err(e) = missing.get("gobuildcache/k").await {
        assert!(!e.is_transient(), "{e}");
    }

    // Nothing listening: transient (the breaker's business), and quick.
    if let Some(u) = S::unreachable().await {
        let start = Instant::now();
        let errors = [
            u.check().await.unwrap_err(),
            u.get("gobuildcache/k")
                .await
                .err()
                .expect("an error, not a miss"),
            u.put("gobuildcache/k", &Payload::file(&other, 16))
                .await
                .unwrap_err(),
            u.delete("gobuildcache/k").await.unwrap_err(),
            u.list("gobuildcache/").await.unwrap_err(),
        ];
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        for e in &errors {
            assert!(e.is_transient(), "{e}");
        }
    }

    // The server goes away mid-use: transient too.
    if s.stop() {
        let start = Instant::now();
        let e = b.get(key).await.err().expect("an error, not a miss");
        assert!(e.is_transient(), "{e}");
        let e = b
            .put("gobuildcache/k2", &Payload::file(&other, 16))
            .await
            .unwrap_err();
        assert!(e.is_transient(), "{e}");
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
    }
}

macro_rules! contract {
    ($($test:ident: $subject:ty),* $(,)?) => {$(
        #[tokio::test]
        async fn $test() {
            keeps_the_contract::<$subject>().await;
        }
    )*};
}

contract!(
    s3_keeps_the_contract: S3,
    gcs_keeps_the_contract: Gcs,
    azure_keeps_the_contract: Azure,
    http_keeps_the_contract: Http,
    dir_keeps_the_contract: Dir,
);
