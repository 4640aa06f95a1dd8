//! `/api/nodes`: heartbeats from agents, and the fleet as operators see it (list, sparks, status,
//! history, activity), node config and decommissioning.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hyprbox_proto::{Heartbeat, HeartbeatAck, validate_node_id};
use hyprbox_store::audit::{self, NewAuditEvent};
use hyprbox_store::nodes::{self, Node};
use hyprbox_store::now_ms;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};

use super::memory::{self, NodeState};
use super::query;
use super::writer::{PER_HEARTBEAT, Pending};
use crate::auth::{CurrentUser, Identity, MaybeNode, NodeAuth, Operator};
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::{ClientIp, Json, Query};
use crate::http::time::rfc3339;
use crate::state::AppState;
use hyprbox_proto::nodes::{NodeBody, NodeConfigBody, NodesBody};

#[derive(Serialize, ToSchema)]
pub struct SparksBody {
    /// nodeId → CPU values, oldest first.
    #[schema(value_type = Object)]
    pub sparks: Map<String, Value>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeDetail {
    #[serde(flatten)]
    pub node: NodeBody,
    pub uptime_seconds: Option<i64>,
    pub load_avg: Option<[f64; 3]>,
    pub mem_total_bytes: Option<i64>,
    pub disk_total_bytes: Option<i64>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastHeartbeat {
    pub cpu_percent: Option<f64>,
    pub ram_percent: Option<f64>,
    pub disk_percent: Option<f64>,
    pub status: Option<String>,
    pub received_at: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusBody {
    pub node: NodeDetail,
    pub last_heartbeat: Option<LastHeartbeat>,
    #[schema(value_type = Object)]
    pub config: Value,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryPoint {
    pub at: String,
    pub cpu_percent: Option<f64>,
    pub ram_percent: Option<f64>,
    pub disk_percent: Option<f64>,
    pub status: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct HistoryBody {
    pub history: Vec<HistoryPoint>,
}

#[derive(Serialize, ToSchema)]
pub struct ActivityBody {
    /// `{type, severity, message, at, …details}`, newest first, at most 8.
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<Value>,
}

/// A stored configuration as the protocol's typed body (it passed validation when patched).
fn config_body(config: Value) -> Result<NodeConfigBody, ApiError> {
    let config = serde_json::from_value(config)
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("a stored node config does not parse: {e}")))?;
    Ok(NodeConfigBody { config })
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LimitQuery {
    pub limit: Option<String>,
}

/// `?limit=` as a whole number in `1..=max`, or `default` when absent.
pub fn parse_limit(raw: Option<&str>, default: i64, max: i64) -> Result<i64, ApiError> {
    match raw.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| ApiError::bad_request(format!("limit must be a whole number from 1 to {max}"))),
    }
}

pub fn offline_ms(state: &AppState) -> i64 {
    i64::try_from(state.settings.node_offline_after.as_millis()).unwrap_or(i64::MAX)
}

pub fn node_body(node: &Node, now: i64, offline_after_ms: i64) -> NodeBody {
    NodeBody {
        node_id: node.node_id.clone(),
        hostname: node.hostname.clone(),
        os: node.os.clone(),
        status: memory::status(node, now, offline_after_ms).to_string(),
        last_seen_at: rfc3339(node.last_seen_at),
        cpu_percent: node.cpu_percent,
        ram_percent: node.ram_percent,
        disk_percent: node.disk_percent,
        agent_version: node.agent_version.clone(),
        ip: node.ip.clone(),
        region: node.region.clone(),
        kernel: node.kernel.clone(),
        architecture: node.architecture.clone(),
        created_at: rfc3339(node.created_at),
    }
}

fn config_value(config: &str) -> Value {
    serde_json::from_str(config).unwrap_or_else(|_| Value::Object(Map::new()))
}

/// Waits for the heartbeats and events already acknowledged to reach the database, so history and
/// activity show them; 503 when the database cannot take them now.
async fn settled(state: &AppState) -> Result<(), ApiError> {
    if state.writer.settled(SETTLE_LIMIT).await {
        Ok(())
    } else {
        Err(ApiError::Unavailable(
            "the database is not taking writes; try again shortly".into(),
        ))
    }
}

/// How long a read waits for the writer before answering 503.
const SETTLE_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// A `nodeId` from the path: 400 when malformed, 404 when unknown.
fn known_node(state: &AppState, node_id: &str) -> Result<NodeState, ApiError> {
    validate_node_id("nodeId", node_id).map_err(ApiError::BadRequest)?;
    state
        .fleet
        .get(node_id)
        .ok_or_else(|| ApiError::not_found("node"))
}

#[utoipa::path(post, path = "/api/nodes/heartbeat", tag = "nodes", request_body = Heartbeat,
    security((), ("nodeToken" = [])),
    responses(
        (status = 202, description = "Received (written within 250 ms). `X-HyprBox-Inventory-Wanted: true` when the server holds none of the node's inventory: send it with the next heartbeat", body = HeartbeatAck),
        (status = 400, description = "A field breaks its rule; the message names it", body = ErrorBody),
        (status = 401, description = "No valid node token (when one is required)", body = ErrorBody),
        (status = 403, description = "The token is pinned to another node", body = ErrorBody),
        (status = 429, description = "Rate-limited per (token, node)", body = ErrorBody),
        (status = 503, description = "The database is not keeping up: nothing was taken; retry after `Retry-After`", body = ErrorBody)))]
pub async fn heartbeat(
    State(state): State<AppState>,
    MaybeNode(node): MaybeNode,
    ip: ClientIp,
    Json(body): Json<Heartbeat>,
) -> Response {
    if node.is_none() && state.settings.require_node_token {
        return ApiError::Unauthorized("a node token is required".into()).into_response();
    }
    if let Err(message) = body.validate() {
        return ApiError::BadRequest(message).into_response();
    }
    crate::http::gate::charge_node(&state, node.as_ref(), &body.node_id, ip, accept(&state, &body)).await
}

async fn accept(state: &AppState, body: &Heartbeat) -> Response {
    // Room in the writer's queue first: a heartbeat refused here changed nothing.
    let Ok(mut room) = state.writer.reserve(PER_HEARTBEAT) else {
        return ApiError::Unavailable("the database is not keeping up with heartbeats; retry shortly".into())
            .into_response();
    };
    let now = now_ms();
    let applied = state.fleet.apply(body, now, offline_ms(state));
    // The payloads are built only when a live stream is open: most heartbeats have no audience.
    if state.hub.has_subscribers() {
        state.hub.publish_heartbeat(
            &body.node_id,
            &serde_json::json!({
                "nodeId": body.node_id,
                "cpuPercent": body.cpu_percent,
                "ramPercent": body.ram_percent,
                "diskPercent": body.disk_percent,
                "status": applied.status,
                "at": rfc3339(applied.row.at),
            }),
        );
        for event in &applied.events {
            state.hub.publish_activity(event);
        }
    }
    let inventory_wanted = applied.inventory_wanted;
    let items = applied
        .upsert
        .map(Pending::Node)
        .into_iter()
        .chain([Pending::Heartbeat(applied.row)])
        .chain(applied.events.into_iter().map(Pending::Event));
    for item in items {
        // At most PER_HEARTBEAT items, and as many permits: each has its place.
        if let Some(permit) = room.next() {
            permit.send(item);
        }
    }
    let ack = HeartbeatAck {
        received: true,
        node_id: body.node_id.clone(),
    };
    let mut response = (StatusCode::ACCEPTED, Json(ack)).into_response();
    if inventory_wanted {
        response.headers_mut().insert(
            hyprbox_proto::INVENTORY_WANTED_HEADER,
            axum::http::HeaderValue::from_static("true"),
        );
    }
    response
}

/// `GET /api/nodes`'s filters, order and page (all optional; without them every node is answered).
#[derive(Deserialize, IntoParams, Default)]
#[into_params(parameter_in = Query)]
pub struct FleetListQuery {
    /// `ONLINE`, `DEGRADED` or `OFFLINE`.
    pub status: Option<String>,
    /// Exact region (case-insensitive).
    pub region: Option<String>,
    /// Text matched in node id, hostname, IP and region.
    pub q: Option<String>,
    /// `nodeId` (default), `hostname`, `status`, `region`, `cpu`, `ram`, `disk` or `lastSeen`;
    /// `-` in front for descending.
    pub sort: Option<String>,
    /// Page size, 1–1000 (default 100).
    pub limit: Option<String>,
    /// The `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

impl FleetListQuery {
    fn raw(&self) -> query::RawQuery<'_> {
        query::RawQuery {
            status: self.status.as_deref(),
            region: self.region.as_deref(),
            q: self.q.as_deref(),
            sort: self.sort.as_deref(),
            limit: self.limit.as_deref(),
            cursor: self.cursor.as_deref(),
        }
    }

    fn is_empty(&self) -> bool {
        [
            &self.status,
            &self.region,
            &self.q,
            &self.sort,
            &self.limit,
            &self.cursor,
        ]
        .iter()
        .all(|v| v.is_none())
    }
}

/// A page of `GET /api/nodes?…`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodesPageBody {
    pub nodes: Vec<NodeBody>,
    /// Pass as `cursor` for the next page; absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    /// How many nodes match the filters.
    pub total: usize,
}

#[utoipa::path(get, path = "/api/nodes", tag = "nodes", params(FleetListQuery),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "Every node with its computed status; with any parameter, one page `{nodes, nextCursor, total}`", body = NodesBody),
        (status = 400, description = "A parameter out of its rules", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    _: CurrentUser,
    Query(params): Query<FleetListQuery>,
) -> ApiResult<Response> {
    if !params.is_empty() {
        let query = query::FleetQuery::parse(&params.raw()).map_err(ApiError::BadRequest)?;
        let now = now_ms();
        let page = query::page(&state.fleet, &query, now, offline_ms(&state), 0);
        let body = NodesPageBody {
            nodes: page
                .nodes
                .iter()
                .map(|(node, _, _)| node_body(node, now, offline_ms(&state)))
                .collect(),
            next_cursor: page.next_offset.map(|o| o.to_string()),
            total: page.total,
        };
        return Ok(Json(body).into_response());
    }
    let count = state.fleet.len();
    let shared = state.clone();
    let render = move || {
        let state = shared;
        let now = now_ms();
        let offline = offline_ms(&state);
        let nodes = state.fleet.map_sorted(|s| node_body(&s.node, now, offline));
        let body = NodesBody {
            nodes: nodes.into_iter().map(|(_, node)| node).collect(),
        };
        serde_json::to_vec(&body).unwrap_or_default()
    };
    Ok(json_bytes(state.render_cache.get("nodes", count, render).await))
}

fn json_bytes(bytes: axum::body::Bytes) -> Response {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], bytes).into_response()
}

#[utoipa::path(get, path = "/api/nodes/sparks", tag = "nodes", params(LimitQuery),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "The last `limit` (1–100, default 24) CPU values of every node", body = SparksBody),
        (status = 400, description = "Invalid limit", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody)))]
pub async fn sparks(
    State(state): State<AppState>,
    _: CurrentUser,
    Query(query): Query<LimitQuery>,
) -> ApiResult<Response> {
    let limit = parse_limit(query.limit.as_deref(), 24, memory::SPARK_LEN as i64)?;
    let count = state.fleet.len();
    let shared = state.clone();
    let render = move || {
        let sparks = shared
            .fleet
            .sparks(usize::try_from(limit).unwrap_or(24))
            .into_iter()
            .map(|(id, values)| (id, Value::from(values)))
            .collect();
        serde_json::to_vec(&SparksBody { sparks }).unwrap_or_default()
    };
    Ok(json_bytes(
        state
            .render_cache
            .get(&format!("sparks:{limit}"), count, render)
            .await,
    ))
}

#[utoipa::path(get, path = "/api/nodes/{nodeId}/status", tag = "nodes",
    params(("nodeId" = String, Path, description = "Node id", pattern = "^(?!(heartbeat|inventory|me|sparks)$)[A-Za-z0-9._-]{1,64}$")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "The node, its last heartbeat and its config", body = StatusBody),
        (status = 400, description = "Malformed nodeId", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 404, description = "Unknown node", body = ErrorBody)))]
pub async fn status(
    State(state): State<AppState>,
    _: CurrentUser,
    Path(node_id): Path<String>,
) -> ApiResult<Json<StatusBody>> {
    let state_of = known_node(&state, &node_id)?;
    let node = &state_of.node;
    let detail = NodeDetail {
        node: node_body(node, now_ms(), offline_ms(&state)),
        uptime_seconds: node.uptime_seconds,
        load_avg: node
            .load_avg
            .as_deref()
            .and_then(|l| serde_json::from_str(l).ok()),
        mem_total_bytes: node.mem_total_bytes,
        disk_total_bytes: node.disk_total_bytes,
    };
    let last_heartbeat = state_of.last.as_ref().map(|h| LastHeartbeat {
        cpu_percent: h.cpu_percent,
        ram_percent: h.ram_percent,
        disk_percent: h.disk_percent,
        status: h.status.clone(),
        received_at: rfc3339(h.at),
    });
    Ok(Json(StatusBody {
        node: detail,
        last_heartbeat,
        config: config_value(&node.config),
    }))
}

#[utoipa::path(get, path = "/api/nodes/{nodeId}/history", tag = "nodes",
    params(("nodeId" = String, Path, description = "Node id", pattern = "^(?!(heartbeat|inventory|me|sparks)$)[A-Za-z0-9._-]{1,64}$"), LimitQuery),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "The last `limit` (default 50, at most 1000) heartbeats, oldest first", body = HistoryBody),
        (status = 400, description = "Malformed nodeId or limit", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 404, description = "Unknown node", body = ErrorBody),
        (status = 503, description = "Acknowledged heartbeats could not reach the database within 5 s", body = ErrorBody)))]
pub async fn history(
    State(state): State<AppState>,
    _: CurrentUser,
    Path(node_id): Path<String>,
    Query(query): Query<LimitQuery>,
) -> ApiResult<Json<HistoryBody>> {
    known_node(&state, &node_id)?;
    let limit = parse_limit(query.limit.as_deref(), 50, 1000)?;
    settled(&state).await?;
    let mut conn = state.store.conn().await?;
    let rows = nodes::history(&mut conn, &node_id, limit).await?;
    let history = rows
        .into_iter()
        .map(|h| HistoryPoint {
            at: rfc3339(h.at),
            cpu_percent: h.cpu_percent,
            ram_percent: h.ram_percent,
            disk_percent: h.disk_percent,
            status: h.status,
        })
        .collect();
    Ok(Json(HistoryBody { history }))
}

#[utoipa::path(get, path = "/api/nodes/{nodeId}/activity", tag = "nodes",
    params(("nodeId" = String, Path, description = "Node id", pattern = "^(?!(heartbeat|inventory|me|sparks)$)[A-Za-z0-9._-]{1,64}$")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "The node's 8 most recent events, newest first", body = ActivityBody),
        (status = 400, description = "Malformed nodeId", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 404, description = "Unknown node", body = ErrorBody),
        (status = 503, description = "Acknowledged heartbeats could not reach the database within 5 s", body = ErrorBody)))]
pub async fn activity(
    State(state): State<AppState>,
    _: CurrentUser,
    Path(node_id): Path<String>,
) -> ApiResult<Json<ActivityBody>> {
    known_node(&state, &node_id)?;
    settled(&state).await?;
    let mut conn = state.store.conn().await?;
    let events = nodes::events(&mut conn, &node_id, 8)
        .await?
        .into_iter()
        .map(|e| {
            let mut event = match serde_json::from_str::<Value>(&e.metadata) {
                Ok(Value::Object(map)) => map,
                _ => Map::new(),
            };
            event.insert("id".into(), e.id.into());
            event.insert("nodeId".into(), e.node_id.into());
            event.insert("type".into(), e.kind.into());
            event.insert("severity".into(), e.severity.into());
            event.insert("message".into(), e.message.into());
            event.insert("at".into(), rfc3339(e.at).into());
            Value::Object(event)
        })
        .collect();
    Ok(Json(ActivityBody { events }))
}

#[utoipa::path(get, path = "/api/nodes/me/config", tag = "nodes", security(("nodeToken" = [])),
    responses(
        (status = 200, description = "The agent config of the token's node", body = NodeConfigBody),
        (status = 400, description = "A fleet-wide token has no node of its own", body = ErrorBody),
        (status = 401, description = "No valid node token", body = ErrorBody)))]
pub async fn my_config(
    State(state): State<AppState>,
    NodeAuth(node): NodeAuth,
) -> ApiResult<Json<NodeConfigBody>> {
    let Some(node_id) = node.pinned else {
        return Err(ApiError::bad_request(
            "a fleet-wide token has no node of its own; use a token pinned to this node",
        ));
    };
    let config = state
        .fleet
        .get(&node_id)
        .map_or_else(|| Value::Object(Map::new()), |s| config_value(&s.node.config));
    Ok(Json(config_body(config)?))
}

/// RFC 7386: `null` removes a key, an object merges recursively, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(target) = target {
        for (key, value) in patch {
            if value.is_null() {
                target.remove(key);
            } else {
                merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// The largest config kept for a node (its JSON text).
const MAX_CONFIG_BYTES: usize = 64 * 1024;

/// The agent config keys and their rules. Other keys are kept as given, unvalidated (a newer agent
/// may read them); only their total size is bounded.
fn validate_config(config: &Map<String, Value>) -> Result<(), ApiError> {
    if serde_json::to_vec(config).map_or(usize::MAX, |v| v.len()) > MAX_CONFIG_BYTES {
        return Err(ApiError::BadRequest(format!(
            "config must be at most {MAX_CONFIG_BYTES} bytes of JSON"
        )));
    }
    for (key, value) in config {
        match key.as_str() {
            "tls_paths" => {
                let paths = value
                    .as_array()
                    .ok_or_else(|| ApiError::bad_request("tls_paths must be a list of absolute paths"))?;
                let valid = |p: &Value| {
                    p.as_str()
                        .is_some_and(|p| p.starts_with('/') && p.len() <= 4096 && !p.contains('\0'))
                };
                if paths.len() > 256 || !paths.iter().all(valid) {
                    return Err(ApiError::bad_request(
                        "tls_paths must be a list of absolute paths",
                    ));
                }
            }
            "scan_interval" | "heartbeat_interval"
                if !value.as_i64().is_some_and(|v| (10..=86_400).contains(&v)) =>
            {
                return Err(ApiError::BadRequest(format!(
                    "{key} must be a whole number of seconds from 10 to 86400"
                )));
            }
            _ => {}
        }
    }
    Ok(())
}

fn node_event(actor: &Identity, action: &str, node_id: &str, ip: ClientIp, metadata: Value) -> NewAuditEvent {
    crate::auth::audit::audit_event(
        Some(&actor.user),
        action,
        Some(("node", node_id)),
        ip,
        Some(metadata),
    )
}

#[utoipa::path(patch, path = "/api/nodes/{nodeId}/config", tag = "nodes",
    params(("nodeId" = String, Path, description = "Node id", pattern = "^(?!(heartbeat|inventory|me|sparks)$)[A-Za-z0-9._-]{1,64}$")),
    request_body(content = hyprbox_proto::nodes::NodeConfig, description = "A JSON merge patch (RFC 7386) of the agent config: `null` clears a key, other keys are kept as given"),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "The config after the patch", body = NodeConfigBody),
        (status = 400, description = "Not an object, or a key breaks its rule (nothing changed)", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Below OPERATOR", body = ErrorBody),
        (status = 404, description = "Unknown node", body = ErrorBody)))]
pub async fn patch_config(
    State(state): State<AppState>,
    Operator(actor): Operator,
    ip: ClientIp,
    Path(node_id): Path<String>,
    Json(patch): Json<Value>,
) -> ApiResult<Json<NodeConfigBody>> {
    known_node(&state, &node_id)?;
    if !patch.is_object() {
        return Err(ApiError::bad_request(
            "the body must be a JSON object (a merge patch)",
        ));
    }
    let mut tx = state.store.begin().await?;
    // Read under the row lock, so two concurrent patches apply one after the other.
    let stored = match nodes::lock_config(&mut tx, &node_id).await? {
        Some(stored) => stored,
        None => {
            // The node's first heartbeat is acknowledged but its row is still in the writer's
            // queue: write it here (the writer's later upsert of the same row changes nothing),
            // so what the list showed can be configured at once.
            let node = known_node(&state, &node_id)?.node.clone();
            nodes::write_batch(&mut tx, &[node], &[], &[]).await?;
            nodes::lock_config(&mut tx, &node_id)
                .await?
                .ok_or_else(|| ApiError::not_found("node"))?
        }
    };
    let mut config = config_value(&stored);
    merge_patch(&mut config, &patch);
    if let Value::Object(map) = &config {
        validate_config(map)?;
    }
    let text = config.to_string();
    nodes::set_config(&mut tx, &node_id, &text).await?;
    audit::record(
        &mut tx,
        &node_event(
            &actor,
            "node.config",
            &node_id,
            ip,
            serde_json::json!({"patch": patch}),
        ),
    )
    .await?;
    tx.commit().await?;
    state.fleet.set_config(&node_id, text);
    state.render_cache.invalidate();
    let body = config_body(config)?;
    // A connected agent acts on it at once (say, scans a new tls_paths entry).
    state.agents.send(
        &node_id,
        &crate::fleet::agent_links::AgentMessage::Config {
            config: body.config.clone(),
        },
    );
    Ok(Json(body))
}

#[utoipa::path(delete, path = "/api/nodes/{nodeId}", tag = "nodes",
    params(("nodeId" = String, Path, description = "Node id", pattern = "^(?!(heartbeat|inventory|me|sparks)$)[A-Za-z0-9._-]{1,64}$")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 204, description = "The node and its history are gone"),
        (status = 400, description = "Malformed nodeId", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Below OPERATOR", body = ErrorBody),
        (status = 404, description = "Unknown node", body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Operator(actor): Operator,
    ip: ClientIp,
    Path(node_id): Path<String>,
) -> ApiResult<StatusCode> {
    known_node(&state, &node_id)?;
    let mut tx = state.store.begin().await?;
    nodes::delete(&mut tx, &node_id).await?;
    hyprbox_store::findings::delete_for_node(&mut tx, &node_id).await?;
    audit::record(
        &mut tx,
        &node_event(&actor, "node.delete", &node_id, ip, serde_json::json!({})),
    )
    .await?;
    tx.commit().await?;
    // Forgotten in memory only once the database agrees (a failed commit leaves the node whole).
    state.fleet.remove(&node_id);
    // Rows of this node still queued would bring it back: the writer drops them and deletes again
    // after what it had already taken.
    state.writer.queue(Pending::Forget(node_id.clone())).await;
    state.render_cache.invalidate();
    // Its queued jobs can never run now; the reaper would catch them too, later.
    let queued = {
        let mut conn = state.store.conn().await?;
        let filter = hyprbox_store::jobs::JobFilter {
            node_id: Some(&node_id),
            status: Some(hyprbox_store::jobs::QUEUED),
            owner: None,
        };
        hyprbox_store::jobs::list(&mut conn, &filter, i64::MAX).await?
    };
    for job in queued {
        crate::jobs::reaper::cancel_for_deleted_node(&state, &job.id, now_ms()).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut target = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut target, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(target, json!({"a": "z", "c": {"d": "e"}}));
        let mut target = json!({"a": [1, 2]});
        merge_patch(&mut target, &json!({"a": [3], "b": {"x": 1}}));
        assert_eq!(target, json!({"a": [3], "b": {"x": 1}}));
        let mut target = json!({"a": 1});
        merge_patch(&mut target, &json!({"a": null, "n": null}));
        assert_eq!(target, json!({}));
    }

    #[test]
    fn config_keys_are_checked() {
        let ok = json!({"tls_paths": ["/etc/ssl/a.pem"], "scan_interval": 60, "heartbeat_interval": 10});
        assert!(validate_config(ok.as_object().unwrap()).is_ok());
        for bad in [
            json!({"tls_paths": ["relative.pem"]}),
            json!({"tls_paths": "/etc/ssl"}),
            json!({"scan_interval": 9}),
            json!({"heartbeat_interval": 86_401}),
            json!({"scan_interval": 60.5}),
            json!({"big": "x".repeat(MAX_CONFIG_BYTES)}),
        ] {
            assert!(validate_config(bad.as_object().unwrap()).is_err(), "{bad}");
        }
        let unknown = json!({"log_level": "debug", "scan_interval": 60});
        assert!(validate_config(unknown.as_object().unwrap()).is_ok());
    }

    #[test]
    fn limits_are_whole_numbers_in_range() {
        assert_eq!(parse_limit(None, 24, 100).unwrap(), 24);
        assert_eq!(parse_limit(Some("100"), 24, 100).unwrap(), 100);
        for bad in ["0", "101", "-1", "ten", "2.5"] {
            assert!(parse_limit(Some(bad), 24, 100).is_err(), "{bad}");
        }
    }
}
