"""``make dev``: the whole pipeline on this machine, on real parts, until Ctrl-C.

Starts Apache Kafka and TimescaleDB (or PostgreSQL 15 with ``--postgres``) on
127.0.0.1, creates the topics, migrates, starts the writer(s) and the query
service as processes, publishes the seed's sample reading and reads it back
over gRPC, then prints how to use it. Data stays in ``.dev/`` between runs
(``--fresh`` wipes it). Ctrl-C stops everything it started.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from sensorlog_core import db
from sensorlog_core.logs import setup_logging
from sensorlog_core.migrate import migrate
from sensorlog_stack.kafka import Kafka, create_topics
from sensorlog_stack.postgres import Postgres
from sensorlog_stack.proc import ROOT, StackError, port_open
from sensorlog_stack.services import QueryProcess, WriterProcess
from sensorlog_stack.timescale import Timescale

log = logging.getLogger("sensorlog.dev")

READINGS, SENSORS = "logger.sensor.ts", "logger.sensor.instance"
SEED = b'[{"ts": 1646409307, "sensor_id": 1, "temperature": 30, "cpu": 20}]'


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sensorlog-dev",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--postgres",
        action="store_true",
        help="plain PostgreSQL 15 instead of TimescaleDB (the date_bin path)",
    )
    p.add_argument("--data-dir", type=Path, default=ROOT / ".dev", help="where data lives")
    p.add_argument("--fresh", action="store_true", help="wipe the data directory first")
    p.add_argument("--writers", type=int, default=1, help="writer processes in the group")
    p.add_argument("--grpc-port", type=int, default=50051)
    p.add_argument(
        "--exit-after-demo",
        action="store_true",
        help="stop after the sample reading came back (used by tests)",
    )
    return p


async def _prepare(dsn: str, bootstrap: str) -> None:
    conn = await db.connect(dsn)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    await create_topics(
        bootstrap, {READINGS: 6, SENSORS: 2, READINGS + ".dlq": 1, SENSORS + ".dlq": 1}
    )


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", *args]


def run(args: argparse.Namespace) -> int:
    data: Path = args.data_dir
    if args.fresh:
        shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True, exist_ok=True)
    started: list[object] = []
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        log.info("starting Apache Kafka")
        kafka_dir = data / "kafka"
        # The port clients default to, unless taken (or this data dir has its own).
        port = 9092 if not (kafka_dir / "ports").exists() and not port_open(9092) else None
        kafka = Kafka(kafka_dir, port=port, partitions=6).start()
        started.append(kafka)
        database: Postgres | Timescale
        if args.postgres:
            log.info("starting PostgreSQL 15")
            database = Postgres(data / "postgres").start()
        else:
            log.info("starting TimescaleDB (PGlite)")
            database = Timescale(data / "timescale").start()
        started.append(database)
        asyncio.run(_prepare(database.dsn, kafka.bootstrap))
        common = {"LOG_FORMAT": "text"}
        for i in range(args.writers):
            w = WriterProcess(
                data / f"writer-{i}.log",
                {
                    "SENSORLOG_WRITER_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
                    "SENSORLOG_WRITER_DATABASE_DSN": database.dsn,
                    **{f"SENSORLOG_WRITER_{k}": v for k, v in common.items()},
                },
                name=f"writer-{i}",
            )
            started.append(w)
            w.start()
        q = QueryProcess(
            data / "query.log",
            {
                "SENSORLOG_QUERY_DATABASE_DSN": database.dsn,
                "SENSORLOG_QUERY_GRPC_PORT": str(args.grpc_port),
                **{f"SENSORLOG_QUERY_{k}": v for k, v in common.items()},
            },
        )
        started.append(q)
        q.start()
        log.info("publishing the seed's sample reading: %s", SEED.decode())
        subprocess.run(
            _cli("sensorlog_writer.publish", "--bootstrap", kafka.bootstrap, "file", "-"),
            input=SEED + b"\n",
            check=True,
            stdout=subprocess.DEVNULL,
        )
        reading = _wait_for_reading(q.target, timeout=60)
        print("\nThe sample reading came back over gRPC (LatestReadings):")
        print(json.dumps(reading, indent=2))
        print(_usage(kafka.bootstrap, q.target, database.dsn, data))
        if args.exit_after_demo:
            return 0
        while not stopping:
            for s in started:
                if isinstance(s, WriterProcess | QueryProcess) and not s.alive():
                    log.error("%s exited; see %s", s.name, s.log)
                    return 1
            time.sleep(0.5)
        return 0
    except StackError as exc:
        log.error("%s", exc)
        return 1
    finally:
        print("\nstopping everything dev mode started ...", file=sys.stderr)
        for s in reversed(started):
            s.stop()  # type: ignore[attr-defined]


def _wait_for_reading(target: str, timeout: float) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        r = subprocess.run(
            _cli("sensorlog_query.cli", "--target", target, "--json", "latest", "--sensor", "1"),
            capture_output=True,
            text=True,
            check=False,
        )
        last = r.stdout + r.stderr
        if r.returncode == 0:
            doc = json.loads(r.stdout)
            readings = doc.get("readings", doc) if isinstance(doc, dict) else doc
            if readings:
                first = readings[0] if isinstance(readings, list) else readings
                return dict(first)
        time.sleep(0.5)
    raise StackError(f"the sample reading did not come back within {timeout:.0f}s: {last}")


def _usage(bootstrap: str, target: str, dsn: str, data: Path) -> str:
    return f"""
sensorlog is running (Ctrl-C stops everything).
  Kafka          {bootstrap}
  database       {dsn}
  query (gRPC)   {target}   (reflection on: grpcurl -plaintext {target} list)
  logs           {data}/*.log

Send readings:
  .venv/bin/sensorlog-publish --bootstrap {bootstrap} reading --sensor-id 2 --temperature 21.5
  .venv/bin/sensorlog-publish --bootstrap {bootstrap} load --rate 2000 --sensors 50 --duration 30
Query them:
  .venv/bin/sensorlog-query --target {target} latest
  .venv/bin/sensorlog-query --target {target} aggregate --start -1h --end now --bucket 1m
"""


def main() -> None:
    setup_logging("INFO", "text")
    raise SystemExit(run(_parser().parse_args()))


if __name__ == "__main__":
    main()
