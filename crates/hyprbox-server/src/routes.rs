//! Every route of the API, in one list. Handlers live with their domain; each `routes!` call
//! registers the handlers of ONE path (one per method) and documents them, so the OpenAPI
//! document's paths are generated from this list and cannot drift from what is served.

use axum::Router;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

use crate::auth::{account, audit, node_token_routes, users};
use crate::backups::{inventory, policies, runs};
use crate::findings;
use crate::fleet::{agent_socket, nodes, stream};
use crate::http::error::{ApiError, ErrorBody};
use crate::http::probes;
use crate::hyperion::{ai_routes, dashboard};
use crate::jobs::{agent_api, operator, presets};
use crate::state::AppState;

/// The whole API, documented as it is registered.
fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        // Probes
        .routes(routes!(probes::root))
        .routes(routes!(probes::probe))
        .routes(routes!(probes::api_health))
        // Accounts, sessions, users, audit, node tokens
        .routes(routes!(account::register))
        .routes(routes!(account::signup))
        .routes(routes!(account::login))
        .routes(routes!(account::logout))
        .routes(routes!(account::me, account::update_me, account::patch_me))
        .routes(routes!(account::change_password))
        .routes(routes!(account::forgot_password))
        .routes(routes!(account::reset_password))
        .routes(routes!(users::list, users::create))
        .routes(routes!(users::set_role))
        .routes(routes!(users::delete))
        .routes(routes!(audit::list))
        .routes(routes!(node_token_routes::list, node_token_routes::create))
        .routes(routes!(node_token_routes::revoke))
        // The fleet
        .routes(routes!(nodes::list))
        .routes(routes!(nodes::heartbeat))
        .routes(routes!(inventory::report))
        .routes(routes!(nodes::sparks))
        .routes(routes!(nodes::my_config))
        .routes(routes!(nodes::delete))
        .routes(routes!(nodes::status))
        .routes(routes!(nodes::history))
        .routes(routes!(nodes::activity))
        .routes(routes!(nodes::patch_config))
        .routes(routes!(stream::nodes))
        // Presets and jobs
        .routes(routes!(presets::list))
        .routes(routes!(presets::get))
        .routes(routes!(presets::render))
        .routes(routes!(operator::list, operator::create))
        .routes(routes!(agent_api::pending))
        .routes(routes!(operator::get))
        .routes(routes!(operator::cancel))
        .routes(routes!(operator::stream))
        .routes(routes!(agent_api::output))
        .routes(routes!(operator::raw))
        .routes(routes!(agent_api::complete))
        .routes(routes!(agent_socket::ws))
        // Findings
        .routes(routes!(findings::list, findings::report))
        .routes(routes!(findings::summary))
        .routes(routes!(findings::get))
        .routes(routes!(findings::snooze))
        .routes(routes!(findings::resolve))
        // Backups
        .routes(routes!(policies::list, policies::create))
        .routes(routes!(policies::get, policies::update, policies::delete))
        .routes(routes!(policies::trigger))
        .routes(routes!(runs::start))
        .routes(routes!(runs::complete))
        // The Hyperion dashboard
        .routes(routes!(ai_routes::fleet))
        .routes(routes!(ai_routes::dispatch))
        .routes(routes!(ai_routes::tasks))
        .routes(routes!(dashboard::system_health))
        .routes(routes!(dashboard::user_experience))
}

/// The API with its fallbacks (404 and 405 in the error shape) and, when `HYPRBOX_ENABLE_DOCS`
/// allows, the Swagger UI at `/docs` and the document at `/openapi.json`.
pub fn router(state: AppState) -> Router {
    let (mut router, openapi) = api().split_for_parts();
    if state.settings.enable_docs {
        router = router.merge(SwaggerUi::new("/docs").url("/openapi.json", openapi));
    }
    router
        .merge(crate::dashboard::router())
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError::MethodNotAllowed("method not allowed for this route".into())
        })
        .with_state(state)
}

/// What the OpenAPI document says besides its paths, which [`api`] adds as it registers them.
#[derive(OpenApi)]
#[openapi(
    info(title = "HyprBox API", description = "Control plane for a fleet of Linux servers."),
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
        (name = "backups", description = "HyprVault: restic backup policies, their schedules and runs"),
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
