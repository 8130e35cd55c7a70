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
//!   the first read or write (issue 18, point 1); so is the data directory open creates.
//! - Zeros a power loss left after the records (padding never synced) are cut at open,
//!   so a later crash cannot leave zeros then landed data (issue 18, point 3).
//! - A failed fsync is final: nothing is acknowledged (nor backed up) after it though the
//!   next fsync would succeed, the way Linux drops the data of a failed writeback (issue 18,
//!   point 2).

mod common;

use common::*;
use helios_atlas::aof;
use helios_atlas::storage::{CrashTear, MemStorage, Storage};
use helios_atlas::{Atlas, AtlasError, FileStatus, FsyncPolicy, Options};
use helios_core::{Clock, ManualClock};
use std::collections::BTreeMap;
use std::sync::Arc;

type State = BTreeMap<String, Vec<u8>>;

fn contents(db: &Atlas) -> State {
    db.with_keyspace(|ks| {
        ks.check_invariants();
        ks.iter()
            .map(|(k, e)| {
                let k = String::from_utf8(k.to_vec()).expect("this test writes text keys");
                (k, e.value.to_vec())
            })
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
        // Padding a crash never let the disk sync may come back as zeros, too.
        let d = MemStorage::with_log_padding(512);
        d.set_zero_unsynced_padding(true);
        d
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

/// Power loss with `db` open, then `a=1` and `b=2` must both be there.
fn assert_a_and_b_survive_a_power_loss(
    disk: &MemStorage,
    clock: &Arc<ManualClock>,
    db: Atlas,
    label: &str,
) {
    disk.crash(CrashTear::DropUnsynced);
    drop(db);
    disk.restart();
    let db = open(disk, clock, FsyncPolicy::Always);
    assert_eq!(db.get("a").unwrap(), "1", "{label}");
    assert_eq!(db.get("b").as_deref(), Some(&b"2"[..]), "{label}");
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
        assert_a_and_b_survive_a_power_loss(
            &disk,
            &clock,
            db,
            &format!("padded {padded}: a reader saw b=2 before the power loss took it back"),
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
        assert_a_and_b_survive_a_power_loss(
            &disk,
            &clock,
            db,
            &format!("padded {padded}: b=2 was acknowledged under always"),
        );
    }
}

/// A store opened in a directory it creates (two levels deep) makes the new names durable
/// before it acknowledges anything: the model loses a directory whose parent was never
/// fsynced, and with it every file in it, fsynced or not.
#[test]
fn a_data_directory_created_by_open_survives_a_power_loss() {
    let disk = MemStorage::new();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let deep = std::path::Path::new("/srv/atlas/data");
    let opts = || options(&disk, &clock, FsyncPolicy::Always);
    let db = Atlas::open(deep, opts()).unwrap();
    db.set("a", "1").unwrap();
    disk.crash(CrashTear::DropUnsynced);
    drop(db);
    disk.restart();
    let db = Atlas::open(deep, opts()).unwrap();
    assert_eq!(
        db.get("a").as_deref(),
        Some(&b"1"[..]),
        "an acknowledged write"
    );
}

/// The AOF segments on `disk`, last one last.
fn last_segment(disk: &MemStorage) -> Vec<u8> {
    let last = names(disk, &dir())
        .into_iter()
        .filter(|n| n.starts_with("aof-"))
        .max()
        .expect("a segment");
    disk.read(&file(&last)).expect("read")
}

/// Issue 18.3: a power loss between a padding chunk's write and its fsync leaves zeros
/// after the records. Open must not append over them: an append torn by the next crash
/// (a sector that did not land, still zeros, before one that did) would read as damage,
/// and the store would refuse to open although every acknowledged write is there.
#[test]
fn zeros_after_the_records_are_cut_before_appends_go_on() {
    let mut zero_tails = 0;
    for crash_op in 0..240 {
        for seed in 0..6u64 {
            let disk = MemStorage::with_log_padding(2048);
            disk.set_zero_unsynced_padding(true);
            let clock = Arc::new(ManualClock::new(1_000_000));
            let db = open(&disk, &clock, FsyncPolicy::Always);
            let mut acked = Vec::new();
            disk.arm_crash(crash_op, CrashTear::RandomPrefix { seed });
            for i in 0..120 {
                let k = format!("key{i:03}");
                if db.set(&k, "v").is_err() {
                    break;
                }
                acked.push(k);
            }
            drop(db);
            disk.restart();
            zero_tails += usize::from(last_segment(&disk).ends_with(&[0]));
            let label = format!("crash_op {crash_op} seed {seed}");
            // Appended over what follows the records, never synced: the second crash
            // lands some of its sectors and not others.
            let db = Atlas::open(dir(), options(&disk, &clock, FsyncPolicy::No))
                .unwrap_or_else(|e| panic!("{label}: first reopen: {e}"));
            for i in 0..24 {
                db.set(format!("late{i:03}"), "v").unwrap();
            }
            disk.crash(CrashTear::LostSectors {
                seed: seed ^ (crash_op << 8),
            });
            drop(db);
            disk.restart();
            let db = Atlas::open(dir(), options(&disk, &clock, FsyncPolicy::Always))
                .unwrap_or_else(|e| panic!("{label}: reopen after the second crash: {e}"));
            for k in &acked {
                assert!(db.exists(k), "{label}: {k} was acknowledged");
            }
        }
    }
    assert!(
        zero_tails > 10,
        "the crash left zeros after the records {zero_tails} times"
    );
}

/// Issue 18.2: one fsync fails the way Linux fails it (the unsynced bytes are dropped,
/// the next fsync succeeds). The write whose fsync failed is not acknowledged, nor is any
/// later one, and syncs, snapshots, rotations and backups refuse too; after a power loss every
/// acknowledged write is there. A store that retried the fsync and acknowledged would
/// lose the write the power loss takes back.
#[test]
fn a_failed_fsync_is_final_for_writes_syncs_and_snapshots() {
    for (padded, rotated) in [(false, false), (true, false), (true, true)] {
        for policy in [FsyncPolicy::Always, FsyncPolicy::Everysec] {
            let label = format!("padded {padded} rotated {rotated} {policy:?}");
            let disk = disk(padded);
            let clock = Arc::new(ManualClock::new(1_000_000));
            let db = open(&disk, &clock, policy);
            db.set("ok", "1").unwrap();
            db.sync().unwrap();
            if rotated {
                // The current segment then holds no acknowledged record: a backup would
                // not rotate, and must refuse by itself.
                db.snapshot().unwrap();
            }
            disk.fail_one_sync_after(0);
            match policy {
                FsyncPolicy::Always => {
                    assert!(db.set("bad", "1").is_err(), "{label}");
                    assert!(!db.exists("bad"), "{label}: never visible");
                }
                _ => {
                    // Acknowledged before its fsync (the everysec promise): the tick's
                    // fsync fails.
                    db.set("bad", "1").unwrap();
                    clock.advance_ms(1_500);
                    assert!(db.tick(clock.now_ms()).is_err(), "{label}");
                }
            }
            // The disk would sync again now; the store does not try.
            let syncs = disk.sync_count();
            assert!(
                matches!(db.set("later", "1"), Err(AtlasError::PreviousIo { .. })),
                "{label}"
            );
            assert!(db.sync().is_err(), "{label}");
            assert!(db.snapshot().is_err(), "{label}");
            assert!(db.rewrite_aof().is_err(), "{label}");
            // A backup would copy (and so vouch for) records whose fsync failed.
            let out = std::path::Path::new("/backup");
            assert!(
                matches!(db.backup(out), Err(AtlasError::PreviousIo { .. })),
                "{label}: backup"
            );
            assert!(disk.list(out).is_err(), "{label}: no backup directory");
            assert_eq!(
                disk.sync_count(),
                syncs,
                "{label}: no fsync after the failure"
            );
            assert_eq!(db.get("ok").unwrap(), "1", "{label}: reads go on");
            disk.crash(CrashTear::KeepUnsynced);
            drop(db);
            disk.restart();
            let db = open(&disk, &clock, policy);
            assert_eq!(db.get("ok").unwrap(), "1", "{label}");
            assert!(!db.exists("later"), "{label}");
        }
    }
}

fn everysec_options(disk: &MemStorage, clock: &Arc<ManualClock>, lag_max_ms: u64) -> Options {
    Options {
        everysec_lag_max_ms: lag_max_ms,
        ..options(disk, clock, FsyncPolicy::Everysec)
    }
}

/// Issue 18.5: with no everysec fsync for longer than the bound (the maintenance thread
/// stalled, say), the next writer fsyncs before it is acknowledged; a power loss then
/// keeps every write acknowledged more than the bound before it. Without the bound (the
/// old behaviour, `u64::MAX`) the same power loss takes them all.
#[test]
fn everysec_writers_fsync_once_the_last_fsync_is_older_than_the_bound() {
    for (lag_max_ms, bounded) in [(2_000, true), (u64::MAX, false)] {
        let disk = MemStorage::new();
        let clock = Arc::new(ManualClock::new(1_000_000));
        let db = Atlas::open(dir(), everysec_options(&disk, &clock, lag_max_ms)).unwrap();
        db.set("a", "1").unwrap();
        clock.advance_ms(1_500);
        db.set("b", "2").unwrap();
        let fsyncs = db.stats().fsync_count;
        assert_eq!(db.stats().fsync_lag_stall_count, 0, "within the bound");
        clock.advance_ms(1_000);
        db.set("c", "3").unwrap();
        let s = db.stats();
        if bounded {
            assert_eq!((s.fsync_count, s.fsync_lag_stall_count), (fsyncs + 1, 1));
            assert_eq!(s.fsync_last_ok_age_ms, 0);
        } else {
            assert_eq!((s.fsync_count, s.fsync_lag_stall_count), (fsyncs, 0));
            assert_eq!(s.fsync_last_ok_age_ms, 2_500);
        }
        disk.crash(CrashTear::DropUnsynced);
        drop(db);
        disk.restart();
        let db = open(&disk, &clock, FsyncPolicy::Everysec);
        let kept: Vec<bool> = ["a", "b", "c"].iter().map(|k| db.exists(k)).collect();
        assert_eq!(kept, vec![bounded; 3], "lag_max_ms {lag_max_ms}");
    }
}

/// Issue 18.5 on a slow disk: the everysec fsync hangs; once it is older than the bound, a
/// writer waits for it (and its own fsync) before it is acknowledged.
#[test]
fn everysec_writers_wait_behind_a_slow_fsync_past_the_bound() {
    let disk = MemStorage::new();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let db = Atlas::open(dir(), everysec_options(&disk, &clock, 2_000)).unwrap();
    db.set("a", "1").unwrap();
    clock.advance_ms(1_100);
    disk.hold_syncs();
    let ticker = {
        let (db, now) = (db.clone(), clock.now_ms());
        std::thread::spawn(move || db.tick(now))
    };
    while disk.held_sync_count() == 0 {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    // Nothing is dirty and the fsync in flight is 1.1 s behind: about the tick's cadence.
    assert!(!db.writes_may_wait());
    // Within the bound, writes go on while the fsync hangs.
    db.set("b", "2").unwrap();
    clock.advance_ms(1_000);
    // 2.1 s: late (past midway to the bound), and past the bound itself.
    assert!(db.writes_may_wait());
    let writer = {
        let db = db.clone();
        std::thread::spawn(move || db.set("c", "3"))
    };
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(!writer.is_finished(), "past the bound, the writer waits");
    disk.release_syncs();
    ticker.join().unwrap().unwrap();
    writer.join().unwrap().unwrap();
    assert_eq!(db.stats().fsync_lag_stall_count, 1);
    disk.crash(CrashTear::DropUnsynced);
    drop(db);
    disk.restart();
    let db = open(&disk, &clock, FsyncPolicy::Everysec);
    assert!(db.exists("c"), "acknowledged after its fsync");
}

/// The bound counts from the oldest write not yet fsynced, not from the last fsync: a
/// store idle (everything synced) for longer than the bound takes its next write without
/// an fsync on the writer's path.
#[test]
fn everysec_first_write_after_an_idle_spell_does_not_stall() {
    let disk = MemStorage::new();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let db = Atlas::open(dir(), everysec_options(&disk, &clock, 2_000)).unwrap();
    db.set("a", "1").unwrap();
    clock.advance_ms(1_000);
    db.tick(clock.now_ms()).unwrap();
    let fsyncs = db.stats().fsync_count;
    clock.advance_ms(10_000);
    assert!(!db.writes_may_wait(), "nothing unsynced");
    db.set("b", "2").unwrap();
    let s = db.stats();
    assert_eq!((s.fsync_count, s.fsync_lag_stall_count), (fsyncs, 0));
    assert!(!db.writes_may_wait(), "b was written just now");
    clock.advance_ms(1_000);
    assert!(!db.writes_may_wait(), "1 s: the fsync's cadence");
    clock.advance_ms(501);
    assert!(db.writes_may_wait(), "b unsynced for 1.5 s: late");
    clock.advance_ms(500);
    db.set("c", "3").unwrap();
    let s = db.stats();
    assert_eq!(
        (s.fsync_count, s.fsync_lag_stall_count),
        (fsyncs + 1, 1),
        "b past the bound"
    );
}

/// A rotation fsyncs under the writer lock: while one runs (here a snapshot's, its fsync
/// held by the disk), `writes_may_wait` says so, whatever the policy, so an async caller
/// hands its commit to a pool instead of blocking its own thread behind the disk.
#[test]
fn writes_may_wait_while_the_aof_rotates() {
    for policy in [FsyncPolicy::Everysec, FsyncPolicy::No] {
        let disk = MemStorage::new();
        let clock = Arc::new(ManualClock::new(1_000_000));
        let db = open(&disk, &clock, policy);
        db.set("a", "1").unwrap();
        assert!(!db.writes_may_wait(), "{policy:?}: an append only");
        disk.hold_syncs();
        let snapshot = {
            let db = db.clone();
            std::thread::spawn(move || db.snapshot())
        };
        while disk.held_sync_count() == 0 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let during = db.writes_may_wait();
        disk.release_syncs();
        snapshot.join().unwrap().unwrap();
        assert!(during, "{policy:?}: the rotation's fsync is held");
        assert!(!db.writes_may_wait(), "{policy:?}: rotated");
    }
}
