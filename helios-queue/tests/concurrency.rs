//! 8 threads claim from one queue of 10,000 jobs (leases long enough to hold throughout)
//! and ack what they get: every job is claimed exactly once and ends DONE.

use helios_atlas::{Atlas, FsyncPolicy, Options};
use helios_queue::{EnqueueRequest, JobState, Queue, QueueConfig};
use std::collections::HashSet;
use std::sync::Arc;

#[test]
fn eight_threads_claim_each_job_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let atlas = Atlas::open(
        tmp.path(),
        Options {
            fsync: FsyncPolicy::Everysec,
            ..Options::default()
        },
    )
    .unwrap();
    let q = Arc::new(Queue::open(atlas, QueueConfig::default()).unwrap());
    let reqs: Vec<_> = (0..10_000)
        .map(|i| EnqueueRequest::new("work", serde_json::json!(i)))
        .collect();
    for chunk in reqs.chunks(1_000) {
        q.enqueue_batch(chunk).unwrap();
    }
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let q = q.clone();
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                loop {
                    let claims = q.claim("work", &format!("w{t}"), 7, 600_000).unwrap();
                    if claims.is_empty() {
                        return mine;
                    }
                    for c in claims {
                        q.ack(c.job.id, c.token, None).unwrap();
                        mine.push(c.job.id);
                    }
                }
            })
        })
        .collect();
    let mut seen = HashSet::new();
    let mut total = 0;
    for t in threads {
        for id in t.join().unwrap() {
            total += 1;
            assert!(seen.insert(id), "job {id} claimed twice");
        }
    }
    assert_eq!(total, 10_000);
    let s = q.stats("work");
    assert_eq!(
        (s.done_count, s.pending_count, s.in_progress_count),
        (10_000, 0, 0)
    );
    q.with_state(|st| {
        st.check_invariants();
        assert!(
            st.jobs()
                .all(|j| j.state == JobState::Done && j.attempts == 1)
        );
    });
}
