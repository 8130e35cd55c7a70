//! Model-based property test of the queue: random enqueues (priorities, delays, owners,
//! dedup ids scoped per owner and queue), owner-filtered and plain listings,
//! claims, heartbeats, acks and nacks (retried or permanent) with live and stale tokens,
//! settle batches of them (a job named twice in one batch included), cancels, redrives,
//! purges, lease-expiry ticks, clock moves (forwards and back), clean reopens and power
//! loss of the ATLAS disk (`always`, so nothing acknowledged may be lost) run against the
//! store and against a plain model (a map of jobs; claim order found by sorting).
//!
//! The queue's id rng is a `StdRng` seeded by the case, so a failing case replays exactly.
//!
//! Checked after every step: each reply equals the model's (a dedup hit only within the
//! same owner and queue: two owners using one dedup id get two jobs); listings, by owner
//! or not, are the model's jobs in id order; the index invariants hold;
//! every job is in exactly the model's state with the model's attempts; claim order is
//! priority, then run-at, then id, and never returns a job before its run-at; tokens only
//! grow, so a stale token never changes anything; a DONE job is never claimed again;
//! attempts never exceed the maximum; a job is FAILED exactly when its last allowed
//! attempt failed or an attempt failed permanently; a settle batch answers each item as
//! its own call would, and refuses the second item naming a job. After every reopen the queue, rebuilt from ATLAS, equals the model.

use helios_atlas::storage::{CrashTear, MemStorage};
use helios_atlas::{Atlas, FsyncPolicy, Options};
use helios_core::{Clock, ManualClock};
use helios_queue::{
    Backoff, EnqueueRequest, JobId, JobState, Queue, QueueConfig, QueueError, Settle, Settled,
};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

const QUEUES: [&str; 2] = ["q1", "q2"];
const DEDUP: [&str; 3] = ["d1", "d2", "d3"];
const OWNERS: [Option<&str>; 3] = [None, Some("alice"), Some("bob")];
const STATES: [JobState; 5] = JobState::ALL;
const BACKOFF_MS: u64 = 50;
const DEDUP_WINDOW_MS: u64 = 1_000;

#[derive(Debug, Clone)]
enum Action {
    Enqueue {
        queue: usize,
        priority: i32,
        delay_ms: u64,
        attempts_max: u32,
        dedup: Option<usize>,
        owner: usize,
    },
    List {
        queue: usize,
        state: usize,
        owner: usize,
        limit: usize,
    },
    Claim {
        queue: usize,
        count: usize,
        lease_ms: u64,
    },
    Ack(usize, bool),
    Nack(usize, bool, Option<u64>, bool),
    Heartbeat(usize, bool, u64),
    Settle(Vec<Item>),
    Cancel(usize),
    Redrive(usize),
    Purge(u64),
    Tick,
    Advance(u64),
    Back(u64),
    Reopen,
    Crash,
}

/// One item of a settle batch: what (0 ack, 1 nack, 2 heartbeat), which job, a live or
/// stale token, a retry delay and whether the failure is permanent (nack), a lease
/// (heartbeat).
#[derive(Debug, Clone)]
struct Item {
    kind: u8,
    job: usize,
    stale: bool,
    delay: Option<u64>,
    permanent: bool,
    lease_ms: u64,
}

fn item() -> impl Strategy<Value = Item> {
    (
        0..3u8,
        any::<usize>(),
        any::<bool>(),
        prop::option::of(0..100u64),
        any::<bool>(),
        10..400u64,
    )
        .prop_map(|(kind, job, stale, delay, permanent, lease_ms)| Item {
            kind,
            job,
            stale,
            delay,
            permanent,
            lease_ms,
        })
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        6 => (0..2usize, -1..=1i32, prop_oneof![Just(0u64), 1..300u64], 1..4u32, prop::option::of(0..3usize), 0..3usize)
            .prop_map(|(queue, priority, delay_ms, attempts_max, dedup, owner)| Action::Enqueue { queue, priority, delay_ms, attempts_max, dedup, owner }),
        2 => (0..2usize, 0..5usize, 0..3usize, 1..4usize)
            .prop_map(|(queue, state, owner, limit)| Action::List { queue, state, owner, limit }),
        5 => (0..2usize, 1..4usize, 10..400u64).prop_map(|(queue, count, lease_ms)| Action::Claim { queue, count, lease_ms }),
        3 => (any::<usize>(), any::<bool>()).prop_map(|(i, s)| Action::Ack(i, s)),
        3 => (any::<usize>(), any::<bool>(), prop::option::of(0..100u64), prop::bool::weighted(0.2)).prop_map(|(i, s, d, p)| Action::Nack(i, s, d, p)),
        3 => prop::collection::vec(item(), 0..6).prop_map(Action::Settle),
        1 => (any::<usize>(), any::<bool>(), 10..400u64).prop_map(|(i, s, l)| Action::Heartbeat(i, s, l)),
        1 => any::<usize>().prop_map(Action::Cancel),
        1 => (0..2usize).prop_map(Action::Redrive),
        1 => (0..500u64).prop_map(Action::Purge),
        3 => Just(Action::Tick),
        4 => (1..300u64).prop_map(Action::Advance),
        1 => (1..100u64).prop_map(Action::Back),
        1 => Just(Action::Reopen),
        1 => Just(Action::Crash),
    ]
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct MJob {
    queue: usize,
    owner: usize,
    priority: i32,
    run_at: u64,
    state: JobState,
    attempts: u32,
    attempts_max: u32,
    token: Option<u64>,
    lease_until: u64,
    finished_at: Option<u64>,
    // Dead-lettered by a permanent failure (attempts may remain).
    permanent: bool,
}

struct Harness {
    disk: MemStorage,
    clock: Arc<ManualClock>,
    queue: Option<Queue>,
    jobs: BTreeMap<JobId, MJob>,
    // Every token ever issued, per job (the last one is current while leased).
    tokens: BTreeMap<JobId, Vec<u64>>,
    token_max: u64,
    // Purging the job with the highest token lets a reopened queue count from lower.
    purged_any: bool,
    // The highest job id ever issued.
    id_max: Option<JobId>,
    // (owner, queue, dedup id) -> (first job, window end).
    dedup: BTreeMap<(usize, usize, usize), (JobId, u64)>,
    // Every dedup record written (ATLAS keeps each until its TTL, even after a tick dropped
    // it from memory, so a reopen brings back the ones still live).
    dedup_written: BTreeMap<(usize, usize, usize), (JobId, u64)>,
    seed: u64,
}

fn config() -> QueueConfig {
    QueueConfig {
        depth_max: 1_000,
        attempts_max_default: 3,
        backoff_default: Backoff::Fixed {
            delay_ms: BACKOFF_MS,
        },
        dedup_window_ms: DEDUP_WINDOW_MS,
    }
}

fn open(disk: &MemStorage, clock: &Arc<ManualClock>, seed: u64) -> Queue {
    use rand::SeedableRng;
    let atlas = Atlas::open(
        PathBuf::from("/q"),
        Options {
            fsync: FsyncPolicy::Always,
            storage: Arc::new(disk.clone()),
            clock: clock.clone(),
            maintenance_interval_ms: None,
            auto_snapshot_aof_size: None,
            ..Options::default()
        },
    )
    .expect("open atlas");
    let rng = Box::new(rand::rngs::StdRng::seed_from_u64(seed));
    Queue::open_with(atlas, config(), clock.clone(), rng).expect("open queue")
}

impl Harness {
    fn q(&self) -> &Queue {
        self.queue.as_ref().expect("open")
    }

    fn now(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Picks a job that has been leased at least once, and a live or stale token for it.
    fn pick(&self, i: usize, stale: bool) -> Option<(JobId, u64)> {
        if self.tokens.is_empty() {
            return None;
        }
        let (id, toks) = self.tokens.iter().nth(i % self.tokens.len())?;
        let live = self.jobs[id].token;
        let token = if stale {
            // A token that is not the current lease: an old one, or one never issued.
            toks.iter()
                .copied()
                .find(|t| Some(*t) != live)
                .unwrap_or(self.token_max + 1000)
        } else {
            *toks.last()?
        };
        Some((*id, token))
    }

    fn fail(j: &mut MJob, now: u64, delay: Option<u64>, permanent: bool) {
        j.token = None;
        if permanent || j.attempts >= j.attempts_max {
            j.state = JobState::Failed;
            j.finished_at = Some(now);
            j.permanent = permanent;
        } else {
            j.state = JobState::Pending;
            j.run_at = now + delay.unwrap_or(BACKOFF_MS);
        }
    }

    fn check_lease_op<T: std::fmt::Debug>(
        &self,
        id: JobId,
        token: u64,
        r: &Result<T, QueueError>,
    ) -> bool {
        let j = &self.jobs[&id];
        let valid =
            j.state == JobState::InProgress && j.token == Some(token) && j.lease_until > self.now();
        if valid {
            assert!(r.is_ok(), "lease op on {id} with live token failed: {r:?}");
        } else {
            assert!(
                r.is_err(),
                "lease op on {id} with token {token} should fail: {j:?}"
            );
        }
        valid
    }

    fn step(&mut self, a: &Action) {
        let now = self.now();
        match a.clone() {
            Action::Enqueue {
                queue,
                priority,
                delay_ms,
                attempts_max,
                dedup,
                owner,
            } => {
                let mut req = EnqueueRequest::new(QUEUES[queue], serde_json::json!({"n": 1}));
                req.owner = OWNERS[owner].map(Into::into);
                req.priority = priority;
                req.delay_ms = Some(delay_ms);
                req.attempts_max = Some(attempts_max);
                req.dedup_id = dedup.map(|d| DEDUP[d].to_owned());
                let r = self.q().enqueue(req).expect("enqueue");
                let scope = dedup.map(|d| (owner, queue, d));
                match scope.and_then(|k| self.dedup.get(&k).copied()) {
                    Some((first, until)) if until > now => {
                        assert!(r.deduplicated);
                        assert_eq!(r.id, first);
                    }
                    _ => {
                        assert!(!r.deduplicated);
                        assert!(!self.jobs.contains_key(&r.id), "ids are unique");
                        // Strictly above every id ever issued: across purges, reopens,
                        // crashes and clock steps back.
                        if let Some(max) = self.id_max {
                            assert!(r.id > max, "ids grow");
                        }
                        self.id_max = Some(r.id);
                        self.jobs.insert(
                            r.id,
                            MJob {
                                queue,
                                owner,
                                priority,
                                run_at: now + delay_ms,
                                state: JobState::Pending,
                                attempts: 0,
                                attempts_max,
                                token: None,
                                lease_until: 0,
                                finished_at: None,
                                permanent: false,
                            },
                        );
                        if let Some(k) = scope {
                            self.dedup.insert(k, (r.id, now + DEDUP_WINDOW_MS));
                            self.dedup_written.insert(k, (r.id, now + DEDUP_WINDOW_MS));
                        }
                        let job = self.q().get(r.id).expect("enqueued");
                        assert_eq!(job.owner.as_deref(), OWNERS[owner], "owner recorded");
                    }
                }
            }
            Action::List {
                queue,
                state,
                owner,
                limit,
            } => {
                let state = STATES[state];
                let want: Vec<JobId> = self
                    .jobs
                    .iter()
                    .filter(|(_, j)| j.queue == queue && j.state == state)
                    .filter(|(_, j)| OWNERS[owner].is_none() || j.owner == owner)
                    .map(|(id, _)| *id)
                    .collect();
                // Page through with `limit`-sized pages; the pages add up to the model.
                let mut got = Vec::new();
                let mut cursor = None;
                loop {
                    let (page, next) = match OWNERS[owner] {
                        Some(o) => self.q().list_owned(QUEUES[queue], state, o, cursor, limit),
                        None => self.q().list(QUEUES[queue], state, cursor, limit),
                    }
                    .expect("list");
                    assert!(page.len() <= limit);
                    for j in &page {
                        assert_eq!(j.owner.as_deref().is_some(), self.jobs[&j.id].owner != 0);
                    }
                    got.extend(page.iter().map(|j| j.id));
                    match next {
                        Some(c) => cursor = Some(c),
                        None => break,
                    }
                }
                assert_eq!(got, want, "listing of {:?} by {:?}", state, OWNERS[owner]);
            }
            Action::Claim {
                queue,
                count,
                lease_ms,
            } => {
                let claims = self
                    .q()
                    .claim(QUEUES[queue], "w", count, lease_ms)
                    .expect("claim");
                let mut ready: Vec<(std::cmp::Reverse<i32>, u64, JobId)> = self
                    .jobs
                    .iter()
                    .filter(|(_, j)| {
                        j.queue == queue && j.state == JobState::Pending && j.run_at <= now
                    })
                    .map(|(id, j)| (std::cmp::Reverse(j.priority), j.run_at, *id))
                    .collect();
                ready.sort();
                let want: Vec<JobId> = ready.iter().take(count).map(|r| r.2).collect();
                let got: Vec<JobId> = claims.iter().map(|c| c.job.id).collect();
                assert_eq!(got, want, "claim order");
                for c in claims {
                    if let Some(prev) = self.tokens.get(&c.job.id).and_then(|t| t.last()) {
                        assert!(c.token > *prev, "a job's tokens only grow");
                    }
                    if !self.purged_any {
                        assert!(c.token > self.token_max, "tokens only grow");
                    }
                    self.token_max = self.token_max.max(c.token);
                    let j = self.jobs.get_mut(&c.job.id).expect("known job");
                    assert_ne!(j.state, JobState::Done, "a done job is never delivered");
                    j.state = JobState::InProgress;
                    j.attempts += 1;
                    j.token = Some(c.token);
                    j.lease_until = now + lease_ms;
                    self.tokens.entry(c.job.id).or_default().push(c.token);
                }
            }
            Action::Ack(i, stale) => {
                if let Some((id, token)) = self.pick(i, stale) {
                    let r = self.q().ack(id, token, Some(serde_json::json!("ok")));
                    if self.check_lease_op(id, token, &r) {
                        let j = self.jobs.get_mut(&id).expect("known");
                        j.state = JobState::Done;
                        j.token = None;
                        j.finished_at = Some(now);
                    }
                }
            }
            Action::Nack(i, stale, delay, permanent) => {
                if let Some((id, token)) = self.pick(i, stale) {
                    let r = self.q().nack(id, token, "boom", delay, permanent);
                    if self.check_lease_op(id, token, &r) {
                        let j = self.jobs.get_mut(&id).expect("known");
                        Self::fail(j, now, delay, permanent);
                        assert_eq!(r.expect("nack"), j.state);
                    }
                }
            }
            Action::Settle(items) => {
                let picked: Vec<(&Item, JobId, u64)> = items
                    .iter()
                    .filter_map(|it| self.pick(it.job, it.stale).map(|(id, t)| (it, id, t)))
                    .collect();
                let batch: Vec<Settle> = picked
                    .iter()
                    .map(|&(it, id, token)| match it.kind {
                        0 => Settle::Ack {
                            id,
                            token,
                            result: Some(serde_json::json!("ok")),
                        },
                        1 => Settle::Nack {
                            id,
                            token,
                            error: "boom".to_owned(),
                            retry_delay_ms: it.delay,
                            permanent: it.permanent,
                        },
                        _ => Settle::Heartbeat {
                            id,
                            token,
                            lease_ms: it.lease_ms,
                        },
                    })
                    .collect();
                let answers = self.q().settle(&batch).expect("settle");
                assert_eq!(answers.len(), batch.len(), "one answer per item");
                // Each item as its own call, against the state before the batch (items
                // never see each other: a job named twice is refused the second time).
                let mut seen = std::collections::BTreeSet::new();
                for (&(it, id, token), r) in picked.iter().zip(&answers) {
                    if !seen.insert(id) {
                        assert!(
                            matches!(r, Err(QueueError::Invalid { field: "items", .. })),
                            "second item for {id}: {r:?}"
                        );
                        continue;
                    }
                    if !self.check_lease_op(id, token, r) {
                        continue;
                    }
                    let j = self.jobs.get_mut(&id).expect("known");
                    match (it.kind, r) {
                        (0, Ok(Settled::Acked)) => {
                            j.state = JobState::Done;
                            j.token = None;
                            j.finished_at = Some(now);
                        }
                        (1, Ok(Settled::Nacked(st))) => {
                            Self::fail(j, now, it.delay, it.permanent);
                            assert_eq!(*st, j.state);
                        }
                        (
                            2,
                            Ok(Settled::Extended {
                                lease_expires_at_ms,
                            }),
                        ) => {
                            j.lease_until = now + it.lease_ms;
                            assert_eq!(*lease_expires_at_ms, j.lease_until);
                        }
                        other => panic!("item {it:?} answered {other:?}"),
                    }
                }
            }
            Action::Heartbeat(i, stale, lease_ms) => {
                if let Some((id, token)) = self.pick(i, stale) {
                    let r = self.q().heartbeat(id, token, lease_ms);
                    if self.check_lease_op(id, token, &r) {
                        self.jobs.get_mut(&id).expect("known").lease_until = now + lease_ms;
                    }
                }
            }
            Action::Cancel(i) => {
                if self.jobs.is_empty() {
                    return;
                }
                let id = *self
                    .jobs
                    .keys()
                    .nth(i % self.jobs.len())
                    .expect("non-empty");
                let r = self.q().cancel(id);
                let j = self.jobs.get_mut(&id).expect("known");
                if j.state == JobState::Pending {
                    r.expect("cancel pending");
                    j.state = JobState::Cancelled;
                    j.finished_at = Some(now);
                } else {
                    assert!(matches!(r, Err(QueueError::WrongState { .. })), "{r:?}");
                }
            }
            Action::Redrive(queue) => {
                let n = self.q().redrive(QUEUES[queue], None).expect("redrive");
                let mut m = 0;
                for j in self.jobs.values_mut() {
                    if j.queue == queue && j.state == JobState::Failed {
                        j.state = JobState::Pending;
                        j.attempts = 0;
                        j.run_at = now;
                        j.finished_at = None;
                        j.permanent = false;
                        m += 1;
                    }
                }
                assert_eq!(n, m);
            }
            Action::Purge(retention) => {
                let n = self.q().purge(retention, false).expect("purge");
                self.purged_any |= n > 0;
                let before = self.jobs.len();
                let newest = self.id_max;
                self.jobs.retain(|id, j| {
                    // The newest job is kept as the id high-water mark.
                    Some(*id) == newest
                        || !(matches!(j.state, JobState::Done | JobState::Cancelled)
                            && j.finished_at.is_some_and(|f| f + retention <= now))
                });
                assert_eq!(n as usize, before - self.jobs.len());
                let jobs = &self.jobs;
                self.tokens.retain(|id, _| jobs.contains_key(id));
            }
            Action::Tick => {
                let r = self.q().tick().expect("tick");
                // A tick ends the dedup windows that are over (for good, even if the clock
                // later steps back).
                self.dedup.retain(|_, (_, until)| *until > now);
                let (mut retried, mut dead) = (0, 0);
                for j in self.jobs.values_mut() {
                    if j.state == JobState::InProgress && j.lease_until <= now {
                        Self::fail(j, now, None, false);
                        match j.state {
                            JobState::Failed => dead += 1,
                            _ => retried += 1,
                        }
                    }
                }
                assert_eq!((r.retried_count, r.dead_lettered_count), (retried, dead));
            }
            Action::Advance(ms) => self.clock.advance_ms(ms),
            Action::Back(ms) => self.clock.set_ms(now.saturating_sub(ms)),
            Action::Reopen => {
                drop(self.queue.take());
                self.seed = self.seed.wrapping_add(1);
                self.queue = Some(open(&self.disk, &self.clock, self.seed));
                self.reload_dedup(now);
            }
            Action::Crash => {
                self.disk.crash(CrashTear::DropUnsynced);
                drop(self.queue.take());
                self.disk.restart();
                self.seed = self.seed.wrapping_add(1);
                self.queue = Some(open(&self.disk, &self.clock, self.seed));
                self.reload_dedup(now);
            }
        }
        self.compare();
    }

    fn reload_dedup(&mut self, now: u64) {
        self.dedup = self
            .dedup_written
            .iter()
            .filter(|(_, (_, until))| *until > now)
            .map(|(d, v)| (*d, *v))
            .collect();
    }

    fn compare(&self) {
        self.q().with_state(|st| {
            st.check_invariants();
            assert_eq!(
                st.job_count() as usize,
                self.jobs.len(),
                "no job lost or invented"
            );
            for (id, m) in &self.jobs {
                let j = st.job(*id).unwrap_or_else(|| panic!("job {id} lost"));
                assert_eq!(j.state, m.state, "job {id} state");
                assert_eq!(j.attempts, m.attempts, "job {id} attempts");
                assert!(j.attempts <= j.attempts_max);
                assert_eq!(j.lease.as_ref().map(|l| l.token), m.token, "job {id} lease");
                if m.state == JobState::Failed && !m.permanent {
                    assert_eq!(
                        j.attempts, j.attempts_max,
                        "failed only after the last attempt, or permanently"
                    );
                }
            }
        });
    }
}

fn run(seed: u64, actions: &[Action]) {
    let disk = MemStorage::new();
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let queue = open(&disk, &clock, seed);
    let mut h = Harness {
        disk,
        clock,
        queue: Some(queue),
        jobs: BTreeMap::new(),
        tokens: BTreeMap::new(),
        token_max: 0,
        purged_any: false,
        id_max: None,
        dedup: BTreeMap::new(),
        dedup_written: BTreeMap::new(),
        seed,
    };
    for a in actions {
        h.step(a);
    }
    h.step(&Action::Reopen);
}

proptest! {
    #[test]
    fn queue_matches_model(seed in any::<u64>(), actions in prop::collection::vec(action(), 1..120)) {
        run(seed, &actions);
    }
}

/// The scoped-dedup cases named in issue 17 as a fixed run: alice and bob use one dedup id
/// in one queue (two jobs), alice again (her first job), bob in the other queue (a third),
/// no owner (a fourth), then listings by owner, a reopen and a crash.
#[test]
fn two_owners_one_dedup_id() {
    let enqueue = |queue, owner| Action::Enqueue {
        queue,
        priority: 0,
        delay_ms: 0,
        attempts_max: 1,
        dedup: Some(0),
        owner,
    };
    let list = |owner| Action::List {
        queue: 0,
        state: 0,
        owner,
        limit: 1,
    };
    run(
        0,
        &[
            enqueue(0, 1),
            enqueue(0, 2),
            enqueue(0, 1),
            enqueue(1, 2),
            enqueue(0, 0),
            list(1),
            list(2),
            list(0),
            Action::Reopen,
            enqueue(0, 2),
            Action::Crash,
            enqueue(0, 1),
            list(1),
        ],
    );
}
