//! Typed settings, read once from the environment (and `.env` when present).
//!
//! Every setting the server reads is parsed here and nowhere else; the README's configuration
//! table lists the same names and defaults.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;

#[derive(Debug, Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// The shortest `SECRET_KEY` production accepts: 256 bits for an HS256 key.
pub const MIN_PRODUCTION_SECRET_BYTES: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Environment {
    Development,
    Production,
}

/// A value that never shows up in logs or `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[derive(Clone, Debug)]
pub struct Settings {
    pub env: Environment,
    pub bind: SocketAddr,
    /// May carry a password, hence a secret; [`Settings::database_display`] shows it redacted.
    pub database_url: Secret,
    pub db_max_connections: u32,
    pub data_dir: PathBuf,
    pub secret_key: Secret,
    pub frontend_urls: Vec<String>,
    pub trust_proxy: bool,
    pub enable_docs: bool,
    /// Requests per minute per client on every route without a limit of its own.
    pub rate_limit: u32,
    /// New nodes one node token (or, without a token, one address) may register a minute.
    pub node_create_limit: u32,
    /// Connections open at once (agent links and live streams included).
    pub max_connections: usize,
    /// How long a client may take to send a request's headers; hyper counts an idle kept-alive
    /// connection's wait for its next request in it too, so it is also the idle timeout.
    pub header_timeout: Duration,
    /// How long a request may take from its headers to its answer's headers (reading the body
    /// included); streams and downloads then go on as long as they need.
    pub request_timeout: Duration,
    /// Live streams (fleet and job output) one user may hold open at once.
    pub max_streams_per_user: usize,
    pub session_ttl: Duration,
    pub cookie_secure: bool,
    pub allow_public_registration: bool,
    pub public_url: String,
    pub smtp_url: Option<Secret>,
    pub mail_from: String,
    /// Refuse heartbeats without a node token.
    pub require_node_token: bool,
    /// A node is OFFLINE once its last heartbeat is older than this.
    pub node_offline_after: Duration,
    /// Heartbeat history older than this is pruned.
    pub history_retention: Duration,
    /// Finished jobs (with their output) older than this are pruned…
    pub job_retention: Duration,
    /// …except each node's newest this many jobs, kept whatever their age.
    pub jobs_kept_per_node: i64,
    /// RESOLVED findings resolved longer ago than this are pruned.
    pub finding_retention: Duration,
    /// Distinct findings a node may have that are not RESOLVED; a report past it is refused (400).
    pub max_findings_per_node: usize,
    /// Preset files overriding or adding to the built-ins; `None` when there is no such directory.
    pub presets_dir: Option<PathBuf>,
    /// The most output a job keeps (both streams together); more is dropped and flagged.
    pub job_output_max_bytes: i64,
    /// The AI worker fleet's worker names, in the order the dashboard shows them.
    pub ai_workers: Vec<String>,
    /// How long an AI worker works on one (simulated) task.
    pub ai_task_duration: Duration,
}

fn parse_bool(name: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        other => Err(ConfigError(format!(
            "{name} must be true or false (got {other:?})"
        ))),
    }
}

/// Parses `90`, `90s`, `30m`, `12h`, `7d` or `250ms`; a bare number is seconds.
pub fn parse_duration(name: &str, value: &str) -> Result<Duration, ConfigError> {
    let value = value.trim();
    let split = value.find(|c: char| !c.is_ascii_digit()).unwrap_or(value.len());
    let (digits, unit) = value.split_at(split);
    let n: u64 = digits.parse().map_err(|_| {
        ConfigError(format!(
            "{name} must be a duration such as 30m, 12h or 7d (got {value:?})"
        ))
    })?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(ConfigError(format!(
                "{name}: unknown duration unit {unit:?} (use ms, s, m, h or d)"
            )));
        }
    };
    // Ten years is more than any setting needs, and keeps every deadline computed from it in range.
    const MAX_MILLIS: u64 = 3_650 * 86_400_000;
    match n.checked_mul(millis_per_unit) {
        Some(millis) if millis <= MAX_MILLIS => Ok(Duration::from_millis(millis)),
        _ => Err(ConfigError(format!(
            "{name} must be at most 3650d (got {value:?})"
        ))),
    }
}

fn positive_duration(name: &str, value: &str) -> Result<Duration, ConfigError> {
    let duration = parse_duration(name, value)?;
    if duration.is_zero() {
        return Err(ConfigError(format!("{name} must be longer than zero")));
    }
    Ok(duration)
}

impl Settings {
    /// Reads `.env` (when present) and then the process environment; the environment wins.
    pub fn from_env() -> Result<Settings, ConfigError> {
        let _ = dotenvy::dotenv();
        Settings::from_lookup(|name| std::env::var(name).ok())
    }

    /// Builds settings from any name → value lookup (the environment, or a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let flag = |name: &str, default: bool| get(name).map_or(Ok(default), |v| parse_bool(name, &v));

        let env = match get("HYPRBOX_ENV").as_deref() {
            None | Some("development" | "dev") => Environment::Development,
            Some("production" | "prod") => Environment::Production,
            Some(other) => {
                return Err(ConfigError(format!(
                    "HYPRBOX_ENV must be development or production (got {other:?})"
                )));
            }
        };
        let production = env == Environment::Production;

        let mut bind: SocketAddr = get("HYPRBOX_BIND")
            .unwrap_or_else(|| "127.0.0.1:4000".into())
            .parse()
            .map_err(|_| ConfigError("HYPRBOX_BIND must be an address such as 127.0.0.1:4000".into()))?;
        if let Some(port) = get("PORT") {
            let port: u16 = port
                .parse()
                .map_err(|_| ConfigError(format!("PORT must be a port number (got {port:?})")))?;
            bind.set_port(port);
        }

        let data_dir = PathBuf::from(get("HYPRBOX_DATA_DIR").unwrap_or_else(|| "./data".into()));
        let database_url = get("DATABASE_URL")
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("hyprbox.db").display()));
        hyprbox_store::normalize_url(&database_url).map_err(|e| ConfigError(e.to_string()))?;

        let secret_key = match get("SECRET_KEY") {
            // Sessions are HS256: a short key can be brute-forced offline from one captured token.
            Some(key) if production && key.len() < MIN_PRODUCTION_SECRET_BYTES => {
                return Err(ConfigError(format!(
                    "SECRET_KEY must be at least {MIN_PRODUCTION_SECRET_BYTES} bytes when HYPRBOX_ENV=production \
                     (got {}): use a long random string such as the output of `openssl rand -hex 32`",
                    key.len()
                )));
            }
            Some(key) => key,
            None if production => {
                return Err(ConfigError(
                    "SECRET_KEY is required when HYPRBOX_ENV=production: set it to a long random string \
                     (for example the output of `openssl rand -hex 32`)"
                        .into(),
                ));
            }
            None => load_or_generate_secret(&data_dir)?,
        };

        let rate_limit: u32 = get("HYPRBOX_RATE_LIMIT").map_or(Ok(200), |v| {
            v.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                ConfigError(format!(
                    "HYPRBOX_RATE_LIMIT must be a positive number (got {v:?})"
                ))
            })
        })?;
        let node_create_limit: u32 = get("HYPRBOX_NODE_CREATE_LIMIT").map_or(Ok(1000), |v| {
            v.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                ConfigError(format!(
                    "HYPRBOX_NODE_CREATE_LIMIT must be a positive number (got {v:?})"
                ))
            })
        })?;
        let max_connections: usize = get("HYPRBOX_MAX_CONNECTIONS").map_or(Ok(100_000), |v| {
            v.parse()
                .ok()
                .filter(|n| (1..=1_000_000).contains(n))
                .ok_or_else(|| {
                    ConfigError(format!(
                        "HYPRBOX_MAX_CONNECTIONS must be a whole number from 1 to 1000000 (got {v:?})"
                    ))
                })
        })?;
        let max_streams_per_user: usize = get("HYPRBOX_MAX_STREAMS_PER_USER").map_or(Ok(16), |v| {
            v.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                ConfigError(format!(
                    "HYPRBOX_MAX_STREAMS_PER_USER must be a positive number (got {v:?})"
                ))
            })
        })?;
        // Longer than the usual proxy and load-balancer idle timeout (60 s): a server that closes an
        // idle upstream connection first races the proxy's next request on it (a 502).
        let header_timeout = positive_duration(
            "HYPRBOX_HEADER_TIMEOUT",
            &get("HYPRBOX_HEADER_TIMEOUT").unwrap_or_else(|| "65s".into()),
        )?;
        let request_timeout = positive_duration(
            "HYPRBOX_REQUEST_TIMEOUT",
            &get("HYPRBOX_REQUEST_TIMEOUT").unwrap_or_else(|| "30s".into()),
        )?;
        let max_findings_per_node: usize = get("HYPRBOX_MAX_FINDINGS_PER_NODE").map_or(Ok(2000), |v| {
            v.parse()
                .ok()
                .filter(|n| (1..=1_000_000).contains(n))
                .ok_or_else(|| {
                    ConfigError(format!(
                        "HYPRBOX_MAX_FINDINGS_PER_NODE must be a whole number from 1 to 1000000 (got {v:?})"
                    ))
                })
        })?;
        let jobs_kept_per_node: i64 = get("HYPRBOX_JOBS_KEPT_PER_NODE").map_or(Ok(100), |v| {
            v.parse()
                .ok()
                .filter(|n| (0..=1_000_000).contains(n))
                .ok_or_else(|| {
                    ConfigError(format!(
                        "HYPRBOX_JOBS_KEPT_PER_NODE must be a whole number from 0 to 1000000 (got {v:?})"
                    ))
                })
        })?;
        let db_max_connections: u32 = get("HYPRBOX_DB_MAX_CONNECTIONS").map_or(Ok(8), |v| {
            v.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                ConfigError(format!(
                    "HYPRBOX_DB_MAX_CONNECTIONS must be a positive number (got {v:?})"
                ))
            })
        })?;
        let session_ttl = parse_duration(
            "HYPRBOX_SESSION_TTL",
            &get("HYPRBOX_SESSION_TTL").unwrap_or("30m".into()),
        )?;
        if session_ttl < Duration::from_secs(60) {
            return Err(ConfigError("HYPRBOX_SESSION_TTL must be at least 1m".into()));
        }

        let frontend_urls = get("FRONTEND_URL")
            .unwrap_or_else(|| "http://localhost:5173".into())
            .split(',')
            .map(|s| s.trim().trim_end_matches('/').to_string())
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>();
        if let Some(bad) = frontend_urls.iter().find(|o| *o == "*" || !o.contains("://")) {
            return Err(ConfigError(format!(
                "FRONTEND_URL lists origins such as http://localhost:5173; {bad:?} is not one \
                 (a wildcard cannot be combined with credentials)"
            )));
        }

        let smtp_url = get("HYPRBOX_SMTP_URL").map(Secret::new);
        if smtp_url
            .as_ref()
            .is_some_and(|url| !(url.expose().starts_with("smtp://") || url.expose().starts_with("smtps://")))
        {
            return Err(ConfigError(
                "HYPRBOX_SMTP_URL must start with smtp:// or smtps://".into(),
            ));
        }

        let public_url = get("HYPRBOX_PUBLIC_URL");
        if production && smtp_url.is_some() && public_url.is_none() {
            return Err(ConfigError(
                "HYPRBOX_PUBLIC_URL is required when HYPRBOX_ENV=production and HYPRBOX_SMTP_URL is set: \
                 password-reset links point at it (for example https://hyprbox.example.com)"
                    .into(),
            ));
        }
        if let Some(url) = public_url.as_deref()
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(ConfigError(format!(
                "HYPRBOX_PUBLIC_URL must start with http:// or https:// (got {url:?})"
            )));
        }

        // The default directory is optional; one named explicitly must exist.
        let presets_dir = match get("HYPRBOX_PRESETS_DIR") {
            Some(dir) => {
                let dir = PathBuf::from(dir);
                if !dir.is_dir() {
                    return Err(ConfigError(format!(
                        "HYPRBOX_PRESETS_DIR {} is not a directory",
                        dir.display()
                    )));
                }
                Some(dir)
            }
            None => Some(PathBuf::from("./presets")).filter(|d| d.is_dir()),
        };
        let job_output_max_bytes: i64 = get("HYPRBOX_JOB_OUTPUT_MAX_BYTES").map_or(Ok(64 << 20), |v| {
            v.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                ConfigError(format!(
                    "HYPRBOX_JOB_OUTPUT_MAX_BYTES must be a positive number of bytes (got {v:?})"
                ))
            })
        })?;

        let ai_workers = parse_ai_workers(get("HYPRBOX_AI_WORKERS").as_deref())?;
        let ai_task_duration = parse_ai_task_seconds(get("HYPRBOX_AI_TASK_SECONDS").as_deref())?;

        Ok(Settings {
            env,
            bind,
            database_url: Secret::new(database_url),
            db_max_connections,
            data_dir,
            secret_key: Secret::new(secret_key),
            frontend_urls,
            trust_proxy: flag("HYPRBOX_TRUST_PROXY", false)?,
            enable_docs: flag("HYPRBOX_ENABLE_DOCS", !production)?,
            rate_limit,
            node_create_limit,
            max_connections,
            header_timeout,
            request_timeout,
            max_streams_per_user,
            session_ttl,
            // Production cookies are always Secure; the setting can add it elsewhere, not remove it.
            cookie_secure: production || flag("HYPRBOX_COOKIE_SECURE", false)?,
            allow_public_registration: flag("HYPRBOX_ALLOW_PUBLIC_REGISTRATION", !production)?,
            public_url: public_url
                .unwrap_or_else(|| format!("http://{bind}"))
                .trim_end_matches('/')
                .to_string(),
            smtp_url,
            mail_from: get("HYPRBOX_MAIL_FROM").unwrap_or_else(|| "HyprBox <hyprbox@localhost>".into()),
            require_node_token: flag("HYPRBOX_REQUIRE_NODE_TOKEN", production)?,
            node_offline_after: positive_duration(
                "HYPRBOX_NODE_OFFLINE_AFTER",
                &get("HYPRBOX_NODE_OFFLINE_AFTER").unwrap_or_else(|| "10m".into()),
            )?,
            history_retention: positive_duration(
                "HYPRBOX_HISTORY_RETENTION",
                &get("HYPRBOX_HISTORY_RETENTION").unwrap_or_else(|| "7d".into()),
            )?,
            job_retention: positive_duration(
                "HYPRBOX_JOB_RETENTION",
                &get("HYPRBOX_JOB_RETENTION").unwrap_or_else(|| "90d".into()),
            )?,
            jobs_kept_per_node,
            finding_retention: positive_duration(
                "HYPRBOX_FINDING_RETENTION",
                &get("HYPRBOX_FINDING_RETENTION").unwrap_or_else(|| "90d".into()),
            )?,
            max_findings_per_node,
            presets_dir,
            job_output_max_bytes,
            ai_workers,
            ai_task_duration,
        })
    }

    pub fn is_production(&self) -> bool {
        self.env == Environment::Production
    }

    /// The database URL with any password replaced, for logs.
    pub fn database_display(&self) -> String {
        redact_url_password(self.database_url.expose())
    }

    /// One log line's worth of the effective configuration, secrets left out.
    pub fn summary(&self) -> String {
        format!(
            "env={:?} bind={} database={} data_dir={} frontend_urls={:?} trust_proxy={} enable_docs={} \
             rate_limit={}/min node_create_limit={}/min max_connections={} header_timeout={}s \
             request_timeout={}s max_streams_per_user={} session_ttl={}s cookie_secure={} allow_public_registration={} public_url={} \
             smtp={} mail_from={:?} require_node_token={} node_offline_after={}s history_retention={}s \
             job_retention={}s jobs_kept_per_node={} finding_retention={}s max_findings_per_node={} \
             presets_dir={:?} job_output_max_bytes={} ai_workers={:?} ai_task_seconds={} \
             secret_key=[redacted]",
            self.env,
            self.bind,
            self.database_display(),
            self.data_dir.display(),
            self.frontend_urls,
            self.trust_proxy,
            self.enable_docs,
            self.rate_limit,
            self.node_create_limit,
            self.max_connections,
            self.header_timeout.as_secs(),
            self.request_timeout.as_secs(),
            self.max_streams_per_user,
            self.session_ttl.as_secs(),
            self.cookie_secure,
            self.allow_public_registration,
            self.public_url,
            self.smtp_url
                .as_ref()
                .map_or_else(|| "off".to_string(), |u| redact_url_password(u.expose())),
            self.mail_from,
            self.require_node_token,
            self.node_offline_after.as_secs(),
            self.history_retention.as_secs(),
            self.job_retention.as_secs(),
            self.jobs_kept_per_node,
            self.finding_retention.as_secs(),
            self.max_findings_per_node,
            self.presets_dir,
            self.job_output_max_bytes,
            self.ai_workers,
            self.ai_task_duration.as_secs_f64(),
        )
    }
}

/// The Hyperion backend's ten workers, the default fleet.
pub const DEFAULT_AI_WORKERS: &str = "Helios,Eos,Aethon,Crius,Iapetus,Perses,Phlegon,Phoebe,Theia,Cronus";

/// `HYPRBOX_AI_WORKERS`: comma-separated names; empty names are dropped, a repeated name is an error.
fn parse_ai_workers(value: Option<&str>) -> Result<Vec<String>, ConfigError> {
    let mut names: Vec<String> = Vec::new();
    for name in value.unwrap_or(DEFAULT_AI_WORKERS).split(',').map(str::trim) {
        if name.is_empty() {
            continue;
        }
        if names.iter().any(|n| n == name) {
            return Err(ConfigError(format!("HYPRBOX_AI_WORKERS names {name:?} twice")));
        }
        if name.chars().count() > 64 {
            return Err(ConfigError(format!(
                "HYPRBOX_AI_WORKERS: {name:?} is longer than 64 characters"
            )));
        }
        names.push(name.to_string());
    }
    if names.is_empty() {
        return Err(ConfigError(
            "HYPRBOX_AI_WORKERS must name at least one worker".into(),
        ));
    }
    Ok(names)
}

/// `HYPRBOX_AI_TASK_SECONDS`: a positive number of seconds, fractions allowed (default 25).
fn parse_ai_task_seconds(value: Option<&str>) -> Result<Duration, ConfigError> {
    let Some(value) = value else {
        return Ok(Duration::from_secs(25));
    };
    value
        .parse::<f64>()
        .ok()
        .filter(|s| *s > 0.0)
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            ConfigError(format!(
                "HYPRBOX_AI_TASK_SECONDS must be a number of seconds greater than 0, such as 25 or 0.2 (got {value:?})"
            ))
        })
}

/// `scheme://user:password@host/…?password=…` → `scheme://user:***@host/…?password=***`.
fn redact_url_password(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut out = redact_userinfo(base);
    if let Some(query) = query {
        let params: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                _ => pair.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

fn redact_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            let masked = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                user.to_string()
            };
            format!("{scheme}://{masked}@{host}{tail}")
        }
        None => url.to_string(),
    }
}

/// Outside production a missing `SECRET_KEY` is generated once and kept in the data directory, so
/// sessions survive restarts without any set-up.
fn load_or_generate_secret(data_dir: &Path) -> Result<String, ConfigError> {
    let path = data_dir.join("secret_key");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let existing = existing.trim().to_string();
        if !existing.is_empty() {
            return Ok(existing);
        }
    }
    std::fs::create_dir_all(data_dir).map_err(|e| {
        ConfigError(format!(
            "cannot create the data directory {}: {e}",
            data_dir.display()
        ))
    })?;
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    let key = hex::encode(bytes);
    write_private(&path, &key).map_err(|e| ConfigError(format!("cannot write {}: {e}", path.display())))?;
    tracing::warn!(
        path = %path.display(),
        "SECRET_KEY is not set: generated one and stored it in the data directory (set SECRET_KEY in production)"
    );
    Ok(key)
}

#[cfg(unix)]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    std::fs::write(path, contents)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        Settings::from_lookup(|k| map.get(k).cloned())
    }

    const LONG_KEY: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn production_refuses_a_secret_key_shorter_than_32_bytes() {
        let err = settings(&[("HYPRBOX_ENV", "production"), ("SECRET_KEY", &LONG_KEY[1..])]).unwrap_err();
        assert!(err.0.contains("at least 32 bytes"), "{}", err.0);
        assert!(!err.0.contains(&LONG_KEY[1..]), "the key itself is never echoed");
        assert!(settings(&[("HYPRBOX_ENV", "production"), ("SECRET_KEY", LONG_KEY)]).is_ok());
        assert!(
            settings(&[("SECRET_KEY", "short")]).is_ok(),
            "development takes any key"
        );
    }

    #[test]
    fn production_with_mail_requires_the_public_url_the_reset_links_point_at() {
        let mail = [
            ("HYPRBOX_ENV", "production"),
            ("SECRET_KEY", LONG_KEY),
            ("HYPRBOX_SMTP_URL", "smtp://mail:25"),
        ];
        let err = settings(&mail).unwrap_err();
        assert!(err.0.contains("HYPRBOX_PUBLIC_URL"), "{}", err.0);
        let mut with_url = mail.to_vec();
        with_url.push(("HYPRBOX_PUBLIC_URL", "https://hb.example.com/"));
        assert_eq!(settings(&with_url).unwrap().public_url, "https://hb.example.com");
        assert!(settings(&[("SECRET_KEY", "k"), ("HYPRBOX_SMTP_URL", "smtp://mail:25")]).is_ok());
        assert!(settings(&[("SECRET_KEY", "k"), ("HYPRBOX_PUBLIC_URL", "hb.example.com")]).is_err());
    }

    #[test]
    fn production_without_a_secret_key_refuses_to_start() {
        let err = settings(&[("HYPRBOX_ENV", "production")]).unwrap_err();
        assert!(err.0.contains("SECRET_KEY is required"));
    }

    #[test]
    fn defaults_bind_loopback_on_4000_and_port_replaces_the_port() {
        let s = settings(&[("SECRET_KEY", "k")]).unwrap();
        assert_eq!(s.bind.to_string(), "127.0.0.1:4000");
        assert_eq!(s.rate_limit, 200);
        assert_eq!(s.session_ttl, Duration::from_secs(1800));
        assert!(s.allow_public_registration && s.enable_docs && !s.cookie_secure);
        let s = settings(&[("SECRET_KEY", "k"), ("PORT", "8000")]).unwrap();
        assert_eq!(s.bind.to_string(), "127.0.0.1:8000");
        let s = settings(&[
            ("SECRET_KEY", "k"),
            ("HYPRBOX_BIND", "0.0.0.0:1"),
            ("PORT", "7860"),
        ])
        .unwrap();
        assert_eq!(s.bind.to_string(), "0.0.0.0:7860");
    }

    #[test]
    fn production_defaults_close_registration_hide_docs_and_secure_the_cookie() {
        let s = settings(&[("HYPRBOX_ENV", "production"), ("SECRET_KEY", LONG_KEY)]).unwrap();
        assert!(!s.allow_public_registration && !s.enable_docs && s.cookie_secure);
        let s = settings(&[
            ("HYPRBOX_ENV", "production"),
            ("SECRET_KEY", LONG_KEY),
            ("HYPRBOX_COOKIE_SECURE", "false"),
        ])
        .unwrap();
        assert!(s.cookie_secure, "production cookies stay Secure");
        assert!(s.require_node_token);
    }

    #[test]
    fn fleet_defaults_are_ten_minutes_offline_and_seven_days_of_history() {
        let s = settings(&[("SECRET_KEY", "k")]).unwrap();
        assert!(!s.require_node_token);
        assert_eq!(s.node_offline_after, Duration::from_secs(600));
        assert_eq!(s.history_retention, Duration::from_secs(7 * 86_400));
        assert_eq!(s.job_retention, Duration::from_secs(90 * 86_400));
        assert_eq!(s.jobs_kept_per_node, 100);
        assert_eq!(s.finding_retention, Duration::from_secs(90 * 86_400));
        assert_eq!(s.max_findings_per_node, 2000);
        assert!(settings(&[("SECRET_KEY", "k"), ("HYPRBOX_JOBS_KEPT_PER_NODE", "-1")]).is_err());
        assert!(settings(&[("SECRET_KEY", "k"), ("HYPRBOX_HISTORY_RETENTION", "0")]).is_err());
    }

    #[test]
    fn the_ai_fleet_defaults_to_the_ten_hyperion_workers_and_25_second_tasks() {
        let s = settings(&[("SECRET_KEY", "k")]).unwrap();
        assert_eq!(s.ai_workers.len(), 10);
        assert_eq!(s.ai_workers[0], "Helios");
        assert_eq!(s.ai_workers[9], "Cronus");
        assert_eq!(s.ai_task_duration, Duration::from_secs(25));
        let s = settings(&[
            ("SECRET_KEY", "k"),
            ("HYPRBOX_AI_WORKERS", " Ada, ,Bob,"),
            ("HYPRBOX_AI_TASK_SECONDS", "0.2"),
        ])
        .unwrap();
        assert_eq!(s.ai_workers, ["Ada", "Bob"]);
        assert_eq!(s.ai_task_duration, Duration::from_millis(200));
    }

    #[test]
    fn a_repeated_worker_name_or_a_task_time_of_zero_refuses_to_start() {
        let err = settings(&[("SECRET_KEY", "k"), ("HYPRBOX_AI_WORKERS", "Ada,Bob,Ada")]).unwrap_err();
        assert!(err.0.contains("twice"), "{err}");
        assert!(settings(&[("SECRET_KEY", "k"), ("HYPRBOX_AI_WORKERS", ", ,")]).is_err());
        for bad in ["0", "-1", "soon", "NaN", "inf", "1e400"] {
            let err = settings(&[("SECRET_KEY", "k"), ("HYPRBOX_AI_TASK_SECONDS", bad)]).unwrap_err();
            assert!(err.0.contains("HYPRBOX_AI_TASK_SECONDS"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_wildcard_origin_is_refused() {
        assert!(settings(&[("SECRET_KEY", "k"), ("FRONTEND_URL", "*")]).is_err());
    }

    #[test]
    fn durations_accept_units_and_bare_seconds() {
        assert_eq!(parse_duration("x", "90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("x", "30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("x", "7d").unwrap(), Duration::from_secs(604_800));
        assert_eq!(parse_duration("x", "250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("x", "soon").is_err());
        assert!(parse_duration("x", "5w").is_err());
        for huge in ["99999999999999999d", "3651d", "18446744073709551615"] {
            let err = parse_duration("HYPRBOX_X", huge).unwrap_err();
            assert!(err.0.contains("at most 3650d"), "{huge}: {}", err.0);
        }
        assert_eq!(
            parse_duration("x", "3650d").unwrap(),
            Duration::from_secs(3_650 * 86_400)
        );
    }

    #[test]
    fn secrets_never_appear_in_the_logged_configuration() {
        let s = settings(&[
            ("SECRET_KEY", "topsecretkey"),
            ("DATABASE_URL", "postgres://u:hunter2@db/x"),
            ("HYPRBOX_SMTP_URL", "smtp://mail:mailpass@smtp.example.com:587"),
        ])
        .unwrap();
        let shown = format!("{} {:?}", s.summary(), s);
        assert!(!shown.contains("topsecretkey") && !shown.contains("hunter2") && !shown.contains("mailpass"));
        assert!(s.summary().contains("postgres://u:***@db/x"));
        let q = settings(&[
            ("SECRET_KEY", "k"),
            ("DATABASE_URL", "postgres://db/x?user=u&password=pw1&sslmode=off"),
        ])
        .unwrap();
        assert!(
            q.summary()
                .contains("postgres://db/x?user=u&password=***&sslmode=off")
        );
        assert!(!q.summary().contains("pw1"));
    }

    #[test]
    fn a_generated_secret_is_kept_in_the_data_directory() {
        let dir = std::env::temp_dir().join(format!("hyprbox-cfg-{}", uuid::Uuid::now_v7().simple()));
        let dir_str = dir.to_string_lossy().into_owned();
        let first = settings(&[("HYPRBOX_DATA_DIR", &dir_str)]).unwrap();
        let second = settings(&[("HYPRBOX_DATA_DIR", &dir_str)]).unwrap();
        assert_eq!(first.secret_key, second.secret_key);
        assert_eq!(first.secret_key.expose().len(), 64);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
