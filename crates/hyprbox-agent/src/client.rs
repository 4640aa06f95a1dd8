//! The HTTP side of the agent: one typed call per server route it uses, and the error kinds the
//! loops act on (retry, back off at the cap, drop a job, honour `Retry-After`).

use std::time::Duration;

use hyprbox_proto::Heartbeat;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401: the token is invalid or revoked; retrying soon will not help.
    #[error("the server rejected the node token (401): it is invalid or was revoked")]
    Unauthorized,
    /// 409: the job is no longer RUNNING (or already completed).
    #[error("conflict (409): {0}")]
    Conflict(String),
    /// 429 with the server's `Retry-After`.
    #[error("rate limited (429), retry after {0:?}")]
    RateLimited(Duration),
    #[error("the server answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("cannot reach the server: {0}")]
    Transport(#[from] reqwest::Error),
}

/// `GET /api/jobs/pending`'s job.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClaimedJob {
    pub id: String,
    #[serde(default)]
    pub preset_name: String,
    pub script: String,
    #[serde(default)]
    pub variables: serde_json::Value,
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
}

#[derive(Deserialize)]
struct PendingBody {
    job: Option<ClaimedJob>,
}

/// `GET /api/nodes/me/config`'s `config`: only what the agent acts on.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct NodeConfig {
    #[serde(default)]
    pub heartbeat_interval: Option<u64>,
    #[serde(default)]
    pub scan_interval: Option<u64>,
    #[serde(default)]
    pub tls_paths: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct ConfigBody {
    #[serde(default)]
    config: NodeConfig,
}

#[derive(Serialize, Default, Debug, Clone, PartialEq)]
pub struct OutputPiece {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CompleteBody<'a> {
    exit_code: i64,
    #[serde(flatten)]
    output: &'a OutputPiece,
}

/// The server's answer to a heartbeat.
#[derive(Debug)]
pub struct HeartbeatAnswer {
    /// The body, as sent (printed by `--once`).
    pub body: String,
    /// The server holds none of the node's inventory: send it with the next heartbeat.
    pub inventory_wanted: bool,
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    pub fn new(base: &str, token: &str) -> anyhow::Result<Client> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("hyprbox-agent/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build()?;
        Ok(Client {
            http,
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    /// Sends, and turns every non-2xx answer into an [`ApiError`].
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, ApiError> {
        let response = request.send().await?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            let secs = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(1);
            return Err(ApiError::RateLimited(Duration::from_secs(secs)));
        }
        let mut body = response.text().await.unwrap_or_default();
        body.truncate(300);
        Err(match status {
            StatusCode::UNAUTHORIZED => ApiError::Unauthorized,
            StatusCode::CONFLICT => ApiError::Conflict(body),
            _ => ApiError::Status {
                status: status.as_u16(),
                body,
            },
        })
    }

    /// `POST /api/nodes/heartbeat` → the server's answer (202).
    pub async fn heartbeat(&self, hb: &Heartbeat) -> Result<HeartbeatAnswer, ApiError> {
        let response = self
            .send(
                self.request(reqwest::Method::POST, "/api/nodes/heartbeat")
                    .json(hb),
            )
            .await?;
        let inventory_wanted = response
            .headers()
            .get(hyprbox_proto::INVENTORY_WANTED_HEADER)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
        Ok(HeartbeatAnswer {
            body: response.text().await.unwrap_or_default(),
            inventory_wanted,
        })
    }

    /// `GET /api/nodes/me/config`. A fleet-wide token has no node config (400): `None`.
    pub async fn my_config(&self) -> Result<Option<NodeConfig>, ApiError> {
        match self
            .send(self.request(reqwest::Method::GET, "/api/nodes/me/config"))
            .await
        {
            Ok(response) => Ok(Some(response.json::<ConfigBody>().await?.config)),
            Err(ApiError::Status { status: 400, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `GET /api/jobs/pending?nodeId=`: claims the node's oldest queued job, if any.
    pub async fn pending(&self, node_id: &str) -> Result<Option<ClaimedJob>, ApiError> {
        let response = self
            .send(
                // A nodeId is [A-Za-z0-9._-] only (validated at start): nothing to escape.
                self.request(
                    reqwest::Method::GET,
                    &format!("/api/jobs/pending?nodeId={node_id}"),
                ),
            )
            .await?;
        Ok(response.json::<PendingBody>().await?.job)
    }

    /// `POST /api/jobs/{id}/output` (204).
    pub async fn output(&self, job_id: &str, piece: &OutputPiece) -> Result<(), ApiError> {
        self.send(
            self.request(reqwest::Method::POST, &format!("/api/jobs/{job_id}/output"))
                .json(piece),
        )
        .await
        .map(drop)
    }

    /// `POST /api/jobs/{id}/complete` (200).
    pub async fn complete(&self, job_id: &str, exit_code: i64, piece: &OutputPiece) -> Result<(), ApiError> {
        let body = CompleteBody {
            exit_code,
            output: piece,
        };
        self.send(
            self.request(reqwest::Method::POST, &format!("/api/jobs/{job_id}/complete"))
                .json(&body),
        )
        .await
        .map(drop)
    }
}
