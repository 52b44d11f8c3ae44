"""Server behaviour around the API: health, reflection, metrics, graceful stop."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import REGISTRY

from sensorlog.v1 import query_pb2 as pb
from sensorlog.v1 import query_pb2_grpc as pb_grpc
from sensorlog_query.server import SERVICE_NAME
from sensorlog_stack.postgres import Postgres
from sensorlog_stack.proc import free_port

pytestmark = pytest.mark.integration

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
T0 = datetime(2024, 5, 1, tzinfo=UTC)


def ts(dt: datetime) -> Timestamp:
    t = Timestamp()
    t.FromDatetime(dt)
    return t


async def _health(channel: grpc.aio.Channel, service: str = SERVICE_NAME) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    resp = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
    return int(resp.status)


async def _wait_health(channel: grpc.aio.Channel, want: int, within: float = 10) -> None:
    deadline = time.monotonic() + within
    status = -1
    while time.monotonic() < deadline:
        try:
            status = await _health(channel)
        except grpc.aio.AioRpcError as exc:  # a server process still starting
            assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
        if status == want:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"health stayed {status}, wanted {want} within {within}s")


async def test_health_follows_the_database(own_postgres: Postgres, start_server: Any) -> None:
    srv = await start_server(own_postgres.dsn, health_check_interval=0.2)
    assert await _health(srv.channel) == SERVING
    assert await _health(srv.channel, "") == SERVING

    own_postgres.stop()
    await _wait_health(srv.channel, NOT_SERVING)
    assert await _health(srv.channel, "") == NOT_SERVING

    own_postgres.start()
    await _wait_health(srv.channel, SERVING)
    # Pooled connections from before the outage were dropped: calls work at once.
    resp = await srv.stub.ListSensors(pb.ListSensorsRequest())
    assert list(resp.sensors) == []


async def test_server_starts_not_serving_without_a_database(start_server: Any) -> None:
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    srv = await start_server(dead, connect_timeout=0.5)
    assert await _health(srv.channel) == NOT_SERVING
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await srv.stub.GetSensor(pb.GetSensorRequest(id=1))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_reflection_lists_and_describes_the_service(pg_query: Any) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(pg_query.channel)
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE_NAME),
    ]
    answers = [a async for a in stub.ServerReflectionInfo(iter(requests))]
    names = {s.name for s in answers[0].list_services_response.service}
    assert {SERVICE_NAME, "grpc.health.v1.Health"} <= names
    files = answers[1].file_descriptor_response.file_descriptor_proto
    assert files and any(b"AggregateReadings" in f for f in files)


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_metrics_count_calls_codes_rows_and_latency(pg_dsn: str, start_server: Any) -> None:
    port = free_port()
    srv = await start_server(pg_dsn, metrics_port=port, metrics_host="127.0.0.1")
    await srv.insert_readings([(T0, 1, 1.0, None, None), (T0, 2, 2.0, None, None)])
    ok0 = _sample("sensorlog_query_requests_total", method="LatestReadings", code="OK")
    nf0 = _sample("sensorlog_query_requests_total", method="GetSensor", code="NOT_FOUND")
    rows0 = _sample("sensorlog_query_rows_returned_total", method="LatestReadings")
    lat0 = _sample("sensorlog_query_request_seconds_count", method="LatestReadings")
    await srv.stub.LatestReadings(pb.LatestReadingsRequest())
    with pytest.raises(grpc.aio.AioRpcError):
        await srv.stub.GetSensor(pb.GetSensorRequest(id=9))
    assert _sample("sensorlog_query_requests_total", method="LatestReadings", code="OK") == ok0 + 1
    assert (
        _sample("sensorlog_query_requests_total", method="GetSensor", code="NOT_FOUND") == nf0 + 1
    )
    assert _sample("sensorlog_query_rows_returned_total", method="LatestReadings") == rows0 + 2
    assert _sample("sensorlog_query_request_seconds_count", method="LatestReadings") == lat0 + 1
    body = await asyncio.to_thread(
        lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    )
    assert b'sensorlog_query_requests_total{code="NOT_FOUND",method="GetSensor"}' in body
    assert b"sensorlog_query_database_up 1.0" in body


def _server_process(dsn: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update(
        {
            "SENSORLOG_QUERY_DATABASE_DSN": dsn,
            "SENSORLOG_QUERY_GRPC_HOST": "127.0.0.1",
            "SENSORLOG_QUERY_GRPC_PORT": str(port),
            "SENSORLOG_QUERY_METRICS_PORT": "0",
            "SENSORLOG_QUERY_SHUTDOWN_GRACE": "10",
        }
    )
    return subprocess.Popen(
        [sys.executable, "-m", "sensorlog_query"],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


async def test_sigterm_drains_in_flight_calls(pg_dsn: str, tmp_path: Path) -> None:
    port = free_port()
    proc = _server_process(pg_dsn, port, tmp_path / "server.log")
    locker = await asyncpg.connect(pg_dsn)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await _wait_health(channel, SERVING, within=20)
            stub = pb_grpc.QueryServiceStub(channel)  # type: ignore[no-untyped-call]
            await locker.execute("BEGIN; LOCK TABLE sensor_data IN ACCESS EXCLUSIVE MODE")
            in_flight = asyncio.ensure_future(
                stub.ListReadings(
                    pb.ListReadingsRequest(start=ts(T0), end=ts(T0 + timedelta(days=1)))
                )
            )
            await asyncio.sleep(0.5)  # the call is now waiting on the lock
            proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.5)
            assert proc.poll() is None, "the server quit with a call in flight"
            await locker.execute("ROLLBACK")
            resp = await asyncio.wait_for(in_flight, 10)
            assert list(resp.readings) == []
        assert await asyncio.to_thread(proc.wait, 15) == 0
        log = (tmp_path / "server.log").read_text()
        assert "draining in-flight calls" in log and "query server stopped" in log
    finally:
        await locker.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_bad_configuration_names_the_variable(tmp_path: Path) -> None:
    env = dict(os.environ, SENSORLOG_QUERY_GRPC_PORT="99999")
    r = subprocess.run(
        [sys.executable, "-m", "sensorlog_query"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2
    assert "SENSORLOG_QUERY_GRPC_PORT" in r.stderr
