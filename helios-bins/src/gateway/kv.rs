//! The KV routes, each acting on one namespace under `kv:` (helios_core::keys, "Under
//! `kv:`"):
//!
//! - `/api/v1/kv[/{key}]`: the caller's own namespace (`kv:u:{userId}:`), by its token's
//!   `sub`; needs `kv:read` / `kv:write`;
//! - `/api/v1/ns/{ns}/kv[/{key}]`: a shared namespace (`kv:ns:{ns}:`); needs
//!   `kv:read:{ns}` / `kv:write:{ns}` (checked by the RBAC step in handler.rs);
//! - `/admin/users/{id}/kv[/{key}]`: any user's namespace, for `admin:*` holders.
//!
//! Invariants: every ATLAS key a route reads or writes is built by
//! [`KvSpace::key`](helios_core::keys::KvSpace::key) from the route's namespace, and every
//! scan runs over the namespace's prefix with a cursor re-prefixed by it, so no request
//! reaches a key outside its namespace: another user's key is simply absent (404, never
//! 403: no existence oracle), and listings and cursors stay inside. Keys the gateway
//! writes are 1..=1024 bytes of UTF-8 without control characters or bidirectional
//! overrides (a 400 names the byte offset). A namespace may also hold other keys
//! (helios-atlasd's keys are binary-safe, and a user's atlasd keys live in the same
//! namespace): any 1..=1024 bytes, percent-encoded in the path, reach them for GET and
//! DELETE; answers name a key that is not UTF-8 as `key_base64`, a cursor at one as
//! `next_cursor_base64` (`cursor_base64`), and give a stored value that is not JSON (one
//! atlasd wrote) as `value_base64` beside a null `value`.
//!
//! [`migrate_layout`] moves the keys of layout 1 (`kv:{key}`, before namespaces) into the
//! shared namespace `legacy` at the gateway's first start on layout 2.

// Errors are finished HTTP responses, built once on the refusal path.
#![allow(clippy::result_large_err)]

use super::State;
use super::handler::{
    commit, page_limit, parse, percent_decode, percent_decode_bytes, query_pairs, store_error,
};
use crate::app::http::{Body, empty, json, problem};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use helios_atlas::{
    Atlas, AtlasError, Expiry, KeyTtl, Precondition, SetCondition, SetOptions, WriteBatch,
};
use helios_core::digits::push_dec_str as push_dec;
use helios_core::keys::{self, KvSpace};
use http::{HeaderValue, Method, Response, StatusCode, header};
use serde::Deserialize;
use std::sync::Arc;

/// The longest user key, in bytes.
pub const KEY_SIZE_MAX: usize = 1024;

/// A namespace a request acts on (owned: built from the token or the path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Space {
    /// A user's own namespace, by user id.
    User(String),
    /// A shared namespace, by name (checked by [`Space::shared`]).
    Shared(String),
}

impl Space {
    /// A shared namespace from a path parameter: 400 naming `ns` unless it is
    /// `[a-z0-9_-]{1,64}`.
    pub(super) fn shared(raw: Option<&str>) -> Result<Space, Response<Body>> {
        let ns = raw.and_then(percent_decode).unwrap_or_default();
        keys::check_namespace(&ns)
            .map_err(|e| problem(StatusCode::BAD_REQUEST, "invalid-field", format!("ns: {e}")))?;
        Ok(Space::Shared(ns))
    }

    fn as_space(&self) -> KvSpace<'_> {
        match self {
            Space::User(id) => KvSpace::User(id),
            Space::Shared(ns) => KvSpace::Shared(ns),
        }
    }

    fn prefix(&self) -> Result<String, Response<Body>> {
        self.as_space().prefix().map_err(internal_key_error)
    }
}

/// A namespace that cannot be spelled (a user id with ':'): never from a valid token.
fn internal_key_error(e: keys::KeyError) -> Response<Body> {
    tracing::error!(error = %e, "kv namespace");
    problem(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal error",
    )
}

/// Why a user key (or a prefix or cursor) is refused, with the byte offset: control
/// characters (C0, DEL, C1) and bidirectional controls, which make a key display as
/// another (CVE-2021-42574) or break logs and terminals.
fn key_text_error(field: &str, key: &str) -> Option<String> {
    key.char_indices().find_map(|(offset, c)| {
        let bad = c.is_control()
            || matches!(
                c,
                '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}'
            );
        bad.then(|| {
            format!(
                "{field}: character U+{:04X} at byte {offset} is not allowed (control characters and bidirectional overrides are refused)",
                u32::from(c)
            )
        })
    })
}

fn check_key_text(field: &str, key: &str) -> Result<(), Response<Body>> {
    match key_text_error(field, key) {
        Some(detail) => Err(problem(StatusCode::BAD_REQUEST, "invalid-field", detail)),
        None => Ok(()),
    }
}

/// The user key from the path (percent-decoded bytes) and its full ATLAS key in `space`.
/// Any 1..=1024 bytes reach a key that is there; a key to be `written` must be text (UTF-8
/// without control characters or bidirectional overrides), as every key the gateway
/// creates.
fn user_key(
    space: &Space,
    raw: Option<String>,
    written: bool,
) -> Result<(Vec<u8>, Vec<u8>), Response<Body>> {
    let key = raw
        .as_deref()
        .and_then(percent_decode_bytes)
        .filter(|k| !k.is_empty() && k.len() <= KEY_SIZE_MAX)
        .ok_or_else(|| {
            problem(
                StatusCode::BAD_REQUEST,
                "invalid-field",
                format!("key: 1..={KEY_SIZE_MAX} bytes (percent-encoded in the path)"),
            )
        })?;
    if written {
        let text = std::str::from_utf8(&key).map_err(|e| {
            problem(
                StatusCode::BAD_REQUEST,
                "invalid-field",
                format!(
                    "key: not UTF-8 at byte {} (the gateway writes text keys; other keys can be read and deleted)",
                    e.valid_up_to()
                ),
            )
        })?;
        check_key_text("key", text)?;
    }
    let full = space
        .as_space()
        .key_bytes(&key)
        .map_err(internal_key_error)?;
    Ok((key, full))
}

/// A user key in an answer: `"key": text`, or `"key_base64"` for one that is not UTF-8.
fn key_field(key: &[u8]) -> (&'static str, serde_json::Value) {
    match std::str::from_utf8(key) {
        Ok(k) => ("key", k.into()),
        Err(_) => ("key_base64", BASE64.encode(key).into()),
    }
}

/// Whether stored bytes are JSON text that can be spliced into an answer as they are:
/// UTF-8 (serde_json skips over strings without checking it) and one JSON value.
fn is_json_text(v: &[u8]) -> bool {
    std::str::from_utf8(v).is_ok() && serde_json::from_slice::<serde::de::IgnoredAny>(v).is_ok()
}

/// A stored value in an answer: `"value"`, with `"value_base64"` beside a null when the
/// bytes are not JSON (a value written through helios-atlasd).
fn value_fields(map: &mut serde_json::Map<String, serde_json::Value>, v: &[u8]) {
    match serde_json::from_slice::<serde_json::Value>(v) {
        Ok(value) => {
            map.insert("value".into(), value);
        }
        Err(_) => {
            map.insert("value".into(), serde_json::Value::Null);
            map.insert("value_base64".into(), BASE64.encode(v).into());
        }
    }
}

/// The ATLAS key of `key` in user `user_id`'s own namespace, for a write carried by a job
/// enqueue (`jobs.rs`): `field` names the key in errors (`kv[2].key`).
pub(super) fn own_key(user_id: &str, field: &str, key: &str) -> Result<String, Response<Body>> {
    if key.is_empty() || key.len() > KEY_SIZE_MAX {
        return Err(problem(
            StatusCode::BAD_REQUEST,
            "invalid-field",
            format!("{field}: 1..={KEY_SIZE_MAX} bytes"),
        ));
    }
    check_key_text(field, key)?;
    Space::User(user_id.to_owned())
        .as_space()
        .key(key)
        .map_err(internal_key_error)
}

/// An entity tag of a stored value: FNV-1a 64 (a content tag, not a security boundary).
pub(super) fn etag(value: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in value {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let mut tag = String::with_capacity(18);
    tag.push('"');
    helios_core::digits::push_hex16_str(&mut tag, h);
    tag.push('"');
    tag
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutBody {
    value: serde_json::Value,
    #[serde(default)]
    ttl_seconds: Option<u64>,
}

fn not_found(key: &[u8]) -> Response<Body> {
    let detail = match std::str::from_utf8(key) {
        Ok(k) => format!("no key {k:?}"),
        Err(_) => format!("no key with base64 {}", BASE64.encode(key)),
    };
    problem(StatusCode::NOT_FOUND, "not-found", detail)
}

/// GET, PUT or DELETE one key of `space`.
pub(super) async fn item(
    state: &Arc<State>,
    parts: &http::request::Parts,
    space: Space,
    raw_key: Option<String>,
    body: &[u8],
) -> Result<Response<Body>, Response<Body>> {
    let (key, full) = user_key(&space, raw_key, parts.method == Method::PUT)?;
    match parts.method {
        Method::GET => {
            let v = state.atlas.get(&full).ok_or_else(|| not_found(&key))?;
            let ttl = match state.atlas.ttl(&full) {
                KeyTtl::Expires { remaining_ms, .. } => Some(remaining_ms.div_ceil(1000)),
                _ => None,
            };
            // The stored bytes are JSON this gateway wrote (checked at PUT): splice them
            // into the answer instead of parsing and re-encoding them. Bytes that are not
            // JSON (written through helios-atlasd) come as `value_base64`.
            let stored_is_json = is_json_text(&v);
            let mut body = Vec::with_capacity(v.len() + key.len() + 48);
            let (field, name) = key_field(&key);
            body.extend_from_slice(b"{\"");
            body.extend_from_slice(field.as_bytes());
            body.extend_from_slice(b"\":");
            // Writing a JSON value into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut body, &name);
            body.extend_from_slice(b",\"value\":");
            if stored_is_json {
                body.extend_from_slice(&v);
            } else {
                body.extend_from_slice(b"null,\"value_base64\":\"");
                body.extend_from_slice(BASE64.encode(&v).as_bytes());
                body.push(b'"');
            }
            body.extend_from_slice(b",\"ttl_seconds\":");
            match ttl {
                Some(t) => {
                    let mut text = String::new();
                    push_dec(&mut text, t);
                    body.extend_from_slice(text.as_bytes());
                }
                None => body.extend_from_slice(b"null"),
            }
            body.extend_from_slice(b"}\n");
            let mut r = Response::new(http_body_util::Full::new(Bytes::from(body)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            if let Ok(v) = HeaderValue::from_str(&etag(&v)) {
                r.headers_mut().insert(header::ETAG, v);
            }
            Ok(r)
        }
        Method::PUT => {
            let b: PutBody = parse(body)?;
            let value = serde_json::to_vec(&b.value).unwrap_or_default();
            let expiry = match b.ttl_seconds {
                Some(0) => {
                    return Err(problem(
                        StatusCode::BAD_REQUEST,
                        "invalid-field",
                        "ttl_seconds: must be positive",
                    ));
                }
                Some(s) => Expiry::InMs(s.saturating_mul(1000)),
                None => Expiry::Never,
            };
            let if_none_match = parts
                .headers
                .get(header::IF_NONE_MATCH)
                .and_then(|v| v.to_str().ok());
            let if_match = parts
                .headers
                .get(header::IF_MATCH)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let existed = state.atlas.exists(&full);
            let atlas = state.atlas.clone();
            let tag = etag(&value);
            let create_only = if_none_match == Some("*");
            let written = commit(
                &state.atlas,
                value.len(),
                move || -> Result<bool, AtlasError> {
                    if create_only {
                        return atlas.set_with(
                            &full,
                            value,
                            SetOptions {
                                condition: SetCondition::IfAbsent,
                                expiry,
                            },
                        );
                    }
                    if let Some(want) = if_match {
                        let Some(current) = atlas.get(&full) else {
                            return Ok(false);
                        };
                        if want != "*" && etag(&current) != want {
                            return Ok(false);
                        }
                        let mut batch = WriteBatch::new();
                        batch
                            .require(full.clone(), Precondition::Equals(current))
                            .set(full, value, expiry);
                        return match atlas.write_batch(batch) {
                            Ok(()) => Ok(true),
                            Err(AtlasError::PreconditionFailed { .. }) => Ok(false),
                            Err(e) => Err(e),
                        };
                    }
                    atlas.set_with(
                        &full,
                        value,
                        SetOptions {
                            condition: SetCondition::Always,
                            expiry,
                        },
                    )
                },
            )
            .await?
            .map_err(store_error)?;
            if !written {
                return Err(problem(
                    StatusCode::PRECONDITION_FAILED,
                    "precondition-failed",
                    "the key's current state does not match If-Match / If-None-Match",
                ));
            }
            let status = if existed && !create_only {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            let (field, name) = key_field(&key);
            let mut r = json(status, &serde_json::json!({ field: name }));
            if let Ok(v) = HeaderValue::from_str(&tag) {
                r.headers_mut().insert(header::ETAG, v);
            }
            Ok(r)
        }
        _ => {
            let atlas = state.atlas.clone();
            let existed = commit(&state.atlas, 0, move || atlas.delete(&full))
                .await?
                .map_err(store_error)?;
            if existed {
                Ok(empty(StatusCode::NO_CONTENT))
            } else {
                Err(not_found(&key))
            }
        }
    }
}

/// One page of the keys of `space` under `prefix` (user keys, without the namespace).
pub(super) fn list(
    state: &State,
    space: &Space,
    query: &str,
) -> Result<Response<Body>, Response<Body>> {
    let mut prefix = String::new();
    let mut limit = 100usize;
    let mut cursor: Option<String> = None;
    let mut cursor_bytes: Option<Vec<u8>> = None;
    for (k, v) in query_pairs(query)? {
        match k.as_str() {
            "prefix" => prefix = v,
            "limit" => limit = page_limit(&v)?,
            "cursor" => cursor = Some(v),
            "cursor_base64" => {
                // A `+` left unencoded in the query reads as a space.
                let c = BASE64
                    .decode(v.replace(' ', "+").as_bytes())
                    .ok()
                    .filter(|c| {
                        !c.is_empty() && c.len() <= helios_atlas::limits::KEY_SIZE_MAX as usize
                    });
                cursor_bytes = Some(c.ok_or_else(|| {
                    problem(
                        StatusCode::BAD_REQUEST,
                        "invalid-field",
                        "cursor_base64 is not the base64 of a key (standard alphabet, padded)",
                    )
                })?);
            }
            other => {
                return Err(problem(
                    StatusCode::BAD_REQUEST,
                    "invalid-field",
                    format!("unknown query parameter {other:?}"),
                ));
            }
        }
    }
    check_key_text("prefix", &prefix)?;
    let ns = space.prefix()?;
    // The cursor is a user key of this namespace: re-prefixed, it cannot point outside.
    let full_cursor = match (cursor, cursor_bytes) {
        (Some(_), Some(_)) => {
            return Err(problem(
                StatusCode::BAD_REQUEST,
                "invalid-field",
                "give cursor or cursor_base64, not both",
            ));
        }
        (Some(c), None) => {
            // Only a position: any key of the namespace a listing handed out (atlasd's
            // keys may hold control characters), re-prefixed so it cannot point outside.
            if c.len() > helios_atlas::limits::KEY_SIZE_MAX as usize {
                return Err(problem(
                    StatusCode::BAD_REQUEST,
                    "invalid-field",
                    "cursor is longer than any key",
                ));
            }
            Some(format!("{ns}{c}").into_bytes())
        }
        (None, Some(c)) => {
            let mut full = ns.clone().into_bytes();
            full.extend_from_slice(&c);
            Some(full)
        }
        (None, None) => None,
    };
    let page = state
        .atlas
        .scan(format!("{ns}{prefix}"), full_cursor.as_deref(), limit)
        .map_err(store_error)?;
    let items: Vec<serde_json::Value> = page
        .entries
        .iter()
        .filter_map(|(k, v)| {
            // A scan of the namespace's prefix yields only its keys (keys.rs invariant).
            let key = k.strip_prefix(ns.as_bytes())?;
            let mut item = serde_json::Map::new();
            let (field, name) = key_field(key);
            item.insert(field.into(), name);
            value_fields(&mut item, v);
            Some(serde_json::Value::Object(item))
        })
        .collect();
    let next = page
        .next_cursor
        .and_then(|c| c.strip_prefix(ns.as_bytes()).map(<[u8]>::to_vec));
    let mut body = serde_json::json!({"items": items, "next_cursor": null});
    if let Some(c) = next {
        match String::from_utf8(c) {
            Ok(c) => body["next_cursor"] = c.into(),
            Err(e) => body["next_cursor_base64"] = BASE64.encode(e.as_bytes()).into(),
        }
    }
    Ok(json(StatusCode::OK, &body))
}

/// What [`migrate_layout`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LayoutReport {
    /// Layout-1 keys moved into the `legacy` namespace by this run.
    pub moved: usize,
    /// Whether the move was one atomic transaction (else staged in chunks).
    pub atomic: bool,
}

/// The most writes [`migrate_layout`] puts in one transaction.
pub const LAYOUT_TX_OPS_MAX: usize = helios_atlas::limits::BATCH_OPS_COUNT_MAX;

/// Staged keys (a move too large for one transaction) wait under `meta:` with the old
/// key hex-encoded (ids of `meta:` may not hold ':').
const STAGING_NAME_PREFIX: &str = "kv_legacy.";

fn hex(key: &str) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(key.len() * 2);
    for b in key.bytes() {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

fn unhex(text: &str) -> Option<String> {
    let bytes: Option<Vec<u8>> = text
        .as_bytes()
        .chunks(2)
        .map(|pair| {
            let s = std::str::from_utf8(pair).ok()?;
            if s.len() != 2 {
                return None;
            }
            u8::from_str_radix(s, 16).ok()
        })
        .collect();
    String::from_utf8(bytes?).ok()
}

/// Every text key under `prefix` with the size of its key and value (layout 1 keys were
/// all text; a key that is not was written since, by helios-atlasd, and is not moved).
fn all_sized(atlas: &Atlas, prefix: &str) -> Result<Vec<(String, usize)>, AtlasError> {
    let mut out = Vec::new();
    let mut cursor: Option<helios_atlas::Key> = None;
    loop {
        let page = atlas.scan(prefix, cursor.as_deref(), 1_000)?;
        out.extend(page.entries.into_iter().filter_map(|(k, v)| {
            let size = k.len() + v.len();
            Some((k.into_string().ok()?, size))
        }));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return Ok(out),
        }
    }
}

/// The most bytes of keys and values [`migrate_layout`] moves in one transaction (its
/// AOF record stays far below `RECORD_SIZE_MAX`).
pub const LAYOUT_TX_BYTES_MAX: usize = 256 * 1024 * 1024;

/// Splits `entries` into runs of at most `per_tx` keys and `bytes_max` bytes (a single
/// larger entry is a run of its own).
fn runs(entries: Vec<(String, usize)>, per_tx: usize, bytes_max: usize) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = Vec::new();
    let mut run = Vec::new();
    let mut bytes = 0usize;
    for (key, size) in entries {
        if !run.is_empty() && (run.len() >= per_tx || bytes.saturating_add(size) > bytes_max) {
            out.push(std::mem::take(&mut run));
            bytes = 0;
        }
        bytes = bytes.saturating_add(size);
        run.push(key);
    }
    if !run.is_empty() {
        out.push(run);
    }
    out
}

/// Moves each `(from, to)` in one transaction, keeping values and absolute expiry times;
/// a key that expired meanwhile is skipped. Returns how many moved.
fn move_keys(
    atlas: &Atlas,
    moves: Vec<(String, String)>,
    marker: bool,
) -> Result<usize, AtlasError> {
    atlas.transact(move |tx| {
        let mut moved = 0;
        for (from, to) in &moves {
            let Some(value) = tx.get(from) else {
                continue;
            };
            let expiry = match tx.ttl(from) {
                KeyTtl::Expires { at_ms, .. } => Expiry::AtMs(at_ms),
                _ => Expiry::Never,
            };
            tx.set(to, value, expiry)?;
            tx.delete(from)?;
            moved += 1;
        }
        if marker {
            let key =
                keys::meta(keys::META_KV_LAYOUT).map_err(|e| AtlasError::InvalidArgument {
                    name: "key",
                    reason: e.to_string(),
                })?;
            tx.set(&key, keys::KV_LAYOUT_VERSION.to_string(), Expiry::Never)?;
        }
        Ok::<_, AtlasError>(moved)
    })
}

fn key_error(e: keys::KeyError) -> AtlasError {
    AtlasError::InvalidArgument {
        name: "key",
        reason: e.to_string(),
    }
}

/// Brings the store to the namespaced layout under `kv:` (layout 2), once, before the
/// gateway serves: on a store without `meta:kv_layout`, every `kv:{key}` was written by
/// layout 1 and is moved to `kv:ns:legacy:{key}` (values and TTLs kept), in ONE atomic
/// transaction together with the marker when it fits ([`LAYOUT_TX_OPS_MAX`]). A larger
/// store is moved in crash-safe steps: old keys to staging records under `meta:`, then the
/// marker, then staging to `legacy`; a crash anywhere resumes at the next start. A marker
/// naming a newer layout is refused (a newer build wrote this directory).
pub fn migrate_layout(atlas: &Atlas) -> Result<LayoutReport, AtlasError> {
    migrate_layout_in_steps(atlas, LAYOUT_TX_OPS_MAX, LAYOUT_TX_BYTES_MAX, usize::MAX)
}

/// [`migrate_layout`] with at most `ops_max` writes and `bytes_max` bytes per
/// transaction, stopping (as a crash would) after `steps_max` staging transactions. For
/// tests.
#[doc(hidden)]
pub fn migrate_layout_in_steps(
    atlas: &Atlas,
    ops_max: usize,
    bytes_max: usize,
    steps_max: usize,
) -> Result<LayoutReport, AtlasError> {
    let marker_key = keys::meta(keys::META_KV_LAYOUT).map_err(key_error)?;
    let legacy = KvSpace::Shared(keys::KV_LEGACY_NAMESPACE);
    let staging_prefix = keys::meta(STAGING_NAME_PREFIX).map_err(key_error)?;
    let per_tx = (ops_max.saturating_sub(1) / 2).max(1);
    let mut report = LayoutReport::default();
    match atlas.get(&marker_key) {
        Some(v) if v.as_ref() == keys::KV_LAYOUT_VERSION.to_string().as_bytes() => {}
        Some(v) => {
            return Err(AtlasError::InvalidArgument {
                name: "meta:kv_layout",
                reason: format!(
                    "layout {:?} is not one this build knows (it writes {}); was the directory written by a newer HELIOS?",
                    String::from_utf8_lossy(&v),
                    keys::KV_LAYOUT_VERSION
                ),
            });
        }
        None => {
            // Layout 1: every key under `kv:` is a legacy key.
            let old = runs(all_sized(atlas, keys::KV_PREFIX)?, per_tx, bytes_max);
            if old.len() <= 1 {
                let old = old.into_iter().flatten();
                let moves = old
                    .into_iter()
                    .map(|k| {
                        let user_key = &k[keys::KV_PREFIX.len()..];
                        legacy.key(user_key).map(|to| (k.clone(), to))
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(key_error)?;
                report.moved = move_keys(atlas, moves, true)?;
                report.atomic = true;
            } else {
                for (steps, chunk) in old.iter().enumerate() {
                    if steps == steps_max {
                        return Ok(report);
                    }
                    let moves = chunk
                        .iter()
                        .map(|k| {
                            let user_key = &k[keys::KV_PREFIX.len()..];
                            (k.clone(), format!("{staging_prefix}{}", hex(user_key)))
                        })
                        .collect();
                    report.moved += move_keys(atlas, moves, false)?;
                }
                move_keys(atlas, Vec::new(), true)?;
            }
        }
    }
    // Staged keys (a chunked move, perhaps cut short by a crash) go to `legacy`.
    let staged = runs(all_sized(atlas, &staging_prefix)?, per_tx, bytes_max);
    for chunk in &staged {
        let moves = chunk
            .iter()
            .map(|k| {
                let user_key = unhex(&k[staging_prefix.len()..]).ok_or_else(|| {
                    AtlasError::InvalidArgument {
                        name: "key",
                        reason: format!("staging record {k:?} does not hold a hex key"),
                    }
                })?;
                legacy
                    .key(&user_key)
                    .map(|to| (k.clone(), to))
                    .map_err(key_error)
            })
            .collect::<Result<Vec<_>, _>>()?;
        move_keys(atlas, moves, false)?;
    }
    if report.moved > 0 {
        tracing::warn!(
            moved = report.moved,
            atomic = report.atomic,
            namespace = keys::KV_LEGACY_NAMESPACE,
            "moved the keys written before per-user namespaces into the shared namespace 'legacy' (readable by admins: GET /api/v1/ns/legacy/kv)"
        );
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use helios_atlas::{FsyncPolicy, Options};

    /// Every key under `prefix`.
    fn all_keys(atlas: &Atlas, prefix: &str) -> Result<Vec<String>, AtlasError> {
        Ok(all_sized(atlas, prefix)?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }

    #[test]
    fn etag_is_quoted_fnv1a_hex() {
        let v = b"{\"a\":1}";
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in v {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        assert_eq!(etag(v), format!("\"{h:016x}\""));
    }

    #[test]
    fn key_text_refuses_controls_and_bidi_naming_the_offset() {
        for (key, offset) in [
            ("a\0b", 1),
            ("ab\r", 2),
            ("\n", 0),
            ("x\u{7f}", 1),
            ("é\u{202E}", 2),
            ("a\u{2066}", 1),
            ("\u{1b}[31m", 0),
        ] {
            let detail = key_text_error("key", key).unwrap();
            assert!(
                detail.contains(&format!("at byte {offset}")),
                "{key:?}: {detail}"
            );
            assert!(check_key_text("key", key).is_err());
        }
        for ok in ["a", "a:b/c d", "ünïcode 😀", "x\u{200B}y"] {
            assert_eq!(key_text_error("key", ok), None, "{ok:?}");
        }
    }

    #[test]
    fn hex_round_trips() {
        for k in ["a", "a:b", "ünï 😀", ""] {
            assert_eq!(unhex(&hex(k)).as_deref(), Some(k));
        }
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex("abc"), None);
    }

    fn open(dir: &std::path::Path) -> Atlas {
        Atlas::open(
            dir,
            Options {
                fsync: FsyncPolicy::No,
                ..Options::default()
            },
        )
        .unwrap()
    }

    /// Layout-1 keys, some with a TTL, plus keys of other families.
    fn fill_layout_1(db: &Atlas, n: usize) {
        for i in 0..n {
            db.set(format!("kv:k{i:03}"), format!("\"v{i}\"")).unwrap();
        }
        db.set_with(
            "kv:ttl",
            "\"t\"",
            SetOptions {
                expiry: Expiry::InMs(3_600_000),
                ..Default::default()
            },
        )
        .unwrap();
        db.set("kv:u:looks:namespaced", "\"old\"").unwrap();
        db.set("auth:user:x", "{}").unwrap();
    }

    fn check_layout_2(db: &Atlas, n: usize) {
        let legacy = |k: &str| format!("kv:ns:legacy:{k}");
        for i in 0..n {
            assert_eq!(
                db.get(legacy(&format!("k{i:03}"))).as_deref(),
                Some(format!("\"v{i}\"").as_bytes())
            );
        }
        assert!(matches!(db.ttl(legacy("ttl")), KeyTtl::Expires { .. }));
        // An old key that looked like a namespace is legacy data too.
        assert_eq!(
            db.get(legacy("u:looks:namespaced")).as_deref(),
            Some(&b"\"old\""[..])
        );
        assert_eq!(db.get("auth:user:x").as_deref(), Some(&b"{}"[..]));
        assert_eq!(db.get("meta:kv_layout").as_deref(), Some(&b"2"[..]));
        // Nothing is left outside the namespaces, and nothing is staged.
        let all = all_keys(db, "kv:").unwrap();
        assert!(
            all.iter().all(|k| k.starts_with("kv:ns:legacy:")),
            "{all:?}"
        );
        assert_eq!(all.len(), n + 2);
        assert!(all_keys(db, "meta:kv_legacy.").unwrap().is_empty());
    }

    #[test]
    fn layout_1_moves_into_legacy_in_one_transaction_once() {
        let tmp = tempfile::tempdir().unwrap();
        let db = open(tmp.path());
        fill_layout_1(&db, 50);
        let seq = db.last_seq();
        let r = migrate_layout(&db).unwrap();
        assert_eq!(
            r,
            LayoutReport {
                moved: 52,
                atomic: true
            }
        );
        // One transaction: one sequence number.
        assert_eq!(db.last_seq(), seq + 1);
        check_layout_2(&db, 50);
        // Namespaced keys written later are not moved again.
        db.set("kv:u:alice:k", "1").unwrap();
        assert_eq!(migrate_layout(&db).unwrap(), LayoutReport::default());
        assert_eq!(db.get("kv:u:alice:k").as_deref(), Some(&b"1"[..]));
        db.delete("kv:u:alice:k").unwrap();
        drop(db);
        let db = open(tmp.path());
        assert_eq!(migrate_layout(&db).unwrap(), LayoutReport::default());
        check_layout_2(&db, 50);
    }

    #[test]
    fn a_fresh_store_gets_the_marker_only() {
        let tmp = tempfile::tempdir().unwrap();
        let db = open(tmp.path());
        assert_eq!(migrate_layout(&db).unwrap().moved, 0);
        assert_eq!(db.get("meta:kv_layout").as_deref(), Some(&b"2"[..]));
    }

    #[test]
    fn a_large_move_is_staged_and_resumes_after_a_crash_at_any_step() {
        for crash_after in 0..6 {
            let tmp = tempfile::tempdir().unwrap();
            let db = open(tmp.path());
            fill_layout_1(&db, 40);
            // 42 keys, 9 writes per transaction: 4 keys a step, 11 steps.
            migrate_layout_in_steps(&db, 9, usize::MAX, crash_after).unwrap();
            assert!(db.get("meta:kv_layout").is_none());
            drop(db);
            let db = open(tmp.path());
            migrate_layout_in_steps(&db, 9, usize::MAX, usize::MAX).unwrap();
            check_layout_2(&db, 40);
        }
    }

    #[test]
    fn transactions_are_bounded_by_bytes_too() {
        // 42 keys of a few bytes each, at most 40 bytes a transaction: staged in many
        // steps, and the result is the same.
        let tmp = tempfile::tempdir().unwrap();
        let db = open(tmp.path());
        fill_layout_1(&db, 40);
        let seq = db.last_seq();
        let r = migrate_layout_in_steps(&db, LAYOUT_TX_OPS_MAX, 40, usize::MAX).unwrap();
        assert!(!r.atomic);
        assert!(db.last_seq() > seq + 10, "{} -> {}", seq, db.last_seq());
        check_layout_2(&db, 40);
        assert_eq!(
            runs(
                vec![("a".into(), 5), ("b".into(), 50), ("c".into(), 5)],
                10,
                40
            ),
            [
                vec!["a".to_owned()],
                vec!["b".to_owned()],
                vec!["c".to_owned()]
            ]
        );
    }

    #[test]
    fn a_newer_layout_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let db = open(tmp.path());
        db.set("meta:kv_layout", "3").unwrap();
        let e = migrate_layout(&db).unwrap_err().to_string();
        assert!(e.contains("newer"), "{e}");
    }
}
