//! `--control URL`: a standalone proxy follows a gateway's routes and backends through
//! its change feed (`GET /admin/proxy/feed`, Server-Sent Events; see the gateway's
//! `proxy_feed.rs`), as Envoy follows xDS.
//!
//! The follower logs in (`HELIOS_PROXY_TOKEN`, or `HELIOS_PROXY_USERNAME` and
//! `HELIOS_PROXY_PASSWORD` of a user holding `proxy:admin`), reads the stream, keeps a
//! [`Catalog`] (a snapshot, then each change), and after every event puts the catalog's
//! table in service ([`State::replace_routes`]; requests in progress finish on the old
//! one). A catalog that does not build is logged and counted, and the table in service
//! stays. When the stream ends (the token expired, the gateway restarted, the network
//! broke) it logs in again and resumes after the last event it applied
//! (`Last-Event-ID`), waiting 0.2 s, doubling up to 5 s, between failed attempts.
//!
//! Invariant: the follower never holds the routing's lock while it waits on the network.

use super::State;
use bytes::{Bytes, BytesMut};
use helios_proxy::catalog::{Catalog, Change};
use helios_proxy::{BackendSpec, RouteSpec};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

pub use crate::app::client::Credentials;

/// The follower's credentials from the environment: `HELIOS_PROXY_TOKEN`, or
/// `HELIOS_PROXY_USERNAME` and `HELIOS_PROXY_PASSWORD`.
pub fn credentials_from_env(env: &[(String, String)]) -> Result<Credentials, String> {
    Credentials::from_env(env, "HELIOS_PROXY", "--control", "proxy:admin")
}

#[derive(Deserialize)]
struct Snapshot {
    seq: u64,
    routes: Vec<RouteSpec>,
    backends: Vec<BackendSpec>,
}

#[derive(Deserialize)]
struct Changes {
    seq: u64,
    changes: Vec<ChangeLine>,
}

#[derive(Deserialize)]
struct ChangeLine {
    key: String,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    deleted: bool,
}

/// What the follower keeps between events and reconnections.
#[derive(Debug, Default)]
pub(super) struct Follower {
    catalog: Catalog,
    /// The last event applied (resume after it).
    pub(super) last_id: Option<u64>,
}

impl Follower {
    /// Applies one SSE event; returns whether the catalog changed. Errors name what was
    /// wrong with the event.
    pub(super) fn apply(&mut self, kind: &str, data: &str) -> Result<bool, String> {
        match kind {
            "snapshot" => {
                let s: Snapshot =
                    serde_json::from_str(data).map_err(|e| format!("snapshot event: {e}"))?;
                self.catalog = Catalog {
                    routes: s.routes.into_iter().map(|r| (r.id.clone(), r)).collect(),
                    backends: s.backends.into_iter().map(|b| (b.id.clone(), b)).collect(),
                };
                self.last_id = Some(s.seq);
                Ok(true)
            }
            "change" => {
                let c: Changes =
                    serde_json::from_str(data).map_err(|e| format!("change event: {e}"))?;
                for line in &c.changes {
                    let change = match (&line.value, line.deleted) {
                        (_, true) => Change::Del { key: &line.key },
                        (Some(v), false) => Change::Set {
                            key: &line.key,
                            value: v.as_bytes(),
                        },
                        (None, false) => {
                            return Err(format!("change of {}: no value", line.key));
                        }
                    };
                    if let Err(e) = self.catalog.apply(change) {
                        tracing::warn!(error = %e, "a proxy change is not valid; skipped");
                    }
                }
                self.last_id = Some(c.seq);
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

/// Splits complete SSE events off the front of `buf`: (event type, data) each. Comments
/// and fields other than `event`, `data` and `id` are skipped. `scanned` is how much of
/// `buf` earlier calls searched without finding an event's end: a large event arriving
/// in many frames is searched once, not from its start at every frame.
fn take_events(buf: &mut BytesMut, scanned: &mut usize) -> Vec<(String, String)> {
    let mut out = Vec::new();
    loop {
        // An end may straddle the part searched before: back up one byte.
        let from = scanned.saturating_sub(1).min(buf.len());
        let Some(end) = buf[from..]
            .windows(2)
            .position(|w| w == b"\n\n")
            .map(|at| from + at)
        else {
            *scanned = buf.len();
            break;
        };
        *scanned = 0;
        let block = buf.split_to(end + 2);
        let text = String::from_utf8_lossy(&block);
        let mut kind = "message".to_owned();
        let mut data = String::new();
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                kind = v.trim().to_owned();
            } else if let Some(v) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(v.strip_prefix(' ').unwrap_or(v));
            }
        }
        if !data.is_empty() {
            out.push((kind, data));
        }
    }
    out
}

use crate::app::client::{HttpClient, login};

/// One connection to the feed, until the stream ends: whether any event arrived.
async fn follow_once(
    client: &HttpClient,
    base: &str,
    creds: &Credentials,
    follower: &mut Follower,
    state: &Arc<State>,
) -> Result<bool, String> {
    let token = login(client, base, creds).await?;
    let mut req = Request::builder()
        .method(Method::GET)
        .uri(format!("{base}/admin/proxy/feed"))
        .header("authorization", format!("Bearer {token}"))
        .header("accept", "text/event-stream");
    if let Some(id) = follower.last_id {
        req = req.header("last-event-id", id.to_string());
    }
    let req = req
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let resp = client.request(req).await.map_err(|e| e.to_string())?;
    if resp.status() != StatusCode::OK {
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        return Err(format!(
            "feed: {status} {}",
            String::from_utf8_lossy(&body).trim()
        ));
    }
    let mut body = resp.into_body();
    let mut buf = BytesMut::new();
    let mut scanned = 0;
    let mut any = false;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buf.extend_from_slice(&data);
        if buf.len() > 64 << 20 {
            return Err("feed: an event over 64 MiB".to_owned());
        }
        let mut changed = false;
        for (kind, data) in take_events(&mut buf, &mut scanned) {
            changed |= follower.apply(&kind, &data)?;
            any = true;
        }
        if changed {
            state.install_catalog(&follower.catalog, "gateway");
        }
    }
    Ok(any)
}

/// Follows the gateway at `base` (`http://host:port`) until `stop` resolves.
pub(super) async fn follow(
    state: Arc<State>,
    base: String,
    creds: Credentials,
    stop: impl std::future::Future<Output = ()>,
) {
    let client: HttpClient = crate::app::client::http_client(Duration::from_secs(5));
    let base = base.trim_end_matches('/').to_owned();
    let mut follower = Follower::default();
    let work = async {
        let mut backoff = Duration::from_millis(200);
        loop {
            match follow_once(&client, &base, &creds, &mut follower, &state).await {
                Ok(true) => {
                    backoff = Duration::from_millis(200);
                    tracing::info!(seq = follower.last_id, "the gateway's feed ended; resuming");
                }
                Ok(false) => tracing::warn!("the gateway's feed ended with no event"),
                Err(e) => tracing::warn!(error = %e, gateway = %base, "following the gateway"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    };
    tokio::select! {
        () = work => {}
        () = stop => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_split_and_applied_in_order() {
        let mut buf = BytesMut::from(
            &b": keep-alive\n\nevent: snapshot\nid: 4\ndata: {\"seq\":4,\"routes\":[],\"backends\":[{\"id\":\"b\",\"url\":\"http://127.0.0.1:1\"}]}\n\nevent: change\nid: 5\ndata: {\"seq\":5,\"changes\":[{\"key\":\"proxy:route:r\",\"value\":\"{\\\"id\\\":\\\"r\\\",\\\"path_prefix\\\":\\\"/\\\",\\\"backends\\\":[{\\\"backend\\\":\\\"b\\\"}]}\"}]}\n\nevent: change\nid: 6\ndata: {\"seq\":6,\"cha"[..],
        );
        let mut scanned = 0;
        let events = take_events(&mut buf, &mut scanned);
        assert_eq!(events.len(), 2, "{events:?}");
        assert!(
            buf.starts_with(b"event: change\nid: 6"),
            "the partial event waits"
        );
        let mut f = Follower::default();
        for (k, d) in &events {
            assert!(f.apply(k, d).unwrap());
        }
        assert_eq!(f.last_id, Some(5));
        let t = f.catalog.table().unwrap();
        assert_eq!(t.route(None, "/x").unwrap().id, "r");
        buf.extend_from_slice(b"nges\":[{\"key\":\"proxy:route:r\",\"deleted\":true}]}\n\n");
        for (k, d) in take_events(&mut buf, &mut scanned) {
            f.apply(&k, &d).unwrap();
        }
        assert_eq!(f.last_id, Some(6));
        assert!(f.catalog.routes.is_empty());
        assert!(f.apply("change", "{bad").is_err());
        // An event in one-byte frames, its end split between two of them, among others.
        let stream = b"event: a\ndata: 1\n\n: comment\n\nevent: b\ndata: 2\ndata: 3\n\n";
        let (mut buf, mut scanned, mut got) = (BytesMut::new(), 0, Vec::new());
        for b in stream {
            buf.extend_from_slice(&[*b]);
            got.extend(take_events(&mut buf, &mut scanned));
            assert!(scanned <= buf.len());
        }
        assert!(buf.is_empty());
        assert_eq!(
            got,
            [
                ("a".to_owned(), "1".to_owned()),
                ("b".to_owned(), "2\n3".to_owned())
            ]
        );
        let missing = credentials_from_env(&[]).unwrap_err();
        assert!(missing.contains("HELIOS_PROXY_TOKEN"), "{missing}");
    }
}
