//! Value buffers: how a copied value is laid out in memory.
//!
//! Owns [`copy_value`]. A value copied with `Bytes::copy_from_slice` is one allocation,
//! and the first clone (every write keeps one in the commit group's overlay and one in
//! the keyspace) adds a second, the shared header. A short value is instead stored with
//! its reference count in ONE allocation (`Bytes::from_owner`): one `malloc` and one
//! `free` per write fewer, and one cache line to touch when it is read back. Invariant:
//! the bytes are the same either way; only the layout differs.

use bytes::Bytes;

/// Values up to this size are stored inline with their reference count.
pub const INLINE_VALUE_SIZE_MAX: usize = 23;

/// A short value inline: its length, then its bytes (24 bytes; with the reference count
/// and drop hook `Bytes::from_owner` adds, a 40-byte allocation).
struct Inline {
    len: u8,
    buf: [u8; INLINE_VALUE_SIZE_MAX],
}

impl AsRef<[u8]> for Inline {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }
}

/// A copy of `b` in a buffer of its own, laid out for a value that is stored and cloned
/// (see the module docs).
pub fn copy_value(b: &[u8]) -> Bytes {
    match u8::try_from(b.len()) {
        // No allocation at all.
        Ok(0) => Bytes::new(),
        Ok(len) if b.len() <= INLINE_VALUE_SIZE_MAX => {
            let mut buf = [0u8; INLINE_VALUE_SIZE_MAX];
            buf[..b.len()].copy_from_slice(b);
            Bytes::from_owner(Inline { len, buf })
        }
        _ => Bytes::copy_from_slice(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_are_equal_at_every_size_and_survive_clones() {
        for n in 0..=INLINE_VALUE_SIZE_MAX + 2 {
            let src: Vec<u8> = (0..n as u8).map(|i| i.wrapping_mul(37)).collect();
            let v = copy_value(&src);
            let c = v.clone();
            drop(v);
            assert_eq!(&c[..], &src[..], "size {n}");
            assert_eq!(c.slice(n / 2..), &src[n / 2..]);
        }
    }
}
