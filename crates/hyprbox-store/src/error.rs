use thiserror::Error;

/// Everything the store can fail with. sqlx errors never leave this crate.
#[derive(Debug, Error)]
pub enum StoreError {
    /// A unique constraint refused the write; `constraint` names it as well as the backend can
    /// (Postgres gives the constraint name, SQLite the `table.column` list).
    #[error("unique constraint violated: {constraint}")]
    Conflict { constraint: String },
    /// The database cannot be reached (pool closed, connection refused, timeout).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("invalid database configuration: {0}")]
    Config(String),
    #[error("migration failed: {0}")]
    Migration(String),
    #[error("database error: {0}")]
    Database(String),
}

impl StoreError {
    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Conflict { .. })
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict {
                constraint: db
                    .constraint()
                    .map_or_else(|| db.message().to_string(), str::to_string),
            },
            sqlx::Error::PoolClosed | sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) => {
                StoreError::Unavailable(err.to_string())
            }
            sqlx::Error::Tls(_) | sqlx::Error::Configuration(_) => StoreError::Unavailable(err.to_string()),
            other => StoreError::Database(other.to_string()),
        }
    }
}
