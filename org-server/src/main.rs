//! The org-server binary: parse flags, set up logging, open storage, bind,
//! announce the address, serve.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use org_server::{Config, OrgServer, shutdown_signal};
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

    let shutdown = shutdown_signal();
    let server = match OrgServer::build(config.clone()).await {
        Ok(server) => server,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("error: cannot listen on {}: {err}", config.listen);
            return ExitCode::FAILURE;
        }
    };
    if let Ok(addr) = listener.local_addr() {
        // Tests and scripts start the server on port 0 and read this line.
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "listening {addr}");
        let _ = stdout.flush();
    }
    match server.serve(listener, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
