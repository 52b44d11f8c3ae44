"""pytest fixture: one real TimescaleDB (PGlite) for the whole test session.

Use it with ``pytest_plugins = ("sensorlog_stack.fixtures_timescale",)`` in a test
module or the root conftest, then connect to ``timescale.dsn``. Tests share one
database (and one backend session), so each should use its own table names and
run ``CREATE EXTENSION IF NOT EXISTS timescaledb`` itself.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sensorlog_stack.timescale import Timescale


@pytest.fixture(scope="session")
def timescale(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Timescale]:
    server = Timescale(tmp_path_factory.mktemp("timescale")).start()
    try:
        yield server
    finally:
        server.stop()
