//! Warm-start packs: the entries of a warm start as one object, so a fresh machine fetches
//! them in one streamed GET instead of one GET per entry.
//!
//! One GET per entry costs the store a request each: ~1,500 for `go build std`, which a
//! store's per-request work (signing, lookup, a Python test server's CPU) turns into seconds
//! however many are in flight. A pack turns that into bandwidth.
//!
//! A run publishes packs (next to its manifest, `<time>-<random>-<n>.pack`, one group per
//! run) when much of what it used had to cross the network one object at a time
//! ([`worth_publishing`]):
//!
//! - what it **uploaded**: a cold run packs its uploads as they are stored, in chunks of
//!   [`CHUNK`] while the build runs, reusing each upload's encoded file (already compressed
//!   and framed), so the first fresh machine after it streams them and `close` sends at most
//!   one chunk;
//! - what it **downloaded** one by one: at close, a pack of the whole warm start.
//!
//! Once packs cover a branch's builds, runs stop writing new ones until enough has changed.
//! A reader streams the packs of the newest groups, three at a time, each only up to
//! the last entry it still wants.
//!
//! The bytes are `format/pack.rs`: an index, then each entry's remote object exactly as
//! it is stored under its own key. The index lets a get for an entry the stream is about to
//! deliver wait for it instead of fetching it again. Nothing
//! is trusted beyond what each object proves (its header names its ActionID, which must match
//! the index; its body is checked against its OutputID), and only ActionIDs the manifest asked
//! for are taken. A damaged frame ends the read; the rest is fetched one by one.

use std::collections::HashSet;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::watch;

use crate::format::object::{self, Header};
use crate::format::pack::{
    encode_index, index_len, read_index, IndexError, MAX_BYTES, MAX_ENTRIES,
};
use crate::ids::ActionId;
use crate::local::Lookup;
use crate::remote::pace::{is_judged_slow, Abort};
use crate::remote::slots::Promises;
use crate::remote::tier::{
    store_object, Failure, RemoteTier, Stored, TempFile, UploadError, STALL_TIMEOUT,
};
use crate::stats::Stats;
use crate::store::idle::IdleTimeout;
use crate::store::{Backend, BackendError, BackendResult, BodyReader, Payload};
use crate::Entry;

/// Pack groups (one per publishing run) kept per manifest name after a publish, and read:
/// a cold CI job leaves one per go command (build, vet, test, ...), and the next job wants
/// them all; a reader stops each pack after the last entry it still wants, so an old
/// group costs little.
pub const KEEP: usize = 6;
/// A cold run publishes its uploads in packs of about this many bytes while it runs.
pub const CHUNK: u64 = 16 << 20;
/// See [`worth_publishing`].
pub const MIN_SINGLE: u64 = 16;
/// Frames up to this size are read whole and stored by a second thread while the stream
/// reads on (decompressing, hashing and creating files is the ingest's work; one thread
/// could not keep up with a fast store). Bigger frames are stored as they stream. The queue
/// bounds what is held in memory to `QUEUE` × this.
const SMALL_FRAME: u64 = 1 << 20;
const QUEUE: usize = 8;
/// Packs read side by side: a get waits for whichever stream holds its entry, so one job's
/// go commands (one group each) are served in the order they ask, not one group after
/// another; more would add threads and memory (each stream has its own [`QUEUE`]).
const STREAMS: usize = 3;
/// The lock (with fslock) one helper holds while it streams a pack into a local dir, so
/// helpers sharing the dir do not download it twice.
const LOCK: &str = "pack.lock";

/// Whether a run that downloaded `single` entries one by one (not from a pack) and used
/// `used` entries should publish a pack: when those downloads were many, and a good share of
/// what it used (so the pack it found, if any, no longer covers enough).
pub fn worth_publishing(single: u64, used: u64) -> bool {
    single >= MIN_SINGLE && single * 4 >= used
}

/// Whether `key` names a pack.
pub fn is_pack(key: &str) -> bool {
    key.ends_with(".pack")
}

/// A new run's pack group in a manifest's directory: sorts like the manifests beside it.
pub fn group(dir: &str, now: std::time::SystemTime) -> String {
    super::names::object_key(dir, now)
}

/// The name of pack `n` of `group`.
pub fn key(group: &str, n: u32) -> String {
    format!("{group}-{n:04x}.pack")
}

/// The group a pack key belongs to: its name up to `<time>-<random>`.
fn group_of(key: &str) -> &str {
    let name = key.rfind('/').map_or(0, |i| i + 1);
    // 16 hex digits of time, '-', 8 of random (see `names::object_key`).
    key.get(..name + 25).unwrap_or(key)
}

/// Of `keys` (packs under one name), those of the newest `n` groups, in reading order:
/// newest group first, each group's packs in the order they were written.
pub fn newest_groups(keys: &[String], n: usize) -> Vec<String> {
    let mut groups: Vec<(&str, Vec<&String>)> = Vec::new();
    let mut sorted: Vec<&String> = keys.iter().collect();
    sorted.sort_by(|a, b| b.cmp(a));
    for k in sorted {
        match groups.iter_mut().find(|(g, _)| *g == group_of(k)) {
            Some((_, ks)) => ks.push(k),
            None => groups.push((group_of(k), vec![k])),
        }
    }
    groups
        .into_iter()
        .take(n)
        .flat_map(|(_, mut ks)| {
            ks.reverse();
            ks.into_iter().cloned()
        })
        .collect()
}

/// Of `keys`, those outside the newest `keep` groups (and not in `ours`): to delete.
pub fn stale(keys: &[String], keep: usize, ours: &str) -> Vec<String> {
    let others: Vec<String> = keys
        .iter()
        .filter(|k| group_of(k) != ours)
        .cloned()
        .collect();
    let kept: HashSet<String> = newest_groups(&others, keep).into_iter().collect();
    others.into_iter().filter(|k| !kept.contains(k)).collect()
}

/// Reads and writes packs through a tier: it borrows the tier's store, local tier and
/// stats, and is not a part of it.
#[derive(Clone)]
pub(crate) struct Packs {
    pub tier: Arc<RemoteTier>,
}

/// A pack GET sent before [`Packs::read`] starts: the key and the store's answer.
pub(crate) type Opened = (String, BackendResult<Option<BodyReader>>);

impl Packs {
    /// GETs the packs [`read`](Self::read) streams first, so their round trip overlaps the
    /// manifest's (the warm start's critical path is listing, manifest, packs). A body not
    /// read yet waits in the connection's buffers; one never read is dropped with it.
    pub(crate) async fn open_first(&self, keys: &[String]) -> Vec<Opened> {
        let gets = keys
            .iter()
            .take(STREAMS)
            .map(|key| async move { (key.clone(), self.tier.backend.get(key).await) });
        futures_util::future::join_all(gets).await
    }

    /// Streams the packs at `keys`, [`STREAMS`] at a time, into the local tier: each entry in `wanted`
    /// that is not local yet and not being fetched by a get. Stops between entries once
    /// `stop` is set. `mark` is told each entry before it is stored. Returns the entries it
    /// stored. Failures are warned once; whatever the packs did not deliver is the caller's
    /// to fetch one by one. `opened` are answers [`open_first`](Self::open_first) already has.
    pub(crate) async fn read(
        &self,
        keys: &[String],
        wanted: HashSet<ActionId>,
        stop: Arc<AtomicBool>,
        mark: impl Fn(ActionId) + Send + Sync + 'static,
        opened: Vec<Opened>,
    ) -> HashSet<ActionId> {
        self.tier.ready().await;
        // Another helper streaming packs into this local dir: wait for it, then let the
        // one-by-one pass find its entries local.
        let _lock = match self.tier.try_lock_file(LOCK) {
            Ok(Some(l)) => Some(l),
            Ok(None) if self.tier.fslock() => {
                while !stop.load(Ordering::Acquire) {
                    if let Ok(Some(_)) = self.tier.try_lock_file(LOCK) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                return HashSet::new();
            }
            _ => None,
        };
        let mark: Arc<dyn Fn(ActionId) + Send + Sync> = Arc::new(mark);
        let wanted = Arc::new(wanted);
        // Each entry is promised by the first pack whose index offers it.
        let claimed = Arc::new(Mutex::new(HashSet::new()));
        let mut opened: std::collections::HashMap<String, _> = opened.into_iter().collect();
        let reads: Vec<_> = keys
            .iter()
            .map(|key| {
                Box::pin(self.read_one(
                    key.clone(),
                    opened.remove(key),
                    Arc::clone(&wanted),
                    Arc::clone(&claimed),
                    Arc::clone(&stop),
                    Arc::clone(&mark),
                ))
            })
            .collect();
        let mut taken = HashSet::new();
        let mut reads = futures_util::stream::iter(reads).buffer_unordered(STREAMS);
        while let Some(got) = reads.next().await {
            taken.extend(got);
        }
        taken
    }

    /// One pack of [`read`](Self::read).
    async fn read_one(
        &self,
        key: String,
        opened: Option<BackendResult<Option<BodyReader>>>,
        wanted: Arc<HashSet<ActionId>>,
        claimed: Arc<Mutex<HashSet<ActionId>>>,
        stop: Arc<AtomicBool>,
        mark: Arc<dyn Fn(ActionId) + Send + Sync>,
    ) -> HashSet<ActionId> {
        if stop.load(Ordering::Acquire) || self.tier.pace.is_slow() {
            return HashSet::new();
        }
        let got = match opened {
            Some(got) => got,
            None => self.tier.backend.get(&key).await,
        };
        let reader = match got {
            Ok(Some(r)) => r,
            // Pruned by a publisher since we listed it.
            Ok(None) => return HashSet::new(),
            Err(BackendError::Unavailable(why)) => {
                tracing::debug!("reading pack {key}: {why}");
                return HashSet::new();
            }
            Err(e) => {
                self.tier
                    .stats
                    .warn_once("pack", &format!("reading pack {key}: {e}"));
                return HashSet::new();
            }
        };
        // The stream ends once the store is judged slow (see `remote/pace.rs`); whatever it did not
        // deliver is fetched one by one if the store is fast again.
        let reader = IdleTimeout::new(Abort::new(reader, &self.tier.pace, None), STALL_TIMEOUT);
        let handle = tokio::runtime::Handle::current();
        let me = self.clone();
        let res = tokio::task::spawn_blocking(move || {
            let bridge = tokio_util::io::SyncIoBridge::new_with_handle(reader, handle);
            let mut input = BufReader::with_capacity(256 * 1024, bridge);
            let mut taken = HashSet::new();
            let res = me.ingest(&mut input, &wanted, &claimed, &stop, &*mark, &mut taken);
            (taken, res)
        })
        .await;
        let (taken, res) = match res {
            Ok(r) => r,
            Err(e) => (
                HashSet::new(),
                Err(Failure::Backend(BackendError::Transient(format!(
                    "pack task: {e}"
                )))),
            ),
        };
        match &res {
            Err(Failure::Backend(e)) => self.tier.backend.body_done(Err(e)),
            Err(Failure::Slow) => {}
            _ => self.tier.backend.body_done(Ok(())),
        }
        match res {
            Ok(()) => {}
            Err(Failure::Slow) => tracing::debug!("reading pack {key}: stopped, the store is slow"),
            Err(Failure::Backend(BackendError::Unavailable(why))) => {
                tracing::debug!("reading pack {key}: {why}");
            }
            Err(Failure::Backend(e)) => {
                self.tier
                    .stats
                    .remote_errors
                    .fetch_add(1, Ordering::Relaxed);
                self.tier
                    .stats
                    .warn_once("pack", &format!("reading pack {key}: {e}"));
            }
            Err(Failure::Local(m)) => {
                self.tier
                    .stats
                    .warn_once("local", &format!("storing an entry from pack {key}: {m}"));
            }
            Err(Failure::Corrupt(why)) => {
                self.tier
                    .stats
                    .remote_corrupt
                    .fetch_add(1, Ordering::Relaxed);
                self.tier.stats.warn_once(
                    "pack",
                    &format!("pack {key} is damaged ({why}); fetching the rest one by one"),
                );
                if !self.tier.read_only() {
                    // Readers would trip on it again; a later run publishes a new one.
                    let _ = self.tier.backend.delete(&key).await;
                }
            }
        }
        taken
    }

    /// The synchronous part of [`read`](Self::read): index, then frames.
    fn ingest<R: Read>(
        &self,
        input: &mut R,
        wanted: &HashSet<ActionId>,
        claimed: &Mutex<HashSet<ActionId>>,
        stop: &AtomicBool,
        mark: &(dyn Fn(ActionId) + Sync),
        taken: &mut HashSet<ActionId>,
    ) -> Result<(), Failure> {
        let io_err = |e: io::Error| match e.kind() {
            _ if is_judged_slow(&e) => Failure::Slow,
            io::ErrorKind::UnexpectedEof => Failure::Corrupt(format!("cut short: {e}")),
            _ => Failure::Backend(BackendError::Transient(format!("reading pack: {e}"))),
        };
        let index = read_index(input).map_err(|e| match e {
            IndexError::Io(e) => io_err(e),
            IndexError::Bad(m) => Failure::Corrupt(m),
        })?;
        let slots = &self.tier.packed;
        let mut promises = Promises::new(slots, index.len());
        let mut offset = 0;
        // Past the last entry wanted, the rest of the pack is not read at all (an older
        // group's pack often holds only a few entries a newer one did not).
        let mut last = None;
        for (i, (action, len)) in index.iter().enumerate() {
            if *len > 0
                && wanted.contains(action)
                && !self.tier.in_flight(action)
                && !matches!(self.tier.local.get(action), Ok(Lookup::Hit(_)))
                && claimed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(*action)
            {
                promises.add(i, *action, offset);
                last = Some(i);
            }
            offset += len;
        }
        let stored = Mutex::new(std::mem::take(taken));
        let failed: Mutex<Option<Failure>> = Mutex::new(None);
        let fail = |f: Failure| {
            let mut slot = failed.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert(f);
        };
        let has_failed = || failed.lock().unwrap_or_else(|p| p.into_inner()).is_some();
        let store =
            |frame: &mut dyn Read, action: ActionId, tx: watch::Sender<Option<Entry>>| match self
                .store_frame(frame, &action, mark, &stored)
            {
                Ok(Some(e)) => slots.keep(&action, tx, e),
                Ok(None) => slots.forget(&action),
                Err(f) => {
                    slots.forget(&action);
                    fail(f);
                }
            };
        let read = std::thread::scope(|scope| -> Result<(), Failure> {
            let (jobs, queue) =
                std::sync::mpsc::sync_channel::<(ActionId, watch::Sender<Option<Entry>>, Vec<u8>)>(
                    QUEUE,
                );
            scope.spawn(|| {
                for (action, tx, buf) in queue {
                    if has_failed() {
                        slots.forget(&action);
                        continue;
                    }
                    store(&mut &buf[..], action, tx);
                }
            });
            for (i, (action, len)) in index.iter().enumerate() {
                if last.is_none_or(|l| i > l)
                    || stop.load(Ordering::Acquire)
                    || has_failed()
                    || self.tier.pace.is_slow()
                {
                    break;
                }
                let mut frame = (&mut *input).take(*len);
                if let Some((action, tx)) = promises.take(i) {
                    if *len <= SMALL_FRAME {
                        let mut buf = Vec::with_capacity(*len as usize);
                        frame.read_to_end(&mut buf).map_err(io_err)?;
                        if jobs.send((action, tx, buf)).is_err() {
                            break;
                        }
                    } else {
                        store(&mut frame, action, tx);
                    }
                }
                // Whatever of the frame was not read (an entry not taken).
                io::copy(&mut frame, &mut io::sink()).map_err(io_err)?;
                if frame.limit() > 0 {
                    return Err(Failure::Corrupt(format!(
                        "cut short in the frame of {action}"
                    )));
                }
                promises.at.fetch_add(*len, Ordering::Release);
            }
            Ok(())
        });
        *taken = stored.into_inner().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(f);
        }
        read
    }

    /// Stores one frame's entry, unless a get or another process got it meanwhile; the entry
    /// when it is local after.
    fn store_frame(
        &self,
        frame: &mut dyn Read,
        action: &ActionId,
        mark: &(dyn Fn(ActionId) + Sync),
        taken: &Mutex<HashSet<ActionId>>,
    ) -> Result<Option<Entry>, Failure> {
        if self.tier.in_flight(action) {
            return Ok(None);
        }
        // No per-entry fetch lock: the pack lock keeps helpers sharing the dir from streaming
        // it twice, and a get of another helper racing the stream at worst stores the same
        // bytes once more.
        if let Ok(Lookup::Hit(e)) = self.tier.local.get(action) {
            return Ok(Some(e));
        }
        mark(*action);
        let entry = store_object(&self.tier.local, frame, action)?;
        taken
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(*action);
        Stats::add(&self.tier.stats.bytes_down, entry.size);
        Stats::add(&self.tier.stats.remote_downloads, 1);
        Stats::add(&self.tier.stats.prefetch_fetched, 1);
        Stats::add(&self.tier.stats.pack_entries, 1);
        Ok(Some(entry))
    }

    /// Writes the local entries among `entries` (in order, up to [`MAX_BYTES`]) as a pack
    /// and stores it under `key`. Returns how many entries it holds.
    pub(crate) async fn publish(
        &self,
        key: &str,
        entries: Vec<ActionId>,
    ) -> Result<u64, UploadError> {
        self.tier.ready().await;
        let me = self.clone();
        let (tmp, size, count) = tokio::task::spawn_blocking(move || -> io::Result<_> {
            let (file, tmp) = me.tier.local.temp_file().map_err(io::Error::other)?;
            let guard = TempFile(tmp);
            let mut w = BufWriter::with_capacity(256 * 1024, file);
            let (count, size) = me.write_pack(&mut w, &entries)?;
            w.flush()?;
            Ok((guard, size, count))
        })
        .await
        .map_err(|e| UploadError::Failed(format!("pack task: {e}")))?
        .map_err(|e| UploadError::Failed(format!("writing the pack: {e}")))?;
        if count == 0 {
            return Ok(0);
        }
        self.tier
            .put_new(key, &Payload::file(&tmp.0, size))
            .await
            .map(|()| count)
    }

    /// Writes stored uploads' encoded objects (each already a frame) as one pack and stores
    /// it under `key`. Returns the entries it holds.
    pub(crate) async fn publish_stored(
        &self,
        key: &str,
        batch: Vec<Stored>,
    ) -> Result<Vec<ActionId>, UploadError> {
        let me = self.clone();
        let (tmp, size, ids) = tokio::task::spawn_blocking(move || -> io::Result<_> {
            let (file, tmp) = me.tier.local.temp_file().map_err(io::Error::other)?;
            let guard = TempFile(tmp);
            let mut w = BufWriter::with_capacity(256 * 1024, file);
            let items: Vec<(ActionId, u64)> =
                batch.iter().map(|s| (s.action, s.body.size())).collect();
            w.write_all(&encode_index(&items))?;
            for s in &batch {
                match &s.body {
                    Payload::Bytes(b) => w.write_all(b)?,
                    Payload::File { path, size } => {
                        let mut frame = std::fs::File::open(path)?;
                        if io::copy(&mut frame, &mut w)? != *size {
                            return Err(io::Error::other(format!(
                                "{} changed size",
                                path.display()
                            )));
                        }
                    }
                }
            }
            w.flush()?;
            let size = index_len(items.len()) as u64 + items.iter().map(|(_, l)| l).sum::<u64>();
            Ok((guard, size, items.into_iter().map(|(a, _)| a).collect()))
        })
        .await
        .map_err(|e| UploadError::Failed(format!("pack task: {e}")))?
        .map_err(|e| UploadError::Failed(format!("writing the pack: {e}")))?;
        self.tier
            .put_new(key, &Payload::file(&tmp.0, size))
            .await
            .map(|()| ids)
    }

    /// Returns (entries, bytes) written: the index first (its lengths filled in last), then
    /// one frame per entry that is still whole in the local tier.
    fn write_pack<W: Write + Seek>(
        &self,
        w: &mut W,
        entries: &[ActionId],
    ) -> io::Result<(u64, u64)> {
        let mut chosen = Vec::new();
        let mut bound = 0u64;
        for action in entries {
            if chosen.len() == MAX_ENTRIES {
                break;
            }
            // Gone since (trimmed, or never fetched because the prefetch was stopped).
            let Ok(Lookup::Hit(e)) = self.tier.local.get(action) else {
                continue;
            };
            // LZ4 can grow incompressible data by ~0.4%: keep the whole pack under the cap.
            let most = e.size + e.size / 128 + 1024;
            if bound + most > MAX_BYTES {
                continue;
            }
            bound += most;
            chosen.push((*action, e));
        }
        let index_len = index_len(chosen.len());
        w.write_all(&vec![0u8; index_len])?;
        let mut items = Vec::with_capacity(chosen.len());
        for (action, e) in &chosen {
            items.push((*action, self.write_frame(w, action, e)?));
        }
        w.seek(SeekFrom::Start(0))?;
        w.write_all(&encode_index(&items))?;
        let count = items.iter().filter(|(_, l)| *l > 0).count() as u64;
        Ok((
            count,
            index_len as u64 + items.iter().map(|(_, l)| l).sum::<u64>(),
        ))
    }

    /// One entry's object; 0 bytes when its body is gone or not whole (it stays out).
    fn write_frame<W: Write>(&self, w: &mut W, action: &ActionId, e: &Entry) -> io::Result<u64> {
        let Ok(body) = std::fs::File::open(&e.path) else {
            return Ok(0);
        };
        if body.metadata()?.len() != e.size {
            return Ok(0);
        }
        let header = Header {
            codec: self.tier.codec,
            action_id: *action,
            output_id: e.output_id,
            size: e.size,
            time: e.time,
        };
        let mut counted = Counted { w, n: 0 };
        object::encode(
            &header,
            BufReader::with_capacity(object::IO_BUF, body),
            &mut counted,
        )?;
        Ok(counted.n)
    }
}

/// Counts what passes through to `w`.
struct Counted<'a, W: Write> {
    w: &'a mut W,
    n: u64,
}

impl<W: Write> Write for Counted<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.w.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::LockType;
    use crate::ids::OutputId;
    use crate::local::LocalTier;
    use crate::remote::tier::{Settings, Upload};
    use crate::store::guard::Limits;
    use crate::store::scripted::Scripted;

    fn tier(local: &Path, store: &Path) -> Arc<RemoteTier> {
        tier_over(local, Arc::new(Scripted::over(store)))
    }

    fn tier_over(local: &Path, be: Arc<Scripted>) -> Arc<RemoteTier> {
        let settings = Settings {
            prefix: "p/".into(),
            compression: true,
            read_only: false,
            lock_type: LockType::Memory,
            lock_dir: local.join("locks"),
            limits: Limits::default(),
            warm_start: false,
        };
        let local = Arc::new(LocalTier::open(local, u64::MAX).unwrap());
        RemoteTier::start(be, settings, local, Arc::new(Stats::default()))
    }

    /// The sixth is over a MiB: uploaded from a temp file, the others from memory.
    fn body(i: u8) -> Vec<u8> {
        let n = if i == 5 { 120_000 } else { 100 + i as usize };
        format!("output {i} ").repeat(n).into_bytes()
    }

    /// Uploads' encoded objects, as stored, make packs a fresh dir streams whole: two packs
    /// of one group read side by side, and a pack holding nothing wanted is not read past
    /// its index.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stored_uploads_make_packs_a_fresh_dir_streams() {
        let d = tempfile::tempdir().unwrap();
        let store = d.path().join("store");
        std::fs::create_dir(&store).unwrap();
        let w = tier(&d.path().join("w"), &store);
        let kept = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&kept);
        w.on_stored(Box::new(move |s| sink.lock().unwrap().push(s)));
        let mut ids = Vec::new();
        for i in 0..6u8 {
            let mut p = w.local.begin_put().unwrap();
            std::io::Write::write_all(&mut p, &body(i)).unwrap();
            let action = ActionId::from_bytes(&[i + 1; 32]).unwrap();
            let entry = p.commit(&action, &OutputId::of(&body(i)), None).unwrap();
            w.upload(Upload { action, entry }).await.unwrap();
            ids.push(action);
        }
        let mut stored = std::mem::take(&mut *kept.lock().unwrap());
        assert_eq!(stored.len(), 6, "every stored upload reaches the sink");
        let in_files = stored.iter().filter(|s| s._tmp.is_some()).count();
        assert_eq!(in_files, 1, "only the big one went through a temp file");
        let group = group("p/manifests/x/", std::time::SystemTime::now());
        let (k0, k1) = (key(&group, 0), key(&group, 1));
        let writer = Packs {
            tier: Arc::clone(&w),
        };
        let second = stored.split_off(4);
        assert_eq!(
            writer.publish_stored(&k0, stored).await.ok().unwrap(),
            ids[..4]
        );
        assert_eq!(
            writer.publish_stored(&k1, second).await.ok().unwrap(),
            ids[4..]
        );
        assert!(
            std::fs::read_dir(w.local.root().join("tmp")).map_or(0, |d| d.count()) == 0,
            "the encoded files are gone once packed"
        );

        let listed = vec![k1.clone(), k0.clone()];
        assert_eq!(newest_groups(&listed, KEEP), vec![k0.clone(), k1.clone()]);
        let r = tier(&d.path().join("r"), &store);
        let reader = Packs {
            tier: Arc::clone(&r),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let taken = reader
            .read(
                &[k0.clone(), k1.clone()],
                ids.iter().copied().collect(),
                stop.clone(),
                |_| {},
                Vec::new(),
            )
            .await;
        assert_eq!(taken.len(), 6);
        for (i, a) in ids.iter().enumerate() {
            let Ok(Lookup::Hit(e)) = r.local.get(a) else {
                panic!("{a} not local");
            };
            assert_eq!(std::fs::read(&e.path).unwrap(), body(i as u8));
        }
        assert_eq!(Stats::get(&r.stats.pack_entries), 6);

        // Only the first pack's first entry wanted: nothing else is stored.
        let r2 = tier(&d.path().join("r2"), &store);
        let reader = Packs {
            tier: Arc::clone(&r2),
        };
        let taken = reader
            .read(
                &[k0.clone(), k1.clone()],
                [ids[0]].into_iter().collect(),
                stop.clone(),
                |_| {},
                Vec::new(),
            )
            .await;
        assert_eq!(taken.len(), 1);

        // Packs GET ahead of the read (beside the manifest) are read from those answers,
        // not fetched again.
        let be = Arc::new(Scripted::over(&store));
        let r3 = tier_over(&d.path().join("r3"), Arc::clone(&be));
        let reader = Packs {
            tier: Arc::clone(&r3),
        };
        let keys = [k0.clone(), k1.clone()];
        let opened = reader.open_first(&keys).await;
        assert_eq!(be.gets(), 2);
        let taken = reader
            .read(
                &keys,
                ids.iter().copied().collect(),
                stop.clone(),
                |_| {},
                opened,
            )
            .await;
        assert_eq!(taken.len(), 6);
        assert_eq!(be.gets(), 2, "no pack was fetched twice");
        assert_eq!(Stats::get(&r2.stats.pack_entries), 1);
        assert_eq!(
            Stats::get(&r2.stats.remote_corrupt),
            0,
            "stopping early is no damage"
        );
    }

    #[test]
    fn groups_are_read_newest_first_and_pruned_whole() {
        let dir = "p/manifests/n-0123456789ab/";
        let k = |t: u64, r: u32, n: u32| key(&format!("{dir}{t:016x}-{r:08x}"), n);
        let old = format!("{dir}{:016x}-{:08x}.pack", 1, 7); // a single pack of an older release
        let keys = vec![
            k(3, 1, 0),
            k(2, 9, 1),
            old.clone(),
            k(3, 1, 2),
            k(2, 9, 0),
            k(3, 1, 1),
        ];
        assert_eq!(
            newest_groups(&keys, 2),
            vec![k(3, 1, 0), k(3, 1, 1), k(3, 1, 2), k(2, 9, 0), k(2, 9, 1)]
        );
        assert_eq!(newest_groups(&keys, 3).last(), Some(&old));
        let ours = format!("{dir}{:016x}-{:08x}", 4, 4);
        assert_eq!(
            stale(&keys, 1, &ours),
            vec![k(2, 9, 1), old.clone(), k(2, 9, 0)]
        );
        // Our own group never counts among the kept, nor is it deleted.
        let mine = key(&ours, 0);
        let mut with_mine = keys.clone();
        with_mine.push(mine.clone());
        assert!(!stale(&with_mine, 1, &ours).contains(&mine));
        assert_eq!(stale(&with_mine, 1, &ours).len(), 3);
    }

    #[test]
    fn packs_are_published_only_after_many_single_downloads() {
        assert!(!worth_publishing(0, 1000), "a cold run");
        assert!(
            !worth_publishing(MIN_SINGLE - 1, MIN_SINGLE),
            "too few to matter"
        );
        assert!(!worth_publishing(100, 1000), "the pack still covers 90%");
        assert!(worth_publishing(250, 1000));
        assert!(worth_publishing(1461, 1461), "no pack yet");
        assert!(is_pack(&key(
            &group("p/manifests/x-0123456789ab/", std::time::SystemTime::now()),
            0
        )));
        assert!(!is_pack(
            "p/manifests/x-0123456789ab/0006612645027f86-b4a7a85c"
        ));
    }
}
