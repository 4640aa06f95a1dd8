//! `/api/dashboard/system-health` and `/api/dashboard/user-experience`: the Hyperion dashboard's
//! server figures, in its snake_case shapes. Both are served from renderings kept in memory.

use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use hyprbox_store::now_ms;

use super::server_health;
use crate::auth::CurrentUser;
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::state::AppState;

fn json(bytes: axum::body::Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], bytes).into_response()
}

#[utoipa::path(get, path = "/api/dashboard/system-health", tag = "dashboard",
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "`{status, environment, uptime, server_load, last_updated, cpu_percent, memory_percent, memory_used_bytes, memory_limit_bytes, uptime_seconds, container}`: container-aware figures sampled once a minute"),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 503, description = "The figures cannot be read or stored", body = ErrorBody)))]
pub async fn system_health(State(state): State<AppState>, _: CurrentUser) -> ApiResult<Response> {
    if let Some(bytes) = state.server_health.rendered() {
        return Ok(json(bytes));
    }
    // Only before the first background sample (in the first second after a start).
    server_health::sample_now(&state, Duration::from_millis(100)).await?;
    state
        .server_health
        .rendered()
        .map(json)
        .ok_or_else(|| ApiError::Unavailable("the server's CPU and memory figures cannot be read".into()))
}

#[utoipa::path(get, path = "/api/dashboard/user-experience", tag = "dashboard",
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "`{active_now, active_trend, avg_response_time, p95_response_time, daily_activity, last_updated}`; times in ms over the last 1,000 requests"),
        (status = 401, description = "Not signed in", body = ErrorBody)))]
pub async fn user_experience(State(state): State<AppState>, _: CurrentUser) -> Response {
    json(state.ux.rendered(now_ms()))
}
