-- Reads over a fleet's findings without sorting or scanning the table: the active list walks
-- (status, severity) groups in detection order, and the health summary counts from an index alone.
DROP INDEX findings_status;
CREATE INDEX findings_active ON findings (status, severity, detected_at, id);
CREATE INDEX findings_node_counts ON findings (status, node_id, severity);
