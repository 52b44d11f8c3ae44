"""asyncpg pool factory and the database flavor (TimescaleDB or plain PostgreSQL)."""

from __future__ import annotations

import enum
import json
from typing import Any

import asyncpg


class Flavor(enum.StrEnum):
    TIMESCALEDB = "timescaledb"
    POSTGRES = "postgres"


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def connect(dsn: str, **kwargs: Any) -> asyncpg.Connection:
    conn = await asyncpg.connect(dsn, **kwargs)
    await _init_connection(conn)
    return conn


async def create_pool(
    dsn: str,
    min_size: int = 1,
    max_size: int = 10,
    command_timeout: float | None = 60.0,
    **kwargs: Any,
) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        command_timeout=command_timeout,
        init=_init_connection,
        **kwargs,
    )
    assert pool is not None
    return pool


async def flavor(conn: asyncpg.Connection | asyncpg.Pool) -> Flavor:
    """TimescaleDB when the extension is installed in this database, else plain PostgreSQL."""
    installed = await conn.fetchval("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")
    return Flavor.TIMESCALEDB if installed else Flavor.POSTGRES
