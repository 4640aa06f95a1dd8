//! `/api/users` (ADMIN only): list, provision, change roles, delete — never leaving zero admins.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use hyprbox_store::audit::{self, NewAuditEvent};
use hyprbox_store::users::{self, AdminGuarded, NewUser, Role, User};

pub use hyprbox_proto::auth::UserBody;
use hyprbox_proto::auth::{CreateUserRequest, OneUserBody, RoleRequest, UsersBody};

use super::account::{normalize_email, validate_name};
use crate::auth::{Admin, Identity, password};
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::{ClientIp, Json};
use crate::http::time::rfc3339;
use crate::state::AppState;

/// The user object of the contract, from its row; `name` and `full_name` carry the same value.
pub fn user_body(user: &User) -> UserBody {
    UserBody {
        id: user.id.clone(),
        email: user.email.clone(),
        name: user.name.clone(),
        full_name: user.name.clone(),
        language: user.language.clone(),
        role: user.role.as_str().to_string(),
        created_at: rfc3339(user.created_at),
    }
}

/// Ids are UUIDs; anything else (control characters included, which Postgres refuses in text)
/// names nothing and is not worth a query.
pub fn plausible_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn parse_role(role: &str) -> Result<Role, ApiError> {
    Role::parse(role.trim())
        .ok_or_else(|| ApiError::bad_request("role must be one of ADMIN, OPERATOR, VIEWER"))
}

fn event(
    actor: &Identity,
    action: &str,
    target: &User,
    ip: ClientIp,
    metadata: serde_json::Value,
) -> NewAuditEvent {
    super::audit::audit_event(
        Some(&actor.user),
        action,
        Some(("user", &target.id)),
        ip,
        Some(metadata),
    )
}

#[utoipa::path(get, path = "/api/users", tag = "users", security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "Every user", body = UsersBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Not an ADMIN", body = ErrorBody)))]
pub async fn list(State(state): State<AppState>, _: Admin) -> ApiResult<Json<UsersBody>> {
    let mut conn = state.store.conn().await?;
    let users = users::list(&mut conn).await?;
    Ok(Json(UsersBody {
        users: users.iter().map(user_body).collect(),
    }))
}

#[utoipa::path(post, path = "/api/users", tag = "users", request_body = CreateUserRequest,
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 201, description = "User created", body = OneUserBody),
        (status = 400, description = "Invalid field", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Not an ADMIN", body = ErrorBody),
        (status = 409, description = "Email already registered", body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    Admin(actor): Admin,
    ip: ClientIp,
    Json(body): Json<CreateUserRequest>,
) -> ApiResult<(StatusCode, Json<OneUserBody>)> {
    let email = normalize_email(&body.email)?;
    let role = parse_role(&body.role)?;
    password::validate("password", &body.password)?;
    let name = validate_name("name", body.name.as_deref().unwrap_or(""))?;
    let name = if name.is_empty() {
        email.split('@').next().unwrap_or("").to_string()
    } else {
        name
    };
    let hash = state.passwords.hash(body.password).await?;
    let mut tx = state.store.begin().await?;
    let new = NewUser {
        email: &email,
        name: &name,
        role,
        password_hash: &hash,
    };
    let user = match users::insert(&mut tx, &new).await {
        Ok(user) => user,
        Err(err) if err.is_conflict() => {
            return Err(ApiError::Conflict(
                "an account with this email already exists".into(),
            ));
        }
        Err(err) => return Err(err.into()),
    };
    let metadata = serde_json::json!({ "email": user.email, "role": role.as_str() });
    audit::record(&mut tx, &event(&actor, "user.create", &user, ip, metadata)).await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(OneUserBody {
            user: user_body(&user),
        }),
    ))
}

/// `hyprbox users create-admin`: an ADMIN made on the server's own machine, straight in the
/// database (the way production gets its first ADMIN; public registration never makes one there).
/// Validated like every other account, audited `user.create_admin`.
pub async fn create_admin(
    store: &hyprbox_store::Store,
    email: &str,
    name: Option<&str>,
    password_text: &str,
) -> Result<User, ApiError> {
    let email = normalize_email(email)?;
    password::validate("password", password_text)?;
    let name = validate_name("name", name.unwrap_or(""))?;
    let name = if name.is_empty() {
        email.split('@').next().unwrap_or("").to_string()
    } else {
        name
    };
    let hash = password::hash_now(password_text)?;
    let mut tx = store.begin().await?;
    let user = match users::create_admin(&mut tx, &email, &name, &hash).await {
        Ok(user) => user,
        Err(err) if err.is_conflict() => {
            return Err(ApiError::Conflict(
                "an account with this email already exists".into(),
            ));
        }
        Err(err) => return Err(err.into()),
    };
    let event = NewAuditEvent {
        user_id: None,
        user_email: None,
        action: "user.create_admin".into(),
        resource_type: Some("user".into()),
        resource_id: Some(user.id.clone()),
        ip: None,
        metadata: Some(
            serde_json::json!({ "email": user.email, "via": "hyprbox users create-admin" }).to_string(),
        ),
    };
    audit::record(&mut tx, &event).await?;
    tx.commit().await?;
    Ok(user)
}

#[utoipa::path(patch, path = "/api/users/{id}/role", tag = "users", request_body = RoleRequest,
    params(("id" = String, Path, description = "User id")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "Role changed; the user's tokens are revoked", body = OneUserBody),
        (status = 400, description = "Unknown role", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Not an ADMIN", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 409, description = "Would demote the last ADMIN", body = ErrorBody)))]
pub async fn set_role(
    State(state): State<AppState>,
    Admin(actor): Admin,
    ip: ClientIp,
    Path(id): Path<String>,
    Json(body): Json<RoleRequest>,
) -> ApiResult<Json<OneUserBody>> {
    let role = parse_role(&body.role)?;
    if !plausible_id(&id) {
        return Err(ApiError::not_found("user"));
    }
    let mut tx = state.store.begin().await?;
    let user = match users::set_role(&mut tx, &id, role).await? {
        AdminGuarded::Done(user) => user,
        AdminGuarded::NotFound => return Err(ApiError::not_found("user")),
        AdminGuarded::LastAdmin => {
            return Err(ApiError::Conflict("the last ADMIN cannot be demoted".into()));
        }
    };
    let metadata = serde_json::json!({ "role": role.as_str() });
    audit::record(&mut tx, &event(&actor, "user.role", &user, ip, metadata)).await?;
    tx.commit().await?;
    state.sessions.put(&user);
    Ok(Json(OneUserBody {
        user: user_body(&user),
    }))
}

#[utoipa::path(delete, path = "/api/users/{id}", tag = "users",
    params(("id" = String, Path, description = "User id")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 204, description = "Deleted; what the user created stays"),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Not an ADMIN", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 409, description = "Deleting yourself or the last ADMIN", body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Admin(actor): Admin,
    ip: ClientIp,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    if id == actor.user.id {
        return Err(ApiError::Conflict("you cannot delete your own account".into()));
    }
    if !plausible_id(&id) {
        return Err(ApiError::not_found("user"));
    }
    let mut tx = state.store.begin().await?;
    let user = match users::delete(&mut tx, &id).await? {
        AdminGuarded::Done(user) => user,
        AdminGuarded::NotFound => return Err(ApiError::not_found("user")),
        AdminGuarded::LastAdmin => return Err(ApiError::Conflict("the last ADMIN cannot be deleted".into())),
    };
    let metadata = serde_json::json!({ "email": user.email });
    audit::record(&mut tx, &event(&actor, "user.delete", &user, ip, metadata)).await?;
    tx.commit().await?;
    state.sessions.remove(&user.id);
    Ok(StatusCode::NO_CONTENT)
}
