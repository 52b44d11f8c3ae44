"""Session-scoped pytest fixtures for the real local stack (loaded by the root conftest).

Each server starts once per test session on 127.0.0.1 and is stopped by PID
at the end. Tests get a fresh, migrated database each (``pg_dsn`` /
``database``), so they never see each other's rows.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from sensorlog_core import db
from sensorlog_core.migrate import migrate
from sensorlog_stack.postgres import Postgres
from sensorlog_stack.timescale import Timescale

_counter = itertools.count()


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    pg = Postgres(Path(tmp_path_factory.mktemp("postgres"))).start()
    try:
        yield pg
    finally:
        pg.destroy()


def _with_db(dsn: str, name: str) -> str:
    return dsn.rsplit("/", 1)[0] + "/" + name


@pytest.fixture
async def pg_dsn(postgres: Postgres) -> AsyncIterator[str]:
    """DSN of a fresh, migrated database on the session's PostgreSQL 15."""
    name = f"t{next(_counter)}"
    admin = await asyncpg.connect(postgres.dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = _with_db(postgres.dsn, name)
    conn = await db.connect(dsn)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    yield dsn
    # Best effort: a test that stopped or restarted the server must not fail here.
    with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        admin = await asyncpg.connect(postgres.dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture(scope="session")
async def _ts_migrated(timescale: Timescale) -> str:
    conn = await db.connect(timescale.dsn)
    try:
        await migrate(conn, "require")
    finally:
        await conn.close()
    return timescale.dsn


@pytest.fixture
async def ts_dsn(_ts_migrated: str) -> str:
    """DSN of the session's migrated TimescaleDB, its sensorlog tables emptied for this test.

    TimescaleDB (PGlite) has one database and one backend session, so tests
    share it and must not run concurrently against it.
    """
    conn = await asyncpg.connect(_ts_migrated)
    try:
        await conn.execute("TRUNCATE sensor_data, sensors, consumer_offsets")
    finally:
        await conn.close()
    return _ts_migrated
