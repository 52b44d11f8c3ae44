"""Resilience suite: faults under load on the real local stack.

Each scenario prints one line
``<scenario>: produced N, stored N, lost 0, duplicated 0, recovered in T s``
and asserts nothing was lost or duplicated. Every loop is bounded in count
and time. The database DSN carries a password; no log line may contain it.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import grpc
import pytest
from aiokafka import AIOKafkaConsumer

from sensorlog.v1 import query_pb2, query_pb2_grpc
from sensorlog_core import db
from sensorlog_core.migrate import migrate
from sensorlog_stack.kafka import Kafka, create_topics
from sensorlog_stack.pipeline import Load, Topics, produce, stored, wait_for_rows, writer_env
from sensorlog_stack.postgres import Postgres
from sensorlog_stack.services import QueryProcess, WriterProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SECRET = "s3cr3t-" + uuid.uuid4().hex[:12]


@dataclass
class Stack:
    kafka: Kafka
    pg: Postgres
    dsn: str  # with a password, to prove it never reaches a log
    topics: Topics
    logs: Path


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    """Own Kafka and PostgreSQL per scenario: scenarios stop and restart them."""
    kafka = Kafka(tmp_path / "kafka", partitions=6).start()
    pg = Postgres(tmp_path / "pg").start()
    try:
        admin = await asyncpg.connect(pg.dsn)
        await admin.execute(f"CREATE ROLE sensorlog LOGIN PASSWORD '{SECRET}'")
        await admin.execute("CREATE DATABASE sensorlog OWNER sensorlog")
        await admin.close()
        dsn = f"postgresql://sensorlog:{SECRET}@127.0.0.1:{pg.port}/sensorlog"
        conn = await db.connect(dsn)
        await migrate(conn)
        await conn.close()
        tag = uuid.uuid4().hex[:6]
        topics = Topics(f"readings-{tag}", f"sensors-{tag}", f"writers-{tag}")
        await create_topics(
            kafka.bootstrap,
            {topics.readings: 6, topics.sensors: 2, topics.readings_dlq: 1, topics.sensors_dlq: 1},
        )
        yield Stack(kafka, pg, dsn, topics, tmp_path)
    finally:
        kafka.stop()
        pg.destroy()
    assert_no_secret_in_logs(tmp_path)


def assert_no_secret_in_logs(folder: Path) -> None:
    logs = list(folder.glob("*.log")) + list(folder.glob("*/*.log"))
    assert any(p.stat().st_size > 0 for p in logs), "no logs were written: the check is vacuous"
    leaked = [
        f"{p.name}: {line[:200]}"
        for p in logs
        for line in p.read_text(errors="replace").splitlines()
        if SECRET in line
    ]
    assert leaked == [], "a secret reached a log line"


@pytest.fixture
def writers(stack: Stack) -> Iterator[Callable[..., WriterProcess]]:
    started: list[WriterProcess] = []

    def make(name: str = "writer", **env: str) -> WriterProcess:
        w = WriterProcess(
            stack.logs / f"{name}-{len(started)}.log",
            writer_env(
                stack.kafka,
                stack.dsn,
                stack.topics,
                SENSORLOG_WRITER_BATCH_MAX_RECORDS="2000",
                SENSORLOG_WRITER_DB_COMMAND_TIMEOUT_S="5",
                **env,
            ),
            name=name,
        )
        started.append(w)
        return w.start()

    yield make
    for w in started:
        w.stop()


async def produce_steadily(bootstrap: str, topic: str, msgs: list[bytes], seconds: float) -> None:
    """Spread msgs over about `seconds`, in slices; retries a slice while Kafka is down."""
    slices = 20
    size = max(1, len(msgs) // slices)
    for i in range(0, len(msgs), size):
        deadline = time.monotonic() + 120
        while True:
            try:
                await produce(bootstrap, topic, msgs[i : i + size])
                break
            except Exception:  # the broker is down in one scenario: retry the slice
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
        await asyncio.sleep(seconds / slices)


async def settle(dsn: str, expected: int, timeout: float) -> float:
    """Seconds until the table holds `expected` rows (or the timeout)."""
    started = time.monotonic()
    await wait_for_rows(dsn, expected, timeout)
    return time.monotonic() - started


async def verdict(name: str, load: Load, dsn: str, recovered: float) -> None:
    await asyncio.sleep(1)  # anything late would show up now
    n, got = await stored(dsn)
    lost = len(load.expected - got)
    # Rows beyond the distinct set, and rows nobody produced.
    duplicated = n - len(got) + len(got - load.expected)
    print(
        f"\n{name}: produced {load.count}, stored {n}, lost {lost}, "
        f"duplicated {duplicated}, recovered in {recovered:.1f} s"
    )
    assert (lost, duplicated) == (0, 0)


async def test_writer_kill_9_under_load(
    stack: Stack, writers: Callable[..., WriterProcess]
) -> None:
    load = Load(60_000)
    a = writers("writer-a")
    writers("writer-b")
    feed = asyncio.create_task(
        produce_steadily(stack.kafka.bootstrap, stack.topics.readings, load.messages(), 8)
    )
    await asyncio.sleep(3)
    a.kill()
    await asyncio.sleep(1)
    writers("writer-a-restarted")
    restarted = time.monotonic()
    await feed
    await settle(stack.dsn, load.count, 120)
    await verdict("writer kill -9", load, stack.dsn, time.monotonic() - restarted)


async def test_kafka_broker_restart_under_load(
    stack: Stack, writers: Callable[..., WriterProcess]
) -> None:
    load = Load(40_000)
    writers()
    feed = asyncio.create_task(
        produce_steadily(stack.kafka.bootstrap, stack.topics.readings, load.messages(), 8)
    )
    await asyncio.sleep(3)
    stack.kafka.stop()
    await asyncio.sleep(5)
    stack.kafka.start()
    restarted = time.monotonic()
    await feed
    await settle(stack.dsn, load.count, 180)
    await verdict("kafka broker restart", load, stack.dsn, time.monotonic() - restarted)


async def test_postgres_restart_under_load(
    stack: Stack, writers: Callable[..., WriterProcess]
) -> None:
    load = Load(40_000)
    w = writers()
    feed = asyncio.create_task(
        produce_steadily(stack.kafka.bootstrap, stack.topics.readings, load.messages(), 8)
    )
    await asyncio.sleep(3)
    stack.pg.stop()
    await asyncio.sleep(8)
    assert w.alive()
    stack.pg.start()
    restarted = time.monotonic()
    await feed
    await settle(stack.dsn, load.count, 180)
    await verdict("postgresql restart", load, stack.dsn, time.monotonic() - restarted)


async def test_rebalance_join_and_leave_under_load(
    stack: Stack, writers: Callable[..., WriterProcess]
) -> None:
    load = Load(60_000)
    first = writers("writer-1")
    feed = asyncio.create_task(
        produce_steadily(stack.kafka.bootstrap, stack.topics.readings, load.messages(), 10)
    )
    await asyncio.sleep(2)
    writers("writer-2")  # joins: partitions move
    await asyncio.sleep(3)
    assert first.terminate() == 0  # leaves cleanly: partitions move again
    left = time.monotonic()
    await feed
    await settle(stack.dsn, load.count, 120)
    await verdict("rebalance (join + leave)", load, stack.dsn, time.monotonic() - left)


POISON: list[tuple[bytes, str]] = [
    (b"{not json", "invalid JSON"),
    (b"\xff\xfe\x00garbage", "not UTF-8"),
    (b'{"ts": 1646409307, "sensor_id": "seven"}', "sensor_id"),
    (b'{"ts": 1646409307, "sensor_id": -4}', "sensor_id"),
    (b'{"sensor_id": 1}', "ts"),
    (b'{"ts": "yesterday", "sensor_id": 1}', "ts"),
    (b'{"ts": "2022-03-04T15:55:07", "sensor_id": 1}', "timezone"),
    (b'{"ts": 1646409307, "sensor_id": 1, "cpu": NaN}', "finite"),
    (b'{"ts": 1646409307, "sensor_id": 1, "temperature": Infinity}', "finite"),
    (b'{"ts": 1646409307, "sensor_id": 1, "humidity": "wet"}', "humidity"),
    (b'{"ts": 4102444800, "sensor_id": 1}', "future tolerance"),
    (b'"just a string"', "must be a JSON object"),
    (b"[" * 5000 + b"]" * 5000, "nested too deeply|limit"),
    (b'{"ts": 1646409307, "sensor_id": 1, "pad": "' + b"x" * 70_000 + b'"}', "limit"),
]


async def dlq_records(bootstrap: str, topic: str, expected: int) -> list[dict[str, bytes]]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 << 20,
    )
    await consumer.start()
    out: list[dict[str, bytes]] = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(out) < expected:
            for recs in (await consumer.getmany(timeout_ms=500)).values():
                out.extend(dict(r.headers) for r in recs)
        # Anything beyond the expected count would arrive now.
        for recs in (await consumer.getmany(timeout_ms=1500)).values():
            out.extend(dict(r.headers) for r in recs)
    finally:
        await consumer.stop()
    return out


async def test_ten_percent_poison_gives_an_exact_dlq(
    stack: Stack, writers: Callable[..., WriterProcess]
) -> None:
    load = Load(20_000, per_message=10)
    good = load.messages()  # 2,000 good records
    bad = [raw for raw, _ in POISON] * 15  # 210 bad records: ~10%
    mixed = good + bad
    random.Random(7).shuffle(mixed)
    writers(SENSORLOG_WRITER_MAX_MESSAGE_BYTES="65536")
    started = time.monotonic()
    await produce(stack.kafka.bootstrap, stack.topics.readings, mixed, keys=False)
    await settle(stack.dsn, load.count, 120)
    dead = await dlq_records(stack.kafka.bootstrap, stack.topics.readings_dlq, len(bad))
    print(f"\npoison: {len(bad)} bad of {len(mixed)} records, dead-lettered {len(dead)}")
    assert len(dead) == len(bad)
    import re

    reasons = [h["dlq.error"].decode() for h in dead]
    for raw, pattern in POISON:
        assert sum(bool(re.search(pattern, r)) for r in reasons) >= 15, (raw[:40], pattern)
    await verdict("poison 10%", load, stack.dsn, time.monotonic() - started)


async def test_oversize_nested_and_random_bytes_on_both_topics(
    stack: Stack, writers: Callable[..., WriterProcess]
) -> None:
    rng = random.Random(11)
    junk = [bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 2000))) for _ in range(50)]
    junk += [b"[" * 100_000, b'{"a":' * 20_000 + b"1" + b"}" * 20_000, b"x" * 200_000]
    w = writers(SENSORLOG_WRITER_MAX_MESSAGE_BYTES="65536")
    load = Load(1_000)
    started = time.monotonic()
    await produce(stack.kafka.bootstrap, stack.topics.readings, junk + load.messages(), keys=False)
    await produce(stack.kafka.bootstrap, stack.topics.sensors, junk, keys=False)
    await settle(stack.dsn, load.count, 60)
    assert w.alive()
    for topic in (stack.topics.readings_dlq, stack.topics.sensors_dlq):
        dead = await dlq_records(stack.kafka.bootstrap, topic, len(junk))
        assert len(dead) == len(junk), topic
    await verdict("junk on both topics", load, stack.dsn, time.monotonic() - started)


async def test_query_under_load_while_postgres_restarts(stack: Stack) -> None:
    conn = await asyncpg.connect(stack.dsn)
    await conn.execute(
        "INSERT INTO sensor_data (ts, sensor_id, temperature) "
        "SELECT to_timestamp(1700000000 + g), g % 10, g FROM generate_series(1, 5000) g"
    )
    await conn.close()
    q = QueryProcess(
        stack.logs / "query.log",
        {"SENSORLOG_QUERY_DATABASE_DSN": stack.dsn, "SENSORLOG_QUERY_HEALTH_CHECK_INTERVAL": "0.5"},
    )
    q.start()
    codes: dict[str, int] = {}
    slowest = 0.0
    stop_at = time.monotonic() + 25
    recovered_at: float | None = None
    restarted_at = 0.0

    async def client() -> None:
        nonlocal slowest, recovered_at
        async with grpc.aio.insecure_channel(q.target) as ch:
            stub = query_pb2_grpc.QueryServiceStub(ch)
            while time.monotonic() < stop_at:
                t0 = time.monotonic()
                try:
                    await stub.LatestReadings(query_pb2.LatestReadingsRequest(), timeout=3)
                    code = "OK"
                    if restarted_at and recovered_at is None:
                        recovered_at = time.monotonic()
                except grpc.aio.AioRpcError as exc:
                    code = exc.code().name
                slowest = max(slowest, time.monotonic() - t0)
                codes[code] = codes.get(code, 0) + 1
                await asyncio.sleep(0.01)

    try:
        clients = [asyncio.create_task(client()) for _ in range(8)]
        await asyncio.sleep(4)
        stack.pg.stop()
        await asyncio.sleep(6)
        stack.pg.start()
        restarted_at = time.monotonic()
        await asyncio.gather(*clients)
    finally:
        q.stop()
    print(
        f"\nquery during postgresql restart: {json.dumps(codes)}, slowest call "
        f"{slowest:.2f} s, recovered in "
        f"{(recovered_at - restarted_at) if recovered_at else float('nan'):.1f} s"
    )
    assert set(codes) <= {"OK", "UNAVAILABLE"}, codes
    assert codes.get("UNAVAILABLE", 0) > 0, "the outage was never seen"
    assert slowest < 4, "a call hung past its deadline"
    assert recovered_at is not None and recovered_at - restarted_at < 10
