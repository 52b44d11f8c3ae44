-- Readings. No foreign key to sensors: readings for a sensor never seen before
-- must land (sensor entities may arrive later, or never).
-- (sensor_id, ts) is the idempotency key; its unique index also serves
-- per-sensor range scans and "latest per sensor" (backward scan).
CREATE TABLE IF NOT EXISTS sensor_data (
    ts           timestamptz      NOT NULL,
    sensor_id    bigint           NOT NULL,
    temperature  double precision,
    cpu          double precision,
    extra        jsonb,
    CONSTRAINT sensor_data_sensor_id_ts_key UNIQUE (sensor_id, ts)
);
CREATE INDEX IF NOT EXISTS sensor_data_ts_idx ON sensor_data (ts DESC);
