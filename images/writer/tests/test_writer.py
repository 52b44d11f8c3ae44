"""The writer against a real Kafka broker and a real PostgreSQL 15."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from functools import partial
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer

from sensorlog_core import db
from sensorlog_core.migrate import migrate
from sensorlog_stack.kafka import Kafka
from sensorlog_stack.pipeline import Load, Topics, produce, stored, wait_for_rows, writer_env
from sensorlog_stack.postgres import Postgres
from sensorlog_stack.services import WriterProcess, http_status

pytestmark = pytest.mark.integration


async def test_the_seed_sample_lands_with_extra_fields(
    kafka: Kafka, dsn: str, topics: Topics, writers: Callable[..., WriterProcess]
) -> None:
    writers(writer_env(kafka, dsn, topics)).start()
    await produce(
        kafka.bootstrap,
        topics.readings,
        [b'[{"ts": 1646409307, "sensor_id": 1, "temperature": 30, "cpu": 20, "humidity": 41}]'],
    )
    assert await wait_for_rows(dsn, 1, 30) == 1
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow("SELECT *, extract(epoch from ts) AS e FROM sensor_data")
    finally:
        await conn.close()
    assert (row["sensor_id"], row["e"], row["temperature"], row["cpu"]) == (1, 1646409307, 30, 20)
    assert json.loads(row["extra"]) == {"humidity": 41.0}


async def test_100k_readings_across_partitions_land_exactly_once(
    kafka: Kafka, dsn: str, topics: Topics, writers: Callable[..., WriterProcess]
) -> None:
    load = Load(100_000)
    await produce(kafka.bootstrap, topics.readings, load.messages())
    w = writers(writer_env(kafka, dsn, topics)).start()
    assert await wait_for_rows(dsn, load.count, 120) == load.count
    # A restart replays nothing: offsets are in the database.
    assert w.terminate() == 0
    writers(writer_env(kafka, dsn, topics)).start()
    await asyncio.sleep(3)
    n, got = await stored(dsn)
    assert n == load.count
    assert got == load.expected


async def test_100k_readings_land_exactly_once_on_timescaledb(
    kafka: Kafka, ts_dsn: str, topics: Topics, writers: Callable[..., WriterProcess]
) -> None:
    load = Load(100_000)
    await produce(kafka.bootstrap, topics.readings, load.messages())
    writers(writer_env(kafka, ts_dsn, topics, SENSORLOG_WRITER_DB_POOL_MAX="2")).start()
    assert await wait_for_rows(ts_dsn, load.count, 240) == load.count
    n, got = await stored(ts_dsn)
    assert n == load.count and got == load.expected
    conn = await asyncpg.connect(ts_dsn)
    try:
        hypertable = await conn.fetchval(
            "SELECT count(*) FROM timescaledb_information.hypertables "
            "WHERE hypertable_name = 'sensor_data'"
        )
    finally:
        await conn.close()
    assert hypertable == 1


async def test_kill_9_one_of_two_writers_mid_stream_loses_and_duplicates_nothing(
    kafka: Kafka, dsn: str, topics: Topics, writers: Callable[..., WriterProcess]
) -> None:
    load = Load(60_000)
    env = writer_env(kafka, dsn, topics, SENSORLOG_WRITER_BATCH_MAX_RECORDS="2000")
    a = writers(env, "writer-a").start()
    b = writers(env, "writer-b").start()
    msgs = load.messages()
    half = len(msgs) // 2
    await produce(kafka.bootstrap, topics.readings, msgs[:half])
    await wait_for_rows(dsn, 5_000, 60)
    a.kill()
    await produce(kafka.bootstrap, topics.readings, msgs[half:])
    writers(env, "writer-a2").start()
    assert await wait_for_rows(dsn, load.count, 120) == load.count
    await asyncio.sleep(2)
    n, got = await stored(dsn)
    assert (n, got == load.expected) == (load.count, True)
    assert b.alive()


async def test_poison_mix_goes_to_the_dlq_with_reasons_and_good_readings_land(
    kafka: Kafka, dsn: str, topics: Topics, writers: Callable[..., WriterProcess]
) -> None:
    good = Load(2_000, sensors=50, per_message=5)
    msgs = good.messages()
    bad: list[tuple[bytes, str]] = [
        (b"{not json", "invalid JSON"),
        (b'{"ts": 1646409307, "sensor_id": "x"}', "sensor_id"),
        (b'{"ts": 1646409307, "sensor_id": 1, "temperature": NaN}', "finite"),
        (b'{"ts": 4102444800, "sensor_id": 1}', "future tolerance"),
        (b'{"ts": 1646409307, "sensor_id": 1, "pad": "' + b"x" * 100_000 + b'"}', "limit"),
        (b"\x00\x01\x02 random bytes", "not UTF-8|invalid JSON"),
        (b"[" * 3000 + b"]" * 3000, "nested too deeply"),
    ]
    # A bad element inside an otherwise good array: neighbours must land.
    mixed = [
        {"ts": 1646409307, "sensor_id": 9001},
        {"ts": "nope", "sensor_id": 9002},
        {"ts": 1646409307, "sensor_id": 9003},
    ]
    payloads = list(msgs)
    for i, (raw, _) in enumerate(bad * 4):
        payloads.insert(i * 9, raw)
    payloads.append(json.dumps(mixed).encode())
    writers(writer_env(kafka, dsn, topics, SENSORLOG_WRITER_MAX_MESSAGE_BYTES="65536")).start()
    await produce(kafka.bootstrap, topics.readings, payloads, keys=False)
    assert await wait_for_rows(dsn, good.count + 2, 90) == good.count + 2
    _n, got = await stored(dsn)
    assert got == good.expected | {(9001, 1646409307), (9003, 1646409307)}

    consumer = AIOKafkaConsumer(
        topics.readings_dlq,
        bootstrap_servers=kafka.bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_bytes=8 << 20,
        max_partition_fetch_bytes=8 << 20,
    )
    await consumer.start()
    dead = []
    try:
        deadline = time.monotonic() + 30
        while len(dead) < len(bad) * 4 + 1 and time.monotonic() < deadline:
            for recs in (await consumer.getmany(timeout_ms=500)).values():
                dead.extend(recs)
    finally:
        await consumer.stop()
    assert len(dead) == len(bad) * 4 + 1
    headers = [dict(r.headers) for r in dead]
    for h in headers:
        assert h["dlq.topic"] == topics.readings.encode()
        assert {"dlq.error", "dlq.partition", "dlq.offset", "dlq.timestamp"} <= set(h)
    reasons = [h["dlq.error"].decode() for h in headers]
    import re

    for _, pattern in bad:
        assert sum(bool(re.search(pattern, r)) for r in reasons) >= 4, (pattern, reasons)
    element = [r for r in dead if dict(r.headers).get("dlq.index") == b"1"]
    assert len(element) == 1 and json.loads(element[0].value) == mixed[1]


async def test_sensor_entities_last_write_wins_by_event_time(
    kafka: Kafka, dsn: str, topics: Topics, writers: Callable[..., WriterProcess]
) -> None:
    writers(writer_env(kafka, dsn, topics)).start()
    await produce(
        kafka.bootstrap,
        topics.sensors,
        [
            b'{"id": 5, "type": "thermo", "location": "new", "updated_at": "2024-02-01T00:00:00Z"}',
            b'{"id": 5, "type": "thermo", "location": "old", "updated_at": "2024-01-01T00:00:00Z"}',
        ],
    )
    await produce(kafka.bootstrap, topics.readings, [b'{"ts": 1646409307, "sensor_id": 5}'])
    await wait_for_rows(dsn, 1, 30)
    await asyncio.sleep(1)
    conn = await asyncpg.connect(dsn)
    try:
        loc = await conn.fetchval("SELECT location FROM sensors WHERE id = 5")
    finally:
        await conn.close()
    assert loc == "new"


async def test_sigterm_under_load_commits_and_exits_in_time(
    kafka: Kafka, dsn: str, topics: Topics, writers: Callable[..., WriterProcess]
) -> None:
    load = Load(40_000)
    env = writer_env(
        kafka,
        dsn,
        topics,
        SENSORLOG_WRITER_SHUTDOWN_GRACE_S="10",
        SENSORLOG_WRITER_BATCH_MAX_RECORDS="1000",
    )
    w = writers(env).start()
    await produce(kafka.bootstrap, topics.readings, load.messages())
    await wait_for_rows(dsn, 3_000, 60)
    started = time.monotonic()
    assert w.terminate(timeout=30) == 0
    assert time.monotonic() - started < 15
    n_after_stop, _ = await stored(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        saved = await conn.fetchval(
            "SELECT sum(next_offset) FROM consumer_offsets WHERE consumer_group = $1", topics.group
        )
    finally:
        await conn.close()
    # Every stored reading is covered by the saved offsets (10 readings a message).
    assert saved * 10 == n_after_stop
    writers(env).start()
    assert await wait_for_rows(dsn, load.count, 120) == load.count
    n, got = await stored(dsn)
    assert n == load.count and got == load.expected


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as r:
        return str(r.read().decode())


async def test_status_endpoint_and_metrics_after_a_batch(
    kafka: Kafka, dsn: str, topics: Topics, writers: Callable[..., WriterProcess]
) -> None:
    w = writers(writer_env(kafka, dsn, topics)).start()
    assert http_status(w.status_port, "/readyz") == 200
    assert http_status(w.status_port, "/healthz") == 200
    await produce(
        kafka.bootstrap,
        topics.readings,
        [b'[{"ts": 1646409307, "sensor_id": 1}, {"ts": 1646409308, "sensor_id": 1}]', b"{bad"],
    )
    assert await wait_for_rows(dsn, 2, 30) == 2
    text = ""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # metrics follow the commit by a moment
        text = await asyncio.to_thread(_scrape, w.status_port)
        if "sensorlog_writer_dead_lettered_total{" in text:
            break
        await asyncio.sleep(0.2)
    t = topics.readings
    assert f'sensorlog_writer_readings_written_total{{topic="{t}"}} 2.0' in text
    assert f'sensorlog_writer_records_consumed_total{{topic="{t}"}} 2.0' in text
    assert f'sensorlog_writer_dead_lettered_total{{topic="{t}.dlq"}} 1.0' in text
    # Lag per partition from the broker's high watermark: everything consumed, so 0.
    assert f'sensorlog_writer_consumer_lag{{partition="0",topic="{t}"}} 0.0' in text
    assert "sensorlog_writer_paused 0.0" in text
    assert "sensorlog_writer_batch_seconds_count" in text


async def test_publish_command_sends_readings_sensors_and_a_counted_load(
    kafka: Kafka, dsn: str, topics: Topics, writers: Callable[..., WriterProcess]
) -> None:
    writers(writer_env(kafka, dsn, topics)).start()
    publish = [sys.executable, "-m", "sensorlog_writer.publish", "--bootstrap", kafka.bootstrap]
    run = partial(subprocess.run, capture_output=True, text=True, timeout=60, check=True)
    run(
        [
            *publish,
            "--topic",
            topics.readings,
            "reading",
            "--sensor-id",
            "7",
            "--ts",
            "1646409307",
            "--temperature",
            "21.5",
            "--field",
            "humidity=40",
        ]
    )
    run(
        [
            *publish,
            "--topic",
            topics.sensors,
            "sensor",
            "--id",
            "7",
            "--type",
            "thermo",
            "--location",
            "rack-1",
        ]
    )
    out = run(
        [
            *publish,
            "--topic",
            topics.readings,
            "load",
            "--rate",
            "0",
            "--sensors",
            "5",
            "--count",
            "500",
            "--per-message",
            "10",
            "--start-ts",
            "1700000000",
        ]
    )
    assert json.loads(out.stdout)["messages"] == 50
    run(
        [*publish, "--topic", topics.readings, "file", "-"],
        input='{"ts": "2022-03-04T15:55:08Z", "sensor_id": 8}\n',
    )
    assert await wait_for_rows(dsn, 502, 60) == 502
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT temperature, extra FROM sensor_data WHERE sensor_id = 7 "
            "AND ts = to_timestamp(1646409307)"
        )
        deadline = time.monotonic() + 10
        while (loc := await conn.fetchval("SELECT location FROM sensors WHERE id = 7")) is None:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
    finally:
        await conn.close()
    assert row["temperature"] == 21.5 and json.loads(row["extra"]) == {"humidity": 40.0}
    assert loc == "rack-1"


def test_bad_config_exits_non_zero_naming_the_variable(tmp_path: object) -> None:
    env = dict(os.environ, SENSORLOG_WRITER_BATCH_MAX_RECORDS="0")
    r = subprocess.run(
        [sys.executable, "-m", "sensorlog_writer"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 2
    assert "SENSORLOG_WRITER_BATCH_MAX_RECORDS" in r.stderr


async def test_postgres_down_10s_mid_stream_recovers_without_loss_or_duplicates(
    kafka: Kafka, topics: Topics, writers: Callable[..., WriterProcess], tmp_path: Path
) -> None:
    pg = Postgres(tmp_path / "pg").start()
    try:
        conn = await db.connect(pg.dsn)
        await migrate(conn)
        await conn.close()
        load = Load(50_000)
        env = writer_env(
            kafka,
            pg.dsn,
            topics,
            SENSORLOG_WRITER_BATCH_MAX_RECORDS="2000",
            SENSORLOG_WRITER_DB_COMMAND_TIMEOUT_S="5",
        )
        w = writers(env).start()
        msgs = load.messages()
        await produce(kafka.bootstrap, topics.readings, msgs[: len(msgs) // 2])
        await wait_for_rows(pg.dsn, 2_000, 60)
        pg.stop()
        await produce(kafka.bootstrap, topics.readings, msgs[len(msgs) // 2 :])
        deadline = time.monotonic() + 10
        saw_unready = False
        while time.monotonic() < deadline:
            saw_unready |= http_status(w.status_port, "/readyz") == 503
            await asyncio.sleep(0.5)
        assert saw_unready, "readiness never reported the database outage"
        assert w.alive(), "the writer must ride out the outage, not crash"
        pg.start()
        assert await wait_for_rows(pg.dsn, load.count, 120) == load.count
        await asyncio.sleep(2)
        n, got = await stored(pg.dsn)
        assert n == load.count and got == load.expected
        assert http_status(w.status_port, "/readyz") == 200
    finally:
        pg.destroy()
