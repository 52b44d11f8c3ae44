"""AggregateReadings from a TimescaleDB continuous aggregate: the same answers as from raw rows.

Each test loads the same readings into TimescaleDB and into PostgreSQL 15 (which
has no continuous aggregates), makes a tagged hourly view on TimescaleDB the way
the operator does (sensorlog_core.caggs), and compares the two servers' answers.
Tampering with the view's stored rows proves which source a statement read.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client import REGISTRY

from sensorlog.v1 import query_pb2 as pb
from sensorlog_core import caggs

pytestmark = pytest.mark.integration

T0 = datetime(2024, 5, 1, tzinfo=UTC)
END = T0 + timedelta(days=2)
VIEW = "readings_hourly_test"
FUNCTIONS = ("avg", "min", "max", "count", "first", "last")
ALL_AGGS = [
    pb.AGGREGATION_AVG,
    pb.AGGREGATION_MIN,
    pb.AGGREGATION_MAX,
    pb.AGGREGATION_COUNT,
    pb.AGGREGATION_FIRST,
    pb.AGGREGATION_LAST,
]
BOTH = [pb.FIELD_TEMPERATURE, pb.FIELD_CPU]


def _rows() -> list[tuple[datetime, int, float | None, float | None, None]]:
    rnd = random.Random(4)
    rows = []
    for sensor in (1, 2, 3):
        t = T0 + timedelta(seconds=rnd.randrange(600))
        while t < END:
            temp = None if rnd.random() < 0.2 else round(rnd.uniform(-10, 40), 3)
            cpu = None if rnd.random() < 0.3 else rnd.random()
            rows.append((t, sensor, temp, cpu, None))
            t += timedelta(seconds=rnd.randrange(60, 900), microseconds=rnd.randrange(10**6))
    return rows


ROWS = _rows()


def view_sql(name: str, bucket: str, origin: str = "") -> tuple[str, list[str]]:
    """CREATE MATERIALIZED VIEW and its column tags, as the operator makes them."""
    cols = [
        (f"time_bucket(INTERVAL '{bucket}', ts{origin}) AS bucket", "bucket", caggs.tag("bucket")),
        ("sensor_id", "sensor_id", caggs.tag("group", "sensor_id")),
        ("count(*) AS readings", "readings", caggs.tag("count", "*")),
    ]
    for field in ("temperature", "cpu"):
        for fn in FUNCTIONS:
            expr = caggs.expression(fn, field, "ts")
            cols.append((f"{expr} AS {fn}_{field}", f"{fn}_{field}", caggs.tag(fn, field)))
    create = (
        f"CREATE MATERIALIZED VIEW {name} WITH (timescaledb.continuous) AS SELECT "
        + ", ".join(c for c, _, _ in cols)
        + " FROM sensor_data GROUP BY bucket, sensor_id WITH NO DATA"
    )
    tags = [f"COMMENT ON COLUMN {name}.{col} IS '{tag}'" for _, col, tag in cols]
    return create, tags


def ts(dt: datetime) -> Timestamp:
    t = Timestamp()
    t.FromDatetime(dt)
    return t


def dur(**kw: float) -> Duration:
    d = Duration()
    d.FromTimedelta(timedelta(**kw))
    return d


def answer(resp: pb.AggregateReadingsResponse) -> list[tuple[Any, ...]]:
    return [
        (
            b.sensor_id,
            b.bucket_start.ToDatetime(tzinfo=UTC),
            b.count,
            [(v.field, v.aggregation, v.value if v.HasField("value") else None) for v in b.values],
        )
        for b in resp.buckets
    ]


def assert_same(got: list[tuple[Any, ...]], want: list[tuple[Any, ...]]) -> None:
    assert [b[:3] for b in got] == [b[:3] for b in want]
    for g, w in zip(got, want, strict=True):
        for (gf, ga, gv), (wf, wa, wv) in zip(g[3], w[3], strict=True):
            assert (gf, ga) == (wf, wa)
            # An average over several stored buckets is weighted by their counts:
            # equal to the last bits, not bit for bit.
            assert gv == (None if wv is None else pytest.approx(wv, rel=1e-12)), (g[:2], gf, ga)


def plans(source: str) -> float:
    value = REGISTRY.get_sample_value("sensorlog_query_aggregate_plans_total", {"source": source})
    return value or 0.0


class Pair:
    def __init__(self, ts_server: Any, pg_server: Any, dsn: str) -> None:
        self.ts, self.pg, self.dsn = ts_server, pg_server, dsn

    async def execute(self, *statements: str) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            for s in statements:
                await conn.execute(s)
        finally:
            await conn.close()

    async def refresh(self, start: datetime, end: datetime, name: str = VIEW) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            window = f"'{start.isoformat()}', '{end.isoformat()}'"
            await conn.execute(f"CALL refresh_continuous_aggregate('{name}', {window})")
        finally:
            await conn.close()

    async def compare(self, req: pb.AggregateReadingsRequest) -> list[tuple[Any, ...]]:
        got = answer(await self.ts.stub.AggregateReadings(req))
        want = answer(await self.pg.stub.AggregateReadings(req))
        assert_same(got, want)
        return got


@pytest.fixture
async def pair(timescale_clean: Any, pg_dsn: str, start_server: Any) -> AsyncIterator[Pair]:
    # A tiny refresh: every call reads the catalog, so each step sees the view's state.
    ts_server = await start_server(timescale_clean.dsn, continuous_aggregates_refresh=1e-6)
    pg_server = await start_server(pg_dsn)
    await ts_server.insert_readings(ROWS)
    await pg_server.insert_readings(ROWS)
    p = Pair(ts_server, pg_server, timescale_clean.dsn)
    create, tags = view_sql(VIEW, "1 hour")
    await p.execute(create, *tags)
    try:
        yield p
    finally:
        await p.execute(f"DROP MATERIALIZED VIEW IF EXISTS {VIEW}")


async def test_answers_from_the_view_equal_raw_answers(pair: Pair) -> None:
    await pair.refresh(T0, END)
    before = plans("continuous_aggregate")
    ranges = [
        (T0, END),
        # Unaligned edges: partial buckets come from raw rows on both sides.
        (T0 + timedelta(minutes=20), END - timedelta(hours=10, minutes=10)),
        (T0 + timedelta(hours=5, minutes=59), T0 + timedelta(hours=7, seconds=1)),
    ]
    for start, end in ranges:
        for bucket in (dur(hours=1), dur(hours=3), dur(days=1), dur(minutes=90)):
            for ids, fill in (([], False), ([3, 1], True)):
                await pair.compare(
                    pb.AggregateReadingsRequest(
                        sensor_ids=ids,
                        start=ts(start),
                        end=ts(end),
                        bucket=bucket,
                        fields=BOTH,
                        aggregations=ALL_AGGS,
                        fill_gaps=fill,
                    )
                )
    # 90 minutes is no multiple of the view's hour: those 6 calls ran on raw
    # rows, the other 18 on the view (each range holds a whole hour).
    assert plans("continuous_aggregate") - before == 18


async def test_the_view_is_what_is_read(pair: Pair) -> None:
    await pair.refresh(T0, END)
    req = pb.AggregateReadingsRequest(
        sensor_ids=[1], start=ts(T0), end=ts(T0 + timedelta(hours=2)), bucket=dur(hours=1)
    )
    honest = await pair.compare(req)
    conn = await asyncpg.connect(pair.dsn)
    try:
        mat = await conn.fetchval(
            "SELECT format('%I.%I', h.schema_name, h.table_name)"
            " FROM _timescaledb_catalog.continuous_agg ca"
            " JOIN _timescaledb_catalog.hypertable h ON h.id = ca.mat_hypertable_id"
            " WHERE ca.user_view_name = $1",
            VIEW,
        )
        await conn.execute(f"UPDATE {mat} SET readings = readings + 1000 WHERE sensor_id = 1")
    finally:
        await conn.close()
    tampered = answer(await pair.ts.stub.AggregateReadings(req))
    assert [b[2] for b in tampered] == [b[2] + 1000 for b in honest]


async def test_late_readings_count_before_the_view_is_refreshed(
    pair: Pair, start_server: Any
) -> None:
    await pair.refresh(T0, END)
    req = pb.AggregateReadingsRequest(
        start=ts(T0), end=ts(END), bucket=dur(days=1), fields=BOTH, aggregations=ALL_AGGS
    )
    # This server read the catalog before the late reading and keeps that answer.
    pair.ts = await start_server(pair.dsn, continuous_aggregates_refresh=3600)
    await pair.compare(req)
    late = (T0 + timedelta(hours=30, microseconds=3), 2, 99.5, 0.5, None)
    await pair.ts.insert_readings([late])
    await pair.pg.insert_readings([late])
    # The statement itself sees the invalidation the insert logged, and reads raw rows.
    got = await pair.compare(req)
    assert any(v[2] == 99.5 for b in got if b[0] == 2 for v in b[3])
    await pair.refresh(T0, END)
    await pair.compare(req)


async def test_only_materialised_buckets_are_read(pair: Pair) -> None:
    # Nothing materialised yet, then only the first day: the rest is raw rows.
    req = pb.AggregateReadingsRequest(
        start=ts(T0), end=ts(END), bucket=dur(hours=6), fields=BOTH, aggregations=ALL_AGGS
    )
    before = plans("continuous_aggregate")
    await pair.compare(req)
    assert plans("continuous_aggregate") == before
    await pair.refresh(T0, T0 + timedelta(days=1))
    await pair.compare(req)
    assert plans("continuous_aggregate") == before + 1


async def test_a_view_dropped_after_discovery_is_not_needed(pair: Pair, start_server: Any) -> None:
    await pair.refresh(T0, END)
    # A catalog read once an hour still lists the view after it is dropped.
    slow = await start_server(pair.dsn, continuous_aggregates_refresh=3600)
    req = pb.AggregateReadingsRequest(start=ts(T0), end=ts(END), bucket=dur(hours=2))
    first = answer(await slow.stub.AggregateReadings(req))
    await pair.execute(f"DROP MATERIALIZED VIEW {VIEW}")
    assert_same(answer(await slow.stub.AggregateReadings(req)), first)
    assert_same(first, answer(await pair.pg.stub.AggregateReadings(req)))


async def test_switched_off_reads_raw_rows(pair: Pair, start_server: Any) -> None:
    await pair.refresh(T0, END)
    off = await start_server(pair.dsn, continuous_aggregates=False)
    req = pb.AggregateReadingsRequest(start=ts(T0), end=ts(END), bucket=dur(hours=1))
    before = plans("continuous_aggregate")
    assert_same(
        answer(await off.stub.AggregateReadings(req)),
        answer(await pair.pg.stub.AggregateReadings(req)),
    )
    assert plans("continuous_aggregate") == before


async def test_weekly_view_on_the_epoch_grid(pair: Pair) -> None:
    create, tags = view_sql("weekly_test", "7 days", ", origin => '1970-01-01 00:00:00+00'")
    await pair.execute(create, *tags)
    try:
        await pair.refresh(T0 - timedelta(days=14), T0 + timedelta(days=14), "weekly_test")
        before = plans("continuous_aggregate")
        req = pb.AggregateReadingsRequest(
            start=ts(T0 - timedelta(days=14)),
            end=ts(T0 + timedelta(days=14)),
            bucket=dur(days=7),
            fields=BOTH,
            aggregations=ALL_AGGS,
        )
        got = await pair.compare(req)
        # Thursdays, like 1970-01-01.
        assert [b[1].weekday() for b in got] == [3] * len(got) and got
        assert plans("continuous_aggregate") == before + 1
    finally:
        await pair.execute("DROP MATERIALIZED VIEW IF EXISTS weekly_test")


async def test_random_requests_over_a_partly_fresh_view(pair: Pair) -> None:
    # Materialised except the last hours, with late rows pending in between:
    # plans cut around both, and every answer must still equal PostgreSQL's.
    await pair.refresh(T0, END - timedelta(hours=5))
    late = [
        (T0 + timedelta(hours=9, minutes=1), 1, 55.0, None, None),
        (T0 + timedelta(hours=31, seconds=7), 3, None, 0.75, None),
    ]
    await pair.ts.insert_readings(late)
    await pair.pg.insert_readings(late)
    rnd = random.Random(11)
    minutes = (30, 60, 90, 120, 180, 360, 720, 1440)
    used = plans("continuous_aggregate")
    for _ in range(60):
        start = T0 + timedelta(minutes=rnd.randrange(-120, 2 * 1440), seconds=rnd.randrange(60))
        await pair.compare(
            pb.AggregateReadingsRequest(
                sensor_ids=rnd.sample([1, 2, 3, 4], rnd.randrange(0, 4)),
                start=ts(start),
                end=ts(start + timedelta(minutes=rnd.randrange(1, 3 * 1440))),
                bucket=dur(minutes=rnd.choice(minutes)),
                fields=rnd.sample(BOTH, rnd.randrange(1, 3)),
                aggregations=rnd.sample(ALL_AGGS, rnd.randrange(1, 7)),
                fill_gaps=rnd.random() < 0.3,
            )
        )
    # Most of them did read the view.
    assert plans("continuous_aggregate") - used > 30
