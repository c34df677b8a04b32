//! The auth-server binary: parse flags, set up logging, load the tokens file
//! and TLS files, open storage, bind, announce the address, serve until
//! SIGTERM or SIGINT.
//!
//! Any configuration error (a missing or invalid tokens file, an unusable
//! TLS file, a database that cannot be opened) is reported on stderr and
//! exits non-zero before `listening ADDR` is printed.

use std::process::ExitCode;

use auth_server::{AuthServer, Config};
use tokio::net::TcpListener;
use tracing::error;

#[tokio::main]
async fn main() -> ExitCode {
    // Gives the flags shared with org-server (tokens, TLS, limits) their
    // AUTH_SERVER_ environment variables.
    let config = orgauth_runtime::parse_config::<Config>("AUTH_SERVER_");
    let telemetry = match orgauth_runtime::telemetry::init(&config.telemetry, "auth-server") {
        Ok(telemetry) => telemetry,
        Err(err) => {
            eprintln!("auth-server: {err}");
            return ExitCode::FAILURE;
        }
    };

    // Installed before anything slow, so an early SIGTERM is honoured.
    let shutdown = orgauth_runtime::shutdown_signal();
    let server = match AuthServer::build(config.clone()).await {
        Ok(server) => server,
        Err(err) => {
            error!(error = %err, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    let listener = match TcpListener::bind(config.listen).await {
        Ok(listener) => listener,
        Err(err) => {
            error!(error = %err, listen = %config.listen, "cannot listen");
            return ExitCode::FAILURE;
        }
    };
    match listener.local_addr() {
        Ok(addr) => {
            orgauth_runtime::announce(addr);
            if let Some(metrics) = server.metrics_addr() {
                orgauth_runtime::announce_metrics(metrics);
            }
        }
        Err(err) => {
            error!(error = %err, "cannot read the bound address");
            return ExitCode::FAILURE;
        }
    }
    let served = server.serve(listener, shutdown).await;
    telemetry.shutdown().await;
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            error!(error = %err, "server failed");
            ExitCode::FAILURE
        }
    }
}
