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
use std::time::Duration;

use orgauth_proto::org::v1::job_service_server::JobServiceServer;
use orgauth_proto::org::v1::org_service_server::OrgServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tracing::{info, warn};

use crate::app::App;
use crate::auth_client::GrpcAuthGateway;
use crate::config::Config;
use crate::grpc::job_service::JobGrpc;
use crate::grpc::org_service::OrgGrpc;
use crate::jobs::hub::WatchHub;
use crate::jobs::runner::{Runner, RunnerConfig};
use crate::jobs::worker::{Wakeup, WorkerConfig, WorkerPool};
use crate::jobs::{RunningJobs, retention};
use crate::store::{self, Store, StoreOptions};

/// Why the server could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Setup(#[from] crate::error::Error),
    #[error("reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// A fully wired org-server whose storage is open and migrated, ready to
/// serve. Building before binding means a bad `--database` fails the
/// process before it announces an address.
pub struct OrgServer {
    config: Config,
    store: Arc<dyn Store>,
    app: Arc<App>,
    pool: Option<Arc<WorkerPool>>,
    stop: CancellationToken,
}

impl OrgServer {
    pub async fn build(config: Config) -> Result<OrgServer, ServeError> {
        let store = store::open(
            &config.database,
            &StoreOptions {
                max_connections: config.db_max_connections,
            },
        )
        .await?;
        let auth = Arc::new(GrpcAuthGateway::new(
            &config.auth_endpoint,
            config.auth_timeout,
        )?);
        let hub = WatchHub::new();
        let running = Arc::new(RunningJobs::default());
        let wakeup = Arc::new(Wakeup::default());
        let stop = CancellationToken::new();
        let app = Arc::new(App::new(
            Arc::clone(&store),
            Arc::clone(&hub),
            Arc::clone(&running),
            Arc::clone(&wakeup),
            stop.clone(),
        ));
        let pool = (config.workers > 0).then(|| {
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
            pool,
            stop,
        })
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
            pool,
            stop,
        } = self;
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
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;

        let reflection_v1 = orgauth_runtime::reflection(&[
            "orgauth.org.v1.OrgService",
            "orgauth.org.v1.JobService",
        ])
        .build_v1()?;
        let reflection_v1alpha = orgauth_runtime::reflection(&[
            "orgauth.org.v1.OrgService",
            "orgauth.org.v1.JobService",
        ])
        .build_v1alpha()?;

        let begin_shutdown = {
            let stop = stop.clone();
            async move {
                shutdown.await;
                info!("shutting down: health NOT_SERVING, draining");
                health.set_not_serving::<OrgServiceServer<OrgGrpc>>().await;
                health.set_not_serving::<JobServiceServer<JobGrpc>>().await;
                health
                    .set_service_status("", tonic_health::ServingStatus::NotServing)
                    .await;
                stop.cancel();
            }
        };

        let local_addr = listener.local_addr().ok();
        info!(addr = ?local_addr, workers = config.workers, "org-server serving");
        // TCP options set on `Server` are ignored with a custom incoming
        // stream; without TCP_NODELAY small responses can wait ~40 ms on
        // Nagle's algorithm.
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let serve = Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(OrgServiceServer::new(OrgGrpc {
                app: Arc::clone(&app),
            }))
            .add_service(JobServiceServer::new(JobGrpc { app }))
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
