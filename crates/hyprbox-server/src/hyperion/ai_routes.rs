//! `/api/dashboard/ai-workers`: the Hyperion dashboard's AI worker fleet (snake_case, as its web
//! client reads it). The fleet view is served from memory; see `ai_fleet` for the loops.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, header};
use hyprbox_store::ai_tasks::{self, Task};
use hyprbox_store::{audit, now_ms};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::ai_fleet::{ClusterStatus, NodeSnapshot};
use crate::auth::audit::audit_event;
use crate::auth::{CurrentUser, Operator};
use crate::fleet::nodes::parse_limit;
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::{ClientIp, Json, Query};
use crate::http::time::rfc3339;
use crate::state::AppState;

/// The action of a dispatch that names none.
pub const DEFAULT_ACTION: &str = "Generic AI Task";
/// The longest action accepted, in characters.
pub const MAX_ACTION_CHARS: usize = 200;

#[derive(Serialize, ToSchema)]
pub struct FleetBody {
    /// Workers that are Active or Working.
    pub total_active_fleet: usize,
    /// `Stressed` (≥ 80 % Working), `Optimal` (≥ 30 % Active or Working) or `Degraded`.
    pub cluster_status: ClusterStatus,
    /// Every configured worker, in the configured order.
    pub nodes: Vec<NodeSnapshot>,
    /// Tasks waiting in the queue (refreshed at most every 250 ms).
    pub queue_depth: i64,
    pub last_updated: String,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DispatchQuery {
    /// What the task does; wins over the body's `action` when both are given.
    pub action: Option<String>,
}

#[derive(Default, Deserialize, ToSchema)]
pub struct DispatchRequest {
    /// What the task does (default `Generic AI Task`, at most 200 characters).
    pub action: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct DispatchBody {
    pub message: String,
    pub task_id: String,
    pub action: String,
    /// Tasks waiting in the queue, this one included.
    pub queue_size: i64,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TasksQuery {
    /// 1–100, default 20.
    pub limit: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct TaskBody {
    pub id: String,
    pub action: String,
    /// `QUEUED`, `RUNNING` or `DONE`.
    pub status: String,
    /// The worker that took the task.
    pub worker: Option<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// The dispatching user's id.
    pub created_by: String,
}

impl From<&Task> for TaskBody {
    fn from(task: &Task) -> Self {
        TaskBody {
            id: task.id.clone(),
            action: task.action.clone(),
            status: task.status.clone(),
            worker: task.worker.clone(),
            created_at: rfc3339(task.created_at),
            started_at: task.started_at.map(rfc3339),
            finished_at: task.finished_at.map(rfc3339),
            created_by: task.created_by.clone(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct TasksBody {
    pub tasks: Vec<TaskBody>,
}

#[utoipa::path(get, path = "/api/dashboard/ai-workers", tag = "dashboard",
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "The AI worker fleet, from memory", body = FleetBody),
        (status = 401, description = "Not signed in", body = ErrorBody)))]
pub async fn fleet(State(state): State<AppState>, _: CurrentUser) -> Json<FleetBody> {
    let now = now_ms();
    let snapshot = state.ai.snapshot(now);
    Json(FleetBody {
        total_active_fleet: snapshot.total_active_fleet,
        cluster_status: snapshot.cluster_status,
        nodes: snapshot.nodes,
        queue_depth: super::ai_fleet::queue_depth(&state, now),
        last_updated: rfc3339(now),
    })
}

/// An optional JSON body: absent (or empty) is `None`; present, it must be JSON.
pub struct OptionalJson<T>(pub Option<T>);

impl<T, S> FromRequest<S> for OptionalJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let headers: HeaderMap = req.headers().clone();
        // An action in the query string wins: whatever body came with it is not needed.
        // Decoded first: `?action=%20` is a blank action, which leaves the body's in charge.
        let action_in_query =
            axum::extract::Query::<std::collections::HashMap<String, String>>::try_from_uri(req.uri())
                .is_ok_and(|q| q.0.get("action").is_some_and(|v| !v.trim().is_empty()));
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge("request body must be at most 1 MiB".into())
            } else {
                ApiError::bad_request(rejection.body_text())
            }
        })?;
        if action_in_query || bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(None));
        }
        let is_json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|mime| {
                let mime = mime.trim().to_ascii_lowercase();
                mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
            });
        if !is_json {
            return Err(ApiError::bad_request("Content-Type must be application/json"));
        }
        crate::http::extract::refuse_nul(&bytes)?;
        // `null` (what `JSON.stringify(undefined ?? null)` sends) is no body.
        // Through axum's JSON reader, so an error names the field it is about.
        axum::Json::<Option<T>>::from_bytes(&bytes)
            .map(|axum::Json(value)| OptionalJson(value))
            .map_err(ApiError::from)
    }
}

/// The action to queue: the first non-blank of the query's and the body's, trimmed; the default
/// when both are blank or absent.
fn resolve_action(query: Option<&str>, body: Option<&str>) -> Result<String, ApiError> {
    let action = [query, body]
        .into_iter()
        .flatten()
        .map(str::trim)
        .find(|a| !a.is_empty())
        .unwrap_or(DEFAULT_ACTION);
    if action.chars().count() > MAX_ACTION_CHARS {
        return Err(ApiError::bad_request(format!(
            "action must be at most {MAX_ACTION_CHARS} characters"
        )));
    }
    Ok(action.to_string())
}

#[utoipa::path(post, path = "/api/dashboard/ai-workers/dispatch", tag = "dashboard",
    params(DispatchQuery), request_body(content = DispatchRequest, description = "Optional"),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "Queued; an idle worker is woken at once", body = DispatchBody),
        (status = 400, description = "Action longer than 200 characters, or a malformed body", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Below OPERATOR", body = ErrorBody)))]
pub async fn dispatch(
    State(state): State<AppState>,
    Operator(actor): Operator,
    ip: ClientIp,
    Query(query): Query<DispatchQuery>,
    OptionalJson(body): OptionalJson<DispatchRequest>,
) -> ApiResult<Json<DispatchBody>> {
    let body = body.unwrap_or_default();
    let action = resolve_action(query.action.as_deref(), body.action.as_deref())?;
    let now = now_ms();
    let mut tx = state.store.begin().await?;
    let task = ai_tasks::enqueue(&mut tx, &task_id(), &action, &actor.user.id, now).await?;
    let queue_size = ai_tasks::queue_depth(&mut tx).await?;
    audit::record(
        &mut tx,
        &audit_event(
            Some(&actor.user),
            "ai.dispatch",
            Some(("ai_task", &task.id)),
            ip,
            Some(serde_json::json!({ "action": task.action })),
        ),
    )
    .await?;
    tx.commit().await?;
    state.ai.set_queue_depth(queue_size, now);
    state.ai.wake.notify_one();
    Ok(Json(DispatchBody {
        message: "Task dispatched to the AI worker queue".into(),
        task_id: task.id,
        action: task.action,
        queue_size,
    }))
}

#[utoipa::path(get, path = "/api/dashboard/ai-workers/tasks", tag = "dashboard", params(TasksQuery),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "The most recent tasks, newest first", body = TasksBody),
        (status = 400, description = "limit is not a whole number from 1 to 100", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody)))]
pub async fn tasks(
    State(state): State<AppState>,
    _: CurrentUser,
    Query(query): Query<TasksQuery>,
) -> ApiResult<Json<TasksBody>> {
    let limit = parse_limit(query.limit.as_deref(), 20, 100)?;
    let mut conn = state.store.conn().await?;
    let tasks = ai_tasks::recent(&mut conn, limit).await?;
    Ok(Json(TasksBody {
        tasks: tasks.iter().map(TaskBody::from).collect(),
    }))
}

/// A random (version 4) UUID: the Hyperion client shows a task's first 8 characters, which a
/// time-ordered id would share with every task dispatched in the same minute.
fn task_id() -> String {
    uuid::Builder::from_random_bytes(rand::random())
        .into_uuid()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_action_comes_from_the_query_then_the_body_then_the_default() {
        assert_eq!(
            resolve_action(Some(" Summarise "), Some("b")).unwrap(),
            "Summarise"
        );
        assert_eq!(
            resolve_action(Some("  "), Some(" Translate")).unwrap(),
            "Translate"
        );
        assert_eq!(resolve_action(None, None).unwrap(), DEFAULT_ACTION);
        assert_eq!(resolve_action(Some(""), Some("")).unwrap(), DEFAULT_ACTION);
        let longest = "é".repeat(MAX_ACTION_CHARS);
        assert_eq!(resolve_action(Some(&longest), None).unwrap(), longest);
        let err = resolve_action(None, Some(&"x".repeat(MAX_ACTION_CHARS + 1))).unwrap_err();
        assert!(err.to_string().contains("action"));
    }
}
