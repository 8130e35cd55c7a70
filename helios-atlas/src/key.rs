//! [`Key`]: a key as ATLAS stores it, any 1..=[`crate::limits::KEY_SIZE_MAX`] bytes.
//!
//! Keys are binary-safe, as in Redis and every embedded peer (redb, sled, fjall): the API
//! takes anything that is `AsRef<[u8]>` (`&str`, `String`, `&[u8]`, `Vec<u8>`, `&Key`) and
//! hands back `Key`s, which read as text through [`Key::as_str`] when they are UTF-8 (every
//! key the gateway and the other crates write is). Keys order byte-lexicographically, which
//! for UTF-8 keys is the order of `str`.
//!
//! On disk a UTF-8 key is a JSON string (`"k"`), any other key base64 (`"kb"`, AOF format
//! version 3; `op` module docs); in a snapshot a key is its bytes.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;

/// A key: bytes, usually UTF-8 text. See the module docs.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(Vec<u8>);

impl Key {
    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The key as text, if it is UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// The key's bytes, owned.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    /// The key as a `String`, or the key back if it is not UTF-8.
    pub fn into_string(self) -> Result<String, Key> {
        String::from_utf8(self.0).map_err(|e| Key(e.into_bytes()))
    }
}

impl Deref for Key {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for Key {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Borrow<[u8]> for Key {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

impl From<&str> for Key {
    fn from(s: &str) -> Self {
        Key(s.as_bytes().to_vec())
    }
}

impl From<String> for Key {
    fn from(s: String) -> Self {
        Key(s.into_bytes())
    }
}

impl From<&String> for Key {
    fn from(s: &String) -> Self {
        Key(s.as_bytes().to_vec())
    }
}

impl From<&[u8]> for Key {
    fn from(b: &[u8]) -> Self {
        Key(b.to_vec())
    }
}

impl<const N: usize> From<&[u8; N]> for Key {
    fn from(b: &[u8; N]) -> Self {
        Key(b.to_vec())
    }
}

impl From<Vec<u8>> for Key {
    fn from(b: Vec<u8>) -> Self {
        Key(b)
    }
}

impl From<&Key> for Key {
    fn from(k: &Key) -> Self {
        k.clone()
    }
}

impl PartialEq<str> for Key {
    fn eq(&self, other: &str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl PartialEq<&str> for Key {
    fn eq(&self, other: &&str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl PartialEq<[u8]> for Key {
    fn eq(&self, other: &[u8]) -> bool {
        self.0 == other
    }
}

impl PartialEq<&[u8]> for Key {
    fn eq(&self, other: &&[u8]) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for Key {
    fn eq(&self, other: &String) -> bool {
        self.0 == other.as_bytes()
    }
}

impl PartialEq<Key> for str {
    fn eq(&self, other: &Key) -> bool {
        self.as_bytes() == other.0
    }
}

impl PartialEq<Key> for &str {
    fn eq(&self, other: &Key) -> bool {
        self.as_bytes() == other.0
    }
}

/// Writes `b` with every byte that is not printable ASCII as `\xNN` (and `\` as `\\`),
/// as Redis shows binary keys.
fn write_escaped(f: &mut fmt::Formatter<'_>, b: &[u8]) -> fmt::Result {
    for &c in b {
        match c {
            b'\\' => f.write_str("\\\\")?,
            b'"' => f.write_str("\\\"")?,
            0x20..=0x7e => fmt::Write::write_char(f, char::from(c))?,
            _ => write!(f, "\\x{c:02x}")?,
        }
    }
    Ok(())
}

/// The key as text; a key that is not UTF-8 shows its other bytes as `\xNN`.
impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.as_str() {
            Some(s) => f.write_str(s),
            None => write_escaped(f, &self.0),
        }
    }
}

/// `"text"` for a UTF-8 key (as `str` shows it), `b"\xff..."` for any other.
impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.as_str() {
            Some(s) => fmt::Debug::fmt(s, f),
            None => {
                f.write_str("b\"")?;
                write_escaped(f, &self.0)?;
                f.write_str("\"")
            }
        }
    }
}

/// Bytes in binary formats (a snapshot); in text formats (JSON) a string when the key is
/// UTF-8, else an array of its bytes. Either form reads back as the same key.
impl Serialize for Key {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.as_str() {
            Some(text) if s.is_human_readable() => s.serialize_str(text),
            _ => s.serialize_bytes(&self.0),
        }
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key (a string or bytes)")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(Key::from(v))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Key, E> {
                Ok(Key::from(v))
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Key, E> {
                Ok(Key::from(v))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Key, E> {
                Ok(Key(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Key, A::Error> {
                let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(b) = seq.next_element::<u8>()? {
                    v.push(b);
                }
                Ok(Key(v))
            }
        }
        if d.is_human_readable() {
            d.deserialize_any(V)
        } else {
            d.deserialize_byte_buf(V)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_bytes() {
        let k = Key::from("a:b");
        assert_eq!(k.as_str(), Some("a:b"));
        assert_eq!(k, "a:b");
        assert_eq!(format!("{k} {k:?}"), "a:b \"a:b\"");
        let b = Key::from(&b"a\xff\x00\\"[..]);
        assert_eq!(b.as_str(), None);
        assert_eq!(format!("{b}"), "a\\xff\\x00\\\\");
        assert_eq!(format!("{b:?}"), "b\"a\\xff\\x00\\\\\"");
        assert_eq!(b.clone().into_string(), Err(b.clone()));
        let (a, ff) = (Key::from("a"), Key::from(&b"\xff"[..]));
        assert!(a < ff, "byte order");
    }

    #[test]
    fn serde_forms() {
        let text = Key::from("k");
        let bin = Key::from(vec![0xffu8, 1]);
        assert_eq!(serde_json::to_string(&text).unwrap(), "\"k\"");
        assert_eq!(serde_json::to_string(&bin).unwrap(), "[255,1]");
        for k in [&text, &bin] {
            let json = serde_json::to_string(k).unwrap();
            assert_eq!(&serde_json::from_str::<Key>(&json).unwrap(), k);
            let cfg = bincode::config::standard();
            let enc = bincode::serde::encode_to_vec(k, cfg).unwrap();
            let (dec, _): (Key, usize) = bincode::serde::decode_from_slice(&enc, cfg).unwrap();
            assert_eq!(&dec, k);
        }
        // A key written as a bincode string (snapshot format 1) reads back as the key.
        let cfg = bincode::config::standard();
        let old = bincode::serde::encode_to_vec("héllo", cfg).unwrap();
        let (dec, _): (Key, usize) = bincode::serde::decode_from_slice(&old, cfg).unwrap();
        assert_eq!(dec, "héllo");
    }
}
