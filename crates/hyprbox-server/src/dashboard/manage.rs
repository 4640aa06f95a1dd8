//! Node tokens, users and audit (the administration), the live activity log and the Hyperion
//! panels (AI worker fleet, system health, user experience).

use askama::Template;
use axum::extract::State;
use axum::response::Response;
use hyprbox_store::audit::AuditFilter;
use hyprbox_store::users::Role;

use super::{Chrome, PageUser, html, problem, refusal};
use crate::auth::audit::AuditQuery;
use crate::auth::{Admin, Operator, node_token_routes, users};
use crate::fleet::query::encode;
use crate::http::extract::{Json, Query};
use crate::http::time::rfc3339;
use crate::state::AppState;

pub struct TokenRow {
    pub id: String,
    pub prefix: String,
    pub name: String,
    pub node_id: String,
    pub created_at: String,
    pub last_used_at: String,
    pub revoked: bool,
}

#[derive(Template)]
#[template(path = "tokens.html")]
struct TokensPage {
    chrome: Chrome,
    rows: Vec<TokenRow>,
}

pub async fn tokens(State(state): State<AppState>, PageUser(identity): PageUser) -> Response {
    if let Some(page) = refusal(&identity, Role::Operator) {
        return page;
    }
    let list = match node_token_routes::list(State(state), Operator(identity.clone())).await {
        Ok(Json(body)) => body.tokens,
        Err(err) => return problem(&identity, err),
    };
    html(&TokensPage {
        chrome: Chrome::new(&identity, "tokens", "Node tokens"),
        rows: list
            .into_iter()
            .map(|t| TokenRow {
                id: t.id,
                prefix: t.prefix,
                name: t.name,
                node_id: t.node_id.unwrap_or_else(|| "fleet-wide".into()),
                created_at: t.created_at,
                last_used_at: t.last_used_at.unwrap_or_default(),
                revoked: t.revoked_at.is_some(),
            })
            .collect(),
    })
}

pub struct UserRow {
    pub id: String,
    pub email: String,
    pub name: String,
    pub role: String,
    pub created_at: String,
    pub me: bool,
}

#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage {
    chrome: Chrome,
    rows: Vec<UserRow>,
    roles: [&'static str; 3],
}

pub async fn users(State(state): State<AppState>, PageUser(identity): PageUser) -> Response {
    if let Some(page) = refusal(&identity, Role::Admin) {
        return page;
    }
    let list = match users::list(State(state), Admin(identity.clone())).await {
        Ok(Json(body)) => body.users,
        Err(err) => return problem(&identity, err),
    };
    html(&UsersPage {
        chrome: Chrome::new(&identity, "users", "Users"),
        rows: list
            .into_iter()
            .map(|u| UserRow {
                me: u.id == identity.user.id,
                id: u.id,
                email: u.email,
                name: u.name,
                role: u.role,
                created_at: u.created_at,
            })
            .collect(),
        roles: ["VIEWER", "OPERATOR", "ADMIN"],
    })
}

pub struct AuditRow {
    pub at: String,
    pub user: String,
    pub action: String,
    pub resource: String,
    pub ip: String,
    pub metadata: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPageView {
    chrome: Chrome,
    rows: Vec<AuditRow>,
    user: String,
    action: String,
    resource_type: String,
    resource_id: String,
    page: i64,
    pages: i64,
    total: i64,
    prev: Option<String>,
    next: Option<String>,
    csv: String,
}

const AUDIT_PAGE: i64 = 50;

pub async fn audit(
    State(state): State<AppState>,
    PageUser(identity): PageUser,
    Query(query): Query<AuditQuery>,
) -> Response {
    if let Some(page) = refusal(&identity, Role::Admin) {
        return page;
    }
    let clean = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    let filter = AuditFilter {
        user: clean(&query.user),
        action: clean(&query.action),
        resource_type: clean(&query.resource_type),
        resource_id: clean(&query.resource_id),
    };
    let page = query
        .page
        .as_deref()
        .and_then(|p| p.trim().parse::<i64>().ok())
        .filter(|p| *p >= 1)
        .unwrap_or(1);
    let result = match state.store.conn().await {
        Ok(mut conn) => {
            hyprbox_store::audit::page(
                &mut conn,
                &filter,
                AUDIT_PAGE,
                (page - 1).saturating_mul(AUDIT_PAGE),
            )
            .await
        }
        Err(err) => Err(err),
    };
    let (events, total) = match result {
        Ok(found) => found,
        Err(err) => return problem(&identity, err.into()),
    };
    let mut params = Vec::new();
    for (key, value) in [
        ("user", &filter.user),
        ("action", &filter.action),
        ("resourceType", &filter.resource_type),
        ("resourceId", &filter.resource_id),
    ] {
        if let Some(value) = value {
            params.push(format!("{key}={}", encode(value)));
        }
    }
    let base = params.join("&");
    let link = |p: i64| format!("/dashboard/audit?{base}&page={p}");
    let pages = (total + AUDIT_PAGE - 1) / AUDIT_PAGE;
    html(&AuditPageView {
        chrome: Chrome::new(&identity, "audit", "Audit"),
        rows: events
            .into_iter()
            .map(|e| AuditRow {
                at: rfc3339(e.at),
                user: e.user_email.or(e.user_id).unwrap_or_else(|| "–".into()),
                action: e.action,
                resource: match (e.resource_type, e.resource_id) {
                    (Some(t), Some(id)) => format!("{t} {id}"),
                    (Some(t), None) => t,
                    _ => String::new(),
                },
                ip: e.ip.unwrap_or_default(),
                metadata: if e.metadata == "{}" {
                    String::new()
                } else {
                    e.metadata
                },
            })
            .collect(),
        user: filter.user.clone().unwrap_or_default(),
        action: filter.action.clone().unwrap_or_default(),
        resource_type: filter.resource_type.clone().unwrap_or_default(),
        resource_id: filter.resource_id.clone().unwrap_or_default(),
        page,
        pages,
        total,
        prev: (page > 1).then(|| link(page - 1)),
        next: (page < pages).then(|| link(page + 1)),
        csv: format!("/api/audit?{base}&format=csv"),
    })
}

#[derive(Template)]
#[template(path = "logs.html")]
struct LogsPage {
    chrome: Chrome,
}

/// The live activity feed: every `activity` and `job` event of the fleet stream, newest first.
pub async fn logs(PageUser(identity): PageUser) -> Response {
    html(&LogsPage {
        chrome: Chrome::new(&identity, "logs", "Activity log"),
    })
}

#[derive(Template)]
#[template(path = "hyperion.html")]
struct HyperionPage {
    chrome: Chrome,
}

/// The AI worker fleet, system health and user-experience panels, refreshed from the Hyperion
/// endpoints by `app.js`.
pub async fn hyperion(PageUser(identity): PageUser) -> Response {
    html(&HyperionPage {
        chrome: Chrome::new(&identity, "hyperion", "AI fleet & health"),
    })
}
