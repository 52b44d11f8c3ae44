"""Writer and query service against PostgreSQL 15 with TLS ``verify-full`` and a SCRAM
password read from a file; refusals (wrong password, untrusted certificate, plaintext)
end the writer at once and keep the query service NOT_SERVING with one clear line."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import pytest

from sensorlog_stack.kafka import Kafka, create_topics
from sensorlog_stack.pipeline import Load, Topics, produce, wait_for_rows, writer_env
from sensorlog_stack.services import QueryProcess, WriterProcess, grpc_serving
from sensorlog_writer.__main__ import EXIT_REFUSED

from .conftest import Pki, SecurePostgres

pytestmark = pytest.mark.integration


def tls_env(prefix: str, pki: Pki, password_file: Path, ca: Path | None = None) -> dict[str, str]:
    return {
        f"{prefix}DATABASE_SSLMODE": "verify-full",
        f"{prefix}DATABASE_SSL_ROOT_CERT_FILE": str(ca or pki.ca.cert),
        f"{prefix}DATABASE_PASSWORD_FILE": str(password_file),
    }


async def test_writer_and_query_over_verify_full(
    tmp_path: Path,
    kafka: Kafka,
    secure_postgres: SecurePostgres,
    secure_db: str,
    pki: Pki,
    password_file: Path,
) -> None:
    dsn = secure_postgres.dsn(secure_db)
    tag = uuid.uuid4().hex[:8]
    topics = Topics(f"readings-{tag}", f"sensors-{tag}", f"writers-{tag}")
    await create_topics(kafka.bootstrap, {topics.readings: 2, topics.sensors: 1})
    env = {
        **writer_env(kafka, dsn, topics),
        **tls_env("SENSORLOG_WRITER_", pki, password_file),
    }
    writer = WriterProcess(tmp_path / "writer.log", env).start()
    query = QueryProcess(
        tmp_path / "query.log",
        {
            "SENSORLOG_QUERY_DATABASE_DSN": dsn,
            **tls_env("SENSORLOG_QUERY_", pki, password_file),
        },
    ).start()
    try:
        load = Load(500, sensors=5)
        await produce(kafka.bootstrap, topics.readings, load.messages())
        # Read back as the admin over the socket: only the app connections use TLS.
        admin_dsn = secure_postgres.server.dsn.rsplit("/", 1)[0] + "/" + secure_db
        assert await wait_for_rows(admin_dsn, 500, 60) == 500
        assert grpc_serving(query.target)
    finally:
        assert writer.terminate() == 0
        query.terminate()
    # The server saw TLS connections from the application role.
    log = (secure_postgres.server.base_dir / "postgres.log").read_text()
    assert "no pg_hba.conf entry" not in log
    for f in (writer.log, query.log):
        assert secure_postgres.password not in f.read_text()


@pytest.mark.parametrize(
    "case, expected",
    [
        ("wrong-password", "authentication failed"),
        ("untrusted-server-cert", "not trusted"),
        ("plaintext", "authentication failed"),  # pg_hba rejects non-TLS for the role
    ],
)
async def test_refused_database_stops_the_writer_and_keeps_query_not_serving(
    tmp_path: Path,
    kafka: Kafka,
    secure_postgres: SecurePostgres,
    secure_db: str,
    pki: Pki,
    password_file: Path,
    case: str,
    expected: str,
) -> None:
    dsn = secure_postgres.dsn(secure_db)
    if case == "wrong-password":
        password_file.write_text("wrong-" + secure_postgres.password)  # noqa: ASYNC240
    security = {
        "wrong-password": tls_env("X_", pki, password_file),
        "untrusted-server-cert": tls_env("X_", pki, password_file, ca=pki.rogue_ca.cert),
        "plaintext": {
            "X_DATABASE_SSLMODE": "disable",
            "X_DATABASE_PASSWORD_FILE": str(password_file),
        },
    }[case]
    topics = Topics("unused", "unused-sensors", f"writers-{uuid.uuid4().hex[:8]}")
    env = writer_env(kafka, dsn, topics)
    env.update({k.replace("X_", "SENSORLOG_WRITER_", 1): v for k, v in security.items()})
    writer = WriterProcess(tmp_path / "writer.log", env).start(wait_ready=False)
    assert writer.proc is not None
    started = time.monotonic()
    try:
        code = writer.proc.popen.wait(60)
    finally:
        writer.stop()
    assert code == EXIT_REFUSED
    assert time.monotonic() - started < 20
    lines = [json.loads(x) for x in writer.log.read_text().splitlines() if x.startswith("{")]
    errors = [x for x in lines if x["level"] == "ERROR"]
    assert len(errors) == 1 and expected in str(errors[0]["reason"]), lines

    # The query service stays up but out of rotation, saying why once, not per probe.
    query = QueryProcess(
        tmp_path / "query.log",
        {
            "SENSORLOG_QUERY_DATABASE_DSN": dsn,
            "SENSORLOG_QUERY_HEALTH_CHECK_INTERVAL": "0.2",
            **{k.replace("X_", "SENSORLOG_QUERY_", 1): v for k, v in security.items()},
        },
    ).start(wait_ready=False)
    try:
        await asyncio.sleep(3)  # ~15 probes
        assert query.alive()
        assert not grpc_serving(query.target)
    finally:
        query.terminate()
    qlines = [json.loads(x) for x in query.log.read_text().splitlines() if x.startswith("{")]
    refusals = [x for x in qlines if x["level"] == "ERROR"]
    assert len(refusals) == 1 and expected in str(refusals[0]["reason"]), qlines
    for f in (writer.log, query.log):
        assert secure_postgres.password not in f.read_text()
