//! The WebSocket to the server: `wakeup` and `cancel` pushed to the job loop. Kept open with
//! reconnects (exponential backoff with jitter); while it is down the job loop's poll tick is the
//! fallback, so a lost socket delays jobs but never stops them.

use std::time::Duration;

use futures_util::StreamExt;
use hyprbox_proto::agent::AgentMessage;
use hyprbox_proto::nodes::NodeConfig;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep, timeout};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode, header};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::jobs::Event;

/// The server pings every 25 s; this long without any frame means the connection is dead.
const SILENCE_LIMIT: Duration = Duration::from_secs(70);
/// A connection that lasted this long was healthy: the next failure starts the backoff afresh.
const HEALTHY_AFTER: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// `http(s)://host/…` → `ws(s)://host/…/api/agent/ws?nodeId=…`.
pub fn ws_url(server: &str, node_id: &str) -> String {
    let base = server.trim_end_matches('/');
    let base = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        base.to_string()
    };
    format!("{base}/api/agent/ws?nodeId={node_id}")
}

enum Connect {
    /// The socket was open and then closed: reconnect.
    Closed {
        lasted: Duration,
    },
    /// The token may not open one (fleet-wide, or pinned elsewhere): poll only.
    Forbidden,
    Unauthorized,
    Failed(String),
    Shutdown,
}

/// Keeps the socket open until `shutdown`; returns early only when the server refuses it for
/// good (403: a fleet-wide token), leaving the job loop to poll.
pub async fn run(
    server: String,
    token: String,
    node_id: String,
    events: mpsc::Sender<Event>,
    node_config: watch::Sender<NodeConfig>,
    shutdown: CancellationToken,
) {
    let url = ws_url(&server, &node_id);
    let mut backoff = Backoff::new();
    loop {
        let delay = match connect_once(&url, &token, &events, &node_config, &shutdown).await {
            Connect::Shutdown => return,
            Connect::Forbidden => {
                tracing::info!(
                    "the server refused the WebSocket (403: a fleet-wide token, or one pinned to \
                     another node): polling for jobs every tick instead"
                );
                return;
            }
            Connect::Closed { lasted } => {
                if lasted >= HEALTHY_AFTER {
                    backoff.succeed();
                }
                let delay = backoff.fail();
                tracing::info!(reconnect_in = ?delay, "WebSocket disconnected");
                delay
            }
            Connect::Unauthorized => {
                let delay = backoff.fail_at_cap();
                tracing::warn!(
                    retry_in = ?delay,
                    "WebSocket: the server rejected the node token (401): it is invalid or was revoked"
                );
                delay
            }
            Connect::Failed(error) => {
                let delay = backoff.fail();
                tracing::warn!(%error, retry_in = ?delay, "WebSocket connection failed");
                delay
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = sleep(delay) => {}
        }
    }
}

async fn connect_once(
    url: &str,
    token: &str,
    events: &mpsc::Sender<Event>,
    node_config: &watch::Sender<NodeConfig>,
    shutdown: &CancellationToken,
) -> Connect {
    let mut request = match url.into_client_request() {
        Ok(request) => request,
        Err(e) => return Connect::Failed(format!("bad WebSocket URL {url}: {e}")),
    };
    let Ok(auth) = HeaderValue::from_str(&format!("Bearer {token}")) else {
        return Connect::Failed("the token is not a valid header value".into());
    };
    request.headers_mut().insert(header::AUTHORIZATION, auth);
    let connecting = tokio::select! {
        () = shutdown.cancelled() => return Connect::Shutdown,
        result = timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async(request)) => result,
    };
    let mut socket = match connecting {
        Err(_) => return Connect::Failed("timed out".into()),
        Ok(Err(tungstenite::Error::Http(response))) => {
            return match response.status() {
                StatusCode::FORBIDDEN => Connect::Forbidden,
                StatusCode::UNAUTHORIZED => Connect::Unauthorized,
                status => Connect::Failed(format!("the server answered {status}")),
            };
        }
        Ok(Err(e)) => return Connect::Failed(e.to_string()),
        Ok(Ok((socket, _))) => socket,
    };
    let opened = Instant::now();
    tracing::info!("WebSocket connected: jobs are picked up as soon as they are queued");
    // Jobs queued while the socket was down would otherwise wait for the poll tick.
    let _ = events.try_send(Event::Wakeup);
    loop {
        let frame = tokio::select! {
            () = shutdown.cancelled() => {
                // A polite close, but the agent's stop must not wait on the server's answer.
                let _ = timeout(Duration::from_secs(1), socket.close(None)).await;
                return Connect::Shutdown;
            }
            frame = timeout(SILENCE_LIMIT, socket.next()) => frame,
        };
        // Reading also answers the server's pings (tungstenite queues the pong and flushes it on
        // the next read).
        match frame {
            Err(_) => {
                tracing::warn!("WebSocket silent for {SILENCE_LIMIT:?} (no pings): reconnecting");
                break;
            }
            Ok(None | Some(Ok(Message::Close(_)))) => break,
            Ok(Some(Err(e))) => {
                tracing::warn!(error = %e, "WebSocket error");
                break;
            }
            Ok(Some(Ok(Message::Text(text)))) => match serde_json::from_str(text.as_str()) {
                Ok(AgentMessage::Wakeup) => {
                    tracing::debug!("wakeup from the server");
                    // A full channel already holds a wakeup: dropping this one loses nothing.
                    let _ = events.try_send(Event::Wakeup);
                }
                Ok(AgentMessage::Cancel { job_id }) => {
                    tracing::info!(%job_id, "cancel requested by the server");
                    if events.send(Event::Cancel(job_id)).await.is_err() {
                        return Connect::Shutdown;
                    }
                }
                Ok(AgentMessage::Config { config }) => {
                    tracing::info!("node config changed by the server");
                    node_config.send_replace(config);
                }
                Ok(AgentMessage::Unknown) | Err(_) => {
                    tracing::debug!(message = %text.as_str(), "unknown WebSocket message: ignored");
                }
            },
            Ok(Some(Ok(_))) => {}
        }
    }
    Connect::Closed {
        lasted: opened.elapsed(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_socket_url_follows_the_server_scheme() {
        assert_eq!(
            ws_url("http://127.0.0.1:4000/", "web-1"),
            "ws://127.0.0.1:4000/api/agent/ws?nodeId=web-1"
        );
        assert_eq!(
            ws_url("https://hb.example.com/base", "n"),
            "wss://hb.example.com/base/api/agent/ws?nodeId=n"
        );
    }

    #[test]
    fn server_messages_are_parsed_and_unknown_ones_tolerated() {
        let parse = |s: &str| serde_json::from_str::<AgentMessage>(s).unwrap();
        assert_eq!(parse(r#"{"type":"wakeup"}"#), AgentMessage::Wakeup);
        assert_eq!(
            parse(r#"{"type":"cancel","jobId":"j-1"}"#),
            AgentMessage::Cancel { job_id: "j-1".into() }
        );
        assert_eq!(parse(r#"{"type":"rotate-keys"}"#), AgentMessage::Unknown);
    }
}
