//! Transport security and limits, the same flags for both servers:
//! the tokens file, TLS and mutual TLS, message and stream limits,
//! per-connection load shedding, keepalive and a ceiling on call time.
//!
//! [`ServeArgs::server`] turns the flags into a configured tonic `Server`;
//! [`ClientTls`] is the client half, used by org-server to call Auth.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig, Identity, Server, ServerTlsConfig};
use tower_layer::{Identity as NoLayer, Stack};

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

/// The tonic `Server` [`ServeArgs::server`] builds.
pub type GrpcServer = Server<Stack<DetailsLayer, NoLayer>>;

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
}

fn read_pem(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.display().to_string(),
        source,
    })
}

impl ServeArgs {
    /// The server's TLS settings, `None` for plaintext.
    pub fn tls(&self) -> Result<Option<ServerTlsConfig>, TlsError> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let identity = Identity::from_pem(
            read_pem("TLS certificate", cert)?,
            read_pem("TLS key", key)?,
        );
        let mut tls = ServerTlsConfig::new().identity(identity);
        if let Some(ca) = &self.tls_client_ca {
            tls = tls
                .client_ca_root(Certificate::from_pem(read_pem("client CA", ca)?))
                .client_auth_optional(false);
        }
        Ok(Some(tls))
    }

    /// A `Server` with these limits and TLS, whose own statuses carry
    /// ErrorInfo in `domain` ([`DetailsLayer`]). Message size limits are
    /// per service: apply [`ServeArgs::max_message_bytes`] where services
    /// are built.
    pub fn server(&self, domain: &'static str) -> Result<GrpcServer, TlsError> {
        let server = Server::builder()
            .max_concurrent_streams(self.max_streams_per_connection)
            .concurrency_limit_per_connection(self.max_inflight_per_connection)
            .load_shed(true)
            .timeout(self.max_call_time)
            .http2_keepalive_interval(Some(self.keepalive_interval))
            .http2_keepalive_timeout(Some(self.keepalive_timeout));
        let server = match self.tls()? {
            Some(tls) => server.tls_config(tls)?,
            None => server,
        };
        Ok(server.layer(DetailsLayer::new(domain)))
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
