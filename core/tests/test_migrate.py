import asyncpg
import pytest

from sensorlog_core import db
from sensorlog_core.migrate import MigrateError, load_migrations, migrate

pytestmark = pytest.mark.integration


async def _columns(conn: asyncpg.Connection, table: str) -> list[tuple[str, str]]:
    rows = await conn.fetch(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_name = $1 ORDER BY ordinal_position",
        table,
    )
    return [(r["column_name"], r["data_type"]) for r in rows]


async def test_migrations_create_the_schema_and_run_twice_without_change(pg_dsn: str) -> None:
    conn = await db.connect(pg_dsn)
    try:
        # pg_dsn already ran migrate() once; a second run applies nothing.
        assert await migrate(conn) == []
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(
            load_migrations()
        )
        assert await _columns(conn, "sensor_data") == [
            ("ts", "timestamp with time zone"),
            ("sensor_id", "bigint"),
            ("temperature", "double precision"),
            ("cpu", "double precision"),
            ("extra", "jsonb"),
        ]
        assert [c for c, _ in await _columns(conn, "sensors")] == [
            "id",
            "type",
            "location",
            "metadata",
            "updated_at",
        ]
        assert await db.flavor(conn) is db.Flavor.POSTGRES
        # No FK: a reading for an unknown sensor lands.
        await conn.execute("INSERT INTO sensor_data (ts, sensor_id) VALUES (now(), 424242)")
        # The idempotency key is enforced.
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(
                "INSERT INTO sensor_data (ts, sensor_id) SELECT ts, sensor_id FROM sensor_data"
            )
    finally:
        await conn.close()


async def test_an_edited_applied_migration_is_refused(pg_dsn: str) -> None:
    conn = await db.connect(pg_dsn)
    try:
        await conn.execute("UPDATE schema_migrations SET checksum = 'x' WHERE version = 1")
        with pytest.raises(MigrateError, match="was changed after it was applied"):
            await migrate(conn)
    finally:
        await conn.close()


async def test_require_timescaledb_fails_clearly_on_plain_postgres(pg_dsn: str) -> None:
    conn = await db.connect(pg_dsn)
    try:
        with pytest.raises(MigrateError, match="timescaledb extension is not available"):
            await migrate(conn, "require")
    finally:
        await conn.close()


async def test_migrations_on_timescaledb_make_a_hypertable_and_run_twice_without_change(
    ts_dsn: str,
) -> None:
    conn = await db.connect(ts_dsn)
    try:
        # ts_dsn already migrated this database; a second run applies nothing.
        assert await migrate(conn, "require") == []
        assert await db.flavor(conn) is db.Flavor.TIMESCALEDB
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM timescaledb_information.hypertables "
                "WHERE hypertable_name = 'sensor_data'"
            )
            == 1
        )
        flavors = {r["flavor"] for r in await conn.fetch("SELECT flavor FROM schema_migrations")}
        assert flavors == {"timescaledb"}
        assert [c for c, _ in await _columns(conn, "sensor_data")] == [
            "ts",
            "sensor_id",
            "temperature",
            "cpu",
            "extra",
        ]
    finally:
        await conn.close()
