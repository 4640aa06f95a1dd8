//! `GET /api/audit` (ADMIN only): the append-only event log, paged as JSON or exported as CSV; and
//! [`audit_event`], how every handler describes what it writes to that log.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use hyprbox_store::audit::{self, AuditEvent, AuditFilter};
use hyprbox_store::users::User;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Admin;
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::{Json, Query};
use crate::http::time::rfc3339;
use crate::state::AppState;

/// An audit event: who (`actor`) did `action` to which resource (type, id), from where.
pub fn audit_event(
    actor: Option<&User>,
    action: &str,
    resource: Option<(&str, &str)>,
    ip: crate::http::extract::ClientIp,
    metadata: Option<serde_json::Value>,
) -> hyprbox_store::audit::NewAuditEvent {
    hyprbox_store::audit::NewAuditEvent {
        user_id: actor.map(|u| u.id.clone()),
        user_email: actor.map(|u| u.email.clone()),
        action: action.into(),
        resource_type: resource.map(|(kind, _)| kind.to_string()),
        resource_id: resource.map(|(_, id)| id.to_string()),
        ip: Some(ip.0.to_string()),
        metadata: metadata.map(|m| m.to_string()),
    }
}

const PAGE_SIZE: i64 = 50;
const CSV_MAX_ROWS: i64 = 10_000;

#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// A user id or email.
    pub user: Option<String>,
    pub action: Option<String>,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    /// 1-based page of 50 events.
    pub page: Option<String>,
    /// `json` (default) or `csv`.
    pub format: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEventBody {
    pub id: String,
    pub at: String,
    pub user_id: Option<String>,
    pub user_email: Option<String>,
    pub action: String,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub ip: Option<String>,
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
}

#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    pub events: Vec<AuditEventBody>,
    pub page: i64,
    pub total: i64,
}

impl From<AuditEvent> for AuditEventBody {
    fn from(e: AuditEvent) -> Self {
        AuditEventBody {
            id: e.id,
            at: rfc3339(e.at),
            user_id: e.user_id,
            user_email: e.user_email,
            action: e.action,
            resource_type: e.resource_type,
            resource_id: e.resource_id,
            ip: e.ip,
            metadata: serde_json::from_str(&e.metadata).unwrap_or_else(|_| serde_json::json!({})),
        }
    }
}

/// A CSV cell: quoted, with a leading `'` when a spreadsheet would read it as a formula.
pub fn csv_cell(value: &str) -> String {
    let neutralised = if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value.to_string()
    };
    format!("\"{}\"", neutralised.replace('"', "\"\""))
}

fn csv(events: Vec<AuditEvent>) -> String {
    let mut out = String::from("id,at,userId,userEmail,action,resourceType,resourceId,ip,metadata\r\n");
    for e in events {
        let at = rfc3339(e.at);
        let cells = [
            e.id.as_str(),
            at.as_str(),
            e.user_id.as_deref().unwrap_or(""),
            e.user_email.as_deref().unwrap_or(""),
            e.action.as_str(),
            e.resource_type.as_deref().unwrap_or(""),
            e.resource_id.as_deref().unwrap_or(""),
            e.ip.as_deref().unwrap_or(""),
            e.metadata.as_str(),
        ];
        out.push_str(&cells.map(csv_cell).join(","));
        out.push_str("\r\n");
    }
    out
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

#[utoipa::path(get, path = "/api/audit", tag = "audit", params(AuditQuery),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "A page of events, newest first (or text/csv with format=csv)", body = AuditPage),
        (status = 400, description = "Invalid page or format", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Not an ADMIN", body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    _: Admin,
    Query(query): Query<AuditQuery>,
) -> ApiResult<Response> {
    let page = match non_empty(query.page) {
        None => 1,
        Some(p) => p
            .parse::<i64>()
            .ok()
            .filter(|p| (1..=1_000_000).contains(p))
            .ok_or_else(|| ApiError::bad_request("page must be a whole number >= 1"))?,
    };
    let csv_wanted = match non_empty(query.format).as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => return Err(ApiError::bad_request("format must be json or csv")),
    };
    let filter = AuditFilter {
        user: non_empty(query.user),
        action: non_empty(query.action),
        resource_type: non_empty(query.resource_type),
        resource_id: non_empty(query.resource_id),
    };
    for value in [
        &filter.user,
        &filter.action,
        &filter.resource_type,
        &filter.resource_id,
    ]
    .into_iter()
    .flatten()
    {
        if value.len() > 256 || value.chars().any(char::is_control) {
            return Err(ApiError::bad_request(
                "filters must be at most 256 characters without control characters",
            ));
        }
    }
    let mut conn = state.store.conn().await?;
    if csv_wanted {
        let events = audit::export(&mut conn, &filter, CSV_MAX_ROWS).await?;
        return Ok((
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (header::CONTENT_DISPOSITION, "attachment; filename=\"audit.csv\""),
            ],
            csv(events),
        )
            .into_response());
    }
    let (events, total) = audit::page(&mut conn, &filter, PAGE_SIZE, (page - 1) * PAGE_SIZE).await?;
    Ok(Json(AuditPage {
        events: events.into_iter().map(AuditEventBody::from).collect(),
        page,
        total,
    })
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::csv_cell;

    #[test]
    fn cells_that_start_like_a_formula_are_neutralised() {
        for dangerous in ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"] {
            assert_eq!(csv_cell(dangerous), format!("\"'{dangerous}\""));
        }
        assert_eq!(csv_cell("plain"), "\"plain\"");
        assert_eq!(csv_cell("a\"b"), "\"a\"\"b\"");
        assert_eq!(csv_cell("=\"x\""), "\"'=\"\"x\"\"\"");
    }
}
