//! A throw-away database per test: a fresh SQLite file, or a fresh Postgres database when
//! `HYPRBOX_TEST_DATABASE_URL` is set (created from that server, dropped when the test ends).

use std::path::PathBuf;

use sqlx::{Connection, Executor};

/// The environment variable that switches the test suite to Postgres.
pub const TEST_DATABASE_URL: &str = "HYPRBOX_TEST_DATABASE_URL";

pub struct TestDatabase {
    pub url: String,
    /// The server URL and the database name to drop afterwards (Postgres only).
    postgres: Option<(String, String)>,
    dir: Option<PathBuf>,
}

impl TestDatabase {
    pub async fn new() -> TestDatabase {
        match std::env::var(TEST_DATABASE_URL) {
            Ok(admin_url) if !admin_url.trim().is_empty() => Self::postgres(admin_url.trim()).await,
            _ => Self::sqlite(),
        }
    }

    /// A store on this database, migrated.
    pub async fn store(&self) -> crate::Store {
        let store = crate::Store::connect(&self.url, &crate::ConnectOptions::default())
            .await
            .unwrap();
        store.migrate().await.unwrap();
        store
    }

    fn sqlite() -> TestDatabase {
        let dir = std::env::temp_dir().join(format!("hyprbox-test-{}", uuid::Uuid::now_v7().simple()));
        let url = format!("sqlite://{}", dir.join("hyprbox.db").display());
        TestDatabase {
            url,
            postgres: None,
            dir: Some(dir),
        }
    }

    async fn postgres(admin_url: &str) -> TestDatabase {
        sqlx::any::install_default_drivers();
        let (_, admin_url) = crate::normalize_url(admin_url).expect("HYPRBOX_TEST_DATABASE_URL");
        let name = format!("hyprbox_test_{}", uuid::Uuid::now_v7().simple());
        let mut conn = sqlx::AnyConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("{TEST_DATABASE_URL} is set but Postgres is unreachable: {e}"));
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .expect("create the test database");
        conn.close().await.ok();
        TestDatabase {
            url: with_database(&admin_url, &name),
            postgres: Some((admin_url, name)),
            dir: None,
        }
    }
}

/// The same server URL pointing at another database.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let (scheme, rest) = base.split_once("://").unwrap_or(("postgres", base));
    let authority = rest.split('/').next().unwrap_or(rest);
    let mut out = format!("{scheme}://{authority}/{database}");
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
        if let Some((admin_url, name)) = self.postgres.take() {
            // Drop runs inside the test's runtime, which cannot be blocked on; a short-lived
            // runtime on its own thread does the async cleanup.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async {
                    let mut conn = sqlx::AnyConnection::connect(&admin_url).await?;
                    conn.execute(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .await?;
                    conn.close().await
                })
                .map_err(std::io::Error::other)
            })
            .join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn a_server_url_is_pointed_at_another_database() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/test", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(with_database("postgres://h:1", "x"), "postgres://h:1/x");
        assert_eq!(
            with_database("postgres://h/db?sslmode=disable", "x"),
            "postgres://h/x?sslmode=disable"
        );
    }
}
