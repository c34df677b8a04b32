//! Assembles auth-server (storage, AuthService, health, reflection) and
//! runs it until shutdown.
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
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tracing::{info, warn};

use crate::app::App;
use crate::config::Config;
use crate::error::AuthError;
use crate::grpc::AuthGrpc;
use crate::store::{self, AuthStore};

/// Why the server could not start, or stopped other than by shutdown.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot open the database: {0}")]
    Store(#[from] AuthError),
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// An auth-server whose storage is open and migrated, ready to serve.
///
/// Building before binding lets a bad `--database` fail the process before
/// it announces an address, so "listening" means ready.
pub struct AuthServer {
    /// Flags, for the grace period.
    config: Config,
    /// The service's logic, shared with the gRPC adapter.
    app: App,
    /// Kept to close the database after the last call has drained.
    store: Arc<dyn AuthStore>,
}

impl AuthServer {
    /// Opens (creating and migrating) the database `config` names.
    pub async fn build(config: Config) -> Result<Self, ServeError> {
        let store = store::open(&config.database).await?;
        Ok(AuthServer {
            config,
            app: App::new(Arc::clone(&store)),
            store,
        })
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
        let AuthServer { config, app, store } = self;

        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<AuthServiceServer<AuthGrpc>>().await;
        // "" stands for the whole server: what a probe asks when it names
        // no service.
        health.set_service_status("", ServingStatus::Serving).await;

        let reflection_v1 =
            orgauth_runtime::reflection(&["orgauth.auth.v1.AuthService"]).build_v1()?;
        let reflection_v1alpha =
            orgauth_runtime::reflection(&["orgauth.auth.v1.AuthService"]).build_v1alpha()?;

        let addr = listener
            .local_addr()
            .map_or_else(|err| format!("unknown ({err})"), |addr| addr.to_string());
        // `Server::tcp_nodelay` applies only to listeners tonic binds itself;
        // with our own listener the option must be set per accepted socket.
        // Without it, a unary response can wait ~40 ms on Nagle's algorithm.
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        // Tells tonic to stop accepting; cancelled only once health says
        // NOT_SERVING.
        let stop_accepting = CancellationToken::new();
        let serve = Server::builder()
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(AuthServiceServer::new(AuthGrpc::new(app)))
            .serve_with_incoming_shutdown(incoming, stop_accepting.clone().cancelled_owned());
        let mut serve = pin!(serve);
        info!(%addr, database = %config.database, "auth-server serving");

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
    use std::time::Duration;

    use orgauth_proto::auth::v1 as pb;
    use orgauth_proto::auth::v1::auth_service_client::AuthServiceClient;
    use tokio::sync::oneshot;
    use tonic::transport::Channel;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus as Status;
    use tonic_health::pb::health_client::HealthClient;

    use super::*;
    use crate::config::DatabaseUrl;

    struct Running {
        addr: std::net::SocketAddr,
        stop: oneshot::Sender<()>,
        server: tokio::task::JoinHandle<Result<(), ServeError>>,
        db_path: std::path::PathBuf,
        _dir: tempfile::TempDir,
    }

    async fn start(grace: Duration) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let db_path = dir.path().join("auth.db");
        let config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            database: DatabaseUrl::Sqlite(db_path.clone()),
            shutdown_grace: grace,
        };
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
            db_path,
            _dir: dir,
        }
    }

    async fn channel(addr: std::net::SocketAddr) -> Channel {
        Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap()
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

    #[tokio::test]
    async fn serves_auth_health_and_stops_cleanly() {
        let running = start(Duration::from_secs(5)).await;
        let channel = channel(running.addr).await;
        assert_eq!(health_of(channel.clone(), "").await, Status::Serving);
        assert_eq!(
            health_of(channel.clone(), "orgauth.auth.v1.AuthService").await,
            Status::Serving
        );
        let policy = AuthServiceClient::new(channel.clone())
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
    async fn a_stuck_call_does_not_hold_shutdown_past_the_grace_period() {
        let running = start(Duration::from_millis(300)).await;
        let channel = channel(running.addr).await;
        let mut client = AuthServiceClient::new(channel);
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
    }
}
