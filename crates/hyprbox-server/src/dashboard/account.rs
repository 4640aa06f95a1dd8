//! Sign-in, registration, password reset and the profile page. The forms post to `/api/auth/*`
//! from `app.js`; these handlers only render them.

use askama::Template;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::{Chrome, PageUser, VERSION, html};
use crate::auth::MaybeUser;
use crate::http::extract::Query;
use crate::state::AppState;

#[derive(Deserialize, Default)]
pub struct NextQuery {
    next: Option<String>,
    token: Option<String>,
}

/// Where to go after signing in: a path on this server, never another site. Browsers drop tabs
/// and line breaks from URLs (`/\t/evil` becomes `//evil`), so any control character, space,
/// backslash or brace (the page script fills `{…}` from the sign-in answer) sends to the fleet.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n
                    .chars()
                    .any(|c| c.is_control() || c.is_whitespace() || matches!(c, '\\' | '{' | '}')) =>
        {
            n.to_string()
        }
        _ => "/dashboard".to_string(),
    }
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    version: &'static str,
    next: String,
    registration: bool,
}

#[derive(Template)]
#[template(path = "register.html")]
struct RegisterPage {
    version: &'static str,
    next: String,
}

#[derive(Template)]
#[template(path = "forgot.html")]
struct ForgotPage {
    version: &'static str,
}

#[derive(Template)]
#[template(path = "reset.html")]
struct ResetPage {
    version: &'static str,
    token: String,
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    chrome: Chrome,
    language: String,
}

/// Self-registration is offered where it may succeed: outside production, or when opened.
fn registration_offered(state: &AppState) -> bool {
    !state.settings.is_production() || state.settings.allow_public_registration
}

pub async fn login(
    State(state): State<AppState>,
    MaybeUser(user): MaybeUser,
    Query(query): Query<NextQuery>,
) -> Response {
    let next = safe_next(query.next.as_deref());
    if user.is_some() {
        return Redirect::to(&next).into_response();
    }
    html(&LoginPage {
        version: VERSION,
        next,
        registration: registration_offered(&state),
    })
}

pub async fn register(MaybeUser(user): MaybeUser, Query(query): Query<NextQuery>) -> Response {
    let next = safe_next(query.next.as_deref());
    if user.is_some() {
        return Redirect::to(&next).into_response();
    }
    html(&RegisterPage {
        version: VERSION,
        next,
    })
}

pub async fn forgot() -> Response {
    html(&ForgotPage { version: VERSION })
}

/// The page the e-mailed link lands on (`/reset-password#token=…`: the script moves the token from
/// the fragment into the form; `?token=` is still read for links mailed by older versions).
pub async fn reset(Query(query): Query<NextQuery>) -> Response {
    html(&ResetPage {
        version: VERSION,
        token: query.token.unwrap_or_default(),
    })
}

pub async fn profile(PageUser(identity): PageUser) -> Response {
    html(&AccountPage {
        language: identity.user.language.clone(),
        chrome: Chrome::new(&identity, "account", "Account"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_path_on_this_server_is_a_place_to_return_to() {
        assert_eq!(safe_next(Some("/dashboard/jobs?x=1")), "/dashboard/jobs?x=1");
        for evil in [
            "https://evil.example/",
            "//evil.example/",
            "/\\evil.example",
            "javascript:alert(1)",
            "/\t/evil.example",
            "/\n/evil.example",
            "/ /evil.example",
            "/dashboard/{token}",
        ] {
            assert_eq!(safe_next(Some(evil)), "/dashboard", "{evil}");
        }
        assert_eq!(safe_next(None), "/dashboard");
    }
}
