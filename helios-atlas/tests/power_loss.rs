//! Simulated power loss on the fault-injecting disk, the test that can tell the fsync
//! policies apart (a real `kill -9` cannot: the page cache survives it).
//!
//! - `snapshot_steps`: a power loss at every single storage operation of a snapshot (tmp
//!   created, written, fsynced, renamed, directory fsynced, old files removed) and of the
//!   segment rotation before it, with each tear mode. After each, the store opens, every
//!   snapshot on disk is whole (old or new, never partial), and the state equals the model
//!   exactly as of a recovered sequence number, which under `always` is the last
//!   acknowledged one. (A record replayed twice would trip `Keyspace::apply`'s sequence
//!   assertion; INCR is logged as its resulting SET, so values alone could not show it.)
//! - `random_points_*`: a seeded workload (the clock moves 10 ms per write, `tick` runs
//!   every 100 ms of simulated time, snapshots now and then) crashed at random storage
//!   operations, repeatedly. `always` loses no acknowledged write; `everysec` loses only
//!   writes acknowledged in the last 2 s before the crash; `no` keeps a prefix of the
//!   acknowledged history. Half the crashes hit an AOF that keeps padding after its
//!   records (as on the real file system). `HELIOS_SEED=<n>` replays a run.
//! - Open after a process crash (`kill -9`, the page cache kept) and then a power loss:
//!   what open replayed and served, and the segment it appends to, are durable before
//!   the first read or write (issue 18, point 1).

mod common;

use common::*;
use helios_atlas::aof;
use helios_atlas::storage::{CrashTear, MemStorage, Storage};
use helios_atlas::{Atlas, FileStatus, FsyncPolicy};
use helios_core::{Clock, ManualClock};
use std::collections::BTreeMap;
use std::sync::Arc;

type State = BTreeMap<String, Vec<u8>>;

fn contents(db: &Atlas) -> State {
    db.with_keyspace(|ks| {
        ks.check_invariants();
        ks.iter()
            .map(|(k, e)| (k.to_owned(), e.value.to_vec()))
            .collect()
    })
}

fn assert_files_whole(disk: &MemStorage) {
    let report = helios_atlas::check(disk, &dir()).expect("check");
    for s in &report.snapshots {
        assert_eq!(s.status, FileStatus::Ok, "snapshot {:?} is partial", s.path);
    }
}

/// A deterministic writer: each step sets a fresh key and increments a counter, and
/// records the acknowledged state by sequence number.
struct Workload {
    history: BTreeMap<u64, (u64, State)>, // seq -> (time acked, state)
    state: State,
    n: u64,
    // A write that failed under the crash: not acknowledged, yet its bytes may have reached
    // the disk (appended, then the fsync failed), so recovery may or may not hold it.
    in_flight: Option<(u64, State)>,
}

impl Workload {
    fn new() -> Self {
        let mut history = BTreeMap::new();
        history.insert(0, (0, State::new()));
        Self {
            history,
            state: State::new(),
            n: 0,
            in_flight: None,
        }
    }

    /// One write; `Err` if the disk went down under it (then nothing is acknowledged).
    fn write(&mut self, db: &Atlas, now: u64) -> Result<(), ()> {
        self.n += 1;
        let key = format!("k{:05}", self.n);
        let seq_next = db.last_seq() + 1;
        let mut candidate = self.state.clone();
        if self.n.is_multiple_of(2) {
            candidate.insert(key.clone(), self.n.to_string().into_bytes());
        } else {
            let next = self
                .state
                .get("counter")
                .and_then(|v| std::str::from_utf8(v).ok()?.parse::<i64>().ok())
                .unwrap_or(0)
                + 1;
            candidate.insert("counter".into(), next.to_string().into_bytes());
        }
        let r = if self.n.is_multiple_of(2) {
            db.set(&key, self.n.to_string()).map(|_| ())
        } else {
            db.incr_by("counter", 1).map(|_| ())
        };
        if r.is_err() {
            self.in_flight = Some((seq_next, candidate));
            return Err(());
        }
        self.state = candidate;
        self.history
            .insert(db.last_seq(), (now, self.state.clone()));
        Ok(())
    }

    /// Checks a reopened store against the history and resets to what it holds.
    fn recovered(&mut self, db: &Atlas, durable_seq: u64, policy: FsyncPolicy, label: &str) -> u64 {
        let s = db.last_seq();
        let last = *self.history.keys().last().expect("history starts at 0");
        if let Some((seq, state)) = self.in_flight.take()
            && seq == s
        {
            // The unacknowledged write made it to disk: allowed, and it must be whole.
            self.history.insert(seq, (u64::MAX, state));
        }
        let last_allowed = *self.history.keys().last().expect("history starts at 0");
        assert!(
            s >= durable_seq,
            "{label}: recovered seq {s} < durable {durable_seq}"
        );
        assert!(
            s <= last_allowed,
            "{label}: recovered seq {s} > last acknowledged {last} (+ one in flight)"
        );
        if policy == FsyncPolicy::Always {
            assert!(
                s >= last,
                "{label}: an acknowledged write was lost under always ({s} < {last})"
            );
        }
        let (_, want) = self.history.get(&s).unwrap_or_else(|| {
            panic!("{label}: recovered to seq {s}, which was never acknowledged")
        });
        assert_eq!(&contents(db), want, "{label}: state as of seq {s}");
        self.state = want.clone();
        self.history.retain(|&q, _| q <= s);
        s
    }
}

fn snapshot_steps(policy: FsyncPolicy, tear: CrashTear) {
    for k in 0.. {
        let disk = MemStorage::new();
        let clock = Arc::new(ManualClock::new(1_000_000));
        let db = open(&disk, &clock, policy);
        let mut w = Workload::new();
        for _ in 0..20 {
            w.write(&db, 0).expect("no fault yet");
        }
        db.snapshot().expect("first snapshot");
        for _ in 0..20 {
            w.write(&db, 0).expect("no fault yet");
        }
        let durable_seq = if policy == FsyncPolicy::Always {
            db.last_seq()
        } else {
            20
        };
        disk.arm_crash(k, tear);
        let r = db.snapshot();
        let crashed = disk.is_down();
        if !crashed {
            r.expect("snapshot without a fault");
            disk.crash(tear);
        }
        drop(db);
        disk.restart();
        assert_files_whole(&disk);
        let db = open(&disk, &clock, policy);
        let label = format!("{policy:?} {tear:?} crash at op {k} of the snapshot");
        let s = w.recovered(&db, durable_seq, policy, &label);
        // The store keeps working after recovery, and a second reopen agrees.
        w.write(&db, 0).expect("write after recovery");
        drop(db);
        let db = open(&disk, &clock, policy);
        assert!(db.last_seq() > s, "{label}");
        assert_eq!(contents(&db), w.state, "{label}: after a second reopen");
        if !crashed {
            assert!(k > 5, "the snapshot takes several storage operations");
            return;
        }
    }
}

const TEARS: [CrashTear; 3] = [
    CrashTear::DropUnsynced,
    CrashTear::BlockBoundary {
        block_size: 512,
        seed: 7,
    },
    CrashTear::BlockBoundary {
        block_size: 4096,
        seed: 11,
    },
];

#[test]
fn snapshot_steps_always() {
    for t in TEARS {
        snapshot_steps(FsyncPolicy::Always, t);
    }
}

#[test]
fn snapshot_steps_everysec() {
    for t in TEARS {
        snapshot_steps(FsyncPolicy::Everysec, t);
    }
}

#[test]
fn snapshot_steps_no() {
    for t in TEARS {
        snapshot_steps(FsyncPolicy::No, t);
    }
}

fn seed() -> u64 {
    match std::env::var("HELIOS_SEED") {
        Ok(s) => s.parse().expect("HELIOS_SEED is a u64"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*: small, seedable, good enough to pick crash points.
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `padded`: the AOF keeps padding after its records, as on the real file system, in
/// chunks small enough that crashes land before, in and after it.
fn random_points(policy: FsyncPolicy, padded: bool, crashes: u32) {
    let seed = seed();
    eprintln!("random_points {policy:?} padded {padded}: HELIOS_SEED={seed}");
    let mut rng = Rng(seed | 1);
    let disk = if padded {
        MemStorage::with_log_padding(512)
    } else {
        MemStorage::new()
    };
    let clock = Arc::new(ManualClock::new(1_000_000));
    let mut db = open(&disk, &clock, policy);
    let mut w = Workload::new();
    let mut durable_seq = 0;
    for crash in 0..crashes {
        let tear = match rng.below(5) {
            0 => CrashTear::DropUnsynced,
            1 => CrashTear::RandomPrefix { seed: rng.next() },
            2 => CrashTear::BlockBoundary {
                block_size: 512,
                seed: rng.next(),
            },
            3 => CrashTear::LostSectors { seed: rng.next() },
            _ => CrashTear::BlockBoundary {
                block_size: 4096,
                seed: rng.next(),
            },
        };
        disk.arm_crash(rng.below(400), tear);
        let mut steps = 0u64;
        while !disk.is_down() {
            steps += 1;
            clock.advance_ms(10);
            let now = clock.now_ms();
            if w.write(&db, now).is_err() {
                break;
            }
            if policy == FsyncPolicy::Always {
                durable_seq = db.last_seq();
            }
            if steps.is_multiple_of(10) {
                // What the maintenance thread does every 100 ms.
                let before = db.stats().fsync_count;
                if db.tick(now).is_err() {
                    break;
                }
                if db.stats().fsync_count > before {
                    durable_seq = db.last_seq();
                }
            }
            if rng.below(150) == 0 {
                if db.snapshot().is_err() {
                    break;
                }
                durable_seq = db.last_seq();
            }
        }
        let crash_at = clock.now_ms();
        // Everything acknowledged at least 2 s before the crash must survive `everysec`
        // (computed before recovery trims the history).
        let old_enough = w
            .history
            .iter()
            .filter(|(_, (t, _))| t.saturating_add(2_000) <= crash_at)
            .map(|(q, _)| *q)
            .max()
            .unwrap_or(0);
        drop(db);
        disk.restart();
        assert_files_whole(&disk);
        db = open(&disk, &clock, policy);
        let label = format!("seed {seed} crash {crash} {tear:?}");
        let s = w.recovered(&db, durable_seq, policy, &label);
        if policy == FsyncPolicy::Everysec {
            assert!(
                s >= old_enough,
                "{label}: lost writes older than 2 s (recovered {s}, needed {old_enough})"
            );
        }
        durable_seq = s;
    }
}

#[test]
fn random_points_always() {
    random_points(FsyncPolicy::Always, false, 20);
    random_points(FsyncPolicy::Always, true, 20);
}

#[test]
fn random_points_everysec() {
    random_points(FsyncPolicy::Everysec, false, 20);
    random_points(FsyncPolicy::Everysec, true, 20);
}

#[test]
fn random_points_no() {
    random_points(FsyncPolicy::No, false, 20);
    random_points(FsyncPolicy::No, true, 20);
}

fn disk(padded: bool) -> MemStorage {
    if padded {
        MemStorage::with_log_padding(512)
    } else {
        MemStorage::new()
    }
}

/// Issue 18.1 (a): a record written but never fsynced (its writer was killed before the
/// fsync: never acknowledged) is replayed by the next process, which had the page cache
/// and no power loss, and served to a reader. A power loss after that must not take back
/// the value the reader saw: open made it durable first.
#[test]
fn a_record_served_after_a_process_crash_survives_a_later_power_loss() {
    for padded in [false, true] {
        let disk = disk(padded);
        let clock = Arc::new(ManualClock::new(1_000_000));
        let db = open(&disk, &clock, FsyncPolicy::Always);
        db.set("a", "1").unwrap();
        drop(db);
        // Under `no` the record is appended and not fsynced: the same bytes as an `always`
        // writer killed between its append and its fsync.
        let db = open(&disk, &clock, FsyncPolicy::No);
        db.set("b", "2").unwrap();
        disk.kill_process();
        drop(db);

        let db = open(&disk, &clock, FsyncPolicy::Always);
        assert_eq!(
            db.get("b").unwrap(),
            "2",
            "padded {padded}: replayed and served"
        );
        disk.crash(CrashTear::DropUnsynced);
        drop(db);
        disk.restart();

        let db = open(&disk, &clock, FsyncPolicy::Always);
        assert_eq!(db.get("a").unwrap(), "1", "padded {padded}");
        assert_eq!(
            db.get("b").as_deref(),
            Some(&b"2"[..]),
            "padded {padded}: a reader saw b=2 before the power loss took it back"
        );
    }
}

/// Issue 18.1 (b): the previous process was killed during a rotation, after it created
/// the new segment (header appended and fsynced, R2) and before the directory fsync (R3),
/// so the segment's name is not durable. The next process appends an acknowledged
/// `always` write to that segment; a power loss must not take it back with the name.
#[test]
fn an_acknowledged_write_to_a_segment_left_by_a_killed_rotation_survives_power_loss() {
    for padded in [false, true] {
        let disk = disk(padded);
        let clock = Arc::new(ManualClock::new(1_000_000));
        let db = open(&disk, &clock, FsyncPolicy::Always);
        db.set("a", "1").unwrap();
        drop(db);
        let path = file(&aof::segment_name(2));
        let f = disk.create_log(&path).unwrap();
        f.append(&aof::header_line(2)).unwrap();
        f.sync().unwrap();
        disk.kill_process();
        drop(f);

        let db = open(&disk, &clock, FsyncPolicy::Always);
        db.set("b", "2").unwrap();
        disk.crash(CrashTear::DropUnsynced);
        drop(db);
        disk.restart();

        let db = open(&disk, &clock, FsyncPolicy::Always);
        assert_eq!(db.get("a").unwrap(), "1", "padded {padded}");
        assert_eq!(
            db.get("b").as_deref(),
            Some(&b"2"[..]),
            "padded {padded}: b=2 was acknowledged under always"
        );
    }
}
