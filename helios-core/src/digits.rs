//! Integer text for hot paths (job records, request ids, HTTP headers, RESP) without the
//! `fmt` machinery or a UTF-8 pass, which showed in profiles. Pure functions; ASCII out,
//! bytes in.

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

/// The decimal text of `n` (a `-` first if negative, as `n.to_string()`):
/// `buf[start..]` of the returned pair.
pub fn dec_i64(n: i64) -> ([u8; 20], usize) {
    // |i64::MIN| has 19 digits: the sign always fits in front.
    let (mut buf, mut start) = dec(n.unsigned_abs());
    if n < 0 {
        start -= 1;
        buf[start] = b'-';
    }
    (buf, start)
}

/// Parses `b` as `str::parse::<i64>` does (an optional `+` or `-`, then at least one
/// ASCII digit, in range), without the UTF-8 check.
pub fn parse_i64(b: &[u8]) -> Option<i64> {
    let (negative, digits) = match b.first()? {
        b'-' => (true, &b[1..]),
        b'+' => (false, &b[1..]),
        _ => (false, b),
    };
    if digits.is_empty() {
        return None;
    }
    let mut n: i64 = 0;
    for &c in digits {
        if !c.is_ascii_digit() {
            return None;
        }
        let d = i64::from(c - b'0');
        n = n.checked_mul(10)?;
        n = if negative {
            n.checked_sub(d)?
        } else {
            n.checked_add(d)?
        };
    }
    Some(n)
}

/// Parses the canonical decimal text of an `i64`, as Redis's `string2ll` (INCR, SELECT):
/// only `-` as a sign, no leading zeros, no `-0`, no spaces, in range.
pub fn parse_i64_canonical(b: &[u8]) -> Option<i64> {
    let digits = b.strip_prefix(b"-").unwrap_or(b);
    if b.first() == Some(&b'+') || (digits.first() == Some(&b'0') && b.len() > 1) {
        return None;
    }
    parse_i64(b)
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

    /// `str::parse::<i64>` on the text, if it is UTF-8.
    fn std_parse(b: &[u8]) -> Option<i64> {
        std::str::from_utf8(b).ok()?.parse().ok()
    }

    #[test]
    fn parses_as_std_and_canonically_as_redis() {
        for (text, canonical) in [
            ("0", Some(0)),
            ("-5", Some(-5)),
            ("16", Some(16)),
            ("9223372036854775807", Some(i64::MAX)),
            ("-9223372036854775808", Some(i64::MIN)),
            ("9223372036854775808", None),
            ("-9223372036854775809", None),
            ("+5", None),
            (" 5", None),
            ("1a", None),
            ("05", None),
            ("00000000000000000001", None),
            ("-0", None),
            ("-05", None),
            ("", None),
            ("-", None),
            ("+", None),
            ("1.5", None),
        ] {
            let b = text.as_bytes();
            assert_eq!(parse_i64(b), std_parse(b), "{text:?}");
            assert_eq!(parse_i64_canonical(b), canonical, "{text:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn dec_i64_is_to_string(n in proptest::prelude::any::<i64>()) {
            let (buf, start) = dec_i64(n);
            let want = n.to_string();
            proptest::prop_assert_eq!(&buf[start..], want.as_bytes());
        }

        /// Both parsers agree with `str::parse` (the canonical one on canonical text).
        #[test]
        fn parse_i64_is_std_parse(b in proptest::collection::vec(
            proptest::sample::select(b"0123456789+-\r a".to_vec()), 0..22)) {
            proptest::prop_assert_eq!(parse_i64(&b), std_parse(&b));
            if let Some(n) = parse_i64_canonical(&b) {
                let text = n.to_string();
                proptest::prop_assert_eq!(text.as_bytes(), &b[..]);
            }
        }

        #[test]
        fn canonical_text_round_trips(n in proptest::prelude::any::<i64>()) {
            proptest::prop_assert_eq!(parse_i64_canonical(n.to_string().as_bytes()), Some(n));
        }
    }
}
