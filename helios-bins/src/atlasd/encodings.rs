//! What OBJECT ENCODING remembers: the strings Redis would hold as `raw` whatever their
//! content, because a command changed them in place (SETRANGE, SETBIT, BITFIELD, APPEND to
//! an existing key) or built them as a raw buffer (BITOP's destination).
//!
//! ATLAS keeps one representation of a value, so OBJECT ENCODING answers from the value
//! (`int`, `embstr` up to 44 bytes, `raw`) except for the keys marked here, which answer
//! `raw` as Redis does until they are written whole again (SET, INCR, DEL, ...). RENAME,
//! RENAMENX and COPY carry the mark to the destination, as Redis moves or duplicates the
//! object. The marks live in memory only: after a restart every string is encoded from
//! its content again, which is what Redis does when it loads its files.
//!
//! Invariants:
//! - marks change only in the committer's write jobs, in commit order: each command's ops
//!   are noted (`note`, by their index in the job's transaction: no key is copied) and the
//!   notes are applied when the job's commands all ran (`apply`); a command inside the job
//!   (OBJECT, RENAME's source) sees the notes before it. A job that fails leaves the marks
//!   as they were. (A job whose record then fails to be written leaves its marks: the
//!   store is fail-stopped then, and a restart forgets every mark.)
//! - only values of at most [`EMBSTR_SIZE_MAX`] bytes under keys of at most
//!   [`MARK_KEY_SIZE_MAX`] bytes are marked (a longer value is `raw` anyway); the marks
//!   hold at most [`MARK_COUNT_MAX`] keys and [`MARK_KEYS_SIZE_MAX`] bytes of keys. A mark
//!   that would pass either bound forgets every mark first: marks of keys deleted by active
//!   expiry (which does not pass through atlasd) cannot pile up, and the cost is that
//!   OBJECT ENCODING answers from the content until strings are changed in place again.
//!
//! Cost on the write path: one name check per command; while nothing is marked and the
//! job has no note, nothing else (no lock, no allocation). While keys are marked, a whole
//! write of a key checks a 4,096-bit filter of the marked keys (a cheap hash of the key's
//! length and ends, no lock) and notes a clear only when the filter says the key may be
//! marked; a collision costs only that note.

use bytes::Bytes;
use helios_atlas::{Key, Op, Tx};
use helios_core::digits::parse_i64_canonical;
use parking_lot::Mutex;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// The longest string Redis stores `embstr` (OBJ_ENCODING_EMBSTR_SIZE_LIMIT).
pub const EMBSTR_SIZE_MAX: usize = 44;

/// Most keys marked `raw` at once.
pub const MARK_COUNT_MAX: usize = 100_000;

/// Most bytes of marked keys at once.
pub const MARK_KEYS_SIZE_MAX: usize = 16 << 20;

/// The longest key marked (a longer one answers from its content).
pub const MARK_KEY_SIZE_MAX: usize = 1024;

/// The encoding Redis reports for a string created whole as `v`: `int` for a canonical
/// 64-bit integer of at most 20 characters, `embstr` up to 44 bytes, else `raw`.
pub fn of_content(v: &[u8]) -> &'static str {
    if v.len() <= 20 && parse_i64_canonical(v).is_some() {
        "int"
    } else if v.len() <= EMBSTR_SIZE_MAX {
        "embstr"
    } else {
        "raw"
    }
}

#[derive(Debug, Default)]
struct Marks {
    keys: HashSet<Key>,
    keys_size: usize,
}

/// Words of the filter of marked keys (64 x 64 = 4,096 bits).
const FILTER_WORDS: usize = 64;

/// The filter bit of `key`: a cheap mix of its length and its first and last 8 bytes.
/// Keys come from clients, so collisions can be forced: they cost only a note.
fn filter_bit(key: &[u8]) -> (usize, u64) {
    let word = |b: &[u8]| {
        let mut w = [0u8; 8];
        w[..b.len()].copy_from_slice(b);
        u64::from_le_bytes(w)
    };
    let n = key.len();
    let head = word(&key[..n.min(8)]);
    let tail = word(&key[n.saturating_sub(8)..]);
    let mut h = (n as u64) ^ 0x9e37_79b9_7f4a_7c15;
    h = (h ^ head).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ tail).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    let bit = (h % (FILTER_WORDS as u64 * 64)) as usize;
    (bit / 64, 1 << (bit % 64))
}

/// The keys whose strings are `raw` by history. See the module docs.
#[derive(Debug)]
pub struct RawStrings {
    marks: Mutex<Marks>,
    // The number of marks (the fast paths read it without the lock).
    count: AtomicUsize,
    // A bit per marked key's `filter_bit` (set when marked, cleared only with every mark).
    filter: [AtomicU64; FILTER_WORDS],
}

/// A job's mark changes, applied when its commands all ran: (index of the op in the job's
/// transaction, marked).
pub type Notes = Vec<(usize, bool)>;

/// What a command does to the encoding of the keys it writes, decided before it runs.
#[derive(Debug)]
pub enum Effect {
    /// Range writes mark, whole writes clear (the default).
    Plain,
    /// APPEND to a key that exists: its whole write is an in-place change.
    AppendExisting,
    /// BITOP: the destination is built raw.
    BuiltRaw,
    /// RENAME, RENAMENX, COPY: the destination takes the source's mark.
    Moves {
        /// Whether the source is marked.
        raw: bool,
    },
}

/// The pending note for `key` among `notes` (the last one decides), if any.
fn pending(notes: &Notes, ops: &[Op], key: &[u8]) -> Option<bool> {
    notes
        .iter()
        .rev()
        .find(|(i, _)| ops.get(*i).is_some_and(|op| op.key().as_bytes() == key))
        .map(|(_, raw)| *raw)
}

impl Default for RawStrings {
    fn default() -> Self {
        Self {
            marks: Mutex::default(),
            count: AtomicUsize::new(0),
            filter: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl RawStrings {
    /// Whether `key` may be marked (no: it is not).
    fn may_be_marked(&self, key: &[u8]) -> bool {
        let (w, bit) = filter_bit(key);
        self.filter[w].load(Ordering::Acquire) & bit != 0
    }

    /// Whether `key` is marked, with the job's `notes` on the ops `ops` of its
    /// transaction first.
    fn is_raw_with(&self, key: &[u8], notes: &Notes, ops: &[Op]) -> bool {
        pending(notes, ops, key).unwrap_or_else(|| self.is_raw(key))
    }

    /// What command `args` will do, looked at before it runs in `tx` (whose job noted
    /// `notes` so far).
    pub fn effect(&self, tx: &Tx<'_, '_>, args: &[Bytes], notes: &Notes) -> Effect {
        let name = &args[0];
        if name.eq_ignore_ascii_case(b"append") && args.len() > 1 && tx.exists(&args[1]) {
            Effect::AppendExisting
        } else if name.eq_ignore_ascii_case(b"bitop") {
            Effect::BuiltRaw
        } else if (name.eq_ignore_ascii_case(b"rename")
            || name.eq_ignore_ascii_case(b"renamenx")
            || name.eq_ignore_ascii_case(b"copy"))
            && args.len() > 1
        {
            Effect::Moves {
                raw: self.is_raw_with(&args[1], notes, tx.written()),
            }
        } else {
            Effect::Plain
        }
    }

    /// Adds to `notes` the mark changes of the ops a command wrote: those of `tx` from
    /// index `from` on, with the `effect` found before it ran.
    pub fn note(&self, tx: &Tx<'_, '_>, from: usize, effect: &Effect, notes: &mut Notes) {
        let ops = tx.written();
        if matches!(effect, Effect::Plain)
            && notes.is_empty()
            && self.count.load(Ordering::Acquire) == 0
            && !ops[from..]
                .iter()
                .any(|op| matches!(op, Op::SetRange { .. }))
        {
            return;
        }
        for (i, op) in ops.iter().enumerate().skip(from) {
            let raw = match (op, effect) {
                (Op::Expire { .. }, _) => continue,
                (Op::Del { .. }, _) => false,
                (Op::SetRange { .. }, _) => true,
                (Op::Set { .. }, Effect::AppendExisting | Effect::BuiltRaw) => true,
                (Op::Set { .. }, Effect::Moves { raw }) => *raw,
                (Op::Set { .. }, Effect::Plain) => false,
            };
            let key = op.key();
            let small = || {
                key.len() <= MARK_KEY_SIZE_MAX
                    && tx.get(key).is_some_and(|v| v.len() <= EMBSTR_SIZE_MAX)
            };
            let mark = raw && small();
            // A clear of a key that is neither marked nor noted in this job changes nothing.
            if mark || self.may_be_marked(key) || pending(notes, ops, key).is_some() {
                notes.push((i, mark));
            }
        }
    }

    /// Applies the notes of a job whose commands all ran; `ops` are its transaction's.
    pub fn apply(&self, notes: &Notes, ops: &[Op]) {
        if notes.is_empty() {
            return;
        }
        let mut m = self.marks.lock();
        for &(i, raw) in notes {
            let Some(op) = ops.get(i) else {
                continue;
            };
            let key = op.key();
            if !raw {
                if m.keys.remove(key.as_bytes()) {
                    m.keys_size -= key.len();
                }
                continue;
            }
            if m.keys.contains(key.as_bytes()) {
                continue;
            }
            if m.keys.len() >= MARK_COUNT_MAX || m.keys_size + key.len() > MARK_KEYS_SIZE_MAX {
                m.keys.clear();
                m.keys_size = 0;
                self.clear_filter();
            }
            m.keys_size += key.len();
            m.keys.insert(key.clone());
            let (w, bit) = filter_bit(key);
            self.filter[w].fetch_or(bit, Ordering::AcqRel);
        }
        self.count.store(m.keys.len(), Ordering::Release);
    }

    /// Whether `key`'s string is `raw` by history (marks applied so far).
    fn is_raw(&self, key: &[u8]) -> bool {
        self.count.load(Ordering::Acquire) > 0 && self.marks.lock().keys.contains(key)
    }

    /// Forgets every mark (FLUSHDB, FLUSHALL).
    pub fn clear(&self) {
        let mut m = self.marks.lock();
        m.keys.clear();
        m.keys_size = 0;
        self.clear_filter();
        self.count.store(0, Ordering::Release);
    }

    fn clear_filter(&self) {
        for w in &self.filter {
            w.store(0, Ordering::Release);
        }
    }

    /// The encoding OBJECT ENCODING reports for `key` holding `v`, with the `notes` of the
    /// job it runs in on the ops `ops` of its transaction (a transaction sees its own
    /// changes). A value longer than `embstr` holds is `raw` whatever the mark.
    pub fn encoding(&self, key: &[u8], v: &[u8], notes: &Notes, ops: &[Op]) -> &'static str {
        if v.len() > EMBSTR_SIZE_MAX {
            return "raw";
        }
        if self.is_raw_with(key, notes, ops) {
            "raw"
        } else {
            of_content(v)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(k: &str) -> Op {
        Op::Set {
            key: k.into(),
            value: Bytes::from_static(b"12"),
            expire_at_ms: None,
        }
    }

    #[test]
    fn content_decides_unless_marked() {
        assert_eq!(of_content(b"-12"), "int");
        assert_eq!(of_content(b"012"), "embstr", "not canonical");
        assert_eq!(of_content(&[b'1'; 21]), "embstr", "longer than 20");
        assert_eq!(of_content(&[b'x'; 44]), "embstr");
        assert_eq!(of_content(&[b'x'; 45]), "raw");
        let r = RawStrings::default();
        let ops = vec![set("k"), set("k")];
        r.apply(&vec![(0, true)], &ops);
        let none = Notes::new();
        assert_eq!(r.encoding(b"k", b"12", &none, &[]), "raw");
        assert_eq!(r.encoding(b"other", b"12", &none, &[]), "int");
        // A job's own pending notes come first, the last one for a key deciding.
        assert_eq!(
            r.encoding(b"k", b"12", &vec![(0, true), (1, false)], &ops),
            "int"
        );
        r.clear();
        assert_eq!(r.encoding(b"k", b"12", &none, &[]), "int");
    }

    #[test]
    fn the_filter_holds_every_marked_key() {
        let r = RawStrings::default();
        let ops: Vec<Op> = ["a", "bb", "a much longer key than sixteen bytes", "\u{0}"]
            .iter()
            .map(|k| set(k))
            .collect();
        let notes: Notes = (0..ops.len()).map(|i| (i, true)).collect();
        r.apply(&notes, &ops);
        for op in &ops {
            assert!(r.may_be_marked(op.key()));
        }
        let unmarked = (0..1000)
            .filter(|i| !r.may_be_marked(format!("other:{i}").as_bytes()))
            .count();
        assert!(unmarked > 900, "{unmarked}");
        r.clear();
        assert!(!r.may_be_marked(b"a"));
    }

    #[test]
    fn marks_are_bounded_by_count_and_bytes() {
        let r = RawStrings::default();
        let ops: Vec<Op> = (0..MARK_COUNT_MAX + 10)
            .map(|i| set(&i.to_string()))
            .collect();
        let notes: Notes = (0..ops.len()).map(|i| (i, true)).collect();
        r.apply(&notes, &ops);
        // Past the count, every mark was forgotten and the marking went on.
        assert_eq!(r.count.load(Ordering::Relaxed), 10);
        assert!(r.is_raw((MARK_COUNT_MAX + 5).to_string().as_bytes()));
        assert!(!r.is_raw(b"0"));
        r.apply(&vec![(MARK_COUNT_MAX + 5, false)], &ops);
        assert!(!r.is_raw((MARK_COUNT_MAX + 5).to_string().as_bytes()));
        // By bytes: keys of 1 KiB, 16 Ki of them fill the bound.
        let r = RawStrings::default();
        let big: Vec<Op> = (0..(MARK_KEYS_SIZE_MAX / MARK_KEY_SIZE_MAX) + 1)
            .map(|i| set(&format!("{i:0>1024}")))
            .collect();
        let notes: Notes = (0..big.len()).map(|i| (i, true)).collect();
        r.apply(&notes, &big);
        let m = r.marks.lock();
        assert_eq!(m.keys.len(), 1);
        assert!(m.keys_size <= MARK_KEYS_SIZE_MAX);
    }
}
