//! [`Op`]: the idempotent effects ATLAS logs and applies, and their JSON form.
//!
//! An op is an effect, never a request: `SET k v EX 60` is logged as a set with an absolute
//! expiry time, `INCR` as the resulting set, an expiration as a delete marked `expired`.
//! Applying the same ops to the same state always gives the same state, whatever the clock
//! says, so a replay tomorrow rebuilds exactly what was acknowledged today.
//!
//! JSON form (one object per op, inside a record's `ops` array). `KEY` is `"k":TEXT` for a
//! UTF-8 key, or `"kb":BASE64` for any other (AOF format version 3 on; standard alphabet,
//! padded): keys are binary-safe ([`Key`]).
//! - `{"op":"set",KEY,"v":UTF8}` or `{"op":"set",KEY,"b":BASE64}`, plus `"x":MS`
//!   when the key expires at `MS` (milliseconds since the Unix epoch);
//! - `{"op":"del",KEY}`, plus `"why":"expired"` for expirations;
//! - `{"op":"expire",KEY,"x":MS}` sets an expiry; `{"op":"persist",KEY}` clears it;
//! - `{"op":"setrange",KEY,"o":OFFSET,"v":UTF8}` (or `"b":BASE64`) writes bytes into a
//!   value at a byte offset (Redis's SETRANGE, and SETBIT/BITFIELD as the bytes they
//!   change): the patch is logged, never the whole value, so a one-bit change of a 100 MiB
//!   value costs a record of a few dozen bytes.
//!
//! Values that are valid UTF-8 without control characters (tab, newline and carriage
//! return allowed) are written as JSON strings, so an AOF of text values reads like
//! Redis's; other values are base64 (standard alphabet, padded), which bounds a record's
//! size at about twice its payload.

use crate::key::Key;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};

/// One effect on the keyspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Sets `key` to `value`, replacing any value and expiry.
    Set {
        /// The key.
        key: Key,
        /// The value.
        value: Bytes,
        /// Absolute expiry time, or none.
        expire_at_ms: Option<u64>,
    },
    /// Removes `key` (a no-op if absent).
    Del {
        /// The key.
        key: Key,
        /// Whether this delete is an expiration (logged by active or lazy expiry).
        expired: bool,
    },
    /// Sets (`Some`) or clears (`None`) the expiry of an existing key.
    Expire {
        /// The key.
        key: Key,
        /// Absolute expiry time, or none to persist the key.
        expire_at_ms: Option<u64>,
    },
    /// Writes `bytes` into the value of `key` at byte `offset`, padding a shorter value
    /// with zero bytes up to `offset`; the expiry stays. A missing key is created, with no
    /// expiry (the planner logs the delete of an expired one first, so applying this never
    /// depends on the clock).
    SetRange {
        /// The key.
        key: Key,
        /// Where `bytes` go, in bytes from the value's start.
        offset: u64,
        /// What is written there.
        bytes: Bytes,
        /// The whole value after the write, when the op was planned in this process: the
        /// keyspace takes it as is (the one copy the write costs). Not logged; an op read
        /// back from the AOF has none and is applied to the stored value in place.
        result: PatchedValue,
    },
}

/// The value a [`Op::SetRange`] results in, carried in memory from planning to apply so
/// the write copies the old value once. Ignored by equality and by the JSON form: two
/// range writes are equal when their key, offset and bytes are.
#[derive(Clone, Default)]
pub struct PatchedValue(Option<Bytes>);

impl PatchedValue {
    /// None known: the value is computed from the stored one when applied.
    pub fn unknown() -> Self {
        Self(None)
    }

    pub(crate) fn known(v: Bytes) -> Self {
        Self(Some(v))
    }

    pub(crate) fn get(&self) -> Option<&Bytes> {
        self.0.as_ref()
    }
}

impl std::fmt::Debug for PatchedValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(v) => write!(f, "PatchedValue({} bytes)", v.len()),
            None => f.write_str("PatchedValue(unknown)"),
        }
    }
}

impl PartialEq for PatchedValue {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for PatchedValue {}

/// `old` with `bytes` written at `offset` (zero-padded up to it): in place when `old` is
/// the only reference to its buffer, else in one copy.
pub(crate) fn patch(old: Bytes, offset: u64, bytes: &[u8]) -> Bytes {
    // The planner checked offset + len against VALUE_SIZE_MAX, and a replayed record was
    // written by it: both fit in memory, so in usize.
    let start = usize::try_from(offset).unwrap_or(usize::MAX);
    let end = start.saturating_add(bytes.len());
    let mut m = match old.try_into_mut() {
        Ok(m) => m,
        Err(shared) => {
            let mut m = bytes::BytesMut::with_capacity(shared.len().max(end));
            m.extend_from_slice(&shared);
            m
        }
    };
    if m.len() < end {
        m.resize(end, 0);
    }
    m[start..end].copy_from_slice(bytes);
    m.freeze()
}

impl Op {
    /// The key this op touches.
    pub fn key(&self) -> &Key {
        match self {
            Op::Set { key, .. }
            | Op::Del { key, .. }
            | Op::Expire { key, .. }
            | Op::SetRange { key, .. } => key,
        }
    }
}

/// Appends the key's field: `"k":"text"` for a UTF-8 key, `"kb":"base64"` for any other.
fn write_key_field(out: &mut Vec<u8>, key: &Key) {
    match key.as_str() {
        Some(s) => {
            out.extend_from_slice(br#""k":"#);
            write_json_str(out, s);
        }
        None => {
            out.extend_from_slice(br#""kb":""#);
            out.extend_from_slice(BASE64.encode(key.as_bytes()).as_bytes());
            out.push(b'"');
        }
    }
}

/// Appends `s` as a JSON string (the bytes serde_json writes).
fn write_json_str(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        // Nothing to escape, the usual key.
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        return;
    }
    // Serializing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

impl Op {
    /// Appends the op's JSON form (the same bytes as its `Serialize` impl, without going
    /// through a map serializer: this is the hot path of every write).
    pub fn encode_json(&self, out: &mut Vec<u8>) {
        match self {
            Op::Set {
                key,
                value,
                expire_at_ms,
            } => {
                out.extend_from_slice(br#"{"op":"set","#);
                write_key_field(out, key);
                write_value_field(out, value);
                if let Some(x) = expire_at_ms {
                    out.extend_from_slice(br#","x":"#);
                    helios_core::digits::push_dec(out, *x);
                }
            }
            Op::Del { key, expired } => {
                out.extend_from_slice(br#"{"op":"del","#);
                write_key_field(out, key);
                if *expired {
                    out.extend_from_slice(br#","why":"expired""#);
                }
            }
            Op::Expire {
                key,
                expire_at_ms: Some(x),
            } => {
                out.extend_from_slice(br#"{"op":"expire","#);
                write_key_field(out, key);
                out.extend_from_slice(br#","x":"#);
                helios_core::digits::push_dec(out, *x);
            }
            Op::Expire {
                key,
                expire_at_ms: None,
            } => {
                out.extend_from_slice(br#"{"op":"persist","#);
                write_key_field(out, key);
            }
            Op::SetRange {
                key, offset, bytes, ..
            } => {
                out.extend_from_slice(br#"{"op":"setrange","#);
                write_key_field(out, key);
                out.extend_from_slice(br#","o":"#);
                helios_core::digits::push_dec(out, *offset);
                write_value_field(out, bytes);
            }
        }
        out.push(b'}');
    }
}

impl Serialize for Op {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut m = serializer.serialize_map(None)?;
        match self {
            Op::Set {
                key,
                value,
                expire_at_ms,
            } => {
                m.serialize_entry("op", "set")?;
                serialize_key(&mut m, key)?;
                match text_value(value) {
                    Some(s) => m.serialize_entry("v", s)?,
                    None => m.serialize_entry("b", &BASE64.encode(value))?,
                }
                if let Some(x) = expire_at_ms {
                    m.serialize_entry("x", x)?;
                }
            }
            Op::Del { key, expired } => {
                m.serialize_entry("op", "del")?;
                serialize_key(&mut m, key)?;
                if *expired {
                    m.serialize_entry("why", "expired")?;
                }
            }
            Op::Expire { key, expire_at_ms } => match expire_at_ms {
                Some(x) => {
                    m.serialize_entry("op", "expire")?;
                    serialize_key(&mut m, key)?;
                    m.serialize_entry("x", x)?;
                }
                None => {
                    m.serialize_entry("op", "persist")?;
                    serialize_key(&mut m, key)?;
                }
            },
            Op::SetRange {
                key, offset, bytes, ..
            } => {
                m.serialize_entry("op", "setrange")?;
                serialize_key(&mut m, key)?;
                m.serialize_entry("o", offset)?;
                match text_value(bytes) {
                    Some(s) => m.serialize_entry("v", s)?,
                    None => m.serialize_entry("b", &BASE64.encode(bytes))?,
                }
            }
        }
        m.end()
    }
}

/// Serializes the key's entry: `k` (text) or `kb` (base64), as [`write_key_field`].
fn serialize_key<M: SerializeMap>(m: &mut M, key: &Key) -> Result<(), M::Error> {
    match key.as_str() {
        Some(s) => m.serialize_entry("k", s),
        None => m.serialize_entry("kb", &BASE64.encode(key.as_bytes())),
    }
}

/// The value as text if it is UTF-8 with no control characters but tab, newline and
/// carriage return: then its JSON string is at most twice its size (each byte escapes to
/// at most two), while `\u00XX` escapes could make it six times larger.
fn text_value(value: &[u8]) -> Option<&str> {
    let s = std::str::from_utf8(value).ok()?;
    s.bytes()
        .all(|b| b >= 0x20 || matches!(b, b'\t' | b'\n' | b'\r'))
        .then_some(s)
}

/// Writes a value's field: `,"v":"text"` when the value is text JSON can hold as is, else
/// `,"b":"base64"`.
fn write_value_field(out: &mut Vec<u8>, value: &[u8]) {
    let mark = out.len();
    out.extend_from_slice(br#","v":"#);
    if !write_text_value(out, value) {
        out.truncate(mark);
        out.extend_from_slice(br#","b":""#);
        out.extend_from_slice(BASE64.encode(value).as_bytes());
        out.push(b'"');
    }
}

/// Appends `value` as a JSON string if [`text_value`] would take it (the same bytes
/// serde_json writes), in one pass that escapes as it checks, and returns true; otherwise
/// returns false, having written part of it (the caller truncates). This is the hot path
/// of every logged set.
fn write_text_value(out: &mut Vec<u8>, value: &[u8]) -> bool {
    if std::str::from_utf8(value).is_err() {
        return false;
    }
    // Room for the worst case (every byte escaped to two, plus the quotes), written by
    // index, then cut to size: one bounds-checked store per byte, no call per escape.
    let base = out.len();
    out.resize(base + 2 * value.len() + 2, 0);
    let buf = &mut out[base..];
    buf[0] = b'"';
    let mut j = 1;
    for &b in value {
        match ESCAPES[usize::from(b)] {
            0 => {
                buf[j] = b;
                j += 1;
            }
            NOT_TEXT => return false,
            e => {
                buf[j] = b'\\';
                buf[j + 1] = e;
                j += 2;
            }
        }
    }
    buf[j] = b'"';
    out.truncate(base + j + 1);
    true
}

/// Marks a byte that makes a value not text (a control character other than tab, newline
/// and carriage return).
const NOT_TEXT: u8 = 0xFF;

/// Per byte: 0 (copied as is), the letter after the backslash of its escape, or
/// [`NOT_TEXT`].
const ESCAPES: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = NOT_TEXT;
        i += 1;
    }
    t[b'\t' as usize] = b't';
    t[b'\n' as usize] = b'n';
    t[b'\r' as usize] = b'r';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

/// Upper bound of the encoded size of an op with this key and value: keys are escaped at
/// most six times their size, values at most twice (text) or 4/3 (base64), plus framing.
pub(crate) fn encoded_size_max(key_size: u64, value_size: u64) -> u64 {
    6 * key_size + 2 * value_size + 64
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OpWire {
    op: String,
    #[serde(default)]
    k: Option<String>,
    #[serde(default)]
    kb: Option<String>,
    #[serde(default)]
    v: Option<String>,
    #[serde(default)]
    b: Option<String>,
    #[serde(default)]
    x: Option<u64>,
    #[serde(default)]
    o: Option<u64>,
    #[serde(default)]
    why: Option<String>,
}

impl<'de> Deserialize<'de> for Op {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut w = OpWire::deserialize(d)?;
        let key = match (w.k.take(), w.kb.take()) {
            (Some(k), None) => Key::from(k),
            (None, Some(kb)) => Key::from(
                BASE64
                    .decode(kb.as_bytes())
                    .map_err(|e| D::Error::custom(format!("bad base64 key: {e}")))?,
            ),
            _ => {
                return Err(D::Error::custom(format!(
                    "{} needs exactly one of `k` and `kb`",
                    w.op
                )));
            }
        };
        let payload = |v: Option<String>, b: Option<String>| -> Result<Bytes, D::Error> {
            match (v, b) {
                (Some(v), None) => Ok(Bytes::from(v.into_bytes())),
                (None, Some(b)) => {
                    Ok(Bytes::from(BASE64.decode(b.as_bytes()).map_err(|e| {
                        D::Error::custom(format!("bad base64 value: {e}"))
                    })?))
                }
                _ => Err(D::Error::custom(format!(
                    "{} needs exactly one of `v` and `b`",
                    w.op
                ))),
            }
        };
        if w.o.is_some() && w.op != "setrange" {
            return Err(D::Error::custom(format!("{} takes no `o`", w.op)));
        }
        match w.op.as_str() {
            "setrange" => {
                let Some(offset) = w.o else {
                    return Err(D::Error::custom("setrange needs `o`"));
                };
                if w.x.is_some() || w.why.is_some() {
                    return Err(D::Error::custom("setrange takes no `x` or `why`"));
                }
                let bytes = payload(w.v, w.b)?;
                if offset.saturating_add(bytes.len() as u64) > crate::limits::VALUE_SIZE_MAX {
                    return Err(D::Error::custom(
                        "setrange past the largest value (VALUE_SIZE_MAX)",
                    ));
                }
                Ok(Op::SetRange {
                    key,
                    offset,
                    bytes,
                    result: PatchedValue::unknown(),
                })
            }
            "set" => {
                let value = payload(w.v, w.b)?;
                Ok(Op::Set {
                    key,
                    value,
                    expire_at_ms: w.x,
                })
            }
            "del" => {
                let expired = match w.why.as_deref() {
                    None => false,
                    Some("expired") => true,
                    Some(other) => {
                        return Err(D::Error::custom(format!("unknown del reason {other:?}")));
                    }
                };
                Ok(Op::Del { key, expired })
            }
            "expire" => match w.x {
                Some(x) => Ok(Op::Expire {
                    key,
                    expire_at_ms: Some(x),
                }),
                None => Err(D::Error::custom("expire needs `x`")),
            },
            "persist" => Ok(Op::Expire {
                key,
                expire_at_ms: None,
            }),
            other => Err(D::Error::custom(format!("unknown op {other:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(op: Op, json: &str) {
        assert_eq!(serde_json::to_string(&op).unwrap(), json);
        assert_eq!(serde_json::from_str::<Op>(json).unwrap(), op);
    }

    #[test]
    fn json_forms() {
        check(
            Op::Set {
                key: "k".into(),
                value: Bytes::from_static(b"v\n\"x"),
                expire_at_ms: None,
            },
            r#"{"op":"set","k":"k","v":"v\n\"x"}"#,
        );
        check(
            Op::Set {
                key: "k".into(),
                value: Bytes::from_static(&[0xff, 0]),
                expire_at_ms: Some(5),
            },
            r#"{"op":"set","k":"k","b":"/wA=","x":5}"#,
        );
        check(
            Op::Del {
                key: "k".into(),
                expired: true,
            },
            r#"{"op":"del","k":"k","why":"expired"}"#,
        );
        check(
            Op::Del {
                key: "k".into(),
                expired: false,
            },
            r#"{"op":"del","k":"k"}"#,
        );
        check(
            Op::Expire {
                key: "k".into(),
                expire_at_ms: Some(9),
            },
            r#"{"op":"expire","k":"k","x":9}"#,
        );
        check(
            Op::Expire {
                key: "k".into(),
                expire_at_ms: None,
            },
            r#"{"op":"persist","k":"k"}"#,
        );
    }

    #[test]
    fn keys_that_are_not_utf8_are_base64() {
        check(
            Op::Set {
                key: Key::from(vec![0xff, b'a']),
                value: Bytes::from_static(b"v"),
                expire_at_ms: None,
            },
            r#"{"op":"set","kb":"/2E=","v":"v"}"#,
        );
        check(
            Op::Del {
                key: Key::from(vec![0x80]),
                expired: false,
            },
            r#"{"op":"del","kb":"gA=="}"#,
        );
        // A UTF-8 key stays text, control characters and all.
        check(
            Op::Expire {
                key: Key::from("a\u{1}"),
                expire_at_ms: None,
            },
            r#"{"op":"persist","k":"a\u0001"}"#,
        );
    }

    #[test]
    fn setrange_json_and_patch() {
        check(
            Op::SetRange {
                key: "k".into(),
                offset: 7,
                bytes: Bytes::from_static(b"ab"),
                result: PatchedValue::unknown(),
            },
            r#"{"op":"setrange","k":"k","o":7,"v":"ab"}"#,
        );
        check(
            Op::SetRange {
                key: "k".into(),
                offset: 0,
                bytes: Bytes::from_static(&[0x80]),
                result: PatchedValue::unknown(),
            },
            r#"{"op":"setrange","k":"k","o":0,"b":"gA=="}"#,
        );
        assert_eq!(&patch(Bytes::from_static(b"hello"), 1, b"EY")[..], b"hEYlo");
        assert_eq!(&patch(Bytes::from_static(b"ab"), 4, b"c")[..], b"ab\0\0c");
        assert_eq!(&patch(Bytes::new(), 0, b"")[..], b"");
        // A unique buffer is changed in place.
        let unique = Bytes::from(vec![1u8; 64]);
        let at = unique.as_ptr();
        let patched = patch(unique, 3, &[9]);
        assert_eq!(patched.as_ptr(), at);
        assert_eq!(patched[3], 9);
    }

    #[test]
    fn control_characters_go_to_base64() {
        let op = Op::Set {
            key: "k".into(),
            value: Bytes::from_static(b"a\x01b"),
            expire_at_ms: None,
        };
        let json = serde_json::to_string(&op).unwrap();
        assert!(json.contains(r#""b":"#), "{json}");
        assert_eq!(serde_json::from_str::<Op>(&json).unwrap(), op);
    }

    proptest::proptest! {
        #[test]
        fn hand_encoding_equals_serde(
            key in proptest::prop_oneof![
                proptest::strategy::Strategy::prop_map(".{1,12}", Key::from),
                proptest::strategy::Strategy::prop_map(proptest::collection::vec(proptest::prelude::any::<u8>(), 1..12), Key::from),
            ],
            value in proptest::prop_oneof![
                proptest::collection::vec(proptest::prelude::any::<u8>(), 0..24),
                // Text with the characters that escape, and the control ones that don't
                // make text: the one-pass escaper must agree with serde_json.
                proptest::strategy::Strategy::prop_map("[a-z\"\\\\\t\n\r\u{1}\u{1f}\u{7f}é{}:,]{0,40}|[ -~]{0,80}", String::into_bytes),
            ],
            x in proptest::option::of(proptest::prelude::any::<u64>()),
            kind in 0u8..5,
            offset in 0u64..1_000_000,
            expired in proptest::prelude::any::<bool>(),
        ) {
            let op = match kind {
                0 => Op::Set { key, value: Bytes::from(value), expire_at_ms: x },
                1 => Op::Del { key, expired },
                4 => Op::SetRange { key, offset, bytes: Bytes::from(value), result: PatchedValue::unknown() },
                _ => Op::Expire { key, expire_at_ms: x },
            };
            let mut hand = Vec::new();
            op.encode_json(&mut hand);
            let json = String::from_utf8(hand).unwrap();
            proptest::prop_assert_eq!(&json, &serde_json::to_string(&op).unwrap());
            proptest::prop_assert_eq!(serde_json::from_str::<Op>(&json).unwrap(), op);
        }

        #[test]
        fn any_op_round_trips_within_its_size_bound(
            key in proptest::prop_oneof![
                proptest::strategy::Strategy::prop_map(".{1,20}", Key::from),
                proptest::strategy::Strategy::prop_map(proptest::collection::vec(proptest::prelude::any::<u8>(), 1..20), Key::from),
            ],
            value in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
            x in proptest::option::of(proptest::prelude::any::<u64>()),
        ) {
            let op = Op::Set { key: key.clone(), value: Bytes::from(value.clone()), expire_at_ms: x };
            let json = serde_json::to_vec(&op).unwrap();
            proptest::prop_assert!((json.len() as u64) <= encoded_size_max(key.len() as u64, value.len() as u64) + 20);
            proptest::prop_assert_eq!(serde_json::from_slice::<Op>(&json).unwrap(), op);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let _ = serde_json::from_slice::<Op>(&bytes);
        }
    }

    #[test]
    fn bad_forms_are_errors() {
        for bad in [
            r#"{"op":"nope","k":"k"}"#,
            r#"{"op":"set","k":"k"}"#,
            r#"{"op":"set","k":"k","v":"a","b":"YQ=="}"#,
            r#"{"op":"set","k":"k","b":"!!"}"#,
            r#"{"op":"expire","k":"k"}"#,
            r#"{"op":"del","k":"k","why":"bored"}"#,
            r#"{"op":"setrange","k":"k","v":"a"}"#,
            r#"{"op":"setrange","k":"k","o":1}"#,
            r#"{"op":"setrange","k":"k","o":1,"v":"a","x":3}"#,
            r#"{"op":"set","k":"k","o":1,"v":"a"}"#,
            r#"{"op":"setrange","k":"k","o":18446744073709551615,"v":"a"}"#,
            r#"{"op":"del","k":"k","extra":1}"#,
            r#"{"op":"del"}"#,
            r#"{"op":"del","k":"a","kb":"YQ=="}"#,
            r#"{"op":"del","kb":"!!"}"#,
        ] {
            assert!(serde_json::from_str::<Op>(bad).is_err(), "{bad}");
        }
    }
}
