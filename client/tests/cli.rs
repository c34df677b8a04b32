//! orgctl as a user runs it: the documented flags and environment variables
//! are in `--help`, an unreachable server gives a clear error and a
//! non-zero exit quickly, `token issue` makes tokens a server accepts, and
//! against a server with the servers' own authenticator, a missing token or
//! a refusal gives a readable error, a hint and a non-zero exit. Also what
//! needs no real org-server: shell completions, the config file's refusals
//! and `config show`, and the exit codes of a followed job that fails or is
//! cancelled. (Building
//! this test also makes `cargo test --workspace` build `target/debug/orgctl`
//! for the end-to-end suite.)

#![allow(clippy::unwrap_used)]

mod support;

use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime};

use orgauth_security::{Role, TokenSet};

/// Every environment variable orgctl reads (besides XDG_CONFIG_HOME and
/// HOME, for the default config file).
const ORGCTL_ENV: [&str; 14] = [
    "ORGCTL_ENDPOINT",
    "ORGCTL_AUTH_ENDPOINT",
    "ORGCTL_CONNECT_TIMEOUT",
    "ORGCTL_WATCH_RETRY_BUDGET",
    "ORGCTL_TOKEN",
    "ORGCTL_TOKEN_FILE",
    "ORGCTL_CA_CERT",
    "ORGCTL_CLIENT_CERT",
    "ORGCTL_CLIENT_KEY",
    "ORGCTL_TLS_SERVER_NAME",
    "ORGCTL_OUTPUT",
    "ORGCTL_CONFIG",
    "RUST_LOG",
    "NO_COLOR",
];

fn command(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_orgctl"));
    command.args(args);
    // The test must not depend on the caller's environment, nor on their
    // config file.
    for name in ORGCTL_ENV {
        command.env_remove(name);
    }
    command.env("XDG_CONFIG_HOME", "/nonexistent/orgctl-tests");
    command
}

fn orgctl(args: &[&str]) -> Output {
    command(args).output().expect("orgctl runs")
}

/// Runs orgctl off the async runtime that serves the fake server.
async fn orgctl_async(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = command(args);
    command.envs(env.iter().copied());
    tokio::task::spawn_blocking(move || command.output().expect("orgctl runs"))
        .await
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn assert_mentions(text: &str, needles: &[&str]) {
    for needle in needles {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}

#[test]
fn help_documents_global_flags_env_vars_and_exit_codes() {
    let output = orgctl(&["--help"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_mentions(
        &stdout(&output),
        &[
            "--endpoint",
            "ORGCTL_ENDPOINT",
            "[default: 127.0.0.1:50051]",
            "--auth-endpoint",
            "ORGCTL_AUTH_ENDPOINT",
            "[default: 127.0.0.1:50052]",
            "--token <SECRET>",
            "[env: ORGCTL_TOKEN]",
            "--token-file",
            "ORGCTL_TOKEN_FILE",
            "--ca-cert",
            "ORGCTL_CA_CERT",
            "--client-cert",
            "ORGCTL_CLIENT_CERT",
            "--client-key",
            "ORGCTL_CLIENT_KEY",
            "--tls-server-name",
            "ORGCTL_TLS_SERVER_NAME",
            "--connect-timeout",
            "ORGCTL_CONNECT_TIMEOUT",
            "--watch-retry-budget",
            "--output <OUTPUT>",
            "ORGCTL_OUTPUT",
            "[default: table]",
            "--json",
            "Short for --output json",
            "--config <PATH>",
            "ORGCTL_CONFIG",
            "org",
            "member",
            "job",
            "auth",
            "token",
            "config",
            "completions",
            "Config file:",
            "orgctl config show",
            "Exit codes:",
            "3  the followed job ended FAILED",
            "4  the followed job ended CANCELLED",
        ],
    );
}

#[test]
fn job_watch_help_documents_the_output_and_exit_codes() {
    let output = orgctl(&["job", "watch", "--help"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_mentions(
        &stdout(&output),
        &[
            "<JOB_ID>",
            "progress bar",
            "--json",
            "--endpoint",
            "ORGCTL_ENDPOINT",
            "--watch-retry-budget",
            "Exit code 0 if the job SUCCEEDED, 3 if FAILED, 4 if CANCELLED",
        ],
    );
}

#[test]
fn every_rpc_has_a_command() {
    for (command, subcommands) in [
        ("org", &["create", "get", "list", "update"][..]),
        ("member", &["add", "remove", "list", "seed"][..]),
        (
            "job",
            &["get", "list", "cancel", "failures", "watch", "wait"][..],
        ),
        (
            "auth",
            &["policy", "link", "unlink", "connections", "check"][..],
        ),
        ("token", &["issue"][..]),
        ("config", &["show"][..]),
    ] {
        let output = orgctl(&[command, "--help"]);
        assert!(output.status.success(), "{}", stderr(&output));
        assert_mentions(&stdout(&output), subcommands);
    }
}

#[test]
fn usage_errors_exit_with_2() {
    // An update that changes nothing is refused before any connection.
    let output = orgctl(&["org", "update", "acme"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    // https:// needs a CA; http:// with TLS options is refused too.
    let output = orgctl(&["--endpoint", "https://example.com", "org", "get", "acme"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert_mentions(
        &stderr(&output),
        &[
            "error: INVALID_ARGUMENT: ",
            "https:// needs TLS options",
            "--ca-cert",
        ],
    );
    let output = orgctl(&[
        "--ca-cert",
        "/nonexistent/ca.pem",
        "--endpoint",
        "http://example.com",
        "org",
        "get",
        "acme",
    ]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert_mentions(&stderr(&output), &["use https://"]);
    let output = orgctl(&["--ca-cert", "/nonexistent/ca.pem", "org", "get", "acme"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert_mentions(&stderr(&output), &["/nonexistent/ca.pem"]);
    // A client certificate needs its key and a CA.
    let output = orgctl(&["--client-cert", "c.pem", "org", "get", "acme"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert_mentions(&stderr(&output), &["--client-key", "--ca-cert"]);
    // Two tokens on the command line are ambiguous.
    let output = orgctl(&["--token", "a", "--token-file", "f", "org", "get", "acme"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert_mentions(&stderr(&output), &["cannot be used together"]);
}

#[test]
fn an_unreachable_server_fails_fast_with_a_clear_error() {
    let started = Instant::now();
    let output = orgctl(&[
        "--endpoint",
        "http://127.0.0.1:1",
        "--connect-timeout",
        "1s",
        "org",
        "get",
        "x",
    ]);
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let stderr = stderr(&output);
    assert!(
        stderr.starts_with("error: UNAVAILABLE: cannot connect to http://127.0.0.1:1"),
        "{stderr}"
    );
    assert!(stdout(&output).is_empty());
}

#[test]
fn token_issue_prints_a_secret_the_appended_line_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens");
    let path_arg = path.to_str().unwrap();

    let output = orgctl(&[
        "token", "issue", "--name", "ops", "--role", "admin", "--append", path_arg,
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let admin_secret = stdout(&output);
    assert_eq!(admin_secret.lines().count(), 1, "{admin_secret:?}");
    let admin_secret = admin_secret.trim_end();
    assert!(admin_secret.starts_with("oat_"), "{admin_secret}");
    assert_mentions(&stderr(&output), &["appended", "ops"]);
    assert!(!stderr(&output).contains(admin_secret));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{mode:o}");
    }

    let output = orgctl(&[
        "token",
        "issue",
        "--name",
        "acme-bot",
        "--role",
        "org",
        "--org",
        "acme",
        "--org",
        "acme-eu",
        "--expires-in",
        "30days",
        "--append",
        path_arg,
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let org_secret = stdout(&output).trim_end().to_owned();

    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains(admin_secret) && !text.contains(&org_secret));
    let tokens = TokenSet::parse(&text).unwrap();
    assert_eq!(tokens.len(), 2);
    let now = SystemTime::now();
    let admin = tokens.authenticate(admin_secret, now).unwrap();
    assert_eq!((&*admin.name, admin.role), ("ops", Role::Admin));
    let bot = tokens.authenticate(&org_secret, now).unwrap();
    assert_eq!(bot.role, Role::Org);
    assert!(bot.covers_org("acme") && bot.covers_org("acme-eu") && !bot.covers_org("globex"));
    // It expires in about 30 days.
    let in_29_days = now + Duration::from_secs(29 * 86_400);
    let in_31_days = now + Duration::from_secs(31 * 86_400);
    assert!(tokens.authenticate(&org_secret, in_29_days).is_ok());
    assert!(tokens.authenticate(&org_secret, in_31_days).is_err());
}

#[test]
fn token_issue_without_append_prints_the_line_on_stderr_and_json_on_request() {
    let output = orgctl(&[
        "token",
        "issue",
        "--name",
        "org-server",
        "--role",
        "service",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let secret = stdout(&output).trim_end().to_owned();
    let stderr = stderr(&output);
    assert_mentions(&stderr, &["tokens file", "org-server service sha256:"]);
    let line = stderr
        .lines()
        .find(|line| line.starts_with("org-server "))
        .unwrap();
    let tokens = TokenSet::parse(line).unwrap();
    assert_eq!(
        tokens
            .authenticate(&secret, SystemTime::now())
            .unwrap()
            .role,
        Role::Service
    );

    let output = orgctl(&[
        "--json", "token", "issue", "--name", "ops", "--role", "admin",
    ]);
    assert!(output.status.success(), "{}", self::stderr(&output));
    let json: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(json["name"], "ops");
    assert_eq!(json["role"], "admin");
    let secret = json["secret"].as_str().unwrap();
    let tokens = TokenSet::parse(json["line"].as_str().unwrap()).unwrap();
    assert_eq!(
        tokens.authenticate(secret, SystemTime::now()).unwrap().role,
        Role::Admin
    );
}

#[test]
fn token_issue_refuses_bad_requests_with_the_parser_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens");
    let path_arg = path.to_str().unwrap();
    for (args, message) in [
        (
            &["--name", "bad/name", "--role", "admin"][..],
            "name \"bad/name\"",
        ),
        (
            &["--name", "bot", "--role", "org"][..],
            "role org needs orgs",
        ),
        (
            &["--name", "ops", "--role", "admin", "--org", "acme"][..],
            "covers every org",
        ),
        (
            &["--name", "bot", "--role", "org", "--org", "ACME"][..],
            "org id \"ACME\"",
        ),
        (
            &["--name", "ops", "--role", "admin", "--expires-in", "0s"][..],
            "--expires-in",
        ),
    ] {
        let output = orgctl(&[&["token", "issue", "--append", path_arg][..], args].concat());
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(stdout(&output).is_empty(), "{args:?}");
        assert_mentions(&stderr(&output), &["error: ", message]);
    }
    assert!(!path.exists(), "nothing may be written");
    let output = orgctl(&["token", "issue", "--name", "ops", "--role", "root"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));

    // The same name twice would break the file: refused, file unchanged.
    let ok = orgctl(&[
        "token", "issue", "--name", "ops", "--role", "admin", "--append", path_arg,
    ]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    let before = std::fs::read_to_string(&path).unwrap();
    let again = orgctl(&[
        "token", "issue", "--name", "ops", "--role", "admin", "--append", path_arg,
    ]);
    assert_eq!(again.status.code(), Some(2), "{}", stderr(&again));
    assert_mentions(&stderr(&again), &["\"ops\" is used twice"]);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_reach_the_server_and_refusals_are_readable() {
    let (secret, authenticator) = support::ops_token();
    let addr = support::serve_jobs(authenticator, None).await;
    let endpoint = addr.to_string();
    let base = ["--endpoint", endpoint.as_str(), "--connect-timeout", "5s"];
    let args = |more: &[&'static str]| [&base[..], more].concat();

    // No token: UNAUTHENTICATED with its reason, the hint, exit 1.
    let output = orgctl_async(&args(&["job", "get", "j1"]), &[]).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let text = stderr(&output);
    assert!(
        text.starts_with("error: UNAUTHENTICATED (TOKEN_MISSING): missing credentials"),
        "{text}"
    );
    assert_mentions(&text, &["hint: pass --token or set ORGCTL_TOKEN"]);
    assert!(stdout(&output).is_empty());

    // An unknown token: the hint says the server does not know it.
    let stranger = orgauth_security::token::issue("x", Role::Admin, &[], None).unwrap();
    let output = orgctl_async(
        &args(&["job", "get", "j1"]),
        &[("ORGCTL_TOKEN", &stranger.secret)],
    )
    .await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_mentions(
        &stderr(&output),
        &["UNAUTHENTICATED (TOKEN_UNKNOWN)", "hint: ", "--tokens-file"],
    );
    assert!(!stderr(&output).contains(&stranger.secret));

    // The token from the environment, from --token, and from a file.
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{secret}\n")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let token_file = token_file.to_str().unwrap().to_owned();
    for (extra, env) in [
        (vec![], vec![("ORGCTL_TOKEN", secret.as_str())]),
        (vec!["--token", secret.as_str()], vec![]),
        (vec!["--token-file", token_file.as_str()], vec![]),
        (vec![], vec![("ORGCTL_TOKEN_FILE", token_file.as_str())]),
        // The command line beats the environment.
        (
            vec!["--token-file", token_file.as_str()],
            vec![("ORGCTL_TOKEN", "oat_stale")],
        ),
    ] {
        let args = [&base[..], &extra[..], &["--json", "job", "get", "j1"][..]].concat();
        let output = orgctl_async(&args, &env).await;
        assert!(
            output.status.success(),
            "{extra:?} {env:?}: {}",
            stderr(&output)
        );
        let job: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
        assert_eq!(job["org_id"], "ops", "the server saw the token of ops");
        assert!(stderr(&output).is_empty(), "{}", stderr(&output));
    }

    // PERMISSION_DENIED: code, reason, message, hint, exit 1.
    let output = orgctl_async(
        &args(&["job", "get", "forbidden"]),
        &[("ORGCTL_TOKEN", &secret)],
    )
    .await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let text = stderr(&output);
    assert!(
        text.starts_with(
            "error: PERMISSION_DENIED (ORG_ACCESS_DENIED): token \"ops\" may not read job forbidden"
        ),
        "{text}"
    );
    assert_mentions(&text, &["hint: the token's role does not allow this"]);

    // INVALID_ARGUMENT names the field and exits 2.
    let output = orgctl_async(&args(&["job", "get", "bad"]), &[("ORGCTL_TOKEN", &secret)]).await;
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert_mentions(
        &stderr(&output),
        &["error: INVALID_ARGUMENT (INVALID_FIELD): job_id: not a UUID"],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_flags_reach_a_tls_server() {
    if !support::Pki::available() {
        eprintln!("skipped: no openssl command to make test certificates");
        return;
    }
    let pki = support::Pki::new("ca");
    let (cert, key) = pki.issue("server");
    let client_pki = support::Pki::new("client-ca");
    let (client_cert, client_key) = client_pki.issue("client");
    let (secret, authenticator) = support::ops_token();
    let tls = support::server_tls(&cert, &key, Some(&client_pki.ca_pem()));
    let addr = support::serve_jobs(authenticator, Some(tls)).await;
    let endpoint = format!("localhost:{}", addr.port());
    let ca = pki.ca_pem();
    let ca = ca.to_str().unwrap();
    let (client_cert, client_key) = (client_cert.to_str().unwrap(), client_key.to_str().unwrap());

    let args = [
        "--endpoint",
        &endpoint,
        "--ca-cert",
        ca,
        "--client-cert",
        client_cert,
        "--client-key",
        client_key,
        "--json",
        "job",
        "get",
        "j1",
    ];
    let output = orgctl_async(&args, &[("ORGCTL_TOKEN", &secret)]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let job: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(job["org_id"], "ops");

    // The environment variables do the same.
    let env = [
        ("ORGCTL_TOKEN", secret.as_str()),
        ("ORGCTL_ENDPOINT", endpoint.as_str()),
        ("ORGCTL_CA_CERT", ca),
        ("ORGCTL_CLIENT_CERT", client_cert),
        ("ORGCTL_CLIENT_KEY", client_key),
        ("ORGCTL_TLS_SERVER_NAME", "localhost"),
    ];
    let output = orgctl_async(&["job", "get", "j1"], &env).await;
    assert!(output.status.success(), "{}", stderr(&output));

    // An untrusted server certificate: a quick, clear failure with a hint.
    let stranger = support::Pki::new("stranger-ca");
    let stranger_ca = stranger.ca_pem();
    let started = Instant::now();
    let output = orgctl_async(
        &[
            "--endpoint",
            &endpoint,
            "--ca-cert",
            stranger_ca.to_str().unwrap(),
            "job",
            "get",
            "j1",
        ],
        &[("ORGCTL_TOKEN", &secret)],
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_mentions(
        &stderr(&output),
        &["TLS handshake", "certificate", "hint: check --ca-cert"],
    );
}

#[test]
fn completions_are_printed_for_every_shell_and_bash_accepts_its_script() {
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let output = orgctl(&["completions", shell]);
        assert!(output.status.success(), "{shell}: {}", stderr(&output));
        assert_mentions(&stdout(&output), &["orgctl", "member", "--output"]);
    }
    let output = orgctl(&["completions", "bash"]);
    let script = stdout(&output);
    assert_mentions(
        &script,
        &[
            "org",
            "member",
            "job",
            "auth",
            "token",
            "config",
            "completions",
            "--watch",
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("orgctl.bash");
    std::fs::write(&path, &script).unwrap();
    match Command::new("bash").arg("-n").arg(&path).output() {
        Ok(check) => assert!(check.status.success(), "bash -n: {}", stderr(&check)),
        Err(error) => eprintln!("skipped bash -n: {error}"),
    }

    // A broken config file does not stand in the way of installing them.
    let output = command(&["completions", "bash"])
        .env("ORGCTL_CONFIG", "/nonexistent/config.toml")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let output = orgctl(&["completions", "tcsh"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
}

/// Writes a config file with `mode` and returns its path as a string.
fn config_file(dir: &std::path::Path, text: &str, mode: u32) -> String {
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    #[cfg(not(unix))]
    let _ = mode;
    path.to_str().unwrap().to_owned()
}

#[test]
fn config_file_problems_are_usage_errors_that_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = config_file(
        dir.path(),
        "endpoint = \"127.0.0.1:1\"\nendpiont = \"x\"\n",
        0o600,
    );
    for output in [
        orgctl(&["--config", &path, "org", "get", "acme"]),
        command(&["config", "show"])
            .env("ORGCTL_CONFIG", &path)
            .output()
            .unwrap(),
    ] {
        assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
        assert_mentions(
            &stderr(&output),
            &[&path, "line 2", "unknown key `endpiont`"],
        );
        assert!(stdout(&output).is_empty());
    }

    // A file named explicitly must exist; the default one may be missing.
    let missing = dir.path().join("missing.toml");
    let missing = missing.to_str().unwrap();
    let output = orgctl(&["--config", missing, "config", "show"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert_mentions(&stderr(&output), &["cannot read config file", missing]);
    let output = orgctl(&["config", "show"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_mentions(
        &stdout(&output),
        &[
            "/nonexistent/orgctl-tests/orgctl/config.toml",
            "(not found)",
        ],
    );

    // Bad values, and a token set twice in the file.
    for (text, message) in [
        ("output = \"yaml\"\n", "yaml"),
        (
            "endpoint = 5\n",
            "line 1: invalid type: integer `5`, expected a string",
        ),
        (
            "token = \"oat_a\"\ntoken-file = \"t\"\n",
            "sets both token and token-file",
        ),
    ] {
        let path = config_file(dir.path(), text, 0o600);
        let output = orgctl(&["--config", &path, "config", "show"]);
        assert_eq!(output.status.code(), Some(2), "{text}: {}", stderr(&output));
        assert_mentions(&stderr(&output), &[&path, message]);
    }

    // --json contradicting --output on the same command line.
    let output = orgctl(&["--json", "--output", "table", "config", "show"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert_mentions(&stderr(&output), &["--json", "--output table"]);
}

#[test]
fn config_show_tells_where_each_setting_came_from_and_never_the_secret() {
    let secrets = [
        "oat_fileFILEfileFILEfileFILEfileFILEfileFILE0",
        "oat_envENVenvENVenvENVenvENVenvENVenvENVenv00",
        "oat_flagFLAGflagFLAGflagFLAGflagFLAGflagFLA0",
    ];
    // XDG_CONFIG_HOME/orgctl/config.toml is the default file.
    let xdg = tempfile::tempdir().unwrap();
    std::fs::create_dir(xdg.path().join("orgctl")).unwrap();
    config_file(
        &xdg.path().join("orgctl"),
        &format!(
            "endpoint = \"file.example:1\"\nauth-endpoint = \"file.example:2\"\n\
             token = \"{}\"\nca-cert = \"ca.pem\"\noutput = \"json\"\n",
            secrets[0]
        ),
        0o644,
    );
    let show = |args: &[&str], env: &[(&str, &str)]| {
        let mut command = command(&[args, &["config", "show"][..]].concat());
        command.env("XDG_CONFIG_HOME", xdg.path());
        command.envs(env.iter().copied());
        let output = command.output().unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
        for secret in secrets {
            assert!(!stdout(&output).contains(secret), "{}", stdout(&output));
            assert!(!stderr(&output).contains(secret), "{}", stderr(&output));
        }
        output
    };

    // Only the file: its values, its output form (json), and a warning
    // that others can read the token in it.
    let output = show(&[], &[]);
    assert_mentions(
        &stderr(&output),
        &[
            "warning: config file",
            "can be read by other users",
            "chmod 600",
        ],
    );
    let json: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(json["config"]["found"], true);
    assert_eq!(json["config"]["source"], "default");
    assert_eq!(json["endpoint"]["value"], "file.example:1");
    assert_eq!(json["endpoint"]["source"], "config");
    assert_eq!(json["token"]["value"], "<redacted>");
    assert_eq!(json["token"]["source"], "config");
    let ca = xdg.path().join("orgctl").join("ca.pem");
    assert_eq!(json["ca-cert"]["value"], ca.to_str().unwrap());
    assert_eq!(json["output"]["source"], "config");
    assert_eq!(json["connect-timeout"]["source"], "default");

    // The environment beats the file; the command line beats both.
    let env = [
        ("ORGCTL_ENDPOINT", "env.example:1"),
        ("ORGCTL_TOKEN", secrets[1]),
        ("ORGCTL_OUTPUT", "table"),
    ];
    let output = show(&[], &env);
    let text = stdout(&output);
    let row = |name: &str| {
        text.lines()
            .find(|line| line.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no {name} row in:\n{text}"))
            .split_whitespace()
            .skip(1)
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert!(text.starts_with("SETTING"), "{text}");
    assert_eq!(row("endpoint"), "env.example:1 env ORGCTL_ENDPOINT");
    assert_eq!(row("auth-endpoint"), "file.example:2 config");
    assert_eq!(row("token"), "<redacted> env ORGCTL_TOKEN");
    assert_eq!(row("token-file"), "- unset");
    assert_eq!(row("output"), "table env ORGCTL_OUTPUT");

    let output = show(
        &[
            "--endpoint",
            "flag.example:1",
            "--token",
            secrets[2],
            "--json",
        ],
        &env,
    );
    let json: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(json["endpoint"]["value"], "flag.example:1");
    assert_eq!(json["endpoint"]["source"], "flag");
    assert_eq!(json["token"]["source"], "flag");
    assert_eq!(json["output"]["value"], "json");

    // A token file on the command line beats the token in the file.
    let output = show(&["--token-file", "/run/secrets/orgctl"], &[]);
    let json: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(json["token-file"]["value"], "/run/secrets/orgctl");
    assert!(json["token"]["value"].is_null());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_followed_job_that_fails_or_is_cancelled_exits_3_or_4() {
    let (secret, authenticator) = support::ops_token();
    let addr = support::serve_jobs(authenticator, None).await;
    let endpoint = addr.to_string();
    let env = [("ORGCTL_TOKEN", secret.as_str())];
    for (command, job_id, code, state) in [
        ("watch", "failed", 3, "FAILED"),
        ("wait", "failed", 3, "FAILED"),
        ("watch", "cancelled", 4, "CANCELLED"),
        ("wait", "cancelled", 4, "CANCELLED"),
        ("watch", "succeeded", 0, "SUCCEEDED"),
    ] {
        let args = ["--endpoint", &endpoint, "job", command, job_id];
        let output = orgctl_async(&args, &env).await;
        assert_eq!(
            output.status.code(),
            Some(code),
            "job {command} {job_id}: {}",
            stderr(&output)
        );
        let text = stdout(&output);
        let last = text.lines().last().unwrap_or_default();
        assert!(
            last.starts_with(&format!("job {job_id} {state} processed=10/10")),
            "{text}"
        );
    }
    let args = [
        "--endpoint",
        &endpoint,
        "--output",
        "json",
        "job",
        "wait",
        "failed",
    ];
    let output = orgctl_async(&args, &env).await;
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let job: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(job["state"], "FAILED");
}
