//! The keyspace commands (GET, SET, INCR, EXPIRE, ...): each one is a function over an
//! ATLAS [`Tx`], so a pipeline of them, or a MULTI/EXEC block, runs as one atomic
//! transaction that sees its own writes.
//!
//! Contract of a [`KvFn`]: it checks its arguments and the current values BEFORE it writes
//! anything; a user error (syntax, not an integer, no such key) is written to `out` as the
//! exact Redis error and the function returns `Ok` having written nothing. `Err` is only an
//! ATLAS refusal of a write (memory limit, value too large, store failure): the caller
//! then discards the whole transaction and runs the command alone to report it.
//!
//! Every function receives arguments whose count satisfies its arity in the command table
//! (dispatch checks it first), so indexing within the arity cannot panic; anything past
//! it is looked up with `get`.
//!
//! Keys are binary-safe (ATLAS keys are bytes) but not empty: an empty key gets `-ERR
//! invalid key: ...` and nothing happens. Values are arbitrary bytes.

use super::resp::Out;
use bytes::Bytes;
use helios_atlas::{AtlasError, Expiry, KeyTtl, SetCondition, SetOptions, Tx};
use helios_core::digits::{dec_i64, parse_i64_canonical};

/// A keyspace command: arguments (command name first) in, reply out, writes through `tx`.
pub type KvFn = fn(&mut Tx<'_, '_>, &[Bytes], &mut Out) -> Result<(), AtlasError>;

/// `ERR value is not an integer or out of range`
pub const ERR_NOT_INT: &str = "ERR value is not an integer or out of range";
/// `ERR syntax error`
pub const ERR_SYNTAX: &str = "ERR syntax error";
const ERR_NOT_FLOAT: &str = "ERR value is not a valid float";
const ERR_OVERFLOW: &str = "ERR increment or decrement would overflow";

/// Checks a key argument ([`key_arg`]), or writes the key error and returns early.
macro_rules! key {
    ($arg:expr, $out:expr) => {
        match key_arg(&$arg) {
            Ok(k) => k,
            Err(msg) => {
                $out.error(msg);
                return Ok(());
            }
        }
    };
}

/// Parses an integer argument, or writes `ERR value is not an integer` and returns.
macro_rules! int {
    ($arg:expr, $out:expr) => {
        match parse_i64_canonical(&$arg) {
            Some(n) => n,
            None => {
                $out.error(ERR_NOT_INT);
                return Ok(());
            }
        }
    };
}
pub(super) use {int, key};

/// A value to store, in an allocation of its own. Request arguments are slices of the
/// connection's read buffer: storing one as is would keep that whole buffer alive for as
/// long as the key lives (kilobytes pinned per small value). Short values are laid out
/// inline ([`helios_atlas::copy_value`]).
pub fn stored(arg: &Bytes) -> Bytes {
    helios_atlas::copy_value(arg)
}

/// The key rule: any bytes (keys are binary-safe, as in Redis), but not none: ATLAS keys
/// are 1..=KEY_SIZE_MAX bytes.
pub fn key_arg(b: &[u8]) -> Result<&[u8], &'static str> {
    if b.is_empty() {
        return Err("ERR invalid key: empty keys are not supported");
    }
    Ok(b)
}

fn parse_f64(b: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(b).ok()?;
    if s.is_empty() || s.trim() != s {
        return None;
    }
    let lower = s.to_ascii_lowercase();
    if lower.contains("nan") {
        return None;
    }
    s.parse::<f64>().ok()
}

fn eq(a: &[u8], b: &str) -> bool {
    a.eq_ignore_ascii_case(b.as_bytes())
}

/// An expiry given as a unit and a number, resolved against `now_ms`.
#[derive(Clone, Copy)]
enum ExpArg {
    Ex(i64),
    Px(i64),
    ExAt(i64),
    PxAt(i64),
}

/// The absolute expiry time of an argument, or `None` if invalid (non-positive or
/// overflowing), as Redis's `invalid expire time`.
fn resolve(e: ExpArg, now_ms: u64) -> Option<Expiry> {
    let now = now_ms as i64;
    let at = match e {
        ExpArg::Ex(s) if s > 0 => now.checked_add(s.checked_mul(1000)?)?,
        ExpArg::Px(ms) if ms > 0 => now.checked_add(ms)?,
        ExpArg::ExAt(s) if s > 0 => s.checked_mul(1000)?,
        ExpArg::PxAt(ms) if ms > 0 => ms,
        _ => return None,
    };
    Some(Expiry::AtMs(at as u64))
}

fn invalid_expire(out: &mut Out, cmd: &str) {
    out.error(&format!("ERR invalid expire time in '{cmd}' command"));
}

/// PING [message] (also outside transactions; here so it pipelines with the rest).
pub fn ping(_: &mut Tx<'_, '_>, a: &[Bytes], out: &mut Out) -> Result<(), AtlasError> {
    match a.get(1) {
        None => out.simple("PONG"),
        Some(m) => out.bulk(m),
    }
    Ok(())
}

/// ECHO message
pub fn echo(_: &mut Tx<'_, '_>, a: &[Bytes], out: &mut Out) -> Result<(), AtlasError> {
    out.bulk(&a[1]);
    Ok(())
}

/// TIME: seconds and microseconds of the wall clock.
pub fn time(_: &mut Tx<'_, '_>, _: &[Bytes], out: &mut Out) -> Result<(), AtlasError> {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    out.array(2);
    out.bulk(d.as_secs().to_string().as_bytes());
    out.bulk(d.subsec_micros().to_string().as_bytes());
    Ok(())
}

/// GET key
pub fn get(tx: &mut Tx<'_, '_>, a: &[Bytes], out: &mut Out) -> Result<(), AtlasError> {
    let k = key!(a[1], out);
    out.opt_bulk(tx.get(k).as_deref());
    Ok(())
}

/// SET key value [NX|XX] [GET] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL]
pub fn set(tx: &mut Tx<'_, '_>, a: &[Bytes], out: &mut Out) -> Result<(), AtlasError> {
    let k = key!(a[1], out);
    let mut condition = SetCondition::Always;
    let mut want_old = false;
    let mut exp: Option<ExpArg> = None;
    let mut keep = false;
    let mut i = 3;
    while i < a.len() {
        let o = &a[i];
        let unit: Option<fn(i64) -> ExpArg> = if eq(o, "EX") {
            Some(ExpArg::Ex)
        } else if eq(o, "PX") {
            Some(ExpArg::Px)
        } else if eq(o, "EXAT") {
            Some(ExpArg::ExAt)
        } else if eq(o, "PXAT") {
            Some(ExpArg::PxAt)
        } else {
            None
        };
        if let Some(unit) = unit {
            let Some(n) = a.get(i + 1).filter(|_| exp.is_none() && !keep) else {
                out.error(ERR_SYNTAX);
                return Ok(());
            };
            exp = Some(unit(int!(n, out)));
            i += 2;
            continue;
        }
        // A repeated NX (or XX) is accepted, as in Redis; NX with XX is not.
        if eq(o, "NX") && condition != SetCondition::IfPresent {
            condition = SetCondition::IfAbsent;
        } else if eq(o, "XX") && condition != SetCondition::IfAbsent {
            condition = SetCondition::IfPresent;
        } else if eq(o, "GET") {
            want_old = true;
        } else if eq(o, "KEEPTTL") && exp.is_none() {
            keep = true;
        } else {
            out.error(ERR_SYNTAX);
            return Ok(());
        }
        i += 1;
    }
    let expiry = match exp {
        Some(e) => match resolve(e, tx.now_ms()) {
            Some(x) => x,
            None => {
                invalid_expire(out, "set");
                return Ok(());
            }
        },
        None if keep => Expiry::Keep,
        None => Expiry::Never,
    };
    let old = if want_old { tx.get(k) } else { None };
    let written = tx.set_with(k, stored(&a[2]), SetOptions { condition, expiry })?;
    if want_old {
        out.opt_bulk(old.as_deref());
    } else if written {
        out.ok();
    } else {
        out.null();
    }
    Ok(())
}

/// SETNX key value
pub fn setnx(tx: &mut Tx<'_, '_>, a: &[Bytes], out: &mut Out) -> Result<(), AtlasError> {
    let k = key!(a[1], out);
    let w = tx.set_with(
        k,
        stored(&a[2]),
        SetOptions {
            condition: SetCondition::IfAbsent,
            expiry: Expiry::Never,
        },
    )?;
    out.int(i64::from(w));
    Ok(())
}

fn setex_with(
    tx: &mut Tx<'_, '_>,
    a: &[Bytes],
    out: &mut Out,
    f: fn(i64) -> ExpArg,
    name: &str,
) -> Result<(), AtlasError> {
    let k = key!(a[1], out);
    let n = int!(a[2], out);
    let Some(expiry) = resolve(f(n), tx.now_ms()) else {
        invalid_expire(out, name);
        return Ok(());
    };
    tx.set(k, stored(&a[3]), expiry)?;
    out.ok();
    Ok(())
}

/// SETEX key seconds value
pub fn setex(tx: &mut Tx<'_, '_>, a: &[Bytes], out: &mut Out) -> Result<(), AtlasError> {
    setex_with(tx, a, out, ExpArg::Ex, "setex")
}

/// PSETEX key ms value
pub fn psetex(tx: &mut Tx<'_, '_>, a: &[Bytes], out: &mut Out) -> Result<(), AtlasError> {
    setex_with(tx, a, out, ExpArg::Px, "psetex")
}

/// GETSET key value
pub fn getset(tx: &mut Tx<'_, '_>, a: &[Bytes], out: &mut Out) -> Result<(), AtlasError> {
    let k = key!(a[1], out);
    let old = tx.get(k);
    tx.set(k, stored(&a[2]), Expiry::Never)?;
    out.opt_bulk(old.as_deref());
    Ok(())
}

/// GETDEL key
pub fn getdel(tx: &mut Tx<'_, '_>, a: &[Bytes], out: &mut Out) -> Result<(), AtlasError> {
    let k = key!(a[1], out);
    let old = tx.get(k);
    if old.is_some() {
        tx.delete(k)?;
    }
    out.opt_bulk(old.as_deref());
    Ok(())
}

/// GETEX key [EX s|PX ms|EXAT s|PXAT ms|PERSIST]
pub fn getex(tx: &mut Tx<'_, '_>, a: &[Bytes], out: &mut Out) -> Result<(), AtlasError> {
    let k = key!(a[1], out);
    enum Change {
        None,
        Persist,
        At(ExpArg),
    }
    let change = match &a[2..] {
        [] => Change::None,
        [p] if eq(p, "PERSIST") => Change::Persist,
        // The option word is checked before its number, as Redis does (`GETEX k FOO x`
        // is a syntax error, not "not an integer").
        [o, _] if !["EX", "PX", "EXAT", "PXAT"].iter().any(|w| eq(o, w)) => {
            out.error(ERR_SYNTAX);
            return Ok(());
        }
        [o, n] => {
            let n = int!(n, out);
            if eq(o, "EX") {
                Change::At(ExpArg::Ex(n))
            } else if eq(o, "PX") {
                Change::At(ExpArg::Px(n))
            } else if eq(o, "EXAT") {
                Change::At(ExpArg::ExAt(n))
            } else if eq(o, "PXAT") {
                Change::At(ExpArg::PxAt(n))
            } else {
                out.error(ERR_SYNTAX);
                return Ok(());
            }
        }
        _ => {
            out.error(ERR_SYNTAX);
            return Ok(());
        }
    };
    // Redis looks the key up before it checks the expire time: a missing key is nil.
    if matches!(change, Change::At(_)) && tx.get(k).is_none() {
        out.null();
        return Ok(());
    }
    let expiry = match change {
        Change::At(e) => match resolve(e, tx.now_ms()) {
            Some(x) => Some(x),
            None => {
                invalid_expire(out, "getex");
                return Ok(());
            }
        },
        Change::Persist => Some(Expiry::Never),
        Change::None => None,
    };
    let v = tx.get(k);
    if v.is_some()
        && let Some(x) = expiry
    {
        tx.expire(k, x)?;
    }
    out.opt_bulk(v.as_deref());
    Ok(())
}

/// MGET key [key ...]: a key that is not a valid key reads as missing.
pub fn mget(tx: &mut Tx<'_, '_>, a: &[Bytes], out: &mut Out) -> Result<(), AtlasError> {
    out.array(a.len() - 1);
    for k in &a[1..] {
        match key_arg(k) {
            Ok(k) => out.opt_bulk(tx.get(k).as_deref()),
            Err(_) => out.null(),
        }
    }
    Ok(())
}

fn pairs<'b>(a: &'b [Bytes], out: &mut Out, name: &str) -> Option<Vec<(&'b [u8], &'b Bytes)>> {
    if !(a.len() - 1).is_multiple_of(2) {
        out.error(&format!(
            "ERR wrong number of arguments for '{name}' command"
        ));
        return None;
    }
    let mut v = Vec::with_capacity(a.len() / 2);
    for p in a[1..].chunks_exact(2) {
        match key_arg(&p[0]) {
            Ok(k) => v.push((k, &p[1])),
            Err(e) => {
                out.error(e);
                return None;
            }
        }
    }
    Some(v)
}

/// MSET key value [key value ...]
pub fn mset(tx: &mut Tx<'_, '_>, a: &[Bytes], out: &mut Out) -> Result<(), AtlasError> {
    let Some(kv) = pairs(a, out, "mset") else {
        return Ok(());
    };
    for (k, v) in kv {
        tx.set(k, stored(v), Expiry::Never)?;
    }
    out.ok();
    Ok(())
}

/// MSETNX key value [key value ...]
pub fn msetnx(tx: &mut Tx<'_, '_>, a: &[Bytes], out: &mut Out) -> Result<(), AtlasError> {
    let Some(kv) = pairs(a, out, "msetnx") else {
        return Ok(());
    };
    if kv.iter().any(|(k, _)| tx.exists(k)) {
        out.int(0);
        return Ok(());
    }
    for (k, v) in kv {
        tx.set(k, stored(v), Expiry::Never)?;
    }
    out.int(1);
    Ok(())
}

/// APPEND key value (keeps the TTL)
pub fn append(tx: &mut Tx<'_, '_>, a: &[Bytes], out: &mut Out) -> Result<(), AtlasError> {
    let k = key!(a[1], out);
    let new = match tx.get(k) {
        Some(old) => {
            let mut v = Vec::with_capacity(old.len() + a[2].len());
            v.extend_from_slice(&old);
            v.extend_from_slice(&a[2]);
            Bytes::from(v)
        }
        None => stored(&a[2]),
    };
    let len = new.len();
    tx.set(k, new, Expiry::Keep)?;
    out.int(len as i64);
    Ok(())
}

/// STRLEN key
pub fn strlen(tx: &mut Tx<'_, '_>, a: &[Bytes], out: &mut Out) -> Result<(), AtlasError> {
    let k = key!(a[1], out);
    out.int(tx.get(k).map_or(0, |v| v.len() as i64));
    Ok(())
}

fn incr_with(tx: &mut Tx<'_, '_>, k: &[u8], delta: i64, out: &mut Out) -> Result<(), AtlasError> {
    let cur = match tx.get(k) {
        None => 0,
        Some(v) => match parse_i64_canonical(&v) {
            Some(n) => n,
            None => {
                out.error(ERR_NOT_INT);
                return Ok(());
            }
        },
    };
    let Some(next) = cur.checked_add(delta) else {
        out.error(ERR_OVERFLOW);
        return Ok(());
    };
    // One allocation, inline (`Bytes::from(String)` made a second one when capacity >
    // length, and a clone a third).
    let (digits, start) = dec_i64(next);
    let value = helios_atlas::copy_value(&digits[start..]);
    tx.set(k, value, Expiry::Keep)?;
    out.int(next);
    Ok(())
}

/// INCR key
pub fn incr(tx: &mut Tx<'_, '_>, a: &[Bytes], out: &mut Out) -> Result<(), AtlasError> {
    let k = key!(a[1], out);
    incr_with(tx, k, 1, out)
}

/// DECR key
pub fn decr(tx: &mut Tx<'_, '_>, a: &[Bytes], out: &mut Out) -> Result<(), AtlasError> {
    let k = key!(a[1], out);
    incr_with(tx, k, -1, out)
}

/// INCRBY key delta
pub fn incrby(tx: &mut Tx<'_, '_>, a: &[Bytes], out: &mut Out) -> Result<(), AtlasError> {
    let k = key!(a[1], out);
    let d = int!(a[2], out);
    incr_with(tx, k, d, out)
}

/// DECRBY key delta
pub fn decrby(tx: &mut Tx<'_, '_>, a: &[Bytes], out: &mut Out) -> Result<(), AtlasError> {
    let k = key!(a[1], out);
    let d = int!(a[2], out);
    let Some(d) = d.checked_neg() else {
        out.error("ERR decrement would overflow");
        return Ok(());
    };
    incr_with(tx, k, d, out)
}

/// INCRBYFLOAT key delta (keeps the TTL; stores the shortest exact text)
pub fn incrbyfloat(tx: &mut Tx<'_, '_>, a: &[Bytes], out: &mut Out) -> Result<(), AtlasError> {
    let k = key!(a[1], out);
    let Some(d) = parse_f64(&a[2]) else {
        out.error(ERR_NOT_FLOAT);
        return Ok(());
    };
    let cur = match tx.get(k) {
        None => 0.0,
        Some(v) => match parse_f64(&v) {
            Some(x) => x,
            None => {
                out.error(ERR_NOT_FLOAT);
                return Ok(());
            }
        },
    };
    let next = cur + d;
    if !next.is_finite() {
        out.error("ERR increment would produce NaN or Infinity");
        return Ok(());
    }
    // Exact decimal arithmetic where both numbers are decimals of at most 18 places that
    // fit (what Redis's long double carries in practice); else the f64 sum.
    let text = match (
        decimal_e18(&a[2]),
        tx.get(k).map_or(Some(0), |v| decimal_e18(&v)),
    ) {
        (Some(x), Some(y)) => match x.checked_add(y) {
            Some(sum) => format_e18(sum),
            None => format_incrbyfloat(next),
        },
        _ => format_incrbyfloat(next),
    };
    tx.set(k, Bytes::from(text.clone()), Expiry::Keep)?;
    out.bulk(text.as_bytes());
    Ok(())
}

/// Places kept by [`decimal_e18`]: one more than the 17 Redis prints, to round from.
const E18: i128 = 1_000_000_000_000_000_000;

/// A decimal number (`-12.5`, `5.0e3`, `.5`) as an exact integer count of 10^-18, if it
/// has no more places than that and fits an i128 (|x| < 1.7e20).
fn decimal_e18(b: &[u8]) -> Option<i128> {
    let s = std::str::from_utf8(b).ok()?;
    let (neg, s) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (num, exp) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], s[i + 1..].parse::<i32>().ok()?),
        None => (s, 0),
    };
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.bytes().chain(frac.bytes()).all(|c| c.is_ascii_digit()) {
        return None;
    }
    let digits = format!("{int}{frac}");
    // value = digits * 10^(exp - frac.len()), in units of 10^-18.
    let shift = i64::from(exp) - frac.len() as i64 + 18;
    let digits = digits.trim_start_matches('0');
    let mut m: i128 = if digits.is_empty() {
        0
    } else {
        if digits.len() > 38 {
            return None;
        }
        digits.parse().ok()?
    };
    if shift >= 0 {
        for _ in 0..shift.min(40) {
            m = m.checked_mul(10)?;
        }
        if shift > 40 && m != 0 {
            return None;
        }
    } else {
        for _ in 0..(-shift).min(40) {
            if m % 10 != 0 {
                return None;
            }
            m /= 10;
        }
    }
    Some(if neg { -m } else { m })
}

/// The text of `x` 10^-18 units as Redis's `%.17Lf` (rounded half to even) with trailing
/// zeros trimmed, and never a negative zero.
fn format_e18(x: i128) -> String {
    let neg = x < 0;
    let a = x.unsigned_abs();
    let (mut q, r) = (a / 10, a % 10);
    if r > 5 || (r == 5 && q % 2 == 1) {
        q += 1;
    }
    let scale: u128 = (E18 / 10) as u128;
    let (int, frac) = (q / scale, q % scale);
    let mut t = String::new();
    if neg && q != 0 {
        t.push('-');
    }
    t.push_str(&int.to_string());
    if frac != 0 {
        let f = format!("{frac:017}");
        t.push('.');
        t.push_str(f.trim_end_matches('0'));
    }
    t
}

/// DEL key [key ...] (also UNLINK)
pub fn del(tx: &mut Tx<'_, '_>, a: &[Bytes], out: &mut Out) -> Result<(), AtlasError> {
    let mut n = 0;
    for k in &a[1..] {
        if let Ok(k) = key_arg(k)
            && tx.exists(k)
        {
            tx.delete(k)?;
            n += 1;
        }
    }
    out.int(n);
    Ok(())
}

/// EXISTS key [key ...] (a key named twice counts twice)
pub fn exists(tx: &mut Tx<'_, '_>, a: &[Bytes], out: &mut Out) -> Result<(), AtlasError> {
    let n = a[1..]
        .iter()
        .filter(|k| key_arg(k).is_ok_and(|k| tx.exists(k)))
        .count();
    out.int(n as i64);
    Ok(())
}

/// TYPE key: `string` or `none` (ATLAS holds strings only)
pub fn type_(tx: &mut Tx<'_, '_>, a: &[Bytes], out: &mut Out) -> Result<(), AtlasError> {
    let k = key!(a[1], out);
    out.simple(if tx.exists(k) { "string" } else { "none" });
    Ok(())
}

fn rename_with(
    tx: &mut Tx<'_, '_>,
    a: &[Bytes],
    out: &mut Out,
    nx: bool,
) -> Result<(), AtlasError> {
    let src = key!(a[1], out);
    let dst = key!(a[2], out);
    let Some(v) = tx.get(src) else {
        out.error("ERR no such key");
        return Ok(());
    };
    if nx && tx.exists(dst) {
        out.int(0);
        return Ok(());
    }
    if src != dst {
        let expiry = match tx.ttl(src) {
            KeyTtl::Expires { at_ms, .. } => Expiry::AtMs(at_ms),
            _ => Expiry::Never,
        };
        tx.delete(src)?;
        tx.set(dst, v, expiry)?;
    }
    if nx {
        out.int(1);
    } else {
        out.ok();
    }
    Ok(())
}

/// RENAME src dst (moves the TTL too)
pub fn rename(tx: &mut Tx<'_, '_>, a: &[Bytes], out: &mut Out) -> Result<(), AtlasError> {
    rename_with(tx, a, out, false)
}

/// RENAMENX src dst
pub fn renamenx(tx: &mut Tx<'_, '_>, a: &[Bytes], out: &mut Out) -> Result<(), AtlasError> {
    rename_with(tx, a, out, true)
}

fn expire_with(
    tx: &mut Tx<'_, '_>,
    a: &[Bytes],
    out: &mut Out,
    f: fn(i64) -> ExpArg,
    name: &str,
) -> Result<(), AtlasError> {
    let k = key!(a[1], out);
    let n = int!(a[2], out);
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for o in &a[3..] {
        if eq(o, "NX") {
            nx = true;
        } else if eq(o, "XX") {
            xx = true;
        } else if eq(o, "GT") {
            gt = true;
        } else if eq(o, "LT") {
            lt = true;
        } else {
            out.error(&format!(
                "ERR Unsupported option {}",
                String::from_utf8_lossy(o)
            ));
            return Ok(());
        }
    }
    if nx && (xx || gt || lt) {
        out.error("ERR NX and XX, GT or LT options at the same time are not compatible");
        return Ok(());
    }
    if gt && lt {
        out.error("ERR GT and LT options at the same time are not compatible");
        return Ok(());
    }
    let now = tx.now_ms() as i64;
    // The absolute time in ms; a non-positive relative ttl or a past time deletes the key.
    let at: Option<i64> = match f(n) {
        ExpArg::Ex(s) => s.checked_mul(1000).and_then(|ms| now.checked_add(ms)),
        ExpArg::Px(ms) => now.checked_add(ms),
        ExpArg::ExAt(s) => s.checked_mul(1000),
        ExpArg::PxAt(ms) => Some(ms),
    };
    let Some(at) = at else {
        invalid_expire(out, name);
        return Ok(());
    };
    let current = match tx.ttl(k) {
        KeyTtl::Missing => {
            out.int(0);
            return Ok(());
        }
        KeyTtl::Persistent => None,
        KeyTtl::Expires { at_ms, .. } => Some(at_ms as i64),
    };
    let allowed = match current {
        None => !(xx || gt),
        Some(c) => !nx && (!gt || at > c) && (!lt || at < c),
    };
    if !allowed {
        out.int(0);
        return Ok(());
    }
    if at <= now {
        tx.delete(k)?;
    } else {
        tx.expire(k, Expiry::AtMs(at as u64))?;
    }
    out.int(1);
    Ok(())
}

/// EXPIRE key seconds [NX|XX|GT|LT]
pub fn expire(tx: &mut Tx<'_, '_>, a: &[Bytes], out: &mut Out) -> Result<(), AtlasError> {
    expire_with(tx, a, out, ExpArg::Ex, "expire")
}

/// PEXPIRE key ms [NX|XX|GT|LT]
pub fn pexpire(tx: &mut Tx<'_, '_>, a: &[Bytes], out: &mut Out) -> Result<(), AtlasError> {
    expire_with(tx, a, out, ExpArg::Px, "pexpire")
}

/// EXPIREAT key unix-seconds [NX|XX|GT|LT]
pub fn expireat(tx: &mut Tx<'_, '_>, a: &[Bytes], out: &mut Out) -> Result<(), AtlasError> {
    expire_with(tx, a, out, ExpArg::ExAt, "expireat")
}

/// PEXPIREAT key unix-ms [NX|XX|GT|LT]
pub fn pexpireat(tx: &mut Tx<'_, '_>, a: &[Bytes], out: &mut Out) -> Result<(), AtlasError> {
    expire_with(tx, a, out, ExpArg::PxAt, "pexpireat")
}

fn ttl_with(tx: &mut Tx<'_, '_>, a: &[Bytes], out: &mut Out, kind: u8) -> Result<(), AtlasError> {
    let k = key!(a[1], out);
    out.int(match tx.ttl(k) {
        KeyTtl::Missing => -2,
        KeyTtl::Persistent => -1,
        KeyTtl::Expires {
            at_ms,
            remaining_ms,
        } => match kind {
            b't' => (remaining_ms.saturating_add(500) / 1000).min(i64::MAX as u64) as i64,
            b'p' => remaining_ms.min(i64::MAX as u64) as i64,
            // Rounded to the nearest second, as Redis does.
            b'e' => (at_ms.saturating_add(500) / 1000).min(i64::MAX as u64) as i64,
            _ => at_ms.min(i64::MAX as u64) as i64,
        },
    });
    Ok(())
}

/// TTL key: -2 missing, -1 no expiry, else seconds left (rounded to nearest, as Redis)
pub fn ttl(tx: &mut Tx<'_, '_>, a: &[Bytes], out: &mut Out) -> Result<(), AtlasError> {
    ttl_with(tx, a, out, b't')
}

/// PTTL key
pub fn pttl(tx: &mut Tx<'_, '_>, a: &[Bytes], out: &mut Out) -> Result<(), AtlasError> {
    ttl_with(tx, a, out, b'p')
}

/// The text INCRBYFLOAT stores and replies, as Redis makes it (`%.17Lf` of a long double,
/// trailing zeros trimmed): fixed-point, never an exponent, at most 17 decimals. An f64
/// carries about 15-16 significant digits where Redis's long double carries more, so the
/// value is first rounded to 15 significant digits: `0.1 + 0.2` gives `0.3` as in Redis,
/// not `0.30000000000000004`.
pub fn format_incrbyfloat(v: f64) -> String {
    const DECIMALS_MAX: usize = 17;
    // "d.dddddddddddddde<exp>": 15 significant digits, correctly rounded by std.
    let sci = format!("{:.14e}", v.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i64 = exp.parse().unwrap_or(0);
    let digits: Vec<u8> = mantissa.bytes().filter(u8::is_ascii_digit).collect();
    // Digits before the decimal point.
    let point = 1 + exp;
    let mut int_part: Vec<u8> = Vec::new();
    let mut frac: Vec<u8> = Vec::new();
    if point <= 0 {
        int_part.push(b'0');
        frac.extend(std::iter::repeat_n(b'0', (-point) as usize));
        frac.extend_from_slice(&digits);
    } else if point as usize >= digits.len() {
        int_part.extend_from_slice(&digits);
        int_part.extend(std::iter::repeat_n(b'0', point as usize - digits.len()));
    } else {
        int_part.extend_from_slice(&digits[..point as usize]);
        frac.extend_from_slice(&digits[point as usize..]);
    }
    if frac.len() > DECIMALS_MAX {
        let round_up = frac[DECIMALS_MAX] >= b'5';
        frac.truncate(DECIMALS_MAX);
        if round_up {
            // Carry through the fraction, then the integer part.
            let mut carry = true;
            for d in frac.iter_mut().rev().chain(int_part.iter_mut().rev()) {
                if *d == b'9' {
                    *d = b'0';
                } else {
                    *d += 1;
                    carry = false;
                    break;
                }
            }
            if carry {
                int_part.insert(0, b'1');
            }
        }
    }
    while frac.last() == Some(&b'0') {
        frac.pop();
    }
    let mut out = String::new();
    let zero = int_part.iter().all(|&d| d == b'0') && frac.is_empty();
    if v < 0.0 && !zero {
        out.push('-');
    }
    out.extend(int_part.iter().map(|&d| char::from(d)));
    if !frac.is_empty() {
        out.push('.');
        out.extend(frac.iter().map(|&d| char::from(d)));
    }
    out
}

/// EXPIRETIME key: absolute unix seconds, -1, -2
pub fn expiretime(tx: &mut Tx<'_, '_>, a: &[Bytes], out: &mut Out) -> Result<(), AtlasError> {
    ttl_with(tx, a, out, b'e')
}

/// PEXPIRETIME key
pub fn pexpiretime(tx: &mut Tx<'_, '_>, a: &[Bytes], out: &mut Out) -> Result<(), AtlasError> {
    ttl_with(tx, a, out, b'P')
}

/// PERSIST key
pub fn persist(tx: &mut Tx<'_, '_>, a: &[Bytes], out: &mut Out) -> Result<(), AtlasError> {
    let k = key!(a[1], out);
    let had = matches!(tx.ttl(k), KeyTtl::Expires { .. });
    if had {
        tx.expire(k, Expiry::Never)?;
    }
    out.int(i64::from(had));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::format_incrbyfloat as f;

    #[test]
    fn stored_values_do_not_pin_the_read_buffer() {
        let frame = bytes::Bytes::from(vec![b'x'; 16 * 1024]);
        let arg = frame.slice(100..103);
        let v = super::stored(&arg);
        assert_eq!(v, arg);
        // Its own allocation: dropping the frame and the argument frees the buffer.
        let (lo, hi) = (
            frame.as_ptr() as usize,
            frame.as_ptr() as usize + frame.len(),
        );
        assert!(!(lo..hi).contains(&(v.as_ptr() as usize)));
    }

    #[test]
    fn incrbyfloat_decimals_are_exact_without_negative_zero() {
        use super::{decimal_e18 as d, format_e18 as e};
        let sum = |a: &str, b: &str| e(d(a.as_bytes()).unwrap() + d(b.as_bytes()).unwrap());
        assert_eq!(sum("0.1", "0.2"), "0.3");
        // Redis's "No negative zero": 1/41, then -1/41 (Tcl's shortest texts).
        let first = sum("0", "0.024390243902439025");
        assert_eq!(sum(&first, "-0.024390243902439025"), "0");
        assert_eq!(sum("17179869184", "1.5"), "17179869185.5");
        assert_eq!(sum("1", "-1.1"), "-0.1");
        assert_eq!(sum("10", "5.0e3"), "5010");
        assert_eq!(d(b"1e400"), None);
        assert_eq!(d(b"0.0000000000000000001"), None);
        assert_eq!(d(b"abc"), None);
        assert_eq!(d(b"."), None);
    }

    #[test]
    fn incrbyfloat_text_is_redis_text() {
        assert_eq!(f(0.1 + 0.2), "0.3");
        assert_eq!(f(10.5 + 0.1), "10.6");
        assert_eq!(f(1e-20), "0");
        assert_eq!(f(-1e-20), "0");
        assert_eq!(f(3.0), "3");
        assert_eq!(f(-2.5), "-2.5");
        assert_eq!(f(1e20), "100000000000000000000");
        assert_eq!(f(5.0e3), "5000");
        assert_eq!(f(1.5e-17), "0.00000000000000002");
        assert_eq!(f(0.99999999999999999), "1");
        assert_eq!(f(123.456), "123.456");
    }
}
