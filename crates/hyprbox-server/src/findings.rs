//! `/api/findings`: agents report what their scanners found (node-auth); users list and read them
//! with the preset that fixes each; operators snooze or resolve them; the findings health summary
//! (`/api/findings/health/summary`) buckets every node by its worst active finding.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyprbox_proto::validate_node_id;
use hyprbox_store::findings::{self, Finding, FindingFilter, Reported};
use hyprbox_store::nodes::NodeEvent;
use hyprbox_store::{audit, new_id, now_ms};
use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::IntoParams;

use crate::auth::audit::audit_event;
use crate::auth::{CurrentUser, NodeAuth, Operator};
use crate::fleet::writer::Pending;
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::{ClientIp, Json, Query};
use crate::http::time::rfc3339;
use crate::state::AppState;
use hyprbox_proto::findings::{
    FindingBody, FindingDetail, FindingEnvelope, FindingsBody, NodeHealth, Recommendation, ReportAccepted,
    ReportBody, ReportedFinding, SeverityCounts, SnoozeBody, SummaryBody,
};

/// Findings one report may carry.
pub const MAX_BATCH: usize = 500;
/// Findings one list answers with at most.
const LIST_LIMIT: i64 = 1000;
const MAX_MESSAGE_CHARS: usize = 4000;
const HOURS_RULE: &str = "hours must be a whole number from 1 to 720";

/// The finding object of the contract, from its row.
fn finding_body(f: &Finding) -> FindingBody {
    FindingBody {
        id: f.id.clone(),
        node_id: f.node_id.clone(),
        kind: f.kind.clone(),
        key: f.key.clone(),
        severity: f.severity.clone(),
        status: f.status.clone(),
        title: f.title.clone(),
        message: f.message.clone(),
        related_entities: serde_json::from_str(&f.related_entities).unwrap_or(Value::Array(Vec::new())),
        metadata: serde_json::from_str(&f.metadata).unwrap_or(Value::Object(Map::new())),
        detected_at: rfc3339(f.detected_at),
        last_seen_at: rfc3339(f.last_seen_at),
        snoozed_until: f.snoozed_until.map(rfc3339),
        resolved_at: f.resolved_at.map(rfc3339),
        resolved_by_user_id: f.resolved_by_user_id.clone(),
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct ListQuery {
    pub node_id: Option<String>,
    /// `INFO`, `WARN` or `CRITICAL`.
    pub severity: Option<String>,
    /// `all` adds RESOLVED findings and those still snoozed.
    pub include: Option<String>,
}

/// `[a-z0-9._-]{1,64}`, the alphabet of finding types (and of presets' `fixes`).
fn valid_type(kind: &str) -> bool {
    !kind.is_empty()
        && kind.len() <= 64
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
}

fn check_type(field: &str, kind: &str) -> Result<(), ApiError> {
    if valid_type(kind) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "{field} must be 1 to 64 characters of a-z, 0-9, '.', '_' and '-'"
        )))
    }
}

fn check_length(field: &str, value: &str, min: usize, max: usize) -> Result<(), ApiError> {
    let n = value.chars().count();
    if n < min || n > max {
        return Err(ApiError::bad_request(if min == 0 {
            format!("{field} must be at most {max} characters")
        } else {
            format!("{field} must be {min} to {max} characters")
        }));
    }
    Ok(())
}

/// Checks one reported finding and turns it into the store's form.
pub fn reported(index: usize, f: ReportedFinding) -> Result<Reported, ApiError> {
    let field = |name: &str| format!("findings[{index}].{name}");
    check_type(&field("type"), &f.kind)?;
    check_length(&field("key"), &f.key, 1, 255)?;
    if !findings::SEVERITIES.contains(&f.severity.as_str()) {
        return Err(ApiError::bad_request(format!(
            "{} must be one of INFO, WARN, CRITICAL",
            field("severity")
        )));
    }
    check_length(&field("title"), &f.title, 1, 255)?;
    check_length(&field("message"), &f.message, 0, MAX_MESSAGE_CHARS)?;
    let related = match f.related_entities {
        None | Some(Value::Null) => Value::Array(Vec::new()),
        Some(value @ (Value::Array(_) | Value::Object(_))) => value,
        Some(_) => {
            return Err(ApiError::bad_request(format!(
                "{} must be an array or an object",
                field("relatedEntities")
            )));
        }
    };
    let metadata = match f.metadata {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(value @ Value::Object(_)) => value,
        Some(_) => {
            return Err(ApiError::bad_request(format!(
                "{} must be an object",
                field("metadata")
            )));
        }
    };
    Ok(Reported {
        kind: f.kind,
        key: f.key,
        severity: f.severity,
        title: f.title,
        message: f.message,
        related_entities: related.to_string(),
        metadata: metadata.to_string(),
    })
}

/// A finding opened or resolved, in the node's activity (stored) and on the fleet stream.
async fn publish(state: &AppState, finding: &Finding, kind: &str, severity: &str, message: String) {
    let event = NodeEvent {
        id: new_id(),
        node_id: finding.node_id.clone(),
        at: now_ms(),
        kind: kind.into(),
        severity: severity.into(),
        message,
        metadata: serde_json::json!({
            "findingId": finding.id,
            "findingType": finding.kind,
            "key": finding.key,
        })
        .to_string(),
    };
    if state.hub.has_subscribers() {
        state.hub.publish_activity(&event);
    }
    state.writer.queue(Pending::Event(event)).await;
}

async fn publish_opened(state: &AppState, finding: &Finding) {
    let message = format!("Finding opened: {}", finding.title);
    publish(state, finding, "finding.opened", &finding.severity, message).await;
}

async fn publish_resolved(state: &AppState, finding: &Finding) {
    let message = format!("Finding resolved: {}", finding.title);
    publish(state, finding, "finding.resolved", findings::INFO, message).await;
}

/// Findings the server raises itself (backups, inventory), stored as an agent's report would be:
/// `complete` types absent from `batch` resolve. Openings and resolutions are announced.
pub(crate) async fn report_own(
    state: &AppState,
    node_id: &str,
    batch: Vec<Reported>,
    complete: &[String],
) -> Result<(), ApiError> {
    let done = findings::upsert_batch(&state.store, node_id, &batch, complete, now_ms()).await?;
    for finding in &done.opened {
        publish_opened(state, finding).await;
    }
    for finding in &done.resolved {
        publish_resolved(state, finding).await;
    }
    Ok(())
}

/// One finding the server raises itself; see [`report_own`].
pub(crate) async fn raise(state: &AppState, node_id: &str, finding: Reported) -> Result<(), ApiError> {
    report_own(state, node_id, vec![finding], &[]).await
}

/// Resolves a finding the server raised once its cause is gone; announced when it was open.
pub(crate) async fn clear(state: &AppState, node_id: &str, kind: &str, key: &str) -> Result<(), ApiError> {
    let (node_id, kind, key) = (node_id.to_owned(), kind.to_owned(), key.to_owned());
    let cleared = state
        .store
        .write(move |tx| Box::pin(async move { findings::clear(tx, &node_id, &kind, &key, now_ms()).await }))
        .await?;
    if let Some(finding) = cleared {
        publish_resolved(state, &finding).await;
    }
    Ok(())
}

#[utoipa::path(post, path = "/api/findings", tag = "findings", request_body = ReportBody,
    security(("nodeToken" = [])),
    responses(
        (status = 202, description = "Stored: each (nodeId, type, key) updates its row; complete types' absent OPEN (or snoozed) findings resolve", body = ReportAccepted),
        (status = 400, description = "A field breaks its rule (the message names it), or more than 500 findings", body = ErrorBody),
        (status = 401, description = "No valid node token", body = ErrorBody),
        (status = 403, description = "The token is pinned to another node", body = ErrorBody),
        (status = 429, description = "Rate-limited per (token, node)", body = ErrorBody)))]
pub async fn report(
    State(state): State<AppState>,
    NodeAuth(node): NodeAuth,
    ip: ClientIp,
    Json(body): Json<ReportBody>,
) -> Response {
    if let Err(message) = validate_node_id("nodeId", &body.node_id) {
        return ApiError::BadRequest(message).into_response();
    }
    // The node is in the body, so the gate left the charge to us: a fleet-wide token serves
    // many nodes, each with its own budget (as heartbeats).
    let node_id = body.node_id.clone();
    let work = async { store_report(&state, body).await.into_response() };
    crate::http::gate::charge_node(&state, Some(&node), &node_id, ip, work).await
}

async fn store_report(state: &AppState, body: ReportBody) -> ApiResult<(StatusCode, Json<ReportAccepted>)> {
    if body.findings.len() > MAX_BATCH {
        return Err(ApiError::bad_request(format!(
            "findings must hold at most {MAX_BATCH} entries"
        )));
    }
    for (i, kind) in body.complete.iter().enumerate() {
        check_type(&format!("complete[{i}]"), kind)?;
    }
    let batch = body
        .findings
        .into_iter()
        .enumerate()
        .map(|(i, f)| reported(i, f))
        .collect::<Result<Vec<_>, _>>()?;
    let done = findings::upsert_batch_capped(
        &state.store,
        &body.node_id,
        &batch,
        &body.complete,
        now_ms(),
        Some(state.settings.max_findings_per_node),
    )
    .await?;
    for finding in &done.opened {
        publish_opened(state, finding).await;
    }
    for finding in &done.resolved {
        publish_resolved(state, finding).await;
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(ReportAccepted {
            received: true,
            upserted: done.upserted,
        }),
    ))
}

#[utoipa::path(get, path = "/api/findings", tag = "findings", params(ListQuery),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "Active findings (OPEN, or snoozed past the deadline), CRITICAL → WARN → INFO then newest first; at most 1000", body = FindingsBody),
        (status = 400, description = "Invalid nodeId, severity or include", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    _user: CurrentUser,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<FindingsBody>> {
    let node_id = query.node_id.as_deref().filter(|s| !s.is_empty());
    if let Some(node_id) = node_id {
        validate_node_id("nodeId", node_id).map_err(ApiError::BadRequest)?;
    }
    let severity = query.severity.as_deref().filter(|s| !s.is_empty());
    if let Some(severity) = severity
        && !findings::SEVERITIES.contains(&severity)
    {
        return Err(ApiError::bad_request(
            "severity must be one of INFO, WARN, CRITICAL",
        ));
    }
    let include_all = match query.include.as_deref() {
        None | Some("") => false,
        Some("all") => true,
        Some(_) => return Err(ApiError::bad_request("include must be all")),
    };
    let filter = FindingFilter {
        node_id,
        severity,
        include_all,
    };
    let mut conn = state.store.conn().await?;
    let rows = findings::list(&mut conn, &filter, now_ms(), LIST_LIMIT).await?;
    Ok(Json(FindingsBody {
        findings: rows.iter().map(finding_body).collect(),
    }))
}

async fn existing(state: &AppState, id: &str) -> Result<Finding, ApiError> {
    if !crate::auth::users::plausible_id(id) {
        return Err(ApiError::not_found("finding"));
    }
    let mut conn = state.store.conn().await?;
    findings::get(&mut conn, id)
        .await?
        .ok_or_else(|| ApiError::not_found("finding"))
}

/// The first preset fixing the finding's type, its variables pre-filled from the metadata.
fn recommend(state: &AppState, finding: &Finding) -> Option<Recommendation> {
    let preset = state.presets.fixing(&finding.kind).next()?;
    let metadata: Map<String, Value> = serde_json::from_str(&finding.metadata).unwrap_or_default();
    let variables = preset
        .variables
        .iter()
        .map(|v| {
            let value = metadata
                .get(&v.name)
                .cloned()
                .or_else(|| v.default.clone())
                .unwrap_or(Value::Null);
            (v.name.clone(), value)
        })
        .collect();
    Some(Recommendation {
        preset_name: preset.name.clone(),
        risk: preset.risk.as_str().to_string(),
        description: preset.description.clone(),
        variables,
    })
}

#[utoipa::path(get, path = "/api/findings/{id}", tag = "findings",
    params(("id" = String, Path, description = "Finding id")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "The finding and the preset that fixes it (or null)", body = FindingDetail),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 404, description = "No such finding", body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    _user: CurrentUser,
    Path(id): Path<String>,
) -> ApiResult<Json<FindingDetail>> {
    let finding = existing(&state, &id).await?;
    Ok(Json(FindingDetail {
        recommendation: recommend(&state, &finding),
        finding: finding_body(&finding),
    }))
}

/// `hours` from an optional JSON body: no body (or `{}`) means 24.
fn snooze_hours(headers: &HeaderMap, body: &[u8]) -> Result<i64, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(24);
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"));
    if !json {
        return Err(ApiError::bad_request("Content-Type must be application/json"));
    }
    let parsed: SnoozeBody = serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::bad_request(HOURS_RULE),
        _ => ApiError::bad_request(format!("malformed JSON: {e}")),
    })?;
    let hours = parsed.hours.unwrap_or(24);
    if !(1..=720).contains(&hours) {
        return Err(ApiError::bad_request(HOURS_RULE));
    }
    Ok(hours)
}

#[utoipa::path(post, path = "/api/findings/{id}/snooze", tag = "findings", request_body = SnoozeBody,
    params(("id" = String, Path, description = "Finding id")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "SNOOZED until now + hours; it shows again once that passes", body = FindingEnvelope),
        (status = 400, description = "hours is not a whole number from 1 to 720", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Below OPERATOR", body = ErrorBody),
        (status = 404, description = "No such finding", body = ErrorBody),
        (status = 409, description = "The finding is RESOLVED", body = ErrorBody)))]
pub async fn snooze(
    State(state): State<AppState>,
    Operator(actor): Operator,
    ip: ClientIp,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<FindingEnvelope>> {
    let hours = snooze_hours(&headers, &body)?;
    let finding = existing(&state, &id).await?;
    if finding.status == findings::RESOLVED {
        return Err(ApiError::Conflict(
            "the finding is RESOLVED; only an open finding can be snoozed".into(),
        ));
    }
    let until = now_ms() + hours * 3_600_000;
    let mut tx = state.store.begin().await?;
    let Some(finding) = findings::snooze(&mut tx, &finding.id, until).await? else {
        drop(tx);
        // Resolved (or its node deleted) since it was read.
        existing(&state, &finding.id).await?;
        return Err(ApiError::Conflict(
            "the finding is RESOLVED; only an open finding can be snoozed".into(),
        ));
    };
    let metadata = serde_json::json!({ "nodeId": finding.node_id, "type": finding.kind, "hours": hours });
    audit::record(
        &mut tx,
        &audit_event(
            Some(&actor.user),
            "finding.snooze",
            Some(("finding", &finding.id)),
            ip,
            Some(metadata),
        ),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(FindingEnvelope {
        finding: finding_body(&finding),
    }))
}

#[utoipa::path(post, path = "/api/findings/{id}/resolve", tag = "findings",
    params(("id" = String, Path, description = "Finding id")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "RESOLVED by the caller; a later scan that still sees it reopens it. Resolving a RESOLVED finding changes nothing", body = FindingEnvelope),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Below OPERATOR", body = ErrorBody),
        (status = 404, description = "No such finding", body = ErrorBody)))]
pub async fn resolve(
    State(state): State<AppState>,
    Operator(actor): Operator,
    ip: ClientIp,
    Path(id): Path<String>,
) -> ApiResult<Json<FindingEnvelope>> {
    let before = existing(&state, &id).await?;
    let mut tx = state.store.begin().await?;
    let Some(finding) = findings::resolve(&mut tx, &before.id, &actor.user.id, now_ms()).await? else {
        drop(tx);
        // Resolved already (nothing to do, nothing audited), or gone since it was read.
        let current = existing(&state, &before.id).await?;
        return Ok(Json(FindingEnvelope {
            finding: finding_body(&current),
        }));
    };
    let metadata = serde_json::json!({ "nodeId": finding.node_id, "type": finding.kind });
    audit::record(
        &mut tx,
        &audit_event(
            Some(&actor.user),
            "finding.resolve",
            Some(("finding", &finding.id)),
            ip,
            Some(metadata),
        ),
    )
    .await?;
    tx.commit().await?;
    publish_resolved(&state, &finding).await;
    Ok(Json(FindingEnvelope {
        finding: finding_body(&finding),
    }))
}

#[utoipa::path(get, path = "/api/findings/health/summary", tag = "findings",
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "Every known node, by node id, with its bucket and active finding counts", body = SummaryBody),
        (status = 401, description = "Not signed in", body = ErrorBody)))]
pub async fn summary(State(state): State<AppState>, _user: CurrentUser) -> ApiResult<Json<SummaryBody>> {
    let counts = {
        let mut conn = state.store.conn().await?;
        findings::counts(&mut conn, now_ms()).await?
    };
    // Every known node, and any node with active findings that has not sent a heartbeat yet.
    let mut ids = state.fleet.ids();
    ids.extend(counts.keys().cloned());
    ids.sort();
    ids.dedup();
    let summary = ids
        .into_iter()
        .map(|node_id| {
            let c = counts.get(&node_id).copied().unwrap_or_default();
            let bucket = if c.critical > 0 {
                "AT_RISK"
            } else if c.warn > 0 {
                "ATTENTION"
            } else {
                "HEALTHY"
            };
            NodeHealth {
                node_id,
                bucket: bucket.to_string(),
                counts: SeverityCounts {
                    critical: c.critical,
                    warn: c.warn,
                    info: c.info,
                },
            }
        })
        .collect();
    Ok(Json(SummaryBody { summary }))
}
/// How often RESOLVED findings past their retention are pruned.
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(600);
/// Findings deleted per statement.
const PRUNE_BATCH: i64 = 1000;

/// Every ten minutes, deletes RESOLVED findings resolved longer ago than
/// `HYPRBOX_FINDING_RETENTION` (open and snoozed ones stay whatever their age).
pub async fn prune_loop(state: AppState, shutdown: tokio_util::sync::CancellationToken) {
    loop {
        match prune_resolved(&state, hyprbox_store::now_ms()).await {
            Ok(0) => {}
            Ok(findings) => tracing::info!(findings, "pruned resolved findings past their retention"),
            Err(err) => tracing::warn!(error = %err, "pruning findings failed; will retry"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(PRUNE_EVERY) => {}
        }
    }
}

/// Deletes RESOLVED findings resolved before `now - HYPRBOX_FINDING_RETENTION`, in batches through
/// the writer; returns how many went.
pub async fn prune_resolved(state: &AppState, now: i64) -> Result<u64, hyprbox_store::StoreError> {
    let retention = i64::try_from(state.settings.finding_retention.as_millis()).unwrap_or(i64::MAX);
    let before = now.saturating_sub(retention);
    let mut total = 0;
    loop {
        let mut writer = state.store.write_conn().await?;
        let gone = findings::prune_resolved(&mut writer, before, PRUNE_BATCH).await?;
        drop(writer);
        total += gone;
        if gone < u64::try_from(PRUNE_BATCH).unwrap_or(u64::MAX) {
            return Ok(total);
        }
    }
}
