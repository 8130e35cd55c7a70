//! The worker's `/metrics` (its families in OpenMetrics form, served negotiated by
//! [`crate::app::metrics::respond`]): per queue, jobs processed by
//! outcome, the processing time histogram, jobs in flight and connector errors by class;
//! process-wide claims and failed settle requests. Labels are bounded by the service map
//! (its queues) and the fixed outcome and class names.

use super::connector::ErrorClass;
use crate::app::histogram::LatencyHistogram;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// How a job's attempt ended, from the queue's view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOutcome {
    /// Acked: done.
    Acked,
    /// Nacked and back to pending for another attempt.
    Retried,
    /// Nacked into the dead-letter list (permanent, or the last attempt).
    DeadLettered,
    /// The lease was gone when the outcome arrived (expired and re-claimed, cancelled):
    /// the job is someone else's now.
    Lost,
    /// Drained at shutdown: nacked to run again at once.
    Released,
}

impl JobOutcome {
    const ALL: [JobOutcome; 5] = [
        JobOutcome::Acked,
        JobOutcome::Retried,
        JobOutcome::DeadLettered,
        JobOutcome::Lost,
        JobOutcome::Released,
    ];

    fn as_str(self) -> &'static str {
        match self {
            JobOutcome::Acked => "acked",
            JobOutcome::Retried => "retried",
            JobOutcome::DeadLettered => "dead_lettered",
            JobOutcome::Lost => "lost",
            JobOutcome::Released => "released",
        }
    }
}

const CLASSES: [ErrorClass; 4] = [
    ErrorClass::Permanent,
    ErrorClass::Server,
    ErrorClass::Timeout,
    ErrorClass::Connect,
];

/// One queue's series.
#[derive(Debug, Default)]
pub struct QueueMetrics {
    outcomes: [AtomicU64; 5],
    errors: [AtomicU64; 4],
    /// Jobs claimed and not yet settled.
    pub in_flight: AtomicI64,
    duration: LatencyHistogram,
}

impl QueueMetrics {
    /// Counts a settled job.
    pub fn outcome(&self, o: JobOutcome) {
        let i = JobOutcome::ALL.iter().position(|x| *x == o).unwrap_or(0);
        self.outcomes[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a connector error.
    pub fn error(&self, class: ErrorClass) {
        let i = CLASSES.iter().position(|x| *x == class).unwrap_or(0);
        self.errors[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Records how long an attempt ran.
    pub fn observe(&self, d: std::time::Duration) {
        self.duration
            .observe_us(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    /// Jobs of an outcome so far (tests).
    pub fn count(&self, o: JobOutcome) -> u64 {
        let i = JobOutcome::ALL.iter().position(|x| *x == o).unwrap_or(0);
        self.outcomes[i].load(Ordering::Relaxed)
    }
}

/// Every series of a worker.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Per queue served.
    pub queues: BTreeMap<String, QueueMetrics>,
    /// Jobs claimed.
    pub claimed: AtomicU64,
    /// Settle requests that failed as a whole (retried while the leases last).
    pub settle_failures: AtomicU64,
    /// Claim requests that failed.
    pub claim_failures: AtomicU64,
}

use crate::app::metrics::label;

impl Metrics {
    /// Series for `queues`.
    pub fn new<'a>(queues: impl IntoIterator<Item = &'a str>) -> Self {
        Metrics {
            queues: queues
                .into_iter()
                .map(|q| (q.to_owned(), QueueMetrics::default()))
                .collect(),
            ..Metrics::default()
        }
    }

    /// The families in OpenMetrics form (counters' `# HELP`/`# TYPE` without `_total`, no
    /// `# EOF`: see [`crate::app::metrics`]).
    pub fn text(&self) -> String {
        let mut t = String::with_capacity(4096);
        for (name, help, v) in [
            ("worker_jobs_claimed", "Jobs claimed.", &self.claimed),
            (
                "worker_claim_failures",
                "Claim requests that failed (the queue unreachable or refusing).",
                &self.claim_failures,
            ),
            (
                "worker_settle_failures",
                "Settle requests (acks, nacks, heartbeats) that failed as a whole; retried \
                 while the leases last.",
                &self.settle_failures,
            ),
        ] {
            let _ = write!(
                t,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name}_total {}\n",
                v.load(Ordering::Relaxed)
            );
        }
        t.push_str(
            "# HELP worker_jobs_processed Jobs settled, by queue and outcome.\n\
             # TYPE worker_jobs_processed counter\n",
        );
        for (q, m) in &self.queues {
            for (i, o) in JobOutcome::ALL.iter().enumerate() {
                let _ = writeln!(
                    t,
                    "worker_jobs_processed_total{{queue=\"{}\",outcome=\"{}\"}} {}",
                    label(q),
                    o.as_str(),
                    m.outcomes[i].load(Ordering::Relaxed)
                );
            }
        }
        t.push_str(
            "# HELP worker_connector_errors Failed attempts, by queue and error class.\n\
             # TYPE worker_connector_errors counter\n",
        );
        for (q, m) in &self.queues {
            for (i, c) in CLASSES.iter().enumerate() {
                let _ = writeln!(
                    t,
                    "worker_connector_errors_total{{queue=\"{}\",class=\"{}\"}} {}",
                    label(q),
                    c.as_str(),
                    m.errors[i].load(Ordering::Relaxed)
                );
            }
        }
        t.push_str(
            "# HELP worker_jobs_in_flight Jobs claimed and not yet settled, by queue.\n\
             # TYPE worker_jobs_in_flight gauge\n",
        );
        for (q, m) in &self.queues {
            let _ = writeln!(
                t,
                "worker_jobs_in_flight{{queue=\"{}\"}} {}",
                label(q),
                m.in_flight.load(Ordering::Relaxed).max(0)
            );
        }
        t.push_str(
            "# HELP worker_job_duration_seconds Time a connector took per attempt, by queue.\n\
             # TYPE worker_job_duration_seconds histogram\n",
        );
        for (q, m) in &self.queues {
            m.duration.encode(
                &mut t,
                "worker_job_duration_seconds",
                &format!("queue=\"{}\"", label(q)),
            );
        }
        t
    }
}
