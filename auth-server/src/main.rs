//! The auth-server binary: parse flags, set up logging, open storage, bind,
//! announce the address, serve until SIGTERM or SIGINT.

use std::process::ExitCode;

use auth_server::{AuthServer, Config};
use clap::Parser;
use tokio::net::TcpListener;
use tracing::error;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    orgauth_runtime::init_logging();

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
        Ok(addr) => orgauth_runtime::announce(addr),
        Err(err) => {
            error!(error = %err, "cannot read the bound address");
            return ExitCode::FAILURE;
        }
    }
    match server.serve(listener, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            error!(error = %err, "server failed");
            ExitCode::FAILURE
        }
    }
}
