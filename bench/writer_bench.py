"""Writer benchmark: Kafka -> writer -> PostgreSQL 15 vs the raw COPY ceiling, same run.

    .venv/bin/python bench/writer_bench.py            # small: 1M-reading backlog x 3 runs
    .venv/bin/python bench/writer_bench.py --full     # 5M-reading backlog x 3 runs

Everything is co-located on this machine (Kafka, PostgreSQL, writer). Each run
uses a fresh table. Reported: readings/s of the writer (backlog drained from
Kafka into the table), the raw asyncpg COPY rate into the same table shape, the
ratio, and the writer's peak RSS while it drains the whole backlog.
Writes bench/out/writer.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from sensorlog_core import db
from sensorlog_core.migrate import migrate
from sensorlog_stack.kafka import Kafka, create_topics
from sensorlog_stack.pipeline import START_TS, Topics, produce, writer_env
from sensorlog_stack.postgres import Postgres
from sensorlog_stack.services import WriterProcess
from sensorlog_writer.publish import synthetic_readings

OUT = Path(__file__).resolve().parent / "out"
SENSORS = 1000
PER_MESSAGE = 10
BATCH = 10_000


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


async def fresh_db(pg: Postgres, name: str) -> str:
    admin = await asyncpg.connect(pg.dsn)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    dsn = pg.dsn.rsplit("/", 1)[0] + "/" + name
    conn = await db.connect(dsn)
    await migrate(conn)
    await conn.close()
    return dsn


async def copy_ceiling(pg: Postgres, n: int, run: int) -> float:
    """Raw copy_records_to_table into a fresh sensor_data, batches of BATCH rows."""
    dsn = await fresh_db(pg, f"ceiling{run}")
    base = datetime.fromtimestamp(START_TS, UTC)
    rows = [
        (
            base + timedelta(seconds=k // SENSORS),
            k % SENSORS,
            20.0 + (k % 97) * 0.1,
            float(k % 100),
            None,
        )
        for k in range(n)
    ]
    conn = await db.connect(dsn)
    started = time.perf_counter()
    for i in range(0, n, BATCH):
        async with conn.transaction():
            await conn.copy_records_to_table(
                "sensor_data",
                records=rows[i : i + BATCH],
                columns=("ts", "sensor_id", "temperature", "cpu", "extra"),
            )
    elapsed = time.perf_counter() - started
    await conn.close()
    return n / elapsed


async def writer_run(
    kafka: Kafka, pg: Postgres, n: int, run: int, log_dir: Path
) -> dict[str, object]:
    dsn = await fresh_db(pg, f"writer{run}")
    t = Topics(f"bench-readings-{run}-{time.time_ns()}", f"bench-sensors-{run}", f"bench-{run}")
    await create_topics(kafka.bootstrap, {t.readings: 6, t.sensors: 1})
    msgs = [
        json.dumps(m, separators=(",", ":")).encode()
        for m in synthetic_readings(n, SENSORS, START_TS, PER_MESSAGE)
    ]
    await produce(kafka.bootstrap, t.readings, msgs)  # the whole backlog is waiting
    del msgs
    w = WriterProcess(
        log_dir / f"writer-{run}.log",
        writer_env(kafka, dsn, t, SENSORLOG_WRITER_LOG_LEVEL="WARNING"),
    )
    conn = await asyncpg.connect(dsn)
    w.start()
    assert w.proc is not None
    pid = w.proc.pid
    samples: list[tuple[float, int, float]] = []
    peak = 0.0
    first: tuple[float, int] | None = None
    deadline = time.monotonic() + 600
    stored = 0
    while time.monotonic() < deadline:
        # Offsets saved with each batch: exact progress without scanning the table.
        msgs_done = await conn.fetchval(
            "SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets WHERE topic = $1",
            t.readings,
        )
        stored = int(msgs_done) * PER_MESSAGE
        now = time.monotonic()
        mem = rss_mb(pid)
        peak = max(peak, mem)
        samples.append((now, stored, mem))
        if stored and first is None:
            first = (now, stored)
        if stored >= n:
            break
        await asyncio.sleep(0.1)
    total = await conn.fetchval("SELECT count(*) FROM sensor_data")
    await conn.close()
    w.terminate()
    assert total == n, f"writer stored {total} of {n}"
    assert first is not None
    rate = (n - first[1]) / max(1e-9, samples[-1][0] - first[0])
    t0 = samples[0][0]
    return {
        "rate": rate,
        "peak_rss_mb": peak,
        "series": [(round(s[0] - t0, 2), s[1], round(s[2], 1)) for s in samples],
    }


def fmt(values: list[float], unit: str = "") -> str:
    return (
        f"{statistics.median(values):,.0f}{unit} (min {min(values):,.0f}, max {max(values):,.0f})"
    )


async def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--full", action="store_true", help="5M readings per run")
    p.add_argument("--small", action="store_true", help="1M readings per run (default)")
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    n = 5_000_000 if args.full else 1_000_000
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sensorlog-bench-") as tmp:
        base = Path(tmp)
        pg = Postgres(base / "pg").start()
        kafka = Kafka(base / "kafka", partitions=6).start()
        try:
            ceilings, rates, peaks = [], [], []
            series: list[tuple[float, int, float]] = []
            for run in range(args.runs):
                ceilings.append(await copy_ceiling(pg, n, run))
                r = await writer_run(kafka, pg, n, run, base)
                rates.append(float(r["rate"]))  # type: ignore[arg-type]
                peaks.append(float(r["peak_rss_mb"]))  # type: ignore[arg-type]
                series = r["series"]  # type: ignore[assignment]
                print(
                    f"run {run}: ceiling {ceilings[-1]:,.0f}/s writer {rates[-1]:,.0f}/s "
                    f"peak RSS {peaks[-1]:.0f} MB",
                    file=sys.stderr,
                )
        finally:
            kafka.stop()
            pg.destroy()
    ratios = [r / c for r, c in zip(rates, ceilings, strict=True)]
    ok_ratio = statistics.median(ratios) >= 0.60
    ok_rate = statistics.median(rates) >= 50_000
    ok_rss = max(peaks) < 300
    lines = [
        "# Writer benchmark",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {n:,} readings per run ({PER_MESSAGE} per "
        f"Kafka message, {SENSORS} sensors, 6 partitions), {args.runs} runs, everything on this "
        "machine (2 cores): Apache Kafka, PostgreSQL 15, one writer process.",
        "",
        "| measure | median (min, max) | target | met |",
        "|---|---|---|---|",
        f"| raw asyncpg COPY into sensor_data (ceiling) | {fmt(ceilings, '/s')} | | |",
        f"| writer, Kafka backlog -> table | {fmt(rates, '/s')} | >= 50,000/s | "
        f"{'yes' if ok_rate else 'NO'} |",
        f"| writer / ceiling | {statistics.median(ratios):.0%} (min {min(ratios):.0%}, max "
        f"{max(ratios):.0%}) | >= 60% | {'yes' if ok_ratio else 'NO'} |",
        f"| writer peak RSS draining the backlog | {fmt(peaks, ' MB')} | < 300 MB | "
        f"{'yes' if ok_rss else 'NO'} |",
        "",
        "Ingest progress of the last run (seconds since writer start, readings stored, RSS MB):",
        "",
        "```",
        *[f"{t:7.2f} {s:>10,} {m:7.1f}" for t, s, m in series[:: max(1, len(series) // 30)]],
        "```",
    ]
    (OUT / "writer.md").write_text("\n".join(lines) + "\n")
    (OUT / "writer.json").write_text(
        json.dumps(
            {
                "readings": n,
                "runs": args.runs,
                "ceilings": ceilings,
                "rates": rates,
                "peak_rss_mb": peaks,
                "series": series,
            }
        )
    )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
