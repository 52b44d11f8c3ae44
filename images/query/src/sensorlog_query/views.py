"""Which continuous aggregates AggregateReadings may read: sensorlog_core.caggs.DISCOVER, cached.

The catalog is read at most once per ``refresh`` seconds; callers meanwhile get
the last answer, which is safe because every reading statement checks the
view's watermark and invalidations again (``caggs.guard``). A database that
cannot answer DISCOVER (plain PostgreSQL, TimescaleDB older than 2.14, a role
without access to the catalog) gets no views, and one log line saying why.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence

import asyncpg
from opentelemetry import trace

from sensorlog_core import caggs, tracing

log = logging.getLogger(__name__)
tracer = trace.get_tracer("sensorlog.query")


class ViewCatalog:
    def __init__(self) -> None:
        self._views: list[caggs.View] = []
        self._read_at = -math.inf
        self._reported: tuple[str, ...] = ()

    def forget(self) -> None:
        """Read the catalog again on next use (a view went away under us)."""
        self._read_at = -math.inf

    async def get(
        self, conn: asyncpg.Connection, refresh: float, wait: float
    ) -> Sequence[caggs.View]:
        now = time.monotonic()
        if now - self._read_at < refresh:
            return self._views
        # Concurrent calls keep using the previous answer while this one reads.
        self._read_at = now
        try:
            with tracing.sql_span(tracer, caggs.DISCOVER, "SELECT"):
                rows = await conn.fetch(caggs.DISCOVER, timeout=wait)
        except (asyncpg.QueryCanceledError, asyncpg.PostgresConnectionError):
            self._read_at = -math.inf
            raise
        except asyncpg.PostgresError as exc:
            self._views = []
            self._report(
                (f"the catalog cannot be read here ({type(exc).__name__}: {exc})",),
                logging.WARNING,
            )
            return self._views
        self._views, skipped = caggs.views(rows)
        self._report(
            tuple(f"{v.schema}.{v.name}: used" for v in self._views) + tuple(skipped),
            logging.INFO,
        )
        return self._views

    def _report(self, lines: tuple[str, ...], level: int) -> None:
        # Once per change, not once per refresh.
        if lines != self._reported:
            self._reported = lines
            log.log(
                level,
                "continuous aggregates for AggregateReadings",
                extra={"views": list(lines)},
            )
