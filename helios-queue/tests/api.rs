//! The queue's API, call by call, on the in-memory ATLAS disk with a manual clock: each
//! test states the contract it shows.

use helios_atlas::storage::MemStorage;
use helios_atlas::{Atlas, FsyncPolicy, Options};
use helios_core::{Clock, ManualClock};
use helios_queue::{Backoff, EnqueueRequest, JobState, Queue, QueueConfig, QueueError, limits};
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;

fn setup(config: QueueConfig) -> (Queue, Arc<ManualClock>, MemStorage) {
    let disk = MemStorage::new();
    let clock = Arc::new(ManualClock::new(1_000_000));
    (open(&disk, &clock, config), clock, disk)
}

fn open(disk: &MemStorage, clock: &Arc<ManualClock>, config: QueueConfig) -> Queue {
    let atlas = Atlas::open(
        PathBuf::from("/q"),
        Options {
            fsync: FsyncPolicy::Always,
            storage: Arc::new(disk.clone()),
            clock: clock.clone(),
            maintenance_interval_ms: None,
            ..Options::default()
        },
    )
    .unwrap();
    Queue::open_with_clock(atlas, config, clock.clone()).unwrap()
}

fn req(queue: &str, n: i64) -> EnqueueRequest {
    EnqueueRequest::new(queue, json!({ "n": n }))
}

#[test]
fn full_cycle_and_reopen() {
    let (q, clock, disk) = setup(QueueConfig::default());
    let a = q.enqueue(req("mail", 1)).unwrap();
    let claims = q.claim("mail", "w1", 10, 30_000).unwrap();
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0].job.id, a.id);
    assert_eq!(claims[0].job.attempts, 1);
    q.ack(a.id, claims[0].token, Some(json!({"sent": true})))
        .unwrap();
    let job = q.get(a.id).unwrap();
    assert_eq!(job.state, JobState::Done);
    assert_eq!(job.result, Some(json!({"sent": true})));
    assert!(
        q.claim("mail", "w1", 10, 30_000).unwrap().is_empty(),
        "done is never redelivered"
    );
    drop(q);
    let q = open(&disk, &clock, QueueConfig::default());
    assert_eq!(q.get(a.id).unwrap().state, JobState::Done);
}

#[test]
fn priority_then_fifo_and_delays() {
    let (q, clock, _) = setup(QueueConfig::default());
    let low = q.enqueue(req("q", 1)).unwrap().id;
    let mut r = req("q", 2);
    r.priority = 5;
    let high = q.enqueue(r).unwrap().id;
    let low2 = q.enqueue(req("q", 3)).unwrap().id;
    let mut r = req("q", 4);
    r.priority = 9;
    r.delay_ms = Some(1_000);
    let delayed = q.enqueue(r).unwrap().id;
    let got: Vec<_> = q
        .claim("q", "w", 10, 1_000)
        .unwrap()
        .into_iter()
        .map(|c| c.job.id)
        .collect();
    assert_eq!(
        got,
        vec![high, low, low2],
        "priority first, FIFO within, delayed held back"
    );
    assert_eq!(q.stats("q").delayed_count, 1);
    clock.advance_ms(1_000);
    let got = q.claim("q", "w", 10, 1_000).unwrap();
    assert_eq!(got[0].job.id, delayed, "due at its run-at");
}

#[test]
fn dedup_within_the_window_returns_the_first_job() {
    let (q, clock, disk) = setup(QueueConfig {
        dedup_window_ms: 10_000,
        ..QueueConfig::default()
    });
    let mut r = req("q", 1);
    r.dedup_id = Some("order-17".into());
    let first = q.enqueue(r.clone()).unwrap();
    assert!(!first.deduplicated);
    let second = q.enqueue(r.clone()).unwrap();
    assert!(second.deduplicated);
    assert_eq!(second.id, first.id);
    // Survives a restart (the dedup record is in ATLAS with a TTL).
    drop(q);
    let q = open(
        &disk,
        &clock,
        QueueConfig {
            dedup_window_ms: 10_000,
            ..QueueConfig::default()
        },
    );
    assert_eq!(q.enqueue(r.clone()).unwrap().id, first.id);
    clock.advance_ms(10_000);
    q.tick().unwrap();
    let third = q.enqueue(r).unwrap();
    assert!(!third.deduplicated, "after the window, a new job");
    assert_ne!(third.id, first.id);
}

#[test]
fn backpressure_and_limits_give_distinct_errors() {
    let (q, _, _) = setup(QueueConfig {
        depth_max: 2,
        ..QueueConfig::default()
    });
    q.enqueue(req("q", 1)).unwrap();
    q.enqueue(req("q", 2)).unwrap();
    match q.enqueue(req("q", 3)) {
        Err(QueueError::QueueFull {
            queue,
            depth,
            depth_max,
        }) => {
            assert_eq!((queue.as_str(), depth, depth_max), ("q", 2, 2));
        }
        other => panic!("{other:?}"),
    }
    q.enqueue(req("other", 1)).unwrap();
    let big = EnqueueRequest::new("other", json!("x".repeat(limits::PAYLOAD_SIZE_MAX)));
    assert!(matches!(
        q.enqueue(big),
        Err(QueueError::Invalid {
            field: "payload",
            ..
        })
    ));
    assert!(matches!(
        q.enqueue(req("bad name", 1)),
        Err(QueueError::Invalid { field: "queue", .. })
    ));
    let mut r = req("other", 1);
    r.dedup_id = Some("a:b".into());
    assert!(matches!(
        q.enqueue(r),
        Err(QueueError::Invalid {
            field: "dedup_id",
            ..
        })
    ));
    // A batch is all or nothing: one bad request, nothing enqueued.
    let before = q.stats("other").pending_count;
    assert!(
        q.enqueue_batch(&[req("other", 1), req("bad name", 2)])
            .is_err()
    );
    assert_eq!(q.stats("other").pending_count, before);
}

#[test]
fn stale_tokens_and_expired_leases_are_refused() {
    let (q, clock, _) = setup(QueueConfig {
        backoff_default: Backoff::Fixed { delay_ms: 0 },
        ..QueueConfig::default()
    });
    let id = q.enqueue(req("q", 1)).unwrap().id;
    let first = q.claim("q", "w1", 1, 100).unwrap().remove(0);
    // Heartbeat extends; a wrong token is refused and changes nothing.
    assert_eq!(
        q.heartbeat(id, first.token, 200).unwrap(),
        clock.now_ms() + 200
    );
    assert!(matches!(
        q.ack(id, first.token + 1, None),
        Err(QueueError::StaleToken { .. })
    ));
    clock.advance_ms(200);
    // The lease ran out: ack is refused even before tick runs.
    assert!(matches!(
        q.ack(id, first.token, None),
        Err(QueueError::LeaseExpired { .. })
    ));
    let report = q.tick().unwrap();
    assert_eq!(report.retried_count, 1);
    let second = q.claim("q", "w2", 1, 100).unwrap().remove(0);
    assert!(second.token > first.token);
    assert_eq!(second.job.attempts, 2);
    // The first worker's late ack can never complete the job a second time.
    assert!(matches!(
        q.ack(id, first.token, None),
        Err(QueueError::StaleToken { .. })
    ));
    q.ack(id, second.token, None).unwrap();
    assert!(matches!(
        q.ack(id, second.token, None),
        Err(QueueError::StaleToken { .. })
    ));
    assert!(matches!(
        q.nack(id, second.token, "late", None),
        Err(QueueError::StaleToken { .. })
    ));
}

#[test]
fn retries_with_backoff_then_dead_letter_then_redrive() {
    let (q, clock, _) = setup(QueueConfig::default());
    let mut r = req("q", 1);
    r.attempts_max = Some(2);
    r.backoff = Some(Backoff::Fixed { delay_ms: 500 });
    let id = q.enqueue(r).unwrap().id;
    let c = q.claim("q", "w", 1, 1_000).unwrap().remove(0);
    assert_eq!(
        q.nack(id, c.token, "boom", None).unwrap(),
        JobState::Pending
    );
    assert!(
        q.claim("q", "w", 1, 1_000).unwrap().is_empty(),
        "backoff holds it"
    );
    clock.advance_ms(500);
    let c = q.claim("q", "w", 1, 1_000).unwrap().remove(0);
    assert_eq!(
        q.nack(id, c.token, "boom again", None).unwrap(),
        JobState::Failed
    );
    let job = q.get(id).unwrap();
    assert_eq!(job.last_error.as_deref(), Some("boom again"));
    assert_eq!(q.stats("q").failed_count, 1);
    let (dlq, _) = q.list("q", JobState::Failed, None, 10).unwrap();
    assert_eq!(dlq.len(), 1);
    assert_eq!(q.redrive("q", Some(&[id])).unwrap(), 1);
    let c = q.claim("q", "w", 1, 1_000).unwrap().remove(0);
    assert_eq!(c.job.attempts, 1, "redrive gives fresh attempts");
}

#[test]
fn cancel_purge_list_and_stats() {
    let (q, clock, _) = setup(QueueConfig::default());
    let ids: Vec<_> = (0..5).map(|i| q.enqueue(req("q", i)).unwrap().id).collect();
    q.cancel(ids[0]).unwrap();
    assert!(matches!(
        q.cancel(ids[0]),
        Err(QueueError::WrongState { .. })
    ));
    let c = q.claim("q", "w", 1, 1_000).unwrap().remove(0);
    q.ack(c.job.id, c.token, None).unwrap();
    let s = q.stats("q");
    assert_eq!(
        (s.pending_count, s.done_count, s.cancelled_count),
        (3, 1, 1)
    );
    clock.advance_ms(250);
    assert_eq!(q.stats("q").oldest_ready_age_ms, Some(250));
    let (page, next) = q.list("q", JobState::Pending, None, 2).unwrap();
    assert_eq!(page.len(), 2);
    let (rest, end) = q.list("q", JobState::Pending, next, 2).unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(end, None);
    assert_eq!(q.purge(1_000, false).unwrap(), 0, "not old enough");
    clock.advance_ms(1_000);
    assert_eq!(q.purge(1_000, false).unwrap(), 2);
    assert!(q.get(ids[0]).is_none());
}

#[test]
fn ids_never_repeat_after_a_purge_and_a_restart_with_the_clock_set_back() {
    let (q, clock, disk) = setup(QueueConfig::default());
    let ids: Vec<_> = (0..3).map(|i| q.enqueue(req("q", i)).unwrap().id).collect();
    for _ in 0..3 {
        let c = q.claim("q", "w", 1, 1_000).unwrap().remove(0);
        q.ack(c.job.id, c.token, None).unwrap();
    }
    clock.advance_ms(10);
    assert_eq!(q.purge(0, false).unwrap(), 2, "all but the newest");
    assert_eq!(q.purge(0, false).unwrap(), 0);
    assert!(q.get(ids[2]).is_some(), "the newest job is kept");
    drop(q);
    // The wall clock is 15 minutes behind at the restart.
    clock.set_ms(clock.now_ms() - 900_000);
    let q = open(&disk, &clock, QueueConfig::default());
    let next = q.enqueue(req("q", 9)).unwrap().id;
    assert!(next > ids[2], "{next} must sort after {}", ids[2]);
}

#[test]
fn stored_records_are_json_under_the_schema_keys() {
    let disk = MemStorage::new();
    let clock = Arc::new(ManualClock::new(5));
    let atlas = Atlas::open(
        PathBuf::from("/q"),
        Options {
            storage: Arc::new(disk.clone()),
            clock: clock.clone(),
            maintenance_interval_ms: None,
            ..Options::default()
        },
    )
    .unwrap();
    let q = Queue::open_with_clock(atlas.clone(), QueueConfig::default(), clock).unwrap();
    let id = q.enqueue(req("q", 7)).unwrap().id;
    let raw = atlas.get(&format!("job:{id}")).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(v["state"], "PENDING");
    assert_eq!(v["payload"]["n"], 7);
    // A corrupt record is reported by key at open.
    atlas.set(&format!("job:{id}"), "{not json").unwrap();
    drop(q);
    match Queue::open_with_clock(atlas, QueueConfig::default(), Arc::new(ManualClock::new(5))) {
        Err(QueueError::CorruptRecord { key, .. }) => assert_eq!(key, format!("job:{id}")),
        other => panic!("{other:?}"),
    }
}
