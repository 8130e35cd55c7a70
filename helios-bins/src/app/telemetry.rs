//! Trace export: the `telemetry` config section every server binary shares, and, in a
//! build with the `otel` feature, the OpenTelemetry pipeline behind it (spans of
//! `tracing` -> `tracing-opentelemetry` -> a batch span processor on its own thread ->
//! OTLP over HTTP/protobuf through the blocking reqwest client, which is built and used
//! only off the tokio runtime, so it cannot panic there).
//!
//! Without the feature the section is still read and checked (configs stay portable); an
//! `enabled: true` then only warns that the binary was built without `otel`. W3C trace
//! context reaches jobs either way ([`super::trace`]).

use super::config::{ConfigError, err};
use serde::{Deserialize, Deserializer, Serialize};

/// The `telemetry` section: OTLP trace export (off by default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySection {
    /// Export spans (needs a binary built with the `otel` feature).
    pub enabled: bool,
    /// The collector's OTLP/HTTP traces URL (`http://host:4318/v1/traces`); spans are
    /// POSTed there as protobuf.
    pub endpoint: String,
    /// Share of new traces sampled, 0.0 to 1.0; a trace that came with a `traceparent`
    /// follows the caller's sampled flag.
    #[serde(deserialize_with = "ratio")]
    pub sampling_ratio: f64,
    /// The `service.name` of the spans.
    pub service_name: String,
    /// Longest one export may take, ms.
    pub export_timeout_ms: u64,
}

/// A ratio given as a number, or as text (an environment variable's value).
fn ratio<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(f64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Number(n) => Ok(n),
        Raw::Text(t) => t
            .trim()
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("{t:?} is not a number"))),
    }
}

impl TelemetrySection {
    /// The defaults, spans named as coming from `service`.
    pub fn for_service(service: &str) -> Self {
        TelemetrySection {
            enabled: false,
            endpoint: "http://127.0.0.1:4318/v1/traces".to_owned(),
            sampling_ratio: 1.0,
            service_name: service.to_owned(),
            export_timeout_ms: 10_000,
        }
    }

    /// Checks the values, naming the key under `section` (`telemetry`).
    pub fn check(&self, section: &str) -> Result<(), ConfigError> {
        match self.endpoint.parse::<http::Uri>() {
            Ok(u) if u.scheme_str() == Some("http") && u.host().is_some_and(|h| !h.is_empty()) => {}
            Ok(u) if u.scheme_str() == Some("https") => {
                return Err(err(
                    format!("{section}.endpoint"),
                    format!(
                        "{:?}: https is not supported (this build has no TLS for the \
                         exporter): send to a collector on localhost or a private network \
                         over http://",
                        self.endpoint
                    ),
                ));
            }
            _ => {
                return Err(err(
                    format!("{section}.endpoint"),
                    format!("{:?} is not an http://host:port/path URL", self.endpoint),
                ));
            }
        }
        if !(0.0..=1.0).contains(&self.sampling_ratio) {
            return Err(err(
                format!("{section}.sampling_ratio"),
                format!("{} is outside 0.0..=1.0", self.sampling_ratio),
            ));
        }
        if self.service_name.is_empty()
            || self.service_name.len() > 255
            || self.service_name.chars().any(char::is_control)
        {
            return Err(err(
                format!("{section}.service_name"),
                "must be 1..=255 bytes without control characters",
            ));
        }
        if !(1..=60_000).contains(&self.export_timeout_ms) {
            return Err(err(
                format!("{section}.export_timeout_ms"),
                format!("{} is outside 1..=60000", self.export_timeout_ms),
            ));
        }
        Ok(())
    }
}

impl Default for TelemetrySection {
    fn default() -> Self {
        Self::for_service("helios")
    }
}

/// The running export, if any, and the log thread: keep it alive for the life of the
/// process. Dropping it flushes the spans still queued (within `export_timeout_ms`), stops
/// the exporter's thread, then writes out the log lines still queued.
#[derive(Default)]
pub struct Telemetry {
    #[cfg(feature = "otel")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
    /// The log thread's guard ([`super::logs::writer`]): dropped after the exporter (a
    /// field drops after `Drop::drop`), so the exporter's last lines are written too.
    pub(crate) log_guard: Option<tracing_appender::non_blocking::WorkerGuard>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("exporting", &self.exporting())
            .finish()
    }
}

impl Telemetry {
    #[cfg(feature = "otel")]
    pub(crate) fn set_provider(&mut self, provider: opentelemetry_sdk::trace::SdkTracerProvider) {
        self.provider = Some(provider);
    }

    /// Shuts the span exporter down, if any (the log thread stays).
    pub(crate) fn stop_exporting(&mut self) {
        #[cfg(feature = "otel")]
        if let Some(p) = self.provider.take() {
            super::trace::set_exporting(false);
            if let Err(e) = p.shutdown() {
                eprintln!("telemetry: shutting down the span exporter: {e}");
            }
        }
    }

    /// Whether spans are being exported.
    pub fn exporting(&self) -> bool {
        #[cfg(feature = "otel")]
        {
            self.provider.is_some()
        }
        #[cfg(not(feature = "otel"))]
        {
            false
        }
    }

    /// Exports every span ended so far and waits for it (tests, shutdown). Blocks: call it
    /// off the runtime's threads, or in a test.
    pub fn flush(&self) {
        #[cfg(feature = "otel")]
        if let Some(p) = &self.provider
            && let Err(e) = p.force_flush()
        {
            tracing::warn!(error = %e, "telemetry: flushing spans failed");
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.stop_exporting();
    }
}

/// Why the exporter could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The HTTP client or the exporter could not be built.
    #[error("telemetry: building the OTLP exporter: {0}")]
    Exporter(String),
}

/// An exporter that says when exports fail: the SDK built without its internal logs
/// drops a failed batch silently. At most one warning a minute, with the batches and
/// spans lost since the last one. Called from the batch processor's thread only.
#[cfg(feature = "otel")]
#[derive(Debug)]
struct Logged<E> {
    inner: E,
    endpoint: String,
    /// When the last warning was written, and the batches and spans failed since.
    failures: parking_lot::Mutex<(Option<std::time::Instant>, u64, u64)>,
}

#[cfg(feature = "otel")]
impl<E: opentelemetry_sdk::trace::SpanExporter> opentelemetry_sdk::trace::SpanExporter
    for Logged<E>
{
    async fn export(
        &self,
        batch: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        let spans = batch.len() as u64;
        let out = self.inner.export(batch).await;
        if let Err(e) = &out {
            let mut f = self.failures.lock();
            f.1 += 1;
            f.2 += spans;
            let now = std::time::Instant::now();
            if f.0
                .is_none_or(|t| now.duration_since(t) >= std::time::Duration::from_secs(60))
            {
                tracing::warn!(
                    endpoint = %self.endpoint, error = %e, batches = f.1, spans = f.2,
                    "telemetry: spans could not be exported and were dropped"
                );
                *f = (Some(now), 0, 0);
            }
        }
        out
    }

    fn shutdown_with_timeout(
        &self,
        timeout: std::time::Duration,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

/// The OpenTelemetry layer of a subscriber `S`, and the provider that owns its exporter.
#[cfg(feature = "otel")]
pub(crate) type OtelLayer<S> = (
    Box<dyn tracing_subscriber::Layer<S> + Send + Sync>,
    opentelemetry_sdk::trace::SdkTracerProvider,
);

/// The OpenTelemetry layer for `cfg`, or `None` when export is off.
#[cfg(feature = "otel")]
pub(crate) fn otel_layer<S>(cfg: &TelemetrySection) -> Result<Option<OtelLayer<S>>, TelemetryError>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a> + Send + Sync,
{
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
    use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, Sampler};
    use tracing_subscriber::Layer as _;
    if !cfg.enabled {
        return Ok(None);
    }
    let timeout = std::time::Duration::from_millis(cfg.export_timeout_ms);
    // The blocking client runs a runtime of its own: build it on a thread of its own, so a
    // caller on a tokio thread (a test) cannot trip it. No proxy from the environment:
    // spans go to the configured collector and nowhere else.
    let client = std::thread::Builder::new()
        .name("otel-client".into())
        .spawn(move || {
            reqwest::blocking::Client::builder()
                .timeout(timeout)
                .no_proxy()
                .build()
        })
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?
        .join()
        .map_err(|_| TelemetryError::Exporter("the client's builder panicked".into()))?
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(cfg.endpoint.clone())
        .with_timeout(timeout)
        .with_http_client(client)
        .build()
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    let exporter = Logged {
        inner: exporter,
        endpoint: cfg.endpoint.clone(),
        failures: parking_lot::Mutex::new((None, 0, 0)),
    };
    // The SDK's batch processor exports from a thread of its own.
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(8192)
                .with_scheduled_delay(std::time::Duration::from_millis(1000))
                .build(),
        )
        .build();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            cfg.sampling_ratio,
        ))))
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(cfg.service_name.clone())
                .build(),
        )
        .build();
    let tracer = provider.tracer("helios");
    // HELIOS's own spans, whatever `log.level` or RUST_LOG say for the log lines.
    let targets = tracing_subscriber::filter::Targets::new()
        .with_target("helios_bins", tracing::Level::INFO)
        .with_target("helios", tracing::Level::INFO);
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(targets)
        .boxed();
    Ok(Some((layer, provider)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_check_and_bad_values_name_the_key() {
        let d = TelemetrySection::default();
        d.check("telemetry").unwrap();
        assert!(!d.enabled);
        let bad = |f: fn(&mut TelemetrySection)| {
            let mut t = TelemetrySection::default();
            f(&mut t);
            t.check("telemetry").unwrap_err().key
        };
        assert_eq!(bad(|t| t.endpoint = "nope".into()), "telemetry.endpoint");
        assert_eq!(
            bad(|t| t.endpoint = "https://c:4318/v1/traces".into()),
            "telemetry.endpoint"
        );
        assert_eq!(bad(|t| t.sampling_ratio = 1.5), "telemetry.sampling_ratio");
        assert_eq!(
            bad(|t| t.sampling_ratio = f64::NAN),
            "telemetry.sampling_ratio"
        );
        assert_eq!(
            bad(|t| t.service_name = String::new()),
            "telemetry.service_name"
        );
        assert_eq!(
            bad(|t| t.export_timeout_ms = 0),
            "telemetry.export_timeout_ms"
        );
    }

    /// Shows the section loads in every build (the flag only decides whether spans go
    /// out), from variables too, and a bad value fails naming its key.
    #[test]
    fn the_section_is_read_from_the_environment_in_every_build() {
        let env = |ratio: &str| {
            vec![
                ("HELIOS_TELEMETRY__ENABLED".to_owned(), "true".to_owned()),
                (
                    "HELIOS_TELEMETRY__SAMPLING_RATIO".to_owned(),
                    ratio.to_owned(),
                ),
            ]
        };
        let flags = crate::config::FlagOverrides::default();
        let c = crate::config::GatewayConfig::load(None, env("0.5"), &flags).unwrap();
        assert!(c.telemetry.enabled);
        assert_eq!(c.telemetry.sampling_ratio, 0.5);
        assert_eq!(c.telemetry.service_name, "helios-gateway");
        let e = crate::config::GatewayConfig::load(None, env("7"), &flags).unwrap_err();
        assert_eq!(e.key, "telemetry.sampling_ratio");
        let e = crate::config::GatewayConfig::load(None, env("lots"), &flags).unwrap_err();
        assert!(e.key.starts_with("telemetry.sampling_ratio"), "{e}");
    }

    #[test]
    fn a_ratio_may_come_as_text() {
        let v = serde_json::json!({
            "enabled": true, "endpoint": "http://127.0.0.1:1/v1/traces",
            "sampling_ratio": "0.25", "service_name": "s", "export_timeout_ms": 5
        });
        let t: TelemetrySection = serde_json::from_value(v).unwrap();
        assert_eq!(t.sampling_ratio, 0.25);
    }
}
