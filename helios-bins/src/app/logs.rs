//! The JSON log line every binary writes (`log.format: json`, or `auto` off a terminal):
//! one object per event with `time` (RFC 3339, UTC, µs), `level`, `component` (the
//! binary: `gateway`, `worker`, `proxy`, `atlasd`, `helios`), `target` (the module),
//! `message`, the event's own fields, and the fields of every span it is in, outermost
//! first and the event's own winning a clash. So a line logged while serving a request
//! carries its `request_id`, a worker's job lines their `job` and `attempt`,
//! one inside a traced request its `trace_id` (the incoming `traceparent`'s, or with span
//! export on, the exported span's).
//!
//! Levels: `DEBUG`, `INFO`, `WARN`, `ERROR`, and `FATAL`: an error event with the field
//! `fatal = true` (see [`fatal`]), logged when the process is about to exit non-zero
//! because it cannot go on (a failed start, refused credentials, a store that stopped).
//!
//! Invariant: a line is handed whole, as one message, to the log thread ([`writer`]), the
//! only writer of stderr, so lines of concurrent threads never interleave.
//!
//! Writing never blocks the thread that logs: lines go through a bounded queue to a thread
//! of their own (`helios-log`) that writes them to stderr. When the reader of stderr stalls
//! (a full pipe, a stuck log shipper) the queue fills and further lines are dropped and
//! counted (`helios_log_lines_dropped_total` on every `/metrics`), so a proxy's event loop
//! or a gateway's runtime threads keep serving instead of waiting on a pipe. The queue is
//! flushed when the binary's [`super::Telemetry`] is dropped at the end of `main` (waiting
//! at most about a second for a stalled reader), so the FATAL line of a failed start
//! reaches stderr; a process killed by SIGKILL loses the lines still queued. (A trap of
//! tracing-appender: when its guard cannot hand the shutdown to a log thread stuck on
//! stderr within 100 ms, it says so on stdout, once, at exit.)

use serde_json::{Map, Value};
use std::fmt;
use std::sync::OnceLock;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// Lines the log thread may hold before further ones are dropped (about 300 bytes each:
/// a few MiB at most).
pub const LINES_QUEUED_MAX: usize = 16 * 1024;

/// The drop counter of the process's log writer, once [`writer`] made it.
static DROPPED: OnceLock<tracing_appender::non_blocking::ErrorCounter> = OnceLock::new();

/// A writer for the fmt layer that never blocks: lines queue (at most `lines_max`) for a
/// thread that writes them to `out`; past that they are dropped and counted. Keep the
/// guard until the process ends: dropping it writes out the queue (waiting at most about
/// a second). The first writer made in the process is the one [`lines_dropped`] counts.
pub fn writer<W: std::io::Write + Send + 'static>(
    out: W,
    lines_max: usize,
) -> (
    tracing_appender::non_blocking::NonBlocking,
    tracing_appender::non_blocking::WorkerGuard,
) {
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(lines_max.max(1))
        .thread_name("helios-log")
        .finish(out);
    let _ = DROPPED.set(writer.error_counter());
    (writer, guard)
}

/// Log lines dropped so far because the log thread's queue was full (0 before [`writer`]).
pub fn lines_dropped() -> u64 {
    DROPPED
        .get()
        .map_or(0, |c| u64::try_from(c.dropped_lines()).unwrap_or(u64::MAX))
}

/// Logs `what` as the FATAL line of a process about to exit non-zero.
#[macro_export]
macro_rules! fatal {
    ($($arg:tt)+) => {
        ::tracing::error!(fatal = true, $($arg)+)
    };
}
pub use fatal;

/// The event formatter of the JSON lines (see the module docs). Use it with
/// `.fmt_fields(JsonFields::new())`, so span fields are kept as JSON.
#[derive(Debug, Clone, Copy)]
pub struct JsonLines {
    component: &'static str,
}

impl JsonLines {
    /// Lines naming `component`.
    pub fn new(component: &'static str) -> Self {
        Self { component }
    }
}

struct Fields<'a>(&'a mut Map<String, Value>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0
            .insert(field.name().to_owned(), Value::from(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), Value::from(format!("{value:?}")));
    }
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut fields = Map::new();
        // Span fields, outermost first (an inner span's field wins a clash).
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let ext = span.extensions();
                if let Some(f) = ext.get::<FormattedFields<N>>()
                    && let Ok(Value::Object(m)) = serde_json::from_str::<Value>(&f.fields)
                {
                    fields.extend(m);
                }
            }
        }
        // The event's own fields win a clash; only the event itself can be FATAL.
        let mut own = Map::new();
        event.record(&mut Fields(&mut own));
        let fatal = own.remove("fatal") == Some(Value::Bool(true));
        fields.remove("fatal");
        fields.extend(own);
        let level = if fatal {
            "FATAL"
        } else {
            meta.level().as_str()
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let time = chrono::DateTime::from_timestamp(
            i64::try_from(now.as_secs()).unwrap_or(i64::MAX),
            now.subsec_nanos(),
        )
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .unwrap_or_default();
        let mut line = Map::new();
        line.insert("time".into(), Value::from(time));
        line.insert("level".into(), Value::from(level));
        line.insert("component".into(), Value::from(self.component));
        line.insert("target".into(), Value::from(meta.target()));
        if let Some(m) = fields.remove("message") {
            line.insert("message".into(), m);
        }
        for (k, v) in fields {
            line.entry(k).or_insert(v);
        }
        // With spans exported, the trace the line belongs to (a request without an
        // incoming `traceparent` starts one of its own).
        #[cfg(feature = "otel")]
        if !line.contains_key("trace_id")
            && let Some(t) = exported_trace_id()
        {
            line.insert("trace_id".into(), Value::from(t));
        }
        let text = serde_json::to_string(&Value::Object(line)).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// The trace id of the current span's exported context, if it has one.
#[cfg(feature = "otel")]
fn exported_trace_id() -> Option<String> {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    if !crate::app::trace::exporting() {
        return None;
    }
    let span = tracing::Span::current();
    if span.is_none() {
        return None;
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// The field formatter [`JsonLines`] reads span fields from.
pub fn json_fields() -> JsonFields {
    JsonFields::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_carry_level_component_span_fields_and_fatal() {
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || out.clone())
            .with_max_level(tracing::Level::DEBUG)
            .fmt_fields(json_fields())
            .event_format(JsonLines::new("gateway"))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let outer = tracing::info_span!("request", request_id = "r-7", method = "GET");
            let _o = outer.enter();
            let inner = tracing::info_span!("job", job_id = "j1", attempt = 2u32);
            let _i = inner.enter();
            tracing::info!(status = 200u16, "served");
            drop(_i);
            tracing::warn!(method = "PUT", "own field wins");
            fatal!(error = "disk gone", "cannot go on");
            tracing::debug!("plain");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 4, "{text}");
        let l = &lines[0];
        assert_eq!(l["level"], "INFO");
        assert_eq!(l["component"], "gateway");
        assert_eq!(l["message"], "served");
        assert_eq!(l["request_id"], "r-7");
        assert_eq!(l["job_id"], "j1");
        assert_eq!(l["attempt"], 2);
        assert_eq!(l["status"], 200);
        assert!(l["time"].as_str().unwrap().ends_with('Z'));
        assert!(l["target"].as_str().unwrap().contains("logs"));
        assert_eq!(lines[1]["level"], "WARN");
        assert_eq!(lines[1]["method"], "PUT");
        assert_eq!(lines[1]["request_id"], "r-7");
        assert!(lines[1].get("job_id").is_none(), "out of the job span");
        assert_eq!(lines[2]["level"], "FATAL");
        assert_eq!(lines[2]["error"], "disk gone");
        assert!(lines[2].get("fatal").is_none());
        assert_eq!(lines[3]["level"], "DEBUG");
    }

    /// A writer that blocks every write until the test opens the gate.
    #[derive(Clone)]
    struct Gate(Arc<(Mutex<bool>, std::sync::Condvar)>, Buf);

    impl std::io::Write for Gate {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let (open, cv) = &*self.0;
            let mut g = open.lock().unwrap();
            while !*g {
                g = cv.wait(g).unwrap();
            }
            self.1.clone().write(b)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// With the reader stalled, logging goes on without waiting: past the queue's room
    /// lines are dropped and counted; once the reader moves, the queued lines come out
    /// whole, and the guard's drop writes out the rest.
    #[test]
    fn a_stalled_reader_drops_lines_instead_of_blocking_the_logger() {
        let gate = Gate(Arc::default(), Buf::default());
        let (w, guard) = writer(gate.clone(), 8);
        // This writer's own count (the process-wide one is the first writer's).
        let counter = w.error_counter();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(w)
            .fmt_fields(json_fields())
            .event_format(JsonLines::new("proxy"))
            .finish();
        // Ends whatever the writer does: a blocking writer would hang here, and the test
        // (run under a harness timeout) with it.
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..1_000u32 {
                tracing::info!(i, "line");
            }
        });
        let dropped = counter.dropped_lines() as u64;
        // 8 queued, one more taken by the thread (held at the gate): the rest dropped.
        assert!((990..=992).contains(&dropped), "{dropped}");
        {
            let (open, cv) = &*gate.0;
            *open.lock().unwrap() = true;
            cv.notify_all();
        }
        drop(guard);
        let text = String::from_utf8(gate.1.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len() as u64, 1_000 - dropped, "{text}");
        // In the order logged (which ones got a slot depends on when the log thread
        // took its first line).
        let order: Vec<u64> = lines.iter().map(|l| l["i"].as_u64().unwrap()).collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
    }
}
