"""asyncpg pool factory and the database flavor (TimescaleDB or plain PostgreSQL)."""

from __future__ import annotations

import enum
import json
import ssl
from typing import Any

import asyncpg


class Flavor(enum.StrEnum):
    TIMESCALEDB = "timescaledb"
    POSTGRES = "postgres"


def _jsonb_encode(value: Any) -> bytes:
    # jsonb's binary wire format is a version byte (1) then the JSON text; binary
    # is what COPY (copy_records_to_table) needs.
    return b"\x01" + json.dumps(value, separators=(",", ":")).encode()


def _jsonb_decode(data: bytes) -> Any:
    return json.loads(data[1:])


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb", encoder=_jsonb_encode, decoder=_jsonb_decode, schema="pg_catalog", format="binary"
    )
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


class DatabaseRefused(RuntimeError):
    """The database refused us for a reason retrying cannot fix (credentials, certificates)."""


def fatal_reason(exc: BaseException) -> str | None:
    """Why connecting failed for good, or None when a retry may succeed (server down, busy)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: the server's certificate is not trusted ({exc.verify_message})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed ({exc.reason or exc})"
    if isinstance(
        exc, asyncpg.InvalidPasswordError | asyncpg.InvalidAuthorizationSpecificationError
    ):
        # The server's text names the user and the pg_hba rule, never the password.
        return f"authentication failed ({exc})"
    if isinstance(exc, ConnectionError) and "rejected SSL upgrade" in str(exc):
        return "the server does not offer TLS but sslmode requires it"
    if isinstance(exc, asyncpg.ClientConfigurationError):
        return f"bad connection settings ({exc})"
    return None


async def preflight(dsn: str, timeout: float = 10.0) -> None:
    """Connect once; raise :class:`DatabaseRefused` when the failure is not transient.

    Long-running processes call this before their retry loops start, so a wrong
    password or an untrusted certificate ends them with one clear line instead of
    an endless series of reconnects that can never succeed.
    """
    try:
        conn = await asyncpg.connect(dsn, timeout=timeout)
    except Exception as exc:
        reason = fatal_reason(exc)
        if reason is not None:
            raise DatabaseRefused(f"database: {reason}") from None
        return  # unreachable for now: the caller's retries cover that
    await conn.close()
