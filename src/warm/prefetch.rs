//! Warm start: at open, fetch what recent runs used (their [`manifest`])
//! into the local tier while requests are already being served; at close, publish what this
//! run used.
//!
//! The go command keeps only a few gets in flight, so on a fresh machine each would wait one
//! remote round trip in turn. Prefetching with many fetches in flight turns those round trips
//! into hits that are local by the time the go command asks. Prefetches go through the tier's
//! single-flight (in-process and, with fslock, across processes), so a get racing a prefetch
//! waits for it, and a second helper sharing the local dir finds the first one's work.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::io::AsyncReadExt;
use tokio::sync::{watch, Semaphore};

use super::names::{self, Names};
use super::pack::{self, Packs};
use crate::format::manifest::{self, Manifest};
use crate::ids::ActionId;
use crate::local::Lookup;
use crate::remote::tier::{Origin, RemoteTier, Stored, UploadError};
use crate::stats::Stats;
use crate::store::idle::IdleTimeout;
use crate::store::{Backend, BackendError, ObjectInfo};

/// How long a manifest read may stall before it is given up (it is read whole, at most
/// [`manifest::MAX_BYTES`]).
const READ_STALL: Duration = Duration::from_secs(10);
/// Manifests merged at start-up (concurrent publishers each leave one).
const READ_NEWEST: usize = 3;
/// Manifests kept per name after a publish.
const KEEP: usize = 4;

pub(crate) struct Prefetch {
    tier: Arc<RemoteTier>,
    names: Names,
    concurrency: usize,
    /// ActionIDs this run used, in first-use order.
    used: Mutex<Used>,
    /// What start-up found: the merged manifest and our name's objects (for pruning).
    found: Mutex<Option<Found>>,
    stop: Arc<AtomicBool>,
    /// Whether this run publishes (see `Cache::publish_warm_start`).
    publishing: AtomicBool,
    /// This run's pack group (see `pack.rs`) and the number of its next pack.
    group: String,
    next_pack: AtomicU32,
    /// Stored uploads waiting to fill a pack.
    staged: Mutex<Staged>,
    /// Packs of uploads being published.
    publishing_packs: Mutex<tokio::task::JoinSet<()>>,
    /// Entries in the packs this run published.
    packed: Mutex<HashSet<ActionId>>,
    /// Pack keys under our own name at start-up (for pruning).
    own_packs: Mutex<Vec<String>>,
    /// Sent once by [`Prefetch::stop`]: the work in progress is dropped then.
    stopped: watch::Sender<bool>,
    done: watch::Sender<bool>,
}

#[derive(Default)]
struct Used {
    seen: HashSet<ActionId>,
    order: Vec<ActionId>,
    /// Entries this helper's prefetch went to the remote for: a later local hit on one is
    /// a remote hit that cost the go command no wait.
    prefetched: HashSet<ActionId>,
}

#[derive(Default)]
struct Staged {
    batch: Vec<Stored>,
    bytes: u64,
    /// No more packs of uploads (one failed, or the run is over).
    off: bool,
}

#[derive(Default)]
struct Found {
    manifest: Manifest,
    /// Manifest keys under our own name, newest first.
    own: Vec<String>,
    /// The packs of the newest groups of the first name (ours, then the fallbacks) that
    /// has any, in reading order.
    packs: Vec<String>,
    /// Whether the manifest came from our own name (not a fallback).
    from_own: bool,
}

impl Prefetch {
    /// Starts the prefetch in the background. Must run inside the runtime.
    pub fn start(tier: Arc<RemoteTier>, names: Names, concurrency: usize) -> Arc<Prefetch> {
        let (done, _) = watch::channel(false);
        let group = pack::group(
            &names::dir_key(tier.prefix(), &names.key),
            SystemTime::now(),
        );
        let p = Arc::new(Prefetch {
            tier,
            names,
            concurrency: concurrency.max(1),
            used: Mutex::new(Used::default()),
            found: Mutex::new(None),
            stop: Arc::new(AtomicBool::new(false)),
            publishing: AtomicBool::new(false),
            group,
            next_pack: AtomicU32::new(0),
            staged: Mutex::new(Staged::default()),
            publishing_packs: Mutex::new(tokio::task::JoinSet::new()),
            packed: Mutex::new(HashSet::new()),
            own_packs: Mutex::new(Vec::new()),
            stopped: watch::channel(false).0,
            done,
        });
        let weak = Arc::downgrade(&p);
        p.tier.on_stored(Box::new(move |s| {
            if let Some(p) = weak.upgrade() {
                p.stage(s);
            }
        }));
        let me = Arc::clone(&p);
        let mut stopped = p.stopped.subscribe();
        tokio::spawn(async move {
            // Dropping the work ends its downloads (the pack stream too): once the go command
            // is done they help nobody, and a slow link would hold its close.
            tokio::select! {
                _ = me.run() => {}
                _ = stopped.wait_for(|s| *s) => tracing::debug!("prefetch stopped"),
            }
            me.done.send_replace(true);
        });
        p
    }

    fn stats(&self) -> &Stats {
        &self.tier.stats
    }

    /// Notes that this run used `action` (a hit or a put); true if this helper's prefetch
    /// brought it from the remote. Cheap: on the hot path.
    pub fn record(&self, action: &ActionId) -> bool {
        let mut u = self.used.lock().unwrap_or_else(|p| p.into_inner());
        if u.seen.insert(*action) {
            u.order.push(*action);
        }
        u.prefetched.contains(action)
    }

    fn mark_prefetched(&self, action: ActionId) {
        let mut u = self.used.lock().unwrap_or_else(|p| p.into_inner());
        u.prefetched.insert(action);
    }

    /// Waits until the prefetch has finished (or was stopped).
    pub async fn wait(&self) {
        let mut rx = self.done.subscribe();
        let _ = rx.wait_for(|d| *d).await;
    }

    /// Ends the prefetch: no more fetches, and those in flight are let go (a fetch half
    /// done leaves nothing behind: entries land whole or not at all).
    pub async fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.stopped.send_replace(true);
        self.wait().await;
    }

    async fn run(self: &Arc<Self>) {
        let (found, opened) = self.load().await;
        if self.tier.backend.breaker.is_disabled() {
            return;
        }
        let mut entries: Vec<ActionId> = found.manifest.entries.iter().map(|e| e.0).collect();
        Stats::add(&self.stats().manifest_entries, entries.len() as u64);
        self.tier.warm_start_found(entries.len());
        let keys = found.packs.clone();
        *self.found.lock().unwrap_or_else(|p| p.into_inner()) = Some(found);
        // What is here already needs nothing, not even a pack's index: on a warm machine the
        // packs opened early are dropped unread and the bodies are not touched.
        // File lookups, one per entry: off the runtime's threads, which serve the go command.
        let before = entries.len();
        let local = Arc::clone(&self.tier.local);
        let Ok(mut entries) = tokio::task::spawn_blocking(move || {
            entries.retain(|a| !local.contains(a));
            entries
        })
        .await
        else {
            return;
        };
        Stats::add(
            &self.stats().prefetch_local,
            (before - entries.len()) as u64,
        );
        if entries.is_empty() {
            return;
        }
        if !keys.is_empty() {
            let me = Arc::clone(self);
            let packs = Packs {
                tier: Arc::clone(&self.tier),
            };
            let taken = packs
                .read(
                    &keys,
                    entries.iter().copied().collect(),
                    Arc::clone(&self.stop),
                    move |a| me.mark_prefetched(a),
                    opened,
                )
                .await;
            entries.retain(|a| !taken.contains(a));
        }
        self.fetch_all(entries).await;
    }

    async fn fetch_all(self: &Arc<Self>, entries: Vec<ActionId>) {
        let sem = Arc::new(Semaphore::new(self.concurrency));
        let mut tasks = tokio::task::JoinSet::new();
        for action in entries {
            let permit = Arc::clone(&sem)
                .acquire_owned()
                .await
                .expect("semaphore open");
            if self.stop.load(Ordering::Acquire) || self.tier.backend.breaker.is_disabled() {
                break;
            }
            // While the store is judged slow the prefetch waits: its fetches would only
            // compete with the build and end unfinished.
            while self.tier.pace.is_slow() && !self.stop.load(Ordering::Acquire) {
                tokio::select! {
                    _ = self.tier.pace.until_fast() => {}
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
            if self.stop.load(Ordering::Acquire) {
                break;
            }
            let me = Arc::clone(self);
            tasks.spawn(async move {
                let _permit = permit;
                let tier = &me.tier;
                if let Ok(Lookup::Hit(_)) = tier.local.get(&action) {
                    Stats::add(&tier.stats.prefetch_local, 1);
                    return;
                }
                // Marked before it lands, so no local hit on it is miscounted.
                me.mark_prefetched(action);
                tier.fetch(action, Origin::Prefetch).await;
            });
            // Reap finished tasks as we go so the set stays small.
            while tasks.try_join_next().is_some() {}
        }
        while tasks.join_next().await.is_some() {}
    }

    /// Finds the newest manifests under our name, else under the first fallback that has
    /// any, and merges them. Every failure is a warning and an empty manifest. The first
    /// packs are requested beside the manifests (see [`Packs::open_first`]).
    async fn load(&self) -> (Found, Vec<pack::Opened>) {
        let prefix = self.tier.prefix();
        let names: Vec<&String> = std::iter::once(&self.names.key)
            .chain(&self.names.fallbacks)
            .collect();
        // One list per name, all at once: a missing name costs no extra round trip. They go
        // out beside the start-up check, a round trip sooner; if the check finds the store
        // unusable, it has said so, and their failures are the same story.
        let (lists, ()) = tokio::join!(
            futures_util::future::join_all(names.iter().map(|n| {
                let dir = names::dir_key(prefix, n);
                async move { self.tier.backend.list(&dir).await }
            })),
            self.tier.ready()
        );
        if self.tier.backend.breaker.is_open() {
            tracing::debug!("remote unusable at start-up: no warm start");
            return (Found::default(), Vec::new());
        }
        let mut found = Found::default();
        let mut chosen: Option<(usize, Vec<ObjectInfo>)> = None;
        for (i, res) in lists.into_iter().enumerate() {
            match res {
                Ok(mut objs) => {
                    objs.sort_by(|a, b| b.key.cmp(&a.key));
                    let (packs, objs): (Vec<_>, Vec<_>) =
                        objs.into_iter().partition(|o| pack::is_pack(&o.key));
                    if i == 0 {
                        found.own = objs.iter().map(|o| o.key.clone()).collect();
                        *self.own_packs.lock().unwrap_or_else(|p| p.into_inner()) =
                            packs.iter().map(|o| o.key.clone()).collect();
                    }
                    if found.packs.is_empty() {
                        let keys: Vec<String> = packs.into_iter().map(|o| o.key).collect();
                        found.packs = pack::newest_groups(&keys, pack::KEEP);
                    }
                    if chosen.is_none() && !objs.is_empty() {
                        chosen = Some((i, objs));
                    }
                }
                // Already reported when the remote became unavailable.
                Err(BackendError::Unavailable(why)) => {
                    tracing::debug!("listing manifest {}: {why}", names[i]);
                }
                Err(e) => {
                    self.stats().warn_once(
                        "manifest",
                        &format!("listing manifest {}: {e}; not prefetching it", names[i]),
                    );
                }
            }
        }
        let Some((i, objs)) = chosen else {
            return (found, Vec::new());
        };
        found.from_own = i == 0;
        let reads = objs.iter().take(READ_NEWEST).map(|o| self.read_one(o));
        let packs = Packs {
            tier: Arc::clone(&self.tier),
        };
        let (manifests, opened) = tokio::join!(
            futures_util::future::join_all(reads),
            packs.open_first(&found.packs)
        );
        let manifests: Vec<Manifest> = manifests.into_iter().flatten().collect();
        found.manifest = Manifest::merge(&manifests);
        tracing::debug!(
            name = names[i],
            objects = manifests.len(),
            entries = found.manifest.len(),
            "manifest loaded"
        );
        (found, opened)
    }

    async fn read_one(&self, o: &ObjectInfo) -> Option<Manifest> {
        let warn = |why: String| {
            Stats::add(&self.stats().manifest_rejected, 1);
            self.stats()
                .warn_once("manifest", &format!("ignoring manifest {}: {why}", o.key));
            None
        };
        if o.size > manifest::MAX_BYTES {
            return warn(format!(
                "{} bytes is over the cap of {}",
                o.size,
                manifest::MAX_BYTES
            ));
        }
        let reader = match self.tier.backend.get(&o.key).await {
            Ok(Some(r)) => r,
            // Pruned by another publisher since we listed it.
            Ok(None) => return None,
            Err(BackendError::Unavailable(why)) => {
                tracing::debug!("reading manifest {}: {why}", o.key);
                return None;
            }
            Err(e) => return warn(e.to_string()),
        };
        // The listed size can be stale: never read more than the cap.
        let mut limited = IdleTimeout::new(reader, READ_STALL).take(manifest::MAX_BYTES + 1);
        let mut buf = Vec::new();
        if let Err(e) = limited.read_to_end(&mut buf).await {
            return warn(format!("reading it: {e}"));
        }
        if buf.len() as u64 > manifest::MAX_BYTES {
            return warn(format!(
                "it is over the cap of {} bytes",
                manifest::MAX_BYTES
            ));
        }
        match Manifest::decode(&buf) {
            Ok(m) => Some(m),
            Err(why) => warn(why),
        }
    }

    /// Publishes what this run used, merged with what it found, unless that adds nothing,
    /// and a pack of it when this run had to download much of it one by one. Then deletes
    /// our name's older manifests and packs beyond the newest few. Failures are warnings.
    pub async fn publish(&self) {
        if self.tier.read_only() || self.tier.backend.breaker.is_disabled() {
            return;
        }
        // Through a link judged slow a manifest or a pack would not arrive before close
        // gives up (one PUT at 3 s a request held every go command's close for 2 s), and
        // would list this run's entries, which mostly stayed local.
        if self.tier.pace.is_slow() {
            tracing::debug!("warm start: not publishing, the remote is judged slow");
            return;
        }
        let used = std::mem::take(&mut self.used.lock().unwrap_or_else(|p| p.into_inner()).order);
        let found = self
            .found
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_default();
        if used.is_empty() && found.manifest.is_empty() {
            return;
        }
        let known: HashSet<&ActionId> = found.manifest.entries.iter().map(|e| &e.0).collect();
        // Nothing new when the newest manifest already lists all of it. A run that used
        // nothing (`gobuildcache prefetch`) publishes no manifest, but may publish a pack.
        let listed = found.from_own && used.iter().all(|a| known.contains(a));
        let new = !used.is_empty() && !listed;
        let next = found.manifest.next(&used);
        let dir = names::dir_key(self.tier.prefix(), &self.names.key);
        if new {
            let key = names::object_key(&dir, SystemTime::now());
            match self.tier.put_bytes(&key, next.encode()).await {
                Ok(()) => {
                    Stats::add(&self.stats().manifest_published, next.len() as u64);
                    tracing::debug!(key, entries = next.len(), "manifest published");
                }
                Err(e) => return self.publish_failed(&key, e),
            }
            let old = found.own.iter().skip(KEEP - 1);
            futures_util::future::join_all(old.map(|k| self.tier.backend.delete(k))).await;
        }
        let s = self.stats();
        let single = Stats::get(&s.remote_downloads).saturating_sub(Stats::get(&s.pack_entries));
        let wanted = if used.is_empty() {
            next.len()
        } else {
            used.len()
        };
        if !pack::worth_publishing(single, wanted as u64) {
            return;
        }
        let key = pack::key(&self.group, self.next_pack.fetch_add(1, Ordering::AcqRel));
        let ids: Vec<ActionId> = {
            let packed = self.packed.lock().unwrap_or_else(|p| p.into_inner());
            next.entries
                .iter()
                .map(|e| e.0)
                .filter(|a| !packed.contains(a))
                .collect()
        };
        let packs = Packs {
            tier: Arc::clone(&self.tier),
        };
        match packs.publish(&key, ids.clone()).await {
            Ok(0) => {}
            Ok(n) => {
                Stats::add(&s.pack_published, n);
                tracing::debug!(key, entries = n, "pack published");
                self.packed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(ids);
            }
            Err(e) => self.publish_failed(&key, e),
        }
    }

    /// From now on this run publishes (its flush calls [`publish`](Self::publish) and
    /// [`finish_packs`](Self::finish_packs)), so its stored uploads are kept for packs.
    pub fn publishing(&self) {
        self.publishing.store(true, Ordering::Release);
    }

    /// Whether this run publishes: a go command's session or warm-up step, or `-publish`.
    pub fn is_publishing(&self) -> bool {
        self.publishing.load(Ordering::Acquire)
    }

    /// Whether this run's uploads are enough of what it used to be worth a pack: a cold
    /// run's are all of it; a warm run that changed a few packages publishes none.
    fn uploads_worth_packing(&self) -> bool {
        let used = self
            .used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .order
            .len() as u64;
        pack::worth_publishing(Stats::get(&self.stats().uploads), used)
            && !self.tier.pace.is_slow()
            && !self.tier.backend.breaker.is_disabled()
    }

    /// Takes a stored upload's encoded object for this run's next pack; once [`pack::CHUNK`]
    /// bytes are waiting and packing them pays, publishes them in the background. Whatever
    /// is not kept is deleted (dropping a [`Stored`] removes its file).
    fn stage(self: &Arc<Self>, s: Stored) {
        // A big object alone is as fast to fetch by itself as in a pack.
        if !self.publishing.load(Ordering::Acquire) || s.body.size() > pack::CHUNK {
            return;
        }
        let batch = {
            let mut st = self.staged.lock().unwrap_or_else(|p| p.into_inner());
            if st.off {
                return;
            }
            st.bytes += s.body.size();
            st.batch.push(s);
            if st.bytes < pack::CHUNK {
                return;
            }
            st.bytes = 0;
            std::mem::take(&mut st.batch)
        };
        if !self.uploads_worth_packing() {
            return;
        }
        let me = Arc::clone(self);
        self.publishing_packs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .spawn(async move { me.publish_stored(batch).await });
    }

    async fn publish_stored(&self, batch: Vec<Stored>) {
        let key = pack::key(&self.group, self.next_pack.fetch_add(1, Ordering::AcqRel));
        let packs = Packs {
            tier: Arc::clone(&self.tier),
        };
        match packs.publish_stored(&key, batch).await {
            Ok(ids) => {
                Stats::add(&self.stats().pack_published, ids.len() as u64);
                tracing::debug!(key, entries = ids.len(), "pack of uploads published");
                self.packed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(ids);
            }
            Err(e) => {
                self.staged.lock().unwrap_or_else(|p| p.into_inner()).off = true;
                self.publish_failed(&key, e);
            }
        }
    }

    /// At flush, after the uploads: publishes the last pack of uploads (when this run packs
    /// its uploads), waits for those in flight, then deletes our name's packs beyond the
    /// newest groups.
    pub async fn finish_packs(&self) {
        let rest = {
            let mut st = self.staged.lock().unwrap_or_else(|p| p.into_inner());
            st.off = true;
            st.bytes = 0;
            std::mem::take(&mut st.batch)
        };
        let published = Stats::get(&self.stats().pack_published) > 0;
        if !rest.is_empty() && (published || self.uploads_worth_packing()) {
            self.publish_stored(rest).await;
        } else {
            drop(rest);
        }
        let mut running = std::mem::take(
            &mut *self
                .publishing_packs
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        while running.join_next().await.is_some() {}
        if Stats::get(&self.stats().pack_published) == 0 {
            return;
        }
        let own = std::mem::take(&mut *self.own_packs.lock().unwrap_or_else(|p| p.into_inner()));
        let old = pack::stale(&own, pack::KEEP - 1, &self.group);
        futures_util::future::join_all(old.iter().map(|k| self.tier.backend.delete(k))).await;
    }

    fn publish_failed(&self, key: &str, e: UploadError) {
        match e {
            // Already reported when the remote became unavailable.
            UploadError::Unavailable(why) => tracing::debug!("publishing {key}: {why}"),
            e => self
                .stats()
                .warn_once("manifest", &format!("publishing {key}: {e}")),
        }
    }
}
