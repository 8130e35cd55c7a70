//! Model-based property test of ATLAS against a `BTreeMap` reference model.
//!
//! Random sequences of every API call, clock moves, active-expiry ticks, snapshots, AOF
//! rewrites, close/reopen and simulated power loss (on the fault-injecting disk, with every
//! tear mode) run against the store and against a plain model of the documented semantics.
//! After every step the replies must agree and the store's raw contents (keys, values,
//! expiry times, expired-but-not-yet-deleted keys included) must equal the model's.
//!
//! After a power loss the store must equal the model as of some acknowledged record `s`:
//! under `always`, exactly the last acknowledged one; under `everysec` and `no`, any `s`
//! between the last point known durable (an fsync by `sync`, `tick`, a snapshot, a
//! rotation or close) and the last acknowledged write (a prefix of the acknowledged
//! history, never a mix). The model then continues from that state.
//!
//! Half the cases run on a disk whose AOF keeps padding after its records (as the real file
//! system storage does), so torn appends land in padding.
//!
//! `PROPTEST_CASES` raises the case count for longer runs.

mod common;

use bytes::Bytes;
use common::*;
use helios_atlas::storage::{CrashTear, MemStorage};
use helios_atlas::{
    Atlas, AtlasError, Expiry, FsyncPolicy, KeyTtl, Precondition, SetCondition, SetOptions,
    WriteBatch,
};
use helios_core::{Clock, ManualClock};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::sync::Arc;

// Two keys are not UTF-8 (one under the scanned prefix): keys are binary-safe.
const KEYS: [&[u8]; 8] = [
    b"a",
    b"b",
    b"user:1",
    b"user:2",
    b"user:10",
    b"n",
    b"user:\xff",
    b"\xff\x00",
];

#[derive(Debug, Clone)]
enum BOp {
    Set(usize, Vec<u8>, Exp),
    Delete(usize),
    Expire(usize, Exp),
}

#[derive(Debug, Clone, Copy)]
enum Exp {
    Never,
    Keep,
    InMs(u64),
    AtOffsetMs(i64),
}

#[derive(Debug, Clone)]
enum Action {
    Set(usize, Vec<u8>, u8, Exp),
    Delete(usize),
    DeleteMany(Vec<usize>),
    Expire(usize, Exp),
    Persist(usize),
    IncrBy(usize, i64),
    Cas(usize, Option<Vec<u8>>, Option<Vec<u8>>),
    Batch(Vec<(usize, u8)>, Vec<BOp>),
    Advance(u64),
    Tick,
    Sync,
    Snapshot,
    Rewrite,
    Reopen,
    Crash(u8, u64),
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..12),
        (0i64..100).prop_map(|n| n.to_string().into_bytes()),
        Just(b"x".to_vec()),
    ]
}

fn exp() -> impl Strategy<Value = Exp> {
    prop_oneof![
        3 => Just(Exp::Never),
        1 => Just(Exp::Keep),
        2 => (1u64..3000).prop_map(Exp::InMs),
        1 => (-500i64..3000).prop_map(Exp::AtOffsetMs),
    ]
}

fn key() -> impl Strategy<Value = usize> {
    0..KEYS.len()
}

fn bop() -> impl Strategy<Value = BOp> {
    prop_oneof![
        (key(), value(), exp()).prop_map(|(k, v, e)| BOp::Set(k, v, e)),
        key().prop_map(BOp::Delete),
        (key(), exp()).prop_map(|(k, e)| BOp::Expire(k, e)),
    ]
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        8 => (key(), value(), 0u8..3, exp()).prop_map(|(k, v, c, e)| Action::Set(k, v, c, e)),
        3 => key().prop_map(Action::Delete),
        1 => prop::collection::vec(key(), 0..4).prop_map(Action::DeleteMany),
        2 => (key(), exp()).prop_map(|(k, e)| Action::Expire(k, e)),
        1 => key().prop_map(Action::Persist),
        3 => (key(), -5i64..5).prop_map(|(k, d)| Action::IncrBy(k, d)),
        2 => (key(), prop::option::of(value()), prop::option::of(value()))
            .prop_map(|(k, a, b)| Action::Cas(k, a, b)),
        2 => (prop::collection::vec((key(), 0u8..3), 0..2), prop::collection::vec(bop(), 1..4))
            .prop_map(|(p, o)| Action::Batch(p, o)),
        3 => (1u64..1500).prop_map(Action::Advance),
        2 => Just(Action::Tick),
        1 => Just(Action::Sync),
        1 => Just(Action::Snapshot),
        1 => Just(Action::Rewrite),
        1 => Just(Action::Reopen),
        2 => (0u8..6, any::<u64>()).prop_map(|(t, s)| Action::Crash(t, s)),
    ]
}

type State = BTreeMap<Vec<u8>, (Vec<u8>, Option<u64>)>;

/// The reference model: raw entries (expired ones stay until a logged delete) and the
/// documented semantics of each call, written as plainly as possible.
#[derive(Debug, Clone, Default)]
struct Model {
    raw: State,
}

impl Model {
    fn live(&self, k: &[u8], now: u64) -> Option<(Vec<u8>, Option<u64>)> {
        self.raw
            .get(k)
            .filter(|(_, at)| at.is_none_or(|at| at > now))
            .cloned()
    }

    fn resolve(&self, k: &[u8], e: Exp, now: u64) -> Result<Option<u64>, ()> {
        Ok(match e {
            Exp::Never => None,
            Exp::Keep => self.live(k, now).and_then(|(_, at)| at),
            Exp::InMs(ms) => Some(now + ms),
            Exp::AtOffsetMs(off) => Some(now.saturating_add_signed(off)),
        })
    }

    fn put(&mut self, k: &[u8], v: Vec<u8>, at: Option<u64>, now: u64) {
        if at.is_some_and(|at| at <= now) {
            self.raw.remove(k);
        } else {
            self.raw.insert(k.to_vec(), (v, at));
        }
    }

    fn delete(&mut self, k: &[u8], now: u64) -> bool {
        let live = self.live(k, now).is_some();
        self.raw.remove(k);
        live
    }

    fn expire(&mut self, k: &[u8], e: Exp, now: u64) -> bool {
        let Some((v, cur)) = self.live(k, now) else {
            return false;
        };
        let at = self.resolve(k, e, now).unwrap_or(None);
        if at.is_some_and(|at| at <= now) {
            self.raw.remove(k);
            return true;
        }
        if cur == at {
            return at.is_some();
        }
        self.raw.insert(k.to_vec(), (v, at));
        true
    }

    fn check(&self, k: &[u8], c: u8, now: u64) -> bool {
        match c {
            0 => self.live(k, now).is_none(),
            1 => self.live(k, now).is_some(),
            _ => self.live(k, now).is_some_and(|(v, _)| v == b"x"),
        }
    }
}

fn to_expiry(e: Exp, now: u64) -> Expiry {
    match e {
        Exp::Never => Expiry::Never,
        Exp::Keep => Expiry::Keep,
        Exp::InMs(ms) => Expiry::InMs(ms),
        Exp::AtOffsetMs(off) => Expiry::AtMs(now.saturating_add_signed(off)),
    }
}

fn precondition(c: u8) -> Precondition {
    match c {
        0 => Precondition::Absent,
        1 => Precondition::Present,
        _ => Precondition::Equals(Bytes::from_static(b"x")),
    }
}

fn tear(t: u8, seed: u64) -> CrashTear {
    match t {
        0 => CrashTear::DropUnsynced,
        1 => CrashTear::KeepUnsynced,
        2 => CrashTear::RandomPrefix { seed },
        3 => CrashTear::BlockBoundary {
            block_size: 512,
            seed,
        },
        4 => CrashTear::BlockBoundary {
            block_size: 4096,
            seed,
        },
        _ => CrashTear::LostSectors { seed },
    }
}

fn contents(db: &Atlas) -> State {
    db.with_keyspace(|ks| {
        ks.check_invariants();
        ks.iter()
            .map(|(k, e)| (k.to_owned(), (e.value.to_vec(), e.expire_at_ms)))
            .collect()
    })
}

struct Harness {
    policy: FsyncPolicy,
    disk: MemStorage,
    clock: Arc<ManualClock>,
    db: Option<Atlas>,
    model: Model,
    // history[s] = the model after acknowledged record s (only seqs that were acked).
    history: BTreeMap<u64, State>,
    // The newest seq known to be on disk for sure.
    durable_seq: u64,
}

impl Harness {
    fn new(policy: FsyncPolicy, padded: bool) -> Self {
        // Padded: the AOF keeps padding after its records, as on the real file system, in
        // chunks small enough that crashes land before, in and after it.
        let disk = if padded {
            MemStorage::with_log_padding(256)
        } else {
            MemStorage::new()
        };
        let clock = Arc::new(ManualClock::new(1_700_000_000_000));
        let db = open(&disk, &clock, policy);
        let mut history = BTreeMap::new();
        history.insert(0, State::new());
        Self {
            policy,
            disk,
            clock,
            db: Some(db),
            model: Model::default(),
            history,
            durable_seq: 0,
        }
    }

    fn db(&self) -> &Atlas {
        self.db.as_ref().expect("store is open")
    }

    fn now(&self) -> u64 {
        self.clock.now_ms()
    }

    fn acked(&mut self) {
        let seq = self.db().last_seq();
        self.history.insert(seq, self.model.raw.clone());
        if self.policy == FsyncPolicy::Always {
            self.durable_seq = seq;
        }
    }

    fn step(&mut self, a: &Action) {
        let now = self.now();
        match a.clone() {
            Action::Set(k, v, c, e) => {
                let k = KEYS[k];
                let condition = [
                    SetCondition::Always,
                    SetCondition::IfAbsent,
                    SetCondition::IfPresent,
                ][c as usize];
                let opts = SetOptions {
                    condition,
                    expiry: to_expiry(e, now),
                };
                let r = self.db().set_with(k, v.clone(), opts);
                let live = self.model.live(k, now).is_some();
                let go = match condition {
                    SetCondition::Always => true,
                    SetCondition::IfAbsent => !live,
                    SetCondition::IfPresent => live,
                };
                if go {
                    let at = self.model.resolve(k, e, now).unwrap_or(None);
                    self.model.put(k, v, at, now);
                }
                assert_eq!(r.expect("set"), go, "set {k:?} reply");
            }
            Action::Delete(k) => {
                let r = self.db().delete(KEYS[k]).expect("delete");
                assert_eq!(r, self.model.delete(KEYS[k], now), "delete reply");
            }
            Action::DeleteMany(ks) => {
                let keys: Vec<&[u8]> = ks.iter().map(|&k| KEYS[k]).collect();
                let r = self.db().delete_many(&keys).expect("delete_many");
                let mut n = 0;
                for k in keys {
                    n += u64::from(self.model.delete(k, now));
                }
                assert_eq!(r, n, "delete_many reply");
            }
            Action::Expire(k, e) => {
                let k = KEYS[k];
                let r = match e {
                    Exp::Never | Exp::Keep => self.db().persist(k),
                    Exp::InMs(ms) => self.db().expire(k, ms),
                    Exp::AtOffsetMs(off) => self.db().expire_at(k, now.saturating_add_signed(off)),
                };
                let e = if matches!(e, Exp::Keep) {
                    Exp::Never
                } else {
                    e
                };
                assert_eq!(
                    r.expect("expire"),
                    self.model.expire(k, e, now),
                    "expire reply"
                );
            }
            Action::Persist(k) => {
                let r = self.db().persist(KEYS[k]).expect("persist");
                assert_eq!(
                    r,
                    self.model.expire(KEYS[k], Exp::Never, now),
                    "persist reply"
                );
            }
            Action::IncrBy(k, d) => {
                let k = KEYS[k];
                let r = self.db().incr_by(k, d);
                let live = self.model.live(k, now);
                let cur = match &live {
                    None => Some(0i64),
                    Some((v, _)) => std::str::from_utf8(v)
                        .ok()
                        .filter(|s| {
                            *s == s.trim()
                                && !s.starts_with('+')
                                && (s.len() == 1 || !s.trim_start_matches('-').starts_with('0'))
                                && *s != "-0"
                        })
                        .and_then(|s| s.parse::<i64>().ok()),
                };
                match cur {
                    Some(c) => {
                        let n = c + d;
                        assert_eq!(r.expect("incr"), n);
                        self.model
                            .put(k, n.to_string().into_bytes(), live.and_then(|l| l.1), now);
                    }
                    None => assert!(matches!(r, Err(AtlasError::NotAnInteger { .. })), "{r:?}"),
                }
            }
            Action::Cas(k, exp, new) => {
                let k = KEYS[k];
                let r = self
                    .db()
                    .compare_and_swap(k, exp.as_deref(), new.as_deref());
                let live = self.model.live(k, now);
                let ok = match (&live, &exp) {
                    (None, None) => true,
                    (Some((v, _)), Some(x)) => v == x,
                    _ => false,
                };
                if ok {
                    match new {
                        Some(v) => self.model.put(k, v, live.and_then(|l| l.1), now),
                        None => {
                            self.model.delete(k, now);
                        }
                    }
                }
                assert_eq!(r.expect("cas"), ok, "cas reply");
            }
            Action::Batch(pre, ops) => {
                let mut b = WriteBatch::new();
                for (k, c) in &pre {
                    b.require(KEYS[*k], precondition(*c));
                }
                for op in &ops {
                    match op {
                        BOp::Set(k, v, e) => {
                            b.set(KEYS[*k], v.clone(), to_expiry(*e, now));
                        }
                        BOp::Delete(k) => {
                            b.delete(KEYS[*k]);
                        }
                        BOp::Expire(k, e) => {
                            b.expire(KEYS[*k], to_expiry(*e, now));
                        }
                    }
                }
                let r = self.db().write_batch(b);
                let failed = pre
                    .iter()
                    .find(|(k, c)| !self.model.check(KEYS[*k], *c, now));
                match failed {
                    Some((k, _)) => match r {
                        Err(AtlasError::PreconditionFailed { key }) => assert_eq!(key, KEYS[*k]),
                        other => panic!("batch should fail on {:?}: {other:?}", KEYS[*k]),
                    },
                    None => {
                        r.expect("batch");
                        for op in ops {
                            match op {
                                BOp::Set(k, v, e) => {
                                    let at = self.model.resolve(KEYS[k], e, now).unwrap_or(None);
                                    self.model.put(KEYS[k], v, at, now);
                                }
                                BOp::Delete(k) => {
                                    self.model.delete(KEYS[k], now);
                                }
                                BOp::Expire(k, e) => {
                                    let e = if matches!(e, Exp::Keep) { Exp::Keep } else { e };
                                    if !matches!(e, Exp::Keep) {
                                        self.model.expire(KEYS[k], e, now);
                                    } else if let Some((v, at)) = self.model.live(KEYS[k], now) {
                                        // Expire with Keep: the key keeps its expiry.
                                        self.model.raw.insert(KEYS[k].to_owned(), (v, at));
                                    }
                                }
                            }
                        }
                    }
                }
            }
            Action::Advance(ms) => self.clock.advance_ms(ms),
            Action::Tick => {
                let n = self.db().tick(now).expect("tick");
                let before = self.model.raw.len();
                self.model
                    .raw
                    .retain(|_, (_, at)| at.is_none_or(|at| at > now));
                assert_eq!(n as usize, before - self.model.raw.len(), "tick count");
                if self.policy == FsyncPolicy::Everysec && n == 0 {
                    // Nothing to learn about durability: tick may or may not have synced.
                }
            }
            Action::Sync => {
                self.db().sync().expect("sync");
                self.durable_seq = self.db().last_seq();
            }
            Action::Snapshot => {
                self.db().snapshot().expect("snapshot");
                self.durable_seq = self.db().last_seq();
            }
            Action::Rewrite => {
                self.db().rewrite_aof().expect("rewrite");
                self.durable_seq = self.db().last_seq();
            }
            Action::Reopen => {
                let db = self.db.take().expect("open");
                db.close().expect("close");
                drop(db);
                self.durable_seq = self.history.keys().last().copied().unwrap_or(0);
                self.db = Some(open(&self.disk, &self.clock, self.policy));
                assert_eq!(self.db().last_seq(), self.durable_seq, "reopen keeps all");
            }
            Action::Crash(t, seed) => {
                let t = tear(t, seed);
                self.disk.crash(t);
                drop(self.db.take());
                self.disk.restart();
                let db = open(&self.disk, &self.clock, self.policy);
                let s = db.last_seq();
                let last_acked = self.history.keys().last().copied().unwrap_or(0);
                assert!(
                    s >= self.durable_seq && s <= last_acked,
                    "recovered seq {s} outside [{}, {last_acked}] after {t:?}",
                    self.durable_seq
                );
                if self.policy == FsyncPolicy::Always || t == CrashTear::KeepUnsynced {
                    assert_eq!(s, last_acked, "no acknowledged write lost ({t:?})");
                }
                let want = self
                    .history
                    .get(&s)
                    .unwrap_or_else(|| panic!("recovered to seq {s}, which was never acknowledged"))
                    .clone();
                assert_eq!(contents(&db), want, "store equals the model as of seq {s}");
                self.history.retain(|&q, _| q <= s);
                self.model.raw = want;
                self.durable_seq = s;
                self.db = Some(db);
            }
        }
        if !matches!(
            a,
            Action::Advance(_)
                | Action::Sync
                | Action::Snapshot
                | Action::Rewrite
                | Action::Reopen
                | Action::Crash(..)
        ) {
            self.acked();
        }
        assert_eq!(contents(self.db()), self.model.raw, "after {a:?}");
        self.check_reads(a);
    }

    /// The read calls agree with the model: get, get_many, exists, ttl, scan, key_count.
    fn check_reads(&self, a: &Action) {
        let db = self.db();
        let now = self.now();
        let values = db.get_many(&KEYS).expect("get_many");
        for (k, got) in KEYS.iter().zip(values) {
            let live = self.model.live(k, now);
            assert_eq!(
                db.get(k).map(|b| b.to_vec()),
                live.clone().map(|l| l.0),
                "get {k:?} after {a:?}"
            );
            assert_eq!(
                got.map(|b| b.to_vec()),
                live.clone().map(|l| l.0),
                "get_many {k:?}"
            );
            assert_eq!(db.exists(k), live.is_some(), "exists {k:?}");
            let want_ttl = match live {
                None => KeyTtl::Missing,
                Some((_, None)) => KeyTtl::Persistent,
                Some((_, Some(at))) => KeyTtl::Expires {
                    at_ms: at,
                    remaining_ms: at - now,
                },
            };
            assert_eq!(db.ttl(k), want_ttl, "ttl {k:?}");
        }
        let mut scanned = Vec::new();
        let mut cursor: Option<helios_atlas::Key> = None;
        loop {
            let page = db.scan("user:", cursor.as_deref(), 1).expect("scan");
            scanned.extend(
                page.entries
                    .into_iter()
                    .map(|(k, v)| (k.into_bytes(), v.to_vec())),
            );
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        let want: Vec<(Vec<u8>, Vec<u8>)> = self
            .model
            .raw
            .iter()
            .filter(|(k, (_, at))| k.starts_with(b"user:") && at.is_none_or(|at| at > now))
            .map(|(k, (v, _))| (k.clone(), v.clone()))
            .collect();
        assert_eq!(scanned, want, "scan user: after {a:?}");
        assert_eq!(db.key_count(), self.model.raw.len() as u64, "key_count");
    }
}

fn run(policy: FsyncPolicy, padded: bool, actions: &[Action]) {
    let mut h = Harness::new(policy, padded);
    for a in actions {
        h.step(a);
    }
    // Finally a clean close and reopen keeps everything.
    h.step(&Action::Reopen);
}

proptest! {
    // 256 cases per policy by default (PROPTEST_CASES overrides).

    #[test]
    fn model_always(actions in prop::collection::vec(action(), 1..80), padded in any::<bool>()) {
        run(FsyncPolicy::Always, padded, &actions);
    }

    #[test]
    fn model_everysec(actions in prop::collection::vec(action(), 1..80), padded in any::<bool>()) {
        run(FsyncPolicy::Everysec, padded, &actions);
    }

    #[test]
    fn model_no(actions in prop::collection::vec(action(), 1..80), padded in any::<bool>()) {
        run(FsyncPolicy::No, padded, &actions);
    }
}
