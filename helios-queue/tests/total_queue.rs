//! A Jepsen-style total-queue check over a long randomized run with power failures.
//!
//! Producers enqueue; three workers claim, ack, nack, or silently drop what they hold (so
//! leases expire); the clock moves; `tick` runs; and now and then the ATLAS disk loses
//! power (a random tear mode; `always`, so every acknowledged call is durable) and the
//! queue is reopened from what survived. Workers keep what they held across a crash and
//! may ack it later, as a real worker would. At the end everything is drained.
//!
//! Checked: lost = 0 (every acknowledged enqueue ends DONE or FAILED); unexpected = 0
//! (nothing is delivered that was not enqueued); a job is delivered again only after its
//! previous lease expired or was nacked (duplicates are counted and printed); an ack with
//! a token other than the job's current live lease never succeeds; the indexes hold after
//! every step. `HELIOS_SEED=<n>` replays a run.

use helios_atlas::storage::{CrashTear, MemStorage};
use helios_atlas::{Atlas, FsyncPolicy, Options};
use helios_core::{Clock, ManualClock};
use helios_queue::{Backoff, EnqueueRequest, JobId, JobState, Queue, QueueConfig};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn open(disk: &MemStorage, clock: &Arc<ManualClock>) -> (Queue, Atlas) {
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
    .expect("atlas");
    let q = Queue::open_with_clock(
        atlas.clone(),
        QueueConfig {
            attempts_max_default: 4,
            backoff_default: Backoff::Fixed { delay_ms: 30 },
            ..QueueConfig::default()
        },
        clock.clone(),
    )
    .expect("queue");
    (q, atlas)
}

#[derive(Debug, Clone, Copy)]
struct Delivery {
    lease_until: u64,
    // The lease ended by a nack (so a redelivery is expected).
    nacked: bool,
}

fn run(seed: u64, steps: u32) {
    eprintln!("total_queue: HELIOS_SEED={seed}");
    let mut rng = Rng(seed | 1);
    let disk = MemStorage::new();
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let (mut q, mut atlas) = open(&disk, &clock);
    let mut enqueued: BTreeSet<JobId> = BTreeSet::new();
    let mut deliveries: BTreeMap<JobId, Vec<Delivery>> = BTreeMap::new();
    let mut held: Vec<Vec<(JobId, u64)>> = vec![Vec::new(); 3];
    let (mut duplicates, mut unexpected, mut crashes) = (0u64, 0u64, 0u64);
    for step in 0..steps {
        let now = clock.now_ms();
        match rng.below(100) {
            0..=24 => {
                let n = 1 + rng.below(3) as usize;
                let reqs: Vec<_> = (0..n)
                    .map(|_| EnqueueRequest::new("t", serde_json::json!(step)))
                    .collect();
                for e in q.enqueue_batch(&reqs).expect("enqueue") {
                    enqueued.insert(e.id);
                }
            }
            25..=49 => {
                let w = rng.below(3) as usize;
                let lease = 50 + rng.below(300);
                for c in q
                    .claim("t", &format!("w{w}"), 1 + rng.below(3) as usize, lease)
                    .expect("claim")
                {
                    if !enqueued.contains(&c.job.id) {
                        unexpected += 1;
                    }
                    let d = deliveries.entry(c.job.id).or_default();
                    if let Some(prev) = d.last() {
                        duplicates += 1;
                        assert!(
                            prev.nacked || now >= prev.lease_until,
                            "seed {seed}: job {} redelivered at {now} while its lease ran to {}",
                            c.job.id,
                            prev.lease_until
                        );
                    }
                    d.push(Delivery {
                        lease_until: now + lease,
                        nacked: false,
                    });
                    held[w].push((c.job.id, c.token));
                }
            }
            50..=74 => {
                let w = rng.below(3) as usize;
                if held[w].is_empty() {
                    continue;
                }
                let i = rng.below(held[w].len() as u64) as usize;
                let (id, token) = held[w].swap_remove(i);
                let live = q
                    .get(id)
                    .and_then(|j| j.lease)
                    .is_some_and(|l| l.token == token && l.expires_at_ms > now);
                if rng.below(4) == 0 {
                    let r = q.nack(id, token, "worker failed", None, false);
                    assert_eq!(
                        r.is_ok(),
                        live,
                        "seed {seed}: nack of {id} with token {token}"
                    );
                    if r.is_ok()
                        && let Some(d) = deliveries.get_mut(&id).and_then(|d| d.last_mut())
                    {
                        d.nacked = true;
                    }
                } else {
                    let r = q.ack(id, token, None);
                    assert_eq!(
                        r.is_ok(),
                        live,
                        "seed {seed}: ack of {id} with token {token}: {r:?}"
                    );
                }
            }
            75..=79 => {
                // A worker crashes: it forgets what it held; leases will expire.
                let w = rng.below(3) as usize;
                held[w].clear();
            }
            80..=94 => {
                clock.advance_ms(rng.below(150));
                q.tick().expect("tick");
            }
            95..=97 => {
                // Snapshots, rotations and compaction in the middle of it all.
                atlas.snapshot().expect("snapshot");
            }
            _ => {
                crashes += 1;
                let tear = match rng.below(3) {
                    0 => CrashTear::DropUnsynced,
                    1 => CrashTear::RandomPrefix { seed: rng.next() },
                    _ => CrashTear::BlockBoundary {
                        block_size: 512,
                        seed: rng.next(),
                    },
                };
                disk.crash(tear);
                drop(q);
                drop(atlas);
                disk.restart();
                (q, atlas) = open(&disk, &clock);
            }
        }
        q.with_state(|st| st.check_invariants());
    }
    // Drain: workers come back healthy and finish everything.
    for _ in 0..10_000 {
        clock.advance_ms(1_000);
        q.tick().expect("tick");
        let claims = q.claim("t", "drain", 100, 10_000).expect("claim");
        let s = q.stats("t");
        if claims.is_empty() && s.pending_count == 0 && s.in_progress_count == 0 {
            break;
        }
        for c in claims {
            if !enqueued.contains(&c.job.id) {
                unexpected += 1;
            }
            if deliveries.contains_key(&c.job.id) {
                duplicates += 1;
            }
            q.ack(c.job.id, c.token, None).expect("drain ack");
        }
    }
    let lost = enqueued
        .iter()
        .filter(|id| {
            !q.get(**id)
                .is_some_and(|j| matches!(j.state, JobState::Done | JobState::Failed))
        })
        .count();
    eprintln!(
        "total_queue: {} enqueued, {} delivered, lost {lost}, unexpected {unexpected}, duplicates {duplicates} (all after a lease expiry or nack), crashes {crashes}",
        enqueued.len(),
        deliveries.len()
    );
    assert_eq!(lost, 0, "seed {seed}: lost jobs");
    assert_eq!(unexpected, 0, "seed {seed}: unexpected deliveries");
}

fn seed() -> u64 {
    std::env::var("HELIOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
}

#[test]
fn total_queue_with_power_loss() {
    run(seed(), 3_000);
}

#[test]
#[ignore = "long: run with --ignored"]
fn total_queue_soak() {
    let s = seed();
    for i in 0..20 {
        run(s.wrapping_add(i), 20_000);
    }
}
