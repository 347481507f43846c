//! The remote tier as the cache sees it: fetches into the local tier, background uploads,
//! single-flight, and fail-open accounting. One of these sits on top of any [`Backend`].

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Notify, OnceCell, Semaphore};

use super::pace::{self, Abort, Admit, Pace, Probe, Progress};
use crate::config::LockType;
use crate::format::object::{self, Codec, Header};
use crate::ids::ActionId;
use crate::local::lock::FileLock;
use crate::local::{LocalTier, Lookup};
use crate::stats::Stats;
use crate::store::guard::{Guarded, Limits};
use crate::store::idle::IdleTimeout;
use crate::store::{Backend, BackendError, ObjectInfo, Payload, PutOutcome};
use crate::{Entry, Error, Result};

/// Uploads waiting beyond this are skipped (counted, warned once): the entry stays local.
/// A queued upload is a few dozen bytes (the body stays in the local tier), so the bound is
/// about not falling arbitrarily behind, not memory.
pub(crate) const QUEUE_CAP: usize = 4096;
/// Concurrent uploads.
const UPLOAD_CONCURRENCY: usize = 8;
/// Entries up to this size are encoded in memory and uploaded from there, with no temp file
/// to create, write, read back and delete: nearly every output of a build (`go build std`:
/// 1,461 entries, 110 kB on average). At most [`UPLOAD_CONCURRENCY`] are encoded at once.
const IN_MEMORY_MAX: u64 = 1 << 20;
/// A body read that makes no progress for this long fails the fetch (a server that stalls
/// mid-body must not hold a fetch forever).
pub(crate) const STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// A body slower than this on average (after a grace as long as a get's header deadline)
/// fails the fetch: at that rate a remote hit costs more than the compile it saves, and a
/// trickling link would otherwise stretch a build without limit.
const MIN_DOWNLOAD_RATE: u64 = 256 * 1024;
/// A remote with at most this many objects under the prefix is listed whole at start-up (one
/// request), and gets for ActionIDs it does not hold are misses without asking it. A cold
/// remote would otherwise cost every miss of a cold build a round trip on the build's
/// critical path. Objects other jobs upload after the listing are not seen by this run.
const SMALL_REMOTE: usize = 1000;
/// A bigger remote is listed in [`SHARDS`] parts at once, one per first hex digit of the
/// ActionID, where one list request returns a page of [`SMALL_REMOTE`]: up to ~16,000 objects
/// in one more round trip. Measured on a real module's CI job (bench/w4.sh): its `go vet` and
/// `go test` steps after a cold `go build` met ~1,100 misses each in a bucket of 2,000-3,600
/// objects, and asking the store about each added 8-12 s to a 10-28 s step.
const SHARDS: usize = 16;
/// The parts are listed only once this many gets have asked the store and found nothing: a
/// run the warm start covers (most fresh runs) meets no such miss and never pays the parts'
/// requests and their parsing, while a run with many misses pays this many round trips
/// (side by side, as the go command asks) before the listing answers the rest.
const ASKED_BEFORE_PARTS: u64 = SHARDS as u64;

/// Where the listing stands: not wanted (the remote was listed whole, or cannot be), the
/// parts waiting for misses, started, or the whole listing waiting for misses (a warm start
/// found its manifest: see [`RemoteTier::warm_start_found`]).
const PARTS_UNWANTED: u8 = 0;
const PARTS_WAITING: u8 = 1;
const PARTS_STARTED: u8 = 2;
const WHOLE_WAITING: u8 = 3;

/// Whether `clear` may delete `key`. A prefix ending in `/` (or empty, with `--force`) is a
/// directory: everything in it. Any other prefix is a string start, which other keys can share
/// (`gobuildcache` is the start of `gobuildcache-other/x`), so only keys this cache writes,
/// the prefix and an ActionID in hex, are its, and those `also` recognises (the warm start's).
fn is_ours(prefix: &str, key: &str, also: fn(&str) -> bool) -> bool {
    match key.strip_prefix(prefix) {
        None => false,
        Some(_) if prefix.is_empty() || prefix.ends_with('/') => true,
        Some(rest) => {
            (rest.len() == 64 && rest.bytes().all(|b| b.is_ascii_hexdigit())) || also(rest)
        }
    }
}

pub(crate) struct Upload {
    pub action: ActionId,
    pub entry: Entry,
}

pub(crate) struct RemoteTier {
    pub backend: Arc<Guarded>,
    /// Whether fetching still pays: gets, the prefetch and the pack follow its verdict.
    pub(crate) pace: Arc<Pace>,
    prefix: String,
    pub(crate) codec: Codec,
    read_only: bool,
    lock_type: LockType,
    lock_dir: PathBuf,
    pub(crate) local: Arc<LocalTier>,
    pub(crate) stats: Arc<Stats>,
    /// In-process single-flight: one fetch per ActionID, others wait for its result.
    flights: Mutex<HashMap<ActionId, Arc<Flight>>>,
    /// Everything the remote held at start-up, when it was small (see [`SMALL_REMOTE`]).
    listed: std::sync::OnceLock<std::collections::HashSet<ActionId>>,
    /// Gets that asked the store and found nothing, and whether the listing in parts waits
    /// for enough of them (see [`ASKED_BEFORE_PARTS`]).
    asked_absent: AtomicU64,
    parts: std::sync::atomic::AtomicU8,
    /// Entries a stream (a warm-start pack) has promised (see `slots.rs`).
    pub(crate) packed: super::slots::Slots,
    queue: mpsc::Sender<Upload>,
    checked: OnceCell<()>,
    /// Queued plus running uploads.
    pending: Arc<AtomicU64>,
    idle: Arc<Notify>,
    /// Where each stored upload's encoded object goes instead of being deleted (the warm
    /// start packs them: the bytes are already compressed and framed), when set.
    stored: std::sync::OnceLock<Box<dyn Fn(Stored) + Send + Sync>>,
}

/// An upload the store took: its encoded object, exactly the bytes now under its key.
pub(crate) struct Stored {
    pub action: ActionId,
    pub body: Payload,
    /// Deletes a big object's temp file once the pack no longer needs it.
    pub _tmp: Option<TempFile>,
}

/// Who asked for a fetch: a get (the go command waits) or the warm-start prefetch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    Get,
    Prefetch,
}

/// One fetch in progress and whoever started it.
struct Flight {
    origin: Origin,
    result: OnceCell<Option<Entry>>,
}

pub(crate) struct Settings {
    pub prefix: String,
    pub compression: bool,
    pub read_only: bool,
    pub lock_type: LockType,
    pub lock_dir: PathBuf,
    pub limits: Limits,
    /// A warm start will run: the start-up listing waits for what it finds (see
    /// [`RemoteTier::warm_start_found`]).
    pub warm_start: bool,
}

impl RemoteTier {
    /// Wires a backend in. Must run inside the runtime (it spawns the upload dispatcher).
    pub fn start(
        backend: Arc<dyn Backend>,
        s: Settings,
        local: Arc<LocalTier>,
        stats: Arc<Stats>,
    ) -> Arc<RemoteTier> {
        let (tx, rx) = mpsc::channel(QUEUE_CAP);
        let location = format!("{}/{}", backend.location(), s.prefix);
        let trip_stats = Arc::clone(&stats);
        let on_trip = Box::new(move |e: &BackendError| {
            Stats::add(&trip_stats.breaker_trips, 1);
            trip_stats.warn_once(
                "breaker",
                &format!("remote cache {location} keeps failing ({e}); not calling it for a while"),
            )
        });
        let pace = Arc::new(Pace::new(
            Arc::clone(&stats),
            format!("{}/{}", backend.location(), s.prefix),
        ));
        let tier = Arc::new(RemoteTier {
            backend: Arc::new(Guarded::new(backend, s.limits, on_trip)),
            pace,
            prefix: s.prefix,
            codec: if s.compression {
                Codec::Lz4
            } else {
                Codec::Raw
            },
            read_only: s.read_only,
            lock_type: s.lock_type,
            lock_dir: s.lock_dir,
            local,
            stats,
            flights: Mutex::new(HashMap::new()),
            packed: Default::default(),
            listed: std::sync::OnceLock::new(),
            asked_absent: AtomicU64::new(0),
            parts: std::sync::atomic::AtomicU8::new(PARTS_UNWANTED),
            queue: tx,
            pending: Arc::new(AtomicU64::new(0)),
            idle: Arc::new(Notify::new()),
            checked: OnceCell::new(),
            stored: std::sync::OnceLock::new(),
        });
        tokio::spawn(dispatch(Arc::downgrade(&tier), rx));
        let t = Arc::clone(&tier);
        tokio::spawn(async move { t.ready().await });
        if !s.warm_start {
            let t = Arc::clone(&tier);
            tokio::spawn(async move { t.list_at_start().await });
        }
        tier
    }

    /// What the warm start's manifest lookup found. With no entries (a cold run) the remote
    /// is listed now, as at start-up without a warm start. With entries, the listing waits
    /// until misses ask the store (as the parts do): the fresh run the manifest covers meets
    /// few, and its packs no longer queue behind a listing at the store (seen on moto_server:
    /// a page of 1,000 keys took 0.24 s and held the manifest and the packs back as long).
    pub(crate) fn warm_start_found(self: &Arc<Self>, entries: usize) {
        if entries == 0 {
            let t = Arc::clone(self);
            tokio::spawn(async move { t.list_at_start().await });
        } else {
            self.parts.store(WHOLE_WAITING, Ordering::Release);
            self.maybe_list_parts();
        }
    }

    /// Hands every later stored upload's encoded object to `sink` (once; later calls are
    /// ignored).
    pub(crate) fn on_stored(&self, sink: Box<dyn Fn(Stored) + Send + Sync>) {
        let _ = self.stored.set(sink);
    }

    /// Resolves once the start-up check is done: remote calls wait for it, so a broken
    /// remote is reported as such (once) before any get or put can complain about it.
    pub(crate) async fn ready(&self) {
        self.checked.get_or_init(|| self.startup_check()).await;
    }

    pub fn key(&self, action: &ActionId) -> String {
        format!("{}{}", self.prefix, action.to_hex())
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether the store is judged too slow to pay right now (see `pace.rs`).
    pub fn is_slow(&self) -> bool {
        self.pace.is_slow()
    }

    pub fn read_only(&self) -> bool {
        self.read_only
    }

    pub fn location(&self) -> String {
        format!("{}/{}", self.backend.location(), self.prefix)
    }

    /// Whether a fetch of `action` is running in this process.
    pub(crate) fn in_flight(&self, action: &ActionId) -> bool {
        let f = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        f.contains_key(action)
    }

    /// With `fslock`, a named lock in the lock dir without waiting: `Ok(None)` while another
    /// process holds it (and without fslock).
    pub(crate) fn try_lock_file(&self, name: &str) -> io::Result<Option<FileLock>> {
        if self.lock_type != LockType::Fslock {
            return Ok(None);
        }
        FileLock::try_acquire(self.lock_dir.join(name))
    }

    pub(crate) fn fslock(&self) -> bool {
        self.lock_type == LockType::Fslock
    }

    /// A missing bucket or bad credentials will not fix themselves: say so once and run
    /// local-only. A transient failure opens the breaker: calls resume after its cooldown.
    async fn startup_check(&self) {
        // Weighed once, as one request among the gets (never charged to the gets that wait
        // for it): on a slow link it and the first get are the two slow answers a verdict
        // wants, while the first get is often alone in flight. One slow answer alone (a
        // loaded server's first) is never a verdict.
        let ticket = self.pace.track();
        let checked = waiting(&Some(ticket.progress()), 1, self.backend.check()).await;
        ticket.finish(0);
        if let Err(e) = checked {
            self.stats.remote_errors.fetch_add(1, Ordering::Relaxed);
            let msg = format!(
                "remote cache {} is not usable, continuing with the local cache only: {e}",
                self.location()
            );
            // A store that could not answer one call in the check's long deadline is
            // not asked again for a cooldown: every get would wait out its own deadline.
            let breaker = &self.backend.breaker;
            let stopped = if e.is_transient() {
                breaker.trip()
            } else {
                breaker.disable(e.to_string())
            };
            if stopped {
                Stats::add(&self.stats.breaker_trips, 1);
            }
            self.stats.warn_once("remote-startup", &msg);
        }
    }

    /// Lists the remote whole if one request (or, for a disk or WebDAV store, one walk) can;
    /// a paged store too big for one page is listed in parts later, if misses call for it.
    /// Any failure just leaves every get asking the store.
    async fn list_at_start(self: &Arc<Self>) {
        let listed = if self.backend.lists_by_page() {
            self.backend.list_some(&self.prefix, SMALL_REMOTE).await
        } else {
            // One walk costs the store the same whatever its size: ask for all of it at once.
            self.backend
                .list_some(&self.prefix, SHARDS * SMALL_REMOTE)
                .await
        };
        match listed {
            Ok((objects, true)) => self.set_listed(&objects),
            Ok(_) if self.backend.lists_by_page() => {
                self.parts.store(PARTS_WAITING, Ordering::Release);
                self.maybe_list_parts();
            }
            Ok(_) => {}
            Err(e) => tracing::debug!("listing {}: {e}", self.location()),
        }
    }

    fn set_listed(&self, objects: &[ObjectInfo]) {
        let ids = objects
            .iter()
            .filter_map(|o| o.key.strip_prefix(&self.prefix))
            .filter_map(|hex| ActionId::from_hex(hex).ok())
            .collect();
        let _ = self.listed.set(ids);
    }

    /// Starts a listing that waits for misses, once (see [`ASKED_BEFORE_PARTS`]).
    fn maybe_list_parts(self: &Arc<Self>) {
        if self.asked_absent.load(Ordering::Acquire) < ASKED_BEFORE_PARTS {
            return;
        }
        if self
            .parts
            .compare_exchange(
                WHOLE_WAITING,
                PARTS_UNWANTED,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
        {
            // Listed as at start-up; a remote past one page goes on to its parts at once.
            let me = Arc::clone(self);
            tokio::spawn(async move { me.list_at_start().await });
            return;
        }
        if self
            .parts
            .compare_exchange(
                PARTS_WAITING,
                PARTS_STARTED,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_err()
        {
            return;
        }
        let me = Arc::clone(self);
        tokio::spawn(async move {
            match me.list_parts().await {
                Ok(Some(objects)) => me.set_listed(&objects),
                Ok(None) => {}
                Err(e) => tracing::debug!("listing {} in parts: {e}", me.location()),
            }
        });
    }

    /// Every object under the prefix, one request per first hex digit side by side, or
    /// `None` when a part holds more than a page.
    async fn list_parts(&self) -> Result<Option<Vec<ObjectInfo>>, BackendError> {
        let shards = (0..SHARDS).map(|digit| {
            let prefix = format!("{}{digit:x}", self.prefix);
            async move { self.backend.list_some(&prefix, SMALL_REMOTE).await }
        });
        let mut all = Vec::new();
        for shard in futures_util::future::join_all(shards).await {
            let (objects, complete) = shard?;
            if !complete {
                return Ok(None);
            }
            all.extend(objects);
        }
        Ok(Some(all))
    }

    /// Fetches an entry into the local tier; `None` on a miss or any failure (fail-open).
    /// A get is weighed by the [`Pace`]: while the store is judged slow it is a miss at once,
    /// and one waiting when the verdict comes is let go.
    pub async fn fetch(self: &Arc<Self>, action: ActionId, origin: Origin) -> Option<Entry> {
        if origin == Origin::Prefetch {
            return self.fetch_any(action, origin, None).await;
        }
        let ticket = match self.pace.admit() {
            Admit::Go(t) => t,
            Admit::Skip { probe } => {
                Stats::add(&self.stats.slow_skipped, 1);
                if probe {
                    self.probe(action);
                }
                return None;
            }
        };
        let fetch = self.fetch_any(action, origin, Some(ticket.progress()));
        tokio::pin!(fetch);
        let slow = self.pace.until_slow();
        tokio::pin!(slow);
        loop {
            tokio::select! {
                biased;
                found = &mut fetch => {
                    ticket.finish(found.as_ref().map_or(0, |e| e.size));
                    return found;
                }
                _ = &mut slow => {
                    Stats::add(&self.stats.slow_skipped, 1);
                    return None;
                }
                // Waits in progress count: a get stuck on a crawling link must not wait
                // for its own end to be weighed.
                _ = tokio::time::sleep(pace::TICK) => self.pace.judge(),
            }
        }
    }

    /// Fetches one object in the background to see whether the store is fast again. It
    /// is read and thrown away: the go command, told "miss", builds the entry itself.
    fn probe(self: &Arc<Self>, action: ActionId) {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let key = me.key(&action);
            let start = Instant::now();
            // A store still slow answers late: waiting out its header deadline would only
            // push the next probe back while the link may have recovered.
            let patience = me.pace.probe_patience();
            let got = tokio::time::timeout(patience, me.backend.get(&key)).await;
            let outcome = match got.unwrap_or_else(|_| Err(BackendError::Transient("probe".into())))
            {
                Ok(None) => Probe::Absent {
                    cost: start.elapsed(),
                },
                Ok(Some(r)) => {
                    // Given up as soon as it falls behind its budget.
                    let mut r = IdleTimeout::new(r, STALL_TIMEOUT)
                        .with_min_rate(pace::GET_FIXED, pace::BUILD_RATE);
                    match tokio::io::copy(&mut r, &mut tokio::io::sink()).await {
                        Ok(bytes) => Probe::Fetched {
                            bytes,
                            cost: start.elapsed(),
                        },
                        Err(_) => Probe::Failed,
                    }
                }
                Err(e) => {
                    tracing::debug!("probing {key}: {e}");
                    Probe::Failed
                }
            };
            me.pace.probed(outcome);
        });
    }

    /// [`fetch`](Self::fetch) without the weighing; `progress` hears how long a get waits
    /// on the store: for its own download, for the pack stream to reach its entry, or its
    /// share of a prefetch's fetches in flight.
    async fn fetch_any(
        self: &Arc<Self>,
        action: ActionId,
        origin: Origin,
        progress: Option<Arc<Progress>>,
    ) -> Option<Entry> {
        if origin == Origin::Get {
            let packed = self.packed.wait(&action, self.backend.limits.get_timeout);
            if let Some(e) = waiting(&progress, 1, packed).await {
                Stats::add(&self.stats.prefetch_joined, 1);
                return Some(e);
            }
        }
        if self.lock_type == LockType::Noop {
            return self.fetch_locked(action, origin, progress).await;
        }
        let flight = {
            let mut f = self.flights.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(f.entry(action).or_insert_with(|| {
                Arc::new(Flight {
                    origin,
                    result: OnceCell::new(),
                })
            }))
        };
        if origin == Origin::Get && flight.origin == Origin::Prefetch {
            Stats::add(&self.stats.prefetch_joined, 1);
        }
        // Removes the flight however this ends (a get let go by the verdict included).
        struct Land<'a>(&'a RemoteTier, ActionId, &'a Arc<Flight>);
        impl Drop for Land<'_> {
            fn drop(&mut self) {
                let mut f = self.0.flights.lock().unwrap_or_else(|p| p.into_inner());
                if f.get(&self.1).is_some_and(|c| Arc::ptr_eq(c, self.2)) {
                    f.remove(&self.1);
                }
            }
        }
        let _land = Land(self, action, &flight);
        let result = flight
            .result
            .get_or_init(|| self.fetch_locked(action, flight.origin, progress.clone()));
        if origin == Origin::Get && flight.origin == Origin::Prefetch {
            // Charged its share of the link (see `Progress::wait_shared`).
            let n = self.flights.lock().unwrap_or_else(|p| p.into_inner()).len();
            waiting(&progress, n as u64, result).await.clone()
        } else {
            result.await.clone()
        }
    }

    /// With `fslock`, one process fetches an ActionID while the others sharing the local dir
    /// wait, then find it locally.
    async fn fetch_locked(
        self: &Arc<Self>,
        action: ActionId,
        origin: Origin,
        progress: Option<Arc<Progress>>,
    ) -> Option<Entry> {
        // Not weighed: every get waits on this one request, so its time would count once
        // per get (seen: a check that took 3 s made a cold build's store "too slow"). A get
        // waits for it a moment only, then asks the store itself and is weighed: a check
        // that slow is a slow link or a slow first answer, and either shows in the gets.
        match origin {
            Origin::Get => {
                let _ = tokio::time::timeout(pace::CHECK_PATIENCE, self.ready()).await;
            }
            Origin::Prefetch => self.ready().await,
        }
        if self.listed.get().is_some_and(|ids| !ids.contains(&action)) {
            match origin {
                Origin::Get => {
                    Stats::add(&self.stats.remote_misses, 1);
                    Stats::add(&self.stats.remote_absent, 1);
                }
                Origin::Prefetch => Stats::add(&self.stats.prefetch_missing, 1),
            }
            return None;
        }
        let _guard = if self.lock_type == LockType::Fslock {
            let path = self.lock_dir.join(lock_stripe(&action));
            match tokio::task::spawn_blocking(move || FileLock::acquire(path)).await {
                Ok(Ok(g)) => Some(g),
                Ok(Err(e)) => {
                    self.stats.warn_once("lock", &format!("fetch lock: {e}"));
                    None
                }
                Err(_) => None,
            }
        } else {
            None
        };
        if _guard.is_some() {
            if let Ok(Lookup::Hit(e)) = self.local.get(&action) {
                if origin == Origin::Prefetch {
                    Stats::add(&self.stats.prefetch_local, 1);
                }
                return Some(e); // another process fetched it while we waited
            }
        }
        let key = self.key(&action);
        match self.download(&key, action, origin, progress).await {
            Ok(None) => {
                self.maybe_list_parts();
                None
            }
            Ok(found) => found,
            // Counted where the verdict let the get go (a prefetch just stops).
            Err(Failure::Slow) => None,
            Err(Failure::Backend(BackendError::Unavailable(why))) => {
                // Reported when it happened (start-up check or breaker trip).
                self.stats.remote_errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("remote get {key} skipped: {why}");
                None
            }
            Err(Failure::Backend(e)) => {
                self.stats.remote_errors.fetch_add(1, Ordering::Relaxed);
                if self.checked.initialized() {
                    self.stats
                        .warn_once("remote", &format!("remote get {key}: {e}"));
                } else {
                    // A get that went ahead of the start-up check: the check tells.
                    tracing::debug!("remote get {key}: {e}");
                }
                None
            }
            Err(Failure::Local(m)) => {
                // Our own disk failed, not the remote: a miss, but not the remote's fault.
                self.stats
                    .warn_once("local", &format!("storing fetched entry: {m}"));
                None
            }
            Err(Failure::Corrupt(why)) => {
                self.stats.remote_corrupt.fetch_add(1, Ordering::Relaxed);
                self.stats.warn_once(
                    "remote-corrupt",
                    &format!("remote object {key} is damaged: {why}"),
                );
                if !self.read_only {
                    // So the next put can replace it (puts never overwrite).
                    let _ = self.backend.delete(&key).await;
                }
                None
            }
        }
    }

    async fn download(
        &self,
        key: &str,
        action: ActionId,
        origin: Origin,
        progress: Option<Arc<Progress>>,
    ) -> Result<Option<Entry>, Failure> {
        let got = waiting(&progress, 1, self.backend.get(key)).await;
        let Some(reader) = got.map_err(Failure::Backend)? else {
            match origin {
                Origin::Get => {
                    Stats::add(&self.stats.remote_misses, 1);
                    self.asked_absent.fetch_add(1, Ordering::AcqRel);
                }
                Origin::Prefetch => Stats::add(&self.stats.prefetch_missing, 1),
            }
            return Ok(None);
        };
        // Every download ends once the store is judged slow: nobody waits for it then.
        let reader = Abort::new(reader, &self.pace, progress);
        let mut reader = IdleTimeout::new(reader, STALL_TIMEOUT);
        if origin == Origin::Get {
            // Not for the prefetch: its many fetches share the link on purpose, so each one
            // alone may well be slower than this.
            reader = reader.with_min_rate(self.backend.limits.get_timeout, MIN_DOWNLOAD_RATE);
        }
        let local = Arc::clone(&self.local);
        let handle = tokio::runtime::Handle::current();
        // The decoder is synchronous (LZ4 frames); it streams from the network straight into
        // the local tier's temp file, hashing as it goes: no whole-body buffer.
        let decoded = tokio::task::spawn_blocking(move || {
            let bridge = tokio_util::io::SyncIoBridge::new_with_handle(reader, handle);
            store_object(&local, bridge, &action)
        })
        .await
        .map_err(|e| Failure::Backend(BackendError::Transient(format!("decode task: {e}"))))?;
        // The breaker hears about the body too: a link that cuts or starves bodies trips it.
        match &decoded {
            Err(Failure::Backend(e)) => self.backend.body_done(Err(e)),
            // Not the store's failure: we stopped reading.
            Err(Failure::Slow) => {}
            _ => self.backend.body_done(Ok(())),
        }
        let entry = decoded?;
        Stats::add(&self.stats.bytes_down, entry.size);
        Stats::add(&self.stats.remote_downloads, 1);
        if origin == Origin::Prefetch {
            Stats::add(&self.stats.prefetch_fetched, 1);
        }
        Ok(Some(entry))
    }

    /// Queues an upload; never blocks. Skipped (and counted) when the queue is full.
    pub fn enqueue(&self, up: Upload) {
        if self.read_only {
            return;
        }
        let n = self.pending.fetch_add(1, Ordering::AcqRel) + 1;
        self.stats
            .upload_queue_high_water
            .fetch_max(n, Ordering::Relaxed);
        if let Err(e) = self.queue.try_send(up) {
            self.done_one();
            self.stats.uploads_dropped.fetch_add(1, Ordering::Relaxed);
            let why = match e {
                mpsc::error::TrySendError::Full(_) => {
                    format!("upload queue full ({QUEUE_CAP} waiting): skipping uploads, entries stay local")
                }
                mpsc::error::TrySendError::Closed(_) => "uploads stopped".to_string(),
            };
            self.stats.warn_once("upload-queue", &why);
        }
    }

    fn done_one(&self) {
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }

    /// Uploads one entry now. Counted; errors are logged once and returned.
    pub async fn upload(&self, up: Upload) -> std::result::Result<PutOutcome, String> {
        self.ready().await;
        let key = self.key(&up.action);
        if self.backend.breaker.is_disabled() {
            // Reported once at start-up; these are skipped, and counted, quietly.
            self.stats.uploads_skipped.fetch_add(1, Ordering::Relaxed);
            return Err("remote disabled".into());
        }
        let res = self.upload_inner(&key, &up).await;
        match &res {
            Ok(PutOutcome::Stored) => {
                self.stats.uploads.fetch_add(1, Ordering::Relaxed);
            }
            Ok(PutOutcome::AlreadyExists) => {
                self.stats.uploads_existing.fetch_add(1, Ordering::Relaxed);
            }
            Err(UploadError::Unavailable(_)) => {
                self.stats.uploads_skipped.fetch_add(1, Ordering::Relaxed);
            }
            Err(UploadError::Failed(e)) => {
                self.stats.upload_failures.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .warn_once("upload", &format!("remote put {key}: {e}"));
            }
        }
        res.map_err(|e| e.to_string())
    }

    async fn upload_inner(
        &self,
        key: &str,
        up: &Upload,
    ) -> std::result::Result<PutOutcome, UploadError> {
        let header = Header {
            codec: self.codec,
            action_id: up.action,
            output_id: up.entry.output_id,
            size: up.entry.size,
            time: up.entry.time,
        };
        let body = up.entry.path.clone();
        let local = Arc::clone(&self.local);
        let in_memory = up.entry.size <= IN_MEMORY_MAX;
        let (payload, tmp) = tokio::task::spawn_blocking(move || -> io::Result<_> {
            let src = io::BufReader::with_capacity(object::IO_BUF, std::fs::File::open(&body)?);
            if in_memory {
                // LZ4 output of build outputs: about half their size.
                let out = Vec::with_capacity(header.size as usize / 2 + object::HEADER_LEN);
                let out = object::encode(&header, src, out)?;
                return Ok((Payload::Bytes(out.into()), None));
            }
            // A big one is encoded into a temp file beside the local tier: bounded memory,
            // and the upload can be retried from it.
            let (file, tmp) = local.temp_file().map_err(io::Error::other)?;
            let guard = TempFile(tmp);
            let out = object::encode(&header, src, io::BufWriter::new(file))?;
            let file = out.into_inner().map_err(|e| e.into_error())?;
            let payload = Payload::file(&guard.0, file.metadata()?.len());
            Ok((payload, Some(guard)))
        })
        .await
        .map_err(|e| UploadError::Failed(format!("encode task: {e}")))?
        .map_err(|e| UploadError::Failed(format!("encoding {}: {e}", up.entry.path.display())))?;
        let res = self.backend.put(key, &payload).await;
        if let Ok(PutOutcome::Stored) = res {
            self.stats
                .bytes_up
                .fetch_add(payload.size(), Ordering::Relaxed);
            if let Some(sink) = self.stored.get() {
                sink(Stored {
                    action: up.action,
                    body: payload,
                    _tmp: tmp,
                });
            }
        }
        res.map_err(|e| match e {
            BackendError::Unavailable(m) => UploadError::Unavailable(m),
            other => UploadError::Failed(other.to_string()),
        })
    }

    /// Stores a small object (a manifest) under `key`, if absent.
    pub async fn put_bytes(
        &self,
        key: &str,
        data: Vec<u8>,
    ) -> std::result::Result<(), UploadError> {
        self.ready().await;
        self.put_new(key, &Payload::Bytes(data.into())).await
    }

    /// Stores the temp file under `key`, which must not exist yet (manifests and packs have
    /// fresh names: an existing object means a name clash, not a cache hit).
    pub(crate) async fn put_new(
        &self,
        key: &str,
        body: &Payload,
    ) -> std::result::Result<(), UploadError> {
        match self.backend.put(key, body).await {
            Ok(PutOutcome::Stored) => {
                Stats::add(&self.stats.bytes_up, body.size());
                Ok(())
            }
            Ok(PutOutcome::AlreadyExists) => Err(UploadError::Failed(
                "an object with that name exists".into(),
            )),
            Err(BackendError::Unavailable(m)) => Err(UploadError::Unavailable(m)),
            Err(e) => Err(UploadError::Failed(e.to_string())),
        }
    }

    /// Uploads queued or running.
    pub fn pending(&self) -> u64 {
        self.pending.load(Ordering::Acquire)
    }

    /// Waits until every queued upload is done or `deadline` passes; returns how many were
    /// still pending then (and counts them).
    pub async fn drain(&self, deadline: Duration) -> u64 {
        let until = Instant::now() + deadline;
        loop {
            let notified = self.idle.notified();
            let left = self.pending.load(Ordering::Acquire);
            if left == 0 {
                return 0;
            }
            let now = Instant::now();
            if now >= until {
                self.stats
                    .uploads_not_done
                    .fetch_add(left, Ordering::Relaxed);
                return left;
            }
            let _ =
                tokio::time::timeout((until - now).min(Duration::from_millis(100)), notified).await;
        }
    }

    /// Deletes every object under the prefix that is ours (see `is_ours`; `also` names the
    /// keys of layers above, which the tier does not know). `announce` is told the count
    /// before deleting.
    pub async fn clear(
        &self,
        force: bool,
        announce: &(dyn Fn(usize, &str) + Sync),
        also: fn(&str) -> bool,
    ) -> Result<u64> {
        if self.prefix.is_empty() && !force {
            return Err(Error::Config(format!(
                "refusing to clear {}: the prefix is empty, which means the whole bucket; \
                 pass --force if that is really what you want",
                self.backend.location()
            )));
        }
        let be = |e: BackendError| Error::Backend {
            backend: self.backend.name(),
            message: e.to_string(),
        };
        let mut objects = self.backend.list(&self.prefix).await.map_err(be)?;
        objects.retain(|o| is_ours(&self.prefix, &o.key, also));
        announce(objects.len(), &self.location());
        let sem = Arc::new(Semaphore::new(16));
        let mut tasks = tokio::task::JoinSet::new();
        for o in objects {
            if !is_ours(&self.prefix, &o.key, also) {
                continue;
            }
            let backend = Arc::clone(&self.backend);
            let permit = Arc::clone(&sem)
                .acquire_owned()
                .await
                .expect("semaphore open");
            tasks.spawn(async move {
                let _permit = permit;
                backend.delete(&o.key).await
            });
        }
        let mut deleted = 0;
        let mut first_err = None;
        while let Some(r) = tasks.join_next().await {
            match r {
                Ok(Ok(())) => deleted += 1,
                Ok(Err(e)) => first_err = first_err.or(Some(e)),
                Err(e) => first_err = first_err.or(Some(BackendError::Transient(e.to_string()))),
            }
        }
        match first_err {
            Some(e) => Err(Error::Backend {
                backend: self.backend.name(),
                message: format!("deleted {deleted} objects, then: {e}"),
            }),
            None => Ok(deleted),
        }
    }
}

async fn dispatch(tier: std::sync::Weak<RemoteTier>, mut rx: mpsc::Receiver<Upload>) {
    let sem = Arc::new(Semaphore::new(UPLOAD_CONCURRENCY));
    while let Some(up) = rx.recv().await {
        let Ok(permit) = Arc::clone(&sem).acquire_owned().await else {
            break;
        };
        let Some(mut t) = tier.upgrade() else { break };
        if t.pace.is_slow() {
            // Uploads wait while the store is judged slow: through that link they would not
            // end before close, and they would slow the probes that tell when it is fast
            // again (a probe behind eight uploads to a loaded server never lifted it).
            let fast = t.pace.until_fast();
            drop(t);
            fast.await;
            let Some(again) = tier.upgrade() else { break };
            t = again;
        }
        tokio::spawn(async move {
            let _permit = permit;
            let _ = t.upload(up).await;
            t.done_one();
        });
    }
}

/// Decodes one remote object from `input` into the local tier as `action`'s entry: the object
/// must name `action`, and its body must hash to its OutputID (or be here already, checked
/// when it was stored).
pub(crate) fn store_object(
    local: &LocalTier,
    mut input: impl io::Read,
    action: &ActionId,
) -> std::result::Result<Entry, Failure> {
    let failure = |e: object::DecodeError| match e {
        object::DecodeError::Corrupt(m) => Failure::Corrupt(m),
        object::DecodeError::Io(e) if pace::is_judged_slow(&e) => Failure::Slow,
        object::DecodeError::Io(e) => {
            Failure::Backend(BackendError::Transient(format!("reading object body: {e}")))
        }
    };
    let local_failure = |e: Error| Failure::Local(e.to_string());
    let header = object::read_header(&mut input).map_err(failure)?;
    if header.action_id != *action {
        return Err(Failure::Corrupt(format!(
            "object was written for action {}",
            header.action_id
        )));
    }
    // Outputs repeat (355 of a fresh `go build std`'s 1,461 entries are the empty body): a
    // body already here is not written again, which saves a file create and a rename. The
    // object is still read to its end, so its framing and size are still checked.
    if local
        .holds_body(&header.output_id, header.size)
        .map_err(local_failure)?
    {
        object::decode_body(&header, input, &mut io::sink()).map_err(failure)?;
        return local
            .point(action, &header.output_id, header.size, header.time)
            .map_err(local_failure);
    }
    let mut pending = local.begin_put().map_err(local_failure)?;
    object::decode_body(&header, input, &mut pending).map_err(failure)?;
    pending
        .commit_at(action, &header.output_id, Some(header.size), header.time)
        .map_err(|e| match e {
            Error::Integrity(m) => Failure::Corrupt(m),
            other => Failure::Local(other.to_string()),
        })
}

pub(crate) enum UploadError {
    Unavailable(String),
    Failed(String),
}

impl std::fmt::Display for UploadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UploadError::Unavailable(m) | UploadError::Failed(m) => f.write_str(m),
        }
    }
}

pub(crate) enum Failure {
    Backend(BackendError),
    Corrupt(String),
    Local(String),
    /// Stopped because the store was judged too slow (see `pace.rs`).
    Slow,
}

/// Removes a temp file when dropped.
pub(crate) struct TempFile(pub PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The lock file for an ActionID: one of 256 stripes, created once and kept. Creating files
/// is what a fresh cache dir pays for (ext4 inode allocation right after mass deletions
/// dominated a profile of the prefetch): a file per ActionID, or thousands of stripes, cost
/// more than two fetches sharing a stripe (~1 in 9 at 32 in flight) and taking turns.
pub(crate) fn lock_stripe(action: &ActionId) -> String {
    format!("{}.lock", &action.to_hex()[..2])
}

/// Runs `fut` as a wait on the store for a get's [`Progress`], shared with `share - 1` other
/// fetches (see [`RemoteTier::fetch_any`]).
async fn waiting<T>(
    progress: &Option<Arc<Progress>>,
    share: u64,
    fut: impl Future<Output = T>,
) -> T {
    if let Some(p) = progress {
        p.wait_shared(share);
    }
    let out = fut.await;
    if let Some(p) = progress {
        p.wait_ends();
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::ids::OutputId;
    use crate::store::scripted::Scripted;

    /// A real directory store whose gets are slow, so concurrent fetches overlap.
    fn slow_store(dir: &Path) -> Scripted {
        Scripted::over(dir).slowed(Duration::from_millis(200))
    }

    fn tier(
        local_dir: &Path,
        be: Arc<Scripted>,
        lock_type: LockType,
        lock_dir: &Path,
    ) -> Arc<RemoteTier> {
        tier_with(local_dir, be, lock_type, lock_dir, false)
    }

    fn tier_with(
        local_dir: &Path,
        be: Arc<Scripted>,
        lock_type: LockType,
        lock_dir: &Path,
        warm_start: bool,
    ) -> Arc<RemoteTier> {
        let local = Arc::new(LocalTier::open(local_dir, u64::MAX).unwrap());
        let settings = Settings {
            prefix: "p/".into(),
            compression: true,
            read_only: false,
            lock_type,
            lock_dir: lock_dir.to_path_buf(),
            limits: Limits::default(),
            warm_start,
        };
        RemoteTier::start(be, settings, local, Arc::new(Stats::default()))
    }

    fn object_of(action: &ActionId, body: &[u8]) -> Vec<u8> {
        let h = Header {
            codec: Codec::Lz4,
            action_id: *action,
            output_id: OutputId::of(body),
            size: body.len() as u64,
            time: std::time::SystemTime::now(),
        };
        object::encode(&h, body, Vec::new()).unwrap()
    }

    #[cfg(unix)]
    #[test]
    fn a_body_already_here_is_pointed_at_not_written_again() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let local = LocalTier::open(dir.path(), u64::MAX).unwrap();
        let action = |n: u8| ActionId::from_bytes(&[n; 32]).unwrap();
        let body = b"repeated output".repeat(100);
        let stored = |n: u8, obj: &[u8]| store_object(&local, obj, &action(n));
        let Ok(first) = stored(1, &object_of(&action(1), &body)) else {
            panic!("first store failed")
        };
        let inode = std::fs::metadata(&first.path).unwrap().ino();
        let Ok(second) = stored(2, &object_of(&action(2), &body)) else {
            panic!("second store failed")
        };
        assert_eq!(second.path, first.path);
        assert_eq!(std::fs::metadata(&second.path).unwrap().ino(), inode);
        assert!(matches!(local.get(&action(2)), Ok(Lookup::Hit(e)) if e.path == first.path));

        // A damaged object is refused even when its body is here: no entry is filed.
        let mut cut = object_of(&action(3), &body);
        cut.truncate(cut.len() - 5);
        assert!(matches!(stored(3, &cut), Err(Failure::Corrupt(_))));
        assert!(matches!(local.get(&action(3)), Ok(Lookup::Miss)));

        // A body of another size under the same address is damaged: the object replaces it.
        std::fs::write(&first.path, b"short").unwrap();
        let Ok(fourth) = stored(4, &object_of(&action(4), &body)) else {
            panic!("fourth store failed")
        };
        assert_eq!(std::fs::read(&fourth.path).unwrap(), body);
        assert_ne!(std::fs::metadata(&fourth.path).unwrap().ino(), inode);
    }

    /// Fills the store with one entry through a writer tier; returns its ActionID and body.
    async fn fill(store: &Path, scratch: &Path) -> (ActionId, Vec<u8>) {
        let be = Arc::new(slow_store(store));
        let w = tier(scratch, be, LockType::Memory, &scratch.join("locks"));
        let action = ActionId::from_bytes(&[9; 32]).unwrap();
        let body = b"shared output".repeat(1000);
        let mut p = w.local.begin_put().unwrap();
        std::io::Write::write_all(&mut p, &body).unwrap();
        let entry = p.commit(&action, &OutputId::of(&body), None).unwrap();
        w.upload(Upload { action, entry }).await.unwrap();
        (action, body)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_gets_in_one_process_fetch_once() {
        let d = tempfile::tempdir().unwrap();
        let store = d.path().join("store");
        std::fs::create_dir(&store).unwrap();
        let (action, body) = fill(&store, &d.path().join("writer")).await;
        let be = Arc::new(slow_store(&store));
        let r = tier(
            &d.path().join("reader"),
            be.clone(),
            LockType::Memory,
            &d.path().join("locks"),
        );
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let r = Arc::clone(&r);
            tasks.spawn(async move { r.fetch(action, Origin::Get).await });
        }
        while let Some(res) = tasks.join_next().await {
            let e = res.unwrap().expect("every caller gets the entry");
            assert_eq!(std::fs::read(&e.path).unwrap(), body);
        }
        assert_eq!(be.gets(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn processes_sharing_a_dir_fetch_once_with_fslock() {
        let d = tempfile::tempdir().unwrap();
        let store = d.path().join("store");
        std::fs::create_dir(&store).unwrap();
        let (action, body) = fill(&store, &d.path().join("writer")).await;
        let be = Arc::new(slow_store(&store));
        // Two tiers on one local dir stand for two helper processes: separate in-process
        // maps, one lock dir.
        let shared = d.path().join("shared");
        let locks = d.path().join("locks");
        let a = tier(&shared, be.clone(), LockType::Fslock, &locks);
        let b = tier(&shared, be.clone(), LockType::Fslock, &locks);
        let (ea, eb) = tokio::join!(a.fetch(action, Origin::Get), b.fetch(action, Origin::Get));
        for e in [ea.unwrap(), eb.unwrap()] {
            assert_eq!(std::fs::read(&e.path).unwrap(), body);
        }
        assert_eq!(be.gets(), 1, "the second waited and found it locally");

        // Without locks both go to the remote: the counter can tell the difference.
        let c = tier(&d.path().join("c"), be.clone(), LockType::Noop, &locks);
        let (x, y) = tokio::join!(c.fetch(action, Origin::Get), c.fetch(action, Origin::Get));
        assert!(x.is_some() && y.is_some());
        assert_eq!(be.gets(), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn uploads_wait_while_the_store_is_judged_slow() {
        let d = tempfile::tempdir().unwrap();
        let store = d.path().join("store");
        std::fs::create_dir(&store).unwrap();
        let be = Arc::new(Scripted::over(&store));
        let t = tier(
            &d.path().join("l"),
            be,
            LockType::Memory,
            &d.path().join("locks"),
        );
        t.pace.judge_slow();
        for i in 0..3u8 {
            let body = [i];
            let mut p = t.local.begin_put().unwrap();
            std::io::Write::write_all(&mut p, &body).unwrap();
            let action = ActionId::from_bytes(&[i; 32]).unwrap();
            let entry = p.commit(&action, &OutputId::of(&body), None).unwrap();
            t.enqueue(Upload { action, entry });
        }
        assert_eq!(t.drain(Duration::from_millis(300)).await, 3);
        assert!(files_in(&store).is_empty(), "nothing sent while slow");
        t.pace.probed(Probe::Fetched {
            bytes: 100_000,
            cost: Duration::from_millis(1),
        });
        assert_eq!(t.drain(Duration::from_secs(30)).await, 0);
        assert_eq!(files_in(&store).len(), 3, "sent once fast again");
    }

    /// Files under `dir`, at any depth.
    fn files_in(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let path = e.path();
            if path.is_dir() {
                out.extend(files_in(&path));
            } else {
                out.push(path);
            }
        }
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_paged_remote_past_a_page_is_listed_in_parts_once_misses_ask() {
        let d = tempfile::tempdir().unwrap();
        let store = d.path().join("store");
        std::fs::create_dir_all(store.join("p")).unwrap();
        for i in 0..40u32 {
            let name = format!("{:x}{:063x}", i % 16, i);
            std::fs::write(store.join("p").join(name), b"x").unwrap();
        }
        let be = Arc::new(Scripted::over(&store).paged(10));
        let t = tier(
            &d.path().join("l"),
            be.clone(),
            LockType::Memory,
            &d.path().join("locks"),
        );
        // None of these is in the store (its names are a digit, zeros, and a small number).
        let absent = |k: u8| ActionId::from_bytes(&[k; 32]).unwrap();
        for k in 1..ASKED_BEFORE_PARTS as u8 {
            assert!(t.fetch(absent(k), Origin::Get).await.is_none());
        }
        assert_eq!(be.lists(), 1, "only the first page until enough misses ask");
        assert_eq!(be.gets(), ASKED_BEFORE_PARTS as usize - 1);
        assert!(t.fetch(absent(200), Origin::Get).await.is_none());
        let deadline = Instant::now() + Duration::from_secs(10);
        while t.listed.get().is_none() {
            assert!(Instant::now() < deadline, "the parts were not listed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(be.lists(), 1 + SHARDS);
        assert_eq!(t.listed.get().unwrap().len(), 40);
        let asked = be.gets();
        assert!(t.fetch(absent(201), Origin::Get).await.is_none());
        assert_eq!(
            be.gets(),
            asked,
            "a miss the listing knows does not ask the store"
        );
        assert_eq!(t.stats.snapshot().remote_absent, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_warm_start_that_found_its_manifest_lists_only_once_misses_ask() {
        let d = tempfile::tempdir().unwrap();
        let store = d.path().join("store");
        std::fs::create_dir_all(store.join("p")).unwrap();
        for i in 0..5u32 {
            std::fs::write(store.join("p").join(format!("{i:064x}")), b"x").unwrap();
        }
        let absent = |k: u8| ActionId::from_bytes(&[k; 32]).unwrap();
        let wait_listed = |t: &Arc<RemoteTier>| {
            let t = Arc::clone(t);
            async move {
                let deadline = Instant::now() + Duration::from_secs(10);
                while t.listed.get().is_none() {
                    assert!(Instant::now() < deadline, "the remote was not listed");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        };

        let warm_tier = |local: &str| {
            let be = Arc::new(Scripted::over(&store).paged(10));
            let t = tier_with(
                &d.path().join(local),
                be.clone(),
                LockType::Memory,
                &d.path().join("locks"),
                true,
            );
            (t, be)
        };

        // Found entries: no listing until enough gets have asked the store for nothing.
        let (t, be) = warm_tier("l1");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(be.lists(), 0, "the listing waits for the warm start");
        t.warm_start_found(3);
        for k in 1..ASKED_BEFORE_PARTS as u8 {
            assert!(t.fetch(absent(k), Origin::Get).await.is_none());
        }
        assert_eq!(
            be.lists(),
            0,
            "no listing while the manifest covers the run"
        );
        assert!(t.fetch(absent(200), Origin::Get).await.is_none());
        wait_listed(&t).await;
        assert_eq!(be.lists(), 1);
        assert_eq!(t.listed.get().unwrap().len(), 5);
        let asked = be.gets();
        assert!(t.fetch(absent(201), Origin::Get).await.is_none());
        assert_eq!(be.gets(), asked, "a miss the listing knows does not ask");

        // Found nothing (a cold run): listed at once, as without a warm start.
        let (t, be) = warm_tier("l2");
        t.warm_start_found(0);
        wait_listed(&t).await;
        assert_eq!((be.lists(), be.gets()), (1, 0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_is_counted_not_silent() {
        let d = tempfile::tempdir().unwrap();
        let store = d.path().join("store");
        std::fs::create_dir(&store).unwrap();
        let be = Arc::new(slow_store(&store));
        let t = tier(
            &d.path().join("l"),
            be,
            LockType::Memory,
            &d.path().join("locks"),
        );
        let mut p = t.local.begin_put().unwrap();
        std::io::Write::write_all(&mut p, b"x").unwrap();
        let action = ActionId::from_bytes(&[1; 32]).unwrap();
        let entry = p.commit(&action, &OutputId::of(b"x"), None).unwrap();
        for _ in 0..QUEUE_CAP + 100 {
            t.enqueue(Upload {
                action,
                entry: entry.clone(),
            });
        }
        let s = t.stats.snapshot();
        assert!(s.uploads_dropped > 0, "{s:?}");
        assert!(s.upload_queue_high_water as usize >= QUEUE_CAP);
        assert_eq!(t.drain(Duration::from_secs(60)).await, 0);
        let s = t.stats.snapshot();
        assert_eq!(
            s.uploads + s.uploads_existing + s.uploads_dropped,
            (QUEUE_CAP + 100) as u64,
            "every upload is accounted for: {s:?}"
        );
    }
}
