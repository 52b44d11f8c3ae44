"""Continuous aggregates over ``sensor_data``: what the operator writes, the query service reads.

The operator creates continuous aggregates from ``Hypertable`` resources; the
query service answers ``AggregateReadings`` from one when it matches. For that
the query service must know what each column of the view holds, and a view's
SQL text is no reliable way to learn it. So every column the operator creates
carries a *tag* in its column comment::

    COMMENT ON COLUMN sensor_data_hourly.avg_temperature IS 'sensorlog:avg(temperature)'

Tags are ``sensorlog:bucket`` (the ``time_bucket`` column),
``sensorlog:group(<column>)`` (a GROUP BY column), ``sensorlog:count(*)``
(readings in the bucket) and ``sensorlog:<function>(<column>)``. A view made by
hand can be tagged the same way, provided each column is computed by
:func:`expression`. ``first`` and ``last`` are the first and last *non-null*
value by time, as in ``AggregateReadings``.

The query service reads these views through :data:`DISCOVER` and picks one with
:func:`plan`; the SQL that combines the view with raw rows is in
:mod:`sensorlog_core.queries`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

TAG_PREFIX = "sensorlog:"
BUCKET = "bucket"
ALL_ROWS = "*"
# Functions whose column the operator can create; the query service uses
# count, avg, min, max, first and last.
FUNCTIONS = ("avg", "min", "max", "sum", "count", "first", "last", "stddev")
# Name of the count(*) column the operator adds to every aggregate.
ROWS_COLUMN = "readings"

_TAG = re.compile(r"^sensorlog:(?:(bucket)|([a-z_]+)\(([a-z_][a-z0-9_]*|\*)\))$")


def tag(function: str, column: str | None = None) -> str:
    """The column comment of a bucket (``tag("bucket")``), group or aggregate column."""
    if function == BUCKET:
        return TAG_PREFIX + BUCKET
    return f"{TAG_PREFIX}{function}({column})"


def parse_tag(comment: str | None) -> tuple[str, str | None] | None:
    """``("bucket", None)``, ``("group", col)``, ``(function, col or "*")``; None: no tag."""
    if not comment:
        return None
    m = _TAG.match(comment.strip())
    if m is None:
        return None
    if m.group(1):
        return (BUCKET, None)
    return (m.group(2), m.group(3))


def expression(function: str, column: str, time_column: str) -> str:
    """The SQL of an aggregate column; ``column`` and ``time_column`` are quoted identifiers.

    ``count(*)`` is ``expression("count", "*", ...)``.
    """
    if function not in FUNCTIONS:
        raise ValueError(f"unknown aggregate function {function!r}")
    if function in ("first", "last"):
        # TimescaleDB's first()/last() take the row at the earliest/latest time,
        # even when the column is NULL there; AggregateReadings wants a value.
        return f"{function}({column}, {time_column}) FILTER (WHERE {column} IS NOT NULL)"
    return f"{function}({column})"


def needed(function: str, column: str) -> tuple[tuple[str, str], ...]:
    """The stored aggregates a request's (function, column) is combined from, over buckets."""
    if function == "avg":
        # An average of several buckets is weighted by each one's count.
        return (("avg", column), ("count", column))
    return ((function, column),)


# --------------------------------------------------------------------------- discovery

# One row per continuous aggregate defined directly on sensor_data, with its
# bucket, watermark, tagged columns and pending invalidations (all in
# microseconds since the epoch, TimescaleDB's internal time for timestamptz).
# Needs TimescaleDB 2.14 or newer (continuous_aggs_bucket_function's columns).
DISCOVER = """
SELECT ca.mat_hypertable_id AS mat_id,
       ca.raw_hypertable_id AS raw_id,
       ca.user_view_schema AS view_schema,
       ca.user_view_name AS view_name,
       bf.bucket_func::text AS bucket_func,
       bf.bucket_fixed_width AS fixed_width,
       bf.bucket_timezone AS timezone,
       (extract(epoch FROM bf.bucket_width::interval) * 1000000)::bigint AS width_us,
       (extract(epoch FROM
            coalesce(bf.bucket_origin::timestamptz, '2000-01-03 00:00:00+00'::timestamptz)
            + coalesce(bf.bucket_offset::interval, interval '0')) * 1000000)::bigint AS origin_us,
       _timescaledb_functions.cagg_watermark(ca.mat_hypertable_id) AS watermark_us,
       has_table_privilege(format('%I.%I', ca.user_view_schema, ca.user_view_name), 'SELECT')
         AS readable,
       (SELECT coalesce(json_agg(json_build_array(a.attname, col_description(a.attrelid, a.attnum))
                                 ORDER BY a.attnum), '[]')::text
          FROM pg_attribute a
         WHERE a.attrelid = format('%I.%I', ca.user_view_schema, ca.user_view_name)::regclass
           AND a.attnum > 0 AND NOT a.attisdropped) AS columns,
       (SELECT coalesce(json_agg(json_build_array(i.lo, i.hi)), '[]')::text FROM (
            SELECT lowest_modified_value AS lo, greatest_modified_value AS hi
              FROM _timescaledb_catalog.continuous_aggs_hypertable_invalidation_log
             WHERE hypertable_id = ca.raw_hypertable_id
            UNION ALL
            SELECT lowest_modified_value, greatest_modified_value
              FROM _timescaledb_catalog.continuous_aggs_materialization_invalidation_log
             WHERE materialization_id = ca.mat_hypertable_id) i) AS invalidations
  FROM _timescaledb_catalog.continuous_agg ca
  JOIN _timescaledb_catalog.hypertable h ON h.id = ca.raw_hypertable_id
  JOIN _timescaledb_catalog.continuous_aggs_bucket_function bf
    ON bf.mat_hypertable_id = ca.mat_hypertable_id
 WHERE format('%I.%I', h.schema_name, h.table_name)::regclass = 'sensor_data'::regclass
 ORDER BY ca.user_view_schema, ca.user_view_name
"""


def guard(mat_param: str, raw_param: str, lo_param: str, hi_param: str) -> str:
    """SQL that is true while the view's rows in [lo, hi) are materialised and up to date.

    Evaluated in the reading statement itself (same snapshot), so rows written
    after the view was read by :data:`DISCOVER` can never be missed.
    """
    overlap = f"lowest_modified_value < {hi_param} AND greatest_modified_value >= {lo_param}"
    return (
        f"_timescaledb_functions.cagg_watermark({mat_param}) >= {hi_param}"
        " AND NOT EXISTS (SELECT 1 FROM"
        " _timescaledb_catalog.continuous_aggs_hypertable_invalidation_log"
        f" WHERE hypertable_id = {raw_param} AND {overlap})"
        " AND NOT EXISTS (SELECT 1 FROM"
        " _timescaledb_catalog.continuous_aggs_materialization_invalidation_log"
        f" WHERE materialization_id = {mat_param} AND {overlap})"
    )


@dataclass(frozen=True)
class View:
    """A continuous aggregate the query service can read."""

    schema: str
    name: str
    mat_id: int
    raw_id: int
    width_us: int
    watermark_us: int
    bucket_column: str
    sensor_column: str
    rows_column: str
    columns: Mapping[tuple[str, str], str]  # (function, field) -> column name
    invalidations: tuple[tuple[int, int], ...]  # inclusive [lo, hi], microseconds


def views(rows: Iterable[Mapping[str, Any]]) -> tuple[list[View], list[str]]:
    """The usable views among :data:`DISCOVER`'s rows, and why each other one is not."""
    usable: list[View] = []
    skipped: list[str] = []
    for r in rows:
        name = f"{r['view_schema']}.{r['view_name']}"
        why, view = _view(r)
        if view is None:
            skipped.append(f"{name}: {why}")
        else:
            usable.append(view)
    return usable, skipped


def _view(r: Mapping[str, Any]) -> tuple[str, View | None]:
    if not r["readable"]:
        return "this role has no SELECT privilege on it", None
    if not r["fixed_width"] or r["timezone"]:
        return "buckets of variable width or in a time zone", None
    if not str(r["bucket_func"]).startswith(("time_bucket(", "public.time_bucket(")):
        return f"bucket function {r['bucket_func']} is not time_bucket", None
    width = int(r["width_us"])
    if width <= 0 or int(r["origin_us"]) % width:
        return "buckets are not aligned to the Unix epoch", None
    bucket = rows = None
    groups: dict[str, str] = {}
    columns: dict[tuple[str, str], str] = {}
    untagged: list[str] = []
    for attname, comment in json.loads(r["columns"]):
        parsed = parse_tag(comment)
        if parsed is None:
            untagged.append(attname)
        elif parsed[0] == BUCKET:
            bucket = attname
        elif parsed[0] == "group":
            groups[str(parsed[1])] = attname
        elif parsed == ("count", ALL_ROWS):
            rows = attname
        else:
            columns.setdefault((parsed[0], str(parsed[1])), attname)
    if untagged:
        return f"columns without a sensorlog tag: {', '.join(untagged)}", None
    if bucket is None or rows is None:
        return "no tagged bucket or count(*) column", None
    if list(groups) != ["sensor_id"]:
        return f"grouped by {list(groups) or 'nothing'}, not by sensor_id alone", None
    invalidations = tuple((int(lo), int(hi)) for lo, hi in json.loads(r["invalidations"]))
    return "", View(
        schema=r["view_schema"],
        name=r["view_name"],
        mat_id=int(r["mat_id"]),
        raw_id=int(r["raw_id"]),
        width_us=width,
        watermark_us=int(r["watermark_us"]),
        bucket_column=bucket,
        sensor_column=groups["sensor_id"],
        rows_column=rows,
        columns=columns,
        invalidations=invalidations,
    )


# --------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class Plan:
    """Read buckets in [lo_us, hi_us) from ``view``; raw rows everywhere else."""

    view: View
    lo_us: int
    hi_us: int


def _clean_spans(lo: int, hi: int, invalid: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    spans = []
    cursor = lo
    for ilo, ihi in sorted(invalid):
        if ihi < cursor or ilo >= hi:
            continue
        if ilo > cursor:
            spans.append((cursor, ilo))
        cursor = max(cursor, ihi + 1)
    if cursor < hi:
        spans.append((cursor, hi))
    return spans


def plan(
    available: Sequence[View],
    start_us: int,
    end_us: int,
    width_us: int,
    wanted: Iterable[tuple[str, str]],
) -> Plan | None:
    """The view covering the most of [start, end) with whole, fresh buckets, or None.

    A view fits when its bucket divides the requested one (so each of its
    buckets lies in exactly one requested bucket) and it stores every
    aggregate ``wanted`` needs. Only its buckets wholly inside the range,
    below its watermark and clear of pending invalidations are used (as last
    seen by DISCOVER; the reading statement checks again with :func:`guard`).
    """
    needs = {n for f, c in wanted for n in needed(f, c)}
    best: Plan | None = None
    for view in available:
        w = view.width_us
        if width_us % w or not needs <= view.columns.keys():
            continue
        lo = -(-start_us // w) * w
        hi = (min(end_us, view.watermark_us) // w) * w
        for slo, shi in _clean_spans(lo, hi, view.invalidations):
            slo, shi = -(-slo // w) * w, (shi // w) * w
            if shi - slo < w:
                continue
            better = best is None or (shi - slo, w) > (best.hi_us - best.lo_us, best.view.width_us)
            if better:
                best = Plan(view, slo, shi)
    return best
