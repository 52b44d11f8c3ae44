"""Versioned, idempotent schema migrations (``sensorlog-migrate``).

Migrations are the ``migrations/NNNN_name.sql`` files shipped in this package;
``NNNN_name.timescaledb.sql`` runs after its plain file only on TimescaleDB, so
plain PostgreSQL gets the same tables, columns and indexes without hypertables.
Each applied version is recorded with a checksum: running twice changes
nothing, and an edited, already-applied migration is refused.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources
from typing import Literal

import asyncpg
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from sensorlog_core import db
from sensorlog_core.logs import setup_logging
from sensorlog_core.settings import DatabaseSettings, load

log = logging.getLogger(__name__)

TimescaleMode = Literal["auto", "require", "off"]
_LOCK_KEY = 0x5E4501  # pg_advisory_lock key: one migrator at a time
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+?)(\.timescaledb)?\.sql$")


class MigrateError(RuntimeError):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str
    timescale_sql: str = ""

    @property
    def checksum(self) -> str:
        return hashlib.sha256((self.sql + "\0" + self.timescale_sql).encode()).hexdigest()[:16]


def load_migrations() -> list[Migration]:
    plain: dict[int, tuple[str, str]] = {}
    extra: dict[int, str] = {}
    for entry in resources.files("sensorlog_core").joinpath("migrations").iterdir():
        m = _FILE.match(entry.name)
        if not m:
            continue
        version, name, is_ts = int(m.group(1)), m.group(2), bool(m.group(3))
        if is_ts:
            extra[version] = entry.read_text()
        else:
            plain[version] = (name, entry.read_text())
    orphans = set(extra) - set(plain)
    if orphans:
        raise MigrateError(f"timescaledb migration without a plain one: {sorted(orphans)}")
    return [Migration(v, plain[v][0], plain[v][1], extra.get(v, "")) for v in sorted(plain)]


async def _prepare_extension(conn: asyncpg.Connection, mode: TimescaleMode) -> db.Flavor:
    if mode == "off":
        return db.Flavor.POSTGRES
    available = await conn.fetchval(
        "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
    )
    if not available:
        if mode == "require":
            raise MigrateError(
                "SENSORLOG_MIGRATE_TIMESCALEDB=require but the timescaledb extension is not "
                "available on this server"
            )
        return db.Flavor.POSTGRES
    await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    return db.Flavor.TIMESCALEDB


async def migrate(conn: asyncpg.Connection, mode: TimescaleMode = "auto") -> list[Migration]:
    """Apply pending migrations; return those applied now (empty when up to date)."""
    migrations = load_migrations()
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version    integer PRIMARY KEY,
                   name       text        NOT NULL,
                   checksum   text        NOT NULL,
                   flavor     text        NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        flavor = await _prepare_extension(conn, mode)
        done = {r["version"]: r for r in await conn.fetch("SELECT * FROM schema_migrations")}
        applied: list[Migration] = []
        for m in migrations:
            row = done.get(m.version)
            if row is not None:
                if row["checksum"] != m.checksum:
                    raise MigrateError(
                        f"migration {m.version:04d}_{m.name} was changed after it was applied "
                        f"(checksum {row['checksum']} in the database, {m.checksum} now); "
                        "add a new migration instead of editing an applied one"
                    )
                continue
            async with conn.transaction():
                await conn.execute(m.sql)
                if flavor is db.Flavor.TIMESCALEDB and m.timescale_sql:
                    await conn.execute(m.timescale_sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum, flavor) "
                    "VALUES ($1, $2, $3, $4)",
                    m.version,
                    m.name,
                    m.checksum,
                    flavor.value,
                )
            log.info(
                "applied migration",
                extra={"version": m.version, "migration": m.name, "flavor": flavor.value},
            )
            applied.append(m)
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)


class MigrateSettings(DatabaseSettings):
    """Settings of ``sensorlog-migrate`` (env prefix ``SENSORLOG_MIGRATE_``)."""

    model_config = SettingsConfigDict(env_prefix="SENSORLOG_MIGRATE_", extra="ignore", frozen=True)

    timescaledb: TimescaleMode = Field(
        "auto",
        description="auto: use TimescaleDB when the server has it; require: fail without it; "
        "off: plain PostgreSQL tables even when TimescaleDB is there.",
    )
    connect_timeout: float = Field(10.0, gt=0, description="Seconds to wait for the database.")


async def _run(settings: MigrateSettings) -> int:
    try:
        conn = await db.connect(settings.database_url(), timeout=settings.connect_timeout)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        log.error(
            "cannot connect to the database",
            extra={"error": type(exc).__name__, "detail": str(exc)},
        )
        return 1
    try:
        applied = await migrate(conn, settings.timescaledb)
        flavor = await db.flavor(conn)
    except MigrateError as exc:
        log.error("migration refused: %s", exc)
        return 1
    finally:
        await conn.close()
    log.info(
        "schema up to date", extra={"applied": [m.version for m in applied], "flavor": flavor.value}
    )
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="sensorlog-migrate",
        description="Apply the sensorlog schema migrations. Configured by SENSORLOG_MIGRATE_* "
        "environment variables (SENSORLOG_MIGRATE_DATABASE_DSN, SENSORLOG_MIGRATE_TIMESCALEDB).",
    )
    parser.parse_args(argv)
    settings = load(MigrateSettings)
    setup_logging(settings.log_level, settings.log_format)
    raise SystemExit(asyncio.run(_run(settings)))


if __name__ == "__main__":
    main()
