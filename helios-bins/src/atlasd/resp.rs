//! RESP framing: the incremental request parser (with limits) and the reply encoder.
//!
//! Owns the wire format, nothing else. A request is either a RESP array of bulk strings
//! (what every client library sends) or an inline command (a line of words, as telnet and
//! redis-cli in some modes send). [`parse_request`] consumes one complete request from the
//! front of the buffer, or leaves the buffer untouched and says [`Parsed::Incomplete`].
//!
//! # Limits (every one is checked before anything is buffered for it)
//! - a bulk string is at most [`Limits::bulk_size_max`] bytes (Redis's
//!   `proto-max-bulk-len`, 512 MiB by default);
//! - a request array has at most [`Limits::array_count_max`] elements;
//! - an inline line is at most [`Limits::inline_size_max`] bytes (64 KiB, like Redis).
//!
//! Past a limit, or on malformed input, the parser returns a [`ProtocolError`] whose
//! `Display` is the exact Redis error text (`ERR Protocol error: ...`); the server sends
//! it and closes that connection only. The parser never panics on any input (proptest).
//!
//! The encoder ([`Out`]) writes replies straight into the connection's output buffer, in
//! RESP2 or RESP3 (`HELLO 3`): nulls are `$-1`/`*-1` vs `_`, maps are flat arrays vs `%`,
//! doubles are bulk strings vs `,`.

use bytes::{BufMut, Bytes, BytesMut};

/// Limits of the request parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest bulk string, bytes.
    pub bulk_size_max: u64,
    /// Most elements in a request array.
    pub array_count_max: u64,
    /// Longest inline request line, bytes.
    pub inline_size_max: usize,
    /// Whether these are the limits for a client that has not authenticated yet (then
    /// the errors say so, as Redis's do).
    pub unauthenticated: bool,
}

impl Limits {
    /// Redis's limits for a client that has not authenticated: at most 10 arguments of
    /// at most 16 KiB, so a stranger cannot make the server buffer much.
    pub const UNAUTHENTICATED: Limits = Limits {
        bulk_size_max: 16 * 1024,
        array_count_max: 10,
        inline_size_max: 16 * 1024,
        unauthenticated: true,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            bulk_size_max: 512 * 1024 * 1024,
            array_count_max: 1024 * 1024,
            inline_size_max: 64 * 1024,
            unauthenticated: false,
        }
    }
}

/// A malformed or over-limit request. `Display` is the Redis error line (without `-`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A bulk length that is not a number or is past the limit.
    #[error("ERR Protocol error: invalid bulk length")]
    BulkLength,
    /// An array length that is not a number or is past the limit.
    #[error("ERR Protocol error: invalid multibulk length")]
    ArrayLength,
    /// An array element that is not a bulk string.
    #[error("ERR Protocol error: expected '$', got '{0}'")]
    ExpectedBulk(char),
    /// An inline line past the limit.
    #[error("ERR Protocol error: too big inline request")]
    InlineTooBig,
    /// An array past the unauthenticated limit.
    #[error("ERR Protocol error: unauthenticated multibulk length")]
    UnauthenticatedArrayLength,
    /// A bulk string past the unauthenticated limit.
    #[error("ERR Protocol error: unauthenticated bulk length")]
    UnauthenticatedBulkLength,
    /// A multibulk header line past the limit.
    #[error("ERR Protocol error: too big mbulk count string")]
    HeaderTooBig,
    /// A quote left open in an inline request.
    #[error("ERR Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
    /// A bulk string not followed by CRLF.
    #[error("ERR Protocol error: expected CRLF after bulk string")]
    MissingCrlf,
}

/// Outcome of [`parse_request`].
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Not enough bytes yet; nothing was consumed.
    Incomplete,
    /// One request's arguments (possibly empty: a blank inline line), consumed.
    Request(Vec<Bytes>),
}

const HEADER_SIZE_MAX: usize = 64;

fn find_crlf(buf: &[u8], from: usize, size_max: usize) -> Result<Option<usize>, ProtocolError> {
    let end = buf.len().min(from + size_max + 2);
    match buf[from.min(buf.len())..end]
        .iter()
        .position(|&b| b == b'\n')
    {
        Some(i) => Ok(Some(from + i)),
        None if buf.len() - from.min(buf.len()) > size_max => Err(ProtocolError::HeaderTooBig),
        None => Ok(None),
    }
}

fn parse_len(line: &[u8]) -> Option<i64> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() > 20 {
        return None;
    }
    // Without a UTF-8 pass: two of these per argument.
    helios_core::digits::parse_i64(line)
}

/// Where the parse of an incomplete request array stopped: the next call goes on from
/// there instead of re-reading every argument already bounded (a request of a million
/// arguments arriving in many reads would otherwise cost a quadratic re-scan). Valid only
/// while the buffer keeps its front, which an [`Parsed::Incomplete`] guarantees.
#[derive(Debug, Default)]
pub struct ParseState {
    // Elements of the array being parsed (0: none in progress).
    count: usize,
    // Bounds of the elements found so far.
    spans: Vec<(usize, usize)>,
    // Offset of the next element's header.
    pos: usize,
}

/// The most argument bounds a [`ParseState`] keeps room for between requests.
const SPANS_KEPT_COUNT_MAX: usize = 1024;

/// Parses one request from the front of `buf` (consuming it), within `limits`.
pub fn parse_request(buf: &mut BytesMut, limits: &Limits) -> Result<Parsed, ProtocolError> {
    parse_request_resume(buf, limits, &mut ParseState::default())
}

/// [`parse_request`], resuming an incomplete array where `state` says the previous call
/// stopped (a connection keeps one `state` across its reads). On a complete request or an
/// error, `state` is reset.
pub fn parse_request_resume(
    buf: &mut BytesMut,
    limits: &Limits,
    state: &mut ParseState,
) -> Result<Parsed, ProtocolError> {
    let r = parse_array(buf, limits, state);
    if !matches!(r, Ok(Parsed::Incomplete)) {
        // Reset, keeping the bounds' buffer (one allocation per connection, not per
        // request) unless a huge request grew it.
        state.count = 0;
        state.pos = 0;
        state.spans.clear();
        if state.spans.capacity() > SPANS_KEPT_COUNT_MAX {
            state.spans = Vec::new();
        }
    }
    r
}

fn parse_array(
    buf: &mut BytesMut,
    limits: &Limits,
    state: &mut ParseState,
) -> Result<Parsed, ProtocolError> {
    let Some(&first) = buf.first() else {
        return Ok(Parsed::Incomplete);
    };
    if first != b'*' {
        return parse_inline(buf, limits);
    }
    if state.count == 0 {
        // Pass 1: find the bounds of every argument without consuming.
        let Some(nl) = find_crlf(buf, 1, HEADER_SIZE_MAX)? else {
            return Ok(Parsed::Incomplete);
        };
        let count = parse_len(&buf[1..nl]).ok_or(ProtocolError::ArrayLength)?;
        if count > limits.array_count_max as i64 {
            return Err(if limits.unauthenticated {
                ProtocolError::UnauthenticatedArrayLength
            } else {
                ProtocolError::ArrayLength
            });
        }
        if count <= 0 {
            let _ = buf.split_to(nl + 1);
            return Ok(Parsed::Request(Vec::new()));
        }
        state.count = count as usize;
        state.pos = nl + 1;
        state.spans.clear();
        // Bounds are not reserved up front past what is present: a client cannot make
        // the server allocate for elements it never sends.
        state.spans.reserve(state.count.min(1024));
    }
    while state.spans.len() < state.count {
        let pos = state.pos;
        let Some(&tag) = buf.get(pos) else {
            return Ok(Parsed::Incomplete);
        };
        if tag != b'$' {
            return Err(ProtocolError::ExpectedBulk(char::from(tag)));
        }
        let Some(nl) = find_crlf(buf, pos + 1, HEADER_SIZE_MAX)? else {
            return Ok(Parsed::Incomplete);
        };
        let len = parse_len(&buf[pos + 1..nl]).ok_or(ProtocolError::BulkLength)?;
        if len < 0 {
            return Err(ProtocolError::BulkLength);
        }
        if len as u64 > limits.bulk_size_max {
            return Err(if limits.unauthenticated {
                ProtocolError::UnauthenticatedBulkLength
            } else {
                ProtocolError::BulkLength
            });
        }
        let start = nl + 1;
        let end = start + len as usize;
        if buf.len() < end + 2 {
            return Ok(Parsed::Incomplete);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err(ProtocolError::MissingCrlf);
        }
        state.spans.push((start, end));
        state.pos = end + 2;
    }
    let frame = buf.split_to(state.pos).freeze();
    Ok(Parsed::Request(
        state
            .spans
            .drain(..)
            .map(|(s, e)| frame.slice(s..e))
            .collect(),
    ))
}

fn parse_inline(buf: &mut BytesMut, limits: &Limits) -> Result<Parsed, ProtocolError> {
    let Some(nl) = buf
        .iter()
        .take(limits.inline_size_max + 2)
        .position(|&b| b == b'\n')
    else {
        if buf.len() > limits.inline_size_max {
            return Err(ProtocolError::InlineTooBig);
        }
        return Ok(Parsed::Incomplete);
    };
    if nl > limits.inline_size_max {
        return Err(ProtocolError::InlineTooBig);
    }
    let line = buf.split_to(nl + 1);
    let line = line.strip_suffix(b"\n").unwrap_or(&line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    split_args(line).map(Parsed::Request)
}

fn hex_digit(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).map(|d| d as u8)
}

/// Splits an inline line into words like Redis's `sdssplitargs`: whitespace separates;
/// `"..."` allows `\n \r \t \b \a \\ \" \xHH`; `'...'` allows `\'`; a closing quote must be
/// followed by whitespace or the end.
pub fn split_args(line: &[u8]) -> Result<Vec<Bytes>, ProtocolError> {
    let mut args = Vec::new();
    let mut i = 0;
    let n = line.len();
    loop {
        while i < n && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= n {
            return Ok(args);
        }
        let mut cur = Vec::new();
        let mut in_dq = false;
        let mut in_sq = false;
        loop {
            if in_dq {
                if i >= n {
                    return Err(ProtocolError::UnbalancedQuotes);
                }
                let c = line[i];
                if c == b'\\'
                    && i + 3 < n
                    && line[i + 1] == b'x'
                    && let (Some(h), Some(l)) = (hex_digit(line[i + 2]), hex_digit(line[i + 3]))
                {
                    cur.push(h * 16 + l);
                    i += 3;
                } else if c == b'\\' && i + 1 < n {
                    i += 1;
                    cur.push(match line[i] {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 8,
                        b'a' => 7,
                        other => other,
                    });
                } else if c == b'"' {
                    if i + 1 < n && !line[i + 1].is_ascii_whitespace() {
                        return Err(ProtocolError::UnbalancedQuotes);
                    }
                    i += 1;
                    break;
                } else {
                    cur.push(c);
                }
                i += 1;
            } else if in_sq {
                if i >= n {
                    return Err(ProtocolError::UnbalancedQuotes);
                }
                let c = line[i];
                if c == b'\\' && i + 1 < n && line[i + 1] == b'\'' {
                    cur.push(b'\'');
                    i += 1;
                } else if c == b'\'' {
                    if i + 1 < n && !line[i + 1].is_ascii_whitespace() {
                        return Err(ProtocolError::UnbalancedQuotes);
                    }
                    i += 1;
                    break;
                } else {
                    cur.push(c);
                }
                i += 1;
            } else {
                if i >= n || line[i].is_ascii_whitespace() {
                    break;
                }
                match line[i] {
                    b'"' => in_dq = true,
                    b'\'' => in_sq = true,
                    c => cur.push(c),
                }
                i += 1;
            }
        }
        args.push(Bytes::from(cur));
    }
}

/// Encodes `args` as a RESP request (an array of bulk strings).
pub fn encode_request(args: &[&[u8]], out: &mut BytesMut) {
    out.put_u8(b'*');
    put_int(out, args.len() as i64);
    for a in args {
        out.put_u8(b'$');
        put_int(out, a.len() as i64);
        out.put_slice(a);
        out.put_slice(b"\r\n");
    }
}

fn put_int(out: &mut BytesMut, n: i64) {
    let (digits, start) = helios_core::digits::dec_i64(n);
    out.put_slice(&digits[start..]);
    out.put_slice(b"\r\n");
}

/// Formats a float like Redis does in replies (shortest round-trip; `inf`, `-inf`, `nan`).
pub fn format_double(d: f64) -> String {
    if d.is_nan() {
        "nan".into()
    } else if d.is_infinite() {
        if d > 0.0 { "inf".into() } else { "-inf".into() }
    } else if d == d.trunc() && d.abs() < 1e17 {
        format!("{}", d as i64)
    } else {
        format!("{d}")
    }
}

/// The reply encoder over a connection's output buffer, in the connection's protocol.
#[derive(Debug)]
pub struct Out {
    /// The bytes to write.
    pub buf: BytesMut,
    /// Whether the connection speaks RESP3.
    pub resp3: bool,
}

impl Out {
    /// An empty RESP2 buffer.
    pub fn new() -> Self {
        Self {
            buf: BytesMut::with_capacity(16 * 1024),
            resp3: false,
        }
    }
    /// `+s`
    pub fn simple(&mut self, s: &str) {
        self.buf.put_u8(b'+');
        self.buf.put_slice(s.as_bytes());
        self.buf.put_slice(b"\r\n");
    }
    /// `+OK`
    pub fn ok(&mut self) {
        self.buf.put_slice(b"+OK\r\n");
    }
    /// `-line`: `line` is the full error text with its code (`ERR ...`, `WRONGTYPE ...`).
    /// CR and LF in it become spaces.
    pub fn error(&mut self, line: &str) {
        self.buf.put_u8(b'-');
        for b in line.bytes() {
            self.buf
                .put_u8(if b == b'\r' || b == b'\n' { b' ' } else { b });
        }
        self.buf.put_slice(b"\r\n");
    }
    /// `:n`
    pub fn int(&mut self, n: i64) {
        self.buf.put_u8(b':');
        put_int(&mut self.buf, n);
    }
    /// `$len\r\nbytes`
    pub fn bulk(&mut self, b: &[u8]) {
        self.buf.put_u8(b'$');
        put_int(&mut self.buf, b.len() as i64);
        self.buf.put_slice(b);
        self.buf.put_slice(b"\r\n");
    }
    /// A bulk string or null.
    pub fn opt_bulk(&mut self, b: Option<&[u8]>) {
        match b {
            Some(b) => self.bulk(b),
            None => self.null(),
        }
    }
    /// The null bulk string (`$-1`, RESP3 `_`).
    pub fn null(&mut self) {
        self.buf
            .put_slice(if self.resp3 { b"_\r\n" } else { b"$-1\r\n" });
    }
    /// The null array (`*-1`, RESP3 `_`).
    pub fn null_array(&mut self) {
        self.buf
            .put_slice(if self.resp3 { b"_\r\n" } else { b"*-1\r\n" });
    }
    /// An array header of `n` elements.
    pub fn array(&mut self, n: usize) {
        self.buf.put_u8(b'*');
        put_int(&mut self.buf, n as i64);
    }
    /// A map header of `n` pairs (RESP2: an array of `2n`).
    pub fn map(&mut self, n: usize) {
        if self.resp3 {
            self.buf.put_u8(b'%');
            put_int(&mut self.buf, n as i64);
        } else {
            self.array(2 * n);
        }
    }
    /// A set header of `n` elements (RESP2: an array).
    pub fn set(&mut self, n: usize) {
        if self.resp3 {
            self.buf.put_u8(b'~');
            put_int(&mut self.buf, n as i64);
        } else {
            self.array(n);
        }
    }
    /// A double (RESP2: its text as a bulk string).
    pub fn double(&mut self, d: f64) {
        let s = format_double(d);
        if self.resp3 {
            self.buf.put_u8(b',');
            self.buf.put_slice(s.as_bytes());
            self.buf.put_slice(b"\r\n");
        } else {
            self.bulk(s.as_bytes());
        }
    }
    /// A verbatim text (INFO): RESP3 `=`, RESP2 a bulk string.
    pub fn verbatim(&mut self, text: &str) {
        if self.resp3 {
            self.buf.put_u8(b'=');
            put_int(&mut self.buf, text.len() as i64 + 4);
            self.buf.put_slice(b"txt:");
            self.buf.put_slice(text.as_bytes());
            self.buf.put_slice(b"\r\n");
        } else {
            self.bulk(text.as_bytes());
        }
    }
}

impl Default for Out {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_all(bytes: &[u8], limits: &Limits) -> Result<Vec<Vec<Bytes>>, ProtocolError> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Parsed::Request(r) = parse_request(&mut buf, limits)? {
            out.push(r);
        }
        Ok(out)
    }

    #[test]
    fn arrays_inline_and_pipelines() {
        let l = Limits::default();
        let got = parse_all(
            b"*2\r\n$3\r\nGET\r\n$1\r\na\r\nPING\r\nset k \"a b\\x41\" 'c\\'d'\n*1\r\n$4\r\nPI",
            &l,
        )
        .unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], vec![Bytes::from("GET"), Bytes::from("a")]);
        assert_eq!(got[1], vec![Bytes::from("PING")]);
        assert_eq!(
            got[2],
            vec![
                Bytes::from("set"),
                Bytes::from("k"),
                Bytes::from("a bA"),
                Bytes::from("c'd")
            ]
        );
    }

    #[test]
    fn incomplete_consumes_nothing() {
        let l = Limits::default();
        let full = b"*2\r\n$3\r\nGET\r\n$5\r\nhello\r\n";
        for cut in 0..full.len() {
            let mut buf = BytesMut::from(&full[..cut]);
            assert_eq!(
                parse_request(&mut buf, &l).unwrap(),
                Parsed::Incomplete,
                "{cut}"
            );
            assert_eq!(buf.len(), cut);
        }
    }

    #[test]
    fn limits_give_redis_errors() {
        let l = Limits {
            bulk_size_max: 10,
            array_count_max: 3,
            inline_size_max: 16,
            unauthenticated: false,
        };
        let e = |b: &[u8]| parse_all(b, &l).unwrap_err().to_string();
        assert_eq!(
            e(b"*1\r\n$11\r\n"),
            "ERR Protocol error: invalid bulk length"
        );
        assert_eq!(
            e(b"*1\r\n$-5\r\n"),
            "ERR Protocol error: invalid bulk length"
        );
        assert_eq!(e(b"*4\r\n"), "ERR Protocol error: invalid multibulk length");
        assert_eq!(e(b"*x\r\n"), "ERR Protocol error: invalid multibulk length");
        assert_eq!(
            e(b"*1\r\n:1\r\n"),
            "ERR Protocol error: expected '$', got ':'"
        );
        assert_eq!(e(&[b'a'; 40]), "ERR Protocol error: too big inline request");
        assert_eq!(
            e(b"get \"a\n"),
            "ERR Protocol error: unbalanced quotes in request"
        );
        assert_eq!(
            e(b"*1\r\n$1\r\nab\r\n"),
            "ERR Protocol error: expected CRLF after bulk string"
        );
    }

    /// `parse_len` agrees with `str::parse::<i64>` on lines of up to 20 bytes (and a
    /// trailing `\r`); the parser itself is helios-core's, proptested there.
    fn len_as_std(line: &[u8]) -> Option<i64> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() || line.len() > 20 {
            return None;
        }
        std::str::from_utf8(line).ok()?.parse().ok()
    }

    #[test]
    fn length_lines_parse_as_i64() {
        for line in [
            &b"0"[..],
            b"16\r",
            b"-1",
            b"+5",
            b"-",
            b"+",
            b"",
            b"\r",
            b"1a",
            b" 1",
            b"9223372036854775807",
            b"9223372036854775808",
            b"-9223372036854775808",
            b"-9223372036854775809",
            b"00000000000000000001",
        ] {
            assert_eq!(parse_len(line), len_as_std(line), "{line:?}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let l = Limits { bulk_size_max: 64, array_count_max: 8, inline_size_max: 64, unauthenticated: false };
            let _ = parse_all(&bytes, &l);
        }

        #[test]
        fn encoded_requests_round_trip(
            reqs in proptest::collection::vec(
                proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..6),
                1..5),
            split in 0usize..400,
        ) {
            let l = Limits::default();
            let mut wire = BytesMut::new();
            for r in &reqs {
                let args: Vec<&[u8]> = r.iter().map(|a| a.as_slice()).collect();
                encode_request(&args, &mut wire);
            }
            // Fed in two pieces, the parser yields exactly the requests, in order.
            let split = split.min(wire.len());
            let mut buf = BytesMut::from(&wire[..split]);
            let mut got = Vec::new();
            while let Parsed::Request(r) = parse_request(&mut buf, &l).unwrap() { got.push(r); }
            buf.extend_from_slice(&wire[split..]);
            while let Parsed::Request(r) = parse_request(&mut buf, &l).unwrap() { got.push(r); }
            let want: Vec<Vec<Bytes>> = reqs.iter()
                .map(|r| r.iter().map(|a| Bytes::from(a.clone())).collect()).collect();
            prop_assert_eq!(got, want);
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn resumed_parse_matches_a_whole_parse(
            reqs in proptest::collection::vec(
                proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..8),
                1..5),
            cuts in proptest::collection::vec(0usize..600, 0..12),
        ) {
            let l = Limits::default();
            let mut wire = BytesMut::new();
            for r in &reqs {
                let args: Vec<&[u8]> = r.iter().map(|a| a.as_slice()).collect();
                encode_request(&args, &mut wire);
            }
            // Fed in many pieces with one resumable state, the parser yields exactly the
            // requests, in order.
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(wire.len())).collect();
            cuts.push(wire.len());
            cuts.sort_unstable();
            let mut buf = BytesMut::new();
            let mut state = ParseState::default();
            let mut got = Vec::new();
            let mut fed = 0;
            for c in cuts {
                buf.extend_from_slice(&wire[fed..c]);
                fed = c;
                while let Parsed::Request(r) = parse_request_resume(&mut buf, &l, &mut state).unwrap() {
                    got.push(r);
                }
            }
            let want: Vec<Vec<Bytes>> = reqs.iter()
                .map(|r| r.iter().map(|a| Bytes::from(a.clone())).collect()).collect();
            prop_assert_eq!(got, want);
            prop_assert!(buf.is_empty());
        }
    }

    #[test]
    fn a_many_argument_request_in_small_reads_is_scanned_once() {
        // 200k arguments fed 64 bytes at a time: with the resumable state each byte is
        // looked at a bounded number of times (without it, every read re-scanned them all).
        let n = 200_000;
        let mut wire = BytesMut::new();
        let args: Vec<Vec<u8>> = (0..n).map(|i| format!("k{i}").into_bytes()).collect();
        let refs: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
        encode_request(&refs, &mut wire);
        let l = Limits::default();
        let mut buf = BytesMut::new();
        let mut state = ParseState::default();
        let mut got = None;
        for chunk in wire.chunks(64) {
            buf.extend_from_slice(chunk);
            if let Parsed::Request(r) = parse_request_resume(&mut buf, &l, &mut state).unwrap() {
                got = Some(r);
            }
        }
        let got = got.unwrap();
        assert_eq!(got.len(), n);
        assert_eq!(&got[n - 1][..], format!("k{}", n - 1).as_bytes());
    }
}
