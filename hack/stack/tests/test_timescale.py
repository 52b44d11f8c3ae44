"""The local TimescaleDB (PGlite behind hack/pglite/server.mjs) through asyncpg,
the way the writer and query services use it: hypertables, COPY, ON CONFLICT,
policies, continuous aggregates, a pool, restarts."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from sensorlog_stack.proc import StackError, port_open
from sensorlog_stack.timescale import Timescale

pytest_plugins = ("sensorlog_stack.fixtures_timescale",)
pytestmark = pytest.mark.integration

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
COLUMNS = ["ts", "sensor_id", "temperature", "cpu"]


def _table(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def _readings(n: int, sensors: int = 10, start: dt.datetime = T0) -> list[tuple[object, ...]]:
    """One reading per second, round-robin over sensors: n/sensors per sensor."""
    return [
        (start + dt.timedelta(seconds=i), i % sensors, 20.0 + i % 7, (i % 100) / 100)
        for i in range(n)
    ]


async def _hypertable(conn: asyncpg.Connection, name: str) -> None:
    await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    await conn.execute(
        f"CREATE TABLE {name} (ts timestamptz NOT NULL, sensor_id int NOT NULL, "
        "temperature double precision, cpu double precision, UNIQUE (sensor_id, ts))"
    )
    await conn.execute(
        f"SELECT create_hypertable('{name}', 'ts', chunk_time_interval => interval '1 day')"
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is gone once its state is Z or it is reaped.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
async def conn(timescale: Timescale) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(timescale.dsn)
    try:
        yield c
    finally:
        await asyncio.wait_for(c.close(), 10)


async def test_hypertable_copy_on_conflict_and_time_bucket(conn: asyncpg.Connection) -> None:
    table = _table("readings")
    await _hypertable(conn, table)
    version = await conn.fetchval(
        "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
    )
    assert version.startswith("2.")

    rows = _readings(100_000)  # 100k seconds: about 28 hours, two daily chunks
    await conn.copy_records_to_table(table, records=rows, columns=COLUMNS)
    assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 100_000
    assert await conn.fetchval(f"SELECT count(*) FROM show_chunks('{table}')") == 2

    # A replayed batch: 10 duplicates and 5 new rows; only the new ones land.
    replay = rows[:10] + _readings(5, start=T0 + dt.timedelta(seconds=100_000))
    status = await conn.execute(
        f"INSERT INTO {table} (ts, sensor_id, temperature, cpu) "
        "SELECT * FROM unnest($1::timestamptz[], $2::int[], $3::float8[], $4::float8[]) "
        "ON CONFLICT DO NOTHING",
        *(list(col) for col in zip(*replay, strict=True)),
    )
    assert status == "INSERT 0 5"

    buckets = await conn.fetch(
        f"SELECT time_bucket('1 hour', ts) AS bucket, count(*) AS n FROM {table} "
        "WHERE sensor_id = 3 GROUP BY bucket ORDER BY bucket LIMIT 2"
    )
    assert [b["bucket"] for b in buckets] == [T0, T0 + dt.timedelta(hours=1)]
    assert [b["n"] for b in buckets] == [360, 360]  # 3600 s / 10 sensors


async def test_policies_compression_and_continuous_aggregate(conn: asyncpg.Connection) -> None:
    table = _table("policed")
    await _hypertable(conn, table)
    await conn.copy_records_to_table(table, records=_readings(20_000), columns=COLUMNS)

    retention = await conn.fetchval(f"SELECT add_retention_policy('{table}', INTERVAL '30 days')")
    await conn.execute(
        f"ALTER TABLE {table} SET (timescaledb.compress, "
        "timescaledb.compress_segmentby = 'sensor_id', timescaledb.compress_orderby = 'ts DESC')"
    )
    compression = await conn.fetchval(
        f"SELECT add_compression_policy('{table}', INTERVAL '7 days')"
    )
    view = f"{table}_hourly"
    await conn.execute(
        f"CREATE MATERIALIZED VIEW {view} WITH (timescaledb.continuous) AS "
        f"SELECT time_bucket('1 hour', ts) AS bucket, sensor_id, avg(temperature) AS avg_temp, "
        f"count(*) AS n FROM {table} GROUP BY bucket, sensor_id WITH NO DATA"
    )
    refresh = await conn.fetchval(
        f"SELECT add_continuous_aggregate_policy('{view}', start_offset => NULL, "
        "end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '30 minutes')"
    )

    jobs = {
        r["job_id"]: r["proc_name"]
        for r in await conn.fetch(
            "SELECT job_id, proc_name FROM timescaledb_information.jobs "
            "WHERE job_id = ANY($1::int[])",
            [retention, compression, refresh],
        )
    }
    assert jobs == {
        retention: "policy_retention",
        compression: "policy_compression",
        refresh: "policy_refresh_continuous_aggregate",
    }

    # No background scheduler here: run the policies by hand.
    await conn.execute(f"CALL run_job({refresh})")
    hourly = await conn.fetch(f"SELECT n FROM {view} WHERE sensor_id = 0 ORDER BY bucket")
    # 20000 s = 5 full hours of 360 readings per sensor, then 2000 s (200 readings).
    assert [r["n"] for r in hourly] == [360] * 5 + [200]
    await conn.execute(f"CALL run_job({compression})")
    compressed = await conn.fetchval(
        "SELECT count(*) FROM timescaledb_information.chunks "
        "WHERE hypertable_name = $1 AND is_compressed",
        table,
    )
    assert compressed == 1  # 2024 data is far older than 7 days
    assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 20_000

    await conn.execute(f"SELECT remove_retention_policy('{table}')")
    left = await conn.fetchval(
        "SELECT count(*) FROM timescaledb_information.jobs WHERE job_id = $1", retention
    )
    assert left == 0


async def test_pool_concurrent_transactions_and_statements(timescale: Timescale) -> None:
    table = _table("counter")
    pool = await asyncpg.create_pool(timescale.dsn, min_size=3, max_size=3)
    try:
        await pool.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, n int NOT NULL)")
        await pool.execute(f"INSERT INTO {table} VALUES (1, 0)")

        async def worker(w: int) -> None:
            for i in range(15):
                async with pool.acquire() as c, c.transaction():
                    n = await c.fetchval(f"SELECT n FROM {table} WHERE id = 1 FOR UPDATE")
                    await asyncio.sleep(0)  # let other tasks try to get in mid-transaction
                    await c.execute(f"UPDATE {table} SET n = $1 WHERE id = 1", n + 1)
                # Every connection prepares its own __asyncpg_stmt_N__ for these.
                async with pool.acquire() as c:
                    assert await c.fetchval("SELECT $1::int * 1000 + $2::int", w, i) == w * 1000 + i

        await asyncio.wait_for(asyncio.gather(*(worker(w) for w in range(6))), 120)
        # Lost updates would show here if two transactions ever interleaved.
        assert await pool.fetchval(f"SELECT n FROM {table} WHERE id = 1") == 90
    finally:
        await asyncio.wait_for(pool.close(), 30)


async def test_search_path_survives_pool_release(timescale: Timescale) -> None:
    table = _table("pathcheck")
    pool = await asyncpg.create_pool(timescale.dsn, min_size=1, max_size=1)
    try:
        await pool.execute(f"CREATE TABLE {table} (v int)")
        async with pool.acquire() as c:
            await c.execute("SET search_path TO pg_catalog")
        # The pool ran RESET ALL on release; unqualified names must still resolve.
        async with pool.acquire() as c:
            assert await c.fetchval("SHOW search_path") == "public"
            assert await c.fetchval(f"SELECT count(*) FROM {table}") == 0
    finally:
        await asyncio.wait_for(pool.close(), 30)


async def test_error_inside_transaction_leaves_connection_usable(
    conn: asyncpg.Connection, timescale: Timescale
) -> None:
    with pytest.raises(asyncpg.UndefinedTableError):
        async with conn.transaction():
            await conn.execute("SELECT 1")
            await conn.execute("SELECT * FROM no_such_table_here")
    assert await conn.fetchval("SELECT $1::int + 1", 41) == 42
    # Nor is the shared session left to the failed transaction.
    other = await asyncpg.connect(timescale.dsn)
    try:
        assert await asyncio.wait_for(other.fetchval("SELECT 7"), 10) == 7
    finally:
        await other.close()


async def test_copy_200k_rows_timed(conn: asyncpg.Connection) -> None:
    table = _table("copytime")
    await _hypertable(conn, table)
    rows = _readings(200_000)
    started = time.perf_counter()
    await conn.copy_records_to_table(table, records=rows, columns=COLUMNS)
    elapsed = time.perf_counter() - started
    assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 200_000
    print(f"\nCOPY 200k rows into a hypertable: {elapsed:.2f} s ({200_000 / elapsed:,.0f} rows/s)")
    assert elapsed < 120  # generous: the machine is shared; a hang would exceed it


async def test_restart_keeps_data_and_stop_leaves_no_process(tmp_path: Path) -> None:
    server = Timescale(tmp_path / "ts").start()
    try:
        c = await asyncpg.connect(server.dsn)
        await c.execute("CREATE EXTENSION timescaledb")
        await _hypertable(c, "kept")
        await c.copy_records_to_table("kept", records=_readings(1_000), columns=COLUMNS)
        await c.close()

        pid = server.pid
        assert pid is not None
        server.stop()
        assert not _pid_alive(pid)
        assert not port_open(server.port)

        server.start()
        assert server.pid != pid
        c = await asyncpg.connect(server.dsn)
        assert await c.fetchval("SELECT count(*) FROM kept") == 1_000
        hypertables = await c.fetchval(
            "SELECT count(*) FROM timescaledb_information.hypertables "
            "WHERE hypertable_name = 'kept'"
        )
        assert hypertables == 1
        await c.close()
    finally:
        server.stop()


async def test_kill_leaves_no_process(tmp_path: Path) -> None:
    server = Timescale(tmp_path / "ts").start()
    pid = server.pid
    assert pid is not None
    server.kill()
    assert not _pid_alive(pid)
    assert not port_open(server.port)


def test_missing_node_modules_names_make_tools(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SENSORLOG_PGLITE_DIR", str(tmp_path / "empty"))
    with pytest.raises(StackError, match="make tools"):
        Timescale(tmp_path / "ts")
