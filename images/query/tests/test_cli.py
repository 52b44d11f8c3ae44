"""The ``sensorlog-query`` command against a real server: tables and JSON."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sensorlog_query.cli import parse_duration, table

T0 = datetime(2024, 5, 1, tzinfo=UTC)
CLI = str(Path(sys.executable).parent / "sensorlog-query")


async def run(target: str, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        CLI,
        "--target",
        target,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.integration
async def test_cli_tables_and_json(pg_query: Any) -> None:
    await pg_query.insert_sensors([(7, "thermometer", "rack-1", {"model": "t1"}, T0)])
    await pg_query.insert_readings(
        [(T0, 7, 21.5, 0.25, {"hum": 40}), (T0.replace(minute=30), 7, 22.5, None, None)]
    )
    t = pg_query.target
    rc, out, _ = await run(t, "sensors")
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].split() == ["id", "type", "location", "updated_at", "metadata"]
    assert lines[2].split()[:3] == ["7", "thermometer", "rack-1"]

    rc, out, _ = await run(t, "--json", "sensor", "7")
    assert rc == 0 and json.loads(out)["metadata"] == {"model": "t1"}

    rng = ["--start", "2024-05-01T00:00:00Z", "--end", "2024-05-02T00:00:00Z"]
    rc, out, _ = await run(t, "readings", *rng, "--sensor", "7")
    assert rc == 0
    assert "2024-05-01T00:00:00Z  21.5         0.25  hum=40" in out

    rc, out, _ = await run(t, "--json", "stream", *rng)
    assert rc == 0 and [json.loads(line)["temperature"] for line in out.splitlines()] == [
        21.5,
        22.5,
    ]

    rc, out, _ = await run(
        t,
        "aggregate",
        *rng,
        "--bucket",
        "1h",
        "--field",
        "temperature",
        "--agg",
        "avg",
        "--agg",
        "count",
    )
    assert rc == 0
    assert out.splitlines()[0].split() == [
        "sensor_id",
        "bucket_start",
        "count",
        "avg(temperature)",
        "count(temperature)",
    ]
    assert out.splitlines()[2].split() == ["7", "2024-05-01T00:00:00Z", "2", "22", "2"]

    rc, out, _ = await run(t, "--json", "latest")
    assert rc == 0 and json.loads(out)["readings"][0]["temperature"] == 22.5

    rc, out, err = await run(t, "sensor", "404")
    assert rc == 1 and err.strip() == "error: NOT_FOUND: sensor 404 not found"
    rc, out, err = await run(t, "aggregate", *rng, "--bucket", "1s")
    assert rc == 1 and err.startswith("error: INVALID_ARGUMENT: bucket:")


def test_parse_duration_and_table() -> None:
    assert parse_duration("90s").total_seconds() == 90
    assert parse_duration("1d").total_seconds() == 86400
    assert parse_duration("250ms").total_seconds() == 0.25
    assert table([["1", "abc"]], ["id", "name"]).splitlines() == ["id  name", "--  ----", "1   abc"]
