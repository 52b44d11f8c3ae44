"""Consul client: registration, KV layering and reload, against a real Consul agent.

The agent is Consul v1.15.4 built from Go modules by hack/tools/consul.sh
(``consul agent -dev`` on 127.0.0.1, see sensorlog_stack.consul).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import pytest
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from sensorlog_core import consul
from sensorlog_core.consul import BadConfig, ConsulClient, Registrar, Registration, RemoteConfig
from sensorlog_core.settings import ConsulSettings
from sensorlog_core.statusserver import StatusServer
from sensorlog_stack.consul import Consul
from sensorlog_stack.proc import free_port


class DemoSettings(ConsulSettings):
    """A process's settings in miniature: two safe fields, two bound at start-up."""

    model_config = SettingsConfigDict(env_prefix="SENSORLOG_DEMO_", extra="ignore", frozen=True)
    SAFE_RELOAD: ClassVar[frozenset[str]] = frozenset(
        {"log_level", "batch_max_records", "batch_max_wait_ms"}
    )

    group_id: str = "default-group"
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    batch_max_records: int = Field(10_000, ge=1)
    batch_max_wait_ms: int = Field(500, ge=1)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _entry(key: str, value: bytes | None) -> dict[str, Any]:
    return {"Key": key, "Value": None if value is None else base64.b64encode(value).decode()}


# --------------------------------------------------------------------------- parsing (no agent)


def test_kv_document_in_json_or_yaml_and_single_keys_win() -> None:
    entries = [
        _entry("sensorlog/writer", b'{"batch_max_records": 10, "log_level": "DEBUG"}'),
        _entry("sensorlog/writer/batch_max_records", b"20"),
        _entry("sensorlog/writer/sub/deeper", b"ignored: true"),
        _entry("sensorlog/writer-2/batch_max_records", b"99"),  # another prefix
        _entry("sensorlog/writer/", None),  # a folder key
    ]
    assert consul.kv_values("sensorlog/writer", entries) == {
        "batch_max_records": 20,
        "log_level": "DEBUG",
    }
    yaml_doc = [_entry("p", b"batch_max_wait_ms: 250\ntopics_ignored: [a, b]\n")]
    assert consul.kv_values("p", yaml_doc) == {
        "batch_max_wait_ms": 250,
        "topics_ignored": ["a", "b"],
    }


@pytest.mark.parametrize(
    "value, why",
    [
        (b"batch_max_records: [unclosed", "neither JSON nor YAML"),
        (b"- just\n- a list\n", "must be a mapping"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_unreadable_kv_value_is_refused_naming_the_key(value: bytes, why: str) -> None:
    with pytest.raises(BadConfig, match=f"sensorlog/q: {why}"):
        consul.kv_values("sensorlog/q", [_entry("sensorlog/q", value)])


def test_layering_defaults_then_kv_then_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENSORLOG_DEMO_GROUP_ID", "from-env")
    s = consul.layered(
        DemoSettings, {"group_id": "from-kv", "batch_max_records": 500, "consul_address": "x"}
    )
    assert s.group_id == "from-env"  # environment beats KV
    assert s.batch_max_records == 500  # KV beats the default
    assert s.batch_max_wait_ms == 500  # default
    assert s.consul_address == "http://127.0.0.1:8500", "Consul's settings never come from KV"
    with pytest.raises(BadConfig, match="SENSORLOG_DEMO_BATCH_MAX_RECORDS"):
        consul.layered(DemoSettings, {"batch_max_records": "lots"})


# --------------------------------------------------------------------------- real agent


@pytest.mark.integration
async def test_registration_carries_tags_meta_and_a_check_that_follows_readiness(
    consul_agent: Consul,
) -> None:
    ready = {"ok": True}
    status = StatusServer(
        "127.0.0.1", 0, ready=lambda: (ready["ok"], "ok" if ready["ok"] else "db down")
    )
    await status.start()
    name = f"svc-{uuid.uuid4().hex[:6]}"
    settings = ConsulSettings(consul_check_interval_s=1, consul_deregister_after_s=60)
    reg = Registration(
        name=name,
        address="127.0.0.1",
        port=status.bound_port,
        check=consul.http_check(f"http://127.0.0.1:{status.bound_port}/readyz", settings),
        tags=["writer", "blue"],
        meta={"version": "1.2.3", "topics": "a,b"},
    )
    registrar = Registrar(ConsulClient(consul_agent.address), reg)
    registrar.start()

    def check_status() -> str | None:
        code, checks = consul_agent.get("/v1/agent/checks")
        assert code == 200 and isinstance(checks, dict)
        mine = [c for c in checks.values() if c["ServiceID"] == reg.service_id]
        return str(mine[0]["Status"]) if mine else None

    async def passing() -> bool:
        return check_status() == "passing"

    async def critical() -> bool:
        return check_status() == "critical"

    try:
        await eventually(passing, 15, "the readiness check passing")
        code, svc = consul_agent.get(f"/v1/agent/service/{reg.service_id}")
        assert code == 200 and isinstance(svc, dict)
        assert (svc["Service"], svc["Address"], svc["Port"]) == (
            name,
            "127.0.0.1",
            status.bound_port,
        )
        assert svc["Tags"] == ["writer", "blue"]
        assert svc["Meta"] == {"version": "1.2.3", "topics": "a,b"}
        ready["ok"] = False  # the service says it is not ready: Consul must see it
        await eventually(critical, 15, "the check going critical")
    finally:
        await registrar.stop()
        await status.stop()
    assert consul_agent.get(f"/v1/agent/service/{reg.service_id}")[0] == 404


@pytest.mark.integration
async def test_unreachable_consul_never_raises_and_registration_follows_when_it_answers(
    consul_agent: Consul,
) -> None:
    dead = ConsulClient(f"http://127.0.0.1:{free_port()}", timeout=1)
    reg = Registration("late", "127.0.0.1", 1, check={}, service_id=f"late-{uuid.uuid4().hex[:6]}")
    registrar = Registrar(dead, reg, retry_max_s=0.3)
    before = consul.CONSUL_ERRORS.labels("register")._value.get()
    registrar.start()
    try:
        await asyncio.sleep(1.5)
        assert not registrar.registered.is_set()
        assert consul.CONSUL_ERRORS.labels("register")._value.get() >= before + 2
        assert registrar._task is not None and not registrar._task.done(), "the retry loop died"
        registrar.client = ConsulClient(consul_agent.address)  # Consul comes back
        await asyncio.wait_for(registrar.registered.wait(), 10)
        assert consul_agent.get(f"/v1/agent/service/{reg.service_id}")[0] == 200
        # An agent that lost the registration (restart without data) gets it back.
        await ConsulClient(consul_agent.address).deregister(reg.service_id)
        registrar.resync_s = 0.2
        registrar._task.cancel()
        registrar.start()

        async def back() -> bool:
            return consul_agent.get(f"/v1/agent/service/{reg.service_id}")[0] == 200

        await eventually(back, 10, "re-registration")
    finally:
        await registrar.stop()
    assert consul_agent.get(f"/v1/agent/service/{reg.service_id}")[0] == 404


@pytest.mark.integration
async def test_kv_layer_reloads_safe_settings_reports_unsafe_and_keeps_last_good(
    consul_agent: Consul, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SENSORLOG_DEMO_GROUP_ID", "from-env")
    client = ConsulClient(consul_agent.address)
    prefix = f"sensorlog/test-{uuid.uuid4().hex[:6]}"
    await client.kv_put(
        prefix, json.dumps({"batch_max_records": 500, "group_id": "from-kv"}).encode()
    )
    remote = RemoteConfig(client, DemoSettings, prefix, DemoSettings(), wait_s=2)
    s = await remote.initial()
    assert (s.batch_max_records, s.group_id, s.batch_max_wait_ms) == (500, "from-env", 500)

    applied: list[tuple[DemoSettings, set[str]]] = []
    remote.start(lambda new, changed: applied.append((new, changed)))
    root = logging.getLogger()
    level = root.level
    try:
        # YAML document plus a single key; one safe change, one that needs a restart.
        await client.kv_put(
            prefix, b"batch_max_records: 500\nkafka_bootstrap_servers: other:9092\n"
        )
        await client.kv_put(f"{prefix}/batch_max_wait_ms", b"250")

        async def reloaded() -> bool:
            return bool(applied) and applied[-1][0].batch_max_wait_ms == 250

        await eventually(reloaded, 15, "the safe change applied")
        new, changed = applied[-1]
        assert changed == {"batch_max_wait_ms"}
        assert new.kafka_bootstrap_servers == "127.0.0.1:9092", "unsafe change applied live"
        assert remote.pending_restart == {"kafka_bootstrap_servers": "other:9092"}
        assert consul.RESTART_REQUIRED._value.get() == 1

        # A value that does not validate: the last good configuration stays.
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="sensorlog_core.consul"):
            await client.kv_put(f"{prefix}/batch_max_wait_ms", b"lots")

            async def refused() -> bool:
                return any("keeping the last good" in r.getMessage() for r in caplog.records)

            await eventually(refused, 15, "the bad value refused")
        bad = next(r for r in caplog.records if "keeping the last good" in r.getMessage())
        assert "SENSORLOG_DEMO_BATCH_MAX_WAIT_MS" in bad.reason  # type: ignore[attr-defined]
        assert remote.current.batch_max_wait_ms == 250

        # Log level is safe and takes effect on the root logger.
        await client.kv_put(f"{prefix}/batch_max_wait_ms", b"100")
        await client.kv_put(f"{prefix}/log_level", b"DEBUG")

        async def debug() -> bool:
            return remote.current.log_level == "DEBUG" and remote.current.batch_max_wait_ms == 100

        await eventually(debug, 15, "log level and wait applied")
        assert root.level == logging.DEBUG
    finally:
        started = time.monotonic()
        await remote.stop()
        root.setLevel(level)
    # Stopping abandons the in-flight blocking query at once.
    assert time.monotonic() - started < 1


@pytest.mark.integration
async def test_blocking_query_waits_for_a_change(consul_agent: Consul) -> None:
    client = ConsulClient(consul_agent.address)
    prefix = f"sensorlog/block-{uuid.uuid4().hex[:6]}"
    index, entries = await client.kv_list(prefix)
    assert entries == [] and index >= 1  # a 404 still carries X-Consul-Index
    started = time.monotonic()
    again, _ = await client.kv_list(prefix, index=index, wait_s=1)
    assert time.monotonic() - started >= 0.9, "the query did not block"
    waiter = asyncio.create_task(client.kv_list(prefix, index=again, wait_s=30))
    await asyncio.sleep(0.3)
    await client.kv_put(prefix, b"log_level: WARNING")
    new_index, got = await asyncio.wait_for(waiter, 5)
    assert new_index > again
    assert consul.kv_values(prefix, got) == {"log_level": "WARNING"}
