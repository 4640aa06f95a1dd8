//! Every route of the API, in one list. Handlers live with their domain.

use axum::Router;
use axum::routing::{get, patch, post};
use hyprbox_store::users::User;
use serde::Serialize;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_swagger_ui::SwaggerUi;

use crate::auth::{account, audit, node_token_routes, users};
use crate::findings;
use crate::fleet::{agent_socket, nodes, stream};
use crate::http::error::{ApiError, ErrorBody};
use crate::http::probes;
use crate::hyperion::{ai_routes, dashboard};
use crate::jobs::{agent_api, operator, presets};
use crate::state::AppState;

pub fn router(state: AppState) -> Router {
    let mut router = Router::new()
        .route("/", get(probes::root))
        .route("/health", get(probes::probe))
        .route("/api/health", get(probes::api_health))
        .route("/api/auth/register", post(account::register))
        .route("/api/auth/signup", post(account::signup))
        .route("/api/auth/login", post(account::login))
        .route("/api/auth/logout", post(account::logout))
        .route(
            "/api/auth/me",
            get(account::me).put(account::update_me).patch(account::patch_me),
        )
        .route("/api/auth/change-password", post(account::change_password))
        .route("/api/auth/forgot-password", post(account::forgot_password))
        .route("/api/auth/reset-password", post(account::reset_password))
        .route("/api/users", get(users::list).post(users::create))
        .route("/api/users/{id}/role", patch(users::set_role))
        .route("/api/users/{id}", axum::routing::delete(users::delete))
        .route("/api/audit", get(audit::list))
        .route(
            "/api/tokens",
            get(node_token_routes::list).post(node_token_routes::create),
        )
        .route(
            "/api/tokens/{id}",
            axum::routing::delete(node_token_routes::revoke),
        )
        .route("/api/nodes", get(nodes::list))
        .route("/api/nodes/heartbeat", post(nodes::heartbeat))
        .route("/api/nodes/sparks", get(nodes::sparks))
        .route("/api/nodes/me/config", get(nodes::my_config))
        .route("/api/nodes/{nodeId}", axum::routing::delete(nodes::delete))
        .route("/api/nodes/{nodeId}/status", get(nodes::status))
        .route("/api/nodes/{nodeId}/history", get(nodes::history))
        .route("/api/nodes/{nodeId}/activity", get(nodes::activity))
        .route("/api/nodes/{nodeId}/config", patch(nodes::patch_config))
        .route("/api/stream/nodes", get(stream::nodes))
        .route("/api/presets", get(presets::list))
        .route("/api/presets/{name}", get(presets::get))
        .route("/api/presets/{name}/render", post(presets::render))
        .route("/api/jobs", get(operator::list).post(operator::create))
        .route("/api/jobs/pending", get(agent_api::pending))
        .route("/api/jobs/{id}", get(operator::get))
        .route("/api/jobs/{id}/cancel", post(operator::cancel))
        .route("/api/jobs/{id}/stream", get(operator::stream))
        .route("/api/jobs/{id}/output", post(agent_api::output))
        .route("/api/jobs/{id}/output/raw", get(operator::raw))
        .route("/api/jobs/{id}/complete", post(agent_api::complete))
        .route("/api/findings", get(findings::list).post(findings::report))
        .route("/api/findings/health/summary", get(findings::summary))
        .route("/api/findings/{id}", get(findings::get))
        .route("/api/findings/{id}/snooze", post(findings::snooze))
        .route("/api/findings/{id}/resolve", post(findings::resolve))
        .route("/api/agent/ws", get(agent_socket::ws))
        .route("/api/dashboard/ai-workers", get(ai_routes::fleet))
        .route("/api/dashboard/ai-workers/dispatch", post(ai_routes::dispatch))
        .route("/api/dashboard/ai-workers/tasks", get(ai_routes::tasks))
        .route("/api/dashboard/system-health", get(dashboard::system_health))
        .route("/api/dashboard/user-experience", get(dashboard::user_experience));
    if state.settings.enable_docs {
        router = router.merge(SwaggerUi::new("/docs").url("/openapi.json", ApiDoc::openapi()));
    }
    router
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError::MethodNotAllowed("method not allowed for this route".into())
        })
        .with_state(state)
}

/// The user object of the contract; `name` and `full_name` carry the same value.
#[derive(Clone, Serialize, ToSchema)]
pub struct UserBody {
    pub id: String,
    pub email: String,
    pub name: String,
    pub full_name: String,
    pub language: String,
    /// `ADMIN`, `OPERATOR` or `VIEWER`.
    pub role: &'static str,
    #[serde(rename = "createdAt")]
    pub created_at: String,
}

impl From<&User> for UserBody {
    fn from(user: &User) -> Self {
        UserBody {
            id: user.id.clone(),
            email: user.email.clone(),
            name: user.name.clone(),
            full_name: user.name.clone(),
            language: user.language.clone(),
            role: user.role.as_str(),
            created_at: rfc3339(user.created_at),
        }
    }
}

/// An audit event: who (`actor`) did `action` to which resource (type, id), from where.
pub fn audit_event(
    actor: Option<&User>,
    action: &str,
    resource: Option<(&str, &str)>,
    ip: crate::http::extract::ClientIp,
    metadata: Option<serde_json::Value>,
) -> hyprbox_store::audit::NewAuditEvent {
    hyprbox_store::audit::NewAuditEvent {
        user_id: actor.map(|u| u.id.clone()),
        user_email: actor.map(|u| u.email.clone()),
        action: action.into(),
        resource_type: resource.map(|(kind, _)| kind.to_string()),
        resource_id: resource.map(|(_, id)| id.to_string()),
        ip: Some(ip.0.to_string()),
        metadata: metadata.map(|m| m.to_string()),
    }
}

/// Unix milliseconds as an RFC 3339 UTC timestamp.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[derive(OpenApi)]
#[openapi(
    info(title = "HyprBox API", description = "Control plane for a fleet of Linux servers."),
    paths(
        probes::root, probes::probe, probes::api_health,
        account::register, account::signup, account::login, account::logout, account::me, account::update_me, account::patch_me,
        account::change_password, account::forgot_password, account::reset_password,
        users::list, users::create, users::set_role, users::delete,
        audit::list,
        node_token_routes::create, node_token_routes::list, node_token_routes::revoke,
        nodes::heartbeat, nodes::list, nodes::sparks, nodes::status, nodes::history, nodes::activity,
        nodes::my_config, nodes::patch_config, nodes::delete,
        stream::nodes,
        presets::list, presets::get, presets::render,
        operator::create, operator::list, operator::get, operator::cancel, operator::stream, operator::raw,
        agent_api::pending, agent_api::output, agent_api::complete, agent_socket::ws,
        findings::report, findings::list, findings::get, findings::snooze, findings::resolve,
        findings::summary,
        dashboard::system_health, dashboard::user_experience,
        ai_routes::fleet, ai_routes::dispatch, ai_routes::tasks,
    ),
    components(schemas(ErrorBody)),
    modifiers(&SecuritySchemes),
    tags(
        (name = "health", description = "Liveness and readiness"),
        (name = "auth", description = "Sessions and the signed-in user"),
        (name = "users", description = "Accounts (ADMIN)"),
        (name = "audit", description = "The append-only audit log (ADMIN)"),
        (name = "tokens", description = "Node tokens for agents (OPERATOR)"),
        (name = "nodes", description = "Heartbeats and the fleet"),
        (name = "presets", description = "Parameterised bash procedures and their safe rendering"),
        (name = "jobs", description = "Presets run on nodes: dispatch, live output, cancel; the agents' side"),
        (name = "findings", description = "Problems the agents' scanners found, their fixes, and each node's health bucket"),
        (name = "dashboard", description = "The Hyperion dashboard: AI worker fleet, system health, user experience"),
    )
)]
pub struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new("hb_token"))),
        );
        components.add_security_scheme(
            "nodeToken",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("hbnt_ node token")
                    .build(),
            ),
        );
    }
}
