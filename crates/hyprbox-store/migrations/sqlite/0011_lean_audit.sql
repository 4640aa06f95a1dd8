-- The audit table is written on hot paths (every job's creation and claim), so it keeps only the
-- indexes a read uses. Its id is a fresh UUIDv7 given by the writer, so the table no longer keeps a
-- unique index on it: reads find rows by time, action or resource. The index on user_id is gone
-- on both backends: the `user` filter matches an id or an email, which no single index serves.
CREATE TABLE audit_events_new (
    id             TEXT NOT NULL,
    at             BIGINT NOT NULL,
    user_id        TEXT,
    user_email     TEXT,
    action         TEXT NOT NULL,
    resource_type  TEXT,
    resource_id    TEXT,
    ip             TEXT,
    metadata       TEXT NOT NULL DEFAULT '{}'
);
INSERT INTO audit_events_new (id, at, user_id, user_email, action, resource_type, resource_id, ip, metadata)
    SELECT id, at, user_id, user_email, action, resource_type, resource_id, ip, metadata
    FROM audit_events ORDER BY at, id;
DROP TABLE audit_events;
ALTER TABLE audit_events_new RENAME TO audit_events;
CREATE INDEX audit_events_at ON audit_events (at, id);
CREATE INDEX audit_events_action ON audit_events (action, at);
CREATE INDEX audit_events_resource ON audit_events (resource_type, resource_id);

CREATE TRIGGER audit_events_refuse_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;

CREATE TRIGGER audit_events_refuse_delete BEFORE DELETE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;
