//! `/api/jobs` as agents use it (node-auth): claim the next job, send output, complete.
//!
//! Checks run in the contract's order: a valid node token (401) → the job exists (404) → the token
//! may act for the job's node (403) → the job's state (409) → the token is the one that claimed it
//! (403).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use hyprbox_proto::validate_node_id;
use hyprbox_store::jobs::{self, Appended, Stream};
use hyprbox_store::now_ms;
use serde::Deserialize;
use serde_json::Value;
use utoipa::IntoParams;

use super::operator::job_body;
use crate::auth::NodeAuth;
use crate::auth::node_tokens::NodeIdentity;
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::{BinaryJson, Json, Query};
use crate::jobs::feeds::{publish_output, publish_status};
use crate::state::AppState;
use hyprbox_proto::jobs::{ClaimedJob, CompleteJob, JobEnvelope, OutputPiece, PendingBody};

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct PendingQuery {
    /// The node asking; optional for a pinned token (its node), required for a fleet-wide one.
    pub node_id: Option<String>,
}

#[utoipa::path(get, path = "/api/jobs/pending", tag = "jobs", params(PendingQuery),
    security(("nodeToken" = [])),
    responses(
        (status = 200, description = "The node's oldest QUEUED job, now RUNNING and claimed by this token, or `{job: null}`", body = PendingBody),
        (status = 400, description = "Malformed nodeId, or none given with a fleet-wide token", body = ErrorBody),
        (status = 401, description = "No valid node token", body = ErrorBody),
        (status = 403, description = "The token is pinned to another node", body = ErrorBody)))]
pub async fn pending(
    State(state): State<AppState>,
    NodeAuth(node): NodeAuth,
    Query(query): Query<PendingQuery>,
) -> ApiResult<Json<PendingBody>> {
    let node_id = match (query.node_id.filter(|n| !n.is_empty()), &node.pinned) {
        (Some(asked), _) => {
            validate_node_id("nodeId", &asked).map_err(ApiError::BadRequest)?;
            if !node.may_act_for(&asked) {
                return Err(ApiError::Forbidden("this token is pinned to another node".into()));
            }
            asked
        }
        (None, Some(pin)) => pin.clone(),
        (None, None) => {
            return Err(ApiError::bad_request(
                "nodeId is required with a fleet-wide token",
            ));
        }
    };
    let Some(job) = jobs::claim(&state.store, &node_id, &node.token_id, now_ms()).await? else {
        return Ok(Json(PendingBody { job: None }));
    };
    publish_status(&state, &job).await;
    Ok(Json(PendingBody {
        job: Some(ClaimedJob {
            id: job.id.clone(),
            preset_name: job.preset_name.clone(),
            script: job.script.clone(),
            variables: serde_json::from_str(&job.variables)
                .unwrap_or_else(|_| Value::Object(Default::default())),
            timeout_seconds: job.timeout_seconds,
        }),
    }))
}

/// The job `id` as the calling agent may write to it: RUNNING and claimed by this token.
async fn claimed_job(state: &AppState, node: &NodeIdentity, id: &str) -> Result<jobs::Claim, ApiError> {
    if !crate::auth::users::plausible_id(id) {
        return Err(ApiError::not_found("job"));
    }
    let mut conn = state.store.conn().await?;
    let job = jobs::claim_of(&mut conn, id)
        .await?
        .ok_or_else(|| ApiError::not_found("job"))?;
    if !node.may_act_for(&job.node_id) {
        return Err(ApiError::Forbidden("this token is pinned to another node".into()));
    }
    if !job.open_to_its_agent() {
        return Err(ApiError::Conflict(format!(
            "the job is {}, not RUNNING",
            job.status
        )));
    }
    if job.claimed_by.as_deref() != Some(node.token_id.as_str()) {
        return Err(ApiError::Forbidden(
            "only the token that claimed the job may report its output".into(),
        ));
    }
    Ok(job)
}

fn pieces<'a>(stdout: Option<&'a str>, stderr: Option<&'a str>) -> Vec<(Stream, &'a [u8])> {
    let mut pieces = Vec::with_capacity(2);
    if let Some(out) = stdout.filter(|s| !s.is_empty()) {
        pieces.push((Stream::Stdout, out.as_bytes()));
    }
    if let Some(err) = stderr.filter(|s| !s.is_empty()) {
        pieces.push((Stream::Stderr, err.as_bytes()));
    }
    pieces
}

#[utoipa::path(post, path = "/api/jobs/{id}/output", tag = "jobs", request_body = OutputPiece,
    params(("id" = String, Path, description = "Job id")),
    security(("nodeToken" = [])),
    responses(
        (status = 204, description = "Stored (past the output cap it is dropped and the job flagged truncated; still 204)"),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "No valid node token", body = ErrorBody),
        (status = 403, description = "Pinned to another node, or not the token that claimed the job", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "The job is not RUNNING", body = ErrorBody),
        (status = 413, description = "Body over 1 MiB: send output in pieces", body = ErrorBody),
        (status = 503, description = "The database is unavailable: nothing was stored; retry after `Retry-After`", body = ErrorBody)))]
pub async fn output(
    State(state): State<AppState>,
    NodeAuth(node): NodeAuth,
    Path(id): Path<String>,
    BinaryJson(body): BinaryJson<OutputPiece>,
) -> ApiResult<StatusCode> {
    let job = claimed_job(&state, &node, &id).await?;
    let pieces = pieces(body.stdout.as_deref(), body.stderr.as_deref());
    if pieces.is_empty() {
        return Ok(StatusCode::NO_CONTENT);
    }
    match jobs::append_output(
        &state.store,
        &job.id,
        &pieces,
        state.settings.job_output_max_bytes,
    )
    .await?
    {
        Appended::Stored(chunks) => {
            publish_output(&state, &job.id, chunks);
            if job.status != jobs::RUNNING {
                // A job presumed lost is RUNNING again: say so wherever it is watched.
                let mut conn = state.store.conn().await?;
                if let Some(revived) = jobs::get(&mut conn, &job.id).await? {
                    publish_status(&state, &revived).await;
                }
            }
            Ok(StatusCode::NO_CONTENT)
        }
        Appended::NotRunning => Err(ApiError::Conflict("the job is no longer RUNNING".into())),
    }
}

#[utoipa::path(post, path = "/api/jobs/{id}/complete", tag = "jobs", request_body = CompleteJob,
    params(("id" = String, Path, description = "Job id")),
    security(("nodeToken" = [])),
    responses(
        (status = 200, description = "Final output stored; exit 0 → SUCCEEDED, otherwise FAILED, CANCELLED when a cancel was requested", body = JobEnvelope),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "No valid node token", body = ErrorBody),
        (status = 403, description = "Pinned to another node, or not the token that claimed the job", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "The job is not RUNNING (e.g. already completed)", body = ErrorBody)))]
pub async fn complete(
    State(state): State<AppState>,
    NodeAuth(node): NodeAuth,
    Path(id): Path<String>,
    BinaryJson(body): BinaryJson<CompleteJob>,
) -> ApiResult<Json<JobEnvelope>> {
    let job = claimed_job(&state, &node, &id).await?;
    let pieces = pieces(body.output.stdout.as_deref(), body.output.stderr.as_deref());
    let (job, chunks) = jobs::complete(
        &state.store,
        &job.id,
        body.exit_code,
        &pieces,
        state.settings.job_output_max_bytes,
        now_ms(),
    )
    .await?
    .ok_or_else(|| ApiError::Conflict("the job is no longer RUNNING".into()))?;
    publish_output(&state, &job.id, chunks);
    publish_status(&state, &job).await;
    Ok(Json(JobEnvelope { job: job_body(&job) }))
}
