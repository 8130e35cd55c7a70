//! `GET /admin/proxy/feed` (permission `proxy:admin`): the proxy's routes and backends
//! as Server-Sent Events over ATLAS's resumable change feed, what a standalone proxy
//! (`helios-proxy --control URL`) follows, as Envoy follows xDS.
//!
//! Events (`text/event-stream`, each with `id:` = the store's sequence number):
//! - `snapshot`: `{"seq":S,"routes":[...],"backends":[...]}`, the whole catalog as of
//!   some point after sequence number `S` (followers then apply every change after `S`;
//!   replaying whole-value changes converges, `helios_proxy::catalog`). Sent first when
//!   the request names no position, and whenever the position asked for is no longer
//!   in the AOF (compacted away): the follower starts over from it.
//! - `change`: `{"seq":N,"changes":[{"key":K,"value":JSON-TEXT}|{"key":K,"deleted":true}]}`,
//!   record `N`'s changes under `proxy:`.
//! - comments (`: keep-alive`) every 15 s, so dead peers and idle middleboxes show.
//!
//! Resume with `Last-Event-ID: N` (or `?from=N+1`): the stream goes on from record
//! `N + 1` with nothing lost or repeated. The stream ends when the caller's token expires
//! (the follower logs in again and resumes: a disabled account's stream does not outlive
//! its token), when the gateway shuts down, or when the client goes away.
//!
//! Invariants: at most `FEEDS_MAX` streams at once (each holds a blocking thread that
//! waits on the feed); a stream's memory is bounded by its channel (16 events) and the
//! feed's own bounds.

// Handlers return `Err(response)` to answer early (see handler.rs).
#![allow(clippy::result_large_err)]

use super::State;
use super::handler::query_pairs;
use crate::app::http::{Body, problem};
use bytes::Bytes;
use helios_atlas::{AtlasError, Op};
use helios_proxy::FeedEvent;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::mpsc;

/// Streams served at once, at most.
pub(super) const FEEDS_MAX: usize = 64;
/// A comment line this often when nothing else was sent.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How often the pump looks at its stop conditions while the feed is quiet.
const POLL: Duration = Duration::from_millis(250);

/// A response whose body is the channel's events (the gateway's handler turns it into a
/// streamed body, `handler::handle`).
#[derive(Clone)]
pub(in crate::gateway) struct Streamed(
    pub(in crate::gateway) Arc<parking_lot::Mutex<Option<mpsc::Receiver<Bytes>>>>,
);

/// Where a stream starts: after the record `Last-Event-ID` names, else `from`, else a
/// snapshot. Bad values are a 400 naming the field.
fn position(headers: &HeaderMap, query: &str) -> Result<Option<u64>, Response<Body>> {
    let bad = |field: &str| {
        problem(
            StatusCode::BAD_REQUEST,
            "invalid-field",
            format!("{field}: a sequence number"),
        )
    };
    if let Some(v) = headers.get("last-event-id") {
        let n: u64 = v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| bad("Last-Event-ID"))?;
        return Ok(Some(n.saturating_add(1)));
    }
    for (k, v) in query_pairs(query)? {
        if k == "from" {
            let n: u64 = v
                .parse()
                .ok()
                .filter(|&n| n >= 1)
                .ok_or_else(|| bad("from"))?;
            return Ok(Some(n));
        }
    }
    Ok(None)
}

/// Serves `GET /admin/proxy/feed`. `expires_ms`: when the caller's token expires.
pub(super) fn handle(
    state: &Arc<State>,
    headers: &HeaderMap,
    query: &str,
    expires_ms: u64,
) -> Result<Response<Body>, Response<Body>> {
    let from = position(headers, query)?;
    let Ok(permit) = state.feeds.clone().try_acquire_owned() else {
        let mut r = problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "too-many-feeds",
            format!("{FEEDS_MAX} feeds are being served; try again later"),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        return Err(r);
    };
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let pump_state = state.clone();
    std::thread::Builder::new()
        .name("proxy-feed".into())
        .spawn(move || {
            let _permit = permit;
            if let Err(e) = pump(&pump_state, from, &tx, expires_ms) {
                tracing::warn!(error = %e, "proxy feed ended");
            }
        })
        .map_err(|e| {
            tracing::error!(error = %e, "no thread for a proxy feed");
            problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "too-many-feeds",
                "no thread for the feed",
            )
        })?;
    let mut r = Response::new(Full::new(Bytes::new()));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.extensions_mut()
        .insert(Streamed(Arc::new(parking_lot::Mutex::new(Some(rx)))));
    Ok(r)
}

/// One SSE event.
fn event(kind: &str, id: u64, data: &serde_json::Value) -> Bytes {
    Bytes::from(format!("event: {kind}\nid: {id}\ndata: {data}\n\n"))
}

/// Feeds `tx` until a stop condition (see the module docs).
fn pump(
    state: &State,
    from: Option<u64>,
    tx: &mpsc::Sender<Bytes>,
    expires_ms: u64,
) -> Result<(), AtlasError> {
    let send = |b: Bytes| tx.blocking_send(b).is_ok();
    let mut follow = state.proxy_store.follow(from)?;
    let mut quiet = Duration::ZERO;
    loop {
        if tx.is_closed()
            || state.feeds_stop.load(Ordering::Acquire)
            || state.clock.now_ms() >= expires_ms
        {
            return Ok(());
        }
        let sent = match follow.next(POLL) {
            Ok(Some(FeedEvent::Snapshot { seq, loaded })) => {
                for e in &loaded.skipped {
                    tracing::warn!(error = %e, "a stored proxy value is not valid; left out of the feed");
                }
                let c = loaded.catalog;
                let data = json!({
                    "seq": seq,
                    "routes": c.routes.values().collect::<Vec<_>>(),
                    "backends": c.backends.values().collect::<Vec<_>>(),
                });
                send(event("snapshot", seq, &data))
            }
            Ok(Some(FeedEvent::Change { seq, ops })) => {
                let changes: Vec<serde_json::Value> = ops
                    .iter()
                    .filter_map(|op| match op {
                        Op::Set { key, value, .. } => Some(json!({
                            "key": key,
                            "value": String::from_utf8_lossy(value),
                        })),
                        Op::Del { key, .. } => Some(json!({"key": key, "deleted": true})),
                        // Proxy keys carry no expiry; an expiry alone changes no spec.
                        Op::Expire { .. } => None,
                        // Proxy specs are written whole (`Catalog`); a range write of
                        // bytes (SETRANGE through atlasd) is no spec change.
                        Op::SetRange { .. } => None,
                    })
                    .collect();
                send(event(
                    "change",
                    seq,
                    &json!({"seq": seq, "changes": changes}),
                ))
            }
            Ok(None) => {
                quiet += POLL;
                if quiet < KEEP_ALIVE {
                    continue;
                }
                send(Bytes::from_static(b": keep-alive\n\n"))
            }
            Err(AtlasError::Closed) => return Ok(()),
            Err(e) => return Err(e),
        };
        if !sent {
            return Ok(());
        }
        quiet = Duration::ZERO;
    }
}
