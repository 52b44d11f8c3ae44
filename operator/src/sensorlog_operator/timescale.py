"""Database side: read the table's TimescaleDB state, claim the table, run planned actions.

Reads only ``pg_catalog`` and ``timescaledb_information.*``; writes only through
TimescaleDB's own functions (``create_hypertable``, ``add_*_policy``, ``alter_job``...).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import asyncpg

from sensorlog_core import db
from sensorlog_operator import constants as c
from sensorlog_operator import sql
from sensorlog_operator.reconcile import Action, Job, Observed, ObservedCagg
from sensorlog_operator.spec import HypertableSpec

log = logging.getLogger(__name__)

# SQLSTATE classes a retry can cure: connection (08), resources (53), operator
# intervention/shutdown (57), rollback/deadlock (40), lock not available (55),
# authorization (28: the Secret or role may be fixed without touching the spec).
_TRANSIENT_CLASSES = frozenset({"08", "53", "57", "40", "55", "28"})


class TransientDatabaseError(Exception):
    """The database could not be reached or asked us to come back later."""


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, OSError | TimeoutError | asyncpg.InterfaceError):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", None) or ""
        return state[:2] in _TRANSIENT_CLASSES
    return False


async def connect(dsn: str, timeout: float) -> asyncpg.Connection:
    try:
        return await db.connect(dsn, timeout=timeout)
    except Exception as exc:
        if is_transient(exc):
            raise TransientDatabaseError(_describe(exc)) from exc
        raise


def _describe(exc: BaseException) -> str:
    detail = str(exc).strip() or type(exc).__name__
    return f"{type(exc).__name__}: {detail}"


async def observe(conn: asyncpg.Connection, spec: HypertableSpec) -> Observed:
    schema, table = spec.schema_, spec.table
    extension = bool(
        await conn.fetchval("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")
    )
    rows = await conn.fetch(
        """SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS type
             FROM pg_attribute a
             JOIN pg_class t ON t.oid = a.attrelid
             JOIN pg_namespace n ON n.oid = t.relnamespace
            WHERE n.nspname = $1 AND t.relname = $2 AND t.relkind IN ('r', 'p')
              AND a.attnum > 0 AND NOT a.attisdropped""",
        schema,
        table,
    )
    columns = {r["attname"]: r["type"] for r in rows}
    if not extension or not columns:
        return Observed(extension=extension, table_exists=bool(columns), columns=columns)

    ht = await conn.fetchrow(
        """SELECT d.column_name, d.time_interval, h.compression_enabled
             FROM timescaledb_information.hypertables h
             LEFT JOIN timescaledb_information.dimensions d
               ON d.hypertable_schema = h.hypertable_schema
              AND d.hypertable_name = h.hypertable_name AND d.dimension_number = 1
            WHERE h.hypertable_schema = $1 AND h.hypertable_name = $2""",
        schema,
        table,
    )
    cagg_names = [cagg.name for cagg in spec.continuous_aggregates]
    relations = {
        r["relname"]
        for r in await conn.fetch(
            """SELECT t.relname FROM pg_class t JOIN pg_namespace n ON n.oid = t.relnamespace
                WHERE n.nspname = $1 AND t.relname = ANY($2::text[])""",
            schema,
            cagg_names,
        )
    }
    if ht is None:
        return Observed(
            extension=True,
            table_exists=True,
            columns=columns,
            other_relations=frozenset(relations),
        )

    segment: list[tuple[int, str]] = []
    order: list[tuple[int, str]] = []
    for r in await conn.fetch(
        """SELECT attname, segmentby_column_index, orderby_column_index, orderby_asc
             FROM timescaledb_information.compression_settings
            WHERE hypertable_schema = $1 AND hypertable_name = $2""",
        schema,
        table,
    ):
        if r["segmentby_column_index"] is not None:
            segment.append((r["segmentby_column_index"], r["attname"]))
        if r["orderby_column_index"] is not None:
            way = "ASC" if r["orderby_asc"] else "DESC"
            order.append((r["orderby_column_index"], f"{r['attname']} {way}"))
    compressed = await conn.fetchval(
        """SELECT count(*) FROM timescaledb_information.chunks
            WHERE hypertable_schema = $1 AND hypertable_name = $2 AND is_compressed""",
        schema,
        table,
    )
    retention = compression = None
    for r in await conn.fetch(
        """SELECT job_id, proc_name, schedule_interval,
                  CASE WHEN config ? 'drop_after' THEN (config->>'drop_after')::interval END
                    AS drop_after,
                  CASE WHEN config ? 'compress_after' THEN (config->>'compress_after')::interval END
                    AS compress_after
             FROM timescaledb_information.jobs
            WHERE hypertable_schema = $1 AND hypertable_name = $2
              AND proc_name IN ('policy_retention', 'policy_compression')
            ORDER BY job_id""",
        schema,
        table,
    ):
        if r["proc_name"] == "policy_retention":
            retention = Job(r["job_id"], r["schedule_interval"], {"drop_after": r["drop_after"]})
        else:
            compression = Job(
                r["job_id"], r["schedule_interval"], {"compress_after": r["compress_after"]}
            )
    caggs: dict[str, ObservedCagg] = {}
    for r in await conn.fetch(
        """SELECT ca.view_name,
                  obj_description(format('%I.%I', ca.view_schema, ca.view_name)::regclass,
                                  'pg_class') AS comment,
                  j.job_id, j.schedule_interval,
                  (j.config->>'start_offset')::interval AS start_offset,
                  (j.config->>'end_offset')::interval AS end_offset
             FROM timescaledb_information.continuous_aggregates ca
             LEFT JOIN timescaledb_information.jobs j
               ON j.hypertable_schema = ca.view_schema AND j.hypertable_name = ca.view_name
              AND j.proc_name = 'policy_refresh_continuous_aggregate'
            WHERE ca.hypertable_schema = $1 AND ca.hypertable_name = $2""",
        schema,
        table,
    ):
        job = None
        if r["job_id"] is not None:
            job = Job(
                r["job_id"],
                r["schedule_interval"],
                {"start_offset": r["start_offset"], "end_offset": r["end_offset"]},
            )
        caggs[r["view_name"]] = ObservedCagg(r["view_name"], table, r["comment"], job)
    return Observed(
        extension=True,
        table_exists=True,
        columns=columns,
        is_hypertable=True,
        partition_column=ht["column_name"],
        chunk_interval=ht["time_interval"],
        compression_enabled=bool(ht["compression_enabled"]),
        segment_by=tuple(name for _, name in sorted(segment)),
        order_by=tuple(name for _, name in sorted(order)),
        compressed_chunks=int(compressed or 0),
        retention=retention,
        compression=compression,
        caggs=caggs,
        other_relations=frozenset(relations - set(caggs)),
    )


_CLAIMS = sql.qualified(c.CLAIMS_SCHEMA, c.CLAIMS_TABLE)


async def claim(conn: asyncpg.Connection, spec: HypertableSpec, owner: str) -> str:
    """Record ``owner`` (namespace/name) as the manager of the table; return the actual owner.

    Kept in the database itself, so two resources (even in two clusters) that point
    at the same table cannot both manage it.
    """
    await conn.execute(
        f"CREATE SCHEMA IF NOT EXISTS {sql.ident(c.CLAIMS_SCHEMA)}; "
        f"CREATE TABLE IF NOT EXISTS {_CLAIMS} ("
        " hypertable text PRIMARY KEY,"
        " owner text NOT NULL,"
        " claimed_at timestamptz NOT NULL DEFAULT now())"
    )
    await conn.execute(
        f"INSERT INTO {_CLAIMS} (hypertable, owner) VALUES ($1, $2) "
        "ON CONFLICT (hypertable) DO NOTHING",
        spec.qualified,
        owner,
    )
    current: str = await conn.fetchval(
        f"SELECT owner FROM {_CLAIMS} WHERE hypertable = $1", spec.qualified
    )
    return current


async def release(conn: asyncpg.Connection, spec: HypertableSpec, owner: str) -> None:
    exists = await conn.fetchval("SELECT to_regclass($1)", f"{c.CLAIMS_SCHEMA}.{c.CLAIMS_TABLE}")
    if exists:
        await conn.execute(
            f"DELETE FROM {_CLAIMS} WHERE hypertable = $1 AND owner = $2", spec.qualified, owner
        )


async def apply(conn: asyncpg.Connection, actions: Iterable[Action]) -> list[Action]:
    """Run the actions in order; return those done. A failure stops here: the next run re-plans."""
    done: list[Action] = []
    for action in actions:
        log.info("applying", extra={"policy": action.policy, "action": action.description})
        # One transaction per action: an operator killed between a view's CREATE and
        # its owner comment would leave a view it then refuses as someone else's.
        async with conn.transaction():
            await conn.execute(action.sql)
            for statement in action.then:
                await conn.execute(statement)
        done.append(action)
    return done


def as_dict(obs: Observed) -> dict[str, Any]:
    """A log-friendly summary (no secrets live in Observed)."""
    return {
        "hypertable": obs.is_hypertable,
        "retention_job": obs.retention.job_id if obs.retention else None,
        "compression_job": obs.compression.job_id if obs.compression else None,
        "caggs": sorted(obs.caggs),
    }
