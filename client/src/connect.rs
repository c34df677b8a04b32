//! Turning an endpoint string into a connected tonic [`Channel`]: endpoint
//! parsing and normalization, TLS, HTTP/2 keepalive, and retrying the first
//! connection with exponential backoff and jitter for a bounded time; and
//! the [`Credentials`] every call carries.
//!
//! Once connected, a `Channel` reconnects by itself: a call made while the
//! server is down fails with UNAVAILABLE and a later call reconnects. So the
//! retry here only covers start-up (a CLI started next to a server that is
//! still booting); the watch stream has its own resume logic. A failed TLS
//! handshake is not retried: the same certificates fail the same way.

use std::error::Error as StdError;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use orgauth_runtime::access::BearerToken;
use orgauth_runtime::transport::{ClientTls, TlsError};
use tokio::time::Instant;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tracing::{debug, warn};

use crate::error::{ClientError, Result, is_tls_failure};

/// The channel every stub of this crate calls through: a tonic [`Channel`]
/// whose requests carry the [`Credentials`] (`authorization: Bearer …`).
pub type ClientChannel = InterceptedService<Channel, Credentials>;

/// How to connect. `ConnectOptions::default()` connects in plaintext and
/// sends no token; servers that require one answer UNAUTHENTICATED, so set
/// [`ConnectOptions::token`] (and [`ConnectOptions::tls`] for TLS):
///
/// ```
/// # use orgauth_client::{ClientTls, ConnectOptions};
/// let options = ConnectOptions::default()
///     .with_token("oat_…")
///     .with_tls(ClientTls {
///         ca: Some("certs/ca.pem".into()),
///         // For mutual TLS:
///         identity: Some(("certs/client.pem".into(), "certs/client.key".into())),
///         domain: None,
///     });
/// ```
#[derive(Clone)]
pub struct ConnectOptions {
    /// Overall time allowed for the first connection, retries included.
    /// At least one attempt is always made.
    pub timeout: Duration,
    /// Delay before the first retry; it doubles (plus up to 100% jitter, so
    /// many clients started together do not retry in lockstep) up to
    /// `max_backoff`.
    pub min_backoff: Duration,
    /// Cap on the delay between two attempts.
    pub max_backoff: Duration,
    /// Interval of HTTP/2 keepalive pings. A long WatchJob can be silent for
    /// minutes; without pings a server that vanished without closing the
    /// connection (host down, network cut) would never be noticed.
    /// `None` disables them.
    pub keepalive_interval: Option<Duration>,
    /// How long to wait for a keepalive ping's answer before declaring the
    /// connection dead.
    pub keepalive_timeout: Duration,
    /// The bearer token's secret (`oat_…`, from `orgctl token issue`), sent
    /// as `authorization: Bearer <token>` on every call. `None` sends no
    /// credentials. Never printed: `Debug` shows it redacted.
    pub token: Option<String>,
    /// TLS settings: the CA that signs the server's certificate, the client
    /// certificate for mutual TLS, the name to check. `Some` makes a bare
    /// `host:port` endpoint `https://` and is required for `https://`;
    /// `None` speaks plaintext HTTP/2 (`http://`).
    pub tls: Option<ClientTls>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            min_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
            keepalive_interval: Some(Duration::from_secs(30)),
            keepalive_timeout: Duration::from_secs(10),
            token: None,
            tls: None,
        }
    }
}

impl fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("timeout", &self.timeout)
            .field("min_backoff", &self.min_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("keepalive_interval", &self.keepalive_interval)
            .field("keepalive_timeout", &self.keepalive_timeout)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .finish()
    }
}

impl ConnectOptions {
    /// Sends this bearer token (the `oat_…` secret) with every call.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Connects over TLS with these settings.
    pub fn with_tls(mut self, tls: ClientTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The credentials these options send with every call.
    pub fn credentials(&self) -> Result<Credentials> {
        match &self.token {
            Some(token) => Credentials::bearer(token),
            None => Ok(Credentials::none()),
        }
    }
}

/// What every call carries: `authorization: Bearer <token>`, or nothing.
/// A tonic [`Interceptor`], cheap to clone; `Debug` never shows the token.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    bearer: Option<BearerToken>,
}

impl Credentials {
    /// No credentials: calls go without an `authorization` header.
    pub fn none() -> Self {
        Self::default()
    }

    /// A bearer token (surrounding whitespace ignored). Fails, without
    /// echoing it, if the token is empty or holds anything but printable
    /// ASCII: spaces, control or non-ASCII characters.
    pub fn bearer(token: &str) -> Result<Self> {
        let token = token.trim();
        if token.is_empty() {
            return Err(ClientError::InvalidToken {
                reason: "it is empty".to_owned(),
            });
        }
        // RFC 6750 tokens are printable ASCII without spaces; anything else
        // is a copy-and-paste accident the server could only call malformed.
        if !token.bytes().all(|byte| byte.is_ascii_graphic()) {
            return Err(ClientError::InvalidToken {
                reason: "it holds spaces, control characters or non-ASCII characters".to_owned(),
            });
        }
        let bearer =
            BearerToken::new(token).map_err(|reason| ClientError::InvalidToken { reason })?;
        Ok(Self {
            bearer: Some(bearer),
        })
    }

    /// Whether a token is sent.
    pub fn has_token(&self) -> bool {
        self.bearer.is_some()
    }
}

impl Interceptor for Credentials {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        match &mut self.bearer {
            Some(bearer) => bearer.call(request),
            None => Ok(request),
        }
    }
}

/// The shortest time one connection attempt is given, so that a zero or
/// nearly spent timeout still makes one real attempt.
const MIN_ATTEMPT_TIME: Duration = Duration::from_millis(100);

/// Normalizes an endpoint string for a plaintext (`tls` false) or TLS
/// (`tls` true) connection: a bare `host:port` gets `http://` or
/// `https://` accordingly; an explicit scheme must match (`https://` needs
/// TLS options, and `http://` with TLS options is refused rather than
/// silently sending the token in the clear); any other scheme is rejected.
pub fn normalize_endpoint(endpoint: &str, tls: bool) -> Result<String> {
    let invalid = |reason: &str| ClientError::InvalidEndpoint {
        endpoint: endpoint.to_owned(),
        reason: reason.to_owned(),
    };
    let trimmed = endpoint.trim();
    if trimmed.is_empty() {
        return Err(invalid("it is empty"));
    }
    let with_scheme = match (trimmed.split_once("://"), tls) {
        (None, false) => format!("http://{trimmed}"),
        (None, true) => format!("https://{trimmed}"),
        (Some(("http", _)), false) | (Some(("https", _)), true) => trimmed.to_owned(),
        (Some(("http", _)), true) => {
            return Err(invalid(
                "TLS options are set but the endpoint is http:// (plaintext): use https:// or a bare host:port",
            ));
        }
        (Some(("https", _)), false) => {
            return Err(invalid(
                "https:// needs TLS options with the CA that signed the server's certificate \
                 (ConnectOptions::tls; orgctl --ca-cert)",
            ));
        }
        (Some((_, _)), _) => {
            return Err(invalid("only http:// and https:// endpoints are supported"));
        }
    };
    let uri: tonic::codegen::http::Uri = with_scheme
        .parse()
        .map_err(|error| invalid(&format!("not a URI: {error}")))?;
    if uri.host().is_none_or(str::is_empty) {
        return Err(invalid("it names no host"));
    }
    Ok(with_scheme)
}

/// Builds the tonic endpoint for a normalized endpoint string.
fn endpoint_config(normalized: &str, options: &ConnectOptions) -> Result<Endpoint> {
    let mut endpoint = Endpoint::from_shared(normalized.to_owned())
        .map_err(|error| ClientError::InvalidEndpoint {
            endpoint: normalized.to_owned(),
            reason: error.to_string(),
        })?
        .tcp_nodelay(true);
    if let Some(interval) = options.keepalive_interval {
        endpoint = endpoint
            .http2_keep_alive_interval(interval)
            .keep_alive_timeout(options.keepalive_timeout);
    }
    if let Some(tls) = &options.tls {
        if tls.ca.is_none() {
            // tonic is built without system or webpki roots: with no CA
            // nothing could ever be trusted.
            return Err(ClientError::InvalidEndpoint {
                endpoint: normalized.to_owned(),
                reason: "TLS needs a CA certificate (ClientTls::ca; orgctl --ca-cert): \
                         this client trusts no built-in roots"
                    .to_owned(),
            });
        }
        endpoint = endpoint
            .tls_config(tls.config()?)
            .map_err(|error| ClientError::Tls(TlsError::Config(error)))?;
    }
    Ok(endpoint)
}

/// Whether `host` is this machine, where plaintext is acceptable.
fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Connects to `endpoint`, retrying with exponential backoff and jitter
/// until `options.timeout` has passed. TLS handshake failures end at once
/// with [`ClientError::TlsHandshake`].
pub async fn connect_channel(endpoint: &str, options: &ConnectOptions) -> Result<Channel> {
    let normalized = normalize_endpoint(endpoint, options.tls.is_some())?;
    let config = endpoint_config(&normalized, options)?;
    if options.token.is_some()
        && options.tls.is_none()
        && !config.uri().host().is_some_and(is_loopback)
    {
        warn!(endpoint = %normalized, "sending a bearer token over plaintext HTTP/2 to another host; use TLS (https://) outside loopback");
    }
    let deadline = Instant::now() + options.timeout;
    let mut delays = ExponentialBuilder::new()
        .with_min_delay(options.min_backoff)
        .with_max_delay(options.max_backoff)
        .without_max_times()
        .with_jitter()
        .build();
    let mut attempts = 0_u32;
    loop {
        attempts += 1;
        let attempt_time = deadline
            .saturating_duration_since(Instant::now())
            .max(MIN_ATTEMPT_TIME);
        let error: Box<dyn StdError + Send + Sync> =
            match tokio::time::timeout(attempt_time, config.connect()).await {
                Ok(Ok(channel)) => return Ok(channel),
                Ok(Err(error)) if is_tls_failure(&error) => {
                    return Err(ClientError::TlsHandshake {
                        endpoint: normalized,
                        source: Box::new(error),
                    });
                }
                Ok(Err(error)) => Box::new(error),
                Err(_elapsed) => format!(
                    "connection attempt timed out after {}",
                    humantime::format_duration(attempt_time)
                )
                .into(),
            };
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(ClientError::Connect {
                endpoint: normalized,
                timeout: options.timeout,
                attempts,
                source: error,
            });
        }
        // The last wait is cut short so that one more attempt is made at
        // the deadline rather than giving up early.
        let delay = delays.next().unwrap_or(options.max_backoff).min(remaining);
        debug!(endpoint = %normalized, attempts, ?delay, error = %error, "connect failed; retrying");
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_host_and_port_gets_http_without_tls_and_https_with_it() {
        assert_eq!(
            normalize_endpoint("127.0.0.1:50051", false).unwrap(),
            "http://127.0.0.1:50051"
        );
        assert_eq!(
            normalize_endpoint(" localhost:1 ", false).unwrap(),
            "http://localhost:1"
        );
        assert_eq!(
            normalize_endpoint("127.0.0.1:50051", true).unwrap(),
            "https://127.0.0.1:50051"
        );
        assert_eq!(
            normalize_endpoint(" orgs.example.com:443 ", true).unwrap(),
            "https://orgs.example.com:443"
        );
    }

    #[test]
    fn explicit_schemes_are_kept_when_they_match_the_tls_setting() {
        assert_eq!(
            normalize_endpoint("http://[::1]:50052", false).unwrap(),
            "http://[::1]:50052"
        );
        assert_eq!(
            normalize_endpoint("https://[::1]:50052", true).unwrap(),
            "https://[::1]:50052"
        );
    }

    #[test]
    fn unusable_endpoints_are_rejected_with_a_reason() {
        for (endpoint, tls, reason) in [
            ("", false, "empty"),
            ("", true, "empty"),
            ("https://example.com", false, "needs TLS options"),
            ("http://example.com", true, "use https://"),
            ("unix:///tmp/socket", false, "only http:// and https://"),
            ("grpcs://example.com", true, "only http:// and https://"),
            ("http://", false, "not a URI"),
            ("https://", true, "not a URI"),
            ("http://exa mple:1", false, "not a URI"),
        ] {
            let error = normalize_endpoint(endpoint, tls).unwrap_err();
            assert!(
                matches!(error, ClientError::InvalidEndpoint { .. }),
                "{endpoint:?}: {error}"
            );
            assert!(
                error.to_string().contains(reason),
                "{endpoint:?} tls={tls}: {error}"
            );
        }
    }

    #[test]
    fn tls_without_a_ca_is_refused_before_connecting() {
        let options = ConnectOptions::default().with_tls(ClientTls::default());
        let error = endpoint_config("https://127.0.0.1:1", &options).unwrap_err();
        assert!(error.to_string().contains("CA certificate"), "{error}");
        assert_eq!(error.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn unreadable_tls_files_are_reported_with_their_path() {
        let options = ConnectOptions::default().with_tls(ClientTls {
            ca: Some("/nonexistent/ca.pem".into()),
            ..ClientTls::default()
        });
        let error = endpoint_config("https://127.0.0.1:1", &options).unwrap_err();
        assert!(matches!(error, ClientError::Tls(_)), "{error}");
        assert!(error.to_string().contains("/nonexistent/ca.pem"), "{error}");
        assert_eq!(error.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn the_token_is_sent_and_never_shown() {
        let secret = "oat_0123456789abcdefghijklmnopqrstuvwxyzABCDEFG";
        let options = ConnectOptions::default().with_token(secret);
        assert!(!format!("{options:?}").contains(secret));
        let mut credentials = options.credentials().unwrap();
        assert!(credentials.has_token());
        assert!(!format!("{credentials:?}").contains(secret));
        let request = credentials.call(tonic::Request::new(())).unwrap();
        assert_eq!(
            request.metadata().get("authorization").unwrap(),
            &format!("Bearer {secret}")
        );

        let mut none = ConnectOptions::default().credentials().unwrap();
        assert!(!none.has_token());
        let request = none.call(tonic::Request::new(())).unwrap();
        assert!(request.metadata().get("authorization").is_none());
    }

    #[test]
    fn tokens_that_cannot_be_sent_are_refused_without_echoing_them() {
        for token in [
            "",
            "  ",
            "oat_\u{e9}t\u{e9}",
            "oat_a\nb",
            "ops admin sha256:00",
        ] {
            let error = Credentials::bearer(token).unwrap_err();
            assert!(
                matches!(error, ClientError::InvalidToken { .. }),
                "{token:?}: {error}"
            );
            if !token.trim().is_empty() {
                assert!(!error.to_string().contains(token), "{error}");
            }
        }
    }

    #[test]
    fn loopback_hosts_are_recognised() {
        for host in ["localhost", "127.0.0.1", "127.1.2.3", "[::1]", "::1"] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["example.com", "10.0.0.1", "[::2]"] {
            assert!(!is_loopback(host), "{host}");
        }
    }

    #[tokio::test]
    async fn connecting_to_a_closed_port_gives_up_after_the_timeout() {
        // Bind then drop a listener so the port is (almost certainly) closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let options = ConnectOptions {
            timeout: Duration::from_millis(300),
            ..ConnectOptions::default()
        };
        let started = std::time::Instant::now();
        let error = connect_channel(&format!("127.0.0.1:{port}"), &options)
            .await
            .unwrap_err();
        let elapsed = started.elapsed();
        assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
        match error {
            ClientError::Connect { attempts, .. } => assert!(attempts >= 2, "{attempts}"),
            other => panic!("unexpected error: {other}"),
        }
    }
}
