"""The consumer loop: Kafka records -> validated rows -> one transaction per batch.

Delivery: at-least-once from Kafka, exactly-once effect in the table.
- The consumed offsets are stored in the database in the same transaction as
  the rows; on partition assignment we seek to them, so replays after a crash
  or rebalance normally never reach the table and COPY goes straight in.
- If rows collide anyway (a producer sent a reading twice, or a race during a
  rebalance), the batch falls back to staging + ON CONFLICT DO NOTHING.
- Kafka offsets are committed only after the database commit (for lag
  tooling; the database copy is the one we seek to).
- Dead letters are produced and acknowledged *before* the transaction that
  moves the offsets past them, so a crash can duplicate a dead letter but
  never lose one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, KafkaError
from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind

from sensorlog_core import tracing
from sensorlog_writer import metrics
from sensorlog_writer.deadletter import DeadLetter, dead_letter
from sensorlog_writer.payloads import parse_readings, parse_sensors
from sensorlog_writer.settings import WriterSettings
from sensorlog_writer.sink import (
    Batch,
    Part,
    WriteResult,
    is_poison,
    load_offsets,
    write_batch,
    write_isolating,
)

log = logging.getLogger(__name__)
tracer = trace.get_tracer("sensorlog.writer")
T = TypeVar("T")


class Abandoned(Exception):
    """The in-flight batch was given up (rebalance or shutdown); nothing was committed."""


@dataclass
class _Collected:
    batch: Batch
    dead: list[DeadLetter]
    records: int
    per_topic: dict[str, int]
    # Trace contexts the producers sent in the records' headers (tracing on only).
    links: list[Link]


class Writer:
    def __init__(
        self,
        settings: WriterSettings,
        pool: asyncpg.Pool,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
    ) -> None:
        self.s = settings
        self.pool = pool
        self.consumer = consumer
        self.producer = producer
        self._stopping = asyncio.Event()
        # Set to give up the in-flight batch at its next retry point.
        self._abandon = asyncio.Event()
        self._busy = asyncio.Lock()
        self._paused = False
        self.db_ok = True
        self.assigned = False
        self.last_error = ""

    # -- lifecycle -------------------------------------------------------
    def subscribe(self) -> None:
        self.consumer.subscribe(list(self.s.topics), listener=_Listener(self))

    def stop(self) -> None:
        self._stopping.set()

    def abandon(self) -> None:
        """Give up the in-flight batch at the next retry point (nothing is committed)."""
        self._abandon.set()

    def ready(self) -> tuple[bool, str]:
        if not self.db_ok:
            return False, f"database unavailable: {self.last_error}"
        if self._stopping.is_set():
            return False, "shutting down"
        return True, "ok"

    async def run(self) -> None:
        """Collect the next batch while the previous one is being written.

        Parsing (this process's CPU) then overlaps the database's COPY (the
        database's CPU). At most one batch is in flight and one being collected,
        so memory stays bounded; offsets still commit in order, batch by batch.
        """
        inflight: asyncio.Task[None] | None = None
        try:
            while not self._stopping.is_set():
                collected = await self._collect()
                if inflight is not None:
                    await self._await_keeping_membership(inflight)
                    inflight = None
                if collected is None:
                    continue
                # A batch collected across a rebalance is still written: rows of a
                # partition that moved meanwhile are caught by the unique key
                # (the ON CONFLICT fallback), so nothing doubles and nothing is lost.
                inflight = asyncio.create_task(self._write(collected))
            if inflight is not None:
                await self._await_keeping_membership(inflight)
        finally:
            if inflight is not None and not inflight.done():
                inflight.cancel()
                with contextlib.suppress(asyncio.CancelledError, Abandoned):
                    await inflight

    async def _write(self, collected: _Collected) -> None:
        async with self._busy:
            self._abandon.clear()
            try:
                await self._process(collected)
            except Abandoned:
                log.warning(
                    "in-flight batch abandoned; it will be consumed again",
                    extra={"records": collected.records},
                )

    async def _await_keeping_membership(self, task: asyncio.Task[None]) -> None:
        """Wait for the in-flight write; while it retries, keep polling the (paused) consumer.

        Polling keeps us inside max.poll.interval, so a long database outage does
        not also cost our place in the group. Only this loop calls getmany.
        """
        while not task.done():
            if not self._paused:
                await asyncio.wait({task}, timeout=0.5)
                continue
            # A partition assigned during the outage is not paused yet: pause it too.
            self.consumer.pause(*self.consumer.assignment())
            got = await self.consumer.getmany(timeout_ms=200)
            for tp, recs in got.items():
                if recs:  # not ours to keep now: rewind so they are fetched again later
                    self.consumer.seek(tp, recs[0].offset)
        task.result()

    # -- batching --------------------------------------------------------
    async def _collect(self) -> _Collected | None:
        batch = Batch()
        dead: list[DeadLetter] = []
        per_topic: dict[str, int] = {}
        links: list[Link] = []
        traced = tracing.enabled()
        records = nbytes = 0
        deadline: float | None = None
        max_wait = self.s.batch_max_wait_ms / 1000
        while not self._stopping.is_set():
            timeout = max_wait if deadline is None else deadline - time.monotonic()
            if timeout <= 0:
                break
            fetched = await self.consumer.getmany(
                timeout_ms=max(1, int(timeout * 1000)),
                max_records=max(1, self.s.batch_max_records - batch.reading_count),
            )
            for tp, recs in fetched.items():
                for rec in recs:
                    self._parse(rec, batch, dead)
                    batch.offsets[(tp.topic, tp.partition)] = rec.offset + 1
                    nbytes += len(rec.value or b"")
                if traced:
                    links += tracing.links_from_headers(rec.headers for rec in recs)
                per_topic[tp.topic] = per_topic.get(tp.topic, 0) + len(recs)
                records += len(recs)
            if records and deadline is None:
                deadline = time.monotonic() + max_wait
            if batch.reading_count >= self.s.batch_max_records or nbytes >= self.s.batch_max_bytes:
                break
            if deadline is None:
                return None
        if not records:
            return None
        return _Collected(batch, dead, records, per_topic, links)

    def _parse(self, rec: ConsumerRecord, batch: Batch, dead: list[DeadLetter]) -> None:
        now = datetime.now(UTC)
        if rec.topic == self.s.readings_topic:
            rows, rejected = parse_readings(
                rec.value,
                now=now,
                future_tolerance=timedelta(seconds=self.s.future_tolerance_s),
                max_bytes=self.s.max_message_bytes,
                max_elements=self.s.max_array_elements,
            )
            batch.add(Part(rec, readings=rows))
        else:
            srows, rejected = parse_sensors(
                rec.value,
                record_time=datetime.fromtimestamp(rec.timestamp / 1000, UTC),
                max_bytes=self.s.max_message_bytes,
                max_elements=self.s.max_array_elements,
            )
            batch.add(Part(rec, sensors=srows))
        for r in rejected:
            dead.append(
                self._dead(rec, r.reason, r.value if r.index is not None else rec.value, r.index)
            )

    def _dead(
        self, rec: ConsumerRecord, reason: str, value: bytes | None, index: int | None
    ) -> DeadLetter:
        return dead_letter(
            dlq_topic=self.s.dlq_topic(rec.topic),
            reason=reason,
            topic=rec.topic,
            partition=rec.partition,
            offset=rec.offset,
            timestamp_ms=rec.timestamp,
            key=rec.key,
            value=value,
            index=index,
            original_headers=list(rec.headers or ()),
        )

    # -- writing ---------------------------------------------------------
    async def _process(self, c: _Collected) -> None:
        for topic, n in c.per_topic.items():
            metrics.RECORDS_CONSUMED.labels(topic).inc(n)
        # A batch mixes records of many traces: it is a root span linked to each
        # producer's span (OTel's batch-consumer pattern), not a child of one.
        with tracer.start_as_current_span(
            "writer.batch",
            kind=SpanKind.CONSUMER,
            links=c.links,
            attributes={
                "messaging.system": "kafka",
                "messaging.operation.type": "process",
                "messaging.consumer.group.name": self.s.group_id,
                "messaging.batch.message_count": c.records,
                "sensorlog.readings": c.batch.reading_count,
            },
        ):
            started = time.monotonic()
            await self._retrying("dead-letter", lambda: self._send_dead(c.dead))
            result, refused = await self._retrying("database", lambda: self._store(c.batch))
            if refused:
                # The transaction above already moved offsets past these records;
                # they reach the DLQ on the next attempt even if this one fails.
                await self._retrying("dead-letter", lambda: self._send_dead(refused))
            metrics.BATCH_SECONDS.observe(time.monotonic() - started)
        metrics.BATCH_SIZE.observe(c.batch.reading_count)
        metrics.READINGS_WRITTEN.labels(self.s.readings_topic).inc(result.inserted)
        metrics.READINGS_DUPLICATE.labels(self.s.readings_topic).inc(result.duplicates)
        metrics.SENSORS_UPSERTED.labels(self.s.sensors_topic).inc(len(c.batch.sensors))
        await self._commit_kafka(c.batch.offsets)
        await self._update_lag()

    async def _store(self, batch: Batch) -> tuple[WriteResult, list[DeadLetter]]:
        # One span per attempt: a retried batch shows each failure and the final success.
        with tracer.start_as_current_span(
            "writer.db_write",
            kind=SpanKind.CLIENT,
            attributes={
                "db.system": "postgresql",
                "db.system.name": "postgresql",
                "db.operation.name": "COPY",
                "sensorlog.readings": batch.reading_count,
            },
        ) as span:
            result, dead = await self._store_once(batch)
            if span.is_recording():
                span.set_attributes(
                    {
                        "sensorlog.inserted": result.inserted,
                        "sensorlog.duplicates": result.duplicates,
                        "sensorlog.fallback": result.fallback,
                        "sensorlog.refused": len(dead),
                    }
                )
            return result, dead

    async def _store_once(self, batch: Batch) -> tuple[WriteResult, list[DeadLetter]]:
        async with self.pool.acquire() as conn:
            try:
                return await write_batch(conn, self.s.group_id, batch), []
            except asyncpg.PostgresError as exc:
                if not is_poison(exc):
                    raise
                log.warning(
                    "batch refused by the database; isolating the bad records",
                    extra={"error": str(exc)},
                )
            result, refused = await write_isolating(conn, self.s.group_id, batch)
        dead = []
        for part, reason in refused:
            rec = part.origin
            assert isinstance(rec, ConsumerRecord)
            dead.append(self._dead(rec, reason, rec.value, None))
        return result, dead

    async def _send_dead(self, dead: Sequence[DeadLetter]) -> None:
        if not dead:
            return
        with tracer.start_as_current_span(
            "writer.dlq_send",
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "kafka",
                "messaging.operation.type": "send",
                "messaging.batch.message_count": len(dead),
            },
        ):
            futures = [
                await self.producer.send(d.topic, value=d.value, key=d.key, headers=d.headers)
                for d in dead
            ]
            await asyncio.gather(*futures)
        for d in dead:
            metrics.DEAD_LETTERED.labels(d.topic).inc()

    async def _retrying(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        delay = self.s.retry_initial_s
        paused = False
        try:
            while True:
                try:
                    result = await attempt()
                    if what == "database":
                        self.db_ok = True
                    return result
                except (
                    OSError,
                    TimeoutError,
                    asyncpg.PostgresError,
                    asyncpg.InterfaceError,
                    KafkaError,
                ) as exc:
                    kind = type(exc).__name__
                    self.last_error = f"{kind}: {exc}"[:300]
                    if what == "database":
                        metrics.DB_ERRORS.labels(kind).inc()
                        self.db_ok = False
                    log.warning(
                        "%s write failed, retrying",
                        what,
                        extra={
                            "error": kind,
                            "detail": str(exc)[:300],
                            "retry_in_s": round(delay, 2),
                        },
                    )
                if not paused:
                    self.consumer.pause(*self.consumer.assignment())
                    metrics.PAUSED.set(1)
                    paused = self._paused = True
                await self._wait(delay * random.uniform(0.5, 1.0))  # noqa: S311 - jitter
                if self._abandon.is_set():
                    raise Abandoned
                delay = min(delay * 2, self.s.retry_max_s)
        finally:
            if paused:
                self._paused = False
                self.consumer.resume(*self.consumer.assignment())
                metrics.PAUSED.set(0)

    async def _wait(self, seconds: float) -> None:
        # The run loop keeps polling meanwhile (see _await_keeping_membership).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._abandon.wait(), seconds)

    async def _commit_kafka(self, offsets: dict[tuple[str, int], int]) -> None:
        if not offsets:
            return
        try:
            await self.consumer.commit({TopicPartition(t, p): o for (t, p), o in offsets.items()})
        except (CommitFailedError, KafkaError) as exc:
            # Harmless: the database holds these offsets and we seek to them.
            log.info("kafka offset commit skipped", extra={"error": type(exc).__name__})

    async def _update_lag(self) -> None:
        # Lag from the broker's high watermark (learned with every fetch), not a guess.
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            if high is None:
                continue
            try:
                pos = await asyncio.wait_for(self.consumer.position(tp), 1)
            except (KafkaError, TimeoutError, AssertionError):
                continue
            metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(max(0, high - pos))

    # -- rebalance -------------------------------------------------------
    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        # Let the in-flight batch finish (its commit covers these partitions);
        # one stuck in database retries is abandoned instead of blocking the group.
        if self._busy.locked() and not self.db_ok:
            self._abandon.set()
        async with self._busy:
            pass
        for tp in revoked:
            with contextlib.suppress(KeyError):
                metrics.CONSUMER_LAG.remove(tp.topic, str(tp.partition))
        self.assigned = bool(self.consumer.assignment() - revoked)

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        self.assigned = True
        if not assigned:
            return
        try:
            stored = await load_offsets(self.pool, self.s.group_id, list(self.s.topics))
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            # Kafka's committed offsets (never ahead of the database) are the fallback.
            log.warning(
                "could not read stored offsets; using Kafka's", extra={"error": type(exc).__name__}
            )
            return
        for tp in assigned:
            offset = stored.get((tp.topic, tp.partition))
            if offset is not None:
                self.consumer.seek(tp, offset)
        log.info(
            "partitions assigned",
            extra={"partitions": sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned)},
        )


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, writer: Writer) -> None:
        self.writer = writer

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.writer.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.writer.on_assigned(assigned)
