//! `/api/presets`: the preset catalogue (built-ins and `HYPRBOX_PRESETS_DIR`), and rendering a
//! preset into its script without running it.

use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::auth::CurrentUser;
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::Json;
use crate::state::AppState;

#[derive(Serialize, ToSchema)]
pub struct PresetsBody {
    /// `{name, version, description, tags, targets, risk, stepCount, variables: [{name, type, required, default, description}]}`, by name.
    #[schema(value_type = Vec<Object>)]
    pub presets: Vec<Value>,
}

#[derive(Serialize, ToSchema)]
pub struct PresetBody {
    /// The whole preset: its variables with their rules, and its steps.
    #[schema(value_type = Object)]
    pub preset: Value,
}

#[derive(Deserialize, ToSchema)]
pub struct RenderRequest {
    #[serde(default)]
    #[schema(value_type = Object)]
    pub variables: Map<String, Value>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RenderBody {
    pub name: String,
    pub script: String,
    /// Every variable with the value used (defaults filled in).
    #[schema(value_type = Object)]
    pub resolved_variables: Map<String, Value>,
    /// For example an unknown variable that was ignored.
    pub warnings: Vec<String>,
    /// The script's size in bytes.
    pub bytes: usize,
}

#[utoipa::path(get, path = "/api/presets", tag = "presets", security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "Every preset, by name", body = PresetsBody),
        (status = 401, description = "Not signed in", body = ErrorBody)))]
pub async fn list(State(state): State<AppState>, _: CurrentUser) -> Json<PresetsBody> {
    Json(PresetsBody {
        presets: state.presets.iter().map(|p| p.summary()).collect(),
    })
}

#[utoipa::path(get, path = "/api/presets/{name}", tag = "presets",
    params(("name" = String, Path, description = "Preset name")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "The full preset", body = PresetBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 404, description = "No such preset", body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    _: CurrentUser,
    Path(name): Path<String>,
) -> ApiResult<Json<PresetBody>> {
    let preset = state
        .presets
        .get(&name)
        .ok_or_else(|| ApiError::not_found("preset"))?;
    let preset = serde_json::to_value(preset).map_err(|e| ApiError::Internal(e.into()))?;
    Ok(Json(PresetBody { preset }))
}

#[utoipa::path(post, path = "/api/presets/{name}/render", tag = "presets", request_body = RenderRequest,
    params(("name" = String, Path, description = "Preset name")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "The script a job would run", body = RenderBody),
        (status = 400, description = "A required variable is missing or a value breaks its rule (named)", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 404, description = "No such preset", body = ErrorBody)))]
pub async fn render(
    State(state): State<AppState>,
    _: CurrentUser,
    Path(name): Path<String>,
    Json(body): Json<RenderRequest>,
) -> ApiResult<Json<RenderBody>> {
    let preset = state
        .presets
        .get(&name)
        .ok_or_else(|| ApiError::not_found("preset"))?;
    let rendered = preset
        .render(&body.variables)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    Ok(Json(RenderBody {
        name: preset.name.clone(),
        bytes: rendered.script.len(),
        script: rendered.script,
        resolved_variables: rendered.resolved,
        warnings: rendered.warnings,
    }))
}
