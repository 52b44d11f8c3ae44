"""Planning: what the database must do so that it matches the spec exactly.

Pure functions from (spec, observed state) to an ordered list of actions, so the
decisions are unit-tested without a database; :mod:`sensorlog_operator.timescale`
observes and applies. Applying the plan and planning again yields no action.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from sensorlog_core import caggs
from sensorlog_operator import constants as c
from sensorlog_operator import duration, sql
from sensorlog_operator.spec import Compression, ContinuousAggregate, HypertableSpec

TIME_TYPES = frozenset({"timestamp with time zone", "timestamp without time zone", "date"})
# PostgreSQL silently truncates longer identifiers (NAMEDATALEN - 1).
MAX_IDENTIFIER_BYTES = 63


class ImpossibleSpec(Exception):
    """The spec cannot work against this database until a person changes something."""


@dataclass(frozen=True)
class Job:
    job_id: int
    schedule_interval: timedelta
    # The interval settings of the job, decoded (drop_after, compress_after, start/end_offset).
    intervals: dict[str, timedelta | None] = field(default_factory=dict)


@dataclass(frozen=True)
class ObservedCagg:
    name: str
    hypertable: str
    comment: str | None
    job: Job | None


@dataclass(frozen=True)
class Observed:
    """What the database has for one table (see :func:`sensorlog_operator.timescale.observe`)."""

    extension: bool
    table_exists: bool
    columns: dict[str, str] = field(default_factory=dict)  # name -> type
    is_hypertable: bool = False
    partition_column: str | None = None
    chunk_interval: timedelta | None = None
    compression_enabled: bool = False
    segment_by: tuple[str, ...] = ()
    order_by: tuple[str, ...] = ()  # normalised "col ASC" / "col DESC"
    compressed_chunks: int = 0
    retention: Job | None = None
    compression: Job | None = None
    caggs: dict[str, ObservedCagg] = field(default_factory=dict)
    # Views/tables in the schema with a cagg's name that are not continuous aggregates.
    other_relations: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Action:
    policy: str  # "hypertable", "retention", "compression", "cagg/<name>"
    description: str  # past tense, for events: "added retention policy (drop after 30d)"
    sql: str
    # Run after ``sql``, in the same transaction (see timescale.apply).
    then: tuple[str, ...] = ()


def owner_comment(owner: str) -> str:
    """``owner`` is ``namespace/name``: a re-created resource adopts what its predecessor made."""
    return f"{c.OWNER_COMMENT_PREFIX}{c.KIND} {owner}"


def normalise_order(items: tuple[str, ...]) -> tuple[str, ...]:
    out = []
    for item in items:
        parts = item.split()
        out.append(f"{parts[0]} {parts[1].upper() if len(parts) > 1 else 'ASC'}")
    return tuple(out)


def desired_order(spec: HypertableSpec, comp: Compression) -> tuple[str, ...]:
    # TimescaleDB's own default, spelled out so drift is detectable.
    return normalise_order(comp.order_by or (f"{spec.time_column} DESC",))


def check(spec: HypertableSpec, obs: Observed, owner: str) -> None:
    """Raise ImpossibleSpec with a message a user can act on."""
    where = spec.qualified
    if not obs.extension:
        raise ImpossibleSpec(
            "the timescaledb extension is not installed in this database: run "
            "`CREATE EXTENSION timescaledb;` as its owner (or run sensorlog-migrate), "
            "then touch the resource or wait for the next drift check"
        )
    if not obs.table_exists:
        raise ImpossibleSpec(
            f"table {where} does not exist: create it (sensorlog-migrate creates sensor_data) "
            "or fix spec.schema/spec.table"
        )
    col_type = obs.columns.get(spec.time_column)
    if col_type is None:
        raise ImpossibleSpec(
            f"table {where} has no column {spec.time_column!r} (columns: "
            f"{', '.join(sorted(obs.columns))}): fix spec.timeColumn"
        )
    if col_type not in TIME_TYPES:
        raise ImpossibleSpec(
            f"column {where}.{spec.time_column} is {col_type}; spec.timeColumn must be "
            "timestamptz, timestamp or date"
        )
    if obs.is_hypertable and obs.partition_column not in (None, spec.time_column):
        raise ImpossibleSpec(
            f"{where} is already a hypertable partitioned by {obs.partition_column!r}, not "
            f"{spec.time_column!r}: set spec.timeColumn to {obs.partition_column!r}"
        )
    wanted: list[tuple[str, str]] = []
    if spec.compression is not None:
        wanted += [(col, "spec.compression.segmentBy") for col in spec.compression.segment_by]
        wanted += [
            (item.split()[0], "spec.compression.orderBy") for item in spec.compression.order_by
        ]
    for cagg in spec.continuous_aggregates:
        path = f"spec.continuousAggregates[{cagg.name}]"
        _check_view_columns(spec, cagg)
        wanted += [(col, f"{path}.groupBy") for col in cagg.group_by]
        wanted += [(agg.column, f"{path}.aggregations") for agg in cagg.aggregations]
        if cagg.name in obs.other_relations:
            raise ImpossibleSpec(
                f"{spec.schema_}.{cagg.name} exists and is not a continuous aggregate: "
                f"rename the aggregate in {path}.name"
            )
        seen = obs.caggs.get(cagg.name)
        if seen is not None and seen.comment != owner_comment(owner):
            raise ImpossibleSpec(
                f"continuous aggregate {spec.schema_}.{cagg.name} exists but was not created by "
                f"this resource ({seen.comment or 'no owner comment'}): rename it in "
                f"{path}.name or drop the view"
            )
    for col, path in wanted:
        if col not in obs.columns:
            raise ImpossibleSpec(f"{path}: table {where} has no column {col!r}")


def plan(spec: HypertableSpec, obs: Observed, owner: str) -> list[Action]:
    """Ordered actions that make the database match ``spec``; empty when it already does."""
    check(spec, obs, owner)
    table = sql.regclass(spec.schema_, spec.table)
    actions: list[Action] = []
    chunk = duration.render(spec.chunk_interval)
    if not obs.is_hypertable:
        actions.append(
            Action(
                "hypertable",
                f"converted {spec.qualified} to a hypertable on {spec.time_column} "
                f"(chunk interval {chunk}, existing rows migrated)",
                f"SELECT create_hypertable({table}, by_range({sql.literal(spec.time_column)}, "
                f"{sql.interval(spec.chunk_interval)}), migrate_data => TRUE)",
            )
        )
    elif obs.chunk_interval != spec.chunk_interval:
        actions.append(
            Action(
                "hypertable",
                f"set chunk interval to {chunk} (new chunks only)",
                f"SELECT set_chunk_time_interval({table}, {sql.interval(spec.chunk_interval)})",
            )
        )
    actions += _compression(spec, obs, table)
    actions += _retention(spec, obs, table)
    actions += _caggs(spec, obs, owner)
    return actions


def _set_job_interval(job_id: int, key: str, value: timedelta) -> str:
    path = sql.literal("{" + key + "}")
    text = sql.literal(duration.to_interval(value))
    return (
        f"SELECT alter_job({job_id}, config => jsonb_set(config, {path}, to_jsonb({text}::text)))"
        f" FROM _timescaledb_config.bgw_job WHERE id = {job_id}"
    )


def _retention(spec: HypertableSpec, obs: Observed, table: str) -> list[Action]:
    want, have = spec.retention, obs.retention
    if want is None:
        if have is None:
            return []
        return [
            Action(
                c.POLICY_RETENTION,
                f"removed retention policy (job {have.job_id})",
                f"SELECT remove_retention_policy({table}, if_exists => TRUE)",
            )
        ]
    after = duration.render(want.after)
    if have is None:
        return [
            Action(
                c.POLICY_RETENTION,
                f"added retention policy (drop chunks older than {after})",
                f"SELECT add_retention_policy({table}, {sql.interval(want.after)})",
            )
        ]
    if have.intervals.get("drop_after") != want.after:
        return [
            Action(
                c.POLICY_RETENTION,
                f"changed retention policy (job {have.job_id}) to drop chunks older than {after}",
                _set_job_interval(have.job_id, "drop_after", want.after),
            )
        ]
    return []


def _compression(spec: HypertableSpec, obs: Observed, table: str) -> list[Action]:
    want, have = spec.compression, obs.compression
    rel = sql.qualified(spec.schema_, spec.table)
    actions: list[Action] = []
    if want is None:
        if have is not None:
            actions.append(
                Action(
                    c.POLICY_COMPRESSION,
                    f"removed compression policy (job {have.job_id})",
                    f"SELECT remove_compression_policy({table}, if_exists => TRUE)",
                )
            )
        # Compressed chunks cannot be un-configured; they stay readable, and the
        # settings then stay too (reported in the policy's status message).
        if obs.compression_enabled and obs.compressed_chunks == 0:
            actions.append(
                Action(
                    c.POLICY_COMPRESSION,
                    "disabled compression",
                    f"ALTER TABLE {rel} SET (timescaledb.compress = FALSE)",
                )
            )
        return actions
    order = desired_order(spec, want)
    if not obs.compression_enabled or obs.segment_by != want.segment_by or obs.order_by != order:
        seg = ",".join(want.segment_by)
        ordr = ",".join(order)
        actions.append(
            Action(
                c.POLICY_COMPRESSION,
                f"set compression segmentBy=[{seg}] orderBy=[{ordr}]",
                f"ALTER TABLE {rel} SET (timescaledb.compress, "
                f"timescaledb.compress_segmentby = {sql.literal(seg)}, "
                f"timescaledb.compress_orderby = {sql.literal(ordr)})",
            )
        )
    after = duration.render(want.after)
    if have is None:
        actions.append(
            Action(
                c.POLICY_COMPRESSION,
                f"added compression policy (compress chunks older than {after})",
                f"SELECT add_compression_policy({table}, {sql.interval(want.after)})",
            )
        )
    elif have.intervals.get("compress_after") != want.after:
        actions.append(
            Action(
                c.POLICY_COMPRESSION,
                f"changed compression policy (job {have.job_id}) to chunks older than {after}",
                _set_job_interval(have.job_id, "compress_after", want.after),
            )
        )
    return actions


EPOCH_ORIGIN = "'1970-01-01 00:00:00+00'"


@dataclass(frozen=True)
class ViewColumn:
    """One column of a continuous aggregate the operator creates."""

    name: str
    expression: str  # SQL, in the view's SELECT list
    tag: str  # its column comment: what the query service reads (sensorlog_core.caggs)
    field: str | None  # the spec field it comes from, for messages; None: every view has it
    what: str  # how a message names it


def cagg_columns(spec: HypertableSpec, cagg: ContinuousAggregate) -> list[ViewColumn]:
    """The view's columns in order: bucket, groupBy columns, readings, aggregates."""
    path = f"spec.continuousAggregates[{cagg.name}]"
    time = sql.ident(spec.time_column)
    cols = [
        ViewColumn(
            caggs.BUCKET,
            # Buckets on the Unix-epoch grid, as AggregateReadings has them
            # (time_bucket's default origin is a Monday, 2000-01-03).
            f"time_bucket({sql.interval(cagg.bucket)}, {time}, origin => {EPOCH_ORIGIN})",
            caggs.tag(caggs.BUCKET),
            None,
            "the time_bucket column",
        )
    ]
    cols += [
        ViewColumn(g, sql.ident(g), caggs.tag("group", g), f"{path}.groupBy", f"groupBy {g}")
        for g in cagg.group_by
    ]
    cols.append(
        ViewColumn(
            caggs.ROWS_COLUMN,
            caggs.expression("count", caggs.ALL_ROWS, time),
            caggs.tag("count", caggs.ALL_ROWS),
            None,
            "the count(*) column",
        )
    )
    asked = {(fn, agg.column) for agg in cagg.aggregations for fn in agg.functions}
    added: set[tuple[str, str]] = set()
    for agg in cagg.aggregations:
        field = f"{path}.aggregations[{agg.column}]"
        stored: list[tuple[str, str, str]] = [
            (fn, agg.column, f"{fn} of {agg.column}") for fn in agg.functions
        ]
        # What the query service needs to combine buckets (avg also needs count).
        for fn in agg.functions:
            for need in caggs.needed(fn, agg.column):
                if need not in asked and need not in added:
                    added.add(need)
                    stored.append((*need, f"{need[0]} of {need[1]}, added for {fn}"))
        cols += [
            ViewColumn(
                f"{fn}_{col}",
                caggs.expression(fn, sql.ident(col), time),
                caggs.tag(fn, col),
                field,
                what,
            )
            for fn, col, what in stored
        ]
    return cols


def _check_view_columns(spec: HypertableSpec, cagg: ContinuousAggregate) -> None:
    view = f"{spec.schema_}.{cagg.name}"
    names: dict[str, ViewColumn] = {}
    for col in cagg_columns(spec, cagg):
        if len(col.name.encode()) > MAX_IDENTIFIER_BYTES:
            raise ImpossibleSpec(
                f"{col.field}: view {view} would get a column {col.name!r} ({col.what}), longer "
                f"than PostgreSQL's {MAX_IDENTIFIER_BYTES} bytes: aggregate a column with a "
                "shorter name"
            )
        first = names.setdefault(col.name, col)
        if first is not col:
            raise ImpossibleSpec(
                f"{col.field or first.field}: view {view} would get two columns named "
                f"{col.name!r} ({first.what} and {col.what}); its columns are bucket, the "
                f"groupBy columns, {caggs.ROWS_COLUMN} and <function>_<column> per aggregation: "
                "group by or aggregate other columns"
            )


def cagg_query(spec: HypertableSpec, cagg: ContinuousAggregate) -> str:
    cols = [f"{col.expression} AS {sql.ident(col.name)}" for col in cagg_columns(spec, cagg)]
    group = ", ".join([caggs.BUCKET, *(sql.ident(g) for g in cagg.group_by)])
    return (
        f"SELECT {', '.join(cols)} FROM {sql.qualified(spec.schema_, spec.table)} GROUP BY {group}"
    )


def _caggs(spec: HypertableSpec, obs: Observed, owner: str) -> list[Action]:
    actions: list[Action] = []
    wanted = {cagg.name for cagg in spec.continuous_aggregates}
    comment = owner_comment(owner)
    for cagg in spec.continuous_aggregates:
        policy = c.CAGG_PREFIX + cagg.name
        view = sql.qualified(spec.schema_, cagg.name)
        seen = obs.caggs.get(cagg.name)
        have = seen.job if seen is not None else None
        if seen is None:
            actions.append(
                Action(
                    policy,
                    f"created continuous aggregate {spec.schema_}.{cagg.name} "
                    f"(bucket {duration.render(cagg.bucket)})",
                    f"CREATE MATERIALIZED VIEW {view} WITH (timescaledb.continuous) AS "
                    f"{cagg_query(spec, cagg)} WITH NO DATA",
                    # In the CREATE's transaction (WITH NO DATA allows one): a view is
                    # never left untagged or half tagged (the query service would skip
                    # it, the operator refuse it as not its own).
                    then=(
                        "; ".join(
                            [
                                f"COMMENT ON VIEW {view} IS {sql.literal(comment)}",
                                *(
                                    f"COMMENT ON COLUMN {view}.{sql.ident(col.name)} "
                                    f"IS {sql.literal(col.tag)}"
                                    for col in cagg_columns(spec, cagg)
                                ),
                            ]
                        ),
                    ),
                )
            )
        want = cagg.refresh
        regview = sql.regclass(spec.schema_, cagg.name)
        if want is None:
            if have is not None:
                actions.append(
                    Action(
                        policy,
                        f"removed refresh policy of {cagg.name} (job {have.job_id})",
                        f"SELECT remove_continuous_aggregate_policy({regview}, if_exists => TRUE)",
                    )
                )
            continue
        window = (
            f"[-{duration.render(want.start_offset)}, -{duration.render(want.end_offset)}] "
            f"every {duration.render(want.schedule_interval)}"
        )
        if have is None:
            actions.append(
                Action(
                    policy,
                    f"added refresh policy of {cagg.name} {window}",
                    f"SELECT add_continuous_aggregate_policy({regview}, "
                    f"start_offset => {sql.interval(want.start_offset)}, "
                    f"end_offset => {sql.interval(want.end_offset)}, "
                    f"schedule_interval => {sql.interval(want.schedule_interval)})",
                )
            )
        elif (
            have.intervals.get("start_offset") != want.start_offset
            or have.intervals.get("end_offset") != want.end_offset
            or have.schedule_interval != want.schedule_interval
        ):
            start = sql.literal(duration.to_interval(want.start_offset))
            end = sql.literal(duration.to_interval(want.end_offset))
            actions.append(
                Action(
                    policy,
                    f"changed refresh policy of {cagg.name} (job {have.job_id}) to {window}",
                    f"SELECT alter_job({have.job_id}, "
                    f"schedule_interval => {sql.interval(want.schedule_interval)}, "
                    f"config => config || jsonb_build_object('start_offset', {start}::text, "
                    f"'end_offset', {end}::text)) "
                    f"FROM _timescaledb_config.bgw_job WHERE id = {have.job_id}",
                )
            )
    for name, seen in sorted(obs.caggs.items()):
        # Only aggregates this resource created (its comment) are ever dropped.
        if name not in wanted and seen.comment == comment:
            actions.append(
                Action(
                    c.CAGG_PREFIX + name,
                    f"dropped continuous aggregate {spec.schema_}.{name} (removed from spec)",
                    f"DROP MATERIALIZED VIEW IF EXISTS {sql.qualified(spec.schema_, name)}",
                )
            )
    return actions


def reclaim_plan(spec: HypertableSpec, obs: Observed, owner: str) -> list[Action]:
    """reclaimPolicy Delete: every policy and owned aggregate goes; table and rows stay."""
    if not obs.extension or not obs.table_exists or not obs.is_hypertable:
        return []
    table = sql.regclass(spec.schema_, spec.table)
    actions: list[Action] = []
    if obs.retention is not None:
        actions.append(
            Action(
                c.POLICY_RETENTION,
                f"removed retention policy (job {obs.retention.job_id})",
                f"SELECT remove_retention_policy({table}, if_exists => TRUE)",
            )
        )
    if obs.compression is not None:
        actions.append(
            Action(
                c.POLICY_COMPRESSION,
                f"removed compression policy (job {obs.compression.job_id})",
                f"SELECT remove_compression_policy({table}, if_exists => TRUE)",
            )
        )
    comment = owner_comment(owner)
    for name, seen in sorted(obs.caggs.items()):
        if seen.comment == comment:
            actions.append(
                Action(
                    c.CAGG_PREFIX + name,
                    f"dropped continuous aggregate {spec.schema_}.{name}",
                    f"DROP MATERIALIZED VIEW IF EXISTS {sql.qualified(spec.schema_, name)}",
                )
            )
    return actions
