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
//! Invariants: marks change only in the committer's write jobs, in commit order, from the
//! ops each command wrote (`note`), and only when the job's transaction is planned whole
//! (`apply`: a refused write leaves the marks as they were); only values of at most [`EMBSTR_SIZE_MAX`] bytes are marked (a longer
//! one is `raw` anyway); at most [`RAW_MARK_COUNT_MAX`] keys are marked (past it a value's
//! content decides, as for an unmarked key). A key deleted by active expiry keeps its mark
//! until it is written again through atlasd, which sets or clears it.

use bytes::Bytes;
use helios_atlas::{Key, Op, Tx};
use helios_core::digits::parse_i64_canonical;
use parking_lot::Mutex;
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The longest string Redis stores `embstr` (OBJ_ENCODING_EMBSTR_SIZE_LIMIT).
pub const EMBSTR_SIZE_MAX: usize = 44;

/// Most keys marked `raw` at once.
pub const RAW_MARK_COUNT_MAX: usize = 100_000;

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

/// The keys whose strings are `raw` by history. See the module docs.
#[derive(Debug, Default)]
pub struct RawStrings {
    keys: Mutex<HashSet<Key>>,
    // The number of marks (fast path: a plain write with no range op, while nothing is
    // marked, needs no lock).
    count: AtomicUsize,
}

/// Mark changes of a job, applied when it is planned whole: (key, marked).
pub type Notes = Vec<(Key, bool)>;

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

impl RawStrings {
    /// What command `args` will do, looked at before it runs in `tx`.
    pub fn effect(&self, tx: &Tx<'_, '_>, args: &[Bytes]) -> Effect {
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
                raw: self.is_raw(&args[1]),
            }
        } else {
            Effect::Plain
        }
    }

    /// Adds to `notes` the mark changes of the ops a command wrote (`ops`, in order),
    /// with the `effect` found before it ran.
    pub fn note(&self, tx: &Tx<'_, '_>, ops: &[Op], effect: &Effect, notes: &mut Notes) {
        if matches!(effect, Effect::Plain)
            && self.count.load(Ordering::Acquire) == 0
            && !ops.iter().any(|op| matches!(op, Op::SetRange { .. }))
        {
            return;
        }
        for op in ops {
            let raw = match (op, effect) {
                (Op::Expire { .. }, _) => continue,
                (Op::Del { .. }, _) => false,
                (Op::SetRange { .. }, _) => true,
                (Op::Set { .. }, Effect::AppendExisting | Effect::BuiltRaw) => true,
                (Op::Set { .. }, Effect::Moves { raw }) => *raw,
                (Op::Set { .. }, Effect::Plain) => false,
            };
            let key = op.key();
            let small = || tx.get(key).is_some_and(|v| v.len() <= EMBSTR_SIZE_MAX);
            notes.push((key.clone(), raw && small()));
        }
    }

    /// Applies the notes of a job whose transaction was planned whole.
    pub fn apply(&self, notes: Notes) {
        if notes.is_empty() {
            return;
        }
        let mut keys = self.keys.lock();
        for (key, raw) in notes {
            if !raw {
                keys.remove(key.as_bytes());
            } else if keys.len() < RAW_MARK_COUNT_MAX {
                keys.insert(key);
            }
        }
        self.count.store(keys.len(), Ordering::Release);
    }

    /// Whether `key`'s string is `raw` by history.
    pub fn is_raw(&self, key: &[u8]) -> bool {
        self.count.load(Ordering::Acquire) > 0 && self.keys.lock().contains(key)
    }

    /// Forgets every mark (FLUSHDB, FLUSHALL).
    pub fn clear(&self) {
        let mut keys = self.keys.lock();
        keys.clear();
        self.count.store(0, Ordering::Release);
    }

    /// The encoding OBJECT ENCODING reports for `key` holding `v`, with the `pending`
    /// notes of the job it runs in (a transaction sees its own changes). A value longer
    /// than `embstr` holds is `raw` whatever the mark.
    pub fn encoding(&self, key: &[u8], v: &[u8], pending: &Notes) -> &'static str {
        if v.len() > EMBSTR_SIZE_MAX {
            return "raw";
        }
        let raw = match pending.iter().rev().find(|(k, _)| k.as_bytes() == key) {
            Some((_, raw)) => *raw,
            None => self.is_raw(key),
        };
        if raw { "raw" } else { of_content(v) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_decides_unless_marked() {
        assert_eq!(of_content(b"-12"), "int");
        assert_eq!(of_content(b"012"), "embstr", "not canonical");
        assert_eq!(of_content(&[b'1'; 21]), "embstr", "longer than 20");
        assert_eq!(of_content(&[b'x'; 44]), "embstr");
        assert_eq!(of_content(&[b'x'; 45]), "raw");
        let r = RawStrings::default();
        r.apply(vec![(Key::from("k"), true)]);
        assert_eq!(r.encoding(b"k", b"12", &Notes::new()), "raw");
        assert_eq!(r.encoding(b"other", b"12", &Notes::new()), "int");
        // A job's own pending notes come first, the last one for a key deciding.
        let pending = vec![(Key::from("k"), true), (Key::from("k"), false)];
        assert_eq!(r.encoding(b"k", b"12", &pending), "int");
        r.clear();
        assert_eq!(r.encoding(b"k", b"12", &Notes::new()), "int");
    }

    #[test]
    fn marks_are_bounded() {
        let r = RawStrings::default();
        r.apply(
            (0..RAW_MARK_COUNT_MAX + 10)
                .map(|i| (Key::from(i.to_string()), true))
                .collect(),
        );
        assert_eq!(r.count.load(Ordering::Relaxed), RAW_MARK_COUNT_MAX);
        assert!(r.is_raw(b"0"));
        assert!(!r.is_raw((RAW_MARK_COUNT_MAX + 5).to_string().as_bytes()));
        r.apply(vec![(Key::from("0"), false)]);
        assert!(!r.is_raw(b"0"));
    }
}
