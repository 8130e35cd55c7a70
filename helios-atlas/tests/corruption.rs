//! Damaged AOF files on the real file system.
//!
//! - Truncating the last record at every byte offset inside it (a crash mid-append) opens
//!   cleanly with every earlier record, and the file is cut back to the last whole record;
//!   with `aof_load_truncated` off, the same file is refused with its offset.
//! - A flipped byte in a record before the tail refuses to open, naming the file and the
//!   byte offset where the bad record starts; `check` reports the same; `repair` cuts the
//!   AOF there (keeping the damaged bytes aside) and the store then opens with everything
//!   before it.
//! - The padding the real file system keeps written ahead of the appends (blank lines): a
//!   crash leaves it after the records, and the store opens with every record and appends
//!   right after them; a last record cut at a sector boundary inside it (the rest
//!   newlines or zeros) is torn, and cut elsewhere it is refused as corrupt (no crash
//!   cuts there); data past a stretch of padding is refused with the offset where the
//!   padding starts, and `repair` cuts it there.
//! - A whole, checksummed last record whose final sectors read as zeros before intact
//!   padding is damage, not a torn tail: refused with its offset; `repair` sets the
//!   bytes aside and cuts there (issue 18, point 4).

use helios_atlas::storage::FsStorage;
use helios_atlas::{Atlas, AtlasError, FileStatus, FsyncPolicy, Options};
use std::path::Path;

const SEGMENT: &str = "aof-00000000000000000001.jsonl";

fn options() -> Options {
    Options {
        fsync: FsyncPolicy::Always,
        maintenance_interval_ms: None,
        auto_snapshot_aof_size: None,
        ..Options::default()
    }
}

/// Writes three records and returns the AOF bytes and the offsets where records start.
fn three_records(dir: &Path) -> (Vec<u8>, Vec<usize>) {
    let db = Atlas::open(dir, options()).unwrap();
    db.set("first", "1").unwrap();
    db.set("second", "2").unwrap();
    db.set("third", "3").unwrap();
    db.close().unwrap();
    drop(db);
    let bytes = std::fs::read(dir.join(SEGMENT)).unwrap();
    let mut starts = vec![];
    let mut at = 0;
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        starts.push(at);
        at += line.len();
    }
    assert_eq!(starts.len(), 4, "header + 3 records");
    (bytes, starts)
}

#[test]
fn truncation_at_every_offset_of_the_last_record_opens_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let (bytes, starts) = three_records(&src);
    let last = starts[3];
    for cut in last..bytes.len() {
        let dir = tmp.path().join(format!("cut{cut}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(SEGMENT), &bytes[..cut]).unwrap();
        let db = Atlas::open(&dir, options()).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        assert_eq!(db.get("first").unwrap(), "1");
        assert_eq!(db.get("second").unwrap(), "2");
        assert_eq!(db.get("third"), None, "cut at {cut}");
        assert_eq!(db.last_seq(), 2);
        // The torn bytes are gone, and new writes continue the sequence.
        db.set("fourth", "4").unwrap();
        drop(db);
        let db = Atlas::open(&dir, options()).unwrap();
        assert_eq!(db.last_seq(), 3);
        assert_eq!(db.get("fourth").unwrap(), "4");
        drop(db);
        std::fs::remove_dir_all(&dir).unwrap();
    }
    // With aof_load_truncated off, a torn tail is refused with its offset.
    let dir = tmp.path().join("strict");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(SEGMENT), &bytes[..bytes.len() - 3]).unwrap();
    let strict = Options {
        aof_load_truncated: false,
        ..options()
    };
    match Atlas::open(&dir, strict) {
        Err(AtlasError::Corrupt { file, offset, .. }) => {
            assert_eq!(file, dir.join(SEGMENT));
            assert_eq!(offset, last as u64);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn flipped_byte_is_refused_with_offset_and_repair_recovers_the_prefix() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let (bytes, starts) = three_records(&src);
    let (from, to) = (starts[2], starts[3] - 1);
    for at in from..to {
        let dir = tmp.path().join(format!("flip{at}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut b = bytes.clone();
        b[at] ^= 0x04;
        std::fs::write(dir.join(SEGMENT), &b).unwrap();
        match Atlas::open(&dir, options()) {
            Err(e @ AtlasError::Corrupt { .. }) => {
                let AtlasError::Corrupt { file, offset, .. } = &e else {
                    unreachable!()
                };
                assert_eq!(*file, dir.join(SEGMENT));
                assert_eq!(*offset, from as u64, "flip at {at}");
                let msg = e.to_string();
                assert!(
                    msg.contains(SEGMENT) && msg.contains(&from.to_string()),
                    "{msg}"
                );
            }
            other => panic!("flip at {at}: {other:?}"),
        }
        let report = helios_atlas::check(&FsStorage, &dir).unwrap();
        assert!(!report.is_clean());
        assert!(matches!(
            report.segments[0].status,
            FileStatus::Corrupt { offset, .. } if offset == from as u64
        ));
        let repaired = helios_atlas::repair(&FsStorage, &dir).unwrap();
        assert_eq!(repaired.truncated, vec![(dir.join(SEGMENT), from as u64)]);
        assert!(
            dir.join(format!("{SEGMENT}.corrupt")).exists(),
            "damaged bytes kept"
        );
        assert!(helios_atlas::check(&FsStorage, &dir).unwrap().is_clean());
        let db = Atlas::open(&dir, options()).unwrap();
        assert_eq!(db.get("first").unwrap(), "1");
        assert_eq!(db.get("second"), None);
        assert_eq!(db.get("third"), None);
        db.set("again", "x").unwrap();
        drop(db);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn repair_refuses_while_the_store_is_open() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Atlas::open(tmp.path(), options()).unwrap();
    assert!(matches!(
        helios_atlas::repair(&FsStorage, tmp.path()),
        Err(AtlasError::Locked { .. })
    ));
    drop(db);
    let r = helios_atlas::repair(&FsStorage, tmp.path()).unwrap();
    assert!(r.truncated.is_empty() && r.set_aside.is_empty());
}

#[test]
fn a_second_process_style_opener_is_refused_on_the_real_fs() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Atlas::open(tmp.path(), options()).unwrap();
    // The holder's pid is named, and the message says what to do about it.
    match Atlas::open(tmp.path(), options()) {
        Err(e @ AtlasError::Locked { .. }) => {
            let AtlasError::Locked { holder_pid, .. } = &e else {
                unreachable!()
            };
            assert_eq!(*holder_pid, Some(std::process::id()));
            let text = e.to_string();
            assert!(
                text.contains(&format!("by process {}", std::process::id()))
                    && text.contains("another server"),
                "{text}"
            );
        }
        other => panic!("{other:?}"),
    }
    drop(db);
    Atlas::open(tmp.path(), options()).unwrap();
}

#[test]
fn a_data_dir_that_is_a_file_is_named_as_not_a_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("data");
    std::fs::write(&file, "x").unwrap();
    for dir in [file.clone(), file.join("below")] {
        match Atlas::open(&dir, options()) {
            Err(e @ AtlasError::NotADirectory { .. }) => {
                assert_eq!(
                    e.to_string(),
                    format!("data directory {}: not a directory", dir.display())
                );
            }
            other => panic!("{}: {other:?}", dir.display()),
        }
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"x");
}

#[test]
fn unknown_versions_are_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join(SEGMENT),
        b"{\"format\":\"helios-aof\",\"version\":4,\"start_seq\":1}\n",
    )
    .unwrap();
    match Atlas::open(tmp.path(), options()) {
        Err(AtlasError::UnsupportedVersion {
            found: 4,
            supported: 3,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
}

/// The AOF as a crash (kill -9, power loss) leaves it on the real file system: the
/// records, then the padding the storage keeps written ahead of the appends.
fn three_records_padded(dir: &Path) -> (Vec<u8>, usize) {
    let db = Atlas::open(dir, options()).unwrap();
    db.set("first", "1").unwrap();
    db.set("second", "2").unwrap();
    db.set("third", "3").unwrap();
    let bytes = std::fs::read(dir.join(SEGMENT)).unwrap();
    db.close().unwrap();
    drop(db);
    let closed = std::fs::read(dir.join(SEGMENT)).unwrap();
    // A clean close cuts the padding; while open it was there, blank lines after them.
    assert!(bytes.len() >= closed.len() + (256 << 10), "{}", bytes.len());
    assert_eq!(&bytes[..closed.len()], &closed[..]);
    assert!(bytes[closed.len()..].iter().all(|&b| b == b'\n'));
    assert_eq!(
        closed
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .count(),
        4
    );
    (bytes, closed.len())
}

#[test]
fn a_crashed_padded_aof_opens_with_every_record_and_appends_after_them() {
    let tmp = tempfile::tempdir().unwrap();
    let (bytes, end) = three_records_padded(&tmp.path().join("src"));
    let dir = tmp.path().join("crashed");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(SEGMENT), &bytes).unwrap();
    let db = Atlas::open(&dir, options()).unwrap();
    assert_eq!(db.last_seq(), 3);
    assert_eq!(db.get("third").unwrap(), "3");
    db.set("fourth", "4").unwrap();
    drop(db);
    // The fourth record went right after the third (not after the old padding).
    let after = std::fs::read(dir.join(SEGMENT)).unwrap();
    assert_eq!(&after[..end], &bytes[..end]);
    assert!(after[end..].starts_with(b"{\"seq\":4,"));
    let db = Atlas::open(&dir, options()).unwrap();
    assert_eq!((db.last_seq(), db.get("fourth").unwrap()), (4, "4".into()));
    // Padded again while open, and `check` calls that clean.
    db.set("fifth", "5").unwrap();
    assert!(std::fs::metadata(dir.join(SEGMENT)).unwrap().len() > (256 << 10));
    let report = helios_atlas::check(&FsStorage, &dir).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.segments[0].record_count, 5);
}

#[test]
fn a_last_record_cut_at_a_sector_boundary_in_padding_is_torn() {
    let tmp = tempfile::tempdir().unwrap();
    // A last record over several sectors, holding `]}` and `}` in its value (a JSON
    // document stored as text), as a crash leaves it: records, then padding.
    let src = tmp.path().join("src");
    let doc = r#"{"a":[1]}"#.repeat(300);
    let db = Atlas::open(&src, options()).unwrap();
    db.set("first", "1").unwrap();
    db.set("doc", doc).unwrap();
    let bytes = std::fs::read(src.join(SEGMENT)).unwrap();
    drop(db);
    let end = bytes.iter().rposition(|&b| b != b'\n').unwrap() + 2;
    let last = bytes[..end - 1].iter().rposition(|&b| b == b'\n').unwrap() + 1;
    let open_cut = |cut: usize, pad: u8| {
        // The record's bytes before `cut` landed; its sectors from `cut` on did not.
        let mut b = bytes.clone();
        b[cut..end].fill(pad);
        let dir = tmp.path().join(format!("cut{cut}-{pad}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(SEGMENT), &b).unwrap();
        (Atlas::open(&dir, options()), dir)
    };
    let mut torn = 0;
    for cut in last + 1..end - 1 {
        let aligned = cut.is_multiple_of(helios_atlas::aof::SECTOR_SIZE);
        if aligned || cut % 37 == 0 {
            match open_cut(cut, b'\n') {
                (Ok(db), dir) if aligned => {
                    assert_eq!((db.last_seq(), db.get("doc")), (1, None), "cut {cut}");
                    db.set("third", "3").unwrap();
                    drop(db);
                    let db = Atlas::open(&dir, options()).unwrap();
                    assert_eq!((db.last_seq(), db.get("third").unwrap()), (2, "3".into()));
                    torn += 1;
                }
                // No crash cuts a record off a sector boundary: refused, at its start.
                (Err(AtlasError::Corrupt { offset, .. }), _) if !aligned => {
                    assert_eq!(offset, last as u64, "cut {cut}");
                }
                (other, _) => panic!("cut {cut}: {:?}", other.map(|db| db.last_seq())),
            }
        }
        if aligned {
            // Sectors that read as zeros with the padding after them intact: appends land
            // only on durable padding, so no crash leaves that; damage, refused at the
            // record (issue 18, point 4).
            match open_cut(cut, 0) {
                (Err(AtlasError::Corrupt { offset, .. }), _) => {
                    assert_eq!(offset, last as u64, "cut {cut}")
                }
                (other, _) => panic!("cut {cut}: {:?}", other.map(|db| db.last_seq())),
            }
        }
    }
    assert!(torn >= 4, "{torn} sector boundaries in the record");
}

/// Issue 18, point 4, end to end: a padded segment whose last record is whole and
/// checksummed, but whose final sector(s) read back as zeros with the padding after them
/// intact. Appends land only on durable padding, so no crash leaves that: `open` refuses
/// with the record's offset (it is not cut as a torn tail), `check` says the same,
/// `repair` keeps the damaged bytes as `*.corrupt` and cuts at the record, and the store
/// then opens with every earlier record.
#[test]
fn a_whole_last_record_with_zeroed_final_sectors_is_refused_and_repair_cuts_it() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let doc = r#"{"a":[1]}"#.repeat(300);
    let db = Atlas::open(&src, options()).unwrap();
    db.set("first", "1").unwrap();
    db.set("second", "2").unwrap();
    db.set("doc", doc).unwrap();
    // As a crash leaves it: records, then padding.
    let bytes = std::fs::read(src.join(SEGMENT)).unwrap();
    drop(db);
    let end = bytes.iter().rposition(|&b| b != b'\n').unwrap() + 2;
    let last = bytes[..end - 1].iter().rposition(|&b| b == b'\n').unwrap() + 1;
    let sector = helios_atlas::aof::SECTOR_SIZE;
    // The record's last sector boundary, and the one before: its final one or two
    // sectors read as zeros, the newline that ends it included.
    let final_sector = (end - 1) / sector * sector;
    assert!(
        final_sector - sector > last,
        "the record spans three sectors"
    );
    for from in [final_sector, final_sector - sector] {
        let mut b = bytes.clone();
        b[from..end].fill(0);
        assert!(b[end..].iter().all(|&c| c == b'\n'), "padding after");
        let dir = tmp.path().join(format!("zeros{from}"));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(SEGMENT);
        std::fs::write(&path, &b).unwrap();
        match Atlas::open(&dir, options()) {
            Err(e @ AtlasError::Corrupt { .. }) => {
                let AtlasError::Corrupt { file, offset, .. } = &e else {
                    unreachable!()
                };
                assert_eq!((file, *offset), (&path, last as u64), "from {from}");
                assert!(e.to_string().contains(&last.to_string()), "{e}");
            }
            other => panic!("from {from}: {:?}", other.map(|db| db.last_seq())),
        }
        let report = helios_atlas::check(&FsStorage, &dir).unwrap();
        assert!(matches!(
            report.segments[0].status,
            FileStatus::Corrupt { offset, .. } if offset == last as u64
        ));
        let repaired = helios_atlas::repair(&FsStorage, &dir).unwrap();
        assert_eq!(repaired.truncated, vec![(path.clone(), last as u64)]);
        let aside = dir.join(format!("{SEGMENT}.corrupt"));
        assert_eq!(repaired.set_aside, vec![aside.clone()]);
        assert_eq!(
            std::fs::read(&aside).unwrap(),
            b,
            "the damaged bytes, whole"
        );
        assert_eq!(std::fs::read(&path).unwrap(), &bytes[..last]);
        let db = Atlas::open(&dir, options()).unwrap();
        assert_eq!(db.last_seq(), 2, "from {from}");
        assert_eq!(db.get("first").unwrap(), "1");
        assert_eq!(db.get("second").unwrap(), "2");
        assert_eq!(db.get("doc"), None);
        db.set("third", "3").unwrap();
        drop(db);
        let db = Atlas::open(&dir, options()).unwrap();
        assert_eq!((db.last_seq(), db.get("third").unwrap()), (3, "3".into()));
    }
}

#[test]
fn data_after_padding_is_refused_off_a_sector_boundary_and_torn_on_one() {
    let tmp = tempfile::tempdir().unwrap();
    let (bytes, end) = three_records_padded(&tmp.path().join("src"));
    let sector = helios_atlas::aof::SECTOR_SIZE;
    // Something landed past a stretch of padding that ends off a sector boundary: no
    // crash leaves that, so it is not the log's own tail.
    let at = (end + 4096).next_multiple_of(sector) + 1;
    let mut b = bytes.clone();
    b[at..at + 4].copy_from_slice(b"junk");
    let dir = tmp.path().join("junk");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(SEGMENT), &b).unwrap();
    match Atlas::open(&dir, options()) {
        Err(AtlasError::Corrupt {
            file,
            offset,
            reason,
        }) => {
            assert_eq!((file, offset), (dir.join(SEGMENT), end as u64));
            assert!(reason.contains(&format!("byte {at}")), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    helios_atlas::repair(&FsStorage, &dir).unwrap();
    let db = Atlas::open(&dir, options()).unwrap();
    assert_eq!((db.last_seq(), db.get("third").unwrap()), (3, "3".into()));
    drop(db);
    // On a sector boundary, after padding: sectors never written, then one that landed
    // out of order (after the last fsync): a torn tail, cut.
    let at = at - 1;
    let mut b = bytes.clone();
    b[at..at + 4].copy_from_slice(b"junk");
    let dir = tmp.path().join("hole");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(SEGMENT), &b).unwrap();
    let db = Atlas::open(&dir, options()).unwrap();
    assert_eq!((db.last_seq(), db.get("third").unwrap()), (3, "3".into()));
    db.set("fourth", "4").unwrap();
    drop(db);
    let db = Atlas::open(&dir, options()).unwrap();
    assert_eq!(db.get("fourth").unwrap(), "4");
}

#[test]
fn a_version_1_last_segment_is_read_and_left_as_is() {
    let tmp = tempfile::tempdir().unwrap();
    // A store written by a version-1 build: a header and a record, no padding.
    let v1 = concat!(
        "{\"format\":\"helios-aof\",\"version\":1,\"start_seq\":1}\n",
        "{\"seq\":1,\"crc\":\"9d62273b\",\"ops\":[{\"op\":\"set\",\"k\":\"a\",\"v\":\"1\"}]}\n"
    );
    std::fs::write(tmp.path().join(SEGMENT), v1).unwrap();
    let db = Atlas::open(tmp.path(), options()).unwrap();
    assert_eq!(db.get("a").unwrap(), "1");
    db.set("b", "2").unwrap();
    // The new record went to a new (version 3, padded) segment; the old file is untouched.
    let v2 = tmp.path().join("aof-00000000000000000002.jsonl");
    assert!(
        std::fs::read(&v2)
            .unwrap()
            .starts_with(b"{\"format\":\"helios-aof\",\"version\":3,")
    );
    assert_eq!(
        std::fs::read(tmp.path().join(SEGMENT)).unwrap(),
        v1.as_bytes()
    );
    drop(db);
    let db = Atlas::open(tmp.path(), options()).unwrap();
    assert_eq!(
        (db.get("a").unwrap(), db.get("b").unwrap()),
        ("1".into(), "2".into())
    );
}

#[cfg(unix)]
#[test]
fn a_fresh_data_dir_and_its_files_are_owner_only_from_creation() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a").join("data");
    let db = Atlas::open(&dir, options()).unwrap();
    db.set("k", "v").unwrap();
    db.snapshot().unwrap();
    db.set("k2", "v").unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    // The parent created on the way is private too.
    assert_eq!(mode(&tmp.path().join("a")), 0o700);
    assert_eq!(mode(&dir), 0o700);
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
        names.push(path.file_name().unwrap().to_string_lossy().into_owned());
    }
    names.sort();
    assert!(names.iter().any(|n| n.starts_with("aof-")), "{names:?}");
    assert!(
        names.iter().any(|n| n.starts_with("snapshot-")),
        "{names:?}"
    );
    assert!(names.contains(&"LOCK".to_owned()), "{names:?}");
    drop(db);
}
