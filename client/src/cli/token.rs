//! `orgctl token issue`: makes a bearer token for the servers' tokens files.
//! No server is involved: a token is a random secret for its holder and a
//! line with the secret's hash for the servers (`--tokens-file`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use clap::{Subcommand, ValueEnum};
use orgauth_security::token::issue;
use orgauth_security::{Role, TokenSet};
use serde_json::json;

use super::output::{Output, print_line};
use super::{CliError, ExitStatus};

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Issue a new bearer token. Prints its secret on stdout, alone on one
    /// line (`secret=$(orgctl token issue …)`), and the line that lists it
    /// in the servers' tokens file on stderr, or appends that line to
    /// --append. With --json, prints one object {"name", "role", "secret",
    /// "line"} instead. The secret is shown only now: tokens files hold
    /// only its hash.
    Issue(IssueArgs),
}

#[derive(Debug, clap::Args)]
pub struct IssueArgs {
    /// The token's name, shown in the servers' logs: 1 to 64 of A-Z, a-z,
    /// 0-9, ".", "_" and "-", unique in a tokens file.
    #[arg(long)]
    name: String,
    /// What the token may do: admin (every org), org (only the orgs given
    /// with --org), service (the identity org-server uses to call
    /// auth-server).
    #[arg(long, value_enum)]
    role: RoleArg,
    /// An org the `org` role may read and change; repeat the flag or
    /// separate ids with commas.
    #[arg(long = "org", value_name = "ID", value_delimiter = ',')]
    orgs: Vec<String>,
    /// Make the token expire after this long (e.g. 30days, 12h). Without
    /// it the token is valid until its line is removed.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    expires_in: Option<Duration>,
    /// Append the tokens-file line to this file (created with mode 0600 if
    /// missing) instead of printing it. Refused if the file would no longer
    /// load (e.g. the name is already in it).
    #[arg(long, value_name = "PATH")]
    append: Option<PathBuf>,
}

/// `--role` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoleArg {
    Admin,
    Org,
    Service,
}

impl From<RoleArg> for Role {
    fn from(role: RoleArg) -> Self {
        match role {
            RoleArg::Admin => Role::Admin,
            RoleArg::Org => Role::Org,
            RoleArg::Service => Role::Service,
        }
    }
}

pub fn run(command: TokenCommand, output: Output) -> Result<ExitStatus, CliError> {
    match command {
        TokenCommand::Issue(args) => issue_token(args, output),
    }
}

fn issue_token(args: IssueArgs, output: Output) -> Result<ExitStatus, CliError> {
    let role = Role::from(args.role);
    let expires = match args.expires_in {
        Some(duration) if duration.is_zero() => {
            return Err(CliError::usage("--expires-in must be longer than 0s"));
        }
        Some(duration) => Some(
            SystemTime::now()
                .checked_add(duration)
                .ok_or_else(|| CliError::usage("--expires-in is too far in the future"))?,
        ),
        None => None,
    };
    let mut orgs: Vec<String> = Vec::with_capacity(args.orgs.len());
    for org in args.orgs {
        if !orgs.contains(&org) {
            orgs.push(org);
        }
    }
    // The same parser the servers load tokens files with checks the line.
    let issued = issue(&args.name, role, &orgs, expires).map_err(|message| {
        let error = CliError::usage(message);
        match (role, orgs.is_empty()) {
            (Role::Org, true) => error.with_hint("name the orgs the token may touch with --org ID"),
            (Role::Admin | Role::Service, false) => {
                error.with_hint("--org is only for --role org: admin and service cover every org")
            }
            _ => error,
        }
    })?;
    if let Some(path) = &args.append {
        append_line(path, &issued.line)?;
    }
    if output.is_json() {
        print_line(json!({
            "name": args.name,
            "role": role.as_str(),
            "secret": issued.secret,
            "line": issued.line,
        }));
        return Ok(ExitStatus::Success);
    }
    print_line(&issued.secret);
    match &args.append {
        Some(path) => eprintln!(
            "appended token {:?} ({role}) to {}; servers accept it once they load that file",
            args.name,
            path.display()
        ),
        None => eprintln!(
            "add this line to the servers' tokens file (--tokens-file):\n{}",
            issued.line
        ),
    }
    Ok(ExitStatus::Success)
}

/// Appends `line` to a tokens file, creating it with mode 0600. The file
/// with the new line must still load as the servers load it, so a
/// duplicate name (or an already broken file) is refused and nothing is
/// written.
fn append_line(path: &Path, line: &str) -> Result<(), CliError> {
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(error) => {
            return Err(CliError::local(format!(
                "cannot read {}: {error}",
                path.display()
            )));
        }
    };
    let mut addition = String::new();
    if !existing.is_empty() && !existing.ends_with('\n') {
        addition.push('\n');
    }
    addition.push_str(line);
    addition.push('\n');
    TokenSet::parse(&format!("{existing}{addition}")).map_err(|error| {
        CliError::usage(format!(
            "not appending to {}: the file would not load: {error}",
            path.display()
        ))
    })?;

    let mut options = std::fs::OpenOptions::new();
    options.append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let write_error = |error: std::io::Error| {
        CliError::local(format!("cannot write {}: {error}", path.display()))
    };
    let mut file = options.open(path).map_err(write_error)?;
    file.write_all(addition.as_bytes()).map_err(write_error)?;
    file.sync_all().map_err(write_error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appended_lines_load_and_duplicates_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        let ops = issue("ops", Role::Admin, &[], None).unwrap();
        append_line(&path, &ops.line).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }

        // A file without a final newline gets one before the new line.
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.trim_end()).unwrap();
        let bot = issue("acme-bot", Role::Org, &["acme".into()], None).unwrap();
        append_line(&path, &bot.line).unwrap();
        let set = TokenSet::parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(set.len(), 2);
        let now = SystemTime::now();
        assert_eq!(
            set.authenticate(&ops.secret, now).unwrap().role,
            Role::Admin
        );
        assert!(
            set.authenticate(&bot.secret, now)
                .unwrap()
                .covers_org("acme")
        );

        // The same name again would break the file: nothing is written.
        let before = std::fs::read_to_string(&path).unwrap();
        let again = issue("ops", Role::Admin, &[], None).unwrap();
        let error = append_line(&path, &again.line).unwrap_err();
        assert!(matches!(error.error, super::super::Failure::Usage(_)));
        assert!(
            error.report().contains("\"ops\" is used twice"),
            "{}",
            error.report()
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), before);
    }
}
