//! The probes: `GET /`, `GET /health` (liveness, for load balancers: no database) and
//! `GET /api/health` (readiness: the database's round-trip time).

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
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
    pub status: &'static str,
    pub version: &'static str,
}

#[derive(Serialize, ToSchema)]
pub struct Components {
    pub api: &'static str,
    pub database: &'static str,
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
    responses((status = 200, description = "The API is running", body = RootBody)))]
pub async fn root() -> Json<RootBody> {
    Json(RootBody {
        message: "HyprBox API is running",
    })
}

#[utoipa::path(get, path = "/health", tag = "health",
    responses((status = 200, description = "Process is up (does not touch the database)", body = ProbeBody)))]
pub async fn probe() -> Json<ProbeBody> {
    Json(ProbeBody {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
    })
}

#[utoipa::path(get, path = "/api/health", tag = "health",
    responses(
        (status = 200, description = "API and database up", body = HealthBody),
        (status = 503, description = "Database unreachable", body = HealthBody)))]
pub async fn api_health(State(state): State<AppState>) -> (StatusCode, Json<HealthBody>) {
    let timestamp = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let ping = tokio::time::timeout(Duration::from_secs(3), state.store.ping()).await;
    match ping {
        Ok(Ok(latency)) => (
            StatusCode::OK,
            Json(HealthBody {
                status: "healthy",
                timestamp,
                components: Components {
                    api: "up",
                    database: "up",
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
                    },
                    database_latency_ms: None,
                    error: Some("unavailable"),
                    message: Some("the database is unreachable".into()),
                }),
            )
        }
    }
}
