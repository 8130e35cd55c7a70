//! Write commands and how they turn into ops: the pure "plan" half of the write path.
//!
//! A command (set with NX/XX, incr, compare-and-swap, a batch...) is evaluated against the
//! current state plus the effects of earlier commands in the same commit group (an
//! [`Overlay`]), at one `now_ms`. It yields a reply and the [`Op`]s to log. Nothing here
//! touches the keyspace or the disk; the commit pipeline logs the ops, then applies them.
//!
//! If a command fails halfway (a batch precondition, the memory limit), the overlay rolls
//! back to where the command began: a command is all or nothing.

use crate::error::{AtlasError, Result};
use crate::key::Key;
use crate::keyspace::{Entry, Keyspace, entry_size};
use crate::limits::{BATCH_OPS_COUNT_MAX, KEY_SIZE_MAX, RECORD_SIZE_MAX, VALUE_SIZE_MAX};
use crate::op::{Op, encoded_size_max};
use crate::tx::Tx;
use bytes::Bytes;
use std::collections::HashMap;

/// When a set applies (Redis's NX / XX).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SetCondition {
    /// Always.
    #[default]
    Always,
    /// Only if the key does not exist (NX).
    IfAbsent,
    /// Only if the key exists (XX).
    IfPresent,
}

/// The expiry a write gives a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Expiry {
    /// No expiry (a plain SET clears any TTL, as in Redis).
    #[default]
    Never,
    /// Keep the key's current expiry (Redis's KEEPTTL).
    Keep,
    /// Expire this many ms after the write. Logged as an absolute time.
    InMs(u64),
    /// Expire at this absolute time (ms since the Unix epoch).
    AtMs(u64),
}

/// Options of [`crate::Atlas::set_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SetOptions {
    /// NX / XX.
    pub condition: SetCondition,
    /// The expiry to give the key.
    pub expiry: Expiry,
}

/// A precondition of a [`WriteBatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// The key must not exist.
    Absent,
    /// The key must exist.
    Present,
    /// The key must hold exactly this value.
    Equals(Bytes),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum BatchOp {
    Set {
        key: Key,
        value: Bytes,
        expiry: Expiry,
    },
    Delete {
        key: Key,
    },
    Expire {
        key: Key,
        expiry: Expiry,
    },
}

/// An atomic multi-key write: preconditions, then writes, logged as one record. Either
/// every precondition holds and every write applies, or nothing does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    preconditions: Vec<(Key, Precondition)>,
    ops: Vec<BatchOp>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }
    /// Requires `key` to satisfy `condition` when the batch is applied.
    pub fn require(&mut self, key: impl Into<Key>, condition: Precondition) -> &mut Self {
        self.preconditions.push((key.into(), condition));
        self
    }
    /// Sets `key` to `value` with `expiry`.
    pub fn set(
        &mut self,
        key: impl Into<Key>,
        value: impl Into<Bytes>,
        expiry: Expiry,
    ) -> &mut Self {
        self.ops.push(BatchOp::Set {
            key: key.into(),
            value: value.into(),
            expiry,
        });
        self
    }
    /// Deletes `key` (no effect if absent).
    pub fn delete(&mut self, key: impl Into<Key>) -> &mut Self {
        self.ops.push(BatchOp::Delete { key: key.into() });
        self
    }
    /// Sets or clears (`Expiry::Never`) the expiry of `key` if it exists.
    pub fn expire(&mut self, key: impl Into<Key>, expiry: Expiry) -> &mut Self {
        self.ops.push(BatchOp::Expire {
            key: key.into(),
            expiry,
        });
        self
    }
    /// Makes room for `additional` more writes.
    pub fn reserve(&mut self, additional: usize) -> &mut Self {
        self.ops.reserve(additional);
        self
    }
    /// Number of writes in the batch.
    pub fn len(&self) -> usize {
        self.ops.len()
    }
    /// Whether the batch holds no writes.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// A write command, as queued in the commit pipeline.
#[derive(Debug)]
pub(crate) enum Command {
    Set {
        key: Key,
        value: Bytes,
        options: SetOptions,
    },
    Delete {
        keys: Vec<Key>,
    },
    Expire {
        key: Key,
        expiry: Expiry,
    },
    IncrBy {
        key: Key,
        delta: i64,
    },
    CompareAndSwap {
        key: Key,
        expected: Option<Bytes>,
        new: Option<Bytes>,
    },
    Batch(WriteBatch),
    /// Active expiry: delete these keys if they are still expired at `now`.
    ExpireDue {
        keys: Vec<Key>,
        now_ms: u64,
    },
    /// A read-modify-write transaction ([`crate::Atlas::transact`]): its closure runs
    /// once, when the leader plans it; all its ops form one record.
    Tx(TxFn),
}

/// The type-erased closure of a transaction. Taken (run) at most once.
pub(crate) type TxBox = Box<dyn for<'t, 'a> FnOnce(&mut Tx<'t, 'a>) -> Result<()> + Send>;

/// A transaction's closure, in a lock so the leader can take it out of a queued
/// [`Command`] it only borrows.
pub(crate) struct TxFn(pub(crate) parking_lot::Mutex<Option<TxBox>>);

impl std::fmt::Debug for TxFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TxFn")
    }
}

/// What a command answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    Bool(bool),
    Int(i64),
    Count(u64),
}

pub(crate) fn validate_key(key: &[u8]) -> Result<()> {
    let size = key.len() as u64;
    if size == 0 || size > KEY_SIZE_MAX {
        return Err(AtlasError::KeyInvalid {
            size,
            size_max: KEY_SIZE_MAX,
        });
    }
    Ok(())
}

pub(crate) fn validate_value(key: &[u8], value: &[u8]) -> Result<()> {
    let size = value.len() as u64;
    if size > VALUE_SIZE_MAX {
        return Err(AtlasError::ValueTooLarge {
            key: Key::from(key),
            size,
            size_max: VALUE_SIZE_MAX,
        });
    }
    Ok(())
}

/// Checks a command's arguments before it is queued (so a bad argument never reaches the
/// pipeline).
pub(crate) fn validate(cmd: &Command) -> Result<()> {
    match cmd {
        Command::Set { key, value, .. } => {
            validate_key(key)?;
            validate_value(key, value)
        }
        Command::Delete { keys } | Command::ExpireDue { keys, .. } => {
            if keys.len() > BATCH_OPS_COUNT_MAX {
                return Err(AtlasError::BatchTooLarge {
                    detail: format!("{} keys; the limit is {BATCH_OPS_COUNT_MAX}", keys.len()),
                });
            }
            keys.iter().try_for_each(|k| validate_key(k))?;
            let size_max: u64 = 64
                + keys
                    .iter()
                    .map(|k| encoded_size_max(k.len() as u64, 0))
                    .sum::<u64>();
            if size_max > RECORD_SIZE_MAX {
                return Err(AtlasError::BatchTooLarge {
                    detail: format!(
                        "its AOF record could reach {size_max} bytes; the limit is {RECORD_SIZE_MAX}"
                    ),
                });
            }
            Ok(())
        }
        Command::Expire { key, .. } | Command::IncrBy { key, .. } => validate_key(key),
        Command::Tx(_) => Ok(()),
        Command::CompareAndSwap { key, new, .. } => {
            validate_key(key)?;
            new.as_ref().map_or(Ok(()), |v| validate_value(key, v))
        }
        Command::Batch(b) => {
            let count = b.ops.len() + b.preconditions.len();
            if count > BATCH_OPS_COUNT_MAX {
                return Err(AtlasError::BatchTooLarge {
                    detail: format!(
                        "{count} operations and preconditions; the limit is {BATCH_OPS_COUNT_MAX}"
                    ),
                });
            }
            for (k, _) in &b.preconditions {
                validate_key(k)?;
            }
            // Every record written must be readable: bound the encoding before logging.
            let mut size_max = 64u64;
            for op in &b.ops {
                match op {
                    BatchOp::Set { key, value, .. } => {
                        validate_key(key)?;
                        validate_value(key, value)?;
                        size_max += encoded_size_max(key.len() as u64, value.len() as u64);
                    }
                    BatchOp::Delete { key } | BatchOp::Expire { key, .. } => {
                        validate_key(key)?;
                        size_max += encoded_size_max(key.len() as u64, 0);
                    }
                }
            }
            if size_max > RECORD_SIZE_MAX {
                return Err(AtlasError::BatchTooLarge {
                    detail: format!(
                        "its AOF record could reach {size_max} bytes; the limit is {RECORD_SIZE_MAX}"
                    ),
                });
            }
            Ok(())
        }
    }
}

/// Reusable allocations of an [`Overlay`], kept by the writer between groups.
#[derive(Debug, Default)]
pub(crate) struct OverlayScratch {
    // An internal map (DESIGN.md: foldhash), bounded by a group's size limits.
    changes: HashMap<Key, Option<Entry>, foldhash::fast::RandomState>,
    // (index in the command's `out` of the op that made the change, previous pending
    // state): the key is read back from that op, so a change copies its key once.
    undo: Vec<(usize, Option<Option<Entry>>)>,
}

/// The keyspace as seen by a commit group: the applied state plus the group's pending ops.
pub(crate) struct Overlay<'a> {
    base: &'a Keyspace,
    // Pending state of keys touched by the group (None: deleted); undo log of the current
    // command: (key, previous pending state).
    scratch: &'a mut OverlayScratch,
    // The group's change of the keyspace's memory size; kept only under a memory limit,
    // which is all it serves.
    memory_delta: i64,
    memory_limit_size: Option<u64>,
    // Bytes of values the group's range writes built (each copies its old value): bounded
    // by `GROUP_PATCHED_SIZE_MAX`, so a pipeline of small SETRANGEs cannot make gigabytes.
    patched_size: u64,
    now_ms: u64,
    // Whether pushes are recorded in `scratch`. Off only for a group of one single-key
    // command, whose one push is never read back (see `Overlay::single`).
    track: bool,
}

impl<'a> Overlay<'a> {
    /// Whether `cmds`, as a group, can skip the overlay's bookkeeping: one command that
    /// pushes at most one op and reads its key before pushing. Its only failure after the
    /// push (the memory limit) needs the size delta alone.
    pub(crate) fn untracked(cmds: &[Command]) -> bool {
        match cmds {
            [
                Command::Set { .. }
                | Command::IncrBy { .. }
                | Command::CompareAndSwap { .. }
                | Command::Expire { .. },
            ] => true,
            // One write after its preconditions: the checks read before the one push.
            [Command::Batch(b)] => b.ops.len() == 1,
            _ => false,
        }
    }

    pub(crate) fn new(
        base: &'a Keyspace,
        now_ms: u64,
        memory_limit_size: Option<u64>,
        scratch: &'a mut OverlayScratch,
    ) -> Self {
        scratch.changes.clear();
        scratch.undo.clear();
        if scratch.changes.capacity() > 4096 {
            // Don't keep a huge table around after one big batch.
            *scratch = OverlayScratch::default();
        }
        Self {
            base,
            scratch,
            memory_delta: 0,
            memory_limit_size,
            patched_size: 0,
            now_ms,
            track: true,
        }
    }

    /// Turns off the bookkeeping for a group for which [`Overlay::untracked`] holds.
    pub(crate) fn set_untracked(&mut self) {
        self.track = false;
    }

    /// The entry as stored, expired or not.
    fn raw(&self, key: &[u8]) -> Option<&Entry> {
        if self.scratch.changes.is_empty() {
            return self.base.entry_raw(key);
        }
        match self.scratch.changes.get(key) {
            Some(pending) => pending.as_ref(),
            None => self.base.entry_raw(key),
        }
    }

    /// The live entry at `now`.
    pub(crate) fn now_ms(&self) -> u64 {
        self.now_ms
    }

    pub(crate) fn live(&self, key: &[u8]) -> Option<&Entry> {
        self.raw(key).filter(|e| !e.is_expired(self.now_ms))
    }

    fn push(&mut self, op: Op, out: &mut Vec<Op>) {
        let key = op.key();
        // The size delta serves the memory limit alone: without one, a whole write or a
        // delete needs no look at the entry it replaces (the apply finds it once).
        let sized = self.memory_limit_size.is_some();
        let before = if sized || !matches!(op, Op::Set { .. } | Op::Del { .. }) {
            self.raw(key)
        } else {
            None
        };
        let before_size = before.map_or(0, |e| entry_size(key, e) as i64);
        let after = match &op {
            Op::Set {
                value,
                expire_at_ms,
                ..
            } => Some(Entry {
                value: value.clone(),
                expire_at_ms: *expire_at_ms,
            }),
            Op::Del { .. } => None,
            Op::Expire { expire_at_ms, .. } => before.cloned().map(|mut e| {
                e.expire_at_ms = *expire_at_ms;
                e
            }),
            // Planned with its result (`plan_set_range`); the expiry stays.
            Op::SetRange { result, .. } => Some(Entry {
                value: result.get().cloned().unwrap_or_default(),
                expire_at_ms: before.and_then(|e| e.expire_at_ms),
            }),
        };
        if sized {
            let after_size = after.as_ref().map_or(0, |e| entry_size(key, e) as i64);
            self.memory_delta += after_size - before_size;
        }
        if !self.track {
            out.push(op);
            return;
        }
        let previous = self.scratch.changes.insert(key.clone(), after);
        self.scratch.undo.push((out.len(), previous));
        out.push(op);
    }

    /// Undoes the changes recorded since `mark`, newest first; `out` still holds the ops
    /// that made them.
    fn rollback(&mut self, mark: usize, delta_mark: i64, out: &[Op]) {
        while self.scratch.undo.len() > mark {
            let Some((index, previous)) = self.scratch.undo.pop() else {
                break;
            };
            let key = out[index].key();
            match previous {
                Some(p) => {
                    self.scratch.changes.insert(key.clone(), p);
                }
                None => {
                    self.scratch.changes.remove(key.as_bytes());
                }
            }
        }
        self.memory_delta = delta_mark;
    }

    fn resolve_expiry(&self, key: &[u8], expiry: Expiry) -> Result<Option<u64>> {
        match expiry {
            Expiry::Never => Ok(None),
            Expiry::Keep => Ok(self.live(key).and_then(|e| e.expire_at_ms)),
            Expiry::AtMs(at) => Ok(Some(at)),
            Expiry::InMs(0) => Err(AtlasError::InvalidArgument {
                name: "ttl_ms",
                reason: "must be positive".to_owned(),
            }),
            Expiry::InMs(ms) => {
                self.now_ms
                    .checked_add(ms)
                    .map(Some)
                    .ok_or_else(|| AtlasError::InvalidArgument {
                        name: "ttl_ms",
                        reason: format!("{ms} ms from now overflows"),
                    })
            }
        }
    }

    /// A set that honours an expiry already in the past by deleting instead.
    fn set(&mut self, key: &[u8], value: Bytes, at: Option<u64>, out: &mut Vec<Op>) {
        if at.is_some_and(|at| at <= self.now_ms) {
            self.push(
                Op::Del {
                    key: Key::from(key),
                    expired: true,
                },
                out,
            );
        } else {
            self.push(
                Op::Set {
                    key: Key::from(key),
                    value,
                    expire_at_ms: at,
                },
                out,
            );
        }
    }

    fn delete(&mut self, key: &[u8], out: &mut Vec<Op>) -> bool {
        let live = self.live(key).is_some();
        if self.raw(key).is_some() {
            // An expired entry is deleted too (logged as an expiration), so the memory
            // it holds is freed; the reply counts only live keys.
            self.push(
                Op::Del {
                    key: Key::from(key),
                    expired: !live,
                },
                out,
            );
        }
        live
    }

    /// Plans `cmd`: on success returns the reply and appends its ops to `out`; on error
    /// nothing of it stays in the overlay or in `out`.
    pub(crate) fn plan(&mut self, cmd: &Command, out: &mut Vec<Op>) -> Result<Reply> {
        let mark = self.scratch.undo.len();
        let delta_mark = self.memory_delta;
        let out_mark = out.len();
        let result = self.plan_inner(cmd, out).and_then(|reply| {
            let grew = self.memory_delta > delta_mark;
            if grew && let Some(limit) = self.memory_limit_size {
                let used = (self.base.memory_size() as i64 + self.memory_delta).max(0) as u64;
                if used > limit {
                    return Err(AtlasError::MemoryLimit {
                        used_size: (self.base.memory_size() as i64 + delta_mark).max(0) as u64,
                        limit_size: limit,
                    });
                }
            }
            Ok(reply)
        });
        if result.is_err() {
            self.rollback(mark, delta_mark, out);
            out.truncate(out_mark);
        }
        self.scratch.undo.clear();
        result
    }

    /// Plans a set of `key` (already validated) under `options`; returns whether it is
    /// written (NX/XX). Shared by [`Command::Set`] and [`Tx`], which need not build a
    /// command (and copy the key) for it.
    pub(crate) fn plan_set(
        &mut self,
        key: &[u8],
        value: Bytes,
        options: SetOptions,
        out: &mut Vec<Op>,
    ) -> Result<bool> {
        // A plain set need not look the key up here (push does, once).
        let go = match options.condition {
            SetCondition::Always => true,
            SetCondition::IfAbsent => self.live(key).is_none(),
            SetCondition::IfPresent => self.live(key).is_some(),
        };
        if go {
            let at = self.resolve_expiry(key, options.expiry)?;
            self.set(key, value, at, out);
        }
        Ok(go)
    }

    /// Plans writing `bytes` at `offset` of `key`'s value (checked by the caller: a valid
    /// key, a result within VALUE_SIZE_MAX, `bytes` not empty); returns the value's new
    /// length. Copies the old value once, into the result the op carries to the keyspace.
    /// An expired entry is deleted first (logged), so the range write applies to nothing
    /// on replay too.
    /// Bytes of values the group's range writes built so far.
    pub(crate) fn patched_size(&self) -> u64 {
        self.patched_size
    }

    pub(crate) fn plan_set_range(
        &mut self,
        key: &[u8],
        offset: u64,
        bytes: Bytes,
        out: &mut Vec<Op>,
    ) -> u64 {
        if self.raw(key).is_some_and(|e| e.is_expired(self.now_ms)) {
            self.delete(key, out);
        }
        let old = self.live(key).map(|e| e.value.clone()).unwrap_or_default();
        // `old` is shared with the keyspace, so `patch` copies it: the one copy.
        let result = crate::op::patch(old, offset, &bytes);
        let len = result.len() as u64;
        self.patched_size = self.patched_size.saturating_add(len);
        self.push(
            Op::SetRange {
                key: Key::from(key),
                offset,
                bytes,
                result: crate::op::PatchedValue::known(result),
            },
            out,
        );
        len
    }

    pub(crate) fn plan_inner(&mut self, cmd: &Command, out: &mut Vec<Op>) -> Result<Reply> {
        match cmd {
            Command::Tx(f) => {
                let Some(f) = f.0.lock().take() else {
                    return Err(AtlasError::TxAborted);
                };
                let mut tx = Tx::new(self, out, false);
                f(&mut tx)?;
                Ok(Reply::Bool(true))
            }
            Command::Set {
                key,
                value,
                options,
            } => self
                .plan_set(key, value.clone(), *options, out)
                .map(Reply::Bool),
            Command::Delete { keys } => {
                let mut n = 0;
                for key in keys {
                    n += u64::from(self.delete(key, out));
                }
                Ok(Reply::Count(n))
            }
            Command::Expire { key, expiry } => {
                let Some(current_at) = self.live(key).map(|e| e.expire_at_ms) else {
                    return Ok(Reply::Bool(false));
                };
                let at = self.resolve_expiry(key, *expiry)?;
                if at.is_some_and(|at| at <= self.now_ms) {
                    self.push(
                        Op::Del {
                            key: key.clone(),
                            expired: true,
                        },
                        out,
                    );
                    return Ok(Reply::Bool(true));
                }
                if current_at == at {
                    // Persist on a key without expiry is a no-op, as in Redis; an identical
                    // expire still answers true but needs no record.
                    return Ok(Reply::Bool(at.is_some()));
                }
                self.push(
                    Op::Expire {
                        key: key.clone(),
                        expire_at_ms: at,
                    },
                    out,
                );
                Ok(Reply::Bool(true))
            }
            Command::IncrBy { key, delta } => {
                let entry = self.live(key);
                let current = match &entry {
                    None => 0,
                    Some(e) => helios_core::digits::parse_i64_canonical(&e.value)
                        .ok_or_else(|| AtlasError::NotAnInteger { key: key.clone() })?,
                };
                let next = current
                    .checked_add(*delta)
                    .ok_or_else(|| AtlasError::IncrOverflow { key: key.clone() })?;
                let at = entry.and_then(|e| e.expire_at_ms);
                // The digits on the stack: one allocation, the value's.
                let (digits, start) = helios_core::digits::dec_i64(next);
                self.set(key, crate::copy_value(&digits[start..]), at, out);
                Ok(Reply::Int(next))
            }
            Command::CompareAndSwap { key, expected, new } => {
                let entry = self.live(key);
                let matches = match (entry, expected) {
                    (None, None) => true,
                    (Some(e), Some(x)) => e.value == *x,
                    _ => false,
                };
                if !matches {
                    return Ok(Reply::Bool(false));
                }
                match new {
                    Some(v) => {
                        let at = entry.and_then(|e| e.expire_at_ms);
                        self.set(key, v.clone(), at, out);
                    }
                    None => {
                        self.delete(key, out);
                    }
                }
                Ok(Reply::Bool(true))
            }
            Command::Batch(batch) => {
                for (key, cond) in &batch.preconditions {
                    let entry = self.live(key);
                    let ok = match cond {
                        Precondition::Absent => entry.is_none(),
                        Precondition::Present => entry.is_some(),
                        Precondition::Equals(v) => entry.is_some_and(|e| e.value == *v),
                    };
                    if !ok {
                        return Err(AtlasError::PreconditionFailed { key: key.clone() });
                    }
                }
                for op in &batch.ops {
                    match op {
                        BatchOp::Set { key, value, expiry } => {
                            let at = self.resolve_expiry(key, *expiry)?;
                            self.set(key, value.clone(), at, out);
                        }
                        BatchOp::Delete { key } => {
                            self.delete(key, out);
                        }
                        BatchOp::Expire { key, expiry } => {
                            self.plan_inner(
                                &Command::Expire {
                                    key: key.clone(),
                                    expiry: *expiry,
                                },
                                out,
                            )?;
                        }
                    }
                }
                Ok(Reply::Bool(true))
            }
            Command::ExpireDue { keys, now_ms } => {
                let mut n = 0;
                for key in keys {
                    if self.raw(key).is_some_and(|e| e.is_expired(*now_ms)) {
                        self.push(
                            Op::Del {
                                key: key.clone(),
                                expired: true,
                            },
                            out,
                        );
                        n += 1;
                    }
                }
                Ok(Reply::Count(n))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_batch_leaves_nothing() {
        let ks = Keyspace::new(0);
        let mut scratch = OverlayScratch::default();
        let mut o = Overlay::new(&ks, 100, None, &mut scratch);
        let mut out = Vec::new();
        o.plan(
            &Command::Set {
                key: "a".into(),
                value: Bytes::from("1"),
                options: SetOptions::default(),
            },
            &mut out,
        )
        .unwrap();
        let mut b = WriteBatch::new();
        b.set("b", "2", Expiry::Never)
            .require("zzz", Precondition::Present);
        assert!(matches!(
            o.plan(&Command::Batch(b), &mut out),
            Err(AtlasError::PreconditionFailed { .. })
        ));
        assert_eq!(out.len(), 1);
        assert!(o.live(b"b").is_none());
        assert!(o.live(b"a").is_some());
    }

    #[test]
    fn memory_limit_refuses_growth_but_not_deletes() {
        let ks = Keyspace::new(0);
        let mut scratch = OverlayScratch::default();
        let mut o = Overlay::new(&ks, 100, Some(300), &mut scratch);
        let mut out = Vec::new();
        let set = |k: &str, n: usize| Command::Set {
            key: k.into(),
            value: Bytes::from(vec![b'x'; n]),
            options: SetOptions::default(),
        };
        o.plan(&set("a", 100), &mut out).unwrap();
        assert!(matches!(
            o.plan(&set("b", 100), &mut out),
            Err(AtlasError::MemoryLimit { .. })
        ));
        o.plan(
            &Command::Delete {
                keys: vec!["a".into()],
            },
            &mut out,
        )
        .unwrap();
        o.plan(&set("b", 100), &mut out).unwrap();
    }
}
