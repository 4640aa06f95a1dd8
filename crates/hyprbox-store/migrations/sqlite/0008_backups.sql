-- HyprVault: restic backup policies an operator owns, and the runs the node's agent reports. The
-- server never stores a repository password: `password_ref` says where the agent finds it.

CREATE TABLE backup_policies (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    node_id         TEXT NOT NULL,
    paths           TEXT NOT NULL,      -- a JSON array of absolute paths
    schedule        TEXT,               -- a 5-field cron expression (UTC), or NULL: trigger only
    repo_url        TEXT NOT NULL,
    password_ref    TEXT NOT NULL,
    keep_daily      BIGINT NOT NULL,
    keep_weekly     BIGINT NOT NULL,
    keep_monthly    BIGINT NOT NULL,
    created_by      TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    next_run_at     BIGINT,             -- the next cron tick; NULL without a schedule
    stale_after_ms  BIGINT NOT NULL,    -- twice the schedule's period, or 48 h without one
    last_success_at BIGINT
);
-- The scheduler reads only the policies whose tick has come.
CREATE INDEX backup_policies_due ON backup_policies (next_run_at);
CREATE INDEX backup_policies_node ON backup_policies (node_id);

CREATE TABLE backup_runs (
    id          TEXT PRIMARY KEY,
    policy_id   TEXT NOT NULL REFERENCES backup_policies (id) ON DELETE CASCADE,
    node_id     TEXT NOT NULL,
    job_id      TEXT,
    status      TEXT NOT NULL,
    started_at  BIGINT NOT NULL,
    finished_at BIGINT,
    snapshot_id TEXT,
    size_bytes  BIGINT,
    files_count BIGINT,
    duration_ms BIGINT,
    error       TEXT
);
CREATE INDEX backup_runs_policy ON backup_runs (policy_id, started_at);
CREATE INDEX backup_runs_job ON backup_runs (job_id);
CREATE INDEX backup_runs_node ON backup_runs (node_id, started_at);

-- A backup job knows its policy, so the scheduler can keep one queued or running per policy.
ALTER TABLE jobs ADD COLUMN policy_id TEXT;
CREATE INDEX jobs_policy ON jobs (policy_id, status);

-- What the agent last saw running on the node (Docker containers), replaced by each report.
CREATE TABLE node_containers (
    node_id    TEXT NOT NULL,
    id         TEXT NOT NULL,
    name       TEXT NOT NULL,
    image      TEXT NOT NULL,
    state      TEXT NOT NULL,
    labels     TEXT NOT NULL,       -- a JSON object
    seen_at    BIGINT NOT NULL,
    PRIMARY KEY (node_id, id)
);
