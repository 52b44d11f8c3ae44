"""The writer and sensorlog-publish over Kafka SASL_SSL (SCRAM-SHA-512) and mTLS, on a real
Apache Kafka broker; wrong credentials and untrusted certificates end the writer at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from sensorlog_core.kafka_security import client_kwargs
from sensorlog_stack.kafka import create_topics
from sensorlog_stack.pipeline import Topics, wait_for_rows, writer_env
from sensorlog_stack.services import WriterProcess
from sensorlog_writer.__main__ import EXIT_REFUSED
from sensorlog_writer.publish import PublishSecurity

from .conftest import SCRAM_USER, Pki, SecureKafka

pytestmark = pytest.mark.integration

POISON = b'{"sensor_id": "not a number"}'


def http_body(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return str(r.read().decode())


def sasl_env(sk: SecureKafka, pki: Pki, password: str | None = None) -> dict[str, str]:
    return {
        "SENSORLOG_WRITER_KAFKA_BOOTSTRAP_SERVERS": sk.broker.sasl_ssl_bootstrap,
        "SENSORLOG_WRITER_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "SENSORLOG_WRITER_KAFKA_SSL_CA_FILE": str(pki.ca.cert),
        "SENSORLOG_WRITER_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "SENSORLOG_WRITER_KAFKA_SASL_USERNAME": SCRAM_USER,
        "SENSORLOG_WRITER_KAFKA_SASL_PASSWORD": password or sk.scram_password,
    }


def mtls_env(sk: SecureKafka, pki: Pki, ca: Path | None = None) -> dict[str, str]:
    return {
        "SENSORLOG_WRITER_KAFKA_BOOTSTRAP_SERVERS": sk.broker.ssl_bootstrap,
        "SENSORLOG_WRITER_KAFKA_SECURITY_PROTOCOL": "SSL",
        "SENSORLOG_WRITER_KAFKA_SSL_CA_FILE": str(ca or pki.ca.cert),
        "SENSORLOG_WRITER_KAFKA_SSL_CERT_FILE": str(pki.client.cert),
        "SENSORLOG_WRITER_KAFKA_SSL_KEY_FILE": str(pki.client.key),
    }


def publish(security: dict[str, str], topic: str, *args: str, stdin: bytes | None = None) -> None:
    """sensorlog-publish as a user runs it, configured by the writer's variables."""
    r = subprocess.run(
        [sys.executable, "-m", "sensorlog_writer.publish", "--topic", topic, *args],
        env={**os.environ, **security},
        input=stdin,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stderr.decode()[-2000:]


async def dead_letters(security: dict[str, str], topic: str, expected: int) -> list[bytes]:
    """Read the DLQ over the same secured listener (the consumer side of client_kwargs)."""
    s = PublishSecurity.model_validate(
        {
            k.removeprefix("SENSORLOG_WRITER_").lower(): v
            for k, v in security.items()
            if k != "SENSORLOG_WRITER_KAFKA_BOOTSTRAP_SERVERS"
        }
    )
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=security["SENSORLOG_WRITER_KAFKA_BOOTSTRAP_SERVERS"],
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **client_kwargs(s),
    )
    await consumer.start()
    out: list[bytes] = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(out) < expected:
            for recs in (await consumer.getmany(timeout_ms=500)).values():
                out.extend(r.value or b"" for r in recs)
    finally:
        await consumer.stop()
    return out


async def _pipeline(
    tmp_path: Path, sk: SecureKafka, dsn: str, security: dict[str, str], secret: str | None
) -> None:
    tag = uuid.uuid4().hex[:8]
    topics = Topics(f"readings-{tag}", f"sensors-{tag}", f"writers-{tag}")
    await create_topics(
        sk.broker.bootstrap,
        {topics.readings: 3, topics.sensors: 1, topics.readings_dlq: 1, topics.sensors_dlq: 1},
    )
    env = {**writer_env(sk.broker, dsn, topics), **security}
    writer = WriterProcess(tmp_path / "writer.log", env).start()
    try:
        publish(security, topics.readings, "load", "--count", "1000", "--sensors", "10",
                "--per-message", "10", "--rate", "0", "--start-ts", "1700000000")  # fmt: skip
        publish(security, topics.readings, "file", "-", stdin=POISON + b"\n")
        assert await wait_for_rows(dsn, 1000, 60) == 1000
        dead = await dead_letters(security, topics.readings_dlq, 1)
        assert dead == [POISON]
        metrics = http_body(writer.status_port, "/metrics")
        assert "sensorlog_writer" in metrics
        if secret is not None:
            assert secret not in metrics  # labels and values
    finally:
        assert writer.terminate() == 0
    log = writer.log.read_text()
    assert "writer started" in log
    if secret is not None:
        assert secret not in log


async def test_writer_consumes_and_dead_letters_over_sasl_ssl_scram(
    tmp_path: Path, secure_kafka: SecureKafka, pki: Pki, pg_dsn: str
) -> None:
    await _pipeline(
        tmp_path, secure_kafka, pg_dsn, sasl_env(secure_kafka, pki), secure_kafka.scram_password
    )


async def test_writer_consumes_and_dead_letters_over_mtls(
    tmp_path: Path, secure_kafka: SecureKafka, pki: Pki, pg_dsn: str
) -> None:
    await _pipeline(tmp_path, secure_kafka, pg_dsn, mtls_env(secure_kafka, pki), None)


def _refused(tmp_path: Path, env: dict[str, str]) -> tuple[int, float, list[dict[str, object]]]:
    writer = WriterProcess(tmp_path / "writer.log", env).start(wait_ready=False)
    started = time.monotonic()
    assert writer.proc is not None
    try:
        code = writer.proc.popen.wait(60)
    finally:
        writer.stop()
    lines = [json.loads(x) for x in writer.log.read_text().splitlines() if x.startswith("{")]
    return code, time.monotonic() - started, lines


@pytest.mark.parametrize("case", ["wrong-password", "untrusted-broker-cert"])
async def test_refused_writer_exits_at_once_with_one_clear_line(
    tmp_path: Path, secure_kafka: SecureKafka, pki: Pki, pg_dsn: str, case: str
) -> None:
    topics = Topics("unused", "unused-sensors", f"writers-{uuid.uuid4().hex[:8]}")
    wrong = "not-" + secure_kafka.scram_password
    security = (
        sasl_env(secure_kafka, pki, password=wrong)
        if case == "wrong-password"
        else mtls_env(secure_kafka, pki, ca=pki.rogue_ca.cert)
    )
    env = {**writer_env(secure_kafka.broker, pg_dsn, topics), **security}
    code, seconds, lines = _refused(tmp_path, env)
    assert code == EXIT_REFUSED
    # One attempt, not aiokafka's reconnect loop: the process is gone within seconds.
    assert seconds < 20
    errors = [x for x in lines if x["level"] == "ERROR"]
    assert len(errors) == 1, lines
    expected = "SASL authentication failed" if case == "wrong-password" else "not trusted"
    assert expected in str(errors[0]["reason"])
    assert wrong not in (tmp_path / "writer.log").read_text()
