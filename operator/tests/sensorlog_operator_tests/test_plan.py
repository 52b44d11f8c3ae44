"""Spec -> SQL planning, without a database: what a user would see change, and idempotence."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from sensorlog_core import caggs
from sensorlog_operator import duration
from sensorlog_operator.reconcile import (
    ImpossibleSpec,
    Job,
    Observed,
    ObservedCagg,
    owner_comment,
    plan,
    reclaim_plan,
)
from sensorlog_operator.spec import SpecError, parse_spec

OWNER = "default/readings"
COLUMNS = {
    "ts": "timestamp with time zone",
    "sensor_id": "bigint",
    "temperature": "double precision",
    "cpu": "double precision",
}


def spec(**over: Any) -> Any:
    raw: dict[str, Any] = {
        "table": "sensor_data",
        "timeColumn": "ts",
        "chunkInterval": "1d",
        "retention": {"after": "30d"},
        "compression": {"after": "7d", "segmentBy": ["sensor_id"]},
        "dsnSecretRef": {"name": "db"},
    }
    raw.update(over)
    return parse_spec({k: v for k, v in raw.items() if v is not None})


def matching(s: Any) -> Observed:
    """The database as it is after the spec was applied."""
    caggs = {
        cg.name: ObservedCagg(
            cg.name,
            s.table,
            owner_comment(OWNER),
            Job(
                900,
                cg.refresh.schedule_interval,
                {"start_offset": cg.refresh.start_offset, "end_offset": cg.refresh.end_offset},
            )
            if cg.refresh
            else None,
        )
        for cg in s.continuous_aggregates
    }
    return Observed(
        extension=True,
        table_exists=True,
        columns=COLUMNS,
        is_hypertable=True,
        partition_column="ts",
        chunk_interval=s.chunk_interval,
        compression_enabled=s.compression is not None,
        segment_by=s.compression.segment_by if s.compression else (),
        order_by=("ts DESC",) if s.compression else (),
        retention=Job(1000, timedelta(days=1), {"drop_after": s.retention.after})
        if s.retention
        else None,
        compression=Job(1001, timedelta(hours=12), {"compress_after": s.compression.after})
        if s.compression
        else None,
        caggs=caggs,
    )


CAGG = {
    "name": "sensor_data_hourly",
    "bucket": "1h",
    "groupBy": ["sensor_id"],
    "aggregations": [{"column": "temperature", "functions": ["avg", "last"]}],
    "refresh": {"startOffset": "3d", "endOffset": "1h"},
}


@pytest.mark.parametrize(
    "text, expected",
    [("30d", timedelta(days=30)), ("1h30m", timedelta(minutes=90)), ("2w", timedelta(days=14))],
)
def test_durations_parse_and_render(text: str, expected: timedelta) -> None:
    assert duration.parse(text) == expected
    assert duration.parse(duration.render(expected)) == expected
    assert duration.to_interval(timedelta(days=30, hours=2)) == "30 days 2 hours"


@pytest.mark.parametrize("bad", ["", "30", "1mo", "-1d", "0d", "1.5h"])
def test_bad_durations_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        duration.parse(bad)


def test_spec_errors_name_the_field() -> None:
    with pytest.raises(SpecError, match=r"spec\.retention\.after"):
        spec(retention={"after": "forever"})


def test_a_fresh_table_gets_everything_in_order() -> None:
    s = spec(continuousAggregates=[CAGG])
    obs = Observed(extension=True, table_exists=True, columns=COLUMNS)
    actions = plan(s, obs, OWNER)
    assert [a.policy for a in actions] == [
        "hypertable",
        "compression",
        "compression",
        "retention",
        "cagg/sensor_data_hourly",
        "cagg/sensor_data_hourly",
    ]
    create = actions[0].sql
    assert 'create_hypertable(\'"public"."sensor_data"\'::regclass' in create
    assert "INTERVAL '1 days'" in create and "migrate_data => TRUE" in create
    assert "compress_segmentby = 'sensor_id'" in actions[1].sql
    assert "compress_orderby = 'ts DESC'" in actions[1].sql
    assert "add_retention_policy" in actions[3].sql and "'30 days'" in actions[3].sql
    view = actions[4]
    assert "WITH NO DATA" in view.sql
    # The owner comment and the column tags go in one statement text: one transaction.
    assert len(view.then) == 1
    assert view.then[0].startswith(
        """COMMENT ON VIEW "public"."sensor_data_hourly" IS """
        "'managed by sensorlog-operator: Hypertable default/readings'; "
    )


def test_a_view_stores_what_the_query_service_combines_and_tags_every_column() -> None:
    aggregations = [
        {"column": "temperature", "functions": ["avg", "first", "last"]},
        {"column": "cpu", "functions": ["count", "avg"]},
    ]
    s = spec(continuousAggregates=[{**CAGG, "aggregations": aggregations}])
    obs = Observed(extension=True, table_exists=True, columns=COLUMNS, is_hypertable=True)
    view = next(a for a in plan(s, obs, OWNER) if a.policy == "cagg/sensor_data_hourly")
    assert view.sql == (
        'CREATE MATERIALIZED VIEW "public"."sensor_data_hourly" WITH (timescaledb.continuous) AS '
        "SELECT time_bucket(INTERVAL '1 hours', \"ts\", origin => '1970-01-01 00:00:00+00') "
        'AS "bucket", '
        '"sensor_id" AS "sensor_id", count(*) AS "readings", '
        'avg("temperature") AS "avg_temperature", '
        'first("temperature", "ts") FILTER (WHERE "temperature" IS NOT NULL) '
        'AS "first_temperature", '
        'last("temperature", "ts") FILTER (WHERE "temperature" IS NOT NULL) '
        'AS "last_temperature", '
        'count("temperature") AS "count_temperature", '
        'count("cpu") AS "count_cpu", avg("cpu") AS "avg_cpu" '
        'FROM "public"."sensor_data" GROUP BY bucket, "sensor_id" WITH NO DATA'
    )
    prefix = 'COMMENT ON COLUMN "public"."sensor_data_hourly".'
    tags: dict[str, tuple[str, str | None] | None] = {}
    (statements,) = view.then
    for statement in statements.split("; ")[1:]:
        assert statement.startswith(prefix)
        column, _, comment = statement.removeprefix(prefix).partition(" IS ")
        tags[column] = caggs.parse_tag(comment.strip("'"))
    assert tags == {
        '"bucket"': ("bucket", None),
        '"sensor_id"': ("group", "sensor_id"),
        '"readings"': ("count", "*"),
        '"avg_temperature"': ("avg", "temperature"),
        '"first_temperature"': ("first", "temperature"),
        '"last_temperature"': ("last", "temperature"),
        '"count_temperature"': ("count", "temperature"),
        '"count_cpu"': ("count", "cpu"),
        '"avg_cpu"': ("avg", "cpu"),
    }


@pytest.mark.parametrize(
    "group_by, aggregations, message",
    [
        (["bucket"], None, r"\]\.groupBy: .* two columns named 'bucket' \(the time_bucket"),
        (
            ["readings"],
            None,
            r"\]\.groupBy: .* two columns named 'readings' \(groupBy readings and",
        ),
        (["avg_temperature"], None, r"\]\.aggregations\[temperature\]: .* 'avg_temperature'"),
        (
            ["count_temperature"],
            None,
            r"\]\.aggregations\[temperature\]: .* 'count_temperature' "
            r"\(groupBy count_temperature and count of temperature, added for avg\)",
        ),
        (
            ["sensor_id"],
            [{"column": "t" * 58, "functions": ["stddev"]}],
            r"\]\.aggregations\[t+\]: .*'stddev_t+' .*longer than PostgreSQL's 63 bytes",
        ),
    ],
    ids=["bucket", "readings", "aggregate-name", "added-count", "too-long"],
)
def test_view_columns_that_would_clash_are_refused(
    group_by: list[str], aggregations: list[dict[str, Any]] | None, message: str
) -> None:
    cagg = {**CAGG, "groupBy": group_by, "aggregations": aggregations or CAGG["aggregations"]}
    columns = {**COLUMNS, **{c: "bigint" for c in group_by}, "t" * 58: "double precision"}
    obs = Observed(extension=True, table_exists=True, columns=columns)
    with pytest.raises(
        ImpossibleSpec, match=r"spec\.continuousAggregates\[sensor_data_hourly" + message
    ):
        plan(spec(continuousAggregates=[cagg]), obs, OWNER)


def test_matching_database_plans_nothing() -> None:
    s = spec(continuousAggregates=[CAGG])
    assert plan(s, matching(s), OWNER) == []


def test_changed_intervals_alter_the_existing_jobs() -> None:
    before = spec(continuousAggregates=[CAGG])
    after = spec(
        chunkInterval="12h",
        retention={"after": "10d"},
        compression={"after": "2d", "segmentBy": ["sensor_id"]},
        continuousAggregates=[{**CAGG, "refresh": {"startOffset": "2d", "endOffset": "2h"}}],
    )
    actions = plan(after, matching(before), OWNER)
    sqls = "\n".join(a.sql for a in actions)
    assert "set_chunk_time_interval" in sqls and "'12 hours'" in sqls
    assert "alter_job(1001" in sqls and "'2 days'" in sqls
    assert "alter_job(1000" in sqls and "'10 days'" in sqls
    assert "alter_job(900" in sqls and "'2 hours'" in sqls
    assert "add_" not in sqls and "remove_" not in sqls


def test_policies_removed_from_spec_are_removed() -> None:
    before = spec(continuousAggregates=[CAGG])
    after = spec(retention=None, compression=None)
    sqls = [a.sql for a in plan(after, matching(before), OWNER)]
    assert any("remove_retention_policy" in q for q in sqls)
    assert any("remove_compression_policy" in q for q in sqls)
    assert any("timescaledb.compress = FALSE" in q for q in sqls)
    assert any(q.startswith("DROP MATERIALIZED VIEW") for q in sqls)


def test_compression_settings_stay_while_chunks_are_compressed() -> None:
    before = spec()
    obs = matching(before)
    obs = Observed(**{**obs.__dict__, "compressed_chunks": 3})
    sqls = [a.sql for a in plan(spec(compression=None), obs, OWNER)]
    assert any("remove_compression_policy" in q for q in sqls)
    assert not any("compress = FALSE" in q for q in sqls)


def test_only_owned_aggregates_are_dropped() -> None:
    s = spec()
    obs = matching(s)
    foreign = ObservedCagg("by_hand", "sensor_data", None, None)
    obs = Observed(**{**obs.__dict__, "caggs": {"by_hand": foreign}})
    assert plan(s, obs, OWNER) == []
    assert reclaim_plan(s, obs, OWNER)[-1].policy == "compression"


def test_reclaim_removes_policies_and_owned_aggregates() -> None:
    s = spec(continuousAggregates=[CAGG])
    policies = [a.policy for a in reclaim_plan(s, matching(s), OWNER)]
    assert policies == ["retention", "compression", "cagg/sensor_data_hourly"]


@pytest.mark.parametrize(
    "obs, message",
    [
        (Observed(extension=False, table_exists=True), "CREATE EXTENSION timescaledb"),
        (Observed(extension=True, table_exists=False), "does not exist"),
        (
            Observed(extension=True, table_exists=True, columns={"sensor_id": "bigint"}),
            "no column 'ts'",
        ),
        (
            Observed(extension=True, table_exists=True, columns={**COLUMNS, "ts": "bigint"}),
            "must be timestamptz",
        ),
        (
            Observed(
                extension=True,
                table_exists=True,
                columns={**COLUMNS, "t2": "date"},
                is_hypertable=True,
                partition_column="t2",
            ),
            "partitioned by 't2'",
        ),
    ],
)
def test_impossible_specs_say_what_to_fix(obs: Observed, message: str) -> None:
    with pytest.raises(ImpossibleSpec, match=message):
        plan(spec(), obs, OWNER)


def test_unknown_columns_and_foreign_views_are_impossible() -> None:
    obs = Observed(extension=True, table_exists=True, columns=COLUMNS)
    with pytest.raises(ImpossibleSpec, match=r"segmentBy: table public\.sensor_data has no column"):
        plan(spec(compression={"after": "7d", "segmentBy": ["site"]}), obs, OWNER)
    taken = Observed(**{**obs.__dict__, "other_relations": frozenset({"sensor_data_hourly"})})
    with pytest.raises(ImpossibleSpec, match="not a continuous aggregate"):
        plan(spec(continuousAggregates=[CAGG]), taken, OWNER)


def test_identifiers_are_quoted_even_if_the_schema_let_one_through() -> None:
    s = spec(table='x"; DROP TABLE y; --')
    obs = Observed(extension=True, table_exists=True, columns=COLUMNS)
    create = plan(s, obs, OWNER)[0].sql
    assert '"x""; DROP TABLE y; --"' in create
