//! HyprVault: restic backup policies (`policies.rs`), the runs the agents report (`runs.rs`), the
//! cron scheduler that queues each policy's job (`scheduler.rs`), and the findings a policy
//! raises when its backups fail or go stale.
//!
//! A backup is an ordinary job of the `hypervault-restic` preset, rendered from the policy and
//! tagged with its id (`jobs.policy_id`). The repository password never reaches the server: the
//! policy names where the agent finds it (`passwordRef`), and the agent hands it to restic.

pub mod inventory;
pub mod policies;
pub mod runs;
pub mod schedule;
pub mod scheduler;

use hyprbox_presets::Preset;
use hyprbox_proto::backups::{PolicyBody, RunBody};
use hyprbox_store::backups::{Policy, Run};
use hyprbox_store::jobs::{Job, NewJob};
use hyprbox_store::{new_id, now_ms};
use serde_json::{Map, Value, json};

use crate::fleet::agent_links::AgentMessage;
use crate::http::error::ApiError;
use crate::http::time::rfc3339;
use crate::jobs::feeds::publish_status;
use crate::state::AppState;

/// The preset every backup job runs.
pub const PRESET: &str = "hypervault-restic";
/// Where the agent looks for the repository password when a policy does not say.
pub const DEFAULT_PASSWORD_REF: &str = "file:/etc/hyprbox/restic.pass";
/// The keep rules when a policy does not say: a week of dailies, a month of weeklies, half a
/// year of monthlies.
pub const DEFAULT_KEEP: (i64, i64, i64) = (7, 4, 6);
/// Finding types a policy raises (key `policy:<id>`).
pub const FAILED_FINDING: &str = "backup.failed";
pub const STALE_FINDING: &str = "backup.stale";

pub fn policy_body(policy: &Policy) -> PolicyBody {
    PolicyBody {
        id: policy.id.clone(),
        name: policy.name.clone(),
        node_id: policy.node_id.clone(),
        paths: serde_json::from_str(&policy.paths).unwrap_or_default(),
        schedule: policy.schedule.clone(),
        repo_url: policy.repo_url.clone(),
        password_ref: policy.password_ref.clone(),
        keep_daily: policy.keep_daily,
        keep_weekly: policy.keep_weekly,
        keep_monthly: policy.keep_monthly,
        created_by: policy.created_by.clone(),
        created_at: rfc3339(policy.created_at),
        updated_at: rfc3339(policy.updated_at),
        next_run_at: policy.next_run_at.map(rfc3339),
        last_success_at: policy.last_success_at.map(rfc3339),
    }
}

pub fn run_body(run: &Run) -> RunBody {
    RunBody {
        id: run.id.clone(),
        policy_id: run.policy_id.clone(),
        node_id: run.node_id.clone(),
        job_id: run.job_id.clone(),
        status: run.status.clone(),
        started_at: rfc3339(run.started_at),
        finished_at: run.finished_at.map(rfc3339),
        snapshot_id: run.snapshot_id.clone(),
        size_bytes: run.size_bytes,
        files_count: run.files_count,
        duration_ms: run.duration_ms,
        error: run.error.clone(),
    }
}

/// The finding key a policy's findings share.
pub fn finding_key(policy_id: &str) -> String {
    format!("policy:{policy_id}")
}

/// The `hypervault-restic` variables of a policy. Snapshots are tagged with the policy id, so
/// the keep rules only ever forget this policy's snapshots.
pub fn variables(policy: &Policy) -> Map<String, Value> {
    let paths: Value = serde_json::from_str(&policy.paths).unwrap_or_else(|_| json!([]));
    let mut vars = Map::new();
    vars.insert("policy_id".into(), json!(policy.id));
    vars.insert("repository".into(), json!(policy.repo_url));
    vars.insert("password_ref".into(), json!(policy.password_ref));
    vars.insert("paths".into(), paths);
    vars.insert("tag".into(), json!(format!("hyprbox-policy-{}", policy.id)));
    vars.insert("keep_daily".into(), json!(policy.keep_daily));
    vars.insert("keep_weekly".into(), json!(policy.keep_weekly));
    vars.insert("keep_monthly".into(), json!(policy.keep_monthly));
    vars
}

/// A backup finding's metadata: `extra` plus the policy's `hypervault-restic` variables, so the
/// finding's recommendation (that preset) comes pre-filled with the policy's own run.
pub fn finding_metadata(policy: &Policy, extra: Value) -> String {
    let mut metadata = variables(policy);
    if let Value::Object(extra) = extra {
        metadata.extend(extra);
    }
    Value::Object(metadata).to_string()
}

/// A policy's job, rendered and ready to insert.
pub struct BackupJob {
    pub id: String,
    pub node_id: String,
    pub policy_id: String,
    pub created_by: String,
    pub preset_name: String,
    pub preset_version: String,
    pub variables: String,
    pub script: String,
    pub timeout_seconds: i64,
}

/// Renders the backup job of `policy`; a render failure is a 400 naming the variable.
pub fn render(preset: &Preset, policy: &Policy, created_by: &str) -> Result<BackupJob, ApiError> {
    let rendered = preset
        .render(&variables(policy))
        .map_err(|e| ApiError::BadRequest(format!("the policy does not render as a backup job: {e}")))?;
    Ok(BackupJob {
        id: new_id(),
        node_id: policy.node_id.clone(),
        policy_id: policy.id.clone(),
        created_by: created_by.to_owned(),
        preset_name: preset.name.clone(),
        preset_version: preset.version.clone(),
        variables: Value::Object(preset.redact(&rendered.resolved)).to_string(),
        script: rendered.script,
        timeout_seconds: i64::try_from(preset.timeout().as_secs()).unwrap_or(i64::MAX),
    })
}

impl BackupJob {
    /// The row to insert.
    pub fn new_job(&self) -> NewJob<'_> {
        NewJob {
            id: &self.id,
            node_id: &self.node_id,
            preset_name: &self.preset_name,
            preset_version: &self.preset_version,
            variables: &self.variables,
            script: &self.script,
            created_by: &self.created_by,
            created_at: now_ms(),
            timeout_seconds: self.timeout_seconds,
            policy_id: Some(&self.policy_id),
        }
    }
}

/// What a newly queued backup job sets off: the agent's wakeup and the job's status event.
pub async fn announce(state: &AppState, job: &Job) {
    state.agents.send(&job.node_id, &AgentMessage::Wakeup);
    publish_status(state, job).await;
}
