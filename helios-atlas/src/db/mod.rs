//! [`Atlas`]: the embeddable handle. Owns the commit pipeline (group commit), the AOF
//! writer, snapshots and compaction, the maintenance thread and the change feed.
//!
//! # Write path
//! A write is validated, then queued in the pipeline. The first writer to find no leader
//! becomes the leader: it takes every queued command (a *group*), plans each against the
//! keyspace plus the group's earlier effects, encodes one AOF record per effective
//! command, appends them with one write, fsyncs once if the policy is `always`, and only
//! then applies the records to the keyspace, publishes them to the change feed and wakes
//! the writers. So concurrent writers share one fsync (group commit), a reader never sees
//! a write that is not yet logged, and a write that could not be logged is never
//! acknowledged. Afterwards the leader hands leadership to the oldest queued writer, so
//! no thread leads forever. An uncontended writer leads a group of one without queueing.
//!
//! Under `everysec` and `no` there is no fsync to share, and a group's hand-offs would
//! only add context switches: each writer runs the same plan-append-apply steps for its
//! own command, serialized by the writer lock.
//!
//! # Fail-stop
//! A failed append or fsync poisons the store: the group's writers get the error, and
//! every later write, sync, rotation and snapshot gets [`AtlasError::PreviousIo`]. Reads
//! go on. Nothing is retried: each log file is a [`FailStopFile`], whose fsyncs run one
//! at a time and whose first failure is final, so that no fsync racing a failed one
//! (the `everysec` timer against a commit leader, say) can report success for data the
//! kernel dropped.
//!
//! # Snapshots
//! Taking a snapshot first rotates the AOF (O(1) under the writer lock: three fsyncs, of
//! the old segment, the new one and the directory). The snapshot itself is then
//! built off to the side from the previous snapshot plus the closed segments (log
//! compaction), never from the live keyspace, so writers are not stopped for O(keys) time.
//!
//! # Locks, in the order they may be taken
//! `snapshot_lock` -> `writer` -> `keyspace` (read or write) -> `feed.segments` ->
//! `feed.state`; and `pipeline` -> a slot's mutex (to hand leadership on). The pipeline
//! mutex is never held while taking any of the first group. The writer lock is held
//! across the group's fsync (`always`) and the rotation's fsyncs: `stats()` takes it
//! briefly and may wait for one; reads of keys never do.

use crate::aof::{self, Record};
use crate::backup::{self, BackupManifest};
use crate::command::{
    self, Command, Expiry, Overlay, OverlayScratch, Reply, SetOptions, WriteBatch,
};
use crate::error::{AtlasError, Result};
use crate::feed::{FeedShared, Subscription};
use crate::histogram::{AtomicHistogram, Histogram, SNAPSHOT_BOUNDS_MS};
use crate::key::Key;
use crate::keyspace::{Keyspace, ReplayState};
use crate::limits::{
    EXPIRE_PER_TICK_COUNT_MAX, EXPIRE_PER_TICK_SIZE_MAX, GET_MANY_COUNT_MAX, SCAN_LIMIT_MAX,
};
use crate::options::{FsyncPolicy, Options};
use crate::recovery;
use crate::snapshot;
use crate::storage::{DirLock, FailStopFile, Storage, StorageFile};
use crate::tx::Tx;
use bytes::Bytes;
use helios_core::Clock;
use parking_lot::{Condvar, Mutex, RwLock};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

mod compaction;
mod maintenance;
mod pipeline;

use maintenance::maintenance_loop;

/// A page of a prefix scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanPage {
    /// Keys and values, in key order.
    pub entries: Vec<(Key, Bytes)>,
    /// Pass as `cursor` to get the next page; `None` when the scan is complete.
    pub next_cursor: Option<Key>,
}

/// The time-to-live of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyTtl {
    /// The key does not exist (or has expired).
    Missing,
    /// The key exists and does not expire.
    Persistent,
    /// The key expires at `at_ms`, `remaining_ms` from now.
    Expires {
        /// Absolute expiry time.
        at_ms: u64,
        /// Time left, in ms (at least 1).
        remaining_ms: u64,
    },
}

/// Counters and sizes of a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Keys held (expired ones not yet deleted included).
    pub key_count: u64,
    /// Keys with an expiry.
    pub expiring_count: u64,
    /// Estimated memory of keys and values (the change feed's ring not included).
    pub memory_size: u64,
    /// Estimated memory of the change feed's ring of recent records.
    pub feed_buffer_size: u64,
    /// The configured memory limit.
    pub memory_limit_size: Option<u64>,
    /// Sequence number of the last applied record.
    pub last_seq: u64,
    /// Records appended since open.
    pub records_written_count: u64,
    /// Bytes appended to the AOF since open.
    pub aof_written_size: u64,
    /// Bytes of the AOF on disk: every segment's header and records (what a snapshot
    /// and compaction shrink). Padding preallocated past the current segment's last
    /// record is not counted.
    pub aof_size: u64,
    /// How long the last snapshot took, ms (on the store's clock), if one ran since open.
    pub snapshot_last_duration_ms: Option<u64>,
    /// How long each snapshot since open took, ms (on the store's clock).
    pub snapshot_durations: Histogram,
    /// Commit groups written since open (each one write, and one fsync under `always`).
    pub groups_committed_count: u64,
    /// AOF fsyncs since open (all policies, rotation included).
    pub fsync_count: u64,
    /// AOF segments on disk.
    pub aof_segment_count: u64,
    /// Bytes in the current AOF segment.
    pub aof_current_size: u64,
    /// Snapshots written since open.
    pub snapshots_written_count: u64,
    /// Sequence number of the newest snapshot on disk, if any.
    pub snapshot_last_seq: Option<u64>,
    /// Keys deleted by expiry (active or in a write) since open.
    pub expired_count: u64,
    /// The I/O error that stopped writes, if any.
    pub write_error: Option<String>,
    /// How long ago (ms, on the store's clock) the durability horizon is: every write
    /// appended before it is durable. It is the start of the last successful AOF fsync, or
    /// the first write after an idle spell (nothing unsynced, no fsync running).
    pub fsync_last_ok_age_ms: u64,
    /// Writes that had to fsync before their acknowledgement because the durability
    /// horizon was older than `Options::everysec_lag_max_ms` (everysec only).
    pub fsync_lag_stall_count: u64,
}

#[derive(Debug)]
enum SlotState {
    Waiting,
    Lead,
    Done(Result<Reply>),
}

#[derive(Debug)]
struct Slot {
    state: Mutex<SlotState>,
    cv: Condvar,
}

impl Slot {
    fn new() -> Arc<Slot> {
        Arc::new(Slot {
            state: Mutex::new(SlotState::Waiting),
            cv: Condvar::new(),
        })
    }

    fn set(&self, s: SlotState) {
        *self.state.lock() = s;
        self.cv.notify_one();
    }
}

#[derive(Debug)]
struct Pending {
    cmd: Command,
    slot: Arc<Slot>,
}

#[derive(Debug, Default)]
struct Pipeline {
    queue: Vec<Pending>,
    leader: bool,
}

#[derive(Debug)]
struct Writer {
    file: Arc<dyn StorageFile>,
    segment_start: u64,
    segment_size: u64,
    // Sizes of the closed segments on disk, by start sequence number (the current one is
    // `segment_size`).
    closed_sizes: BTreeMap<u64, u64>,
    // Invariant: the next record appended gets this sequence number.
    next_seq: u64,
    // Invariant: no snapshot on disk is newer than the newest listed here.
    snapshots: Vec<u64>,
    buf: Vec<u8>,
    scratch: OverlayScratch,
}

#[derive(Debug)]
struct Counters {
    aof_bytes: AtomicU64,
    // u64::MAX until a snapshot ran.
    snapshot_ms: AtomicU64,
    snapshot_durations: AtomicHistogram,
    records_written: AtomicU64,
    groups: AtomicU64,
    fsyncs: AtomicU64,
    snapshots: AtomicU64,
    expired: AtomicU64,
    lag_stalls: AtomicU64,
}

#[derive(Debug, Default)]
struct Maintenance {
    stop: Mutex<bool>,
    cv: Condvar,
    handle: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    options: Options,
    storage: Arc<dyn Storage>,
    clock: Arc<dyn Clock>,
    keyspace: RwLock<Keyspace>,
    pipeline: Mutex<Pipeline>,
    writer: Mutex<Writer>,
    // Set before any write error is reported; never cleared (fail-stop).
    poisoned: AtomicBool,
    poison_cause: Mutex<Option<String>>,
    closed: AtomicBool,
    // Writes appended but not yet fsynced (everysec / no).
    dirty: AtomicBool,
    feed: Arc<FeedShared>,
    counters: Counters,
    snapshot_lock: Mutex<()>,
    maintenance: Arc<Maintenance>,
    last_fsync_ms: AtomicU64,
    // Clock time before which every append is durable: the start of the last successful
    // fsync of the AOF (open made everything durable), or the time of the first write
    // after an idle spell (nothing unsynced and no fsync in flight before it), so the
    // everysec lag counts from the oldest write not yet fsynced.
    synced_through_ms: AtomicU64,
    // fsyncs started by `sync_now` and not finished: while one runs, the writes it covers
    // are not durable yet although `dirty` is clear.
    syncs_in_flight: AtomicU64,
    // A rotation runs: it fsyncs under the writer lock, so writers wait for the disk.
    rotating: AtomicBool,
    // Writers are fsyncing because the everysec fsync fell behind (logged once per
    // episode).
    lagging: AtomicBool,
    // An automatic snapshot thread is running.
    snapshot_running: AtomicBool,
    _lock: Box<dyn DirLock>,
}

/// The embeddable ATLAS store. `Send + Sync`; clones share one store.
///
/// Reads (`get`, `scan`, ...) take a shared lock on the keyspace: they never block each
/// other and never touch the disk. Writes go through the commit pipeline described in the
/// module docs and return only once logged (and fsynced, under `always`).
///
/// Dropping the last clone closes the store (flush and fsync). [`Atlas::close`] does the
/// same explicitly and reports errors.
#[derive(Debug, Clone)]
pub struct Atlas {
    inner: Arc<Inner>,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> AtlasError + '_ {
    move |e| AtlasError::io(path, e)
}

impl Atlas {
    /// Opens (creating if needed) the store in `dir`: locks it, recovers the newest valid
    /// snapshot plus the AOF after it, and starts the maintenance thread if configured.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Atlas> {
        options.validate()?;
        let dir = dir.as_ref().to_path_buf();
        let storage = options.storage.clone();
        // Durable before anything is written in it: a power loss must not take back the
        // directory of a store that acknowledged writes.
        storage
            .create_dir_durable(&dir)
            .map_err(|e| match e.kind() {
                io::ErrorKind::AlreadyExists | io::ErrorKind::NotADirectory => {
                    AtlasError::NotADirectory { dir: dir.clone() }
                }
                _ => AtlasError::io(&dir, e),
            })?;
        let lock = lock_dir_waiting_for_own_close(&*storage, &dir)?;
        let rec = recovery::recover(&*storage, &dir, options.aof_load_truncated)?;
        let keyspace = rec.keyspace;
        let next_seq = keyspace.last_seq() + 1;
        let mut segments = rec.listing.segments.clone();
        // What was replayed may never have been fsynced (its writer was killed, or its
        // fsync failed, so it was never acknowledged), and the last segment's name may not
        // be durable (a rotation killed between R2 and R3): a reader must not see a value
        // that a power loss takes back, nor a writer be acknowledged in a file whose name
        // can vanish. So the last segment and the directory are fsynced before the store
        // serves anything. Older segments were fsynced by the rotation that closed them
        // (R1); a cut made by recovery is durable by itself (`Storage::truncate`).
        let (file, segment_start, segment_size) = match rec.append_to {
            Some((start, size)) if size > 0 => {
                let path = dir.join(aof::segment_name(start));
                let file: Arc<dyn StorageFile> = Arc::new(FailStopFile::new(
                    storage.open_log(&path, size).map_err(io_err(&path))?,
                ));
                file.sync().map_err(io_err(&path))?;
                storage.sync_dir(&dir).map_err(io_err(&dir))?;
                (file, start, size)
            }
            _ => {
                if let Some((start, size)) = rec.last_segment
                    && size > 0
                {
                    // Replayed but not appended to (a version 1 segment, say).
                    let path = dir.join(aof::segment_name(start));
                    let file = storage.open_log(&path, size).map_err(io_err(&path))?;
                    file.sync().map_err(io_err(&path))?;
                }
                // Either nothing to append to, or the last segment's header was torn:
                // (re)create the segment for the next record. Its directory fsync makes
                // every name durable.
                let (file, size) = create_segment(&*storage, &dir, next_seq)?;
                if !segments.contains(&next_seq) {
                    segments.push(next_seq);
                }
                (file, next_seq, size)
            }
        };
        // The closed segments' sizes, from the file system (those recovery skipped were
        // not read).
        let mut closed_sizes = BTreeMap::new();
        for &start in segments.iter().filter(|&&s| s != segment_start) {
            let path = dir.join(aof::segment_name(start));
            closed_sizes.insert(start, storage.file_size(&path).map_err(io_err(&path))?);
        }
        let feed = Arc::new(FeedShared::new(
            options.feed_buffer_count,
            options.feed_buffer_size,
            keyspace.last_seq(),
            storage.clone(),
            dir.clone(),
            segments,
            options.clock.clone(),
        ));
        tracing::info!(
            dir = %dir.display(),
            keys = keyspace.key_count(),
            last_seq = keyspace.last_seq(),
            "ATLAS opened"
        );
        let inner = Arc::new(Inner {
            dir,
            clock: options.clock.clone(),
            storage,
            keyspace: RwLock::new(keyspace),
            pipeline: Mutex::new(Pipeline::default()),
            writer: Mutex::new(Writer {
                file,
                segment_start,
                segment_size,
                closed_sizes,
                next_seq,
                snapshots: rec.listing.snapshots.clone(),
                buf: Vec::with_capacity(64 * 1024),
                scratch: OverlayScratch::default(),
            }),
            poisoned: AtomicBool::new(false),
            poison_cause: Mutex::new(None),
            closed: AtomicBool::new(false),
            dirty: AtomicBool::new(false),
            feed,
            counters: Counters {
                aof_bytes: AtomicU64::new(0),
                snapshot_ms: AtomicU64::new(u64::MAX),
                snapshot_durations: AtomicHistogram::new(SNAPSHOT_BOUNDS_MS),
                records_written: AtomicU64::new(0),
                groups: AtomicU64::new(0),
                fsyncs: AtomicU64::new(0),
                snapshots: AtomicU64::new(0),
                expired: AtomicU64::new(0),
                lag_stalls: AtomicU64::new(0),
            },
            snapshot_lock: Mutex::new(()),
            maintenance: Arc::new(Maintenance::default()),
            last_fsync_ms: AtomicU64::new(0),
            synced_through_ms: AtomicU64::new(options.clock.now_ms()),
            syncs_in_flight: AtomicU64::new(0),
            rotating: AtomicBool::new(false),
            lagging: AtomicBool::new(false),
            snapshot_running: AtomicBool::new(false),
            _lock: lock,
            options,
        });
        if let Some(interval_ms) = inner.options.maintenance_interval_ms {
            let weak = Arc::downgrade(&inner);
            let shared = inner.maintenance.clone();
            let handle = std::thread::Builder::new()
                .name("atlas-maintenance".into())
                .spawn(move || maintenance_loop(weak, shared, interval_ms))
                .map_err(|e| AtlasError::io(&inner.dir, e))?;
            *inner.maintenance.handle.lock() = Some(handle);
        }
        Ok(Atlas { inner })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    fn now_ms(&self) -> u64 {
        self.inner.clock.now_ms()
    }

    // ----- reads: shared lock, no disk -----

    /// The value of `key`, if it exists and has not expired.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Option<Bytes> {
        let ks = self.inner.keyspace.read();
        let entry = ks.entry_raw(key.as_ref())?;
        // Read the clock only for keys that expire: most don't, and a clock read in a
        // tight loop of lookups costs more than the lookup.
        if entry.expire_at_ms.is_some() && entry.is_expired(self.now_ms()) {
            return None;
        }
        Some(entry.value.clone())
    }

    /// The values of `keys`, in order (at most [`GET_MANY_COUNT_MAX`] keys).
    pub fn get_many<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<Vec<Option<Bytes>>> {
        if keys.len() > GET_MANY_COUNT_MAX {
            return Err(AtlasError::InvalidArgument {
                name: "keys",
                reason: format!("{} keys; the limit is {GET_MANY_COUNT_MAX}", keys.len()),
            });
        }
        let now = self.now_ms();
        let ks = self.inner.keyspace.read();
        Ok(keys
            .iter()
            .map(|k| ks.entry(k.as_ref(), now).map(|e| e.value.clone()))
            .collect())
    }

    /// Whether `key` exists and has not expired.
    pub fn exists(&self, key: impl AsRef<[u8]>) -> bool {
        let now = self.now_ms();
        self.inner
            .keyspace
            .read()
            .entry(key.as_ref(), now)
            .is_some()
    }

    /// The time-to-live of `key`.
    pub fn ttl(&self, key: impl AsRef<[u8]>) -> KeyTtl {
        let now = self.now_ms();
        match self.inner.keyspace.read().entry(key.as_ref(), now) {
            None => KeyTtl::Missing,
            Some(e) => match e.expire_at_ms {
                None => KeyTtl::Persistent,
                Some(at) => KeyTtl::Expires {
                    at_ms: at,
                    remaining_ms: at - now,
                },
            },
        }
    }

    /// Up to `limit` live keys starting with `prefix`, in key order, after `cursor` (the
    /// `next_cursor` of the previous page). Keys written between pages are seen if they
    /// sort after the cursor.
    pub fn scan(
        &self,
        prefix: impl AsRef<[u8]>,
        cursor: Option<&[u8]>,
        limit: usize,
    ) -> Result<ScanPage> {
        if limit == 0 || limit > SCAN_LIMIT_MAX {
            return Err(AtlasError::InvalidArgument {
                name: "limit",
                reason: format!("{limit} is outside 1..={SCAN_LIMIT_MAX}"),
            });
        }
        let now = self.now_ms();
        let (entries, more) = self
            .inner
            .keyspace
            .read()
            .scan(prefix.as_ref(), cursor, limit, now);
        let next_cursor = if more {
            entries.last().map(|(k, _)| k.clone())
        } else {
            None
        };
        Ok(ScanPage {
            entries,
            next_cursor,
        })
    }

    /// Number of keys held (expired keys not yet deleted included).
    pub fn key_count(&self) -> u64 {
        self.inner.keyspace.read().key_count()
    }

    /// Sequence number of the last applied record: subscribe from `last_seq() + 1` to see
    /// only what comes next.
    pub fn last_seq(&self) -> u64 {
        self.inner.keyspace.read().last_seq()
    }

    /// Whether a write committed now may wait for an fsync: always under
    /// [`FsyncPolicy::Always`]; under [`FsyncPolicy::Everysec`] while the background
    /// fsync is late, the horizon further back than midway between its one-second cadence
    /// and `everysec_lag_max_ms` (1.5 s by default; past the bound, a write fsyncs before
    /// it is acknowledged); under any policy while the AOF rotates to
    /// a new segment (a snapshot, or a full segment: it fsyncs under the writer lock).
    /// Otherwise a commit only appends to the AOF (a `write` to the page cache), so an
    /// async caller may run it on its own thread instead of handing it to a blocking pool.
    /// A hint, read without a lock: the lag can grow, or a rotation start, between the
    /// call and the write.
    pub fn writes_may_wait(&self) -> bool {
        let inner = &self.inner;
        if inner.rotating.load(Ordering::Acquire) {
            return true;
        }
        match inner.options.fsync {
            FsyncPolicy::Always => true,
            FsyncPolicy::No => false,
            FsyncPolicy::Everysec => {
                // Midway between the tick's cadence (an fsync about every second, the
                // horizon moving when it ends) and the bound: past it, the fsync is late.
                let late_ms = (inner.options.everysec_lag_max_ms + EVERYSEC_INTERVAL_MS) / 2;
                inner.unsynced_lag_ms().is_some_and(|lag| lag > late_ms)
            }
        }
    }

    /// Counters and sizes.
    pub fn stats(&self) -> Stats {
        let (key_count, expiring_count, memory_size, last_seq) = {
            let ks = self.inner.keyspace.read();
            (
                ks.key_count(),
                ks.expiring_count(),
                ks.memory_size(),
                ks.last_seq(),
            )
        };
        let (aof_current_size, aof_size, snapshot_last_seq) = {
            let w = self.inner.writer.lock();
            (
                w.segment_size,
                w.segment_size + w.closed_sizes.values().sum::<u64>(),
                w.snapshots.last().copied(),
            )
        };
        let c = &self.inner.counters;
        Stats {
            key_count,
            expiring_count,
            memory_size,
            feed_buffer_size: self.inner.feed.buffer_size(),
            memory_limit_size: self.inner.options.memory_limit_size,
            last_seq,
            records_written_count: c.records_written.load(Ordering::Relaxed),
            aof_written_size: c.aof_bytes.load(Ordering::Relaxed),
            aof_size,
            snapshot_durations: c.snapshot_durations.read(),
            snapshot_last_duration_ms: match c.snapshot_ms.load(Ordering::Relaxed) {
                u64::MAX => None,
                ms => Some(ms),
            },
            groups_committed_count: c.groups.load(Ordering::Relaxed),
            fsync_count: c.fsyncs.load(Ordering::Relaxed),
            aof_segment_count: self.inner.feed.segments.lock().len() as u64,
            aof_current_size,
            snapshots_written_count: c.snapshots.load(Ordering::Relaxed),
            snapshot_last_seq,
            expired_count: c.expired.load(Ordering::Relaxed),
            write_error: self.inner.poison_cause.lock().clone(),
            fsync_last_ok_age_ms: self
                .inner
                .clock
                .now_ms()
                .saturating_sub(self.inner.synced_through_ms.load(Ordering::Acquire)),
            fsync_lag_stall_count: c.lag_stalls.load(Ordering::Relaxed),
        }
    }

    /// Calls `f` with a consistent read-only view of the keyspace (all keys at one
    /// sequence number). Writers wait while `f` runs: keep it short, and do not call this
    /// store from inside `f` (a write would deadlock on the lock `f` runs under).
    pub fn with_keyspace<R>(&self, f: impl FnOnce(&Keyspace) -> R) -> R {
        f(&self.inner.keyspace.read())
    }

    // ----- writes: through the pipeline -----

    /// Sets `key` to `value` with no expiry.
    pub fn set(&self, key: impl AsRef<[u8]>, value: impl Into<Bytes>) -> Result<()> {
        self.set_with(key, value, SetOptions::default()).map(|_| ())
    }

    /// Sets `key` with NX/XX and expiry options. Returns whether the value was written.
    pub fn set_with(
        &self,
        key: impl AsRef<[u8]>,
        value: impl Into<Bytes>,
        options: SetOptions,
    ) -> Result<bool> {
        match self.inner.submit(Command::Set {
            key: Key::from(key.as_ref()),
            value: value.into(),
            options,
        })? {
            Reply::Bool(b) => Ok(b),
            other => unreachable_reply(other),
        }
    }

    /// Deletes `key`. Returns whether it existed.
    pub fn delete(&self, key: impl AsRef<[u8]>) -> Result<bool> {
        self.delete_many(&[key.as_ref()]).map(|n| n > 0)
    }

    /// Deletes `keys` atomically. Returns how many existed.
    pub fn delete_many<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<u64> {
        match self.inner.submit(Command::Delete {
            keys: keys.iter().map(|k| Key::from(k.as_ref())).collect(),
        })? {
            Reply::Count(n) => Ok(n),
            other => unreachable_reply(other),
        }
    }

    /// Makes `key` expire `ttl_ms` from now (logged as an absolute time). Returns whether
    /// the key exists.
    pub fn expire(&self, key: impl AsRef<[u8]>, ttl_ms: u64) -> Result<bool> {
        self.expire_with(key.as_ref(), Expiry::InMs(ttl_ms))
    }

    /// Makes `key` expire at `at_ms` (ms since the Unix epoch); a time in the past deletes
    /// it. Returns whether the key exists.
    pub fn expire_at(&self, key: impl AsRef<[u8]>, at_ms: u64) -> Result<bool> {
        self.expire_with(key.as_ref(), Expiry::AtMs(at_ms))
    }

    /// Removes the expiry of `key`. Returns whether an expiry was removed.
    pub fn persist(&self, key: impl AsRef<[u8]>) -> Result<bool> {
        self.expire_with(key.as_ref(), Expiry::Never)
    }

    fn expire_with(&self, key: &[u8], expiry: Expiry) -> Result<bool> {
        if expiry == Expiry::Keep {
            return Err(AtlasError::InvalidArgument {
                name: "expiry",
                reason: "Keep is not an expiry change".to_owned(),
            });
        }
        match self.inner.submit(Command::Expire {
            key: Key::from(key),
            expiry,
        })? {
            Reply::Bool(b) => Ok(b),
            other => unreachable_reply(other),
        }
    }

    /// Adds `delta` to the decimal integer at `key` (a missing key counts as 0) and
    /// returns the result. Keeps the key's expiry. Logged as the resulting set.
    pub fn incr_by(&self, key: impl AsRef<[u8]>, delta: i64) -> Result<i64> {
        match self.inner.submit(Command::IncrBy {
            key: Key::from(key.as_ref()),
            delta,
        })? {
            Reply::Int(n) => Ok(n),
            other => unreachable_reply(other),
        }
    }

    /// If `key` holds `expected` (`None`: is absent), replaces it with `new` (`None`:
    /// deletes it), keeping its expiry. Returns whether the swap happened.
    pub fn compare_and_swap(
        &self,
        key: impl AsRef<[u8]>,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool> {
        match self.inner.submit(Command::CompareAndSwap {
            key: Key::from(key.as_ref()),
            expected: expected.map(Bytes::copy_from_slice),
            new: new.map(Bytes::copy_from_slice),
        })? {
            Reply::Bool(b) => Ok(b),
            other => unreachable_reply(other),
        }
    }

    /// Applies `batch` atomically: all its preconditions hold and all its writes apply,
    /// in memory and on disk (one AOF record), or nothing does.
    pub fn write_batch(&self, batch: WriteBatch) -> Result<()> {
        self.inner.submit(Command::Batch(batch)).map(|_| ())
    }

    /// Runs `f` as one atomic read-modify-write transaction: under the writer lock, `f`
    /// reads through a [`Tx`] (seeing its own earlier writes) and writes through it; when
    /// `f` returns `Ok`, all its writes are logged as ONE AOF record (fsynced per policy),
    /// then applied. When `f` returns `Err`, nothing is written. `f` must be pure and
    /// short: it blocks every writer while it runs, and must not call this store.
    ///
    /// The transaction is queued in the commit pipeline like any write, so under `always`
    /// it shares its group's fsync with concurrent writers; that is why `f` must be
    /// `'static + Send` (the group's leader may run it on another thread): move what it
    /// needs in, and return what it produces.
    pub fn transact<R, E, F>(&self, f: F) -> std::result::Result<R, E>
    where
        F: for<'t, 'a> FnOnce(&mut Tx<'t, 'a>) -> std::result::Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<AtlasError> + Send + 'static,
    {
        let outs: Outs<R, E> = Arc::new(Mutex::new(vec![None]));
        let submitted = self.inner.submit(erase_tx(f, &outs, 0));
        let produced = outs.lock()[0].take();
        unerase_tx(submitted, produced)
    }

    /// Runs every closure of `fs` as its own atomic transaction (as [`Atlas::transact`]
    /// does for one), all in ONE commit group: their records are appended with one write
    /// and, under `always`, made durable by one fsync. Transactions run in order, and each
    /// sees the writes of those before it. Results come back in order; a transaction that
    /// fails (its closure returns `Err`, or the store refuses its writes) changes nothing
    /// and does not affect the others.
    ///
    /// This is the batching entry point for a server that gathers the writes of many
    /// clients (helios-atlasd's committer): one call per batch instead of one per client.
    pub fn transact_many<R, E, F>(&self, fs: Vec<F>) -> Vec<std::result::Result<R, E>>
    where
        F: for<'t, 'a> FnOnce(&mut Tx<'t, 'a>) -> std::result::Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<AtlasError> + Send + 'static,
    {
        // One result slot per transaction, all in one shared Vec (not an Arc each).
        let outs: Outs<R, E> = Arc::new(Mutex::new(fs.iter().map(|_| None).collect()));
        let cmds = fs
            .into_iter()
            .enumerate()
            .map(|(i, f)| erase_tx(f, &outs, i))
            .collect();
        let submitted = self.inner.submit_many(cmds);
        let mut produced = std::mem::take(&mut *outs.lock());
        submitted
            .into_iter()
            .zip(produced.iter_mut())
            .map(|(s, p)| unerase_tx(s, p.take()))
            .collect()
    }

    /// Runs `f` over a read-only [`Tx`] of the current state (writes through it fail).
    /// Takes only the keyspace's read lock; `f` must not call this store.
    pub fn view<R>(&self, f: impl for<'t, 'a> FnOnce(&mut Tx<'t, 'a>) -> R) -> R {
        let now = self.now_ms();
        let ks = self.inner.keyspace.read();
        let mut scratch = OverlayScratch::default();
        let mut overlay = Overlay::new(&ks, now, None, &mut scratch);
        let mut ops = Vec::new();
        let mut tx = Tx::new(&mut overlay, &mut ops, true);
        f(&mut tx)
    }

    /// Periodic work at time `now_ms`: under `everysec`, fsyncs the AOF if it has unsynced
    /// writes and the last fsync is a second old; then active expiry deletes (and logs as
    /// expirations) up to [`EXPIRE_PER_TICK_COUNT_MAX`] keys expired at `now_ms`. Returns
    /// how many. Calling it twice for the same time is harmless. The maintenance thread
    /// calls it every `maintenance_interval_ms` with the clock's time; embedders that run
    /// no thread, and tests, call it by hand.
    pub fn tick(&self, now_ms: u64) -> Result<u64> {
        self.inner.tick(now_ms)
    }

    /// Fsyncs the AOF now (useful under `everysec` and `no`; under `always` everything
    /// acknowledged is already synced, so this is just one more fsync).
    pub fn sync(&self) -> Result<()> {
        self.inner.check_writable()?;
        self.inner.sync_now()
    }

    /// Takes a snapshot now and starts a new AOF segment; old snapshots and segments past
    /// the retention are removed. Writers keep going meanwhile. Returns the snapshot's
    /// sequence number (`None` if nothing was ever written).
    pub fn snapshot(&self) -> Result<Option<u64>> {
        self.inner.snapshot(false)
    }

    /// Rewrites the AOF: a snapshot becomes the new base and every older segment and
    /// snapshot is removed (Redis 7's multi-part AOF rewrite: base + new increment). The
    /// change feed can then resume only from the new base on.
    pub fn rewrite_aof(&self) -> Result<Option<u64>> {
        self.inner.snapshot(true)
    }

    /// Writes a consistent, point-in-time backup of the store into `to` (created if
    /// missing; it must hold no file) while writers go on: the newest snapshot and the
    /// AOF segments after it up to the last acknowledged record, each fsynced, and a
    /// manifest of their sizes and checksums written last (`backup` module docs). The
    /// current segment is rotated first, as a snapshot does; snapshots and compaction wait
    /// for the copy. Restore with [`crate::restore_backup`], then open the directory.
    pub fn backup(&self, to: impl AsRef<Path>) -> Result<BackupManifest> {
        self.inner.backup(to.as_ref())
    }

    /// Subscribes to the changes under `prefix` from record `from_seq` on (1 for all that
    /// the AOF still holds; `last_seq() + 1` for only new ones).
    pub fn subscribe(&self, prefix: impl AsRef<[u8]>, from_seq: u64) -> Result<Subscription> {
        Subscription::new(self.inner.feed.clone(), prefix.as_ref().to_vec(), from_seq)
    }

    /// Closes the store: stops the maintenance thread, refuses new writes, fsyncs the AOF.
    /// Other clones then get [`AtlasError::Closed`] on writes; the directory lock is
    /// released when the last clone is dropped.
    pub fn close(&self) -> Result<()> {
        self.inner.close()
    }
}

/// Where the typed results of one call's transactions land, by index.
type Outs<R, E> = Arc<Mutex<Vec<Option<std::result::Result<R, E>>>>>;

/// Wraps a typed transaction closure as a [`Command::Tx`] whose typed result lands in
/// `outs[index]`.
fn erase_tx<R, E, F>(f: F, outs: &Outs<R, E>, index: usize) -> Command
where
    F: for<'t, 'a> FnOnce(&mut Tx<'t, 'a>) -> std::result::Result<R, E> + Send + 'static,
    R: Send + 'static,
    E: From<AtlasError> + Send + 'static,
{
    let out = outs.clone();
    let erased: command::TxBox = Box::new(move |tx: &mut Tx<'_, '_>| {
        let r = f(tx);
        let failed = r.is_err();
        if let Some(slot) = out.lock().get_mut(index) {
            *slot = Some(r);
        }
        if failed {
            Err(AtlasError::TxAborted)
        } else {
            Ok(())
        }
    });
    Command::Tx(command::TxFn(Mutex::new(Some(erased))))
}

/// The typed result of a transaction from its commit result and what its closure
/// produced (`None`: it never ran).
fn unerase_tx<R, E: From<AtlasError>>(
    submitted: Result<Reply>,
    produced: Option<std::result::Result<R, E>>,
) -> std::result::Result<R, E> {
    match (submitted, produced) {
        (Ok(_), Some(Ok(v))) => Ok(v),
        (Err(AtlasError::TxAborted), Some(Err(e))) => Err(e),
        (Err(e), _) => Err(E::from(e)),
        (Ok(_), _) => Err(E::from(AtlasError::TxAborted)),
    }
}

/// Gives up (or hands on) leadership when the leader is done, even if it panicked, so
/// the writers queued behind it are never stranded.
struct LeaderGuard<'a> {
    inner: &'a Inner,
}

impl Drop for LeaderGuard<'_> {
    fn drop(&mut self) {
        self.inner.release_leadership();
    }
}

/// Answers the writers of a group whose leader panicked before answering them.
struct GroupGuard {
    slots: Vec<Arc<Slot>>,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        for slot in self.slots.drain(..) {
            slot.set(SlotState::Done(Err(AtlasError::Io {
                path: PathBuf::new(),
                source: io::Error::other(
                    "the commit leader panicked; the write was not acknowledged",
                ),
            })));
        }
    }
}

/// Under `everysec`, the longest an appended write stays unsynced (plus one tick).
pub const EVERYSEC_INTERVAL_MS: u64 = 1000;

fn unreachable_reply<T>(reply: Reply) -> Result<T> {
    // The pipeline answers each command kind with its own reply kind; a mismatch is a bug.
    panic!("command answered with the wrong reply kind: {reply:?}")
}

/// Locks `dir`. A lock held by this very process is most likely a handle being dropped:
/// dropping the last `Atlas` while the maintenance thread is in a tick closes the store
/// on that thread a moment later. So such a lock is tried again for up to 2 s before the
/// open fails (another process's lock fails at once).
fn lock_dir_waiting_for_own_close(
    storage: &dyn Storage,
    dir: &Path,
) -> Result<Box<dyn crate::storage::DirLock>> {
    let mut tries = 0;
    loop {
        match storage.lock_dir(dir) {
            Ok(lock) => return Ok(lock),
            Err(e) => match AtlasError::lock_failed(storage, dir, e) {
                AtlasError::Locked {
                    holder_pid: Some(pid),
                    ..
                } if pid == std::process::id() && tries < 2000 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                other => return Err(other),
            },
        }
    }
}

fn create_segment(
    storage: &dyn Storage,
    dir: &Path,
    start_seq: u64,
) -> Result<(Arc<dyn StorageFile>, u64)> {
    let path = dir.join(aof::segment_name(start_seq));
    let file: Arc<dyn StorageFile> = Arc::new(FailStopFile::new(
        storage.create_log(&path).map_err(io_err(&path))?,
    ));
    let header = aof::header_line(start_seq);
    file.append(&header).map_err(io_err(&path))?;
    file.sync().map_err(io_err(&path))?;
    storage.sync_dir(dir).map_err(io_err(dir))?;
    Ok((file, header.len() as u64))
}
