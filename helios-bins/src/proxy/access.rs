//! The access log: one line per exchange (target `access`), written when the exchange
//! ends (the response body's end, a tunnel's close, or the proxy's own answer), so it
//! holds the bytes sent and the whole duration, as nginx's does. With `log.format: json`
//! each line is a JSON object. Off with `proxy.access_log: false`.
//!
//! What is logged: the request id, the client's address, method, host, path (without the
//! query string, which may carry secrets), status, route, backend, bytes of the response
//! body, time to the backend's response headers and the whole time, in microseconds.

use http::{HeaderValue, Method};
use std::net::IpAddr;
use std::time::Instant;

/// What an exchange's line needs from its request; see the module docs.
#[derive(Debug)]
pub(super) struct Access {
    started: Instant,
    id: HeaderValue,
    client: IpAddr,
    method: Method,
    host: Option<String>,
    path: String,
}

/// How the exchange ended, for its line.
#[derive(Debug, Default)]
pub(super) struct Ended<'a> {
    pub(super) status: u16,
    pub(super) route: Option<&'a str>,
    pub(super) backend: Option<&'a str>,
    pub(super) upstream_us: Option<u64>,
    pub(super) bytes: u64,
}

impl Access {
    pub(super) fn new(
        id: &HeaderValue,
        client: IpAddr,
        method: &Method,
        host: Option<&str>,
        path: &str,
    ) -> Self {
        Access {
            started: Instant::now(),
            id: id.clone(),
            client,
            method: method.clone(),
            host: host.map(str::to_owned),
            path: path.to_owned(),
        }
    }

    /// Writes the line.
    pub(super) fn log(&self, e: Ended<'_>) {
        let micros = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        tracing::info!(
            target: "access",
            request_id = self.id.to_str().unwrap_or("-"),
            client = %self.client,
            method = %self.method,
            host = self.host.as_deref().unwrap_or(""),
            path = %self.path,
            status = e.status,
            route = e.route.unwrap_or(""),
            backend = e.backend.unwrap_or(""),
            bytes = e.bytes,
            upstream_micros = e.upstream_us,
            micros,
        );
    }
}
