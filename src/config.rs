//! The settings tree: one TOML file plus environment overrides, validated before anything starts.
//!
//! Lookup order for the file: `--config PATH`, then `$TIMELINES_SYNC_CONFIG`, then
//! `config/timelines-sync.toml` if it exists, else built-in defaults. Unknown keys are errors, so a
//! typo stops start-up with the key's name instead of being silently ignored.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The file looked for when neither `--config` nor `$TIMELINES_SYNC_CONFIG` names one.
pub const DEFAULT_CONFIG_PATH: &str = "config/timelines-sync.toml";
/// The workspace that the `TIMELINES_API_*` environment overrides apply to, and that always exists.
pub const DEFAULT_WORKSPACE: &str = "default";
/// TimelinesAI's public API base URL.
pub const DEFAULT_API_URL: &str = "https://app.timelines.ai/integrations/api";

/// A configuration problem, naming the key and the reason.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has a key of the wrong type or an unknown key.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message, which names the key and the line.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("config key `{key}`: {reason}")]
    Invalid {
        /// The dotted key, e.g. `workspaces.default.rate_limit_per_minute`.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// A secret string (API token, database password). Never printed: `Debug` and `Display` redact it,
/// and every value made is registered with the log redactor (`telemetry::redact`), so it cannot
/// reach a log line by another way either.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(from = "String")]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        let value = value.into();
        crate::telemetry::redact::register(&value);
        Self(value)
    }
    /// Wraps a value that replaces an earlier one from time to time (a refreshed access token);
    /// the log writer keeps only the latest of these (see `telemetry::redact`).
    pub fn rotating(value: impl Into<String>) -> Self {
        let value = value.into();
        crate::telemetry::redact::register_rotating(&value);
        Self(value)
    }
    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Where the state lives.
    pub database: DatabaseSettings,
    /// TimelinesAI workspaces by name; `default` always exists.
    pub workspaces: BTreeMap<String, WorkspaceSettings>,
    /// The queue engine that runs jobs.
    pub dispatcher: DispatcherSettings,
    /// Background upkeep of the queue.
    pub maintenance: MaintenanceSettings,
    /// Logging.
    pub log: LogSettings,
    /// Systems polled for changes, by name (`[sources.NAME]`).
    pub sources: BTreeMap<String, crate::sources::config::SourceSettings>,
    /// What to do with the records of a source (`[[rules]]`).
    pub rules: Vec<crate::sources::config::RuleSettings>,
    /// Defaults for every rule: quiet hours, frequency cap.
    pub policies: crate::sources::config::PolicySettings,
    /// The service's HTTP listener (health, metrics, webhooks).
    pub http: HttpSettings,
    /// Inbound webhooks: the receiver's secret, subscriptions, opt-out by reply.
    pub webhooks: crate::webhooks::config::WebhookSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            database: DatabaseSettings::default(),
            workspaces: BTreeMap::from([(
                DEFAULT_WORKSPACE.to_owned(),
                WorkspaceSettings::default(),
            )]),
            dispatcher: DispatcherSettings::default(),
            maintenance: MaintenanceSettings::default(),
            log: LogSettings::default(),
            sources: BTreeMap::new(),
            rules: Vec::new(),
            policies: Default::default(),
            http: HttpSettings::default(),
            webhooks: Default::default(),
        }
    }
}

/// Overrides `[http] listen` (e.g. `0.0.0.0:8080` in a container).
pub const HTTP_LISTEN_ENV: &str = "TIMELINES_SYNC_HTTP_LISTEN";

/// `[http]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// Address and port of the listener; port 0 picks a free one (logged at start-up).
    pub listen: std::net::SocketAddr,
    /// Whether `run` serves HTTP at all.
    pub enabled: bool,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 8080)),
            enabled: true,
        }
    }
}

/// `[database]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSettings {
    /// `postgres://...`; absent: the embedded private cluster under `data_dir`.
    pub url: Option<Secret>,
    /// Directory of the embedded cluster (relative to the working directory).
    pub data_dir: PathBuf,
    /// Size of the connection pool of one process.
    pub max_connections: u32,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: None,
            data_dir: PathBuf::from(".data"),
            max_connections: 10,
        }
    }
}

/// `[workspaces.NAME]`: one TimelinesAI workspace, i.e. one API token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkspaceSettings {
    /// API base URL, without a trailing slash.
    pub api_url: String,
    /// The API token, inline. Prefer `token_env`.
    pub token: Option<Secret>,
    /// Name of an environment variable holding the token.
    pub token_env: Option<String>,
    /// Requests per minute the workspace allows (TimelinesAI: 50).
    pub rate_limit_per_minute: u32,
    /// API calls per calendar month (TimelinesAI: 200,000).
    pub monthly_api_calls: u32,
    /// Send this workspace's jobs to the built-in simulator instead of the API (nothing reaches
    /// WhatsApp). Implied when nothing at all is configured (no token, no database URL).
    pub simulator: bool,
    /// The last part of the monthly API calls, in percent, kept for jobs with priority at or
    /// above `reserve_priority`, so bulk sends cannot starve urgent ones.
    pub api_call_reserve_percent: f64,
    /// The priority from which jobs may use the reserve.
    pub reserve_priority: i32,
}

impl Default for WorkspaceSettings {
    fn default() -> Self {
        Self {
            api_url: DEFAULT_API_URL.to_owned(),
            token: None,
            token_env: None,
            rate_limit_per_minute: 50,
            monthly_api_calls: 200_000,
            simulator: false,
            api_call_reserve_percent: 5.0,
            reserve_priority: 10,
        }
    }
}

impl WorkspaceSettings {
    /// The token, from `token` or the variable `token_env` names (validated at load time).
    pub fn resolved_token(&self) -> Option<Secret> {
        self.token.clone().or_else(|| {
            self.token_env
                .as_ref()
                .and_then(|name| std::env::var(name).ok())
                .map(Secret::new)
        })
    }
}

/// `[dispatcher]`: the queue engine.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DispatcherSettings {
    /// Jobs one process runs at the same time.
    pub concurrency: usize,
    /// Most jobs claimed in one query.
    pub claim_batch_size: usize,
    /// Fallback poll when no NOTIFY arrives, in milliseconds (jittered ±10 %).
    pub poll_interval_ms: u64,
    /// Lease of a running job, in seconds; renewed by a heartbeat every third of it. A crashed
    /// worker's jobs are rescued within about this long.
    pub lease_seconds: u64,
    /// Longest one job attempt may run, in seconds, before it counts as a failed attempt.
    pub job_timeout_seconds: u64,
    /// On shutdown, how long running jobs may take to finish, in seconds.
    pub shutdown_grace_seconds: u64,
    /// First retry delay, in seconds; doubles per attempt.
    pub retry_base_seconds: f64,
    /// Longest retry delay, in seconds.
    pub retry_max_seconds: f64,
}

impl Default for DispatcherSettings {
    fn default() -> Self {
        Self {
            concurrency: 4,
            claim_batch_size: 100,
            poll_interval_ms: 1000,
            lease_seconds: 15,
            job_timeout_seconds: 300,
            shutdown_grace_seconds: 20,
            retry_base_seconds: 2.0,
            retry_max_seconds: 3600.0,
        }
    }
}

impl DispatcherSettings {
    /// The lease as a duration.
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_seconds)
    }
}

/// `[maintenance]`: rescuer and pruner.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaintenanceSettings {
    /// How often expired leases are looked for, in seconds.
    pub rescue_interval_seconds: u64,
    /// How long finished jobs (succeeded, failed, cancelled) are kept, in hours.
    pub retention_hours: u64,
    /// How long rows of `timelines.api_requests` are kept, in hours.
    pub request_log_retention_hours: u64,
    /// How often the pruner runs, in seconds.
    pub prune_interval_seconds: u64,
    /// How often each workspace's quota is read from the API (a `refresh_quota` job), in minutes.
    pub quota_refresh_minutes: u64,
    /// Rows deleted per statement, so pruning never holds long locks.
    pub prune_batch_size: i64,
}

impl Default for MaintenanceSettings {
    fn default() -> Self {
        Self {
            rescue_interval_seconds: 5,
            retention_hours: 7 * 24,
            request_log_retention_hours: 30 * 24,
            prune_interval_seconds: 300,
            quota_refresh_minutes: 15,
            prune_batch_size: 10_000,
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// `auto` (default: text on a terminal, JSON otherwise), `text` or `json`.
    pub format: LogFormat,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Auto,
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Text when stderr is a terminal, JSON otherwise.
    Auto,
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Where the settings came from, for the start-up log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file.
    File(PathBuf),
    /// No file: built-in defaults (plus environment).
    Defaults,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(path) => write!(f, "{}", path.display()),
            Source::Defaults => f.write_str("built-in defaults"),
        }
    }
}

/// The environment variables that can override the file (a seam so tests need not mutate
/// the process environment).
pub trait Env {
    /// The variable's value, if set and not empty.
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl Settings {
    /// Finds, reads, overrides and validates the configuration.
    pub fn load(explicit: Option<&Path>, env: &dyn Env) -> Result<(Self, Source), ConfigError> {
        let path = explicit
            .map(Path::to_path_buf)
            .or_else(|| env.var("TIMELINES_SYNC_CONFIG").map(PathBuf::from))
            .or_else(|| Some(PathBuf::from(DEFAULT_CONFIG_PATH)).filter(|p| p.exists()));
        let (mut settings, source) = match path {
            Some(path) => {
                let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                (Self::parse(&text, &path)?, Source::File(path))
            }
            None => (Self::default(), Source::Defaults),
        };
        settings.apply_env(env);
        settings.validate(env)?;
        Ok((settings, source))
    }

    /// Parses TOML text (no environment, no validation).
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let mut settings: Settings = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        settings
            .workspaces
            .entry(DEFAULT_WORKSPACE.to_owned())
            .or_default();
        Ok(settings)
    }

    fn apply_env(&mut self, env: &dyn Env) {
        if let Some(url) = env.var("DATABASE_URL") {
            self.database.url = Some(Secret::new(url));
        }
        let default = self
            .workspaces
            .entry(DEFAULT_WORKSPACE.to_owned())
            .or_default();
        if let Some(url) = env.var("TIMELINES_API_URL") {
            default.api_url = url;
        }
        if let Some(token) = env.var("TIMELINES_API_TOKEN") {
            default.token = Some(Secret::new(token));
            default.token_env = None;
        }
        // (A value that does not parse is reported by `validate`.)
        if let Some(listen) = env.var(HTTP_LISTEN_ENV).and_then(|v| v.parse().ok()) {
            self.http.listen = listen;
        }
    }

    /// The workspaces that run against the built-in simulator: those with `simulator = true`,
    /// and, when nothing is configured at all (no database URL), those without a token. With a
    /// database configured, a missing token is an error at `run`, never a silent switch to the
    /// simulator.
    pub fn simulated_workspaces(&self) -> Vec<String> {
        let zero_config = self.database.url.is_none();
        self.workspaces
            .iter()
            .filter(|(_, ws)| {
                ws.simulator
                    || (zero_config
                        && ws.resolved_token().is_none()
                        && ws.api_url == DEFAULT_API_URL)
            })
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Checks every value; the first problem found is returned with its key.
    pub fn validate(&self, env: &dyn Env) -> Result<(), ConfigError> {
        if let Some(listen) = env.var(HTTP_LISTEN_ENV)
            && listen.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(invalid(
                HTTP_LISTEN_ENV,
                format!("must be an address and port such as 127.0.0.1:8080, got {listen:?}"),
            ));
        }
        if let Some(url) = &self.database.url {
            let url = url.expose();
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                // The URL may hold a password: name the key, never echo the value.
                return Err(invalid(
                    "database.url",
                    "must start with postgres:// or postgresql://",
                ));
            }
        }
        if self.database.data_dir.as_os_str().is_empty() {
            return Err(invalid("database.data_dir", "must not be empty"));
        }
        check_range(
            "database.max_connections",
            self.database.max_connections.into(),
            2,
            1000,
        )?;
        for (name, ws) in &self.workspaces {
            validate_workspace(name, ws, env)?;
        }
        let d = &self.dispatcher;
        check_range("dispatcher.concurrency", d.concurrency as u64, 1, 10_000)?;
        check_range(
            "dispatcher.claim_batch_size",
            d.claim_batch_size as u64,
            1,
            10_000,
        )?;
        check_range(
            "dispatcher.poll_interval_ms",
            d.poll_interval_ms,
            10,
            600_000,
        )?;
        check_range("dispatcher.lease_seconds", d.lease_seconds, 3, 3600)?;
        check_range(
            "dispatcher.job_timeout_seconds",
            d.job_timeout_seconds,
            1,
            86_400,
        )?;
        check_range(
            "dispatcher.shutdown_grace_seconds",
            d.shutdown_grace_seconds,
            0,
            3600,
        )?;
        if !(d.retry_base_seconds > 0.0 && d.retry_base_seconds.is_finite()) {
            return Err(invalid(
                "dispatcher.retry_base_seconds",
                "must be a positive number of seconds",
            ));
        }
        if !(d.retry_max_seconds >= d.retry_base_seconds && d.retry_max_seconds.is_finite()) {
            return Err(invalid(
                "dispatcher.retry_max_seconds",
                "must be at least retry_base_seconds",
            ));
        }
        let m = &self.maintenance;
        check_range(
            "maintenance.rescue_interval_seconds",
            m.rescue_interval_seconds,
            1,
            3600,
        )?;
        check_range(
            "maintenance.retention_hours",
            m.retention_hours,
            1,
            24 * 3650,
        )?;
        check_range(
            "maintenance.prune_interval_seconds",
            m.prune_interval_seconds,
            1,
            86_400,
        )?;
        check_range(
            "maintenance.quota_refresh_minutes",
            m.quota_refresh_minutes,
            1,
            1440,
        )?;
        check_range(
            "maintenance.prune_batch_size",
            m.prune_batch_size.max(0) as u64,
            1,
            1_000_000,
        )?;
        self.webhooks.validate(env)?;
        crate::sources::Catalog::build(self, env)?;
        Ok(())
    }
}

fn validate_workspace(
    name: &str,
    ws: &WorkspaceSettings,
    env: &dyn Env,
) -> Result<(), ConfigError> {
    let key = |field: &str| format!("workspaces.{name}.{field}");
    let valid_name = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !valid_name {
        return Err(invalid(
            format!("workspaces.{name}"),
            "workspace names are 1-64 characters of letters, digits, '_' and '-'",
        ));
    }
    let url = ws.api_url.as_str();
    if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() < 10 {
        return Err(invalid(
            key("api_url"),
            format!("must be an http(s) URL, got {url:?}"),
        ));
    }
    if url.ends_with('/') {
        // The API answers an HTML 404 for paths with a trailing slash.
        return Err(invalid(key("api_url"), "must not end with '/'"));
    }
    if ws.token.is_some() && ws.token_env.is_some() {
        return Err(invalid(
            key("token_env"),
            "set either token or token_env, not both",
        ));
    }
    if let Some(var) = &ws.token_env
        && env.var(var).is_none()
    {
        return Err(invalid(
            key("token_env"),
            format!("environment variable {var} is not set"),
        ));
    }
    if ws
        .token
        .as_ref()
        .is_some_and(|t| t.expose().trim().is_empty())
    {
        return Err(invalid(key("token"), "must not be empty"));
    }
    check_range(
        &key("rate_limit_per_minute"),
        ws.rate_limit_per_minute.into(),
        1,
        100_000,
    )?;
    check_range(
        &key("monthly_api_calls"),
        ws.monthly_api_calls.into(),
        1,
        1_000_000_000,
    )?;
    check_percent(
        &key("api_call_reserve_percent"),
        ws.api_call_reserve_percent,
    )?;
    Ok(())
}

fn check_percent(key: &str, value: f64) -> Result<(), ConfigError> {
    if !(0.0..=100.0).contains(&value) {
        return Err(invalid(
            key,
            format!("must be a percentage from 0 to 100, got {value}"),
        ));
    }
    Ok(())
}

fn check_range(key: &str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(invalid(
            key,
            format!("must be between {min} and {max}, got {value}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct FakeEnv(HashMap<&'static str, &'static str>);
    impl Env for FakeEnv {
        fn var(&self, name: &str) -> Option<String> {
            self.0.get(name).map(|v| v.to_string())
        }
    }
    fn env(pairs: &[(&'static str, &'static str)]) -> FakeEnv {
        FakeEnv(pairs.iter().copied().collect())
    }
    fn load_text(text: &str, e: &FakeEnv) -> Result<Settings, ConfigError> {
        let mut s = Settings::parse(text, Path::new("test.toml"))?;
        s.apply_env(e);
        s.validate(e)?;
        Ok(s)
    }

    #[test]
    fn defaults_are_valid_and_include_the_default_workspace() {
        let s = load_text("", &env(&[])).unwrap();
        assert!(s.database.url.is_none());
        assert_eq!(s.workspaces[DEFAULT_WORKSPACE].rate_limit_per_minute, 50);
        assert_eq!(s.workspaces[DEFAULT_WORKSPACE].monthly_api_calls, 200_000);
        assert_eq!(s.dispatcher.concurrency, 4);
    }

    #[test]
    fn the_example_file_parses_and_validates() {
        let text = include_str!("../config/timelines-sync.example.toml");
        let e = env(&[("TIMELINES_TOKEN_SALES", "t")]);
        let s = load_text(text, &e).unwrap();
        assert!(s.workspaces.contains_key("sales"));
    }

    #[test]
    fn an_unknown_key_names_the_key() {
        let err = load_text("[dispatcher]\nconcurency = 3\n", &env(&[])).unwrap_err();
        assert!(err.to_string().contains("concurency"), "{err}");
    }

    #[test]
    fn a_wrong_type_names_the_key() {
        let err = load_text(
            "[workspaces.default]\nrate_limit_per_minute = \"fast\"\n",
            &env(&[]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("rate_limit_per_minute"), "{err}");
    }

    #[test]
    fn an_out_of_range_value_names_the_key_and_reason() {
        let err = load_text(
            "[workspaces.default]\nrate_limit_per_minute = 0\n",
            &env(&[]),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "config key `workspaces.default.rate_limit_per_minute`: must be between 1 and 100000, got 0"
        );
    }

    #[test]
    fn a_missing_token_env_variable_is_reported() {
        let err = load_text("[workspaces.sales]\ntoken_env = \"NOPE\"\n", &env(&[])).unwrap_err();
        assert!(
            err.to_string().contains("workspaces.sales.token_env"),
            "{err}"
        );
        assert!(err.to_string().contains("NOPE is not set"), "{err}");
    }

    #[test]
    fn environment_overrides_apply_to_the_default_workspace() {
        let e = env(&[
            ("DATABASE_URL", "postgres://u:p@h/db"),
            ("TIMELINES_API_URL", "http://127.0.0.1:9999"),
            ("TIMELINES_API_TOKEN", "sekret-token"),
        ]);
        let s = load_text("[workspaces.default]\ntoken = \"file-token\"\n", &e).unwrap();
        assert_eq!(
            s.database.url.as_ref().unwrap().expose(),
            "postgres://u:p@h/db"
        );
        let ws = &s.workspaces[DEFAULT_WORKSPACE];
        assert_eq!(ws.api_url, "http://127.0.0.1:9999");
        assert_eq!(ws.resolved_token().unwrap().expose(), "sekret-token");
    }

    #[test]
    fn secrets_never_show_in_debug_output_or_errors() {
        let e = env(&[("TIMELINES_API_TOKEN", "sekret-token")]);
        let s = load_text("[database]\nurl = \"postgres://u:hunter2@h/db\"\n", &e).unwrap();
        let dump = format!("{s:?}");
        assert!(
            !dump.contains("sekret-token") && !dump.contains("hunter2"),
            "{dump}"
        );
        let err = load_text("[database]\nurl = \"mysql://u:hunter2@h/db\"\n", &e).unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn a_trailing_slash_on_the_api_url_is_rejected() {
        let err = load_text(
            "[workspaces.default]\napi_url = \"https://x.example/api/\"\n",
            &env(&[]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("api_url"), "{err}");
    }
}
