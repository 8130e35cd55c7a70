//! [`Tx`]: a read-modify-write transaction run under the writer lock ([`crate::Atlas::transact`]).
//!
//! A transaction reads through the commit group's overlay (so it sees its own earlier
//! writes), and every write it makes becomes part of ONE AOF record: a crash replays all of
//! it or none of it, like any batch. The closure that drives a `Tx` runs under the writer
//! lock and a read lock of the keyspace, so it must be pure and short: no I/O, no calls back
//! into the store (a write would deadlock).
//!
//! A transaction is queued in the commit pipeline like any write, so under `always` it
//! shares its group's one fsync with concurrent writers (group commit).
//!
//! Invariants: each write method plans at most one op (and a refused one plans none); the ops of a transaction never
//! exceed [`BATCH_OPS_COUNT_MAX`] nor an estimated [`RECORD_SIZE_MAX`] (a write past either
//! is refused with [`AtlasError::BatchTooLarge`] and changes nothing); a write refused for
//! any reason (invalid key, memory limit) leaves the overlay as it was.

use crate::command::{self, Command, Expiry, Overlay, Reply, SetCondition, SetOptions};
use crate::db::KeyTtl;
use crate::error::{AtlasError, Result};
use crate::key::Key;
use crate::limits::{BATCH_OPS_COUNT_MAX, GROUP_PATCHED_SIZE_MAX, RECORD_SIZE_MAX, VALUE_SIZE_MAX};
use crate::op::{Op, encoded_size_max};
use bytes::Bytes;

/// A transaction: reads see the transaction's own earlier writes; writes are logged
/// together as one atomic AOF record when the closure returns `Ok`.
pub struct Tx<'t, 'a> {
    overlay: &'t mut Overlay<'a>,
    ops: &'t mut Vec<Op>,
    ops_start: usize,
    record_size_max: u64,
    read_only: bool,
}

impl std::fmt::Debug for Tx<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tx")
            .field("op_count", &self.op_count())
            .field("read_only", &self.read_only)
            .finish()
    }
}

impl<'t, 'a> Tx<'t, 'a> {
    pub(crate) fn new(overlay: &'t mut Overlay<'a>, ops: &'t mut Vec<Op>, read_only: bool) -> Self {
        let ops_start = ops.len();
        Self {
            overlay,
            ops,
            ops_start,
            record_size_max: 64,
            read_only,
        }
    }

    /// The time the transaction runs at (the store's clock, read once).
    pub fn now_ms(&self) -> u64 {
        self.overlay.now_ms()
    }

    /// Whether writes are refused (a view from [`crate::Atlas::view`]).
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Ops planned so far (each becomes part of the one record).
    pub fn op_count(&self) -> usize {
        self.ops.len() - self.ops_start
    }

    /// The ops planned so far, in order (each becomes part of the one record).
    pub fn written(&self) -> &[Op] {
        &self.ops[self.ops_start..]
    }

    /// The keys of the writes planned so far (a key written twice appears twice).
    pub fn written_keys(&self) -> impl Iterator<Item = &Key> {
        self.ops[self.ops_start..].iter().map(Op::key)
    }

    /// The value of `key`, if live.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Option<Bytes> {
        self.overlay.live(key.as_ref()).map(|e| e.value.clone())
    }

    /// Whether `key` is live.
    pub fn exists(&self, key: impl AsRef<[u8]>) -> bool {
        self.overlay.live(key.as_ref()).is_some()
    }

    /// The time-to-live of `key`.
    pub fn ttl(&self, key: impl AsRef<[u8]>) -> KeyTtl {
        let now = self.now_ms();
        match self.overlay.live(key.as_ref()) {
            None => KeyTtl::Missing,
            Some(e) => match e.expire_at_ms {
                None => KeyTtl::Persistent,
                Some(at) => KeyTtl::Expires {
                    at_ms: at,
                    remaining_ms: at.saturating_sub(now).max(1),
                },
            },
        }
    }

    fn run(&mut self, cmd: Command, key_size: u64, value_size: u64) -> Result<Reply> {
        self.check_write(key_size, value_size)?;
        command::validate(&cmd)?;
        let reply = self.overlay.plan_inner(&cmd, self.ops)?;
        self.record_size_max += encoded_size_max(key_size, value_size);
        Ok(reply)
    }

    /// Refuses a write in a read-only transaction, or one past the batch limits.
    fn check_write(&self, key_size: u64, value_size: u64) -> Result<()> {
        if self.read_only {
            return Err(AtlasError::InvalidArgument {
                name: "tx",
                reason: "this transaction is read-only".to_owned(),
            });
        }
        let size = encoded_size_max(key_size, value_size);
        if self.op_count() >= BATCH_OPS_COUNT_MAX {
            return Err(AtlasError::BatchTooLarge {
                detail: format!("more than {BATCH_OPS_COUNT_MAX} writes in one transaction"),
            });
        }
        if self.record_size_max + size > RECORD_SIZE_MAX {
            return Err(AtlasError::BatchTooLarge {
                detail: format!("its AOF record could exceed {RECORD_SIZE_MAX} bytes"),
            });
        }
        Ok(())
    }

    /// Sets `key` to `value` with `expiry` (`Expiry::Keep` keeps the current TTL).
    pub fn set(
        &mut self,
        key: impl AsRef<[u8]>,
        value: impl Into<Bytes>,
        expiry: Expiry,
    ) -> Result<()> {
        self.set_with(
            key,
            value,
            SetOptions {
                condition: SetCondition::Always,
                expiry,
            },
        )
        .map(|_| ())
    }

    /// Sets `key` with NX/XX and expiry options; returns whether it was written.
    pub fn set_with(
        &mut self,
        key: impl AsRef<[u8]>,
        value: impl Into<Bytes>,
        options: SetOptions,
    ) -> Result<bool> {
        let key = key.as_ref();
        let value = value.into();
        let (ks, vs) = (key.len() as u64, value.len() as u64);
        self.check_write(ks, vs)?;
        // As `Command::Set` is validated and planned, without copying the key into one.
        command::validate_key(key)?;
        command::validate_value(key, &value)?;
        let written = self.overlay.plan_set(key, value, options, self.ops)?;
        self.record_size_max += encoded_size_max(ks, vs);
        Ok(written)
    }

    /// Writes `bytes` into `key`'s value at byte `offset` (Redis's SETRANGE), zero-padding
    /// a shorter value, keeping its expiry; a missing key is created. Returns the value's
    /// length afterwards. Logged as the patch ([`Op::SetRange`]), not the whole value; the
    /// old value is copied once. Empty `bytes` change nothing (and create nothing), as in
    /// Redis. Refused with [`AtlasError::ValueTooLarge`] past [`VALUE_SIZE_MAX`].
    pub fn set_range(&mut self, key: impl AsRef<[u8]>, offset: u64, bytes: &[u8]) -> Result<u64> {
        let key = key.as_ref();
        let ks = key.len() as u64;
        let vs = bytes.len() as u64;
        let current = self.overlay.live(key).map_or(0, |e| e.value.len() as u64);
        if bytes.is_empty() {
            return Ok(current);
        }
        self.check_write(ks, vs + 24)?;
        command::validate_key(key)?;
        let end = offset.saturating_add(vs);
        if end > VALUE_SIZE_MAX {
            return Err(AtlasError::ValueTooLarge {
                key: Key::from(key),
                size: end,
                size_max: VALUE_SIZE_MAX,
            });
        }
        let built = current.max(end);
        if self.overlay.patched_size().saturating_add(built) > GROUP_PATCHED_SIZE_MAX {
            return Err(AtlasError::BatchTooLarge {
                detail: format!(
                    "range writes in one commit would build more than {GROUP_PATCHED_SIZE_MAX} bytes of values"
                ),
            });
        }
        let len = self
            .overlay
            .plan_set_range(key, offset, Bytes::copy_from_slice(bytes), self.ops);
        // The range op, and the delete of an expired entry that may precede it.
        self.record_size_max += encoded_size_max(ks, vs) + 24 + encoded_size_max(ks, 0);
        Ok(len)
    }

    /// Deletes `key`; returns whether it was live.
    pub fn delete(&mut self, key: impl AsRef<[u8]>) -> Result<bool> {
        let key = key.as_ref();
        match self.run(
            Command::Delete {
                keys: vec![Key::from(key)],
            },
            key.len() as u64,
            0,
        )? {
            Reply::Count(n) => Ok(n > 0),
            _ => Ok(false),
        }
    }

    /// Changes the expiry of `key` (`Expiry::Never` removes it; a time not after now
    /// deletes the key). Returns whether the key is live (for `Never`: whether a TTL was
    /// removed). `Expiry::Keep` is refused.
    pub fn expire(&mut self, key: impl AsRef<[u8]>, expiry: Expiry) -> Result<bool> {
        let key = key.as_ref();
        if expiry == Expiry::Keep {
            return Err(AtlasError::InvalidArgument {
                name: "expiry",
                reason: "Keep is not an expiry change".to_owned(),
            });
        }
        match self.run(
            Command::Expire {
                key: Key::from(key),
                expiry,
            },
            key.len() as u64,
            0,
        )? {
            Reply::Bool(b) => Ok(b),
            _ => Ok(false),
        }
    }
}
