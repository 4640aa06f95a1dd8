//! The agents' side of HyprVault: a run's start and its completion, filled from restic's own JSON
//! summary. A completion raises or clears the policy's `backup.failed` finding, clears
//! `backup.stale` on success, and shows in the node's activity and on the fleet stream.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use hyprbox_proto::backups::{self as wire, CompleteRun, RunEnvelope, StartRun};
use hyprbox_store::backups::{self, Policy, Run, RunOutcome};
use hyprbox_store::findings::{CRITICAL, Reported};
use hyprbox_store::nodes::NodeEvent;
use hyprbox_store::{jobs, new_id, now_ms};
use serde_json::json;

use super::{FAILED_FINDING, STALE_FINDING, finding_key, finding_metadata, run_body};
use crate::auth::NodeAuth;
use crate::auth::node_tokens::NodeIdentity;
use crate::fleet::writer::Pending;
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::Json;
use crate::state::AppState;

const MAX_SNAPSHOT_ID: usize = 128;
const MAX_ERROR_CHARS: usize = 4000;

/// The policy `id` as the calling agent may report for it.
async fn policy_for_agent(state: &AppState, node: &NodeIdentity, id: &str) -> Result<Policy, ApiError> {
    if !crate::auth::users::plausible_id(id) {
        return Err(ApiError::not_found("backup policy"));
    }
    let mut conn = state.store.conn().await?;
    let policy = backups::get(&mut conn, id)
        .await?
        .ok_or_else(|| ApiError::not_found("backup policy"))?;
    if !node.may_act_for(&policy.node_id) {
        return Err(ApiError::Forbidden("this token is pinned to another node".into()));
    }
    Ok(policy)
}

#[utoipa::path(post, path = "/api/backups/{id}/runs", tag = "backups", request_body = StartRun,
    params(("id" = String, Path, description = "Policy id")),
    security(("nodeToken" = [])),
    responses(
        (status = 201, description = "The run is recorded as RUNNING", body = RunEnvelope),
        (status = 200, description = "A run of this job was already recorded: that run", body = RunEnvelope),
        (status = 400, description = "jobId is not a job of this policy", body = ErrorBody),
        (status = 401, description = "No valid node token", body = ErrorBody),
        (status = 403, description = "The token is pinned to another node", body = ErrorBody),
        (status = 404, description = "No such policy", body = ErrorBody)))]
pub async fn start(
    State(state): State<AppState>,
    NodeAuth(node): NodeAuth,
    Path(id): Path<String>,
    Json(body): Json<StartRun>,
) -> ApiResult<(StatusCode, Json<RunEnvelope>)> {
    let policy = policy_for_agent(&state, &node, &id).await?;
    if let Some(job_id) = &body.job_id {
        let mut conn = state.store.conn().await?;
        let job = if crate::auth::users::plausible_id(job_id) {
            jobs::get(&mut conn, job_id).await?
        } else {
            None
        };
        if job.is_none_or(|job| job.policy_id.as_deref() != Some(policy.id.as_str())) {
            return Err(ApiError::bad_request("jobId is not a job of this policy"));
        }
    }
    let run_id = new_id();
    let (run, new) = state
        .store
        .write(move |tx| {
            Box::pin(async move {
                // An agent retrying a start whose answer it lost gets the run it already made.
                if let Some(job_id) = &body.job_id
                    && let Some(existing) = backups::run_of_job(tx, job_id).await?
                {
                    return Ok((existing, false));
                }
                let run = backups::start_run(tx, &run_id, &policy, body.job_id.as_deref(), now_ms()).await?;
                Ok((run, true))
            })
        })
        .await?;
    let status = if new { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(RunEnvelope { run: run_body(&run) })))
}

fn outcome(body: CompleteRun) -> Result<RunOutcome, ApiError> {
    let succeeded = match body.status.as_str() {
        wire::SUCCEEDED => true,
        wire::FAILED => false,
        _ => return Err(ApiError::bad_request("status must be SUCCEEDED or FAILED")),
    };
    if let Some(snapshot) = &body.snapshot_id
        && (snapshot.is_empty()
            || snapshot.len() > MAX_SNAPSHOT_ID
            || !snapshot.bytes().all(|b| b.is_ascii_alphanumeric()))
    {
        return Err(ApiError::bad_request(format!(
            "snapshotId must be 1 to {MAX_SNAPSHOT_ID} letters and digits"
        )));
    }
    if succeeded && body.snapshot_id.is_none() {
        return Err(ApiError::bad_request("a SUCCEEDED run needs its snapshotId"));
    }
    for (field, value) in [
        ("sizeBytes", body.size_bytes),
        ("filesCount", body.files_count),
        ("durationMs", body.duration_ms),
    ] {
        if value.is_some_and(|v| v < 0) {
            return Err(ApiError::bad_request(format!("{field} must not be negative")));
        }
    }
    let error = body
        .error
        .map(|e| e.chars().take(MAX_ERROR_CHARS).collect::<String>());
    Ok(RunOutcome {
        succeeded,
        snapshot_id: body.snapshot_id,
        size_bytes: body.size_bytes,
        files_count: body.files_count,
        duration_ms: body.duration_ms,
        error,
    })
}

#[utoipa::path(post, path = "/api/backups/runs/{runId}/complete", tag = "backups", request_body = CompleteRun,
    params(("runId" = String, Path, description = "Run id")),
    security(("nodeToken" = [])),
    responses(
        (status = 200, description = "Recorded; a failure raises backup.failed, a success clears it and backup.stale", body = RunEnvelope),
        (status = 400, description = "A field breaks its rule (the message names it)", body = ErrorBody),
        (status = 401, description = "No valid node token", body = ErrorBody),
        (status = 403, description = "The token is pinned to another node", body = ErrorBody),
        (status = 404, description = "No such run", body = ErrorBody),
        (status = 409, description = "The run is already complete", body = ErrorBody)))]
pub async fn complete(
    State(state): State<AppState>,
    NodeAuth(node): NodeAuth,
    Path(run_id): Path<String>,
    Json(body): Json<CompleteRun>,
) -> ApiResult<Json<RunEnvelope>> {
    if !crate::auth::users::plausible_id(&run_id) {
        return Err(ApiError::not_found("backup run"));
    }
    let run = {
        let mut conn = state.store.conn().await?;
        backups::get_run(&mut conn, &run_id)
            .await?
            .ok_or_else(|| ApiError::not_found("backup run"))?
    };
    if !node.may_act_for(&run.node_id) {
        return Err(ApiError::Forbidden("this token is pinned to another node".into()));
    }
    let outcome = outcome(body)?;
    let done = state
        .store
        .write(move |tx| {
            Box::pin(async move { backups::complete_run(tx, &run_id, &outcome, now_ms()).await })
        })
        .await?
        .ok_or_else(|| ApiError::Conflict("the run is already complete".into()))?;
    announce(&state, &done).await?;
    Ok(Json(RunEnvelope { run: run_body(&done) }))
}

/// A finished run, everywhere it shows: the policy's findings, the node's activity, the fleet stream.
async fn announce(state: &AppState, run: &Run) -> Result<(), ApiError> {
    let key = finding_key(&run.policy_id);
    let policy = {
        let mut conn = state.store.conn().await?;
        backups::get(&mut conn, &run.policy_id).await?
    };
    let name = policy.as_ref().map_or("a deleted policy", |p| p.name.as_str());
    let succeeded = run.status == backups::SUCCEEDED;
    if succeeded {
        for kind in [FAILED_FINDING, STALE_FINDING] {
            crate::findings::clear(state, &run.node_id, kind, &key).await?;
        }
    } else if let Some(policy) = &policy {
        let reason = run.error.as_deref().unwrap_or("the run ended without a snapshot");
        let finding = Reported {
            kind: FAILED_FINDING.into(),
            key: key.clone(),
            severity: CRITICAL.into(),
            title: format!("Backup \"{name}\" failed"),
            message: format!("The last run of the backup policy \"{name}\" failed: {reason}"),
            related_entities: json!([{ "type": "backup", "id": run.policy_id }]).to_string(),
            metadata: finding_metadata(
                policy,
                json!({
                    "policyId": run.policy_id,
                    "policyName": name,
                    "runId": run.id,
                    "jobId": run.job_id,
                    "error": run.error,
                }),
            ),
        };
        crate::findings::raise(state, &run.node_id, finding).await?;
    }
    let (kind, severity) = if succeeded {
        ("backup.succeeded", "INFO")
    } else {
        ("backup.failed", "WARN")
    };
    let message = match (succeeded, &run.snapshot_id, &run.error) {
        (true, Some(snapshot), _) => format!("Backup \"{name}\" succeeded: snapshot {snapshot}"),
        (false, _, Some(error)) => format!("Backup \"{name}\" failed: {error}"),
        _ => format!("Backup \"{name}\" {}", run.status),
    };
    if state.hub.has_subscribers() {
        state.hub.publish(
            "backup",
            &run.node_id,
            &json!({ "runId": run.id, "policyId": run.policy_id, "nodeId": run.node_id, "status": run.status }),
        );
    }
    if state.fleet.contains(&run.node_id) {
        let event = NodeEvent {
            id: new_id(),
            node_id: run.node_id.clone(),
            at: now_ms(),
            kind: kind.into(),
            severity: severity.into(),
            message,
            metadata: json!({ "policyId": run.policy_id, "runId": run.id, "snapshotId": run.snapshot_id })
                .to_string(),
        };
        if state.hub.has_subscribers() {
            state.hub.publish_activity(&event);
        }
        state.writer.queue(Pending::Event(event)).await;
    }
    Ok(())
}
