//! Settling in batches (`Queue::settle`, `QueueState::plan_settle`) and permanent nacks, on
//! the in-memory ATLAS disk with a manual clock: a permanent nack dead-letters at once; a
//! job named twice in a batch is refused the second time; a batch gives the same answers
//! and the same end state as its items one call at a time (distinct ids; proptest), is one
//! ATLAS write, and survives a reopen.

use helios_atlas::storage::MemStorage;
use helios_atlas::{Atlas, FsyncPolicy, Options};
use helios_core::ManualClock;
use helios_queue::{
    Backoff, EnqueueRequest, Job, JobId, JobState, Queue, QueueConfig, QueueError, Settle, Settled,
};
use proptest::prelude::*;
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;

const T0: u64 = 1_700_000_000_000;

fn atlas(disk: &MemStorage, clock: &Arc<ManualClock>) -> Atlas {
    Atlas::open(
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
    .expect("open atlas")
}

fn config() -> QueueConfig {
    QueueConfig {
        backoff_default: Backoff::Fixed { delay_ms: 50 },
        ..QueueConfig::default()
    }
}

fn open(disk: &MemStorage, clock: &Arc<ManualClock>, seed: u64) -> Queue {
    use rand::SeedableRng;
    let rng = Box::new(rand::rngs::StdRng::seed_from_u64(seed));
    Queue::open_with(atlas(disk, clock), config(), clock.clone(), rng).expect("open queue")
}

fn setup() -> (Queue, Arc<ManualClock>, MemStorage) {
    let disk = MemStorage::new();
    let clock = Arc::new(ManualClock::new(T0));
    (open(&disk, &clock, 7), clock, disk)
}

fn enqueue(q: &Queue, attempts_max: u32) -> JobId {
    let mut r = EnqueueRequest::new("q", json!({"n": 1}));
    r.attempts_max = Some(attempts_max);
    q.enqueue(r).expect("enqueue").id
}

fn jobs(q: &Queue) -> Vec<Job> {
    q.with_state(|s| {
        let mut v: Vec<Job> = s.jobs().cloned().collect();
        v.sort_by_key(|j| j.id);
        v
    })
}

#[test]
fn a_permanent_nack_dead_letters_on_the_first_attempt() {
    let (q, _, _) = setup();
    let id = enqueue(&q, 5);
    let c = q.claim("q", "w", 1, 1_000).expect("claim").remove(0);
    let st = q
        .nack(id, c.token, "400 bad payload", Some(10), true)
        .expect("nack");
    assert_eq!(st, JobState::Failed);
    let job = q.get(id).expect("job");
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(job.attempts, 1, "attempts remained");
    assert_eq!(job.last_error.as_deref(), Some("400 bad payload"));
    assert_eq!(job.finished_at_ms, Some(T0));
    assert!(job.lease.is_none());
    let (dlq, _) = q.list("q", JobState::Failed, None, 10).expect("dlq");
    assert_eq!(dlq.len(), 1, "in the dead-letter list");
    q.with_state(|s| s.check_invariants());
    // The same through a batch; a redrive gives it its attempts back.
    assert_eq!(q.redrive("q", None).expect("redrive"), 1);
    let c = q.claim("q", "w", 1, 1_000).expect("claim").remove(0);
    let out = q
        .settle(&[Settle::Nack {
            id,
            token: c.token,
            error: "still bad".to_owned(),
            retry_delay_ms: None,
            permanent: true,
        }])
        .expect("settle");
    assert!(matches!(out[..], [Ok(Settled::Nacked(JobState::Failed))]));
    assert_eq!(q.get(id).expect("job").attempts, 1);
    // A plain nack with attempts left retries.
    let id2 = enqueue(&q, 5);
    let c = q.claim("q", "w", 1, 1_000).expect("claim").remove(0);
    assert_eq!(
        q.nack(id2, c.token, "503", None, false).expect("nack"),
        JobState::Pending
    );
}

#[test]
fn a_job_twice_in_one_batch_is_refused_the_second_time() {
    let (q, _, _) = setup();
    let id = enqueue(&q, 3);
    let c = q.claim("q", "w", 1, 1_000).expect("claim").remove(0);
    let out = q
        .settle(&[
            Settle::Heartbeat {
                id,
                token: c.token,
                lease_ms: 5_000,
            },
            Settle::Ack {
                id,
                token: c.token,
                result: None,
            },
        ])
        .expect("settle");
    assert_eq!(
        out[0].as_ref().expect("heartbeat"),
        &Settled::Extended {
            lease_expires_at_ms: T0 + 5_000
        }
    );
    match &out[1] {
        Err(e @ QueueError::Invalid { field: "items", .. }) => {
            assert_eq!(
                e.to_string(),
                format!("invalid items: job {id} appears twice")
            );
        }
        other => panic!("{other:?}"),
    }
    let job = q.get(id).expect("job");
    assert_eq!(job.state, JobState::InProgress, "the ack did not happen");
    assert_eq!(job.lease.expect("lease").expires_at_ms, T0 + 5_000);
}

#[test]
fn mixed_batch_answers_per_item_in_one_write() {
    let disk = MemStorage::new();
    let clock = Arc::new(ManualClock::new(T0));
    let store = atlas(&disk, &clock);
    let q = Queue::open_with_clock(store.clone(), config(), clock.clone()).expect("open");
    let ids: Vec<JobId> = (0..4).map(|_| enqueue(&q, 2)).collect();
    let cs = q.claim("q", "w", 4, 1_000).expect("claim");
    let missing = JobId::from_u128(1);
    let seq = store.last_seq();
    let items = vec![
        Settle::Ack {
            id: ids[0],
            token: cs[0].token,
            result: Some(json!({"ok": true})),
        },
        Settle::Nack {
            id: ids[1],
            token: cs[1].token,
            error: "later".to_owned(),
            retry_delay_ms: Some(100),
            permanent: false,
        },
        Settle::Heartbeat {
            id: ids[2],
            token: cs[2].token + 1,
            lease_ms: 1_000,
        },
        Settle::Ack {
            id: missing,
            token: 1,
            result: None,
        },
        Settle::Heartbeat {
            id: ids[3],
            token: cs[3].token,
            lease_ms: 0,
        },
    ];
    let out = q.settle(&items).expect("settle");
    assert!(matches!(out[0], Ok(Settled::Acked)));
    assert!(matches!(out[1], Ok(Settled::Nacked(JobState::Pending))));
    assert!(matches!(out[2], Err(QueueError::StaleToken { .. })));
    assert!(matches!(out[3], Err(QueueError::NotFound { .. })));
    assert!(matches!(
        out[4],
        Err(QueueError::Invalid {
            field: "lease_ms",
            ..
        })
    ));
    assert_eq!(store.last_seq(), seq + 1, "one ATLAS record for the batch");
    // An empty batch writes nothing and answers nothing.
    assert!(q.settle(&[]).expect("empty").is_empty());
    assert_eq!(store.last_seq(), seq + 1);
    let before = jobs(&q);
    drop(q);
    drop(store);
    let q = open(&disk, &clock, 8);
    assert_eq!(jobs(&q), before, "the batch is durable");
    assert_eq!(
        q.get(ids[0]).expect("job").result,
        Some(json!({"ok": true}))
    );
    q.with_state(|s| s.check_invariants());
}

#[test]
fn a_batch_over_the_limit_is_refused_item_by_item() {
    let (q, _, _) = setup();
    let items: Vec<Settle> = (0..=helios_queue::limits::BATCH_COUNT_MAX as u128)
        .map(|n| Settle::Ack {
            id: JobId::from_u128(n + 1),
            token: 1,
            result: None,
        })
        .collect();
    let out = q.settle(&items).expect("settle");
    assert_eq!(out.len(), items.len());
    assert!(
        out.iter()
            .all(|r| matches!(r, Err(QueueError::Invalid { field: "items", .. })))
    );
}

/// One item of a generated batch: the kind, which job (an index into the jobs, or past
/// them for a job that does not exist), which token (live, an older one, zero), and the
/// arguments.
#[derive(Debug, Clone)]
struct Gen {
    kind: u8,
    job: usize,
    token: u8,
    delay: Option<u64>,
    permanent: bool,
    lease_ms: u64,
}

fn gen_item() -> impl Strategy<Value = Gen> {
    (
        0..3u8,
        0..12usize,
        0..3u8,
        prop::option::of(0..200u64),
        any::<bool>(),
        0..500u64,
    )
        .prop_map(|(kind, job, token, delay, permanent, lease_ms)| Gen {
            kind,
            job,
            token,
            delay,
            permanent,
            lease_ms,
        })
}

/// Builds the same history on a queue: `n` jobs with 1..=3 attempts, claimed (some twice,
/// after a lease expiry, so older tokens exist), some leases expired at the end.
/// Returns each job's id and tokens.
fn history(q: &Queue, clock: &ManualClock, n: usize) -> Vec<(JobId, Vec<u64>)> {
    let mut out: Vec<(JobId, Vec<u64>)> = (0..n)
        .map(|i| (enqueue(q, 1 + (i % 3) as u32), Vec::new()))
        .collect();
    let mut record = |cs: Vec<helios_queue::Claim>| {
        for c in cs {
            if let Some(e) = out.iter_mut().find(|(id, _)| *id == c.job.id) {
                e.1.push(c.token);
            }
        }
    };
    record(q.claim("q", "w", n / 2 + 1, 100).expect("claim"));
    clock.advance_ms(150);
    q.tick().expect("tick");
    clock.advance_ms(100);
    record(q.claim("q", "w", n, 300).expect("claim"));
    clock.advance_ms(200);
    out
}

fn item_of(g: &Gen, jobs: &[(JobId, Vec<u64>)]) -> Settle {
    let (id, tokens) = match jobs.get(g.job) {
        Some((id, t)) => (*id, t.as_slice()),
        None => (JobId::from_u128(g.job as u128), &[][..]),
    };
    let token = match g.token {
        0 => tokens.last().copied().unwrap_or(1),
        1 => tokens.first().copied().unwrap_or(2),
        _ => 0,
    };
    match g.kind {
        0 => Settle::Ack {
            id,
            token,
            result: Some(json!({"by": g.job})),
        },
        1 => Settle::Nack {
            id,
            token,
            error: format!("e{}", g.job),
            retry_delay_ms: g.delay,
            permanent: g.permanent,
        },
        _ => Settle::Heartbeat {
            id,
            token,
            lease_ms: g.lease_ms,
        },
    }
}

fn one(q: &Queue, item: &Settle) -> Result<Settled, QueueError> {
    match item.clone() {
        Settle::Ack { id, token, result } => q.ack(id, token, result).map(|()| Settled::Acked),
        Settle::Nack {
            id,
            token,
            error,
            retry_delay_ms,
            permanent,
        } => q
            .nack(id, token, &error, retry_delay_ms, permanent)
            .map(Settled::Nacked),
        Settle::Heartbeat {
            id,
            token,
            lease_ms,
        } => q
            .heartbeat(id, token, lease_ms)
            .map(|at| Settled::Extended {
                lease_expires_at_ms: at,
            }),
    }
}

proptest! {
    /// A batch of items naming distinct jobs answers each as its own call does, and leaves
    /// the same jobs as the calls one at a time in order; reopened from ATLAS, the batch's
    /// queue is the same again.
    #[test]
    fn a_batch_equals_its_items_one_at_a_time(
        n in 1..10usize,
        seed in any::<u64>(),
        gens in prop::collection::vec(gen_item(), 0..12),
    ) {
        let (disk_a, disk_b) = (MemStorage::new(), MemStorage::new());
        let (clock_a, clock_b) = (Arc::new(ManualClock::new(T0)), Arc::new(ManualClock::new(T0)));
        let a = open(&disk_a, &clock_a, seed);
        let b = open(&disk_b, &clock_b, seed);
        let jobs_a = history(&a, &clock_a, n);
        let jobs_b = history(&b, &clock_b, n);
        prop_assert_eq!(&jobs_a, &jobs_b, "same seed, same history");
        prop_assert_eq!(jobs(&a), jobs(&b));
        // Distinct jobs only (the first item per job is kept).
        let mut seen = std::collections::BTreeSet::new();
        let items: Vec<Settle> = gens
            .iter()
            .filter(|g| seen.insert(g.job))
            .map(|g| item_of(g, &jobs_a))
            .collect();
        let batch = a.settle(&items).expect("settle");
        let calls: Vec<Result<Settled, QueueError>> = items.iter().map(|it| one(&b, it)).collect();
        prop_assert_eq!(format!("{batch:?}"), format!("{calls:?}"));
        prop_assert_eq!(jobs(&a), jobs(&b));
        a.with_state(|s| s.check_invariants());
        let before = jobs(&a);
        drop(a);
        let a = open(&disk_a, &clock_a, seed ^ 1);
        prop_assert_eq!(jobs(&a), before, "reopened from ATLAS");
        a.with_state(|s| s.check_invariants());
    }
}
