-- Users, sessions, password resets and the append-only audit log.
-- Times are unix milliseconds (BIGINT); flags are BIGINT 0/1; ids are TEXT (UUID v7).

CREATE TABLE users (
    id             TEXT PRIMARY KEY,
    email          TEXT NOT NULL UNIQUE,
    name           TEXT NOT NULL DEFAULT '',
    language       TEXT NOT NULL DEFAULT 'en',
    role           TEXT NOT NULL CHECK (role IN ('ADMIN', 'OPERATOR', 'VIEWER')),
    password_hash  TEXT NOT NULL,
    token_version  BIGINT NOT NULL DEFAULT 0,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);

-- One row, ever: whoever inserts it is the first user and becomes ADMIN.
CREATE TABLE bootstrap (
    id          BIGINT PRIMARY KEY CHECK (id = 1),
    user_id     TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

-- Rows that writers update to serialise a family of checks (e.g. "never zero admins").
CREATE TABLE store_locks (
    name TEXT PRIMARY KEY
);
INSERT INTO store_locks (name) VALUES ('admins');

CREATE TABLE revoked_tokens (
    jti         TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX revoked_tokens_expires_at ON revoked_tokens (expires_at);

CREATE TABLE password_reset_tokens (
    token_hash  TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT
);
CREATE INDEX password_reset_tokens_user_id ON password_reset_tokens (user_id);

CREATE TABLE audit_events (
    id             TEXT PRIMARY KEY,
    at             BIGINT NOT NULL,
    user_id        TEXT,
    user_email     TEXT,
    action         TEXT NOT NULL,
    resource_type  TEXT,
    resource_id    TEXT,
    ip             TEXT,
    metadata       TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_events_at ON audit_events (at, id);
CREATE INDEX audit_events_action ON audit_events (action, at);
CREATE INDEX audit_events_user_id ON audit_events (user_id, at);
CREATE INDEX audit_events_resource ON audit_events (resource_type, resource_id);

CREATE TRIGGER audit_events_refuse_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;

CREATE TRIGGER audit_events_refuse_delete BEFORE DELETE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;
