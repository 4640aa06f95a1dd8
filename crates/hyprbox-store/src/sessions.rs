//! Revoked token ids: a logout revokes the presented token's `jti` until the token would have expired.

use sqlx::{AnyConnection, Row};

use crate::StoreError;

/// Records a revoked `jti`; revoking twice is harmless.
pub async fn revoke(
    conn: &mut AnyConnection,
    jti: &str,
    user_id: &str,
    expires_at: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO revoked_tokens (jti, user_id, expires_at) VALUES ($1, $2, $3) ON CONFLICT (jti) DO NOTHING",
    )
    .bind(jti)
    .bind(user_id)
    .bind(expires_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Every revoked `jti` still worth remembering (its token has not expired), with its expiry.
pub async fn active(conn: &mut AnyConnection, now: i64) -> Result<Vec<(String, i64)>, StoreError> {
    let rows = sqlx::query("SELECT jti, expires_at FROM revoked_tokens WHERE expires_at > $1")
        .bind(now)
        .fetch_all(&mut *conn)
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("jti")?, r.try_get("expires_at")?)))
        .collect()
}

/// Deletes up to `batch` rows whose token has expired; returns how many went.
pub async fn prune(conn: &mut AnyConnection, now: i64, batch: i64) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "DELETE FROM revoked_tokens WHERE jti IN \
         (SELECT jti FROM revoked_tokens WHERE expires_at <= $1 LIMIT $2)",
    )
    .bind(now)
    .bind(batch)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}
