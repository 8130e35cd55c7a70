//! Opening a data directory: find the newest valid snapshot, replay the AOF after it, and
//! decide what to do with a damaged tail. Also the offline `check` and `repair`.
//!
//! Rules (see `docs/durability.md` for the crash cases behind them):
//! - Stray `*.tmp` files are leftovers of an interrupted snapshot; they are removed.
//! - The newest snapshot that decodes and checks is the base. A bad newer snapshot is
//!   skipped with a warning only if the AOF still covers everything after the older base;
//!   otherwise opening fails naming the bad file.
//! - Segments wholly covered by the base are not read (the change feed may still read
//!   them). Records after the base must run contiguously to the end of the last segment.
//! - A torn last line in the last segment (a crash mid-append) is cut off with a warning
//!   when `aof_load_truncated` is on, and refused otherwise. Anything else bad (a complete
//!   line that fails its checksum, a sequence gap, a torn line in an older segment) refuses
//!   to open with the file and byte offset, until [`repair`].
//! - What was replayed may never have been fsynced (its writer was killed, or its fsync
//!   failed), and the last segment's name may not be durable (a rotation killed before
//!   its directory fsync): `Atlas::open` fsyncs the last segment and the directory before
//!   it serves a read or takes a write ([`Recovered::last_segment`]). A cut (`truncate`)
//!   is durable by itself.
//! - Whatever follows the last record of the last segment (padding, zeros a crash left in
//!   padding that was never synced) is cut before the first append, so that appends only
//!   ever land on padding that is durable (issue 18, point 3).

use crate::aof::{self, ScanEnd};
use crate::error::{AtlasError, Result};
use crate::keyspace::Keyspace;
use crate::snapshot;
use crate::storage::{DirLock, Storage};
use std::path::{Path, PathBuf};

/// What a data directory holds, by kind.
#[derive(Debug, Default, Clone)]
pub(crate) struct Listing {
    /// Start sequence numbers of the AOF segments, ascending.
    pub segments: Vec<u64>,
    /// Sequence numbers of the snapshots, ascending.
    pub snapshots: Vec<u64>,
    /// Names of leftover temporary files.
    pub tmps: Vec<String>,
}

pub(crate) fn list(storage: &dyn Storage, dir: &Path) -> Result<Listing> {
    let mut l = Listing::default();
    for name in storage.list(dir).map_err(|e| AtlasError::io(dir, e))? {
        if let Some(s) = aof::parse_segment_name(&name) {
            l.segments.push(s);
        } else if let Some(s) = snapshot::parse_snapshot_name(&name) {
            l.snapshots.push(s);
        } else if name.ends_with(".tmp") {
            l.tmps.push(name);
        }
    }
    l.segments.sort_unstable();
    l.snapshots.sort_unstable();
    Ok(l)
}

/// The state rebuilt by [`recover`].
pub(crate) struct Recovered {
    pub keyspace: Keyspace,
    pub listing: Listing,
    /// The segment to append to and its valid length, if it can be reused (its records
    /// end exactly where the keyspace does).
    pub append_to: Option<(u64, u64)>,
    /// The last segment and where its records end (after any cut), if there is one: open
    /// makes it durable before serving what was replayed from it.
    pub last_segment: Option<(u64, u64)>,
}

fn read_file(storage: &dyn Storage, path: &Path) -> Result<Vec<u8>> {
    storage.read(path).map_err(|e| AtlasError::io(path, e))
}

/// Loads the newest valid snapshot. Returns it and the newer snapshots that failed to
/// load (with their errors), newest first.
fn load_base(
    storage: &dyn Storage,
    dir: &Path,
    listing: &Listing,
) -> (Keyspace, Vec<(u64, AtlasError)>) {
    let mut bad = Vec::new();
    for &seq in listing.snapshots.iter().rev() {
        let path = dir.join(snapshot::snapshot_name(seq));
        match read_file(storage, &path).and_then(|b| snapshot::decode(&b, &path)) {
            Ok((stored_seq, entries)) if stored_seq == seq => {
                if !bad.is_empty() {
                    tracing::warn!(snapshot = %path.display(), "falling back to an older snapshot");
                }
                return (Keyspace::from_snapshot(seq, entries), bad);
            }
            Ok((stored_seq, _)) => {
                let e = AtlasError::Corrupt {
                    file: path.clone(),
                    offset: 12,
                    reason: format!("header says seq {stored_seq}, the name says {seq}"),
                };
                tracing::warn!(error = %e, "skipping bad snapshot");
                bad.push((seq, e));
            }
            Err(e) => {
                tracing::warn!(error = %e, "skipping bad snapshot");
                bad.push((seq, e));
            }
        }
    }
    (Keyspace::new(0), bad)
}

/// A name for setting `path` aside that does not overwrite earlier evidence:
/// `{name}.corrupt`, else `{name}.corrupt.1`, `.2`, ...
pub(crate) fn aside_path(storage: &dyn Storage, dir: &Path, path: &Path) -> Result<PathBuf> {
    let names = storage.list(dir).map_err(|e| AtlasError::io(dir, e))?;
    let base = format!(
        "{}.corrupt",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    );
    let mut candidate = base.clone();
    let mut n = 0u32;
    while names.contains(&candidate) {
        n += 1;
        candidate = format!("{base}.{n}");
    }
    Ok(dir.join(candidate))
}

/// Rebuilds the keyspace of a data directory. Truncates a torn tail if allowed.
pub(crate) fn recover(
    storage: &dyn Storage,
    dir: &Path,
    aof_load_truncated: bool,
) -> Result<Recovered> {
    let mut listing = list(storage, dir)?;
    for tmp in std::mem::take(&mut listing.tmps) {
        let path = dir.join(&tmp);
        tracing::info!(file = %path.display(), "removing leftover temporary file");
        storage
            .remove(&path)
            .map_err(|e| AtlasError::io(&path, e))?;
        storage.sync_dir(dir).map_err(|e| AtlasError::io(dir, e))?;
    }
    let (mut keyspace, bad_snapshots) = load_base(storage, dir, &listing);
    // Falling back past a bad snapshot is only right if the AOF holds every record after
    // the older base; if not, the bad snapshot is the error to report.
    let refuse = |e: AtlasError| match bad_snapshots.first() {
        Some((_, snapshot_error)) => AtlasError::Corrupt {
            file: match snapshot_error {
                AtlasError::Corrupt { file, .. } => file.clone(),
                _ => dir.to_path_buf(),
            },
            offset: match snapshot_error {
                AtlasError::Corrupt { offset, .. } => *offset,
                _ => 0,
            },
            reason: format!("{snapshot_error}; and the AOF cannot replace it: {e}"),
        },
        None => e,
    };
    let base_seq = keyspace.last_seq();
    let mut append_to = None;
    let mut last_segment = None;
    let count = listing.segments.len();
    for (i, &start) in listing.segments.iter().enumerate() {
        let is_last = i + 1 == count;
        // Wholly covered by the base: the next segment starts at or before base + 1.
        if !is_last && listing.segments[i + 1] <= base_seq + 1 {
            continue;
        }
        let path = dir.join(aof::segment_name(start));
        let bytes = read_file(storage, &path)?;
        let next = keyspace.last_seq() + 1;
        if start > next {
            return Err(refuse(AtlasError::Corrupt {
                file: path,
                offset: 0,
                reason: format!(
                    "records {next}..{} are missing (segment starts at {start})",
                    start - 1
                ),
            }));
        }
        let scan = aof::scan_segment_each(&bytes, &path, start, |r| {
            if r.record.seq > keyspace.last_seq() {
                keyspace.apply(&r.record);
            }
        })?;
        let valid_size = match scan.end {
            // Padding may follow. It is cut before appends go on: a crash may have left
            // zeros in it (padding never synced), and an append landing on those would
            // leave zeros then data after the next crash, which reads as damage. The
            // first append then adds fresh padding, synced (`storage` module docs).
            ScanEnd::Clean if is_last && (bytes.len() as u64) > scan.log_end => {
                storage
                    .truncate(&path, scan.log_end)
                    .map_err(|e| AtlasError::io(&path, e))?;
                scan.log_end
            }
            ScanEnd::Clean => scan.log_end,
            // A last segment whose header never made it: a crash while rotating. No record
            // was in it, so resetting it loses nothing, whatever `aof_load_truncated` says.
            ScanEnd::Torn { offset: 0 } if is_last && scan.header_end == 0 => {
                tracing::warn!(file = %path.display(), "AOF segment with a torn header (crash while rotating); resetting it");
                storage
                    .truncate(&path, 0)
                    .map_err(|e| AtlasError::io(&path, e))?;
                0
            }
            ScanEnd::Torn { offset } if is_last && aof_load_truncated => {
                tracing::warn!(
                    file = %path.display(),
                    offset,
                    dropped_size = bytes.len() as u64 - offset,
                    "AOF ends with a torn record (a crash mid-write); truncating it"
                );
                storage
                    .truncate(&path, offset)
                    .map_err(|e| AtlasError::io(&path, e))?;
                offset
            }
            ScanEnd::Torn { offset } => {
                let reason = if is_last {
                    "torn last record and aof_load_truncated is off".to_owned()
                } else {
                    "torn record in a segment that is not the last".to_owned()
                };
                return Err(AtlasError::Corrupt {
                    file: path,
                    offset,
                    reason,
                });
            }
            ScanEnd::Corrupt { offset, reason } => {
                return Err(AtlasError::Corrupt {
                    file: path,
                    offset,
                    reason,
                });
            }
        };
        if is_last {
            last_segment = Some((start, valid_size));
            let segment_end_seq = start + scan.record_count;
            // Appends go on only in a segment of this build's version: padding in a
            // version 1 file would read as corruption to the builds that wrote it.
            if segment_end_seq == keyspace.last_seq() + 1 && scan.version == aof::AOF_VERSION {
                append_to = Some((start, valid_size));
            }
        }
    }
    if keyspace.last_seq() == 0 && !bad_snapshots.is_empty() && listing.segments.first() != Some(&1)
    {
        // Nothing replaced the bad snapshot(s).
        return Err(refuse(AtlasError::Corrupt {
            file: dir.to_path_buf(),
            offset: 0,
            reason: "no valid snapshot and the AOF does not start at record 1".to_owned(),
        }));
    }
    // Recovery holds: set the bad snapshots aside (never deleted) so that later snapshots
    // and compaction never rely on them.
    for (seq, _) in &bad_snapshots {
        let path = dir.join(snapshot::snapshot_name(*seq));
        let to = aside_path(storage, dir, &path)?;
        tracing::warn!(from = %path.display(), to = %to.display(), "setting a bad snapshot aside");
        storage
            .rename(&path, &to)
            .map_err(|e| AtlasError::io(&path, e))?;
    }
    if !bad_snapshots.is_empty() {
        storage.sync_dir(dir).map_err(|e| AtlasError::io(dir, e))?;
        listing
            .snapshots
            .retain(|s| !bad_snapshots.iter().any(|(b, _)| b == s));
    }
    Ok(Recovered {
        keyspace,
        listing,
        append_to,
        last_segment,
    })
}

/// The state of one file found by [`check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileStatus {
    /// Valid to its end (padding after the last record included).
    Ok,
    /// Ends with a torn record at `offset` (recoverable by truncation).
    TornTail {
        /// Where the torn record starts.
        offset: u64,
    },
    /// Bad from `offset` on.
    Corrupt {
        /// The first bad byte.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
}

/// One file in a [`CheckReport`].
#[derive(Debug, Clone)]
pub struct FileCheck {
    /// The file.
    pub path: PathBuf,
    /// Valid records (AOF) or entries (snapshot) read before any problem.
    pub record_count: u64,
    /// Its state.
    pub status: FileStatus,
}

/// What [`check`] found in a data directory.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    /// Snapshots, oldest first.
    pub snapshots: Vec<FileCheck>,
    /// AOF segments, oldest first.
    pub segments: Vec<FileCheck>,
}

impl CheckReport {
    /// Whether every file is valid to its end.
    pub fn is_clean(&self) -> bool {
        self.snapshots
            .iter()
            .chain(&self.segments)
            .all(|f| f.status == FileStatus::Ok)
    }
}

fn status_of(end: ScanEnd) -> FileStatus {
    match end {
        ScanEnd::Clean => FileStatus::Ok,
        ScanEnd::Torn { offset } => FileStatus::TornTail { offset },
        ScanEnd::Corrupt { offset, reason } => FileStatus::Corrupt { offset, reason },
    }
}

/// Reads every snapshot and segment of `dir` and reports its state. Changes nothing.
pub fn check(storage: &dyn Storage, dir: &Path) -> Result<CheckReport> {
    let listing = list(storage, dir)?;
    let mut report = CheckReport::default();
    for &seq in &listing.snapshots {
        let path = dir.join(snapshot::snapshot_name(seq));
        let (record_count, status) =
            match read_file(storage, &path).and_then(|b| snapshot::decode(&b, &path)) {
                Ok((_, entries)) => (entries.len() as u64, FileStatus::Ok),
                Err(AtlasError::Corrupt { offset, reason, .. }) => {
                    (0, FileStatus::Corrupt { offset, reason })
                }
                Err(e) => (
                    0,
                    FileStatus::Corrupt {
                        offset: 0,
                        reason: e.to_string(),
                    },
                ),
            };
        report.snapshots.push(FileCheck {
            path,
            record_count,
            status,
        });
    }
    let mut expected: Option<u64> = None;
    for &start in &listing.segments {
        let path = dir.join(aof::segment_name(start));
        let bytes = read_file(storage, &path)?;
        let (record_count, mut status) = match aof::scan_segment(&bytes, &path, start) {
            Ok(scan) => (scan.records.len() as u64, status_of(scan.end)),
            Err(e) => (
                0,
                FileStatus::Corrupt {
                    offset: 0,
                    reason: e.to_string(),
                },
            ),
        };
        if let Some(want) = expected
            && start != want
            && status == FileStatus::Ok
        {
            status = FileStatus::Corrupt {
                offset: 0,
                reason: format!(
                    "segment starts at {start}, the previous one ends at {}",
                    want - 1
                ),
            };
        }
        expected = Some(start + record_count);
        report.segments.push(FileCheck {
            path,
            record_count,
            status,
        });
    }
    Ok(report)
}

/// What [`repair`] did.
#[derive(Debug, Clone, Default)]
pub struct RepairReport {
    /// Segments cut short: the file and the offset it was cut at.
    pub truncated: Vec<(PathBuf, u64)>,
    /// Files set aside (renamed with a `.corrupt` suffix, never deleted).
    pub set_aside: Vec<PathBuf>,
}

fn set_aside(
    storage: &dyn Storage,
    dir: &Path,
    path: &Path,
    report: &mut RepairReport,
) -> Result<()> {
    let to = aside_path(storage, dir, path)?;
    storage
        .rename(path, &to)
        .map_err(|e| AtlasError::io(path, e))?;
    report.set_aside.push(to);
    Ok(())
}

/// Repairs a data directory the way `redis-check-aof --fix` does: the AOF is cut at its
/// first bad record, so everything before it is recovered and everything from it on is
/// dropped. The dropped bytes are kept: the damaged segment's full copy and any later
/// segments are set aside as `*.corrupt`. Bad snapshots are set aside too.
///
/// Takes the directory lock, so it cannot run while the store is open.
pub fn repair(storage: &dyn Storage, dir: &Path) -> Result<RepairReport> {
    let _lock: Box<dyn DirLock> = storage
        .lock_dir(dir)
        .map_err(|e| AtlasError::lock_failed(storage, dir, e))?;
    let report_in = check(storage, dir)?;
    let mut report = RepairReport::default();
    for snap in &report_in.snapshots {
        if snap.status != FileStatus::Ok {
            set_aside(storage, dir, &snap.path, &mut report)?;
        }
    }
    let mut cut = false;
    for seg in &report_in.segments {
        if cut {
            set_aside(storage, dir, &seg.path, &mut report)?;
            continue;
        }
        let offset = match &seg.status {
            FileStatus::Ok => continue,
            FileStatus::TornTail { offset } | FileStatus::Corrupt { offset, .. } => *offset,
        };
        if offset == 0 {
            set_aside(storage, dir, &seg.path, &mut report)?;
        } else {
            // Keep a full copy of the damaged file before cutting it.
            let bytes = read_file(storage, &seg.path)?;
            let copy = aside_path(storage, dir, &seg.path)?;
            let f = storage
                .create(&copy)
                .map_err(|e| AtlasError::io(&copy, e))?;
            f.append(&bytes).map_err(|e| AtlasError::io(&copy, e))?;
            f.sync().map_err(|e| AtlasError::io(&copy, e))?;
            report.set_aside.push(copy);
            storage
                .truncate(&seg.path, offset)
                .map_err(|e| AtlasError::io(&seg.path, e))?;
            report.truncated.push((seg.path.clone(), offset));
        }
        cut = true;
    }
    storage.sync_dir(dir).map_err(|e| AtlasError::io(dir, e))?;
    Ok(report)
}
