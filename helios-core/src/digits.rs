//! Integer text for hot paths (job records, request ids, HTTP headers) without the `fmt`
//! machinery, which showed in profiles. Pure functions; ASCII out.

/// The decimal digits of `n`: `buf[start..]` of the returned pair.
pub fn dec(n: u64) -> ([u8; 20], usize) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    (buf, i)
}

/// The lowercase hex digits of `n` without leading zeros: `buf[start..]`.
pub fn hex(n: u64) -> ([u8; 16], usize) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 16];
    for (i, slot) in buf.iter_mut().enumerate() {
        *slot = DIGITS[((n >> (60 - 4 * i)) & 0xF) as usize];
    }
    let significant = (64 - n.leading_zeros()).div_ceil(4).max(1) as usize;
    (buf, 16 - significant)
}

/// Appends `n` in decimal.
pub fn push_dec(out: &mut Vec<u8>, n: u64) {
    let (buf, start) = dec(n);
    out.extend_from_slice(&buf[start..]);
}

/// Appends `n` in decimal.
pub fn push_dec_str(out: &mut String, n: u64) {
    let (buf, start) = dec(n);
    out.extend(buf[start..].iter().map(|&b| char::from(b)));
}

/// Appends `n` in lowercase hex, without leading zeros.
pub fn push_hex_str(out: &mut String, n: u64) {
    let (buf, start) = hex(n);
    out.extend(buf[start..].iter().map(|&b| char::from(b)));
}

/// Appends `n` as exactly 16 lowercase hex digits.
pub fn push_hex16_str(out: &mut String, n: u64) {
    let (buf, _) = hex(n);
    out.extend(buf.iter().map(|&b| char::from(b)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_to_fmt() {
        for n in [
            0u64,
            1,
            9,
            10,
            15,
            16,
            255,
            4096,
            1 << 40,
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut v = Vec::new();
            push_dec(&mut v, n);
            assert_eq!(v, n.to_string().into_bytes());
            let mut s = String::new();
            push_dec_str(&mut s, n);
            assert_eq!(s, n.to_string());
            let mut s = String::new();
            push_hex_str(&mut s, n);
            assert_eq!(s, format!("{n:x}"));
            let mut s = String::new();
            push_hex16_str(&mut s, n);
            assert_eq!(s, format!("{n:016x}"));
        }
    }
}
