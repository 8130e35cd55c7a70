//! The append-only file: its on-disk format, encoding and scanning.
//!
//! An AOF is a sequence of segments `aof-{start_seq:020}.jsonl` in the data directory. Each
//! segment is JSON lines:
//!
//! ```text
//! {"format":"helios-aof","version":3,"start_seq":1}
//! {"seq":1,"crc":"9d62273b","ops":[{"op":"set","k":"a","v":"1"}]}
//! {"seq":2,"crc":"764cfe1e","ops":[{"op":"del","k":"a"}]}
//! ```
//!
//! - The header names the format, its version and the sequence number of the segment's
//!   first record; a reader refuses other formats and versions by name.
//! - A record is one line: its sequence number, a CRC-32C (8 lowercase hex digits) and the ops of one atomic write
//!   (a batch is one record, so a crash never replays half of it). The checksum covers the
//!   sequence number (u64 LE), the length of the `ops` text (u64 LE) and the exact bytes of
//!   the `ops` text, so a flipped bit anywhere in the record, or a cut, is caught.
//! - Sequence numbers are contiguous across segments, starting at 1.
//!
//! - Version 2 segments may end in padding: blank lines (newlines, JSON whitespace) written
//!   ahead of the appends by a preallocating storage (`Storage::create_log`), or zero
//!   bytes where a crash left preallocated blocks unwritten. The log ends where the
//!   padding starts. Version 1 segments (no padding) read the same way.
//! - Version 3 keys may be any bytes: a key that is not UTF-8 is written as `"kb"`
//!   (base64) instead of `"k"` (`op` module docs). Older segments hold only `"k"`, and a
//!   build that reads at most version 2 refuses a version 3 segment by its header instead
//!   of misreading its keys. Appends never continue a segment of an older version.
//!
//! Scanning ([`scan_segment`]) classifies the end of a segment: clean (the records end at
//! the end of the file or where nothing but padding follows), a torn tail (a crash in the
//! middle of an append: the last line is an unfinished JSON value, or a whole record
//! whose newline did not land, with nothing but padding or a hole after it; see
//! `torn_at` and `unterminated_end`), or corruption (a complete line that fails to parse
//! or to check, a sequence gap, data after padding, zeros where a landed sector or
//! durable padding should be) at a byte offset.
//! What to do about each is the caller's decision (see `recovery`).

mod fast;

use crate::error::AtlasError;
use crate::limits::RECORD_SIZE_MAX;
use crate::op::Op;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::ops::ControlFlow;
use std::path::Path;

/// The format name in every segment header.
pub const AOF_FORMAT: &str = "helios-aof";
/// The version this build writes (2: padding may follow the records; 3: keys may be any
/// bytes, `"kb"`). It reads 1 to 3.
pub const AOF_VERSION: u32 = 3;
/// The oldest version this build reads.
pub const AOF_VERSION_MIN: u32 = 1;

/// Whether `b` is log padding: the newlines a preallocated log is filled with, or the
/// zeros a file system may show for preallocated blocks a crash left unwritten.
fn is_pad(b: u8) -> bool {
    b == b'\n' || b == 0
}

/// The granularity at which a crash keeps or loses a write: a disk sector. An append cut
/// short (power loss tears at sectors; a killed process at pages, which are whole
/// sectors) stops at a multiple of it, and in a preallocated log a sector it did not reach
/// still holds padding.
pub const SECTOR_SIZE: usize = 512;

/// What the padding that starts at `at` (a pad byte) is.
#[derive(Debug, PartialEq, Eq)]
enum Gap {
    /// Padding to the end of the file: the log ends at `at`.
    End,
    /// Sectors an append never reached (newlines, the padding they held, up to a sector
    /// boundary), then data that did land: writes reached the disk out of order, all of
    /// them after the last fsync (nothing synced follows a hole), so unacknowledged under
    /// `always`. The log ends at `at`, torn.
    Hole,
    /// Anything else: padding that no crash explains (zeros, or not ending on a sector
    /// boundary), then data at this offset.
    Bad(usize),
}

fn gap_at(bytes: &[u8], at: usize) -> Gap {
    match bytes[at..].iter().position(|&b| !is_pad(b)) {
        None => Gap::End,
        Some(n) => {
            let data = at + n;
            // The first landed sector starts at `data`, or one byte before it when its
            // first byte is the newline that ends a record begun in a lost sector (the
            // next record starts right after it).
            let landed = if data.is_multiple_of(SECTOR_SIZE) {
                Some(data)
            } else if (data - 1).is_multiple_of(SECTOR_SIZE) && data - 1 > at && bytes[data] == b'{'
            {
                Some(data - 1)
            } else {
                None
            };
            match landed {
                Some(l) if bytes[at..=l.min(data - 1)].iter().all(|&b| b == b'\n') => Gap::Hole,
                _ => Gap::Bad(data),
            }
        }
    }
}

/// Whether the line at `pos`, which failed to decode, is an append cut short by a crash:
/// it has no newline at all (the rule for a file without padding), or its bytes stop at a
/// sector boundary where the padding's newlines start, followed only by padding or by a
/// hole ([`Gap::Hole`]), and its text is not yet a whole JSON value.
///
/// A whole line that fails to check is corruption, padded or not; so is a cut that no
/// crash makes (off a sector boundary), a whole JSON value whose newline is missing, and
/// a record whose sectors read as zeros with padding after them: appends are written
/// only over padding that is durable (`storage` module docs), so a sector a crash did
/// not let land reads as newlines; zeros inside the padded region are damage. What a
/// corrupted last record could still pass for: one whose line happens to end on a
/// sector boundary (1 in 512) AND whose damage leaves its JSON unfinished AND the rest
/// of its sectors read as newlines.
fn torn_at(bytes: &[u8], pos: usize) -> bool {
    let Some(t) = bytes[pos..]
        .iter()
        .position(|&b| is_pad(b))
        .map(|n| pos + n)
    else {
        return true;
    };
    if !t.is_multiple_of(SECTOR_SIZE) || bytes[t] != crate::storage::LOG_PAD {
        return false;
    }
    if matches!(gap_at(bytes, t), Gap::Bad(_)) {
        return false;
    }
    serde_json::from_slice::<serde::de::IgnoredAny>(&bytes[pos..t]).is_err_and(|e| e.is_eof())
}

/// How a segment ends whose last line, at `pos`, has no newline after it anywhere in the
/// file. Its text runs to the first zero byte (zeros to the end of the file: a growing
/// file whose new size was made durable before its data, or a padding chunk a crash left
/// unsynced) or to the end of the file.
///
/// An append writes a record and its newline with one `write`, so a crash can leave a
/// prefix of them: an unfinished JSON value, or the whole record without its newline.
/// Both are torn. The rest is damage, reported at `pos`: a complete JSON value that is
/// not the next record (a prefix of what an append writes is never one), a syntax error
/// (nor that), and a whole record whose newline reads as a zero byte inside the sector
/// that holds the record's end: that sector landed (the record's end is there), so its
/// newline did too. On a sector boundary the zero is a sector that did not land while
/// the file's size did: torn, as it could be.
fn unterminated_end(bytes: &[u8], pos: usize, expected_seq: u64) -> ScanEnd {
    let torn = ScanEnd::Torn { offset: pos as u64 };
    let rest = &bytes[pos..];
    let text_len = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    let text = &rest[..text_len];
    let corrupt = |reason: String| ScanEnd::Corrupt {
        offset: pos as u64,
        reason,
    };
    match serde_json::from_slice::<serde::de::IgnoredAny>(text) {
        Err(e) if e.is_eof() => return torn,
        Err(e) => return corrupt(format!("not a record, and no newline after it: {e}")),
        Ok(_) => {}
    }
    match decode_record_line(text) {
        Err(reason) => corrupt(format!("{reason} (the last line, no newline after it)")),
        Ok(r) if r.seq != expected_seq => corrupt(format!(
            "expected sequence {expected_seq}, found {} (the last line, no newline after it)",
            r.seq
        )),
        Ok(_) if text_len == rest.len() || (pos + text_len).is_multiple_of(SECTOR_SIZE) => torn,
        Ok(_) => corrupt(format!(
            "a whole record whose newline reads as a zero byte at {}, inside the sector \
             that holds the record's end",
            pos + text_len
        )),
    }
}

/// One logged write: a sequence number and its ops, applied all or nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Sequence number, contiguous from 1.
    pub seq: u64,
    /// The effects, in order.
    pub ops: Vec<Op>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    format: String,
    version: u32,
    start_seq: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LineWire<'a> {
    seq: u64,
    crc: &'a str,
    #[serde(borrow)]
    ops: &'a RawValue,
}

/// The file name of the segment whose first record is `start_seq`.
pub fn segment_name(start_seq: u64) -> String {
    format!("aof-{start_seq:020}.jsonl")
}

/// Parses a segment file name back into its start sequence.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("aof-")?.strip_suffix(".jsonl")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The header line of a segment, newline included.
pub fn header_line(start_seq: u64) -> Vec<u8> {
    let header = Header {
        format: AOF_FORMAT.to_owned(),
        version: AOF_VERSION,
        start_seq,
    };
    // Serializing a struct of strings and integers cannot fail.
    let mut line = serde_json::to_vec(&header).unwrap_or_default();
    line.push(b'\n');
    line
}

fn checksum(seq: u64, ops_text: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&seq.to_le_bytes());
    let crc = crc32c::crc32c_append(crc, &(ops_text.len() as u64).to_le_bytes());
    crc32c::crc32c_append(crc, ops_text)
}

/// Appends the record line for `seq` and `ops` (newline included) to `out`.
pub fn encode_record(seq: u64, ops: &[Op], out: &mut Vec<u8>) {
    debug_assert!(seq > 0, "sequence numbers start at 1");
    debug_assert!(!ops.is_empty(), "a record holds at least one op");
    let start = out.len();
    out.extend_from_slice(b"{\"seq\":");
    helios_core::digits::push_dec(out, seq);
    out.extend_from_slice(b",\"crc\":\"");
    let crc_at = out.len();
    // Placeholder, patched below once the ops text is known: 8 hex digits.
    out.extend_from_slice(b"00000000\",\"ops\":");
    let ops_at = out.len();
    out.push(b'[');
    for (i, op) in ops.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        op.encode_json(out);
    }
    out.push(b']');
    let crc = checksum(seq, &out[ops_at..]);
    for (i, slot) in out[crc_at..crc_at + 8].iter_mut().enumerate() {
        let nibble = (crc >> (28 - 4 * i)) & 0xF;
        *slot = b"0123456789abcdef"[nibble as usize];
    }
    out.extend_from_slice(b"}\n");
    debug_assert!(
        decode_record_line(&out[start..out.len() - 1]).is_ok(),
        "a record must read back as written"
    );
}

/// Decodes one record line (without its newline).
pub fn decode_record_line(line: &[u8]) -> Result<Record, String> {
    if line.len() as u64 > RECORD_SIZE_MAX {
        return Err(format!(
            "record of {} bytes exceeds the limit of {RECORD_SIZE_MAX}",
            line.len()
        ));
    }
    if let Some(record) = fast::decode_canonical(line) {
        return Ok(record);
    }
    decode_record_line_general(line)
}

/// The two decoders behind [`decode_record_line`], each on its own, for the fuzzers
/// (`crate::fuzzing::record_decoders`): the fast path (`None` for a line that is not
/// canonical, or not valid) and the general one.
pub(crate) fn decode_record_line_paths(line: &[u8]) -> (Option<Record>, Result<Record, String>) {
    (
        fast::decode_canonical(line),
        decode_record_line_general(line),
    )
}

/// [`decode_record_line`] through serde: every valid line, and the reason for an invalid
/// one.
fn decode_record_line_general(line: &[u8]) -> Result<Record, String> {
    let wire: LineWire<'_> =
        serde_json::from_slice(line).map_err(|e| format!("not a record: {e}"))?;
    let stored = (wire.crc.len() == 8)
        .then(|| u32::from_str_radix(wire.crc, 16).ok())
        .flatten()
        .ok_or_else(|| format!("checksum {:?} is not 8 hex digits", wire.crc))?;
    let ops_text = wire.ops.get();
    let crc = checksum(wire.seq, ops_text.as_bytes());
    if crc != stored {
        return Err(format!(
            "checksum mismatch (stored {stored:08x}, computed {crc:08x})"
        ));
    }
    let ops: Vec<Op> =
        serde_json::from_str(ops_text).map_err(|e| format!("bad ops in record: {e}"))?;
    if ops.is_empty() {
        return Err("record holds no ops".to_owned());
    }
    Ok(Record { seq: wire.seq, ops })
}

/// A record found by [`scan_segment`], with where it sits in the file.
#[derive(Debug, Clone)]
pub struct ScannedRecord {
    /// Byte offset of the record's first byte.
    pub offset: u64,
    /// Byte offset just past its newline.
    pub end: u64,
    /// The record.
    pub record: Record,
}

/// How a segment ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanEnd {
    /// Every byte belongs to a valid line, or is padding after the last one.
    Clean,
    /// An append cut short by a crash: the last line has no newline after it and is an
    /// unfinished JSON value or a whole record (see `unterminated_end`), or it stops at a
    /// sector boundary in padding, or sectors in padding were never written and data
    /// after them was (see `torn_at`). `offset` is where the cut line (or the padding)
    /// starts; truncating there leaves a clean segment.
    Torn {
        /// Start of the torn line.
        offset: u64,
    },
    /// A complete line is bad, or the sequence jumps. Everything from `offset` on is
    /// suspect.
    Corrupt {
        /// Start of the bad line.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
}

/// The result of reading one segment.
#[derive(Debug, Clone)]
pub struct SegmentScan {
    /// The valid records, in order.
    pub records: Vec<ScannedRecord>,
    /// Byte offset just past the header line (0 if the header itself is torn).
    pub header_end: u64,
    /// Byte offset just past the last valid record (or the header): where the log's
    /// content ends; padding, or the bad tail [`SegmentScan::end`] reports, follows.
    pub log_end: u64,
    /// How the segment ends.
    pub end: ScanEnd,
}

impl ScanEnd {
    /// Where the valid part of the segment ends, if it does not end cleanly.
    pub fn offset(&self) -> Option<u64> {
        match self {
            ScanEnd::Clean => None,
            ScanEnd::Torn { offset } | ScanEnd::Corrupt { offset, .. } => Some(*offset),
        }
    }
}

impl SegmentScan {
    /// Where the valid part of the segment ends, if it does not end cleanly.
    pub fn end_offset(&self) -> Option<u64> {
        self.end.offset()
    }
}

/// Reads a segment's bytes. `start_seq` comes from its file name and must match the header.
///
/// Errors only for a header of another format or version; every other problem is reported
/// in [`SegmentScan::end`] so the caller can decide (truncate, refuse, or repair).
/// Collects every record; replay uses [`scan_segment_each`], which holds one at a time.
pub fn scan_segment(bytes: &[u8], file: &Path, start_seq: u64) -> Result<SegmentScan, AtlasError> {
    let mut records = Vec::new();
    let summary = scan_segment_each(bytes, file, start_seq, |r| records.push(r))?;
    Ok(SegmentScan {
        records,
        header_end: summary.header_end,
        log_end: summary.log_end,
        end: summary.end,
    })
}

/// What [`scan_segment_each`] found besides the records it handed over.
#[derive(Debug, Clone)]
pub struct ScanSummary {
    /// The callback of [`scan_segment_from`] stopped the scan before the segment's end.
    pub stopped: bool,
    /// How many valid records were handed to the callback (and taken).
    pub record_count: u64,
    /// Byte offset just past the header line (0 if the header itself is torn).
    pub header_end: u64,
    /// Byte offset just past the last valid record (or the header); see
    /// [`SegmentScan::log_end`].
    pub log_end: u64,
    /// The header's format version (0 if the header is torn or bad).
    pub version: u32,
    /// How the segment ends.
    pub end: ScanEnd,
}

/// As [`scan_segment`], but hands each valid record to `each` as soon as it is decoded, in
/// order, instead of collecting them: replaying a 64 MiB segment then holds one record
/// at a time rather than every decoded record of the segment (hundreds of MB of small
/// allocations for a segment of small writes). Records before a torn or corrupt line are
/// handed over before the scan reports that end.
pub fn scan_segment_each(
    bytes: &[u8],
    file: &Path,
    start_seq: u64,
    mut each: impl FnMut(ScannedRecord),
) -> Result<ScanSummary, AtlasError> {
    scan_segment_from(bytes, file, start_seq, None, |r| {
        each(r);
        ControlFlow::Continue(())
    })
}

/// Where a scan resumes: the offset where the record `seq` starts, as a previous scan of
/// the same segment found it (a [`ScannedRecord::offset`], or its `end` for the record
/// after it). Bytes before it are not looked at again, the header excepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanResume {
    /// Byte offset of the record.
    pub offset: u64,
    /// Its sequence number.
    pub seq: u64,
}

/// As [`scan_segment_each`], starting at `resume` (after the header if `None`), and
/// stopping early when `each` returns `Break`: the record it was handed is then not
/// taken, and the summary's `log_end` is where it starts (resume there), its `end`
/// `Clean` and `stopped` true. A `resume` past the end of `bytes`, or before the end of
/// the header, is reported as corrupt at that offset.
pub fn scan_segment_from(
    bytes: &[u8],
    file: &Path,
    start_seq: u64,
    resume: Option<ScanResume>,
    mut each: impl FnMut(ScannedRecord) -> ControlFlow<()>,
) -> Result<ScanSummary, AtlasError> {
    let ended = |end| ScanSummary {
        stopped: false,
        record_count: 0,
        header_end: 0,
        log_end: 0,
        version: 0,
        end,
    };
    let Some(header_len) = bytes.iter().position(|&b| b == b'\n') else {
        return Ok(ended(if bytes.is_empty() {
            ScanEnd::Clean
        } else {
            ScanEnd::Torn { offset: 0 }
        }));
    };
    let header: Header = match serde_json::from_slice(&bytes[..header_len]) {
        Ok(h) => h,
        // The header's append cut short in preallocated space (or never made it there).
        Err(_) if torn_at(bytes, 0) => return Ok(ended(ScanEnd::Torn { offset: 0 })),
        Err(e) => {
            return Ok(ended(ScanEnd::Corrupt {
                offset: 0,
                reason: format!("bad segment header: {e}"),
            }));
        }
    };
    if header.format != AOF_FORMAT {
        return Err(AtlasError::Corrupt {
            file: file.to_path_buf(),
            offset: 0,
            reason: format!("not a HELIOS AOF segment (format {:?})", header.format),
        });
    }
    if !(AOF_VERSION_MIN..=AOF_VERSION).contains(&header.version) {
        return Err(AtlasError::UnsupportedVersion {
            file: file.to_path_buf(),
            found: header.version,
            supported: AOF_VERSION,
        });
    }
    let header_end = header_len as u64 + 1;
    if header.start_seq != start_seq {
        return Ok(ScanSummary {
            stopped: false,
            record_count: 0,
            header_end,
            log_end: header_end,
            version: header.version,
            end: ScanEnd::Corrupt {
                offset: 0,
                reason: format!(
                    "header says start_seq {} but the file name says {start_seq}",
                    header.start_seq
                ),
            },
        });
    }
    let mut record_count = 0u64;
    let mut pos = header_len + 1;
    let mut expected_seq = start_seq;
    if let Some(r) = resume {
        match usize::try_from(r.offset) {
            Ok(at) if at >= pos && at <= bytes.len() => (pos, expected_seq) = (at, r.seq),
            _ => {
                return Ok(ScanSummary {
                    stopped: false,
                    record_count: 0,
                    header_end,
                    log_end: header_end,
                    version: header.version,
                    end: ScanEnd::Corrupt {
                        offset: r.offset,
                        reason: format!("no record can start at byte {}", r.offset),
                    },
                });
            }
        }
    }
    let mut stopped = false;
    let end = loop {
        if pos == bytes.len() {
            break ScanEnd::Clean;
        }
        let rest = &bytes[pos..];
        if is_pad(rest[0]) {
            // Padding: the end of the log.
            break match gap_at(bytes, pos) {
                Gap::End => ScanEnd::Clean,
                Gap::Hole => ScanEnd::Torn { offset: pos as u64 },
                Gap::Bad(at) => ScanEnd::Corrupt {
                    offset: pos as u64,
                    reason: format!("data at byte {at} after the padding that ends the log here"),
                },
            };
        }
        let Some(line_len) = rest.iter().position(|&b| b == b'\n') else {
            break unterminated_end(bytes, pos, expected_seq);
        };
        let offset = pos as u64;
        match decode_record_line(&rest[..line_len]) {
            Ok(record) if record.seq == expected_seq => {
                let scanned = ScannedRecord {
                    offset,
                    end: (pos + line_len + 1) as u64,
                    record,
                };
                if each(scanned).is_break() {
                    stopped = true;
                    break ScanEnd::Clean;
                }
                pos += line_len + 1;
                expected_seq += 1;
                record_count += 1;
            }
            Ok(record) => {
                break ScanEnd::Corrupt {
                    offset,
                    reason: format!("expected sequence {expected_seq}, found {}", record.seq),
                };
            }
            Err(_) if torn_at(bytes, pos) => break ScanEnd::Torn { offset },
            Err(reason) => break ScanEnd::Corrupt { offset, reason },
        }
    };
    Ok(ScanSummary {
        stopped,
        record_count,
        header_end,
        log_end: pos as u64,
        version: header.version,
        end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn seg(records: &[(u64, Vec<Op>)]) -> Vec<u8> {
        let mut out = header_line(records.first().map_or(1, |r| r.0));
        for (seq, ops) in records {
            encode_record(*seq, ops, &mut out);
        }
        out
    }

    fn set(k: &str, v: &str) -> Op {
        Op::Set {
            key: k.into(),
            value: Bytes::from(v.to_owned()),
            expire_at_ms: None,
        }
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(parse_segment_name(&segment_name(42)), Some(42));
        assert_eq!(parse_segment_name("aof-1.jsonl"), None);
        assert_eq!(parse_segment_name("aof-0000000000000000004x.jsonl"), None);
    }

    #[test]
    fn encode_then_scan() {
        let bytes = seg(&[
            (1, vec![set("a", "1")]),
            (2, vec![set("b", "2"), set("c", "3")]),
        ]);
        let scan = scan_segment(&bytes, Path::new("f"), 1).unwrap();
        assert_eq!(scan.end, ScanEnd::Clean);
        assert_eq!(scan.records.len(), 2);
        assert_eq!(scan.records[1].record.ops.len(), 2);
        assert_eq!(scan.records[1].end, bytes.len() as u64);
    }

    #[test]
    fn a_scan_stops_before_the_record_it_is_told_to_and_resumes_there() {
        let bytes = seg(&[
            (1, vec![set("a", "1")]),
            (2, vec![set("b", "2")]),
            (3, vec![set("c", "3")]),
        ]);
        let f = Path::new("f");
        let mut seen = vec![];
        let stop = scan_segment_from(&bytes, f, 1, None, |r| {
            if r.record.seq == 3 {
                return ControlFlow::Break(());
            }
            seen.push(r.record.seq);
            ControlFlow::Continue(())
        })
        .unwrap();
        assert!(stop.stopped);
        assert_eq!(
            (seen, stop.record_count, stop.end),
            (vec![1, 2], 2, ScanEnd::Clean)
        );
        let resume = ScanResume {
            offset: stop.log_end,
            seq: 3,
        };
        let mut rest = vec![];
        let end = scan_segment_from(&bytes, f, 1, Some(resume), |r| {
            rest.push((r.record.seq, r.end));
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(rest, vec![(3, bytes.len() as u64)]);
        assert!(!end.stopped && end.end == ScanEnd::Clean);
        // Nowhere a record can start: corrupt there, nothing handed over.
        for offset in [0, bytes.len() as u64 + 1] {
            let bad = scan_segment_from(&bytes, f, 1, Some(ScanResume { offset, seq: 3 }), |_| {
                panic!("no record")
            })
            .unwrap();
            assert!(matches!(bad.end, ScanEnd::Corrupt { offset: o, .. } if o == offset));
        }
    }

    #[test]
    fn every_cut_of_the_last_record_is_torn_not_corrupt() {
        let bytes = seg(&[(1, vec![set("a", "1")]), (2, vec![set("b", "22")])]);
        let second = scan_segment(&bytes, Path::new("f"), 1).unwrap().records[1].offset;
        for cut in second as usize..bytes.len() {
            let scan = scan_segment(&bytes[..cut], Path::new("f"), 1).unwrap();
            assert_eq!(scan.records.len(), 1, "cut {cut}");
            if cut == second as usize {
                assert_eq!(scan.end, ScanEnd::Clean);
            } else {
                assert_eq!(scan.end, ScanEnd::Torn { offset: second }, "cut {cut}");
            }
        }
    }

    #[test]
    fn a_flipped_byte_is_corrupt_at_its_record() {
        let bytes = seg(&[
            (1, vec![set("a", "1")]),
            (2, vec![set("b", "22")]),
            (3, vec![set("c", "3")]),
        ]);
        let scan = scan_segment(&bytes, Path::new("f"), 1).unwrap();
        let second = &scan.records[1];
        for at in second.offset..second.end - 1 {
            let mut b = bytes.clone();
            b[at as usize] ^= 0x01;
            let scan = scan_segment(&b, Path::new("f"), 1).unwrap();
            match scan.end {
                ScanEnd::Corrupt { offset, .. } => assert_eq!(offset, second.offset),
                other => panic!("flip at {at}: {other:?}"),
            }
        }
    }

    fn padded(bytes: &[u8], pad: u8, len: usize) -> Vec<u8> {
        let mut b = bytes.to_vec();
        b.resize(bytes.len() + len, pad);
        b
    }

    #[test]
    fn padding_after_the_records_ends_the_log_cleanly() {
        let bytes = seg(&[(1, vec![set("a", "1")]), (2, vec![set("b", "22")])]);
        for pad in [b'\n', 0] {
            for len in [1, 2, 4096] {
                let scan = scan_segment(&padded(&bytes, pad, len), Path::new("f"), 1).unwrap();
                assert_eq!(scan.end, ScanEnd::Clean, "pad {pad} x {len}");
                assert_eq!(scan.records.len(), 2);
                assert_eq!(scan.log_end, bytes.len() as u64);
            }
        }
        // Zeros, then newlines (a file system showing unwritten blocks, then padding).
        let mut b = padded(&bytes, 0, 100);
        b.extend_from_slice(&[b'\n'; 100]);
        let scan = scan_segment(&b, Path::new("f"), 1).unwrap();
        assert_eq!(
            (scan.end, scan.log_end),
            (ScanEnd::Clean, bytes.len() as u64)
        );
    }

    /// A segment whose last record spans several sectors, with `]}` and `}` inside its
    /// value (a JSON document stored as text), padded: the bytes, and the last record's
    /// offset and end.
    fn long_last_record() -> (Vec<u8>, usize, usize) {
        let doc = r#"{"a":[1]}"#.repeat(200);
        let bytes = seg(&[(1, vec![set("a", "1")]), (2, vec![set("doc", &doc)])]);
        let scan = scan_segment(&bytes, Path::new("f"), 1).unwrap();
        let last = &scan.records[1];
        (bytes, last.offset as usize, last.end as usize)
    }

    #[test]
    fn a_last_record_cut_at_a_sector_boundary_in_padding_is_torn() {
        let (bytes, last, end) = long_last_record();
        let mut cuts = 0;
        for cut in last + 1..end - 1 {
            for pad in [b'\n', 0] {
                // The record's bytes before `cut` landed; from `cut` on, its sectors still
                // hold the padding (or show zeros).
                let mut b = padded(&bytes, pad, 4096);
                b[cut..end].fill(pad);
                let scan = scan_segment(&b, Path::new("f"), 1).unwrap();
                assert_eq!(scan.records.len(), 1, "cut {cut}");
                assert_eq!(scan.log_end, last as u64);
                // Zeros to the end of the file hold no newline at all: torn wherever the cut
                // is, as in a file without padding (the rule for a growing file on a file
                // system that shows zeros where data did not land).
                if cut.is_multiple_of(SECTOR_SIZE) || pad == 0 {
                    assert_eq!(
                        scan.end,
                        ScanEnd::Torn {
                            offset: last as u64
                        },
                        "cut {cut} pad {pad}"
                    );
                    cuts += 1;
                } else {
                    // No crash cuts there: a damaged record.
                    assert!(
                        matches!(scan.end, ScanEnd::Corrupt { offset, .. } if offset == last as u64),
                        "cut {cut} pad {pad}: {:?}",
                        scan.end
                    );
                }
            }
        }
        assert!(cuts >= (end - last - 2) + 3, "the record spans sectors");
    }

    #[test]
    fn sectors_never_written_then_data_is_torn_where_the_record_starts() {
        let (bytes, last, end) = long_last_record();
        let hole = last.next_multiple_of(SECTOR_SIZE);
        assert!(hole + SECTOR_SIZE < end);
        // One sector of the last record never landed, and the ones after it did; then the
        // same with its first sector missing too (padding from where the first record
        // ends, then data).
        for from in [hole, last] {
            let mut b = padded(&bytes, b'\n', 4096);
            b[from..hole + SECTOR_SIZE].fill(b'\n');
            let scan = scan_segment(&b, Path::new("f"), 1).unwrap();
            let torn = ScanEnd::Torn {
                offset: last as u64,
            };
            assert_eq!((scan.end, scan.records.len()), (torn, 1), "from {from}");
        }
        // Zeros there are not what an unwritten sector of padding holds: corrupt.
        let mut b = padded(&bytes, b'\n', 4096);
        b[hole..hole + SECTOR_SIZE].fill(0);
        assert!(matches!(
            scan_segment(&b, Path::new("f"), 1).unwrap().end,
            ScanEnd::Corrupt { .. }
        ));
        // Nor is a stretch of newlines that ends off a sector boundary.
        let mut b = padded(&bytes, b'\n', 4096);
        b[hole..hole + 100].fill(b'\n');
        assert!(matches!(
            scan_segment(&b, Path::new("f"), 1).unwrap().end,
            ScanEnd::Corrupt { .. }
        ));
    }

    #[test]
    fn a_landed_sector_that_starts_with_a_records_newline_ends_a_hole() {
        // Record 2's newline is the first byte of a sector; the sectors before it never
        // landed (padding), that one and record 3 after it did: a hole, torn at record 2.
        let len_of = |n: usize| {
            let b = seg(&[
                (1, vec![set("a", "1")]),
                (2, vec![set("v", &"x".repeat(n))]),
            ]);
            let scan = scan_segment(&b, Path::new("f"), 1).unwrap();
            (
                b,
                scan.records[1].offset as usize,
                scan.records[1].end as usize,
            )
        };
        let n = (600..1200)
            .find(|&n| (len_of(n).2 - 1).is_multiple_of(SECTOR_SIZE))
            .expect("a length that puts the newline on a sector boundary");
        let (mut b, second, newline_end) = len_of(n);
        b.extend_from_slice(&seg(&[(3, vec![set("c", "3")])])[header_line(3).len()..]);
        let mut b = padded(&b, b'\n', 4096);
        b[second..newline_end - 1].fill(b'\n');
        let scan = scan_segment(&b, Path::new("f"), 1).unwrap();
        let torn = ScanEnd::Torn {
            offset: second as u64,
        };
        assert_eq!((scan.end, scan.records.len()), (torn, 1));
        // The same newline one byte off the sector boundary is no crash's doing.
        let mut c = b.clone();
        c.insert(second, b'\n');
        assert!(matches!(
            scan_segment(&c, Path::new("f"), 1).unwrap().end,
            ScanEnd::Corrupt { .. }
        ));
    }

    #[test]
    fn a_last_record_whose_sectors_read_as_zeros_before_padding_is_corrupt_not_torn() {
        // Issue 18.4: a whole, checksummed last record whose final sector(s) read back as
        // zeros, with the padding after them intact. Appends land only on durable
        // padding, so no crash leaves zeros there: damage, reported where it starts.
        let (bytes, last, end) = long_last_record();
        let mut cuts = 0;
        for cut in (last + 1..end).filter(|c| c.is_multiple_of(SECTOR_SIZE)) {
            let mut b = padded(&bytes, b'\n', 4096);
            b[cut..end].fill(0);
            let scan = scan_segment(&b, Path::new("f"), 1).unwrap();
            assert!(
                matches!(scan.end, ScanEnd::Corrupt { offset, .. } if offset == last as u64),
                "cut {cut}: {:?}",
                scan.end
            );
            cuts += 1;
        }
        assert!(cuts >= 2, "the record spans sectors");
        // A whole JSON value whose newline never landed is not a torn append either.
        let mut b = padded(&bytes, b'\n', 4096);
        b[end - 1] = 0;
        assert!(matches!(
            scan_segment(&b, Path::new("f"), 1).unwrap().end,
            ScanEnd::Corrupt { .. }
        ));
        // Zeros to the end of the file (a growing file, or a chunk a crash left unsynced)
        // are still a torn tail.
        let mut b = padded(&bytes, 0, 4096);
        b[last + 10..].fill(0);
        assert_eq!(
            scan_segment(&b, Path::new("f"), 1).unwrap().end,
            ScanEnd::Torn {
                offset: last as u64
            }
        );
    }

    #[test]
    fn a_whole_last_record_whose_newline_reads_as_zero_is_corrupt_off_a_sector_boundary() {
        // Issue 18.4, without padding: the last line has no newline after it anywhere.
        let bytes = seg(&[(1, vec![set("a", "1")]), (2, vec![set("b", "22")])]);
        let last = scan_segment(&bytes, Path::new("f"), 1).unwrap().records[1].offset;
        let newline = bytes.len() - 1;
        assert!(!newline.is_multiple_of(SECTOR_SIZE));
        let torn = ScanEnd::Torn { offset: last };
        // The newline's write did not land, the record's did: torn (never acknowledged).
        let scan = scan_segment(&bytes[..newline], Path::new("f"), 1).unwrap();
        assert_eq!((scan.end, scan.records.len()), (torn.clone(), 1));
        // The newline reads as a zero, alone or with more zeros up to the end of the
        // file, inside the sector that holds the record's end (which landed): damage.
        for zeros in [1, 2, 600] {
            let mut b = bytes[..newline].to_vec();
            b.resize(newline + zeros, 0);
            let scan = scan_segment(&b, Path::new("f"), 1).unwrap();
            assert!(
                matches!(&scan.end, ScanEnd::Corrupt { offset, reason }
                    if *offset == last && reason.contains("newline reads as a zero")),
                "{zeros} zeros: {:?}",
                scan.end
            );
            assert_eq!(scan.records.len(), 1);
        }
        // The same with the newline on a sector boundary: its sector may not have landed
        // while the file's size did. Torn.
        let n = (1..SECTOR_SIZE)
            .find(|&n| {
                seg(&[
                    (1, vec![set("a", "1")]),
                    (2, vec![set("b", &"x".repeat(n))]),
                ])
                .len()
                    - 1
                    == SECTOR_SIZE
            })
            .expect("a value length that puts the newline on a sector boundary");
        let mut b = seg(&[
            (1, vec![set("a", "1")]),
            (2, vec![set("b", &"x".repeat(n))]),
        ]);
        b[SECTOR_SIZE] = 0;
        b.resize(2 * SECTOR_SIZE, 0);
        let scan = scan_segment(&b, Path::new("f"), 1).unwrap();
        assert_eq!((scan.end, scan.records.len()), (torn, 1));
    }

    #[test]
    fn a_last_line_without_newline_is_torn_only_while_its_json_is_unfinished() {
        // A value with multi-byte characters: no cut inside one reads as a syntax error.
        let bytes = seg(&[(1, vec![set("a", "1")]), (2, vec![set("b", "é€😀 ok")])]);
        let last = scan_segment(&bytes, Path::new("f"), 1).unwrap().records[1].offset;
        let torn = ScanEnd::Torn { offset: last };
        for cut in last as usize + 1..bytes.len() - 1 {
            for zeros in [0, 3] {
                let mut b = bytes[..cut].to_vec();
                b.resize(cut + zeros, 0);
                let scan = scan_segment(&b, Path::new("f"), 1).unwrap();
                assert_eq!(scan.end, torn, "cut {cut}, {zeros} zeros");
            }
        }
        // A whole JSON value that does not check, or is not the next record, or a syntax
        // error: no prefix of an append looks like that.
        let flipped = {
            let mut b = bytes[..bytes.len() - 1].to_vec();
            let at = b.windows(2).rposition(|w| w == b"ok").expect("the value");
            b[at] ^= 0x01;
            b
        };
        let mut wrong_seq = bytes[..last as usize].to_vec();
        encode_record(3, &[set("b", "22")], &mut wrong_seq);
        wrong_seq.pop();
        let mut syntax = bytes[..last as usize].to_vec();
        syntax.extend_from_slice(b"{\"seq\":2,]");
        for (what, b) in [("flipped", flipped), ("seq", wrong_seq), ("syntax", syntax)] {
            let scan = scan_segment(&b, Path::new("f"), 1).unwrap();
            assert!(
                matches!(scan.end, ScanEnd::Corrupt { offset, .. } if offset == last),
                "{what}: {:?}",
                scan.end
            );
        }
    }

    #[test]
    fn a_bad_complete_last_record_is_corrupt_padded_or_not() {
        let bytes = seg(&[(1, vec![set("a", "1")]), (2, vec![set("b", "22")])]);
        let scan = scan_segment(&bytes, Path::new("f"), 1).unwrap();
        let last = &scan.records[1];
        for at in last.offset..last.end - 1 {
            let mut b = bytes.clone();
            b[at as usize] ^= 0x01;
            for b in [b.clone(), padded(&b, b'\n', 64), padded(&b, 0, 64)] {
                let scan = scan_segment(&b, Path::new("f"), 1).unwrap();
                match scan.end {
                    ScanEnd::Corrupt { offset, .. } => assert_eq!(offset, last.offset),
                    other => panic!("flip at {at}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn data_after_padding_is_corrupt_where_the_padding_starts() {
        let bytes = seg(&[(1, vec![set("a", "1")])]);
        let mut b = padded(&bytes, b'\n', 10);
        b.extend_from_slice(&seg(&[(2, vec![set("b", "2")])])[header_line(2).len()..]);
        b.extend_from_slice(&[b'\n'; 10]);
        let scan = scan_segment(&b, Path::new("f"), 1).unwrap();
        assert_eq!(scan.records.len(), 1);
        assert_eq!(scan.log_end, bytes.len() as u64);
        match scan.end {
            ScanEnd::Corrupt { offset, reason } => {
                assert_eq!(offset, bytes.len() as u64);
                assert!(
                    reason.contains(&format!("byte {}", bytes.len() + 10)),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_header_that_never_landed_is_torn_at_zero() {
        let header = header_line(1);
        for pad in [b'\n', 0] {
            let scan = scan_segment(&[pad; 4096], Path::new("f"), 1).unwrap();
            assert_eq!(
                (scan.end, scan.header_end, scan.log_end),
                (ScanEnd::Torn { offset: 0 }, 0, 0)
            );
        }
        // A header cut inside its sector and followed by newlines: no crash does that.
        let b = padded(&header[..10], b'\n', 4096);
        assert!(matches!(
            scan_segment(&b, Path::new("f"), 1).unwrap().end,
            ScanEnd::Corrupt { offset: 0, .. }
        ));
    }

    #[test]
    fn version_1_segments_still_read() {
        let mut b = b"{\"format\":\"helios-aof\",\"version\":1,\"start_seq\":1}\n".to_vec();
        b.extend_from_slice(&seg(&[(1, vec![set("a", "1")])])[header_line(1).len()..]);
        let scan = scan_segment(&b, Path::new("f"), 1).unwrap();
        assert_eq!((scan.end, scan.records.len()), (ScanEnd::Clean, 1));
    }

    #[test]
    fn other_versions_and_formats_are_refused_by_name() {
        let b = b"{\"format\":\"helios-aof\",\"version\":9,\"start_seq\":1}\n";
        assert!(matches!(
            scan_segment(b, Path::new("f"), 1),
            Err(AtlasError::UnsupportedVersion { found: 9, .. })
        ));
        let b = b"{\"format\":\"other\",\"version\":1,\"start_seq\":1}\n";
        assert!(matches!(
            scan_segment(b, Path::new("f"), 1),
            Err(AtlasError::Corrupt { .. })
        ));
    }

    proptest::proptest! {
        #[test]
        fn scanning_arbitrary_bytes_never_panics(
            tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            with_header in proptest::prelude::any::<bool>(),
        ) {
            let mut bytes = if with_header { header_line(1) } else { Vec::new() };
            bytes.extend_from_slice(&tail);
            let _ = scan_segment(&bytes, Path::new("f"), 1);
            let _ = decode_record_line(&tail);
        }

        #[test]
        fn records_round_trip(seq in 1u64..u64::MAX, keys in proptest::collection::vec("[a-z:]{1,8}", 1..5)) {
            let ops: Vec<Op> = keys.iter().map(|k| set(k, k)).collect();
            let mut out = Vec::new();
            encode_record(seq, &ops, &mut out);
            let r = decode_record_line(&out[..out.len() - 1]).unwrap();
            proptest::prop_assert_eq!(r, Record { seq, ops });
        }
    }

    #[test]
    fn sequence_gap_is_corrupt() {
        let mut bytes = header_line(1);
        encode_record(1, &[set("a", "1")], &mut bytes);
        encode_record(3, &[set("a", "1")], &mut bytes);
        let scan = scan_segment(&bytes, Path::new("f"), 1).unwrap();
        assert!(matches!(scan.end, ScanEnd::Corrupt { .. }));
    }

    fn op_of(kind: u8, key: crate::Key, value: Vec<u8>, x: Option<u64>, expired: bool) -> Op {
        match kind {
            0 => Op::Set {
                key,
                value: Bytes::from(value),
                expire_at_ms: x,
            },
            1 => Op::Del { key, expired },
            _ => Op::Expire {
                key,
                expire_at_ms: x,
            },
        }
    }

    proptest::proptest! {
        /// The fast path decodes what the general path decodes, and is taken for every
        /// line the encoder writes.
        #[test]
        fn fast_decode_agrees_with_the_general_path(
            seq in 1u64..u64::MAX,
            ops in proptest::collection::vec(
                (0u8..3, proptest::prop_oneof![
                    proptest::strategy::Strategy::prop_map("(.|[a-z:]{1,12}){1,12}", crate::Key::from),
                    proptest::strategy::Strategy::prop_map(proptest::collection::vec(proptest::prelude::any::<u8>(), 1..12), crate::Key::from),
                ],
                 proptest::prop_oneof![
                     proptest::collection::vec(proptest::prelude::any::<u8>(), 0..24),
                     // Text that escapes: quotes, backslashes, tab/newline/CR, JSON
                     // (a job record), non-ASCII.
                     proptest::strategy::Strategy::prop_map("[a-z\"\\\\\t\n\r\u{7f}é😀{}:,/]{0,40}", String::into_bytes),
                 ],
                 proptest::option::of(proptest::prelude::any::<u64>()),
                 proptest::prelude::any::<bool>()),
                1..6),
        ) {
            let ops: Vec<Op> = ops.into_iter().map(|(k, key, v, x, e)| op_of(k, key, v, x, e)).collect();
            let mut line = Vec::new();
            encode_record(seq, &ops, &mut line);
            let line = &line[..line.len() - 1];
            let general = decode_record_line_general(line).unwrap();
            proptest::prop_assert_eq!(&general, &Record { seq, ops });
            // Every line the encoder writes (escapes included) takes the fast path.
            match fast::decode_canonical(line) {
                Some(r) => proptest::prop_assert_eq!(r, general),
                None => proptest::prop_assert!(false, "fast path refused {}", String::from_utf8_lossy(line)),
            }
        }

        /// A damaged line: whatever the fast path accepts, the general path accepts as
        /// the same record.
        #[test]
        fn fast_decode_accepts_nothing_the_general_path_would_not(
            value in "[a-z]{0,8}",
            at in 0usize..200,
            byte in proptest::prelude::any::<u8>(),
            cut in proptest::prelude::any::<bool>(),
        ) {
            let ops = vec![
                op_of(0, "k:1".into(), value.into_bytes(), Some(17), false),
                op_of(1, "k:2".into(), Vec::new(), None, true),
                op_of(2, "k:3".into(), Vec::new(), None, false),
            ];
            let mut line = Vec::new();
            encode_record(9, &ops, &mut line);
            line.pop();
            let at = at % line.len();
            if cut {
                line.truncate(at);
            } else {
                line[at] = byte;
            }
            if let Some(r) = fast::decode_canonical(&line) {
                proptest::prop_assert_eq!(Ok(r), decode_record_line_general(&line));
            }
        }
    }
}
