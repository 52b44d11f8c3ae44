"""wire.buckets writes exactly the bytes protobuf itself writes for the same response."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sensorlog.v1 import query_pb2 as pb
from sensorlog_core.queries import Aggregation, Field
from sensorlog_query import validation as v
from sensorlog_query import wire

INT64 = st.integers(-(2**63), 2**63 - 1)
# Timestamps protobuf accepts: years 1 to 9999.
MICROS = st.integers(-62135596800 * 10**6, 253402300799 * 10**6 + 999999)
COLUMNS = st.lists(
    st.tuples(st.sampled_from(list(Field)), st.sampled_from(list(Aggregation))),
    min_size=1,
    max_size=12,
)
VALUE = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.just(0.0))


def reference(rows: list[tuple[Any, ...]], columns: list[tuple[Field, Aggregation]]) -> bytes:
    resp = pb.AggregateReadingsResponse()
    for r in rows:
        b = resp.buckets.add(sensor_id=r[0], count=r[2])
        b.bucket_start.seconds, rest = divmod(r[1], 1_000_000)
        b.bucket_start.nanos = rest * 1000
        for (f, a), x in zip(columns, r[3:], strict=True):
            value = b.values.add(field=v.FIELD_ENUM[f], aggregation=v.AGGREGATION_ENUM[a])
            if x is not None:
                value.value = x
    return resp.SerializeToString()


@st.composite
def responses(draw: st.DrawFn) -> tuple[list[tuple[Any, ...]], list[tuple[Field, Aggregation]]]:
    columns = draw(COLUMNS)
    row = st.tuples(INT64, MICROS, st.integers(0, 2**63 - 1), *[VALUE] * len(columns))
    return draw(st.lists(row, max_size=30)), columns


@settings(max_examples=300, deadline=None)
@given(responses())
def test_same_bytes_as_protobuf(case: tuple[list[tuple[Any, ...]], Any]) -> None:
    rows, columns = case
    assert wire.buckets(rows, columns).SerializeToString() == reference(rows, columns)


def test_varint_edges() -> None:
    assert wire.varint(0) == b"\x00"
    assert wire.varint(127) == b"\x7f"
    assert wire.varint(128) == b"\x80\x01"
    assert wire.varint(-1) == b"\xff" * 9 + b"\x01"
