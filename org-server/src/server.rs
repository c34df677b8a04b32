//! Assembles org-server (storage, worker pool, services, health,
//! reflection) and runs it until shutdown.
//!
//! Shutdown order (DESIGN.md invariant 8): health goes NOT_SERVING; the
//! listener stops accepting; the worker pool stops claiming, lets each
//! running batch finish and checkpoint, and hands leases back; open
//! WatchJob streams end with UNAVAILABLE so clients reconnect elsewhere;
//! everything is bounded by the grace period.

use std::future::Future;
use std::sync::Arc;

use orgauth_proto::google::longrunning::operations_server::OperationsServer;
use orgauth_proto::org::v1::job_service_server::JobServiceServer;
use orgauth_proto::org::v1::org_service_server::OrgServiceServer;
use orgauth_runtime::access::{Authenticator, BearerToken};
use orgauth_runtime::database::DatabaseUrl;
use orgauth_runtime::metrics::{MetricsEndpoint, RpcMetrics};
use orgauth_runtime::transport::{ClientTls, GrpcServer, ServerTls, TlsError, WebAccess};
use orgauth_security::{TokenFileError, TokenSet};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tracing::{info, warn};

use crate::app::{App, Guards};
use crate::auth_client::{AuthConnection, GrpcAuthGateway};
use crate::config::Config;
use crate::domain::page::Pages;
use crate::grpc::ERROR_DOMAIN;
use crate::grpc::job_service::JobGrpc;
use crate::grpc::operations::{self, OperationsGrpc};
use crate::grpc::org_service::OrgGrpc;
use crate::jobs::follow::ChangeFollower;
use crate::jobs::hub::WatchHub;
use crate::jobs::runner::{Runner, RunnerConfig};
use crate::jobs::worker::{Wakeup, WorkerConfig, WorkerPool};
use crate::jobs::{RunningJobs, retention};
use crate::limits::{OrgUpdateLimiter, WatchLimits};
use crate::metrics::JobMetrics;
use crate::store::{self, Store, job_changes};

/// The gRPC services org-server serves besides health and reflection:
/// what reflection advertises and what the call metrics label.
const SERVICES: [&str; 3] = [
    "orgauth.org.v1.OrgService",
    "orgauth.org.v1.JobService",
    "google.longrunning.Operations",
];

/// Why the server could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Setup(#[from] crate::error::Error),
    #[error(transparent)]
    Tokens(#[from] TokenFileError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("{0}")]
    Config(String),
    #[error("reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error(transparent)]
    Metrics(#[from] orgauth_runtime::metrics::BindError),
}

/// A fully wired org-server whose storage is open and migrated, ready to
/// serve. Building before binding means a bad `--database` fails the
/// process before it announces an address.
pub struct OrgServer {
    config: Config,
    store: Arc<dyn Store>,
    app: Arc<App>,
    authenticator: Authenticator,
    /// Limits and TLS applied; built here so a bad TLS file fails `build`.
    server: GrpcServer,
    /// TLS the server terminates itself (h2 and http/1.1), if configured.
    tls: Option<ServerTls>,
    pool: Option<Arc<WorkerPool>>,
    /// Applies other replicas' job changes (PostgreSQL only).
    follower: Option<ChangeFollower>,
    /// Every metric, served at `--metrics-listen`.
    metrics: MetricsEndpoint,
    stop: CancellationToken,
}

/// The token org-server presents to Auth, from the file or the variable.
fn auth_token(config: &Config) -> Result<BearerToken, ServeError> {
    let secret = match (&config.auth_token_file, &config.auth_token) {
        (Some(path), _) => std::fs::read_to_string(path).map_err(|err| {
            ServeError::Config(format!(
                "cannot read --auth-token-file {}: {err}",
                path.display()
            ))
        })?,
        (None, Some(secret)) => secret.0.clone(),
        (None, None) => {
            return Err(ServeError::Config(
                "org-server needs the service-role token it presents to Auth: \
                 pass --auth-token-file PATH or set ORG_SERVER_AUTH_TOKEN \
                 (or run an API-only replica with --workers 0)"
                    .into(),
            ));
        }
    };
    let secret = secret.trim();
    if !orgauth_security::token::well_formed(secret) {
        return Err(ServeError::Config(
            "the Auth token (--auth-token-file / ORG_SERVER_AUTH_TOKEN) is not a token secret: \
             give the secret `orgctl token issue` printed, not its tokens-file line"
                .into(),
        ));
    }
    BearerToken::new(secret).map_err(ServeError::Config)
}

/// How org-server reaches Auth over TLS, if it does. Combinations that
/// would silently do something else are refused: TLS options with an
/// http:// endpoint would send the service token in plaintext; https://
/// without a CA cannot verify Auth (this build trusts no built-in roots).
fn auth_tls(config: &Config) -> Result<Option<ClientTls>, ServeError> {
    let wants_tls = config.auth_tls_ca.is_some()
        || config.auth_tls_cert.is_some()
        || config.auth_tls_server_name.is_some();
    let https = config.auth_endpoint.starts_with("https://");
    match (https, wants_tls, config.auth_tls_ca.is_some()) {
        (false, false, _) => Ok(None),
        (false, true, _) => Err(ServeError::Config(
            "--auth-tls-* flags need an https:// --auth-endpoint: over http:// the \
             service token would travel in plaintext"
                .into(),
        )),
        (true, _, false) => Err(ServeError::Config(
            "an https:// --auth-endpoint needs --auth-tls-ca, the CA that signs \
             Auth's certificate"
                .into(),
        )),
        (true, _, true) => Ok(Some(ClientTls {
            ca: config.auth_tls_ca.clone(),
            identity: config
                .auth_tls_cert
                .clone()
                .zip(config.auth_tls_key.clone()),
            domain: config.auth_tls_server_name.clone(),
        })),
    }
}

impl OrgServer {
    pub async fn build(config: Config) -> Result<OrgServer, ServeError> {
        // Everything read from files is checked before storage is opened,
        // so a typo fails fast and before the address is announced.
        let tokens = TokenSet::load(&config.serve.tokens_file)?;
        let mut metrics = MetricsEndpoint::bind(config.telemetry.metrics_listen).await?;
        let rpc = RpcMetrics::register(metrics.registry(), &SERVICES);
        let job_metrics = JobMetrics::register(metrics.registry());
        // Browsers and plain-HTTP clients use this port too (gRPC-Web, the
        // JSON gateway), so it speaks HTTP/1.1 and offers it in TLS.
        let web = WebAccess {
            enabled: true,
            cors_origins: config.cors_allowed_origin.clone(),
        };
        let server = config.serve.server(ERROR_DOMAIN, rpc, &web);
        let tls = config.serve.tls(web.enabled)?;
        let auth_token = if config.workers > 0 {
            Some(auth_token(&config)?)
        } else {
            None
        };
        let auth_tls = auth_tls(&config)?;
        let store = store::open(&config.database, &config.db.options()).await?;
        info!(database = %config.database, "storage open");
        let hub = WatchHub::new();
        let running = Arc::new(RunningJobs::default());
        let wakeup = Arc::new(Wakeup::default());
        let stop = CancellationToken::new();
        // Replicas sharing PostgreSQL hear each other's job changes; the
        // listener connects now, so every change after start is heard.
        let follower = match &config.database {
            DatabaseUrl::Postgres(url) => Some(ChangeFollower {
                changes: job_changes::listen(url, stop.clone())
                    .await
                    .map_err(crate::error::Error::Storage)?,
                store: Arc::clone(&store),
                hub: Arc::clone(&hub),
                wakeup: Arc::clone(&wakeup),
                running: Arc::clone(&running),
                safety_poll: crate::jobs::follow::SAFETY_POLL,
            }),
            DatabaseUrl::Sqlite(_) => None,
        };
        let watches = WatchLimits::new(config.max_watches_per_caller, config.max_watches);
        let app = Arc::new(App::new(
            Arc::clone(&store),
            Arc::clone(&hub),
            Arc::clone(&running),
            Arc::clone(&wakeup),
            stop.clone(),
            Guards {
                pages: Pages::new(&store.page_token_key().await?)?,
                org_updates: OrgUpdateLimiter::new(
                    config.org_updates_per_minute,
                    config.org_update_burst,
                ),
                watches: Arc::clone(&watches),
            },
        ));
        let refresh_queue =
            crate::metrics::register_queue(metrics.registry(), Arc::clone(&store), watches);
        metrics.on_scrape(refresh_queue);
        let auth = match auth_token {
            Some(token) => Some(Arc::new(GrpcAuthGateway::new(AuthConnection {
                endpoint: config.auth_endpoint.clone(),
                call_timeout: config.auth_timeout,
                token,
                tls: auth_tls,
            })?)),
            None => None,
        };
        let pool = auth.map(|auth| {
            Arc::new(WorkerPool {
                runner: Arc::new(Runner {
                    store: Arc::clone(&store),
                    auth,
                    hub: Arc::clone(&hub),
                    config: RunnerConfig {
                        batch_size: usize::from(config.batch_size),
                        parallelism: usize::from(config.parallelism),
                        max_attempts: usize::try_from(config.retry_max_attempts)
                            .unwrap_or(usize::MAX),
                        initial_backoff: config.retry_initial_backoff,
                        max_backoff: config.retry_max_backoff,
                    },
                    metrics: job_metrics,
                }),
                running,
                wakeup,
                config: WorkerConfig {
                    workers: config.workers,
                    lease: config.lease,
                    poll_interval: config.poll_interval,
                    owner: format!("org-server-{}-{}", std::process::id(), uuid::Uuid::now_v7()),
                },
            })
        });
        Ok(OrgServer {
            config,
            store,
            app,
            authenticator: Authenticator::new(tokens, ERROR_DOMAIN),
            server,
            tls,
            pool,
            follower,
            metrics,
            stop,
        })
    }

    /// Where `/metrics` is served, when `--metrics-listen` is set.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics.local_addr()
    }

    /// Serves on `listener` until `shutdown` completes, then drains within
    /// the configured grace period.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let OrgServer {
            config,
            store,
            app,
            authenticator,
            mut server,
            tls,
            pool,
            follower,
            metrics,
            stop,
        } = self;
        metrics.start(stop.clone().cancelled_owned());
        if let Some(follower) = follower {
            tokio::spawn(follower.run());
        }
        let pool_task = pool.map(|pool| tokio::spawn(pool.run(stop.clone())));
        tokio::spawn(retention::prune_loop(
            store,
            config.job_retention,
            config.prune_interval,
            stop.clone(),
        ));
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<OrgServiceServer<OrgGrpc>>().await;
        health.set_serving::<JobServiceServer<JobGrpc>>().await;
        health
            .set_serving::<OperationsServer<OperationsGrpc>>()
            .await;
        health
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;

        let reflection_v1 = orgauth_runtime::reflection(&SERVICES).build_v1()?;
        let reflection_v1alpha = orgauth_runtime::reflection(&SERVICES).build_v1alpha()?;

        let begin_shutdown = {
            let stop = stop.clone();
            async move {
                shutdown.await;
                info!("shutting down: health NOT_SERVING, draining");
                health.set_not_serving::<OrgServiceServer<OrgGrpc>>().await;
                health.set_not_serving::<JobServiceServer<JobGrpc>>().await;
                health
                    .set_not_serving::<OperationsServer<OperationsGrpc>>()
                    .await;
                health
                    .set_service_status("", tonic_health::ServingStatus::NotServing)
                    .await;
                stop.cancel();
            }
        };

        let local_addr = listener.local_addr().ok();
        info!(addr = ?local_addr, workers = config.workers, "org-server serving");
        let incoming = orgauth_runtime::incoming::incoming(listener, tls);
        let max_message = config.serve.max_message_bytes;
        // The JSON gateway (PATCH, GET, SSE) on the same port, behind the
        // same token check; gRPC services are added to its routes below.
        let gateway = crate::http::routes(
            Arc::clone(&app),
            authenticator.clone(),
            config.serve.max_call_time,
        );
        // Health and reflection stay open; the other services need a token.
        let orgs = OrgServiceServer::new(OrgGrpc {
            app: Arc::clone(&app),
        })
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);
        let jobs = JobServiceServer::new(JobGrpc {
            app: Arc::clone(&app),
        })
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);
        let lro = OperationsServer::new(OperationsGrpc {
            app,
            wait_cap: operations::wait_cap(config.serve.max_call_time),
        })
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);
        let serve = server
            .add_routes(gateway)
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(InterceptedService::new(orgs, authenticator.clone()))
            .add_service(InterceptedService::new(jobs, authenticator.clone()))
            .add_service(InterceptedService::new(lro, authenticator))
            .serve_with_incoming_shutdown(incoming, begin_shutdown);
        let mut serve = std::pin::pin!(serve);

        tokio::select! {
            result = &mut serve => {
                // The server ended without a shutdown request: an error.
                stop.cancel();
                result?;
            }
            () = stop.cancelled() => {
                let drain = async {
                    let served = serve.await;
                    if let Some(pool) = pool_task
                        && let Err(err) = pool.await
                    {
                        warn!(error = %err, "worker pool task failed");
                    }
                    served
                };
                match tokio::time::timeout(config.shutdown_grace, drain).await {
                    Ok(served) => served?,
                    Err(_) => warn!(grace = ?config.shutdown_grace, "grace period elapsed; exiting with work still open"),
                }
            }
        }
        info!("org-server stopped");
        Ok(())
    }
}

/// Builds and serves: what tests use with a listener on port 0.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    OrgServer::build(config)
        .await?
        .serve(listener, shutdown)
        .await
}
