"""Write-side SQL: the writer's statements, next to the schema they target."""

from __future__ import annotations

READING_COLUMNS = ("ts", "sensor_id", "temperature", "cpu", "extra")

# Fallback when a straight COPY collides with existing rows: COPY into a staging
# table (still COPY speed), then let ON CONFLICT drop the duplicates.
CREATE_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS sensor_data_staging
    (LIKE sensor_data INCLUDING DEFAULTS) ON COMMIT DELETE ROWS
"""
INSERT_FROM_STAGING = """
INSERT INTO sensor_data (ts, sensor_id, temperature, cpu, extra)
SELECT ts, sensor_id, temperature, cpu, extra FROM sensor_data_staging
ON CONFLICT (sensor_id, ts) DO NOTHING
"""

# Last write wins by the message's event time, not by arrival order.
UPSERT_SENSOR = """
INSERT INTO sensors (id, type, location, metadata, updated_at)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (id) DO UPDATE
SET type = EXCLUDED.type, location = EXCLUDED.location,
    metadata = EXCLUDED.metadata, updated_at = EXCLUDED.updated_at
WHERE sensors.updated_at <= EXCLUDED.updated_at
"""

SAVE_OFFSETS = """
INSERT INTO consumer_offsets (consumer_group, topic, partition, next_offset, updated_at)
SELECT $1, t.topic, t.partition, t.next_offset, now()
FROM unnest($2::text[], $3::int[], $4::bigint[]) AS t(topic, partition, next_offset)
ON CONFLICT (consumer_group, topic, partition) DO UPDATE
SET next_offset = EXCLUDED.next_offset, updated_at = EXCLUDED.updated_at
"""

LOAD_OFFSETS = """
SELECT topic, partition, next_offset FROM consumer_offsets
WHERE consumer_group = $1 AND topic = ANY($2::text[])
"""
