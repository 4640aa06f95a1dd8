-- The `user` filter of the audit log matches an id or an email, which no single index serves, so
-- the index on user_id only cost every audited write (job creations and claims among them).
DROP INDEX audit_events_user_id;
