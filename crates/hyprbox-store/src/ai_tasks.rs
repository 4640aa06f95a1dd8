//! The AI worker fleet's durable queue and its workers' rows.
//!
//! A task is QUEUED, then claimed by exactly one worker (RUNNING), then DONE. The claim is the one
//! function where the dialects differ (`FOR UPDATE SKIP LOCKED` on Postgres, SQLite's single writer
//! elsewhere), as in [`crate::jobs::claim`]. A worker's `tasks_processed_today` belongs to the UTC
//! day in `counted_day`: finishing a task on another day restarts the count at 1.

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::{Dialect, Store, StoreError};

pub const QUEUED: &str = "QUEUED";
pub const RUNNING: &str = "RUNNING";
pub const DONE: &str = "DONE";

const DAY_MS: i64 = 86_400_000;

/// The UTC day number (days since the Unix epoch) of a time in Unix milliseconds.
pub fn utc_day(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Task {
    pub id: String,
    pub action: String,
    pub status: String,
    pub worker: Option<String>,
    pub created_by: String,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Worker {
    pub name: String,
    /// Tasks finished on `counted_day`; read it through [`Worker::processed_on`].
    pub tasks_processed_today: i64,
    pub counted_day: i64,
    pub last_check_in: i64,
    pub current_task_id: Option<String>,
}

impl Worker {
    /// Tasks finished on the UTC day of `now`: 0 once that day is not the counted one, so the
    /// count resets at midnight even before the worker finishes another task.
    pub fn processed_on(&self, now: i64) -> i64 {
        if self.counted_day == utc_day(now) {
            self.tasks_processed_today
        } else {
            0
        }
    }
}

const TASK_COLUMNS: &str = "id, action, status, worker, created_by, created_at, started_at, finished_at";
const WORKER_COLUMNS: &str = "name, tasks_processed_today, counted_day, last_check_in, current_task_id";

fn task_from_row(row: &AnyRow) -> Result<Task, StoreError> {
    Ok(Task {
        id: row.try_get("id")?,
        action: row.try_get("action")?,
        status: row.try_get("status")?,
        worker: row.try_get("worker")?,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}

fn worker_from_row(row: &AnyRow) -> Result<Worker, StoreError> {
    Ok(Worker {
        name: row.try_get("name")?,
        tasks_processed_today: row.try_get("tasks_processed_today")?,
        counted_day: row.try_get("counted_day")?,
        last_check_in: row.try_get("last_check_in")?,
        current_task_id: row.try_get("current_task_id")?,
    })
}

/// Queues a task.
pub async fn enqueue(
    conn: &mut AnyConnection,
    id: &str,
    action: &str,
    created_by: &str,
    now: i64,
) -> Result<Task, StoreError> {
    let sql = format!(
        "INSERT INTO ai_tasks (id, action, status, created_by, created_at) VALUES ($1, $2, $3, $4, $5) \
         RETURNING {TASK_COLUMNS}"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .bind(action)
        .bind(QUEUED)
        .bind(created_by)
        .bind(now)
        .fetch_one(&mut *conn)
        .await?;
    task_from_row(&row)
}

/// How many tasks wait in the queue.
pub async fn queue_depth(conn: &mut AnyConnection) -> Result<i64, StoreError> {
    let row = sqlx::query("SELECT CAST(COUNT(*) AS BIGINT) AS n FROM ai_tasks WHERE status = 'QUEUED'")
        .fetch_one(&mut *conn)
        .await?;
    Ok(row.try_get("n")?)
}

/// Atomically hands the oldest QUEUED task to `worker` and flips it to RUNNING. However many
/// workers race, each task is returned by exactly one of them.
pub async fn claim(store: &Store, worker: &str, now: i64) -> Result<Option<Task>, StoreError> {
    let pick = match store.dialect() {
        // Concurrent claimers skip the row another transaction holds instead of queueing on it.
        Dialect::Postgres => {
            "SELECT id FROM ai_tasks WHERE status = 'QUEUED' ORDER BY created_at, id LIMIT 1 \
             FOR UPDATE SKIP LOCKED"
        }
        // SQLite has one writer: the statement below runs alone, so the pick cannot be stolen.
        Dialect::Sqlite => "SELECT id FROM ai_tasks WHERE status = 'QUEUED' ORDER BY created_at, id LIMIT 1",
    };
    let sql = format!(
        "UPDATE ai_tasks SET status = 'RUNNING', started_at = $1, worker = $2 \
         WHERE id = ({pick}) AND status = 'QUEUED' RETURNING {TASK_COLUMNS}"
    );
    let mut conn = store.write_conn().await?;
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(now)
        .bind(worker)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(task_from_row).transpose()
}

/// Marks `worker`'s RUNNING task DONE and counts it for the UTC day of `now`, in one transaction;
/// the worker is left idle and checked in. `None` (and nothing changed) when the task is not
/// RUNNING on that worker.
pub async fn finish(
    store: &Store,
    task_id: &str,
    worker: &str,
    now: i64,
) -> Result<Option<(Task, Worker)>, StoreError> {
    let mut tx = store.begin().await?;
    let sql = format!(
        "UPDATE ai_tasks SET status = 'DONE', finished_at = $3 \
         WHERE id = $1 AND worker = $2 AND status = 'RUNNING' RETURNING {TASK_COLUMNS}"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(task_id)
        .bind(worker)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(task) = row.as_ref().map(task_from_row).transpose()? else {
        return Ok(None);
    };
    // The midnight rule: a count from another day restarts at 1.
    let sql = format!(
        "INSERT INTO ai_workers ({WORKER_COLUMNS}) VALUES ($1, 1, $2, $3, NULL) \
         ON CONFLICT (name) DO UPDATE SET \
         tasks_processed_today = CASE WHEN ai_workers.counted_day = $2 \
             THEN ai_workers.tasks_processed_today + 1 ELSE 1 END, \
         counted_day = $2, last_check_in = $3, current_task_id = NULL \
         RETURNING {WORKER_COLUMNS}"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(worker)
        .bind(utc_day(now))
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
    let worker = worker_from_row(&row)?;
    tx.commit().await?;
    Ok(Some((task, worker)))
}

/// Puts every RUNNING task back in the queue (their worker died with the server) and clears the
/// workers' current tasks, in one transaction; returns how many tasks went back.
pub async fn requeue_running(store: &Store) -> Result<u64, StoreError> {
    let mut tx = store.begin().await?;
    let done = sqlx::query(
        "UPDATE ai_tasks SET status = 'QUEUED', worker = NULL, started_at = NULL WHERE status = 'RUNNING'",
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE ai_workers SET current_task_id = NULL WHERE current_task_id IS NOT NULL")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(done.rows_affected())
}

/// Records that `worker`'s loop is alive and what it is working on (its row is created on the
/// first check-in); returns the row.
pub async fn check_in(
    conn: &mut AnyConnection,
    worker: &str,
    current_task_id: Option<&str>,
    now: i64,
) -> Result<Worker, StoreError> {
    let sql = format!(
        "INSERT INTO ai_workers ({WORKER_COLUMNS}) VALUES ($1, 0, 0, $2, $3) \
         ON CONFLICT (name) DO UPDATE SET last_check_in = $2, current_task_id = $3 \
         RETURNING {WORKER_COLUMNS}"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(worker)
        .bind(now)
        .bind(current_task_id)
        .fetch_one(&mut *conn)
        .await?;
    worker_from_row(&row)
}

/// Every worker row, by name.
pub async fn workers(conn: &mut AnyConnection) -> Result<Vec<Worker>, StoreError> {
    let sql = format!("SELECT {WORKER_COLUMNS} FROM ai_workers ORDER BY name");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(&mut *conn)
        .await?;
    rows.iter().map(worker_from_row).collect()
}

/// A task by id.
pub async fn get(conn: &mut AnyConnection, id: &str) -> Result<Option<Task>, StoreError> {
    let sql = format!("SELECT {TASK_COLUMNS} FROM ai_tasks WHERE id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(task_from_row).transpose()
}

/// The `limit` most recent tasks, newest first.
pub async fn recent(conn: &mut AnyConnection, limit: i64) -> Result<Vec<Task>, StoreError> {
    let sql = format!("SELECT {TASK_COLUMNS} FROM ai_tasks ORDER BY created_at DESC, id DESC LIMIT $1");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?;
    rows.iter().map(task_from_row).collect()
}

/// Deletes up to `batch` DONE tasks that finished before `before`; returns how many went.
pub async fn prune_done(conn: &mut AnyConnection, before: i64, batch: i64) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "DELETE FROM ai_tasks WHERE id IN \
         (SELECT id FROM ai_tasks WHERE status = 'DONE' AND finished_at < $1 LIMIT $2)",
    )
    .bind(before)
    .bind(batch)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestDatabase;
    use crate::{new_id, now_ms};

    async fn store(db: &TestDatabase) -> Store {
        db.store().await
    }

    async fn queue(store: &Store, action: &str, at: i64) -> Task {
        let mut conn = store.conn().await.unwrap();
        enqueue(&mut conn, &new_id(), action, "u", at).await.unwrap()
    }

    #[test]
    fn the_utc_day_turns_at_midnight() {
        assert_eq!(utc_day(0), 0);
        assert_eq!(utc_day(DAY_MS - 1), 0);
        assert_eq!(utc_day(DAY_MS), 1);
        assert_eq!(utc_day(-1), -1);
    }

    #[tokio::test]
    async fn an_enqueued_task_waits_in_the_queue() {
        let db = TestDatabase::new().await;
        let store = store(&db).await;
        let task = queue(&store, "Summarise", 10).await;
        assert_eq!(task.status, QUEUED);
        assert_eq!(task.action, "Summarise");
        assert_eq!(task.created_by, "u");
        assert_eq!(
            (task.worker.as_deref(), task.started_at, task.finished_at),
            (None, None, None)
        );
        let mut conn = store.conn().await.unwrap();
        assert_eq!(queue_depth(&mut conn).await.unwrap(), 1);
        assert_eq!(get(&mut conn, &task.id).await.unwrap(), Some(task));
    }

    #[tokio::test]
    async fn a_claim_takes_the_oldest_queued_task() {
        let db = TestDatabase::new().await;
        let store = store(&db).await;
        let newer = queue(&store, "b", 20).await;
        let older = queue(&store, "a", 10).await;
        let claimed = claim(&store, "Helios", 30).await.unwrap().unwrap();
        assert_eq!(claimed.id, older.id);
        assert_eq!(claimed.status, RUNNING);
        assert_eq!(claimed.worker.as_deref(), Some("Helios"));
        assert_eq!(claimed.started_at, Some(30));
        assert_eq!(claim(&store, "Eos", 31).await.unwrap().unwrap().id, newer.id);
        assert!(claim(&store, "Eos", 32).await.unwrap().is_none());
        let mut conn = store.conn().await.unwrap();
        assert_eq!(queue_depth(&mut conn).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn concurrent_workers_claim_every_task_exactly_once() {
        let db = TestDatabase::new().await;
        let store = store(&db).await;
        let now = now_ms();
        let mut all = Vec::new();
        for i in 0..300 {
            all.push(queue(&store, "t", now + i).await.id);
        }
        let mut workers = Vec::new();
        for w in 0..16 {
            let store = store.clone();
            workers.push(tokio::spawn(async move {
                let name = format!("w{w}");
                let mut got = Vec::new();
                while let Some(task) = claim(&store, &name, now_ms()).await.unwrap() {
                    assert_eq!(task.worker.as_deref(), Some(name.as_str()));
                    got.push(task.id);
                }
                got
            }));
        }
        let mut claimed = Vec::new();
        for worker in workers {
            claimed.extend(worker.await.unwrap());
        }
        let count = claimed.len();
        claimed.sort();
        claimed.dedup();
        assert_eq!(claimed.len(), count, "a task was handed out twice");
        all.sort();
        assert_eq!(claimed, all, "a task was lost");
    }

    #[tokio::test]
    async fn finishing_marks_the_task_done_and_counts_it_once() {
        let db = TestDatabase::new().await;
        let store = store(&db).await;
        let now = now_ms();
        let task = queue(&store, "a", now).await;
        claim(&store, "Helios", now).await.unwrap().unwrap();
        let mut conn = store.conn().await.unwrap();
        check_in(&mut conn, "Helios", Some(&task.id), now).await.unwrap();
        drop(conn);
        assert!(
            finish(&store, &task.id, "Eos", now + 1).await.unwrap().is_none(),
            "not Eos's task"
        );
        let (done, worker) = finish(&store, &task.id, "Helios", now + 5)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(done.status, DONE);
        assert_eq!(done.finished_at, Some(now + 5));
        assert_eq!(worker.tasks_processed_today, 1);
        assert_eq!(worker.counted_day, utc_day(now + 5));
        assert_eq!(worker.current_task_id, None);
        assert_eq!(worker.last_check_in, now + 5);
        assert!(
            finish(&store, &task.id, "Helios", now + 6)
                .await
                .unwrap()
                .is_none(),
            "finished twice"
        );
        let mut conn = store.conn().await.unwrap();
        assert_eq!(workers(&mut conn).await.unwrap(), vec![worker]);
    }

    #[tokio::test]
    async fn the_daily_count_restarts_after_midnight_utc() {
        let db = TestDatabase::new().await;
        let store = store(&db).await;
        let day = 20_000 * DAY_MS;
        let late = day + DAY_MS - 2;
        for at in [late - 10, late] {
            let task = queue(&store, "a", at).await;
            claim(&store, "Helios", at).await.unwrap().unwrap();
            finish(&store, &task.id, "Helios", at).await.unwrap().unwrap();
        }
        let mut conn = store.conn().await.unwrap();
        let before = workers(&mut conn).await.unwrap().remove(0);
        assert_eq!(before.tasks_processed_today, 2);
        assert_eq!(before.processed_on(late), 2);
        // Past midnight the stored count reads as 0 until the next task restarts it at 1.
        let after_midnight = day + DAY_MS + 5;
        assert_eq!(before.processed_on(after_midnight), 0);
        drop(conn);
        let task = queue(&store, "a", after_midnight).await;
        claim(&store, "Helios", after_midnight).await.unwrap().unwrap();
        let (_, worker) = finish(&store, &task.id, "Helios", after_midnight)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(worker.tasks_processed_today, 1);
        assert_eq!(worker.counted_day, utc_day(after_midnight));
    }

    #[tokio::test]
    async fn running_tasks_go_back_to_the_queue_at_start() {
        let db = TestDatabase::new().await;
        let store = store(&db).await;
        let running = queue(&store, "a", 10).await;
        let waiting = queue(&store, "b", 20).await;
        let finished = queue(&store, "c", 5).await;
        claim(&store, "Helios", 30).await.unwrap().unwrap(); // c
        finish(&store, &finished.id, "Helios", 31).await.unwrap().unwrap();
        claim(&store, "Eos", 32).await.unwrap().unwrap(); // a
        let mut conn = store.conn().await.unwrap();
        check_in(&mut conn, "Eos", Some(&running.id), 32).await.unwrap();
        drop(conn);

        assert_eq!(requeue_running(&store).await.unwrap(), 1);
        let mut conn = store.conn().await.unwrap();
        let back = get(&mut conn, &running.id).await.unwrap().unwrap();
        assert_eq!(
            (back.status.as_str(), back.worker, back.started_at),
            (QUEUED, None, None)
        );
        assert_eq!(get(&mut conn, &finished.id).await.unwrap().unwrap().status, DONE);
        assert_eq!(get(&mut conn, &waiting.id).await.unwrap().unwrap().status, QUEUED);
        assert!(
            workers(&mut conn)
                .await
                .unwrap()
                .iter()
                .all(|w| w.current_task_id.is_none())
        );
        assert_eq!(queue_depth(&mut conn).await.unwrap(), 2);
        drop(conn);
        // It keeps its place: the oldest task is claimed first again.
        assert_eq!(claim(&store, "Eos", 40).await.unwrap().unwrap().id, running.id);
    }

    #[tokio::test]
    async fn a_check_in_creates_the_worker_and_then_updates_it() {
        let db = TestDatabase::new().await;
        let store = store(&db).await;
        let mut conn = store.conn().await.unwrap();
        let first = check_in(&mut conn, "Helios", None, 100).await.unwrap();
        assert_eq!(
            first,
            Worker {
                name: "Helios".into(),
                tasks_processed_today: 0,
                counted_day: 0,
                last_check_in: 100,
                current_task_id: None,
            }
        );
        let busy = check_in(&mut conn, "Helios", Some("t1"), 200).await.unwrap();
        assert_eq!(
            (busy.last_check_in, busy.current_task_id.as_deref()),
            (200, Some("t1"))
        );
        check_in(&mut conn, "Aethon", None, 300).await.unwrap();
        let names: Vec<String> = workers(&mut conn)
            .await
            .unwrap()
            .into_iter()
            .map(|w| w.name)
            .collect();
        assert_eq!(names, ["Aethon", "Helios"]);
    }

    #[tokio::test]
    async fn recent_tasks_are_listed_newest_first_up_to_the_limit() {
        let db = TestDatabase::new().await;
        let store = store(&db).await;
        let mut ids = Vec::new();
        for at in [10, 30, 20] {
            ids.push(queue(&store, &format!("t{at}"), at).await.id);
        }
        let mut conn = store.conn().await.unwrap();
        let listed: Vec<String> = recent(&mut conn, 2)
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.action)
            .collect();
        assert_eq!(listed, ["t30", "t20"]);
        assert_eq!(recent(&mut conn, 100).await.unwrap().len(), 3);
    }

    #[tokio::test]
    async fn only_done_tasks_older_than_the_cutoff_are_pruned_in_bounded_batches() {
        let db = TestDatabase::new().await;
        let store = store(&db).await;
        for i in 0..5 {
            let task = queue(&store, "old", i).await;
            claim(&store, "Helios", 10).await.unwrap().unwrap();
            finish(&store, &task.id, "Helios", 100 + i)
                .await
                .unwrap()
                .unwrap();
        }
        let fresh = queue(&store, "fresh", 50).await;
        claim(&store, "Helios", 60).await.unwrap().unwrap();
        finish(&store, &fresh.id, "Helios", 1_000).await.unwrap().unwrap();
        let queued = queue(&store, "waiting", 1).await;
        let mut conn = store.conn().await.unwrap();
        assert_eq!(prune_done(&mut conn, 500, 2).await.unwrap(), 2);
        assert_eq!(prune_done(&mut conn, 500, 2).await.unwrap(), 2);
        assert_eq!(prune_done(&mut conn, 500, 2).await.unwrap(), 1);
        assert_eq!(prune_done(&mut conn, 500, 2).await.unwrap(), 0);
        let left: Vec<String> = recent(&mut conn, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.id)
            .collect();
        assert_eq!(left, [fresh.id, queued.id]);
    }
}
