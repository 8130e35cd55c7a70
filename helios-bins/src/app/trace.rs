//! W3C trace context across the servers: read from a request's headers, written into
//! an outgoing request's, and tied to `tracing` spans. With the `otel` feature and an
//! exporting [`super::telemetry::Telemetry`], a span takes an incoming `traceparent` as
//! its parent and an outgoing request carries the span's own context; otherwise the
//! incoming context is passed on as it came (so a trace that started upstream still
//! continues downstream when HELIOS exports nothing), and the spans of [`span!`] are not
//! made at all (no cost, no change to the log lines).

use helios_core::TraceContext;
use http::{HeaderMap, HeaderValue};
use std::sync::atomic::{AtomicBool, Ordering};

static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported (an `otel` build whose telemetry started).
pub fn exporting() -> bool {
    cfg!(feature = "otel") && EXPORTING.load(Ordering::Relaxed)
}

#[cfg_attr(not(feature = "otel"), allow(dead_code))]
pub(crate) fn set_exporting(on: bool) {
    EXPORTING.store(on, Ordering::Relaxed);
}

/// An INFO span, made only while spans are exported ([`exporting`]); else
/// `Span::none()`.
macro_rules! span {
    ($($t:tt)*) => {
        if $crate::app::trace::exporting() {
            tracing::info_span!($($t)*)
        } else {
            tracing::Span::none()
        }
    };
}
pub(crate) use span;

/// The trace context `headers` carry (`traceparent`, and `tracestate` if valid).
pub fn from_headers(headers: &HeaderMap) -> Option<TraceContext> {
    let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    TraceContext::from_headers(get("traceparent"), get("tracestate"))
}

/// Sets `traceparent` (and `tracestate`, or removes a stale one) in `headers`.
pub fn inject(headers: &mut HeaderMap, cx: &TraceContext) {
    if let Ok(v) = HeaderValue::from_str(&cx.traceparent) {
        headers.insert("traceparent", v);
    }
    match cx
        .tracestate
        .as_deref()
        .and_then(|s| HeaderValue::from_str(s).ok())
    {
        Some(v) => {
            headers.insert("tracestate", v);
        }
        None => {
            headers.remove("tracestate");
        }
    }
}

/// Makes `parent` (a remote context: an incoming request's, a job's) the parent of
/// `span`, before the span starts. Without export, nothing to do.
pub fn set_parent(span: &tracing::Span, parent: Option<&TraceContext>) {
    #[cfg(feature = "otel")]
    if let Some(p) = parent
        && !span.is_none()
    {
        use opentelemetry::trace::{
            SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
        };
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let state = p
            .tracestate
            .as_deref()
            .and_then(|s| s.parse::<TraceState>().ok())
            .unwrap_or_default();
        let sc = SpanContext::new(
            TraceId::from_bytes(p.trace_id().to_be_bytes()),
            SpanId::from_bytes(p.parent_id().to_be_bytes()),
            TraceFlags::new(p.flags()),
            true,
            state,
        );
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(sc));
    }
    #[cfg(not(feature = "otel"))]
    let _ = (span, parent);
}

/// The context of `span` itself, when it is exported (its trace, its span id).
pub fn of_span(span: &tracing::Span) -> Option<TraceContext> {
    #[cfg(feature = "otel")]
    {
        use opentelemetry::trace::TraceContextExt;
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        if span.is_none() {
            return None;
        }
        let cx = span.context();
        let s = cx.span();
        let sc = s.span_context();
        if !sc.is_valid() {
            return None;
        }
        let state = sc.trace_state().header();
        TraceContext::from_parts(
            u128::from_be_bytes(sc.trace_id().to_bytes()),
            u64::from_be_bytes(sc.span_id().to_bytes()),
            sc.trace_flags().to_u8(),
            Some(state.as_str()).filter(|s| !s.is_empty()),
        )
    }
    #[cfg(not(feature = "otel"))]
    {
        let _ = span;
        None
    }
}

/// What a request made within `span` passes on: the span's own context when it is
/// exported, else `upstream` (the context that came in) unchanged.
pub fn outgoing(span: &tracing::Span, upstream: Option<&TraceContext>) -> Option<TraceContext> {
    of_span(span).or_else(|| upstream.cloned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn headers_round_trip_and_pass_through_without_export() {
        let mut h = HeaderMap::new();
        h.insert("traceparent", HeaderValue::from_static(TP));
        h.insert("tracestate", HeaderValue::from_static("k=v"));
        let cx = from_headers(&h).unwrap();
        assert_eq!(cx.traceparent, TP);
        assert_eq!(cx.tracestate.as_deref(), Some("k=v"));
        // No exported span: the incoming context goes on as it came.
        let out = outgoing(&tracing::Span::none(), Some(&cx)).unwrap();
        assert_eq!(out, cx);
        let mut up = HeaderMap::new();
        up.insert("tracestate", HeaderValue::from_static("stale=1"));
        inject(
            &mut up,
            &TraceContext {
                traceparent: TP.into(),
                tracestate: None,
            },
        );
        assert_eq!(up.get("traceparent").unwrap(), TP);
        assert!(up.get("tracestate").is_none());
        h.insert("traceparent", HeaderValue::from_static("garbage"));
        assert!(from_headers(&h).is_none());
    }
}
