//! Model-based property test of cron schedules: random creates and deletes (by the owner
//! or a stranger), clock moves (small steps, big jumps forward, jumps back) each followed
//! by a tick, bare ticks, clean reopens and power loss of the ATLAS disk, on a
//! `ManualClock`, against a model that knows each expression's period.
//!
//! The model: each schedule keeps the highest time a tick (or its creation) saw, `hwm`.
//! A tick at `now > hwm` must enqueue exactly one job, for the latest fire time in
//! `(hwm, now]`, if there is one, and none otherwise; a tick at `now <= hwm` (the clock
//! went back) none. So, checked after every step against the jobs in the queue: each
//! schedule's enqueued fire times are strictly increasing, each a real fire time of its
//! expression, never more than one per tick, and (steps shorter than the period, a tick
//! after each) no fire time is missed; restarts change nothing of this.
//!
//! A second property runs with fsync `no` and crashes that keep a random prefix of the
//! unsynced bytes: whatever survives, a schedule and its jobs agree (every surviving job
//! of a schedule fired before its `next_run_ms`, its count is `runs_count`), so a fire
//! is never half-written, and later ticks never enqueue a fire time again.

use helios_atlas::storage::{CrashTear, MemStorage};
use helios_atlas::{Atlas, FsyncPolicy, Options};
use helios_core::{Clock, ManualClock};
use helios_queue::{Job, Queue, QueueConfig, QueueError, Schedule, ScheduleId, ScheduleRequest};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Expressions with a fixed period (fire times are the multiples of it, in ms since the
/// epoch): every 1, 2 and 15 seconds, every minute (6 and 5 fields), every hour.
const CRONS: [(&str, u64); 6] = [
    ("* * * * * *", 1_000),
    ("*/2 * * * * *", 2_000),
    ("*/15 * * * * *", 15_000),
    ("0 * * * * *", 60_000),
    ("* * * * *", 60_000),
    ("0 * * * *", 3_600_000),
];
const OWNERS: [&str; 2] = ["alice", "bob"];
/// 2023-11-14T22:13:20Z.
const START_MS: u64 = 1_700_000_000_000;

#[derive(Debug, Clone)]
enum Action {
    Create { cron: usize, owner: usize },
    Delete { which: usize, stranger: bool },
    Step(u64),
    Jump(u64),
    Back(u64),
    Tick,
    Reopen,
    Crash,
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        3 => (0..CRONS.len(), 0..OWNERS.len()).prop_map(|(cron, owner)| Action::Create { cron, owner }),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(which, stranger)| Action::Delete { which, stranger }),
        8 => (1u64..900).prop_map(Action::Step),
        2 => (1_000u64..10_000_000).prop_map(Action::Jump),
        2 => (1u64..5_000_000).prop_map(Action::Back),
        1 => Just(Action::Tick),
        1 => Just(Action::Reopen),
        1 => Just(Action::Crash),
    ]
}

fn open(disk: &MemStorage, clock: &Arc<ManualClock>, seed: u64, fsync: FsyncPolicy) -> Queue {
    use rand::SeedableRng;
    let atlas = Atlas::open(
        PathBuf::from("/q"),
        Options {
            fsync,
            storage: Arc::new(disk.clone()),
            clock: clock.clone(),
            maintenance_interval_ms: None,
            auto_snapshot_aof_size: None,
            ..Options::default()
        },
    )
    .expect("open atlas");
    let rng = Box::new(rand::rngs::StdRng::seed_from_u64(seed));
    Queue::open_with(atlas, QueueConfig::default(), clock.clone(), rng).expect("open queue")
}

/// The schedule and fire time a job was made for, from its dedup id.
fn origin(job: &Job) -> Option<(ScheduleId, u64)> {
    let rest = job.dedup_id.as_deref()?.strip_prefix("schedule-")?;
    let (id, at) = rest.split_once('-')?;
    Some((id.parse().ok()?, at.parse().ok()?))
}

/// Every schedule's jobs in the queue, as (job id order) fire times.
fn fired(q: &Queue) -> BTreeMap<ScheduleId, Vec<(u64, Job)>> {
    let mut out: BTreeMap<ScheduleId, Vec<(u64, Job)>> = BTreeMap::new();
    q.with_state(|st| {
        let mut jobs: Vec<&Job> = st.jobs().collect();
        jobs.sort_by_key(|j| j.id);
        for j in jobs {
            if let Some((s, at)) = origin(j) {
                out.entry(s).or_default().push((at, j.clone()));
            }
        }
    });
    out
}

struct MSchedule {
    period: u64,
    owner: usize,
    // The highest time a tick or the creation saw.
    hwm: u64,
    // The fire times enqueued, in order.
    runs: Vec<u64>,
    deleted: bool,
}

struct Harness {
    disk: MemStorage,
    clock: Arc<ManualClock>,
    queue: Option<Queue>,
    seed: u64,
    model: BTreeMap<ScheduleId, MSchedule>,
}

impl Harness {
    fn q(&self) -> &Queue {
        self.queue.as_ref().expect("open")
    }

    fn reopen(&mut self, crash: bool) {
        if crash {
            // `always`: nothing acknowledged may be lost.
            self.disk.crash(CrashTear::DropUnsynced);
        }
        drop(self.queue.take());
        if crash {
            self.disk.restart();
        }
        self.seed = self.seed.wrapping_add(1);
        self.queue = Some(open(
            &self.disk,
            &self.clock,
            self.seed,
            FsyncPolicy::Always,
        ));
    }

    fn tick(&mut self) {
        let now = self.clock.now_ms();
        let report = self.q().tick().expect("tick");
        let mut expected = 0;
        for s in self.model.values_mut().filter(|s| !s.deleted) {
            if now > s.hwm {
                let latest = now / s.period * s.period;
                if latest > s.hwm {
                    s.runs.push(latest);
                    expected += 1;
                }
                s.hwm = now;
            }
        }
        assert_eq!(
            report.scheduled_count, expected,
            "jobs enqueued by this tick"
        );
        assert_eq!(report.schedule_skipped_count, 0);
    }

    fn step(&mut self, a: &Action) {
        match *a {
            Action::Create { cron, owner } => {
                let mut req =
                    ScheduleRequest::new("cron", CRONS[cron].0, serde_json::json!({"c": cron}));
                req.owner = Some(Arc::from(OWNERS[owner]));
                let s = self.q().create_schedule(&req).expect("create");
                let now = self.clock.now_ms();
                assert_eq!(
                    s.next_run_ms,
                    Some(now / CRONS[cron].1 * CRONS[cron].1 + CRONS[cron].1)
                );
                self.model.insert(
                    s.id,
                    MSchedule {
                        period: CRONS[cron].1,
                        owner,
                        hwm: now,
                        runs: Vec::new(),
                        deleted: false,
                    },
                );
            }
            Action::Delete { which, stranger } => {
                let live: Vec<ScheduleId> = self
                    .model
                    .iter()
                    .filter(|(_, s)| !s.deleted)
                    .map(|(id, _)| *id)
                    .collect();
                if live.is_empty() {
                    return;
                }
                let id = live[which % live.len()];
                let owner = self.model[&id].owner;
                let caller = if stranger {
                    OWNERS[1 - owner]
                } else {
                    OWNERS[owner]
                };
                let r = self.q().delete_schedule(id, Some(caller));
                if stranger {
                    assert!(
                        matches!(r, Err(QueueError::ScheduleNotFound { id: e }) if e == id),
                        "{r:?}"
                    );
                } else {
                    r.expect("delete own");
                    if let Some(m) = self.model.get_mut(&id) {
                        m.deleted = true;
                    }
                }
            }
            Action::Step(ms) | Action::Jump(ms) => {
                self.clock.advance_ms(ms);
                self.tick();
            }
            Action::Back(ms) => {
                self.clock.set_ms(self.clock.now_ms().saturating_sub(ms));
                self.tick();
            }
            Action::Tick => self.tick(),
            Action::Reopen => self.reopen(false),
            Action::Crash => self.reopen(true),
        }
        self.compare();
    }

    fn compare(&self) {
        let q = self.q();
        q.with_state(|st| st.check_invariants());
        let fired = fired(q);
        for (id, m) in &self.model {
            let got: Vec<u64> = fired
                .get(id)
                .map_or(Vec::new(), |v| v.iter().map(|(at, _)| *at).collect());
            assert_eq!(got, m.runs, "schedule {id}: fire times enqueued");
            for w in got.windows(2) {
                assert!(w[0] < w[1], "fire times strictly increase");
            }
            for (at, job) in fired.get(id).into_iter().flatten() {
                assert_eq!(at % m.period, 0, "{at} is a fire time");
                assert_eq!(job.run_at_ms, *at);
                assert_eq!(
                    job.owner.as_deref(),
                    Some(OWNERS[m.owner]),
                    "the schedule's owner"
                );
                assert_eq!(job.queue, "cron");
            }
            match q.schedule(*id) {
                None => assert!(m.deleted, "schedule {id} lost"),
                Some(s) => {
                    assert!(!m.deleted, "schedule {id} deleted but back");
                    assert_eq!(s.runs_count, m.runs.len() as u64);
                    assert_eq!(s.last_run_ms, m.runs.last().copied());
                    assert_eq!(s.next_run_ms, Some(m.hwm / m.period * m.period + m.period));
                    let listed = q
                        .list_schedules(Some(OWNERS[m.owner]), None, 1000)
                        .expect("list")
                        .0;
                    assert!(listed.iter().any(|l| l.id == *id), "listed for its owner");
                    let other = q
                        .list_schedules(Some(OWNERS[1 - m.owner]), None, 1000)
                        .expect("list")
                        .0;
                    assert!(!other.iter().any(|l| l.id == *id), "hidden from a stranger");
                }
            }
        }
        assert!(
            fired.keys().all(|id| self.model.contains_key(id)),
            "no job from nowhere"
        );
    }
}

fn run(seed: u64, actions: &[Action]) {
    let disk = MemStorage::new();
    let clock = Arc::new(ManualClock::new(START_MS));
    let queue = Some(open(&disk, &clock, seed, FsyncPolicy::Always));
    let mut h = Harness {
        disk,
        clock,
        queue,
        seed,
        model: BTreeMap::new(),
    };
    for a in actions {
        h.step(a);
    }
    h.step(&Action::Reopen);
}

/// After whatever a crash kept: every schedule's surviving jobs fired before its next
/// run, as many as its `runs_count`, the last one its `last_run_ms`.
fn check_consistent(q: &Queue) -> BTreeMap<ScheduleId, Schedule> {
    q.with_state(|st| st.check_invariants());
    let fired = fired(q);
    let (all, _) = q.list_schedules(None, None, 1000).expect("list");
    let by_id: BTreeMap<ScheduleId, Schedule> = all.into_iter().map(|s| (s.id, s)).collect();
    for (id, s) in &by_id {
        let runs: Vec<u64> = fired
            .get(id)
            .map_or(Vec::new(), |v| v.iter().map(|(at, _)| *at).collect());
        assert_eq!(
            runs.len() as u64,
            s.runs_count,
            "schedule {id}: runs and jobs agree"
        );
        assert_eq!(runs.last().copied(), s.last_run_ms);
        for w in runs.windows(2) {
            assert!(w[0] < w[1], "fire times strictly increase");
        }
        if let (Some(last), Some(next)) = (runs.last(), s.next_run_ms) {
            assert!(*last < next, "a fire time enqueued is behind next_run_ms");
        }
    }
    by_id
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn schedules_match_model(seed in any::<u64>(), actions in prop::collection::vec(action(), 1..80)) {
        run(seed, &actions);
    }

    /// Power loss under fsync `no`, keeping a random prefix of the unsynced bytes (a torn
    /// batch included): a fire is all or nothing, and fire times never repeat.
    #[test]
    fn torn_crash_never_splits_a_fire(
        seed in any::<u64>(),
        creates in prop::collection::vec(0..CRONS.len(), 1..4),
        steps in prop::collection::vec((1u64..3_000, any::<bool>()), 1..40),
    ) {
        let disk = MemStorage::new();
        let clock = Arc::new(ManualClock::new(START_MS));
        let mut q = open(&disk, &clock, seed, FsyncPolicy::No);
        for c in &creates {
            q.create_schedule(&ScheduleRequest::new("cron", CRONS[*c].0, serde_json::json!(null))).expect("create");
        }
        for (i, (ms, crash)) in steps.iter().enumerate() {
            clock.advance_ms(*ms);
            q.tick().expect("tick");
            check_consistent(&q);
            if *crash {
                disk.crash(CrashTear::RandomPrefix { seed: seed ^ i as u64 });
                drop(q);
                disk.restart();
                q = open(&disk, &clock, seed.wrapping_add(i as u64 + 1), FsyncPolicy::No);
                check_consistent(&q);
            }
        }
        // A fire lost with its schedule's update may be enqueued again after the restart
        // (from the store's view it never happened); one that survived never is.
        for (id, jobs) in fired(&q) {
            let mut ats: Vec<u64> = jobs.iter().map(|(at, _)| *at).collect();
            ats.dedup();
            prop_assert_eq!(ats.len(), jobs.len(), "schedule {} fired a time twice", id);
        }
    }
}

/// A fixed run: every-second and hourly schedules, small steps, a jump of a day (one run
/// each, not a burst), a jump back (nothing), a crash and a reopen (nothing again).
#[test]
fn fixed_run_jumps_and_restarts() {
    let c = |cron, owner| Action::Create { cron, owner };
    run(
        7,
        &[
            c(0, 0),
            c(5, 1),
            Action::Step(600),
            Action::Step(600),
            Action::Step(600),
            Action::Jump(86_400_000),
            Action::Tick,
            Action::Back(3_600_000),
            Action::Crash,
            Action::Step(500),
            Action::Reopen,
            Action::Jump(3_600_000),
            Action::Delete {
                which: 0,
                stranger: true,
            },
            Action::Delete {
                which: 0,
                stranger: false,
            },
            Action::Step(800),
            Action::Step(800),
        ],
    );
}
