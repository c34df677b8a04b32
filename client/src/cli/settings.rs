//! orgctl's settings and where each one comes from: the command line, the
//! environment (`ORGCTL_*`), the config file, or the built-in default, in
//! that order of precedence; and `orgctl config show`, which prints them.
//!
//! The config file is TOML with the global options' long names as keys:
//!
//! ```toml
//! endpoint = "orgs.example.com:50051"
//! auth-endpoint = "auth.example.com:50052"
//! token-file = "~/.config/orgctl/token"   # or: token = "oat_…"
//! ca-cert = "ca.pem"                      # relative to this file's folder
//! output = "table"
//! ```
//!
//! It is `--config PATH`, else `$ORGCTL_CONFIG`, else
//! `$XDG_CONFIG_HOME/orgctl/config.toml`, else `~/.config/orgctl/config.toml`.
//! A missing default file is no error; a file named explicitly must exist.
//! Unknown keys are refused, so a typo does not silently fall back to a
//! default.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Subcommand;
use clap::parser::ValueSource;
use orgauth_security::token::Secret;
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};

use super::output::{Format, Output};
use super::table::Table;
use super::{Cli, CliError, ExitStatus};

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the settings in effect and where each came from (flag,
    /// environment, config file or default). The token's secret is never
    /// printed.
    Show,
}

/// Where a setting's value came from, lowest precedence first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    Default,
    Config,
    Env,
    Flag,
}

impl Source {
    /// Where clap found a value; `None` when it found none.
    pub fn of_clap(source: Option<ValueSource>) -> Option<Source> {
        match source? {
            ValueSource::CommandLine => Some(Source::Flag),
            ValueSource::EnvVariable => Some(Source::Env),
            _ => Some(Source::Default),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Source::Default => "default",
            Source::Config => "config",
            Source::Env => "env",
            Source::Flag => "flag",
        }
    }
}

/// Where clap found each global option, by clap id; recorded at parse time,
/// when the matches are at hand.
#[derive(Debug, Default, Clone)]
pub struct Origins(Vec<(&'static str, Source)>);

impl Origins {
    /// The global options whose origin matters: every key of the config
    /// file, and the few options only the command line or environment set.
    const IDS: [&'static str; 12] = [
        "endpoint",
        "auth_endpoint",
        "token",
        "token_file",
        "ca_cert",
        "client_cert",
        "client_key",
        "tls_server_name",
        "connect_timeout",
        "watch_retry_budget",
        "output",
        "config",
    ];

    pub fn from_matches(matches: &clap::ArgMatches) -> Self {
        Self(
            Self::IDS
                .iter()
                .filter_map(|&id| Some((id, Source::of_clap(matches.value_source(id))?)))
                .collect(),
        )
    }

    pub fn of(&self, id: &str) -> Option<Source> {
        self.0
            .iter()
            .find_map(|&(known, source)| (known == id).then_some(source))
    }
}

/// One setting: its value and where it came from.
#[derive(Debug, Clone)]
pub struct Setting<T> {
    pub value: T,
    pub source: Source,
}

impl<T> Setting<T> {
    fn new(value: T, source: Source) -> Self {
        Self { value, source }
    }
}

/// The bearer token: a secret, or a file holding one.
#[derive(Debug, Clone)]
pub enum Token {
    Secret(Secret),
    File(PathBuf),
}

/// The config file, as read.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ConfigFile {
    endpoint: Option<String>,
    auth_endpoint: Option<String>,
    #[serde(default, deserialize_with = "secret")]
    token: Option<Secret>,
    token_file: Option<PathBuf>,
    ca_cert: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
    tls_server_name: Option<String>,
    output: Option<Format>,
}

/// Reads `token` straight into a [`Secret`], whose `Debug` hides it.
fn secret<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Secret>, D::Error> {
    Option::<String>::deserialize(deserializer).map(|token| token.map(Secret))
}

/// Which config file applies, and whether it was there.
#[derive(Debug, Clone)]
pub struct ConfigLocation {
    /// `None` only when no default can be worked out (no HOME).
    pub path: Option<PathBuf>,
    /// Flag, env or default.
    pub source: Source,
    /// Whether the file was found and read.
    pub found: bool,
}

/// Where the default config file is: `$XDG_CONFIG_HOME/orgctl/config.toml`,
/// else `$HOME/.config/orgctl/config.toml`. The XDG spec says to ignore a
/// relative XDG_CONFIG_HOME.
fn default_config_path(var: impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let xdg = var("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute());
    let config_dir = xdg.or_else(|| {
        var("HOME")
            .filter(|home| !home.is_empty())
            .map(|home| Path::new(&home).join(".config"))
    })?;
    Some(config_dir.join("orgctl").join("config.toml"))
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Finds and reads the config file: `--config` / `ORGCTL_CONFIG` if given
/// (and then it must exist), else the default path (which may be missing).
pub fn load_config(cli: &Cli) -> Result<(ConfigLocation, ConfigFile), CliError> {
    let explicit = cli
        .config
        .clone()
        .zip(cli.origins.of("config"))
        .filter(|(_, source)| *source != Source::Default);
    let (path, source) = match explicit {
        Some((path, source)) => (Some(path), source),
        None => (default_config_path(env_var), Source::Default),
    };
    let mut location = ConfigLocation {
        path: path.clone(),
        source,
        found: false,
    };
    let Some(path) = path else {
        return Ok((location, ConfigFile::default()));
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound && source == Source::Default => {
            return Ok((location, ConfigFile::default()));
        }
        Err(error) => {
            return Err(CliError::usage(format!(
                "cannot read config file {}: {error}",
                path.display()
            ))
            .with_hint(
                "--config and ORGCTL_CONFIG must name an existing file \
                 (ORGCTL_CONFIG=/dev/null skips the config file)",
            ));
        }
    };
    let config = parse_config(&text, &path)?;
    location.found = true;
    if config.token.is_some() {
        warn_if_others_can_read(&path);
    }
    Ok((location, config))
}

/// Parses the file's text; relative paths in it are taken from the file's
/// folder, `~/` from the home directory.
pub(super) fn parse_config(text: &str, path: &Path) -> Result<ConfigFile, CliError> {
    let mut config: ConfigFile = toml::from_str(text).map_err(|error| {
        let line = error
            .span()
            .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
        let place = match line {
            Some(line) => format!("config file {}, line {line}", path.display()),
            None => format!("config file {}", path.display()),
        };
        // TOML calls them keys; serde's message says "field".
        let message = error
            .message()
            .trim_end()
            .replace("unknown field", "unknown key");
        CliError::usage(format!("{place}: {message}"))
    })?;
    let empty = [
        ("endpoint", config.endpoint.as_deref()),
        ("auth-endpoint", config.auth_endpoint.as_deref()),
        ("tls-server-name", config.tls_server_name.as_deref()),
        ("token", config.token.as_ref().map(|Secret(s)| s.as_str())),
    ]
    .into_iter()
    .chain(
        [
            ("token-file", &config.token_file),
            ("ca-cert", &config.ca_cert),
            ("client-cert", &config.client_cert),
            ("client-key", &config.client_key),
        ]
        .into_iter()
        .map(|(key, value)| (key, value.as_deref().and_then(Path::to_str))),
    )
    .find(|(_, value)| value.is_some_and(|value| value.trim().is_empty()));
    if let Some((key, _)) = empty {
        return Err(CliError::usage(format!(
            "config file {}: {key} is empty (leave the key out instead)",
            path.display()
        )));
    }
    let base = path.parent().unwrap_or(Path::new("."));
    let home = env_var("HOME");
    for file in [
        &mut config.token_file,
        &mut config.ca_cert,
        &mut config.client_cert,
        &mut config.client_key,
    ]
    .into_iter()
    .flatten()
    {
        *file = resolve_path(file, base, home.as_deref());
    }
    Ok(config)
}

fn resolve_path(path: &Path, base: &Path, home: Option<&str>) -> PathBuf {
    if let (Ok(rest), Some(home)) = (path.strip_prefix("~"), home) {
        return Path::new(home).join(rest);
    }
    if path.is_relative() {
        return base.join(path);
    }
    path.to_path_buf()
}

/// Like ssh with a private key: a token other users can read is worth a
/// warning, not a refusal.
fn warn_if_others_can_read(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(metadata) = std::fs::metadata(path) {
            let mode = metadata.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                eprintln!(
                    "warning: config file {} holds a token and can be read by other users \
                     (mode {mode:03o}); chmod 600 it",
                    path.display()
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// Every setting orgctl runs with, and where each came from.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config: ConfigLocation,
    pub endpoint: Setting<String>,
    pub auth_endpoint: Setting<String>,
    pub token: Option<Setting<Token>>,
    pub ca_cert: Option<Setting<PathBuf>>,
    pub client_cert: Option<Setting<PathBuf>>,
    pub client_key: Option<Setting<PathBuf>>,
    pub tls_server_name: Option<Setting<String>>,
    pub connect_timeout: Setting<Duration>,
    pub watch_retry_budget: Setting<Duration>,
    pub output: Setting<Format>,
}

impl Settings {
    /// Merges the command line and environment (as clap parsed them) with
    /// the config file: a flag or variable beats the file, which beats
    /// clap's default.
    pub fn resolve(
        cli: &Cli,
        config: ConfigFile,
        location: ConfigLocation,
    ) -> Result<Self, CliError> {
        let args = &cli.connection;
        let from = |id: &str| cli.origins.of(id);
        let token = pick_token(
            pick(
                args.token.clone().map(Token::Secret),
                from("token"),
                config.token.map(Token::Secret),
            ),
            pick(
                args.token_file.clone().map(Token::File),
                from("token_file"),
                config.token_file.map(Token::File),
            ),
            &location,
        )?;
        Ok(Self {
            endpoint: pick_or_default(args.endpoint.clone(), from("endpoint"), config.endpoint),
            auth_endpoint: pick_or_default(
                args.auth_endpoint.clone(),
                from("auth_endpoint"),
                config.auth_endpoint,
            ),
            token,
            ca_cert: pick(args.ca_cert.clone(), from("ca_cert"), config.ca_cert),
            client_cert: pick(
                args.client_cert.clone(),
                from("client_cert"),
                config.client_cert,
            ),
            client_key: pick(
                args.client_key.clone(),
                from("client_key"),
                config.client_key,
            ),
            tls_server_name: pick(
                args.tls_server_name.clone(),
                from("tls_server_name"),
                config.tls_server_name,
            ),
            connect_timeout: Setting::new(
                args.connect_timeout,
                from("connect_timeout").unwrap_or(Source::Default),
            ),
            watch_retry_budget: Setting::new(
                args.watch_retry_budget,
                from("watch_retry_budget").unwrap_or(Source::Default),
            ),
            output: pick_output(cli, config.output)?,
            config: location,
        })
    }

    /// Checks that the TLS settings make sense together, wherever each came
    /// from; only commands that connect need this.
    pub fn check_tls(&self) -> Result<(), CliError> {
        let where_from = "(as a flag, an ORGCTL_* variable or in the config file)";
        if self.client_cert.is_some() && (self.client_key.is_none() || self.ca_cert.is_none()) {
            return Err(CliError::usage(format!(
                "--client-cert needs --client-key and --ca-cert {where_from}"
            )));
        }
        if self.client_key.is_some() && self.client_cert.is_none() {
            return Err(CliError::usage(format!(
                "--client-key needs --client-cert {where_from}"
            )));
        }
        if self.tls_server_name.is_some() && self.ca_cert.is_none() {
            return Err(CliError::usage(format!(
                "--tls-server-name needs --ca-cert {where_from}"
            )));
        }
        Ok(())
    }
}

/// A flag or variable beats the config file, which beats clap's default
/// (`value` with any other source).
fn pick_or_default<T>(value: T, source: Option<Source>, from_config: Option<T>) -> Setting<T> {
    match (source, from_config) {
        (Some(source @ (Source::Flag | Source::Env)), _) => Setting::new(value, source),
        (_, Some(configured)) => Setting::new(configured, Source::Config),
        (_, None) => Setting::new(value, Source::Default),
    }
}

/// [`pick_or_default`] for a setting that may be unset everywhere.
fn pick<T>(value: Option<T>, source: Option<Source>, from_config: Option<T>) -> Option<Setting<T>> {
    match value {
        Some(value) => Some(pick_or_default(value, source, from_config)),
        None => from_config.map(|configured| Setting::new(configured, Source::Config)),
    }
}

/// Keeps one of the token and the token file when both are set: the one
/// from the stronger source; both from the same place is ambiguous.
fn pick_token(
    secret: Option<Setting<Token>>,
    file: Option<Setting<Token>>,
    location: &ConfigLocation,
) -> Result<Option<Setting<Token>>, CliError> {
    let (secret, file) = match (secret, file) {
        (None, other) | (other, None) => return Ok(other),
        (Some(secret), Some(file)) => (secret, file),
    };
    match secret.source.cmp(&file.source) {
        std::cmp::Ordering::Greater => Ok(Some(secret)),
        std::cmp::Ordering::Less => Ok(Some(file)),
        std::cmp::Ordering::Equal => Err(CliError::usage(match secret.source {
            Source::Flag => "--token and --token-file cannot be used together".to_owned(),
            Source::Env => "ORGCTL_TOKEN and ORGCTL_TOKEN_FILE are both set: unset one".to_owned(),
            Source::Config | Source::Default => format!(
                "config file {} sets both token and token-file: keep one",
                location.path.as_deref().unwrap_or(Path::new("?")).display()
            ),
        })),
    }
}

/// `--json` is `--output json` given on the command line; with an
/// `--output` that says otherwise, the command line contradicts itself.
fn pick_output(cli: &Cli, from_config: Option<Format>) -> Result<Setting<Format>, CliError> {
    let output = pick_or_default(cli.output, cli.origins.of("output"), from_config);
    if !cli.json {
        return Ok(output);
    }
    if output.source == Source::Flag && output.value != Format::Json {
        return Err(CliError::usage(format!(
            "--json is short for --output json and contradicts --output {}",
            output.value.name()
        )));
    }
    Ok(Setting::new(Format::Json, Source::Flag))
}

/// What `config show` prints for the token: never the secret.
const REDACTED: &str = "<redacted>";

/// One row of `config show`.
struct Row {
    /// The config key, which is also the long flag without its dashes.
    key: &'static str,
    value: Option<String>,
    source: Option<Source>,
}

impl Row {
    fn new<T>(
        key: &'static str,
        setting: Option<&Setting<T>>,
        show: impl Fn(&T) -> String,
    ) -> Self {
        Self {
            key,
            value: setting.map(|setting| show(&setting.value)),
            source: setting.map(|setting| setting.source),
        }
    }

    /// `flag --endpoint`, `env ORGCTL_ENDPOINT`, `config`, `default`.
    fn origin(&self) -> String {
        match self.source {
            None => "unset".to_owned(),
            Some(Source::Flag) => format!("flag --{}", self.key),
            Some(Source::Env) => format!(
                "env ORGCTL_{}",
                self.key.to_ascii_uppercase().replace('-', "_")
            ),
            Some(source) => source.name().to_owned(),
        }
    }
}

fn rows(settings: &Settings) -> Vec<Row> {
    let path = |path: &PathBuf| path.display().to_string();
    let duration = |duration: &Duration| humantime::format_duration(*duration).to_string();
    let secret = settings.token.as_ref().and_then(|token| match token.value {
        Token::Secret(_) => Some(Setting::new((), token.source)),
        Token::File(_) => None,
    });
    let token_file = settings
        .token
        .as_ref()
        .and_then(|token| match &token.value {
            Token::File(file) => Some(Setting::new(file.clone(), token.source)),
            Token::Secret(_) => None,
        });
    vec![
        Row::new("endpoint", Some(&settings.endpoint), String::clone),
        Row::new(
            "auth-endpoint",
            Some(&settings.auth_endpoint),
            String::clone,
        ),
        Row::new("token", secret.as_ref(), |_| REDACTED.to_owned()),
        Row::new("token-file", token_file.as_ref(), path),
        Row::new("ca-cert", settings.ca_cert.as_ref(), path),
        Row::new("client-cert", settings.client_cert.as_ref(), path),
        Row::new("client-key", settings.client_key.as_ref(), path),
        Row::new(
            "tls-server-name",
            settings.tls_server_name.as_ref(),
            String::clone,
        ),
        Row::new("connect-timeout", Some(&settings.connect_timeout), duration),
        Row::new(
            "watch-retry-budget",
            Some(&settings.watch_retry_budget),
            duration,
        ),
        Row::new("output", Some(&settings.output), |format| {
            format.name().to_owned()
        }),
    ]
}

/// `orgctl config show`: a SETTING / VALUE / SOURCE table whose first row is
/// the config file itself, or one JSON object
/// `{"config": {"path", "source", "found"}, "<key>": {"value", "source"}, …}`
/// (the source one of flag, env, config, default; a null value when unset).
pub fn show(settings: &Settings, output: Output) -> Result<ExitStatus, CliError> {
    let location = &settings.config;
    let rows = rows(settings);
    if output.is_json() {
        let mut object = serde_json::Map::new();
        object.insert(
            "config".to_owned(),
            json!({
                "path": location.path.as_ref().map(|path| path.display().to_string()),
                "source": location.source.name(),
                "found": location.found,
            }),
        );
        for row in rows {
            object.insert(
                row.key.to_owned(),
                json!({ "value": row.value, "source": row.source.map(Source::name) }),
            );
        }
        super::output::print_line(Value::Object(object));
        return Ok(ExitStatus::Success);
    }
    let mut table = Table::new(&["SETTING", "VALUE", "SOURCE"]);
    let config_origin = Row {
        key: "config",
        value: None,
        source: Some(location.source),
    }
    .origin();
    table.push(vec![
        "config".to_owned(),
        location
            .path
            .as_ref()
            .map_or_else(|| "-".to_owned(), |path| path.display().to_string()),
        if location.found {
            config_origin
        } else {
            format!("{config_origin} (not found)")
        },
    ]);
    for row in rows {
        let origin = row.origin();
        table.push(vec![
            row.key.to_owned(),
            row.value.unwrap_or_else(|| "-".to_owned()),
            origin,
        ]);
    }
    table.finish();
    Ok(ExitStatus::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(path: &str) -> ConfigLocation {
        ConfigLocation {
            path: Some(PathBuf::from(path)),
            source: Source::Flag,
            found: true,
        }
    }

    #[test]
    fn the_default_file_follows_xdg_then_home() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(key, _)| *key == name)
                    .map(|(_, value)| (*value).to_owned())
            }
        };
        assert_eq!(
            default_config_path(vars(&[("XDG_CONFIG_HOME", "/xdg"), ("HOME", "/home/u")])),
            Some(PathBuf::from("/xdg/orgctl/config.toml"))
        );
        assert_eq!(
            default_config_path(vars(&[("XDG_CONFIG_HOME", "rel"), ("HOME", "/home/u")])),
            Some(PathBuf::from("/home/u/.config/orgctl/config.toml"))
        );
        assert_eq!(
            default_config_path(vars(&[("HOME", "/home/u")])),
            Some(PathBuf::from("/home/u/.config/orgctl/config.toml"))
        );
        assert_eq!(default_config_path(vars(&[])), None);
    }

    #[test]
    fn config_files_parse_with_paths_from_their_folder() {
        let text = r#"
            endpoint = "orgs.example.com:50051"
            token-file = "token"
            ca-cert = "/etc/orgauth/ca.pem"
            output = "json"
        "#;
        let config = parse_config(text, Path::new("/etc/orgctl/config.toml")).unwrap();
        assert_eq!(config.endpoint.as_deref(), Some("orgs.example.com:50051"));
        assert_eq!(config.token_file, Some(PathBuf::from("/etc/orgctl/token")));
        assert_eq!(config.ca_cert, Some(PathBuf::from("/etc/orgauth/ca.pem")));
        assert_eq!(config.output, Some(Format::Json));
        assert_eq!(
            resolve_path(Path::new("~/t"), Path::new("/etc"), Some("/home/u")),
            PathBuf::from("/home/u/t")
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_file_and_line() {
        let path = Path::new("/tmp/orgctl.toml");
        let error = parse_config("endpoint = \"x:1\"\ntokn = \"oat_x\"\n", path).unwrap_err();
        let report = error.report();
        assert!(
            report.starts_with("error: config file /tmp/orgctl.toml, line 2: unknown key `tokn`"),
            "{report}"
        );
        assert_eq!(error.exit_status(), ExitStatus::Usage);

        let report = parse_config("output = \"yaml\"\n", path)
            .unwrap_err()
            .report();
        assert!(
            report.contains("line 1") && report.contains("yaml"),
            "{report}"
        );
        let report = parse_config("endpoint = \"\"\n", path)
            .unwrap_err()
            .report();
        assert!(report.contains("endpoint is empty"), "{report}");
        let report = parse_config("endpoint = [\n", path).unwrap_err().report();
        assert!(
            report.starts_with("error: config file /tmp/orgctl.toml"),
            "{report}"
        );
    }

    #[test]
    fn the_token_is_never_in_debug_output() {
        let secret = "oat_0123456789abcdefghijklmnopqrstuvwxyzABCDEFG";
        let config = parse_config(&format!("token = \"{secret}\"\n"), Path::new("c")).unwrap();
        assert!(!format!("{config:?}").contains(secret));
    }

    #[test]
    fn flags_and_variables_beat_the_file_which_beats_defaults() {
        let picked = pick(Some("flag"), Some(Source::Flag), Some("file")).unwrap();
        assert_eq!((picked.value, picked.source), ("flag", Source::Flag));
        let picked = pick(Some("env"), Some(Source::Env), Some("file")).unwrap();
        assert_eq!((picked.value, picked.source), ("env", Source::Env));
        let picked = pick(Some("default"), Some(Source::Default), Some("file")).unwrap();
        assert_eq!((picked.value, picked.source), ("file", Source::Config));
        let picked = pick(Some("default"), Some(Source::Default), None).unwrap();
        assert_eq!((picked.value, picked.source), ("default", Source::Default));
        assert!(pick::<&str>(None, None, None).is_none());
    }

    #[test]
    fn the_stronger_token_source_wins_and_a_tie_is_refused() {
        let secret = |source| Some(Setting::new(Token::Secret(Secret("t".into())), source));
        let file = |source| Some(Setting::new(Token::File("f".into()), source));
        let here = location("/c.toml");
        let kept = |secret, file| match pick_token(secret, file, &here).unwrap() {
            Some(Setting {
                value: Token::Secret(_),
                source,
            }) => ("secret", source),
            Some(Setting {
                value: Token::File(_),
                source,
            }) => ("file", source),
            None => ("none", Source::Default),
        };
        assert_eq!(
            kept(secret(Source::Flag), file(Source::Env)),
            ("secret", Source::Flag)
        );
        assert_eq!(
            kept(secret(Source::Env), file(Source::Flag)),
            ("file", Source::Flag)
        );
        assert_eq!(
            kept(secret(Source::Config), file(Source::Env)),
            ("file", Source::Env)
        );
        assert_eq!(kept(None, file(Source::Config)), ("file", Source::Config));
        assert_eq!(kept(None, None), ("none", Source::Default));
        for (source, message) in [
            (Source::Flag, "cannot be used together"),
            (
                Source::Env,
                "ORGCTL_TOKEN and ORGCTL_TOKEN_FILE are both set",
            ),
            (
                Source::Config,
                "config file /c.toml sets both token and token-file",
            ),
        ] {
            let error = pick_token(secret(source), file(source), &here).unwrap_err();
            assert!(error.report().contains(message), "{}", error.report());
            assert_eq!(error.exit_status(), ExitStatus::Usage);
        }
    }
}
