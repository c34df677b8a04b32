//! Prometheus metrics both servers share: the registry a server fills at
//! start, the `--metrics-listen` endpoint that serves it, and the tower
//! layer that counts and times every gRPC call by service, method and code
//! (the `grpc_server_*` names operators know from go-grpc-prometheus).
//!
//! Label values come only from a fixed list of methods the server serves,
//! never from the request path itself, so a client sending made-up paths
//! cannot grow the label set: they are counted as `unknown`.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tonic::codegen::http::{self, HeaderMap};
use tracing::{debug, info, warn};

/// Buckets for call and batch latencies, in seconds: sub-millisecond reads
/// up to the 60 s call ceiling, and watch streams beyond it.
pub const LATENCY_BUCKETS: [f64; 18] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0, 3600.0,
];

/// A histogram with [`LATENCY_BUCKETS`].
pub fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// Labels borrow names made once at start ([`known_methods`]), so a call
/// costs no allocation for them, and an open stream holds two pointers.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    grpc_service: &'static str,
    grpc_method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandledLabels {
    grpc_service: &'static str,
    grpc_method: &'static str,
    grpc_code: &'static str,
}

const UNKNOWN: MethodLabels = MethodLabels {
    grpc_service: "unknown",
    grpc_method: "unknown",
};

/// Per-call counters and latency of a gRPC server.
#[derive(Clone)]
pub struct RpcMetrics {
    started: Family<MethodLabels, Counter>,
    handled: Family<HandledLabels, Counter>,
    seconds: Family<MethodLabels, Histogram, fn() -> Histogram>,
    /// `/package.Service/Method` paths worth a label of their own.
    known: Arc<HashMap<String, MethodLabels>>,
}

impl RpcMetrics {
    /// Registers the `grpc_server_*` families in `registry`, labelling
    /// calls of the methods of `services` (full names, looked up in
    /// orgauth's descriptor set) plus health and reflection.
    pub fn register(registry: &mut Registry, services: &[&str]) -> RpcMetrics {
        let metrics = RpcMetrics {
            started: Family::default(),
            handled: Family::default(),
            seconds: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            known: Arc::new(known_methods(services)),
        };
        registry.register(
            "grpc_server_started",
            "gRPC calls started, by service and method",
            metrics.started.clone(),
        );
        registry.register(
            "grpc_server_handled",
            "gRPC calls finished, by service, method and status code",
            metrics.handled.clone(),
        );
        registry.register(
            "grpc_server_handling_seconds",
            "Time from a gRPC call's arrival to its status (a stream's whole life)",
            metrics.seconds.clone(),
        );
        metrics
    }

    /// Whether `path` is one of the server's methods (not made up).
    pub fn is_known(&self, path: &str) -> bool {
        self.known.contains_key(path)
    }

    fn labels(&self, path: &str) -> MethodLabels {
        self.known.get(path).copied().unwrap_or(UNKNOWN)
    }
}

/// The methods of `services`, health and reflection, by path, with their
/// labels. The names are leaked once at start: a fixed set of a few dozen
/// strings that lives as long as the process, so label values are
/// `&'static str` and cost nothing per call.
fn known_methods(services: &[&str]) -> HashMap<String, MethodLabels> {
    use prost::Message;
    let mut paths: Vec<(String, String)> = [
        ("grpc.health.v1.Health", "Check"),
        ("grpc.health.v1.Health", "Watch"),
        (
            "grpc.reflection.v1.ServerReflection",
            "ServerReflectionInfo",
        ),
        (
            "grpc.reflection.v1alpha.ServerReflection",
            "ServerReflectionInfo",
        ),
    ]
    .into_iter()
    .map(|(service, method)| (service.to_owned(), method.to_owned()))
    .collect();
    // The descriptor set is compiled into the binary; a decoding failure
    // would be a build defect, and only costs the labels.
    let files = prost_types::FileDescriptorSet::decode(orgauth_proto::FILE_DESCRIPTOR_SET)
        .map(|set| set.file)
        .unwrap_or_default();
    for file in files {
        let package = file.package();
        for service in &file.service {
            let full = format!("{package}.{}", service.name());
            if services.contains(&full.as_str()) {
                for method in &service.method {
                    paths.push((full.clone(), method.name().to_owned()));
                }
            }
        }
    }
    paths
        .into_iter()
        .map(|(service, method)| {
            let path = format!("/{service}/{method}");
            let labels = MethodLabels {
                grpc_service: Box::leak(service.into_boxed_str()),
                grpc_method: Box::leak(method.into_boxed_str()),
            };
            (path, labels)
        })
        .collect()
}

/// The gRPC status name of a numeric `grpc-status` value.
fn code_name(value: &[u8]) -> &'static str {
    std::str::from_utf8(value)
        .ok()
        .and_then(|v| v.trim().parse::<i32>().ok())
        .map_or("UNKNOWN", |code| {
            orgauth_proto::code_name(tonic::Code::from_i32(code))
        })
}

/// One call being measured: recorded exactly once, when its status is
/// known or, failing that, when the response is dropped (the client went
/// away: CANCELLED).
struct CallRecord {
    metrics: RpcMetrics,
    labels: MethodLabels,
    start: Instant,
    done: bool,
}

impl CallRecord {
    fn finish(&mut self, code: &'static str) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let elapsed = self.start.elapsed();
        self.metrics
            .seconds
            .get_or_create(&self.labels)
            .observe(elapsed.as_secs_f64());
        self.metrics
            .handled
            .get_or_create(&HandledLabels {
                grpc_service: self.labels.grpc_service,
                grpc_method: self.labels.grpc_method,
                grpc_code: code,
            })
            .inc();
        debug!(
            grpc.service = %self.labels.grpc_service,
            grpc.method = %self.labels.grpc_method,
            grpc.code = code,
            elapsed = ?elapsed,
            "call finished"
        );
    }

    /// Finishes with the `grpc-status` in `headers`, if there is one.
    fn finish_from(&mut self, headers: &HeaderMap) -> bool {
        match headers.get("grpc-status") {
            Some(value) => {
                self.finish(code_name(value.as_bytes()));
                true
            }
            None => false,
        }
    }
}

impl Drop for CallRecord {
    fn drop(&mut self) {
        self.finish("CANCELLED");
    }
}

/// Adds [`RpcMetrics`] to every gRPC call a server answers; other HTTP
/// requests (the JSON gateway) pass untouched.
#[derive(Clone)]
pub struct RpcMetricsLayer {
    metrics: RpcMetrics,
}

impl RpcMetricsLayer {
    pub fn new(metrics: RpcMetrics) -> RpcMetricsLayer {
        RpcMetricsLayer { metrics }
    }
}

impl<S> tower_layer::Layer<S> for RpcMetricsLayer {
    type Service = MeteredService<S>;

    fn layer(&self, inner: S) -> MeteredService<S> {
        MeteredService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service [`RpcMetricsLayer`] wraps around the routes.
#[derive(Clone)]
pub struct MeteredService<S> {
    inner: S,
    metrics: RpcMetrics,
}

impl<S, ReqBody, ResBody> tower_service::Service<http::Request<ReqBody>> for MeteredService<S>
where
    S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let is_grpc = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        let record = is_grpc.then(|| {
            let labels = self.metrics.labels(request.uri().path());
            self.metrics.started.get_or_create(&labels).inc();
            CallRecord {
                metrics: self.metrics.clone(),
                labels,
                start: Instant::now(),
                done: false,
            }
        });
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            let mut record = record;
            // A trailers-only response (every error tonic answers before
            // streaming) carries its status in the headers.
            if let Some(call) = record.as_mut()
                && call.finish_from(response.headers())
            {
                record = None;
            }
            Ok(response.map(|body| MeteredBody {
                inner: body,
                record,
            }))
        })
    }
}

/// A response body that records its call when the trailers pass by.
pub struct MeteredBody<B> {
    inner: B,
    record: Option<CallRecord>,
}

impl<B> http_body::Body for MeteredBody<B>
where
    B: http_body::Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(frame) = &polled {
            match frame {
                Some(Ok(frame)) => {
                    if let (Some(trailers), Some(call)) = (frame.trailers_ref(), &mut this.record)
                        && call.finish_from(trailers)
                    {
                        this.record = None;
                    }
                }
                Some(Err(_)) => {
                    if let Some(mut call) = this.record.take() {
                        call.finish("UNKNOWN");
                    }
                }
                None => {
                    // A stream that ended without a status is an error the
                    // client sees as such.
                    if let Some(mut call) = this.record.take() {
                        call.finish("UNKNOWN");
                    }
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Work a server does right before each scrape, e.g. reading queue depth
/// from storage; bounded by [`SCRAPE_HOOK_TIMEOUT`].
pub type ScrapeHook = Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

/// How long a scrape waits for its hooks before answering with the values
/// it has: a scrape must answer even while the database is away.
pub const SCRAPE_HOOK_TIMEOUT: Duration = Duration::from_secs(2);

/// The Prometheus text exposition of `registry`, after the hooks ran.
async fn render(registry: &Registry, hooks: &[ScrapeHook]) -> String {
    let refresh = futures::future::join_all(hooks.iter().map(|hook| hook()));
    if tokio::time::timeout(SCRAPE_HOOK_TIMEOUT, refresh)
        .await
        .is_err()
    {
        warn!("metrics refresh timed out; serving the previous values");
    }
    let mut text = String::new();
    if let Err(err) = prometheus_client::encoding::text::encode(&mut text, registry) {
        warn!(error = %err, "cannot encode metrics");
    }
    text
}

/// The content type of [`render`]'s output (OpenMetrics text, which
/// Prometheus negotiates and parses).
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `--metrics-listen` could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on --metrics-listen {addr}: {source}")]
pub struct BindError {
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

/// A server's metrics: the registry its parts register in while it is
/// built, and the `--metrics-listen` socket, bound while building so a
/// taken port fails the start before the address is announced.
#[derive(Default)]
pub struct MetricsEndpoint {
    listener: Option<TcpListener>,
    registry: Registry,
    hooks: Vec<ScrapeHook>,
}

impl MetricsEndpoint {
    /// Binds `addr` if metrics are to be served; counts either way.
    pub async fn bind(addr: Option<SocketAddr>) -> Result<MetricsEndpoint, BindError> {
        let listener = match addr {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| BindError { addr, source })?,
            ),
            None => None,
        };
        Ok(MetricsEndpoint {
            listener,
            ..MetricsEndpoint::default()
        })
    }

    pub fn registry(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Runs `hook` before every scrape.
    pub fn on_scrape(&mut self, hook: ScrapeHook) {
        self.hooks.push(hook);
    }

    /// The bound address, `None` when metrics are not served.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves `GET /metrics` until `shutdown` completes (nothing without
    /// `--metrics-listen`).
    pub fn start(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        if let Some(listener) = self.listener {
            serve(listener, Arc::new(self.registry), self.hooks, shutdown);
        }
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` completes.
fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    hooks: Vec<ScrapeHook>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    use axum::routing::get;
    let hooks = Arc::new(hooks);
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let registry = Arc::clone(&registry);
            let hooks = Arc::clone(&hooks);
            async move {
                let text = render(&registry, &hooks).await;
                ([(http::header::CONTENT_TYPE, CONTENT_TYPE)], text)
            }
        }),
    );
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    info!(addr = ?addr, "metrics served at /metrics");
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            warn!(error = %err, "metrics endpoint failed");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_up_paths_share_one_label() {
        let mut registry = Registry::default();
        let metrics = RpcMetrics::register(&mut registry, &["orgauth.org.v1.OrgService"]);
        let known = metrics.labels("/orgauth.org.v1.OrgService/UpdateOrg");
        assert_eq!(known.grpc_service, "orgauth.org.v1.OrgService");
        assert_eq!(known.grpc_method, "UpdateOrg");
        for path in [
            "/orgauth.org.v1.OrgService/NoSuchMethod",
            "/orgauth.auth.v1.AuthService/BatchUnlinkSso",
            "/x",
            "",
        ] {
            assert_eq!(metrics.labels(path).grpc_service, "unknown", "{path}");
        }
        assert_eq!(
            metrics.labels("/grpc.health.v1.Health/Check").grpc_method,
            "Check"
        );
    }

    #[test]
    fn status_values_are_named() {
        assert_eq!(code_name(b"0"), "OK");
        assert_eq!(code_name(b"5"), "NOT_FOUND");
        assert_eq!(code_name(b"16"), "UNAUTHENTICATED");
        assert_eq!(code_name(b"banana"), "UNKNOWN");
    }

    #[tokio::test]
    async fn a_dropped_call_counts_as_cancelled() {
        let mut registry = Registry::default();
        let metrics = RpcMetrics::register(&mut registry, &["orgauth.org.v1.JobService"]);
        let labels = metrics.labels("/orgauth.org.v1.JobService/WatchJob");
        drop(CallRecord {
            metrics: metrics.clone(),
            labels,
            start: Instant::now(),
            done: false,
        });
        let text = render(&registry, &[]).await;
        assert!(
            text.contains(
                "grpc_server_handled_total{grpc_service=\"orgauth.org.v1.JobService\",grpc_method=\"WatchJob\",grpc_code=\"CANCELLED\"} 1"
            ),
            "{text}"
        );
    }
}
