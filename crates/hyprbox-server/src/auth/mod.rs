//! Accounts, sessions and credentials. This module says who is calling: credentials are resolved
//! once per request by [`resolve_caller`] (the rate limiter keys signed-in users by id, so it needs
//! the identity before the handler runs), and handlers state what they need with the extractors
//! [`CurrentUser`], [`Operator`], [`Admin`], [`MaybeUser`], [`NodeAuth`] and [`MaybeNode`].
//! Ownership checks stay explicit in handlers.
//!
//! Beside it: the credentials themselves (`jwt`, `node_tokens`, `password`), the in-memory
//! `session_cache`, the `/api/auth`, `/api/users`, `/api/tokens` and `/api/audit` handlers
//! (`account`, `users`, `node_token_routes`, `audit`), outgoing `mail`, and the `expiry` loop.

pub mod account;
pub mod anonymous_audit;
pub mod audit;
pub mod expiry;
pub mod jwt;
pub mod lease;
pub mod mail;
pub mod node_token_routes;
pub mod node_tokens;
pub mod password;
pub mod session_cache;
pub mod users;

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header::{AUTHORIZATION, COOKIE, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use hyprbox_store::users::{Role, User};

use crate::http::error::ApiError;
use crate::state::AppState;
use jwt::Claims;
use session_cache::Cached;

pub const COOKIE_NAME: &str = "hb_token";
/// The Hyperion backend's cookie name, still accepted so its web client keeps working.
pub const LEGACY_COOKIE_NAME: &str = "access_token";
/// Node tokens start with this; they are never accepted where a user is required.
pub const NODE_TOKEN_PREFIX: &str = "hbnt_";

/// A signed-in user, as established for this request.
#[derive(Clone, Debug)]
pub struct Identity {
    pub user: Arc<User>,
    pub claims: Claims,
    /// The token came from a cookie (not the `Authorization` header): it may be renewed.
    pub via_cookie: bool,
}

/// The credential a request carried, resolved.
#[derive(Clone, Debug)]
pub enum Caller {
    Anonymous,
    User(Identity),
    /// A token that failed a check (signature, expiry, user gone, token version, revoked; or a node
    /// token that is unknown, wrong or revoked).
    Rejected,
    /// A verified, unrevoked node token (`hbnt_…`), carried by agents.
    Node(node_tokens::NodeIdentity),
}

enum Credential<'a> {
    None,
    Bearer(&'a str),
    Cookie(&'a str),
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// Whether the request carries any credential (a Bearer token or a session cookie).
pub fn carries_credential(headers: &HeaderMap) -> bool {
    !matches!(credential(headers), Credential::None)
}

/// `Authorization: Bearer …` first, then the `hb_token` cookie, then the legacy `access_token`.
fn credential(headers: &HeaderMap) -> Credential<'_> {
    let bearer = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|v| !v.is_empty());
    if let Some(token) = bearer {
        return Credential::Bearer(token);
    }
    match cookie_value(headers, COOKIE_NAME).or_else(|| cookie_value(headers, LEGACY_COOKIE_NAME)) {
        Some(token) => Credential::Cookie(token),
        None => Credential::None,
    }
}

/// Verifies a user token against the signature, expiry, the user's existence and token version,
/// and the revoked ids. Served from memory after the user's first request.
pub async fn verify_user_token(state: &AppState, token: &str) -> Result<Option<Identity>, ApiError> {
    let Some(claims) = state.keys.verify(token) else {
        return Ok(None);
    };
    let user = match state.sessions.user(&claims.sub) {
        Cached::Present(user) => user,
        Cached::Deleted => return Ok(None),
        Cached::Unknown => {
            let mut conn = state.store.conn().await?;
            match hyprbox_store::users::by_id(&mut conn, &claims.sub).await? {
                Some(user) => match state.sessions.fill(user) {
                    Some(user) => user,
                    None => return Ok(None),
                },
                None => return Ok(None),
            }
        }
    };
    if user.token_version != claims.tv || state.sessions.is_revoked(&claims.jti) {
        return Ok(None);
    }
    Ok(Some(Identity {
        user,
        claims,
        via_cookie: false,
    }))
}

async fn node_caller(state: &AppState, token: &str) -> Result<Caller, ApiError> {
    let Some((identity, entry)) = state.node_tokens.verify(&state.store, token).await? else {
        return Ok(Caller::Rejected);
    };
    let now = hyprbox_store::now_ms();
    if entry.touch_due(now) {
        let used = crate::fleet::writer::Pending::TokenUsed {
            id: identity.token_id.clone(),
            at: now,
        };
        state.writer.queue(used).await;
    }
    Ok(Caller::Node(identity))
}

async fn user_caller(state: &AppState, token: &str, via_cookie: bool) -> Result<Caller, ApiError> {
    Ok(match verify_user_token(state, token).await? {
        Some(identity) => Caller::User(Identity {
            via_cookie,
            ..identity
        }),
        None => Caller::Rejected,
    })
}

/// Resolves the credential a request carries (Bearer first, then the cookies).
pub async fn resolve_caller(state: &AppState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    match credential(headers) {
        Credential::None => Ok(Caller::Anonymous),
        Credential::Bearer(token) if token.starts_with(NODE_TOKEN_PREFIX) => node_caller(state, token).await,
        Credential::Bearer(token) => user_caller(state, token, false).await,
        Credential::Cookie(token) => user_caller(state, token, true).await,
    }
}

/// The session to renew after the request, when a cookie session is past half its life.
pub fn renewal(caller: &Caller) -> Option<(String, i64)> {
    match caller {
        Caller::User(identity) if identity.via_cookie => identity
            .claims
            .past_half_life(chrono::Utc::now().timestamp())
            .then(|| (identity.user.id.clone(), identity.user.token_version)),
        _ => None,
    }
}

/// Adds a fresh session cookie to a successful answer that does not set one itself.
pub fn renew_cookie(state: &AppState, response: &mut Response, (user_id, token_version): (String, i64)) {
    if response.status() == StatusCode::UNAUTHORIZED || response.headers().contains_key(SET_COOKIE) {
        return;
    }
    let (token, _) = state.keys.issue(&user_id, token_version);
    if let Ok(value) = HeaderValue::from_str(&session_cookie(state, &token)) {
        response.headers_mut().append(SET_COOKIE, value);
    }
}

/// The `Set-Cookie` value that carries a session token.
pub fn session_cookie(state: &AppState, token: &str) -> String {
    let secure = if state.settings.cookie_secure {
        "; Secure"
    } else {
        ""
    };
    format!(
        "{COOKIE_NAME}={token}; HttpOnly; SameSite=Lax; Path=/; Max-Age={}{secure}",
        state.keys.ttl().as_secs()
    )
}

/// `Set-Cookie` values that clear both session cookie names.
pub fn clearing_cookies(state: &AppState) -> [String; 2] {
    let secure = if state.settings.cookie_secure {
        "; Secure"
    } else {
        ""
    };
    [COOKIE_NAME, LEGACY_COOKIE_NAME]
        .map(|name| format!("{name}=; HttpOnly; SameSite=Lax; Path=/; Max-Age=0{secure}"))
}

fn caller(parts: &Parts) -> Caller {
    parts
        .extensions
        .get::<Caller>()
        .cloned()
        .unwrap_or(Caller::Anonymous)
}

/// Any signed-in user (read access). Anything else: 401.
pub struct CurrentUser(pub Identity);

impl<S: Send + Sync> FromRequestParts<S> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        match caller(parts) {
            Caller::User(identity) => Ok(CurrentUser(identity)),
            _ => Err(ApiError::unauthorized()),
        }
    }
}

fn require(identity: Identity, role: Role) -> Result<Identity, ApiError> {
    if identity.user.role.at_least(role) {
        Ok(identity)
    } else {
        Err(ApiError::Forbidden(format!(
            "this action needs the {} role",
            role.as_str()
        )))
    }
}

/// OPERATOR or ADMIN: 401 when not signed in, 403 when the role is too low.
pub struct Operator(pub Identity);

impl<S: Send + Sync> FromRequestParts<S> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let CurrentUser(identity) = CurrentUser::from_request_parts(parts, state).await?;
        require(identity, Role::Operator).map(Operator)
    }
}

/// ADMIN only: 401 when not signed in, 403 otherwise.
pub struct Admin(pub Identity);

impl<S: Send + Sync> FromRequestParts<S> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let CurrentUser(identity) = CurrentUser::from_request_parts(parts, state).await?;
        require(identity, Role::Admin).map(Admin)
    }
}

/// The signed-in user when there is one; never rejects (logout works without a valid token).
pub struct MaybeUser(pub Option<Identity>);

impl<S: Send + Sync> FromRequestParts<S> for MaybeUser {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(MaybeUser(match caller(parts) {
            Caller::User(identity) => Some(identity),
            _ => None,
        }))
    }
}

/// A node token (node-auth). A missing, invalid or revoked token, or a user's token: 401.
pub struct NodeAuth(pub node_tokens::NodeIdentity);

impl<S: Send + Sync> FromRequestParts<S> for NodeAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        match caller(parts) {
            Caller::Node(identity) => Ok(NodeAuth(identity)),
            _ => Err(ApiError::Unauthorized("a valid node token is required".into())),
        }
    }
}

/// A node token, or no credential at all (anonymous heartbeats, when allowed). A credential that is
/// not a live node token (invalid, revoked, a user's JWT) is a 401.
pub struct MaybeNode(pub Option<node_tokens::NodeIdentity>);

impl<S: Send + Sync> FromRequestParts<S> for MaybeNode {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        match caller(parts) {
            Caller::Node(identity) => Ok(MaybeNode(Some(identity))),
            Caller::Anonymous => Ok(MaybeNode(None)),
            Caller::User(_) | Caller::Rejected => {
                Err(ApiError::Unauthorized("a valid node token is required".into()))
            }
        }
    }
}
