//! Turning an endpoint string into a connected tonic [`Channel`]: endpoint
//! parsing and normalization, HTTP/2 keepalive, and retrying the first
//! connection with exponential backoff and jitter for a bounded time.
//!
//! Once connected, a `Channel` reconnects by itself: a call made while the
//! server is down fails with UNAVAILABLE and a later call reconnects. So the
//! retry here only covers start-up (a CLI started next to a server that is
//! still booting); the watch stream has its own resume logic.

use std::error::Error as StdError;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tracing::debug;

use crate::error::{ClientError, Result};

/// How to connect. `ConnectOptions::default()` suits most callers.
#[derive(Debug, Clone)]
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
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            min_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
            keepalive_interval: Some(Duration::from_secs(30)),
            keepalive_timeout: Duration::from_secs(10),
        }
    }
}

/// The shortest time one connection attempt is given, so that a zero or
/// nearly spent timeout still makes one real attempt.
const MIN_ATTEMPT_TIME: Duration = Duration::from_millis(100);

/// Normalizes an endpoint string: a bare `host:port` gets `http://`;
/// anything but `http://` is rejected because this client is built without
/// TLS support.
pub fn normalize_endpoint(endpoint: &str) -> Result<String> {
    let invalid = |reason: &str| ClientError::InvalidEndpoint {
        endpoint: endpoint.to_owned(),
        reason: reason.to_owned(),
    };
    let trimmed = endpoint.trim();
    if trimmed.is_empty() {
        return Err(invalid("it is empty"));
    }
    let with_scheme = match trimmed.split_once("://") {
        None => format!("http://{trimmed}"),
        Some(("http", _)) => trimmed.to_owned(),
        Some((_, _)) => {
            return Err(invalid(
                "only http:// endpoints are supported (this client is built without TLS)",
            ));
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
    Ok(endpoint)
}

/// Connects to `endpoint`, retrying with exponential backoff and jitter
/// until `options.timeout` has passed.
pub async fn connect_channel(endpoint: &str, options: &ConnectOptions) -> Result<Channel> {
    let normalized = normalize_endpoint(endpoint)?;
    let config = endpoint_config(&normalized, options)?;
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
    fn bare_host_and_port_gets_http() {
        assert_eq!(
            normalize_endpoint("127.0.0.1:50051").unwrap(),
            "http://127.0.0.1:50051"
        );
        assert_eq!(
            normalize_endpoint(" localhost:1 ").unwrap(),
            "http://localhost:1"
        );
    }

    #[test]
    fn http_endpoints_are_kept() {
        assert_eq!(
            normalize_endpoint("http://[::1]:50052").unwrap(),
            "http://[::1]:50052"
        );
    }

    #[test]
    fn unusable_endpoints_are_rejected_with_a_reason() {
        for (endpoint, reason) in [
            ("", "empty"),
            ("https://example.com", "TLS"),
            ("unix:///tmp/socket", "only http://"),
            ("http://", "not a URI"),
            ("http://exa mple:1", "not a URI"),
        ] {
            let error = normalize_endpoint(endpoint).unwrap_err();
            assert!(
                matches!(error, ClientError::InvalidEndpoint { .. }),
                "{endpoint:?}: {error}"
            );
            assert!(error.to_string().contains(reason), "{endpoint:?}: {error}");
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
