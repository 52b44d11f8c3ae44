import asyncio
import os
from pathlib import Path

import asyncpg
import pytest

from sensorlog_stack.postgres import Postgres
from sensorlog_stack.proc import port_open

pytestmark = pytest.mark.integration


async def test_postgres_serves_many_connections_and_stops_without_leftovers(
    tmp_path: Path,
) -> None:
    pg = Postgres(tmp_path / "pg").start()
    try:
        assert pg.proc is not None
        pid = pg.proc.pid
        conns = [await asyncpg.connect(pg.dsn) for _ in range(5)]
        # Five sessions at once, each in its own backend: a real multi-connection server.
        pids = await asyncio.gather(*(c.fetchval("SELECT pg_backend_pid()") for c in conns))
        assert len(set(pids)) == 5
        assert (await conns[0].fetchval("SHOW server_version")).startswith("15.")
        for c in conns:
            await c.close()
    finally:
        pg.destroy()
    assert not port_open(pg.port)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_postgres_restart_keeps_data(tmp_path: Path) -> None:
    pg = Postgres(tmp_path / "pg").start()
    try:
        conn = await asyncpg.connect(pg.dsn)
        await conn.execute("CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)")
        await conn.close()
        pg.stop()
        assert not port_open(pg.port)
        pg.start()
        conn = await asyncpg.connect(pg.dsn)
        assert await conn.fetchval("SELECT x FROM kept") == 42
        await conn.close()
    finally:
        pg.destroy()
