-- When the reaper gave a RUNNING job up because its node went OFFLINE: the job is FAILED with its
-- outcome unknown, and its agent's late output and completion still count (the real outcome wins).
ALTER TABLE jobs ADD COLUMN lost_at BIGINT;
