//! The probes: `GET /`, `GET /health` (liveness, for load balancers: no database) and
//! `GET /api/health` (readiness: the database's round-trip time).

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::http::extract::Json;
use crate::state::AppState;

#[derive(Serialize, ToSchema)]
pub struct RootBody {
    pub message: &'static str,
}

#[derive(Serialize, ToSchema)]
pub struct ProbeBody {
    /// `ok`, or `degraded` while the heartbeat writer cannot commit.
    pub status: &'static str,
    pub version: &'static str,
    /// `failing` while the heartbeat writer cannot commit (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_writer: Option<&'static str>,
}

#[derive(Serialize, ToSchema)]
pub struct Components {
    pub api: &'static str,
    pub database: &'static str,
    /// `up`, or `down` while the heartbeat writer cannot commit its batch.
    pub heartbeat_writer: &'static str,
}

#[derive(Serialize, ToSchema)]
pub struct HealthBody {
    /// `healthy` or `unhealthy`.
    pub status: &'static str,
    pub timestamp: String,
    pub components: Components,
    pub database_latency_ms: Option<f64>,
    /// Present when unhealthy (the error shape's fields).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[utoipa::path(get, path = "/", tag = "health",
    responses(
        (status = 200, description = "The API is running", body = RootBody),
        (status = 303, description = "A browser (`Accept: text/html`) is sent to the dashboard")))]
pub async fn root(headers: HeaderMap) -> Response {
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    if wants_html {
        return Redirect::to("/dashboard").into_response();
    }
    Json(RootBody {
        message: "HyprBox API is running",
    })
    .into_response()
}

#[utoipa::path(get, path = "/health", tag = "health",
    responses((status = 200, description = "Process is up (does not touch the database)", body = ProbeBody)))]
pub async fn probe(State(state): State<AppState>) -> Json<ProbeBody> {
    let failing = state.writer.health.failing_since().is_some();
    Json(ProbeBody {
        status: if failing { "degraded" } else { "ok" },
        version: env!("CARGO_PKG_VERSION"),
        heartbeat_writer: failing.then_some("failing"),
    })
}

#[utoipa::path(get, path = "/api/health", tag = "health",
    responses(
        (status = 200, description = "API and database up", body = HealthBody),
        (status = 503, description = "Database unreachable, or the heartbeat writer cannot commit", body = HealthBody)))]
pub async fn api_health(State(state): State<AppState>) -> (StatusCode, Json<HealthBody>) {
    let timestamp = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let ping = tokio::time::timeout(Duration::from_secs(3), state.store.ping()).await;
    let writer_failing = state.writer.health.failing_since().is_some();
    match ping {
        Ok(Ok(latency)) if writer_failing => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(HealthBody {
                status: "unhealthy",
                timestamp,
                components: Components {
                    api: "up",
                    database: "up",
                    heartbeat_writer: "down",
                },
                database_latency_ms: Some((latency.as_secs_f64() * 1000.0 * 100.0).round() / 100.0),
                error: Some("unavailable"),
                message: Some("the heartbeat writer cannot commit its batch".into()),
            }),
        ),
        Ok(Ok(latency)) => (
            StatusCode::OK,
            Json(HealthBody {
                status: "healthy",
                timestamp,
                components: Components {
                    api: "up",
                    database: "up",
                    heartbeat_writer: "up",
                },
                database_latency_ms: Some((latency.as_secs_f64() * 1000.0 * 100.0).round() / 100.0),
                error: None,
                message: None,
            }),
        ),
        failed => {
            let cause = match failed {
                Ok(Err(err)) => err.to_string(),
                _ => "timed out".to_string(),
            };
            tracing::warn!(%cause, "health check: database unreachable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(HealthBody {
                    status: "unhealthy",
                    timestamp,
                    components: Components {
                        api: "up",
                        database: "down",
                        heartbeat_writer: if writer_failing { "down" } else { "up" },
                    },
                    database_latency_ms: None,
                    error: Some("unavailable"),
                    message: Some("the database is unreachable".into()),
                }),
            )
        }
    }
}
