//! Logs and traces both servers share: the `--log-format`, `--metrics-listen`
//! and `--otel-*` flags, the subscriber (human text on a terminal, one JSON
//! object per line with `--log-format json`), and W3C trace context on gRPC
//! metadata, read from every incoming call and written on every outgoing
//! one, so one trace follows an UpdateOrg's job through org-server into
//! auth-server.
//!
//! Every span at info level or above is an OpenTelemetry span, whatever
//! RUST_LOG says, so trace ids exist and propagate whether or not they are
//! exported; `--otel-endpoint` only adds an OTLP exporter.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::time::Duration;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tonic::codegen::http::{self, HeaderMap};
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};

use crate::metrics::RpcMetrics;
use tracing::Span;
use tracing::level_filters::LevelFilter;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// For people: one line per event, in colour on a terminal.
    Text,
    /// For collectors: one JSON object per line, with the fields of every
    /// enclosing span (trace_id, org_id, job_id, ...).
    Json,
}

/// Observability flags, flattened into each server's `Config`.
#[derive(Debug, Clone, clap::Args)]
pub struct TelemetryArgs {
    /// Log line format on stderr: `text`, or `json` (one object per line,
    /// with span fields such as trace_id, org_id and job_id). Filter with
    /// RUST_LOG (default `info`).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Serve Prometheus metrics at http://ADDR/metrics (port 0 picks one;
    /// the address is printed as `metrics ADDR`). Off by default.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,

    /// Export traces over OTLP/gRPC to this collector, e.g.
    /// http://127.0.0.1:4317 (plaintext: run the collector beside the
    /// process). Off by default; trace context is propagated either way.
    #[arg(long, value_name = "URL")]
    pub otel_endpoint: Option<String>,

    /// `service.name` of exported traces (default: the server's name).
    #[arg(long, value_name = "NAME")]
    pub otel_service_name: Option<String>,
}

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot set up the OTLP exporter to {endpoint}: {source}")]
    Exporter {
        endpoint: String,
        source: opentelemetry_otlp::ExporterBuildError,
    },
}

/// Keeps the tracer provider alive; [`Telemetry::shutdown`] flushes the
/// spans not yet exported.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Exports what is buffered, for at most [`FLUSH_TIMEOUT`]. The flush
    /// blocks, and the exporter needs the runtime to make progress, so it
    /// runs on a blocking thread: with a single runtime worker, blocking
    /// that worker would stall the very export it waits for.
    pub async fn shutdown(self) {
        let provider = self.provider;
        let flush =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(FLUSH_TIMEOUT));
        match tokio::time::timeout(FLUSH_TIMEOUT + Duration::from_secs(1), flush).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(err))) => tracing::warn!(error = %err, "flushing traces failed"),
            Ok(Err(_)) | Err(_) => tracing::warn!("flushing traces did not finish in time"),
        }
    }
}

/// The longest [`Telemetry::shutdown`] waits for the last spans to leave.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(3);

/// Installs the global subscriber and propagator. Call once, early in
/// `main`, inside the tokio runtime (the OTLP exporter's channel lives on
/// it).
pub fn init(args: &TelemetryArgs, service: &'static str) -> Result<Telemetry, TelemetryError> {
    let provider = SdkTracerProvider::builder();
    let provider = match &args.otel_endpoint {
        Some(endpoint) => {
            use opentelemetry_otlp::WithExportConfig;
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .build()
                .map_err(|source| TelemetryError::Exporter {
                    endpoint: endpoint.clone(),
                    source,
                })?;
            let name = args
                .otel_service_name
                .clone()
                .unwrap_or_else(|| service.to_owned());
            provider
                .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
                .with_batch_exporter(exporter)
                .with_resource(
                    opentelemetry_sdk::Resource::builder()
                        .with_service_name(name)
                        .build(),
                )
        }
        // Ids are still made, propagated and logged, but spans are not
        // recorded: recording them for nobody cost a fifth of the unlink
        // throughput in the benchmark. Calls leave marked unsampled, so a
        // server that exports follows this one's choice for them: turn
        // export on for both servers or neither.
        None => provider.with_sampler(Sampler::AlwaysOff),
    };
    let provider = provider.build();
    let tracer = provider.tracer(service);
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());

    // RUST_LOG filters the log lines only: trace context must follow a
    // call whatever the log level, so the spans it rides on (ours are all
    // at info) are always on for the OpenTelemetry layer.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(LevelFilter::INFO);
    let registry = tracing_subscriber::registry().with(otel);
    match args.log_format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            )
            .init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(true)
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            )
            .init(),
    }
    Ok(Telemetry { provider })
}

struct HeaderReader<'a>(&'a HeaderMap);

impl Extractor for HeaderReader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct MetadataWriter<'a>(&'a mut MetadataMap);

impl Injector for MetadataWriter<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value),
        ) {
            self.0.insert(key, value);
        }
    }
}

/// The span every incoming request runs in (tonic's `trace_fn`): a child of
/// the caller's trace when the request carries `traceparent`, a new trace
/// otherwise. Its `trace_id` field puts the id on every log line. Its name
/// in exported traces is the gRPC method, or `HTTP <method>` for plain
/// HTTP (whose handlers name the route), never a made-up path.
pub fn request_span(request: &http::Request<()>, methods: &RpcMetrics) -> Span {
    let path = request.uri().path();
    // Borrowed on the gRPC path: no allocation per call for the name.
    let name: std::borrow::Cow<'_, str> = if methods.is_known(path) {
        path.into()
    } else if request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
    {
        "unknown gRPC method".into()
    } else {
        format!("HTTP {}", request.method()).into()
    };
    let span = tracing::info_span!(
        "request",
        otel.name = %name,
        path = %path,
        trace_id = tracing::field::Empty,
    );
    let parent = TraceContextPropagator::new().extract(&HeaderReader(request.headers()));
    // Fails only without the OpenTelemetry layer (e.g. in unit tests): the
    // span is then simply a root.
    let _ = span.set_parent(parent);
    record_trace_id(&span);
    span
}

/// Records the span's trace id in its `trace_id` field, if it has one.
pub fn record_trace_id(span: &Span) {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    if span_context.is_valid() {
        span.record("trace_id", tracing::field::display(span_context.trace_id()));
    }
}

/// Writes the current span's trace context (`traceparent`) into an
/// outgoing call's metadata.
pub fn inject_current_context(metadata: &mut MetadataMap) {
    let context = Span::current().context();
    TraceContextPropagator::new().inject_context(&context, &mut MetadataWriter(metadata));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_is_read_from_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "traceparent",
            http::HeaderValue::from_static(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
        );
        let context = TraceContextPropagator::new().extract(&HeaderReader(&headers));
        assert_eq!(
            context.span().span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
    }
}
