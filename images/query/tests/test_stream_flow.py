"""StreamReadings reads from the database only as fast as the client consumes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client import REGISTRY

from sensorlog.v1 import query_pb2 as pb
from sensorlog.v1 import query_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration

T0 = datetime(2024, 5, 1, tzinfo=UTC)
TOTAL = 300_000
BATCH = 500


def ts(dt: datetime) -> Timestamp:
    t = Timestamp()
    t.FromDatetime(dt)
    return t


def _rows_read() -> float:
    """Rows the server has fetched from the database for streams (counted per batch)."""
    return (
        REGISTRY.get_sample_value(
            "sensorlog_query_rows_returned_total", {"method": "StreamReadings"}
        )
        or 0.0
    )


async def _plateau(before: float) -> float:
    """Rows read ahead once the server stops reading (it must stop)."""
    last = -1.0
    for _ in range(40):
        await asyncio.sleep(0.5)
        now = _rows_read() - before
        if now == last:
            return now
        last = now
    raise AssertionError(f"the server kept reading while the client stalled ({last:.0f} rows)")


async def _stall_then_drain(channel: grpc.aio.Channel) -> float:
    stub = pb_grpc.QueryServiceStub(channel)  # type: ignore[no-untyped-call]
    before = _rows_read()
    call = stub.StreamReadings(
        pb.StreamReadingsRequest(start=ts(T0), end=ts(T0 + timedelta(days=30)))
    )
    first = await call.read()
    ahead = await _plateau(before)
    got, last = len(first.readings), first.readings[-1].temperature
    while (batch := await call.read()) is not grpc.aio.EOF:
        got += len(batch.readings)
        last = batch.readings[-1].temperature
    assert got == TOTAL and last == TOTAL - 1
    return ahead


async def test_slow_client_bounds_what_the_server_reads(pg_dsn: str, start_server: Any) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(
            "INSERT INTO sensor_data (ts, sensor_id, temperature, cpu) "
            "SELECT $1::timestamptz + i * interval '1 second', 1, i, 0.5 "
            "FROM generate_series(0, $2 - 1) AS i",
            T0,
            TOTAL,
        )
    finally:
        await conn.close()
    srv = await start_server(pg_dsn, stream_batch_size=BATCH)

    # A client with gRPC's default, auto-growing (BDP) receive window: the
    # server runs ahead by what the HTTP/2 windows hold (a few MB), then its
    # generator blocks in `yield` and it stops reading from the database.
    # How far depends on how fast BDP grew the window (machine load), so only
    # "it stopped before the end" is asserted here; the fixed window below is exact.
    ahead_default = await _stall_then_drain(srv.channel)
    assert ahead_default < TOTAL, f"{ahead_default:.0f} of {TOTAL} rows read ahead"

    # With a fixed 64 KiB window the bound shrinks with it: the server's
    # buffering follows the client's flow control, not the size of the range.
    async with grpc.aio.insecure_channel(
        srv.target, options=[("grpc.http2.bdp_probe", 0)]
    ) as small:
        ahead_small = await _stall_then_drain(small)
    assert ahead_small < 20 * BATCH, f"{ahead_small:.0f} rows read ahead of a 64 KiB window"
    print(f"rows read ahead of a stalled client: {ahead_default:.0f} (BDP), {ahead_small:.0f}")
