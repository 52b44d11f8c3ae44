"""The real writer and query processes in a real Consul agent (v1.15.4, hack/tools/consul.sh):
registered with the right check, tags and meta, configured from KV, gone after SIGTERM."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from sensorlog.v1 import query_pb2 as pb
from sensorlog.v1 import query_pb2_grpc as pb_grpc
from sensorlog_core.consul import ConsulClient
from sensorlog_stack.consul import Consul
from sensorlog_stack.kafka import Kafka, create_topics
from sensorlog_stack.pipeline import Topics, writer_env
from sensorlog_stack.services import QueryProcess, WriterProcess

pytestmark = pytest.mark.integration


async def eventually(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def consul_env(prefix: str, agent: Consul, name: str, kv_prefix: str) -> dict[str, str]:
    return {
        f"{prefix}CONSUL_ENABLED": "true",
        f"{prefix}CONSUL_ADDRESS": agent.address,
        f"{prefix}CONSUL_SERVICE_NAME": name,
        f"{prefix}CONSUL_SERVICE_ADDRESS": "127.0.0.1",
        f"{prefix}CONSUL_CHECK_INTERVAL_S": "1",
        f"{prefix}CONSUL_KV_PREFIX": kv_prefix,
        f"{prefix}CONSUL_TAGS": '["canary"]',
    }


def instances(agent: Consul, name: str) -> list[dict[str, object]]:
    code, body = agent.get(f"/v1/health/service/{name}")
    assert code == 200 and isinstance(body, list)
    return body


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return str(r.read().decode())


def passing(agent: Consul, name: str) -> bool:
    entries = instances(agent, name)
    return len(entries) == 1 and all(
        c["Status"] == "passing"
        for c in entries[0]["Checks"]  # type: ignore[attr-defined]
        if c["ServiceName"] == name
    )


async def test_writer_registers_with_readiness_check_and_topics_and_leaves_on_sigterm(
    consul_agent: Consul, kafka: Kafka, pg_dsn: str, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    t = Topics(f"readings-{tag}", f"sensors-{tag}", f"writer-{tag}")
    await create_topics(kafka.bootstrap, {t.readings: 1, t.sensors: 1})
    name = f"writer-{tag}"
    kv = f"sensorlog/{name}"
    # The group id comes from KV (no env var sets it): defaults < KV.
    await ConsulClient(consul_agent.address).kv_put(kv, b"batch_max_records: 777\n")
    env = writer_env(kafka, pg_dsn, t, **consul_env("SENSORLOG_WRITER_", consul_agent, name, kv))
    w = WriterProcess(tmp_path / "writer.log", env).start()
    try:
        await eventually(lambda: passing(consul_agent, name), 20, "writer check passing")
        [entry] = instances(consul_agent, name)
        svc = entry["Service"]
        assert isinstance(svc, dict)
        assert svc["Port"] == w.status_port
        assert svc["Tags"] == ["writer", "canary"]
        assert svc["Meta"]["topics"] == f"{t.readings},{t.sensors}"
        assert svc["Meta"]["version"] and svc["Meta"]["group"] == t.group
        [check] = [c for c in entry["Checks"] if c["ServiceName"] == name]  # type: ignore[attr-defined]
        assert check["Type"] == "http"
        metrics = scrape(w.status_port)
        assert "sensorlog_consul_registered 1.0" in metrics
        assert "# TYPE sensorlog_writer_consumer_lag gauge" in metrics
        assert w.terminate() == 0
    finally:
        w.stop()
    assert instances(consul_agent, name) == [], "still registered after shutdown"
    logs = [
        json.loads(x) for x in (tmp_path / "writer.log").read_text().splitlines() if x[:1] == "{"
    ]
    assert any(r["message"] == "deregistered from consul" for r in logs)


async def test_query_registers_with_grpc_health_and_reloads_limits_from_kv(
    consul_agent: Consul, pg_dsn: str, tmp_path: Path
) -> None:
    name = f"query-{uuid.uuid4().hex[:8]}"
    kv = f"sensorlog/{name}"
    client = ConsulClient(consul_agent.address)
    await client.kv_put(kv, b'{"sensors_default_page_size": 10, "sensors_max_page_size": 20}')
    env = {
        "SENSORLOG_QUERY_DATABASE_DSN": pg_dsn,
        **consul_env("SENSORLOG_QUERY_", consul_agent, name, kv),
    }
    q = QueryProcess(tmp_path / "query.log", env)
    q.start()
    try:
        await eventually(lambda: passing(consul_agent, name), 20, "query gRPC check passing")
        [entry] = instances(consul_agent, name)
        [check] = [c for c in entry["Checks"] if c["ServiceName"] == name]  # type: ignore[attr-defined]
        assert check["Type"] == "grpc"
        assert entry["Service"]["Port"] == q.grpc_port  # type: ignore[index]
        metrics = scrape(q.status_port)
        assert "sensorlog_consul_registered 1.0" in metrics
        assert "sensorlog_query_database_up 1.0" in metrics
        async with grpc.aio.insecure_channel(q.target) as channel:
            stub = pb_grpc.QueryServiceStub(channel)  # type: ignore[no-untyped-call]
            # KV set the maximum at start-up (defaults < KV).
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.ListSensors(pb.ListSensorsRequest(page_size=50))
            assert "maximum of 20" in str(err.value.details())
            # A safe limit changes while the server runs; no restart.
            await client.kv_put(f"{kv}/sensors_max_page_size", b"100")

            async def accepted() -> bool:
                try:
                    await stub.ListSensors(pb.ListSensorsRequest(page_size=50))
                    return True
                except grpc.aio.AioRpcError:
                    return False

            deadline = time.monotonic() + 15
            while not await accepted():
                assert time.monotonic() < deadline, "the new limit never took effect"
                await asyncio.sleep(0.2)
            # An unsafe one (bound into the pool at start-up) is reported, not applied.
            await client.kv_put(f"{kv}/pool_max_size", b"3")
            await eventually(
                lambda: "need a restart" in (tmp_path / "query.log").read_text(),
                15,
                "restart-needed report",
            )
            await stub.ListSensors(pb.ListSensorsRequest(page_size=50))  # still on its port
        q.terminate()
    finally:
        q.stop()
    assert instances(consul_agent, name) == []
