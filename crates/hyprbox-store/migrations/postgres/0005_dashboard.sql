-- The server's own health, sampled once a minute (kept 8 days), and the distinct signed-in users
-- of each UTC day (kept 8 days): the Hyperion dashboard's history survives restarts.

CREATE TABLE health_samples (
    at              BIGINT PRIMARY KEY,
    cpu_percent     DOUBLE PRECISION NOT NULL,
    memory_percent  DOUBLE PRECISION NOT NULL
);

CREATE TABLE ux_daily_users (
    day      BIGINT NOT NULL,
    user_id  TEXT NOT NULL,
    PRIMARY KEY (day, user_id)
);
