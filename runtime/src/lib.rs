//! Process plumbing shared by org-server and auth-server, so both behave
//! the same for operators and tests:
//!
//! - [`telemetry`]: logs (text or JSON) to stderr, trace context across
//!   calls, optional OpenTelemetry export.
//! - [`metrics`]: the Prometheus registry, `/metrics`, per-call gRPC metrics.
//! - [`shutdown_signal`]: the first SIGTERM/SIGINT starts a graceful
//!   shutdown; a second one exits at once.
//! - [`announce`]: the one stdout line, `listening ADDR`, that scripts and
//!   tests read to learn the port when started on port 0.
//! - [`reflection`]: gRPC reflection limited to the services a server serves.
//! - [`parse_config`]: flags with an environment variable each.
//! - [`access`]: bearer-token authentication at the transport edge.
//! - [`status`]: statuses with google.rpc error details.
//! - [`transport`]: TLS, mutual TLS and transport limits; HTTP/1.1,
//!   gRPC-Web and CORS where a server serves browsers.
//! - [`incoming`]: accepting connections, with TLS terminated here.
//! - [`schema`]: migrating at start; refusing a schema newer than the binary.
//! - [`database`]: the `--database` URL, the pool flags, opening PostgreSQL.

pub mod access;
pub mod database;
pub mod incoming;
pub mod metrics;
pub mod schema;
pub mod status;
pub mod telemetry;
pub mod transport;

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;

use tracing::{error, info, warn};

/// Exit status after a second signal cut a graceful shutdown short
/// (128 + SIGINT, as shells report an interrupted program).
pub const FORCED_EXIT_CODE: i32 = 130;

/// Completes on the first SIGINT or SIGTERM. After that, a second signal
/// exits the process immediately with [`FORCED_EXIT_CODE`], for an operator
/// who does not want to wait out the grace period.
///
/// The handlers are installed when this is called, not when the future is
/// first polled, so a signal sent right after the address is announced
/// starts a graceful shutdown instead of killing the process.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        let (Ok(mut term), Ok(mut int)) = (term, int) else {
            warn!("cannot install signal handlers; stop the process with SIGKILL");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => info!("received SIGTERM; shutting down gracefully (send again to exit now)"),
            _ = int.recv() => info!("received SIGINT; shutting down gracefully (send again to exit now)"),
        }
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            error!("second signal: exiting without finishing the graceful shutdown");
            std::process::exit(FORCED_EXIT_CODE);
        });
    }
}

/// Prints `listening ADDR` on stdout. A closed stdout is no reason not to
/// serve, so a failure is only logged.
pub fn announce(addr: SocketAddr) {
    announce_line("listening", addr);
}

/// Prints `metrics ADDR` on stdout, after the `listening` line, when
/// `--metrics-listen` is set (port 0 picks the port this line reports).
pub fn announce_metrics(addr: SocketAddr) {
    announce_line("metrics", addr);
}

fn announce_line(what: &str, addr: SocketAddr) {
    let mut stdout = std::io::stdout().lock();
    if let Err(err) = writeln!(stdout, "{what} {addr}").and_then(|()| stdout.flush()) {
        warn!(error = %err, what, "cannot announce an address on stdout");
    }
}

/// Parses the command line into `C`. Every flag without an explicit
/// environment variable gets `PREFIX` + its name in upper snake case, so the
/// flags both servers share through [`transport::ServeArgs`] read
/// `ORG_SERVER_TLS_CERT` in one and `AUTH_SERVER_TLS_CERT` in the other.
pub fn parse_config<C: clap::Parser>(env_prefix: &str) -> C {
    match try_parse_config(env_prefix, std::env::args_os()) {
        Ok(config) => config,
        Err(err) => err.exit(),
    }
}

/// [`parse_config`] over explicit arguments, for tests.
pub fn try_parse_config<C, I, T>(env_prefix: &str, args: I) -> Result<C, clap::Error>
where
    C: clap::Parser,
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let mut command = C::command();
    let unnamed: Vec<String> = command
        .get_arguments()
        .filter(|arg| arg.get_env().is_none() && arg.get_long().is_some())
        .map(|arg| arg.get_id().to_string())
        .collect();
    for id in unnamed {
        let env = format!("{env_prefix}{}", id.to_uppercase());
        command = command.mut_arg(id, |arg| arg.env(env));
    }
    let matches = command.try_get_matches_from(args)?;
    C::from_arg_matches(&matches)
}

/// Reflection over `services` only (plus the health service). orgauth's
/// descriptor set describes every orgauth service; advertising one this
/// server does not serve would send grpcurl users to UNIMPLEMENTED. Build it
/// twice, as v1 and v1alpha: grpcurl 1.8.6 and Postman speak only v1alpha.
pub fn reflection(services: &[&str]) -> tonic_reflection::server::Builder<'static> {
    services.iter().fold(
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(orgauth_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name("grpc.health.v1.Health"),
        |builder, service| builder.with_service_name(*service),
    )
}
