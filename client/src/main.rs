//! `orgctl`: the command-line client of orgauth. Parsing, commands and
//! output live in [`cli`]; this file only wires them to the runtime.

mod cli;

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let args = cli::parse();
    cli::init_logging();
    cli::run(args).await
}
