"""Fast unit tests: page-token codec, request checks, bucket arithmetic, settings."""

from __future__ import annotations

import base64
import contextlib
import json

import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from sensorlog.v1 import query_pb2 as pb
from sensorlog_core import queries
from sensorlog_core.db import Flavor
from sensorlog_core.settings import describe_errors
from sensorlog_query import validation as v
from sensorlog_query.settings import QuerySettings

FP = queries.fingerprint("readings", [1], 0, 10, False)


@given(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=2, max_size=2))
def test_cursor_round_trips(key: list[int]) -> None:
    token = queries.encode_cursor("readings", FP, key)
    assert queries.decode_cursor(token, "readings", FP, 2) == tuple(key)


@pytest.mark.parametrize(
    ("token", "problem"),
    [
        ("%%%", "not base64 JSON"),
        (base64.urlsafe_b64encode(b"[1,2]").decode(), "unknown version"),
        ("x" * 600, "too long"),
        (queries.encode_cursor("sensors", FP, [1, 2]), "belongs to another method"),
        (queries.encode_cursor("readings", "other", [1, 2]), "different request"),
        (queries.encode_cursor("readings", FP, [1]), "bad position"),
        (queries.encode_cursor("readings", FP, [1, 2**63]), "bad position"),
        (
            base64.urlsafe_b64encode(
                json.dumps({"v": 1, "k": "readings", "f": FP, "p": [1, "2"]}).encode()
            ).decode(),
            "bad position",
        ),
    ],
)
def test_cursor_refuses_foreign_tokens(token: str, problem: str) -> None:
    with pytest.raises(queries.CursorError, match=problem):
        queries.decode_cursor(token, "readings", FP, 2)


@given(st.text(max_size=80))
def test_any_text_is_refused_cleanly(token: str) -> None:
    # Anything but CursorError (a ValueError from base64, a KeyError...) would be a bug.
    with contextlib.suppress(queries.CursorError):
        queries.decode_cursor(token, "readings", FP, 2)


def test_time_range_rules() -> None:
    a, b = Timestamp(seconds=100), Timestamp(seconds=200)
    assert v.time_range(True, a, True, b) == (100_000_000, 200_000_000)
    with pytest.raises(v.BadRequest, match=r"^end: must be after start"):
        v.time_range(True, b, True, a)
    with pytest.raises(v.BadRequest, match=r"^start: is required"):
        v.time_range(False, a, True, b)
    # Sub-microsecond ends round up, so a reading at that microsecond is included.
    assert v.time_range(True, a, True, Timestamp(seconds=200, nanos=1))[1] == 200_000_001
    with pytest.raises(v.BadRequest, match=r"^start: must be between"):
        v.time_range(True, Timestamp(seconds=-(10**12)), True, b)
    with pytest.raises(v.BadRequest, match=r"^end: nanos"):
        v.time_range(True, a, True, Timestamp(seconds=200, nanos=-1))


def test_bucket_rules() -> None:
    assert v.bucket_us(True, Duration(seconds=60)) == 60_000_000
    assert v.bucket_us(True, Duration(nanos=1000)) == 1
    for d, msg in [
        (Duration(), "must be positive"),
        (Duration(seconds=-1), "must be positive"),
        (Duration(nanos=999), "at least 1 microsecond"),
        (Duration(seconds=1, nanos=-1), "not a valid Duration"),
        (Duration(seconds=10**12), "not a valid Duration"),
    ]:
        with pytest.raises(v.BadRequest, match=f"^bucket: .*{msg}"):
            v.bucket_us(True, d)


def test_bucket_count_is_epoch_aligned() -> None:
    hour = 3_600_000_000
    # [00:30, 02:00) touches the 00:00 and 01:00 buckets.
    assert queries.first_bucket_us(hour // 2, hour) == 0
    assert queries.bucket_count(hour // 2, 2 * hour, hour) == 2
    assert queries.bucket_count(hour // 2, 2 * hour + 1, hour) == 3
    assert queries.first_bucket_us(-1, hour) == -hour  # before 1970 floors, not truncates
    v.check_buckets(0, 10 * hour, hour, 10)
    with pytest.raises(v.BadRequest, match="11 buckets per sensor, over the limit of 10"):
        v.check_buckets(0, 10 * hour + 1, hour, 10)


def test_aggregate_columns() -> None:
    cols = v.aggregate_columns([], [])
    assert cols == [
        (queries.Field.TEMPERATURE, queries.Aggregation.AVG),
        (queries.Field.CPU, queries.Aggregation.AVG),
    ]
    cols = v.aggregate_columns([pb.FIELD_CPU, pb.FIELD_CPU], [pb.AGGREGATION_MAX])
    assert cols == [(queries.Field.CPU, queries.Aggregation.MAX)]
    with pytest.raises(v.BadRequest, match=r"^aggregations\[1\]: unknown aggregation 99"):
        v.aggregate_columns([], [pb.AGGREGATION_MIN, 99])


def test_sql_is_parameterised() -> None:
    q = queries.list_sensors("x'; DROP TABLE sensors; --", None, 5, 10)
    assert "DROP" not in q.sql and q.args == ("x'; DROP TABLE sensors; --", 5, 10)
    pg = queries.aggregate_readings(Flavor.POSTGRES, [1], 0, 10, 1, [], fill_gaps=True)
    ts = queries.aggregate_readings(Flavor.TIMESCALEDB, [1], 0, 10, 1, [], fill_gaps=True)
    assert "date_bin(" in pg.sql and "time_bucket(" not in pg.sql
    assert "time_bucket(" in ts.sql and pg.args == ts.args


def test_settings_name_the_bad_variable() -> None:
    with pytest.raises(ValidationError) as err:
        QuerySettings(readings_default_page_size=20000)
    assert "must not exceed readings_max_page_size" in describe_errors(QuerySettings, err.value)
    with pytest.raises(ValidationError) as err:
        QuerySettings(read_database_dsn="mysql://x")
    assert "SENSORLOG_QUERY_READ_DATABASE_DSN" in describe_errors(QuerySettings, err.value)
    s = QuerySettings(
        database_dsn="postgresql://w@primary/db", read_database_dsn="postgresql://r@replica/db"
    )
    assert s.read_dsn == "postgresql://r@replica/db"
    assert QuerySettings(database_dsn="postgresql://w@primary/db").read_dsn.endswith("primary/db")
    for name, field in QuerySettings.model_fields.items():
        assert field.description, f"{name} has no description"
