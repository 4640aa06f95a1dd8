use thiserror::Error;

/// Everything the store can fail with. sqlx errors never leave this crate.
#[derive(Clone, Debug, Error)]
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
    /// The write breaks a limit the caller set; nothing was written. The message says which.
    #[error("{0}")]
    Refused(String),
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
            sqlx::Error::Database(db) if busy_or_gone(db.code().as_deref(), db.message()) => {
                StoreError::Unavailable(db.message().to_string())
            }
            sqlx::Error::PoolClosed
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::Io(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(err.to_string()),
            sqlx::Error::Tls(_) | sqlx::Error::Configuration(_) => StoreError::Unavailable(err.to_string()),
            other => StoreError::Database(other.to_string()),
        }
    }
}

/// Database errors that say "not now" rather than "not this": SQLite busy or locked (another
/// connection holds the write lock past `busy_timeout`), and Postgres connection exceptions
/// (class 08), a server shutting down or starting (57P01–57P03), too many connections (53300), a
/// lock or statement timeout (55P03, 57014) and a database not accepting connections (55000). The
/// request may succeed when retried: 503.
fn busy_or_gone(code: Option<&str>, message: &str) -> bool {
    match code {
        // SQLite's primary codes 5 and 6, and their extended forms (517, 261, 262, …); a
        // Postgres SQLSTATE always has five characters, a SQLite code at most four digits.
        Some(code) if code.len() < 5 && code.parse::<u32>().is_ok_and(|c| matches!(c & 0xff, 5 | 6)) => true,
        Some(code) if code.starts_with("08") => true,
        Some("57P01" | "57P02" | "57P03" | "53300" | "55P03" | "57014" | "55000") => true,
        _ => message.contains("database is locked") || message.contains("database table is locked"),
    }
}

#[cfg(test)]
mod tests {
    use super::busy_or_gone;

    #[test]
    fn busy_locked_and_lost_connections_are_unavailable_not_bugs() {
        for code in [
            "5", "6", "517", "261", "08006", "08001", "57P01", "57P03", "53300",
        ] {
            assert!(busy_or_gone(Some(code), ""), "{code}");
        }
        assert!(busy_or_gone(None, "database is locked"));
        for code in ["19", "2067", "23505", "22021", "42P01"] {
            assert!(!busy_or_gone(Some(code), "other"), "{code}");
        }
    }
}
