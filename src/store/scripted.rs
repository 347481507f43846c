//! A store for unit tests that does what it is told: its first gets fail (transiently or
//! for good) or every get hangs, each get can take a while, and what it serves is a real
//! directory store, nothing, or an empty body for every key; it can list a page at a time,
//! as S3 does. It counts checks, gets and list requests.
//! Integration tests use real servers instead (see `tests/`).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use super::disk::DiskBackend;
use super::{Backend, BackendError, BackendResult, BodyReader, ObjectInfo, Payload, PutOutcome};

/// What a get that does not fail finds.
enum Holds {
    /// Nothing: every get is absent.
    Nothing,
    /// Every key, with an empty body.
    Empty,
    /// A real directory store (puts, deletes and lists go there too).
    Dir(DiskBackend),
}

pub(crate) struct Scripted {
    pub checks: AtomicUsize,
    pub gets: AtomicUsize,
    pub lists: AtomicUsize,
    holds: Holds,
    page: Option<usize>,
    fail_first: usize,
    permanent: bool,
    hang: bool,
    delay: Duration,
}

impl Scripted {
    fn holding(holds: Holds) -> Scripted {
        Scripted {
            checks: AtomicUsize::new(0),
            gets: AtomicUsize::new(0),
            lists: AtomicUsize::new(0),
            holds,
            page: None,
            fail_first: 0,
            permanent: false,
            hang: false,
            delay: Duration::ZERO,
        }
    }

    /// A store where every get finds nothing.
    pub fn empty() -> Scripted {
        Scripted::holding(Holds::Nothing)
    }

    /// A store that has every key, each with an empty body (the body is up to the test).
    pub fn opens() -> Scripted {
        Scripted::holding(Holds::Empty)
    }

    /// A real directory store at `dir`.
    pub fn over(dir: &Path) -> Scripted {
        Scripted::holding(Holds::Dir(DiskBackend::new(dir)))
    }

    /// The first `n` gets fail: transiently, or for good with `permanent`.
    pub fn failing(mut self, n: usize, permanent: bool) -> Scripted {
        self.fail_first = n;
        self.permanent = permanent;
        self
    }

    /// Every get waits forever.
    pub fn hanging(mut self) -> Scripted {
        self.hang = true;
        self
    }

    /// Every get takes `d` before it answers.
    pub fn slowed(mut self, d: Duration) -> Scripted {
        self.delay = d;
        self
    }

    /// One list request answers at most `n` objects, as S3's answers a page.
    pub fn paged(mut self, n: usize) -> Scripted {
        self.page = Some(n);
        self
    }

    pub fn gets(&self) -> usize {
        self.gets.load(Ordering::SeqCst)
    }

    pub fn lists(&self) -> usize {
        self.lists.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Backend for Scripted {
    fn name(&self) -> &'static str {
        "scripted"
    }
    fn location(&self) -> String {
        match &self.holds {
            Holds::Dir(d) => d.location(),
            _ => "scripted://".into(),
        }
    }
    async fn check(&self) -> BackendResult<()> {
        self.checks.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    async fn get(&self, key: &str) -> BackendResult<Option<BodyReader>> {
        let n = self.gets.fetch_add(1, Ordering::SeqCst);
        if self.hang {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(self.delay).await;
        if n < self.fail_first {
            return Err(if self.permanent {
                BackendError::Permanent("denied".into())
            } else {
                BackendError::Transient("reset".into())
            });
        }
        match &self.holds {
            Holds::Nothing => Ok(None),
            Holds::Empty => Ok(Some(Box::new(tokio::io::empty()))),
            Holds::Dir(d) => d.get(key).await,
        }
    }
    async fn put(&self, key: &str, body: &Payload) -> BackendResult<PutOutcome> {
        match &self.holds {
            Holds::Dir(d) => d.put(key, body).await,
            _ => Ok(PutOutcome::Stored),
        }
    }
    async fn delete(&self, key: &str) -> BackendResult<()> {
        match &self.holds {
            Holds::Dir(d) => d.delete(key).await,
            _ => Ok(()),
        }
    }
    async fn list(&self, prefix: &str) -> BackendResult<Vec<ObjectInfo>> {
        match &self.holds {
            Holds::Dir(d) => d.list(prefix).await,
            _ => Ok(vec![]),
        }
    }
    fn lists_by_page(&self) -> bool {
        self.page.is_some()
    }
    async fn list_some(&self, prefix: &str, max: usize) -> BackendResult<(Vec<ObjectInfo>, bool)> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        let max = self.page.map_or(max, |page| page.min(max));
        let mut all = self.list(prefix).await?;
        let complete = all.len() <= max;
        all.truncate(max);
        Ok((all, complete))
    }
}
