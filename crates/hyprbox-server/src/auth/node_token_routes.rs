//! `/api/tokens` (OPERATOR): node tokens for agents — created (shown once), listed, revoked.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use hyprbox_store::audit::{self, NewAuditEvent};
use hyprbox_store::tokens::{self, NodeToken};
use hyprbox_store::users::Role;
use hyprbox_store::{new_id, now_ms};

use crate::auth::node_tokens::{generate, stored_hash};
use crate::auth::{Identity, Operator};
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::{ClientIp, Json};
use crate::http::time::rfc3339;
use crate::state::AppState;
use hyprbox_proto::tokens::{CreateTokenRequest, CreatedToken, TokenBody, TokenMeta, TokensBody};

/// A token as listed, from its row: never its secret.
fn token_body(t: &NodeToken) -> TokenBody {
    TokenBody {
        id: t.id.clone(),
        prefix: t.prefix.clone(),
        name: t.name.clone(),
        node_id: t.node_id.clone(),
        created_at: rfc3339(t.created_at),
        last_used_at: t.last_used_at.map(rfc3339),
        revoked_at: t.revoked_at.map(rfc3339),
    }
}

/// Whose tokens a caller may see: their own, or every token for an ADMIN.
fn owner(identity: &Identity) -> Option<&str> {
    (identity.user.role != Role::Admin).then_some(identity.user.id.as_str())
}

fn event(actor: &Identity, action: &str, token: &NodeToken, ip: ClientIp) -> NewAuditEvent {
    let metadata = serde_json::json!({"name": token.name, "prefix": token.prefix, "nodeId": token.node_id});
    super::audit::audit_event(
        Some(&actor.user),
        action,
        Some(("node_token", &token.id)),
        ip,
        Some(metadata),
    )
}

#[utoipa::path(post, path = "/api/tokens", tag = "tokens", request_body = CreateTokenRequest,
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 201, description = "Created; the plaintext token is in this answer only", body = CreatedToken),
        (status = 400, description = "Invalid name or nodeId", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Below OPERATOR, or a fleet-wide token (no nodeId) asked for by a non-ADMIN", body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    Operator(actor): Operator,
    ip: ClientIp,
    Json(body): Json<CreateTokenRequest>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "name must be 1 to 100 characters without control characters",
        ));
    }
    match &body.node_id {
        Some(node_id) => hyprbox_proto::validate_node_id("nodeId", node_id).map_err(ApiError::BadRequest)?,
        // A fleet-wide token acts for every node, including claiming anyone's queued jobs there.
        None if actor.user.role != Role::Admin => {
            return Err(ApiError::Forbidden(
                "only an ADMIN may mint a fleet-wide token: give a nodeId to pin it to one node".into(),
            ));
        }
        None => {}
    }
    // A prefix collision (1 in 62^8 per pair) is drawn again rather than reported.
    for _ in 0..3 {
        let (plaintext, prefix) = generate();
        let token = NodeToken {
            id: new_id(),
            prefix,
            token_hash: stored_hash(&plaintext),
            name: name.to_string(),
            node_id: body.node_id.clone(),
            created_by: actor.user.id.clone(),
            created_at: now_ms(),
            last_used_at: None,
            revoked_at: None,
        };
        let mut tx = state.store.begin().await?;
        match tokens::insert(&mut tx, &token).await {
            Ok(()) => {}
            Err(err) if err.is_conflict() => continue,
            Err(err) => return Err(err.into()),
        }
        audit::record(&mut tx, &event(&actor, "token.create", &token, ip)).await?;
        tx.commit().await?;
        state.node_tokens.put(&token);
        let meta = TokenMeta {
            id: token.id,
            prefix: token.prefix,
            name: token.name,
            node_id: token.node_id,
            created_at: rfc3339(token.created_at),
        };
        return Ok((
            StatusCode::CREATED,
            Json(CreatedToken {
                token: plaintext,
                meta,
            }),
        ));
    }
    Err(ApiError::Internal(anyhow::anyhow!(
        "could not draw a unique token prefix"
    )))
}

#[utoipa::path(get, path = "/api/tokens", tag = "tokens", security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "Your tokens (every token for an ADMIN), never the secret", body = TokensBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Below OPERATOR", body = ErrorBody)))]
pub async fn list(State(state): State<AppState>, Operator(actor): Operator) -> ApiResult<Json<TokensBody>> {
    // `lastUsedAt` travels through the heartbeat writer: let what is queued land first. A stalled
    // writer only makes the answer a little stale, so the list is answered anyway.
    state.writer.settled(std::time::Duration::from_secs(2)).await;
    let mut conn = state.store.conn().await?;
    let tokens = tokens::list(&mut conn, owner(&actor)).await?;
    Ok(Json(TokensBody {
        tokens: tokens.iter().map(token_body).collect(),
    }))
}

#[utoipa::path(delete, path = "/api/tokens/{id}", tag = "tokens",
    params(("id" = String, Path, description = "Token id")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 204, description = "Revoked; its next call is refused"),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Below OPERATOR", body = ErrorBody),
        (status = 404, description = "No such token, or another user's", body = ErrorBody)))]
pub async fn revoke(
    State(state): State<AppState>,
    Operator(actor): Operator,
    ip: ClientIp,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    if !super::users::plausible_id(&id) {
        return Err(ApiError::not_found("token"));
    }
    let mut tx = state.store.begin().await?;
    if tokens::by_id(&mut tx, &id, owner(&actor)).await?.is_none() {
        return Err(ApiError::not_found("token"));
    }
    let token = tokens::revoke(&mut tx, &id, now_ms())
        .await?
        .ok_or_else(|| ApiError::not_found("token"))?;
    audit::record(&mut tx, &event(&actor, "token.revoke", &token, ip)).await?;
    tx.commit().await?;
    state.node_tokens.revoke(&token);
    state.agents.close_token(&token.id);
    Ok(StatusCode::NO_CONTENT)
}
