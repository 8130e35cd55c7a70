//! What route handlers share (here and in `kv.rs`, `jobs.rs`, `admin.rs`, `account.rs`):
//! the JSON body parse, percent-decoding, query pairs, the page size parameter, and
//! running blocking work off the reactor.
//!
//! Invariants: bad input is a 400 problem (`malformed-json`, `invalid-field`), never a
//! panic; a blocking task that fails is a 500 problem, logged.

use crate::app::http::{Body, problem};
use helios_atlas::Atlas;
use http::{Response, StatusCode};
use serde::Deserialize;

pub(in crate::gateway) fn parse<T: for<'de> Deserialize<'de>>(
    body: &[u8],
) -> Result<T, Response<Body>> {
    serde_json::from_slice(body).map_err(|e| {
        problem(
            StatusCode::BAD_REQUEST,
            "malformed-json",
            format!("request body: {e}"),
        )
    })
}

/// Runs blocking work (bcrypt, writes that may fsync) off the reactor.
pub(in crate::gateway) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Response<Body>> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        tracing::error!(error = %e, "blocking task failed");
        problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    })
}

/// Commits larger than this (by their `size_hint`) run on the blocking pool.
const INLINE_COMMIT_SIZE_MAX: usize = 256 * 1024;

/// Runs a store call that commits to `atlas` (a KV write, a queue transition) in an
/// `atlas.commit` span, a child of the current one (made only while spans are exported):
/// its length is the commit as the request waits for it, the fsync included.
/// helios-atlas itself knows nothing of spans.
///
/// Where ([`crate::app::store_call`]): on the blocking pool when the commit may wait for
/// an fsync ([`Atlas::writes_may_wait`]) or its `size_hint` (about the bytes it writes: the
/// request body's size) is over [`INLINE_COMMIT_SIZE_MAX`], as encoding and appending it
/// would hold the thread's other connections; otherwise on the runtime thread, as
/// helios-atlasd commits a pipelined run under `everysec` (docs/performance.md, "Commits
/// on the runtime thread"). A panic answers 500.
pub(in crate::gateway) async fn commit<T: Send + 'static>(
    atlas: &Atlas,
    size_hint: usize,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Response<Body>> {
    let span = crate::app::trace::span!("atlas.commit");
    let may_wait = size_hint > INLINE_COMMIT_SIZE_MAX || atlas.writes_may_wait();
    crate::app::store_call(may_wait, move || span.in_scope(f))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "store call failed");
            problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            )
        })
}

pub(in crate::gateway) fn percent_decode(s: &str) -> Option<String> {
    String::from_utf8(percent_decode_bytes(s)?).ok()
}

/// The bytes `s` percent-encodes (any bytes: a `%XX` need not make UTF-8); `None` for a
/// `%` not followed by two hex digits.
pub(in crate::gateway) fn percent_decode_bytes(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            // Two hex digits, nothing else (`from_str_radix` would take a sign: `%+F`).
            let hex = s.get(i + 1..i + 3)?;
            if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

/// The decoded `key=value` pairs of a query string (`+` is a space).
pub(in crate::gateway) fn query_pairs(
    query: &str,
) -> Result<Vec<(String, String)>, Response<Body>> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            percent_decode(&v.replace('+', " "))
                .map(|v| (k.to_owned(), v))
                .ok_or_else(|| {
                    problem(
                        StatusCode::BAD_REQUEST,
                        "invalid-field",
                        format!("{k}: bad percent-encoding"),
                    )
                })
        })
        .collect()
}

/// A page size parameter: 1..=1000.
pub(in crate::gateway) fn page_limit(v: &str) -> Result<usize, Response<Body>> {
    v.parse()
        .ok()
        .filter(|l| (1..=1000).contains(l))
        .ok_or_else(|| problem(StatusCode::BAD_REQUEST, "invalid-field", "limit: 1..=1000"))
}
