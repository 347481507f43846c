//! A cost-aware verdict on the remote: is fetching still cheaper than building?
//!
//! Errors and deadlines (guard.rs) catch a store that fails; they do not catch one that
//! answers every get, only slowly: each lookup then "succeeds" in a second or two while the
//! compile it saves takes milliseconds. So every get the go command waits for is weighed:
//! what it cost (its waits on the store, see `Progress`) against
//! what it saves (a budget: [`GET_FIXED`] plus its size at [`BUILD_RATE`], a cold build's
//! pace on an idle machine, times the machine's `contention`). Over the gets of the last
//! [`SPAN`] and those still waiting, once the waits add up to [`EVIDENCE`] and to
//! [`SLOW_RATIO`] times their budgets, with [`MIN_SLOW_GETS`] gets over that ratio each,
//! the store is judged slow: every get is then a local
//! miss at once, downloads in progress (gets, prefetch, pack) end, and now and then a probe
//! in the background (never on the build's path) fetches one object; one that arrives
//! within its budget lifts the verdict. The back-off between probes doubles while the store
//! stays slow.
//!
//! The start-up check is weighed too, once, as one request among the gets: the go command's
//! first get is often alone in flight, and the check is the other slow answer a verdict
//! wants.
//!
//! While the store is judged slow no upload starts (they would not end before close, and
//! they would slow the probes down), and close does not wait for the uploads left: those
//! entries stay local.
//!
//! What a slow store can add to one go command is therefore about [`CHECK_PATIENCE`] (gets
//! waiting for the start-up check), [`EVIDENCE`] (the waits before the verdict) and
//! [`SLOW_CLOSE`] at most (close's wait for the warm start to stop).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
/// How many gets must each have waited over [`SLOW_RATIO`] times their budget: one slow get
/// is not a trend (a loaded test server once stalled a single 404 for 4 s, and answered
/// everything else at once).
pub const MIN_SLOW_GETS: usize = 2;
/// How many times their budgets the waits must come to: a clear loss, not a close call
/// (on a loaded machine a healthy store's gets and the compiles they save slow down alike).
pub const SLOW_RATIO: u32 = 2;
/// Finished gets older than this no longer count.
pub const SPAN: Duration = Duration::from_secs(5);
/// First wait before a probe; doubled after each slow probe up to [`BACKOFF_MAX`].
pub const BACKOFF_START: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(16);
/// How long a probe waits for the store's answer before it counts as slow (far over the
/// [`GET_FIXED`] a fast answer takes).
pub const PROBE_PATIENCE: Duration = Duration::from_secs(1);
/// How long a get waits for the start-up check before it asks the store itself (and is
/// weighed): the one wait on the store a get makes that is not weighed. A healthy store
/// answers the check in milliseconds; on a slow link the check is weighed itself, and a
/// longer wait would only put the verdict off (1 s here made it 0.4 s later at 3 s a
/// request).
pub const CHECK_PATIENCE: Duration = Duration::from_millis(250);
/// A probe lifts the verdict only if it fetched at least this much (a small object or a
/// "not found" says little about bandwidth) within its budget.
pub const PROBE_BYTES: u64 = 16 << 10;
/// How long close waits for the warm start to stop while the store is judged slow
/// (`-close-timeout` otherwise): a download through a crawling link would hold every go
/// command's close. Uploads are not waited for at all then.
pub const SLOW_CLOSE: Duration = Duration::from_secs(2);
/// How often a waiting get re-weighs the store (waits still in progress count too).
pub const TICK: Duration = Duration::from_millis(100);
/// A verdict this long after the last resume starts the back-off afresh.
const BACKOFF_RESET: Duration = Duration::from_secs(60);
/// The most the budgets grow on a busy machine (see `contention`).
pub const MAX_CONTENTION: f64 = 8.0;
/// How long a measure of [`contention`] is reused.
const CONTENTION_TTL: Duration = Duration::from_secs(2);

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
    /// Gets still waiting, and how their own downloads are going.
    waiting: HashMap<u64, Arc<Progress>>,
    /// While slow: when the next probe may go.
    probe_at: Option<Instant>,
    probing: bool,
    backoff: Duration,
    resumed_at: Option<Instant>,
    /// The last measure of [`contention`] and when it was taken.
    contention: Option<(Instant, f64)>,
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
        Admit::Go(self.ticket(&mut st))
    }

    /// Weighs a request that is not a get but shows the link all the same (the start-up
    /// check), like a get that found nothing, whatever the verdict.
    pub fn track(self: &Arc<Self>) -> Ticket {
        let mut st = self.lock();
        self.ticket(&mut st)
    }

    fn ticket(self: &Arc<Self>, st: &mut State) -> Ticket {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let progress = Arc::new(Progress::new());
        st.waiting.insert(id, Arc::clone(&progress));
        Ticket {
            pace: Arc::clone(self),
            id,
            progress,
            finished: false,
        }
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
        let waiting: Vec<(Duration, Duration)> = st
            .waiting
            .values()
            .filter(|p| p.started())
            .map(|p| (p.cost(), budget(p.bytes.load(Ordering::Relaxed))))
            .collect();
        // What earlier gets saved excuses a stall now: weighing the gets in flight by
        // themselves made a false verdict on a warm store under load (CI, 2026-11-30).
        let all = Tally::of(st.done.iter().map(|(_, c, b)| (*c, *b)).chain(waiting));
        if !all.is_slow(1.0) {
            return;
        }
        // On a machine too busy to give us the CPU, gets and the compiles they save slow
        // down alike: the yardstick grows with it (measured only when it matters).
        let busy = st.busy(now);
        if !all.is_slow(busy) {
            return;
        }
        let Tally { cost, saved, .. } = all;
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

    /// How long a probe waits for an answer: [`PROBE_PATIENCE`] on this machine's yardstick
    /// (a loaded test server answers a fast link's gets in over a second).
    pub fn probe_patience(&self) -> Duration {
        let busy = self.lock().busy(Instant::now());
        PROBE_PATIENCE.mul_f64(busy)
    }

    /// Judges the store slow now, as if the gets had shown it.
    #[cfg(test)]
    pub fn judge_slow(&self) {
        self.lock().probe_at = Some(Instant::now() + BACKOFF_START);
        self.slow.send_replace(true);
    }

    /// Records a probe's outcome: lifts the verdict, or waits longer before the next one.
    pub fn probed(&self, p: Probe) {
        let now = Instant::now();
        let mut st = self.lock();
        st.probing = false;
        // Weighed as the gets are: a busy machine slows the store's answers (a test server
        // beside four go builds) as much as the compiles they would save.
        let busy = st.busy(now);
        let budget = |bytes| budget(bytes).mul_f64(busy);
        let fast = match p {
            // Fast: fetching is cheaper than building again (the verdict wants twice as
            // dear, so a store between the two keeps whichever it has).
            Probe::Fetched { bytes, cost } if bytes >= PROBE_BYTES && cost <= budget(bytes) => {
                Some(true)
            }
            Probe::Fetched { bytes, cost } if cost > budget(bytes) => Some(false),
            Probe::Fetched { .. } => None,
            Probe::Absent { cost } if cost > budget(0) => Some(false),
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

impl State {
    /// How much slower than idle this machine is now (see [`contention`]), measured at most
    /// every [`CONTENTION_TTL`].
    fn busy(&mut self, now: Instant) -> f64 {
        match self.contention {
            Some((at, c)) if now - at < CONTENTION_TTL => c,
            _ => {
                let c = contention();
                self.contention = Some((now, c));
                c
            }
        }
    }
}

/// Gets' waits on the store against what they would save.
#[derive(Clone, Copy)]
struct Tally {
    cost: Duration,
    saved: Duration,
    /// How many waited over [`SLOW_RATIO`] times their budget.
    over: usize,
}

impl Tally {
    /// Of (cost, budget) samples.
    fn of(samples: impl IntoIterator<Item = (Duration, Duration)>) -> Tally {
        let mut t = Tally {
            cost: Duration::ZERO,
            saved: Duration::ZERO,
            over: 0,
        };
        for (c, b) in samples {
            t.cost += c;
            t.saved += b;
            t.over += usize::from(c > b * SLOW_RATIO);
        }
        t
    }

    /// Fetching costs more than building, on a machine `busy` times slower than idle.
    fn is_slow(&self, busy: f64) -> bool {
        self.cost >= EVIDENCE
            && self.over >= MIN_SLOW_GETS
            && self.cost > self.saved.mul_f64(SLOW_RATIO as f64 * busy)
    }
}

/// How many times longer CPU work takes here now than on an idle machine: 1 plus the time
/// this thread waits for a CPU over the time it runs during a 20 ms busy loop (Linux
/// `/proc/thread-self/schedstat`; it sees the CPU limits of a container, which the load
/// average does not). 1 where that is not available.
fn contention() -> f64 {
    fn read() -> Option<(u64, u64)> {
        let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
        let mut it = s.split_whitespace();
        Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
    }
    let Some((run0, wait0)) = read() else {
        return 1.0;
    };
    let start = Instant::now();
    let mut x = 0u64;
    while start.elapsed() < Duration::from_millis(20) {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
    let Some((run1, wait1)) = read() else {
        return 1.0;
    };
    let (run, wait) = (run1.saturating_sub(run0), wait1.saturating_sub(wait0));
    if run == 0 {
        return 1.0;
    }
    (1.0 + wait as f64 / run as f64).clamp(1.0, MAX_CONTENTION)
}

/// What one get has cost so far: the time spent waiting on the store (for the response, then
/// for body bytes; for the pack stream to reach its entry, or its share of a prefetch's
/// fetches in flight, when it waits on those instead), not on this machine's CPU between
/// reads (decoding, hashing, writing). Waits on the pack include some of its CPU, which a
/// busy machine slows down like the compiles: `contention` scales the yardstick for that.
pub(crate) struct Progress {
    base: Instant,
    bytes: AtomicU64,
    /// Finished network waits, in ns.
    waited: AtomicU64,
    /// When the current network wait began (ns after `base`, plus 1); 0: none.
    since: AtomicU64,
    /// Whether the get went to the network at all.
    started: AtomicBool,
    /// How many fetches share the current wait (see [`Progress::wait_shared`]); 1 alone.
    share: AtomicU64,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            base: Instant::now(),
            bytes: AtomicU64::new(0),
            waited: AtomicU64::new(0),
            since: AtomicU64::new(0),
            started: AtomicBool::new(false),
            share: AtomicU64::new(1),
        }
    }

    fn now(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64 + 1
    }

    /// The get now waits for the store.
    pub fn wait_begins(&self) {
        self.started.store(true, Ordering::Relaxed);
        let _ = self
            .since
            .compare_exchange(0, self.now(), Ordering::Relaxed, Ordering::Relaxed);
    }

    /// The store answered (headers, or some body bytes).
    pub fn wait_ends(&self) {
        let since = self.since.swap(0, Ordering::Relaxed);
        let share = self.share.swap(1, Ordering::Relaxed).max(1);
        if since != 0 {
            self.waited
                .fetch_add(self.now().saturating_sub(since) / share, Ordering::Relaxed);
        }
    }

    /// The get now waits on a download it shares the link with `n - 1` others (a prefetch
    /// with many in flight): it is charged 1/n of the wait, what its own bytes cost of the
    /// link. Each of 32 prefetches on a loaded server takes 1.3 s while together they outrun
    /// the build; at 16 KB/s each one's share is still far over its budget.
    pub fn wait_shared(&self, n: u64) {
        // A wait already under way keeps its share (a get that took over a dropped prefetch).
        if self.since.load(Ordering::Relaxed) == 0 {
            self.share.store(n.max(1), Ordering::Relaxed);
        }
        self.wait_begins();
    }

    fn started(&self) -> bool {
        self.started.load(Ordering::Relaxed)
    }

    /// Network waits so far, the one in progress included.
    fn cost(&self) -> Duration {
        let since = self.since.load(Ordering::Relaxed);
        let now = if since == 0 {
            0
        } else {
            self.now().saturating_sub(since) / self.share.load(Ordering::Relaxed).max(1)
        };
        Duration::from_nanos(self.waited.load(Ordering::Relaxed) + now)
    }
}

/// One get waiting on the remote. Finish it with its outcome; dropped unfinished (the get
/// was let go), it counts what it waited for nothing.
pub(crate) struct Ticket {
    pace: Arc<Pace>,
    id: u64,
    progress: Arc<Progress>,
    finished: bool,
}

impl Ticket {
    /// For the get's own download to report its network waits and bytes.
    pub fn progress(&self) -> Arc<Progress> {
        Arc::clone(&self.progress)
    }

    /// The get is answered: an entry of `size` bytes (0 for a miss or a failure).
    pub fn finish(mut self, size: u64) {
        self.finished = true;
        self.record(budget(size));
    }

    fn record(&self, saved: Duration) {
        {
            let mut st = self.pace.lock();
            st.waiting.remove(&self.id);
            // A get served by a prefetch or the pack, or without asking, cost the store
            // nothing it can be judged by.
            if self.progress.started() {
                st.done
                    .push_back((Instant::now(), self.progress.cost(), saved));
            }
        }
        self.pace.judge();
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.finished {
            self.record(budget(self.progress.bytes.load(Ordering::Relaxed)));
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

/// A download that ends once the store is judged slow, reporting its network waits.
pub(crate) struct Abort<R> {
    inner: R,
    slow: Pin<Box<dyn Future<Output = ()> + Send>>,
    progress: Option<Arc<Progress>>,
}

impl<R> Abort<R> {
    pub fn new(inner: R, pace: &Pace, progress: Option<Arc<Progress>>) -> Abort<R> {
        Abort {
            inner,
            slow: Box::pin(pace.until_slow()),
            progress,
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
        if let Some(p) = &this.progress {
            // Pending is the network making us wait; time between reads is ours.
            match &res {
                Poll::Pending => p.wait_begins(),
                Poll::Ready(_) => {
                    p.wait_ends();
                    let n = (buf.filled().len() - before) as u64;
                    p.bytes.fetch_add(n, Ordering::Relaxed);
                }
            }
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pace on an idle machine, whatever the load while the tests run.
    fn pace() -> Arc<Pace> {
        let p = Arc::new(Pace::new(Arc::new(Stats::default()), "test://".into()));
        p.lock().contention = Some((Instant::now(), 1.0));
        p
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
    fn one_stalled_get_is_not_a_verdict() {
        let p = pace();
        sample(&p, Duration::from_secs(4), 0);
        assert!(!p.is_slow(), "one get, however long");
        sample(&p, Duration::from_millis(20), 0);
        assert!(!p.is_slow(), "and the next one was fast");
        sample(&p, Duration::from_millis(900), 0);
        assert!(p.is_slow(), "a second slow one is a trend");
    }

    #[test]
    fn waits_in_progress_count() {
        let p = pace();
        let a = go(&p);
        let b = go(&p);
        // 1.5 s of network waits each: 3 s waited for at most 0.3 s of budget.
        for t in [&a, &b] {
            t.progress.wait_begins();
            t.progress.waited.store(1_500_000_000, Ordering::Relaxed);
        }
        p.judge();
        assert!(p.is_slow());
    }

    #[test]
    fn the_start_up_check_is_weighed_as_one_request_among_the_gets() {
        let p = pace();
        let check = p.track();
        check.progress.wait_begins();
        check
            .progress
            .waited
            .store(4_000_000_000, Ordering::Relaxed);
        p.judge();
        assert!(!p.is_slow(), "a slow check alone is not a trend");
        let get = go(&p);
        get.progress.wait_begins();
        get.progress.waited.store(1_000_000_000, Ordering::Relaxed);
        p.judge();
        assert!(p.is_slow(), "the check and a get, both slow");
        // Tracked whatever the verdict (the check of a later session, say).
        drop(p.track());
    }

    #[test]
    fn waits_for_a_prefetch_or_our_own_cpu_do_not_count() {
        let p = pace();
        let t = go(&p);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(t.progress.cost(), Duration::ZERO, "not at the network yet");
        t.progress.wait_begins();
        std::thread::sleep(Duration::from_millis(30));
        t.progress.wait_ends();
        std::thread::sleep(Duration::from_millis(50)); // decoding, say
        let c = t.progress.cost();
        assert!(
            c >= Duration::from_millis(30) && c < Duration::from_millis(75),
            "{c:?}"
        );
        t.finish(0);
        let joined = go(&p);
        joined.finish(1000);
        assert_eq!(
            p.lock().done.len(),
            1,
            "a get that never asked is no sample"
        );
    }

    #[test]
    fn probes_lift_the_verdict_only_when_clearly_fast() {
        let p = pace();
        sample(&p, Duration::from_millis(1500), 0);
        sample(&p, Duration::from_millis(1500), 0);
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
        assert!(p.is_slow(), "100 kB in 0.5 s costs more than building it");
        p.probed(Probe::Fetched {
            bytes: 100_000,
            cost: Duration::from_millis(20),
        });
        assert!(!p.is_slow());
        assert_eq!(Stats::get(&p.stats.slow_resumes), 1);
        assert!(matches!(p.admit(), Admit::Go(_)));
    }

    #[test]
    fn contention_is_a_factor_of_at_least_one() {
        let c = contention();
        assert!((1.0..=MAX_CONTENTION).contains(&c), "{c}");
    }

    #[tokio::test]
    async fn downloads_end_when_the_store_is_judged_slow() {
        use tokio::io::AsyncReadExt;
        let p = pace();
        let (mut w, r) = tokio::io::duplex(64);
        let progress = Arc::new(Progress::new());
        let mut r = Abort::new(r, &p, Some(Arc::clone(&progress)));
        tokio::io::AsyncWriteExt::write_all(&mut w, b"abc")
            .await
            .unwrap();
        let mut buf = [0u8; 3];
        r.read_exact(&mut buf).await.unwrap();
        assert_eq!(progress.bytes.load(Ordering::Relaxed), 3);
        let p2 = Arc::clone(&p);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            sample(&p2, Duration::from_secs(5), 0);
            sample(&p2, Duration::from_secs(5), 0);
        });
        let e = r.read_u8().await.unwrap_err();
        assert!(is_judged_slow(&e), "{e}");
    }
}
