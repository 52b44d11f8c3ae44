"""The Hypertable spec as typed objects.

The API server already validated the resource against the CRD schema; parsing
again here turns durations into timedeltas and catches a spec stored before a
schema change, as a PermanentError with the field named, not a crash.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sensorlog_operator import duration

Function = Literal["avg", "min", "max", "sum", "count", "first", "last", "stddev"]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


def _duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    return duration.parse(str(value))


class Retention(_Model):
    after: timedelta

    _after = field_validator("after", mode="before")(_duration)


class Compression(_Model):
    after: timedelta
    segment_by: tuple[str, ...] = Field((), alias="segmentBy")
    order_by: tuple[str, ...] = Field((), alias="orderBy")

    _after = field_validator("after", mode="before")(_duration)


class Aggregation(_Model):
    column: str
    functions: tuple[Function, ...]


class Refresh(_Model):
    start_offset: timedelta = Field(alias="startOffset")
    end_offset: timedelta = Field(alias="endOffset")
    schedule_interval: timedelta = Field(timedelta(hours=1), alias="scheduleInterval")

    _d = field_validator("start_offset", "end_offset", "schedule_interval", mode="before")(
        _duration
    )


class ContinuousAggregate(_Model):
    name: str
    bucket: timedelta
    group_by: tuple[str, ...] = Field((), alias="groupBy")
    aggregations: tuple[Aggregation, ...]
    refresh: Refresh | None = None

    _bucket = field_validator("bucket", mode="before")(_duration)


class SecretRef(_Model):
    name: str
    key: str = "dsn"


class HypertableSpec(_Model):
    schema_: str = Field("public", alias="schema")
    table: str
    time_column: str = Field(alias="timeColumn")
    chunk_interval: timedelta = Field(timedelta(days=7), alias="chunkInterval")
    retention: Retention | None = None
    compression: Compression | None = None
    continuous_aggregates: tuple[ContinuousAggregate, ...] = Field((), alias="continuousAggregates")
    reclaim_policy: Literal["Retain", "Delete"] = Field("Retain", alias="reclaimPolicy")
    dsn_secret_ref: SecretRef = Field(alias="dsnSecretRef")

    _chunk = field_validator("chunk_interval", mode="before")(_duration)

    @property
    def qualified(self) -> str:
        """``schema.table`` as users write it (messages, claims)."""
        return f"{self.schema_}.{self.table}"


class SpecError(ValueError):
    """A spec that can never work; the message names the field."""


def parse_spec(raw: Mapping[str, Any]) -> HypertableSpec:
    try:
        return HypertableSpec.model_validate(dict(raw))
    except ValidationError as exc:
        problems = "; ".join(
            f"spec.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise SpecError(problems) from None
