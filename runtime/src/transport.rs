//! Transport security and limits, the same flags for both servers:
//! the tokens file, TLS and mutual TLS, message and stream limits,
//! per-connection load shedding, keepalive and a ceiling on call time.
//!
//! [`ServeArgs::server`] turns the flags into a configured tonic `Server`
//! and [`ServeArgs::tls`] into the TLS the server terminates itself
//! ([`crate::incoming`]); [`ClientTls`] is the client half, used by
//! org-server to call Auth.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};
use tonic::body::Body;
use tonic::codegen::http;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, Server};
use tonic_web::GrpcWebLayer;
use tower_layer::Layer as _;
use tower_layer::{Identity as NoLayer, Stack};

use crate::metrics::{RpcMetrics, RpcMetricsLayer};
use crate::status::DetailsLayer;

/// Flags that secure and bound a server. Flattened into each server's
/// `Config`; [`crate::parse_config`] gives each an environment variable
/// with the server's prefix.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// The bearer tokens this server accepts, one per line as
    /// `NAME ROLE sha256:HASH [orgs=ID,...] [expires=RFC3339]` (issue them
    /// with `orgctl token issue`). Every RPC but health and reflection needs
    /// one; the file holds only hashes.
    #[arg(long, value_name = "PATH")]
    pub tokens_file: PathBuf,

    /// PEM certificate chain to serve TLS with (needs --tls-key). Without
    /// it the server speaks plaintext HTTP/2: keep that to loopback.
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA certificates for mutual TLS: clients must present a
    /// certificate signed by one of them (needs --tls-cert).
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// Largest message accepted or sent, in bytes; a larger request is
    /// refused with RESOURCE_EXHAUSTED (reason MESSAGE_TOO_LARGE).
    #[arg(long, default_value_t = 4 << 20)]
    pub max_message_bytes: usize,

    /// Calls (open watches included) one HTTP/2 connection may have open at
    /// once; clients queue beyond it.
    #[arg(long, default_value_t = 1024)]
    pub max_streams_per_connection: u32,

    /// Calls one connection may have running in a handler at once; further
    /// calls are shed at once with RESOURCE_EXHAUSTED instead of queueing.
    #[arg(long, default_value_t = 256)]
    pub max_inflight_per_connection: usize,

    /// Longest any call's handler may run, whatever deadline the client
    /// sent (a shorter client deadline is honoured too). Streams are bounded
    /// only until their first message.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub max_call_time: Duration,

    /// How often to ping an idle connection, so peers that vanished (and
    /// their watches) are noticed and dropped.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub keepalive_interval: Duration,

    /// How long a keepalive ping may go unanswered before the connection is
    /// closed.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub keepalive_timeout: Duration,
}

/// The tonic `Server` [`ServeArgs::server`] builds: CORS outermost (a
/// preflight is answered before authentication), then gRPC-Web
/// translation, so the metrics and error details below it see plain gRPC.
pub type GrpcServer = Server<
    Stack<
        DetailsLayer,
        Stack<
            RpcMetricsLayer,
            Stack<
                GrpcWebOnlyLayer,
                Stack<tower::util::Either<tower_http::cors::CorsLayer, NoLayer>, NoLayer>,
            >,
        >,
    >,
>;

/// gRPC-Web translation (tonic-web) for gRPC-Web requests only. tonic-web
/// answers 400 to every other HTTP/1.1 request, which would shut out plain
/// HTTP routes (the JSON gateway) sharing the port.
/// Disabled, it passes everything through untranslated.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcWebOnlyLayer {
    pub enabled: bool,
}

impl<S> tower_layer::Layer<S> for GrpcWebOnlyLayer {
    type Service = GrpcWebOnly<S>;

    fn layer(&self, inner: S) -> GrpcWebOnly<S> {
        GrpcWebOnly {
            inner,
            enabled: self.enabled,
        }
    }
}

/// The service [`GrpcWebOnlyLayer`] wraps around the routes.
#[derive(Debug, Clone)]
pub struct GrpcWebOnly<S> {
    inner: S,
    enabled: bool,
}

impl<S, ResBody> tower_service::Service<http::Request<Body>> for GrpcWebOnly<S>
where
    S: tower_service::Service<http::Request<Body>, Response = http::Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send,
    ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<tonic::codegen::StdError> + std::fmt::Display,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let grpc_web = self.enabled
            && request
                .headers()
                .get(http::header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc-web"));
        if grpc_web {
            // Only `inner` was polled ready: the translating wrapper takes
            // that ready instance, and a fresh clone waits for next time.
            let fresh = self.inner.clone();
            let ready = std::mem::replace(&mut self.inner, fresh);
            Box::pin(GrpcWebLayer::new().layer(ready).call(request))
        } else {
            let response = self.inner.call(request);
            Box::pin(async move { Ok(response.await?.map(Body::new)) })
        }
    }
}

/// A TLS file that cannot be used; the process refuses to start.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("TLS configuration: {0}")]
    Config(#[from] tonic::transport::Error),
    #[error("{what} {path} is not usable PEM: {reason}")]
    Pem {
        what: &'static str,
        path: String,
        reason: String,
    },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

fn read_pem(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.display().to_string(),
        source,
    })
}

impl ServeArgs {
    /// The server's TLS settings, `None` for plaintext. With `http1` the
    /// handshake offers `http/1.1` beside `h2`, for the HTTP/1.1 clients
    /// of [`WebAccess`]. Serve with [`crate::incoming::incoming`].
    pub fn tls(&self, http1: bool) -> Result<Option<ServerTls>, TlsError> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let chain = pem_certificates("TLS certificate", cert)?;
        let key_pem = read_pem("TLS key", key)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|err| TlsError::Pem {
            what: "TLS key",
            path: key.display().to_string(),
            reason: err.to_string(),
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()?;
        let builder = match &self.tls_client_ca {
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for certificate in pem_certificates("client CA", ca)? {
                    roots.add(certificate)?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|err| TlsError::Rustls(rustls::Error::General(err.to_string())))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(chain, key)?;
        config.alpn_protocols = if http1 {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        } else {
            vec![b"h2".to_vec()]
        };
        Ok(Some(Arc::new(config)))
    }

    /// A `Server` with these limits, whose own statuses carry ErrorInfo in
    /// `domain` ([`DetailsLayer`]), whose calls are counted in `metrics`
    /// and run in a span joined to the caller's trace, and which answers
    /// HTTP/1.1, gRPC-Web and CORS as `web` says. TLS is not set here: serve
    /// with [`crate::incoming::incoming`] and [`ServeArgs::tls`]. Message
    /// size limits are per service: apply [`ServeArgs::max_message_bytes`]
    /// where services are built.
    pub fn server(&self, domain: &'static str, metrics: RpcMetrics, web: &WebAccess) -> GrpcServer {
        let traced = metrics.clone();
        Server::builder()
            .accept_http1(web.enabled)
            .trace_fn(move |request| crate::telemetry::request_span(request, &traced))
            .max_concurrent_streams(self.max_streams_per_connection)
            .concurrency_limit_per_connection(self.max_inflight_per_connection)
            .load_shed(true)
            .timeout(self.max_call_time)
            .http2_keepalive_interval(Some(self.keepalive_interval))
            .http2_keepalive_timeout(Some(self.keepalive_timeout))
            .layer(tower::util::option_layer(web.cors()))
            .layer(GrpcWebOnlyLayer {
                enabled: web.enabled,
            })
            .layer(RpcMetricsLayer::new(metrics))
            .layer(DetailsLayer::new(domain))
    }
}

/// Reads every certificate of a PEM file.
fn pem_certificates(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_pem(what, path)?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| TlsError::Pem {
            what,
            path: path.display().to_string(),
            reason: err.to_string(),
        })?;
    if certificates.is_empty() {
        return Err(TlsError::Pem {
            what,
            path: path.display().to_string(),
            reason: "no certificate in the file".into(),
        });
    }
    Ok(certificates)
}

/// TLS a server terminates itself: [`ServeArgs::tls`] for
/// [`crate::incoming::incoming`].
pub type ServerTls = Arc<ServerConfig>;

/// What a server serves besides gRPC over HTTP/2: HTTP/1.1 (plain HTTP
/// routes and gRPC-Web; also offered in TLS's ALPN), and CORS for pages of
/// other origins. org-server turns it on; auth-server serves gRPC only.
#[derive(Debug, Clone, Default)]
pub struct WebAccess {
    pub enabled: bool,
    /// Origins (e.g. `https://ops.example.com`) whose pages may call the
    /// server; empty: same-origin pages and non-browser clients only.
    pub cors_origins: Vec<http::HeaderValue>,
}

impl WebAccess {
    fn cors(&self) -> Option<tower_http::cors::CorsLayer> {
        use http::{HeaderName, Method};
        use tower_http::cors::{AllowOrigin, CorsLayer};
        if !self.enabled || self.cors_origins.is_empty() {
            return None;
        }
        let headers = |names: &[&'static str]| -> Vec<HeaderName> {
            names.iter().map(|n| HeaderName::from_static(n)).collect()
        };
        Some(
            CorsLayer::new()
                .allow_origin(AllowOrigin::list(self.cors_origins.iter().cloned()))
                .allow_methods([Method::GET, Method::POST, Method::PATCH])
                .allow_headers(headers(&[
                    "authorization",
                    "content-type",
                    "x-grpc-web",
                    "x-user-agent",
                    "grpc-timeout",
                    "idempotency-key",
                    "last-event-id",
                ]))
                .expose_headers(headers(&[
                    "grpc-status",
                    "grpc-message",
                    "grpc-status-details-bin",
                    "location",
                    "retry-after",
                ]))
                .max_age(std::time::Duration::from_secs(600)),
        )
    }
}

/// The client side of TLS: which CA to trust and, for mutual TLS, which
/// certificate to present.
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    /// PEM CA certificates that sign the server's certificate.
    pub ca: Option<PathBuf>,
    /// PEM certificate and key presented for mutual TLS.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// The name to check the server's certificate against, if not the
    /// endpoint's host.
    pub domain: Option<String>,
}

impl ClientTls {
    pub fn config(&self) -> Result<ClientTlsConfig, TlsError> {
        let mut tls = ClientTlsConfig::new();
        if let Some(ca) = &self.ca {
            tls = tls.ca_certificate(Certificate::from_pem(read_pem("CA certificate", ca)?));
        }
        if let Some((cert, key)) = &self.identity {
            tls = tls.identity(Identity::from_pem(
                read_pem("client certificate", cert)?,
                read_pem("client key", key)?,
            ));
        }
        if let Some(domain) = &self.domain {
            tls = tls.domain_name(domain.clone());
        }
        Ok(tls)
    }
}
