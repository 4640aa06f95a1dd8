//! Node tokens: the prefix in clear (the lookup key), a SHA-256 of the whole token, never the token.

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::StoreError;

#[derive(Clone, Debug, PartialEq)]
pub struct NodeToken {
    pub id: String,
    pub prefix: String,
    /// Hex SHA-256 of the whole `hbnt_…` token.
    pub token_hash: String,
    pub name: String,
    /// The node this token is pinned to; `None` for a fleet-wide token.
    pub node_id: Option<String>,
    pub created_by: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

const COLUMNS: &str =
    "id, prefix, token_hash, name, node_id, created_by, created_at, last_used_at, revoked_at";

fn from_row(row: &AnyRow) -> Result<NodeToken, StoreError> {
    Ok(NodeToken {
        id: row.try_get("id")?,
        prefix: row.try_get("prefix")?,
        token_hash: row.try_get("token_hash")?,
        name: row.try_get("name")?,
        node_id: row.try_get("node_id")?,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
        last_used_at: row.try_get("last_used_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

/// Stores a new token. A prefix collision is [`StoreError::Conflict`] (the caller draws again).
pub async fn insert(conn: &mut AnyConnection, token: &NodeToken) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO node_tokens (id, prefix, token_hash, name, node_id, created_by, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&token.id)
    .bind(&token.prefix)
    .bind(&token.token_hash)
    .bind(&token.name)
    .bind(token.node_id.as_deref())
    .bind(&token.created_by)
    .bind(token.created_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn by_prefix(conn: &mut AnyConnection, prefix: &str) -> Result<Option<NodeToken>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM node_tokens WHERE prefix = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(prefix)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// A token by id, when `owner` is `None` (an ADMIN) or owns it; `None` otherwise.
pub async fn by_id(
    conn: &mut AnyConnection,
    id: &str,
    owner: Option<&str>,
) -> Result<Option<NodeToken>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM node_tokens WHERE id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    let token = row.as_ref().map(from_row).transpose()?;
    Ok(token.filter(|t| owner.is_none_or(|o| t.created_by == o)))
}

/// The tokens `owner` created (every token when `owner` is `None`), newest first.
pub async fn list(conn: &mut AnyConnection, owner: Option<&str>) -> Result<Vec<NodeToken>, StoreError> {
    let rows = match owner {
        Some(owner) => {
            let sql = format!(
                "SELECT {COLUMNS} FROM node_tokens WHERE created_by = $1 ORDER BY created_at DESC, id DESC"
            );
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(owner)
                .fetch_all(&mut *conn)
                .await?
        }
        None => {
            let sql = format!("SELECT {COLUMNS} FROM node_tokens ORDER BY created_at DESC, id DESC");
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .fetch_all(&mut *conn)
                .await?
        }
    };
    rows.iter().map(from_row).collect()
}

/// Soft-revokes a token (keeps the first revocation time); returns it as it now stands.
pub async fn revoke(conn: &mut AnyConnection, id: &str, now: i64) -> Result<Option<NodeToken>, StoreError> {
    let sql = format!(
        "UPDATE node_tokens SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2 RETURNING {COLUMNS}"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(now)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// Records a use of the token (the caller writes at most once a minute per token).
pub async fn touch(conn: &mut AnyConnection, id: &str, now: i64) -> Result<(), StoreError> {
    sqlx::query("UPDATE node_tokens SET last_used_at = $1 WHERE id = $2")
        .bind(now)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
