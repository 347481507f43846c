//! The local disk tier.
//!
//! Layout under the cache dir (all writes go to a unique temp file, then `rename`):
//!
//! ```text
//! v1/o/ab/<output hex>   bodies, content-addressed; a DiskPath always points here
//! v1/a/cd/<action hex>   64-byte entry records: OutputID, size, put time, checksum
//! v1/tmp/<owner>-<n>     temp files, named after the live process that writes them
//! v1/live/<owner>        one file per open cache, flock'ed for its lifetime
//! v1/trim.lock           shared while a body is handed out, exclusive while trim deletes
//! ```
//!
//! Why a DiskPath stays valid while its process lives: every body handed out (by get or put)
//! has an mtime no older than [`GRACE`] before its process's start, because a put writes it
//! then and a get touches it if it is older. Trim never deletes a body newer than `GRACE`
//! before the oldest live process's start, and the touch and trim's delete are serialised by
//! `trim.lock`, so a body is either touched before trim looks at it or already gone (and then
//! the get is a miss). The grace keeps warm builds from writing: a body used in the last hour
//! is not touched again (the same granularity as Go's own cache).

pub(crate) mod lock;
mod trim;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use crate::error::IoContext;
use crate::ids::{ActionId, OutputId};
use crate::{Entry, Error, Result};

pub(crate) use crate::format::record::{self, Record};
pub use trim::TrimReport;

/// Outcome of a local lookup. Corruption is reported, not hidden, so the cache can count it.
#[derive(Debug)]
pub(crate) enum Lookup {
    Hit(Entry),
    Miss,
    /// The entry was damaged and has been removed; the string says how.
    Corrupt(String),
}

/// LRU granularity; see the module doc.
pub(crate) const GRACE: std::time::Duration = std::time::Duration::from_secs(3600);

pub(crate) struct LocalTier {
    root: PathBuf,
    /// `root` as UTF-8 with a trailing separator, so a DiskPath is one string concat.
    root_str: String,
    owner: String,
    /// Bodies older than this are touched when handed out: this process's start - GRACE.
    touch_before: SystemTime,
    /// Held (flock'ed) for this cache's lifetime; see the module doc.
    live: Mutex<Option<(File, PathBuf)>>,
    /// Shared flock around handing out a body. flock is per open file, so threads of this
    /// process take the mutex first: one thread's unlock must not release another's lock.
    trim_lock: Mutex<File>,
    tmp_seq: AtomicU64,
    max_size: u64,
    /// Set by `close`: a trim in progress stops at its next step.
    closing: std::sync::atomic::AtomicBool,
}

impl LocalTier {
    pub fn open(cache_dir: &Path, max_size: u64) -> Result<LocalTier> {
        let cache_dir = crate::config::absolute(cache_dir)?;
        let root = cache_dir.join("v1");
        for sub in ["a", "o", "tmp", "live"] {
            mkdir_all(&root.join(sub))?;
        }
        let root_str = root
            .to_str()
            .ok_or_else(|| Error::Config(format!("cache dir {} is not UTF-8", root.display())))?
            .to_string()
            + std::path::MAIN_SEPARATOR_STR;
        let trim_lock = open_lock_file(&root.join("trim.lock"))?;
        let started = SystemTime::now();
        let (live_file, live_path, owner) = register_live(&root.join("live"), started)?;
        Ok(LocalTier {
            root,
            root_str,
            owner,
            touch_before: started.checked_sub(GRACE).unwrap_or(started),
            live: Mutex::new(Some((live_file, live_path))),
            trim_lock: Mutex::new(trim_lock),
            tmp_seq: AtomicU64::new(0),
            max_size,
            closing: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn body_path(&self, id: &OutputId) -> String {
        let hex = id.to_hex();
        format!(
            "{}o{sep}{}{sep}{hex}",
            self.root_str,
            &hex[..2],
            sep = std::path::MAIN_SEPARATOR
        )
    }

    fn record_path(&self, id: &ActionId) -> PathBuf {
        let hex = id.to_hex();
        self.root.join("a").join(&hex[..2]).join(hex)
    }

    pub fn get(&self, id: &ActionId) -> Result<Lookup> {
        let rec_path = self.record_path(id);
        let mut buf = [0u8; record::RECORD_LEN + 1];
        let n = match File::open(&rec_path).and_then(|mut f| read_up_to(&mut f, &mut buf)) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Lookup::Miss),
            Err(e) => return Err(Error::io_path("reading entry", &rec_path, e)),
        };
        let Some(rec) = Record::decode(&buf[..n]) else {
            remove_quietly(&rec_path);
            return Ok(Lookup::Corrupt(format!("entry record {} is damaged", id)));
        };
        let body = self.body_path(&rec.output_id);
        let meta = match fs::metadata(&body) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Trimmed or cleared: the record is dangling, not corrupt.
                remove_quietly(&rec_path);
                return Ok(Lookup::Miss);
            }
            Err(e) => return Err(Error::io("reading body metadata", e)),
        };
        if meta.len() != rec.size {
            remove_quietly(Path::new(&body));
            remove_quietly(&rec_path);
            return Ok(Lookup::Corrupt(format!(
                "body {} has {} bytes, its entry says {}",
                rec.output_id,
                meta.len(),
                rec.size
            )));
        }
        if !self.keep_in_use(&body, &meta)? {
            remove_quietly(&rec_path);
            return Ok(Lookup::Miss);
        }
        Ok(Lookup::Hit(Entry {
            output_id: rec.output_id,
            size: rec.size,
            time: rec.time,
            path: body.into(),
        }))
    }

    /// Whether `id` has an entry here whose body is present at its size. Unlike
    /// [`get`](Self::get) it touches nothing and removes nothing: for deciding what to fetch.
    pub fn contains(&self, id: &ActionId) -> bool {
        let mut buf = [0u8; record::RECORD_LEN + 1];
        let Ok(n) = File::open(self.record_path(id)).and_then(|mut f| read_up_to(&mut f, &mut buf))
        else {
            return false;
        };
        Record::decode(&buf[..n]).is_some_and(|rec| {
            fs::metadata(self.body_path(&rec.output_id)).is_ok_and(|m| m.len() == rec.size)
        })
    }

    /// Whether the body of `output_id` is here with `size` bytes; if so it is touched as a
    /// get's would be, so it stays while this process lives and [`point`](Self::point) can
    /// file an entry under it without writing it again.
    pub fn holds_body(&self, output_id: &OutputId, size: u64) -> Result<bool> {
        let body = self.body_path(output_id);
        let meta = match fs::metadata(&body) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(Error::io("reading body metadata", e)),
        };
        // Another size under the same content address is a damaged body: a put replaces it.
        if meta.len() != size {
            return Ok(false);
        }
        self.keep_in_use(&body, &meta)
    }

    /// Points `action` at the body of `output_id`, which must be here (a commit, or
    /// [`holds_body`](Self::holds_body)).
    pub fn point(
        &self,
        action: &ActionId,
        output_id: &OutputId,
        size: u64,
        time: SystemTime,
    ) -> Result<Entry> {
        let rec = Record {
            output_id: *output_id,
            size,
            time,
        };
        self.write_atomic(&self.record_path(action), &rec.encode())?;
        Ok(Entry {
            output_id: *output_id,
            size,
            time,
            path: self.body_path(output_id).into(),
        })
    }

    /// Makes sure trim keeps a body this process hands out: one touched within the grace
    /// already is, an older one is touched now. False if it is gone.
    fn keep_in_use(&self, body: &str, meta: &fs::Metadata) -> Result<bool> {
        let recent = meta.modified().is_ok_and(|m| m >= self.touch_before);
        Ok(recent || self.touch(body)?)
    }

    /// Marks a body as in use by this process (see the module doc). False if it is gone.
    fn touch(&self, body: &str) -> Result<bool> {
        self.with_handout_lock(|| match File::open(body) {
            Ok(f) => {
                f.set_modified(SystemTime::now())
                    .map_err(|e| Error::io(format!("touching {body}"), e))?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io(format!("opening {body}"), e)),
        })
    }

    fn with_handout_lock<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let guard = self.trim_lock.lock().unwrap_or_else(|p| p.into_inner());
        guard
            .lock_shared()
            .map_err(|e| Error::io("locking trim.lock", e))?;
        let out = f();
        let _ = guard.unlock();
        out
    }

    /// A temp file to stream a body into; `commit` moves it into place.
    pub fn begin_put(&self) -> Result<PendingPut<'_>> {
        let (file, path) = self.temp_file()?;
        Ok(PendingPut {
            tier: self,
            file: Some(file),
            path,
            hasher: Sha256::new(),
            size: 0,
        })
    }

    pub fn temp_file(&self) -> Result<(File, PathBuf)> {
        let n = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        let path = self.root.join("tmp").join(format!("{}-{n}", self.owner));
        let file = create_new(&path).with_path("creating temp file", &path)?;
        Ok((file, path))
    }

    /// Writes `contents` to `dest` atomically (temp file + rename).
    fn write_atomic(&self, dest: &Path, contents: &[u8]) -> Result<()> {
        let (mut file, tmp) = self.temp_file()?;
        let res = file
            .write_all(contents)
            .with_path("writing", &tmp)
            .and_then(|_| rename_into(&tmp, dest));
        if res.is_err() {
            remove_quietly(&tmp);
        }
        res
    }

    pub fn clear(&self) -> Result<()> {
        for sub in ["a", "o", "tmp"] {
            let dir = self.root.join(sub);
            let trash = self.root.join(format!("trash-{}-{sub}", self.owner));
            match fs::rename(&dir, &trash) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io_path("clearing", &dir, e)),
            }
            mkdir_all(&dir)?;
            fs::remove_dir_all(&trash).with_path("removing", &trash)?;
        }
        Ok(())
    }

    /// Unregisters this process; DiskPaths it handed out may be trimmed from now on.
    pub fn close(&self) {
        self.closing.store(true, Ordering::Release);
        if let Some((file, path)) = self.live.lock().unwrap_or_else(|p| p.into_inner()).take() {
            remove_quietly(&path);
            drop(file);
        }
    }
}

impl Drop for LocalTier {
    fn drop(&mut self) {
        self.close();
    }
}

/// A body being written. Dropping it without `commit` removes the temp file.
pub(crate) struct PendingPut<'a> {
    tier: &'a LocalTier,
    file: Option<File>,
    path: PathBuf,
    hasher: Sha256,
    size: u64,
}

impl Write for PendingPut<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("put already finished"))?;
        let n = file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl PendingPut<'_> {
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Checks the body against `output_id` (and `expected_size` when known), moves it into
    /// place and points `action` at it. On any mismatch nothing is stored.
    pub fn commit(
        self,
        action: &ActionId,
        output_id: &OutputId,
        expected_size: Option<u64>,
    ) -> Result<Entry> {
        self.commit_at(action, output_id, expected_size, SystemTime::now())
    }

    /// As [`commit`](Self::commit), recording `time` as the entry's original put time (an
    /// entry fetched from the remote keeps the time it was first put anywhere).
    pub fn commit_at(
        mut self,
        action: &ActionId,
        output_id: &OutputId,
        expected_size: Option<u64>,
        time: SystemTime,
    ) -> Result<Entry> {
        drop(self.file.take());
        if let Some(want) = expected_size {
            if want != self.size {
                return Err(Error::Integrity(format!(
                    "body has {} bytes, BodySize says {want}",
                    self.size
                )));
            }
        }
        let got = OutputId::from_digest(std::mem::take(&mut self.hasher).finalize().into());
        if got != *output_id {
            return Err(Error::Integrity(format!(
                "body hashes to {got}, OutputID says {output_id}"
            )));
        }
        let tier = self.tier;
        let body = tier.body_path(output_id);
        // Under the handout lock so a concurrent trim cannot delete the fresh body.
        tier.with_handout_lock(|| rename_into(&self.path, Path::new(&body)))?;
        self.path = PathBuf::new();
        tier.point(action, output_id, self.size, time)
    }
}

impl Drop for PendingPut<'_> {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            remove_quietly(&self.path);
        }
    }
}

/// Reads a record. A whole record arrives in one read; only a short read (or a file that is
/// not a record) costs more, which saves a syscall per get.
fn read_up_to(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < record::RECORD_LEN {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// `rename`, creating the two-hex-digit fan-out dir on first use.
fn rename_into(from: &Path, to: &Path) -> Result<()> {
    match fs::rename(from, to) {
        Err(e) if e.kind() == io::ErrorKind::NotFound && from.exists() => {
            if let Some(parent) = to.parent() {
                mkdir_all(parent)?;
            }
            fs::rename(from, to).with_path("renaming into", to)
        }
        r => r.with_path("renaming into", to),
    }
}

pub(crate) fn remove_quietly(p: &Path) {
    let _ = fs::remove_file(p);
}

fn mkdir_all(p: &Path) -> Result<()> {
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(p).with_path("creating directory", p)
}

fn create_new(p: &Path) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o.open(p)
}

/// `File::create`, owner-only.
fn create_truncate(p: &Path) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o.open(p)
}

fn open_lock_file(p: &Path) -> Result<File> {
    lock::open(p).with_path("opening lock file", p)
}

/// Creates and locks `live/<owner>`, recording when this process started. The file is locked
/// before it is renamed into place, so trim never sees an unlocked live file of a live owner.
fn register_live(dir: &Path, started: SystemTime) -> Result<(File, PathBuf, String)> {
    let nanos = crate::format::time_to_nanos(started);
    for attempt in 0..100u32 {
        let owner = format!("{}-{:x}", std::process::id(), nanos as u64 + attempt as u64);
        let path = dir.join(&owner);
        let fresh = dir.join(format!("{owner}{NEW_SUFFIX}"));
        if path.exists() {
            continue;
        }
        match create_new(&fresh) {
            Ok(mut f) => {
                f.lock().with_path("locking", &fresh)?;
                f.write_all(nanos.to_string().as_bytes())
                    .with_path("writing", &fresh)?;
                match fs::rename(&fresh, &path) {
                    Ok(()) => return Ok((f, path, owner)),
                    // A trim took it for a dead owner's before we locked it: try again.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(Error::io_path("registering", &path, e)),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(Error::io_path(
                    "cannot write to the cache dir: creating",
                    &fresh,
                    e,
                ))
            }
        }
    }
    Err(Error::Config(format!(
        "cannot register in {}",
        dir.display()
    )))
}

/// Suffix of a live file being registered.
const NEW_SUFFIX: &str = ".new";

#[cfg(test)]
mod tests;
