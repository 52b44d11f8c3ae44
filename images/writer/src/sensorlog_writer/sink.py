"""One database transaction per batch: rows, sensor upserts and Kafka offsets together."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import asyncpg

from sensorlog_core import writes
from sensorlog_writer.payloads import ReadingRow, SensorRow

log = logging.getLogger(__name__)


@dataclass
class Part:
    """The rows one Kafka record produced; the unit a poison record is isolated at."""

    origin: object
    readings: list[ReadingRow] = field(default_factory=list)
    sensors: list[SensorRow] = field(default_factory=list)


@dataclass
class Batch:
    parts: list[Part] = field(default_factory=list)
    # (topic, partition) -> next offset to consume once this batch is stored.
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    reading_count: int = 0

    def add(self, part: Part) -> None:
        if part.readings or part.sensors:
            self.parts.append(part)
            self.reading_count += len(part.readings)

    @property
    def readings(self) -> list[ReadingRow]:
        return [r for p in self.parts for r in p.readings]

    @property
    def sensors(self) -> list[SensorRow]:
        return [s for p in self.parts for s in p.sensors]


def is_poison(exc: BaseException) -> bool:
    """Errors the data itself causes (SQLSTATE classes 22, 23, 54): retrying cannot help."""
    return isinstance(
        exc,
        asyncpg.DataError
        | asyncpg.IntegrityConstraintViolationError
        | asyncpg.ProgramLimitExceededError,
    ) and not isinstance(exc, asyncpg.UniqueViolationError)


@dataclass(frozen=True)
class WriteResult:
    inserted: int
    duplicates: int
    fallback: bool


def _dedupe_sensors(rows: Sequence[SensorRow]) -> list[SensorRow]:
    # One upsert per id (the newest event), so a batch never updates a row twice.
    newest: dict[int, SensorRow] = {}
    for row in rows:
        cur = newest.get(row.id)
        if cur is None or row.updated_at >= cur.updated_at:
            newest[row.id] = row
    return list(newest.values())


async def _copy_readings(conn: asyncpg.Connection, rows: list[ReadingRow]) -> tuple[int, bool]:
    """COPY straight in; on a key collision fall back to staging + ON CONFLICT."""
    try:
        async with conn.transaction():  # a savepoint: only the COPY is undone on collision
            await conn.copy_records_to_table(
                "sensor_data", records=rows, columns=writes.READING_COLUMNS
            )
        return len(rows), False
    except asyncpg.UniqueViolationError:
        pass
    await conn.execute(writes.CREATE_STAGING)
    await conn.copy_records_to_table(
        "sensor_data_staging", records=rows, columns=writes.READING_COLUMNS
    )
    status = await conn.execute(writes.INSERT_FROM_STAGING)
    inserted = int(status.rsplit(" ", 1)[-1])
    return inserted, True


async def _upsert_sensors(conn: asyncpg.Connection, rows: list[SensorRow]) -> None:
    if rows:
        await conn.executemany(
            writes.UPSERT_SENSOR,
            [(s.id, s.type, s.location, s.metadata, s.updated_at) for s in _dedupe_sensors(rows)],
        )


async def _save_offsets(
    conn: asyncpg.Connection, group: str, offsets: dict[tuple[str, int], int]
) -> None:
    if offsets:
        keys = list(offsets)
        await conn.execute(
            writes.SAVE_OFFSETS,
            group,
            [t for t, _ in keys],
            [p for _, p in keys],
            [offsets[k] for k in keys],
        )


async def write_batch(conn: asyncpg.Connection, group: str, batch: Batch) -> WriteResult:
    """Store the whole batch and its offsets in one transaction."""
    inserted, fallback = 0, False
    readings = batch.readings
    async with conn.transaction():
        if readings:
            inserted, fallback = await _copy_readings(conn, readings)
        await _upsert_sensors(conn, batch.sensors)
        await _save_offsets(conn, group, batch.offsets)
    return WriteResult(inserted, len(readings) - inserted, fallback)


async def write_isolating(
    conn: asyncpg.Connection, group: str, batch: Batch
) -> tuple[WriteResult, list[tuple[Part, str]]]:
    """Slow path after a poison error: each record in its own savepoint.

    Returns what was stored and the records the database refused, with why;
    the caller dead-letters those. Offsets still move past every record.
    """
    inserted, total, refused = 0, 0, []
    async with conn.transaction():
        await conn.execute(writes.CREATE_STAGING)
        for part in batch.parts:
            try:
                async with conn.transaction():
                    if part.readings:
                        await conn.execute("TRUNCATE sensor_data_staging")
                        await conn.copy_records_to_table(
                            "sensor_data_staging",
                            records=part.readings,
                            columns=writes.READING_COLUMNS,
                        )
                        status = await conn.execute(writes.INSERT_FROM_STAGING)
                        inserted += int(status.rsplit(" ", 1)[-1])
                        total += len(part.readings)
                    await _upsert_sensors(conn, part.sensors)
            except asyncpg.PostgresError as exc:
                if not is_poison(exc):
                    raise
                refused.append((part, f"database refused the record: {exc}"))
        await _save_offsets(conn, group, batch.offsets)
    return WriteResult(inserted, total - inserted, True), refused


async def load_offsets(
    conn: asyncpg.Connection | asyncpg.Pool, group: str, topics: Sequence[str]
) -> dict[tuple[str, int], int]:
    rows = await conn.fetch(writes.LOAD_OFFSETS, group, list(topics))
    return {(r["topic"], r["partition"]): r["next_offset"] for r in rows}
