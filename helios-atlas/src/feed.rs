//! The change feed: subscribers follow the records under a key prefix, from any sequence
//! number the AOF still holds, without polling the keyspace.
//!
//! Recent records sit in an in-memory ring bounded by count (`feed_buffer_count`) and by
//! bytes (`feed_buffer_size`, and, under a memory limit, by what the keyspace leaves of
//! it: the ring's values count against `memory_limit_size`, and it is the ring that gives
//! way). A record larger than the bound is not kept at all. A subscriber that falls
//! behind the ring, or resumes after a restart, reads the AOF segments back from disk.
//! Once compaction has removed the segment holding a requested sequence, the subscriber
//! gets [`AtlasError::FeedCompacted`] and must resync (scan the keyspace, then subscribe
//! from `last_seq() + 1`).
//!
//! Catching up from disk is bounded per subscriber: a read decodes the segment holding
//! the subscriber's position one record at a time (`aof::scan_segment_from`), queues the
//! matching events until they would pass [`FEED_CATCHUP_SIZE`] (estimated as
//! [`record_size`] does; one event larger than that is queued alone), and stops there;
//! the next read resumes at the byte offset of the next record (no record skipped or
//! delivered twice, and none decoded twice). While a read runs, the segment's bytes are
//! held whole (`Storage::read` reads whole files): one segment, at most
//! `auto_snapshot_aof_size` plus its padding when automatic snapshots are on (full
//! segments rotate whether or not a snapshot follows), for the
//! duration of the read, not kept between reads.
//!
//! Only applied records are published, so a subscriber never sees a write that was not
//! acknowledged.

use crate::aof::{self, Record};
use crate::error::{AtlasError, Result};
use crate::op::Op;
use crate::storage::Storage;
use helios_core::Clock;
use parking_lot::{Condvar, Mutex};
use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The changes of one record under a subscriber's prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeEvent {
    /// The record's sequence number. Resume from `seq + 1` after a restart.
    pub seq: u64,
    /// The record's ops whose key is under the prefix, in order.
    pub changes: Vec<Op>,
}

#[derive(Debug, Default)]
pub(crate) struct FeedState {
    // Invariant: contiguous sequence numbers, the last one == last_seq (when non-empty).
    buffer: VecDeque<Arc<Record>>,
    // Invariant: the sum of `record_size` over `buffer`.
    buffer_size: u64,
    last_seq: u64,
    closed: bool,
}

/// What a buffered record holds in memory, estimated: its keys and values plus a fixed
/// overhead per op and per record. Values are counted whole although the keyspace may
/// share them (`Bytes`): once a key is overwritten, only the ring holds its old value.
pub(crate) fn record_size(r: &Record) -> u64 {
    ops_size(&r.ops)
}

/// [`record_size`] of a record holding `ops` (or of an event holding them).
fn ops_size(ops: &[Op]) -> u64 {
    const RECORD_OVERHEAD_SIZE: u64 = 64;
    const OP_OVERHEAD_SIZE: u64 = 48;
    ops.iter().fold(RECORD_OVERHEAD_SIZE, |n, op| {
        let value = match op {
            Op::Set { value, .. } | Op::SetRange { bytes: value, .. } => value.len() as u64,
            Op::Del { .. } | Op::Expire { .. } => 0,
        };
        n + OP_OVERHEAD_SIZE + op.key().len() as u64 + value
    })
}

#[derive(Debug)]
pub(crate) struct FeedShared {
    state: Mutex<FeedState>,
    cv: Condvar,
    capacity: usize,
    capacity_size: u64,
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    clock: Arc<dyn Clock>,
    /// Start sequence numbers of the segments on disk (shared with the writer).
    pub(crate) segments: Mutex<Vec<u64>>,
}

impl FeedShared {
    pub(crate) fn new(
        capacity: usize,
        capacity_size: u64,
        last_seq: u64,
        storage: Arc<dyn Storage>,
        dir: PathBuf,
        segments: Vec<u64>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            state: Mutex::new(FeedState {
                buffer: VecDeque::with_capacity(capacity.min(65_536)),
                buffer_size: 0,
                last_seq,
                closed: false,
            }),
            cv: Condvar::new(),
            capacity,
            capacity_size,
            storage,
            dir,
            clock,
            segments: Mutex::new(segments),
        }
    }

    /// Publishes applied records, in sequence. With no subscriber (`buffer` false) only
    /// the position moves and the ring is emptied (a later subscriber reads the AOF).
    /// `headroom_size`: what the memory limit leaves the ring (`None`: no limit).
    pub(crate) fn publish(&self, records: Vec<Record>, buffer: bool, headroom_size: Option<u64>) {
        let Some(last) = records.last().map(|r| r.seq) else {
            return;
        };
        let mut st = self.state.lock();
        assert_eq!(
            records[0].seq,
            st.last_seq + 1,
            "feed records are contiguous"
        );
        if !buffer {
            st.buffer.clear();
            st.buffer_size = 0;
            st.last_seq = last;
            return;
        }
        let size_max = headroom_size.map_or(self.capacity_size, |h| h.min(self.capacity_size));
        for r in records {
            st.last_seq = r.seq;
            let size = record_size(&r);
            if size > size_max {
                // Too big to keep: the ring restarts after it (contiguity), and readers
                // of it go to the AOF.
                st.buffer.clear();
                st.buffer_size = 0;
                continue;
            }
            st.buffer.push_back(Arc::new(r));
            st.buffer_size += size;
        }
        while st.buffer.len() > self.capacity || st.buffer_size > size_max {
            match st.buffer.pop_front() {
                Some(r) => st.buffer_size -= record_size(&r),
                None => break,
            }
        }
        drop(st);
        self.cv.notify_all();
    }

    /// Bytes the ring holds now (see [`record_size`]).
    pub(crate) fn buffer_size(&self) -> u64 {
        self.state.lock().buffer_size
    }

    pub(crate) fn close(&self) {
        self.state.lock().closed = true;
        self.cv.notify_all();
    }

    /// The oldest sequence number a subscriber can still start from.
    pub(crate) fn oldest_seq(&self) -> u64 {
        let segs = self.segments.lock();
        let st = self.state.lock();
        let from_disk = segs.first().copied().unwrap_or(st.last_seq + 1);
        let from_memory = st.buffer.front().map_or(st.last_seq + 1, |r| r.seq);
        from_disk.min(from_memory)
    }
}

/// A subscription to the changes under a key prefix. Not `Clone`: one consumer each.
///
/// Protocol: call [`Subscription::next_timeout`] (or [`Subscription::try_next`]) in a
/// loop; each event's `seq` is strictly greater than the one before. Records with no
/// change under the prefix are skipped silently.
#[derive(Debug)]
pub struct Subscription {
    shared: Arc<FeedShared>,
    prefix: Vec<u8>,
    // Invariant: every record below next_seq has been delivered or filtered out.
    next_seq: u64,
    pending: VecDeque<ChangeEvent>,
    // Invariant: the sum of `ops_size` over the events in `pending`. Bounded by
    // `catchup_size` for events read from disk; events from the ring (at most
    // RING_BATCH_COUNT) share their values with the ring.
    pending_size: u64,
    // What a read from disk may queue (FEED_CATCHUP_SIZE but in tests).
    catchup_size: u64,
    // Where `next_seq` starts on disk, when the last read from disk stopped or ended
    // there: the next read resumes at that offset instead of decoding the segment again.
    disk_cursor: Option<(u64, aof::ScanResume)>,
    // For the tests: the largest `pending_size` a read from disk left, how many reads
    // from disk ran, and how many records they decoded.
    #[cfg(test)]
    pending_size_max: u64,
    #[cfg(test)]
    disk_reads: (u64, u64),
}

/// Records taken from the in-memory ring per lock acquisition.
const RING_BATCH_COUNT: usize = 1024;

/// What one subscriber's read from disk may queue: the estimated size of the events it
/// decoded and has not delivered yet (see the module docs).
pub(crate) const FEED_CATCHUP_SIZE: u64 = 4 << 20;

impl Subscription {
    pub(crate) fn new(shared: Arc<FeedShared>, prefix: Vec<u8>, from_seq: u64) -> Result<Self> {
        let from_seq = from_seq.max(1);
        let oldest = shared.oldest_seq();
        if from_seq < oldest {
            return Err(AtlasError::FeedCompacted {
                requested: from_seq,
                oldest_seq: oldest,
            });
        }
        Ok(Self {
            shared,
            prefix,
            next_seq: from_seq,
            pending: VecDeque::new(),
            pending_size: 0,
            catchup_size: FEED_CATCHUP_SIZE,
            disk_cursor: None,
            #[cfg(test)]
            pending_size_max: 0,
            #[cfg(test)]
            disk_reads: (0, 0),
        })
    }

    /// The sequence number the next event will be at or after.
    pub fn position(&self) -> u64 {
        self.pending.front().map_or(self.next_seq, |e| e.seq)
    }

    fn filter(&self, r: &Record) -> Option<ChangeEvent> {
        let changes: Vec<Op> = r
            .ops
            .iter()
            .filter(|op| op.key().starts_with(&self.prefix))
            .cloned()
            .collect();
        (!changes.is_empty()).then_some(ChangeEvent {
            seq: r.seq,
            changes,
        })
    }

    /// The next event if one is ready, without waiting.
    pub fn try_next(&mut self) -> Result<Option<ChangeEvent>> {
        self.next_timeout(Duration::ZERO)
    }

    /// The next event, waiting up to `timeout` for one. `Ok(None)` on timeout;
    /// `Err(Closed)` once the store is closed and everything published was delivered.
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<ChangeEvent>> {
        // The deadline is on the store's injected clock; a timeout too large to add to now
        // means "wait for as long as it takes".
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let deadline_ms = self.shared.clock.now_ms().checked_add(timeout_ms);
        loop {
            if let Some(ev) = self.pending.pop_front() {
                self.pending_size -= ops_size(&ev.changes);
                return Ok(Some(ev));
            }
            let durable_last = {
                let mut st = self.shared.state.lock();
                if self.next_seq > st.last_seq {
                    if st.closed {
                        return Err(AtlasError::Closed);
                    }
                    let timed_out = match deadline_ms {
                        Some(d) => match d.saturating_sub(self.shared.clock.now_ms()) {
                            0 => true,
                            left_ms => self
                                .shared
                                .cv
                                .wait_for(&mut st, Duration::from_millis(left_ms))
                                .timed_out(),
                        },
                        None => {
                            self.shared.cv.wait(&mut st);
                            false
                        }
                    };
                    if timed_out && self.next_seq > st.last_seq {
                        return Ok(None);
                    }
                    continue;
                }
                match st.buffer.front().map(|r| r.seq) {
                    Some(front) if front <= self.next_seq => {
                        let start = (self.next_seq - front) as usize;
                        let taken: Vec<Arc<Record>> = st
                            .buffer
                            .iter()
                            .skip(start)
                            .take(RING_BATCH_COUNT)
                            .cloned()
                            .collect();
                        drop(st);
                        for r in taken {
                            self.next_seq = r.seq + 1;
                            if let Some(ev) = self.filter(&r) {
                                self.push(ev);
                            }
                        }
                        continue;
                    }
                    _ => st.last_seq,
                }
            };
            self.read_from_disk(durable_last)?;
        }
    }

    fn push(&mut self, ev: ChangeEvent) {
        self.pending_size += ops_size(&ev.changes);
        self.pending.push_back(ev);
    }

    /// Loads the events of the segment holding `next_seq`, up to `durable_last`, until
    /// they would pass `catchup_size` (see the module docs). Called with `pending` empty.
    fn read_from_disk(&mut self, durable_last: u64) -> Result<()> {
        let segment = {
            let segs = self.shared.segments.lock();
            match segs.iter().rev().find(|&&s| s <= self.next_seq) {
                Some(&s) => s,
                None => {
                    return Err(AtlasError::FeedCompacted {
                        requested: self.next_seq,
                        oldest_seq: segs.first().copied().unwrap_or(durable_last + 1),
                    });
                }
            }
        };
        let path = self.shared.dir.join(aof::segment_name(segment));
        let bytes = match self.shared.storage.read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Compacted between the listing and the read.
                return Err(AtlasError::FeedCompacted {
                    requested: self.next_seq,
                    oldest_seq: self.shared.oldest_seq(),
                });
            }
            Err(e) => return Err(AtlasError::io(&path, e)),
        };
        // Resume where the last read of this segment stopped, if it stopped at next_seq
        // (the ring may have moved the subscriber on since).
        let resume = self
            .disk_cursor
            .take()
            .filter(|(seg, at)| *seg == segment && at.seq == self.next_seq)
            .map(|(_, at)| at);
        let before = self.next_seq;
        let mut resume_at = None;
        #[cfg(test)]
        {
            self.disk_reads.0 += 1;
        }
        let summary = aof::scan_segment_from(&bytes, &path, segment, resume, |r| {
            #[cfg(test)]
            {
                self.disk_reads.1 += 1;
            }
            let seq = r.record.seq;
            if seq < self.next_seq {
                return ControlFlow::Continue(());
            }
            if seq > durable_last {
                return ControlFlow::Break(());
            }
            if let Some(ev) = self.filter(&r.record) {
                let size = ops_size(&ev.changes);
                if !self.pending.is_empty() && self.pending_size + size > self.catchup_size {
                    // Full: this record is the next read's.
                    return ControlFlow::Break(());
                }
                self.push(ev);
            }
            self.next_seq = seq + 1;
            resume_at = Some(aof::ScanResume {
                offset: r.end,
                seq: seq + 1,
            });
            ControlFlow::Continue(())
        })?;
        #[cfg(test)]
        {
            self.pending_size_max = self.pending_size_max.max(self.pending_size);
        }
        if let Some(at) = resume_at {
            self.disk_cursor = Some((segment, at));
        }
        if self.next_seq == before {
            // The record is neither in memory nor where the AOF should hold it.
            let offset = summary.end.offset().unwrap_or(summary.log_end);
            let reason = match summary.end {
                aof::ScanEnd::Corrupt { reason, .. } => reason,
                _ => format!("record {before} not found"),
            };
            return Err(AtlasError::Corrupt {
                file: path,
                offset,
                reason,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemStorage;
    use crate::{Atlas, Options};

    #[test]
    fn a_subscriber_catching_up_from_disk_queues_at_most_its_budget_and_sees_each_record_once() {
        let disk = MemStorage::with_log_padding(4096);
        let db = Atlas::open(
            "/data",
            Options {
                storage: Arc::new(disk),
                maintenance_interval_ms: None,
                auto_snapshot_aof_size: None,
                // The ring keeps one record: a subscriber from 1 reads the AOF.
                feed_buffer_count: 1,
                ..Options::default()
            },
        )
        .unwrap();
        let mut expected = Vec::new();
        let write = |i: usize, expected: &mut Vec<u64>| {
            if i % 7 == 3 {
                db.set(format!("other:{i}"), "x").unwrap();
            } else {
                db.set(format!("k{i:05}"), vec![b'v'; 100]).unwrap();
                expected.push(db.last_seq());
            }
        };
        for i in 0..1200 {
            write(i, &mut expected);
            if i == 0 || i == 800 {
                // Segments from 2 on, kept (two snapshots retained): the catch-up
                // crosses from one to the next.
                db.snapshot().unwrap();
            }
        }
        expected.retain(|&seq| seq >= 2);
        const BUDGET: u64 = 4096;
        let mut sub = db.subscribe("k", 2).unwrap();
        sub.catchup_size = BUDGET;
        let mut seen = Vec::new();
        let mut i = 1200;
        while let Some(ev) = sub.try_next().unwrap() {
            assert!(sub.pending_size <= BUDGET, "{}", sub.pending_size);
            assert!(ev.changes.iter().all(|op| op.key().starts_with(b"k")));
            seen.push(ev.seq);
            if seen.len() % 100 == 0 {
                // Writers go on meanwhile.
                write(i, &mut expected);
                i += 1;
            }
        }
        assert_eq!(seen, expected, "every record once, in order");
        let per_read = BUDGET
            / ops_size(&[Op::Set {
                key: "k00000".into(),
                value: vec![b'v'; 100].into(),
                expire_at_ms: None,
            }]);
        let (reads, decoded) = sub.disk_reads;
        assert!(sub.pending_size_max <= BUDGET && sub.pending_size_max > BUDGET / 2);
        assert!(
            reads as usize >= expected.len() / per_read as usize,
            "{reads} reads"
        );
        // Each read resumes where the last one stopped: every record is decoded once,
        // plus the one each read stopped at.
        let records = db.last_seq();
        assert!(
            decoded <= records + reads,
            "{decoded} > {records} + {reads}"
        );
    }
}
