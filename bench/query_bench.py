"""Query service benchmark: the gRPC service next to the same SQL run directly.

    .venv/bin/python bench/query_bench.py --small    # ~2 minutes
    .venv/bin/python bench/query_bench.py --full     # 10M readings over 1,000 sensors
    .venv/bin/python bench/query_bench.py --full --db-dir /tmp/qbench-full
                                      # keep the loaded cluster; later runs skip the load

Starts its own PostgreSQL 15 in a temp dir, loads readings spread over ten
days, starts ``sensorlog-query-server`` as a separate process and drives load
from another process on 127.0.0.1 (concurrency 32):

* LatestReadings for 10 random sensors per call,
* a one-day AggregateReadings (1 h buckets, avg/min/max of temperature and
  cpu) for 10 random sensors per call,
* StreamReadings of one day of every sensor (rows/s),

then runs the very same SQL (built by sensorlog_core.queries) with asyncpg
from the load process, and writes bench/out/query.md with the ratios. The
service and the direct SQL take turns in short rounds, so drift during the run
falls on both alike. Every round is bounded in time and in number of calls.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import multiprocessing as mp
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from sensorlog.v1 import query_pb2 as pb
from sensorlog.v1 import query_pb2_grpc as pb_grpc
from sensorlog_core import db, queries
from sensorlog_core.migrate import migrate
from sensorlog_stack.postgres import Postgres
from sensorlog_stack.proc import free_port

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "query.md"
T0 = datetime(2024, 5, 1, tzinfo=UTC)
DAYS = 10
CONCURRENCY = 32
IDS_PER_CALL = 10
POOL = 16
ROUNDS = 6


@dataclass(frozen=True)
class Mode:
    name: str
    readings: int
    sensors: int
    seconds: float  # per load phase
    max_calls: int  # per load phase


MODES = {
    "small": Mode("small", 500_000, 100, 8.0, 40_000),
    "full": Mode("full", 10_000_000, 1_000, 20.0, 200_000),
}


def _ts(dt: datetime) -> Timestamp:
    t = Timestamp()
    t.FromDatetime(dt)
    return t


def _us(dt: datetime) -> int:
    return int((dt - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds()) * 1_000_000


# --------------------------------------------------------------------------- load data


def _marker(mode: Mode) -> str:
    return f"query_bench {mode.name} {mode.readings} readings {mode.sensors} sensors {DAYS} days"


async def load(dsn: str, mode: Mode) -> float | None:
    """Seconds the load took; None when the cluster already holds this mode's data."""
    conn = await db.connect(dsn)
    started = time.perf_counter()
    try:
        loaded = await conn.fetchval("SELECT obj_description(to_regclass('sensor_data'))")
        if loaded == _marker(mode):
            return None
        await migrate(conn)
        per_sensor = mode.readings // mode.sensors
        step = DAYS * 86400 / per_sensor
        chunk = max(1, mode.sensors // 10)
        for first in range(1, mode.sensors + 1, chunk):
            last = min(mode.sensors, first + chunk - 1)
            await conn.execute(
                "INSERT INTO sensor_data (ts, sensor_id, temperature, cpu) "
                "SELECT $1::timestamptz + (i * $2::float8) * interval '1 second', s, "
                "       20 + (i % 50) / 10.0, (i % 100) / 100.0 "
                "FROM generate_series(0, $3 - 1) i, generate_series($4::int, $5::int) s",
                T0,
                step,
                per_sensor,
                first,
                last,
            )
            print(f"  loaded sensors {first}-{last}", flush=True)
        await conn.execute("VACUUM ANALYZE sensor_data")
        # Only a completed load is marked (a comment on the table): --db-dir reuses it.
        await conn.execute(f"COMMENT ON TABLE sensor_data IS '{_marker(mode)}'")
    finally:
        await conn.close()
    return time.perf_counter() - started


# --------------------------------------------------------------------------- load driver


@dataclass
class Result:
    name: str
    calls: int
    seconds: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    rows: int = 0

    @property
    def per_second(self) -> float:
        return self.calls / self.seconds

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds


def _summary(name: str, lat: list[float], seconds: float, rows: int = 0) -> Result:
    lat.sort()
    p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000  # noqa: E731
    return Result(name, len(lat), seconds, p(0.50), p(0.99), statistics.fmean(lat) * 1000, rows)


async def _closed_loop(
    call: Any, seconds: float, max_calls: int, seed: int
) -> tuple[list[float], float]:
    """CONCURRENCY workers calling back to back until the time or call budget ends."""
    lat: list[float] = []
    budget = [max_calls]
    started = time.perf_counter()
    stop_at = started + seconds

    async def worker(rnd: random.Random) -> None:
        while time.perf_counter() < stop_at and budget[0] > 0:
            budget[0] -= 1
            t = time.perf_counter()
            await call(rnd)
            lat.append(time.perf_counter() - t)

    await asyncio.gather(*(worker(random.Random(seed + i)) for i in range(CONCURRENCY)))
    return lat, time.perf_counter() - started


async def _alternating(calls: dict[str, Any], mode: Mode) -> dict[str, Result]:
    """Each call in turn for ROUNDS short rounds, in alternating order.

    Drift over the run (buffer cache, autovacuum, the other process) then falls
    on the service and on the direct SQL alike, so their ratio is fair.
    """
    lat: dict[str, list[float]] = {name: [] for name in calls}
    spent = dict.fromkeys(calls, 0.0)
    warm = random.Random(0)
    for call in calls.values():
        # Warm-up (connections, prepared statements) outside the measurement.
        for _ in range(CONCURRENCY):
            await call(warm)
    for n in range(ROUNDS):
        order = list(calls) if n % 2 == 0 else list(reversed(calls))
        for name in order:
            got, seconds = await _closed_loop(
                calls[name], mode.seconds / ROUNDS, mode.max_calls // ROUNDS, seed=1000 * n
            )
            lat[name] += got
            spent[name] += seconds
    return {name: _summary(name, lat[name], spent[name]) for name in calls}


def _ids(rnd: random.Random, mode: Mode) -> list[int]:
    return rnd.sample(range(1, mode.sensors + 1), IDS_PER_CALL)


def _day(rnd: random.Random) -> datetime:
    return T0 + timedelta(days=rnd.randrange(DAYS - 1))


AGG_COLUMNS = [
    (f, a)
    for f in (queries.Field.TEMPERATURE, queries.Field.CPU)
    for a in (queries.Aggregation.AVG, queries.Aggregation.MIN, queries.Aggregation.MAX)
]


async def _no_reset(conn: Any) -> None:
    pass


async def drive(target: str, dsn: str, mode: Mode) -> list[Result]:
    hour = Duration(seconds=3600)
    aggs = [pb.AGGREGATION_AVG, pb.AGGREGATION_MIN, pb.AGGREGATION_MAX]
    # Without asyncpg's per-release reset statement, like the service's pool:
    # the direct side pays for the SQL and nothing else.
    pool = await db.create_pool(
        dsn, min_size=POOL, max_size=POOL, server_settings={"timezone": "UTC"}, reset=_no_reset
    )
    try:
        async with grpc.aio.insecure_channel(target) as channel:
            stub = pb_grpc.QueryServiceStub(channel)  # type: ignore[no-untyped-call]

            async def latest(rnd: random.Random) -> None:
                await stub.LatestReadings(pb.LatestReadingsRequest(sensor_ids=_ids(rnd, mode)))

            async def latest_sql(rnd: random.Random) -> None:
                q = queries.latest_readings(_ids(rnd, mode), None, None)
                await pool.fetch(q.sql, *q.args)

            async def aggregate(rnd: random.Random) -> None:
                day = _day(rnd)
                await stub.AggregateReadings(
                    pb.AggregateReadingsRequest(
                        sensor_ids=_ids(rnd, mode),
                        start=_ts(day),
                        end=_ts(day + timedelta(days=1)),
                        bucket=hour,
                        aggregations=aggs,
                    )
                )

            async def aggregate_sql(rnd: random.Random) -> None:
                day = _day(rnd)
                q = queries.aggregate_readings(
                    db.Flavor.POSTGRES,
                    sorted(_ids(rnd, mode)),
                    _us(day),
                    _us(day + timedelta(days=1)),
                    3_600_000_000,
                    AGG_COLUMNS,
                    False,
                )
                await pool.fetch(q.sql, *q.args)

            by = await _alternating(
                {
                    "LatestReadings (service)": latest,
                    "LatestReadings (asyncpg)": latest_sql,
                },
                mode,
            )
            by |= await _alternating(
                {
                    "AggregateReadings 1 day (service)": aggregate,
                    "AggregateReadings 1 day (asyncpg)": aggregate_sql,
                },
                mode,
            )

            day = T0 + timedelta(days=2)
            req = pb.StreamReadingsRequest(start=_ts(day), end=_ts(day + timedelta(days=1)))
            t = time.perf_counter()
            rows = 0
            async for batch in stub.StreamReadings(req, timeout=300):
                rows += len(batch.readings)
            name = "StreamReadings 1 day (service)"
            by[name] = _summary(name, [time.perf_counter() - t], time.perf_counter() - t, rows)

        q = queries.stream_readings(None, _us(day), _us(day + timedelta(days=1)), False)
        t = time.perf_counter()
        rows = 0
        async with pool.acquire() as conn, conn.transaction():
            cur = await conn.cursor(q.sql, *q.args)
            while batch_rows := await cur.fetch(1000):
                rows += len(batch_rows)
        name = "StreamReadings 1 day (asyncpg)"
        by[name] = _summary(name, [time.perf_counter() - t], time.perf_counter() - t, rows)
    finally:
        await pool.close()
    order = ("LatestReadings", "AggregateReadings 1 day", "StreamReadings 1 day")
    return [by[f"{what} ({side})"] for side in ("service", "asyncpg") for what in order]


def _drive_process(target: str, dsn: str, mode: Mode, q: Any) -> None:
    q.put(asyncio.run(drive(target, dsn, mode)))


# --------------------------------------------------------------------------- report


def _overhead(results: list[Result], what: str) -> float:
    by = {r.name: r for r in results}
    s, d = by[f"{what} (service)"], by[f"{what} (asyncpg)"]
    return (s.mean_ms - d.mean_ms) / d.mean_ms


def report(mode: Mode, load_s: float | None, runs: list[list[Result]]) -> str:
    results = runs[-1]
    by = {r.name: r for r in results}
    loaded = "reused from an earlier run" if load_s is None else f"loaded in {load_s:.0f}s"
    lines = [
        f"# Query service benchmark ({mode.name})",
        "",
        f"{mode.readings:,} readings over {mode.sensors:,} sensors and {DAYS} days, PostgreSQL 15 "
        f"on 127.0.0.1 ({loaded}); server and load generator in separate "
        f"processes, concurrency {CONCURRENCY}, {IDS_PER_CALL} random sensors per call, "
        f"{mode.seconds:g}s per call type and side, in {ROUNDS} rounds taking turns; "
        f"{os.cpu_count()} cores shared by all of them.",
        "",
        f"{len(runs)} run(s); the table is the last one.",
        "",
        "| what | calls | req/s | p50 ms | p99 ms | mean ms | rows/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        rows = f"{r.rows_per_second:,.0f}" if r.rows else ""
        lines.append(
            f"| {r.name} | {r.calls:,} | {r.per_second:,.0f} | {r.p50_ms:.1f} | "
            f"{r.p99_ms:.1f} | {r.mean_ms:.1f} | {rows} |"
        )
    lines += ["", "Service vs the same SQL through asyncpg:", ""]
    for what in ("LatestReadings", "AggregateReadings 1 day"):
        s, d = by[f"{what} (service)"], by[f"{what} (asyncpg)"]
        lines.append(
            f"- {what}: throughput {s.per_second / d.per_second:.2f}x of direct, "
            f"mean latency overhead {(s.mean_ms - d.mean_ms) / d.mean_ms * 100:+.0f}%"
        )
    s, d = by["StreamReadings 1 day (service)"], by["StreamReadings 1 day (asyncpg)"]
    lines.append(
        f"- StreamReadings: {s.rows_per_second:,.0f} rows/s vs {d.rows_per_second:,.0f} rows/s "
        f"direct ({s.rows_per_second / d.rows_per_second:.2f}x)"
    )
    for what in ("LatestReadings", "AggregateReadings 1 day"):
        each = ", ".join(f"{_overhead(r, what) * 100:+.0f}%" for r in runs)
        lines.append(f"- {what} mean latency overhead, every run: {each}")
    lines += [
        "",
        "Targets (issue 4): LatestReadings >= 1,000 req/s with p99 < 50 ms; streaming >= "
        "200,000 rows/s; aggregate overhead < 30% of the direct query time.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--small", action="store_true", help="about two minutes")
    group.add_argument("--full", action="store_true", help="10M readings over 1,000 sensors")
    parser.add_argument(
        "--db-dir",
        type=Path,
        help="keep the PostgreSQL cluster in this directory instead of a temp one, and reuse "
        "its data when an earlier run of the same mode completed the load there "
        "(for iterating on the server; remove the directory by hand)",
    )
    parser.add_argument("--runs", type=int, default=1, help="measure this many times")
    args = parser.parse_args()
    mode = MODES["full" if args.full else "small"]

    base = Path(tempfile.mkdtemp(prefix="query-bench-"))
    pg = Postgres(args.db_dir.resolve() if args.db_dir else base / "pg")
    server: subprocess.Popen[bytes] | None = None
    try:
        pg.start()
        print(f"PostgreSQL on {pg.dsn}; loading {mode.readings:,} readings", flush=True)
        load_s = asyncio.run(load(pg.dsn, mode))
        if load_s is None:
            print(f"  {args.db_dir} already holds this data: load skipped", flush=True)
        port = free_port()
        env = dict(
            os.environ,
            SENSORLOG_QUERY_DATABASE_DSN=pg.dsn,
            SENSORLOG_QUERY_GRPC_HOST="127.0.0.1",
            SENSORLOG_QUERY_GRPC_PORT=str(port),
            SENSORLOG_QUERY_METRICS_PORT="0",
            SENSORLOG_QUERY_POOL_MAX_SIZE=str(POOL),
            SENSORLOG_QUERY_LOG_LEVEL="WARNING",
            SENSORLOG_QUERY_SHUTDOWN_GRACE="2",
        )
        server = subprocess.Popen(
            [str(Path(sys.executable).parent / "sensorlog-query-server")],
            env=env,
            stdout=(base / "server.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            grpc.channel_ready_future(ch).result(timeout=max(1, deadline - time.monotonic()))
        print("server up; driving load", flush=True)
        ctx = mp.get_context("spawn")
        runs: list[list[Result]] = []
        for _ in range(args.runs):
            q = ctx.Queue()
            target = f"127.0.0.1:{port}"
            driver = ctx.Process(target=_drive_process, args=(target, pg.dsn, mode, q))
            driver.start()
            runs.append(q.get(timeout=mode.seconds * 4 + 600))
            driver.join(30)
        text = report(mode, load_s, runs)
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(text)
        (OUT.parent / "query.json").write_text(
            json.dumps(
                {
                    "mode": mode.name,
                    "runs": [
                        [
                            {
                                **dataclasses.asdict(r),
                                "per_second": r.per_second,
                                "rows_per_second": r.rows_per_second,
                            }
                            for r in results
                        ]
                        for results in runs
                    ],
                }
            )
        )
        print(text)
    finally:
        if server is not None and server.poll() is None:
            server.terminate()
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()
        if args.db_dir:
            pg.stop()
        else:
            pg.destroy()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
