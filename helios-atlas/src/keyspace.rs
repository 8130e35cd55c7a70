//! [`Keyspace`]: the in-memory state machine. Pure: it changes only by [`Keyspace::apply`]
//! of a logged [`Record`], and reads take the time as an argument.
//!
//! Layout: a `HashMap` (SipHash, since keys come from clients) for point reads, an ordered
//! `BTreeSet` over the same `Arc<[u8]>` keys (each with its first 16 bytes inline, see
//! [`OrdKey`]) for prefix scans, and an expiry index ordered
//! by time for active expiry. Invariants (checked by [`Keyspace::check_invariants`]):
//! - `order` holds exactly the keys of `map`;
//! - `expiries` holds exactly `(at, key)` for the entries of `map` with an expiry;
//! - `memory_size` is the sum of [`entry_size`] over `map`;
//! - `last_seq` is the sequence number of the last applied record.
//!
//! Expired entries stay in the map until a logged delete removes them; reads treat them as
//! absent (lazy expiry), so what a reader sees never depends on whether that delete has
//! been logged yet.

use crate::aof::Record;
use crate::key::Key;
use crate::limits::ENTRY_OVERHEAD_SIZE;
use crate::op::Op;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Arc;

/// A stored value and its expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The value.
    pub value: Bytes,
    /// Absolute expiry time in ms since the Unix epoch, or none.
    pub expire_at_ms: Option<u64>,
}

impl Entry {
    /// Whether the entry is expired at `now_ms` (an entry expires at its expiry time).
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expire_at_ms.is_some_and(|at| at <= now_ms)
    }
}

/// Estimated memory of one entry, for the memory limit.
pub fn entry_size(key: &[u8], entry: &Entry) -> u64 {
    key.len() as u64 + entry.value.len() as u64 + ENTRY_OVERHEAD_SIZE
}

/// One key in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotEntry {
    /// The key.
    pub key: Key,
    /// The value.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// Absolute expiry time, if any.
    pub expire_at_ms: Option<u64>,
}

/// The state a snapshot is built from, replayed off to the side (log compaction): the
/// same key-value-expiry state as [`Keyspace`] after the same records, without the
/// indexes a live keyspace needs (key order, expiry order, memory accounting), so replaying
/// a segment costs one hash-map update per op. Records are consumed, their keys and values
/// moved in, not copied.
#[derive(Debug, Default)]
pub(crate) struct ReplayState {
    map: HashMap<Key, (Bytes, Option<u64>), foldhash::fast::RandomState>,
    last_seq: u64,
}

impl ReplayState {
    /// The state of a snapshot taken at `last_seq`.
    pub(crate) fn from_snapshot(last_seq: u64, entries: Vec<SnapshotEntry>) -> Self {
        let mut map = HashMap::with_capacity_and_hasher(entries.len(), Default::default());
        for e in entries {
            map.insert(e.key, (Bytes::from(e.value), e.expire_at_ms));
        }
        Self { map, last_seq }
    }

    /// Sequence number of the last applied record.
    pub(crate) fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Keys held.
    pub(crate) fn key_count(&self) -> u64 {
        self.map.len() as u64
    }

    /// Applies the next record, as [`Keyspace::apply`] does.
    pub(crate) fn apply(&mut self, record: Record) {
        assert_eq!(
            record.seq,
            self.last_seq + 1,
            "records are applied in sequence"
        );
        for op in record.ops {
            match op {
                Op::Set {
                    key,
                    value,
                    expire_at_ms,
                } => {
                    self.map.insert(key, (value, expire_at_ms));
                }
                Op::Del { key, .. } => {
                    self.map.remove(&key);
                }
                Op::Expire { key, expire_at_ms } => {
                    if let Some(e) = self.map.get_mut(&key) {
                        e.1 = expire_at_ms;
                    }
                }
                Op::SetRange {
                    key,
                    offset,
                    bytes,
                    result,
                } => {
                    let e = self.map.entry(key).or_insert((Bytes::new(), None));
                    e.0 = match result.get() {
                        Some(v) => v.clone(),
                        None => crate::op::patch(std::mem::take(&mut e.0), offset, &bytes),
                    };
                }
            }
        }
        self.last_seq = record.seq;
    }

    /// The snapshot entries, in key order (as [`Keyspace::snapshot_entries`]).
    pub(crate) fn into_snapshot_entries(self) -> Vec<SnapshotEntry> {
        let mut v: Vec<SnapshotEntry> = self
            .map
            .into_iter()
            .map(|(key, (value, expire_at_ms))| SnapshotEntry {
                key,
                value: Vec::from(value),
                expire_at_ms,
            })
            .collect();
        v.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        v
    }
}

/// A key in the order index: its first [`ORD_PREFIX_SIZE`] bytes inline (big-endian,
/// zero-padded), then the shared key. Comparisons are decided by the inline prefix and
/// the keys' lengths (in the `Arc<[u8]>`'s fat pointer) without following the pointer to
/// the key's bytes (a cache miss each, some 18 per insert into a B-tree of a million
/// keys, whose nodes are searched linearly) unless both prefixes are equal and a key is
/// longer than the prefix. Orders exactly as `[u8]` does (byte-lexicographic, which for
/// UTF-8 keys is `str`'s order): where the
/// prefixes differ, at the first differing byte either both keys have a real byte, or the
/// shorter key has ended and the other has a real byte there that is at least zero (so the
/// shorter, a prefix of it, sorts first, as in `[u8]`); equal prefixes of two keys that fit
/// in them mean the shorter is a prefix of the longer (or they are equal); otherwise the
/// whole keys decide. So `Borrow<[u8]>` lookups agree with it.
#[derive(Debug, Clone)]
struct OrdKey {
    prefix: [u64; 3],
    key: Arc<[u8]>,
}

/// Bytes of a key kept inline in the order index (24: most keys, like
/// `counter:000000012345` or `user:1234:profile`, fit whole).
const ORD_PREFIX_SIZE: usize = 24;

impl OrdKey {
    fn new(key: Arc<[u8]>) -> Self {
        let b = &*key;
        let mut p = [0u8; ORD_PREFIX_SIZE];
        let n = b.len().min(ORD_PREFIX_SIZE);
        p[..n].copy_from_slice(&b[..n]);
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&p[i * 8..i * 8 + 8]);
            u64::from_be_bytes(w)
        };
        Self {
            prefix: [word(0), word(1), word(2)],
            key,
        }
    }
}

impl Ord for OrdKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.prefix.cmp(&other.prefix).then_with(|| {
            let (a, b) = (self.key.len(), other.key.len());
            if a <= ORD_PREFIX_SIZE && b <= ORD_PREFIX_SIZE {
                a.cmp(&b)
            } else {
                self.key.cmp(&other.key)
            }
        })
    }
}

impl PartialOrd for OrdKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for OrdKey {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for OrdKey {}

impl std::borrow::Borrow<[u8]> for OrdKey {
    fn borrow(&self) -> &[u8] {
        &self.key
    }
}

/// The keyspace state machine. See the module docs.
#[derive(Debug, Default, Clone)]
pub struct Keyspace {
    map: HashMap<Arc<[u8]>, Entry>,
    // Invariant: the same keys as `map`, sharing their allocations.
    order: BTreeSet<OrdKey>,
    // Invariant: (at, key) for each entry of `map` with `expire_at_ms == Some(at)`.
    expiries: BTreeSet<(u64, Arc<[u8]>)>,
    // Invariant: sum of `entry_size` over `map`.
    memory_size: u64,
    last_seq: u64,
}

impl Keyspace {
    /// An empty keyspace whose next record is `last_seq + 1`.
    pub fn new(last_seq: u64) -> Self {
        Self {
            last_seq,
            ..Self::default()
        }
    }

    /// Sequence number of the last applied record (0 if none).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Number of keys held, expired-but-not-yet-deleted ones included.
    pub fn key_count(&self) -> u64 {
        self.map.len() as u64
    }

    /// Number of keys with an expiry.
    pub fn expiring_count(&self) -> u64 {
        self.expiries.len() as u64
    }

    /// Estimated memory of all entries.
    pub fn memory_size(&self) -> u64 {
        self.memory_size
    }

    /// Applies a record. Panics if it is not the next in sequence: the caller (the commit
    /// pipeline or recovery) guarantees order, so a gap is a bug, not an input error.
    pub fn apply(&mut self, record: &Record) {
        assert_eq!(
            record.seq,
            self.last_seq + 1,
            "records are applied in sequence"
        );
        for op in &record.ops {
            self.apply_op(op);
        }
        self.last_seq = record.seq;
    }

    /// Applies one op (used by `apply`, and by snapshot loading through `insert`).
    fn apply_op(&mut self, op: &Op) {
        match op {
            Op::Set {
                key,
                value,
                expire_at_ms,
            } => self.insert(
                key,
                Entry {
                    value: value.clone(),
                    expire_at_ms: *expire_at_ms,
                },
            ),
            Op::Del { key, .. } => {
                self.remove(key);
            }
            Op::Expire { key, expire_at_ms } => {
                if let Some((k, entry)) = self.map.get_key_value(key.as_bytes()) {
                    let k = k.clone();
                    let mut entry = entry.clone();
                    if let Some(at) = entry.expire_at_ms {
                        self.expiries.remove(&(at, k.clone()));
                    }
                    entry.expire_at_ms = *expire_at_ms;
                    if let Some(at) = entry.expire_at_ms {
                        self.expiries.insert((at, k.clone()));
                    }
                    self.map.insert(k, entry);
                }
            }
            Op::SetRange {
                key,
                offset,
                bytes,
                result,
            } => {
                if let Some(entry) = self.map.get_mut(key.as_bytes()) {
                    // In place: the old value's buffer is changed where it is the only
                    // reference to it (a replay), else the planned result is taken.
                    let old_size = entry.value.len() as u64;
                    entry.value = match result.get() {
                        Some(v) => v.clone(),
                        None => crate::op::patch(std::mem::take(&mut entry.value), *offset, bytes),
                    };
                    self.memory_size = self.memory_size - old_size + entry.value.len() as u64;
                } else {
                    let value = match result.get() {
                        Some(v) => v.clone(),
                        None => crate::op::patch(Bytes::new(), *offset, bytes),
                    };
                    self.insert(
                        key,
                        Entry {
                            value,
                            expire_at_ms: None,
                        },
                    );
                }
            }
        }
    }

    /// Inserts or replaces an entry.
    pub fn insert(&mut self, key: &[u8], entry: Entry) {
        let new_size = entry_size(key, &entry);
        // Fast path: an existing key with no expiry before or after needs one lookup and
        // no index change.
        if entry.expire_at_ms.is_none()
            && let Some(old) = self.map.get_mut(key)
            && old.expire_at_ms.is_none()
        {
            self.memory_size -= entry_size(key, old);
            self.memory_size += new_size;
            *old = entry;
            return;
        }
        let k: Arc<[u8]> = match self.map.get_key_value(key) {
            Some((k, old)) => {
                let k = k.clone();
                self.memory_size -= entry_size(key, old);
                if let Some(at) = old.expire_at_ms {
                    self.expiries.remove(&(at, k.clone()));
                }
                k
            }
            None => {
                let k: Arc<[u8]> = Arc::from(key);
                self.order.insert(OrdKey::new(k.clone()));
                k
            }
        };
        if let Some(at) = entry.expire_at_ms {
            self.expiries.insert((at, k.clone()));
        }
        self.memory_size += new_size;
        self.map.insert(k, entry);
    }

    /// Removes a key, returning its entry.
    pub fn remove(&mut self, key: &[u8]) -> Option<Entry> {
        let (k, old) = self.map.remove_entry(key)?;
        self.order.remove(&OrdKey::new(k.clone()));
        if let Some(at) = old.expire_at_ms {
            self.expiries.remove(&(at, k.clone()));
        }
        self.memory_size -= entry_size(key, &old);
        Some(old)
    }

    /// The entry for `key`, whether or not it is expired.
    pub fn entry_raw(&self, key: &[u8]) -> Option<&Entry> {
        self.map.get(key)
    }

    /// The live entry for `key` at `now_ms` (expired entries read as absent).
    pub fn entry(&self, key: &[u8], now_ms: u64) -> Option<&Entry> {
        self.map.get(key).filter(|e| !e.is_expired(now_ms))
    }

    /// Up to `limit` live entries whose keys start with `prefix`, in key order, strictly
    /// after `cursor` if given. Returns them and whether more may follow.
    pub fn scan(
        &self,
        prefix: &[u8],
        cursor: Option<&[u8]>,
        limit: usize,
        now_ms: u64,
    ) -> (Vec<(Key, Bytes)>, bool) {
        let start: Bound<&[u8]> = match cursor {
            Some(c) if c >= prefix => Bound::Excluded(c),
            _ => Bound::Included(prefix),
        };
        let mut out = Vec::new();
        let mut more = false;
        for k in self.order.range::<[u8], _>((start, Bound::Unbounded)) {
            let k = &*k.key;
            if !k.starts_with(prefix) {
                break;
            }
            let Some(entry) = self.map.get(k) else {
                continue;
            };
            if entry.is_expired(now_ms) {
                continue;
            }
            if out.len() == limit {
                more = true;
                break;
            }
            out.push((Key::from(k), entry.value.clone()));
        }
        (out, more)
    }

    /// Up to `count_max` keys (and at most `size_max` bytes of keys) whose expiry is at or
    /// before `now_ms`, soonest first.
    pub fn expired_keys(&self, now_ms: u64, count_max: usize, size_max: u64) -> Vec<Key> {
        let mut size = 0u64;
        self.expiries
            .iter()
            .take_while(|(at, _)| *at <= now_ms)
            .take(count_max)
            .take_while(|(_, k)| {
                size += k.len() as u64;
                size <= size_max
            })
            .map(|(_, k)| Key::from(&k[..]))
            .collect()
    }

    /// The earliest expiry time, if any key expires.
    pub fn next_expiry_ms(&self) -> Option<u64> {
        self.expiries.first().map(|(at, _)| *at)
    }

    /// All entries in key order, for a snapshot.
    pub fn snapshot_entries(&self) -> Vec<SnapshotEntry> {
        self.order
            .iter()
            .filter_map(|k| {
                self.map.get(&*k.key).map(|e| SnapshotEntry {
                    key: Key::from(&k.key[..]),
                    value: e.value.to_vec(),
                    expire_at_ms: e.expire_at_ms,
                })
            })
            .collect()
    }

    /// Rebuilds a keyspace from snapshot entries taken at `last_seq`.
    pub fn from_snapshot(last_seq: u64, entries: Vec<SnapshotEntry>) -> Self {
        let mut ks = Keyspace::new(last_seq);
        ks.map.reserve(entries.len());
        for e in entries {
            ks.insert(
                &e.key,
                Entry {
                    value: Bytes::from(e.value),
                    expire_at_ms: e.expire_at_ms,
                },
            );
        }
        ks
    }

    /// Every key and entry, in key order (for comparing with a model in tests).
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &Entry)> {
        self.order
            .iter()
            .filter_map(|k| self.map.get(&*k.key).map(|e| (&*k.key, e)))
    }

    /// Asserts the invariants of the module docs. O(keys): for tests and simulations.
    pub fn check_invariants(&self) {
        assert_eq!(self.order.len(), self.map.len(), "order index size");
        let mut size = 0;
        let mut expiring = 0;
        for (k, e) in &self.map {
            assert!(
                self.order.contains(&OrdKey::new(k.clone())),
                "key {k:?} missing from order index"
            );
            size += entry_size(k, e);
            if let Some(at) = e.expire_at_ms {
                expiring += 1;
                assert!(
                    self.expiries.contains(&(at, k.clone())),
                    "key {k:?} missing from expiry index"
                );
            }
        }
        assert_eq!(self.expiries.len(), expiring, "expiry index size");
        assert_eq!(self.memory_size, size, "memory accounting");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(key: &str, v: &str, x: Option<u64>) -> Op {
        Op::Set {
            key: key.into(),
            value: Bytes::from(v.to_owned()),
            expire_at_ms: x,
        }
    }

    #[test]
    fn apply_scan_and_expiry() {
        let mut ks = Keyspace::new(0);
        ks.apply(&Record {
            seq: 1,
            ops: vec![
                set("a:1", "x", None),
                set("a:2", "y", Some(10)),
                set("b", "z", None),
            ],
        });
        ks.check_invariants();
        let (page, more) = ks.scan(b"a:", None, 1, 0);
        assert_eq!(page, vec![(Key::from("a:1"), Bytes::from("x"))]);
        assert!(more);
        let (page, more) = ks.scan(b"a:", Some(b"a:1"), 10, 0);
        assert_eq!(page.len(), 1);
        assert!(!more);
        assert_eq!(ks.scan(b"a:", None, 10, 10).0.len(), 1, "expired hidden");
        assert!(ks.entry(b"a:2", 10).is_none());
        assert!(ks.entry_raw(b"a:2").is_some());
        assert_eq!(ks.expired_keys(10, 10, 1024), vec![Key::from("a:2")]);
        assert!(ks.expired_keys(10, 10, 2).is_empty(), "bounded by size too");
        ks.apply(&Record {
            seq: 2,
            ops: vec![
                Op::Expire {
                    key: "b".into(),
                    expire_at_ms: Some(5),
                },
                Op::Expire {
                    key: "a:2".into(),
                    expire_at_ms: None,
                },
                Op::Del {
                    key: "a:1".into(),
                    expired: false,
                },
            ],
        });
        ks.check_invariants();
        assert_eq!(ks.next_expiry_ms(), Some(5));
        assert_eq!(ks.key_count(), 2);
        let copy = Keyspace::from_snapshot(ks.last_seq(), ks.snapshot_entries());
        copy.check_invariants();
        assert_eq!(
            copy.iter().collect::<Vec<_>>(),
            ks.iter().collect::<Vec<_>>()
        );
    }

    fn op_strategy() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        let key = prop::sample::select(vec!["a", "b", "c", "d", "a:1", "b:2"]);
        let at = prop::option::of(0u64..100);
        prop_oneof![
            (key.clone(), "[a-z]{0,3}", at.clone()).prop_map(|(k, v, x)| set(k, &v, x)),
            (key.clone(), any::<bool>()).prop_map(|(k, e)| Op::Del {
                key: k.into(),
                expired: e
            }),
            (key, at).prop_map(|(k, x)| Op::Expire {
                key: k.into(),
                expire_at_ms: x
            }),
        ]
    }

    proptest::proptest! {
        /// Compaction's replay state ends where the live keyspace does: same snapshot
        /// entries from the same snapshot plus the same records.
        #[test]
        fn replay_state_matches_the_keyspace(
            base in proptest::collection::vec(op_strategy(), 0..20),
            records in proptest::collection::vec(proptest::collection::vec(op_strategy(), 1..6), 0..30),
        ) {
            let mut ks = Keyspace::new(0);
            if !base.is_empty() {
                ks.apply(&Record { seq: 1, ops: base });
            }
            let mut replay = ReplayState::from_snapshot(ks.last_seq(), ks.snapshot_entries());
            for ops in records {
                let r = Record { seq: ks.last_seq() + 1, ops };
                ks.apply(&r);
                replay.apply(r);
            }
            proptest::prop_assert_eq!(replay.last_seq(), ks.last_seq());
            proptest::prop_assert_eq!(replay.key_count(), ks.key_count());
            proptest::prop_assert_eq!(replay.into_snapshot_entries(), ks.snapshot_entries());
        }
    }

    proptest::proptest! {
        /// The order index's key orders exactly as `str` (prefixes, NULs, multi-byte
        /// characters, keys longer than the inline prefix).
        #[test]
        fn ord_key_orders_as_str(a in "[a\\x00\\x01é]{0,30}", b in "[a\\x00\\x01é]{0,30}") {
            let (ka, kb) = (OrdKey::new(Arc::from(a.as_bytes())), OrdKey::new(Arc::from(b.as_bytes())));
            proptest::prop_assert_eq!(ka.cmp(&kb), a.as_str().cmp(b.as_str()));
            proptest::prop_assert_eq!(ka == kb, a == b);
        }

        /// And as `[u8]` for keys that are not UTF-8 (bytes 0x80..=0xff included).
        #[test]
        fn ord_key_orders_as_bytes(
            a in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..30),
            b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..30),
        ) {
            let (ka, kb) = (OrdKey::new(Arc::from(&a[..])), OrdKey::new(Arc::from(&b[..])));
            proptest::prop_assert_eq!(ka.cmp(&kb), a.cmp(&b));
            proptest::prop_assert_eq!(ka == kb, a == b);
        }

        /// The same for keys sharing a prefix about as long as the inline part, where the
        /// inline prefixes tie and lengths or whole keys decide.
        #[test]
        fn ord_key_orders_as_str_past_a_shared_prefix(
            common in "[a\\x00]{18,26}",
            x in "[a\\x00\\x01é]{0,8}",
            y in "[a\\x00\\x01é]{0,8}",
        ) {
            let (a, b) = (format!("{common}{x}"), format!("{common}{y}"));
            let (ka, kb) = (OrdKey::new(Arc::from(a.as_bytes())), OrdKey::new(Arc::from(b.as_bytes())));
            proptest::prop_assert_eq!(ka.cmp(&kb), a.as_str().cmp(b.as_str()));
            proptest::prop_assert_eq!(kb.cmp(&ka), b.as_str().cmp(a.as_str()));
        }
    }

    #[test]
    #[should_panic(expected = "records are applied in sequence")]
    fn out_of_order_record_is_a_bug() {
        let mut ks = Keyspace::new(0);
        ks.apply(&Record {
            seq: 2,
            ops: vec![set("a", "b", None)],
        });
    }
}
