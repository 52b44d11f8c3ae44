"""Fixtures: a real query server on 127.0.0.1 (port 0) over a real database.

``database`` is parameterised over plain PostgreSQL 15 (a fresh migrated
database per test) and TimescaleDB (one shared, migrated database, emptied
before each test), so a test that uses it asserts the same answers on both.
"""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest

from sensorlog.v1 import query_pb2_grpc as pb_grpc
from sensorlog_core import db
from sensorlog_core.migrate import migrate
from sensorlog_query.server import QueryServer
from sensorlog_query.settings import QuerySettings
from sensorlog_stack.postgres import Postgres

_TS_PLUGIN = "sensorlog_stack.fixtures_timescale"


def pytest_configure(config: pytest.Config) -> None:
    # The TimescaleDB launcher is delivered separately; use its fixtures when
    # they exist, whether or not the root conftest registers them yet.
    if importlib.util.find_spec(_TS_PLUGIN) is not None and not config.pluginmanager.has_plugin(
        _TS_PLUGIN
    ):
        config.pluginmanager.import_plugin(_TS_PLUGIN)


@dataclass
class Database:
    flavor: str
    dsn: str


# Fixtures that pick other fixtures by name are sync: getfixturevalue on an
# async fixture from inside a running event loop is not possible.


@pytest.fixture(scope="session")
def timescale_dsn(request: pytest.FixtureRequest) -> str:
    if importlib.util.find_spec(_TS_PLUGIN) is None:
        pytest.skip(f"TimescaleDB launcher ({_TS_PLUGIN}) not delivered yet")
    return str(request.getfixturevalue("timescale").dsn)


@pytest.fixture(scope="session")
async def timescale_migrated(timescale_dsn: str) -> str:
    conn = await db.connect(timescale_dsn)
    try:
        await migrate(conn)
        flavor = await db.flavor(conn)
    finally:
        await conn.close()
    assert flavor is db.Flavor.TIMESCALEDB, "the timescale fixture has no timescaledb extension"
    return timescale_dsn


@pytest.fixture
async def timescale_clean(timescale_migrated: str) -> Database:
    """The shared TimescaleDB database, emptied for this test."""
    conn = await asyncpg.connect(timescale_migrated)
    try:
        await conn.execute("TRUNCATE sensor_data, sensors")
    finally:
        await conn.close()
    return Database("timescaledb", timescale_migrated)


@pytest.fixture(params=["postgres", "timescaledb"])
def database(request: pytest.FixtureRequest) -> Database:
    if request.param == "postgres":
        return Database("postgres", request.getfixturevalue("pg_dsn"))
    ts: Database = request.getfixturevalue("timescale_clean")
    return ts


Row = tuple[datetime, int, float | None, float | None, dict[str, Any] | None]
SensorRow = tuple[int, str | None, str | None, dict[str, Any], datetime]


@dataclass
class Running:
    server: QueryServer
    channel: grpc.aio.Channel
    stub: pb_grpc.QueryServiceStub
    dsn: str

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    async def insert_readings(self, rows: Sequence[Row]) -> None:
        """Rows of (ts, sensor_id, temperature, cpu, extra)."""
        conn = await db.connect(self.dsn)
        try:
            await conn.executemany(
                "INSERT INTO sensor_data (ts, sensor_id, temperature, cpu, extra) "
                "VALUES ($1, $2, $3, $4, $5)",
                rows,
            )
        finally:
            await conn.close()

    async def insert_sensors(self, rows: Sequence[SensorRow]) -> None:
        """Rows of (id, type, location, metadata, updated_at)."""
        conn = await db.connect(self.dsn)
        try:
            await conn.executemany(
                "INSERT INTO sensors (id, type, location, metadata, updated_at) "
                "VALUES ($1, $2, $3, $4, $5)",
                rows,
            )
        finally:
            await conn.close()


StartServer = Callable[..., Awaitable[Running]]


@pytest.fixture
async def start_server() -> AsyncIterator[StartServer]:
    """Factory: start a server on ``dsn`` with settings overrides; stopped at teardown."""
    running: list[Running] = []

    async def start(dsn: str, **overrides: Any) -> Running:
        fields: dict[str, Any] = {
            "database_dsn": dsn,
            "grpc_host": "127.0.0.1",
            "grpc_port": 0,
            "metrics_port": 0,
            "health_check_interval": 0.2,
            "shutdown_grace": 1.0,
            "connect_timeout": 2.0,
        }
        fields.update(overrides)
        server = QueryServer(QuerySettings(**fields))
        await server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
        r = Running(server, channel, pb_grpc.QueryServiceStub(channel), dsn)  # type: ignore[no-untyped-call]
        running.append(r)
        return r

    yield start
    for r in running:
        await r.channel.close()
        await r.server.stop(0.5)


@pytest.fixture
async def own_postgres(tmp_path: Path) -> AsyncIterator[Postgres]:
    """A migrated PostgreSQL of this test's own, free to stop and restart."""
    pg = Postgres(tmp_path / "pg").start()
    try:
        conn = await db.connect(pg.dsn)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        yield pg
    finally:
        pg.destroy()


@pytest.fixture
async def query(database: Database, start_server: StartServer) -> Running:
    """A server over each database flavor."""
    return await start_server(database.dsn)


@pytest.fixture
async def pg_query(pg_dsn: str, start_server: StartServer) -> Running:
    """A server over plain PostgreSQL only (error paths need no second flavor)."""
    return await start_server(pg_dsn)
