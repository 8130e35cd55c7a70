//! The fast path of record decoding: a hand parser for exactly the canonical line that
//! [`super::encode_record`] writes. Replay (recovery at open, log compaction) reads every
//! record ever written, and this is several times quicker than the general JSON path.
//! Strings may hold the escapes the encoder writes (`\"`, `\\`, `\n`, `\r`, `\t`, and
//! `\uXXXX` for other control characters): a job's JSON stored as a value is full of
//! quotes.
//!
//! Invariant: it returns `Some(record)` only for a line the general path
//! ([`super::decode_record_line`]) decodes to the same record (proptests in `aof`), and
//! `None` for anything else (a rarer escape such as a surrogate pair, whitespace, another
//! field order, a bad checksum, ...), which then takes the general path: that one decodes
//! every valid line and names what is wrong with an invalid one.

use super::{Record, checksum};
use crate::key::Key;
use crate::op::Op;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use std::borrow::Cow;

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    /// Consumes `lit` if the input continues with it.
    fn eat(&mut self, lit: &[u8]) -> bool {
        if self.b[self.i..].starts_with(lit) {
            self.i += lit.len();
            true
        } else {
            false
        }
    }

    fn lit(&mut self, lit: &[u8]) -> Option<()> {
        self.eat(lit).then_some(())
    }

    /// A JSON unsigned integer as serde reads one into a u64 (no sign, no leading zero,
    /// no fraction or exponent follows: the caller checks what comes next).
    fn uint(&mut self) -> Option<u64> {
        let start = self.i;
        let mut n: u64 = 0;
        while let Some(&d) = self.b.get(self.i).filter(|d| d.is_ascii_digit()) {
            n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
            self.i += 1;
        }
        let len = self.i - start;
        (len > 0 && (len == 1 || self.b[start] != b'0')).then_some(n)
    }

    /// A JSON string with no escape and no control character, as UTF-8.
    fn str(&mut self) -> Option<&'a str> {
        self.lit(b"\"")?;
        let rest = &self.b[self.i..];
        let end = rest
            .iter()
            .position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
        if rest[end] != b'"' {
            return None;
        }
        let s = std::str::from_utf8(&rest[..end]).ok()?;
        self.i += end + 1;
        Some(s)
    }

    /// A JSON string's bytes (valid UTF-8), escapes decoded: borrowed from the line when
    /// it holds none (the usual key), else decoded (the escapes serde_json writes: `\"`,
    /// `\\`, `\n`, `\r`, `\t`, `\b`, `\f`, `\/`, and `\uXXXX` outside the
    /// surrogates). A surrogate escape, a raw control character or invalid UTF-8 is `None`
    /// (the general path decides).
    fn text(&mut self) -> Option<Cow<'a, [u8]>> {
        self.lit(b"\"")?;
        let mut out: Option<Vec<u8>> = None;
        loop {
            let rest = &self.b[self.i..];
            let n = rest
                .iter()
                .position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
            let run = &rest[..n];
            self.i += n;
            match (self.b[self.i], out.as_mut()) {
                (b'"', None) => {
                    self.i += 1;
                    std::str::from_utf8(run).ok()?;
                    return Some(Cow::Borrowed(run));
                }
                (b'"', Some(o)) => {
                    self.i += 1;
                    o.extend_from_slice(run);
                    break;
                }
                (b'\\', _) => {
                    let o = out.get_or_insert_with(Vec::new);
                    o.extend_from_slice(run);
                    let e = *self.b.get(self.i + 1)?;
                    self.i += 2;
                    let c = match e {
                        b'"' => b'"',
                        b'\\' => b'\\',
                        b'/' => b'/',
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'f' => 0x0c,
                        b'u' => {
                            let hex = self.b.get(self.i..self.i + 4)?;
                            // `from_str_radix` would take a sign: hex digits only.
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return None;
                            }
                            let code =
                                u32::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
                            // Surrogates (pairs or lone) take the general path.
                            let ch = char::from_u32(code)?;
                            self.i += 4;
                            let mut buf = [0u8; 4];
                            o.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                            continue;
                        }
                        _ => return None,
                    };
                    o.push(c);
                }
                _ => return None,
            }
        }
        let out = out?;
        std::str::from_utf8(&out).ok()?;
        Some(Cow::Owned(out))
    }

    /// The key field: `"k":"text"` or `"kb":"base64"`.
    fn key(&mut self) -> Option<Key> {
        if self.eat(b"\"k\":") {
            Some(Key::from(self.text()?.into_owned()))
        } else {
            self.lit(b"\"kb\":")?;
            Some(Key::from(BASE64.decode(self.str()?.as_bytes()).ok()?))
        }
    }

    fn op(&mut self) -> Option<Op> {
        self.lit(b"{\"op\":")?;
        let op = if self.eat(b"\"set\",") {
            let key = self.key()?;
            let value = if self.eat(b",\"v\":") {
                match self.text()? {
                    Cow::Borrowed(b) => Bytes::copy_from_slice(b),
                    Cow::Owned(v) => Bytes::from(v),
                }
            } else {
                self.lit(b",\"b\":")?;
                Bytes::from(BASE64.decode(self.str()?.as_bytes()).ok()?)
            };
            let expire_at_ms = if self.eat(b",\"x\":") {
                Some(self.uint()?)
            } else {
                None
            };
            Op::Set {
                key,
                value,
                expire_at_ms,
            }
        } else if self.eat(b"\"del\",") {
            let key = self.key()?;
            let expired = self.eat(b",\"why\":\"expired\"");
            Op::Del { key, expired }
        } else if self.eat(b"\"expire\",") {
            let key = self.key()?;
            self.lit(b",\"x\":")?;
            Op::Expire {
                key,
                expire_at_ms: Some(self.uint()?),
            }
        } else {
            self.lit(b"\"persist\",")?;
            Op::Expire {
                key: self.key()?,
                expire_at_ms: None,
            }
        };
        self.lit(b"}")?;
        Some(op)
    }
}

/// Decodes `line` (without its newline) if it is a canonical record line with a valid
/// checksum and no escapes; `None` otherwise.
pub(super) fn decode_canonical(line: &[u8]) -> Option<Record> {
    let mut c = Cursor { b: line, i: 0 };
    c.lit(b"{\"seq\":")?;
    let seq = c.uint()?;
    c.lit(b",\"crc\":\"")?;
    let hex = line.get(c.i..c.i + 8)?;
    let mut stored: u32 = 0;
    for &h in hex {
        let d = match h {
            b'0'..=b'9' => h - b'0',
            b'a'..=b'f' => h - b'a' + 10,
            _ => return None,
        };
        stored = stored << 4 | u32::from(d);
    }
    c.i += 8;
    c.lit(b"\",\"ops\":")?;
    let body = line.get(c.i..line.len().checked_sub(1)?)?;
    if line.last() != Some(&b'}') || checksum(seq, body) != stored {
        return None;
    }
    let mut c = Cursor { b: body, i: 0 };
    c.lit(b"[")?;
    let mut ops = Vec::new();
    loop {
        ops.push(c.op()?);
        if !c.eat(b",") {
            break;
        }
    }
    c.lit(b"]")?;
    (c.i == body.len()).then_some(Record { seq, ops })
}
