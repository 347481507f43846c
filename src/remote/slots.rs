//! Entries the streams (warm-start packs, read side by side) have promised to deliver, so a
//! get for one waits for it instead of fetching it a second time. The tier holds the map; the
//! pack reader fills it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::ids::ActionId;
use crate::Entry;

/// A get waits for the pack only for an entry this close to what the stream has read: at
/// the stream's pace that is well under a second; further on, one GET of its own is faster.
const NEAR: u64 = 32 << 20;

/// Entries the packs being read will deliver, so a get for one can wait for it.
#[derive(Default)]
pub(crate) struct Slots {
    map: Mutex<HashMap<ActionId, Slot>>,
}

#[derive(Clone)]
struct Slot {
    /// Where its frame starts, in its stream's frame bytes.
    offset: u64,
    /// Frame bytes its stream has read so far.
    at: Arc<AtomicU64>,
    rx: watch::Receiver<Option<Entry>>,
}

impl Slots {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ActionId, Slot>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands the stored entry to whoever waits for it.
    pub(crate) fn keep(&self, action: &ActionId, tx: watch::Sender<Option<Entry>>, e: Entry) {
        tx.send_replace(Some(e));
        self.forget(action);
    }

    /// No longer promised (its waiters, once the sender is dropped, fetch it themselves).
    pub(crate) fn forget(&self, action: &ActionId) {
        self.lock().remove(action);
    }

    /// The entry once the pack has stored it; `None` at once when no pack being read will
    /// deliver it soon, or later if the pack gives up on it or takes longer than `patience`
    /// (a crawling stream must not hold a get longer than its own fetch would take). On
    /// `None` the caller fetches it itself.
    pub(crate) async fn wait(&self, action: &ActionId, patience: Duration) -> Option<Entry> {
        let slot = self.lock().get(action).cloned()?;
        if slot.offset > slot.at.load(Ordering::Acquire) + NEAR {
            return None;
        }
        let mut rx = slot.rx;
        let got = tokio::time::timeout(patience, rx.wait_for(|v| v.is_some()))
            .await
            .ok()?
            .ok()?;
        got.clone()
    }
}

/// One stream's promises: each one kept (an entry sent) or dropped (its waiters fall back
/// to their own fetch), and never left in the map, whatever way the read ends.
pub(crate) struct Promises<'a> {
    slots: &'a Slots,
    tx: Vec<Option<(ActionId, watch::Sender<Option<Entry>>)>>,
    /// Frame bytes this stream has read so far: the reader moves it on.
    pub(crate) at: Arc<AtomicU64>,
}

impl Promises<'_> {
    /// Room for `n` promises, one per index position.
    pub(crate) fn new(slots: &Slots, n: usize) -> Promises<'_> {
        Promises {
            slots,
            tx: (0..n).map(|_| None).collect(),
            at: Arc::new(AtomicU64::new(0)),
        }
    }

    pub(crate) fn add(&mut self, i: usize, action: ActionId, offset: u64) {
        let (tx, rx) = watch::channel(None);
        let at = Arc::clone(&self.at);
        self.slots.lock().insert(action, Slot { offset, at, rx });
        self.tx[i] = Some((action, tx));
    }

    pub(crate) fn take(&mut self, i: usize) -> Option<(ActionId, watch::Sender<Option<Entry>>)> {
        self.tx[i].take()
    }
}

impl Drop for Promises<'_> {
    fn drop(&mut self) {
        let mut map = self.slots.lock();
        for (action, _) in self.tx.iter().flatten() {
            map.remove(action);
        }
    }
}
