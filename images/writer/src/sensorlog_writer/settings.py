"""Writer settings (env prefix ``SENSORLOG_WRITER_``); loaded once in ``__main__``."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from sensorlog_core.kafka_security import KafkaSecuritySettings
from sensorlog_core.settings import ConsulSettings, DatabaseSettings


# Kafka security fields (SENSORLOG_WRITER_KAFKA_SECURITY_PROTOCOL, ...) come from the mixin,
# shared with sensorlog-publish.
class WriterSettings(DatabaseSettings, ConsulSettings, KafkaSecuritySettings):
    model_config = SettingsConfigDict(env_prefix="SENSORLOG_WRITER_", extra="ignore", frozen=True)
    # Read afresh on every batch, so a Consul KV change takes effect without a
    # restart; every other field is bound into a client or pool at start-up.
    SAFE_RELOAD: ClassVar[frozenset[str]] = frozenset(
        {
            "log_level",
            "batch_max_records",
            "batch_max_bytes",
            "batch_max_wait_ms",
            "max_message_bytes",
            "max_array_elements",
            "future_tolerance_s",
            "retry_initial_s",
            "retry_max_s",
        }
    )

    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092", min_length=1, description="Comma-separated Kafka host:port list."
    )
    group_id: str = Field("sensorlog-writer", min_length=1, description="Kafka consumer group.")
    readings_topic: str = Field("logger.sensor.ts", min_length=1, description="Readings topic.")
    sensors_topic: str = Field(
        "logger.sensor.instance", min_length=1, description="Sensor entities topic."
    )
    dlq_suffix: str = Field(
        ".dlq", min_length=1, description="Dead-letter topic of a topic T is T + this suffix."
    )
    batch_max_records: int = Field(
        10_000, ge=1, le=1_000_000, description="Flush a batch at this many readings."
    )
    batch_max_bytes: int = Field(
        8 << 20, ge=1024, description="Flush a batch at this many payload bytes."
    )
    batch_max_wait_ms: int = Field(
        500, ge=1, le=60_000, description="Flush a non-empty batch after this many ms."
    )
    max_message_bytes: int = Field(
        1 << 20, ge=64, description="Records larger than this go to the DLQ."
    )
    max_array_elements: int = Field(
        10_000, ge=1, description="Arrays with more readings than this go to the DLQ."
    )
    future_tolerance_s: float = Field(
        300.0, ge=0, description="Readings more than this many seconds in the future go to the DLQ."
    )
    retry_initial_s: float = Field(0.2, gt=0, description="First database retry delay.")
    retry_max_s: float = Field(10.0, gt=0, description="Cap of the database retry delay.")
    shutdown_grace_s: float = Field(
        20.0,
        gt=0,
        description="On SIGTERM, time to finish the in-flight batch before abandoning it.",
    )
    db_pool_max: int = Field(4, ge=1, le=100, description="Database connections at most.")
    db_command_timeout_s: float = Field(
        60.0, gt=0, description="A database statement taking longer is treated as a failure."
    )
    session_timeout_ms: int = Field(
        10_000, ge=1000, description="Kafka group session timeout (failure detection)."
    )
    heartbeat_interval_ms: int = Field(3_000, ge=100, description="Kafka group heartbeat.")
    max_poll_interval_ms: int = Field(
        300_000, ge=1000, description="Max time between polls before the group evicts us."
    )
    fetch_max_bytes: int = Field(
        16 << 20, ge=1024, description="Upper bound of buffered fetch data (bounds memory)."
    )
    max_partition_fetch_bytes: int = Field(
        1 << 20, ge=1024, description="Per-partition fetch size (bounds memory)."
    )
    auto_offset_reset: str = Field(
        "earliest",
        pattern="^(earliest|latest)$",
        description="Where a new group starts: earliest keeps every reading.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> WriterSettings:
        if self.heartbeat_interval_ms * 3 > self.session_timeout_ms:
            raise ValueError("heartbeat_interval_ms must be at most a third of session_timeout_ms")
        if self.retry_initial_s > self.retry_max_s:
            raise ValueError("retry_initial_s must not exceed retry_max_s")
        return self

    @property
    def topics(self) -> tuple[str, str]:
        return (self.readings_topic, self.sensors_topic)

    def dlq_topic(self, topic: str) -> str:
        return topic + self.dlq_suffix
