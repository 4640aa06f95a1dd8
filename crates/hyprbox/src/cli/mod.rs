//! The operator CLI: a typed HTTP client of the API with a saved session, tables for people and
//! `--json` for scripts, and exit codes scripts can trust (see [`EXIT_CODES`]).

pub mod backups;
pub mod findings;
pub mod jobs;
pub mod login;
pub mod nodes;
pub mod tokens;
pub mod users;

use std::fmt;
use std::path::PathBuf;

use hyprbox_client::{Client, Error as ClientError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Printed at the end of `hyprbox --help`.
pub const EXIT_CODES: &str = "Exit codes: 0 ok · 1 failed (a request failed, a job did not succeed: \
`jobs run --follow` exits with the job's own exit code) · 2 usage error · 3 not signed in or not \
allowed (run `hyprbox login`) · 4 not found · 5 conflict (e.g. the job already finished) · 6 the \
server cannot be reached";

/// An error that decides the process's exit code; its message is printed as one line.
#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    pub message: String,
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

pub fn fail(code: u8, message: impl Into<String>) -> anyhow::Error {
    CliError {
        code,
        message: message.into(),
    }
    .into()
}

/// Where the server and the session come from, for every command that talks to a server.
#[derive(clap::Args, Debug, Clone)]
pub struct Target {
    /// The HyprBox server (default: the one `hyprbox login` saved, else http://127.0.0.1:4000).
    #[arg(long, env = "HYPRBOX_URL")]
    pub server: Option<String>,
}

/// The saved session: `<config dir>/hyprbox/session.json`, mode 0600.
#[derive(Serialize, Deserialize, Default)]
pub struct Session {
    pub server: String,
    pub token: String,
    pub email: String,
}

/// `$HYPRBOX_CONFIG_DIR`, else `$XDG_CONFIG_HOME/hyprbox`, else `~/.config/hyprbox`.
pub fn config_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("HYPRBOX_CONFIG_DIR") {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("hyprbox"));
    }
    let home = std::env::var_os("HOME").ok_or_else(|| fail(1, "HOME is not set: set HYPRBOX_CONFIG_DIR"))?;
    Ok(PathBuf::from(home).join(".config").join("hyprbox"))
}

fn session_path() -> anyhow::Result<PathBuf> {
    Ok(config_dir()?.join("session.json"))
}

pub fn load_session() -> Option<Session> {
    let text = std::fs::read_to_string(session_path().ok()?).ok()?;
    serde_json::from_str(&text).ok()
}

/// Writes the session readable by its owner only (it holds a bearer token).
pub fn save_session(session: &Session) -> anyhow::Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let path = session_path()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)?;
    // The mode above applies only to a new file; an older one is tightened too.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(serde_json::to_string_pretty(session)?.as_bytes())?;
    Ok(path)
}

/// The client of the server from `--server`/`HYPRBOX_URL` or the saved session, with the saved
/// token when it was issued by that same server (`HYPRBOX_SESSION_TOKEN` overrides it).
pub fn connect(target: &Target) -> anyhow::Result<Client> {
    let session = load_session();
    let server = target
        .server
        .clone()
        .or_else(|| session.as_ref().map(|s| s.server.clone()))
        .unwrap_or_else(|| "http://127.0.0.1:4000".into())
        .trim_end_matches('/')
        .to_string();
    let token = std::env::var("HYPRBOX_SESSION_TOKEN").ok().or_else(|| {
        session
            .filter(|s| s.server.trim_end_matches('/') == server)
            .map(|s| s.token)
    });
    Ok(Client::new(&server, token.as_deref())?)
}

/// The exit code and the one line an error ends the process with: the client's refusals carry
/// their own code (see [`EXIT_CODES`]), with a hint where signing in would help.
pub fn exit_status(err: &anyhow::Error) -> (u8, String) {
    if let Some(cli_error) = err.downcast_ref::<CliError>() {
        return (cli_error.code, cli_error.message.clone());
    }
    if let Some(refused) = err.downcast_ref::<ClientError>() {
        let message = match refused {
            ClientError::NotSignedIn { server } => format!("not signed in to {server}: run `hyprbox login`"),
            ClientError::Unauthorized { message } => format!("{message} (run `hyprbox login`)"),
            other => other.to_string(),
        };
        return (refused.exit_code(), message);
    }
    (1, format!("{err:#}"))
}

/// Prints rows as a left-aligned table with a header.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// A list answer: as JSON with `--json`, else the `key` array as a table of `(header, field)`
/// columns, the fields named as on the wire.
pub fn print_list<T: Serialize>(answer: &T, json: bool, key: &str, columns: &[(&str, &str)]) {
    if json {
        print_json(answer);
        return;
    }
    let body = serde_json::to_value(answer).unwrap_or_default();
    let header: Vec<&str> = columns.iter().map(|(header, _)| *header).collect();
    let fields: Vec<&str> = columns.iter().map(|(_, field)| *field).collect();
    table(&header, &rows(&body[key], &fields));
}

/// The rows of a table: for each object of the `items` array, the named fields as cells.
pub fn rows(items: &Value, fields: &[&str]) -> Vec<Vec<String>> {
    items
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|item| fields.iter().map(|field| cell(&item[*field])).collect())
        .collect()
}

/// A JSON value as a table cell: strings bare, null as `-`.
pub fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Number(n) => n
            .as_f64()
            .filter(|f| f.fract() != 0.0)
            .map_or_else(|| n.to_string(), |f| format!("{f:.1}")),
        other => other.to_string(),
    }
}

/// Prints an answer as JSON (for `--json`), as the server sent it.
pub fn print_json<T: Serialize>(answer: &T) {
    println!("{}", serde_json::to_string(answer).unwrap_or_default());
}
