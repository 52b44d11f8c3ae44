"""Decode and validate Kafka payloads into rows, isolating every bad element.

Readings (``logger.sensor.ts``) are a JSON object or an array of them::

    [{"ts": 1646409307, "sensor_id": 1, "temperature": 30, "cpu": 20, "humidity": 41}]

``ts`` rule (pydantic's): a JSON number whose magnitude is at most 2e10 is epoch
**seconds** (2e10 s is year 2603); above 2e10 it is epoch **milliseconds**
(2e10 ms is 1970-08-20, so real millisecond clocks are always above). A string
must be RFC 3339 with an offset (``2022-03-04T15:55:07Z``). Numeric fields
other than temperature/cpu are kept in ``extra``; a non-numeric extra field is
rejected rather than silently dropped.

Sensors (``logger.sensor.instance``) are an object or array of
``{"id": 1, "type": "thermo", "location": "rack-1", "metadata": {...},
"updated_at": <ts>}``; without ``updated_at`` (or ``ts``) the Kafka record's
timestamp is the event time.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, NotRequired, Required

from pydantic import (
    AliasChoices,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    TypeAdapter,
    ValidationError,
    with_config,
)
from typing_extensions import TypedDict

INT64_MAX = 2**63 - 1


class PayloadError(ValueError):
    """A record, or one element of it, that can never be stored."""


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: str
    # Index of the element inside a JSON array, None for the whole record.
    index: int | None
    # The offending element re-encoded, or None to dead-letter the raw record.
    value: bytes | None


# A reading row in sensor_data column order.
ReadingRow = tuple[datetime, int, float | None, float | None, dict[str, float] | None]


@dataclass(frozen=True, slots=True)
class SensorRow:
    id: int
    type: str | None
    location: str | None
    metadata: dict[str, Any]
    updated_at: datetime


def _keep_constant(name: str) -> float:
    # Parse NaN/Infinity instead of failing the whole record: the element that
    # holds one is refused on its own, its neighbours still land.
    return float(name)


def _check_storable(value: Any, field: str) -> None:
    """PostgreSQL refuses NUL characters in text/jsonb and non-finite numbers in jsonb."""
    try:
        encoded = json.dumps(value, allow_nan=False)
    except ValueError:
        raise PayloadError(f"{field} holds NaN or Infinity") from None
    if "\\u0000" in encoded:
        raise PayloadError(f"{field} holds a NUL character")


def decode_json(raw: bytes | None, max_bytes: int) -> Any:
    if raw is None:
        raise PayloadError("empty record (no value)")
    if len(raw) > max_bytes:
        raise PayloadError(f"record is {len(raw)} bytes, over the {max_bytes}-byte limit")
    try:
        # Decode explicitly: json.loads would guess UTF-16/32 from the first bytes.
        return json.loads(raw.decode("utf-8"), parse_constant=_keep_constant)
    except PayloadError:
        raise
    except RecursionError:
        raise PayloadError("JSON nested too deeply") from None
    except UnicodeDecodeError as exc:
        raise PayloadError(f"not UTF-8: {exc.reason} at byte {exc.start}") from None
    except json.JSONDecodeError as exc:
        raise PayloadError(
            f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None


def _finite_number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PayloadError(f"{field} must be a number, got {type(value).__name__}")
    f = float(value)
    if not math.isfinite(f):
        raise PayloadError(f"{field} is not finite")
    return f


SensorId = Annotated[int, Field(strict=True, ge=0, le=INT64_MAX)]
Timestamp = Annotated[AwareDatetime, Strict(False)]
Measure = Annotated[float | None, Field(strict=True, allow_inf_nan=False)]


@with_config(ConfigDict(extra="allow", strict=True, allow_inf_nan=False))
class ReadingIn(TypedDict):
    """One reading. Validated in pydantic-core (Rust) straight from the JSON bytes;
    fields beyond these are checked to be numbers and kept in ``extra``."""

    ts: Required[Timestamp]
    sensor_id: Required[SensorId]
    temperature: NotRequired[float | None]
    cpu: NotRequired[float | None]


_ONE = TypeAdapter(ReadingIn)
_MANY = TypeAdapter(list[ReadingIn])
_KNOWN = 2  # ts and sensor_id are required


def _row(r: ReadingIn, latest: datetime) -> ReadingRow:
    ts = r["ts"]
    if ts > latest:
        raise PayloadError(f"ts {ts.isoformat()} is beyond the allowed future tolerance")
    temperature = r.get("temperature")
    cpu = r.get("cpu")
    extra: dict[str, float] | None = None
    if len(r) > _KNOWN + ("temperature" in r) + ("cpu" in r):
        extra = {}
        for key, value in r.items():
            if key in ReadingIn.__annotations__ or value is None:
                continue
            if "\x00" in key:
                raise PayloadError("a field name holds a NUL character")
            extra[key] = _finite_number(value, key)
        extra = extra or None
    return (ts, r["sensor_id"], temperature, cpu, extra)


class SensorIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    id: SensorId = Field(validation_alias=AliasChoices("id", "sensor_id"))
    type: Annotated[str | None, Field(strict=True, max_length=200)] = None
    location: Annotated[str | None, Field(strict=True, max_length=200)] = None
    metadata: dict[str, Any] | None = None
    updated_at: Timestamp | None = Field(None, validation_alias=AliasChoices("updated_at", "ts"))


def _explain(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "value"
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if not msg.startswith(loc) else msg)
    return "; ".join(parts)


def reading_row(obj: Any, latest_allowed: datetime) -> ReadingRow:
    """Validate one decoded element (the slow path, used when a record has errors)."""
    if not isinstance(obj, dict):
        raise PayloadError(f"a reading must be a JSON object, got {type(obj).__name__}")
    try:
        r = _ONE.validate_python(obj)
    except ValidationError as exc:
        raise PayloadError(_explain(exc)) from None
    return _row(r, latest_allowed)


def _elements(doc: Any, max_elements: int) -> list[Any]:
    if isinstance(doc, list):
        if len(doc) > max_elements:
            raise PayloadError(f"array of {len(doc)} elements, over the {max_elements} limit")
        return doc
    return [doc]


def _fast_rows(raw: bytes, latest: datetime, max_elements: int) -> list[ReadingRow] | None:
    """The whole record validated in one pydantic-core call; None if anything is off."""
    try:
        if raw[:1] == b"[":
            readings = _MANY.validate_json(raw)
            if len(readings) > max_elements:
                return None
        else:
            readings = [_ONE.validate_json(raw)]
        return [_row(r, latest) for r in readings]
    except (ValidationError, PayloadError):
        return None


def parse_readings(
    raw: bytes | None,
    *,
    now: datetime,
    future_tolerance: timedelta,
    max_bytes: int,
    max_elements: int,
) -> tuple[list[ReadingRow], list[Rejection]]:
    """Good rows and per-element rejections of one readings record."""
    latest = now + future_tolerance
    if raw is not None and len(raw) <= max_bytes:
        rows = _fast_rows(raw, latest, max_elements)
        if rows is not None:
            return rows, []
    # Something is wrong: decode with the stdlib (keeps NaN per element, explains
    # syntax errors) and validate element by element so good neighbours land.
    try:
        doc = decode_json(raw, max_bytes)
        elements = _elements(doc, max_elements)
    except PayloadError as exc:
        return [], [Rejection(str(exc), None, None)]
    good: list[ReadingRow] = []
    rejected: list[Rejection] = []
    is_array = isinstance(doc, list)
    for i, element in enumerate(elements):
        try:
            good.append(reading_row(element, latest))
        except PayloadError as exc:
            if is_array:
                rejected.append(Rejection(str(exc), i, _reencode(element)))
            else:
                rejected.append(Rejection(str(exc), None, None))
    return good, rejected


def _reencode(element: Any) -> bytes:
    return json.dumps(element, separators=(",", ":"), allow_nan=True).encode()


def sensor_row(obj: Any, record_time: datetime) -> SensorRow:
    if not isinstance(obj, dict):
        raise PayloadError(f"a sensor must be a JSON object, got {type(obj).__name__}")
    try:
        s = SensorIn.model_validate(obj)
    except ValidationError as exc:
        raise PayloadError(_explain(exc)) from None
    _check_storable([s.type, s.location, s.metadata], "type, location or metadata")
    return SensorRow(s.id, s.type, s.location, s.metadata or {}, s.updated_at or record_time)


def parse_sensors(
    raw: bytes | None, *, record_time: datetime, max_bytes: int, max_elements: int
) -> tuple[list[SensorRow], list[Rejection]]:
    try:
        doc = decode_json(raw, max_bytes)
        elements = _elements(doc, max_elements)
    except PayloadError as exc:
        return [], [Rejection(str(exc), None, None)]
    rows: list[SensorRow] = []
    rejected: list[Rejection] = []
    is_array = isinstance(doc, list)
    for i, element in enumerate(elements):
        try:
            rows.append(sensor_row(element, record_time))
        except PayloadError as exc:
            rejected.append(
                Rejection(
                    str(exc), i if is_array else None, _reencode(element) if is_array else None
                )
            )
    return rows, rejected
