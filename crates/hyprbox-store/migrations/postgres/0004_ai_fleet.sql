-- The AI worker fleet of the Hyperion dashboard: a durable task queue and one row per worker.
-- A task is QUEUED, then RUNNING on exactly one worker, then DONE; a RUNNING task found at start
-- (its server died) goes back to QUEUED.

CREATE TABLE ai_tasks (
    id          TEXT PRIMARY KEY,
    action      TEXT NOT NULL,
    status      TEXT NOT NULL,
    worker      TEXT,
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    started_at  BIGINT,
    finished_at BIGINT
);
-- The claim reads the oldest QUEUED task; the queue depth counts QUEUED rows.
CREATE INDEX ai_tasks_claim ON ai_tasks (status, created_at, id);
-- The recent-tasks list, newest first.
CREATE INDEX ai_tasks_created ON ai_tasks (created_at, id);
-- Pruning finds DONE tasks by when they finished.
CREATE INDEX ai_tasks_finished ON ai_tasks (status, finished_at);

CREATE TABLE ai_workers (
    name                  TEXT PRIMARY KEY,
    tasks_processed_today BIGINT NOT NULL DEFAULT 0,
    -- The UTC day number (days since the Unix epoch) the count belongs to; a count from another
    -- day reads as 0 and restarts at 1 with the next finished task.
    counted_day           BIGINT NOT NULL DEFAULT 0,
    last_check_in         BIGINT NOT NULL,
    current_task_id       TEXT
);
