//! The string commands beyond GET/SET (issue 23): ranges (SETRANGE, GETRANGE/SUBSTR), bits
//! (SETBIT, GETBIT, BITCOUNT, BITPOS, BITOP, BITFIELD, BITFIELD_RO), LCS, and the key
//! commands COPY, TOUCH, OBJECT, MEMORY USAGE, WAIT and FUNCTION FLUSH/LIST: each a
//! [`KvFn`](super::kv::KvFn) over an ATLAS [`Tx`], with Redis 7's replies, error texts and
//! limits (ported from Redis's `t_string.c` and `bitops.c`).
//!
//! Writes: SETRANGE, SETBIT and BITFIELD write through [`Tx::set_range`], so the AOF logs
//! the bytes that changed, never the whole value, and the value is copied once; a write
//! that changes nothing (SETBIT to the bit it already holds, SETRANGE with an empty value)
//! logs nothing. BITOP and COPY store a whole value (their result is new).
//!
//! Limits: Redis's `proto-max-bulk-len` (512 MiB) bounds offsets and lengths with Redis's
//! errors; ATLAS's own value limit (`VALUE_SIZE_MAX`, 256 MiB) then refuses a larger value
//! with its error, and nothing is written.
//!
//! Not here: there are no replicas (WAIT answers 0 at once), no access-time tracking
//! (OBJECT IDLETIME is 0), no scripts (FUNCTION FLUSH has nothing to flush).

use super::encodings::{self, Notes, RawStrings};
use super::kv::{ERR_NOT_INT, ERR_SYNTAX, int, key, key_arg, stored};
use super::resp::Out;
use bytes::Bytes;
use helios_atlas::{AtlasError, Expiry, KeyTtl, Tx};
use helios_core::digits::parse_i64_canonical;

type R = Result<(), AtlasError>;

/// Redis's `proto-max-bulk-len` default: the largest string a command may make.
const STRING_SIZE_MAX: u64 = 512 * 1024 * 1024;
const ERR_TOO_LONG: &str = "ERR string exceeds maximum allowed size (proto-max-bulk-len)";
const ERR_BIT_OFFSET: &str = "ERR bit offset is not an integer or out of range";
const ERR_BIT_VALUE: &str = "ERR bit is not an integer or out of range";
const ERR_BITFIELD_TYPE: &str = "ERR Invalid bitfield type. Use something like i16 u8. Note that u64 is not supported but i64 is.";

fn eq(a: &[u8], b: &str) -> bool {
    a.eq_ignore_ascii_case(b.as_bytes())
}

/// SETRANGE key offset value
pub fn setrange(tx: &mut Tx<'_, '_>, a: &[Bytes], out: &mut Out) -> R {
    let k = key!(a[1], out);
    let offset = int!(a[2], out);
    if offset < 0 {
        out.error("ERR offset is out of range");
        return Ok(());
    }
    let v = &a[3];
    let current = tx.get(k).map_or(0, |v| v.len() as u64);
    if v.is_empty() {
        // Nothing to write: the length, and no key is created.
        out.int(current as i64);
        return Ok(());
    }
    // Redis's checkStringLength: the sum, overflow included.
    let end = (offset as u64).checked_add(v.len() as u64);
    if end.is_none_or(|e| e > STRING_SIZE_MAX) {
        out.error(ERR_TOO_LONG);
        return Ok(());
    }
    let len = tx.set_range(k, offset as u64, v)?;
    out.int(len as i64);
    Ok(())
}

/// The byte range `[start, end]` of a Redis range over `len` items (negative indexes from
/// the end), or `None` when empty.
fn range(start: i64, end: i64, len: i64) -> Option<(usize, usize)> {
    if start < 0 && end < 0 && start > end {
        return None;
    }
    let mut s = if start < 0 { len + start } else { start };
    let mut e = if end < 0 { len + end } else { end };
    s = s.max(0);
    e = e.max(0);
    if e >= len {
        e = len - 1;
    }
    if s > e || len == 0 {
        return None;
    }
    Some((s as usize, e as usize))
}

/// GETRANGE key start end (also SUBSTR)
pub fn getrange(tx: &mut Tx<'_, '_>, a: &[Bytes], out: &mut Out) -> R {
    let k = key!(a[1], out);
    let start = int!(a[2], out);
    let end = int!(a[3], out);
    let v = tx.get(k).unwrap_or_default();
    match range(start, end, v.len() as i64) {
        Some((s, e)) => out.bulk(&v[s..=e]),
        None => out.bulk(b""),
    }
    Ok(())
}

/// A bit offset argument (Redis's getBitOffsetFromArgument): `#n` counts in units of
/// `bits` when `hash` (BITFIELD); below 512 MiB worth of bytes.
fn bit_offset(arg: &[u8], hash_bits: Option<u64>) -> Option<u64> {
    let (digits, unit) = match (arg.first(), hash_bits) {
        (Some(b'#'), Some(bits)) => (&arg[1..], bits as i64),
        _ => (arg, 1),
    };
    let n = parse_i64_canonical(digits)?.checked_mul(unit)?;
    (n >= 0 && ((n as u64) >> 3) < STRING_SIZE_MAX).then_some(n as u64)
}

/// SETBIT key offset 0|1: the old bit.
pub fn setbit(tx: &mut Tx<'_, '_>, a: &[Bytes], out: &mut Out) -> R {
    let k = key!(a[1], out);
    let Some(offset) = bit_offset(&a[2], None) else {
        out.error(ERR_BIT_OFFSET);
        return Ok(());
    };
    let on = match parse_i64_canonical(&a[3]) {
        Some(b @ (0 | 1)) => b as u8,
        _ => {
            out.error(ERR_BIT_VALUE);
            return Ok(());
        }
    };
    let byte_index = offset >> 3;
    let shift = 7 - (offset & 7) as u8;
    let v = tx.get(k);
    let len = v.as_ref().map_or(0, |v| v.len() as u64);
    let old_byte = v
        .as_ref()
        .and_then(|v| v.get(byte_index as usize).copied())
        .unwrap_or(0);
    let old = (old_byte >> shift) & 1;
    let new_byte = (old_byte & !(1 << shift)) | (on << shift);
    // Redis pads the value (creates the key) even when the bit is unchanged.
    if new_byte != old_byte || byte_index >= len {
        tx.set_range(k, byte_index, &[new_byte])?;
    }
    out.int(i64::from(old));
    Ok(())
}

/// GETBIT key offset
pub fn getbit(tx: &mut Tx<'_, '_>, a: &[Bytes], out: &mut Out) -> R {
    let k = key!(a[1], out);
    let Some(offset) = bit_offset(&a[2], None) else {
        out.error(ERR_BIT_OFFSET);
        return Ok(());
    };
    let byte = tx
        .get(k)
        .and_then(|v| v.get((offset >> 3) as usize).copied())
        .unwrap_or(0);
    out.int(i64::from((byte >> (7 - (offset & 7))) & 1));
    Ok(())
}

/// The inclusive bit range of a BITCOUNT/BITPOS `start end [BYTE|BIT]` over a value of
/// `len` bytes (Redis's index conversion), or `None` when empty.
fn bit_range(start: i64, end: i64, len: u64, bit_unit: bool) -> Option<(u64, u64)> {
    let total = if bit_unit { len << 3 } else { len } as i64;
    let (s, e) = range(start, end, total)?;
    let (s, e) = (s as u64, e as u64);
    Some(if bit_unit {
        (s, e)
    } else {
        (s << 3, (e << 3) + 7)
    })
}

fn unit_arg(arg: &[u8], out: &mut Out) -> Option<bool> {
    if eq(arg, "BIT") {
        Some(true)
    } else if eq(arg, "BYTE") {
        Some(false)
    } else {
        out.error(ERR_SYNTAX);
        None
    }
}

/// Set bits of `v` in the inclusive bit range.
fn count_bits(v: &[u8], first: u64, last: u64) -> u64 {
    let (fb, lb) = ((first >> 3) as usize, (last >> 3) as usize);
    let mut n: u64 = v[fb..=lb].iter().map(|b| u64::from(b.count_ones())).sum();
    // Bits of the edge bytes outside the range.
    let head = (first & 7) as u32;
    if head > 0 {
        n -= u64::from((v[fb] >> (8 - head)).count_ones());
    }
    let tail = 7 - (last & 7) as u32;
    if tail > 0 {
        n -= u64::from((v[lb] & ((1u8 << tail) - 1)).count_ones());
    }
    n
}

/// BITCOUNT key [start end [BYTE|BIT]]
pub fn bitcount(tx: &mut Tx<'_, '_>, a: &[Bytes], out: &mut Out) -> R {
    let k = key!(a[1], out);
    // Redis looks the key up first: a missing key is 0 whatever the arguments.
    let Some(v) = tx.get(k) else {
        out.int(0);
        return Ok(());
    };
    let r = match a.len() {
        2 => bit_range(0, -1, v.len() as u64, false),
        4 | 5 => {
            let start = int!(a[2], out);
            let end = int!(a[3], out);
            let bit_unit = match a.get(4) {
                Some(u) => match unit_arg(u, out) {
                    Some(b) => b,
                    None => return Ok(()),
                },
                None => false,
            };
            bit_range(start, end, v.len() as u64, bit_unit)
        }
        _ => {
            out.error(ERR_SYNTAX);
            return Ok(());
        }
    };
    out.int(r.map_or(0, |(f, l)| count_bits(&v, f, l)) as i64);
    Ok(())
}

/// BITPOS key bit [start [end [BYTE|BIT]]]
pub fn bitpos(tx: &mut Tx<'_, '_>, a: &[Bytes], out: &mut Out) -> R {
    let k = key!(a[1], out);
    let bit = int!(a[2], out);
    if bit != 0 && bit != 1 {
        out.error("ERR The bit argument must be 1 or 0.");
        return Ok(());
    }
    let Some(v) = tx.get(k) else {
        out.int(if bit == 1 { -1 } else { 0 });
        return Ok(());
    };
    if a.len() > 6 {
        out.error(ERR_SYNTAX);
        return Ok(());
    }
    let len = v.len() as u64;
    let mut end_given = false;
    let r = if a.len() == 3 {
        bit_range(0, -1, len, false)
    } else {
        let start = int!(a[3], out);
        let bit_unit = match a.get(5) {
            Some(u) => match unit_arg(u, out) {
                Some(b) => b,
                None => return Ok(()),
            },
            None => false,
        };
        let end = match a.get(4) {
            Some(e) => {
                end_given = true;
                int!(e, out)
            }
            None => -1,
        };
        bit_range(start, end, len, bit_unit)
    };
    let Some((first, last)) = r else {
        out.int(-1);
        return Ok(());
    };
    let want = bit as u8;
    let mut i = first;
    while i <= last {
        // Whole bytes that cannot hold the bit are skipped.
        if i & 7 == 0 && i + 7 <= last {
            let b = v[(i >> 3) as usize];
            if (want == 1 && b == 0) || (want == 0 && b == 0xff) {
                i += 8;
                continue;
            }
        }
        if (v[(i >> 3) as usize] >> (7 - (i & 7))) & 1 == want {
            out.int(i as i64);
            return Ok(());
        }
        i += 1;
    }
    // No clear bit in the range: without an explicit end the value is seen as padded
    // with zeros, so the first bit after its last byte.
    if want == 0 && !end_given {
        out.int((((last >> 3) + 1) << 3) as i64);
    } else {
        out.int(-1);
    }
    Ok(())
}

/// Most bytes BITOP reads in all (the longest source's length times the sources).
const BITOP_WORK_MAX: u64 = 1024 * 1024 * 1024;
const ERR_BITOP_WORK: &str = "ERR BITOP would read more than 1 GiB (longest source x sources)";

/// BITOP AND|OR|XOR|NOT destkey key [key ...]: the length of the stored result.
pub fn bitop(tx: &mut Tx<'_, '_>, a: &[Bytes], out: &mut Out) -> R {
    let op = &a[1];
    let kind = if eq(op, "AND") {
        b'&'
    } else if eq(op, "OR") {
        b'|'
    } else if eq(op, "XOR") {
        b'^'
    } else if eq(op, "NOT") {
        b'~'
    } else {
        out.error(ERR_SYNTAX);
        return Ok(());
    };
    if kind == b'~' && a.len() != 4 {
        out.error("ERR BITOP NOT must be called with a single source key.");
        return Ok(());
    }
    let dst = key!(a[2], out);
    let mut srcs: Vec<Bytes> = Vec::with_capacity(a.len() - 3);
    for s in &a[3..] {
        let k = key!(s, out);
        srcs.push(tx.get(k).unwrap_or_default());
    }
    let len = srcs.iter().map(Bytes::len).max().unwrap_or(0);
    // The work is length x sources: bounded, so one small command cannot hold the
    // committer for minutes (Redis has no bound; it has no tenants either).
    if (len as u64).saturating_mul(srcs.len() as u64) > BITOP_WORK_MAX {
        out.error(ERR_BITOP_WORK);
        return Ok(());
    }
    if len == 0 {
        tx.delete(dst)?;
        out.int(0);
        return Ok(());
    }
    let byte = |s: &Bytes, i: usize| s.get(i).copied().unwrap_or(0);
    let mut res = vec![0u8; len];
    for (i, r) in res.iter_mut().enumerate() {
        *r = match kind {
            b'~' => !byte(&srcs[0], i),
            _ => {
                let mut acc = byte(&srcs[0], i);
                for s in &srcs[1..] {
                    let b = byte(s, i);
                    acc = match kind {
                        b'&' => acc & b,
                        b'|' => acc | b,
                        _ => acc ^ b,
                    };
                }
                acc
            }
        };
    }
    tx.set(dst, Bytes::from(res), Expiry::Never)?;
    out.int(len as i64);
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Overflow {
    Wrap,
    Sat,
    Fail,
}

#[derive(Clone, Copy)]
enum FieldOp {
    Get,
    Set(i64),
    Incr(i64),
}

struct Field {
    op: FieldOp,
    signed: bool,
    bits: u32,
    offset: u64,
    overflow: Overflow,
}

/// The bytes a BITFIELD reads and writes: the stored value, and the window of it that the
/// command's writes touch (copied once, written back with one range write).
struct Bits {
    old: Bytes,
    lo: u64,
    win: Vec<u8>,
}

impl Bits {
    fn byte(&self, i: u64) -> u8 {
        if i >= self.lo && i < self.lo + self.win.len() as u64 {
            self.win[(i - self.lo) as usize]
        } else {
            self.old.get(i as usize).copied().unwrap_or(0)
        }
    }

    fn get(&self, offset: u64, bits: u32) -> u64 {
        let mut v = 0u64;
        for j in 0..u64::from(bits) {
            let p = offset + j;
            let bit = (self.byte(p >> 3) >> (7 - (p & 7))) & 1;
            v = (v << 1) | u64::from(bit);
        }
        v
    }

    /// Only inside the window (writes are).
    fn set(&mut self, offset: u64, bits: u32, value: u64) {
        for j in 0..u64::from(bits) {
            let p = offset + j;
            let bit = ((value >> (u64::from(bits) - 1 - j)) & 1) as u8;
            let i = ((p >> 3) - self.lo) as usize;
            let shift = 7 - (p & 7);
            self.win[i] = (self.win[i] & !(1 << shift)) | (bit << shift);
        }
    }
}

fn signed_of(v: u64, bits: u32) -> i64 {
    if bits == 64 {
        v as i64
    } else if v & (1 << (bits - 1)) != 0 {
        (v | (u64::MAX << bits)) as i64
    } else {
        v as i64
    }
}

/// Redis's checkSignedBitfieldOverflow: `Some(value)` to store (wrapped or saturated), or
/// `None` on overflow with FAIL; the flag says whether it overflowed.
fn signed_add(value: i64, incr: i64, bits: u32, ow: Overflow) -> Option<i64> {
    let max: i64 = if bits == 64 {
        i64::MAX
    } else {
        (1i64 << (bits - 1)) - 1
    };
    let min = -max - 1;
    let sum = i128::from(value) + i128::from(incr);
    if sum > i128::from(max) || sum < i128::from(min) {
        match ow {
            Overflow::Fail => None,
            Overflow::Sat => Some(if sum > i128::from(max) { max } else { min }),
            Overflow::Wrap => {
                let c = (value as u64).wrapping_add(incr as u64);
                let c = if bits < 64 {
                    c & !(u64::MAX << bits)
                } else {
                    c
                };
                Some(signed_of(c, bits))
            }
        }
    } else {
        Some(sum as i64)
    }
}

/// Redis's checkUnsignedBitfieldOverflow, as [`signed_add`].
fn unsigned_add(value: u64, incr: i64, bits: u32, ow: Overflow) -> Option<u64> {
    let max: u64 = (1u64 << bits) - 1;
    let sum = i128::from(value) + i128::from(incr);
    if sum > i128::from(max) || sum < 0 {
        match ow {
            Overflow::Fail => None,
            Overflow::Sat => Some(if sum > 0 { max } else { 0 }),
            Overflow::Wrap => Some(value.wrapping_add(incr as u64) & max),
        }
    } else {
        Some(sum as u64)
    }
}

fn bitfield_with(tx: &mut Tx<'_, '_>, a: &[Bytes], out: &mut Out, read_only: bool) -> R {
    let k = key!(a[1], out);
    let mut fields = Vec::new();
    let mut overflow = Overflow::Wrap;
    let mut j = 2;
    while j < a.len() {
        let rem = a.len() - j - 1;
        let sub = &a[j];
        let op = if eq(sub, "GET") && rem >= 2 {
            FieldOp::Get
        } else if eq(sub, "SET") && rem >= 3 {
            FieldOp::Set(0)
        } else if eq(sub, "INCRBY") && rem >= 3 {
            FieldOp::Incr(0)
        } else if eq(sub, "OVERFLOW") && rem >= 1 {
            let t = &a[j + 1];
            overflow = if eq(t, "WRAP") {
                Overflow::Wrap
            } else if eq(t, "SAT") {
                Overflow::Sat
            } else if eq(t, "FAIL") {
                Overflow::Fail
            } else {
                out.error("ERR Invalid OVERFLOW type specified");
                return Ok(());
            };
            j += 2;
            continue;
        } else {
            out.error(ERR_SYNTAX);
            return Ok(());
        };
        let t = &a[j + 1];
        let signed = match t.first() {
            Some(b'i') => true,
            Some(b'u') => false,
            _ => {
                out.error(ERR_BITFIELD_TYPE);
                return Ok(());
            }
        };
        let bits = match parse_i64_canonical(&t[1..]) {
            Some(b) if b >= 1 && ((signed && b <= 64) || (!signed && b <= 63)) => b as u32,
            _ => {
                out.error(ERR_BITFIELD_TYPE);
                return Ok(());
            }
        };
        let Some(offset) = bit_offset(&a[j + 2], Some(u64::from(bits))) else {
            out.error(ERR_BIT_OFFSET);
            return Ok(());
        };
        let op = match op {
            FieldOp::Get => FieldOp::Get,
            FieldOp::Set(_) => FieldOp::Set(int!(a[j + 3], out)),
            FieldOp::Incr(_) => FieldOp::Incr(int!(a[j + 3], out)),
        };
        fields.push(Field {
            op,
            signed,
            bits,
            offset,
            overflow,
        });
        j += if matches!(op, FieldOp::Get) { 3 } else { 4 };
    }
    let writes = fields.iter().filter(|f| !matches!(f.op, FieldOp::Get));
    let window = writes.fold(None, |w: Option<(u64, u64)>, f| {
        let (lo, hi) = (f.offset >> 3, (f.offset + u64::from(f.bits) - 1) >> 3);
        Some(w.map_or((lo, hi), |(l, h)| (l.min(lo), h.max(hi))))
    });
    if window.is_some() && read_only {
        out.error("ERR BITFIELD_RO only supports the GET subcommand");
        return Ok(());
    }
    let (lo, hi) = window.unwrap_or((0, 0));
    // A write past the largest value is refused before its window is built.
    if window.is_some() && hi >= helios_atlas::limits::VALUE_SIZE_MAX {
        out.error(ERR_TOO_LONG);
        return Ok(());
    }
    let old = tx.get(k).unwrap_or_default();
    let mut b = Bits {
        lo,
        win: Vec::new(),
        old,
    };
    if window.is_some() {
        b.win = (lo..=hi).map(|i| b.byte(i)).collect();
    }
    out.array(fields.len());
    for f in &fields {
        let raw = b.get(f.offset, f.bits);
        let (reply, store): (Option<i64>, Option<u64>) = match (f.op, f.signed) {
            (FieldOp::Get, true) => (Some(signed_of(raw, f.bits)), None),
            (FieldOp::Get, false) => (Some(raw as i64), None),
            (FieldOp::Set(v), true) => {
                let old = signed_of(raw, f.bits);
                match signed_add(v, 0, f.bits, f.overflow) {
                    Some(n) => (Some(old), Some(n as u64)),
                    None => (None, None),
                }
            }
            (FieldOp::Set(v), false) => {
                // The value as an unsigned 64-bit number, as Redis casts it.
                let vu = v as u64;
                let max = (1u64 << f.bits) - 1;
                let stored = if vu > max {
                    match f.overflow {
                        Overflow::Fail => None,
                        Overflow::Sat => Some(max),
                        Overflow::Wrap => Some(vu & max),
                    }
                } else {
                    Some(vu)
                };
                match stored {
                    Some(n) => (Some(raw as i64), Some(n)),
                    None => (None, None),
                }
            }
            (FieldOp::Incr(d), true) => {
                match signed_add(signed_of(raw, f.bits), d, f.bits, f.overflow) {
                    Some(n) => (Some(n), Some(n as u64)),
                    None => (None, None),
                }
            }
            (FieldOp::Incr(d), false) => match unsigned_add(raw, d, f.bits, f.overflow) {
                Some(n) => (Some(n as i64), Some(n)),
                None => (None, None),
            },
        };
        match reply {
            Some(r) => out.int(r),
            None => out.null(),
        }
        if let Some(n) = store {
            let mask = if f.bits == 64 {
                u64::MAX
            } else {
                (1u64 << f.bits) - 1
            };
            b.set(f.offset, f.bits, n & mask);
        }
    }
    if window.is_some() {
        let len = b.old.len() as u64;
        let unchanged = (lo..=hi).all(|i| i < len && b.old[i as usize] == b.win[(i - lo) as usize]);
        // Redis pads (or creates) the value for a write even when no bit changes.
        if !unchanged {
            tx.set_range(k, lo, &b.win)?;
        }
    }
    Ok(())
}

/// BITFIELD key [GET type offset | SET type offset value | INCRBY type offset incr |
/// OVERFLOW WRAP|SAT|FAIL] ...
pub fn bitfield(tx: &mut Tx<'_, '_>, a: &[Bytes], out: &mut Out) -> R {
    bitfield_with(tx, a, out, false)
}

/// BITFIELD_RO key [GET type offset] ...
pub fn bitfield_ro(tx: &mut Tx<'_, '_>, a: &[Bytes], out: &mut Out) -> R {
    bitfield_with(tx, a, out, true)
}

/// Largest LCS table, in bytes (Redis: its transient memory may not exceed
/// `proto-max-bulk-len`).
/// LCS's table (4 bytes a cell): 64 MiB, about two 4 KiB strings. Redis allows
/// proto-max-bulk-len (512 MiB); a table that size takes seconds to fill while the
/// command holds the store's read lock, so atlasd stays well under it.
const LCS_TABLE_SIZE_MAX: u64 = 64 * 1024 * 1024;

/// LCS key1 key2 [LEN] [IDX] [MINMATCHLEN len] [WITHMATCHLEN]
pub fn lcs(tx: &mut Tx<'_, '_>, a: &[Bytes], out: &mut Out) -> R {
    let ka = key!(a[1], out);
    let kb = key!(a[2], out);
    let x = tx.get(ka).unwrap_or_default();
    let y = tx.get(kb).unwrap_or_default();
    let (mut getlen, mut getidx, mut withlen, mut minlen) = (false, false, false, 0i64);
    let mut j = 3;
    while j < a.len() {
        let o = &a[j];
        if eq(o, "IDX") {
            getidx = true;
        } else if eq(o, "LEN") {
            getlen = true;
        } else if eq(o, "WITHMATCHLEN") {
            withlen = true;
        } else if eq(o, "MINMATCHLEN") && j + 1 < a.len() {
            minlen = int!(a[j + 1], out).max(0);
            j += 1;
        } else {
            out.error(ERR_SYNTAX);
            return Ok(());
        }
        j += 1;
    }
    if getlen && getidx {
        out.error("ERR If you want both the length and indexes, please just use IDX.");
        return Ok(());
    }
    let (al, bl) = (x.len(), y.len());
    let cells = (al as u64 + 1) * (bl as u64 + 1);
    if cells.saturating_mul(4) > LCS_TABLE_SIZE_MAX {
        out.error("ERR Insufficient memory, transient memory for LCS exceeds proto-max-bulk-len");
        return Ok(());
    }
    let w = bl + 1;
    let mut t = vec![0u32; cells as usize];
    for i in 1..=al {
        for jj in 1..=bl {
            t[i * w + jj] = if x[i - 1] == y[jj - 1] {
                t[(i - 1) * w + jj - 1] + 1
            } else {
                t[(i - 1) * w + jj].max(t[i * w + jj - 1])
            };
        }
    }
    let total = t[al * w + bl];
    if getlen {
        out.int(i64::from(total));
        return Ok(());
    }
    let mut result = vec![0u8; total as usize];
    let mut idx = total as usize;
    let mut matches: Vec<[i64; 5]> = Vec::new();
    let (mut i, mut jj) = (al, bl);
    // The range being built: (a_start, a_end, b_start, b_end); a_start == al: none.
    let (mut as_, mut ae, mut bs, mut be) = (al, 0usize, 0usize, 0usize);
    while i > 0 && jj > 0 {
        let mut emit = false;
        if x[i - 1] == y[jj - 1] {
            result[idx - 1] = x[i - 1];
            if as_ == al {
                as_ = i - 1;
                ae = i - 1;
                bs = jj - 1;
                be = jj - 1;
            } else if as_ == i && bs == jj {
                as_ -= 1;
                bs -= 1;
            } else {
                emit = true;
            }
            if as_ == 0 || bs == 0 {
                emit = true;
            }
            idx -= 1;
            i -= 1;
            jj -= 1;
        } else {
            if t[(i - 1) * w + jj] > t[i * w + jj - 1] {
                i -= 1;
            } else {
                jj -= 1;
            }
            if as_ != al {
                emit = true;
            }
        }
        if emit {
            let mlen = (ae - as_ + 1) as i64;
            if minlen == 0 || mlen >= minlen {
                matches.push([as_ as i64, ae as i64, bs as i64, be as i64, mlen]);
            }
            as_ = al;
        }
    }
    if getidx {
        out.map(2);
        out.bulk(b"matches");
        out.array(matches.len());
        for m in &matches {
            out.array(2 + usize::from(withlen));
            out.array(2);
            out.int(m[0]);
            out.int(m[1]);
            out.array(2);
            out.int(m[2]);
            out.int(m[3]);
            if withlen {
                out.int(m[4]);
            }
        }
        out.bulk(b"len");
        out.int(i64::from(total));
    } else {
        out.bulk(&result);
    }
    Ok(())
}

/// COPY source destination [DB 0] [REPLACE]: value and TTL. Only DB 0 exists, so any other
/// DB is Redis's out-of-range error.
pub fn copy(tx: &mut Tx<'_, '_>, a: &[Bytes], out: &mut Out) -> R {
    let src = key!(a[1], out);
    let dst = key!(a[2], out);
    let mut replace = false;
    let mut j = 3;
    while j < a.len() {
        if eq(&a[j], "REPLACE") {
            replace = true;
        } else if eq(&a[j], "DB") && j + 1 < a.len() {
            if int!(a[j + 1], out) != 0 {
                out.error("ERR DB index is out of range");
                return Ok(());
            }
            j += 1;
        } else {
            out.error(ERR_SYNTAX);
            return Ok(());
        }
        j += 1;
    }
    if src == dst {
        out.error("ERR source and destination objects are the same");
        return Ok(());
    }
    let Some(v) = tx.get(src) else {
        out.int(0);
        return Ok(());
    };
    if !replace && tx.exists(dst) {
        out.int(0);
        return Ok(());
    }
    let expiry = match tx.ttl(src) {
        KeyTtl::Expires { at_ms, .. } => Expiry::AtMs(at_ms),
        _ => Expiry::Never,
    };
    tx.set(dst, stored(&v), expiry)?;
    out.int(1);
    Ok(())
}

/// TOUCH key [key ...]: how many exist (no access times are kept).
pub fn touch(tx: &mut Tx<'_, '_>, a: &[Bytes], out: &mut Out) -> R {
    let n = a[1..]
        .iter()
        .filter(|k| key_arg(k).is_ok_and(|k| tx.exists(k)))
        .count();
    out.int(n as i64);
    Ok(())
}

/// OBJECT ENCODING|IDLETIME|FREQ|REFCOUNT key, OBJECT HELP, with encodings from the
/// content alone (the command table's entry; the pipeline runs [`object_with`] and
/// atlasd's memory of strings changed in place).
pub fn object(tx: &mut Tx<'_, '_>, a: &[Bytes], out: &mut Out) -> R {
    object_with(tx, a, out, None)
}

/// OBJECT: ENCODING is what Redis would report ([`RawStrings::encoding`]: ATLAS has one
/// representation; this is what a client of Redis expects to read).
pub fn object_with(
    tx: &mut Tx<'_, '_>,
    a: &[Bytes],
    out: &mut Out,
    raw: Option<(&RawStrings, &Notes)>,
) -> R {
    let sub = &a[1];
    if eq(sub, "HELP") && a.len() == 2 {
        out.array(2);
        out.simple("OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:");
        out.simple("ENCODING <key>, FREQ <key>, IDLETIME <key>, REFCOUNT <key>, HELP");
        return Ok(());
    }
    let known = ["ENCODING", "IDLETIME", "FREQ", "REFCOUNT"]
        .iter()
        .any(|s| eq(sub, s));
    if !known || a.len() != 3 {
        out.error(&format!(
            "ERR unknown subcommand or wrong number of arguments for '{}'. Try OBJECT HELP.",
            String::from_utf8_lossy(&sub[..sub.len().min(128)])
        ));
        return Ok(());
    }
    let k = key!(a[2], out);
    let Some(v) = tx.get(k) else {
        out.null();
        return Ok(());
    };
    if eq(sub, "ENCODING") {
        let e = match raw {
            Some((r, notes)) => r.encoding(k, &v, notes, tx.written()),
            None => encodings::of_content(&v),
        };
        out.bulk(e.as_bytes());
    } else if eq(sub, "IDLETIME") {
        out.int(0);
    } else if eq(sub, "REFCOUNT") {
        out.int(1);
    } else {
        out.error("ERR An LFU maxmemory policy is not selected, access frequency not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust.");
    }
    Ok(())
}

/// Estimated bookkeeping bytes per key (ATLAS's `ENTRY_OVERHEAD_SIZE`).
const ENTRY_OVERHEAD_SIZE: u64 = helios_atlas::limits::ENTRY_OVERHEAD_SIZE;

/// MEMORY USAGE key [SAMPLES n]: ATLAS's estimate of the entry (key, value, bookkeeping).
pub fn memory(tx: &mut Tx<'_, '_>, a: &[Bytes], out: &mut Out) -> R {
    if !eq(&a[1], "USAGE") {
        out.error(&format!(
            "ERR unknown subcommand '{}'. Try MEMORY HELP.",
            String::from_utf8_lossy(&a[1][..a[1].len().min(128)])
        ));
        return Ok(());
    }
    let Some(karg) = a.get(2) else {
        out.error("ERR wrong number of arguments for 'memory|usage' command");
        return Ok(());
    };
    match &a[3..] {
        [] => {}
        [s, n] if eq(s, "SAMPLES") => {
            if parse_i64_canonical(n).is_none() {
                out.error(ERR_NOT_INT);
                return Ok(());
            }
        }
        _ => {
            out.error(ERR_SYNTAX);
            return Ok(());
        }
    }
    let k = key!(karg, out);
    match tx.get(k) {
        Some(v) => out.int((k.len() as u64 + v.len() as u64 + ENTRY_OVERHEAD_SIZE) as i64),
        None => out.null(),
    }
    Ok(())
}

/// WAIT numreplicas timeout: 0 at once (there are no replicas).
pub fn wait(_: &mut Tx<'_, '_>, a: &[Bytes], out: &mut Out) -> R {
    let _replicas = int!(a[1], out);
    let timeout = int!(a[2], out);
    if timeout < 0 {
        out.error("ERR timeout is negative");
        return Ok(());
    }
    out.int(0);
    Ok(())
}

/// FUNCTION FLUSH [ASYNC|SYNC] and FUNCTION LIST: no functions exist (no scripting), so
/// there is nothing to flush or list. Redis's test harness flushes functions before each
/// test file.
pub fn function(_: &mut Tx<'_, '_>, a: &[Bytes], out: &mut Out) -> R {
    let sub = &a[1];
    if eq(sub, "FLUSH") {
        match &a[2..] {
            [] => out.ok(),
            [m] if eq(m, "ASYNC") || eq(m, "SYNC") => out.ok(),
            _ => out.error(ERR_SYNTAX),
        }
    } else if eq(sub, "LIST") {
        out.array(0);
    } else {
        out.error(&format!(
            "ERR unknown subcommand '{}'. Try FUNCTION HELP.",
            String::from_utf8_lossy(&sub[..sub.len().min(128)])
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_redis_ranges() {
        assert_eq!(range(0, -1, 5), Some((0, 4)));
        assert_eq!(range(-2, -1, 5), Some((3, 4)));
        assert_eq!(range(-1, -2, 5), None);
        assert_eq!(range(3, 100, 5), Some((3, 4)));
        assert_eq!(range(0, 0, 0), None);
        assert_eq!(range(4, 2, 5), None);
    }

    #[test]
    fn bits_count_within_edges() {
        let v = [0xffu8, 0x0f, 0xf0];
        assert_eq!(count_bits(&v, 0, 23), 16);
        assert_eq!(count_bits(&v, 4, 11), 4);
        assert_eq!(count_bits(&v, 12, 19), 8);
    }

    #[test]
    fn bitfield_overflow_as_redis() {
        assert_eq!(signed_add(127, 1, 8, Overflow::Wrap), Some(-128));
        assert_eq!(signed_add(127, 1, 8, Overflow::Sat), Some(127));
        assert_eq!(signed_add(127, 1, 8, Overflow::Fail), None);
        assert_eq!(unsigned_add(255, 1, 8, Overflow::Wrap), Some(0));
        assert_eq!(unsigned_add(0, -1, 8, Overflow::Sat), Some(0));
        assert_eq!(signed_add(i64::MAX, 1, 64, Overflow::Wrap), Some(i64::MIN));
    }

    #[test]
    fn bit_offsets_are_bounded() {
        assert_eq!(bit_offset(b"7", None), Some(7));
        assert_eq!(bit_offset(b"-1", None), None);
        assert_eq!(bit_offset(b"4294967296", None), None);
        assert_eq!(bit_offset(b"#2", Some(8)), Some(16));
        assert_eq!(bit_offset(b"#2", None), None);
    }
}
