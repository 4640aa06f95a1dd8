//! Password-reset tokens: single use, stored only as a SHA-256 hash, short-lived.

use sqlx::{AnyConnection, Row};

use crate::StoreError;

pub async fn insert(
    conn: &mut AnyConnection,
    token_hash: &str,
    user_id: &str,
    now: i64,
    expires_at: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO password_reset_tokens (token_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(token_hash)
    .bind(user_id)
    .bind(now)
    .bind(expires_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Marks the token used if it is unused and unexpired, in one statement, and returns its user.
///
/// Two concurrent calls with the same token: the row lock (Postgres) or the single writer (SQLite)
/// orders them, and the second sees `used_at` set and gets `None`.
pub async fn consume(
    conn: &mut AnyConnection,
    token_hash: &str,
    now: i64,
) -> Result<Option<String>, StoreError> {
    let row = sqlx::query(
        "UPDATE password_reset_tokens SET used_at = $1 \
         WHERE token_hash = $2 AND used_at IS NULL AND expires_at > $1 RETURNING user_id",
    )
    .bind(now)
    .bind(token_hash)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|r| r.try_get("user_id")).transpose()?)
}

/// Burns every other open token of the user (a reset invalidates its siblings).
pub async fn burn_for_user(conn: &mut AnyConnection, user_id: &str, now: i64) -> Result<(), StoreError> {
    sqlx::query("UPDATE password_reset_tokens SET used_at = $1 WHERE user_id = $2 AND used_at IS NULL")
        .bind(now)
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Deletes up to `batch` tokens that are used or expired before `before`.
pub async fn prune(conn: &mut AnyConnection, before: i64, batch: i64) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "DELETE FROM password_reset_tokens WHERE token_hash IN \
         (SELECT token_hash FROM password_reset_tokens WHERE expires_at <= $1 LIMIT $2)",
    )
    .bind(before)
    .bind(batch)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}
