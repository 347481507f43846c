//! The cache: tiers, policy and statistics. Everything above it (the protocol server, the C
//! ABI, the Go package) calls this and nothing below it.
//!
//! Policy: a get never fails because of the cache itself. Damaged entries are dropped and
//! counted; local I/O errors and every remote failure become misses. Each kind of problem
//! is logged once, with a count in the statistics, because the helper's stderr ends up in the
//! user's build log.

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::ids::{ActionId, OutputId};
use crate::local::{LocalTier, Lookup, PendingPut, TrimReport};
use crate::remote::tier::{Origin, RemoteTier, Settings, Upload};
use crate::stats::{Stats, StatsSnapshot};
use crate::warm::names::{self, Names};
use crate::warm::prefetch::Prefetch;
use crate::{Entry, Error, Result};

/// A build cache: the local disk tier and, when configured, a shared remote.
///
/// Cheap to clone (a handle) and thread-safe. DiskPaths it returns stay valid until
/// [`Cache::close`], even with other processes trimming the same directory.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    local: Arc<LocalTier>,
    stats: Arc<Stats>,
    /// Present with a remote tier: runs fetches, uploads and their timers.
    runtime: Option<tokio::runtime::Runtime>,
    remote: Option<Arc<RemoteTier>>,
    /// Present with a remote tier and `-prefetch`: the warm start and this run's manifest.
    prefetch: Option<Arc<Prefetch>>,
    /// The background trim started at open, joined at close so nothing writes afterwards.
    trimmer: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Entries handed to the remote tier, and that count when the last flush began: close
    /// flushes again only if something was shared since (never twice the wait for uploads
    /// a flush already gave up on). `u64::MAX`: no flush yet.
    shared: AtomicU64,
    flushed_at: AtomicU64,
    closed: AtomicBool,
}

impl Cache {
    /// Opens (creating if needed) the cache described by `config`. A remote that is down or
    /// missing does not fail this: it is reported once and the cache runs local-only.
    pub fn open(config: Config) -> Result<Cache> {
        let local = LocalTier::open(&config.cache_dir, config.max_size).map_err(|e| {
            Error::Config(format!(
                "cache dir {} (from {}) is not usable: {e}",
                config.cache_dir.display(),
                config.origin("cache-dir")
            ))
        })?;
        let local = Arc::new(local);
        let stats = Arc::new(Stats::default());
        let (runtime, remote, prefetch) = open_remote(&config, &local, &stats)?;
        let mut trimmer = None;
        if local.trim_due() {
            // Off the hot path: a directory walk is not something a get should wait for.
            let tier = Arc::clone(&local);
            let spawned = std::thread::Builder::new()
                .name("gobuildcache-trim".into())
                .spawn(move || match tier.trim() {
                    Ok(r) => tracing::debug!(?r, "trim"),
                    Err(e) => tracing::warn!("trimming the local cache: {e}"),
                });
            match spawned {
                Ok(h) => trimmer = Some(h),
                Err(e) => tracing::warn!("cannot start the trim thread: {e}"),
            }
        }
        let publish = config.publish == Some(true);
        if let (true, Some(p)) = (publish, &prefetch) {
            p.publishing();
        }
        tracing::debug!(dir = %local.root().display(), remote = ?remote.as_ref().map(|r| r.location()), "cache open");
        Ok(Cache {
            inner: Arc::new(Inner {
                config,
                local,
                stats,
                runtime,
                remote,
                prefetch,
                trimmer: std::sync::Mutex::new(trimmer),
                shared: AtomicU64::new(0),
                flushed_at: AtomicU64::new(u64::MAX),
                closed: AtomicBool::new(false),
            }),
        })
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// Looks up an action in every tier. `Ok(None)` is a miss; so is any damaged entry, local
    /// I/O error or remote failure (counted and logged once). Errors are only for misuse,
    /// e.g. a closed cache. Blocks while a remote fetch runs.
    pub fn get(&self, action: &ActionId) -> Result<Option<Entry>> {
        let start = Instant::now();
        match self.get_local(action)? {
            Some(e) => Ok(Some(e)),
            None => match (&self.inner.runtime, &self.inner.remote) {
                (Some(rt), Some(remote)) => {
                    let found = block_on(rt, remote.fetch(*action, Origin::Get));
                    Ok(self.finish_remote_get(action, start, found))
                }
                _ => Ok(None),
            },
        }
    }

    /// The local part of a get. With a remote tier a local miss is not final: the caller
    /// must then call [`Cache::get_remote`] (the server runs it as a task).
    pub(crate) fn get_local(&self, action: &ActionId) -> Result<Option<Entry>> {
        self.check_open()?;
        let start = Instant::now();
        let s = &self.inner.stats;
        Stats::add(&s.gets, 1);
        let found = match self.inner.local.get(action) {
            Ok(Lookup::Hit(e)) => Some(e),
            Ok(Lookup::Miss) => None,
            Ok(Lookup::Corrupt(why)) => {
                Stats::add(&s.corrupt_dropped, 1);
                s.warn_once("corrupt", &why);
                None
            }
            Err(e) => {
                Stats::add(&s.get_errors, 1);
                s.warn_once("get", &e.to_string());
                None
            }
        };
        match &found {
            Some(e) => {
                if self.record(action) {
                    // Fetched by our prefetch before the go command asked.
                    Stats::add(&s.remote_hits, 1);
                    Stats::add(&s.prefetch_hits, 1);
                } else {
                    Stats::add(&s.local_hits, 1);
                }
                Stats::add(&s.hits, 1);
                Stats::add(&s.bytes_out, e.size);
                s.get_latency.record(start.elapsed());
            }
            None if self.inner.remote.is_none() => {
                Stats::add(&s.misses, 1);
                s.get_latency.record(start.elapsed());
            }
            None => {}
        }
        tracing::debug!(%action, hit = found.is_some(), "get local");
        Ok(found)
    }

    /// Whether a local miss should go on to the remote tier.
    pub(crate) fn has_remote(&self) -> bool {
        self.inner.remote.is_some()
    }

    /// The remote part of a get, after a local miss. Fail-open: `None` on any failure.
    pub(crate) async fn get_remote(&self, action: ActionId, start: Instant) -> Option<Entry> {
        let found = match &self.inner.remote {
            Some(r) => r.fetch(action, Origin::Get).await,
            None => None,
        };
        self.finish_remote_get(&action, start, found)
    }

    /// Handle on the runtime that runs remote work, for the server's tasks.
    pub(crate) fn runtime(&self) -> Option<&tokio::runtime::Runtime> {
        self.inner.runtime.as_ref()
    }

    fn finish_remote_get(
        &self,
        action: &ActionId,
        start: Instant,
        found: Option<Entry>,
    ) -> Option<Entry> {
        let s = &self.inner.stats;
        match &found {
            Some(e) => {
                self.record(action);
                Stats::add(&s.remote_hits, 1);
                Stats::add(&s.hits, 1);
                Stats::add(&s.bytes_out, e.size);
            }
            None => Stats::add(&s.misses, 1),
        }
        s.get_latency.record(start.elapsed());
        found
    }

    /// Starts a put whose body is streamed in with `Write`; finish with [`PutWriter::commit`].
    pub fn begin_put(&self) -> Result<PutWriter<'_>> {
        self.check_open()?;
        let pending = self.inner.local.begin_put().inspect_err(|e| {
            Stats::add(&self.inner.stats.put_errors, 1);
            self.warn_once("put", &e.to_string());
        })?;
        Ok(PutWriter {
            cache: self,
            pending,
            start: Instant::now(),
        })
    }

    /// Stores `body` under `action`; `output` must be its SHA-256.
    pub fn put_bytes(&self, action: &ActionId, output: &OutputId, body: &[u8]) -> Result<Entry> {
        self.put_reader(action, output, Some(body.len() as u64), body)
    }

    /// Stores what `reader` yields, streaming (never all in memory); checks size and hash.
    pub fn put_reader(
        &self,
        action: &ActionId,
        output: &OutputId,
        size: Option<u64>,
        mut reader: impl Read,
    ) -> Result<Entry> {
        let mut w = self.begin_put()?;
        io::copy(&mut reader, &mut w).map_err(|e| Error::io("reading put body", e))?;
        w.commit(action, output, size)
    }

    /// Stores a copy of the file at `path`.
    pub fn put_file(&self, action: &ActionId, output: &OutputId, path: &Path) -> Result<Entry> {
        let f = std::fs::File::open(path).map_err(|e| Error::io_path("opening", path, e))?;
        let size = f.metadata().map(|m| m.len()).ok();
        self.put_reader(action, output, size, f)
    }

    /// Notes a used entry for the manifest this run publishes; true if this helper's
    /// prefetch brought it from the remote.
    fn record(&self, action: &ActionId) -> bool {
        match &self.inner.prefetch {
            Some(p) => p.record(action),
            None => false,
        }
    }

    /// Hands a stored entry to the remote tier: queued (`-async-backend`, the default) or
    /// uploaded before returning.
    fn share(&self, action: &ActionId, entry: &Entry) {
        let (Some(remote), Some(rt)) = (&self.inner.remote, &self.inner.runtime) else {
            return;
        };
        self.record(action);
        if self.inner.config.read_only {
            return;
        }
        self.inner.shared.fetch_add(1, Ordering::AcqRel);
        let up = Upload {
            action: *action,
            entry: entry.clone(),
        };
        if self.inner.config.async_backend {
            remote.enqueue(up);
        } else {
            let _ = block_on(rt, remote.upload(up));
        }
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.inner.stats.snapshot()
    }

    /// Trims the local tier to `max-size` now (it also runs by itself about hourly).
    pub fn trim(&self) -> Result<TrimReport> {
        self.check_open()?;
        self.inner.local.trim()
    }

    /// Removes every local entry. DiskPaths handed out earlier become invalid.
    pub fn clear_local(&self) -> Result<()> {
        self.check_open()?;
        self.inner.local.clear()
    }

    /// Removes every remote object under the configured prefix; refuses an empty prefix
    /// unless `force`. `announce(count, location)` is called before anything is deleted.
    /// Returns how many objects were deleted.
    pub fn clear_remote(
        &self,
        force: bool,
        announce: &(dyn Fn(usize, &str) + Sync),
    ) -> Result<u64> {
        self.check_open()?;
        if self.inner.config.read_only {
            return Err(Error::Config(
                "read-only mode: not clearing the remote".into(),
            ));
        }
        match (&self.inner.remote, &self.inner.runtime) {
            (Some(r), Some(rt)) => block_on(rt, r.clear(force, announce, names::is_manifest_key)),
            _ => Err(Error::Config(format!(
                "no remote to clear: backend {} without -remote-dir is local only",
                self.inner.config.backend.name()
            ))),
        }
    }

    /// Blocks until the warm-start prefetch has fetched every manifest entry it could (at
    /// once without a remote or with `-prefetch` off). For a warm-up step before builds: it
    /// also makes [`Cache::flush`] publish a pack when the prefetch had to fetch one by one
    /// (unless `-publish=false`).
    pub fn wait_for_prefetch(&self) {
        self.publish_warm_start();
        if let (Some(p), Some(rt)) = (&self.inner.prefetch, &self.inner.runtime) {
            block_on(rt, p.wait());
        }
    }

    /// Marks this cache as serving a go command (or warming up for one): its flush then
    /// publishes the warm start, unless `-publish=false`. A tool that only calls get and put
    /// publishes nothing unless it sets `-publish=true`: the manifest names a go command's
    /// module, platform and branch, which another tool's entries do not belong to.
    pub(crate) fn publish_warm_start(&self) {
        if let (true, Some(p)) = (
            self.inner.config.publish != Some(false),
            &self.inner.prefetch,
        ) {
            p.publishing();
        }
    }

    /// Ends the warm start (no new prefetches), publishes this run's manifest (in a go
    /// command's session, or with `-publish`) and waits for pending uploads, all within
    /// `-close-timeout`; returns how many uploads were left (they stay local, counted in
    /// `uploads_not_done`). [`Cache::close`] calls it; call it yourself to make sure what was
    /// put so far is shared while the cache stays open.
    pub fn flush(&self) -> u64 {
        let (Some(r), Some(rt)) = (&self.inner.remote, &self.inner.runtime) else {
            return 0;
        };
        let shared = self.inner.shared.load(Ordering::Acquire);
        self.inner.flushed_at.store(shared, Ordering::Release);
        let mut timeout = self.inner.config.close_timeout;
        let slow = r.is_slow();
        if slow {
            // The warm start's downloads through a store judged too slow would hold close
            // for nothing.
            timeout = timeout.min(crate::remote::pace::SLOW_CLOSE);
        }
        // Whether flush publishes the warm start (manifest, packs): for a go command's
        // session or the prefetch step, not for every tool that opens the library.
        let publish = self
            .inner
            .prefetch
            .as_ref()
            .is_some_and(|p| p.is_publishing());
        let warm = async {
            if let Some(p) = &self.inner.prefetch {
                let _ = tokio::time::timeout(timeout, async {
                    p.stop().await;
                    if publish {
                        p.publish().await;
                    }
                })
                .await;
            }
        };
        // While the store is judged slow uploads wait (see `remote::tier::dispatch`): they
        // stay local rather than hold every go command's close.
        let uploads = if slow { Duration::ZERO } else { timeout };
        // The start-up check may still run (uploads, which wait for it, no longer do while
        // the store is slow): let it end, so a store that refuses the credentials says so
        // rather than only "too slow".
        let checked = async {
            let _ = tokio::time::timeout(timeout, r.ready()).await;
        };
        let until = Instant::now() + timeout;
        let (_, _, left) = block_on(rt, async {
            let done = tokio::join!(warm, checked, r.drain(uploads));
            // The last pack of uploads holds what the drain just stored (see `warm::pack`).
            if let (true, Some(p)) = (publish && !slow, &self.inner.prefetch) {
                let rest = until.saturating_duration_since(Instant::now());
                let _ = tokio::time::timeout(rest, p.finish_packs()).await;
            }
            done
        });
        if left > 0 {
            let why = if slow {
                ": the remote is judged too slow, and uploads wait while it is".to_string()
            } else {
                format!(" within -close-timeout {timeout:?}")
            };
            self.warn_once(
                "upload",
                &format!("{left} uploads were not done{why}; those entries stay local"),
            );
        }
        left
    }

    /// End-of-session report: the summary on stderr (`-stats`) and the JSON file
    /// (`-stats-json`). The server calls it before it answers `close`, so the lines land
    /// inside the go command's output rather than after it.
    pub fn report(&self) -> Result<StatsSnapshot> {
        let snap = self.stats();
        if self.inner.config.stats {
            eprintln!("{}", snap.summary());
        }
        if let Some(path) = &self.inner.config.stats_json {
            let json = serde_json::to_vec_pretty(&snap).expect("stats serialisation");
            write_file_atomic(path, &json)?;
        }
        Ok(snap)
    }

    /// Flushes (see [`Cache::flush`]: pending uploads get up to `-close-timeout`), then
    /// releases the cache: DiskPaths from it may be trimmed from now on, and later calls
    /// return [`Error::Closed`]. Returns how many uploads could not be done in time (they stay
    /// local). Idempotent: a second call returns 0 at once.
    pub fn close(&self) -> u64 {
        if self.inner.closed.load(Ordering::Acquire) {
            return 0;
        }
        let shared = self.inner.shared.load(Ordering::Acquire);
        let left = if self.inner.flushed_at.load(Ordering::Acquire) == shared {
            // A flush (a go command's `close`) already waited for these.
            self.inner.remote.as_ref().map_or(0, |r| r.pending())
        } else {
            self.flush()
        };
        if !self.inner.closed.swap(true, Ordering::AcqRel) {
            self.inner.local.close();
            self.inner.join_trimmer();
        }
        left
    }

    pub(crate) fn note_protocol_error(&self, what: &str) {
        Stats::add(&self.inner.stats.protocol_errors, 1);
        self.warn_once("protocol", what);
    }

    /// Records how long a go command's `close` took (see `StatsSnapshot::close_us`).
    pub(crate) fn note_close(&self, took: Duration) {
        self.inner
            .stats
            .close_us
            .store(took.as_micros() as u64, Ordering::Relaxed);
    }

    pub(crate) fn warn_once(&self, kind: &'static str, msg: &str) {
        self.inner.stats.warn_once(kind, msg);
    }
}

/// Builds the runtime and remote tier when the configuration has a remote.
#[allow(clippy::type_complexity)]
fn open_remote(
    config: &Config,
    local: &Arc<LocalTier>,
    stats: &Arc<Stats>,
) -> Result<(
    Option<tokio::runtime::Runtime>,
    Option<Arc<RemoteTier>>,
    Option<Arc<Prefetch>>,
)> {
    if config.backend == crate::BackendKind::Disk && config.remote_dir.is_none() {
        return Ok((None, None, None));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("gobuildcache-io")
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting the I/O runtime", e))?;
    let remote = block_on(&rt, async {
        let Some(backend) = crate::store::open(config).await? else {
            return Ok::<_, Error>(None);
        };
        let settings = Settings {
            prefix: config.remote_prefix().unwrap_or_default().to_string(),
            compression: config.compression,
            read_only: config.read_only,
            lock_type: config.lock_type,
            lock_dir: config.lock_dir(),
            limits: Default::default(),
            warm_start: config.prefetch,
        };
        let tier = RemoteTier::start(backend, settings, Arc::clone(local), Arc::clone(stats));
        let prefetch = config.prefetch.then(|| {
            let names = manifest_names(config);
            tracing::debug!(?names, "warm start");
            Prefetch::start(Arc::clone(&tier), names, config.prefetch_concurrency)
        });
        Ok(Some((tier, prefetch)))
    })?;
    let (remote, prefetch) = remote.unzip();
    Ok((Some(rt), remote, prefetch.flatten()))
}

/// Runs `fut` to completion on the cache's runtime and returns its output.
///
/// Never nests runtimes: `Runtime::block_on` panics on a thread that is already inside one
/// (a caller's `#[tokio::main]`, `#[tokio::test]`, or one of ours), so there the wait moves
/// to a scoped plain thread. That costs a thread start, only on calls that go to the remote
/// anyway; from plain threads (the binary, the C ABI, the Go package) it is a direct call.
pub(crate) fn block_on<F>(rt: &tokio::runtime::Runtime, fut: F) -> F::Output
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    if tokio::runtime::Handle::try_current().is_err() {
        return rt.block_on(fut);
    }
    std::thread::scope(|s| {
        s.spawn(|| rt.block_on(fut))
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// The configured manifest names, or those derived from the environment the go command
/// gave us (GOOS, GOARCH, GOVERSION), the module we run in and the CI's branch variables.
fn manifest_names(config: &Config) -> Names {
    let cwd = std::env::current_dir().unwrap_or_default();
    // Outside the go command (the prefetch subcommand, the C ABI), ask it for what it
    // would have passed us, so both derive the same name.
    let go_env = if std::env::var_os("GOVERSION").is_none() {
        names::go_env()
    } else {
        Vec::new()
    };
    let lookup = |k: &str| {
        std::env::var(k)
            .ok()
            .or_else(|| go_env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
    };
    let mut names = names::default_names(&lookup, &cwd);
    if let Some(k) = &config.manifest_key {
        names.key = k.clone();
        names.fallbacks.clear();
    }
    if let Some(f) = &config.manifest_fallback {
        names.fallbacks = f.clone();
    }
    names
}

impl Inner {
    fn join_trimmer(&self) {
        let handle = self
            .trimmer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.local.close();
        self.join_trimmer();
        if let Some(rt) = self.runtime.take() {
            // Never blocks, so it is safe even if the last handle goes away on a runtime thread.
            rt.shutdown_background();
        }
    }
}

/// A put in progress; see [`Cache::begin_put`]. Dropping it stores nothing.
pub struct PutWriter<'a> {
    cache: &'a Cache,
    pending: PendingPut<'a>,
    start: Instant,
}

impl Write for PutWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pending.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl PutWriter<'_> {
    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.pending.size()
    }

    /// Verifies the body (hash = `output`, size = `expected_size` if given), stores it and
    /// hands it to the remote tier.
    pub fn commit(
        self,
        action: &ActionId,
        output: &OutputId,
        expected_size: Option<u64>,
    ) -> Result<Entry> {
        let cache = self.cache;
        let stats = &cache.inner.stats;
        let res = self.pending.commit(action, output, expected_size);
        match &res {
            Ok(e) => {
                Stats::add(&stats.puts, 1);
                Stats::add(&stats.bytes_in, e.size);
                cache.share(action, e);
            }
            Err(e) => {
                Stats::add(&stats.put_errors, 1);
                cache.warn_once("put", &e.to_string());
            }
        }
        stats.put_latency.record(self.start.elapsed());
        tracing::debug!(%action, %output, ok = res.is_ok(), "put");
        res
    }
}

fn write_file_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, data)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::io_path("writing stats to", path, e)
        })
}
