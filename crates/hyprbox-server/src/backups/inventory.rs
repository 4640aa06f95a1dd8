//! `POST /api/nodes/inventory`: the containers a node's agent found, cross-checked against the
//! node's backup policies. A running PostgreSQL container that no policy covers raises
//! `postgres.no-backup` (key `container:<name>`, WARN); it resolves itself once a policy covers the
//! container, or the container is gone or stopped.
//!
//! A policy of the node covers a container when the container's name is the policy's name or one
//! of the components of its paths (`/srv/backups/<name>`, `/var/lib/docker/volumes/<name>`), or
//! when it backs up the directory `postgres-backup` dumps into (`/var/backups/postgres` or a parent).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hyprbox_proto::nodes::{Container, Inventory, InventoryAccepted, is_postgres_image};
use hyprbox_proto::validate_node_id;
use hyprbox_store::backups::{self, Policy};
use hyprbox_store::findings::{Reported, WARN};
use hyprbox_store::now_ms;
use serde_json::json;

use crate::auth::NodeAuth;
use crate::auth::node_tokens::NodeIdentity;
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::{ClientIp, Json};
use crate::state::AppState;

pub const FINDING: &str = "postgres.no-backup";
/// Where the `postgres-backup` preset writes its dumps by default.
const DUMP_DIR: &str = "/var/backups/postgres";
const MAX_CONTAINERS: usize = 1000;
const MAX_LABELS: usize = 200;

fn check(i: usize, c: &Container) -> Result<(), ApiError> {
    let fields = [
        ("id", c.id.as_str(), 128),
        ("name", c.name.as_str(), 256),
        ("image", c.image.as_str(), 512),
        ("state", c.state.as_str(), 64),
    ];
    for (field, value, max) in fields {
        if value.is_empty() || value.len() > max || value.chars().any(char::is_control) {
            return Err(ApiError::bad_request(format!(
                "containers[{i}].{field} must be 1 to {max} bytes without control characters"
            )));
        }
    }
    let labels = c.labels.as_ref().map_or(0, BTreeMap::len);
    if labels > MAX_LABELS
        || c.labels
            .iter()
            .flatten()
            .any(|(k, v)| k.len() > 1024 || v.len() > 4096)
    {
        return Err(ApiError::bad_request(format!(
            "containers[{i}].labels must hold at most {MAX_LABELS} labels (keys up to 1 KiB, values up to 4 KiB)"
        )));
    }
    Ok(())
}

#[utoipa::path(post, path = "/api/nodes/inventory", tag = "nodes", request_body = Inventory,
    security(("nodeToken" = [])),
    responses(
        (status = 202, description = "Stored (replacing the node's previous list) and cross-checked against its backup policies", body = InventoryAccepted),
        (status = 400, description = "A field breaks its rule (the message names it), or more than 1000 containers", body = ErrorBody),
        (status = 401, description = "No valid node token", body = ErrorBody),
        (status = 403, description = "The token is pinned to another node", body = ErrorBody),
        (status = 404, description = "Unknown node: it has not sent a heartbeat yet", body = ErrorBody),
        (status = 429, description = "Rate-limited per (token, node)", body = ErrorBody)))]
pub async fn report(
    State(state): State<AppState>,
    NodeAuth(node): NodeAuth,
    ip: ClientIp,
    Json(body): Json<Inventory>,
) -> Response {
    if let Err(message) = validate_node_id("nodeId", &body.node_id) {
        return ApiError::BadRequest(message).into_response();
    }
    let node_id = body.node_id.clone();
    let work = async { store(&state, &node, body).await.into_response() };
    crate::http::gate::charge_node(&state, Some(&node), &node_id, ip, work).await
}

async fn store(
    state: &AppState,
    node: &NodeIdentity,
    body: Inventory,
) -> ApiResult<(StatusCode, Json<InventoryAccepted>)> {
    if !node.may_act_for(&body.node_id) {
        return Err(ApiError::Forbidden("this token is pinned to another node".into()));
    }
    if body.containers.len() > MAX_CONTAINERS {
        return Err(ApiError::bad_request(format!(
            "containers must hold at most {MAX_CONTAINERS} entries"
        )));
    }
    for (i, container) in body.containers.iter().enumerate() {
        check(i, container)?;
    }
    if !state.fleet.contains(&body.node_id) {
        return Err(ApiError::NotFound(
            "unknown node: it registers with its first heartbeat".into(),
        ));
    }
    let count = body.containers.len();
    let rows: Vec<backups::Container> = body
        .containers
        .into_iter()
        .map(|c| backups::Container {
            labels: json!(c.labels.unwrap_or_default()).to_string(),
            id: c.id,
            name: c.name,
            image: c.image,
            state: c.state,
        })
        .collect();
    let node_id = body.node_id;
    let stored_for = node_id.clone();
    state
        .store
        .write(move |tx| {
            Box::pin(async move { backups::replace_containers(tx, &stored_for, &rows, now_ms()).await })
        })
        .await?;
    recheck_node(state, &node_id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(InventoryAccepted {
            received: true,
            containers: count,
        }),
    ))
}

/// Whether `policy` backs up the container named `name` (see the module comment).
fn covers(policy: &Policy, name: &str) -> bool {
    if policy.name.eq_ignore_ascii_case(name) {
        return true;
    }
    let paths: Vec<String> = serde_json::from_str(&policy.paths).unwrap_or_default();
    paths.iter().any(|path| {
        let trimmed = path.trim_end_matches('/');
        path.split('/').any(|part| part == name)
            || DUMP_DIR == trimmed
            || DUMP_DIR.starts_with(&format!("{trimmed}/"))
            || trimmed.is_empty()
    })
}

/// Raises `postgres.no-backup` for the node's uncovered running PostgreSQL containers and resolves
/// the rest, in one report that fully covers the type.
pub async fn recheck_node(state: &AppState, node_id: &str) -> Result<(), ApiError> {
    let (containers, policies) = {
        let mut conn = state.store.conn().await?;
        (
            backups::containers(&mut conn, node_id).await?,
            backups::of_node(&mut conn, node_id).await?,
        )
    };
    let batch: Vec<Reported> = containers
        .iter()
        .filter(|c| c.state == "running" && is_postgres_image(&c.image))
        .filter(|c| !policies.iter().any(|p| covers(p, &c.name)))
        .map(|c| Reported {
            kind: FINDING.into(),
            key: format!("container:{}", c.name),
            severity: WARN.into(),
            title: format!("PostgreSQL container \"{}\" has no backup", c.name),
            message: format!(
                "The container \"{}\" runs {} and no backup policy of this node covers it: dump it \
                 (postgres-backup) and back the dumps up with a HyprVault policy.",
                c.name, c.image
            ),
            related_entities: json!([{ "type": "container", "id": c.id, "name": c.name }]).to_string(),
            metadata: json!({ "container": c.name, "image": c.image, "containerId": c.id }).to_string(),
        })
        .collect();
    crate::findings::report_own(state, node_id, batch, &[FINDING.to_owned()]).await
}

/// [`recheck_node`] after a policy of the node changed; a failure is logged, not answered (the
/// policy change itself is done, and the next inventory report rechecks).
pub async fn recheck(state: &AppState, node_id: &str) {
    if let Err(err) = recheck_node(state, node_id).await {
        tracing::warn!(node_id, error = %err, "cannot recheck the node's containers against its backups");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(name: &str, paths: &[&str]) -> Policy {
        Policy {
            id: "p".into(),
            name: name.into(),
            node_id: "n".into(),
            paths: serde_json::to_string(paths).unwrap(),
            schedule: None,
            repo_url: "/srv/restic".into(),
            password_ref: "env:X".into(),
            keep_daily: 7,
            keep_weekly: 4,
            keep_monthly: 6,
            created_by: "u".into(),
            created_at: 0,
            updated_at: 0,
            next_run_at: None,
            stale_after_ms: 0,
            last_success_at: None,
        }
    }

    #[test]
    fn a_policy_covers_a_container_it_names_or_whose_dumps_it_backs_up() {
        assert!(covers(&policy("db", &["/etc"]), "db"));
        assert!(covers(&policy("x", &["/var/lib/docker/volumes/db/_data"]), "db"));
        assert!(covers(&policy("x", &["/var/backups/postgres"]), "db"));
        assert!(covers(&policy("x", &["/var/backups/"]), "db"));
        assert!(covers(&policy("x", &["/"]), "db"));
        assert!(!covers(&policy("x", &["/etc", "/home/db-notes"]), "db"));
        assert!(!covers(&policy("x", &["/var/backups/postgres-old"]), "db"));
    }
}
