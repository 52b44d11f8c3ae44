"""Writer metrics (Prometheus). Names and labels are documented in docs/metrics.md."""

from prometheus_client import Counter, Gauge, Histogram

RECORDS_CONSUMED = Counter(
    "sensorlog_writer_records_consumed_total", "Kafka records consumed.", ["topic"]
)
READINGS_WRITTEN = Counter(
    "sensorlog_writer_readings_written_total",
    "Readings inserted into sensor_data (duplicates excluded).",
    ["topic"],
)
READINGS_DUPLICATE = Counter(
    "sensorlog_writer_readings_duplicate_total",
    "Readings already stored (same sensor_id and ts), skipped.",
    ["topic"],
)
SENSORS_UPSERTED = Counter(
    "sensorlog_writer_sensors_upserted_total", "Sensor entity messages applied.", ["topic"]
)
DEAD_LETTERED = Counter(
    "sensorlog_writer_dead_lettered_total",
    "Records or array elements sent to a dead-letter topic.",
    ["topic"],
)
BATCH_SIZE = Histogram(
    "sensorlog_writer_batch_readings",
    "Readings per database batch.",
    buckets=(1, 10, 100, 500, 1000, 2500, 5000, 10000, 25000, 50000),
)
BATCH_SECONDS = Histogram(
    "sensorlog_writer_batch_seconds",
    "Time to write one batch (database transaction incl. retries).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
DB_ERRORS = Counter("sensorlog_writer_db_errors_total", "Failed database batch attempts.", ["kind"])
CONSUMER_LAG = Gauge(
    "sensorlog_writer_consumer_lag",
    "High watermark minus position, per assigned partition.",
    ["topic", "partition"],
)
PAUSED = Gauge(
    "sensorlog_writer_paused", "1 while fetching is paused (database unavailable), else 0."
)
