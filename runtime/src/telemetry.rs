//! Logs through `tracing`, human or JSON, and, when `[telemetry]
//! otlp_endpoint` is set, OpenTelemetry traces exported over OTLP/HTTP
//! (protobuf) to a collector (Jaeger, Tempo, the OpenTelemetry Collector).
//!
//! Records are identified by source and source id only: never put a name,
//! birth date, document, SNILS, phone or e-mail into a span or event. Span
//! attributes are sources, database names, counts and stream sequences.
//!
//! How a record is followed across the bus: an extractor publishes inside a
//! span ([`traceparent_of`] gives its W3C `traceparent`, which goes into
//! every message's header); the loader and the matcher continue those traces
//! ([`continue_traces`]) with spans whose remote parent is the message's
//! `traceparent`. With export off, the extractors put a random trace id on
//! each message (as before) and no span is exported.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use proto::trace::TraceParent;
use serde::Deserialize;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{fmt, EnvFilter, Layer as _};

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct LogSettings {
    pub format: LogFormat,
    /// `tracing` filter, e.g. `info` or `loader=debug,info`; `RUST_LOG` wins.
    pub level: String,
    /// Time between two progress lines of long work (an initial load, a
    /// large delta pass, an export download) when stderr is not a
    /// terminal; on a terminal a progress bar shows instead.
    #[serde(with = "humantime_serde")]
    pub progress_interval: Duration,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            format: LogFormat::Human,
            level: "info".into(),
            progress_interval: crate::progress::DEFAULT_EVERY,
        }
    }
}

/// `[telemetry]`: OpenTelemetry traces. Off unless `otlp_endpoint` is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct TelemetrySettings {
    /// Base URL of an OTLP/HTTP receiver (protobuf), e.g.
    /// `"http://otel-collector:4318"` (Jaeger, Grafana Tempo and the
    /// OpenTelemetry Collector listen on port 4318); spans are POSTed to
    /// `<otlp_endpoint>/v1/traces`. `https://` for a collector off the host
    /// or a trusted network: its certificate is verified against `ca_file`
    /// (or the system's store). Unset (the default): no traces are
    /// exported. The spans are at level `info`: `log.level` (or `RUST_LOG`)
    /// must let them through.
    pub otlp_endpoint: Option<String>,
    /// PEM file of the CA that signed an `https://` collector's certificate
    /// (a private CA). Unset: the system's store.
    pub ca_file: Option<std::path::PathBuf>,
    /// `service.name` of the exported spans. Default: the program's name
    /// (`loader`, `matcher`, `qms-extractor`, `infoclinica-extractor`).
    pub service_name: Option<String>,
    /// Share of the traces started here that are recorded, 0.0 to 1.0. An
    /// extractor starts a trace per publish (a sync, a page, a pass); the
    /// loader and the matcher follow the decision carried in each message's
    /// `traceparent` (its sampled flag), so a record is traced everywhere or
    /// nowhere.
    pub sample_ratio: f64,
    /// How long one export request may take; also the longest the exporter
    /// is given to flush at shutdown (within `[shutdown] deadline`).
    #[serde(with = "humantime_serde")]
    pub export_timeout: Duration,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        TelemetrySettings {
            otlp_endpoint: None,
            ca_file: None,
            service_name: None,
            sample_ratio: 1.0,
            export_timeout: Duration::from_secs(5),
        }
    }
}

/// Whether spans are exported (set once by [`init_with_traces`]). The
/// loader and the matcher create their per-trace spans only then.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether OpenTelemetry export is on in this process.
pub fn enabled() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Why the trace exporter could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("[telemetry] otlp_endpoint {endpoint:?}: {reason}")]
    Endpoint { endpoint: String, reason: String },
    #[error("[telemetry] sample_ratio must be between 0 and 1, not {0}")]
    SampleRatio(f64),
}

/// The installed trace pipeline; [`Telemetry::shutdown`] flushes it.
#[must_use = "call shutdown() before exiting, or the last spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    flush_timeout: Duration,
}

impl Telemetry {
    /// Sends every span still queued, waiting at most `limit` (and at most
    /// `export_timeout`), without blocking the async runtime's threads.
    pub async fn shutdown(self, limit: Duration) {
        let Some(provider) = self.provider else {
            return;
        };
        let timeout = self.flush_timeout.min(limit);
        let flushed =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(timeout)).await;
        match flushed {
            Ok(Ok(())) => tracing::debug!("trace exporter flushed"),
            Ok(Err(error)) => tracing::warn!(%error, "flushing the trace exporter failed"),
            Err(error) => tracing::warn!(%error, "flushing the trace exporter panicked"),
        }
    }

    /// Exports what is queued now (tests; services use [`Self::shutdown`]).
    pub async fn flush(&self) {
        if let Some(provider) = self.provider.clone() {
            let _ = tokio::task::spawn_blocking(move || provider.force_flush()).await;
        }
    }
}

/// Installs the global subscriber for logs only (once; later calls are
/// ignored). For the `etl` tool and tests.
pub fn init(settings: &LogSettings) {
    let _ = install(settings, None);
}

/// Installs the global subscriber: logs, and spans exported over OTLP when
/// `traces.otlp_endpoint` is set (`service` is the default service name).
/// Call from inside the Tokio runtime. Only the first call in a process
/// installs anything.
pub fn init_with_traces(
    log: &LogSettings,
    traces: &TelemetrySettings,
    service: &str,
) -> Result<Telemetry, TelemetryError> {
    let provider = match &traces.otlp_endpoint {
        Some(endpoint) if !endpoint.trim().is_empty() => Some(provider(endpoint, traces, service)?),
        _ => None,
    };
    let installed = install(log, provider.clone());
    if installed && provider.is_some() {
        EXPORTING.store(true, Ordering::Relaxed);
        tracing::info!(
            endpoint = traces.otlp_endpoint.as_deref().unwrap_or_default(),
            sample_ratio = traces.sample_ratio,
            "exporting traces over OTLP/HTTP"
        );
    }
    Ok(Telemetry {
        provider: provider.filter(|_| installed),
        flush_timeout: traces.export_timeout,
    })
}

fn provider(
    endpoint: &str,
    traces: &TelemetrySettings,
    service: &str,
) -> Result<SdkTracerProvider, TelemetryError> {
    if !(0.0..=1.0).contains(&traces.sample_ratio) {
        return Err(TelemetryError::SampleRatio(traces.sample_ratio));
    }
    let url = format!("{}/v1/traces", endpoint.trim().trim_end_matches('/'));
    let endpoint_error = |reason: String| TelemetryError::Endpoint {
        endpoint: endpoint.to_string(),
        reason,
    };
    let client = http_client(traces).map_err(endpoint_error)?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(url)
        .with_timeout(traces.export_timeout)
        .build()
        .map_err(|e| endpoint_error(e.to_string()))?;
    let resource = opentelemetry_sdk::Resource::builder_empty()
        .with_service_name(
            traces
                .service_name
                .clone()
                .unwrap_or_else(|| service.to_string()),
        )
        .build();
    Ok(SdkTracerProvider::builder()
        // Batches on a thread of its own: a slow collector never holds up
        // a publish or a write; a full queue drops spans, never blocks.
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            traces.sample_ratio,
        ))))
        .with_resource(resource)
        .build())
}

/// The exporter's HTTP client (HTTPS verified by [`crate::tls`]). A blocking
/// client owns a runtime of its own: made on a thread of its own, never
/// inside the caller's async runtime.
fn http_client(traces: &TelemetrySettings) -> Result<reqwest::blocking::Client, String> {
    let ca_file = traces.ca_file.clone();
    let timeout = traces.export_timeout;
    std::thread::spawn(move || {
        crate::tls::blocking_http_client(ca_file.as_deref())
            .map_err(|e| e.to_string())?
            .timeout(timeout)
            .build()
            .map_err(|e| format!("HTTP client: {e}"))
    })
    .join()
    .map_err(|_| "building the HTTP client panicked".to_string())?
}

/// The crates whose spans are exported (not those of sqlx, hyper, reqwest
/// or async-nats: the exporter's own HTTP requests must not be traced).
const OUR_CRATES: &[&str] = &[
    "loader",
    "matcher",
    "qms_extractor",
    "infoclinica_extractor",
    "etl_runtime",
    "proto",
    "etl",
];

fn ours(target: &str) -> bool {
    let krate = target.split("::").next().unwrap_or(target);
    OUR_CRATES.contains(&krate)
}

/// `false` if a global subscriber was already installed.
fn install(settings: &LogSettings, provider: Option<SdkTracerProvider>) -> bool {
    crate::progress::set_default_every(settings.progress_interval);
    use std::io::IsTerminal;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.level));
    let ansi = std::io::stderr().is_terminal();
    let logs = match settings.format {
        LogFormat::Human => fmt::layer()
            .with_writer(crate::progress::log_writer)
            .with_ansi(ansi)
            .boxed(),
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(crate::progress::log_writer)
            .with_ansi(ansi)
            .boxed(),
    };
    // `log.level` filters everything (the spans are at info: keep the level
    // at info or more verbose for traces); the exporter takes only our
    // crates' spans and warnings.
    let spans = provider.map(|provider| {
        let tracer = provider.tracer("etl");
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
                ours(meta.target()) && (meta.is_span() || *meta.level() <= tracing::Level::WARN)
            }))
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(logs)
        .with(spans)
        .try_init()
        .is_ok()
}

/// The W3C `traceparent` of `span`, for the messages published inside it;
/// `None` when traces are not exported (the publisher then gives each
/// message a fresh trace id).
pub fn traceparent_of(span: &tracing::Span) -> Option<TraceParent> {
    if !enabled() || span.is_disabled() {
        return None;
    }
    let context = span.context();
    let otel = context.span();
    let sc = otel.span_context();
    sc.is_valid().then(|| TraceParent {
        trace_id: u128::from_be_bytes(sc.trace_id().to_bytes()),
        parent_id: u64::from_be_bytes(sc.span_id().to_bytes()),
        flags: sc.trace_flags().to_u8() & 1,
    })
}

/// The most spans [`continue_traces`] creates for one batch: messages
/// published without a common trace (an extractor without export gives
/// each message its own) would otherwise make one span per message.
pub const MAX_TRACES_PER_BATCH: usize = 64;

/// One span per distinct trace among `traceparents` (at most
/// [`MAX_TRACES_PER_BATCH`], the first ones), each a child of its remote
/// parent. `make(first, n)` creates the span for a trace that `n` items of
/// the batch belong to, the first at index `first` (its name and
/// attributes: counts, sources and stream sequences only).
/// Keep the spans until the work is durable, then drop them (that ends
/// them). Empty when traces are not exported; malformed headers are
/// skipped.
pub fn continue_traces<'a>(
    traceparents: impl IntoIterator<Item = Option<&'a str>>,
    make: impl Fn(usize, usize) -> tracing::Span,
) -> Vec<tracing::Span> {
    if !enabled() {
        return Vec::new();
    }
    // (parent, index of its first item, items)
    let mut traces: Vec<(TraceParent, usize, usize)> = Vec::new();
    for (i, header) in traceparents.into_iter().enumerate() {
        let Some(parent) = header.and_then(TraceParent::parse) else {
            continue;
        };
        match traces.iter().position(|(t, _, _)| *t == parent) {
            Some(known) => traces[known].2 += 1,
            None if traces.len() < MAX_TRACES_PER_BATCH => traces.push((parent, i, 1)),
            None => {}
        }
    }
    traces
        .into_iter()
        .map(|(parent, first, n)| {
            let span = make(first, n);
            set_remote_parent(&span, &parent);
            span
        })
        .collect()
}

/// Makes `span` (not yet entered) a child of the remote span `parent`.
pub fn set_remote_parent(span: &tracing::Span, parent: &TraceParent) {
    if !enabled() || span.is_disabled() {
        return;
    }
    let remote = SpanContext::new(
        TraceId::from_bytes(parent.trace_id.to_be_bytes()),
        SpanId::from_bytes(parent.parent_id.to_be_bytes()),
        TraceFlags::new(parent.flags & 1),
        true,
        TraceState::default(),
    );
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_crates_are_exported() {
        assert!(ours("loader::service"));
        assert!(ours("matcher"));
        assert!(ours("qms_extractor::sync"));
        assert!(!ours("sqlx::query"));
        assert!(!ours("hyper_util::client"));
        assert!(!ours("loaderx"));
    }

    #[test]
    fn off_by_default_and_settings_checked() {
        let settings = TelemetrySettings::default();
        assert!(settings.otlp_endpoint.is_none());
        assert!(!enabled());
        let bad = TelemetrySettings {
            otlp_endpoint: Some("http://127.0.0.1:4318".into()),
            sample_ratio: 1.5,
            ..Default::default()
        };
        assert!(matches!(
            provider("http://127.0.0.1:4318", &bad, "x"),
            Err(TelemetryError::SampleRatio(_))
        ));
        assert!(continue_traces(
            [Some(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            )],
            |_, _| tracing::Span::none()
        )
        .is_empty());
    }
}
