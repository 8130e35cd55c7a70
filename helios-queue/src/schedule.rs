//! Cron schedules (repeatable jobs): the [`Schedule`] record stored under
//! `job:schedule:{id}` ([`helios_core::keys::job_schedule`]), the [`ScheduleRequest`] that
//! creates one, the cron evaluation, and the `plan_*` transitions of [`QueueState`] that
//! create, delete and fire schedules.
//!
//! Expressions are parsed by `croner` (5 fields, minute granularity, or 6 with a leading
//! seconds field; `@hourly`-style nicknames; no year field) and evaluated in UTC at the
//! time the caller passes in (the queue's injected clock), converted to a chrono
//! `DateTime<Utc>`: never at croner's or chrono's own "now". Fire times are whole seconds,
//! so no expression fires more than once per second; one that never fires after its
//! creation (`0 0 30 2 *`) is refused.
//!
//! Invariants (checked by `QueueState::check_invariants`, property-tested in
//! `tests/schedules.rs`):
//! - `next_run_ms` is the first fire time not yet handled, and only moves forward: a fire
//!   plans from a schedule whose `next_run_ms <= now` and sets it to the first fire time
//!   `> now`, so a clock that went back fires nothing again.
//! - One fire enqueues at most ONE job per schedule: for the latest fire time `<= now`
//!   (a clock jump over many fire times enqueues one run, not a burst). The job and the
//!   schedule's new record are in the same transition (one ATLAS batch), so a crash either
//!   keeps both or neither: a fire time is never enqueued twice, even across restarts.
//! - A full queue (`depth_max`) skips the fire time (`skipped_count`); a fire never blocks.
//! - A schedule whose owner may no longer enqueue (the caller's `allowed` check at fire
//!   time: a revoked role, a disabled or deleted user) skips the fire time too
//!   (`denied_count`): authority is judged when a job is made, not only when the schedule
//!   was created.
//! - A job made by a schedule carries the schedule's owner, its `run_at_ms` is the fire
//!   time, and its dedup id `schedule-{id}-{fire_ms}` names the schedule and the fire time.
//!
//! Schedule ids are UUIDv7 (the [`JobId`] form, 32 hex digits) made from the rng the queue
//! is handed, as job ids are: server-made and unguessable.

use crate::error::{QueueError, Result};
use crate::job::{EnqueueRequest, JobId, validate_owner, validate_queue_name};
use crate::limits::{
    ATTEMPTS_MAX, CRON_SIZE_MAX, LIST_LIMIT_MAX, SCHEDULE_PAYLOAD_SIZE_MAX, SCHEDULES_MAX,
    SCHEDULES_PER_OWNER_MAX, TICK_COUNT_MAX,
};
use crate::state::{QueueState, Transition, json_size};
use chrono::{DateTime, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// A schedule id: the same 32-hex-digit UUIDv7 form as a job id.
pub type ScheduleId = JobId;

/// A cron schedule, as stored under `job:schedule:{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    /// The id (server-made).
    pub id: ScheduleId,
    /// Who created it; the jobs it makes carry it. Only the owner and `jobs:admin` reach it
    /// over HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Arc<str>>,
    /// The queue its jobs go to.
    pub queue: String,
    /// The cron expression, as given (UTC).
    pub cron: String,
    /// The payload of every job it makes (shared, not copied).
    pub payload: Arc<serde_json::Value>,
    /// The priority of its jobs.
    pub priority: i32,
    /// The attempts of its jobs (default: the queue config's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts_max: Option<u32>,
    /// Creation time (queue clock).
    pub created_at_ms: u64,
    /// The next fire time not yet handled; `None` once the expression fires no more.
    pub next_run_ms: Option<u64>,
    /// The fire time of the last job it enqueued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_ms: Option<u64>,
    /// Jobs enqueued so far.
    pub runs_count: u64,
    /// Fire times skipped because the queue was full.
    #[serde(default)]
    pub skipped_count: u64,
    /// Fire times skipped because the owner could not enqueue at the time.
    #[serde(default)]
    pub denied_count: u64,
    /// The last job it enqueued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_job: Option<JobId>,
}

/// What to schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleRequest {
    /// Queue name, `[A-Za-z0-9_.-]{1,64}`.
    pub queue: String,
    /// The owner recorded on the schedule and its jobs.
    #[serde(default)]
    pub owner: Option<Arc<str>>,
    /// The cron expression (UTC): 5 fields, or 6 with seconds first.
    pub cron: String,
    /// Any JSON, at most [`SCHEDULE_PAYLOAD_SIZE_MAX`] bytes of JSON text.
    #[serde(default)]
    pub payload: Arc<serde_json::Value>,
    /// Priority of the jobs (default 0).
    #[serde(default)]
    pub priority: i32,
    /// Attempts of the jobs (default from the queue config).
    #[serde(default)]
    pub attempts_max: Option<u32>,
}

impl ScheduleRequest {
    /// A request for `queue` on `cron` with defaults for everything else.
    pub fn new(
        queue: impl Into<String>,
        cron: impl Into<String>,
        payload: serde_json::Value,
    ) -> Self {
        Self {
            queue: queue.into(),
            owner: None,
            cron: cron.into(),
            payload: Arc::new(payload),
            priority: 0,
            attempts_max: None,
        }
    }
}

/// What one fire did ([`QueueState::plan_fire`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fired {
    /// Jobs enqueued by schedules.
    pub scheduled_count: u64,
    /// Fire times skipped because their queue was full.
    pub skipped_count: u64,
    /// Fire times skipped because the schedule's owner could not enqueue then.
    pub denied_count: u64,
}

/// The parser every expression goes through: seconds optional, no year field.
fn parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
}

/// Parses and checks a cron expression, naming the field `cron` in errors.
pub fn parse_cron(text: &str) -> Result<Cron> {
    let invalid = |reason: String| QueueError::Invalid {
        field: "cron",
        reason,
    };
    if text.len() > CRON_SIZE_MAX {
        return Err(invalid(format!(
            "{} bytes; the limit is {CRON_SIZE_MAX}",
            text.len()
        )));
    }
    if text.chars().any(char::is_control) {
        return Err(invalid("contains control characters".to_owned()));
    }
    parser()
        .parse(text)
        .map_err(|e| invalid(format!("{text:?}: {e}")))
}

/// `ms` as a UTC time, cut to its second (cron fire times are whole seconds).
fn utc_second(ms: u64) -> Option<DateTime<Utc>> {
    DateTime::<Utc>::from_timestamp(i64::try_from(ms / 1000).ok()?, 0)
}

fn to_ms(t: DateTime<Utc>) -> Option<u64> {
    u64::try_from(t.timestamp()).ok()?.checked_mul(1000)
}

/// The first fire time of `cron` strictly after `now_ms`; `None` if there is none.
pub fn next_fire_after(cron: &Cron, now_ms: u64) -> Option<u64> {
    // Fire times are whole seconds: the first one after the second `now_ms` falls in is
    // the first one after `now_ms`.
    let at = cron
        .find_next_occurrence(&utc_second(now_ms)?, false)
        .ok()?;
    to_ms(at)
}

/// The latest fire time of `cron` at or before `now_ms`; `None` if there is none.
pub fn last_fire_at_or_before(cron: &Cron, now_ms: u64) -> Option<u64> {
    let at = cron
        .find_previous_occurrence(&utc_second(now_ms)?, true)
        .ok()?;
    to_ms(at)
}

/// The schedules of a queue state and their index. Invariant: `due` holds exactly
/// `(next_run_ms, id)` of every schedule that has a next run.
#[derive(Debug, Clone)]
pub(crate) struct Schedules {
    by_id: BTreeMap<ScheduleId, (Schedule, Cron)>,
    due: BTreeSet<(u64, ScheduleId)>,
    // Invariant: >= every schedule id ever applied.
    id_last: JobId,
}

impl Default for Schedules {
    fn default() -> Self {
        Self {
            by_id: BTreeMap::new(),
            due: BTreeSet::new(),
            id_last: JobId::from_u128(0),
        }
    }
}

impl Schedules {
    /// Puts a schedule (new or changed) and indexes it.
    pub(crate) fn put(&mut self, s: Schedule) -> Result<()> {
        let cron = match self.by_id.get(&s.id) {
            Some((old, cron)) if old.cron == s.cron => cron.clone(),
            _ => parse_cron(&s.cron)?,
        };
        self.remove(s.id);
        self.id_last = self.id_last.max(s.id);
        if let Some(at) = s.next_run_ms {
            self.due.insert((at, s.id));
        }
        self.by_id.insert(s.id, (s, cron));
        Ok(())
    }

    /// Removes a schedule and its index entry; whether it was there.
    pub(crate) fn remove(&mut self, id: ScheduleId) -> bool {
        match self.by_id.remove(&id) {
            Some((old, _)) => {
                if let Some(at) = old.next_run_ms {
                    self.due.remove(&(at, id));
                }
                true
            }
            None => false,
        }
    }

    pub(crate) fn check_invariants(&self) {
        let mut due = 0;
        for (id, (s, cron)) in &self.by_id {
            assert_eq!(*id, s.id);
            assert!(s.id <= self.id_last, "schedule id_last");
            assert_eq!(
                cron.pattern.as_str(),
                parse_cron(&s.cron).unwrap().pattern.as_str()
            );
            if let Some(at) = s.next_run_ms {
                assert!(self.due.contains(&(at, *id)), "schedule {id} due index");
                due += 1;
            }
        }
        assert_eq!(self.due.len(), due, "schedule due index size");
    }
}

impl QueueState {
    /// A schedule by id.
    pub fn schedule(&self, id: ScheduleId) -> Option<&Schedule> {
        self.schedules.by_id.get(&id).map(|(s, _)| s)
    }

    /// Number of schedules.
    pub fn schedule_count(&self) -> usize {
        self.schedules.by_id.len()
    }

    /// The schedules (of `owner` only, if given), in id order, after `cursor`, at most
    /// `limit`; and the cursor of the next page.
    pub fn list_schedules(
        &self,
        owner: Option<&str>,
        cursor: Option<ScheduleId>,
        limit: usize,
    ) -> Result<(Vec<&Schedule>, Option<ScheduleId>)> {
        if limit == 0 || limit > LIST_LIMIT_MAX {
            return Err(QueueError::Invalid {
                field: "limit",
                reason: format!("{limit} is outside 1..={LIST_LIMIT_MAX}"),
            });
        }
        let start = match cursor {
            Some(c) => std::ops::Bound::Excluded(c),
            None => std::ops::Bound::Unbounded,
        };
        let mut it = self
            .schedules
            .by_id
            .range((start, std::ops::Bound::Unbounded))
            .map(|(_, (s, _))| s)
            .filter(|s| owner.is_none() || s.owner.as_deref() == owner);
        let page: Vec<&Schedule> = it.by_ref().take(limit).collect();
        let next = if it.next().is_some() {
            page.last().map(|s| s.id)
        } else {
            None
        };
        Ok((page, next))
    }

    /// The earliest next run of any schedule (when `plan_fire` has work).
    pub fn next_schedule_run_ms(&self) -> Option<u64> {
        self.schedules.due.first().map(|(at, _)| *at)
    }

    /// Loads a schedule read back from ATLAS (on open). Fails if its expression no longer
    /// parses.
    pub fn load_schedule(&mut self, s: Schedule) -> Result<()> {
        self.schedules.put(s)
    }

    /// Plans creating a schedule at `now_ms`; its id takes 64 bits from `rng`. Every field
    /// is checked, errors naming it; at most [`SCHEDULES_MAX`] schedules in all and
    /// [`SCHEDULES_PER_OWNER_MAX`] per owner.
    pub fn plan_create_schedule<R: Rng + ?Sized>(
        &self,
        req: &ScheduleRequest,
        now_ms: u64,
        rng: &mut R,
    ) -> Result<(Schedule, Transition)> {
        validate_queue_name(&req.queue)?;
        if let Some(o) = &req.owner {
            validate_owner(o)?;
        }
        let cron = parse_cron(&req.cron)?;
        let payload_size = json_size(&req.payload);
        if payload_size > SCHEDULE_PAYLOAD_SIZE_MAX {
            return Err(QueueError::Invalid {
                field: "payload",
                reason: format!("{payload_size} bytes; the limit is {SCHEDULE_PAYLOAD_SIZE_MAX}"),
            });
        }
        if let Some(a) = req.attempts_max
            && !(1..=ATTEMPTS_MAX).contains(&a)
        {
            return Err(QueueError::Invalid {
                field: "attempts_max",
                reason: format!("{a} is outside 1..={ATTEMPTS_MAX}"),
            });
        }
        let next = next_fire_after(&cron, now_ms).ok_or_else(|| QueueError::Invalid {
            field: "cron",
            reason: format!("{:?} never fires after now", req.cron),
        })?;
        if self.schedules.by_id.len() >= SCHEDULES_MAX {
            return Err(QueueError::ScheduleLimit {
                scope: "in all",
                max: SCHEDULES_MAX,
            });
        }
        let owned = self
            .schedules
            .by_id
            .values()
            .filter(|(s, _)| s.owner == req.owner)
            .count();
        if owned >= SCHEDULES_PER_OWNER_MAX {
            return Err(QueueError::ScheduleLimit {
                scope: "per owner",
                max: SCHEDULES_PER_OWNER_MAX,
            });
        }
        let id = JobId::next_after(self.schedules.id_last, now_ms, rng.next_u64())
            .filter(|id| !self.schedules.by_id.contains_key(id))
            .ok_or_else(|| QueueError::Invalid {
                field: "now_ms",
                reason: format!("{now_ms}: no schedule id left"),
            })?;
        let s = Schedule {
            id,
            owner: req.owner.clone(),
            queue: req.queue.clone(),
            cron: req.cron.clone(),
            payload: req.payload.clone(),
            priority: req.priority,
            attempts_max: req.attempts_max,
            created_at_ms: now_ms,
            next_run_ms: Some(next),
            last_run_ms: None,
            runs_count: 0,
            skipped_count: 0,
            denied_count: 0,
            last_job: None,
        };
        let t = Transition {
            schedule_puts: vec![s.clone()],
            ..Transition::default()
        };
        Ok((s, t))
    }

    /// Plans deleting a schedule. With `owner`, only that owner's schedule: anyone else's
    /// is [`QueueError::ScheduleNotFound`], as a missing one. Jobs it already made stay.
    pub fn plan_delete_schedule(&self, id: ScheduleId, owner: Option<&str>) -> Result<Transition> {
        match self.schedule(id) {
            Some(s) if owner.is_none() || s.owner.as_deref() == owner => Ok(Transition {
                schedule_deletes: vec![id],
                ..Transition::default()
            }),
            _ => Err(QueueError::ScheduleNotFound { id }),
        }
    }

    /// Plans firing the schedules due at `now_ms` (at most [`TICK_COUNT_MAX`]; the rest
    /// stay due for the next call): for each, ONE job for the latest fire time `<= now_ms`,
    /// and the schedule's next run moved to the first fire time `> now_ms`, in one
    /// transition. A schedule whose queue is full skips the fire time. Job ids take their
    /// random bits from `rng`, as `plan_enqueue`'s.
    pub fn plan_fire<R: Rng + ?Sized>(
        &self,
        now_ms: u64,
        rng: &mut R,
    ) -> Result<(Fired, Transition)> {
        self.plan_fire_checked(now_ms, rng, &|_| true)
    }

    /// [`QueueState::plan_fire`], asking `allowed` of each due schedule whether its owner
    /// may still enqueue: a refused one skips the fire time (`denied_count`), its next run
    /// moved on as for a fired one.
    pub fn plan_fire_checked<R: Rng + ?Sized>(
        &self,
        now_ms: u64,
        rng: &mut R,
        allowed: &dyn Fn(&Schedule) -> bool,
    ) -> Result<(Fired, Transition)> {
        let mut fired = Fired::default();
        let mut reqs: Vec<EnqueueRequest> = Vec::new();
        // Each schedule's new record, and the index of its request in `reqs`.
        let mut updated: Vec<(Schedule, Option<usize>)> = Vec::new();
        let mut added: HashMap<&str, u64> = HashMap::new();
        for &(at, id) in self.schedules.due.iter().take(TICK_COUNT_MAX) {
            if at > now_ms {
                break;
            }
            let Some((s, cron)) = self.schedules.by_id.get(&id) else {
                continue;
            };
            // `at` is a fire time <= now; a later one <= now (the clock jumped) wins.
            let fire_at = last_fire_at_or_before(cron, now_ms).map_or(at, |f| f.max(at));
            let mut next = s.clone();
            next.next_run_ms = next_fire_after(cron, now_ms);
            if !allowed(s) {
                next.denied_count += 1;
                fired.denied_count += 1;
                tracing::warn!(schedule = %id, owner = ?s.owner, fire_at, "owner may not enqueue: scheduled run skipped");
                updated.push((next, None));
                continue;
            }
            let depth =
                self.queue_depth(&s.queue) + added.get(s.queue.as_str()).copied().unwrap_or(0);
            if depth >= self.config().depth_max {
                next.skipped_count += 1;
                fired.skipped_count += 1;
                tracing::warn!(schedule = %id, queue = %s.queue, fire_at, "queue full: scheduled run skipped");
                updated.push((next, None));
                continue;
            }
            *added.entry(s.queue.as_str()).or_default() += 1;
            next.last_run_ms = Some(fire_at);
            next.runs_count += 1;
            updated.push((next, Some(reqs.len())));
            reqs.push(EnqueueRequest {
                queue: s.queue.clone(),
                owner: s.owner.clone(),
                payload: s.payload.clone(),
                priority: s.priority,
                delay_ms: None,
                run_at_ms: Some(fire_at),
                attempts_max: s.attempts_max,
                backoff: None,
                dedup_id: Some(format!("schedule-{id}-{fire_at}")),
                trace: None,
            });
        }
        if updated.is_empty() {
            return Ok((fired, Transition::default()));
        }
        let (enqueued, mut t) = self.plan_enqueue(&reqs, now_ms, rng)?;
        fired.scheduled_count = reqs.len() as u64;
        for (mut s, index) in updated {
            if let Some(e) = index.and_then(|i| enqueued.get(i)) {
                s.last_job = Some(e.id);
            }
            t.schedule_puts.push(s);
        }
        Ok((fired, t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// 2024-03-10T00:00:00Z, the day the US went to summer time (02:00 local did not
    /// exist there): UTC has no such gap.
    const MAR_10_2024: u64 = 1_710_028_800_000;

    fn cron(text: &str) -> Cron {
        parse_cron(text).unwrap()
    }

    /// Shows evaluation is plain UTC: a 02:30 that a DST zone would skip exists, every
    /// day has 24 hours, and fire times are whole seconds after the given ms.
    #[test]
    fn utc_evaluation_is_dst_free() {
        let c = cron("30 2 * * *");
        let at = next_fire_after(&c, MAR_10_2024).unwrap();
        assert_eq!(at, MAR_10_2024 + (2 * 3600 + 30 * 60) * 1000);
        assert_eq!(next_fire_after(&c, at).unwrap(), at + 86_400_000);
        assert_eq!(last_fire_at_or_before(&c, at).unwrap(), at);
        assert_eq!(last_fire_at_or_before(&c, at - 1).unwrap(), at - 86_400_000);
        // Seconds field: every second; "after" is strict, "at or before" inclusive.
        let s = cron("* * * * * *");
        assert_eq!(
            next_fire_after(&s, MAR_10_2024).unwrap(),
            MAR_10_2024 + 1000
        );
        assert_eq!(
            next_fire_after(&s, MAR_10_2024 + 999).unwrap(),
            MAR_10_2024 + 1000
        );
        assert_eq!(
            last_fire_at_or_before(&s, MAR_10_2024 + 999).unwrap(),
            MAR_10_2024
        );
        // Nicknames; hourly on the hour.
        let h = cron("@hourly");
        assert_eq!(
            next_fire_after(&h, MAR_10_2024 + 1).unwrap(),
            MAR_10_2024 + 3_600_000
        );
        // 5 fields fire at second 0.
        let m = cron("*/15 * * * *");
        assert_eq!(
            next_fire_after(&m, MAR_10_2024 + 1).unwrap(),
            MAR_10_2024 + 900_000
        );
    }

    /// Shows bad expressions are refused naming the field `cron`.
    #[test]
    fn invalid_expressions_name_the_field() {
        for bad in [
            "",
            "   ",
            "* * *",
            "61 * * * *",
            "* 24 * * *",
            "* * * * * * *",
            "0 0 1 1 * 2030",
            "nonsense",
            "* * * * *\n",
            "@every_minute",
        ] {
            match parse_cron(bad) {
                Err(QueueError::Invalid { field: "cron", .. }) => {}
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        let long = format!("0 0 * * {}", "1,".repeat(200));
        assert!(matches!(
            parse_cron(&long),
            Err(QueueError::Invalid { field: "cron", .. })
        ));
    }

    /// Shows creation checks every field, and refuses an expression that never fires.
    #[test]
    fn create_checks_fields() {
        let st = QueueState::new(crate::QueueConfig::default());
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let field = |req: &ScheduleRequest| match st.plan_create_schedule(
            req,
            MAR_10_2024,
            &mut rand::rngs::StdRng::seed_from_u64(1),
        ) {
            Err(QueueError::Invalid { field, .. }) => field,
            other => panic!("{req:?}: {other:?}"),
        };
        let ok = ScheduleRequest::new("q", "* * * * *", serde_json::json!({"a": 1}));
        let (s, t) = st.plan_create_schedule(&ok, MAR_10_2024, &mut rng).unwrap();
        assert_eq!(s.next_run_ms, Some(MAR_10_2024 + 60_000));
        assert_eq!(t.schedule_puts, vec![s]);
        assert_eq!(
            field(&ScheduleRequest::new(
                "q",
                "0 0 30 2 *",
                serde_json::json!(null)
            )),
            "cron"
        );
        assert_eq!(
            field(&ScheduleRequest::new(
                "a b",
                "* * * * *",
                serde_json::json!(null)
            )),
            "queue"
        );
        let mut r = ok.clone();
        r.attempts_max = Some(0);
        assert_eq!(field(&r), "attempts_max");
        let mut r = ok.clone();
        r.owner = Some(Arc::from("a/b"));
        assert_eq!(field(&r), "owner");
        let mut r = ok;
        r.payload = Arc::new(serde_json::Value::String(
            "x".repeat(SCHEDULE_PAYLOAD_SIZE_MAX),
        ));
        assert_eq!(field(&r), "payload");
    }

    /// Shows a fire after a jump over many fire times enqueues one job for the latest, and
    /// a full queue skips the fire time without blocking.
    #[test]
    fn jump_fires_once_and_full_queue_skips() {
        let config = crate::QueueConfig {
            depth_max: 1,
            ..crate::QueueConfig::default()
        };
        let mut st = QueueState::new(config);
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let req = ScheduleRequest::new("q", "* * * * * *", serde_json::json!(1));
        let (s, t) = st
            .plan_create_schedule(&req, MAR_10_2024, &mut rng)
            .unwrap();
        st.apply(t);
        let now = MAR_10_2024 + 3_600_500;
        let (fired, t) = st.plan_fire(now, &mut rng).unwrap();
        assert_eq!(fired.scheduled_count, 1);
        assert_eq!(t.puts.len(), 1);
        assert_eq!(t.puts[0].run_at_ms, MAR_10_2024 + 3_600_000);
        assert_eq!(
            t.puts[0].dedup_id.as_deref(),
            Some(format!("schedule-{}-{}", s.id, MAR_10_2024 + 3_600_000).as_str())
        );
        st.apply(t);
        let after = st.schedule(s.id).unwrap().clone();
        assert_eq!(after.next_run_ms, Some(MAR_10_2024 + 3_601_000));
        assert_eq!(
            (after.runs_count, after.last_run_ms),
            (1, Some(MAR_10_2024 + 3_600_000))
        );
        // Nothing more at the same time, nor after the clock went back.
        assert!(st.plan_fire(now, &mut rng).unwrap().1.is_empty());
        assert!(st.plan_fire(MAR_10_2024, &mut rng).unwrap().1.is_empty());
        // The queue is full (depth_max 1): the next fire time is skipped, counted.
        let (fired, t) = st.plan_fire(now + 1_000, &mut rng).unwrap();
        assert_eq!((fired.scheduled_count, fired.skipped_count), (0, 1));
        assert!(t.puts.is_empty());
        st.apply(t);
        let after = st.schedule(s.id).unwrap();
        assert_eq!((after.runs_count, after.skipped_count), (1, 1));
        assert_eq!(after.next_run_ms, Some(MAR_10_2024 + 3_602_000));
        st.check_invariants();
    }

    /// Shows an owner refused at fire time gets no job: the fire time is skipped and
    /// counted, the next run moves on, and the schedule fires again once allowed.
    #[test]
    fn refused_owner_skips_the_fire_time() {
        let mut st = QueueState::new(crate::QueueConfig::default());
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut req = ScheduleRequest::new("q", "* * * * * *", serde_json::json!(1));
        req.owner = Some(Arc::from("alice"));
        let (s, t) = st
            .plan_create_schedule(&req, MAR_10_2024, &mut rng)
            .unwrap();
        st.apply(t);
        let seen = std::cell::Cell::new(0);
        let refuse = |x: &Schedule| {
            seen.set(seen.get() + 1);
            x.owner.as_deref() != Some("alice")
        };
        let (fired, t) = st
            .plan_fire_checked(MAR_10_2024 + 1_000, &mut rng, &refuse)
            .unwrap();
        assert_eq!(seen.get(), 1);
        assert_eq!(
            (
                fired.scheduled_count,
                fired.skipped_count,
                fired.denied_count
            ),
            (0, 0, 1)
        );
        assert!(t.puts.is_empty());
        st.apply(t);
        let after = st.schedule(s.id).unwrap().clone();
        assert_eq!((after.runs_count, after.denied_count), (0, 1));
        assert_eq!(after.next_run_ms, Some(MAR_10_2024 + 2_000));
        let (fired, t) = st
            .plan_fire_checked(MAR_10_2024 + 2_000, &mut rng, &|_| true)
            .unwrap();
        assert_eq!((fired.scheduled_count, fired.denied_count), (1, 0));
        assert_eq!(t.puts[0].owner.as_deref(), Some("alice"));
        st.apply(t);
        st.check_invariants();
    }
}
