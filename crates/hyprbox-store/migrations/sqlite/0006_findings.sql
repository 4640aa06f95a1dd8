-- Findings: problems the agents' scanners report, one row per (node, type, key) however often a
-- scan sees it again, so detection time and snooze/resolve state survive rescans.

CREATE TABLE findings (
    id                  TEXT PRIMARY KEY,
    node_id             TEXT NOT NULL,
    type                TEXT NOT NULL,
    key                 TEXT NOT NULL,
    severity            TEXT NOT NULL,
    status              TEXT NOT NULL,
    title               TEXT NOT NULL,
    message             TEXT NOT NULL,
    related_entities    TEXT NOT NULL,
    metadata            TEXT NOT NULL,
    detected_at         BIGINT NOT NULL,
    last_seen_at        BIGINT NOT NULL,
    snoozed_until       BIGINT,
    resolved_at         BIGINT,
    resolved_by_user_id TEXT,
    UNIQUE (node_id, type, key)
);
-- The list and the health summary read the active findings (OPEN, or SNOOZED past the deadline).
CREATE INDEX findings_status ON findings (status, severity, detected_at);
