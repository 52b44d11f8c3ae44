-- On TimescaleDB sensor_data is a hypertable partitioned by ts (7-day chunks
-- by default; the operator manages the chunk interval and policies later).
SELECT create_hypertable('sensor_data', by_range('ts'), if_not_exists => TRUE, migrate_data => TRUE);
