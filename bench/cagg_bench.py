"""AggregateReadings on TimescaleDB with and without the operator's continuous aggregate.

    .venv/bin/python bench/cagg_bench.py            # ~2 minutes
    .venv/bin/python bench/cagg_bench.py --readings 2000000

Starts TimescaleDB (the PGlite build: one backend session, so calls run one at
a time), loads readings, lets the operator's own planner create an hourly
continuous aggregate (sensorlog_operator.reconcile, the SQL a Hypertable
resource gets) and refreshes it. Two query servers run as processes on it,
one with SENSORLOG_QUERY_CONTINUOUS_AGGREGATES=false. The same requests go to
both in turn; every answer pair is compared (the run fails on a difference)
and the report gives p50 latency per request shape and the speedup.
Writes bench/out/cagg.md and cagg.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.json_format import MessageToDict
from google.protobuf.timestamp_pb2 import Timestamp

from sensorlog.v1 import query_pb2 as pb
from sensorlog.v1 import query_pb2_grpc as pb_grpc
from sensorlog_core import db
from sensorlog_core.migrate import migrate
from sensorlog_operator import timescale as operator_db
from sensorlog_operator.reconcile import plan
from sensorlog_operator.spec import parse_spec
from sensorlog_stack.proc import free_port
from sensorlog_stack.timescale import Timescale

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
T0 = datetime(2024, 5, 1, tzinfo=UTC)
DAYS = 7
SENSORS = 100
CALLS = 40  # per request shape and server
AGGS = [pb.AGGREGATION_AVG, pb.AGGREGATION_MIN, pb.AGGREGATION_MAX, pb.AGGREGATION_COUNT]
FIELDS = [pb.FIELD_TEMPERATURE, pb.FIELD_CPU]
SPEC = {
    "table": "sensor_data",
    "timeColumn": "ts",
    "dsnSecretRef": {"name": "unused"},
    "continuousAggregates": [
        {
            "name": "sensor_data_hourly",
            "bucket": "1h",
            "groupBy": ["sensor_id"],
            "aggregations": [
                {"column": "temperature", "functions": ["avg", "min", "max", "count"]},
                {"column": "cpu", "functions": ["avg", "min", "max", "count"]},
            ],
        }
    ],
}


def _ts(dt: datetime) -> Timestamp:
    t = Timestamp()
    t.FromDatetime(dt)
    return t


async def load(dsn: str, readings: int) -> float:
    started = time.perf_counter()
    conn = await db.connect(dsn)
    try:
        await migrate(conn)
        step = timedelta(days=DAYS) / (readings // SENSORS)
        rnd = random.Random(1)
        for sensor in range(1, SENSORS + 1):
            rows = [
                (T0 + i * step, sensor, rnd.uniform(-10, 40), rnd.random(), None)
                for i in range(readings // SENSORS)
            ]
            await conn.copy_records_to_table(
                "sensor_data",
                records=rows,
                columns=["ts", "sensor_id", "temperature", "cpu", "extra"],
            )
        spec = parse_spec(SPEC)
        observed = await operator_db.observe(conn, spec)
        actions = [a for a in plan(spec, observed, "bench/cagg") if a.policy.startswith("cagg/")]
        await operator_db.apply(conn, actions)
        window = f"'{T0.isoformat()}', '{(T0 + timedelta(days=DAYS)).isoformat()}'"
        await conn.execute(f"CALL refresh_continuous_aggregate('sensor_data_hourly', {window})")
    finally:
        await conn.close()
    return time.perf_counter() - started


def shapes(rnd: random.Random) -> dict[str, pb.AggregateReadingsRequest]:
    day = T0 + timedelta(days=rnd.randrange(DAYS - 1), minutes=rnd.randrange(60))
    ids = rnd.sample(range(1, SENSORS + 1), 10)
    common = {"fields": FIELDS, "aggregations": AGGS}
    return {
        "1 day, 1 h buckets, 10 sensors": pb.AggregateReadingsRequest(
            sensor_ids=ids,
            start=_ts(day),
            end=_ts(day + timedelta(days=1)),
            bucket=Duration(seconds=3600),
            **common,
        ),
        "6 days, 1 d buckets, all sensors": pb.AggregateReadingsRequest(
            start=_ts(T0 + timedelta(minutes=rnd.randrange(60))),
            end=_ts(T0 + timedelta(days=6)),
            bucket=Duration(seconds=86400),
            **common,
        ),
    }


def same(a: pb.AggregateReadingsResponse, b: pb.AggregateReadingsResponse) -> bool:
    da, db_ = MessageToDict(a), MessageToDict(b)
    if len(da.get("buckets", [])) != len(db_.get("buckets", [])):
        return False
    for x, y in zip(da.get("buckets", []), db_.get("buckets", []), strict=True):
        xv, yv = x.pop("values"), y.pop("values")
        if x != y:
            return False
        for u, w in zip(xv, yv, strict=True):
            if ("value" in u) != ("value" in w):
                return False
            if "value" in u and abs(u["value"] - w["value"]) > 1e-9 * max(1, abs(w["value"])):
                return False
    return True


async def drive(view_target: str, raw_target: str) -> dict[str, dict[str, list[float]]]:
    lat: dict[str, dict[str, list[float]]] = {}
    async with (
        grpc.aio.insecure_channel(view_target) as vc,
        grpc.aio.insecure_channel(raw_target) as rc,
    ):
        stubs = {
            "view": pb_grpc.QueryServiceStub(vc),  # type: ignore[no-untyped-call]
            "raw": pb_grpc.QueryServiceStub(rc),  # type: ignore[no-untyped-call]
        }
        rnd = random.Random(7)
        for n in range(CALLS + 2):
            for name, req in shapes(rnd).items():
                answers = {}
                order = ["view", "raw"] if n % 2 else ["raw", "view"]
                for side in order:
                    t = time.perf_counter()
                    answers[side] = await stubs[side].AggregateReadings(req, timeout=120)
                    if n >= 2:  # the first two rounds warm caches and prepared statements
                        lat.setdefault(name, {}).setdefault(side, []).append(
                            time.perf_counter() - t
                        )
                if not same(answers["view"], answers["raw"]):
                    raise SystemExit(f"different answers for {name}: {req}")
    return lat


def report(readings: int, load_s: float, lat: dict[str, dict[str, list[float]]]) -> str:
    lines = [
        "# AggregateReadings from a continuous aggregate (TimescaleDB)",
        "",
        f"{readings:,} readings over {SENSORS} sensors and {DAYS} days in TimescaleDB (the PGlite "
        f"build, one session; loaded, view created by the operator's planner and refreshed in "
        f"{load_s:.0f}s). {CALLS} calls per shape and server, taking turns; every answer "
        "pair was compared and equal.",
        "",
        *table(lat),
    ]
    return "\n".join(lines) + "\n"


def table(lat: dict[str, dict[str, list[float]]]) -> list[str]:
    """p50 per request shape on each side, and the speedup (also used by report.py)."""
    lines = [
        "| request | p50 ms raw rows | p50 ms continuous aggregate | speedup |",
        "|---|---:|---:|---:|",
    ]
    for name, sides in lat.items():
        raw, view = statistics.median(sides["raw"]), statistics.median(sides["view"])
        lines.append(f"| {name} | {raw * 1000:.1f} | {view * 1000:.1f} | {raw / view:.1f}x |")
    return lines


def _server(dsn: str, port: int, base: Path, caggs: bool) -> subprocess.Popen[bytes]:
    env = dict(
        os.environ,
        SENSORLOG_QUERY_DATABASE_DSN=dsn,
        SENSORLOG_QUERY_GRPC_HOST="127.0.0.1",
        SENSORLOG_QUERY_GRPC_PORT=str(port),
        SENSORLOG_QUERY_METRICS_PORT="0",
        SENSORLOG_QUERY_POOL_MAX_SIZE="2",
        SENSORLOG_QUERY_LOG_LEVEL="WARNING",
        SENSORLOG_QUERY_SHUTDOWN_GRACE="1",
        SENSORLOG_QUERY_STATEMENT_TIMEOUT="120",
        SENSORLOG_QUERY_CONTINUOUS_AGGREGATES=str(caggs).lower(),
    )
    log = (base / f"server-{port}.log").open("wb")
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "sensorlog-query-server")],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readings", type=int, default=500_000)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="cagg-bench-"))
    ts = Timescale(base / "ts")
    servers: list[subprocess.Popen[bytes]] = []
    try:
        ts.start()
        print(f"TimescaleDB on {ts.dsn}; loading {args.readings:,} readings", flush=True)
        load_s = asyncio.run(load(ts.dsn, args.readings))
        ports = {"view": free_port(), "raw": free_port()}
        servers = [
            _server(ts.dsn, ports["view"], base, True),
            _server(ts.dsn, ports["raw"], base, False),
        ]
        for port in ports.values():
            with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
                grpc.channel_ready_future(ch).result(timeout=30)
        print("servers up; driving", flush=True)
        lat = asyncio.run(drive(f"127.0.0.1:{ports['view']}", f"127.0.0.1:{ports['raw']}"))
        text = report(args.readings, load_s, lat)
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / "cagg.md").write_text(text)
        (OUT / "cagg.json").write_text(
            json.dumps({"readings": args.readings, "load_s": load_s, "latencies": lat})
        )
        print(text)
    finally:
        for s in servers:
            s.terminate()
            try:
                s.wait(15)
            except subprocess.TimeoutExpired:
                s.kill()
        ts.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
