"""Build bench/REPORT.md and its PNG plots from the JSON the benchmarks wrote.

Inputs (bench/out/): writer.json (bench/writer_bench.py), query.json
(bench/query_bench.py), pipeline.json (bench/pipeline_bench.py), cagg.json
(bench/cagg_bench.py). Speeds are
shown next to their baseline measured in the same run (raw COPY for ingest,
direct SQL for queries). Missing inputs are reported, not invented.
"""

from __future__ import annotations

import json
import os
import statistics
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cagg_bench  # bench/ is sys.path[0] when this runs as a script
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
PLOTS = HERE / "plots"


def _load(name: str) -> Any:
    path = OUT / name
    return json.loads(path.read_text()) if path.exists() else None


def _mmm(values: list[float], fmt: str = "{:,.0f}") -> str:
    return (
        f"{fmt.format(statistics.median(values))} (min {fmt.format(min(values))}, "
        f"max {fmt.format(max(values))})"
    )


def writer_section(w: Any) -> list[str]:
    if w is None:
        return ["## Ingest", "", "_not run: `make bench-writer`_", ""]
    ratios = [r / c for r, c in zip(w["rates"], w["ceilings"], strict=True)]
    series = w["series"]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    t = [s[0] for s in series]
    stored = [s[1] for s in series]
    # Progress moves a whole batch at a time: a rate over ~0.5 s windows reads better.
    k = 5
    rate = [
        (stored[i] - stored[max(0, i - k)]) / max(1e-9, t[i] - t[max(0, i - k)]) if i else 0.0
        for i in range(len(t))
    ]
    ax.plot(t, rate, label="writer readings/s (0.5 s window)")
    ax.axhline(statistics.median(w["ceilings"]), color="gray", ls="--", label="raw COPY ceiling")
    ax.set_xlabel("seconds since writer start")
    ax.set_ylabel("readings/s")
    ax.legend()
    ax.set_title("Ingest rate draining a backlog (last run)")
    fig.tight_layout()
    fig.savefig(PLOTS / "ingest.png", dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.plot(t, [s[2] for s in series])
    ax.axhline(300, color="red", ls="--", label="300 MB target")
    ax.set_xlabel("seconds since writer start")
    ax.set_ylabel("writer RSS (MB)")
    ax.legend()
    ax.set_title("Writer memory while draining the backlog (last run)")
    fig.tight_layout()
    fig.savefig(PLOTS / "memory.png", dpi=100)
    plt.close(fig)
    return [
        "## Ingest (Kafka -> writer -> PostgreSQL 15)",
        "",
        f"{w['readings']:,} readings per run, {w['runs']} runs.",
        "",
        "| measure | median (min, max) | target |",
        "|---|---|---|",
        f"| raw asyncpg COPY ceiling, readings/s | {_mmm(w['ceilings'])} | baseline |",
        f"| writer, readings/s | {_mmm(w['rates'])} | >= 50,000 |",
        f"| writer / ceiling | {_mmm([r * 100 for r in ratios], '{:.0f}%')} | >= 60% |",
        f"| writer peak RSS, MB | {_mmm(w['peak_rss_mb'])} | < 300 |",
        "",
        "![ingest](plots/ingest.png)",
        "",
        "![memory](plots/memory.png)",
        "",
    ]


def pipeline_section(p: Any) -> list[str]:
    if p is None:
        return ["## End to end", "", "_not run: `make bench-pipeline`_", ""]
    by_rate: dict[int, list[list[float]]] = {}
    for r in p["results"]:
        by_rate.setdefault(r["rate"], []).append(r["latencies"])
    lines = [
        "## End to end: produce -> visible through the query API",
        "",
        f"A steady load at each rate for {p['seconds']:g} s per run while a prober publishes a "
        "reading of its own every 100 ms and polls LatestReadings until it is visible.",
        "",
        "| rate (readings/s) | runs | p50 ms median (min, max) | p99 ms median (min, max) |",
        "|---:|---:|---|---|",
    ]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    for rate, runs in sorted(by_rate.items()):
        p50 = [statistics.median(x) * 1000 for x in runs]
        p99 = [sorted(x)[min(len(x) - 1, int(0.99 * len(x)))] * 1000 for x in runs]
        lines.append(f"| {rate:,} | {len(runs)} | {_mmm(p50)} | {_mmm(p99)} |")
        allv = sorted(v * 1000 for x in runs for v in x)
        ax.plot(allv, [i / len(allv) for i in range(len(allv))], label=f"{rate:,}/s")
    ax.set_xlabel("produce -> visible (ms)")
    ax.set_ylabel("fraction of probes")
    ax.set_xscale("log")
    ax.legend()
    ax.set_title("End-to-end latency distribution (all runs)")
    fig.tight_layout()
    fig.savefig(PLOTS / "latency.png", dpi=100)
    plt.close(fig)
    return [*lines, "", "![latency](plots/latency.png)", ""]


def query_section(q: Any) -> list[str]:
    if q is None:
        return ["## Query", "", "_not run: `make bench-query`_", ""]
    runs = q.get("runs") or [q["results"]]
    res = {r["name"]: r for r in runs[-1]}
    lines = [
        f"## Query service vs the same SQL through asyncpg ({q['mode']} mode, {len(runs)} run(s); "
        "the table is the last)",
        "",
        "| call | req/s | p50 ms | p99 ms | rows/s |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in runs[-1]:
        rows = f"{r['rows_per_second']:,.0f}" if r["rows"] else ""
        lines.append(
            f"| {r['name']} | {r['per_second']:,.0f} | {r['p50_ms']:.1f} | "
            f"{r['p99_ms']:.1f} | {rows} |"
        )
    lines.append("")
    for what in ("LatestReadings", "AggregateReadings 1 day"):
        s, d = res.get(f"{what} (service)"), res.get(f"{what} (asyncpg)")
        if s and d:
            lines.append(
                f"- {what}: {s['per_second'] / d['per_second']:.0%} of direct "
                f"throughput, mean latency {s['mean_ms'] / d['mean_ms'] - 1:+.0%}"
            )
    s, d = res.get("StreamReadings 1 day (service)"), res.get("StreamReadings 1 day (asyncpg)")
    if s and d:
        lines.append(
            f"- StreamReadings: {s['rows_per_second'] / d['rows_per_second']:.0%} of direct rows/s"
        )
    for what in ("LatestReadings", "AggregateReadings 1 day"):
        each = []
        for run in runs:
            by = {r["name"]: r for r in run}
            s, d = by.get(f"{what} (service)"), by.get(f"{what} (asyncpg)")
            if s and d:
                each.append(f"{s['mean_ms'] / d['mean_ms'] - 1:+.0%}")
        if len(each) > 1:
            lines.append(f"- {what}, mean latency over direct in each run: {', '.join(each)}")
    lines += [
        "",
        "Targets (issue 4, full mode): LatestReadings >= 1,000 req/s with p99 < 50 ms; "
        "StreamReadings >= 200,000 rows/s; AggregateReadings mean latency < +30% over direct.",
    ]
    names = [n for n in res if "Stream" not in n]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    x = range(len(names))
    ax.bar([i - 0.2 for i in x], [res[n]["p50_ms"] for n in names], 0.4, label="p50")
    ax.bar([i + 0.2 for i in x], [res[n]["p99_ms"] for n in names], 0.4, label="p99")
    ax.set_xticks(list(x), [n.replace(" (", "\n(") for n in names], fontsize=7)
    ax.set_ylabel("ms")
    ax.legend()
    ax.set_title("Query latency percentiles")
    fig.tight_layout()
    fig.savefig(PLOTS / "query.png", dpi=100)
    plt.close(fig)
    return [*lines, "", "![query](plots/query.png)", ""]


def cagg_section(c: Any) -> list[str]:
    if c is None:
        return ["## Continuous aggregates", "", "_not run: `make bench-cagg`_", ""]
    lines = [
        "## AggregateReadings: continuous aggregate vs raw rows (TimescaleDB)",
        "",
        f"{c['readings']:,} readings in TimescaleDB (the PGlite build: one session, calls one "
        "at a time); an hourly view made by the operator's planner; the same requests to a "
        "query server with and without `continuous_aggregates`, taking turns; every answer "
        "pair compared equal.",
        "",
        *cagg_bench.table(c["latencies"]),
    ]
    return [*lines, ""]


def main() -> None:
    PLOTS.mkdir(exist_ok=True)
    lines = [
        "# sensorlog benchmark report",
        "",
        f"Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `make bench` on a machine with "
        f"{os.cpu_count()} cores; Apache Kafka, PostgreSQL 15, the writer, the query service and "
        "the load generators all share them. Each speed is shown next to the baseline measured "
        "in the same run.",
        "",
        *writer_section(_load("writer.json")),
        *pipeline_section(_load("pipeline.json")),
        *query_section(_load("query.json")),
        *cagg_section(_load("cagg.json")),
    ]
    (HERE / "REPORT.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {HERE / 'REPORT.md'}")


if __name__ == "__main__":
    main()
