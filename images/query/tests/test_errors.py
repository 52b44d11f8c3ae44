"""Every error path, asserted by status code and message, on a real server."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from sensorlog.v1 import query_pb2 as pb
from sensorlog_stack.postgres import Postgres

pytestmark = pytest.mark.integration

T0 = datetime(2024, 5, 1, tzinfo=UTC)


def ts(dt: datetime) -> Timestamp:
    t = Timestamp()
    t.FromDatetime(dt)
    return t


def dur(**kw: float) -> Duration:
    d = Duration()
    d.FromTimedelta(timedelta(**kw))
    return d


START, END = ts(T0), ts(T0 + timedelta(days=1))
INV = grpc.StatusCode.INVALID_ARGUMENT


def agg(**kw: Any) -> pb.AggregateReadingsRequest:
    base: dict[str, Any] = {"start": START, "end": END, "bucket": dur(hours=1)}
    base.update(kw)
    return pb.AggregateReadingsRequest(**base)


CASES = [
    ("ListReadings", pb.ListReadingsRequest(end=END), INV, "start: is required"),
    ("ListReadings", pb.ListReadingsRequest(start=START), INV, "end: is required"),
    ("ListReadings", pb.ListReadingsRequest(start=END, end=START), INV, "end: must be after start"),
    (
        "ListReadings",
        pb.ListReadingsRequest(start=START, end=START),
        INV,
        "end: must be after start",
    ),
    (
        "ListReadings",
        pb.ListReadingsRequest(start=START, end=END, page_size=10001),
        INV,
        "page_size: 10001 is over the maximum of 10000",
    ),
    (
        "ListReadings",
        pb.ListReadingsRequest(start=START, end=END, page_size=-1),
        INV,
        "page_size: must not be negative",
    ),
    (
        "ListReadings",
        pb.ListReadingsRequest(start=START, end=END, page_token="not a token!"),
        INV,
        "page_token: is not a token from this server",
    ),
    (
        "ListReadings",
        pb.ListReadingsRequest(start=START, end=END, order=7),
        INV,
        "order: unknown order 7",
    ),
    (
        "ListReadings",
        pb.ListReadingsRequest(start=Timestamp(seconds=-(10**12)), end=END),
        INV,
        "start: must be between 0001-01-01 and 9999-12-31 UTC",
    ),
    (
        "ListReadings",
        pb.ListReadingsRequest(sensor_ids=list(range(1001)), start=START, end=END),
        INV,
        "sensor_ids: 1001 ids are over the limit of 1000",
    ),
    (
        "StreamReadings",
        pb.StreamReadingsRequest(start=END, end=START),
        INV,
        "end: must be after start",
    ),
    ("AggregateReadings", agg(bucket=Duration()), INV, "bucket: must be positive"),
    ("AggregateReadings", agg(bucket=Duration(seconds=-60)), INV, "bucket: must be positive"),
    (
        "AggregateReadings",
        agg(bucket=Duration(nanos=500)),
        INV,
        "bucket: must be at least 1 microsecond",
    ),
    (
        "AggregateReadings",
        pb.AggregateReadingsRequest(start=START, end=END),
        INV,
        "bucket: is required",
    ),
    (
        "AggregateReadings",
        agg(bucket=dur(seconds=1)),
        INV,
        "bucket: the range holds 86400 buckets per sensor, over the limit of 10000",
    ),
    (
        "AggregateReadings",
        agg(aggregations=[pb.AGGREGATION_AVG, 42]),
        INV,
        "aggregations[1]: unknown aggregation 42",
    ),
    ("AggregateReadings", agg(aggregations=[0]), INV, "aggregations[0]: unknown aggregation 0"),
    ("AggregateReadings", agg(fields=[9]), INV, "fields[0]: unknown field 9"),
    ("AggregateReadings", agg(start=END, end=START), INV, "end: must be after start"),
    (
        "ListSensors",
        pb.ListSensorsRequest(page_size=1001),
        INV,
        "page_size: 1001 is over the maximum of 1000",
    ),
    ("ListSensors", pb.ListSensorsRequest(type="a\x00b"), INV, "type: must not contain NUL"),
    (
        "ListSensors",
        pb.ListSensorsRequest(page_token="eyJ2IjogMn0"),
        INV,
        "page_token: is not a token from this server (unknown version)",
    ),
    (
        "LatestReadings",
        pb.LatestReadingsRequest(since=END, before=START),
        INV,
        "since: must be before 'before'",
    ),
    ("GetSensor", pb.GetSensorRequest(id=404), grpc.StatusCode.NOT_FOUND, "sensor 404 not found"),
]


@pytest.mark.parametrize(
    ("method", "request_", "code", "message"), CASES, ids=[f"{c[0]}-{c[3][:40]}" for c in CASES]
)
async def test_bad_requests(
    pg_query: Any, method: str, request_: Any, code: grpc.StatusCode, message: str
) -> None:
    call = getattr(pg_query.stub, method)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        if method == "StreamReadings":
            async for _ in call(request_):
                pass
        else:
            await call(request_)
    assert err.value.code() == code
    assert message in (err.value.details() or "")


async def test_token_from_another_request_is_refused(pg_query: Any) -> None:
    await pg_query.insert_readings(
        [(T0 + timedelta(seconds=i), 1, 1.0, None, None) for i in range(3)]
    )
    first = await pg_query.stub.ListReadings(
        pb.ListReadingsRequest(start=START, end=END, page_size=1)
    )
    assert first.next_page_token
    other = pb.ListReadingsRequest(
        start=START, end=END, sensor_ids=[1], page_token=first.next_page_token
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await pg_query.stub.ListReadings(other)
    assert err.value.code() == INV
    assert "page_token: was issued for a different request" in (err.value.details() or "")
    # A token of ListSensors is not a ListReadings token.
    raw = json.loads(base64.urlsafe_b64decode(first.next_page_token + "=="))
    raw["k"] = "sensors"
    forged = base64.urlsafe_b64encode(json.dumps(raw).encode()).decode()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await pg_query.stub.ListReadings(
            pb.ListReadingsRequest(start=START, end=END, page_size=1, page_token=forged)
        )
    assert "page_token: belongs to another method" in (err.value.details() or "")


async def _lock_sensor_data(dsn: str) -> asyncpg.Connection:
    """A transaction holding an exclusive lock: every read of sensor_data waits."""
    conn = await asyncpg.connect(dsn)
    await conn.execute("BEGIN; LOCK TABLE sensor_data IN ACCESS EXCLUSIVE MODE")
    return conn


async def _waiting_queries(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        n: int = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE application_name = 'sensorlog-query' AND state = 'active'"
        )
        return n
    finally:
        await conn.close()


async def test_client_deadline_cancels_the_database_query(pg_query: Any) -> None:
    locker = await _lock_sensor_data(pg_query.dsn)
    try:
        t = asyncio.get_running_loop().time()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await pg_query.stub.ListReadings(
                pb.ListReadingsRequest(start=START, end=END), timeout=0.5
            )
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert asyncio.get_running_loop().time() - t < 3
        # The deadline reached the database: the blocked statement is cancelled
        # there too, instead of running on for a client that left.
        for _ in range(50):
            if await _waiting_queries(pg_query.dsn) == 0:
                break
            await asyncio.sleep(0.1)
        assert await _waiting_queries(pg_query.dsn) == 0
    finally:
        await locker.close()


async def test_server_statement_timeout_is_deadline_exceeded(
    pg_dsn: str, start_server: Any
) -> None:
    srv = await start_server(pg_dsn, statement_timeout=0.3)
    locker = await _lock_sensor_data(pg_dsn)
    try:
        for call in (
            srv.stub.AggregateReadings(agg()),
            srv.stub.LatestReadings(pb.LatestReadingsRequest()),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call
            assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert "statement timeout of 0.3s" in (err.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in srv.stub.StreamReadings(pb.StreamReadingsRequest(start=START, end=END)):
                pass
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        await locker.close()
    # The server recovers: the same call works once the lock is gone.
    resp = await srv.stub.LatestReadings(pb.LatestReadingsRequest())
    assert list(resp.readings) == []


async def test_database_down_is_unavailable(own_postgres: Postgres, start_server: Any) -> None:
    pg = own_postgres
    srv = await start_server(pg.dsn, health_check_interval=30)
    await srv.stub.ListSensors(pb.ListSensorsRequest())
    pg.stop()
    for call in (
        srv.stub.ListSensors(pb.ListSensorsRequest()),
        srv.stub.GetSensor(pb.GetSensorRequest(id=1)),
        srv.stub.ListReadings(pb.ListReadingsRequest(start=START, end=END)),
        srv.stub.AggregateReadings(agg()),
        srv.stub.LatestReadings(pb.LatestReadingsRequest()),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value.details()
        assert "database unavailable" in (err.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in srv.stub.StreamReadings(pb.StreamReadingsRequest(start=START, end=END)):
            pass
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
