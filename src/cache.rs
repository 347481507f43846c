//! The cache: tiers, policy and statistics. Everything above it (the protocol server, the C
//! ABI, the Go package) calls this and nothing below it.
//!
//! Policy: a get never fails because of the cache itself. Damaged entries are dropped and
//! counted; I/O errors become misses. Each kind of problem is logged once, with a count in
//! the statistics, because the helper's stderr ends up in the user's build log.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::config::{BackendKind, Config};
use crate::ids::{ActionId, OutputId};
use crate::local::{LocalTier, Lookup, PendingPut, TrimReport};
use crate::stats::{Stats, StatsSnapshot};
use crate::{Entry, Error, Result};

/// A build cache: the local disk tier (and, when configured, a shared remote).
///
/// Thread-safe: share it with an `Arc`. DiskPaths it returns stay valid until [`Cache::close`]
/// (or drop), even with other processes trimming the same directory.
pub struct Cache {
    config: Config,
    local: Arc<LocalTier>,
    stats: Stats,
    warned: Mutex<HashMap<&'static str, u64>>,
    closed: AtomicBool,
}

impl Cache {
    /// Opens (creating if needed) the cache described by `config`.
    pub fn open(config: Config) -> Result<Cache> {
        if config.backend != BackendKind::Disk {
            return Err(Error::Config(format!(
                "backend {} (from {}) is not available in this build; use disk",
                config.backend.name(),
                config.origin("backend")
            )));
        }
        let local = LocalTier::open(&config.cache_dir, config.max_size).map_err(|e| {
            Error::Config(format!(
                "cache dir {} (from {}) is not usable: {e}",
                config.cache_dir.display(),
                config.origin("cache-dir")
            ))
        })?;
        let local = Arc::new(local);
        if local.trim_due() {
            // Off the hot path: a directory walk is not something a get should wait for.
            let tier = Arc::clone(&local);
            let spawned = std::thread::Builder::new()
                .name("gobuildcache-trim".into())
                .spawn(move || match tier.trim() {
                    Ok(r) => tracing::debug!(?r, "trim"),
                    Err(e) => tracing::warn!("trimming the local cache: {e}"),
                });
            if let Err(e) = spawned {
                tracing::warn!("cannot start the trim thread: {e}");
            }
        }
        tracing::debug!(dir = %local.root().display(), "cache open");
        Ok(Cache {
            config,
            local,
            stats: Stats::default(),
            warned: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// Looks up an action. `Ok(None)` is a miss; so is any damaged entry or local I/O error
    /// (counted and logged once). Errors are only for misuse, e.g. a closed cache.
    pub fn get(&self, action: &ActionId) -> Result<Option<Entry>> {
        self.check_open()?;
        let start = Instant::now();
        Stats::add(&self.stats.gets, 1);
        let found = match self.local.get(action) {
            Ok(Lookup::Hit(e)) => Some(e),
            Ok(Lookup::Miss) => None,
            Ok(Lookup::Corrupt(why)) => {
                Stats::add(&self.stats.corrupt_dropped, 1);
                self.warn_once("corrupt", &why);
                None
            }
            Err(e) => {
                Stats::add(&self.stats.get_errors, 1);
                self.warn_once("get", &e.to_string());
                None
            }
        };
        match &found {
            Some(e) => {
                Stats::add(&self.stats.hits, 1);
                Stats::add(&self.stats.bytes_out, e.size);
            }
            None => Stats::add(&self.stats.misses, 1),
        }
        self.stats.get_latency.record(start.elapsed());
        tracing::debug!(%action, hit = found.is_some(), "get");
        Ok(found)
    }

    /// Starts a put whose body is streamed in with `Write`; finish with [`PutWriter::commit`].
    pub fn begin_put(&self) -> Result<PutWriter<'_>> {
        self.check_open()?;
        let pending = self.local.begin_put().inspect_err(|e| {
            Stats::add(&self.stats.put_errors, 1);
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

    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Trims the local tier to `max-size` now (it also runs by itself about hourly).
    pub fn trim(&self) -> Result<TrimReport> {
        self.check_open()?;
        self.local.trim()
    }

    /// Removes every local entry. DiskPaths handed out earlier become invalid.
    pub fn clear_local(&self) -> Result<()> {
        self.check_open()?;
        self.local.clear()
    }

    /// Removes every remote object under the configured prefix; refuses an empty prefix
    /// unless `force`. Returns how many objects were deleted.
    pub fn clear_remote(&self, force: bool) -> Result<u64> {
        self.check_open()?;
        let _ = force;
        Err(Error::Config(format!(
            "no remote to clear: backend {} is local only",
            self.config.backend.name()
        )))
    }

    /// End-of-session report: the summary on stderr (`-stats`) and the JSON file
    /// (`-stats-json`). Called by the server before it answers `close`, so the lines land
    /// inside the go command's output rather than after it.
    pub fn report(&self) -> Result<StatsSnapshot> {
        let snap = self.stats();
        if self.config.stats {
            eprintln!("{}", snap.summary());
        }
        if let Some(path) = &self.config.stats_json {
            let json = serde_json::to_vec_pretty(&snap).expect("stats serialisation");
            write_file_atomic(path, &json)?;
        }
        Ok(snap)
    }

    /// Releases the cache: DiskPaths from it may be trimmed from now on. Idempotent.
    pub fn close(&self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            self.local.close();
        }
    }

    pub(crate) fn note_protocol_error(&self, what: &str) {
        Stats::add(&self.stats.protocol_errors, 1);
        self.warn_once("protocol", what);
    }

    /// Logs the first problem of each kind as a warning; the rest only under `-debug`.
    pub(crate) fn warn_once(&self, kind: &'static str, msg: &str) {
        let mut w = self.warned.lock().unwrap_or_else(|p| p.into_inner());
        let n = w.entry(kind).or_insert(0);
        *n += 1;
        if *n == 1 {
            tracing::warn!("{msg} (further {kind} problems are counted in the stats)");
        } else {
            tracing::debug!("{msg}");
        }
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        self.close();
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

    /// Verifies the body (hash = `output`, size = `expected_size` if given) and stores it.
    pub fn commit(
        self,
        action: &ActionId,
        output: &OutputId,
        expected_size: Option<u64>,
    ) -> Result<Entry> {
        let cache = self.cache;
        let res = self.pending.commit(action, output, expected_size);
        match &res {
            Ok(e) => {
                Stats::add(&cache.stats.puts, 1);
                Stats::add(&cache.stats.bytes_in, e.size);
            }
            Err(e) => {
                Stats::add(&cache.stats.put_errors, 1);
                cache.warn_once("put", &e.to_string());
            }
        }
        cache.stats.put_latency.record(self.start.elapsed());
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
