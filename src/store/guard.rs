//! Time limits, retries and a circuit breaker around any backend.
//!
//! A remote cache only pays when a fetch is cheaper than a rebuild, so every call has a
//! deadline, transient failures get a bounded number of jittered retries, and a backend that
//! keeps failing is not called at all for a while: every get is then a fast local-only miss.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{Backend, BackendError, BackendResult, BodyReader, ObjectInfo, Payload, PutOutcome};

/// Deadlines and retry counts. The defaults suit a build cache: a get that takes seconds
/// has already cost more than most compiles it could save.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Until a get has its response headers (the body has its own deadline above).
    pub get_timeout: Duration,
    pub get_attempts: u32,
    pub put_timeout: Duration,
    pub put_attempts: u32,
    /// check, delete, list.
    pub other_timeout: Duration,
    pub other_attempts: u32,
    /// Consecutive failures that open the breaker.
    pub breaker_threshold: u32,
    /// How long an open breaker refuses calls before letting one probe through.
    pub breaker_cooldown: Duration,
    /// First retry delay; doubled each attempt, with ±50% jitter.
    pub backoff: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            get_timeout: Duration::from_secs(3),
            get_attempts: 2,
            put_timeout: Duration::from_secs(30),
            put_attempts: 3,
            other_timeout: Duration::from_secs(10),
            other_attempts: 3,
            breaker_threshold: 5,
            breaker_cooldown: Duration::from_secs(30),
            backoff: Duration::from_millis(50),
        }
    }
}

/// Closed → (threshold consecutive failures) → open → (cooldown) → one probe → closed/open.
pub struct Breaker {
    failures: AtomicU32,
    /// When the breaker may next let a call through; `None` while closed.
    open_until: Mutex<Option<Instant>>,
    /// Set for failures no retry or wait can fix (missing bucket, bad credentials).
    disabled: Mutex<Option<String>>,
    threshold: u32,
    cooldown: Duration,
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Breaker {
        Breaker {
            failures: AtomicU32::new(0),
            open_until: Mutex::new(None),
            disabled: Mutex::new(None),
            threshold,
            cooldown,
        }
    }

    /// Whether a call may go ahead. While open, one caller per cooldown gets through as a probe.
    pub fn allow(&self) -> Result<(), BackendError> {
        if let Some(why) = self
            .disabled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            return Err(BackendError::Unavailable(format!("remote disabled: {why}")));
        }
        let mut open = self.open_until.lock().unwrap_or_else(|p| p.into_inner());
        match *open {
            None => Ok(()),
            Some(until) if Instant::now() >= until => {
                // Half-open: this caller probes; others keep failing fast until it reports.
                *open = Some(Instant::now() + self.cooldown);
                Ok(())
            }
            Some(_) => Err(BackendError::Unavailable("circuit breaker open".into())),
        }
    }

    pub fn success(&self) {
        self.failures.store(0, Ordering::Relaxed);
        *self.open_until.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Records a failure; true when this one opened the breaker.
    pub fn failure(&self) -> bool {
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let mut tripped = false;
        if n >= self.threshold {
            let mut open = self.open_until.lock().unwrap_or_else(|p| p.into_inner());
            tripped = open.is_none();
            *open = Some(Instant::now() + self.cooldown);
        }
        tripped
    }

    /// Opens the breaker now, as if the threshold had been reached; true if it was closed.
    pub fn trip(&self) -> bool {
        self.failures.store(self.threshold, Ordering::Relaxed);
        let mut open = self.open_until.lock().unwrap_or_else(|p| p.into_inner());
        let tripped = open.is_none();
        *open = Some(Instant::now() + self.cooldown);
        tripped
    }

    /// Whether calls are refused right now (disabled, or open), without taking a probe's turn.
    pub fn is_open(&self) -> bool {
        self.is_disabled()
            || self
                .open_until
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some_and(|until| Instant::now() < until)
    }

    pub fn is_disabled(&self) -> bool {
        self.disabled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Stops all calls for the rest of the session; true if this call did.
    pub fn disable(&self, why: String) -> bool {
        let mut d = self.disabled.lock().unwrap_or_else(|p| p.into_inner());
        let first = d.is_none();
        if first {
            *d = Some(why);
        }
        first
    }
}

pub struct Guarded {
    inner: Arc<dyn Backend>,
    pub limits: Limits,
    pub breaker: Breaker,
    /// Told once each time the breaker opens.
    on_trip: Box<dyn Fn(&BackendError) + Send + Sync>,
}

impl Guarded {
    pub fn new(
        inner: Arc<dyn Backend>,
        limits: Limits,
        on_trip: Box<dyn Fn(&BackendError) + Send + Sync>,
    ) -> Guarded {
        let breaker = Breaker::new(limits.breaker_threshold, limits.breaker_cooldown);
        Guarded {
            inner,
            limits,
            breaker,
            on_trip,
        }
    }

    /// Reports how the body of an object [`Guarded::get`] opened ended. A body that is cut,
    /// stalls or crawls counts as a failed call, so a store that answers headers but not
    /// bodies trips the breaker like one that answers nothing.
    pub fn body_done(&self, res: Result<(), &BackendError>) {
        match res {
            Ok(()) => self.breaker.success(),
            Err(e) => {
                if self.breaker.failure() {
                    (self.on_trip)(e);
                }
            }
        }
    }

    async fn call<T, F, Fut>(
        &self,
        what: &str,
        timeout: Duration,
        attempts: u32,
        f: F,
    ) -> BackendResult<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = BackendResult<T>>,
    {
        self.call_until(what, timeout, attempts, f, |_| true, true)
            .await
    }

    /// As `call`; an answer for which `complete` is false is not yet a success for the
    /// breaker (the caller reports it later, see [`Guarded::body_done`]). Without
    /// `retry_deadline`, a call that ran out its deadline is not tried again.
    async fn call_until<T, F, Fut>(
        &self,
        what: &str,
        timeout: Duration,
        attempts: u32,
        f: F,
        complete: impl Fn(&T) -> bool,
        retry_deadline: bool,
    ) -> BackendResult<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = BackendResult<T>>,
    {
        let mut delay = self.limits.backoff;
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.breaker.allow()?;
            let mut retry = true;
            let res = match tokio::time::timeout(timeout, f()).await {
                Ok(r) => r,
                Err(_) => {
                    retry = retry_deadline;
                    Err(BackendError::Transient(format!(
                        "{} {what}: no answer within {timeout:?}",
                        self.inner.name()
                    )))
                }
            };
            match res {
                Ok(v) => {
                    if complete(&v) {
                        self.breaker.success();
                    }
                    return Ok(v);
                }
                Err(e) => {
                    if self.breaker.failure() {
                        (self.on_trip)(&e);
                    }
                    if !e.is_transient() || !retry || attempt >= attempts {
                        return Err(e);
                    }
                    tracing::debug!("{what} attempt {attempt} failed, retrying: {e}");
                    let jitter = 0.5 + rand::random::<f64>();
                    tokio::time::sleep(delay.mul_f64(jitter)).await;
                    delay *= 2;
                }
            }
        }
    }
}

#[async_trait]
impl Backend for Guarded {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn check(&self) -> BackendResult<()> {
        let l = &self.limits;
        self.call("check", l.other_timeout, 1, || self.inner.check())
            .await
    }
    async fn get(&self, key: &str) -> BackendResult<Option<BodyReader>> {
        let l = &self.limits;
        // An opened body is a success only once it has been read (`body_done`). A get that
        // got no answer in its deadline is a miss, not tried again: the go command waits on
        // it, and a store that slow costs more than building (retries are for failures that
        // come back fast: a reset, a 5xx).
        self.call_until(
            "get",
            l.get_timeout,
            l.get_attempts,
            || self.inner.get(key),
            |found| found.is_none(),
            false,
        )
        .await
    }
    async fn put(&self, key: &str, body: &Payload) -> BackendResult<PutOutcome> {
        let l = &self.limits;
        // A big body (a test binary, a warm-start pack) gets a second per 4 MiB on top: the
        // deadline is for a stuck upload, not a long one.
        let timeout = l.put_timeout + Duration::from_secs(body.size() >> 22);
        self.call("put", timeout, l.put_attempts, || self.inner.put(key, body))
            .await
    }
    async fn delete(&self, key: &str) -> BackendResult<()> {
        let l = &self.limits;
        self.call("delete", l.other_timeout, l.other_attempts, || {
            self.inner.delete(key)
        })
        .await
    }
    async fn list(&self, prefix: &str) -> BackendResult<Vec<ObjectInfo>> {
        let l = &self.limits;
        self.call("list", l.other_timeout, l.other_attempts, || {
            self.inner.list(prefix)
        })
        .await
    }
    fn lists_by_page(&self) -> bool {
        self.inner.lists_by_page()
    }
    async fn list_some(&self, prefix: &str, max: usize) -> BackendResult<(Vec<ObjectInfo>, bool)> {
        let l = &self.limits;
        self.call("list", l.other_timeout, 1, || {
            self.inner.list_some(prefix, max)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::scripted::Scripted;
    use std::sync::atomic::{AtomicU64, AtomicUsize};

    fn flaky(fail_first: usize, hang: bool, permanent: bool) -> Arc<Scripted> {
        let s = Scripted::empty().failing(fail_first, permanent);
        Arc::new(if hang { s.hanging() } else { s })
    }

    fn limits() -> Limits {
        Limits {
            get_timeout: Duration::from_millis(50),
            backoff: Duration::from_millis(1),
            breaker_cooldown: Duration::from_millis(200),
            ..Limits::default()
        }
    }

    #[tokio::test]
    async fn transient_failures_are_retried_a_bounded_number_of_times() {
        let f = flaky(1, false, false);
        let g = Guarded::new(f.clone(), limits(), Box::new(|_| {}));
        assert!(
            g.get("k").await.unwrap().is_none(),
            "second attempt succeeds"
        );
        assert_eq!(f.gets(), 2);

        let f = flaky(100, false, false);
        let g = Guarded::new(f.clone(), limits(), Box::new(|_| {}));
        assert!(g.get("k").await.is_err());
        assert_eq!(f.gets(), 2, "get_attempts = 2");

        let f = flaky(100, false, true);
        let g = Guarded::new(f.clone(), limits(), Box::new(|_| {}));
        assert!(g.get("k").await.is_err());
        assert_eq!(f.gets(), 1, "permanent errors are not retried");
    }

    #[tokio::test]
    async fn a_hanging_backend_costs_at_most_the_deadline() {
        let f = flaky(0, true, false);
        let g = Guarded::new(f.clone(), limits(), Box::new(|_| {}));
        let start = Instant::now();
        let Err(err) = g.get("k").await else {
            panic!("expected an error")
        };
        assert!(err.to_string().contains("no answer"), "{err}");
        assert!(start.elapsed() < Duration::from_secs(2));
        assert_eq!(f.gets(), 1, "a get's deadline is not tried again");
    }

    #[tokio::test]
    async fn the_breaker_stops_calls_then_probes() {
        let f = flaky(1000, false, false);
        let trips = Arc::new(AtomicU64::new(0));
        let t = Arc::clone(&trips);
        let g = Guarded::new(
            f.clone(),
            limits(),
            Box::new(move |_| {
                t.fetch_add(1, Ordering::Relaxed);
            }),
        );
        for _ in 0..10 {
            let _ = g.get("k").await;
        }
        let calls = f.gets();
        assert_eq!(calls, 5, "threshold 5: later calls never reach the backend");
        assert_eq!(trips.load(Ordering::Relaxed), 1, "told once");
        assert!(g.breaker.is_open());
        tokio::time::sleep(Duration::from_millis(250)).await;
        let _ = g.get("k").await;
        assert_eq!(f.gets(), 6, "one probe after the cooldown");
    }

    #[tokio::test]
    async fn a_tripped_breaker_refuses_until_its_cooldown() {
        let f = flaky(0, false, false);
        let g = Guarded::new(f.clone(), limits(), Box::new(|_| {}));
        assert!(g.breaker.trip(), "was closed");
        assert!(!g.breaker.trip(), "already open");
        assert!(g.check().await.is_err());
        assert_eq!(f.checks.load(Ordering::SeqCst), 0, "refused without a call");
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(g.check().await.is_ok(), "the probe after the cooldown");
        assert_eq!(f.checks.load(Ordering::SeqCst), 1);
        assert!(!g.breaker.is_open(), "a good probe closes it");
    }

    #[tokio::test]
    async fn a_recovered_backend_closes_the_breaker() {
        let f = flaky(5, false, false);
        let g = Guarded::new(f.clone(), limits(), Box::new(|_| {}));
        for _ in 0..3 {
            let _ = g.get("k").await;
        }
        assert!(g.breaker.is_open());
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(g.get("k").await.is_ok());
        assert!(!g.breaker.is_open());
    }

    #[tokio::test]
    async fn a_disabled_backend_is_never_called() {
        let f = flaky(0, false, false);
        let g = Guarded::new(f.clone(), limits(), Box::new(|_| {}));
        g.breaker.disable("bucket missing".into());
        let Err(err) = g.get("k").await else {
            panic!("expected an error")
        };
        assert!(err.to_string().contains("bucket missing"));
        assert_eq!(f.gets(), 0);
    }

    #[tokio::test]
    async fn bodies_that_fail_after_good_headers_trip_the_breaker() {
        let tripped = Arc::new(AtomicUsize::new(0));
        let t = Arc::clone(&tripped);
        let g = Guarded::new(
            Arc::new(Scripted::opens()),
            limits(),
            Box::new(move |_| {
                t.fetch_add(1, Ordering::SeqCst);
            }),
        );
        let cut = BackendError::Transient("connection reset mid-body".into());
        for _ in 0..5 {
            assert!(g.get("k").await.unwrap().is_some(), "headers are fine");
            g.body_done(Err(&cut));
        }
        assert!(g.breaker.is_open(), "good headers did not reset the count");
        assert_eq!(tripped.load(Ordering::SeqCst), 1);
        assert!(g.get("k").await.is_err(), "open: not called");

        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(g.get("k").await.unwrap().is_some(), "the probe");
        g.body_done(Ok(()));
        assert!(!g.breaker.is_open(), "a whole body closes it");
    }
}
