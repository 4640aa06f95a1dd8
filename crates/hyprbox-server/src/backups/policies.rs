//! `/api/backups` as operators use it: policy CRUD (owner-scoped: others' policies are 404 unless
//! the caller is an ADMIN), the detail with the newest runs, and `trigger`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use hyprbox_proto::backups::{
    CreatePolicy, MAX_KEEP, PoliciesBody, PolicyDetail, PolicyEnvelope, TriggerAccepted, UpdatePolicy,
    valid_password_ref, valid_repo_url,
};
use hyprbox_proto::validate_node_id;
use hyprbox_store::backups::{self, Policy};
use hyprbox_store::{audit, new_id, now_ms};
use serde::Deserialize;
use serde_json::json;
use utoipa::IntoParams;

use super::schedule::{Schedule, stale_after_ms};
use super::{DEFAULT_KEEP, DEFAULT_PASSWORD_REF, PRESET, announce, policy_body, render, run_body};
use crate::auth::audit::audit_event;
use crate::auth::{CurrentUser, Identity, Operator};
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::{ClientIp, Json, Query};
use crate::state::AppState;

/// Runs `GET /api/backups/{id}` shows.
const RECENT_RUNS: i64 = 20;
const MAX_PATHS: usize = 100;
const MAX_PATH_CHARS: usize = 4096;
const MAX_NAME_CHARS: usize = 200;

/// The creator's id the caller is limited to; `None` for an ADMIN, who sees every policy.
fn owner(identity: &Identity) -> Option<&str> {
    (identity.user.role != hyprbox_store::users::Role::Admin).then_some(identity.user.id.as_str())
}

/// A policy the caller may see: others' are 404 unless the caller is an ADMIN.
async fn visible(state: &AppState, identity: &Identity, id: &str) -> Result<Policy, ApiError> {
    if !crate::auth::users::plausible_id(id) {
        return Err(ApiError::not_found("backup policy"));
    }
    let mut conn = state.store.conn().await?;
    backups::get(&mut conn, id)
        .await?
        .filter(|p| owner(identity).is_none_or(|o| p.created_by == o))
        .ok_or_else(|| ApiError::not_found("backup policy"))
}

fn check_name(name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "name must be 1 to {MAX_NAME_CHARS} characters without control characters"
        )));
    }
    Ok(name.to_owned())
}

fn check_paths(paths: &[String]) -> Result<String, ApiError> {
    if paths.is_empty() || paths.len() > MAX_PATHS {
        return Err(ApiError::bad_request(format!(
            "paths must list 1 to {MAX_PATHS} absolute paths"
        )));
    }
    for (i, path) in paths.iter().enumerate() {
        if !path.starts_with('/') || path.len() > MAX_PATH_CHARS || path.chars().any(char::is_control) {
            return Err(ApiError::bad_request(format!(
                "paths[{i}] must be an absolute path (starting with /) without control characters"
            )));
        }
    }
    Ok(serde_json::to_string(paths).unwrap_or_else(|_| "[]".into()))
}

fn check_keep(field: &str, value: Option<i64>, default: i64) -> Result<i64, ApiError> {
    let value = value.unwrap_or(default);
    if !(0..=MAX_KEEP).contains(&value) {
        return Err(ApiError::bad_request(format!(
            "{field} must be from 0 to {MAX_KEEP}"
        )));
    }
    Ok(value)
}

fn check_schedule(schedule: Option<&str>) -> Result<Option<Schedule>, ApiError> {
    schedule
        .map(|s| Schedule::parse(s.trim()).map_err(ApiError::BadRequest))
        .transpose()
}

fn check_repo(repo: &str) -> Result<String, ApiError> {
    if !valid_repo_url(repo.trim()) {
        return Err(ApiError::bad_request(
            "repoUrl must be a restic repository: an absolute local path, or sftp:, rest:, s3:, b2:, azure:, gs: or rclone: followed by its location",
        ));
    }
    Ok(repo.trim().to_owned())
}

fn check_password_ref(reference: &str) -> Result<String, ApiError> {
    if !valid_password_ref(reference) {
        return Err(ApiError::bad_request(
            "passwordRef must be file:/absolute/path or env:NAME (where the agent finds the password on the node; the server never stores one)",
        ));
    }
    Ok(reference.to_owned())
}

/// Sets the schedule-derived fields of `policy` from `schedule` as of `now`.
fn schedule_into(policy: &mut Policy, schedule: Option<&Schedule>, now: i64) {
    policy.next_run_at = schedule.and_then(|s| s.next_after(now));
    policy.stale_after_ms = stale_after_ms(schedule, now);
}

/// The policy must render as a backup job before it is stored, or its runs would all fail.
fn check_renders(state: &AppState, policy: &Policy) -> Result<(), ApiError> {
    let preset = state
        .presets
        .get(PRESET)
        .ok_or_else(|| ApiError::Unavailable(format!("the {PRESET} preset is not loaded")))?;
    render(preset, policy, &policy.created_by).map(drop)
}

/// Stores a created or changed policy with its audit event, then rechecks the node's containers
/// (what the policy covers may have changed).
async fn save_audited(
    state: &AppState,
    policy: Policy,
    event: audit::NewAuditEvent,
) -> Result<Policy, ApiError> {
    let stored = state
        .store
        .write(move |tx| {
            Box::pin(async move {
                let stored = backups::save(tx, &policy).await?;
                audit::record(tx, &event).await?;
                Ok(stored)
            })
        })
        .await?;
    super::inventory::recheck(state, &stored.node_id).await;
    Ok(stored)
}

#[utoipa::path(post, path = "/api/backups", tag = "backups", request_body = CreatePolicy,
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 201, description = "Stored; a schedule's first tick is set", body = PolicyEnvelope),
        (status = 400, description = "A field breaks its rule (the message names it)", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Below OPERATOR", body = ErrorBody),
        (status = 404, description = "Unknown node", body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    Operator(actor): Operator,
    ip: ClientIp,
    Json(body): Json<CreatePolicy>,
) -> ApiResult<(StatusCode, Json<PolicyEnvelope>)> {
    let name = check_name(&body.name)?;
    validate_node_id("nodeId", &body.node_id).map_err(ApiError::BadRequest)?;
    let paths = check_paths(&body.paths)?;
    let schedule = check_schedule(body.schedule.as_deref())?;
    let repo_url = check_repo(&body.repo_url)?;
    let password_ref = check_password_ref(body.password_ref.as_deref().unwrap_or(DEFAULT_PASSWORD_REF))?;
    let (daily, weekly, monthly) = DEFAULT_KEEP;
    let keep_daily = check_keep("keepDaily", body.keep_daily, daily)?;
    let keep_weekly = check_keep("keepWeekly", body.keep_weekly, weekly)?;
    let keep_monthly = check_keep("keepMonthly", body.keep_monthly, monthly)?;
    if state.fleet.get(&body.node_id).is_none() {
        return Err(ApiError::not_found("node"));
    }
    let now = now_ms();
    let mut policy = Policy {
        id: new_id(),
        name,
        node_id: body.node_id,
        paths,
        schedule: body.schedule.map(|s| s.trim().to_owned()),
        repo_url,
        password_ref,
        keep_daily,
        keep_weekly,
        keep_monthly,
        created_by: actor.user.id.clone(),
        created_at: now,
        updated_at: now,
        next_run_at: None,
        stale_after_ms: 0,
        last_success_at: None,
    };
    schedule_into(&mut policy, schedule.as_ref(), now);
    check_renders(&state, &policy)?;
    let metadata = json!({ "nodeId": policy.node_id, "name": policy.name });
    let event = audit_event(
        Some(&actor.user),
        "backup.create",
        Some(("backup", &policy.id)),
        ip,
        Some(metadata),
    );
    let stored = save_audited(&state, policy, event).await?;
    Ok((
        StatusCode::CREATED,
        Json(PolicyEnvelope {
            policy: policy_body(&stored),
        }),
    ))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct ListQuery {
    /// Only this node's policies.
    pub node_id: Option<String>,
}

#[utoipa::path(get, path = "/api/backups", tag = "backups", params(ListQuery),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "The caller's policies (an ADMIN's: all), oldest first", body = PoliciesBody),
        (status = 400, description = "Malformed nodeId", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    CurrentUser(identity): CurrentUser,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<PoliciesBody>> {
    if let Some(node_id) = &query.node_id {
        validate_node_id("nodeId", node_id).map_err(ApiError::BadRequest)?;
    }
    let mut conn = state.store.conn().await?;
    let policies = backups::list(&mut conn, query.node_id.as_deref(), owner(&identity)).await?;
    Ok(Json(PoliciesBody {
        policies: policies.iter().map(policy_body).collect(),
    }))
}

#[utoipa::path(get, path = "/api/backups/{id}", tag = "backups",
    params(("id" = String, Path, description = "Policy id")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "The policy and its 20 newest runs, newest first", body = PolicyDetail),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 404, description = "No such policy, or another user's", body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    CurrentUser(identity): CurrentUser,
    Path(id): Path<String>,
) -> ApiResult<Json<PolicyDetail>> {
    let policy = visible(&state, &identity, &id).await?;
    let mut conn = state.store.conn().await?;
    let runs = backups::runs(&mut conn, &policy.id, RECENT_RUNS).await?;
    Ok(Json(PolicyDetail {
        policy: policy_body(&policy),
        runs: runs.iter().map(run_body).collect(),
    }))
}

#[utoipa::path(patch, path = "/api/backups/{id}", tag = "backups", request_body = UpdatePolicy,
    params(("id" = String, Path, description = "Policy id")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "Updated; a changed schedule moves the next tick", body = PolicyEnvelope),
        (status = 400, description = "A field breaks its rule (the message names it)", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Below OPERATOR", body = ErrorBody),
        (status = 404, description = "No such policy, or another user's", body = ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    Operator(actor): Operator,
    ip: ClientIp,
    Path(id): Path<String>,
    Json(body): Json<UpdatePolicy>,
) -> ApiResult<Json<PolicyEnvelope>> {
    let mut policy = visible(&state, &actor, &id).await?;
    if let Some(name) = &body.name {
        policy.name = check_name(name)?;
    }
    if let Some(paths) = &body.paths {
        policy.paths = check_paths(paths)?;
    }
    if let Some(repo) = &body.repo_url {
        policy.repo_url = check_repo(repo)?;
    }
    if let Some(reference) = &body.password_ref {
        policy.password_ref = check_password_ref(reference)?;
    }
    policy.keep_daily = check_keep("keepDaily", body.keep_daily, policy.keep_daily)?;
    policy.keep_weekly = check_keep("keepWeekly", body.keep_weekly, policy.keep_weekly)?;
    policy.keep_monthly = check_keep("keepMonthly", body.keep_monthly, policy.keep_monthly)?;
    let now = now_ms();
    if let Some(schedule) = &body.schedule {
        let parsed = check_schedule(schedule.as_deref())?;
        policy.schedule = schedule.as_ref().map(|s| s.trim().to_owned());
        schedule_into(&mut policy, parsed.as_ref(), now);
    }
    policy.updated_at = now;
    check_renders(&state, &policy)?;
    let changed: Vec<&str> = [
        ("name", body.name.is_some()),
        ("paths", body.paths.is_some()),
        ("schedule", body.schedule.is_some()),
        ("repoUrl", body.repo_url.is_some()),
        ("passwordRef", body.password_ref.is_some()),
        ("keepDaily", body.keep_daily.is_some()),
        ("keepWeekly", body.keep_weekly.is_some()),
        ("keepMonthly", body.keep_monthly.is_some()),
    ]
    .into_iter()
    .filter_map(|(field, sent)| sent.then_some(field))
    .collect();
    let metadata = json!({ "changed": changed });
    let event = audit_event(
        Some(&actor.user),
        "backup.update",
        Some(("backup", &policy.id)),
        ip,
        Some(metadata),
    );
    let stored = save_audited(&state, policy, event).await?;
    Ok(Json(PolicyEnvelope {
        policy: policy_body(&stored),
    }))
}

#[utoipa::path(delete, path = "/api/backups/{id}", tag = "backups",
    params(("id" = String, Path, description = "Policy id")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 204, description = "The policy and its runs are gone (snapshots stay in the repository)"),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Below OPERATOR", body = ErrorBody),
        (status = 404, description = "No such policy, or another user's", body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Operator(actor): Operator,
    ip: ClientIp,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let policy = visible(&state, &actor, &id).await?;
    let metadata = json!({ "nodeId": policy.node_id, "name": policy.name });
    let event = audit_event(
        Some(&actor.user),
        "backup.delete",
        Some(("backup", &policy.id)),
        ip,
        Some(metadata),
    );
    let policy_id = policy.id.clone();
    let deleted = state
        .store
        .write(move |tx| {
            Box::pin(async move {
                let deleted = backups::delete(tx, &policy_id).await?;
                if deleted {
                    audit::record(tx, &event).await?;
                }
                Ok(deleted)
            })
        })
        .await?;
    if !deleted {
        return Err(ApiError::not_found("backup policy"));
    }
    // Its findings go with it: nothing is left to fix or to watch.
    let key = super::finding_key(&policy.id);
    for kind in [super::FAILED_FINDING, super::STALE_FINDING] {
        crate::findings::clear(&state, &policy.node_id, kind, &key).await?;
    }
    super::inventory::recheck(&state, &policy.node_id).await;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/backups/{id}/trigger", tag = "backups",
    params(("id" = String, Path, description = "Policy id")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 202, description = "A backup job is queued for the policy's node (or the one already queued or running is answered)", body = TriggerAccepted),
        (status = 400, description = "The policy does not render as a backup job", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Below OPERATOR", body = ErrorBody),
        (status = 404, description = "No such policy, or another user's; or its node is gone", body = ErrorBody)))]
pub async fn trigger(
    State(state): State<AppState>,
    Operator(actor): Operator,
    ip: ClientIp,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<TriggerAccepted>)> {
    let policy = visible(&state, &actor, &id).await?;
    if state.fleet.get(&policy.node_id).is_none() {
        return Err(ApiError::not_found("node"));
    }
    let preset = state
        .presets
        .get(PRESET)
        .ok_or_else(|| ApiError::Unavailable(format!("the {PRESET} preset is not loaded")))?;
    let job = render(preset, &policy, &actor.user.id)?;
    let metadata = json!({ "nodeId": policy.node_id, "jobId": job.id });
    let event = audit_event(
        Some(&actor.user),
        "backup.trigger",
        Some(("backup", &policy.id)),
        ip,
        Some(metadata),
    );
    let (queued, new) = state
        .store
        .write(move |tx| {
            Box::pin(async move {
                let (queued, new) = backups::queue_unless_active(tx, &job.new_job()).await?;
                if new {
                    audit::record(tx, &event).await?;
                }
                Ok((queued, new))
            })
        })
        .await?;
    if new {
        announce(&state, &queued).await;
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(TriggerAccepted {
            job_id: queued.id,
            policy_id: policy.id,
        }),
    ))
}
