"""End-to-end benchmark: producer -> Kafka -> writer -> PostgreSQL -> query API.

For each target rate (readings/s) a steady synthetic load runs while a prober
publishes one reading of a sensor of its own every 100 ms and polls
LatestReadings over gRPC until it is visible: produce-to-visible latency.
Each rate is run several times; results go to bench/out/pipeline.json (the
report script turns them into bench/REPORT.md with plots).

    .venv/bin/python bench/pipeline_bench.py            # small: 1k, 5k, 20k/s x 6 s x 3 runs
    .venv/bin/python bench/pipeline_bench.py --full     # 60 s per run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import grpc
from aiokafka import AIOKafkaProducer

from sensorlog.v1 import query_pb2, query_pb2_grpc
from sensorlog_core import db
from sensorlog_core.migrate import migrate
from sensorlog_stack.kafka import Kafka, create_topics
from sensorlog_stack.pipeline import Topics, writer_env
from sensorlog_stack.postgres import Postgres
from sensorlog_stack.services import QueryProcess, WriterProcess

OUT = Path(__file__).resolve().parent / "out"
RATES = (1_000, 5_000, 20_000)
PER_MESSAGE = 10
SENSORS = 500
PROBE_BASE = 10_000_000


async def steady_load(bootstrap: str, topic: str, rate: int, seconds: float) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    sent = 0
    start_ts = int(time.time()) - 3600
    started = time.monotonic()
    try:
        while (elapsed := time.monotonic() - started) < seconds:
            due = int(elapsed * rate)
            batch = []
            while sent < due:
                msg = [
                    {
                        "ts": start_ts + (sent + i) // SENSORS,
                        "sensor_id": (sent + i) % SENSORS,
                        "temperature": 21.0,
                    }
                    for i in range(PER_MESSAGE)
                ]
                batch.append(producer.send(topic, json.dumps(msg).encode()))
                sent += PER_MESSAGE
            if batch:
                await asyncio.gather(*batch)
            await asyncio.sleep(0.01)
    finally:
        await producer.stop()
    return sent


async def prober(bootstrap: str, topic: str, target: str, seconds: float, run: int) -> list[float]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    await producer.start()
    latencies: list[float] = []
    try:
        async with grpc.aio.insecure_channel(target) as ch:
            stub = query_pb2_grpc.QueryServiceStub(ch)
            deadline = time.monotonic() + seconds
            k = 0
            while time.monotonic() < deadline:
                sensor = PROBE_BASE + run * 100_000 + k  # unique across every run
                k += 1
                t0 = time.monotonic()
                await producer.send_and_wait(
                    topic,
                    json.dumps({"ts": int(time.time()), "sensor_id": sensor, "cpu": 1}).encode(),
                )
                while time.monotonic() - t0 < 30:
                    resp = await stub.LatestReadings(
                        query_pb2.LatestReadingsRequest(sensor_ids=[sensor]), timeout=5
                    )
                    if resp.readings:
                        latencies.append(time.monotonic() - t0)
                        break
                    await asyncio.sleep(0.01)
                await asyncio.sleep(max(0.0, 0.1 - (time.monotonic() - t0)))
    finally:
        await producer.stop()
    return latencies


async def one(
    kafka: Kafka, pg: Postgres, rate: int, seconds: float, run: int, logs: Path
) -> dict[str, object]:
    t = Topics(f"e2e-{rate}-{run}-{time.time_ns()}", f"e2e-sensors-{run}", f"e2e-{rate}-{run}")
    await create_topics(kafka.bootstrap, {t.readings: 6, t.sensors: 1})
    writer = WriterProcess(
        logs / f"writer-{rate}-{run}.log",
        writer_env(
            kafka,
            pg.dsn,
            t,
            SENSORLOG_WRITER_LOG_LEVEL="WARNING",
            SENSORLOG_WRITER_BATCH_MAX_WAIT_MS="50",
        ),
    )
    query = QueryProcess(
        logs / f"query-{rate}-{run}.log",
        {"SENSORLOG_QUERY_DATABASE_DSN": pg.dsn, "SENSORLOG_QUERY_LOG_LEVEL": "WARNING"},
    )
    writer.start()
    query.start()
    try:
        sent, lat = await asyncio.gather(
            steady_load(kafka.bootstrap, t.readings, rate, seconds),
            prober(kafka.bootstrap, t.readings, query.target, seconds, run),
        )
    finally:
        writer.stop()
        query.stop()
    return {"rate": rate, "run": run, "sent": sent, "latencies": lat}


async def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--full", action="store_true")
    p.add_argument("--small", action="store_true")
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    seconds = 60.0 if args.full else 6.0
    OUT.mkdir(parents=True, exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="sensorlog-e2e-") as tmp:
        base = Path(tmp)
        pg = Postgres(base / "pg").start()
        kafka = Kafka(base / "kafka", partitions=6).start()
        try:
            conn = await db.connect(pg.dsn)
            await migrate(conn)
            await conn.close()
            for i, rate in enumerate(RATES):
                for run in range(args.runs):
                    r = await one(kafka, pg, rate, seconds, i * args.runs + run, base)
                    r["run"] = run
                    lat = r["latencies"]
                    assert isinstance(lat, list) and lat, "no probe came back"
                    print(
                        f"{rate}/s run {run}: p50 {statistics.median(lat) * 1000:.0f} ms, "
                        f"max {max(lat) * 1000:.0f} ms over {len(lat)} probes",
                        file=sys.stderr,
                    )
                    results.append(r)
        finally:
            kafka.stop()
            pg.destroy()
    (OUT / "pipeline.json").write_text(json.dumps({"seconds": seconds, "results": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
