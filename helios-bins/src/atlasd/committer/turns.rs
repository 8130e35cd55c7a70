//! [`TurnHub`]: where the runtime's `on_thread_park` hook tells the committer a turn
//! ended, so the jobs queued in that turn commit as one group on that thread (Redis's
//! `beforeSleep`).

use super::*;

/// Where the runtime tells the committer that a turn ended: a runtime thread is about to
/// park because it has no task left to run (Redis's `beforeSleep`). Install
/// [`TurnHub::turn_ended`] as the runtime's `on_thread_park` hook and pass the hub to
/// [`start`]: the committer then takes its group when the turn that queued the jobs ends
/// (or after one to two [`TURN_WAIT_MAX`]), so the group holds the writes of every
/// connection served in that turn.
#[derive(Default)]
pub struct TurnHub {
    // The committer to run at turn ends; cleared when it stops (so the hook, which lives
    // as long as the runtime, does not keep the store open).
    pub(super) target: Mutex<Option<(Atlas, Arc<State>)>>,
    // A job was queued since the last turn ended.
    pub(super) pending: AtomicBool,
    // Turn ends that found jobs pending and committed them (the committer thread takes
    // only jobs no such turn end took).
    pub(super) ended: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for TurnHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnHub")
            .field("pending", &self.pending.load(Ordering::Relaxed))
            .finish()
    }
}

impl TurnHub {
    /// Called by each runtime thread just before it parks: commits the jobs queued in the
    /// turn that ends, as one group, on this thread. Like Redis's `beforeSleep`, the
    /// thread waits for that group's fsync; the requests that arrive meanwhile wait in the
    /// sockets and make the next turn (and group) larger.
    pub fn turn_ended(&self) {
        if !(self.pending.load(Ordering::Relaxed) && self.pending.swap(false, Ordering::SeqCst)) {
            return;
        }
        // Cloned out: the lock is not held across the commit (another runtime thread's
        // hook may commit meanwhile; ATLAS's pipeline orders them).
        let target = self.target.lock().clone();
        if let Some((atlas, state)) = target {
            // A bug in a command must not unwind into the runtime's park path.
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let _close_on_panic = CloseOnPanic(&state);
                // Every queued job, however many groups that takes.
                while let (true, false) = commit_queued(&atlas, &state) {}
            }));
            if r.is_err() {
                tracing::error!("a write transaction panicked at the end of a runtime turn");
            }
        }
        self.ended.fetch_add(1, Ordering::SeqCst);
    }
}

/// The committer thread's tick beside a turn hub: a queued job that no turn end commits
/// (a runtime thread busy without pause) is taken at the second tick that sees it, so it
/// waits one to two of these.
pub const TURN_WAIT_MAX: std::time::Duration = std::time::Duration::from_millis(1);
