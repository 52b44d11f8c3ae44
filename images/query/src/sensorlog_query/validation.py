"""Request checks: every user mistake becomes a BadRequest naming the field.

Nothing here touches the database, so a bad request never costs a query and
never surfaces as a database error (UNKNOWN/INTERNAL).
"""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from sensorlog.v1 import query_pb2 as pb
from sensorlog_core import queries

# google.protobuf.Timestamp's documented range: 0001-01-01 .. 9999-12-31 UTC.
_MIN_SECONDS = -62135596800
_MAX_SECONDS = 253402300799
_MAX_TEXT = 1000
# google.protobuf.Duration's documented range: about +-10,000 years.
_MAX_DURATION_SECONDS = 315_576_000_000

FIELD_ENUM: dict[queries.Field, pb.Field] = {
    queries.Field.TEMPERATURE: pb.FIELD_TEMPERATURE,
    queries.Field.CPU: pb.FIELD_CPU,
}
AGGREGATION_ENUM: dict[queries.Aggregation, pb.Aggregation] = {
    queries.Aggregation.AVG: pb.AGGREGATION_AVG,
    queries.Aggregation.MIN: pb.AGGREGATION_MIN,
    queries.Aggregation.MAX: pb.AGGREGATION_MAX,
    queries.Aggregation.COUNT: pb.AGGREGATION_COUNT,
    queries.Aggregation.FIRST: pb.AGGREGATION_FIRST,
    queries.Aggregation.LAST: pb.AGGREGATION_LAST,
}
FIELDS: dict[int, queries.Field] = {int(k): f for f, k in FIELD_ENUM.items()}
AGGREGATIONS: dict[int, queries.Aggregation] = {int(k): a for a, k in AGGREGATION_ENUM.items()}


class BadRequest(ValueError):
    """INVALID_ARGUMENT; the message starts with the field's name."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


def timestamp_us(ts: Timestamp, field: str, *, round_up: bool = False) -> int:
    """Microseconds since the epoch; sub-microsecond parts round toward outside the range."""
    if not _MIN_SECONDS <= ts.seconds <= _MAX_SECONDS:
        raise BadRequest(field, "must be between 0001-01-01 and 9999-12-31 UTC")
    if not 0 <= ts.nanos <= 999_999_999:
        raise BadRequest(field, "nanos must be in 0..999999999")
    us, sub = divmod(ts.nanos, 1000)
    if round_up and sub:
        us += 1
    return int(ts.seconds) * 1_000_000 + int(us)


def time_range(has_start: bool, start: Timestamp, has_end: bool, end: Timestamp) -> tuple[int, int]:
    if not has_start:
        raise BadRequest("start", "is required")
    if not has_end:
        raise BadRequest("end", "is required")
    start_us = timestamp_us(start, "start")
    end_us = timestamp_us(end, "end", round_up=True)
    if end_us <= start_us:
        raise BadRequest("end", "must be after start (the range is [start, end))")
    return start_us, end_us


def page_size(value: int, default: int, maximum: int) -> int:
    if value < 0:
        raise BadRequest("page_size", "must not be negative")
    if value > maximum:
        raise BadRequest("page_size", f"{value} is over the maximum of {maximum}")
    return value or default


def sensor_ids(ids: Sequence[int], maximum: int) -> list[int] | None:
    """None means every sensor."""
    if len(ids) > maximum:
        raise BadRequest("sensor_ids", f"{len(ids)} ids are over the limit of {maximum}")
    return sorted(set(ids)) or None


def text_filter(value: str, field: str) -> str | None:
    """None means no filter; PostgreSQL text cannot hold NUL, so refuse it here."""
    if "\x00" in value:
        raise BadRequest(field, "must not contain NUL characters")
    if len(value) > _MAX_TEXT:
        raise BadRequest(field, f"is longer than {_MAX_TEXT} characters")
    return value or None


def order_desc(order: int) -> bool:
    if order not in (pb.ORDER_UNSPECIFIED, pb.ORDER_ASC, pb.ORDER_DESC):
        raise BadRequest("order", f"unknown order {order}")
    return order == pb.ORDER_DESC


def bucket_us(has_bucket: bool, d: Duration) -> int:
    if not has_bucket:
        raise BadRequest("bucket", "is required (e.g. 3600s)")
    if (
        not -999_999_999 <= d.nanos <= 999_999_999
        or abs(d.seconds) > _MAX_DURATION_SECONDS
        or d.seconds * d.nanos < 0
    ):
        raise BadRequest("bucket", "is not a valid Duration (at most 10,000 years)")
    width = int(d.seconds) * 1_000_000 + int(d.nanos / 1000)
    if d.seconds < 0 or d.nanos < 0 or (d.seconds == 0 and d.nanos == 0):
        raise BadRequest("bucket", "must be positive")
    if width <= 0:
        raise BadRequest("bucket", "must be at least 1 microsecond")
    return width


def aggregate_columns(
    fields: Sequence[int], aggregations: Sequence[int]
) -> list[tuple[queries.Field, queries.Aggregation]]:
    """Every (field, aggregation) pair in request order, duplicates dropped."""
    picked_fields: list[queries.Field] = []
    for i, f in enumerate(fields):
        if f not in FIELDS:
            raise BadRequest(f"fields[{i}]", f"unknown field {f}")
        if FIELDS[f] not in picked_fields:
            picked_fields.append(FIELDS[f])
    picked_aggs: list[queries.Aggregation] = []
    for i, a in enumerate(aggregations):
        if a not in AGGREGATIONS:
            raise BadRequest(f"aggregations[{i}]", f"unknown aggregation {a}")
        if AGGREGATIONS[a] not in picked_aggs:
            picked_aggs.append(AGGREGATIONS[a])
    picked_fields = picked_fields or [queries.Field.TEMPERATURE, queries.Field.CPU]
    picked_aggs = picked_aggs or [queries.Aggregation.AVG]
    return [(f, a) for f in picked_fields for a in picked_aggs]


def check_buckets(start_us: int, end_us: int, width_us: int, maximum: int) -> None:
    if queries.first_bucket_us(start_us, width_us) < _MIN_SECONDS * 1_000_000:
        # Buckets are aligned to 1970; the database cannot represent a bucket
        # that starts before year 1.
        raise BadRequest("bucket", "is so wide that the first bucket would start before year 1")
    n = queries.bucket_count(start_us, end_us, width_us)
    if n > maximum:
        raise BadRequest(
            "bucket",
            f"the range holds {n} buckets per sensor, over the limit of {maximum}; "
            "use a wider bucket or a shorter range",
        )
