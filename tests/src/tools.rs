//! External tools the cross-tool tests drive (grpcurl, Python with grpcio,
//! buf, curl): where to find them, and how to run one with a deadline.
//!
//! The tools come from `$ORGAUTH_TOOLS_BIN` (scripts/test.sh installs
//! grpcurl and the Python packages into a virtualenv there), then from
//! PATH. When one is missing a test is skipped, unless `CI` is set: CI must
//! run them.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

/// Finds an executable in `$ORGAUTH_TOOLS_BIN`, then on PATH. When it is
/// missing, panics on CI and otherwise says the test is skipped.
pub fn tool(name: &str) -> Option<PathBuf> {
    let tools_bin = std::env::var_os("ORGAUTH_TOOLS_BIN").map(PathBuf::from);
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = tools_bin
        .into_iter()
        .chain(std::env::split_paths(&path))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file());
    if found.is_none() {
        missing(name, "not found in $ORGAUTH_TOOLS_BIN or PATH");
    }
    found
}

/// A Python that can import every module in `modules` (e.g. `grpc`,
/// `grpc_tools.protoc`), or `None` after [`missing`].
pub fn python_with(modules: &[&str]) -> Option<PathBuf> {
    let python = tool("python")?;
    let imports = format!("import {}", modules.join(", "));
    let importable = std::process::Command::new(&python)
        .args(["-c", &imports])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !importable {
        missing(
            &modules.join(", "),
            &format!("{} cannot `{imports}`", python.display()),
        );
        return None;
    }
    Some(python)
}

/// A Python that can generate and run gRPC code (grpcio and grpcio-tools).
pub fn python_with_grpc() -> Option<PathBuf> {
    python_with(&["grpc", "grpc_tools.protoc"])
}

/// Skips the test (the caller returns), or fails it on CI.
pub fn missing(what: &str, why: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "{what}: {why}; on CI the cross-tool tests must run: use scripts/test.sh, which installs it"
    );
    eprintln!("skipping: {what} not found; run scripts/test.sh");
}

/// The repository's root directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs a command to completion, killing it if it outlives `timeout`.
pub async fn run(program: &Path, args: &[String], timeout: Duration) -> Output {
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    match tokio::time::timeout(timeout, command.output()).await {
        Ok(output) => output.unwrap_or_else(|err| panic!("run {}: {err}", program.display())),
        Err(_) => panic!(
            "{} {args:?} did not finish within {timeout:?}",
            program.display()
        ),
    }
}

/// A tool's output as text, lossily.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs the repository's Python script `script` (a path from the root)
/// with `args`; its stdout and stderr. Fails the test, showing both, when
/// the script fails.
pub async fn run_python_script(
    python: &Path,
    script: &str,
    args: &[&str],
    timeout: Duration,
) -> (String, String) {
    let mut all = vec![workspace_root().join(script).display().to_string()];
    all.extend(args.iter().map(|arg| (*arg).to_owned()));
    let output = run(python, &all, timeout).await;
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert!(
        output.status.success(),
        "{script} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
    (stdout, stderr)
}
