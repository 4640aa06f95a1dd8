//! A typed client of the HyprBox API: one method per route, bodies from `hyprbox-proto`, every
//! refusal mapped to an [`Error`] that carries the API's message (and the CLI's exit code), event
//! streams followed across breaks with `Last-Event-ID` ([`sse::Subscription`]).
//!
//! Used by the operator CLI, the fleet simulator and the agent's HTTP side, so the server's routes
//! and their callers cannot drift apart. Depends on `hyprbox-proto` only; no server, no store.

mod error;
pub mod sse;

use std::time::Duration;

use hyprbox_proto::auth::{
    CreateUserRequest, LoginRequest, OneUserBody, RegisterRequest, RoleRequest, SessionBody, UsersBody,
};
use hyprbox_proto::backups::{
    CompleteRun, CreatePolicy, PoliciesBody, PolicyDetail, PolicyEnvelope, RunEnvelope, StartRun,
    TriggerAccepted, UpdatePolicy,
};
use hyprbox_proto::findings::{
    FindingDetail, FindingEnvelope, FindingsBody, ReportAccepted, ReportBody, SnoozeBody, SummaryBody,
};
use hyprbox_proto::jobs::{
    ClaimedJob, CompleteJob, CreateJob, JobDetailEnvelope, JobEnvelope, JobsBody, OutputPiece, PendingBody,
};
use hyprbox_proto::nodes::{Inventory, InventoryAccepted, NodeConfigBody, NodesBody};
use hyprbox_proto::tokens::{CreateTokenRequest, CreatedToken, TokensBody};
use hyprbox_proto::{Heartbeat, HeartbeatAck, headers};
use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use error::Error;
pub use sse::{SseEvent, Subscription};

/// A client of one server, with or without a bearer token (a session JWT or an `hbnt_` node
/// token). Cheap to clone: clones share the connection pool.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

/// The server's answer to a heartbeat.
#[derive(Clone, Debug)]
pub struct HeartbeatAnswer {
    pub ack: HeartbeatAck,
    /// The server holds none of the node's inventory: send it with the next heartbeat.
    pub inventory_wanted: bool,
}

/// `GET /api/jobs` filters.
#[derive(Clone, Debug, Default)]
pub struct JobQuery<'a> {
    pub node_id: Option<&'a str>,
    pub status: Option<&'a str>,
    pub limit: Option<u32>,
}

/// `GET /api/findings` filters.
#[derive(Clone, Debug, Default)]
pub struct FindingQuery<'a> {
    pub node_id: Option<&'a str>,
    pub severity: Option<&'a str>,
    /// `all` adds RESOLVED findings and those still snoozed.
    pub include: Option<&'a str>,
}

/// Percent-encodes a value for a URL path segment or query value: whatever a caller passes
/// reaches the server as that one value.
pub fn enc(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `?a=1&b=2` from the pairs whose value is set, values percent-encoded; empty when none is.
fn query(pairs: &[(&str, Option<String>)]) -> String {
    let mut out = String::new();
    for (name, value) in pairs {
        if let Some(value) = value {
            out.push(if out.is_empty() { '?' } else { '&' });
            out.push_str(name);
            out.push('=');
            out.push_str(&enc(value));
        }
    }
    out
}

impl Client {
    /// A client with its own connection pool: 10 s to connect, 60 s per call (streams excepted).
    pub fn new(base: &str, token: Option<&str>) -> Result<Client, Error> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("hyprbox/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Error::unreachable(base, e))?;
        Ok(Client::with_http(http, base, token))
    }

    /// A client over a connection pool built by the caller (its own timeouts, pool size, agent).
    pub fn with_http(http: reqwest::Client, base: &str, token: Option<&str>) -> Client {
        Client {
            http,
            base: base.trim_end_matches('/').to_string(),
            token: token.map(str::to_string),
        }
    }

    /// The server's base URL, without a trailing slash.
    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request without credentials.
    pub fn anonymous(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, self.url(path))
    }

    /// A request with the bearer token; [`Error::NotSignedIn`] without one.
    pub fn authed(&self, method: Method, path: &str) -> Result<reqwest::RequestBuilder, Error> {
        let token = self.token.as_deref().ok_or_else(|| Error::NotSignedIn {
            server: self.base.clone(),
        })?;
        Ok(self.anonymous(method, path).bearer_auth(token))
    }

    /// Sends; every non-2xx answer becomes an [`Error`].
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, Error> {
        let response = request
            .send()
            .await
            .map_err(|e| Error::unreachable(&self.base, e))?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(Error::from_response(response).await)
        }
    }

    async fn read<T: DeserializeOwned>(&self, request: reqwest::RequestBuilder) -> Result<T, Error> {
        let response = self.send(request).await?;
        let bytes = response
            .bytes()
            .await
            .map_err(|e| Error::unreachable(&self.base, e))?;
        serde_json::from_slice(&bytes).map_err(Error::decode)
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, Error> {
        self.read(self.authed(Method::GET, path)?).await
    }

    async fn call<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> Result<T, Error> {
        self.read(self.authed(method, path)?.json(body)).await
    }

    /// A call whose answer has no body worth reading (204, or one the caller does not need).
    async fn call_empty<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<(), Error> {
        let mut request = self.authed(method, path)?;
        if let Some(body) = body {
            request = request.json(body);
        }
        self.send(request).await.map(drop)
    }

    // Sessions and accounts.

    /// `POST /api/auth/login`.
    pub async fn login(&self, body: &LoginRequest) -> Result<SessionBody, Error> {
        self.read(self.anonymous(Method::POST, "/api/auth/login").json(body))
            .await
    }

    /// `POST /api/auth/register`: the first account becomes ADMIN.
    pub async fn register(&self, body: &RegisterRequest) -> Result<SessionBody, Error> {
        self.read(self.anonymous(Method::POST, "/api/auth/register").json(body))
            .await
    }

    /// `GET /api/users` (ADMIN).
    pub async fn users(&self) -> Result<UsersBody, Error> {
        self.get("/api/users").await
    }

    /// `POST /api/users` (ADMIN).
    pub async fn create_user(&self, body: &CreateUserRequest) -> Result<OneUserBody, Error> {
        self.call(Method::POST, "/api/users", body).await
    }

    /// `PATCH /api/users/{id}/role` (ADMIN).
    pub async fn set_role(&self, id: &str, body: &RoleRequest) -> Result<OneUserBody, Error> {
        self.call(Method::PATCH, &format!("/api/users/{}/role", enc(id)), body)
            .await
    }

    /// `DELETE /api/users/{id}` (ADMIN).
    pub async fn delete_user(&self, id: &str) -> Result<(), Error> {
        self.call_empty::<()>(Method::DELETE, &format!("/api/users/{}", enc(id)), None)
            .await
    }

    // Node tokens.

    /// `POST /api/tokens` (OPERATOR): the secret is in this answer only.
    pub async fn create_token(&self, body: &CreateTokenRequest) -> Result<CreatedToken, Error> {
        self.call(Method::POST, "/api/tokens", body).await
    }

    /// `GET /api/tokens`.
    pub async fn tokens(&self) -> Result<TokensBody, Error> {
        self.get("/api/tokens").await
    }

    /// `DELETE /api/tokens/{id}`.
    pub async fn revoke_token(&self, id: &str) -> Result<(), Error> {
        self.call_empty::<()>(Method::DELETE, &format!("/api/tokens/{}", enc(id)), None)
            .await
    }

    // The fleet.

    /// `GET /api/nodes`.
    pub async fn nodes(&self) -> Result<NodesBody, Error> {
        self.get("/api/nodes").await
    }

    /// `POST /api/nodes/heartbeat` (node token) → 202.
    pub async fn heartbeat(&self, heartbeat: &Heartbeat) -> Result<HeartbeatAnswer, Error> {
        let response = self
            .send(self.authed(Method::POST, "/api/nodes/heartbeat")?.json(heartbeat))
            .await?;
        let inventory_wanted = response
            .headers()
            .get(headers::INVENTORY_WANTED)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
        let bytes = response
            .bytes()
            .await
            .map_err(|e| Error::unreachable(&self.base, e))?;
        Ok(HeartbeatAnswer {
            ack: serde_json::from_slice(&bytes).map_err(Error::decode)?,
            inventory_wanted,
        })
    }

    /// `GET /api/nodes/me/config` (a node token pinned to its node).
    pub async fn my_config(&self) -> Result<NodeConfigBody, Error> {
        self.get("/api/nodes/me/config").await
    }

    /// `PATCH /api/nodes/{nodeId}/config` (OPERATOR): a JSON merge patch (`null` removes a key).
    pub async fn patch_node_config(
        &self,
        node_id: &str,
        patch: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<NodeConfigBody, Error> {
        self.call(
            Method::PATCH,
            &format!("/api/nodes/{}/config", enc(node_id)),
            patch,
        )
        .await
    }

    // Jobs, as an operator.

    /// `POST /api/jobs` (OPERATOR) → 201.
    pub async fn create_job(&self, body: &CreateJob) -> Result<JobEnvelope, Error> {
        self.call(Method::POST, "/api/jobs", body).await
    }

    /// `GET /api/jobs`.
    pub async fn jobs(&self, filter: &JobQuery<'_>) -> Result<JobsBody, Error> {
        let path = format!(
            "/api/jobs{}",
            query(&[
                ("limit", filter.limit.map(|l| l.to_string())),
                ("nodeId", filter.node_id.map(str::to_string)),
                ("status", filter.status.map(str::to_string)),
            ])
        );
        self.get(&path).await
    }

    /// `GET /api/jobs/{id}`: the job with its script and the tail of its output.
    pub async fn job(&self, id: &str) -> Result<JobDetailEnvelope, Error> {
        self.get(&format!("/api/jobs/{}", enc(id))).await
    }

    /// `POST /api/jobs/{id}/cancel`.
    pub async fn cancel_job(&self, id: &str) -> Result<JobEnvelope, Error> {
        self.call(
            Method::POST,
            &format!("/api/jobs/{}/cancel", enc(id)),
            &serde_json::json!({}),
        )
        .await
    }

    /// `GET /api/jobs/{id}/output/raw?stream=`: the whole stream, to read as bytes arrive.
    pub async fn raw_output(&self, id: &str, stream: &str) -> Result<reqwest::Response, Error> {
        let path = format!(
            "/api/jobs/{}/output/raw{}",
            enc(id),
            query(&[("stream", Some(stream.to_string()))])
        );
        self.send(self.authed(Method::GET, &path)?).await
    }

    /// `GET /api/jobs/{id}/stream`, followed across breaks.
    pub fn job_events(&self, id: &str) -> Subscription {
        Subscription::new(self.clone(), format!("/api/jobs/{}/stream", enc(id)))
    }

    // Jobs, as an agent (node token).

    /// `GET /api/jobs/pending`: claims the node's oldest queued job, if any. `node_id` may be
    /// left out with a token pinned to its node.
    pub async fn pending(&self, node_id: Option<&str>) -> Result<Option<ClaimedJob>, Error> {
        let path = format!(
            "/api/jobs/pending{}",
            query(&[("nodeId", node_id.map(str::to_string))])
        );
        Ok(self.get::<PendingBody>(&path).await?.job)
    }

    /// `POST /api/jobs/{id}/output` → 204.
    pub async fn output(&self, job_id: &str, piece: &OutputPiece) -> Result<(), Error> {
        self.call_empty(
            Method::POST,
            &format!("/api/jobs/{}/output", enc(job_id)),
            Some(piece),
        )
        .await
    }

    /// `POST /api/jobs/{id}/complete`.
    pub async fn complete(&self, job_id: &str, body: &CompleteJob) -> Result<JobEnvelope, Error> {
        self.call(Method::POST, &format!("/api/jobs/{}/complete", enc(job_id)), body)
            .await
    }

    // Findings.

    /// `GET /api/findings`.
    pub async fn findings(&self, filter: &FindingQuery<'_>) -> Result<FindingsBody, Error> {
        let path = format!(
            "/api/findings{}",
            query(&[
                ("nodeId", filter.node_id.map(str::to_string)),
                ("severity", filter.severity.map(str::to_string)),
                ("include", filter.include.map(str::to_string)),
            ])
        );
        self.get(&path).await
    }

    /// `GET /api/findings/{id}`, with the preset that fixes it.
    pub async fn finding(&self, id: &str) -> Result<FindingDetail, Error> {
        self.get(&format!("/api/findings/{}", enc(id))).await
    }

    /// `POST /api/findings/{id}/snooze`.
    pub async fn snooze_finding(&self, id: &str, body: &SnoozeBody) -> Result<FindingEnvelope, Error> {
        self.call(Method::POST, &format!("/api/findings/{}/snooze", enc(id)), body)
            .await
    }

    /// `POST /api/findings/{id}/resolve`.
    pub async fn resolve_finding(&self, id: &str) -> Result<FindingEnvelope, Error> {
        self.call(
            Method::POST,
            &format!("/api/findings/{}/resolve", enc(id)),
            &serde_json::json!({}),
        )
        .await
    }

    /// `GET /api/findings/health/summary`.
    pub async fn findings_summary(&self) -> Result<SummaryBody, Error> {
        self.get("/api/findings/health/summary").await
    }

    /// `POST /api/findings` (node token) → 202.
    pub async fn report_findings(&self, body: &ReportBody) -> Result<ReportAccepted, Error> {
        self.call(Method::POST, "/api/findings", body).await
    }

    /// `POST /api/nodes/inventory` (node token) → 202.
    pub async fn report_inventory(&self, body: &Inventory) -> Result<InventoryAccepted, Error> {
        self.call(Method::POST, "/api/nodes/inventory", body).await
    }

    // Backups.

    /// `GET /api/backups`.
    pub async fn backup_policies(&self, node_id: Option<&str>) -> Result<PoliciesBody, Error> {
        let path = format!("/api/backups{}", query(&[("nodeId", node_id.map(str::to_owned))]));
        self.get(&path).await
    }

    /// `GET /api/backups/{id}`: the policy and its 20 newest runs.
    pub async fn backup_policy(&self, id: &str) -> Result<PolicyDetail, Error> {
        self.get(&format!("/api/backups/{}", enc(id))).await
    }

    /// `POST /api/backups` (OPERATOR) → 201.
    pub async fn create_backup_policy(&self, body: &CreatePolicy) -> Result<PolicyEnvelope, Error> {
        self.call(Method::POST, "/api/backups", body).await
    }

    /// `PATCH /api/backups/{id}` (OPERATOR).
    pub async fn update_backup_policy(&self, id: &str, body: &UpdatePolicy) -> Result<PolicyEnvelope, Error> {
        self.call(Method::PATCH, &format!("/api/backups/{}", enc(id)), body)
            .await
    }

    /// `DELETE /api/backups/{id}` (OPERATOR) → 204.
    pub async fn delete_backup_policy(&self, id: &str) -> Result<(), Error> {
        self.call_empty::<()>(Method::DELETE, &format!("/api/backups/{}", enc(id)), None)
            .await
    }

    /// `POST /api/backups/{id}/trigger` (OPERATOR) → 202.
    pub async fn trigger_backup(&self, id: &str) -> Result<TriggerAccepted, Error> {
        self.read(self.authed(Method::POST, &format!("/api/backups/{}/trigger", enc(id)))?)
            .await
    }

    /// `POST /api/backups/{id}/runs` (node token): a run starts.
    pub async fn start_backup_run(&self, policy_id: &str, body: &StartRun) -> Result<RunEnvelope, Error> {
        self.call(
            Method::POST,
            &format!("/api/backups/{}/runs", enc(policy_id)),
            body,
        )
        .await
    }

    /// `POST /api/backups/runs/{runId}/complete` (node token).
    pub async fn complete_backup_run(&self, run_id: &str, body: &CompleteRun) -> Result<RunEnvelope, Error> {
        self.call(
            Method::POST,
            &format!("/api/backups/runs/{}/complete", enc(run_id)),
            body,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_in_urls_are_percent_encoded() {
        assert_eq!(enc("web-1.a_b~"), "web-1.a_b~");
        assert_eq!(enc("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
        assert_eq!(
            query(&[("a", Some("x y".into())), ("b", None), ("c", Some("1".into()))]),
            "?a=x%20y&c=1"
        );
        assert_eq!(query(&[("a", None)]), "");
    }

    #[tokio::test]
    async fn a_refusal_carries_the_api_message_and_its_exit_code() {
        use wiremock::matchers::path;
        use wiremock::{Mock, MockServer, ResponseTemplate};
        let server = MockServer::start().await;
        Mock::given(path("/api/jobs/j1"))
            .respond_with(
                ResponseTemplate::new(404)
                    .set_body_json(serde_json::json!({"error": "not_found", "message": "job not found"})),
            )
            .mount(&server)
            .await;
        Mock::given(path("/api/nodes/heartbeat"))
            .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "7"))
            .mount(&server)
            .await;
        let client = Client::new(&server.uri(), Some("t")).unwrap();
        let err = client.job("j1").await.unwrap_err();
        assert_eq!(err.to_string(), "job not found");
        assert_eq!(err.exit_code(), 4);
        let err = client.heartbeat(&Heartbeat::default()).await.unwrap_err();
        assert!(
            matches!(err, Error::RateLimited { retry_after, .. } if retry_after == Duration::from_secs(7)),
            "{err:?}"
        );
        let anonymous = Client::new(&server.uri(), None).unwrap();
        assert_eq!(anonymous.nodes().await.unwrap_err().exit_code(), 3);
        let nowhere = Client::new("http://127.0.0.1:9", Some("t")).unwrap();
        assert_eq!(nowhere.nodes().await.unwrap_err().exit_code(), 6);
    }
}
