//! `GET /api/agent/ws`: the reverse channel to an agent. The server pushes `{"type":"wakeup"}` when
//! a job is queued for the node and `{"type":"cancel","jobId":…}` when its RUNNING job is
//! cancelled; it pings every 25 s and closes the socket when the token is revoked or the server
//! stops. Anything the agent sends besides pongs and a close is ignored.

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::agents::AgentMessage;
use crate::auth::NodeAuth;
use crate::auth::node_tokens::NodeIdentity;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::Query;
use crate::routes::stream::PING_EVERY;
use crate::state::AppState;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct WsQuery {
    /// Only a consistency check: it must name the token's node.
    pub node_id: Option<String>,
}

#[utoipa::path(get, path = "/api/agent/ws", tag = "jobs", params(WsQuery),
    security(("nodeToken" = [])),
    responses(
        (status = 101, description = "Upgraded: wakeup and cancel messages follow"),
        (status = 400, description = "Not a WebSocket upgrade request", body = ErrorBody),
        (status = 401, description = "No valid node token (from the Authorization header)", body = ErrorBody),
        (status = 403, description = "A fleet-wide token, or nodeId names another node", body = ErrorBody)))]
pub async fn ws(
    State(state): State<AppState>,
    NodeAuth(node): NodeAuth,
    Query(query): Query<WsQuery>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let Some(node_id) = node.pinned.clone() else {
        return Err(ApiError::Forbidden(
            "the agent WebSocket needs a token pinned to its node".into(),
        ));
    };
    if query.node_id.as_deref().is_some_and(|asked| asked != node_id) {
        return Err(ApiError::Forbidden("this token is pinned to another node".into()));
    }
    let upgrade = upgrade.map_err(|_| ApiError::bad_request("this endpoint needs a WebSocket upgrade"))?;
    Ok(upgrade
        .on_upgrade(move |socket| serve(state, node, node_id, socket))
        .into_response())
}

fn json(value: &serde_json::Value) -> Message {
    Message::Text(value.to_string().into())
}

async fn serve(state: AppState, node: NodeIdentity, node_id: String, mut socket: WebSocket) {
    let mut link = state.agents.connect(&node_id, &node.token_id);
    tracing::debug!(node_id, "agent connected");
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
    let close = loop {
        tokio::select! {
            () = state.shutdown.cancelled() => break Some((close_code::AWAY, "the server is shutting down")),
            () = link.closed.cancelled() => break Some((close_code::POLICY, "the node token was revoked")),
            message = link.receiver.recv() => {
                let frame = match message {
                    Some(AgentMessage::Wakeup) => json(&serde_json::json!({ "type": "wakeup" })),
                    Some(AgentMessage::Cancel { job_id }) => {
                        json(&serde_json::json!({ "type": "cancel", "jobId": job_id }))
                    }
                    None => break None,
                };
                if socket.send(frame).await.is_err() {
                    break None;
                }
            }
            _ = ping.tick() => {
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    break None;
                }
            }
            incoming = socket.recv() => match incoming {
                None | Some(Err(_) | Ok(Message::Close(_))) => break None,
                Some(Ok(_)) => {}
            },
        }
    };
    if let Some((code, reason)) = close {
        let _ = socket
            .send(Message::Close(Some(CloseFrame {
                code,
                reason: reason.into(),
            })))
            .await;
    }
    tracing::debug!(node_id, "agent disconnected");
}
