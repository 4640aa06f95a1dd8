-- Node tokens (agents' credentials), nodes (latest known state and agent config) and the
-- heartbeat history, pruned by retention.

CREATE TABLE node_tokens (
    id            TEXT PRIMARY KEY,
    prefix        TEXT NOT NULL UNIQUE,
    token_hash    TEXT NOT NULL,
    name          TEXT NOT NULL,
    node_id       TEXT,
    created_by    TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    last_used_at  BIGINT,
    revoked_at    BIGINT
);
CREATE INDEX node_tokens_created_by ON node_tokens (created_by, created_at);

CREATE TABLE nodes (
    node_id           TEXT PRIMARY KEY,
    hostname          TEXT,
    os                TEXT,
    status            TEXT,
    agent_version     TEXT,
    ip                TEXT,
    region            TEXT,
    kernel            TEXT,
    architecture      TEXT,
    cpu_percent       DOUBLE PRECISION,
    ram_percent       DOUBLE PRECISION,
    disk_percent      DOUBLE PRECISION,
    uptime_seconds    BIGINT,
    load_avg          TEXT,
    mem_total_bytes   BIGINT,
    disk_total_bytes  BIGINT,
    config            TEXT NOT NULL DEFAULT '{}',
    created_at        BIGINT NOT NULL,
    last_seen_at      BIGINT NOT NULL
);

-- Clustered by (node_id, at): a node's history is one range, and each insert touches one B-tree.
-- A node's heartbeats get distinct millisecond stamps from the server.
CREATE TABLE heartbeats (
    node_id      TEXT NOT NULL,
    at           BIGINT NOT NULL,
    cpu_percent  DOUBLE PRECISION,
    ram_percent  DOUBLE PRECISION,
    disk_percent DOUBLE PRECISION,
    status       TEXT,
    PRIMARY KEY (node_id, at)
) WITHOUT ROWID;

CREATE TABLE node_events (
    id        TEXT PRIMARY KEY,
    node_id   TEXT NOT NULL,
    at        BIGINT NOT NULL,
    type      TEXT NOT NULL,
    severity  TEXT NOT NULL,
    message   TEXT NOT NULL,
    metadata  TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX node_events_node_at ON node_events (node_id, at);
