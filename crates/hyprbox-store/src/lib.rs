//! HyprBox's storage: every SQL statement the product runs, over one `sqlx::Any` pool that is either
//! an embedded SQLite file or a Postgres server.
//!
//! The same query text runs on both backends (see `docs/ARCHITECTURE.md` for the rules that make this
//! work). Where the dialects must differ, a function matches on [`Dialect`]; nowhere else. This crate
//! knows nothing about HTTP: it returns [`StoreError`] and plain row structs.

pub mod ai_tasks;
pub mod audit;
pub mod backups;
mod error;
pub mod findings;
mod group_commit;
pub mod jobs;
pub mod metrics;
pub mod nodes;
pub mod resets;
pub mod sessions;
#[cfg(test)]
mod store_tests;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod tokens;
pub mod users;

use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::time::{Duration, Instant};

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, Connection, Executor};

pub use error::StoreError;
pub use group_commit::BoxFuture;
use group_commit::GroupCommit;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// The SQL dialect behind the pool; the only place the two backends are told apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
        }
    }
}

/// How to open the pool; the defaults suit a server.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            max_connections: 8,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// The database: a pool plus the dialect it speaks. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    /// Where write transactions run. On SQLite, which has one writer anyway, this is a single
    /// connection with a large page cache, so writers queue here instead of contending for the
    /// file lock, and the pages hot writes touch (the end of each node's history) stay cached.
    /// On Postgres it is the same pool.
    writer: AnyPool,
    /// SQLite's queue of atomic writes that share one commit (see [`Store::write`]).
    group: Option<GroupCommit>,
    dialect: Dialect,
}

/// The SQLite writer connection's page cache, in KiB (the readers keep SQLite's default 2 MiB).
const SQLITE_WRITER_CACHE_KIB: i64 = 64 * 1024;

/// A write transaction. Dropping it without `commit` rolls back.
pub struct Tx(sqlx::Transaction<'static, Any>);

impl Tx {
    pub async fn commit(self) -> Result<(), StoreError> {
        self.0.commit().await.map_err(StoreError::from)
    }
}

impl Deref for Tx {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        &self.0
    }
}

impl DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.0
    }
}

/// Turns the accepted spellings of a database URL into one sqlx understands.
///
/// Postgres may be written `postgres://`, `postgresql://` or in the Hyperion backend's SQLAlchemy
/// forms (`postgresql+asyncpg://`, `postgresql+psycopg://`); SQLite as `sqlite://path` or `sqlite:path`.
pub fn normalize_url(url: &str) -> Result<(Dialect, String), StoreError> {
    let url = url.trim();
    if let Some((scheme, rest)) = url.split_once("://") {
        let base = scheme.split('+').next().unwrap_or(scheme);
        match base {
            "postgres" | "postgresql" => return Ok((Dialect::Postgres, format!("postgres://{rest}"))),
            "sqlite" => return Ok((Dialect::Sqlite, format!("sqlite://{rest}"))),
            _ => {}
        }
    } else if let Some(rest) = url.strip_prefix("sqlite:") {
        return Ok((Dialect::Sqlite, format!("sqlite://{rest}")));
    }
    Err(StoreError::Config(format!(
        "DATABASE_URL must start with sqlite:// or postgres:// (got {})",
        url.split(':').next().unwrap_or("")
    )))
}

/// The file path inside a SQLite URL (without its query string).
fn sqlite_path(url: &str) -> &str {
    let rest = url.strip_prefix("sqlite://").unwrap_or(url);
    rest.split('?').next().unwrap_or(rest)
}

impl Store {
    /// Opens the pool. A SQLite file is created (with its directory) when missing and put in WAL mode.
    pub async fn connect(url: &str, options: &ConnectOptions) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let (dialect, url) = normalize_url(url)?;
        let url = match dialect {
            Dialect::Sqlite => {
                let path = sqlite_path(&url);
                if let Some(dir) = Path::new(path)
                    .parent()
                    .filter(|d| path != ":memory:" && !d.as_os_str().is_empty())
                {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| StoreError::Config(format!("cannot create {}: {e}", dir.display())))?;
                }
                if url.contains('?') {
                    url
                } else {
                    format!("{url}?mode=rwc")
                }
            }
            Dialect::Postgres => url,
        };
        let connect: AnyConnectOptions = url
            .parse()
            .map_err(|e: sqlx::Error| StoreError::Config(format!("invalid DATABASE_URL: {e}")))?;
        let open = |max_connections: u32, cache_kib: Option<i64>, synchronous: &'static str| {
            AnyPoolOptions::new()
                .max_connections(max_connections)
                .min_connections(0)
                .acquire_timeout(options.acquire_timeout)
                // A SQLite connection lives in this process and cannot be cut off, so pinging it
                // before each use only costs a round trip to its worker thread. A Postgres
                // connection can die with the server, and is tested before it is handed out.
                .test_before_acquire(dialect == Dialect::Postgres)
                .after_connect(move |conn, _| {
                    Box::pin(async move {
                        if dialect == Dialect::Sqlite {
                            // WAL lets readers run beside the one writer. The writer connection
                            // commits with FULL: a commit that answered 2xx survives a power loss
                            // too (NORMAL survives only a process crash); heartbeat batches pay one
                            // sync per batch, not per heartbeat.
                            conn.execute("PRAGMA journal_mode = WAL").await?;
                            let pragma = format!("PRAGMA synchronous = {synchronous}");
                            conn.execute(sqlx::AssertSqlSafe(pragma)).await?;
                            conn.execute("PRAGMA foreign_keys = ON").await?;
                            conn.execute("PRAGMA busy_timeout = 5000").await?;
                            if let Some(kib) = cache_kib {
                                let pragma = format!("PRAGMA cache_size = -{kib}");
                                conn.execute(sqlx::AssertSqlSafe(pragma)).await?;
                                // A checkpoint syncs the database file as well: let the WAL grow to
                                // 32 MiB between them, not SQLite's 4 MiB, so bulk output pays for
                                // fewer of them.
                                conn.execute("PRAGMA wal_autocheckpoint = 8192").await?;
                            }
                        }
                        Ok(())
                    })
                })
                .connect_with(connect.clone())
        };
        let pool = open(options.max_connections, None, "NORMAL").await?;
        let writer = match dialect {
            Dialect::Sqlite => open(1, Some(SQLITE_WRITER_CACHE_KIB), "FULL").await?,
            Dialect::Postgres => pool.clone(),
        };
        let group = (dialect == Dialect::Sqlite).then(|| GroupCommit::start(writer.clone()));
        Ok(Store {
            pool,
            writer,
            group,
            dialect,
        })
    }

    /// Applies the embedded migrations of this backend.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.migrator()
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Migration(e.to_string()))
    }

    /// Applies this backend's migrations up to `version` only, to test what a later one does to
    /// existing rows.
    #[cfg(test)]
    pub(crate) async fn migrate_to(&self, version: i64) -> Result<(), StoreError> {
        self.migrator()
            .run_to(version, &self.pool)
            .await
            .map_err(|e| StoreError::Migration(e.to_string()))
    }

    fn migrator(&self) -> &'static Migrator {
        match self.dialect {
            Dialect::Sqlite => &SQLITE_MIGRATIONS,
            Dialect::Postgres => &POSTGRES_MIGRATIONS,
        }
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Starts a write transaction.
    ///
    /// On SQLite it is `BEGIN IMMEDIATE`: a deferred transaction that reads first and writes later
    /// fails with SQLITE_BUSY instead of waiting when another writer got there in between.
    pub async fn begin(&self) -> Result<Tx, StoreError> {
        let tx = match self.dialect {
            Dialect::Sqlite => self.writer.begin_with("BEGIN IMMEDIATE").await?,
            Dialect::Postgres => self.writer.begin().await?,
        };
        Ok(Tx(tx))
    }

    /// Runs `op` as one atomic write, durable when this returns.
    ///
    /// On SQLite, `op` joins the writer's next group commit: many callers' writes share one
    /// transaction and one sync, each in its own savepoint (see `group_commit`). On Postgres, which
    /// groups commits itself, `op` runs in its own transaction. `op` runs to completion even if the
    /// caller stops waiting, so it owns what it writes. A panic inside `op` is answered as an error
    /// and its writes rolled back, on both backends.
    pub async fn write<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut AnyConnection) -> BoxFuture<'c, Result<T, StoreError>> + Send + 'static,
    {
        if let Some(group) = &self.group {
            return group.write(op).await;
        }
        let mut tx = self.begin().await?;
        let value = group_commit::guarded(op(&mut tx)).await?;
        tx.commit().await?;
        Ok(value)
    }

    /// [`Store::write`] for an `op` that makes exactly one call to the database, which is atomic
    /// on its own when it runs alone, and durable when this returns.
    ///
    /// On Postgres the call is one statement and runs without the BEGIN and COMMIT round trips. On
    /// SQLite it may hold several statements, sent together; it joins the group commit, and its
    /// SQL must start with `lead` (the transaction's `BEGIN` and the op's savepoint), which saves
    /// the round trips they would take on their own. On Postgres `lead` is empty. An `op` must
    /// make its call before anything that can fail: one that fails before its call fails its
    /// whole group (those before it included), since its savepoint was never opened. It reads
    /// with `fetch_all`, as `fetch_optional` stops after the first statement.
    pub async fn write_call<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut AnyConnection, &'c str) -> BoxFuture<'c, Result<T, StoreError>>
            + Send
            + 'static,
    {
        if let Some(group) = &self.group {
            return group.write_led(op).await;
        }
        let mut conn = self.writer.acquire().await?;
        group_commit::guarded(op(&mut conn, "")).await
    }

    /// A connection of the writer pool, for a hot single-statement write that needs no explicit
    /// transaction (on SQLite, the one writer connection; on Postgres, the pool).
    pub async fn write_conn(&self) -> Result<PoolConnection<Any>, StoreError> {
        Ok(self.writer.acquire().await?)
    }

    /// A pooled connection for reads and single-statement writes.
    pub async fn conn(&self) -> Result<PoolConnection<Any>, StoreError> {
        Ok(self.pool.acquire().await?)
    }

    /// Round-trips a trivial query; returns how long it took.
    pub async fn ping(&self) -> Result<Duration, StoreError> {
        let started = Instant::now();
        let mut conn = self.pool.acquire().await?;
        conn.ping().await?;
        Ok(started.elapsed())
    }

    /// Closes the pool: in-flight queries finish, new ones fail with [`StoreError::Unavailable`].
    pub async fn close(&self) {
        self.pool.close().await;
        self.writer.close().await;
    }
}

/// Milliseconds since the Unix epoch, the unit of every time column.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A new time-ordered id (UUID v7) as text.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hyperion_and_plain_postgres_url_forms_are_accepted() {
        for url in [
            "postgres://u@h/db",
            "postgresql://u@h/db",
            "postgresql+asyncpg://u@h/db",
            "postgresql+psycopg://u@h/db",
        ] {
            assert_eq!(
                normalize_url(url).unwrap(),
                (Dialect::Postgres, "postgres://u@h/db".to_string())
            );
        }
        assert_eq!(normalize_url("sqlite:./x.db").unwrap().0, Dialect::Sqlite);
        assert_eq!(normalize_url("sqlite://./x.db").unwrap().1, "sqlite://./x.db");
        assert!(normalize_url("mysql://h/db").is_err());
    }

    #[test]
    fn the_two_migration_trees_hold_the_same_file_names() {
        let names = |dir: &str| {
            let mut names: Vec<String> = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(dir))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        };
        let sqlite = names("migrations/sqlite");
        assert!(!sqlite.is_empty());
        assert_eq!(sqlite, names("migrations/postgres"));
    }
}
