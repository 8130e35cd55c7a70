//! Snapshots: the whole keyspace at one sequence number, in a checksummed bincode file.
//!
//! File `snapshot-{seq:020}.snap`, little-endian:
//!
//! ```text
//! offset 0   8 bytes  magic "HELIOSSN"
//! offset 8   u32      format version (2; 1 is read too)
//! offset 12  u64      seq: the last AOF record the snapshot contains
//! offset 20  u64      payload length in bytes
//! offset 28  u32      CRC-32C of bytes 8..28 followed by the payload
//! offset 32  payload  bincode 2 (standard config) of Vec<SnapshotEntry>, in key order
//! ```
//!
//! Version 2 keys are any bytes ([`crate::Key`]); version 1 keys were UTF-8 strings. Both
//! encode a key as its length and bytes, so a version 1 payload reads as version 2; a
//! build that reads only version 1 refuses a version 2 file by its header instead of
//! failing on a key that is not UTF-8.
//!
//! Written atomically: `*.snap.tmp` is written and fsynced, renamed over the final name,
//! and the directory fsynced. A crash at any step leaves either no new snapshot (a stray
//! `.tmp`, removed at the next open) or the complete new one: never a partial file under a
//! final name. Reading checks magic, version, length and checksum before decoding.

use crate::error::{AtlasError, Result};
use crate::keyspace::SnapshotEntry;
use crate::limits::SNAPSHOT_SIZE_MAX;
use crate::storage::Storage;
use std::path::Path;

/// Magic bytes at the start of every snapshot.
pub const SNAPSHOT_MAGIC: &[u8; 8] = b"HELIOSSN";
/// The snapshot format version this build writes.
pub const SNAPSHOT_VERSION: u32 = 2;
/// The oldest snapshot format version this build reads.
pub const SNAPSHOT_VERSION_MIN: u32 = 1;
const HEADER_SIZE: usize = 32;

/// The file name of the snapshot at `seq`.
pub fn snapshot_name(seq: u64) -> String {
    format!("snapshot-{seq:020}.snap")
}

/// Parses a snapshot file name back into its sequence number.
pub fn parse_snapshot_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("snapshot-")?.strip_suffix(".snap")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// At least the size of `entries`' payload: the list's length, and per entry a key and a
/// value (each a varint length of at most 9 bytes and the bytes) and an optional expiry
/// (a tag byte and a varint of at most 9).
fn payload_bound(entries: &[SnapshotEntry]) -> usize {
    9 + entries
        .iter()
        .map(|e| e.key.as_bytes().len() + e.value.len() + 28)
        .sum::<usize>()
}

/// Encodes a snapshot file.
///
/// The payload is encoded straight after the header's room in one buffer sized for it up
/// front (an upper bound: bincode's standard config writes a length as a varint of at most
/// 9 bytes, an `Option` as a tag byte and a varint), so a large keyspace costs one
/// allocation: no growth by doubling and no copy of the payload into the file image.
pub fn encode(seq: u64, entries: &[SnapshotEntry]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(HEADER_SIZE + payload_bound(entries));
    out.resize(HEADER_SIZE, 0);
    bincode::serde::encode_into_std_write(entries, &mut out, config()).map_err(|e| {
        AtlasError::Io {
            path: snapshot_name(seq).into(),
            source: std::io::Error::other(format!("snapshot encoding failed: {e}")),
        }
    })?;
    let payload_len = (out.len() - HEADER_SIZE) as u64;
    out[..8].copy_from_slice(SNAPSHOT_MAGIC);
    out[8..12].copy_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    out[12..20].copy_from_slice(&seq.to_le_bytes());
    out[20..28].copy_from_slice(&payload_len.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&out[8..28]), &out[HEADER_SIZE..]);
    out[28..32].copy_from_slice(&crc.to_le_bytes());
    Ok(out)
}

fn corrupt(file: &Path, offset: u64, reason: impl Into<String>) -> AtlasError {
    AtlasError::Corrupt {
        file: file.to_path_buf(),
        offset,
        reason: reason.into(),
    }
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

/// Decodes a snapshot file's bytes into its sequence number and entries.
pub fn decode(bytes: &[u8], file: &Path) -> Result<(u64, Vec<SnapshotEntry>)> {
    if bytes.len() < HEADER_SIZE {
        return Err(corrupt(
            file,
            bytes.len() as u64,
            "snapshot shorter than its header",
        ));
    }
    if &bytes[..8] != SNAPSHOT_MAGIC {
        return Err(corrupt(file, 0, "not a HELIOS snapshot (bad magic)"));
    }
    let version = le_u32(bytes, 8);
    if !(SNAPSHOT_VERSION_MIN..=SNAPSHOT_VERSION).contains(&version) {
        return Err(AtlasError::UnsupportedVersion {
            file: file.to_path_buf(),
            found: version,
            supported: SNAPSHOT_VERSION,
        });
    }
    let seq = le_u64(bytes, 12);
    let len = le_u64(bytes, 20);
    if len > SNAPSHOT_SIZE_MAX || len != (bytes.len() - HEADER_SIZE) as u64 {
        return Err(corrupt(
            file,
            20,
            format!(
                "payload length {len} does not match the file ({} bytes after the header)",
                bytes.len() - HEADER_SIZE
            ),
        ));
    }
    let stored = le_u32(bytes, 28);
    let payload = &bytes[HEADER_SIZE..];
    let crc = crc32c::crc32c_append(crc32c::crc32c(&bytes[8..28]), payload);
    if crc != stored {
        return Err(corrupt(
            file,
            HEADER_SIZE as u64,
            format!("checksum mismatch (stored {stored}, computed {crc})"),
        ));
    }
    let (entries, used): (Vec<SnapshotEntry>, usize) =
        bincode::serde::decode_from_slice(payload, config().with_limit::<{ 1 << 36 }>())
            .map_err(|e| corrupt(file, HEADER_SIZE as u64, format!("bad payload: {e}")))?;
    if used != payload.len() {
        return Err(corrupt(
            file,
            (HEADER_SIZE + used) as u64,
            "trailing bytes after the payload",
        ));
    }
    Ok((seq, entries))
}

/// Writes a snapshot atomically: tmp, fsync, rename, fsync directory.
pub fn write(storage: &dyn Storage, dir: &Path, seq: u64, entries: &[SnapshotEntry]) -> Result<()> {
    let bytes = encode(seq, entries)?;
    let name = snapshot_name(seq);
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(&name);
    let file = storage.create(&tmp).map_err(|e| AtlasError::io(&tmp, e))?;
    file.append(&bytes).map_err(|e| AtlasError::io(&tmp, e))?;
    file.sync().map_err(|e| AtlasError::io(&tmp, e))?;
    drop(file);
    storage
        .rename(&tmp, &path)
        .map_err(|e| AtlasError::io(&path, e))?;
    storage.sync_dir(dir).map_err(|e| AtlasError::io(dir, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payload_fits_the_bound_encode_allocates() {
        // The widest varints: long keys and values, the largest expiry.
        let mut e = entries();
        e.push(SnapshotEntry {
            key: crate::Key::from(vec![7u8; 70_000]),
            value: vec![1; 300],
            expire_at_ms: Some(u64::MAX),
        });
        e.push(SnapshotEntry {
            key: "k".into(),
            value: Vec::new(),
            expire_at_ms: Some(u64::MAX),
        });
        let bytes = encode(3, &e).unwrap();
        assert!(bytes.len() <= HEADER_SIZE + payload_bound(&e));
        assert_eq!(decode(&bytes, Path::new("s")).unwrap(), (3, e));
        let empty = encode(4, &[]).unwrap();
        assert!(empty.len() <= HEADER_SIZE + payload_bound(&[]));
        assert_eq!(decode(&empty, Path::new("s")).unwrap(), (4, Vec::new()));
    }

    fn entries() -> Vec<SnapshotEntry> {
        vec![
            SnapshotEntry {
                key: "a".into(),
                value: vec![0, 1, 255],
                expire_at_ms: None,
            },
            SnapshotEntry {
                key: "b".into(),
                value: b"text".to_vec(),
                expire_at_ms: Some(77),
            },
            SnapshotEntry {
                key: vec![b'b', 0xff].into(),
                value: Vec::new(),
                expire_at_ms: None,
            },
        ]
    }

    /// A version 1 file (keys were `String`s) reads as the same entries.
    #[test]
    fn version_1_files_read() {
        #[derive(serde::Serialize)]
        struct V1Entry<'a> {
            key: &'a str,
            #[serde(with = "serde_bytes")]
            value: &'a [u8],
            expire_at_ms: Option<u64>,
        }
        let text: Vec<SnapshotEntry> = entries().into_iter().take(2).collect();
        let v1: Vec<V1Entry<'_>> = text
            .iter()
            .map(|e| V1Entry {
                key: e.key.as_str().unwrap(),
                value: &e.value,
                expire_at_ms: e.expire_at_ms,
            })
            .collect();
        let payload = bincode::serde::encode_to_vec(&v1, config()).unwrap();
        let mut b = file_of(1, 5, &payload);
        assert_eq!(decode(&b, Path::new("s")).unwrap(), (5, text));
        b[8] = 3;
        assert!(matches!(
            decode(&b, Path::new("s")),
            Err(AtlasError::UnsupportedVersion { found: 3, .. })
        ));
    }

    /// A snapshot file of `version` at `seq` over `payload`, its checksum right.
    fn file_of(version: u32, seq: u64, payload: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(SNAPSHOT_MAGIC);
        b.extend_from_slice(&version.to_le_bytes());
        b.extend_from_slice(&seq.to_le_bytes());
        b.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&b[8..28]), payload);
        b.extend_from_slice(&crc.to_le_bytes());
        b.extend_from_slice(payload);
        b
    }

    #[test]
    fn round_trip_and_names() {
        let bytes = encode(9, &entries()).unwrap();
        assert_eq!(decode(&bytes, Path::new("s")).unwrap(), (9, entries()));
        assert_eq!(parse_snapshot_name(&snapshot_name(9)), Some(9));
        assert_eq!(parse_snapshot_name("snapshot-9.snap"), None);
    }

    proptest::proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
        ) {
            let _ = decode(&body, Path::new("s"));
            // Also with a valid header over an arbitrary payload (checksum made to match),
            // so the bincode decoder itself sees garbage.
            let _ = decode(&file_of(SNAPSHOT_VERSION, 1, &body), Path::new("s"));
        }
    }

    #[test]
    fn every_flip_and_cut_is_refused() {
        let bytes = encode(9, &entries()).unwrap();
        for at in 0..bytes.len() {
            let mut b = bytes.clone();
            b[at] ^= 0x10;
            assert!(decode(&b, Path::new("s")).is_err(), "flip at {at}");
            assert!(decode(&bytes[..at], Path::new("s")).is_err(), "cut at {at}");
        }
    }
}
