//! The org-server binary: parse flags, set up logging, open storage, bind,
//! announce the address, serve until SIGTERM or SIGINT.

use std::process::ExitCode;

use org_server::{Config, OrgServer};
use tracing::error;

#[tokio::main]
async fn main() -> ExitCode {
    let config: Config = orgauth_runtime::parse_config("ORG_SERVER_");
    let telemetry = match orgauth_runtime::telemetry::init(&config.telemetry, "org-server") {
        Ok(telemetry) => telemetry,
        Err(err) => {
            eprintln!("org-server: {err}");
            return ExitCode::FAILURE;
        }
    };

    // Installed before anything slow, so an early SIGTERM is honoured.
    let shutdown = orgauth_runtime::shutdown_signal();
    let server = match OrgServer::build(config.clone()).await {
        Ok(server) => server,
        Err(err) => {
            error!(error = %err, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind(config.listen).await {
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
