//! The node's Docker inventory: the containers the Docker Engine API lists on its Unix socket
//! (`GET /containers/json?all=1`), reported to `POST /api/nodes/inventory`. Without the socket
//! there is nothing to do. One small HTTP/1.0 request over the socket: the engine closes the
//! connection after answering, so the body is everything after the headers.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use hyprbox_proto::nodes::Container;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";
const TIMEOUT: Duration = Duration::from_secs(10);
/// A listing larger than this is refused (a node with thousands of containers still fits).
const MAX_ANSWER: u64 = 16 << 20;
/// The server takes at most 1000 containers a report.
const MAX_CONTAINERS: usize = 1000;

/// One entry of the engine's list, as much of it as the inventory needs.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EngineContainer {
    id: String,
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    image: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
}

/// The containers on the engine at `socket`; `Ok(None)` when there is no socket (no Docker here).
pub async fn list(socket: &Path) -> Result<Option<Vec<Container>>, String> {
    if !socket.exists() {
        return Ok(None);
    }
    let body = tokio::time::timeout(TIMEOUT, get(socket, "/containers/json?all=1"))
        .await
        .map_err(|_| {
            format!(
                "the Docker engine at {} did not answer within 10 s",
                socket.display()
            )
        })??;
    let listed: Vec<EngineContainer> = serde_json::from_slice(&body)
        .map_err(|e| format!("the Docker engine's container list does not parse: {e}"))?;
    let mut containers: Vec<Container> = listed
        .into_iter()
        .map(|c| Container {
            // Names come as "/name"; the first is the container's own.
            name: c
                .names
                .first()
                .map(|n| n.trim_start_matches('/').to_owned())
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| c.id.chars().take(12).collect()),
            id: c.id,
            image: if c.image.is_empty() {
                "unknown".into()
            } else {
                c.image
            },
            state: if c.state.is_empty() {
                "unknown".into()
            } else {
                c.state
            },
            labels: c.labels.filter(|l| !l.is_empty()),
        })
        .collect();
    containers.truncate(MAX_CONTAINERS);
    Ok(Some(containers))
}

async fn get(socket: &Path, path: &str) -> Result<Vec<u8>, String> {
    let mut stream = UnixStream::connect(socket)
        .await
        .map_err(|e| format!("cannot connect to the Docker engine at {}: {e}", socket.display()))?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: docker\r\nAccept: application/json\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("cannot ask the Docker engine: {e}"))?;
    let mut answer = Vec::new();
    (&mut stream)
        .take(MAX_ANSWER)
        .read_to_end(&mut answer)
        .await
        .map_err(|e| format!("cannot read the Docker engine's answer: {e}"))?;
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the Docker engine's answer has no headers")?;
    let head = String::from_utf8_lossy(&answer[..split]);
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        return Err(format!("the Docker engine answered {status} to {path}"));
    }
    if head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:") && l.to_ascii_lowercase().contains("chunked")
    }) {
        return Err("the Docker engine answered with a chunked body to an HTTP/1.0 request".into());
    }
    Ok(answer[split + 4..].to_vec())
}

#[cfg(test)]
mod tests {
    use tokio::net::UnixListener;

    use super::*;

    /// A Docker engine that answers one request with `status` and `body`, and records the request.
    async fn fake_engine(
        socket: &Path,
        status: &'static str,
        body: &'static str,
    ) -> tokio::task::JoinHandle<String> {
        let listener = UnixListener::bind(socket).unwrap();
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut request = vec![0u8; 4096];
            let n = conn.read(&mut request).await.unwrap();
            let answer = format!(
                "HTTP/1.0 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            conn.write_all(answer.as_bytes()).await.unwrap();
            conn.shutdown().await.unwrap();
            String::from_utf8_lossy(&request[..n]).into_owned()
        })
    }

    fn socket_path(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("hyprbox-docker-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("docker.sock")
    }

    #[tokio::test]
    async fn containers_are_listed_from_the_engine_socket() {
        let socket = socket_path("list");
        let engine = fake_engine(
            &socket,
            "200 OK",
            r#"[{"Id":"abc123","Names":["/db"],"Image":"postgres:16","State":"running","Labels":{"app":"shop"}},
                {"Id":"def456","Names":["/cache"],"Image":"redis:7","State":"exited","Labels":{}}]"#,
        )
        .await;
        let listed = list(&socket).await.unwrap().unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(
            (
                listed[0].name.as_str(),
                listed[0].image.as_str(),
                listed[0].state.as_str()
            ),
            ("db", "postgres:16", "running")
        );
        assert_eq!(listed[0].labels.as_ref().unwrap()["app"], "shop");
        assert_eq!(listed[1].labels, None);
        let request = engine.await.unwrap();
        assert!(
            request.starts_with("GET /containers/json?all=1 HTTP/1.0\r\n"),
            "{request}"
        );
    }

    #[tokio::test]
    async fn without_a_socket_there_is_nothing_to_list() {
        assert_eq!(
            list(Path::new("/nonexistent/hyprbox/docker.sock")).await.unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn an_engine_error_is_reported_not_taken_for_an_empty_list() {
        let socket = socket_path("error");
        let _engine = fake_engine(&socket, "500 Internal Server Error", r#"{"message":"boom"}"#).await;
        let error = list(&socket).await.unwrap_err();
        assert!(error.contains("500"), "{error}");
    }
}
