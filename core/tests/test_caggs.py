"""The continuous-aggregate contract: tags, which views qualify, and which buckets a plan reads."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sensorlog_core import caggs

H = 3_600_000_000  # an hour in microseconds


def test_tags_round_trip() -> None:
    assert caggs.parse_tag(caggs.tag("bucket")) == ("bucket", None)
    assert caggs.parse_tag(caggs.tag("group", "sensor_id")) == ("group", "sensor_id")
    assert caggs.parse_tag(caggs.tag("count", "*")) == ("count", "*")
    assert caggs.parse_tag(caggs.tag("first", "temperature")) == ("first", "temperature")
    for comment in (None, "", "managed by someone", "sensorlog:avg(Temp)", "sensorlog:avg()"):
        assert caggs.parse_tag(comment) is None


def test_first_and_last_skip_nulls() -> None:
    assert (
        caggs.expression("first", '"t"', '"ts"')
        == 'first("t", "ts") FILTER (WHERE "t" IS NOT NULL)'
    )
    assert caggs.expression("avg", '"t"', '"ts"') == 'avg("t")'
    with pytest.raises(ValueError, match="unknown aggregate function 'median'"):
        caggs.expression("median", '"t"', '"ts"')


def row(**over: Any) -> dict[str, Any]:
    columns = [
        ("bucket", "sensorlog:bucket"),
        ("sensor_id", "sensorlog:group(sensor_id)"),
        ("readings", "sensorlog:count(*)"),
        ("avg_temperature", "sensorlog:avg(temperature)"),
        ("count_temperature", "sensorlog:count(temperature)"),
        ("max_cpu", "sensorlog:max(cpu)"),
    ]
    base: dict[str, Any] = {
        "mat_id": 2,
        "raw_id": 1,
        "view_schema": "public",
        "view_name": "hourly",
        "bucket_func": "public.time_bucket(interval,timestamp with time zone)",
        "fixed_width": True,
        "timezone": None,
        "width_us": H,
        "origin_us": 946857600 * 10**6,  # 2000-01-03, a whole number of hours
        "watermark_us": 100 * H,
        "readable": True,
        "columns": json.dumps(columns),
        "invalidations": "[]",
    }
    base.update(over)
    return base


def test_a_tagged_view_grouped_by_sensor_is_usable() -> None:
    (view,), skipped = caggs.views([row()])
    assert skipped == []
    assert (view.bucket_column, view.sensor_column, view.rows_column) == (
        "bucket",
        "sensor_id",
        "readings",
    )
    assert view.columns == {
        ("avg", "temperature"): "avg_temperature",
        ("count", "temperature"): "count_temperature",
        ("max", "cpu"): "max_cpu",
    }


@pytest.mark.parametrize(
    ("over", "why"),
    [
        ({"readable": False}, "no SELECT privilege"),
        ({"fixed_width": False}, "variable width"),
        ({"timezone": "Europe/Berlin"}, "in a time zone"),
        ({"origin_us": 30 * 60 * 10**6}, "not aligned to the Unix epoch"),
        ({"bucket_func": "public.time_bucket_gapfill(interval,timestamp)"}, "is not time_bucket"),
        ({"columns": json.dumps([["bucket", "sensorlog:bucket"], ["x", None]])}, "tag: x"),
        (
            {"columns": json.dumps([["bucket", "sensorlog:bucket"], ["n", "sensorlog:count(*)"]])},
            "grouped by nothing",
        ),
        (
            {
                "columns": json.dumps(
                    [
                        ["bucket", "sensorlog:bucket"],
                        ["sensor_id", "sensorlog:group(sensor_id)"],
                        ["location", "sensorlog:group(location)"],
                        ["n", "sensorlog:count(*)"],
                    ]
                )
            },
            "not by sensor_id alone",
        ),
        ({"columns": json.dumps([["sensor_id", "sensorlog:group(sensor_id)"]])}, "no tagged"),
    ],
)
def test_views_that_cannot_answer_say_why(over: dict[str, Any], why: str) -> None:
    usable, skipped = caggs.views([row(**over)])
    assert usable == []
    assert len(skipped) == 1
    assert skipped[0].startswith("public.hourly: ")
    assert why in skipped[0]


def view(**over: Any) -> caggs.View:
    (v,), _ = caggs.views([row(**over)])
    return v


AVG = [("avg", "temperature")]


def test_plan_reads_whole_materialised_buckets_only() -> None:
    p = caggs.plan([view()], start_us=H // 2, end_us=200 * H, width_us=H, wanted=AVG)
    assert p is not None
    # From the first whole hour to the watermark.
    assert (p.lo_us, p.hi_us) == (H, 100 * H)


def test_plan_needs_a_dividing_bucket_and_every_stored_aggregate() -> None:
    v = view()
    assert caggs.plan([v], 0, 10 * H, 90 * 60 * 10**6, AVG) is None  # 1h does not divide 90 min
    assert caggs.plan([v], 0, 10 * H, 3 * H, AVG) is not None
    assert caggs.plan([v], 0, 10 * H, H, [("min", "cpu")]) is None  # no min(cpu)
    no_count = row(
        columns=json.dumps(
            [
                ["bucket", "sensorlog:bucket"],
                ["sensor_id", "sensorlog:group(sensor_id)"],
                ["readings", "sensorlog:count(*)"],
                ["avg_temperature", "sensorlog:avg(temperature)"],
            ]
        )
    )
    # An average over several buckets needs each one's count.
    assert caggs.plan(caggs.views([no_count])[0], 0, 10 * H, H, AVG) is None


def test_plan_avoids_pending_invalidations() -> None:
    # Late rows at 10h30 and 60h..61h; nothing materialised before 2h.
    inv = json.dumps([[-(2**63), 2 * H - 1], [10 * H + H // 2, 10 * H + H // 2], [60 * H, 61 * H]])
    p = caggs.plan([view(invalidations=inv)], 0, 100 * H, H, AVG)
    assert p is not None
    # The longest clean span, cut to whole buckets: 61h01 is in the 61h bucket.
    assert (p.lo_us, p.hi_us) == (11 * H, 60 * H)
    everything = json.dumps([[-(2**63), 2**63 - 1]])
    assert caggs.plan([view(invalidations=everything)], 0, 100 * H, H, AVG) is None


def test_plan_prefers_more_coverage_then_wider_buckets() -> None:
    hourly = view()
    daily = view(view_name="daily", width_us=24 * H, watermark_us=48 * H)
    p = caggs.plan([hourly, daily], 0, 48 * H, 24 * H, AVG)
    assert p is not None and p.view.name == "daily"
    p = caggs.plan([hourly, daily], 0, 96 * H, 24 * H, AVG)
    assert p is not None and (p.view.name, p.hi_us) == ("hourly", 96 * H)
