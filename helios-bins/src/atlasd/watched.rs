//! WATCH/UNWATCH: optimistic transactions. A connection's watched keys are registered in
//! [`Watches`]; every write transaction marks the watchers of the keys it wrote dirty
//! while it is planned (under ATLAS's writer lock, in commit order), and EXEC checks its
//! flag inside its own transaction, under the same lock: so a write committed before the
//! EXEC always aborts it (`*-1`, a nil array), and one committed after never does.
//!
//! A watched key that was live at WATCH and is gone at EXEC (expired, deleted by active
//! expiry, flushed) also aborts, as in Redis. FLUSHDB/FLUSHALL mark every watcher dirty.
//! A write that marked a key and was then refused (the memory limit) may abort an EXEC
//! that would have succeeded: an optimistic transaction may always be retried, and it
//! never succeeds over a change.
//!
//! Cost when nobody watches: one relaxed atomic load per write transaction.

use bytes::Bytes;
use helios_atlas::{Key, Tx};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Most keys one connection may watch (bounds the registry per connection, and the linear
/// duplicate check of each WATCH).
pub const WATCH_KEY_COUNT_MAX: usize = 1_024;

/// One connection's watch: its dirty flag and its keys (with whether each was live).
#[derive(Debug, Default)]
pub struct Watching {
    dirty: AtomicBool,
    keys: Mutex<Vec<(Key, bool)>>,
}

/// Every connection's watched keys.
#[derive(Debug, Default)]
pub struct Watches {
    // Registrations in `map` (fast path: zero means no write needs to look).
    active: AtomicUsize,
    map: Mutex<HashMap<Key, Vec<Arc<Watching>>>>,
}

impl Watches {
    /// Marks the watchers of the keys `tx` wrote so far dirty. Called by every write
    /// transaction after its commands ran, under the writer lock.
    pub fn touch_written(&self, tx: &Tx<'_, '_>) {
        if self.active.load(Ordering::Acquire) == 0 {
            return;
        }
        let map = self.map.lock();
        for k in tx.written_keys() {
            if let Some(ws) = map.get(k.as_bytes()) {
                for w in ws {
                    w.dirty.store(true, Ordering::Release);
                }
            }
        }
    }

    /// Marks every watcher dirty (FLUSHDB, FLUSHALL).
    pub fn touch_all(&self) {
        if self.active.load(Ordering::Acquire) == 0 {
            return;
        }
        for ws in self.map.lock().values() {
            for w in ws {
                w.dirty.store(true, Ordering::Release);
            }
        }
    }

    fn remove(&self, w: &Arc<Watching>) {
        let keys = std::mem::take(&mut *w.keys.lock());
        let mut map = self.map.lock();
        for (k, _) in keys {
            if let Some(ws) = map.get_mut(&k) {
                let before = ws.len();
                ws.retain(|x| !Arc::ptr_eq(x, w));
                self.active.fetch_sub(before - ws.len(), Ordering::AcqRel);
                if ws.is_empty() {
                    map.remove(&k);
                }
            }
        }
    }
}

/// A connection's watch, unregistered when dropped (UNWATCH, EXEC, DISCARD, RESET, or
/// the connection closing).
#[derive(Debug)]
pub struct WatchGuard {
    watches: Arc<Watches>,
    watching: Arc<Watching>,
}

impl WatchGuard {
    /// A new, empty watch.
    pub fn new(watches: Arc<Watches>) -> Self {
        Self {
            watches,
            watching: Arc::default(),
        }
    }

    /// Watches `key` (`live`: whether it exists now). `false` past the per-connection
    /// limit.
    pub fn add(&self, key: &[u8], live: bool) -> bool {
        let mut keys = self.watching.keys.lock();
        if keys.iter().any(|(k, _)| k == key) {
            return true;
        }
        if keys.len() >= WATCH_KEY_COUNT_MAX {
            return false;
        }
        keys.push((Key::from(key), live));
        drop(keys);
        self.watches
            .map
            .lock()
            .entry(Key::from(key))
            .or_default()
            .push(self.watching.clone());
        self.watches.active.fetch_add(1, Ordering::AcqRel);
        true
    }

    /// Whether EXEC must abort, checked inside its transaction: a watched key was
    /// written, or was live at WATCH and is not now.
    pub fn changed(&self, tx: &Tx<'_, '_>) -> bool {
        self.watching.dirty.load(Ordering::Acquire)
            || self
                .watching
                .keys
                .lock()
                .iter()
                .any(|(k, live)| *live && !tx.exists(k))
    }
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.watches.remove(&self.watching);
    }
}

/// The key arguments of WATCH as ATLAS keys (`None`: an invalid key, with its error).
pub fn keys(args: &[Bytes]) -> Result<Vec<&[u8]>, &'static str> {
    args[1..].iter().map(|k| super::kv::key_arg(k)).collect()
}
