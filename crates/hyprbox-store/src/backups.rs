//! HyprVault: backup policies, their runs, and what the scheduler asks of them. A policy's jobs
//! carry its id (`jobs.policy_id`), so "at most one queued or running backup per policy" is one
//! indexed lookup.

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::StoreError;
use crate::jobs::{self, Job, NewJob};

pub const RUNNING: &str = "RUNNING";
pub const SUCCEEDED: &str = "SUCCEEDED";
pub const FAILED: &str = "FAILED";

#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub id: String,
    pub name: String,
    pub node_id: String,
    /// A JSON array of absolute paths, as text.
    pub paths: String,
    pub schedule: Option<String>,
    pub repo_url: String,
    pub password_ref: String,
    pub keep_daily: i64,
    pub keep_weekly: i64,
    pub keep_monthly: i64,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub next_run_at: Option<i64>,
    pub stale_after_ms: i64,
    pub last_success_at: Option<i64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Run {
    pub id: String,
    pub policy_id: String,
    pub node_id: String,
    pub job_id: Option<String>,
    pub status: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub snapshot_id: Option<String>,
    pub size_bytes: Option<i64>,
    pub files_count: Option<i64>,
    pub duration_ms: Option<i64>,
    pub error: Option<String>,
}

/// What a run's completion records.
#[derive(Clone, Debug, Default)]
pub struct RunOutcome {
    pub succeeded: bool,
    pub snapshot_id: Option<String>,
    pub size_bytes: Option<i64>,
    pub files_count: Option<i64>,
    pub duration_ms: Option<i64>,
    pub error: Option<String>,
}

const POLICY_COLUMNS: &str = "id, name, node_id, paths, schedule, repo_url, password_ref, keep_daily, \
     keep_weekly, keep_monthly, created_by, created_at, updated_at, next_run_at, stale_after_ms, last_success_at";

const RUN_COLUMNS: &str = "id, policy_id, node_id, job_id, status, started_at, finished_at, snapshot_id, \
     size_bytes, files_count, duration_ms, error";

fn policy_from_row(row: &AnyRow) -> Result<Policy, StoreError> {
    Ok(Policy {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        node_id: row.try_get("node_id")?,
        paths: row.try_get("paths")?,
        schedule: row.try_get("schedule")?,
        repo_url: row.try_get("repo_url")?,
        password_ref: row.try_get("password_ref")?,
        keep_daily: row.try_get("keep_daily")?,
        keep_weekly: row.try_get("keep_weekly")?,
        keep_monthly: row.try_get("keep_monthly")?,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        next_run_at: row.try_get("next_run_at")?,
        stale_after_ms: row.try_get("stale_after_ms")?,
        last_success_at: row.try_get("last_success_at")?,
    })
}

fn run_from_row(row: &AnyRow) -> Result<Run, StoreError> {
    Ok(Run {
        id: row.try_get("id")?,
        policy_id: row.try_get("policy_id")?,
        node_id: row.try_get("node_id")?,
        job_id: row.try_get("job_id")?,
        status: row.try_get("status")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        snapshot_id: row.try_get("snapshot_id")?,
        size_bytes: row.try_get("size_bytes")?,
        files_count: row.try_get("files_count")?,
        duration_ms: row.try_get("duration_ms")?,
        error: row.try_get("error")?,
    })
}

/// Inserts `policy` as given, or, when its id exists, replaces every field but the id, creator
/// and creation time.
pub async fn save(conn: &mut AnyConnection, policy: &Policy) -> Result<Policy, StoreError> {
    let sql = format!(
        "INSERT INTO backup_policies ({POLICY_COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, node_id = excluded.node_id, \
         paths = excluded.paths, schedule = excluded.schedule, repo_url = excluded.repo_url, \
         password_ref = excluded.password_ref, keep_daily = excluded.keep_daily, \
         keep_weekly = excluded.keep_weekly, keep_monthly = excluded.keep_monthly, \
         updated_at = excluded.updated_at, next_run_at = excluded.next_run_at, \
         stale_after_ms = excluded.stale_after_ms \
         RETURNING {POLICY_COLUMNS}"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(&policy.id)
        .bind(&policy.name)
        .bind(&policy.node_id)
        .bind(&policy.paths)
        .bind(policy.schedule.as_deref())
        .bind(&policy.repo_url)
        .bind(&policy.password_ref)
        .bind(policy.keep_daily)
        .bind(policy.keep_weekly)
        .bind(policy.keep_monthly)
        .bind(&policy.created_by)
        .bind(policy.created_at)
        .bind(policy.updated_at)
        .bind(policy.next_run_at)
        .bind(policy.stale_after_ms)
        .bind(policy.last_success_at)
        .fetch_one(&mut *conn)
        .await?;
    policy_from_row(&row)
}

pub async fn get(conn: &mut AnyConnection, id: &str) -> Result<Option<Policy>, StoreError> {
    let sql = format!("SELECT {POLICY_COLUMNS} FROM backup_policies WHERE id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(policy_from_row).transpose()
}

/// Policies, oldest first, narrowed to a node and to a creator when given.
pub async fn list(
    conn: &mut AnyConnection,
    node_id: Option<&str>,
    created_by: Option<&str>,
) -> Result<Vec<Policy>, StoreError> {
    let sql = format!(
        "SELECT {POLICY_COLUMNS} FROM backup_policies \
         WHERE ($1 IS NULL OR node_id = $1) AND ($2 IS NULL OR created_by = $2) \
         ORDER BY created_at, id"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(node_id)
        .bind(created_by)
        .fetch_all(&mut *conn)
        .await?;
    rows.iter().map(policy_from_row).collect()
}

/// Deletes a policy and its runs; `false` when there was none.
pub async fn delete(conn: &mut AnyConnection, id: &str) -> Result<bool, StoreError> {
    sqlx::query("DELETE FROM backup_runs WHERE policy_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    let done = sqlx::query("DELETE FROM backup_policies WHERE id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Policies whose cron tick is at or before `now`, soonest first.
pub async fn due(conn: &mut AnyConnection, now: i64, limit: i64) -> Result<Vec<Policy>, StoreError> {
    let sql = format!(
        "SELECT {POLICY_COLUMNS} FROM backup_policies WHERE next_run_at <= $1 \
         ORDER BY next_run_at, id LIMIT $2"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(now)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?;
    rows.iter().map(policy_from_row).collect()
}

/// The id of the policy's QUEUED or RUNNING job, if any.
pub async fn active_job(conn: &mut AnyConnection, policy_id: &str) -> Result<Option<String>, StoreError> {
    let row = sqlx::query(
        "SELECT id FROM jobs WHERE policy_id = $1 AND status IN ('QUEUED', 'RUNNING') \
         ORDER BY created_at LIMIT 1",
    )
    .bind(policy_id)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|r| r.try_get("id")).transpose().map_err(StoreError::from)
}

/// Inserts `job` (which names its policy) unless the policy already has a QUEUED or RUNNING job;
/// returns the policy's job now and whether it is the new one.
pub async fn queue_unless_active(
    conn: &mut AnyConnection,
    job: &NewJob<'_>,
) -> Result<(Job, bool), StoreError> {
    if let Some(policy_id) = job.policy_id
        && let Some(active) = active_job(conn, policy_id).await?
        && let Some(active) = jobs::get(conn, &active).await?
    {
        return Ok((active, false));
    }
    Ok((jobs::insert(conn, job).await?, true))
}

/// A due policy's tick, as the scheduler takes it.
pub struct Tick<'a> {
    pub policy_id: &'a str,
    /// The `next_run_at` the scheduler read; the tick is taken only if it is still this.
    pub expected: i64,
    /// The tick after it (`None`: the schedule never fires again).
    pub next: Option<i64>,
    /// The job to queue, unless the policy has one QUEUED or RUNNING (`None`: its node is gone).
    pub job: Option<NewJob<'a>>,
}

/// Takes many due ticks at once, in a few multi-row statements: moves each policy's next tick
/// (compare-and-set on `expected`, so a tick another scheduler took is skipped) and queues the jobs
/// of the ticks taken whose policy has none QUEUED or RUNNING. Returns the jobs queued and how many
/// policies still had one.
pub async fn take_ticks(
    conn: &mut AnyConnection,
    ticks: &[Tick<'_>],
) -> Result<(Vec<Job>, usize), StoreError> {
    const ROWS: usize = 300;
    let mut queued = Vec::new();
    let mut already_active = 0;
    for chunk in ticks.chunks(ROWS) {
        // `CASE id WHEN …` rather than a join on a VALUES list: SQLite would scan the whole table
        // for each row of the list; this way both backends go through the primary key.
        let (mut next, mut expected, mut ids) = (String::new(), String::new(), Vec::new());
        for i in 0..chunk.len() {
            let p = i * 3;
            next.push_str(&format!(" WHEN ${} THEN CAST(${} AS BIGINT)", p + 1, p + 3));
            expected.push_str(&format!(" WHEN ${} THEN CAST(${} AS BIGINT)", p + 1, p + 2));
            ids.push(format!("${}", p + 1));
        }
        let sql = format!(
            "UPDATE backup_policies SET next_run_at = CASE id{next} END \
             WHERE id IN ({}) AND next_run_at = CASE id{expected} END RETURNING id",
            ids.join(", ")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for tick in chunk {
            query = query.bind(tick.policy_id).bind(tick.expected).bind(tick.next);
        }
        let taken: std::collections::HashSet<String> = query
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|row| row.try_get("id"))
            .collect::<Result<_, _>>()?;
        let wanted: Vec<&Tick<'_>> = chunk
            .iter()
            .filter(|t| t.job.is_some() && taken.contains(t.policy_id))
            .collect();
        if wanted.is_empty() {
            continue;
        }
        let placeholders: Vec<String> = (1..=wanted.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT DISTINCT policy_id FROM jobs WHERE policy_id IN ({}) AND status IN ('QUEUED', 'RUNNING')",
            placeholders.join(", ")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for tick in &wanted {
            query = query.bind(tick.policy_id);
        }
        let active: std::collections::HashSet<String> = query
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|row| row.try_get("policy_id"))
            .collect::<Result<_, _>>()?;
        already_active += wanted.iter().filter(|t| active.contains(t.policy_id)).count();
        let jobs: Vec<NewJob<'_>> = wanted
            .iter()
            .filter(|t| !active.contains(t.policy_id))
            .filter_map(|t| t.job.clone())
            .collect();
        queued.extend(jobs::insert_many(conn, &jobs).await?);
    }
    Ok((queued, already_active))
}

/// Policies with no successful run within their `stale_after_ms` (counted from creation until the
/// first success).
pub async fn stale(conn: &mut AnyConnection, now: i64) -> Result<Vec<Policy>, StoreError> {
    let sql = format!(
        "SELECT {POLICY_COLUMNS} FROM backup_policies \
         WHERE COALESCE(last_success_at, created_at) + stale_after_ms < $1"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(now)
        .fetch_all(&mut *conn)
        .await?;
    rows.iter().map(policy_from_row).collect()
}

/// The policies of a node (for the inventory's cross-check).
pub async fn of_node(conn: &mut AnyConnection, node_id: &str) -> Result<Vec<Policy>, StoreError> {
    list(conn, Some(node_id), None).await
}

pub async fn start_run(
    conn: &mut AnyConnection,
    run_id: &str,
    policy: &Policy,
    job_id: Option<&str>,
    now: i64,
) -> Result<Run, StoreError> {
    let sql = format!(
        "INSERT INTO backup_runs (id, policy_id, node_id, job_id, status, started_at) \
         VALUES ($1, $2, $3, $4, 'RUNNING', $5) RETURNING {RUN_COLUMNS}"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(run_id)
        .bind(&policy.id)
        .bind(&policy.node_id)
        .bind(job_id)
        .bind(now)
        .fetch_one(&mut *conn)
        .await?;
    run_from_row(&row)
}

pub async fn get_run(conn: &mut AnyConnection, id: &str) -> Result<Option<Run>, StoreError> {
    let sql = format!("SELECT {RUN_COLUMNS} FROM backup_runs WHERE id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(run_from_row).transpose()
}

/// The run recorded for `job_id`, if any.
pub async fn run_of_job(conn: &mut AnyConnection, job_id: &str) -> Result<Option<Run>, StoreError> {
    let sql = format!("SELECT {RUN_COLUMNS} FROM backup_runs WHERE job_id = $1 ORDER BY started_at LIMIT 1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(job_id)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(run_from_row).transpose()
}

/// Ends a RUNNING run; `None` when it is not RUNNING (any more). A success also moves the
/// policy's `last_success_at`.
pub async fn complete_run(
    conn: &mut AnyConnection,
    id: &str,
    outcome: &RunOutcome,
    now: i64,
) -> Result<Option<Run>, StoreError> {
    let sql = format!(
        "UPDATE backup_runs SET status = $2, finished_at = $3, snapshot_id = $4, size_bytes = $5, \
         files_count = $6, duration_ms = $7, error = $8 WHERE id = $1 AND status = 'RUNNING' \
         RETURNING {RUN_COLUMNS}"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .bind(if outcome.succeeded { SUCCEEDED } else { FAILED })
        .bind(now)
        .bind(outcome.snapshot_id.as_deref())
        .bind(outcome.size_bytes)
        .bind(outcome.files_count)
        .bind(outcome.duration_ms)
        .bind(outcome.error.as_deref())
        .fetch_optional(&mut *conn)
        .await?;
    let Some(run) = row.as_ref().map(run_from_row).transpose()? else {
        return Ok(None);
    };
    if outcome.succeeded {
        sqlx::query("UPDATE backup_policies SET last_success_at = $2 WHERE id = $1")
            .bind(&run.policy_id)
            .bind(now)
            .execute(&mut *conn)
            .await?;
    }
    Ok(Some(run))
}

/// The newest `limit` runs of a policy, newest first.
pub async fn runs(conn: &mut AnyConnection, policy_id: &str, limit: i64) -> Result<Vec<Run>, StoreError> {
    let sql = format!(
        "SELECT {RUN_COLUMNS} FROM backup_runs WHERE policy_id = $1 \
         ORDER BY started_at DESC, id DESC LIMIT $2"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(policy_id)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?;
    rows.iter().map(run_from_row).collect()
}

/// The runs of a node, newest first (the node page).
pub async fn runs_of_node(
    conn: &mut AnyConnection,
    node_id: &str,
    limit: i64,
) -> Result<Vec<Run>, StoreError> {
    let sql = format!(
        "SELECT {RUN_COLUMNS} FROM backup_runs WHERE node_id = $1 \
         ORDER BY started_at DESC, id DESC LIMIT $2"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(node_id)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?;
    rows.iter().map(run_from_row).collect()
}

/// A container the node's agent listed.
#[derive(Clone, Debug, PartialEq)]
pub struct Container {
    pub id: String,
    pub name: String,
    pub image: String,
    pub state: String,
    /// A JSON object, as text.
    pub labels: String,
}

/// Replaces what the node reported running.
pub async fn replace_containers(
    conn: &mut AnyConnection,
    node_id: &str,
    containers: &[Container],
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM node_containers WHERE node_id = $1")
        .bind(node_id)
        .execute(&mut *conn)
        .await?;
    for container in containers {
        sqlx::query(
            "INSERT INTO node_containers (node_id, id, name, image, state, labels, seen_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (node_id, id) DO NOTHING",
        )
        .bind(node_id)
        .bind(&container.id)
        .bind(&container.name)
        .bind(&container.image)
        .bind(&container.state)
        .bind(&container.labels)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// What the node last reported running, by name.
pub async fn containers(conn: &mut AnyConnection, node_id: &str) -> Result<Vec<Container>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, name, image, state, labels FROM node_containers WHERE node_id = $1 ORDER BY name, id",
    )
    .bind(node_id)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(Container {
                id: row.try_get("id")?,
                name: row.try_get("name")?,
                image: row.try_get("image")?,
                state: row.try_get("state")?,
                labels: row.try_get("labels")?,
            })
        })
        .collect()
}
