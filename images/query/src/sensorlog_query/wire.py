"""AggregateReadings responses encoded in protobuf's wire format straight from database rows.

Filling 240 buckets x 6 values through the protobuf API took ~1.4 ms per call,
most of it creating a Python wrapper per value; encoding the bytes here and
parsing them once (upb, in C) takes ~0.55 ms. The bytes are the ones protobuf
itself writes for the same message (the tests compare them), so the servicer
still returns an ordinary message.

Layout (query.proto): AggregateReadingsResponse.buckets = 1; Bucket: sensor_id = 1,
bucket_start = 2 (Timestamp: seconds = 1, nanos = 2), count = 3, values = 4;
AggregateValue: field = 1, aggregation = 2, optional double value = 3. Fields at
their default (0) are left out, as proto3 does; ``value`` only when present.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

from sensorlog.v1 import query_pb2 as pb
from sensorlog_core import queries
from sensorlog_query import validation as v

_U64 = (1 << 64) - 1
_double = struct.Struct("<d").pack


def varint(n: int) -> bytes:
    """Base-128 varint; negative int64 values as their two's complement (ten bytes)."""
    n &= _U64
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_small = lru_cache(maxsize=65536)(varint)


@lru_cache(maxsize=65536)
def _field(tag: int, n: int) -> bytes:
    return bytes([tag]) + varint(n) if n else b""


def _timestamp(us: int) -> bytes:
    seconds, rest = divmod(us, 1_000_000)
    body = (b"\x08" + varint(seconds) if seconds else b"") + (
        b"\x10" + varint(rest * 1000) if rest else b""
    )
    return b"\x12" + varint(len(body)) + body


@lru_cache(maxsize=256)
def _layout(
    columns: tuple[tuple[queries.Field, queries.Aggregation], ...],
) -> tuple[list[bytes], list[bytes], Callable[..., bytes]]:
    """Per column: an AggregateValue up to its value's 8 bytes, one without a value;
    and one struct.pack for a row with every value present (the usual row)."""
    present: list[bytes] = []
    absent: list[bytes] = []
    for f, a in columns:
        pair = _field(0x08, v.FIELD_ENUM[f]) + _field(0x10, v.AGGREGATION_ENUM[a])
        present.append(b"\x22" + varint(len(pair) + 9) + pair + b"\x19")
        absent.append(b"\x22" + varint(len(pair)) + pair)
    packer = struct.Struct("<" + "".join(f"{len(p)}sd" for p in present)).pack
    return present, absent, packer


def buckets(
    rows: Sequence[Sequence[Any]], columns: Sequence[tuple[queries.Field, queries.Aggregation]]
) -> pb.AggregateReadingsResponse:
    """The response for rows (sensor_id, bucket_us, n, v0, v1, ...); ``v<i>`` None: no value."""
    present, absent, packer = _layout(tuple(columns))
    args: list[Any] = [None] * (2 * len(columns))
    args[0::2] = present
    starts: dict[int, bytes] = {}
    out = []
    for r in rows:
        start = starts.get(r[1])
        if start is None:
            start = starts[r[1]] = _timestamp(r[1])
        values = r[3:]
        if None in values:
            encoded = b"".join(
                absent[i] if x is None else present[i] + _double(x) for i, x in enumerate(values)
            )
        else:
            args[1::2] = values
            encoded = packer(*args)
        body = _field(0x08, r[0]) + start + _field(0x18, r[2]) + encoded
        out.append(b"\x0a" + _small(len(body)) + body)
    resp = pb.AggregateReadingsResponse()
    resp.MergeFromString(b"".join(out))
    return resp
