//! Responses: JSON bodies and RFC 9457 problem details (`application/problem+json`) with a
//! stable `type` per kind of error.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use serde::Serialize;

/// The body type of every response.
pub type Body = Full<Bytes>;

/// The base of every problem `type` URI.
pub const PROBLEM_BASE: &str = "https://helios.dev/problems/";

/// A JSON response. The body ends with a newline (so `curl` output ends its line).
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    // Serializing our own response structs cannot fail.
    let mut body = serde_json::to_vec(value).unwrap_or_default();
    body.push(b'\n');
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// An empty response.
pub fn empty(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = status;
    r
}

/// A problem-details response: `slug` makes the stable `type`.
pub fn problem(status: StatusCode, slug: &str, detail: impl Into<String>) -> Response<Body> {
    let body = serde_json::json!({
        "type": format!("{PROBLEM_BASE}{slug}"),
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail.into(),
    });
    let mut r = json(status, &body);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    r
}
