//! HyprVault backups: restic policies an operator owns, and the runs the node's agent reports.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A run the agent has started and not yet completed.
pub const RUNNING: &str = "RUNNING";
/// restic made a snapshot.
pub const SUCCEEDED: &str = "SUCCEEDED";
/// The run ended without a snapshot.
pub const FAILED: &str = "FAILED";

/// The keep rules' bounds (`keepDaily`, `keepWeekly`, `keepMonthly`).
pub const MAX_KEEP: i64 = 1000;

/// The repository forms restic understands besides a local absolute path.
pub const REPO_SCHEMES: [&str; 7] = ["sftp:", "rest:", "s3:", "b2:", "azure:", "gs:", "rclone:"];

/// `POST /api/backups`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatePolicy {
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    #[schema(pattern = "^(?!(heartbeat|inventory|me|sparks)$)[A-Za-z0-9._-]{1,64}$")]
    pub node_id: String,
    /// Absolute paths on the node; at least one.
    #[schema(min_items = 1)]
    pub paths: Vec<String>,
    /// A 5-field cron expression, evaluated in UTC; without it the policy runs only when triggered.
    #[serde(default)]
    pub schedule: Option<String>,
    /// A local absolute path, or `sftp:`, `rest:`, `s3:`, `b2:`, `azure:`, `gs:`, `rclone:`.
    pub repo_url: String,
    /// Where the agent finds the repository password on the node: `file:/path` or `env:NAME`
    /// (default `file:/etc/hyprbox/restic.pass`). The server never stores a password.
    #[serde(default)]
    #[schema(pattern = "^(file:/.+|env:[A-Za-z_][A-Za-z0-9_]*)$")]
    pub password_ref: Option<String>,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1000)]
    pub keep_daily: Option<i64>,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1000)]
    pub keep_weekly: Option<i64>,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1000)]
    pub keep_monthly: Option<i64>,
}

/// `PATCH /api/backups/{id}`: only the fields sent change; `schedule: null` clears the schedule.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdatePolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 200)]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_items = 1)]
    pub paths: Option<Vec<String>>,
    /// Absent: unchanged; `null`: no schedule; a string: the new cron expression.
    #[serde(default, with = "double_option", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub schedule: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^(file:/.+|env:[A-Za-z_][A-Za-z0-9_]*)$")]
    pub password_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 1000)]
    pub keep_daily: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 1000)]
    pub keep_weekly: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 1000)]
    pub keep_monthly: Option<i64>,
}

/// Tells a field sent as `null` from a field not sent.
mod double_option {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(deserializer).map(Some)
    }

    pub fn serialize<T: Serialize, S: Serializer>(
        value: &Option<Option<T>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(inner) => inner.serialize(serializer),
            None => serializer.serialize_none(),
        }
    }
}

/// A backup policy.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyBody {
    pub id: String,
    pub name: String,
    pub node_id: String,
    pub paths: Vec<String>,
    pub schedule: Option<String>,
    pub repo_url: String,
    pub password_ref: String,
    pub keep_daily: i64,
    pub keep_weekly: i64,
    pub keep_monthly: i64,
    /// The creator's user id.
    pub created_by: String,
    pub created_at: String,
    pub updated_at: String,
    /// The next cron tick (UTC), when scheduled.
    pub next_run_at: Option<String>,
    /// When the last successful run finished.
    pub last_success_at: Option<String>,
}

/// One policy: create, update.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct PolicyEnvelope {
    pub policy: PolicyBody,
}

/// `GET /api/backups`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct PoliciesBody {
    pub policies: Vec<PolicyBody>,
}

/// `GET /api/backups/{id}`: the policy and its 20 newest runs, newest first.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct PolicyDetail {
    pub policy: PolicyBody,
    pub runs: Vec<RunBody>,
}

/// `POST /api/backups/{id}/trigger` → 202.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TriggerAccepted {
    pub job_id: String,
    pub policy_id: String,
}

/// A backup run, as the agent reported it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunBody {
    pub id: String,
    pub policy_id: String,
    pub node_id: String,
    pub job_id: Option<String>,
    /// `RUNNING`, `SUCCEEDED` or `FAILED`.
    pub status: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub snapshot_id: Option<String>,
    pub size_bytes: Option<i64>,
    pub files_count: Option<i64>,
    pub duration_ms: Option<i64>,
    pub error: Option<String>,
}

/// One run: start, complete.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct RunEnvelope {
    pub run: RunBody,
}

/// `POST /api/backups/{id}/runs` (the agent, as a run starts).
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StartRun {
    #[serde(default)]
    pub job_id: Option<String>,
}

/// `POST /api/backups/runs/{runId}/complete` (the agent, from restic's JSON summary).
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompleteRun {
    /// `SUCCEEDED` or `FAILED`.
    pub status: String,
    #[serde(default)]
    #[schema(max_length = 128)]
    pub snapshot_id: Option<String>,
    #[serde(default)]
    #[schema(minimum = 0)]
    pub size_bytes: Option<i64>,
    #[serde(default)]
    #[schema(minimum = 0)]
    pub files_count: Option<i64>,
    #[serde(default)]
    #[schema(minimum = 0)]
    pub duration_ms: Option<i64>,
    #[serde(default)]
    #[schema(max_length = 4000)]
    pub error: Option<String>,
}

/// Whether `repo` is a repository string restic takes: an absolute local path or one of
/// [`REPO_SCHEMES`] followed by a location.
pub fn valid_repo_url(repo: &str) -> bool {
    if repo.is_empty() || repo.len() > 2048 || repo.chars().any(char::is_control) {
        return false;
    }
    repo.starts_with('/')
        || REPO_SCHEMES
            .iter()
            .any(|scheme| repo.strip_prefix(scheme).is_some_and(|rest| !rest.is_empty()))
}

/// Whether `reference` is `file:/absolute/path` or `env:NAME`.
pub fn valid_password_ref(reference: &str) -> bool {
    if reference.chars().any(char::is_control) {
        return false;
    }
    if let Some(path) = reference.strip_prefix("file:") {
        return path.starts_with('/') && path.len() > 1;
    }
    reference.strip_prefix("env:").is_some_and(|name| {
        let mut bytes = name.bytes();
        bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_repository_form_of_the_contract_is_accepted_and_others_are_not() {
        for good in [
            "/srv/restic",
            "sftp:backup@host:/srv/restic",
            "rest:https://host:8000/",
            "s3:s3.amazonaws.com/bucket",
            "b2:bucket:path",
            "azure:container:/",
            "gs:bucket:/",
            "rclone:remote:path",
        ] {
            assert!(valid_repo_url(good), "{good}");
        }
        for bad in ["", "relative/path", "ftp:host", "s3:", "/srv/\nrestic"] {
            assert!(!valid_repo_url(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_password_reference_is_a_file_path_or_an_environment_variable_name() {
        for good in ["file:/etc/hyprbox/restic.pass", "env:RESTIC_PASSWORD", "env:_X1"] {
            assert!(valid_password_ref(good), "{good}");
        }
        for bad in [
            "file:relative",
            "file:",
            "env:",
            "env:1X",
            "env:A-B",
            "hunter2",
            "file:/a\nb",
        ] {
            assert!(!valid_password_ref(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_patch_tells_a_null_schedule_from_an_absent_one() {
        let cleared: UpdatePolicy = serde_json::from_str(r#"{"schedule":null}"#).unwrap();
        assert_eq!(cleared.schedule, Some(None));
        let absent: UpdatePolicy = serde_json::from_str("{}").unwrap();
        assert_eq!(absent.schedule, None);
        let set: UpdatePolicy = serde_json::from_str(r#"{"schedule":"0 3 * * *"}"#).unwrap();
        assert_eq!(set.schedule, Some(Some("0 3 * * *".into())));
    }
}
