"""Secured real servers for the security suite: a test CA (openssl), Kafka with an mTLS
and a SASL_SSL/SCRAM-SHA-512 listener, PostgreSQL 15 with TLS and SCRAM passwords.

Everything binds 127.0.0.1 and lives in the session's temp directory.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from sensorlog_core import db
from sensorlog_core.migrate import migrate
from sensorlog_stack.certs import CA, Pair, make_ca
from sensorlog_stack.kafka import Kafka, KafkaTls
from sensorlog_stack.postgres import Postgres, PostgresTls

SCRAM_USER = "sensorlog-writer"


@dataclass(frozen=True)
class Pki:
    ca: CA
    server: Pair
    client: Pair
    # Signed by an unrelated CA: what an attacker or a misconfigured peer presents.
    rogue_ca: CA
    rogue_client: Pair


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    base = tmp_path_factory.mktemp("pki")
    ca = make_ca(base / "ca")
    rogue = make_ca(base / "rogue", "rogue-ca")
    return Pki(
        ca=ca,
        server=ca.issue("server"),
        client=ca.issue("client", client=True),
        rogue_ca=rogue,
        rogue_client=rogue.issue("rogue-client", client=True),
    )


@dataclass(frozen=True)
class SecureKafka:
    broker: Kafka
    scram_password: str


@pytest.fixture(scope="session")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[SecureKafka]:
    password = secrets.token_urlsafe(16)
    tls = KafkaTls(pki.ca.cert, pki.server.cert, pki.server.key, {SCRAM_USER: password})
    broker = Kafka(tmp_path_factory.mktemp("secure-kafka"), tls=tls).start()
    try:
        yield SecureKafka(broker, password)
    finally:
        broker.stop()


@dataclass(frozen=True)
class SecurePostgres:
    server: Postgres
    role: str
    password: str

    def dsn(self, database: str, host: str = "127.0.0.1") -> str:
        """The application's DSN: no password (that comes from a file) and no TLS params."""
        return f"postgresql://{self.role}@{host}:{self.server.port}/{database}"


@pytest.fixture(scope="session")
def secure_postgres(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[SecurePostgres]:
    server = Postgres(
        tmp_path_factory.mktemp("secure-postgres"),
        tls=PostgresTls(pki.server.cert, pki.server.key),
    ).start()
    try:
        yield SecurePostgres(server, "sensorlog_app", secrets.token_urlsafe(16))
    finally:
        server.destroy()


@pytest.fixture
async def secure_db(secure_postgres: SecurePostgres, pki: Pki) -> AsyncIterator[str]:
    """A fresh database owned by the application role, migrated over TLS as that role."""
    sp = secure_postgres
    name = f"sec_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(sp.server.dsn)
    try:
        exists = await admin.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", sp.role)
        if not exists:
            # The password travels in a statement to a local test server only; the
            # server stores its SCRAM verifier (password_encryption=scram-sha-256).
            await admin.execute(f"CREATE ROLE {sp.role} LOGIN PASSWORD '{sp.password}'")
        await admin.execute(f'CREATE DATABASE "{name}" OWNER {sp.role}')
    finally:
        await admin.close()
    conn = await db.connect(
        sp.dsn(name) + f"?sslmode=verify-full&sslrootcert={pki.ca.cert}", password=sp.password
    )
    try:
        await migrate(conn)
    finally:
        await conn.close()
    yield name


@pytest.fixture
def password_file(tmp_path: Path, secure_postgres: SecurePostgres) -> Path:
    f = tmp_path / "db-password"
    f.write_text(secure_postgres.password + "\n")  # as `kubectl create secret --from-file` may
    f.chmod(0o600)
    return f
