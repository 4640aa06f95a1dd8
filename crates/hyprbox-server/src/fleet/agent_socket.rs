//! `GET /api/agent/ws`: the reverse channel to an agent. The server pushes `{"type":"wakeup"}` when
//! a job is queued for the node and `{"type":"cancel","jobId":…}` when its RUNNING job is
//! cancelled; it pings every 25 s and closes the socket when the token is revoked or the server
//! stops. Anything the agent sends besides pongs and a close is ignored.

use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::response::{IntoResponse, Response};
use hyprbox_store::jobs;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::NodeAuth;
use crate::auth::node_tokens::NodeIdentity;
use crate::fleet::agent_links::AgentMessage;
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::Query;
use crate::http::sse::PING_EVERY;
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
        (status = 403, description = "A fleet-wide token, or nodeId names another node", body = ErrorBody),
        (status = 429, description = "The node already holds the most links allowed (4)", body = ErrorBody)))]
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
    if query
        .node_id
        .as_deref()
        .filter(|asked| !asked.is_empty())
        .is_some_and(|asked| asked != node_id)
    {
        return Err(ApiError::Forbidden("this token is pinned to another node".into()));
    }
    let upgrade = upgrade.map_err(|_| ApiError::bad_request("this endpoint needs a WebSocket upgrade"))?;
    // One agent needs one link; a restart may overlap its old one for a ping or two. More is a
    // leaked token opening links to hold the server's memory.
    if state.agents.link_count(&node_id) >= MAX_LINKS_PER_NODE {
        return Err(ApiError::TooManyRequests {
            retry_after_secs: SILENCE_LIMIT.as_secs(),
        });
    }
    Ok(upgrade
        // Agents send nothing but pongs and a close: small buffers keep an idle link cheap (the
        // 128 KiB defaults made 10,000 idle links cost over a GiB), and a 64 KiB cap keeps one
        // message from costing more.
        .read_buffer_size(LINK_READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_AGENT_MESSAGE)
        .max_message_size(MAX_AGENT_MESSAGE)
        .max_frame_size(MAX_AGENT_MESSAGE)
        .on_upgrade(move |socket| serve(state, node, node_id, socket))
        .into_response())
}

/// An agent that sends nothing (not even the pong to our ping) for this long is gone: its socket
/// is closed, so it no longer counts as connected and a cancel answers 409.
/// The largest message (and frame) an agent may send over its link.
pub const MAX_AGENT_MESSAGE: usize = 64 * 1024;
/// Links one node may hold open at once.
pub const MAX_LINKS_PER_NODE: usize = 4;
/// Read buffer of one link: enough for a pong or a close frame in one read.
const LINK_READ_BUFFER: usize = 4 * 1024;
const SILENCE_LIMIT: Duration = Duration::from_secs(2 * 25 + 10);
/// A frame the agent does not take within this long means a stuck connection.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

async fn send(socket: &mut WebSocket, frame: Message) -> bool {
    matches!(
        tokio::time::timeout(SEND_TIMEOUT, socket.send(frame)).await,
        Ok(Ok(()))
    )
}

async fn serve(state: AppState, node: NodeIdentity, node_id: String, mut socket: WebSocket) {
    let mut link = state.agents.connect(&node_id, &node.token_id);
    // A revocation between the check before the upgrade and the registration above found no link
    // to close: look again now that there is one.
    if state.node_tokens.is_revoked(&node.prefix) {
        link.closed.cancel();
    }
    tracing::debug!(node_id, "agent connected");
    // Cancels asked for while this agent was away are delivered now.
    if let Ok(mut conn) = state.store.conn().await {
        let filter = jobs::JobFilter {
            node_id: Some(&node_id),
            status: Some(jobs::RUNNING),
            owner: None,
        };
        for job in jobs::list(&mut conn, &filter, 200).await.unwrap_or_default() {
            if job.cancel_requested_at.is_some() {
                state
                    .agents
                    .send(&node_id, &AgentMessage::Cancel { job_id: job.id });
            }
        }
    }
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
    let mut last_heard = tokio::time::Instant::now();
    let close = loop {
        tokio::select! {
            () = state.shutdown.cancelled() => break Some((close_code::AWAY, "the server is shutting down")),
            () = link.closed.cancelled() => break Some((close_code::POLICY, "the node token was revoked")),
            () = link.stuck.cancelled() => break Some((close_code::AWAY, "the connection fell behind: reconnect")),
            message = link.receiver.recv() => {
                let frame = match message {
                    Some(message) => Message::Text(message.to_json().into()),
                    None => break None,
                };
                if !send(&mut socket, frame).await {
                    break None;
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > SILENCE_LIMIT {
                    break Some((close_code::AWAY, "no answer to pings"));
                }
                if !send(&mut socket, Message::Ping(Default::default())).await {
                    break None;
                }
            }
            incoming = socket.recv() => match incoming {
                // The agent is leaving: answer its close so it need not wait for a timeout.
                Some(Ok(Message::Close(_))) => break Some((close_code::NORMAL, "bye")),
                None | Some(Err(_)) => break None,
                Some(Ok(_)) => last_heard = tokio::time::Instant::now(),
            },
        }
    };
    // Gone from the registry before the close handshake: a cancel from now on answers 409.
    drop(link);
    if let Some((code, reason)) = close {
        send(
            &mut socket,
            Message::Close(Some(CloseFrame {
                code,
                reason: reason.into(),
            })),
        )
        .await;
    }
    tracing::debug!(node_id, "agent disconnected");
}
