"""Continuous aggregates the operator creates, read back as the query service reads them.

Real TimescaleDB, the session's migrated ``sensor_data``; the operator's own
observe -> plan -> apply, without the Kubernetes side (test_operator.py has it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from sensorlog_core import caggs
from sensorlog_operator import constants as c
from sensorlog_operator import reconcile, timescale
from sensorlog_operator.spec import HypertableSpec, parse_spec

pytestmark = pytest.mark.integration

OWNER = "tests/caggs"
HOURLY = "opcagg_hourly"
DAILY = "opcagg_daily_all_sensors"
HOUR = timedelta(hours=1)


def hypertable(*aggregates: dict[str, Any]) -> HypertableSpec:
    return parse_spec(
        {
            "table": "sensor_data",
            "timeColumn": "ts",
            "dsnSecretRef": {"name": "db"},
            "continuousAggregates": list(aggregates),
        }
    )


SPEC = hypertable(
    {
        "name": HOURLY,
        "bucket": "1h",
        "groupBy": ["sensor_id"],
        "aggregations": [
            {"column": "temperature", "functions": ["avg", "first", "last", "max"]},
            {"column": "cpu", "functions": ["min"]},
        ],
    },
    {
        "name": DAILY,
        "bucket": "1d",
        "aggregations": [{"column": "temperature", "functions": ["avg"]}],
    },
)


async def converge(conn: asyncpg.Connection, spec: HypertableSpec) -> None:
    # Only the aggregates: sensor_data is shared by the session's other tests,
    # whose retention or compression settings this spec must not undo.
    observed = await timescale.observe(conn, spec)
    actions = reconcile.plan(spec, observed, OWNER)
    await timescale.apply(conn, [a for a in actions if a.policy.startswith(c.CAGG_PREFIX)])
    again = reconcile.plan(spec, await timescale.observe(conn, spec), OWNER)
    assert [a for a in again if a.policy.startswith(c.CAGG_PREFIX)] == []


@pytest.fixture
async def conn(ts_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(ts_dsn)
    try:
        await converge(conn, SPEC)
        yield conn
    finally:
        # Other tests read sensor_data through DISCOVER too: leave no view behind.
        for name in (HOURLY, DAILY):
            await conn.execute(f"DROP MATERIALIZED VIEW IF EXISTS {name}")
        await conn.close()


async def discover(conn: asyncpg.Connection) -> tuple[dict[str, caggs.View], list[str]]:
    usable, skipped = caggs.views(await conn.fetch(caggs.DISCOVER))
    return {v.name: v for v in usable}, skipped


async def test_the_query_service_finds_the_view_grouped_by_sensor(
    conn: asyncpg.Connection,
) -> None:
    usable, skipped = await discover(conn)
    view = usable[HOURLY]
    assert (view.schema, view.width_us) == ("public", 3_600_000_000)
    assert (view.bucket_column, view.sensor_column, view.rows_column) == (
        "bucket",
        "sensor_id",
        "readings",
    )
    assert view.columns == {
        ("avg", "temperature"): "avg_temperature",
        ("count", "temperature"): "count_temperature",  # added: avg needs it over buckets
        ("first", "temperature"): "first_temperature",
        ("last", "temperature"): "last_temperature",
        ("max", "temperature"): "max_temperature",
        ("min", "cpu"): "min_cpu",
    }
    assert DAILY not in usable
    assert f"public.{DAILY}: grouped by nothing, not by sensor_id alone" in skipped


async def test_first_and_last_are_the_first_and_last_non_null_readings(
    conn: asyncpg.Connection,
) -> None:
    hour = datetime(2024, 3, 1, 10, tzinfo=UTC)
    rows = [
        (hour, 1, None),  # the earliest reading has no temperature
        (hour + timedelta(minutes=10), 1, 21.5),
        (hour + timedelta(minutes=20), 1, 23.5),
        (hour + timedelta(minutes=30), 1, None),  # nor has the latest
        (hour + timedelta(minutes=5), 2, 7.0),
    ]
    await conn.executemany(
        "INSERT INTO sensor_data (ts, sensor_id, temperature) VALUES ($1, $2, $3)", rows
    )
    await conn.execute(
        f"CALL refresh_continuous_aggregate('{HOURLY}', $1::timestamptz, $2::timestamptz)",
        hour - HOUR,
        hour + 2 * HOUR,
    )
    got = await conn.fetch(
        f"SELECT sensor_id, readings, count_temperature, avg_temperature, "
        f"first_temperature, last_temperature FROM {HOURLY} WHERE bucket = $1 ORDER BY sensor_id",
        hour,
    )
    assert [tuple(r) for r in got] == [(1, 4, 2, 22.5, 21.5, 23.5), (2, 1, 1, 7.0, 7.0, 7.0)]

    # The refreshed hour is one the query service would read from the view.
    usable, _ = await discover(conn)
    us = int(hour.timestamp() * 1_000_000)
    hour_us = int(HOUR.total_seconds() * 1_000_000)
    chosen = caggs.plan(
        [usable[HOURLY]],
        us,
        us + hour_us,
        hour_us,
        [("avg", "temperature"), ("first", "temperature")],
    )
    assert chosen is not None
    assert (chosen.view.name, chosen.lo_us, chosen.hi_us) == (HOURLY, us, us + hour_us)
