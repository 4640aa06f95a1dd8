//! The audit log: append-only (the database refuses UPDATE and DELETE on the table by trigger).

use sqlx::any::{AnyArguments, AnyRow};
use sqlx::{AnyConnection, Arguments, Row};

use crate::{StoreError, new_id, now_ms};

#[derive(Clone, Debug, PartialEq)]
pub struct AuditEvent {
    pub id: String,
    pub at: i64,
    pub user_id: Option<String>,
    pub user_email: Option<String>,
    pub action: String,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub ip: Option<String>,
    /// A JSON object, as text.
    pub metadata: String,
}

/// What happened, by whom, to what. `metadata` is a JSON object as text.
#[derive(Clone, Debug, Default)]
pub struct NewAuditEvent {
    pub user_id: Option<String>,
    pub user_email: Option<String>,
    pub action: String,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub ip: Option<String>,
    pub metadata: Option<String>,
}

/// Which events to read; every `Some` narrows the set.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    /// A user id or an email (case-insensitive).
    pub user: Option<String>,
    pub action: Option<String>,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
}

pub async fn record(conn: &mut AnyConnection, event: &NewAuditEvent) -> Result<(), StoreError> {
    let mut values = AnyArguments::default();
    add_values(&mut values, event)?;
    sqlx::query_with(sqlx::AssertSqlSafe(insert_sql(1)), values)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The INSERT of one audit row, its values numbered from `$first` on, for a write that sends the
/// row in the same call as its own statement (see [`add_values`]).
pub(crate) fn insert_sql(first: usize) -> String {
    let values: Vec<String> = (first..first + 9).map(|n| format!("${n}")).collect();
    format!(
        "INSERT INTO audit_events (id, at, user_id, user_email, action, resource_type, resource_id, ip, metadata) \
         VALUES ({})",
        values.join(", ")
    )
}

/// Adds the nine values [`insert_sql`] numbers, in its order.
pub(crate) fn add_values(values: &mut AnyArguments, event: &NewAuditEvent) -> Result<(), StoreError> {
    let bad = |e: sqlx::error::BoxDynError| StoreError::Database(e.to_string());
    values.add(new_id()).map_err(bad)?;
    values.add(now_ms()).map_err(bad)?;
    values.add(event.user_id.clone()).map_err(bad)?;
    values.add(event.user_email.clone()).map_err(bad)?;
    values.add(event.action.clone()).map_err(bad)?;
    values.add(event.resource_type.clone()).map_err(bad)?;
    values.add(event.resource_id.clone()).map_err(bad)?;
    values.add(event.ip.clone()).map_err(bad)?;
    values
        .add(event.metadata.clone().unwrap_or_else(|| "{}".into()))
        .map_err(bad)?;
    Ok(())
}

fn from_row(row: &AnyRow) -> Result<AuditEvent, StoreError> {
    Ok(AuditEvent {
        id: row.try_get("id")?,
        at: row.try_get("at")?,
        user_id: row.try_get("user_id")?,
        user_email: row.try_get("user_email")?,
        action: row.try_get("action")?,
        resource_type: row.try_get("resource_type")?,
        resource_id: row.try_get("resource_id")?,
        ip: row.try_get("ip")?,
        metadata: row.try_get("metadata")?,
    })
}

/// The WHERE clause for a filter and the values to bind, in placeholder order.
fn where_clause(filter: &AuditFilter) -> (String, Vec<String>) {
    let mut clauses = Vec::new();
    let mut binds = Vec::new();
    if let Some(user) = &filter.user {
        binds.push(user.clone());
        let n = binds.len();
        binds.push(user.trim().to_lowercase());
        clauses.push(format!("(user_id = ${n} OR user_email = ${})", n + 1));
    }
    for (column, value) in [
        ("action", &filter.action),
        ("resource_type", &filter.resource_type),
        ("resource_id", &filter.resource_id),
    ] {
        if let Some(value) = value {
            binds.push(value.clone());
            clauses.push(format!("{column} = ${}", binds.len()));
        }
    }
    if clauses.is_empty() {
        (String::new(), binds)
    } else {
        (format!(" WHERE {}", clauses.join(" AND ")), binds)
    }
}

/// One page of matching events, newest first, and how many match in all.
pub async fn page(
    conn: &mut AnyConnection,
    filter: &AuditFilter,
    limit: i64,
    offset: i64,
) -> Result<(Vec<AuditEvent>, i64), StoreError> {
    let (clause, binds) = where_clause(filter);
    // The SQL text is assembled only from fixed column names and numbered placeholders.
    let count_sql = format!("SELECT CAST(COUNT(*) AS BIGINT) AS n FROM audit_events{clause}");
    let mut count = sqlx::query(sqlx::AssertSqlSafe(count_sql));
    for value in &binds {
        count = count.bind(value.as_str());
    }
    let total: i64 = count.fetch_one(&mut *conn).await?.try_get("n")?;
    let events = list(conn, &clause, &binds, limit, offset).await?;
    Ok((events, total))
}

/// Up to `limit` matching events, newest first (the CSV export).
pub async fn export(
    conn: &mut AnyConnection,
    filter: &AuditFilter,
    limit: i64,
) -> Result<Vec<AuditEvent>, StoreError> {
    let (clause, binds) = where_clause(filter);
    list(conn, &clause, &binds, limit, 0).await
}

async fn list(
    conn: &mut AnyConnection,
    clause: &str,
    binds: &[String],
    limit: i64,
    offset: i64,
) -> Result<Vec<AuditEvent>, StoreError> {
    let n = binds.len();
    let sql = format!(
        "SELECT id, at, user_id, user_email, action, resource_type, resource_id, ip, metadata \
         FROM audit_events{clause} ORDER BY at DESC, id DESC LIMIT ${} OFFSET ${}",
        n + 1,
        n + 2
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for value in binds {
        query = query.bind(value.as_str());
    }
    let rows = query.bind(limit).bind(offset).fetch_all(&mut *conn).await?;
    rows.iter().map(from_row).collect()
}
