-- Each node's OPEN findings by severity, kept up to date by every write that changes a finding's
-- status or severity, so the health summary reads a row per node and severity instead of counting
-- every finding (snoozed findings whose deadline passed are few and still counted on read).
CREATE TABLE finding_counts (
    node_id  TEXT NOT NULL,
    severity TEXT NOT NULL,
    open     BIGINT NOT NULL,
    PRIMARY KEY (node_id, severity)
);
INSERT INTO finding_counts (node_id, severity, open)
    SELECT node_id, severity, COUNT(*) FROM findings WHERE status = 'OPEN' GROUP BY node_id, severity;
