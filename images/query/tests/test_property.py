"""Random requests never get INTERNAL/UNKNOWN, and the server stays up.

The server runs on its own event loop in a thread so hypothesis can drive it
with a plain blocking client; every request hits the real database.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from sensorlog.v1 import query_pb2 as pb
from sensorlog.v1 import query_pb2_grpc as pb_grpc
from sensorlog_core import db
from sensorlog_query.server import QueryServer
from sensorlog_query.settings import QuerySettings

pytestmark = pytest.mark.integration

T0 = int(datetime(2024, 5, 1, tzinfo=UTC).timestamp())
BAD = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}

int64 = st.integers(-(2**63), 2**63 - 1)
int32 = st.integers(-(2**31), 2**31 - 1)
seconds = st.one_of(
    st.integers(T0 - 86400, T0 + 86400),  # where the data is
    st.integers(-62135596800 - 10, 253402300799 + 10),  # the whole range and just outside
    int64,
)
nanos = st.one_of(st.integers(0, 999_999_999), int32)
timestamps = st.builds(Timestamp, seconds=seconds, nanos=nanos)
durations = st.builds(
    Duration,
    seconds=st.one_of(st.integers(-10, 100_000), st.integers(-(2**40), 2**40), int64),
    nanos=st.one_of(st.integers(-999_999_999, 999_999_999), int32),
)
ids = st.lists(st.one_of(st.integers(0, 5), int64), max_size=5)
text = st.text(max_size=20)
small = st.one_of(st.integers(-2, 20), int32)
enum_vals = st.integers(-3, 9)


def _opt(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


def _build(cls: Any, **fields: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A message with each field either unset or drawn."""
    return st.fixed_dictionaries({}, optional=fields).map(lambda kw: cls(**kw))


# Mostly plausible requests, so most calls get past validation into SQL.
near = st.builds(
    Timestamp, seconds=st.integers(T0 - 3600, T0 + 90000), nanos=st.integers(0, 999_999_999)
)
sane_buckets = st.builds(
    Duration, seconds=st.integers(0, 3 * 86400), nanos=st.integers(0, 999_999_999)
)
good_enum = st.integers(0, 6)

plausible = st.one_of(
    st.tuples(
        st.just("ListReadings"),
        _build(
            pb.ListReadingsRequest,
            sensor_ids=ids,
            page_size=st.integers(0, 50),
            order=st.integers(0, 2),
        ),
    ),
    st.tuples(
        st.just("StreamReadings"),
        _build(pb.StreamReadingsRequest, sensor_ids=ids, order=st.integers(0, 2)),
    ),
    st.tuples(
        st.just("AggregateReadings"),
        _build(
            pb.AggregateReadingsRequest,
            sensor_ids=ids,
            bucket=sane_buckets,
            fields=st.lists(st.integers(1, 2), max_size=3),
            aggregations=st.lists(st.integers(1, 6), max_size=4),
            fill_gaps=st.booleans(),
        ),
    ),
)


@st.composite
def ranged(draw: st.DrawFn) -> tuple[str, Any]:
    method, request = draw(plausible)
    start = draw(near)
    request.start.CopyFrom(start)
    request.end.CopyFrom(
        Timestamp(seconds=start.seconds + draw(st.integers(0, 2 * 86400)), nanos=start.nanos)
    )
    return method, request


requests = st.one_of(
    ranged(),
    ranged(),
    st.tuples(
        st.just("ListSensors"),
        _build(pb.ListSensorsRequest, type=text, location=text, page_size=small, page_token=text),
    ),
    st.tuples(st.just("GetSensor"), _build(pb.GetSensorRequest, id=int64)),
    st.tuples(
        st.just("ListReadings"),
        _build(
            pb.ListReadingsRequest,
            sensor_ids=ids,
            start=timestamps,
            end=timestamps,
            page_size=small,
            page_token=text,
            order=enum_vals,
        ),
    ),
    st.tuples(
        st.just("StreamReadings"),
        _build(
            pb.StreamReadingsRequest,
            sensor_ids=ids,
            start=timestamps,
            end=timestamps,
            order=enum_vals,
        ),
    ),
    st.tuples(
        st.just("AggregateReadings"),
        _build(
            pb.AggregateReadingsRequest,
            sensor_ids=ids,
            start=timestamps,
            end=timestamps,
            bucket=durations,
            fields=st.lists(enum_vals, max_size=3),
            aggregations=st.lists(enum_vals, max_size=4),
            fill_gaps=st.booleans(),
        ),
    ),
    st.tuples(
        st.just("LatestReadings"),
        _build(pb.LatestReadingsRequest, sensor_ids=ids, before=timestamps, since=timestamps),
    ),
)


@pytest.fixture
def threaded_server(pg_dsn: str) -> Iterator[str]:
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def serve() -> None:
        conn = await db.connect(pg_dsn)
        try:
            await conn.execute(
                "INSERT INTO sensor_data (ts, sensor_id, temperature, cpu, extra) "
                "SELECT to_timestamp($1 + i * 60), i % 5, i, NULLIF(i % 3, 0), "
                "  CASE WHEN i % 7 = 0 THEN jsonb_build_object('hum', i) END "
                "FROM generate_series(0, 1439) AS i",
                T0,
            )
            await conn.execute(
                "INSERT INTO sensors (id, type, location, metadata, updated_at) "
                "SELECT i, 't' || (i % 2), 'r', '{}', now() FROM generate_series(0, 4) AS i"
            )
        finally:
            await conn.close()
        server = QueryServer(
            QuerySettings(
                database_dsn=pg_dsn,
                grpc_host="127.0.0.1",
                grpc_port=0,
                metrics_port=0,
                statement_timeout=5,
            )
        )
        state["port"] = await server.start()
        state["stop"] = stop = asyncio.Event()
        state["loop"] = asyncio.get_running_loop()
        ready.set()
        await stop.wait()
        await server.stop(1)

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(30), "server did not start"
    try:
        yield f"127.0.0.1:{state['port']}"
    finally:
        state["loop"].call_soon_threadsafe(state["stop"].set)
        thread.join(10)


@settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(call=requests)
def test_random_requests_never_fail_internally(threaded_server: str, call: Any) -> None:
    method, request = call
    with grpc.insecure_channel(threaded_server) as channel:
        stub = pb_grpc.QueryServiceStub(channel)  # type: ignore[no-untyped-call]
        code = grpc.StatusCode.OK
        try:
            if method == "StreamReadings":
                for _ in stub.StreamReadings(request, timeout=10):
                    pass
            else:
                getattr(stub, method)(request, timeout=10)
        except grpc.RpcError as exc:
            code = exc.code()
            assert code not in BAD, f"{method}({request}) -> {code}: {exc.details()}"
            assert code != grpc.StatusCode.UNAVAILABLE, f"server down? {exc.details()}"
        # --hypothesis-show-statistics shows how many calls reached the database.
        event(f"{method} {code.name}")
        # The server is still up and answering.
        stub.GetSensor(pb.GetSensorRequest(id=1), timeout=10)
