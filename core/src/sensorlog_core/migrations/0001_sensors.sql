-- Sensor entities, upserted by the writer from logger.sensor.instance.
-- updated_at is the time the *message* says, so a late, older message never
-- overwrites a newer one (last write wins by event time, not arrival).
CREATE TABLE IF NOT EXISTS sensors (
    id          bigint      PRIMARY KEY,
    type        text,
    location    text,
    metadata    jsonb       NOT NULL DEFAULT '{}'::jsonb,
    updated_at  timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS sensors_type_idx ON sensors (type);
CREATE INDEX IF NOT EXISTS sensors_location_idx ON sensors (location);
