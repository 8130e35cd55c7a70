//! The `/metrics` exposition every binary serves (gateway, proxy, worker, atlasd): one
//! rendering path, [`respond`], so the four negotiate and format alike.
//!
//! Each server writes its families in OpenMetrics 1.0 form (a counter's `# HELP`/`# TYPE`
//! name without `_total`, its sample with it; no `# EOF`: [`respond`] ends the body);
//! [`respond`] adds the process families ([`ProcessCollector`], the Go client's names,
//! read from `/proc/self` by `procfs`), then serves OpenMetrics
//! (`application/openmetrics-text; version=1.0.0`) when the scraper's `Accept` asks for it
//! ([`negotiate`]), else the Prometheus text format 0.0.4 converted by [`to_text_004`]
//! (counters' `# HELP`/`# TYPE` under their `_total` name, no `# UNIT`, no `_created`,
//! no `# EOF`). Both are `promtool check metrics` clean (the 0.0.4 body entirely; the
//! OpenMetrics body up to promtool's 0.0.4-only reading of counters).
//!
//! Also here: the ATLAS families of the binaries that embed a store ([`atlas_families`]:
//! AOF size, snapshot durations, fsync latency, keys, memory, last good fsync's age) and
//! [`TimedStorage`], the storage decorator [`super::open_atlas`] installs to time the
//! AOF's fsyncs (process-wide: one store per binary).
//!
//! Invariant: a family's `# HELP` and `# TYPE` come before its samples, once per body;
//! label values are bounded by configuration or fixed sets (never paths or ids of
//! clients).

use super::histogram::LatencyHistogram;
use super::http::Body;
use bytes::Bytes;
use helios_atlas::storage::{DirLock, Storage, StorageFile};
use http::{HeaderMap, HeaderValue, Response, header};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::collections::HashSet;
use std::fmt::Write;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};
use std::time::Instant;

/// Content type of the Prometheus text format.
pub const TEXT_004: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Content type of OpenMetrics 1.0.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The exposition formats served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4 (the default).
    Text004,
    /// OpenMetrics 1.0.0.
    OpenMetrics,
}

/// The format an `Accept` header asks for: OpenMetrics when it names
/// `application/openmetrics-text` with a q-value above 0 and at least that of any range
/// that admits the text format (`text/plain`, `text/*`, `*/*`); the text format otherwise
/// (no header, `*/*`, an unreadable header). Every `Accept` header of the request counts.
pub fn negotiate(headers: &HeaderMap) -> Format {
    let mut q_om: f32 = 0.0;
    let mut q_text: f32 = 0.0;
    for value in headers.get_all(header::ACCEPT) {
        let Ok(value) = value.to_str() else { continue };
        for range in value.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let mut q = 1.0f32;
            for p in parts {
                if let Some((k, v)) = p.split_once('=')
                    && k.trim().eq_ignore_ascii_case("q")
                {
                    // RFC 9110: 0 to 1, up to three decimals; anything else counts as 0.
                    q = v
                        .trim()
                        .parse::<f32>()
                        .ok()
                        .filter(|q| (0.0..=1.0).contains(q))
                        .unwrap_or(0.0);
                }
            }
            match media.as_str() {
                "application/openmetrics-text" => q_om = q_om.max(q),
                "text/plain" | "text/*" | "*/*" => q_text = q_text.max(q),
                _ => {}
            }
        }
    }
    if q_om > 0.0 && q_om >= q_text {
        Format::OpenMetrics
    } else {
        Format::Text004
    }
}

/// `GET /metrics`'s response: `families` (OpenMetrics form, no `# EOF`; see the module
/// docs), the process families and the end, in the format `request_headers` ask for.
pub fn respond(request_headers: &HeaderMap, mut families: String) -> Response<Body> {
    process_families(&mut families);
    families.push_str("# EOF\n");
    let format = negotiate(request_headers);
    let (body, content_type) = match format {
        Format::OpenMetrics => (families, OPENMETRICS),
        Format::Text004 => (to_text_004(&families), TEXT_004),
    };
    let mut r = Response::new(http_body_util::Full::new(Bytes::from(body)));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(header::VARY, HeaderValue::from_static("accept"));
    r
}

/// An OpenMetrics body in the text format 0.0.4: counters' `# HELP` and `# TYPE` under
/// the sample's `_total` name, `unknown` as `untyped`; no `# UNIT`, `_created` samples or
/// `# EOF`. Everything else passes unchanged.
pub fn to_text_004(openmetrics: &str) -> String {
    let mut counters = HashSet::new();
    let mut created = HashSet::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some((name, kind)) = rest.split_once(' ')
        {
            if kind == "counter" {
                counters.insert(name);
            }
            if matches!(kind, "counter" | "histogram" | "summary") {
                created.insert(format!("{name}_created"));
            }
        }
    }
    let mut out = String::with_capacity(openmetrics.len() + 64 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = line
            .strip_prefix("# HELP ")
            .map(|r| ("HELP", r))
            .or_else(|| line.strip_prefix("# TYPE ").map(|r| ("TYPE", r)));
        if let Some((kw, rest)) = meta {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            let tail = if kw == "TYPE" && tail == "unknown" {
                "untyped"
            } else {
                tail
            };
            let total = if counters.contains(name) {
                "_total"
            } else {
                ""
            };
            let _ = writeln!(out, "# {kw} {name}{total} {tail}");
            continue;
        }
        if !line.starts_with('#') {
            let name = line.split(['{', ' ']).next().unwrap_or("");
            if created.contains(name) {
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// A label value escaped for either format (backslash, double quote, newline).
pub fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A bucket bound (seconds) as OpenMetrics wants it: a float with a decimal point
/// (`1.0`, `0.0001`).
pub fn le(seconds: f64) -> String {
    let s = format!("{seconds}");
    if s.contains(['.', 'e', 'E']) {
        s
    } else {
        format!("{s}.0")
    }
}

/// Appends a family's `# HELP` and `# TYPE` lines (`name` without `_total` for a counter).
pub fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
}

/// `registry`'s families in OpenMetrics form, without the `# EOF` [`respond`] adds.
pub fn encode_registry(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode_registry(&mut out, registry);
    out
}

// ----- process metrics -----

/// The process families of the Go client (`process_cpu_seconds_total`,
/// `process_resident_memory_bytes`, `process_virtual_memory_bytes`, `process_open_fds`,
/// `process_max_fds`, `process_start_time_seconds`), read from `/proc/self` at each
/// scrape. A figure `/proc` does not give is left out (logged at debug).
#[derive(Debug, Default)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let me = match procfs::process::Process::myself() {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(error = %e, "no /proc/self: no process metrics");
                return Ok(());
            }
        };
        let ticks = procfs::ticks_per_second().max(1) as f64;
        match me.stat() {
            Ok(stat) => {
                let cpu = ConstCounter::new((stat.utime + stat.stime) as f64 / ticks);
                cpu.encode(encoder.encode_descriptor(
                    "process_cpu_seconds",
                    "Total user and system CPU time spent in seconds.",
                    None,
                    cpu.metric_type(),
                )?)?;
                let rss = ConstGauge::new(stat.rss.saturating_mul(procfs::page_size()) as f64);
                rss.encode(encoder.encode_descriptor(
                    "process_resident_memory_bytes",
                    "Resident memory size in bytes.",
                    None,
                    rss.metric_type(),
                )?)?;
                let vsize = ConstGauge::new(stat.vsize as f64);
                vsize.encode(encoder.encode_descriptor(
                    "process_virtual_memory_bytes",
                    "Virtual memory size in bytes.",
                    None,
                    vsize.metric_type(),
                )?)?;
                match procfs::boot_time_secs() {
                    Ok(boot) => {
                        let start = ConstGauge::new(boot as f64 + stat.starttime as f64 / ticks);
                        start.encode(encoder.encode_descriptor(
                            "process_start_time_seconds",
                            "Start time of the process since unix epoch in seconds.",
                            None,
                            start.metric_type(),
                        )?)?;
                    }
                    Err(e) => tracing::debug!(error = %e, "no boot time: no start time"),
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot read /proc/self/stat"),
        }
        match me.fd_count() {
            Ok(n) => {
                let fds = ConstGauge::new(n as f64);
                fds.encode(encoder.encode_descriptor(
                    "process_open_fds",
                    "Number of open file descriptors.",
                    None,
                    fds.metric_type(),
                )?)?;
            }
            Err(e) => tracing::debug!(error = %e, "cannot count /proc/self/fd"),
        }
        if let Ok(limits) = me.limits()
            && let procfs::process::LimitValue::Value(n) = limits.max_open_files.soft_limit
        {
            let max = ConstGauge::new(n as f64);
            max.encode(encoder.encode_descriptor(
                "process_max_fds",
                "Maximum number of open file descriptors.",
                None,
                max.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

/// `helios_log_lines_dropped_total`: log lines dropped because the log thread's queue
/// was full (a stalled reader of stderr; [`super::logs`]).
#[derive(Debug, Default)]
pub struct LogCollector;

impl Collector for LogCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let dropped = ConstCounter::new(super::logs::lines_dropped());
        dropped.encode(encoder.encode_descriptor(
            "helios_log_lines_dropped",
            "Log lines dropped because the reader of stderr fell behind.",
            None,
            dropped.metric_type(),
        )?)
    }
}

/// Appends the process families ([`ProcessCollector`], [`LogCollector`]).
pub fn process_families(out: &mut String) {
    static REGISTRY: LazyLock<Registry> = LazyLock::new(|| {
        let mut r = Registry::default();
        r.register_collector(Box::new(ProcessCollector));
        r.register_collector(Box::new(LogCollector));
        r
    });
    out.push_str(&encode_registry(&REGISTRY));
}

// ----- ATLAS -----

/// Latencies of the AOF's fsyncs in this process (every store opened through
/// [`super::open_atlas`], which installs [`TimedStorage`]: one per binary).
pub static FSYNC_LATENCY: LatencyHistogram = LatencyHistogram::new();

/// Appends the families of an embedded ATLAS store: `atlas_aof_bytes` (the AOF's size on
/// disk), `atlas_snapshot_duration_seconds` (a histogram, one observation per snapshot),
/// `atlas_fsync_duration_seconds` ([`FSYNC_LATENCY`]), `atlas_keys`, `atlas_memory_bytes`,
/// `atlas_last_fsync_age_seconds` and `atlas_write_error` (1 once an I/O error stopped
/// writes). Reading the stats may wait for the writer lock (across an fsync under
/// `always`): async callers run this where blocking is allowed.
pub fn atlas_families(out: &mut String, atlas: &helios_atlas::Atlas) {
    let s = atlas.stats();
    for (name, help, v) in [
        (
            "atlas_aof_bytes",
            "Size of the AOF on disk: every segment's header and records (padding preallocated past the last record not counted).",
            s.aof_size as f64,
        ),
        (
            "atlas_keys",
            "Keys held (expired ones not yet removed included).",
            s.key_count as f64,
        ),
        (
            "atlas_memory_bytes",
            "Estimated memory of keys and values.",
            s.memory_size as f64,
        ),
        (
            "atlas_last_fsync_age_seconds",
            "Age of the durability horizon: writes appended before it are durable (the start of the last successful AOF fsync, or the first write after an idle spell).",
            s.fsync_last_ok_age_ms as f64 / 1000.0,
        ),
        (
            "atlas_write_error",
            "1 once an I/O error made the store refuse writes (until it is reopened), else 0.",
            f64::from(u8::from(s.write_error.is_some())),
        ),
    ] {
        family(out, name, "gauge", help);
        let _ = writeln!(out, "{name} {v}");
    }
    family(
        out,
        "atlas_snapshot_duration_seconds",
        "histogram",
        "Time each snapshot took, from its AOF rotation to its compaction.",
    );
    let h = &s.snapshot_durations;
    let mut cumulative = 0;
    for (i, bound) in h.bounds_ms.iter().enumerate() {
        cumulative += h.counts.get(i).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "atlas_snapshot_duration_seconds_bucket{{le=\"{}\"}} {cumulative}",
            le(*bound as f64 / 1000.0)
        );
    }
    let _ = writeln!(
        out,
        "atlas_snapshot_duration_seconds_bucket{{le=\"+Inf\"}} {}\natlas_snapshot_duration_seconds_sum {}\natlas_snapshot_duration_seconds_count {}",
        h.count,
        h.sum_ms as f64 / 1000.0,
        h.count
    );
    family(
        out,
        "atlas_fsync_duration_seconds",
        "histogram",
        "Time each AOF fsync took.",
    );
    FSYNC_LATENCY.encode(out, "atlas_fsync_duration_seconds", "");
}

/// A [`Storage`] that times the `sync` of every log it opens (the AOF's segments) into
/// [`FSYNC_LATENCY`], on the monotonic clock; everything else goes straight through.
#[derive(Debug)]
pub struct TimedStorage {
    inner: Arc<dyn Storage>,
}

impl TimedStorage {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Storage>) -> Self {
        Self { inner }
    }
}

#[derive(Debug)]
struct TimedFile(Arc<dyn StorageFile>);

impl StorageFile for TimedFile {
    fn append(&self, buf: &[u8]) -> io::Result<()> {
        self.0.append(buf)
    }

    fn sync(&self) -> io::Result<()> {
        let started = Instant::now();
        let r = self.0.sync();
        if r.is_ok() {
            FSYNC_LATENCY
                .observe_us(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
        }
        r
    }
}

impl Storage for TimedStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        self.inner.create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.inner.list(dir)
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.inner.read(path)
    }
    fn file_size(&self, path: &Path) -> io::Result<u64> {
        self.inner.file_size(path)
    }
    fn create(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        self.inner.create(path)
    }
    fn create_log(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        Ok(Arc::new(TimedFile(self.inner.create_log(path)?)))
    }
    fn open_log(&self, path: &Path, end: u64) -> io::Result<Arc<dyn StorageFile>> {
        Ok(Arc::new(TimedFile(self.inner.open_log(path, end)?)))
    }
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        self.inner.truncate(path, len)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.inner.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.inner.sync_dir(dir)
    }
    fn lock_dir(&self, dir: &Path) -> io::Result<Box<dyn DirLock>> {
        self.inner.lock_dir(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::ACCEPT, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn negotiation_follows_accept_and_q_values() {
        use Format::*;
        for (values, want) in [
            (&[][..], Text004),
            (&["*/*"][..], Text004),
            (&["text/plain"][..], Text004),
            (&["application/json"][..], Text004),
            (&["application/openmetrics-text"][..], OpenMetrics),
            (
                &["application/openmetrics-text; version=1.0.0"][..],
                OpenMetrics,
            ),
            (
                &["Application/OpenMetrics-Text;Version=1.0.0"][..],
                OpenMetrics,
            ),
            // Prometheus's own scrape header.
            (
                &[
                    "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
                ][..],
                OpenMetrics,
            ),
            // Prometheus with OpenMetrics turned off.
            (&["text/plain;version=0.0.4;q=1,*/*;q=0.1"][..], Text004),
            (
                &["text/plain;q=0.9, application/openmetrics-text;q=0.5"][..],
                Text004,
            ),
            (
                &["application/openmetrics-text;q=0.9, text/plain;q=0.5"][..],
                OpenMetrics,
            ),
            (&["application/openmetrics-text, */*"][..], OpenMetrics),
            (&["application/openmetrics-text;q=0"][..], Text004),
            (&["application/openmetrics-text;q=abc"][..], Text004),
            (&["application/openmetrics-text;q=2"][..], Text004),
            (
                &["*/*;q=0.8, application/openmetrics-text;q=0.7"][..],
                Text004,
            ),
            // Two headers count together.
            (
                &["text/plain;q=0.1", "application/openmetrics-text"][..],
                OpenMetrics,
            ),
        ] {
            assert_eq!(negotiate(&accept(values)), want, "{values:?}");
        }
    }

    const OM: &str = "# HELP reqs Requests.\n# TYPE reqs counter\nreqs_total{a=\"b\"} 3\nreqs_created{a=\"b\"} 1.5\n# HELP g A gauge.\n# TYPE g gauge\n# UNIT g bytes\ng 1\n# HELP u Unknown.\n# TYPE u unknown\nu 2\n# EOF\n";

    #[test]
    fn text_004_names_counters_with_total_and_drops_openmetrics_lines() {
        let t = to_text_004(OM);
        assert_eq!(
            t,
            "# HELP reqs_total Requests.\n# TYPE reqs_total counter\nreqs_total{a=\"b\"} 3\n# HELP g A gauge.\n# TYPE g gauge\ng 1\n# HELP u Unknown.\n# TYPE u untyped\nu 2\n"
        );
    }

    #[test]
    fn responses_carry_the_negotiated_type_and_process_families() {
        let r = respond(&accept(&["application/openmetrics-text"]), String::new());
        assert_eq!(r.headers()[header::CONTENT_TYPE], OPENMETRICS);
        let r = respond(&HeaderMap::new(), String::new());
        assert_eq!(r.headers()[header::CONTENT_TYPE], TEXT_004);
        let mut text = String::new();
        process_families(&mut text);
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_start_time_seconds ",
        ] {
            assert!(text.contains(name), "{name} in {text}");
        }
    }

    #[test]
    fn bucket_bounds_have_a_decimal_point() {
        assert_eq!(le(1.0), "1.0");
        assert_eq!(le(0.0001), "0.0001");
        assert_eq!(le(300.0), "300.0");
    }
}
