"""Every method on PostgreSQL 15 and TimescaleDB: the same data gives the same answers.

The expected values are literal, and the ``query`` fixture runs each test
once per database flavor, so passing on both means equal answers on both.
Values are dyadic fractions, so sums are exact whatever order a database
adds them in.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from sensorlog.v1 import query_pb2 as pb

pytestmark = pytest.mark.integration

T0 = datetime(2024, 5, 1, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def ts(dt: datetime) -> Timestamp:
    t = Timestamp()
    t.FromDatetime(dt)
    return t


def dur(**kw: float) -> Duration:
    d = Duration()
    d.FromTimedelta(timedelta(**kw))
    return d


def rd(r: pb.Reading) -> tuple[Any, ...]:
    return (
        r.sensor_id,
        r.ts.ToDatetime(tzinfo=UTC),
        r.temperature if r.HasField("temperature") else None,
        r.cpu if r.HasField("cpu") else None,
        dict(r.extra),
    )


def bucket(b: pb.Bucket) -> tuple[Any, ...]:
    return (
        b.sensor_id,
        b.bucket_start.ToDatetime(tzinfo=UTC),
        b.count,
        [v.value if v.HasField("value") else None for v in b.values],
    )


async def test_list_and_get_sensors(query: Any) -> None:
    await query.insert_sensors(
        [
            (1, "thermometer", "rack-1", {"model": "t1", "calibrated": True}, T0),
            (2, "thermometer", "rack-2", {}, T0),
            (3, "cpu", "rack-1", {}, T0),
            (4, "thermometer", "rack-1", {}, T0),
            (5, None, None, {}, T0),
        ]
    )
    seen: list[int] = []
    token = ""
    pages = 0
    while True:
        resp = await query.stub.ListSensors(pb.ListSensorsRequest(page_size=2, page_token=token))
        seen += [s.id for s in resp.sensors]
        pages += 1
        token = resp.next_page_token
        if not token:
            break
    assert seen == [1, 2, 3, 4, 5] and pages == 3

    resp = await query.stub.ListSensors(
        pb.ListSensorsRequest(type="thermometer", location="rack-1")
    )
    assert [s.id for s in resp.sensors] == [1, 4] and resp.next_page_token == ""

    s = await query.stub.GetSensor(pb.GetSensorRequest(id=1))
    assert (s.id, s.type, s.location) == (1, "thermometer", "rack-1")
    assert dict(s.metadata) == {"model": "t1", "calibrated": True}
    assert s.updated_at.ToDatetime(tzinfo=UTC) == T0


READINGS = [
    (at(0), 1, 20.0, 0.5, {"hum": 40}),
    (at(1), 1, 21.0, None, None),
    (at(1), 2, 30.0, 0.25, None),
    (at(2), 1, None, 0.75, None),
    (at(3), 2, 31.0, 0.5, {"hum": 41.5, "label": "x"}),
    (at(4), 1, 22.0, 1.0, None),
]


def expected_rows() -> list[tuple[Any, ...]]:
    out = []
    for t, sid, temp, cpu, extra in READINGS:
        nums = {k: float(v) for k, v in (extra or {}).items() if isinstance(v, int | float)}
        out.append((sid, t, temp, cpu, nums))
    return sorted(out, key=lambda r: (r[1], r[0]))


async def test_list_readings_pages_in_both_orders(query: Any) -> None:
    await query.insert_readings(READINGS)
    for order, expect in (
        (pb.ORDER_ASC, expected_rows()),
        (pb.ORDER_DESC, expected_rows()[::-1]),
    ):
        got: list[tuple[Any, ...]] = []
        token = ""
        while True:
            req = pb.ListReadingsRequest(
                start=ts(at(0)), end=ts(at(60)), page_size=4, page_token=token, order=order
            )
            resp = await query.stub.ListReadings(req)
            got += [rd(r) for r in resp.readings]
            token = resp.next_page_token
            if not token:
                break
        assert got == expect

    one = await query.stub.ListReadings(
        pb.ListReadingsRequest(sensor_ids=[2], start=ts(at(1)), end=ts(at(3)))
    )
    assert [rd(r) for r in one.readings] == [(2, at(1), 30.0, 0.25, {})]


async def test_paging_through_a_result_that_changes_between_pages(query: Any) -> None:
    """Keyset tokens: rows added behind the cursor do not shift the next page."""
    await query.insert_readings([(at(m), 1, float(m), None, None) for m in range(6)])
    req = pb.ListReadingsRequest(start=ts(at(0)), end=ts(at(60)), page_size=3)
    first = await query.stub.ListReadings(req)
    assert [r.temperature for r in first.readings] == [0.0, 1.0, 2.0]
    # One row behind the cursor (already paged past), one ahead of it, and
    # one at the cursor's own time but a higher sensor id (sorts after it).
    await query.insert_readings(
        [
            (at(0.5), 1, 0.5, None, None),
            (at(4.5), 1, 4.5, None, None),
            (at(2), 9, 2.25, None, None),
        ]
    )
    req.page_token = first.next_page_token
    second = await query.stub.ListReadings(req)
    assert [r.temperature for r in second.readings] == [2.25, 3.0, 4.0]
    req.page_token = second.next_page_token
    third = await query.stub.ListReadings(req)
    assert [r.temperature for r in third.readings] == [4.5, 5.0]
    assert third.next_page_token == ""


async def test_stream_readings_matches_list(query: Any) -> None:
    await query.insert_readings(READINGS)
    req = pb.StreamReadingsRequest(start=ts(at(0)), end=ts(at(60)))
    got = [rd(r) async for batch in query.stub.StreamReadings(req) for r in batch.readings]
    assert got == expected_rows()
    req.order = pb.ORDER_DESC
    req.sensor_ids.append(1)
    got = [rd(r) async for batch in query.stub.StreamReadings(req) for r in batch.readings]
    assert got == [r for r in expected_rows()[::-1] if r[0] == 1]


async def test_stream_sends_batches_of_the_configured_size(
    database: Any, start_server: Any
) -> None:
    srv = await start_server(database.dsn, stream_batch_size=4)
    await srv.insert_readings([(at(m), 1, 1.0, None, None) for m in range(10)])
    req = pb.StreamReadingsRequest(start=ts(at(0)), end=ts(at(60)))
    sizes = [len(b.readings) async for b in srv.stub.StreamReadings(req)]
    assert sizes == [4, 4, 2]


async def test_aggregate_functions_and_bucket_edges(query: Any) -> None:
    hour = T0 + timedelta(hours=10)
    eps = timedelta(microseconds=1)
    await query.insert_readings(
        [
            (hour - eps, 1, 1.0, None, None),  # last instant of the 09:00 bucket
            (hour, 1, 2.0, 0.5, None),  # first instant of the 10:00 bucket
            (hour + timedelta(minutes=30), 1, None, 0.25, None),
            (hour + timedelta(minutes=59), 1, 4.0, None, None),
            (hour + timedelta(hours=1) - eps, 1, 8.0, 1.0, None),
            (hour + timedelta(hours=1), 1, 100.0, None, None),  # == end: excluded
        ]
    )
    aggs = [
        pb.AGGREGATION_AVG,
        pb.AGGREGATION_MIN,
        pb.AGGREGATION_MAX,
        pb.AGGREGATION_COUNT,
        pb.AGGREGATION_FIRST,
        pb.AGGREGATION_LAST,
    ]
    req = pb.AggregateReadingsRequest(
        # start in the middle of the 09:00 bucket: the bucket keeps its
        # epoch-aligned start, and only readings at or after start count.
        start=ts(hour - timedelta(minutes=1)),
        end=ts(hour + timedelta(hours=1)),
        bucket=dur(hours=1),
        fields=[pb.FIELD_TEMPERATURE, pb.FIELD_CPU],
        aggregations=aggs,
    )
    resp = await query.stub.AggregateReadings(req)
    assert [bucket(b) for b in resp.buckets] == [
        (
            1,
            hour - timedelta(hours=1),
            1,
            [1.0, 1.0, 1.0, 1.0, 1.0, 1.0] + [None] * 3 + [0.0] + [None] * 2,
        ),
        (
            1,
            hour,
            4,
            # temperature: 2, 4, 8 (one reading has none)
            [
                *[14 / 3, 2.0, 8.0, 3.0, 2.0, 8.0],
                # cpu: 0.5, 0.25, 1.0
                *[1.75 / 3, 0.25, 1.0, 3.0, 0.5, 1.0],
            ],
        ),
    ]
    v = resp.buckets[1].values
    assert [(x.field, x.aggregation) for x in v[:2]] == [
        (pb.FIELD_TEMPERATURE, pb.AGGREGATION_AVG),
        (pb.FIELD_TEMPERATURE, pb.AGGREGATION_MIN),
    ]


async def test_aggregate_defaults_and_sensor_filter(query: Any) -> None:
    await query.insert_readings(READINGS)
    req = pb.AggregateReadingsRequest(
        sensor_ids=[2], start=ts(at(0)), end=ts(at(60)), bucket=dur(minutes=15)
    )
    resp = await query.stub.AggregateReadings(req)
    # Defaults: avg of temperature and cpu.
    assert [bucket(b) for b in resp.buckets] == [(2, T0, 2, [30.5, 0.375])]


async def test_weekly_buckets_align_to_the_unix_epoch(query: Any) -> None:
    # 1970-01-01 was a Thursday: weekly buckets start on Thursdays on both
    # databases (time_bucket's own default origin is a Monday).
    await query.insert_readings([(T0, 1, 1.0, None, None)])  # Wed 2024-05-01
    req = pb.AggregateReadingsRequest(
        start=ts(T0 - timedelta(days=10)), end=ts(T0 + timedelta(days=10)), bucket=dur(days=7)
    )
    resp = await query.stub.AggregateReadings(req)
    assert [b.bucket_start.ToDatetime(tzinfo=UTC) for b in resp.buckets] == [
        datetime(2024, 4, 25, tzinfo=UTC)
    ]


async def test_aggregate_fills_gaps(query: Any) -> None:
    await query.insert_readings(
        [
            (at(0), 1, 1.0, None, None),
            (at(31), 1, 3.0, None, None),
            (at(12), 2, 5.0, None, None),
            (at(200), 3, 7.0, None, None),  # outside the range: sensor 3 gets no rows
        ]
    )
    req = pb.AggregateReadingsRequest(
        start=ts(at(5)),
        end=ts(at(40)),
        bucket=dur(minutes=10),
        fields=[pb.FIELD_TEMPERATURE],
        aggregations=[pb.AGGREGATION_AVG, pb.AGGREGATION_COUNT],
        fill_gaps=True,
    )
    resp = await query.stub.AggregateReadings(req)
    grid = [at(0), at(10), at(20), at(30)]
    assert [bucket(b) for b in resp.buckets] == [
        (1, grid[0], 0, [None, 0.0]),  # at(0) is before start
        (1, grid[1], 0, [None, 0.0]),
        (1, grid[2], 0, [None, 0.0]),
        (1, grid[3], 1, [3.0, 1.0]),
        (2, grid[0], 0, [None, 0.0]),
        (2, grid[1], 1, [5.0, 1.0]),
        (2, grid[2], 0, [None, 0.0]),
        (2, grid[3], 0, [None, 0.0]),
    ]
    req.fill_gaps = False
    resp = await query.stub.AggregateReadings(req)
    assert [bucket(b) for b in resp.buckets] == [
        (1, grid[3], 1, [3.0, 1.0]),
        (2, grid[1], 1, [5.0, 1.0]),
    ]


async def test_empty_ranges(query: Any) -> None:
    await query.insert_readings(READINGS)
    late = (ts(at(100)), ts(at(200)))
    resp = await query.stub.ListReadings(pb.ListReadingsRequest(start=late[0], end=late[1]))
    assert list(resp.readings) == [] and resp.next_page_token == ""
    batches = [
        b
        async for b in query.stub.StreamReadings(
            pb.StreamReadingsRequest(start=late[0], end=late[1])
        )
    ]
    assert batches == []
    for fill in (False, True):
        agg = await query.stub.AggregateReadings(
            pb.AggregateReadingsRequest(
                start=late[0], end=late[1], bucket=dur(minutes=1), fill_gaps=fill
            )
        )
        assert list(agg.buckets) == []
    latest = await query.stub.LatestReadings(pb.LatestReadingsRequest(since=late[0]))
    assert list(latest.readings) == []
    sensors = await query.stub.ListSensors(pb.ListSensorsRequest())
    assert list(sensors.sensors) == [] and sensors.next_page_token == ""


async def test_latest_readings(query: Any) -> None:
    await query.insert_readings(READINGS)
    resp = await query.stub.LatestReadings(pb.LatestReadingsRequest())
    assert [rd(r) for r in resp.readings] == [
        (1, at(4), 22.0, 1.0, {}),
        (2, at(3), 31.0, 0.5, {"hum": 41.5}),
    ]
    resp = await query.stub.LatestReadings(
        pb.LatestReadingsRequest(sensor_ids=[2, 1, 77], before=ts(at(3)))
    )
    assert [(r.sensor_id, r.ts.ToDatetime(tzinfo=UTC)) for r in resp.readings] == [
        (1, at(2)),
        (2, at(1)),
    ]
    resp = await query.stub.LatestReadings(
        pb.LatestReadingsRequest(since=ts(at(3)), before=ts(at(4)))
    )
    assert [(r.sensor_id, r.ts.ToDatetime(tzinfo=UTC)) for r in resp.readings] == [(2, at(3))]
