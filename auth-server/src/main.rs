//! The auth-server binary: parse flags, set up logging, open storage, bind,
//! announce the address, serve until SIGTERM or SIGINT.

use std::io::Write;
use std::process::ExitCode;

use auth_server::{AuthServer, Config, shutdown_signal};
use clap::Parser;
use tokio::net::TcpListener;
use tracing::{error, warn};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();

    // Installed before anything slow, so an early SIGTERM is honoured.
    let shutdown = shutdown_signal();
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
    let addr = match listener.local_addr() {
        Ok(addr) => addr,
        Err(err) => {
            error!(error = %err, "cannot read the bound address");
            return ExitCode::FAILURE;
        }
    };
    // The one line on stdout: scripts and tests start the server on port 0
    // and read the real address from it. A closed stdout is no reason not
    // to serve.
    let mut stdout = std::io::stdout().lock();
    if let Err(err) = writeln!(stdout, "listening {addr}").and_then(|()| stdout.flush()) {
        warn!(error = %err, "cannot announce the listening address on stdout");
    }
    drop(stdout);

    match server.serve(listener, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            error!(error = %err, "server failed");
            ExitCode::FAILURE
        }
    }
}
