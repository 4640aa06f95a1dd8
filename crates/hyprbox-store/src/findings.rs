//! Findings: problems the agents' scanners report. One row per `(node_id, type, key)`: a rescan
//! updates the row (never a second one), so `detected_at` and the snooze state survive; a RESOLVED
//! finding seen again reopens. A batch may say it fully covers some types (`complete`): their OPEN
//! findings it no longer mentions resolve themselves.

use std::collections::{HashMap, HashSet};

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::{Store, StoreError, new_id};

pub const OPEN: &str = "OPEN";
pub const SNOOZED: &str = "SNOOZED";
pub const RESOLVED: &str = "RESOLVED";

pub const INFO: &str = "INFO";
pub const WARN: &str = "WARN";
pub const CRITICAL: &str = "CRITICAL";
pub const SEVERITIES: [&str; 3] = [CRITICAL, WARN, INFO];

#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    pub id: String,
    pub node_id: String,
    /// The finding type (`disk.full`); `type` in SQL and JSON.
    pub kind: String,
    pub key: String,
    pub severity: String,
    pub status: String,
    pub title: String,
    pub message: String,
    /// JSON (an array or object) as text.
    pub related_entities: String,
    /// A JSON object as text.
    pub metadata: String,
    pub detected_at: i64,
    pub last_seen_at: i64,
    pub snoozed_until: Option<i64>,
    pub resolved_at: Option<i64>,
    pub resolved_by_user_id: Option<String>,
}

/// One finding as a scan reports it.
#[derive(Clone, Debug)]
pub struct Reported {
    pub kind: String,
    pub key: String,
    pub severity: String,
    pub title: String,
    pub message: String,
    pub related_entities: String,
    pub metadata: String,
}

/// What a batch changed.
#[derive(Debug, Default)]
pub struct Upserted {
    /// Distinct findings written (a `(type, key)` repeated in one batch counts once; the last wins).
    pub upserted: usize,
    /// Findings that are new, or were RESOLVED and reopened.
    pub opened: Vec<Finding>,
    /// OPEN findings of a `complete` type the batch no longer mentions, now RESOLVED.
    pub resolved: Vec<Finding>,
}

const COLUMNS: &str = "id, node_id, type, key, severity, status, title, message, related_entities, metadata, \
     detected_at, last_seen_at, snoozed_until, resolved_at, resolved_by_user_id";

/// The active findings: OPEN, or SNOOZED with the deadline passed at the placeholder given.
fn active(now_placeholder: &str) -> String {
    format!("(status = 'OPEN' OR (status = 'SNOOZED' AND snoozed_until <= {now_placeholder}))")
}

fn from_row(row: &AnyRow) -> Result<Finding, StoreError> {
    Ok(Finding {
        id: row.try_get("id")?,
        node_id: row.try_get("node_id")?,
        kind: row.try_get("type")?,
        key: row.try_get("key")?,
        severity: row.try_get("severity")?,
        status: row.try_get("status")?,
        title: row.try_get("title")?,
        message: row.try_get("message")?,
        related_entities: row.try_get("related_entities")?,
        metadata: row.try_get("metadata")?,
        detected_at: row.try_get("detected_at")?,
        last_seen_at: row.try_get("last_seen_at")?,
        snoozed_until: row.try_get("snoozed_until")?,
        resolved_at: row.try_get("resolved_at")?,
        resolved_by_user_id: row.try_get("resolved_by_user_id")?,
    })
}

/// Changes of the OPEN counts, by (node, severity).
#[derive(Default)]
struct Deltas(HashMap<(String, String), i64>);

impl Deltas {
    /// A finding went from `before` (status, severity) to `after`.
    fn change(&mut self, node_id: &str, before: Option<(&str, &str)>, after: Option<(&str, &str)>) {
        if let Some((OPEN, severity)) = before {
            *self
                .0
                .entry((node_id.to_owned(), severity.to_owned()))
                .or_default() -= 1;
        }
        if let Some((OPEN, severity)) = after {
            *self
                .0
                .entry((node_id.to_owned(), severity.to_owned()))
                .or_default() += 1;
        }
    }

    async fn apply(self, conn: &mut AnyConnection) -> Result<(), StoreError> {
        for ((node_id, severity), delta) in self.0 {
            if delta == 0 {
                continue;
            }
            sqlx::query(
                "INSERT INTO finding_counts (node_id, severity, open) VALUES ($1, $2, $3) \
                 ON CONFLICT (node_id, severity) DO UPDATE SET open = finding_counts.open + excluded.open",
            )
            .bind(node_id)
            .bind(severity)
            .bind(delta)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }
}

/// The (node, status, severity) of the findings `condition` picks, locked until the transaction
/// ends on Postgres (SQLite's one writer already keeps others out), so a count moves once.
async fn states(
    conn: &mut AnyConnection,
    condition: &str,
    binds: &[&str],
) -> Result<Vec<(String, String, String)>, StoreError> {
    let lock = if conn.backend_name().eq_ignore_ascii_case("sqlite") {
        ""
    } else {
        " FOR UPDATE"
    };
    let sql = format!("SELECT node_id, status, severity FROM findings WHERE {condition}{lock}");
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for bind in binds {
        query = query.bind(*bind);
    }
    let rows = query.fetch_all(&mut *conn).await?;
    rows.iter()
        .map(|row| {
            Ok((
                row.try_get("node_id")?,
                row.try_get("status")?,
                row.try_get("severity")?,
            ))
        })
        .collect()
}

/// Stores one scan's findings of `node_id` in one transaction; see the module comment.
pub async fn upsert_batch(
    store: &Store,
    node_id: &str,
    batch: &[Reported],
    complete: &[String],
    now: i64,
) -> Result<Upserted, StoreError> {
    upsert_batch_capped(store, node_id, batch, complete, now, None).await
}

/// [`upsert_batch`], refused with [`StoreError::Refused`] (nothing written) when it would leave the
/// node more than `max_unresolved` findings that are not RESOLVED.
pub async fn upsert_batch_capped(
    store: &Store,
    node_id: &str,
    batch: &[Reported],
    complete: &[String],
    now: i64,
    max_unresolved: Option<usize>,
) -> Result<Upserted, StoreError> {
    let (node_id, batch, complete) = (node_id.to_owned(), batch.to_vec(), complete.to_vec());
    store
        .write(move |tx| {
            Box::pin(async move { upsert_in(tx, &node_id, &batch, &complete, now, max_unresolved).await })
        })
        .await
}

/// Rows per upsert statement: 8 placeholders each, well under the backends' limits.
const UPSERT_ROWS: usize = 100;

async fn upsert_in(
    tx: &mut AnyConnection,
    node_id: &str,
    batch: &[Reported],
    complete: &[String],
    now: i64,
    max_unresolved: Option<usize>,
) -> Result<Upserted, StoreError> {
    // The last report of a (type, key) wins.
    let mut latest: HashMap<(&str, &str), &Reported> = HashMap::new();
    let mut order: Vec<(&str, &str)> = Vec::new();
    for reported in batch {
        let key = (reported.kind.as_str(), reported.key.as_str());
        if latest.insert(key, reported).is_none() {
            order.push(key);
        }
    }
    // What the node has now: (type, key) → (id, status).
    // On Postgres, reports of one node (an agent's, the server's own) take turns, and the node's
    // rows stay locked until the commit: the OPEN counts move from states no one else is changing.
    // (SQLite's one writer gives the same.)
    let postgres = !tx.backend_name().eq_ignore_ascii_case("sqlite");
    if postgres {
        // The function returns void, which the Any driver cannot carry: answer a number instead.
        sqlx::query("SELECT CAST(1 AS BIGINT) AS locked FROM (SELECT pg_advisory_xact_lock(hashtext('findings:' || $1))) AS l")
            .bind(node_id)
            .execute(&mut *tx)
            .await?;
    }
    let lock = if postgres { " FOR UPDATE" } else { "" };
    let sql = format!("SELECT id, type, key, status, severity FROM findings WHERE node_id = $1{lock}");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(node_id)
        .fetch_all(&mut *tx)
        .await?;
    let mut known: HashMap<(String, String), (String, String)> = HashMap::with_capacity(rows.len());
    let mut severities: HashMap<(String, String), String> = HashMap::with_capacity(rows.len());
    for row in &rows {
        let key: (String, String) = (row.try_get("type")?, row.try_get("key")?);
        severities.insert(key.clone(), row.try_get("severity")?);
        known.insert(key, (row.try_get("id")?, row.try_get("status")?));
    }
    let mut deltas = Deltas::default();
    let complete: HashSet<&str> = complete.iter().map(String::as_str).collect();
    if let Some(max) = max_unresolved {
        let unresolved = known.values().filter(|(_, status)| status != RESOLVED).count();
        let opening = order
            .iter()
            .filter(|(kind, key)| {
                known
                    .get(&((*kind).to_owned(), (*key).to_owned()))
                    .is_none_or(|(_, status)| status == RESOLVED)
            })
            .count();
        let clearing = known
            .iter()
            .filter(|((kind, key), (_, status))| {
                status != RESOLVED
                    && complete.contains(kind.as_str())
                    && !latest.contains_key(&(kind.as_str(), key.as_str()))
            })
            .count();
        let after = unresolved + opening - clearing;
        if opening > 0 && after > max {
            return Err(StoreError::Refused(format!(
                "the node would have {after} findings that are not RESOLVED, more than the {max} allowed \
                 (HYPRBOX_MAX_FINDINGS_PER_NODE): resolve some, or report fewer distinct keys"
            )));
        }
    }
    let mut out = Upserted::default();
    // Many rows per statement: a scan of hundreds of findings is a few round trips, not hundreds.
    for chunk in order.chunks(UPSERT_ROWS) {
        let values: Vec<String> = (0..chunk.len())
            .map(|i| {
                let p = i * 8;
                format!(
                    "(${}, $1, ${}, ${}, ${}, 'OPEN', ${}, ${}, ${}, ${}, $2, $2)",
                    p + 3,
                    p + 4,
                    p + 5,
                    p + 6,
                    p + 7,
                    p + 8,
                    p + 9,
                    p + 10
                )
            })
            .collect();
        let sql = format!(
            "INSERT INTO findings (id, node_id, type, key, severity, status, title, message, related_entities, \
             metadata, detected_at, last_seen_at) VALUES {} \
             ON CONFLICT (node_id, type, key) DO UPDATE SET severity = excluded.severity, title = excluded.title, \
             message = excluded.message, related_entities = excluded.related_entities, \
             metadata = excluded.metadata, last_seen_at = excluded.last_seen_at, \
             status = CASE WHEN findings.status = 'RESOLVED' THEN 'OPEN' ELSE findings.status END, \
             snoozed_until = CASE WHEN findings.status = 'RESOLVED' THEN NULL ELSE findings.snoozed_until END, \
             resolved_at = NULL, resolved_by_user_id = NULL \
             RETURNING {COLUMNS}",
            values.join(", ")
        );
        // Only numbered placeholders are spliced in.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(node_id).bind(now);
        for key in chunk {
            let reported = latest[key];
            query = query
                .bind(new_id())
                .bind(&reported.kind)
                .bind(&reported.key)
                .bind(&reported.severity)
                .bind(&reported.title)
                .bind(&reported.message)
                .bind(&reported.related_entities)
                .bind(&reported.metadata);
        }
        let rows = query.fetch_all(&mut *tx).await?;
        // RETURNING promises no order: each row is matched to what was known by its (type, key).
        let mut stored = HashMap::with_capacity(rows.len());
        for row in &rows {
            let finding = from_row(row)?;
            stored.insert((finding.kind.clone(), finding.key.clone()), finding);
        }
        for (kind, key) in chunk {
            let id = ((*kind).to_owned(), (*key).to_owned());
            let Some(finding) = stored.remove(&id) else {
                return Err(StoreError::Database(format!(
                    "the upsert of {kind} {key} returned no row"
                )));
            };
            let before = known.get(&id).map(|(_, status)| status.as_str());
            let before_severity = severities.get(&id).map(String::as_str).unwrap_or_default();
            deltas.change(
                node_id,
                before.map(|status| (status, before_severity)),
                Some((finding.status.as_str(), finding.severity.as_str())),
            );
            if before.is_none_or(|status| status == RESOLVED) {
                out.opened.push(finding);
            }
            out.upserted += 1;
        }
    }
    let resolve = format!(
        "UPDATE findings SET status = 'RESOLVED', resolved_at = $2, resolved_by_user_id = NULL, \
         snoozed_until = NULL WHERE id = $1 AND status IN ('OPEN', 'SNOOZED') RETURNING {COLUMNS}"
    );
    // A snoozed problem that is fixed clears too: the snooze only silenced it.
    for ((kind, key), (id, status)) in &known {
        if status != RESOLVED
            && complete.contains(kind.as_str())
            && !latest.contains_key(&(kind.as_str(), key.as_str()))
            && let Some(row) = sqlx::query(sqlx::AssertSqlSafe(resolve.clone()))
                .bind(id)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?
        {
            let severity = severities
                .get(&(kind.clone(), key.clone()))
                .map(String::as_str)
                .unwrap_or_default();
            deltas.change(node_id, Some((status.as_str(), severity)), None);
            out.resolved.push(from_row(&row)?);
        }
    }
    deltas.apply(tx).await?;
    Ok(out)
}

pub async fn get(conn: &mut AnyConnection, id: &str) -> Result<Option<Finding>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM findings WHERE id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// Filters of the list.
#[derive(Default)]
pub struct FindingFilter<'a> {
    pub node_id: Option<&'a str>,
    pub severity: Option<&'a str>,
    /// Also RESOLVED ones and those still snoozed.
    pub include_all: bool,
}

/// Findings matching `filter`: CRITICAL, then WARN, then INFO; newest first within a severity.
pub async fn list(
    conn: &mut AnyConnection,
    filter: &FindingFilter<'_>,
    now: i64,
    limit: i64,
) -> Result<Vec<Finding>, StoreError> {
    if filter.include_all || filter.node_id.is_some() {
        // One node's findings are few (its unique index finds them); sorting them is cheap.
        return list_sorted(conn, filter, now, limit).await;
    }
    // The fleet's active findings may be hundreds of thousands: walk the (status, severity,
    // detected_at, id) index one severity at a time, OPEN ones and snoozed ones whose deadline
    // passed, instead of sorting them all.
    let severities: Vec<&str> = match filter.severity {
        Some(severity) => vec![severity],
        None => SEVERITIES.to_vec(),
    };
    let open = format!(
        "SELECT {COLUMNS} FROM findings WHERE status = 'OPEN' AND severity = $1 \
         ORDER BY detected_at DESC, id DESC LIMIT $2"
    );
    let woken = format!(
        "SELECT {COLUMNS} FROM findings WHERE status = 'SNOOZED' AND severity = $1 AND snoozed_until <= $3 \
         ORDER BY detected_at DESC, id DESC LIMIT $2"
    );
    let mut out: Vec<Finding> = Vec::new();
    for severity in severities {
        let remaining = limit - i64::try_from(out.len()).unwrap_or(i64::MAX);
        if remaining <= 0 {
            break;
        }
        let mut found = Vec::new();
        for sql in [&open, &woken] {
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .bind(severity)
                .bind(remaining);
            if sql == &woken {
                query = query.bind(now);
            }
            for row in query.fetch_all(&mut *conn).await? {
                found.push(from_row(&row)?);
            }
        }
        found.sort_by(|a, b| (b.detected_at, &b.id).cmp(&(a.detected_at, &a.id)));
        found.truncate(usize::try_from(remaining).unwrap_or(usize::MAX));
        out.extend(found);
    }
    Ok(out)
}

async fn list_sorted(
    conn: &mut AnyConnection,
    filter: &FindingFilter<'_>,
    now: i64,
    limit: i64,
) -> Result<Vec<Finding>, StoreError> {
    let mut sql = format!("SELECT {COLUMNS} FROM findings WHERE 1 = 1");
    let mut values: Vec<&str> = Vec::new();
    for (column, value) in [("node_id", filter.node_id), ("severity", filter.severity)] {
        if let Some(value) = value {
            values.push(value);
            sql.push_str(&format!(" AND {column} = ${}", values.len()));
        }
    }
    let mut next = values.len() + 1;
    if !filter.include_all {
        sql.push_str(&format!(" AND {}", active(&format!("${next}"))));
        next += 1;
    }
    sql.push_str(&format!(
        " ORDER BY CASE severity WHEN 'CRITICAL' THEN 0 WHEN 'WARN' THEN 1 ELSE 2 END, \
         detected_at DESC, id DESC LIMIT ${next}"
    ));
    // Only fixed column names and numbered placeholders are spliced in.
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for value in values {
        query = query.bind(value);
    }
    if !filter.include_all {
        query = query.bind(now);
    }
    let rows = query.bind(limit).fetch_all(&mut *conn).await?;
    rows.iter().map(from_row).collect()
}

/// Snoozes the finding until `until`; `None` when it does not exist or is RESOLVED (checked in the
/// same statement, so a concurrent resolve is never turned back into a snooze).
pub async fn snooze(conn: &mut AnyConnection, id: &str, until: i64) -> Result<Option<Finding>, StoreError> {
    let before = states(conn, "id = $1", &[id]).await?;
    let sql = format!(
        "UPDATE findings SET status = 'SNOOZED', snoozed_until = $2 \
         WHERE id = $1 AND status <> 'RESOLVED' RETURNING {COLUMNS}"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .bind(until)
        .fetch_optional(&mut *conn)
        .await?;
    let after = row.as_ref().map(from_row).transpose()?;
    count_change(conn, &before, after.as_ref()).await?;
    Ok(after)
}

/// Moves the OPEN counts for one finding that went from `before` (its state read under lock) to
/// `after` (`None`: the write did not touch it).
async fn count_change(
    conn: &mut AnyConnection,
    before: &[(String, String, String)],
    after: Option<&Finding>,
) -> Result<(), StoreError> {
    let (Some((node_id, status, severity)), Some(after)) = (before.first(), after) else {
        return Ok(());
    };
    let mut deltas = Deltas::default();
    deltas.change(
        node_id,
        Some((status.as_str(), severity.as_str())),
        Some((after.status.as_str(), after.severity.as_str())),
    );
    deltas.apply(conn).await
}

/// Resolves the finding by hand; `None` when it does not exist or is RESOLVED already (who resolved
/// it, and when, stay as they were).
pub async fn resolve(
    conn: &mut AnyConnection,
    id: &str,
    user_id: &str,
    now: i64,
) -> Result<Option<Finding>, StoreError> {
    let before = states(conn, "id = $1", &[id]).await?;
    let sql = format!(
        "UPDATE findings SET status = 'RESOLVED', resolved_at = $2, resolved_by_user_id = $3, \
         snoozed_until = NULL WHERE id = $1 AND status <> 'RESOLVED' RETURNING {COLUMNS}"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .bind(now)
        .bind(user_id)
        .fetch_optional(&mut *conn)
        .await?;
    let after = row.as_ref().map(from_row).transpose()?;
    count_change(conn, &before, after.as_ref()).await?;
    Ok(after)
}

/// Resolves the OPEN or SNOOZED finding `(node_id, kind, key)` as fixed by itself (no user);
/// `None` when there is none to resolve.
pub async fn clear(
    conn: &mut AnyConnection,
    node_id: &str,
    kind: &str,
    key: &str,
    now: i64,
) -> Result<Option<Finding>, StoreError> {
    let before = states(
        conn,
        "node_id = $1 AND type = $2 AND key = $3",
        &[node_id, kind, key],
    )
    .await?;
    let sql = format!(
        "UPDATE findings SET status = 'RESOLVED', resolved_at = $4, resolved_by_user_id = NULL, \
         snoozed_until = NULL WHERE node_id = $1 AND type = $2 AND key = $3 AND status <> 'RESOLVED' \
         RETURNING {COLUMNS}"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(node_id)
        .bind(kind)
        .bind(key)
        .bind(now)
        .fetch_optional(&mut *conn)
        .await?;
    let after = row.as_ref().map(from_row).transpose()?;
    count_change(conn, &before, after.as_ref()).await?;
    Ok(after)
}

/// The `(node_id, key)` of every finding of `kind` that is not RESOLVED.
pub async fn unresolved_of_type(
    conn: &mut AnyConnection,
    kind: &str,
) -> Result<Vec<(String, String)>, StoreError> {
    let rows = sqlx::query("SELECT node_id, key FROM findings WHERE type = $1 AND status <> 'RESOLVED'")
        .bind(kind)
        .fetch_all(&mut *conn)
        .await?;
    rows.iter()
        .map(|row| Ok((row.try_get("node_id")?, row.try_get("key")?)))
        .collect()
}

/// Active findings per node and severity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub critical: i64,
    pub warn: i64,
    pub info: i64,
}

/// The active findings of every node that has any, counted by severity.
/// Forgets every finding of a node (it was deleted).
pub async fn delete_for_node(conn: &mut AnyConnection, node_id: &str) -> Result<u64, StoreError> {
    sqlx::query("DELETE FROM finding_counts WHERE node_id = $1")
        .bind(node_id)
        .execute(&mut *conn)
        .await?;
    let done = sqlx::query("DELETE FROM findings WHERE node_id = $1")
        .bind(node_id)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected())
}

pub async fn counts(conn: &mut AnyConnection, now: i64) -> Result<HashMap<String, Counts>, StoreError> {
    // OPEN findings are counted as they change (`finding_counts`); snoozed ones whose deadline
    // passed are few, and counted here from the (status, node_id, severity) index.
    let mut rows = sqlx::query("SELECT node_id, severity, open AS n FROM finding_counts WHERE open > 0")
        .fetch_all(&mut *conn)
        .await?;
    rows.extend(
        sqlx::query(
            "SELECT node_id, severity, CAST(COUNT(*) AS BIGINT) AS n FROM findings \
             WHERE status = 'SNOOZED' AND snoozed_until <= $1 GROUP BY node_id, severity",
        )
        .bind(now)
        .fetch_all(&mut *conn)
        .await?,
    );
    let mut out: HashMap<String, Counts> = HashMap::new();
    for row in &rows {
        let counts = out.entry(row.try_get("node_id")?).or_default();
        let n: i64 = row.try_get("n")?;
        match row.try_get::<String, _>("severity")?.as_str() {
            CRITICAL => counts.critical += n,
            WARN => counts.warn += n,
            _ => counts.info += n,
        }
    }
    Ok(out)
}

/// Deletes up to `batch` RESOLVED findings resolved before `before`; returns how many went.
pub async fn prune_resolved(conn: &mut AnyConnection, before: i64, batch: i64) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "DELETE FROM findings WHERE id IN \
         (SELECT id FROM findings WHERE status = 'RESOLVED' AND resolved_at < $1 LIMIT $2)",
    )
    .bind(before)
    .bind(batch)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;
    use crate::testing::TestDatabase;

    async fn store(db: &TestDatabase) -> Store {
        db.store().await
    }

    fn reported(kind: &str, key: &str, severity: &str) -> Reported {
        Reported {
            kind: kind.into(),
            key: key.into(),
            severity: severity.into(),
            title: format!("{kind} {key}"),
            message: "m".into(),
            related_entities: "[]".into(),
            metadata: "{}".into(),
        }
    }

    /// `counts` as kept, against the same counted from the findings themselves.
    async fn assert_counts_match(store: &Store, now: i64, step: &str) {
        let mut conn = store.conn().await.unwrap();
        let kept = counts(&mut conn, now).await.unwrap();
        let rows = sqlx::query(
            "SELECT node_id, severity, CAST(COUNT(*) AS BIGINT) AS n FROM findings \
             WHERE status = 'OPEN' OR (status = 'SNOOZED' AND snoozed_until <= $1) GROUP BY node_id, severity",
        )
        .bind(now)
        .fetch_all(&mut *conn)
        .await
        .unwrap();
        let mut counted: HashMap<String, Counts> = HashMap::new();
        for row in &rows {
            let c = counted.entry(row.try_get("node_id").unwrap()).or_default();
            let n: i64 = row.try_get("n").unwrap();
            match row.try_get::<String, _>("severity").unwrap().as_str() {
                CRITICAL => c.critical += n,
                WARN => c.warn += n,
                _ => c.info += n,
            }
        }
        let nonzero = |m: HashMap<String, Counts>| -> HashMap<String, Counts> {
            m.into_iter().filter(|(_, c)| *c != Counts::default()).collect()
        };
        assert_eq!(nonzero(kept), nonzero(counted), "after {step}");
    }

    #[tokio::test]
    async fn the_kept_counts_follow_every_change_of_status_and_severity() {
        let db = TestDatabase::new().await;
        let store = db.store().await;
        let batch = [
            reported("disk.full", "/", WARN),
            reported("disk.full", "/var", CRITICAL),
            reported("tls", "a", INFO),
        ];
        upsert_batch(&store, "n1", &batch, &[], 1_000).await.unwrap();
        upsert_batch(&store, "n2", &batch, &[], 1_000).await.unwrap();
        assert_counts_match(&store, 1_000, "the first reports").await;
        // A severity change, a reopen after a resolve, and a complete type clearing one.
        upsert_batch(
            &store,
            "n1",
            &[reported("disk.full", "/", CRITICAL)],
            &["disk.full".into()],
            2_000,
        )
        .await
        .unwrap();
        assert_counts_match(&store, 2_000, "a severity change and a complete report").await;
        upsert_batch(&store, "n1", &[reported("disk.full", "/var", WARN)], &[], 3_000)
            .await
            .unwrap();
        assert_counts_match(&store, 3_000, "a reopen with another severity").await;
        let mut tx = store.begin().await.unwrap();
        let id = all(&store, "n2")
            .await
            .into_iter()
            .find(|f| f.key == "/")
            .unwrap()
            .id;
        snooze(&mut tx, &id, 5_000).await.unwrap().unwrap();
        tx.commit().await.unwrap();
        assert_counts_match(&store, 4_000, "a snooze").await;
        assert_counts_match(&store, 6_000, "a snooze past its deadline").await;
        upsert_batch(&store, "n2", &[reported("disk.full", "/", INFO)], &[], 4_500)
            .await
            .unwrap();
        assert_counts_match(&store, 4_600, "a rescan of a snoozed finding").await;
        let mut tx = store.begin().await.unwrap();
        let var = all(&store, "n2")
            .await
            .into_iter()
            .find(|f| f.key == "/var")
            .unwrap()
            .id;
        resolve(&mut tx, &var, "u", 7_000).await.unwrap().unwrap();
        assert!(resolve(&mut tx, &var, "u", 7_001).await.unwrap().is_none());
        clear(&mut tx, "n2", "tls", "a", 7_000).await.unwrap().unwrap();
        clear(&mut tx, "n2", "disk.full", "/", 7_000)
            .await
            .unwrap()
            .unwrap();
        tx.commit().await.unwrap();
        assert_counts_match(&store, 7_000, "a resolve and two clears").await;
        let mut tx = store.begin().await.unwrap();
        delete_for_node(&mut tx, "n1").await.unwrap();
        tx.commit().await.unwrap();
        assert_counts_match(&store, 8_000, "a node deleted").await;
        let mut conn = store.conn().await.unwrap();
        assert!(
            counts(&mut conn, 8_000)
                .await
                .unwrap()
                .values()
                .all(|c| *c == Counts::default())
        );
    }

    async fn all(store: &Store, node: &str) -> Vec<Finding> {
        let mut conn = store.conn().await.unwrap();
        let filter = FindingFilter {
            node_id: Some(node),
            include_all: true,
            ..FindingFilter::default()
        };
        list(&mut conn, &filter, 0, 1000).await.unwrap()
    }

    #[tokio::test]
    async fn a_rescan_updates_the_row_and_keeps_detection_time_and_snooze() {
        let db = TestDatabase::new().await;
        let store = store(&db).await;
        let first = upsert_batch(&store, "n1", &[reported("disk.full", "/", WARN)], &[], 1_000)
            .await
            .unwrap();
        assert_eq!(first.upserted, 1);
        assert_eq!(first.opened.len(), 1);
        let id = first.opened[0].id.clone();
        let mut conn = store.conn().await.unwrap();
        snooze(&mut conn, &id, 50_000).await.unwrap().unwrap();
        drop(conn);
        let mut again = reported("disk.full", "/", CRITICAL);
        again.title = "worse".into();
        let second = upsert_batch(&store, "n1", &[again.clone(), again], &[], 2_000)
            .await
            .unwrap();
        assert_eq!(second.upserted, 1);
        assert!(second.opened.is_empty());
        let rows = all(&store, "n1").await;
        assert_eq!(rows.len(), 1);
        let row = &rows[0];
        assert_eq!(
            (row.id.as_str(), row.detected_at, row.last_seen_at),
            (id.as_str(), 1_000, 2_000)
        );
        assert_eq!((row.status.as_str(), row.snoozed_until), (SNOOZED, Some(50_000)));
        assert_eq!((row.severity.as_str(), row.title.as_str()), (CRITICAL, "worse"));
    }

    #[tokio::test]
    async fn a_resolved_finding_seen_again_reopens() {
        let db = TestDatabase::new().await;
        let store = store(&db).await;
        let id = upsert_batch(&store, "n1", &[reported("tls.expiring", "a", WARN)], &[], 1_000)
            .await
            .unwrap()
            .opened[0]
            .id
            .clone();
        let mut conn = store.conn().await.unwrap();
        let done = resolve(&mut conn, &id, "u1", 1_500).await.unwrap().unwrap();
        assert_eq!(
            (done.status.as_str(), done.resolved_by_user_id.as_deref()),
            (RESOLVED, Some("u1"))
        );
        drop(conn);
        let again = upsert_batch(&store, "n1", &[reported("tls.expiring", "a", WARN)], &[], 2_000)
            .await
            .unwrap();
        assert_eq!(again.opened.len(), 1);
        let row = &again.opened[0];
        assert_eq!((row.id.as_str(), row.status.as_str()), (id.as_str(), OPEN));
        assert_eq!(
            (row.resolved_at, row.resolved_by_user_id.as_deref()),
            (None, None)
        );
        assert_eq!(row.detected_at, 1_000);
    }

    #[tokio::test]
    async fn complete_resolves_only_absent_open_findings_of_the_listed_types() {
        let db = TestDatabase::new().await;
        let store = store(&db).await;
        let batch = [
            reported("disk.full", "/", WARN),
            reported("disk.full", "/var", WARN),
            reported("tls.expiring", "a", WARN),
        ];
        upsert_batch(&store, "n1", &batch, &[], 1_000).await.unwrap();
        upsert_batch(&store, "n2", &[reported("disk.full", "/var", WARN)], &[], 1_000)
            .await
            .unwrap();
        let done = upsert_batch(
            &store,
            "n1",
            &[reported("disk.full", "/", WARN)],
            &["disk.full".to_string()],
            2_000,
        )
        .await
        .unwrap();
        assert_eq!(done.resolved.len(), 1);
        assert_eq!(done.resolved[0].key, "/var");
        assert_eq!(done.resolved[0].resolved_by_user_id, None);
        let status = |rows: &[Finding], kind: &str, key: &str| {
            rows.iter()
                .find(|f| f.kind == kind && f.key == key)
                .unwrap()
                .status
                .clone()
        };
        let n1 = all(&store, "n1").await;
        assert_eq!(status(&n1, "disk.full", "/"), OPEN);
        assert_eq!(status(&n1, "disk.full", "/var"), RESOLVED);
        assert_eq!(status(&n1, "tls.expiring", "a"), OPEN);
        assert_eq!(status(&all(&store, "n2").await, "disk.full", "/var"), OPEN);
    }

    #[tokio::test]
    async fn the_list_shows_active_findings_by_severity_then_newest_and_counts_them() {
        let db = TestDatabase::new().await;
        let store = store(&db).await;
        upsert_batch(&store, "n1", &[reported("a", "1", INFO)], &[], 1_000)
            .await
            .unwrap();
        upsert_batch(&store, "n1", &[reported("a", "2", CRITICAL)], &[], 2_000)
            .await
            .unwrap();
        upsert_batch(&store, "n1", &[reported("a", "3", WARN)], &[], 3_000)
            .await
            .unwrap();
        upsert_batch(&store, "n1", &[reported("a", "4", CRITICAL)], &[], 4_000)
            .await
            .unwrap();
        let snoozed = upsert_batch(&store, "n2", &[reported("a", "5", CRITICAL)], &[], 5_000)
            .await
            .unwrap()
            .opened[0]
            .id
            .clone();
        let mut conn = store.conn().await.unwrap();
        snooze(&mut conn, &snoozed, 10_000).await.unwrap();
        let keys = |rows: Vec<Finding>| rows.into_iter().map(|f| f.key).collect::<Vec<_>>();
        let active = list(&mut conn, &FindingFilter::default(), 6_000, 100)
            .await
            .unwrap();
        assert_eq!(keys(active), ["4", "2", "3", "1"]);
        let later = list(&mut conn, &FindingFilter::default(), 10_000, 100)
            .await
            .unwrap();
        assert_eq!(keys(later), ["5", "4", "2", "3", "1"]);
        let all_of = FindingFilter {
            include_all: true,
            ..FindingFilter::default()
        };
        assert_eq!(list(&mut conn, &all_of, 6_000, 100).await.unwrap().len(), 5);
        let critical_n1 = FindingFilter {
            node_id: Some("n1"),
            severity: Some(CRITICAL),
            include_all: false,
        };
        assert_eq!(
            keys(list(&mut conn, &critical_n1, 6_000, 100).await.unwrap()),
            ["4", "2"]
        );
        let counts_now = counts(&mut conn, 6_000).await.unwrap();
        assert_eq!(
            counts_now["n1"],
            Counts {
                critical: 2,
                warn: 1,
                info: 1
            }
        );
        assert!(!counts_now.contains_key("n2"));
        assert_eq!(counts(&mut conn, 10_000).await.unwrap()["n2"].critical, 1);
        assert!(get(&mut conn, "nope").await.unwrap().is_none());
        assert!(snooze(&mut conn, "nope", 1).await.unwrap().is_none());
        assert!(resolve(&mut conn, "nope", "u", 1).await.unwrap().is_none());
    }
}
