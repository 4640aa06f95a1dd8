//! The agent's configuration: `KEY=VALUE` lines from a file (the systemd `EnvironmentFile`), then
//! the process environment on top, so a one-off `HYPRBOX_INTERVAL=5 hyprbox-agent` wins over the
//! installed file.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};

/// Where `install.sh` writes the configuration; read when it exists and no `--config` is given.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/hyprbox/agent.env";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/hyprbox-agent";
/// The server refuses shorter heartbeat intervals from its config; the agent keeps the same floor.
pub const MIN_INTERVAL: Duration = Duration::from_secs(5);
/// Below this a job could not even report why it failed.
const MIN_OUTPUT_MAX: u64 = 1024;

#[derive(Clone)]
pub struct Config {
    /// Base URL, without a trailing slash: `http://127.0.0.1:4000`.
    pub server: String,
    /// The node token (`hbnt_…`). Never logged: `Debug` redacts it.
    pub token: String,
    pub node_id: String,
    pub region: Option<String>,
    /// Heartbeat period until the server's config says otherwise.
    pub interval: Duration,
    /// How often jobs are pulled when no wakeup comes over the WebSocket.
    pub poll_interval: Duration,
    /// Job work dirs and their output spool live under `<state_dir>/jobs/`.
    pub state_dir: PathBuf,
    /// Between SIGTERM and SIGKILL when a job is cancelled or times out.
    pub kill_grace: Duration,
    /// Output of each of a job's streams kept on the node and shipped (`HYPRBOX_JOB_OUTPUT_MAX_BYTES`).
    pub output_max: u64,
    /// The Docker Engine's socket (`HYPRBOX_DOCKER_SOCKET`); no inventory when it does not exist.
    pub docker_socket: PathBuf,
    /// A plain `http://` URL to another machine, accepted because `HYPRBOX_ALLOW_INSECURE_HTTP=true`;
    /// `main` warns about it loudly at every start.
    pub insecure_http: bool,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("server", &self.server)
            .field("token", &"<redacted>")
            .field("node_id", &self.node_id)
            .field("region", &self.region)
            .field("interval", &self.interval)
            .field("poll_interval", &self.poll_interval)
            .field("state_dir", &self.state_dir)
            .field("kill_grace", &self.kill_grace)
            .field("output_max", &self.output_max)
            .field("docker_socket", &self.docker_socket)
            .field("insecure_http", &self.insecure_http)
            .finish()
    }
}

/// Parses an env file: `KEY=VALUE` per line, `#` comments and blank lines skipped, an optional
/// `export ` prefix, and one pair of matching quotes around the value removed (as systemd does).
pub fn parse_env_file(text: &str) -> Result<HashMap<String, String>, String> {
    let mut vars = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("line {}: expected KEY=VALUE", n + 1));
        };
        let key = key.trim();
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!("line {}: {key:?} is not a variable name", n + 1));
        }
        let value = value.trim();
        let unquoted = [('"', '"'), ('\'', '\'')]
            .iter()
            .find_map(|(open, close)| value.strip_prefix(*open).and_then(|v| v.strip_suffix(*close)))
            .unwrap_or(value);
        vars.insert(key.to_string(), unquoted.to_string());
    }
    Ok(vars)
}

/// Turns a hostname into a valid `nodeId`: characters outside `[A-Za-z0-9._-]` become `-`, at most
/// 64 characters; a name that is still invalid (empty, reserved) gets a `node-` prefix.
pub fn sanitize_node_id(hostname: &str) -> String {
    let mut id: String = hostname
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if hyprbox_proto::validate_node_id("nodeId", &id).is_err() {
        id = format!("node-{id}");
        id.truncate(64);
    }
    id
}

impl Config {
    /// Builds the configuration from an optional file and an environment lookup (the real
    /// environment in `main`, a map in tests). `explicit_file` must exist; the default file is
    /// read only when present.
    pub fn load(
        explicit_file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Config> {
        let file_vars = match explicit_file {
            Some(path) => read_env_file(path)?,
            None if Path::new(DEFAULT_CONFIG_FILE).exists() => read_env_file(Path::new(DEFAULT_CONFIG_FILE))?,
            None => HashMap::new(),
        };
        let from_env = |key: &str| env(key).filter(|v| !v.is_empty());
        let from_file = |key: &str| file_vars.get(key).filter(|v| !v.is_empty()).cloned();
        Config::from_lookup(|key| {
            if key == "HYPRBOX_SERVER" || key == "HYPRBOX_URL" {
                // One setting under two names: the environment beats the file whichever name
                // each uses.
                return from_env("HYPRBOX_URL")
                    .or_else(|| from_env("HYPRBOX_SERVER"))
                    .or_else(|| from_file("HYPRBOX_URL"))
                    .or_else(|| from_file("HYPRBOX_SERVER"));
            }
            from_env(key).or_else(|| from_file(key))
        })
    }

    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> anyhow::Result<Config> {
        // The contract names the variable HYPRBOX_URL (as the CLI does); HYPRBOX_SERVER is the
        // install script's name for it. Either works.
        let server = get("HYPRBOX_URL").or_else(|| get("HYPRBOX_SERVER")).context(
            "HYPRBOX_URL (or HYPRBOX_SERVER) is not set (the server's URL, e.g. https://hyprbox.example.com)",
        )?;
        let server = server.trim_end_matches('/').to_string();
        if !(server.starts_with("http://") || server.starts_with("https://")) {
            bail!("HYPRBOX_URL must start with http:// or https://, got {server:?}");
        }
        // The agent runs what the server answers as root, and its token travels with every
        // request: plain HTTP is only for the same machine unless the operator says otherwise.
        let insecure_http = server.starts_with("http://") && !is_loopback_url(&server);
        let allow_insecure = match get("HYPRBOX_ALLOW_INSECURE_HTTP") {
            None => false,
            Some(raw) => match raw.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => true,
                "0" | "false" | "no" | "off" => false,
                _ => bail!("HYPRBOX_ALLOW_INSECURE_HTTP must be true or false, got {raw:?}"),
            },
        };
        if insecure_http && !allow_insecure {
            bail!(
                "HYPRBOX_URL {server:?} is plain http:// to another machine: the node token would travel \
                 in clear and anyone on the path could answer with a script this agent runs as root. \
                 Use https://, or set HYPRBOX_ALLOW_INSECURE_HTTP=true to accept the risk"
            );
        }
        let token = get("HYPRBOX_TOKEN").context("HYPRBOX_TOKEN is not set (a node token, hbnt_…)")?;
        let node_id = match get("HYPRBOX_NODE_ID") {
            Some(id) => {
                hyprbox_proto::validate_node_id("HYPRBOX_NODE_ID", &id).map_err(anyhow::Error::msg)?;
                id
            }
            None => sanitize_node_id(&sysinfo::System::host_name().unwrap_or_default()),
        };
        let seconds = |key: &str, default: u64, min: u64| -> anyhow::Result<Duration> {
            let Some(raw) = get(key) else {
                return Ok(Duration::from_secs(default));
            };
            let secs: u64 = raw
                .trim()
                .parse()
                .with_context(|| format!("{key} must be a whole number of seconds, got {raw:?}"))?;
            if secs < min {
                bail!("{key} must be at least {min} seconds, got {secs}");
            }
            Ok(Duration::from_secs(secs))
        };
        Ok(Config {
            server,
            token,
            node_id,
            region: get("HYPRBOX_REGION"),
            interval: seconds("HYPRBOX_INTERVAL", 30, MIN_INTERVAL.as_secs())?,
            poll_interval: seconds("HYPRBOX_POLL_INTERVAL", 10, 1)?,
            state_dir: PathBuf::from(
                get("HYPRBOX_STATE_DIR").unwrap_or_else(|| DEFAULT_STATE_DIR.to_string()),
            ),
            kill_grace: seconds("HYPRBOX_KILL_GRACE", 10, 0)?,
            output_max: match get("HYPRBOX_JOB_OUTPUT_MAX_BYTES") {
                None => crate::spool::DEFAULT_OUTPUT_MAX,
                Some(raw) => raw
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n >= MIN_OUTPUT_MAX)
                    .with_context(|| {
                        format!("HYPRBOX_JOB_OUTPUT_MAX_BYTES must be a number of bytes of at least {MIN_OUTPUT_MAX}, got {raw:?}")
                    })?,
            },
            docker_socket: PathBuf::from(
                get("HYPRBOX_DOCKER_SOCKET").unwrap_or_else(|| crate::inventory::DEFAULT_SOCKET.to_string()),
            ),
            insecure_http,
        })
    }
}

/// True when the URL's host is `localhost` or a loopback address (`127.0.0.0/8`, `[::1]`).
pub fn is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn read_env_file(path: &Path) -> anyhow::Result<HashMap<String, String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the config file {}", path.display()))?;
    parse_env_file(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |key| map.get(key).cloned()
    }

    #[test]
    fn env_files_allow_comments_quotes_and_export() {
        let vars = parse_env_file(
            "# written by install.sh\n\nHYPRBOX_SERVER=\"https://hb.example.com/\"\n\
             export HYPRBOX_TOKEN='hbnt_abc=def'\n  HYPRBOX_REGION = eu-west \n",
        )
        .unwrap();
        assert_eq!(vars["HYPRBOX_SERVER"], "https://hb.example.com/");
        assert_eq!(vars["HYPRBOX_TOKEN"], "hbnt_abc=def", "only the first = splits");
        assert_eq!(vars["HYPRBOX_REGION"], "eu-west");
        assert_eq!(vars.len(), 3);
        assert!(parse_env_file("just words").unwrap_err().contains("line 1"));
        assert!(parse_env_file("BAD KEY=1").is_err());
    }

    #[test]
    fn the_environment_overrides_the_file_and_defaults_fill_the_rest() {
        let dir = crate::testutil::temp_dir("config");
        let file = dir.join("agent.env");
        std::fs::write(
            &file,
            "HYPRBOX_SERVER=https://file:4000/\nHYPRBOX_TOKEN=hbnt_file\nHYPRBOX_INTERVAL=15\n",
        )
        .unwrap();
        let config = Config::load(
            Some(&file),
            env_of(&[("HYPRBOX_TOKEN", "hbnt_env"), ("HYPRBOX_NODE_ID", "web-1")]),
        )
        .unwrap();
        assert_eq!(config.server, "https://file:4000");
        assert_eq!(config.token, "hbnt_env");
        assert_eq!(config.node_id, "web-1");
        assert_eq!(config.interval, Duration::from_secs(15));
        assert_eq!(config.poll_interval, Duration::from_secs(10));
        assert_eq!(config.kill_grace, Duration::from_secs(10));
        assert_eq!(config.output_max, 64 * 1024 * 1024);
        assert_eq!(config.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
        assert!(
            !format!("{config:?}").contains("hbnt_env"),
            "Debug never shows the token"
        );
    }

    #[test]
    fn missing_or_invalid_settings_are_named() {
        let err = |pairs: &[(&str, &str)]| {
            Config::load(Some(Path::new("/dev/null")), env_of(pairs))
                .unwrap_err()
                .to_string()
        };
        assert!(err(&[("HYPRBOX_TOKEN", "t")]).contains("HYPRBOX_SERVER"));
        assert!(err(&[("HYPRBOX_SERVER", "https://x")]).contains("HYPRBOX_TOKEN"));
        let base = [("HYPRBOX_SERVER", "https://x"), ("HYPRBOX_TOKEN", "t")];
        assert!(err(&[base[0], base[1], ("HYPRBOX_INTERVAL", "2")]).contains("at least 5"));
        assert!(err(&[base[0], base[1], ("HYPRBOX_INTERVAL", "soon")]).contains("whole number"));
        assert!(err(&[base[0], base[1], ("HYPRBOX_NODE_ID", "a b")]).contains("HYPRBOX_NODE_ID"));
        for bad in ["12", "lots", "-5"] {
            let message = err(&[base[0], base[1], ("HYPRBOX_JOB_OUTPUT_MAX_BYTES", bad)]);
            assert!(message.contains("HYPRBOX_JOB_OUTPUT_MAX_BYTES"), "{message}");
        }
        assert!(err(&[("HYPRBOX_SERVER", "ftp://x"), base[1]]).contains("http://"));
        assert!(Config::load(Some(Path::new("/nonexistent/agent.env")), env_of(&base)).is_err());
        let via_url = Config::load(
            Some(Path::new("/dev/null")),
            env_of(&[("HYPRBOX_URL", "https://x"), base[1]]),
        );
        assert_eq!(via_url.unwrap().server, "https://x");
    }

    #[test]
    fn the_environment_beats_the_file_whichever_name_each_uses_for_the_server() {
        let dir = crate::testutil::temp_dir("config-names");
        let file = dir.join("agent.env");
        std::fs::write(&file, "HYPRBOX_SERVER=https://file:4000\nHYPRBOX_TOKEN=t\n").unwrap();
        let config = Config::load(Some(&file), env_of(&[("HYPRBOX_URL", "https://env:4000")])).unwrap();
        assert_eq!(config.server, "https://env:4000");
        std::fs::write(&file, "HYPRBOX_URL=https://file:4000\nHYPRBOX_TOKEN=t\n").unwrap();
        let config = Config::load(Some(&file), env_of(&[("HYPRBOX_SERVER", "https://env:4000")])).unwrap();
        assert_eq!(config.server, "https://env:4000");
        let config = Config::load(Some(&file), env_of(&[])).unwrap();
        assert_eq!(config.server, "https://file:4000");
    }

    #[test]
    fn plain_http_to_another_machine_is_refused_unless_explicitly_allowed() {
        let load = |pairs: &[(&str, &str)]| Config::load(Some(Path::new("/dev/null")), env_of(pairs));
        let token = ("HYPRBOX_TOKEN", "t");
        for remote in [
            "http://hb.example.com",
            "http://10.0.0.5:4000",
            "http://[2001:db8::1]:4000/",
        ] {
            let message = load(&[("HYPRBOX_URL", remote), token]).unwrap_err().to_string();
            assert!(
                message.contains("HYPRBOX_ALLOW_INSECURE_HTTP"),
                "{remote}: {message}"
            );
            let allowed = load(&[
                ("HYPRBOX_URL", remote),
                token,
                ("HYPRBOX_ALLOW_INSECURE_HTTP", "true"),
            ])
            .unwrap();
            assert!(
                allowed.insecure_http,
                "{remote} is flagged for the start-up warning"
            );
            assert!(
                load(&[
                    ("HYPRBOX_URL", remote),
                    token,
                    ("HYPRBOX_ALLOW_INSECURE_HTTP", "false")
                ])
                .is_err()
            );
        }
        // A user name that looks like a loopback host does not make the URL loopback.
        assert!(load(&[("HYPRBOX_URL", "http://127.0.0.1@evil.example"), token]).is_err());
        assert!(load(&[("HYPRBOX_URL", "http://localhost.evil.example"), token]).is_err());
        for local in [
            "http://127.0.0.1:4000",
            "http://localhost",
            "http://LOCALHOST:80/x",
            "http://[::1]:4000",
            "http://127.8.9.10",
        ] {
            let config = load(&[("HYPRBOX_URL", local), token]).unwrap();
            assert!(!config.insecure_http, "{local} is loopback");
        }
        let https = load(&[("HYPRBOX_URL", "https://hb.example.com"), token]).unwrap();
        assert!(!https.insecure_http);
        let garbage = load(&[
            ("HYPRBOX_URL", "http://x"),
            token,
            ("HYPRBOX_ALLOW_INSECURE_HTTP", "maybe"),
        ]);
        assert!(garbage.unwrap_err().to_string().contains("true or false"));
    }

    #[test]
    fn hostnames_become_valid_node_ids() {
        assert_eq!(sanitize_node_id("web-01.example.com"), "web-01.example.com");
        assert_eq!(sanitize_node_id("my host (2)"), "my-host--2-");
        assert_eq!(sanitize_node_id(""), "node-");
        assert_eq!(sanitize_node_id("me"), "node-me");
        assert_eq!(sanitize_node_id(&"x".repeat(100)).len(), 64);
        for id in ["", "me", "ünï", &"y".repeat(80)] {
            assert!(hyprbox_proto::validate_node_id("n", &sanitize_node_id(id)).is_ok());
        }
    }
}
