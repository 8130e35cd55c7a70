//! Online, consistent backups: [`crate::Atlas::backup`] writes them, [`verify_backup`]
//! checks one against its manifest, [`restore_backup`] copies a verified one into a new
//! data directory.
//!
//! A backup is a point-in-time copy as of one sequence number `last_seq`: the newest
//! snapshot plus the closed AOF segments after it, up to `last_seq`, each cut to its
//! records (no padding), and a manifest (`MANIFEST.json`) naming every file with its size
//! and CRC-32C. Writers keep going while it is taken: the current segment is rotated
//! first (O(1) under the writer lock, as a snapshot does), so every file copied is
//! closed and never written again, and compaction (which could remove one) waits for
//! the copy (it runs under the snapshot lock, which the backup holds).
//!
//! Invariants: the backup directory's name is made durable (its parent fsynced) before
//! anything is written in it, every file is written through [`Storage`] and fsynced, and
//! the manifest is written last (temporary name, fsync, rename, directory fsync): a
//! backup directory without a manifest is incomplete, and [`verify_backup`] refuses it.
//! Nothing in the source directory changes beyond what a snapshot's rotation does. The
//! same holds for the directory [`restore_backup`] writes.

use crate::aof::{self, ScanEnd};
use crate::error::{AtlasError, Result};
use crate::snapshot;
use crate::storage::Storage;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Name of the manifest in a backup directory.
pub const MANIFEST_NAME: &str = "MANIFEST.json";
/// The manifest's `format`.
pub const BACKUP_FORMAT: &str = "helios-atlas-backup";
/// The manifest's version this build writes and reads.
pub const BACKUP_VERSION: u32 = 1;

/// What a backup holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupManifest {
    /// Always [`BACKUP_FORMAT`].
    pub format: String,
    /// [`BACKUP_VERSION`].
    pub version: u32,
    /// The backup holds every record up to this sequence number, and none after it.
    pub last_seq: u64,
    /// When the backup was taken, ms since the epoch on the store's clock.
    pub created_ms: u64,
    /// The files, snapshot first, then the segments in order.
    pub files: Vec<BackupFile>,
}

/// One file of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupFile {
    /// File name (a snapshot or an AOF segment name).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// CRC-32C of the bytes, 8 lowercase hex digits.
    pub crc32c: String,
}

fn crc_hex(bytes: &[u8]) -> String {
    format!("{:08x}", crc32c::crc32c(bytes))
}

fn target_error(dir: &Path, reason: impl Into<String>) -> AtlasError {
    AtlasError::BackupInvalid {
        dir: dir.to_path_buf(),
        reason: reason.into(),
    }
}

/// Creates `dir` if missing, and makes its name durable; it must hold no file.
///
/// The parent is fsynced even when `dir` already existed (empty): it may be the leftover
/// of an attempt killed before its parent's fsync, and the files about to be written in
/// it are worth nothing if the directory's own name can vanish.
fn empty_target(storage: &dyn Storage, dir: &Path) -> Result<()> {
    let created = storage
        .create_dir_all(dir)
        .map_err(|e| AtlasError::io(dir, e))?;
    let names = storage.list(dir).map_err(|e| AtlasError::io(dir, e))?;
    if let Some(first) = names.first() {
        return Err(target_error(
            dir,
            format!("not empty (holds {first}); pick a new directory"),
        ));
    }
    let mut parents: Vec<&Path> = created.iter().filter_map(|d| d.parent()).collect();
    if created.last().map(PathBuf::as_path) != Some(dir) {
        parents.extend(dir.parent());
    }
    for parent in parents {
        storage
            .sync_dir(parent)
            .map_err(|e| AtlasError::io(parent, e))?;
    }
    Ok(())
}

/// Writes `bytes` to `dir/name` and fsyncs it.
fn write_file(storage: &dyn Storage, dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let path = dir.join(name);
    let f = storage
        .create(&path)
        .map_err(|e| AtlasError::io(&path, e))?;
    f.append(bytes).map_err(|e| AtlasError::io(&path, e))?;
    f.sync().map_err(|e| AtlasError::io(&path, e))
}

/// Copies the closed files of a store in `src` into the empty directory `to`: snapshot
/// `base` (if any) and the segments starting at `segments` holding the records after it
/// up to `last_seq`. Called with compaction held off and every segment closed.
pub(crate) fn write(
    storage: &dyn Storage,
    src: &Path,
    to: &Path,
    base: Option<u64>,
    segments: &[u64],
    last_seq: u64,
    created_ms: u64,
) -> Result<BackupManifest> {
    empty_target(storage, to)?;
    let mut files = Vec::new();
    let mut add = |name: String, bytes: &[u8]| -> Result<()> {
        write_file(storage, to, &name, bytes)?;
        files.push(BackupFile {
            name,
            size: bytes.len() as u64,
            crc32c: crc_hex(bytes),
        });
        Ok(())
    };
    let base_seq = base.unwrap_or(0);
    if let Some(seq) = base {
        let name = snapshot::snapshot_name(seq);
        let path = src.join(&name);
        let bytes = storage.read(&path).map_err(|e| AtlasError::io(&path, e))?;
        // Checked before it is copied: a backup of a bad file is no backup.
        snapshot::decode(&bytes, &path)?;
        add(name, &bytes)?;
    }
    let mut next = base_seq + 1;
    for (i, &start) in segments.iter().enumerate() {
        if start > last_seq {
            break;
        }
        // Wholly covered by the base: the next segment starts at or before base + 1.
        if segments.get(i + 1).is_some_and(|&n| n <= base_seq + 1) {
            continue;
        }
        let name = aof::segment_name(start);
        let path = src.join(&name);
        let bytes = storage.read(&path).map_err(|e| AtlasError::io(&path, e))?;
        let scan = aof::scan_segment(&bytes, &path, start)?;
        let (offset, reason) = match scan.end {
            ScanEnd::Clean => (0, None),
            ScanEnd::Torn { offset } => (offset, Some("torn record in a closed segment".into())),
            ScanEnd::Corrupt { offset, reason } => (offset, Some(reason)),
        };
        if let Some(reason) = reason {
            return Err(AtlasError::Corrupt {
                file: path,
                offset,
                reason,
            });
        }
        if start > next {
            return Err(AtlasError::Corrupt {
                file: path,
                offset: 0,
                reason: format!("records {next}.. are missing (segment starts at {start})"),
            });
        }
        if let Some(last) = scan.records.last() {
            next = next.max(last.record.seq + 1);
        }
        add(name, &bytes[..scan.log_end as usize])?;
    }
    if next <= last_seq {
        return Err(AtlasError::Corrupt {
            file: src.to_path_buf(),
            offset: 0,
            reason: format!("the AOF ends at {} but {last_seq} were written", next - 1),
        });
    }
    let manifest = BackupManifest {
        format: BACKUP_FORMAT.to_owned(),
        version: BACKUP_VERSION,
        last_seq,
        created_ms,
        files,
    };
    let mut text = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
    text.push(b'\n');
    let tmp = format!("{MANIFEST_NAME}.tmp");
    write_file(storage, to, &tmp, &text)?;
    let (from, into) = (to.join(&tmp), to.join(MANIFEST_NAME));
    storage
        .rename(&from, &into)
        .map_err(|e| AtlasError::io(&into, e))?;
    storage.sync_dir(to).map_err(|e| AtlasError::io(to, e))?;
    Ok(manifest)
}

/// Reads the manifest of the backup in `dir` and checks every file it names: present,
/// of its size and checksum. Returns the manifest.
pub fn verify_backup(storage: &dyn Storage, dir: &Path) -> Result<BackupManifest> {
    let path = dir.join(MANIFEST_NAME);
    let text = match storage.read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(target_error(
                dir,
                format!("no {MANIFEST_NAME}: not a backup, or one that did not finish"),
            ));
        }
        Err(e) => return Err(AtlasError::io(&path, e)),
    };
    let manifest: BackupManifest =
        serde_json::from_slice(&text).map_err(|e| AtlasError::Corrupt {
            file: path.clone(),
            offset: e.column() as u64,
            reason: format!("bad manifest (line {}): {e}", e.line()),
        })?;
    if manifest.format != BACKUP_FORMAT || manifest.version != BACKUP_VERSION {
        return Err(AtlasError::UnsupportedVersion {
            file: path,
            found: manifest.version,
            supported: BACKUP_VERSION,
        });
    }
    for f in &manifest.files {
        let plain = !f.name.contains(['/', '\\']) && f.name != ".." && f.name != ".";
        if !plain
            || (aof::parse_segment_name(&f.name).is_none()
                && snapshot::parse_snapshot_name(&f.name).is_none())
        {
            return Err(target_error(
                dir,
                format!("the manifest names {:?}, not a store file", f.name),
            ));
        }
        let file = dir.join(&f.name);
        let bytes = storage.read(&file).map_err(|e| AtlasError::io(&file, e))?;
        if bytes.len() as u64 != f.size {
            return Err(AtlasError::Corrupt {
                file,
                offset: f.size.min(bytes.len() as u64),
                reason: format!("{} bytes, the manifest says {}", bytes.len(), f.size),
            });
        }
        let crc = crc_hex(&bytes);
        if crc != f.crc32c {
            return Err(AtlasError::Corrupt {
                file,
                offset: 0,
                reason: format!("checksum {crc}, the manifest says {}", f.crc32c),
            });
        }
    }
    Ok(manifest)
}

/// Verifies the backup in `from` ([`verify_backup`]) and copies its files into `to`,
/// which must be missing or empty, each fsynced, then the directory. Open `to` afterwards
/// to prove it recovers.
pub fn restore_backup(storage: &dyn Storage, from: &Path, to: &Path) -> Result<BackupManifest> {
    let manifest = verify_backup(storage, from)?;
    empty_target(storage, to)?;
    for f in &manifest.files {
        let src = from.join(&f.name);
        let bytes = storage.read(&src).map_err(|e| AtlasError::io(&src, e))?;
        // Read again: the file could have changed since it was verified.
        if bytes.len() as u64 != f.size || crc_hex(&bytes) != f.crc32c {
            return Err(AtlasError::Corrupt {
                file: src,
                offset: 0,
                reason: "changed while being restored".to_owned(),
            });
        }
        write_file(storage, to, &f.name, &bytes)?;
    }
    storage.sync_dir(to).map_err(|e| AtlasError::io(to, e))?;
    Ok(manifest)
}
