"""Helpers shared by writer tests, the resilience suite and benchmarks.

A deterministic load (every (sensor_id, ts) unique and known), producing to a
real broker, and reading back what the table holds.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

import asyncpg
from aiokafka import AIOKafkaProducer

from sensorlog_stack.kafka import Kafka
from sensorlog_writer.publish import synthetic_readings

START_TS = 1_700_000_000


@dataclass
class Topics:
    readings: str
    sensors: str
    group: str

    @property
    def readings_dlq(self) -> str:
        return self.readings + ".dlq"

    @property
    def sensors_dlq(self) -> str:
        return self.sensors + ".dlq"


def writer_env(kafka: Kafka, dsn: str, t: Topics, **extra: str) -> dict[str, str]:
    env = {
        "SENSORLOG_WRITER_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
        "SENSORLOG_WRITER_DATABASE_DSN": dsn,
        "SENSORLOG_WRITER_GROUP_ID": t.group,
        "SENSORLOG_WRITER_READINGS_TOPIC": t.readings,
        "SENSORLOG_WRITER_SENSORS_TOPIC": t.sensors,
        # Short group timeouts so a killed member's partitions move within seconds.
        "SENSORLOG_WRITER_SESSION_TIMEOUT_MS": "3000",
        "SENSORLOG_WRITER_HEARTBEAT_INTERVAL_MS": "500",
        "SENSORLOG_WRITER_BATCH_MAX_WAIT_MS": "200",
        "SENSORLOG_WRITER_RETRY_MAX_S": "2",
        "SENSORLOG_WRITER_FUTURE_TOLERANCE_S": "300",
    }
    env.update(extra)
    return env


async def produce(bootstrap: str, topic: str, payloads: list[bytes], keys: bool = True) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = []
        for raw in payloads:
            key = None
            if keys:
                try:
                    doc = json.loads(raw)
                    first = doc[0] if isinstance(doc, list) else doc
                    key = str(first["sensor_id"]).encode()
                except (ValueError, KeyError, TypeError, IndexError):
                    key = None
            futures.append(await producer.send(topic, raw, key=key))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


@dataclass
class Load:
    """A deterministic set of readings: reading k = (k % sensors, START_TS + k // sensors)."""

    count: int
    sensors: int = 100
    per_message: int = 10
    expected: set[tuple[int, int]] = field(init=False)

    def __post_init__(self) -> None:
        self.expected = {
            (k % self.sensors, START_TS + k // self.sensors) for k in range(self.count)
        }

    def messages(self) -> list[bytes]:
        return [
            json.dumps(m, separators=(",", ":")).encode()
            for m in synthetic_readings(self.count, self.sensors, START_TS, self.per_message)
        ]


async def stored(dsn: str) -> tuple[int, set[tuple[int, int]]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT sensor_id, extract(epoch FROM ts)::bigint AS t FROM sensor_data"
        )
    finally:
        await conn.close()
    return len(rows), {(r["sensor_id"], r["t"]) for r in rows}


async def wait_for_rows(dsn: str, expected: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    n = -1
    while time.monotonic() < deadline:
        try:
            conn = await asyncpg.connect(dsn)
            try:
                n = await conn.fetchval("SELECT count(*) FROM sensor_data")
            finally:
                await conn.close()
        except (OSError, asyncpg.PostgresError):
            n = -1
        if n >= expected:
            return int(n)
        await asyncio.sleep(0.25)
    return n
