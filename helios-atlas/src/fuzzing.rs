//! Entry points for fuzzing the decoders (issue 18, point 8), shared by the cargo-fuzz
//! targets (`fuzz/`, run by `scripts/fuzz.sh`) and the short proptest byte-fuzz that CI
//! runs (`tests/decoders_fuzz.rs`). Each takes arbitrary bytes, must never panic on them,
//! and panics only when a property below fails (that is the finding):
//!
//! - [`record_line`]: a line the AOF decoder accepts encodes back to a line that decodes
//!   to the same record (nothing is accepted that the writer could not have written).
//! - [`record_decoders`]: the fast record decoder against the general (serde) one, on
//!   the line as given and on a valid line edited by the input: whatever the fast path
//!   accepts, the general one accepts as the same record; and the fast path accepts
//!   every line in its domain, a valid line exactly as the writer encodes it with no
//!   escape in it. (Not "both accept or both refuse": the fast path refuses valid lines
//!   outside its domain on purpose, whitespace or escapes, and the general path takes
//!   them.)
//! - [`segment`]: scanning any bytes never panics; and valid records followed by any bytes
//!   are all returned, in order (no acknowledged record is lost to what follows it).
//! - [`snapshot`]: decoding any bytes never panics; a snapshot that decodes re-encodes to
//!   one that decodes to the same entries.
//! - [`recovery`]: a data directory of arbitrary files (named like segments, snapshots and
//!   leftovers) is checked and opened without a panic: open either succeeds or names a
//!   file, and `check` and `repair` run on it. When the first segment starts with valid
//!   records (then anything), no acknowledged record is lost: the store opens, at once
//!   or after `repair`, with every one of them replayed (and, when nothing else was
//!   replayed, their values).
//!
//! Not part of the API: hidden from the docs, and free to change.

use crate::aof;
use crate::snapshot;
use crate::storage::MemStorage;
use crate::{Atlas, AtlasError, Op, Options};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// See the module docs.
pub fn record_line(data: &[u8]) {
    let Ok(record) = aof::decode_record_line(data) else {
        return;
    };
    let mut line = Vec::new();
    aof::encode_record(record.seq, &record.ops, &mut line);
    assert_eq!(line.pop(), Some(b'\n'));
    let again = aof::decode_record_line(&line).expect("a re-encoded record decodes");
    assert_eq!(again, record);
}

/// See the module docs.
pub fn record_decoders(data: &[u8]) {
    check_decoders(data);
    // A valid line, one record of the ops the first part makes, edited by the second
    // part: (position, byte) pairs; an odd byte left over cuts the line there.
    let parts = split(data, 2);
    let ops: Vec<Op> = records_from(parts[0], 1)
        .into_iter()
        .flat_map(|(_, ops)| ops)
        .collect();
    if ops.is_empty() {
        return;
    }
    let mut line = Vec::new();
    aof::encode_record(u64::from(parts[0].len() as u8) + 1, &ops, &mut line);
    line.pop();
    check_decoders(&line);
    for edit in parts[1].chunks(2) {
        match *edit {
            [at, byte] => {
                let at = usize::from(at) * line.len() / 256;
                line[at] = byte;
            }
            [at] => line.truncate(usize::from(at) * line.len() / 256),
            _ => {}
        }
        if line.is_empty() {
            return;
        }
    }
    check_decoders(&line);
}

fn check_decoders(line: &[u8]) {
    let (fast, general) = aof::decode_record_line_paths(line);
    if let Some(r) = &fast {
        assert_eq!(
            general.as_ref(),
            Ok(r),
            "the fast path decodes {:?} otherwise",
            String::from_utf8_lossy(line)
        );
    }
    if let Ok(r) = &general {
        let mut canonical = Vec::new();
        aof::encode_record(r.seq, &r.ops, &mut canonical);
        canonical.pop();
        if canonical == line && !line.contains(&b'\\') {
            assert_eq!(
                fast.as_ref(),
                Some(r),
                "the fast path refuses the canonical {:?}",
                String::from_utf8_lossy(line)
            );
        }
    }
}

/// Splits `data` into `n` parts (some maybe empty) at positions it chooses itself (its
/// first bytes).
fn split(data: &[u8], n: usize) -> Vec<&[u8]> {
    let (head, mut rest) = data.split_at(data.len().min(n));
    let mut parts = Vec::with_capacity(n);
    for (i, &b) in head.iter().enumerate() {
        if i + 1 == n {
            break;
        }
        let at = (usize::from(b) * rest.len() / 255).min(rest.len());
        let (p, r) = rest.split_at(at);
        parts.push(p);
        rest = r;
    }
    parts.push(rest);
    parts.resize(n, &[]);
    parts
}

/// Records built from `data`: a few sets and deletes with keys and values from its bytes.
fn records_from(data: &[u8], start_seq: u64) -> Vec<(u64, Vec<Op>)> {
    data.chunks(7)
        .take(16)
        .enumerate()
        .map(|(i, c)| {
            // Keys from the raw bytes: some are not UTF-8 (written as `kb`).
            let mut key = b"k".to_vec();
            key.extend_from_slice(&c[..c.len().min(3)]);
            let key = crate::Key::from(key);
            let op = if c.first().is_some_and(|b| b % 3 == 0) {
                Op::Del {
                    key,
                    expired: false,
                }
            } else {
                Op::Set {
                    key,
                    value: bytes::Bytes::copy_from_slice(c),
                    expire_at_ms: c.get(1).map(|&b| u64::from(b) * 1000),
                }
            };
            (start_seq + i as u64, vec![op])
        })
        .collect()
}

/// See the module docs.
pub fn segment(data: &[u8]) {
    let path = Path::new("aof-00000000000000000001.jsonl");
    let _ = aof::scan_segment(data, path, 1);
    // Valid records, then the rest of the input as whatever follows them.
    let parts = split(data, 2);
    let records = records_from(parts[0], 1);
    let mut bytes = aof::header_line(1);
    for (seq, ops) in &records {
        aof::encode_record(*seq, ops, &mut bytes);
    }
    let valid_end = bytes.len();
    bytes.extend_from_slice(parts[1]);
    let scan = aof::scan_segment(&bytes, path, 1).expect("a segment with a valid header scans");
    let kept = records.len().min(scan.records.len());
    assert_eq!(
        kept,
        records.len(),
        "valid records lost to what follows them (valid up to byte {valid_end}): {:?}",
        scan.end
    );
    for (got, (seq, ops)) in scan.records.iter().zip(&records) {
        assert_eq!((&got.record.seq, &got.record.ops), (seq, ops));
    }
}

/// See the module docs.
pub fn snapshot(data: &[u8]) {
    let path = Path::new("snapshot-00000000000000000001.snap");
    let Ok((seq, entries)) = snapshot::decode(data, path) else {
        return;
    };
    let bytes = snapshot::encode(seq, &entries).expect("a decoded snapshot encodes");
    let (seq2, entries2) = snapshot::decode(&bytes, path).expect("a re-encoded snapshot decodes");
    assert_eq!((seq2, entries2), (seq, entries));
}

/// See the module docs.
pub fn recovery(data: &[u8]) {
    let dir = PathBuf::from("/data");
    let names = [
        aof::segment_name(1),
        aof::segment_name(3),
        snapshot::snapshot_name(2),
        "snapshot-00000000000000000002.snap.tmp".to_owned(),
    ];
    let disk = MemStorage::new();
    use crate::storage::Storage;
    disk.create_dir_durable(&dir)
        .expect("a directory on the model disk");
    let parts = split(data, names.len());
    for (name, part) in names.iter().zip(&parts) {
        if !part.is_empty() {
            disk.put_file(&dir.join(name), part);
        }
    }
    // A valid start, sometimes: the records of the first part as segment 1, then the
    // second part (as if a crash or damage followed them).
    let valid = data.first().is_some_and(|b| b % 2 == 0);
    let records = if valid {
        let records = records_from(parts[0], 1);
        let mut seg = aof::header_line(1);
        for (seq, ops) in &records {
            aof::encode_record(*seq, ops, &mut seg);
        }
        seg.extend_from_slice(parts[1]);
        disk.put_file(&dir.join(&names[0]), &seg);
        records
    } else {
        Vec::new()
    };
    let _ = crate::check(&disk, &dir);
    let options = Options {
        storage: Arc::new(disk.clone()),
        maintenance_interval_ms: None,
        auto_snapshot_aof_size: None,
        ..Options::default()
    };
    let db = match Atlas::open(&dir, options.clone()) {
        Ok(db) => Some(db),
        Err(AtlasError::Corrupt { .. } | AtlasError::UnsupportedVersion { .. }) => {
            let repaired = crate::repair(&disk, &dir);
            match Atlas::open(&dir, options) {
                Ok(db) => Some(db),
                Err(e) if valid => {
                    panic!("valid records, then damage: no open after repair ({repaired:?}): {e}")
                }
                Err(_) => None,
            }
        }
        Err(e) if valid => panic!("valid records, then damage: open fails with {e}"),
        Err(_) => None,
    };
    let Some(db) = db else {
        return;
    };
    db.with_keyspace(|ks| ks.check_invariants());
    if valid {
        let n = records.len() as u64;
        assert!(
            db.last_seq() >= n,
            "acknowledged records lost: {n} valid, {} replayed",
            db.last_seq()
        );
        // Nothing but them replayed (no snapshot the input made valid, no record it
        // added): their last values are there.
        let snapshot_decodes = snapshot::decode(parts[2], Path::new("s")).is_ok();
        if db.last_seq() == n && !snapshot_decodes {
            let mut last = std::collections::BTreeMap::new();
            for (_, ops) in &records {
                for op in ops {
                    last.insert(op.key().to_owned(), op.clone());
                }
            }
            for (key, op) in last {
                match op {
                    Op::Set {
                        value,
                        expire_at_ms: None,
                        ..
                    } => assert_eq!(db.get(&key), Some(value), "{key}"),
                    Op::Del { .. } => assert_eq!(db.get(&key), None, "{key}"),
                    _ => {}
                }
            }
        }
    }
    let _ = db.close();
}
