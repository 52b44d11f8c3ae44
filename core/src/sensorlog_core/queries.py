"""Every SQL statement of the read side, and the opaque page-token codec.

One place for SQL: the query service only validates requests, calls these
builders and runs what they return. Statements are parameterised; the only
text spliced in comes from the fixed tables below (column names, aggregate
expressions), never from a request.

Answers are the same on TimescaleDB and plain PostgreSQL: buckets are
``time_bucket`` or ``date_bin`` aligned to the Unix epoch, and every other
expression (first/last, gap filling with ``generate_series``) is plain SQL
that runs unchanged on both.

Timestamps leave the database as integer microseconds since the epoch: that
is cheaper to decode than ``datetime`` and converts exactly to a protobuf
``Timestamp``.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sensorlog_core import caggs
from sensorlog_core.db import Flavor

CURSOR_VERSION = 1
_MAX_TOKEN_CHARS = 512
_INT64 = (-(2**63), 2**63 - 1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Bucket starts are aligned to this origin on both flavors. time_bucket's own
# default origin is 2000-01-03 (a Monday), which would shift weekly buckets.
_ORIGIN = "'1970-01-01 00:00:00+00'::timestamptz"


class CursorError(ValueError):
    """A page token that this server did not issue for this very request."""


class Field(enum.Enum):
    """Aggregatable columns; values are the column names (never user text)."""

    TEMPERATURE = "temperature"
    CPU = "cpu"


class Aggregation(enum.Enum):
    AVG = "avg"
    MIN = "min"
    MAX = "max"
    COUNT = "count"
    FIRST = "first"
    LAST = "last"


@dataclass(frozen=True)
class Query:
    sql: str
    args: tuple[Any, ...]


class _Params:
    """Numbers positional parameters while a statement is assembled."""

    def __init__(self) -> None:
        self.args: list[Any] = []

    def __call__(self, value: Any) -> str:
        self.args.append(value)
        return f"${len(self.args)}"


def to_datetime(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def _epoch_us(expr: str) -> str:
    # extract() returns numeric since PostgreSQL 14, so this is exact.
    return f"(extract(epoch FROM {expr}) * 1000000)::bigint"


# --------------------------------------------------------------------------- tokens


def fingerprint(*parts: Any) -> str:
    """Short digest of the request fields a token is bound to (filters, range, order)."""
    raw = json.dumps(parts, separators=(",", ":"), sort_keys=True, default=str)
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def encode_cursor(kind: str, request_fp: str, key: Sequence[int]) -> str:
    body = {"v": CURSOR_VERSION, "k": kind, "f": request_fp, "p": list(key)}
    raw = json.dumps(body, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(token: str, kind: str, request_fp: str, arity: int) -> tuple[int, ...]:
    """The keyset position in ``token``; CursorError says why a token is refused."""
    if len(token) > _MAX_TOKEN_CHARS:
        raise CursorError("is too long to be a token from this server")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        body = json.loads(raw)
    except (binascii.Error, ValueError):
        raise CursorError("is not a token from this server (not base64 JSON)") from None
    if not isinstance(body, dict) or body.get("v") != CURSOR_VERSION:
        raise CursorError("is not a token from this server (unknown version)")
    if body.get("k") != kind:
        raise CursorError("belongs to another method")
    if body.get("f") != request_fp:
        raise CursorError(
            "was issued for a different request; keep every other field unchanged while paging"
        )
    key = body.get("p")
    if (
        not isinstance(key, list)
        or len(key) != arity
        or not all(type(v) is int and _INT64[0] <= v <= _INT64[1] for v in key)
    ):
        raise CursorError("is not a token from this server (bad position)")
    return tuple(key)


# --------------------------------------------------------------------------- sensors

SENSOR_COLUMNS = f"id, type, location, metadata, {_epoch_us('updated_at')} AS updated_us"


def list_sensors(
    type_: str | None, location: str | None, after_id: int | None, limit: int
) -> Query:
    p = _Params()
    where = []
    if type_ is not None:
        where.append(f"type = {p(type_)}")
    if location is not None:
        where.append(f"location = {p(location)}")
    if after_id is not None:
        where.append(f"id > {p(after_id)}")
    cond = ("WHERE " + " AND ".join(where)) if where else ""
    sql = f"SELECT {SENSOR_COLUMNS} FROM sensors {cond} ORDER BY id LIMIT {p(limit)}"
    return Query(sql, tuple(p.args))


def get_sensor(sensor_id: int) -> Query:
    return Query(f"SELECT {SENSOR_COLUMNS} FROM sensors WHERE id = $1", (sensor_id,))


# --------------------------------------------------------------------------- readings

READING_COLUMNS = f"sensor_id, {_epoch_us('ts')} AS ts_us, temperature, cpu, extra"


def _range(p: _Params, start_us: int, end_us: int, sensor_ids: Sequence[int] | None) -> list[str]:
    where = [f"ts >= {p(to_datetime(start_us))}", f"ts < {p(to_datetime(end_us))}"]
    if sensor_ids:
        # A separate statement without this filter keeps "all sensors" index-friendly.
        where.append(f"sensor_id = ANY({p(list(sensor_ids))}::bigint[])")
    return where


def _ordered(where: Sequence[str], descending: bool) -> str:
    d = "DESC" if descending else "ASC"
    return (
        f"SELECT {READING_COLUMNS} FROM sensor_data WHERE {' AND '.join(where)} "
        f"ORDER BY ts {d}, sensor_id {d}"
    )


def list_readings(
    sensor_ids: Sequence[int] | None,
    start_us: int,
    end_us: int,
    descending: bool,
    after: tuple[int, int] | None,
    limit: int,
) -> Query:
    """One page ordered by (ts, sensor_id); ``after`` is the last (ts_us, sensor_id) seen."""
    p = _Params()
    where = _range(p, start_us, end_us, sensor_ids)
    if after is not None:
        op = "<" if descending else ">"
        where.append(f"(ts, sensor_id) {op} ({p(to_datetime(after[0]))}, {p(after[1])})")
    return Query(f"{_ordered(where, descending)} LIMIT {p(limit)}", tuple(p.args))


def stream_readings(
    sensor_ids: Sequence[int] | None, start_us: int, end_us: int, descending: bool
) -> Query:
    p = _Params()
    where = _range(p, start_us, end_us, sensor_ids)
    return Query(_ordered(where, descending), tuple(p.args))


def latest_readings(
    sensor_ids: Sequence[int] | None, before_us: int | None, since_us: int | None
) -> Query:
    """The newest reading per sensor: one backward index probe per sensor, never a scan."""
    p = _Params()
    cond = ["d.sensor_id = s.id"]
    if before_us is not None:
        cond.append(f"d.ts < {p(to_datetime(before_us))}")
    if since_us is not None:
        cond.append(f"d.ts >= {p(to_datetime(since_us))}")
    if sensor_ids:
        ids = f"SELECT unnest({p(sorted(set(sensor_ids)))}::bigint[]) AS id"
    else:
        # Loose index scan over (sensor_id, ts): one probe per distinct sensor,
        # where SELECT DISTINCT would read every row.
        ids = (
            "WITH RECURSIVE r(id) AS ("
            " (SELECT sensor_id FROM sensor_data ORDER BY sensor_id LIMIT 1)"
            " UNION ALL"
            " SELECT (SELECT sensor_id FROM sensor_data WHERE sensor_id > r.id"
            "         ORDER BY sensor_id LIMIT 1) FROM r WHERE r.id IS NOT NULL)"
            " SELECT id FROM r WHERE id IS NOT NULL"
        )
    sql = (
        f"SELECT l.* FROM ({ids}) s CROSS JOIN LATERAL ("
        f" SELECT d.sensor_id, {_epoch_us('d.ts')} AS ts_us, d.temperature, d.cpu, d.extra"
        f" FROM sensor_data d WHERE {' AND '.join(cond)} ORDER BY d.ts DESC LIMIT 1) l"
        " ORDER BY l.sensor_id"
    )
    return Query(sql, tuple(p.args))


# --------------------------------------------------------------------------- aggregates


def _first_or_last(agg: Aggregation, value: str, order: str) -> str:
    """The first (or last) non-null ``value`` by ``order``.

    Portable first()/last(): TimescaleDB's first() is not in plain
    PostgreSQL, and it would return NULL for a reading without the field.
    """
    d = "ASC" if agg is Aggregation.FIRST else "DESC"
    return f"(array_agg({value} ORDER BY {order} {d}) FILTER (WHERE {value} IS NOT NULL))[1]"


def _agg_expr(field: Field, agg: Aggregation) -> str:
    col = field.value
    if agg is Aggregation.COUNT:
        return f"count({col})::float8"
    if agg in (Aggregation.FIRST, Aggregation.LAST):
        return _first_or_last(agg, col, "ts")
    return f"{agg.value}({col})::float8"


def first_bucket_us(start_us: int, width_us: int) -> int:
    return (start_us // width_us) * width_us


def bucket_count(start_us: int, end_us: int, width_us: int) -> int:
    """Epoch-aligned buckets that overlap [start, end), per sensor."""
    return -((first_bucket_us(start_us, width_us) - end_us) // width_us)


def _interval(p: _Params, width_us: int) -> str:
    hours, rest_us = divmod(width_us, 3_600_000_000)
    # Built from integers so the interval is pure microseconds: a timedelta
    # would carry a "days" part, which generate_series adds in local time.
    return f"make_interval(hours => {p(hours)}::int, secs => {p(rest_us / 1e6)}::float8)"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def aggregate_readings(
    flavor: Flavor,
    sensor_ids: Sequence[int] | None,
    start_us: int,
    end_us: int,
    width_us: int,
    columns: Sequence[tuple[Field, Aggregation]],
    fill_gaps: bool,
    view: caggs.Plan | None = None,
) -> Query:
    """Rows (sensor_id, bucket_us, n, v0, v1, ...) ordered by sensor id, bucket.

    ``v<i>`` is ``columns[i]`` applied to the bucket, NULL when no reading in
    it had a value for the field. With ``view`` (TimescaleDB only), buckets in
    the plan's span come from that continuous aggregate while the statement
    finds them materialised and up to date, and from raw rows otherwise.
    """
    p = _Params()
    width = _interval(p, width_us)
    fn = "time_bucket" if flavor is Flavor.TIMESCALEDB else "date_bin"
    if view is None:
        where = _range(p, start_us, end_us, sensor_ids)
        values = [f"{_agg_expr(f, a)} AS v{i}" for i, (f, a) in enumerate(columns)]
        agg_sql = (
            f"SELECT sensor_id, {fn}({width}, ts, {_ORIGIN}) AS bucket, count(*) AS n"
            + "".join(", " + v for v in values)
            + f" FROM sensor_data WHERE {' AND '.join(where)} GROUP BY 1, 2"
        )
    else:
        agg_sql = _rollup(p, view, sensor_ids, start_us, end_us, width, columns)
    names = "".join(f", a.v{i}" for i in range(len(columns)))
    if not fill_gaps:
        sql = (
            f"SELECT a.sensor_id, {_epoch_us('a.bucket')} AS bucket_us, a.n{names}"
            f" FROM ({agg_sql}) a ORDER BY a.sensor_id, a.bucket"
        )
        return Query(sql, tuple(p.args))
    # The grid covers every bucket overlapping [start, end) for every sensor
    # that has data in the range.
    lo, hi = p(to_datetime(start_us)), p(to_datetime(end_us))
    grid = (
        f"generate_series({fn}({width}, {lo}::timestamptz, {_ORIGIN}),"
        f" {hi}::timestamptz - interval '1 microsecond', {width})"
    )
    # An empty bucket counts 0 readings; every other function has no value.
    filled = "".join(
        f", coalesce(a.v{i}, 0)" if a is Aggregation.COUNT else f", a.v{i}"
        for i, (_, a) in enumerate(columns)
    )
    sql = (
        f"WITH a AS ({agg_sql})"
        f" SELECT s.sensor_id, {_epoch_us('g.bucket')} AS bucket_us, coalesce(a.n, 0) AS n{filled}"
        f" FROM (SELECT DISTINCT sensor_id FROM a) s CROSS JOIN {grid} AS g(bucket)"
        " LEFT JOIN a ON a.sensor_id = s.sensor_id AND a.bucket = g.bucket"
        " ORDER BY s.sensor_id, g.bucket"
    )
    return Query(sql, tuple(p.args))


def _rollup(
    p: _Params,
    plan: caggs.Plan,
    sensor_ids: Sequence[int] | None,
    start_us: int,
    end_us: int,
    width: str,
    columns: Sequence[tuple[Field, Aggregation]],
) -> str:
    """Requested buckets rolled up from the view's buckets and raw rows cut to the same grid.

    Each source yields rows (sensor_id, bucket, n, s0, s1, ...) on the view's
    grid, ``s<j>`` being the stored aggregate ``states[j]``; the view's bucket
    divides the requested one, so each such row lies in one requested bucket.
    Raw rows cover [start, lo) and [hi, end), and [lo, hi) too when the guard
    finds the view stale there (then its branch returns nothing).
    """
    view = plan.view
    states = list(dict.fromkeys(n for f, a in columns for n in caggs.needed(a.value, f.value)))
    fine = _interval(p, view.width_us)
    mat, raw = p(view.mat_id), p(view.raw_id)
    lo_us, hi_us = p(plan.lo_us), p(plan.hi_us)
    lo, hi = p(to_datetime(plan.lo_us)), p(to_datetime(plan.hi_us))
    ids = p(list(sensor_ids)) if sensor_ids else None
    ok = f"({caggs.guard(f'{mat}::int', f'{raw}::int', f'{lo_us}::bigint', f'{hi_us}::bigint')})"

    b, sid = _ident(view.bucket_column), _ident(view.sensor_column)
    stored = "".join(f", {_ident(view.columns[s])}::float8 AS s{j}" for j, s in enumerate(states))
    sensor_cond = f" AND {sid} = ANY({ids}::bigint[])" if ids else ""
    branches = [
        f"SELECT {sid} AS sensor_id, {b} AS bucket, {_ident(view.rows_column)}::bigint AS n{stored}"
        f" FROM {_ident(view.schema)}.{_ident(view.name)}"
        f" WHERE {b} >= {lo} AND {b} < {hi}{sensor_cond} AND (SELECT ok FROM g)"
    ]
    # Each stored aggregate computed from raw rows, the same way the view computes it.
    raw_states = "".join(
        f", {_agg_expr(Field(f), Aggregation(a))} AS s{j}" for j, (a, f) in enumerate(states)
    )
    raw_cond = f" AND sensor_id = ANY({ids}::bigint[])" if ids else ""
    start, end = p(to_datetime(start_us)), p(to_datetime(end_us))
    for a, z, extra in ((start, lo, ""), (hi, end, ""), (lo, hi, " AND NOT (SELECT ok FROM g)")):
        branches.append(
            f"SELECT sensor_id, time_bucket({fine}, ts, {_ORIGIN}) AS bucket, count(*) AS n"
            f"{raw_states} FROM sensor_data"
            f" WHERE ts >= {a} AND ts < {z}{raw_cond}{extra} GROUP BY 1, 2"
        )
    index = {s: j for j, s in enumerate(states)}
    values = "".join(
        f", {_final_expr(a, index, f.value)} AS v{i}" for i, (f, a) in enumerate(columns)
    )
    return (
        f"WITH g AS (SELECT {ok} AS ok), f AS ({' UNION ALL '.join(branches)})"
        f" SELECT sensor_id, time_bucket({width}, bucket, {_ORIGIN}) AS bucket,"
        f" sum(n)::bigint AS n{values} FROM f GROUP BY 1, 2"
    )


def _final_expr(agg: Aggregation, index: dict[tuple[str, str], int], field: str) -> str:
    """``agg`` of one requested bucket from the stored aggregates of its parts."""
    s = f"s{index[(agg.value, field)]}"
    if agg is Aggregation.AVG:
        n = f"s{index[('count', field)]}"
        # One part: its own average, exactly; several: weighted by their counts.
        return f"CASE WHEN count(*) = 1 THEN min({s}) ELSE sum({s} * {n}) / nullif(sum({n}), 0) END"
    if agg is Aggregation.COUNT:
        return f"sum({s})"
    if agg in (Aggregation.FIRST, Aggregation.LAST):
        return _first_or_last(agg, s, "bucket")
    return f"{agg.value}({s})"


# --------------------------------------------------------------------------- health

PING = Query("SELECT 1", ())
