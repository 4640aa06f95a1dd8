//! Nodes (the latest state and agent config of each managed server), their heartbeat history and
//! their activity events.

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::StoreError;

/// A node as stored. Inventory and metric fields are `None` until an agent reports them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Node {
    pub node_id: String,
    pub hostname: Option<String>,
    pub os: Option<String>,
    pub status: Option<String>,
    pub agent_version: Option<String>,
    pub ip: Option<String>,
    pub region: Option<String>,
    pub kernel: Option<String>,
    pub architecture: Option<String>,
    pub cpu_percent: Option<f64>,
    pub ram_percent: Option<f64>,
    pub disk_percent: Option<f64>,
    pub uptime_seconds: Option<i64>,
    /// JSON array of three numbers, as text.
    pub load_avg: Option<String>,
    pub mem_total_bytes: Option<i64>,
    pub disk_total_bytes: Option<i64>,
    /// The agent config, a JSON object as text.
    pub config: String,
    pub created_at: i64,
    pub last_seen_at: i64,
}

/// One heartbeat in the history.
#[derive(Clone, Debug, PartialEq)]
pub struct HeartbeatRow {
    pub node_id: String,
    pub at: i64,
    pub cpu_percent: Option<f64>,
    pub ram_percent: Option<f64>,
    pub disk_percent: Option<f64>,
    pub status: Option<String>,
}

/// An activity event of a node (threshold crossings, reconnects; jobs, backups, findings later).
#[derive(Clone, Debug, PartialEq)]
pub struct NodeEvent {
    pub id: String,
    pub node_id: String,
    pub at: i64,
    pub kind: String,
    pub severity: String,
    pub message: String,
    /// A JSON object as text.
    pub metadata: String,
}

const NODE_COLUMNS: &str = "node_id, hostname, os, status, agent_version, ip, region, kernel, architecture, \
     cpu_percent, ram_percent, disk_percent, uptime_seconds, load_avg, mem_total_bytes, disk_total_bytes, \
     config, created_at, last_seen_at";

/// Rows per multi-row statement: measured fastest on SQLite (see docs/ARCHITECTURE.md).
const CHUNK: usize = 50;

fn node_from_row(row: &AnyRow) -> Result<Node, StoreError> {
    Ok(Node {
        node_id: row.try_get("node_id")?,
        hostname: row.try_get("hostname")?,
        os: row.try_get("os")?,
        status: row.try_get("status")?,
        agent_version: row.try_get("agent_version")?,
        ip: row.try_get("ip")?,
        region: row.try_get("region")?,
        kernel: row.try_get("kernel")?,
        architecture: row.try_get("architecture")?,
        cpu_percent: row.try_get("cpu_percent")?,
        ram_percent: row.try_get("ram_percent")?,
        disk_percent: row.try_get("disk_percent")?,
        uptime_seconds: row.try_get("uptime_seconds")?,
        load_avg: row.try_get("load_avg")?,
        mem_total_bytes: row.try_get("mem_total_bytes")?,
        disk_total_bytes: row.try_get("disk_total_bytes")?,
        config: row.try_get("config")?,
        created_at: row.try_get("created_at")?,
        last_seen_at: row.try_get("last_seen_at")?,
    })
}

/// Every node (loaded once at start into the in-memory fleet state).
pub async fn all(conn: &mut AnyConnection) -> Result<Vec<Node>, StoreError> {
    let sql = format!("SELECT {NODE_COLUMNS} FROM nodes ORDER BY node_id");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(&mut *conn)
        .await?;
    rows.iter().map(node_from_row).collect()
}

/// Writes a batch: node upserts (one row per node; inventory kept unless sent), heartbeat rows and
/// events, each as multi-row statements of [`CHUNK`] rows. Call inside a transaction.
pub async fn write_batch(
    conn: &mut AnyConnection,
    nodes: &[Node],
    heartbeats: &[HeartbeatRow],
    events: &[NodeEvent],
) -> Result<(), StoreError> {
    for chunk in nodes.chunks(CHUNK) {
        let mut sql = format!("INSERT INTO nodes ({NODE_COLUMNS}) VALUES ");
        push_placeholders(&mut sql, chunk.len(), 19);
        sql.push_str(
            " ON CONFLICT (node_id) DO UPDATE SET \
             hostname = COALESCE(excluded.hostname, nodes.hostname), \
             os = COALESCE(excluded.os, nodes.os), \
             status = COALESCE(excluded.status, nodes.status), \
             agent_version = COALESCE(excluded.agent_version, nodes.agent_version), \
             ip = COALESCE(excluded.ip, nodes.ip), \
             region = COALESCE(excluded.region, nodes.region), \
             kernel = COALESCE(excluded.kernel, nodes.kernel), \
             architecture = COALESCE(excluded.architecture, nodes.architecture), \
             cpu_percent = COALESCE(excluded.cpu_percent, nodes.cpu_percent), \
             ram_percent = COALESCE(excluded.ram_percent, nodes.ram_percent), \
             disk_percent = COALESCE(excluded.disk_percent, nodes.disk_percent), \
             uptime_seconds = COALESCE(excluded.uptime_seconds, nodes.uptime_seconds), \
             load_avg = COALESCE(excluded.load_avg, nodes.load_avg), \
             mem_total_bytes = COALESCE(excluded.mem_total_bytes, nodes.mem_total_bytes), \
             disk_total_bytes = COALESCE(excluded.disk_total_bytes, nodes.disk_total_bytes), \
             last_seen_at = excluded.last_seen_at",
        );
        // Assembled from fixed text and numbered placeholders only.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for n in chunk {
            query = query
                .bind(n.node_id.as_str())
                .bind(n.hostname.as_deref())
                .bind(n.os.as_deref())
                .bind(n.status.as_deref())
                .bind(n.agent_version.as_deref())
                .bind(n.ip.as_deref())
                .bind(n.region.as_deref())
                .bind(n.kernel.as_deref())
                .bind(n.architecture.as_deref())
                .bind(n.cpu_percent)
                .bind(n.ram_percent)
                .bind(n.disk_percent)
                .bind(n.uptime_seconds)
                .bind(n.load_avg.as_deref())
                .bind(n.mem_total_bytes)
                .bind(n.disk_total_bytes)
                .bind(n.config.as_str())
                .bind(n.created_at)
                .bind(n.last_seen_at);
        }
        query.execute(&mut *conn).await?;
    }
    for chunk in heartbeats.chunks(CHUNK) {
        let mut sql = String::from(
            "INSERT INTO heartbeats (node_id, at, cpu_percent, ram_percent, disk_percent, status) VALUES ",
        );
        push_placeholders(&mut sql, chunk.len(), 6);
        // A replayed row (same node, same millisecond) is already there.
        sql.push_str(" ON CONFLICT (node_id, at) DO NOTHING");
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for h in chunk {
            query = query
                .bind(h.node_id.as_str())
                .bind(h.at)
                .bind(h.cpu_percent)
                .bind(h.ram_percent)
                .bind(h.disk_percent)
                .bind(h.status.as_deref());
        }
        query.execute(&mut *conn).await?;
    }
    for chunk in events.chunks(CHUNK) {
        let mut sql = String::from(
            "INSERT INTO node_events (id, node_id, at, type, severity, message, metadata) VALUES ",
        );
        push_placeholders(&mut sql, chunk.len(), 7);
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for e in chunk {
            query = query
                .bind(e.id.as_str())
                .bind(e.node_id.as_str())
                .bind(e.at)
                .bind(e.kind.as_str())
                .bind(e.severity.as_str())
                .bind(e.message.as_str())
                .bind(e.metadata.as_str());
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// `($1, $2, …), (…)` for `rows` rows of `columns` values.
fn push_placeholders(sql: &mut String, rows: usize, columns: usize) {
    use std::fmt::Write;
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..columns {
            let _ = write!(sql, "{}${}", if c == 0 { "" } else { ", " }, r * columns + c + 1);
        }
        sql.push(')');
    }
}

/// The last `limit` heartbeats of a node, oldest first.
pub async fn history(
    conn: &mut AnyConnection,
    node_id: &str,
    limit: i64,
) -> Result<Vec<HeartbeatRow>, StoreError> {
    let rows = sqlx::query(
        "SELECT node_id, at, cpu_percent, ram_percent, disk_percent, status FROM heartbeats \
         WHERE node_id = $1 ORDER BY at DESC LIMIT $2",
    )
    .bind(node_id)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    let mut history = rows
        .iter()
        .map(|r| {
            Ok(HeartbeatRow {
                node_id: r.try_get("node_id")?,
                at: r.try_get("at")?,
                cpu_percent: r.try_get("cpu_percent")?,
                ram_percent: r.try_get("ram_percent")?,
                disk_percent: r.try_get("disk_percent")?,
                status: r.try_get("status")?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    history.reverse();
    Ok(history)
}

/// The newest `limit` events of a node, newest first.
pub async fn events(
    conn: &mut AnyConnection,
    node_id: &str,
    limit: i64,
) -> Result<Vec<NodeEvent>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, node_id, at, type, severity, message, metadata FROM node_events \
         WHERE node_id = $1 ORDER BY at DESC, id DESC LIMIT $2",
    )
    .bind(node_id)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(NodeEvent {
                id: r.try_get("id")?,
                node_id: r.try_get("node_id")?,
                at: r.try_get("at")?,
                kind: r.try_get("type")?,
                severity: r.try_get("severity")?,
                message: r.try_get("message")?,
                metadata: r.try_get("metadata")?,
            })
        })
        .collect()
}

/// A node's agent config, read under a row lock held until the transaction ends (a no-op update
/// takes it on both backends); `None` when the node is unknown.
pub async fn lock_config(conn: &mut AnyConnection, node_id: &str) -> Result<Option<String>, StoreError> {
    let row = sqlx::query("UPDATE nodes SET config = config WHERE node_id = $1 RETURNING config")
        .bind(node_id)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.map(|r| r.try_get("config")).transpose()?)
}

/// Replaces a node's agent config (a JSON object as text); `false` when the node is unknown.
pub async fn set_config(conn: &mut AnyConnection, node_id: &str, config: &str) -> Result<bool, StoreError> {
    let done = sqlx::query("UPDATE nodes SET config = $1 WHERE node_id = $2")
        .bind(config)
        .bind(node_id)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Deletes a node with its history and events; `false` when the node is unknown.
pub async fn delete(conn: &mut AnyConnection, node_id: &str) -> Result<bool, StoreError> {
    sqlx::query("DELETE FROM heartbeats WHERE node_id = $1")
        .bind(node_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM node_events WHERE node_id = $1")
        .bind(node_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM node_containers WHERE node_id = $1")
        .bind(node_id)
        .execute(&mut *conn)
        .await?;
    let done = sqlx::query("DELETE FROM nodes WHERE node_id = $1")
        .bind(node_id)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Deletes a node's activity events older than `cutoff`, except its newest `keep` (a quiet node
/// still shows what last happened to it); returns how many went.
pub async fn prune_events(
    conn: &mut AnyConnection,
    node_id: &str,
    cutoff: i64,
    keep: i64,
) -> Result<u64, StoreError> {
    // A read first (the index gives it): most nodes have nothing to prune, and on SQLite a DELETE
    // takes the write lock even when it removes nothing.
    let past_kept = sqlx::query(
        "SELECT at FROM node_events WHERE node_id = $1 ORDER BY at DESC, id DESC LIMIT 1 OFFSET $2",
    )
    .bind(node_id)
    .bind(keep)
    .fetch_optional(&mut *conn)
    .await?;
    match past_kept {
        Some(row) if row.try_get::<i64, _>("at")? < cutoff => {}
        _ => return Ok(0),
    }
    let done = sqlx::query(
        "DELETE FROM node_events WHERE node_id = $1 AND at < $2 AND id NOT IN \
         (SELECT id FROM node_events WHERE node_id = $1 ORDER BY at DESC, id DESC LIMIT $3)",
    )
    .bind(node_id)
    .bind(cutoff)
    .bind(keep)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

/// The time of a node's oldest heartbeat, if any.
pub async fn oldest_heartbeat(conn: &mut AnyConnection, node_id: &str) -> Result<Option<i64>, StoreError> {
    let row = sqlx::query("SELECT MIN(at) AS at FROM heartbeats WHERE node_id = $1")
        .bind(node_id)
        .fetch_one(&mut *conn)
        .await?;
    Ok(row.try_get::<Option<i64>, _>("at")?)
}

/// Deletes a node's heartbeats in `[from, to)`; returns how many went. Retention walks each node
/// forward from its oldest heartbeat in short windows, so each statement stays small.
pub async fn prune_history(
    conn: &mut AnyConnection,
    node_id: &str,
    from: i64,
    to: i64,
) -> Result<u64, StoreError> {
    let done = sqlx::query("DELETE FROM heartbeats WHERE node_id = $1 AND at >= $2 AND at < $3")
        .bind(node_id)
        .bind(from)
        .bind(to)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected())
}
