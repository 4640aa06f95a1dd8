-- Jobs: a preset rendered into a script for one node, claimed once by its agent, with its output
-- kept as chunks (the full log, up to a cap) rather than one growing blob.

CREATE TABLE jobs (
    id                  TEXT PRIMARY KEY,
    node_id             TEXT NOT NULL,
    preset_name         TEXT NOT NULL,
    preset_version      TEXT NOT NULL,
    variables           TEXT NOT NULL,
    script              TEXT NOT NULL,
    status              TEXT NOT NULL,
    exit_code           BIGINT,
    created_by          TEXT NOT NULL,
    created_at          BIGINT NOT NULL,
    started_at          BIGINT,
    finished_at         BIGINT,
    cancel_requested_at BIGINT,
    error               TEXT,
    timeout_seconds     BIGINT NOT NULL,
    claimed_by          TEXT,
    next_seq            BIGINT NOT NULL DEFAULT 0,
    stdout_bytes        BIGINT NOT NULL DEFAULT 0,
    stderr_bytes        BIGINT NOT NULL DEFAULT 0,
    stdout_truncated    BIGINT NOT NULL DEFAULT 0,
    stderr_truncated    BIGINT NOT NULL DEFAULT 0
);
-- The claim reads a node's oldest QUEUED job; the reaper reads every RUNNING one.
CREATE INDEX jobs_node_status ON jobs (node_id, status, created_at, id);
CREATE INDEX jobs_status ON jobs (status, started_at);
CREATE INDEX jobs_created_by ON jobs (created_by, created_at);

-- One row per piece of output, numbered across both streams so a replay keeps their interleaving.
CREATE TABLE job_chunks (
    job_id  TEXT NOT NULL,
    seq     BIGINT NOT NULL,
    stream  TEXT NOT NULL,
    data    BLOB NOT NULL,
    PRIMARY KEY (job_id, seq)
);
