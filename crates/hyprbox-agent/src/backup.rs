//! HyprVault on the node: for a `hypervault-restic` job the agent reads the repository password
//! where the policy says (`password_ref`), hands it to the job in its environment only (never in
//! the script, a file the server sees, or a log line), reports the run's start, and completes the
//! run from restic's own JSON summary, which the script prints as its last line.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use hyprbox_proto::backups::{CompleteRun, FAILED, SUCCEEDED};
use serde_json::Value;

/// The preset whose jobs are backups.
pub const PRESET: &str = "hypervault-restic";
/// The preset's own default `password_ref`.
pub const DEFAULT_PASSWORD_REF: &str = "file:/etc/hyprbox/restic.pass";
/// The longest error a run reports.
const MAX_ERROR: usize = 2000;

/// A repository password read from the node. `Debug` never shows it.
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Reads the password `reference` names: `file:/path` (a file only its owner may read, as ssh
/// asks of a private key; one trailing newline dropped) or `env:NAME` (the agent's environment).
/// The error says what is wrong without the password.
pub fn resolve_password(reference: &str, env: impl Fn(&str) -> Option<String>) -> Result<Secret, String> {
    let secret = if let Some(path) = reference.strip_prefix("file:") {
        read_password_file(Path::new(path))?
    } else if let Some(name) = reference.strip_prefix("env:") {
        env(name).ok_or_else(|| {
            format!("the environment variable {name} (password_ref {reference}) is not set for hyprbox-agent")
        })?
    } else {
        return Err(format!(
            "password_ref must be file:/path or env:NAME, not {reference:?}"
        ));
    };
    if secret.is_empty() {
        return Err(format!("the repository password from {reference} is empty"));
    }
    Ok(Secret(secret))
}

fn read_password_file(path: &Path) -> Result<String, String> {
    let shown = path.display();
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("cannot read the repository password file {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!(
            "the repository password file {shown} is not a regular file"
        ));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "the repository password file {shown} has mode {mode:04o}: others may read it; chmod 600 {shown}"
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the repository password file {shown}: {e}"))?;
    let text = text.strip_suffix('\n').unwrap_or(&text);
    Ok(text.strip_suffix('\r').unwrap_or(text).to_owned())
}

/// The policy a backup job runs for, from its variables (`None`: a backup run by hand).
pub fn policy_id(variables: &Value) -> Option<String> {
    variables["policy_id"]
        .as_str()
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
}

/// The run's completion, from the job's exit code, its stdout (whose last `hyprvault.summary`
/// line carries restic's summary) and its stderr (for the reason of a failure).
pub fn outcome(exit_code: i64, stdout: &str, stderr: &str) -> CompleteRun {
    let summary = stdout
        .lines()
        .rev()
        .filter(|line| line.starts_with('{'))
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|v| v["type"] == "hyprvault.summary");
    let restic = summary.as_ref().map(|s| &s["restic"]);
    let snapshot_id = restic
        .and_then(|r| r["snapshot_id"].as_str())
        .filter(|id| !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric()))
        .map(str::to_owned);
    let number = |field: &str| restic.and_then(|r| r[field].as_i64()).filter(|n| *n >= 0);
    let duration_ms = restic
        .and_then(|r| r["total_duration"].as_f64())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| (s * 1000.0).round() as i64);
    let succeeded = exit_code == 0 && snapshot_id.is_some();
    let error = (!succeeded).then(|| failure_reason(exit_code, stderr));
    CompleteRun {
        status: if succeeded { SUCCEEDED } else { FAILED }.to_owned(),
        snapshot_id: if succeeded { snapshot_id } else { None },
        size_bytes: number("total_bytes_processed"),
        files_count: number("total_files_processed"),
        duration_ms,
        error,
    }
}

/// The last meaningful lines of stderr (restic's own message), or the exit code.
fn failure_reason(exit_code: i64, stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("[hyprbox]") && !l.contains("==> "))
        .collect();
    let tail = lines[lines.len().saturating_sub(3)..].join(" / ");
    let reason = if tail.is_empty() {
        format!("the backup job ended with exit code {exit_code}")
    } else {
        format!("{tail} (exit code {exit_code})")
    };
    reason.chars().take(MAX_ERROR).collect()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn temp_file(name: &str, text: &str, mode: u32) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("hyprbox-backup-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("restic.pass");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn a_password_file_is_read_only_when_its_owner_alone_may_read_it() {
        let private = temp_file("private", "s3cret pass\n", 0o600);
        let secret = resolve_password(&format!("file:{}", private.display()), |_| None).unwrap();
        assert_eq!(secret.expose(), "s3cret pass");
        assert!(!format!("{secret:?}").contains("s3cret"));
        let open = temp_file("open", "s3cret pass\n", 0o644);
        let refused = resolve_password(&format!("file:{}", open.display()), |_| None).unwrap_err();
        assert!(
            refused.contains("0644") && refused.contains("chmod 600"),
            "{refused}"
        );
        assert!(!refused.contains("s3cret"));
        let missing = resolve_password("file:/nonexistent/hyprbox/restic.pass", |_| None).unwrap_err();
        assert!(missing.contains("/nonexistent/hyprbox/restic.pass"));
    }

    #[test]
    fn an_env_reference_reads_the_agents_environment() {
        let env = |name: &str| (name == "RESTIC_PW").then(|| "from-env".to_owned());
        assert_eq!(
            resolve_password("env:RESTIC_PW", env).unwrap().expose(),
            "from-env"
        );
        let unset = resolve_password("env:OTHER", env).unwrap_err();
        assert!(unset.contains("OTHER"));
        assert!(resolve_password("hunter2", env).is_err());
    }

    #[test]
    fn a_run_is_filled_from_restics_summary_line() {
        let stdout = "repository: found\n{\"message_type\":\"summary\"}\nforget output\n\
            {\"type\":\"hyprvault.summary\",\"status\":\"succeeded\",\"backupExitCode\":0,\"restic\":\
            {\"message_type\":\"summary\",\"files_new\":2,\"total_files_processed\":12,\
            \"total_bytes_processed\":4096,\"total_duration\":1.25,\"snapshot_id\":\"9f8e7d6c\"}}\n";
        let done = outcome(0, stdout, "");
        assert_eq!(done.status, "SUCCEEDED");
        assert_eq!(done.snapshot_id.as_deref(), Some("9f8e7d6c"));
        assert_eq!(
            (done.files_count, done.size_bytes, done.duration_ms),
            (Some(12), Some(4096), Some(1250))
        );
        assert_eq!(done.error, None);
    }

    #[test]
    fn a_failed_run_says_why_in_restics_words() {
        let stderr = "[2026-12-07T03:00:00Z] ==> step 2/5: Open\nFatal: wrong password or no key found\n";
        let done = outcome(1, "restic 0.14.0\n", stderr);
        assert_eq!(done.status, "FAILED");
        assert_eq!(done.snapshot_id, None);
        let error = done.error.unwrap();
        assert!(
            error.contains("wrong password") && error.contains("exit code 1"),
            "{error}"
        );
        // Exit 0 without a summary is no success either.
        assert_eq!(outcome(0, "nothing\n", "").status, "FAILED");
    }
}
