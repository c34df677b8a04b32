//! Assembles auth-server (storage, AuthService behind the authenticator,
//! health, reflection, TLS and transport limits) and runs it until shutdown.
//!
//! Everything that can be wrong with the configuration is found in
//! [`AuthServer::build`], before the address is bound and announced: an
//! unreadable or invalid tokens file, unreadable or unusable TLS files, a
//! database that cannot be opened. So `listening ADDR` means ready.
//!
//! Only AuthService requires a bearer token; health and reflection stay
//! open, so probes and grpcurl's `list`/`describe` work without one.
//!
//! Shutdown order: health goes NOT_SERVING, the listener closes, in-flight
//! calls finish, the database is closed; all of it bounded by the grace
//! period, after which the server returns anyway. tonic alone would wait
//! for every connection to close, forever if a client keeps a stream open
//! (a health Watch, say).

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;

use orgauth_proto::auth::v1::auth_service_server::AuthServiceServer;
use orgauth_runtime::access::Authenticator;
use orgauth_runtime::metrics::{MetricsEndpoint, RpcMetrics};
use orgauth_runtime::transport::{GrpcServer, ServerTls, TlsError, WebAccess};
use orgauth_security::{TokenFileError, TokenSet};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic_health::ServingStatus;
use tracing::{info, warn};

use crate::app::App;
use crate::config::Config;
use crate::error::{AuthError, ERROR_DOMAIN};
use crate::grpc::AuthGrpc;
use crate::store::{self, AuthStore};

/// The one gRPC service auth-server serves (besides health and reflection).
const SERVICE_NAME: &str = "orgauth.auth.v1.AuthService";

/// Why the server could not start, or stopped other than by shutdown.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The tokens file is missing, unreadable, empty or has a bad line.
    #[error("{0}")]
    Tokens(#[from] TokenFileError),
    /// A TLS file is missing or does not hold a usable certificate or key.
    #[error("{0}")]
    Tls(#[from] TlsError),
    #[error("cannot open the database: {0}")]
    Store(#[from] AuthError),
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error(transparent)]
    Metrics(#[from] orgauth_runtime::metrics::BindError),
}

/// An auth-server whose configuration checked out and whose storage is open
/// and migrated, ready to serve.
///
/// Building before binding lets a bad flag or file fail the process before
/// it announces an address, so "listening" means ready.
pub struct AuthServer {
    /// Flags, for the grace period and the message size limit.
    config: Config,
    /// The service's logic, shared with the gRPC adapter.
    app: App,
    /// Kept to close the database after the last call has drained.
    store: Arc<dyn AuthStore>,
    /// Checks every AuthService call's bearer token.
    authenticator: Authenticator,
    /// tonic's server with TLS and the transport limits applied.
    server: GrpcServer,
    /// TLS the server terminates itself (h2 only), if configured.
    tls: Option<ServerTls>,
    /// Per-call metrics, served at `--metrics-listen`.
    metrics: MetricsEndpoint,
}

impl AuthServer {
    /// Loads the tokens file, prepares TLS and the transport limits, and
    /// opens (creating and migrating) the database `config` names.
    pub async fn build(config: Config) -> Result<Self, ServeError> {
        let tokens = TokenSet::load(&config.serve.tokens_file)?;
        info!(
            tokens = tokens.len(),
            file = %config.serve.tokens_file.display(),
            "loaded tokens"
        );
        let mut metrics = MetricsEndpoint::bind(config.telemetry.metrics_listen).await?;
        let rpc = RpcMetrics::register(metrics.registry(), &[SERVICE_NAME]);
        // gRPC over HTTP/2 only: no browser calls Auth.
        let server = config
            .serve
            .server(ERROR_DOMAIN, rpc, &WebAccess::default());
        let tls = config.serve.tls(false)?;
        let store = store::open(&config.database, &config.db.options()).await?;
        let app = App::open(Arc::clone(&store)).await?;
        Ok(AuthServer {
            config,
            app,
            store,
            authenticator: Authenticator::new(tokens, ERROR_DOMAIN),
            server,
            tls,
            metrics,
        })
    }

    /// Where `/metrics` is served, when `--metrics-listen` is set.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics.local_addr()
    }

    /// The service's logic, for callers in the same process (benchmarks,
    /// tests) that want to skip gRPC.
    pub fn app(&self) -> &App {
        &self.app
    }

    /// Serves on `listener` until `shutdown` completes, then drains within
    /// the grace period. Returns `Ok` after a requested shutdown, even when
    /// the grace period ran out with calls still open.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ServeError> {
        let AuthServer {
            config,
            app,
            store,
            authenticator,
            mut server,
            tls,
            metrics,
        } = self;

        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<AuthServiceServer<AuthGrpc>>().await;
        // "" stands for the whole server: what a probe asks when it names
        // no service.
        health.set_service_status("", ServingStatus::Serving).await;

        let reflection_v1 = orgauth_runtime::reflection(&[SERVICE_NAME]).build_v1()?;
        let reflection_v1alpha = orgauth_runtime::reflection(&[SERVICE_NAME]).build_v1alpha()?;

        let max_message = config.serve.max_message_bytes;
        let auth_service = InterceptedService::new(
            AuthServiceServer::new(AuthGrpc::new(app))
                .max_decoding_message_size(max_message)
                .max_encoding_message_size(max_message),
            authenticator,
        );

        let addr = listener
            .local_addr()
            .map_or_else(|err| format!("unknown ({err})"), |addr| addr.to_string());
        let incoming = orgauth_runtime::incoming::incoming(listener, tls);
        // Tells tonic to stop accepting; cancelled only once health says
        // NOT_SERVING.
        let stop_accepting = CancellationToken::new();
        metrics.start(stop_accepting.clone().cancelled_owned());
        let serve = server
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(auth_service)
            .serve_with_incoming_shutdown(incoming, stop_accepting.clone().cancelled_owned());
        let mut serve = pin!(serve);
        info!(
            %addr,
            database = %config.database,
            tls = config.serve.tls_cert.is_some(),
            mutual_tls = config.serve.tls_client_ca.is_some(),
            "auth-server serving"
        );

        tokio::select! {
            // tonic stops by itself only when it cannot go on serving.
            served = &mut serve => return served.map_err(ServeError::from),
            () = shutdown => {}
        }

        let grace = config.shutdown_grace;
        let deadline = Instant::now() + grace;
        info!(?grace, "shutting down: health NOT_SERVING, draining calls");
        health
            .set_not_serving::<AuthServiceServer<AuthGrpc>>()
            .await;
        health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        stop_accepting.cancel();
        match tokio::time::timeout_at(deadline, &mut serve).await {
            Ok(served) => served?,
            Err(_) => warn!(
                ?grace,
                "grace period over with calls still open; stopping anyway"
            ),
        }
        if tokio::time::timeout_at(deadline, store.close())
            .await
            .is_err()
        {
            warn!("database still in use at the end of the grace period");
        }
        info!("auth-server stopped");
        Ok(())
    }
}

/// Builds and serves: the one entry point, used by `main` and by tests with
/// a listener bound to port 0.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    AuthServer::build(config)
        .await?
        .serve(listener, shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use orgauth_proto::auth::v1 as pb;
    use orgauth_proto::auth::v1::auth_service_client::AuthServiceClient;
    use orgauth_runtime::access::BearerToken;
    use orgauth_runtime::transport::ClientTls;
    use orgauth_security::Role;
    use orgauth_security::token::issue;
    use tokio::sync::oneshot;
    use tonic::Code;
    use tonic::service::interceptor::InterceptedService;
    use tonic::transport::Channel;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus as Status;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_types::StatusExt;

    use super::*;

    /// The secrets of the tokens a test server accepts.
    struct Secrets {
        service: String,
        admin: String,
        acme: String,
    }

    /// Writes a tokens file with one token per role into `dir`.
    fn write_tokens(dir: &Path) -> (PathBuf, Secrets) {
        let service = issue("org-server", Role::Service, &[], None).unwrap();
        let admin = issue("ops", Role::Admin, &[], None).unwrap();
        let acme = issue("acme-bot", Role::Org, &["acme".to_owned()], None).unwrap();
        let path = dir.join("tokens");
        std::fs::write(
            &path,
            format!(
                "# test tokens\n{}\n{}\n{}\n",
                service.line, admin.line, acme.line
            ),
        )
        .unwrap();
        let secrets = Secrets {
            service: service.secret,
            admin: admin.secret,
            acme: acme.secret,
        };
        (path, secrets)
    }

    /// A config as the command line gives it: port 0, a database and the
    /// tokens file in `dir`, plus `extra` flags.
    fn config(dir: &Path, grace: Duration, extra: &[&str]) -> Config {
        let database = format!("sqlite://{}", dir.join("auth.db").display());
        let tokens = dir.join("tokens").display().to_string();
        let grace = format!("{}ms", grace.as_millis());
        let mut args = vec![
            "auth-server",
            "--listen",
            "127.0.0.1:0",
            "--database",
            &database,
            "--tokens-file",
            &tokens,
            "--shutdown-grace",
            &grace,
        ];
        args.extend_from_slice(extra);
        orgauth_runtime::try_parse_config("AUTH_SERVER_", args).unwrap()
    }

    struct Running {
        addr: std::net::SocketAddr,
        stop: oneshot::Sender<()>,
        server: tokio::task::JoinHandle<Result<(), ServeError>>,
        db_path: PathBuf,
        secrets: Secrets,
        dir: tempfile::TempDir,
    }

    async fn start(grace: Duration) -> Running {
        start_with(tempfile::tempdir().unwrap(), grace, &[]).await
    }

    async fn start_with(dir: tempfile::TempDir, grace: Duration, extra: &[&str]) -> Running {
        let (_, secrets) = write_tokens(dir.path());
        let config = config(dir.path(), grace, extra);
        let listener = TcpListener::bind(config.listen).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(run(listener, config, async {
            let _ = stopped.await;
        }));
        Running {
            addr,
            stop,
            server,
            db_path: dir.path().join("auth.db"),
            secrets,
            dir,
        }
    }

    async fn channel(addr: std::net::SocketAddr) -> Channel {
        Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    type Client = AuthServiceClient<InterceptedService<Channel, BearerToken>>;

    /// An AuthService client that sends `secret` as its bearer token.
    fn client(channel: Channel, secret: &str) -> Client {
        AuthServiceClient::with_interceptor(channel, BearerToken::new(secret).unwrap())
    }

    async fn health_of(channel: Channel, service: &str) -> Status {
        let response = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .unwrap()
            .into_inner();
        response.status()
    }

    fn reason(status: &tonic::Status) -> String {
        let details = status.get_error_details();
        let info = details
            .error_info()
            .unwrap_or_else(|| panic!("no ErrorInfo: {status:?}"));
        assert_eq!(info.domain, ERROR_DOMAIN);
        info.reason.clone()
    }

    #[tokio::test]
    async fn serves_auth_health_and_stops_cleanly() {
        let running = start(Duration::from_secs(5)).await;
        let channel = channel(running.addr).await;
        assert_eq!(health_of(channel.clone(), "").await, Status::Serving);
        assert_eq!(
            health_of(channel.clone(), "orgauth.auth.v1.AuthService").await,
            Status::Serving
        );
        let policy = client(channel.clone(), &running.secrets.service)
            .set_org_sso_policy(pb::SetOrgSsoPolicyRequest {
                org_id: "acme".into(),
                allow_custom_sso: true,
            })
            .await
            .unwrap()
            .into_inner()
            .policy
            .unwrap();
        assert!(policy.allow_custom_sso);
        drop(channel);

        running.stop.send(()).unwrap();
        let stopped = tokio::time::timeout(Duration::from_secs(5), running.server).await;
        stopped.unwrap().unwrap().unwrap();
    }

    #[tokio::test]
    async fn auth_service_needs_a_token_but_health_and_reflection_do_not() {
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

        let running = start(Duration::from_secs(5)).await;
        let channel = channel(running.addr).await;
        assert_eq!(health_of(channel.clone(), "").await, Status::Serving);

        let mut answers = ServerReflectionClient::new(channel.clone())
            .server_reflection_info(tokio_stream::once(ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            }))
            .await
            .unwrap()
            .into_inner();
        let answer = answers.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
            panic!("{answer:?}");
        };
        assert!(
            list.service
                .iter()
                .any(|s| s.name == "orgauth.auth.v1.AuthService"),
            "{list:?}"
        );

        let request = || pb::GetOrgSsoPolicyRequest {
            org_id: "acme".into(),
        };
        let status = AuthServiceClient::new(channel.clone())
            .get_org_sso_policy(request())
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
        assert_eq!(reason(&status), "TOKEN_MISSING");

        let unknown = issue("stranger", Role::Admin, &[], None).unwrap().secret;
        for (secret, expected) in [
            (unknown.as_str(), "TOKEN_UNKNOWN"),
            ("oat_short", "TOKEN_MALFORMED"),
            (
                &running.secrets.service[..running.secrets.service.len() - 1],
                "TOKEN_MALFORMED",
            ),
        ] {
            let status = client(channel.clone(), secret)
                .get_org_sso_policy(request())
                .await
                .unwrap_err();
            assert_eq!(status.code(), Code::Unauthenticated);
            assert_eq!(reason(&status), expected);
            assert!(!status.message().contains(secret), "{}", status.message());
        }

        for secret in [
            &running.secrets.service,
            &running.secrets.admin,
            &running.secrets.acme,
        ] {
            client(channel.clone(), secret)
                .get_org_sso_policy(request())
                .await
                .unwrap();
        }
        let status = client(channel.clone(), &running.secrets.admin)
            .set_org_sso_policy(pb::SetOrgSsoPolicyRequest {
                org_id: "acme".into(),
                allow_custom_sso: true,
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);
        assert_eq!(reason(&status), "ROLE_NOT_PERMITTED");
        let status = client(channel.clone(), &running.secrets.acme)
            .get_org_sso_policy(pb::GetOrgSsoPolicyRequest {
                org_id: "globex".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);
        assert_eq!(reason(&status), "ORG_ACCESS_DENIED");
    }

    #[tokio::test]
    async fn an_oversized_message_is_refused_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let running = start_with(
            dir,
            Duration::from_secs(5),
            &["--max-message-bytes", "4096"],
        )
        .await;
        let mut service = client(channel(running.addr).await, &running.secrets.service);
        service
            .set_org_sso_policy(pb::SetOrgSsoPolicyRequest {
                org_id: "acme".into(),
                allow_custom_sso: true,
            })
            .await
            .unwrap();
        let status = service
            .link_sso(pb::LinkSsoRequest {
                org_id: "acme".into(),
                member_ids: (0..1000).map(|i| format!("member-{i:08}")).collect(),
            })
            .await
            .unwrap_err();
        // tonic's codec refuses it before the handler runs (OUT_OF_RANGE);
        // the DetailsLayer turns that into RESOURCE_EXHAUSTED with a reason.
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert_eq!(
            status
                .get_error_details()
                .error_info()
                .map(|i| i.reason.as_str()),
            Some("MESSAGE_TOO_LARGE")
        );
        let listed = service
            .list_sso_connections(pb::ListSsoConnectionsRequest {
                org_id: "acme".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(listed.total_size, 0);
    }

    /// The error building a server on `dir` with `extra` flags, if any.
    async fn build_error(dir: &Path, extra: &[&str]) -> Option<ServeError> {
        AuthServer::build(config(dir, Duration::from_secs(1), extra))
            .await
            .err()
    }

    #[tokio::test]
    async fn bad_tokens_and_tls_files_fail_the_build() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");

        // No tokens file at all.
        let err = build_error(dir.path(), &[]).await.unwrap();
        assert!(matches!(err, ServeError::Tokens(_)), "{err:?}");
        assert!(err.to_string().contains("cannot read tokens file"), "{err}");

        for garbage in [
            "",
            "# nothing\n",
            "ops admin not-a-hash\n",
            "\u{0}\u{1}binary",
        ] {
            std::fs::write(&tokens, garbage).unwrap();
            let err = build_error(dir.path(), &[]).await.unwrap();
            assert!(matches!(err, ServeError::Tokens(_)), "{garbage:?}: {err:?}");
            assert!(err.to_string().contains("tokens file"), "{err}");
        }
        assert!(
            !dir.path().join("auth.db").exists(),
            "no database before the checks"
        );

        write_tokens(dir.path());
        let missing = [
            "--tls-cert",
            "/nonexistent/cert.pem",
            "--tls-key",
            "/nonexistent/key.pem",
        ];
        let err = build_error(dir.path(), &missing).await.unwrap();
        assert!(matches!(err, ServeError::Tls(_)), "{err:?}");
        assert!(err.to_string().contains("/nonexistent/cert.pem"), "{err}");

        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let junk = junk.display().to_string();
        let err = build_error(dir.path(), &["--tls-cert", &junk, "--tls-key", &junk])
            .await
            .unwrap();
        assert!(matches!(err, ServeError::Tls(_)), "{err:?}");

        assert!(
            build_error(dir.path(), &[]).await.is_none(),
            "a good configuration builds"
        );
    }

    #[tokio::test]
    async fn a_stuck_call_does_not_hold_shutdown_past_the_grace_period() {
        let running = start(Duration::from_millis(300)).await;
        let channel = channel(running.addr).await;
        let mut client = client(channel, &running.secrets.service);
        client
            .set_org_sso_policy(pb::SetOrgSsoPolicyRequest {
                org_id: "acme".into(),
                allow_custom_sso: true,
            })
            .await
            .unwrap();

        // Another process holds SQLite's write lock, so LinkSso waits in the
        // busy handler (up to 5 s) while shutdown is requested.
        let other = sqlx::SqlitePool::connect(&format!("sqlite://{}", running.db_path.display()))
            .await
            .unwrap();
        let lock = other.begin_with("BEGIN IMMEDIATE").await.unwrap();
        let stuck = tokio::spawn(async move {
            client
                .link_sso(pb::LinkSsoRequest {
                    org_id: "acme".into(),
                    member_ids: vec!["m1".into()],
                })
                .await
        });
        tokio::time::sleep(Duration::from_millis(100)).await;

        let started = std::time::Instant::now();
        running.stop.send(()).unwrap();
        let stopped = tokio::time::timeout(Duration::from_secs(3), running.server).await;
        stopped.unwrap().unwrap().unwrap();
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_millis(250),
            "drain waited for the call: {elapsed:?}"
        );
        assert!(
            elapsed < Duration::from_secs(2),
            "but not past the grace: {elapsed:?}"
        );
        drop(lock);
        stuck.abort();
        drop(running.dir);
    }

    /// Makes the test CA and certificates with `scripts/make-test-certs.sh`
    /// (ca, server for localhost/127.0.0.1, client, and rogue-client from
    /// another CA). `None` if the `openssl` command is missing.
    fn make_certs(dir: &Path) -> Option<()> {
        let available = std::process::Command::new("openssl")
            .arg("version")
            .output()
            .is_ok_and(|out| out.status.success());
        if !available {
            eprintln!("openssl not found: skipping the TLS test");
            return None;
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/make-test-certs.sh");
        let status = std::process::Command::new("bash")
            .arg(script)
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "making test certificates failed");
        Some(())
    }

    /// Connects over TLS (trusting the test CA, presenting `identity` if
    /// any) and calls GetOrgSsoPolicy with `secret`.
    async fn call_over_tls(
        addr: std::net::SocketAddr,
        dir: &Path,
        identity: Option<&str>,
        secret: &str,
    ) -> Result<(), String> {
        let tls = ClientTls {
            ca: Some(dir.join("ca.pem")),
            identity: identity.map(|name| {
                (
                    dir.join(format!("{name}.pem")),
                    dir.join(format!("{name}.key")),
                )
            }),
            domain: Some("localhost".to_owned()),
        }
        .config()
        .map_err(|err| err.to_string())?;
        let channel = Channel::from_shared(format!("https://{addr}"))
            .map_err(|err| err.to_string())?
            .tls_config(tls)
            .map_err(|err| err.to_string())?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|err| format!("connect: {err}"))?;
        client(channel, secret)
            .get_org_sso_policy(pb::GetOrgSsoPolicyRequest {
                org_id: "acme".into(),
            })
            .await
            .map(drop)
            .map_err(|status| format!("call: {status:?}"))
    }

    async fn plaintext_call(addr: std::net::SocketAddr, secret: &str) -> Result<(), String> {
        let channel = Channel::from_shared(format!("http://{addr}"))
            .map_err(|err| err.to_string())?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|err| format!("connect: {err}"))?;
        client(channel, secret)
            .get_org_sso_policy(pb::GetOrgSsoPolicyRequest {
                org_id: "acme".into(),
            })
            .await
            .map(drop)
            .map_err(|status| format!("call: {status:?}"))
    }

    #[tokio::test]
    async fn serves_tls_and_mutual_tls() {
        let certs = tempfile::tempdir().unwrap();
        if make_certs(certs.path()).is_none() {
            return;
        }
        let file = |name: &str| certs.path().join(name).display().to_string();
        let (cert, key, ca) = (file("server.pem"), file("server.key"), file("ca.pem"));

        // TLS: a client trusting the CA gets in; plaintext does not.
        let running = start_with(
            tempfile::tempdir().unwrap(),
            Duration::from_secs(1),
            &["--tls-cert", &cert, "--tls-key", &key],
        )
        .await;
        let secret = running.secrets.admin.clone();
        call_over_tls(running.addr, certs.path(), None, &secret)
            .await
            .unwrap();
        assert!(plaintext_call(running.addr, &secret).await.is_err());
        // TLS does not replace the token.
        let err = call_over_tls(running.addr, certs.path(), None, "oat_nope")
            .await
            .unwrap_err();
        assert!(err.contains("Unauthenticated"), "{err}");
        running.stop.send(()).unwrap();
        running.server.await.unwrap().unwrap();

        // Mutual TLS: only a client certificate the CA signed gets in.
        let running = start_with(
            tempfile::tempdir().unwrap(),
            Duration::from_secs(1),
            &[
                "--tls-cert",
                &cert,
                "--tls-key",
                &key,
                "--tls-client-ca",
                &ca,
            ],
        )
        .await;
        let secret = running.secrets.admin.clone();
        call_over_tls(running.addr, certs.path(), Some("client"), &secret)
            .await
            .unwrap();
        for identity in [None, Some("rogue-client")] {
            let refused = call_over_tls(running.addr, certs.path(), identity, &secret).await;
            assert!(refused.is_err(), "{identity:?} was let in");
        }
        assert!(plaintext_call(running.addr, &secret).await.is_err());
        running.stop.send(()).unwrap();
        running.server.await.unwrap().unwrap();
    }
}
