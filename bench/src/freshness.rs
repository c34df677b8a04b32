//! Guards against measuring stale binaries: `cargo build --release -p
//! orgauth-bench` does not rebuild the servers, so a server binary older
//! than its sources would report numbers of code that no longer exists.
//!
//! When the workspace this benchmark was built from is still on disk, the
//! newest modification time of the servers' sources (and of what they
//! depend on in the workspace) must not be later than the binary's.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::error::{Result, fail};

/// Source folders (relative to the workspace root) each server is built
/// from. Cargo.lock is left out: a lock change for another crate does not
/// relink the servers, so it would flag fresh binaries as stale.
const SOURCES: &[(&str, &[&str])] = &[
    (
        "org-server",
        &["org-server", "runtime", "security", "proto"],
    ),
    (
        "auth-server",
        &["auth-server", "runtime", "security", "proto"],
    ),
];

/// How deep to walk a source folder (bounded; the crates are shallow).
const MAX_DEPTH: usize = 6;

/// Fails if a server binary in `bin_dir` is older than its sources.
pub fn check(bin_dir: &Path) -> Result<()> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let workspace = workspace.canonicalize().unwrap_or(workspace);
    if !workspace.join("Cargo.toml").exists() {
        return Ok(());
    }
    for (binary, folders) in SOURCES {
        let built = std::fs::metadata(bin_dir.join(binary))?.modified()?;
        let mut newest: Option<(SystemTime, PathBuf)> = None;
        for folder in *folders {
            newest_under(&workspace.join(folder), MAX_DEPTH, &mut newest);
        }
        if let Some((modified, path)) = newest
            && modified > built
        {
            return fail(format!(
                "{} is older than {}: run `cargo build --release --workspace` first \
                 (or pass --allow-stale)",
                bin_dir.join(binary).display(),
                path.display()
            ));
        }
    }
    Ok(())
}

fn newest_under(path: &Path, depth: usize, newest: &mut Option<(SystemTime, PathBuf)>) {
    let Ok(metadata) = std::fs::metadata(path) else {
        return;
    };
    if metadata.is_dir() {
        // Test and example code is not part of the server binary: editing
        // it does not make the binary stale (and cargo would not relink it).
        const NOT_IN_BINARY: &[&str] = &["target", "tests", "benches", "examples"];
        if depth == 0
            || path
                .file_name()
                .is_some_and(|name| NOT_IN_BINARY.iter().any(|skip| name == *skip))
        {
            return;
        }
        let Ok(entries) = std::fs::read_dir(path) else {
            return;
        };
        for entry in entries.flatten() {
            newest_under(&entry.path(), depth - 1, newest);
        }
    } else if let Ok(modified) = metadata.modified()
        && newest.as_ref().is_none_or(|(time, _)| modified > *time)
    {
        *newest = Some((modified, path.to_path_buf()));
    }
}
