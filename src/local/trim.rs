//! Trimming the local tier to its size cap, off the hot path.
//!
//! See the parent module for why this never deletes a body a live process handed out.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::{create_truncate, open_lock_file, remove_quietly, LocalTier, Record};
use crate::error::IoContext;
use crate::{Error, Result};

/// How often a helper start-up looks at the cache size (the scan costs a directory walk).
pub(crate) const TRIM_INTERVAL: Duration = Duration::from_secs(3600);
/// Trim down to this fraction of the cap, so it does not run again at once.
const TARGET_PERCENT: u64 = 90;
/// File-system timestamps can be coarse; keep a margin around "the oldest live start".
const CLOCK_SLACK: Duration = Duration::from_secs(2);

/// What a trim pass did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct TrimReport {
    pub ran: bool,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub bodies_removed: u64,
    pub records_removed: u64,
    pub temp_files_removed: u64,
    pub stale_owners_removed: u64,
    /// Bodies that were over the cap but in use by a live process, so kept.
    pub bodies_kept_in_use: u64,
}

impl LocalTier {
    /// Trims if the last trim (by any process) is older than [`TRIM_INTERVAL`].
    pub fn trim_due(&self) -> bool {
        let stamp = self.root.join("trim.stamp");
        match fs::metadata(&stamp).and_then(|m| m.modified()) {
            Ok(t) => t.elapsed().map(|e| e >= TRIM_INTERVAL).unwrap_or(true),
            Err(_) => true,
        }
    }

    /// One trim pass. Returns `ran: false` when another process is trimming right now.
    pub fn trim(&self) -> Result<TrimReport> {
        let mut report = TrimReport::default();
        let runner = open_lock_file(&self.root.join("trim.run"))?;
        match runner.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Ok(report),
            Err(fs::TryLockError::Error(e)) => return Err(Error::io("locking trim.run", e)),
        }
        report.ran = true;
        let stamp = self.root.join("trim.stamp");
        create_truncate(&stamp).with_path("writing", &stamp)?;

        // Temp files are listed before live owners: a helper registers before it creates
        // any, so an owner of a listed temp file that is not live afterwards is gone, while
        // one that registered after our listing of live owners has no temp file here yet.
        let temps = list_files(&self.root.join("tmp"))?;
        let (live, oldest_start) = self.live_owners(&mut report)?;
        let cutoff = oldest_start
            .unwrap_or_else(SystemTime::now)
            .checked_sub(super::GRACE + CLOCK_SLACK)
            .unwrap_or(SystemTime::UNIX_EPOCH);

        // Temp files of owners that are gone can only be leftovers of a crash.
        for (path, _) in temps {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let owner = name.rsplit_once('-').map(|(o, _)| o).unwrap_or(name);
            if !live.contains(owner) {
                remove_quietly(&path);
                report.temp_files_removed += 1;
            }
        }

        let mut bodies = Vec::new();
        for dir in list_dirs(&self.root.join("o"))? {
            if self.stopping() {
                return Ok(report);
            }
            for (path, meta) in list_files(&dir)? {
                let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                report.bytes_before += meta.len();
                bodies.push((mtime, meta.len(), path));
            }
        }
        report.bytes_after = report.bytes_before;
        if report.bytes_before > self.max_size {
            let target = self.max_size / 100 * TARGET_PERCENT;
            bodies.sort();
            let mut doomed = Vec::new();
            let mut total = report.bytes_before;
            for (mtime, len, path) in &bodies {
                if total <= target {
                    break;
                }
                if *mtime >= cutoff {
                    report.bodies_kept_in_use += 1;
                    continue;
                }
                doomed.push((path.clone(), *len));
                total -= len;
            }
            for batch in doomed.chunks(256) {
                if self.stopping() {
                    return Ok(report);
                }
                self.delete_unused(batch, cutoff, &mut report)?;
            }
        }

        // Records whose body is gone would be lazily dropped on get; sweep them so the
        // record count does not grow without bound.
        if report.bodies_removed > 0 {
            for dir in list_dirs(&self.root.join("a"))? {
                if self.stopping() {
                    return Ok(report);
                }
                for (path, _) in list_files(&dir)? {
                    let keep = fs::read(&path)
                        .ok()
                        .and_then(|b| Record::decode(&b))
                        .is_some_and(|r| Path::new(&self.body_path(&r.output_id)).exists());
                    if !keep {
                        remove_quietly(&path);
                        report.records_removed += 1;
                    }
                }
            }
        }
        Ok(report)
    }

    /// A closing cache stops trimming at the next step (trim is resumable by design: it
    /// recomputes everything from the directory each time).
    fn stopping(&self) -> bool {
        self.closing.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Deletes bodies under the exclusive trim lock, re-checking each is still unused.
    fn delete_unused(
        &self,
        batch: &[(PathBuf, u64)],
        cutoff: SystemTime,
        report: &mut TrimReport,
    ) -> Result<()> {
        let lock = open_lock_file(&self.root.join("trim.lock"))?;
        lock.lock().map_err(|e| Error::io("locking trim.lock", e))?;
        for (path, len) in batch {
            let still_old = fs::metadata(path)
                .and_then(|m| m.modified())
                .is_ok_and(|m| m < cutoff);
            if still_old && fs::remove_file(path).is_ok() {
                report.bodies_removed += 1;
                report.bytes_after -= len;
            }
        }
        let _ = lock.unlock();
        Ok(())
    }

    /// The owners that are alive (their live file is locked) and the oldest one's start.
    /// Files of dead owners are removed.
    fn live_owners(
        &self,
        report: &mut TrimReport,
    ) -> Result<(HashSet<String>, Option<SystemTime>)> {
        let mut live = HashSet::new();
        let mut oldest: Option<SystemTime> = None;
        for (path, _) in list_files(&self.root.join("live"))? {
            let Ok(f) = File::open(&path) else { continue };
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            // A `.new` file is an owner registering right now (or one that died doing so).
            let name = name
                .strip_suffix(super::NEW_SUFFIX)
                .unwrap_or(name)
                .to_string();
            match f.try_lock_shared() {
                Ok(()) => {
                    // Nobody holds it: the owner died without closing.
                    remove_quietly(&path);
                    report.stale_owners_removed += 1;
                }
                Err(_) => {
                    let started = fs::read_to_string(&path)
                        .ok()
                        .and_then(|s| s.trim().parse::<i64>().ok())
                        .map(crate::format::nanos_to_time)
                        // Unreadable start: assume the worst, protect everything.
                        .unwrap_or(SystemTime::UNIX_EPOCH);
                    oldest = Some(oldest.map_or(started, |o| o.min(started)));
                    live.insert(name);
                }
            }
        }
        Ok((live, oldest))
    }
}

fn list_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(read_dir(dir)?
        .into_iter()
        .filter(|(_, m)| m.is_dir())
        .map(|(p, _)| p)
        .collect())
}

fn list_files(dir: &Path) -> Result<Vec<(PathBuf, fs::Metadata)>> {
    Ok(read_dir(dir)?
        .into_iter()
        .filter(|(_, m)| m.is_file())
        .collect())
}

fn read_dir(dir: &Path) -> Result<Vec<(PathBuf, fs::Metadata)>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io_path("listing", dir, e)),
    };
    let mut out = Vec::new();
    for ent in rd.flatten() {
        // Entries can vanish under us (another process trimming or renaming): skip them.
        if let Ok(meta) = fs::symlink_metadata(ent.path()) {
            out.push((ent.path(), meta));
        }
    }
    Ok(out)
}
