//! The web dashboard, served by the server itself: HTML rendered here from askama templates
//! (compiled in, escaping on), one stylesheet and one script embedded in the binary, no build step.
//!
//! Pages read through the same handler functions as the JSON API, so what a page shows is exactly
//! what the API would answer the same user (roles, ownership, validation). Every change a page
//! offers is a `fetch` of the API from `app.js`; nothing here writes. Live parts follow the
//! existing SSE streams. A page asked for without a session sends the browser to `/login`.

mod account;
mod fleet;
mod manage;
mod work;

use askama::Template;
use axum::Router;
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use hyprbox_store::users::Role;

use crate::auth::{Identity, MaybeUser};
use crate::fleet::query::encode;
use crate::http::error::ApiError;
use crate::state::AppState;

/// The version in asset links, so a new release's browsers fetch its assets at once.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Every page and asset of the dashboard.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/login", get(account::login))
        .route("/register", get(account::register))
        .route("/forgot-password", get(account::forgot))
        .route("/reset-password", get(account::reset))
        .route("/dashboard", get(fleet::fleet))
        .route("/dashboard/nodes/{node_id}", get(fleet::node))
        .route("/dashboard/account", get(account::profile))
        .route("/dashboard/jobs", get(work::jobs))
        .route("/dashboard/jobs/new", get(work::new_job))
        .route("/dashboard/jobs/{id}", get(work::job))
        .route("/dashboard/findings", get(work::findings))
        .route("/dashboard/backups", get(work::backups))
        .route("/dashboard/backups/new", get(work::new_backup))
        .route("/dashboard/backups/{id}", get(work::backup))
        .route("/dashboard/cron", get(work::cron_preview))
        .route("/dashboard/tokens", get(manage::tokens))
        .route("/dashboard/users", get(manage::users))
        .route("/dashboard/audit", get(manage::audit))
        .route("/dashboard/logs", get(manage::logs))
        .route("/dashboard/hyperion", get(manage::hyperion))
        .route("/dashboard/assets/{name}", get(asset))
}

/// The frame around every signed-in page: who is signed in, what they may do, where they are.
pub struct Chrome {
    pub title: String,
    pub section: &'static str,
    pub user_name: String,
    pub user_email: String,
    pub role: &'static str,
    pub operator: bool,
    pub admin: bool,
    pub version: &'static str,
}

impl Chrome {
    fn new(identity: &Identity, section: &'static str, title: impl Into<String>) -> Chrome {
        let role = identity.user.role;
        Chrome {
            title: title.into(),
            section,
            user_name: identity.user.name.clone(),
            user_email: identity.user.email.clone(),
            role: role.as_str(),
            operator: role.at_least(Role::Operator),
            admin: role.at_least(Role::Admin),
            version: VERSION,
        }
    }

    /// The class of a navigation link: marked when it is the current section.
    pub fn nav(&self, section: &str) -> &'static str {
        if self.section == section { "current" } else { "" }
    }
}

/// The signed-in user of a page. Without a valid session the browser goes to the sign-in page,
/// which brings it back here afterwards.
pub struct PageUser(pub Identity);

impl FromRequestParts<AppState> for PageUser {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let MaybeUser(identity) = MaybeUser::from_request_parts(parts, state)
            .await
            .unwrap_or(MaybeUser(None));
        match identity {
            Some(identity) => Ok(PageUser(identity)),
            None => {
                let next = parts.uri.path_and_query().map_or("/dashboard", |pq| pq.as_str());
                Err(Redirect::to(&format!("/login?next={}", encode(next))).into_response())
            }
        }
    }
}

/// A rendered page: HTML, never cached (it shows live, per-user data).
pub fn html(template: &impl Template) -> Response {
    match template.render() {
        Ok(body) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                ),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
            body,
        )
            .into_response(),
        Err(err) => ApiError::Internal(anyhow::anyhow!("a page did not render: {err}")).into_response(),
    }
}

#[derive(Template)]
#[template(path = "problem.html")]
pub struct ProblemPage {
    pub chrome: Chrome,
    pub status: u16,
    pub message: String,
}

/// An API refusal shown as a page (404 for what the user may not see, 403 for a role too low),
/// with the same status code the API would answer.
pub fn problem(identity: &Identity, err: ApiError) -> Response {
    let status = err.status();
    let page = ProblemPage {
        chrome: Chrome::new(identity, "", status.canonical_reason().unwrap_or("Error")),
        status: status.as_u16(),
        message: safe_message(&err),
    };
    let mut response = html(&page);
    *response.status_mut() = status;
    response
}

/// An error's text for a page, as the API would answer it (an internal error's cause is logged,
/// never shown).
pub fn safe_message(err: &ApiError) -> String {
    if let ApiError::Internal(cause) = err {
        tracing::error!(error = %format!("{cause:#}"), "internal error on a page");
    }
    err.message()
}

/// The 403 page for a page only for roles at or above `role`, when the user's is lower.
pub fn refusal(identity: &Identity, role: Role) -> Option<Response> {
    (!identity.user.role.at_least(role)).then(|| {
        problem(
            identity,
            ApiError::Forbidden(format!("this page needs the {} role", role.as_str())),
        )
    })
}

/// The embedded assets, by name: (content type, bytes).
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/app.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/app.js"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_bytes!("../../assets/favicon.svg"),
    ),
];

/// Assets are public (the sign-in page needs them) and cached for an hour; pages link them with
/// the version in the query, so an upgrade is picked up at once.
async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, bytes)) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
                (
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=3600"),
                ),
            ],
            *bytes,
        )
            .into_response(),
        None => ApiError::NotFound("no such asset".into()).into_response(),
    }
}

/// Formatting shared by the templates' view models.
pub mod view {
    /// A percentage for a table cell: `42 %`, or an en dash when unknown.
    pub fn percent(value: Option<f64>) -> String {
        value.map_or_else(|| "–".to_string(), |v| format!("{v:.0}"))
    }

    /// A `<meter>` value (0 when unknown).
    pub fn meter(value: Option<f64>) -> String {
        format!("{:.1}", value.unwrap_or(0.0))
    }

    /// The points of an SVG polyline drawing `values` (0–100) in a `width` × `height` box.
    pub fn sparkline(values: &[f64], width: f64, height: f64) -> String {
        if values.is_empty() {
            return String::new();
        }
        let step = if values.len() > 1 {
            width / (values.len() - 1) as f64
        } else {
            0.0
        };
        values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let y = height - (v.clamp(0.0, 100.0) / 100.0) * height;
                format!("{:.1},{:.1}", i as f64 * step, y)
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Bytes for people: `1.5 GiB`.
    pub fn bytes(value: Option<i64>) -> String {
        let Some(value) = value else {
            return "–".into();
        };
        let mut v = value as f64;
        for unit in ["B", "KiB", "MiB", "GiB", "TiB"] {
            if v < 1024.0 || unit == "TiB" {
                return if unit == "B" {
                    format!("{value} B")
                } else {
                    format!("{v:.1} {unit}")
                };
            }
            v /= 1024.0;
        }
        format!("{value} B")
    }

    /// An optional text for a cell.
    pub fn text(value: Option<&str>) -> String {
        value.filter(|v| !v.is_empty()).unwrap_or("–").to_string()
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn a_sparkline_spans_the_box_with_high_values_at_the_top() {
            assert_eq!(sparkline(&[0.0, 100.0], 10.0, 5.0), "0.0,5.0 10.0,0.0");
            assert_eq!(sparkline(&[], 10.0, 5.0), "");
        }

        #[test]
        fn sizes_read_in_binary_units() {
            assert_eq!(bytes(Some(512)), "512 B");
            assert_eq!(bytes(Some(1536)), "1.5 KiB");
            assert_eq!(bytes(None), "–");
        }
    }
}
