//! A cost-aware verdict on the remote: is fetching still cheaper than building?
//!
//! Errors and deadlines (guard.rs) catch a store that fails; they do not catch one that
//! answers every get, only slowly: each lookup then "succeeds" in a second or two while the
//! compile it saves takes milliseconds. So every get the go command waits for is weighed:
//! what it cost (how long it waited, including waits for a prefetch or the pack) against
//! what it saves (a budget: [`GET_FIXED`] plus its size at [`BUILD_RATE`], a cold build's
//! pace). Over the gets of the last [`SPAN`] and those still waiting, once the waits add up
//! to [`EVIDENCE`] and to [`SLOW_RATIO`] times their budgets, the store is judged slow:
//! every get is then a local miss at once, downloads in progress (gets, prefetch, pack) end,
//! and now and then a probe in the background (never on the build's path) fetches one
//! object; one that arrives well within its budget lifts the verdict. The back-off between
//! probes doubles while the store stays slow.
//!
//! What a slow store can add to one go command is therefore about [`EVIDENCE`] (the waits
//! before the verdict) plus [`SLOW_CLOSE`] (close's wait for uploads while it is slow).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::watch;

use crate::stats::Stats;

/// What a get may cost and still pay, besides its size: about what the go command spends on
/// an action in a cold build (the small module of the fault tests: 116 actions in 9.8 s on
/// 2 cores, 170 ms of a worker each, most of it compiles that write 10-100 kB).
pub const GET_FIXED: Duration = Duration::from_millis(150);
/// Bytes of output a cold build writes per second per worker: a hit of N bytes saves about
/// N / BUILD_RATE of compiling on top of [`GET_FIXED`] (`go build std` writes 161 MiB in
/// 23 s on 2 cores here, 3.5 MiB/s per worker; less leans towards keeping the store).
pub const BUILD_RATE: u64 = 2 << 20;
/// Waiting summed over gets before a verdict: one slow get is not a trend.
pub const EVIDENCE: Duration = Duration::from_secs(3);
/// How many times their budgets the waits must come to: a clear loss, not a close call
/// (on a loaded machine a healthy store's gets and the compiles they save slow down alike).
pub const SLOW_RATIO: u32 = 2;
/// Finished gets older than this no longer count.
pub const SPAN: Duration = Duration::from_secs(5);
/// First wait before a probe; doubled after each slow probe up to [`BACKOFF_MAX`].
pub const BACKOFF_START: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(16);
/// A probe lifts the verdict only if it fetched at least this much (a small object or a
/// "not found" says little about bandwidth) within half its budget.
pub const PROBE_BYTES: u64 = 16 << 10;
/// How long close waits for uploads while the store is judged slow (`-close-timeout`
/// otherwise): uploads through a crawling link would hold every go command's close.
pub const SLOW_CLOSE: Duration = Duration::from_secs(2);
/// How often a waiting get re-weighs the store (waits still in progress count too).
pub const TICK: Duration = Duration::from_millis(100);
/// A verdict this long after the last resume starts the back-off afresh.
const BACKOFF_RESET: Duration = Duration::from_secs(60);

/// What building an output of `bytes` would cost: what a get of it may cost at most.
pub fn budget(bytes: u64) -> Duration {
    GET_FIXED + Duration::from_secs_f64(bytes as f64 / BUILD_RATE as f64)
}

pub(crate) struct Pace {
    state: Mutex<State>,
    slow: watch::Sender<bool>,
    next_id: AtomicU64,
    stats: Arc<Stats>,
    location: String,
}

#[derive(Default)]
struct State {
    /// Finished gets: when, what they cost, what they would have saved.
    done: VecDeque<(Instant, Duration, Duration)>,
    /// Gets still waiting: since when, and the bytes they have received so far.
    waiting: HashMap<u64, (Instant, Arc<AtomicU64>)>,
    /// While slow: when the next probe may go.
    probe_at: Option<Instant>,
    probing: bool,
    backoff: Duration,
    resumed_at: Option<Instant>,
}

/// Whether a get may ask the remote.
pub(crate) enum Admit {
    Go(Ticket),
    /// Judged slow: answer locally. `probe`: this caller should start the background probe.
    Skip {
        probe: bool,
    },
}

/// How a probe went.
pub(crate) enum Probe {
    /// Fetched `bytes` in `cost`.
    Fetched {
        bytes: u64,
        cost: Duration,
    },
    /// Not found: only a round trip, which says nothing about bandwidth.
    Absent {
        cost: Duration,
    },
    Failed,
}

impl Pace {
    pub fn new(stats: Arc<Stats>, location: String) -> Pace {
        Pace {
            state: Mutex::new(State {
                backoff: BACKOFF_START,
                ..State::default()
            }),
            slow: watch::channel(false).0,
            next_id: AtomicU64::new(0),
            stats,
            location,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_slow(&self) -> bool {
        *self.slow.borrow()
    }

    /// Resolves once the store is judged slow (at once if it is).
    pub fn until_slow(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.slow.subscribe();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }

    /// Resolves once the store is no longer judged slow.
    pub fn until_fast(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.slow.subscribe();
        async move {
            let _ = rx.wait_for(|s| !*s).await;
        }
    }

    pub fn admit(self: &Arc<Self>) -> Admit {
        let mut st = self.lock();
        if self.is_slow() {
            let due = st.probe_at.is_some_and(|t| Instant::now() >= t);
            let probe = due && !st.probing;
            st.probing |= probe;
            return Admit::Skip { probe };
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let bytes = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        st.waiting.insert(id, (start, Arc::clone(&bytes)));
        Admit::Go(Ticket {
            pace: Arc::clone(self),
            id,
            start,
            bytes,
            finished: false,
        })
    }

    /// Weighs recent and waiting gets; judges the store slow when their waits add up to
    /// [`EVIDENCE`] and [`SLOW_RATIO`] times what building would have cost.
    pub fn judge(&self) {
        let now = Instant::now();
        let mut st = self.lock();
        if self.is_slow() {
            return;
        }
        while st.done.front().is_some_and(|d| now - d.0 > SPAN) {
            st.done.pop_front();
        }
        let (mut cost, mut saved) = (Duration::ZERO, Duration::ZERO);
        for (_, c, b) in &st.done {
            cost += *c;
            saved += *b;
        }
        for (start, bytes) in st.waiting.values() {
            cost += now - *start;
            saved += budget(bytes.load(Ordering::Relaxed));
        }
        if cost < EVIDENCE || cost <= saved * SLOW_RATIO {
            return;
        }
        // Slow again soon after a resume: a flapping link waits longer before the next try.
        st.backoff = if st.resumed_at.is_none_or(|t| now - t > BACKOFF_RESET) {
            BACKOFF_START
        } else {
            (st.backoff * 2).min(BACKOFF_MAX)
        };
        st.probe_at = Some(now + st.backoff);
        st.done.clear();
        self.slow.send_replace(true);
        drop(st);
        Stats::add(&self.stats.slow_verdicts, 1);
        self.stats.warn_once(
            "slow",
            &format!(
                "remote cache {} is too slow: gets waited {:.1}s where building would take about \
                 {:.1}s; answering misses locally and trying it again in the background until \
                 it is fast again",
                self.location,
                cost.as_secs_f64(),
                saved.as_secs_f64()
            ),
        );
    }

    /// Records a probe's outcome: lifts the verdict, or waits longer before the next one.
    pub fn probed(&self, p: Probe) {
        let now = Instant::now();
        let mut st = self.lock();
        st.probing = false;
        let fast = match p {
            Probe::Fetched { bytes, cost } if cost > budget(bytes) => Some(false),
            Probe::Fetched { bytes, cost } if bytes >= PROBE_BYTES && cost * 2 <= budget(bytes) => {
                Some(true)
            }
            Probe::Fetched { .. } => None,
            Probe::Absent { cost } if cost > GET_FIXED => Some(false),
            Probe::Absent { .. } => None,
            Probe::Failed => Some(false),
        };
        match fast {
            Some(true) => {
                st.probe_at = None;
                st.resumed_at = Some(now);
                st.done.clear();
                self.slow.send_replace(false);
                drop(st);
                Stats::add(&self.stats.slow_resumes, 1);
                tracing::debug!("remote cache {} is fast again", self.location);
            }
            Some(false) => {
                st.backoff = (st.backoff * 2).min(BACKOFF_MAX);
                st.probe_at = Some(now + st.backoff);
            }
            // Inconclusive: the next get probes with another object.
            None => st.probe_at = Some(now),
        }
    }
}

/// One get waiting on the remote. Finish it with its outcome; dropped unfinished (the get
/// was let go), it counts what it waited for nothing.
pub(crate) struct Ticket {
    pace: Arc<Pace>,
    id: u64,
    start: Instant,
    bytes: Arc<AtomicU64>,
    finished: bool,
}

impl Ticket {
    /// Counts the bytes this get receives, so a long download that keeps pace with a build
    /// is not held against the store while it lasts.
    pub fn bytes(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.bytes)
    }

    /// The get is answered: an entry of `size` bytes (0 for a miss or a failure).
    pub fn finish(mut self, size: u64) {
        self.finished = true;
        self.record(budget(size));
    }

    fn record(&self, saved: Duration) {
        let now = Instant::now();
        {
            let mut st = self.pace.lock();
            st.waiting.remove(&self.id);
            st.done.push_back((now, now - self.start, saved));
        }
        self.pace.judge();
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.finished {
            self.record(budget(self.bytes.load(Ordering::Relaxed)));
        }
    }
}

/// The error a download ends with once the store is judged slow.
#[derive(Debug)]
pub(crate) struct JudgedSlow;

impl std::fmt::Display for JudgedSlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("remote judged too slow")
    }
}

impl std::error::Error for JudgedSlow {}

pub(crate) fn is_judged_slow(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|e| e.is::<JudgedSlow>())
}

/// A download that ends once the store is judged slow, counting what it receives.
pub(crate) struct Abort<R> {
    inner: R,
    slow: Pin<Box<dyn Future<Output = ()> + Send>>,
    bytes: Option<Arc<AtomicU64>>,
}

impl<R> Abort<R> {
    pub fn new(inner: R, pace: &Pace, bytes: Option<Arc<AtomicU64>>) -> Abort<R> {
        Abort {
            inner,
            slow: Box::pin(pace.until_slow()),
            bytes,
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Abort<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.slow.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::other(JudgedSlow)));
        }
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some(b)) = (&res, &this.bytes) {
            b.fetch_add((buf.filled().len() - before) as u64, Ordering::Relaxed);
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pace() -> Arc<Pace> {
        Arc::new(Pace::new(Arc::new(Stats::default()), "test://".into()))
    }

    fn go(p: &Arc<Pace>) -> Ticket {
        match p.admit() {
            Admit::Go(t) => t,
            Admit::Skip { .. } => panic!("judged slow too early"),
        }
    }

    /// Pretends a finished get cost `cost` for an entry of `size`.
    fn sample(p: &Arc<Pace>, cost: Duration, size: u64) {
        p.lock()
            .done
            .push_back((Instant::now(), cost, budget(size)));
        p.judge();
    }

    #[test]
    fn fast_gets_never_make_a_verdict() {
        let p = pace();
        for _ in 0..1000 {
            sample(&p, Duration::from_millis(80), 20_000);
        }
        // Big objects that arrive at a build's pace are fine too.
        for _ in 0..10 {
            sample(&p, Duration::from_millis(1500), 4 << 20);
        }
        assert!(!p.is_slow());
        assert_eq!(Stats::get(&p.stats.slow_verdicts), 0);
    }

    #[test]
    fn gets_slower_than_building_make_a_verdict_once_they_add_up() {
        let p = pace();
        sample(&p, Duration::from_millis(1500), 20_000);
        assert!(!p.is_slow(), "one slow get is not a trend");
        sample(&p, Duration::from_millis(1500), 20_000);
        assert!(p.is_slow());
        assert!(matches!(p.admit(), Admit::Skip { probe: false }));
        assert_eq!(Stats::get(&p.stats.slow_verdicts), 1);
    }

    #[test]
    fn waits_in_progress_count() {
        let p = pace();
        let _a = go(&p);
        let _b = go(&p);
        // Backdate both waits by 1.5 s: 3 s waited for at most 1 s of budget.
        for (start, _) in p.lock().waiting.values_mut() {
            *start -= Duration::from_millis(1500);
        }
        p.judge();
        assert!(p.is_slow());
    }

    #[test]
    fn probes_lift_the_verdict_only_when_clearly_fast() {
        let p = pace();
        sample(&p, Duration::from_secs(3), 0);
        assert!(p.is_slow());
        p.lock().probe_at = Some(Instant::now());
        assert!(matches!(p.admit(), Admit::Skip { probe: true }));
        assert!(
            matches!(p.admit(), Admit::Skip { probe: false }),
            "one at a time"
        );
        p.probed(Probe::Failed);
        assert_eq!(p.lock().backoff, BACKOFF_START * 2);
        p.probed(Probe::Absent {
            cost: Duration::from_millis(10),
        });
        assert!(p.is_slow(), "a quick miss says nothing about bandwidth");
        p.probed(Probe::Fetched {
            bytes: 100_000,
            cost: Duration::from_millis(500),
        });
        assert!(p.is_slow(), "100 kB in 0.5 s is not twice a build's pace");
        p.probed(Probe::Fetched {
            bytes: 100_000,
            cost: Duration::from_millis(20),
        });
        assert!(!p.is_slow());
        assert_eq!(Stats::get(&p.stats.slow_resumes), 1);
        assert!(matches!(p.admit(), Admit::Go(_)));
    }

    #[tokio::test]
    async fn downloads_end_when_the_store_is_judged_slow() {
        use tokio::io::AsyncReadExt;
        let p = pace();
        let (mut w, r) = tokio::io::duplex(64);
        let bytes = Arc::new(AtomicU64::new(0));
        let mut r = Abort::new(r, &p, Some(Arc::clone(&bytes)));
        tokio::io::AsyncWriteExt::write_all(&mut w, b"abc")
            .await
            .unwrap();
        let mut buf = [0u8; 3];
        r.read_exact(&mut buf).await.unwrap();
        assert_eq!(bytes.load(Ordering::Relaxed), 3);
        let p2 = Arc::clone(&p);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            sample(&p2, Duration::from_secs(5), 0);
        });
        let e = r.read_u8().await.unwrap_err();
        assert!(is_judged_slow(&e), "{e}");
    }
}
