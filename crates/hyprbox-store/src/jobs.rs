//! Jobs and their output. A job is claimed by exactly one agent call (the one place the two
//! dialects differ: `FOR UPDATE SKIP LOCKED` on Postgres, SQLite's single writer elsewhere); its
//! output is appended as numbered chunks, capped per job, and read back as a tail or a stream.

use sqlx::any::{AnyArguments, AnyRow};
use sqlx::{AnyConnection, Arguments, Row};

use crate::{Dialect, Store, StoreError};

pub const QUEUED: &str = "QUEUED";
pub const RUNNING: &str = "RUNNING";
pub const SUCCEEDED: &str = "SUCCEEDED";
pub const FAILED: &str = "FAILED";
pub const CANCELLED: &str = "CANCELLED";

pub fn is_terminal(status: &str) -> bool {
    matches!(status, SUCCEEDED | FAILED | CANCELLED)
}

#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    pub id: String,
    pub node_id: String,
    pub preset_name: String,
    pub preset_version: String,
    /// The resolved variables, a JSON object as text.
    pub variables: String,
    pub script: String,
    pub status: String,
    pub exit_code: Option<i64>,
    pub created_by: String,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub cancel_requested_at: Option<i64>,
    pub error: Option<String>,
    pub timeout_seconds: i64,
    /// The id of the node token whose pull claimed the job.
    pub claimed_by: Option<String>,
    pub stdout_bytes: i64,
    pub stderr_bytes: i64,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    /// The backup policy a `hypervault-restic` job runs for.
    pub policy_id: Option<String>,
}

/// The two output streams of a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    pub fn parse(value: &str) -> Option<Stream> {
        match value {
            "stdout" => Some(Stream::Stdout),
            "stderr" => Some(Stream::Stderr),
            _ => None,
        }
    }
}

/// One stored piece of output.
#[derive(Clone, Debug, PartialEq)]
pub struct Chunk {
    pub seq: i64,
    pub stream: Stream,
    pub data: Vec<u8>,
}

const COLUMNS: &str = "id, node_id, preset_name, preset_version, variables, script, status, exit_code, \
     created_by, created_at, started_at, finished_at, cancel_requested_at, error, timeout_seconds, \
     claimed_by, stdout_bytes, stderr_bytes, stdout_truncated, stderr_truncated, policy_id";

fn from_row(row: &AnyRow) -> Result<Job, StoreError> {
    Ok(Job {
        id: row.try_get("id")?,
        node_id: row.try_get("node_id")?,
        preset_name: row.try_get("preset_name")?,
        preset_version: row.try_get("preset_version")?,
        variables: row.try_get("variables")?,
        script: row.try_get("script")?,
        status: row.try_get("status")?,
        exit_code: row.try_get("exit_code")?,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        cancel_requested_at: row.try_get("cancel_requested_at")?,
        error: row.try_get("error")?,
        timeout_seconds: row.try_get("timeout_seconds")?,
        claimed_by: row.try_get("claimed_by")?,
        stdout_bytes: row.try_get("stdout_bytes")?,
        stderr_bytes: row.try_get("stderr_bytes")?,
        stdout_truncated: row.try_get::<i64, _>("stdout_truncated")? != 0,
        stderr_truncated: row.try_get::<i64, _>("stderr_truncated")? != 0,
        policy_id: row.try_get("policy_id")?,
    })
}

/// What a new job needs; the rest starts empty.
#[derive(Clone)]
pub struct NewJob<'a> {
    pub id: &'a str,
    pub node_id: &'a str,
    pub preset_name: &'a str,
    pub preset_version: &'a str,
    pub variables: &'a str,
    pub script: &'a str,
    pub created_by: &'a str,
    pub created_at: i64,
    pub timeout_seconds: i64,
    /// The backup policy a `hypervault-restic` job runs for.
    pub policy_id: Option<&'a str>,
}

pub async fn insert(conn: &mut AnyConnection, job: &NewJob<'_>) -> Result<Job, StoreError> {
    let sql = format!(
        "INSERT INTO jobs (id, node_id, preset_name, preset_version, variables, script, status, \
         created_by, created_at, timeout_seconds, policy_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING {COLUMNS}"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(job.id)
        .bind(job.node_id)
        .bind(job.preset_name)
        .bind(job.preset_version)
        .bind(job.variables)
        .bind(job.script)
        .bind(QUEUED)
        .bind(job.created_by)
        .bind(job.created_at)
        .bind(job.timeout_seconds)
        .bind(job.policy_id)
        .fetch_one(&mut *conn)
        .await?;
    from_row(&row)
}

/// Queues `job` together with its audit `event`, as one atomic write, durable when this returns.
/// It is one call to the database: on Postgres one statement (the audit row in a data-modifying
/// CTE), on SQLite the two statements behind the group commit's lead.
pub async fn create(
    store: &Store,
    job: &NewJob<'_>,
    event: &crate::audit::NewAuditEvent,
) -> Result<Job, StoreError> {
    let bad = |e: sqlx::error::BoxDynError| StoreError::Database(e.to_string());
    let mut values = AnyArguments::default();
    values.add(job.id.to_owned()).map_err(bad)?;
    values.add(job.node_id.to_owned()).map_err(bad)?;
    values.add(job.preset_name.to_owned()).map_err(bad)?;
    values.add(job.preset_version.to_owned()).map_err(bad)?;
    values.add(job.variables.to_owned()).map_err(bad)?;
    values.add(job.script.to_owned()).map_err(bad)?;
    values.add(QUEUED).map_err(bad)?;
    values.add(job.created_by.to_owned()).map_err(bad)?;
    values.add(job.created_at).map_err(bad)?;
    values.add(job.timeout_seconds).map_err(bad)?;
    values.add(job.policy_id.map(str::to_owned)).map_err(bad)?;
    crate::audit::add_values(&mut values, event)?;
    let audit = crate::audit::insert_sql(12);
    let insert = format!(
        "INSERT INTO jobs (id, node_id, preset_name, preset_version, variables, script, status, \
         created_by, created_at, timeout_seconds, policy_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING {COLUMNS}"
    );
    let dialect = store.dialect();
    store
        .write_call(move |conn, lead| {
            Box::pin(async move {
                let sql = match dialect {
                    Dialect::Postgres => format!("WITH logged AS ({audit}) {insert}"),
                    Dialect::Sqlite => format!("{lead}{audit}; {insert}"),
                };
                let rows = sqlx::query_with(sqlx::AssertSqlSafe(sql), values)
                    .fetch_all(&mut *conn)
                    .await?;
                rows.first()
                    .map(from_row)
                    .transpose()?
                    .ok_or_else(|| StoreError::Database("the job's insert returned no row".into()))
            })
        })
        .await
}

/// Inserts many jobs in multi-row statements (the scheduler's ticks); returns them in order.
pub async fn insert_many(conn: &mut AnyConnection, jobs: &[NewJob<'_>]) -> Result<Vec<Job>, StoreError> {
    const ROWS: usize = 200;
    let mut out = Vec::with_capacity(jobs.len());
    for chunk in jobs.chunks(ROWS) {
        let values: Vec<String> = (0..chunk.len())
            .map(|i| {
                let p = i * 10;
                format!(
                    "(${}, ${}, ${}, ${}, ${}, ${}, 'QUEUED', ${}, ${}, ${}, ${})",
                    p + 1,
                    p + 2,
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
            "INSERT INTO jobs (id, node_id, preset_name, preset_version, variables, script, status, \
             created_by, created_at, timeout_seconds, policy_id) VALUES {} RETURNING {COLUMNS}",
            values.join(", ")
        );
        // Only numbered placeholders are spliced in.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for job in chunk {
            query = query
                .bind(job.id)
                .bind(job.node_id)
                .bind(job.preset_name)
                .bind(job.preset_version)
                .bind(job.variables)
                .bind(job.script)
                .bind(job.created_by)
                .bind(job.created_at)
                .bind(job.timeout_seconds)
                .bind(job.policy_id);
        }
        let rows = query.fetch_all(&mut *conn).await?;
        let mut by_id: std::collections::HashMap<String, Job> = rows
            .iter()
            .map(|row| from_row(row).map(|job| (job.id.clone(), job)))
            .collect::<Result<_, _>>()?;
        for job in chunk {
            out.push(by_id.remove(job.id).ok_or_else(|| {
                StoreError::Database(format!("the insert of job {} returned no row", job.id))
            })?);
        }
    }
    Ok(out)
}

pub async fn get(conn: &mut AnyConnection, id: &str) -> Result<Option<Job>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM jobs WHERE id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// What the agents' output and completion calls check, without the script and variables they
/// do not need (these calls come once a second from every running job).
#[derive(Clone, Debug, PartialEq)]
pub struct Claim {
    pub id: String,
    pub node_id: String,
    pub status: String,
    pub claimed_by: Option<String>,
    /// Set when the reaper presumed the job lost (its node went OFFLINE): FAILED, but its agent's
    /// late output and completion are still taken.
    pub lost_at: Option<i64>,
}

impl Claim {
    /// Whether its agent may still send output and complete it: RUNNING, or presumed lost.
    pub fn open_to_its_agent(&self) -> bool {
        self.status == RUNNING || (self.status == FAILED && self.lost_at.is_some())
    }
}

pub async fn claim_of(conn: &mut AnyConnection, id: &str) -> Result<Option<Claim>, StoreError> {
    let row = sqlx::query("SELECT id, node_id, status, claimed_by, lost_at FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    row.map(|row| {
        Ok(Claim {
            id: row.try_get("id")?,
            node_id: row.try_get("node_id")?,
            status: row.try_get("status")?,
            claimed_by: row.try_get("claimed_by")?,
            lost_at: row.try_get("lost_at")?,
        })
    })
    .transpose()
}

/// Filters of the job list; `owner: None` lists everyone's jobs (an ADMIN).
#[derive(Default)]
pub struct JobFilter<'a> {
    pub owner: Option<&'a str>,
    pub node_id: Option<&'a str>,
    pub status: Option<&'a str>,
}

/// Jobs matching `filter`, newest first.
pub async fn list(
    conn: &mut AnyConnection,
    filter: &JobFilter<'_>,
    limit: i64,
) -> Result<Vec<Job>, StoreError> {
    let mut sql = format!("SELECT {COLUMNS} FROM jobs WHERE 1 = 1");
    let mut values: Vec<&str> = Vec::new();
    for (column, value) in [
        ("created_by", filter.owner),
        ("node_id", filter.node_id),
        ("status", filter.status),
    ] {
        if let Some(value) = value {
            values.push(value);
            sql.push_str(&format!(" AND {column} = ${}", values.len()));
        }
    }
    sql.push_str(&format!(
        " ORDER BY created_at DESC, id DESC LIMIT ${}",
        values.len() + 1
    ));
    // Only fixed column names and numbered placeholders are spliced in.
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for value in values {
        query = query.bind(value);
    }
    let rows = query.bind(limit).fetch_all(&mut *conn).await?;
    rows.iter().map(from_row).collect()
}

/// Atomically hands the oldest QUEUED job of `node_id` to the caller and flips it to RUNNING.
/// However many pulls race, each job is returned by exactly one of them.
pub async fn claim(
    store: &Store,
    node_id: &str,
    token_id: &str,
    now: i64,
) -> Result<Option<Job>, StoreError> {
    let pick = match store.dialect() {
        // Concurrent claimers skip the row another transaction holds instead of queueing on it.
        Dialect::Postgres => {
            "SELECT id FROM jobs WHERE node_id = $3 AND status = 'QUEUED' \
             ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED"
        }
        // SQLite has one writer: the statement below runs alone, so the pick cannot be stolen.
        Dialect::Sqlite => {
            "SELECT id FROM jobs WHERE node_id = $3 AND status = 'QUEUED' ORDER BY created_at, id LIMIT 1"
        }
    };
    let update = format!(
        "UPDATE jobs SET status = 'RUNNING', started_at = $1, claimed_by = $2 \
         WHERE id = ({pick}) AND status = 'QUEUED' RETURNING {COLUMNS}"
    );
    // Every claim is audited (`job.claim`, with the token) in the same atomic write: a token
    // that takes someone's job leaves a trace however it got the token.
    let metadata = format!(
        r#"{{"tokenId":{},"nodeId":{}}}"#,
        json_string(token_id),
        json_string(node_id)
    );
    let audit_id = crate::new_id();
    let dialect = store.dialect();
    let (node_id, token_id) = (node_id.to_owned(), token_id.to_owned());
    store
        .write_call(move |conn, lead| {
            Box::pin(async move {
                if dialect == Dialect::Postgres {
                    // One statement, atomic on its own: no BEGIN/COMMIT round trips on the hottest
                    // agent call, and the audit row exists exactly when the claim does.
                    let sql = format!(
                        "WITH claimed AS ({update}), \
                         logged AS (INSERT INTO audit_events (id, at, action, resource_type, resource_id, metadata) \
                         SELECT $4, $1, 'job.claim', 'job', claimed.id, $5 FROM claimed) \
                         SELECT * FROM claimed"
                    );
                    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(now)
                        .bind(token_id)
                        .bind(node_id)
                        .bind(audit_id)
                        .bind(metadata)
                        .fetch_optional(&mut *conn)
                        .await?;
                    return row.as_ref().map(from_row).transpose();
                }
                // On SQLite the op runs inside the writer's group transaction, so the two
                // statements commit together or not at all, and nothing runs between them. They go
                // to SQLite as one call, with the transaction's lead, a round trip in all on the
                // hottest agent call: the audit row picks the job, and the claim takes the job the
                // audit row names (found by its time and id, which the audit table indexes).
                let sql = format!(
                    "{lead}INSERT INTO audit_events (id, at, action, resource_type, resource_id, metadata) \
                     SELECT $4, $1, 'job.claim', 'job', id, $5 FROM jobs \
                     WHERE node_id = $3 AND status = 'QUEUED' ORDER BY created_at, id LIMIT 1; \
                     UPDATE jobs SET status = 'RUNNING', started_at = $1, claimed_by = $2 \
                     WHERE id = (SELECT resource_id FROM audit_events WHERE at = $1 AND id = $4) \
                     AND status = 'QUEUED' \
                     RETURNING {COLUMNS}"
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(now)
                    .bind(token_id)
                    .bind(node_id)
                    .bind(audit_id)
                    .bind(metadata)
                    // Every statement's outcome, not only the first's: the row is the second's.
                    .fetch_all(&mut *conn)
                    .await?;
                rows.first().map(from_row).transpose()
            })
        })
        .await
}

/// `text` as a JSON string literal.
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// What an append did.
#[derive(Debug, PartialEq)]
pub enum Appended {
    /// The job is not RUNNING (or does not exist): nothing stored.
    NotRunning,
    /// The pieces stored (possibly cut at the cap), in order.
    Stored(Vec<Chunk>),
}

/// The longest prefix of `data` no longer than `max` that ends on a UTF-8 character boundary.
fn cut(data: &[u8], max: usize) -> &[u8] {
    if data.len() <= max {
        return data;
    }
    let mut end = max;
    // Continuation bytes are 0b10xx_xxxx: step back to the start of the character.
    while end > 0 && (data[end] & 0xC0) == 0x80 {
        end -= 1;
    }
    &data[..end]
}

async fn append_in(
    tx: &mut AnyConnection,
    job_id: &str,
    pieces: &[(Stream, &[u8])],
    cap: i64,
) -> Result<Appended, StoreError> {
    let pieces: Vec<&(Stream, &[u8])> = pieces.iter().filter(|(_, d)| !d.is_empty()).collect();
    // Taking the row's write lock first (the UPDATE) serialises appends to one job on both backends.
    // A job presumed lost comes back to RUNNING with its agent's first word: the real outcome wins.
    let row = sqlx::query(
        "UPDATE jobs SET next_seq = next_seq + $2, \
         error = CASE WHEN status = 'FAILED' THEN $3 ELSE error END, \
         finished_at = CASE WHEN status = 'FAILED' THEN NULL ELSE finished_at END, \
         status = 'RUNNING' \
         WHERE id = $1 AND (status = 'RUNNING' OR (status = 'FAILED' AND lost_at IS NOT NULL)) \
         RETURNING next_seq, stdout_bytes, stderr_bytes",
    )
    .bind(job_id)
    .bind(i64::try_from(pieces.len()).unwrap_or(i64::MAX))
    .bind(REVIVED_NOTE)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return Ok(Appended::NotRunning);
    };
    let next_seq: i64 = row.try_get("next_seq")?;
    let mut used = row.try_get::<i64, _>("stdout_bytes")? + row.try_get::<i64, _>("stderr_bytes")?;
    let mut seq = next_seq - i64::try_from(pieces.len()).unwrap_or(0);
    let mut stored = Vec::new();
    let (mut add_out, mut add_err, mut cut_out, mut cut_err) = (0i64, 0i64, false, false);
    for (stream, data) in pieces {
        let room = usize::try_from((cap - used).max(0)).unwrap_or(usize::MAX);
        let kept = cut(data, room);
        if kept.len() < data.len() {
            match stream {
                Stream::Stdout => cut_out = true,
                Stream::Stderr => cut_err = true,
            }
        }
        if kept.is_empty() {
            continue;
        }
        sqlx::query("INSERT INTO job_chunks (job_id, seq, stream, data) VALUES ($1, $2, $3, $4)")
            .bind(job_id)
            .bind(seq)
            .bind(stream.as_str())
            .bind(kept)
            .execute(&mut *tx)
            .await?;
        let len = i64::try_from(kept.len()).unwrap_or(i64::MAX);
        used += len;
        match stream {
            Stream::Stdout => add_out += len,
            Stream::Stderr => add_err += len,
        }
        stored.push(Chunk {
            seq,
            stream: *stream,
            data: kept.to_vec(),
        });
        seq += 1;
    }
    sqlx::query(
        "UPDATE jobs SET stdout_bytes = stdout_bytes + $2, stderr_bytes = stderr_bytes + $3, \
         stdout_truncated = CASE WHEN $4 = 1 THEN 1 ELSE stdout_truncated END, \
         stderr_truncated = CASE WHEN $5 = 1 THEN 1 ELSE stderr_truncated END WHERE id = $1",
    )
    .bind(job_id)
    .bind(add_out)
    .bind(add_err)
    .bind(i64::from(cut_out))
    .bind(i64::from(cut_err))
    .execute(&mut *tx)
    .await?;
    Ok(Appended::Stored(stored))
}

/// Appends output to a RUNNING job; output past `cap` bytes (both streams together) is dropped
/// and the stream flagged truncated.
pub async fn append_output(
    store: &Store,
    job_id: &str,
    pieces: &[(Stream, &[u8])],
    cap: i64,
) -> Result<Appended, StoreError> {
    let (job_id, pieces) = (job_id.to_owned(), owned(pieces));
    store
        .write(move |tx| Box::pin(async move { append_in(tx, &job_id, &borrowed(&pieces), cap).await }))
        .await
}

/// Output pieces a write can take with it (see [`Store::write`]).
fn owned(pieces: &[(Stream, &[u8])]) -> Vec<(Stream, Vec<u8>)> {
    pieces
        .iter()
        .map(|(stream, data)| (*stream, data.to_vec()))
        .collect()
}

fn borrowed(pieces: &[(Stream, Vec<u8>)]) -> Vec<(Stream, &[u8])> {
    pieces
        .iter()
        .map(|(stream, data)| (*stream, data.as_slice()))
        .collect()
}

/// The final flush and status flip of a RUNNING (or presumed lost) job, in one transaction: exit 0
/// → SUCCEEDED, else FAILED; CANCELLED when a cancel was requested. `None` when the job was
/// neither.
pub async fn complete(
    store: &Store,
    job_id: &str,
    exit_code: i64,
    pieces: &[(Stream, &[u8])],
    cap: i64,
    now: i64,
) -> Result<Option<(Job, Vec<Chunk>)>, StoreError> {
    let (job_id, pieces) = (job_id.to_owned(), owned(pieces));
    store
        .write(move |tx| {
            Box::pin(async move {
                let Appended::Stored(chunks) = append_in(tx, &job_id, &borrowed(&pieces), cap).await? else {
                    return Ok(None);
                };
                let sql = format!(
                    "UPDATE jobs SET status = CASE WHEN cancel_requested_at IS NOT NULL THEN 'CANCELLED' \
                     WHEN $2 = 0 THEN 'SUCCEEDED' ELSE 'FAILED' END, exit_code = $2, finished_at = $3, \
                     lost_at = NULL WHERE id = $1 AND status = 'RUNNING' RETURNING {COLUMNS}"
                );
                let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(&job_id)
                    .bind(exit_code)
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await?;
                Ok(row.as_ref().map(from_row).transpose()?.map(|job| (job, chunks)))
            })
        })
        .await
}

/// The `error` of a job that was presumed lost and whose agent then reported again.
pub const REVIVED_NOTE: &str = "the job was presumed lost while its node was OFFLINE; its agent came back \
and reported its real outcome";

/// How the reaper ends a RUNNING job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// For good: past its timeout, or its node deleted.
    Failed,
    /// Its node went OFFLINE: FAILED with the outcome unknown, but its agent's late output and
    /// completion still count.
    PresumedLost,
}

/// Fails a RUNNING job with `reason`, which is also appended to its stderr (CANCELLED instead when
/// a cancel had been requested).
pub async fn fail(
    store: &Store,
    job_id: &str,
    reason: &str,
    ending: Ending,
    cap: i64,
    now: i64,
) -> Result<Option<(Job, Vec<Chunk>)>, StoreError> {
    let mut tx = store.begin().await?;
    let line = format!("\n[hyprbox] {reason}\n");
    // The server's own line is let past the output cap: the reason must reach stderr.
    let room = cap.saturating_add(i64::try_from(line.len()).unwrap_or(i64::MAX));
    let Appended::Stored(chunks) =
        append_in(&mut tx, job_id, &[(Stream::Stderr, line.as_bytes())], room).await?
    else {
        return Ok(None);
    };
    // A job an operator asked to stop ends CANCELLED, whatever ended it, as `complete` does.
    let sql = format!(
        "UPDATE jobs SET status = CASE WHEN cancel_requested_at IS NULL THEN 'FAILED' \
         ELSE 'CANCELLED' END, error = $2, finished_at = $3, \
         lost_at = CASE WHEN $4 = 1 AND cancel_requested_at IS NULL THEN $3 ELSE NULL END \
         WHERE id = $1 AND status = 'RUNNING' RETURNING {COLUMNS}"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(job_id)
        .bind(reason)
        .bind(now)
        .bind(i64::from(ending == Ending::PresumedLost))
        .fetch_optional(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(row.as_ref().map(from_row).transpose()?.map(|job| (job, chunks)))
}

/// Cancels a QUEUED job; `None` when it is not QUEUED (any more).
pub async fn cancel_queued(
    conn: &mut AnyConnection,
    job_id: &str,
    reason: Option<&str>,
    now: i64,
) -> Result<Option<Job>, StoreError> {
    let sql = format!(
        "UPDATE jobs SET status = 'CANCELLED', cancel_requested_at = $2, finished_at = $2, error = $3 \
         WHERE id = $1 AND status = 'QUEUED' RETURNING {COLUMNS}"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(job_id)
        .bind(now)
        .bind(reason)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// Records a cancel request on a RUNNING job (the first request's time is kept).
pub async fn request_cancel(
    conn: &mut AnyConnection,
    job_id: &str,
    now: i64,
) -> Result<Option<Job>, StoreError> {
    let sql = format!(
        "UPDATE jobs SET cancel_requested_at = COALESCE(cancel_requested_at, $2) \
         WHERE id = $1 AND status = 'RUNNING' RETURNING {COLUMNS}"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(job_id)
        .bind(now)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// What the reaper needs to know of an unfinished job (no script, no variables).
#[derive(Clone, Debug, PartialEq)]
pub struct Unfinished {
    pub id: String,
    pub node_id: String,
    pub status: String,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub timeout_seconds: i64,
}

/// Every QUEUED or RUNNING job, oldest first (both sets stay small: jobs finish or are reaped).
pub async fn unfinished(conn: &mut AnyConnection) -> Result<Vec<Unfinished>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, node_id, status, created_at, started_at, timeout_seconds FROM jobs \
         WHERE status IN ('QUEUED', 'RUNNING') ORDER BY created_at, id",
    )
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(Unfinished {
                id: row.try_get("id")?,
                node_id: row.try_get("node_id")?,
                status: row.try_get("status")?,
                created_at: row.try_get("created_at")?,
                started_at: row.try_get("started_at")?,
                timeout_seconds: row.try_get("timeout_seconds")?,
            })
        })
        .collect()
}

fn chunk_from_row(row: &AnyRow) -> Result<Chunk, StoreError> {
    let stream: String = row.try_get("stream")?;
    Ok(Chunk {
        seq: row.try_get("seq")?,
        stream: Stream::parse(&stream).unwrap_or(Stream::Stdout),
        data: row.try_get("data")?,
    })
}

/// The sequence number of the job's newest stored chunk, if it has any.
pub async fn last_chunk_seq(conn: &mut AnyConnection, job_id: &str) -> Result<Option<i64>, StoreError> {
    let row = sqlx::query("SELECT seq FROM job_chunks WHERE job_id = $1 ORDER BY seq DESC LIMIT 1")
        .bind(job_id)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.map(|r| r.try_get::<i64, _>("seq")).transpose()?)
}

/// Up to `limit` chunks with `seq > after`, in order; only `stream`'s when given.
pub async fn chunks(
    conn: &mut AnyConnection,
    job_id: &str,
    stream: Option<Stream>,
    after: i64,
    limit: i64,
) -> Result<Vec<Chunk>, StoreError> {
    let rows = match stream {
        Some(stream) => {
            sqlx::query(
                "SELECT seq, stream, data FROM job_chunks WHERE job_id = $1 AND seq > $2 AND stream = $3 \
                 ORDER BY seq LIMIT $4",
            )
            .bind(job_id)
            .bind(after)
            .bind(stream.as_str())
            .bind(limit)
            .fetch_all(&mut *conn)
            .await?
        }
        None => sqlx::query(
            "SELECT seq, stream, data FROM job_chunks WHERE job_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(job_id)
        .bind(after)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?,
    };
    rows.iter().map(chunk_from_row).collect()
}

/// The last `max` bytes of a stream (cut forward to a character boundary), and whether that is
/// less than all of it. Reads chunks from the end, never the whole log.
pub async fn tail(
    conn: &mut AnyConnection,
    job_id: &str,
    stream: Stream,
    max: usize,
) -> Result<(String, bool), StoreError> {
    let mut parts: Vec<Vec<u8>> = Vec::new();
    let mut held = 0usize;
    let mut before = i64::MAX;
    let mut more = false;
    'pages: loop {
        let rows = sqlx::query(
            "SELECT seq, stream, data FROM job_chunks WHERE job_id = $1 AND stream = $2 AND seq < $3 \
             ORDER BY seq DESC LIMIT 64",
        )
        .bind(job_id)
        .bind(stream.as_str())
        .bind(before)
        .fetch_all(&mut *conn)
        .await?;
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            let chunk = chunk_from_row(row)?;
            before = chunk.seq;
            if held >= max {
                more = true;
                break 'pages;
            }
            held += chunk.data.len();
            parts.push(chunk.data);
        }
    }
    parts.reverse();
    let mut bytes = parts.concat();
    if bytes.len() > max {
        more = true;
        let mut start = bytes.len() - max;
        while start < bytes.len() && (bytes[start] & 0xC0) == 0x80 {
            start += 1;
        }
        bytes.drain(..start);
    }
    Ok((String::from_utf8_lossy(&bytes).into_owned(), more))
}

/// Deletes up to `batch` finished jobs (and their output) that finished before `before`, except
/// each node's newest `keep_per_node` jobs, which stay whatever their age. One transaction per
/// batch; returns how many jobs went.
pub async fn prune_finished(
    store: &Store,
    before: i64,
    keep_per_node: i64,
    batch: i64,
) -> Result<u64, StoreError> {
    let ids: Vec<String> = {
        let mut conn = store.conn().await?;
        sqlx::query_scalar(
            "SELECT j.id FROM jobs j \
             WHERE j.status IN ('SUCCEEDED', 'FAILED', 'CANCELLED') AND j.finished_at < $1 \
             AND (SELECT COUNT(*) FROM jobs k WHERE k.node_id = j.node_id \
                  AND (k.created_at > j.created_at OR (k.created_at = j.created_at AND k.id > j.id))) >= $2 \
             ORDER BY j.finished_at LIMIT $3",
        )
        .bind(before)
        .bind(keep_per_node)
        .bind(batch)
        .fetch_all(&mut *conn)
        .await?
    };
    if ids.is_empty() {
        return Ok(0);
    }
    let mut tx = store.begin().await?;
    // The jobs first, still finished (a presumed-lost one may have come back meanwhile), then the
    // output of those that went. Built from numbered placeholders only.
    let list = (1..=ids.len())
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ");
    let rows = format!(
        "DELETE FROM jobs WHERE id IN ({list}) AND status IN ('SUCCEEDED', 'FAILED', 'CANCELLED') RETURNING id"
    );
    let mut query = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(rows));
    for id in &ids {
        query = query.bind(id);
    }
    let gone = query.fetch_all(&mut *tx).await?;
    let deleted = u64::try_from(gone.len()).unwrap_or(u64::MAX);
    if !gone.is_empty() {
        let list = (1..=gone.len())
            .map(|n| format!("${n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let chunks = format!("DELETE FROM job_chunks WHERE job_id IN ({list})");
        let mut query = sqlx::query(sqlx::AssertSqlSafe(chunks));
        for id in &gone {
            query = query.bind(id);
        }
        query.execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::cut;

    #[test]
    fn a_cut_never_splits_a_character() {
        let text = "aé€😀".as_bytes();
        for max in 0..=text.len() {
            let kept = cut(text, max);
            assert!(kept.len() <= max);
            assert!(std::str::from_utf8(kept).is_ok(), "max {max}");
        }
        assert_eq!(cut(b"abc", 10), b"abc");
    }
}
