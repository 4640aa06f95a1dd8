//! `/api/auth`: registration (also in the Hyperion `signup` form), sign-in and out, the profile,
//! password change and the forgotten-password flow.

use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::SET_COOKIE;
use axum::response::{AppendHeaders, IntoResponse, Response};
use hyprbox_store::audit::{self, NewAuditEvent};
use hyprbox_store::users::{self, Role, User};
use hyprbox_store::{now_ms, resets};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::users::{UserBody, user_body};
use crate::auth::{CurrentUser, MaybeUser, anonymous_audit, clearing_cookies, password, session_cookie};
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::{ClientIp, Json};
use crate::state::AppState;
use hyprbox_proto::auth::{LoginRequest, RegisterRequest, SessionBody};

const RESET_TTL_MS: i64 = 3_600_000;

#[derive(Deserialize, ToSchema)]
pub struct SignupRequest {
    pub email: String,
    pub password: String,
    pub full_name: Option<String>,
}

/// The profile: every user field at the top level and again under `user`.
#[derive(Serialize, ToSchema)]
pub struct MeBody {
    #[serde(flatten)]
    pub top: UserBody,
    pub user: UserBody,
}

#[derive(Deserialize, ToSchema)]
pub struct UpdateMeRequest {
    pub full_name: Option<String>,
    pub name: Option<String>,
    pub language: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct MessageBody {
    pub message: &'static str,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChangePasswordRequest {
    pub current_password: String,
    pub new_password: String,
}

#[derive(Serialize, ToSchema)]
pub struct ChangePasswordBody {
    pub ok: bool,
    pub token: String,
}

#[derive(Deserialize, ToSchema)]
pub struct ForgotPasswordRequest {
    pub email: String,
}

#[derive(Serialize, ToSchema)]
pub struct OkBody {
    pub ok: bool,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResetPasswordRequest {
    pub token: String,
    pub new_password: String,
}

/// Trims and lower-cases an email and applies a basic syntax check.
pub fn normalize_email(email: &str) -> Result<String, ApiError> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        });
    if valid {
        Ok(email)
    } else {
        Err(ApiError::bad_request("email must be a valid email address"))
    }
}

/// A display name: at most 200 characters, no control characters.
pub fn validate_name(field: &str, name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    if name.chars().count() > 200 {
        return Err(ApiError::bad_request(format!(
            "{field} must be at most 200 characters"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(name.to_string())
}

fn validate_language(language: &str) -> Result<(), ApiError> {
    let ok = !language.is_empty()
        && language.len() <= 16
        && language.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "language must be a language tag such as en, hu or en-US (at most 16 letters, digits or -)",
        ))
    }
}

fn event(action: &str, user: Option<&User>, ip: ClientIp) -> NewAuditEvent {
    super::audit::audit_event(user, action, user.map(|u| ("user", u.id.as_str())), ip, None)
}

fn with_session_cookie(state: &AppState, status: StatusCode, token: &str, body: impl Serialize) -> Response {
    let cookie = session_cookie(state, token);
    (status, AppendHeaders([(SET_COOKIE, cookie)]), Json(body)).into_response()
}

/// Shared by `register` and `signup`: validates, hashes, and creates the account (outside
/// production the first one ever as ADMIN), then signs the new user in.
async fn create_account(
    state: &AppState,
    ip: ClientIp,
    email: &str,
    password_text: String,
    name: Option<&str>,
) -> ApiResult<(String, User)> {
    let email = normalize_email(email)?;
    password::validate("password", &password_text)?;
    let name = match name {
        Some(name) => validate_name("name", name)?,
        None => String::new(),
    };
    let name = if name.is_empty() {
        email.split('@').next().unwrap_or("").to_string()
    } else {
        name
    };
    let hash = state.passwords.hash(password_text).await?;
    let otherwise = state.settings.allow_public_registration.then_some(Role::Viewer);

    let mut tx = state.store.begin().await?;
    // In production the first ADMIN never comes from a public request: whoever reached a fresh
    // instance first would own it. It is made on the server's machine with `create-admin`.
    let registered = if state.settings.is_production() {
        if !users::is_bootstrapped(&mut tx).await? {
            return Err(ApiError::Forbidden(
                "this instance has no administrator yet: create one on the server with \
                 `hyprbox users create-admin`"
                    .into(),
            ));
        }
        match otherwise {
            Some(role) => {
                let new = users::NewUser {
                    email: &email,
                    name: &name,
                    role,
                    password_hash: &hash,
                };
                users::insert(&mut tx, &new).await.map(Some)
            }
            None => Ok(None),
        }
    } else {
        users::register(&mut tx, &email, &name, &hash, otherwise).await
    };
    let user = match registered {
        Ok(Some(user)) => user,
        Ok(None) => {
            return Err(ApiError::Forbidden(
                "public registration is closed; ask an administrator for an account".into(),
            ));
        }
        Err(err) if err.is_conflict() => {
            return Err(ApiError::Conflict(
                "an account with this email already exists".into(),
            ));
        }
        Err(err) => return Err(err.into()),
    };
    audit::record(&mut tx, &event("user.register", Some(&user), ip)).await?;
    tx.commit().await?;
    state.sessions.put(&user);
    let (token, _) = state.keys.issue(&user.id, user.token_version);
    Ok((token, user))
}

#[utoipa::path(post, path = "/api/auth/register", tag = "auth", request_body = RegisterRequest,
    responses(
        (status = 201, description = "Account created and signed in; sets the hb_token cookie", body = SessionBody),
        (status = 400, description = "Invalid email, password or name", body = ErrorBody),
        (status = 403, description = "Public registration is closed; in production also until `hyprbox users create-admin` made the first ADMIN", body = ErrorBody),
        (status = 409, description = "Email already registered", body = ErrorBody),
        (status = 429, description = "More than 5 registrations a minute from this IP", body = ErrorBody)))]
pub async fn register(
    State(state): State<AppState>,
    ip: ClientIp,
    Json(body): Json<RegisterRequest>,
) -> ApiResult<Response> {
    let (token, user) = create_account(&state, ip, &body.email, body.password, body.name.as_deref()).await?;
    let body = SessionBody {
        message: None,
        token: token.clone(),
        user: user_body(&user),
    };
    Ok(with_session_cookie(&state, StatusCode::CREATED, &token, body))
}

#[utoipa::path(post, path = "/api/auth/signup", tag = "auth", request_body = SignupRequest,
    responses(
        (status = 201, description = "Account created (Hyperion form of register)", body = SessionBody),
        (status = 400, description = "Invalid email, password or name", body = ErrorBody),
        (status = 403, description = "Public registration is closed; in production also until `hyprbox users create-admin` made the first ADMIN", body = ErrorBody),
        (status = 409, description = "Email already registered", body = ErrorBody),
        (status = 429, description = "Rate-limited (shared with register)", body = ErrorBody)))]
pub async fn signup(
    State(state): State<AppState>,
    ip: ClientIp,
    Json(body): Json<SignupRequest>,
) -> ApiResult<Response> {
    let (token, user) =
        create_account(&state, ip, &body.email, body.password, body.full_name.as_deref()).await?;
    let body = SessionBody {
        message: Some("User created successfully".into()),
        token: token.clone(),
        user: user_body(&user),
    };
    Ok(with_session_cookie(&state, StatusCode::CREATED, &token, body))
}

#[utoipa::path(post, path = "/api/auth/login", tag = "auth", request_body = LoginRequest,
    responses(
        (status = 200, description = "Signed in; sets the hb_token cookie", body = SessionBody),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "Wrong email or password (one answer for both)", body = ErrorBody),
        (status = 429, description = "More than 10 attempts a minute from this IP", body = ErrorBody)))]
pub async fn login(
    State(state): State<AppState>,
    ip: ClientIp,
    Json(body): Json<LoginRequest>,
) -> ApiResult<Response> {
    let email = body.email.trim().to_lowercase();
    // An address no account can have (too long, control characters) is looked up nowhere.
    let found = match normalize_email(&email) {
        Ok(email) => {
            let mut conn = state.store.conn().await?;
            users::by_email(&mut conn, &email).await?
        }
        Err(_) => None,
    };
    // An unknown email still pays for one Argon2id verification, so timing does not tell.
    let stored = found.as_ref().map(|u| u.password_hash.clone());
    let matches = state.passwords.verify(body.password, stored).await?;
    let user = match found {
        Some(user) if matches => user,
        other => {
            let mut failed = event("user.login_failed", other.as_ref(), ip);
            failed.user_email = Some(email.chars().filter(|c| !c.is_control()).take(254).collect());
            anonymous_audit::record(&state, failed, ip.bucket()).await?;
            return Err(ApiError::Unauthorized("invalid email or password".into()));
        }
    };
    let mut conn = state.store.write_conn().await?;
    audit::record(&mut conn, &event("user.login", Some(&user), ip)).await?;
    // A sign-in changes nothing about the user: it only fills the cache when empty, so a change
    // committed while the password was being checked is never overwritten.
    state.sessions.fill(user.clone());
    let (token, _) = state.keys.issue(&user.id, user.token_version);
    let body = SessionBody {
        message: Some("Login successful".into()),
        token: token.clone(),
        user: user_body(&user),
    };
    Ok(with_session_cookie(&state, StatusCode::OK, &token, body))
}

fn me_body(user: &User) -> MeBody {
    MeBody {
        top: user_body(user),
        user: user_body(user),
    }
}

#[utoipa::path(get, path = "/api/auth/me", tag = "auth",
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "The signed-in user, top level and under `user`", body = MeBody),
        (status = 401, description = "Missing, invalid, expired or revoked token", body = ErrorBody)))]
pub async fn me(CurrentUser(identity): CurrentUser) -> Json<MeBody> {
    Json(me_body(&identity.user))
}

#[utoipa::path(put, path = "/api/auth/me", tag = "auth", request_body = UpdateMeRequest,
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "Updated profile (PATCH is the same)", body = MeBody),
        (status = 400, description = "Empty or invalid field", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody)))]
pub async fn update_me(
    State(state): State<AppState>,
    CurrentUser(identity): CurrentUser,
    Json(body): Json<UpdateMeRequest>,
) -> ApiResult<Json<MeBody>> {
    let name = match (body.full_name.as_deref(), body.name.as_deref()) {
        (Some(a), Some(b)) if a.trim() != b.trim() => {
            return Err(ApiError::bad_request(
                "full_name and name must be equal when both are sent",
            ));
        }
        (Some(value), _) => Some(("full_name", value)),
        (None, Some(value)) => Some(("name", value)),
        (None, None) => None,
    };
    let name = match name {
        Some((field, value)) => {
            let value = validate_name(field, value)?;
            if value.is_empty() {
                return Err(ApiError::bad_request(format!("{field} must not be empty")));
            }
            Some(value)
        }
        None => None,
    };
    if let Some(language) = body.language.as_deref() {
        validate_language(language)?;
    }
    let mut conn = state.store.write_conn().await?;
    let user = users::update_profile(
        &mut conn,
        &identity.user.id,
        name.as_deref(),
        body.language.as_deref(),
    )
    .await?
    .ok_or_else(ApiError::unauthorized)?;
    state.sessions.put(&user);
    Ok(Json(me_body(&user)))
}

#[utoipa::path(patch, path = "/api/auth/me", tag = "auth", request_body = UpdateMeRequest,
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "Updated profile (same as PUT)", body = MeBody),
        (status = 400, description = "Empty or invalid field", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody)))]
pub async fn patch_me(
    state: State<AppState>,
    user: CurrentUser,
    body: Json<UpdateMeRequest>,
) -> ApiResult<Json<MeBody>> {
    update_me(state, user, body).await
}

#[utoipa::path(post, path = "/api/auth/logout", tag = "auth",
    security((), ("bearer" = []), ("cookie" = [])),
    responses((status = 200, description = "Signed out; the token is revoked and both cookies cleared", body = MessageBody)))]
pub async fn logout(
    State(state): State<AppState>,
    ip: ClientIp,
    MaybeUser(identity): MaybeUser,
) -> ApiResult<Response> {
    if let Some(identity) = identity {
        let mut tx = state.store.begin().await?;
        hyprbox_store::sessions::revoke(
            &mut tx,
            &identity.claims.jti,
            &identity.user.id,
            identity.claims.exp * 1000,
        )
        .await?;
        audit::record(&mut tx, &event("user.logout", Some(&identity.user), ip)).await?;
        tx.commit().await?;
        state.sessions.revoke(&identity.claims.jti, identity.claims.exp);
    }
    let [a, b] = clearing_cookies(&state);
    Ok((
        AppendHeaders([(SET_COOKIE, a), (SET_COOKIE, b)]),
        Json(MessageBody {
            message: "Logout successful",
        }),
    )
        .into_response())
}

#[utoipa::path(post, path = "/api/auth/change-password", tag = "auth", request_body = ChangePasswordRequest,
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "Changed; a fresh token for this session, every other session ends", body = ChangePasswordBody),
        (status = 400, description = "New password invalid or equal to the current one", body = ErrorBody),
        (status = 401, description = "Not signed in, or the current password is wrong", body = ErrorBody),
        (status = 429, description = "More than 10 attempts a minute from this IP", body = ErrorBody)))]
pub async fn change_password(
    State(state): State<AppState>,
    ip: ClientIp,
    CurrentUser(identity): CurrentUser,
    Json(body): Json<ChangePasswordRequest>,
) -> ApiResult<Response> {
    password::validate("newPassword", &body.new_password)?;
    let stored = Some(identity.user.password_hash.clone());
    if !state
        .passwords
        .verify(body.current_password.clone(), stored)
        .await?
    {
        return Err(ApiError::Unauthorized("the current password is wrong".into()));
    }
    if body.new_password == body.current_password {
        return Err(ApiError::bad_request(
            "newPassword must differ from the current password",
        ));
    }
    let hash = state.passwords.hash(body.new_password).await?;
    let mut tx = state.store.begin().await?;
    let user = users::set_password(&mut tx, &identity.user.id, &hash)
        .await?
        .ok_or_else(ApiError::unauthorized)?;
    // A reset link mailed before the change would otherwise still take the account back.
    resets::burn_for_user(&mut tx, &user.id, now_ms()).await?;
    audit::record(&mut tx, &event("user.password_change", Some(&user), ip)).await?;
    tx.commit().await?;
    state.sessions.put(&user);
    let (token, _) = state.keys.issue(&user.id, user.token_version);
    let body = ChangePasswordBody {
        ok: true,
        token: token.clone(),
    };
    Ok(with_session_cookie(&state, StatusCode::OK, &token, body))
}

fn sha256_hex(value: &str) -> String {
    hex::encode(Sha256::digest(value.as_bytes()))
}

#[utoipa::path(post, path = "/api/auth/forgot-password", tag = "auth", request_body = ForgotPasswordRequest,
    responses(
        (status = 200, description = "Always, whether or not the email is known", body = OkBody),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 429, description = "More than 5 requests a minute from this IP", body = ErrorBody)))]
pub async fn forgot_password(
    State(state): State<AppState>,
    ip: ClientIp,
    Json(body): Json<ForgotPasswordRequest>,
) -> ApiResult<Json<OkBody>> {
    let email = body.email.trim().to_lowercase();
    let found = match normalize_email(&email) {
        Ok(email) => {
            let mut conn = state.store.conn().await?;
            users::by_email(&mut conn, &email).await?
        }
        Err(_) => None,
    };
    let Some(user) = found else {
        // Unknown addresses are recorded too: it is worth seeing, and it costs the same write as a
        // known one, so the answer's timing does not tell them apart.
        let mut unknown = event("password.reset_request", None, ip);
        unknown.user_email = Some(email.chars().filter(|c| !c.is_control()).take(254).collect());
        anonymous_audit::record(&state, unknown, ip.bucket()).await?;
        return Ok(Json(OkBody { ok: true }));
    };
    let mut secret = [0u8; 32];
    rand::fill(&mut secret);
    let token = hex::encode(secret);
    let now = now_ms();
    let mut tx = state.store.begin().await?;
    resets::insert(&mut tx, &sha256_hex(&token), &user.id, now, now + RESET_TTL_MS).await?;
    tx.commit().await?;
    // Anyone may ask for a known address's reset too: recorded like the unknown ones.
    anonymous_audit::record(
        &state,
        event("password.reset_request", Some(&user), ip),
        ip.bucket(),
    )
    .await?;
    // The mail goes out after the answer, so the answer's timing does not reveal known emails.
    // In the fragment, which browsers never send: the token stays out of proxy and server logs
    // and out of the Referer of anything the page loads.
    let link = format!("{}/reset-password#token={token}", state.settings.public_url);
    let mail_state = state.clone();
    tokio::spawn(async move { mail_state.mailer.send_password_reset(&user.email, &link).await });
    Ok(Json(OkBody { ok: true }))
}

#[utoipa::path(post, path = "/api/auth/reset-password", tag = "auth", request_body = ResetPasswordRequest,
    responses(
        (status = 200, description = "Password set; every session of the user ends", body = OkBody),
        (status = 400, description = "Invalid, expired or used token (one answer for all), or invalid password", body = ErrorBody),
        (status = 429, description = "More than 10 attempts a minute from this IP", body = ErrorBody)))]
pub async fn reset_password(
    State(state): State<AppState>,
    ip: ClientIp,
    Json(body): Json<ResetPasswordRequest>,
) -> ApiResult<Json<OkBody>> {
    password::validate("newPassword", &body.new_password)?;
    let hash = state.passwords.hash(body.new_password).await?;
    let now = now_ms();
    let mut tx = state.store.begin().await?;
    let Some(user_id) = resets::consume(&mut tx, &sha256_hex(body.token.trim()), now).await? else {
        return Err(ApiError::bad_request("the reset token is invalid or has expired"));
    };
    resets::burn_for_user(&mut tx, &user_id, now).await?;
    let user = users::set_password(&mut tx, &user_id, &hash)
        .await?
        .ok_or_else(|| ApiError::bad_request("the reset token is invalid or has expired"))?;
    audit::record(&mut tx, &event("password.reset", Some(&user), ip)).await?;
    tx.commit().await?;
    state.sessions.put(&user);
    Ok(Json(OkBody { ok: true }))
}
