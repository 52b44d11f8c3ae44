"""``sensorlog-query``: call the query service and print a table or JSON.

For users behind ``kubectl port-forward svc/sensorlog-query 50051`` who have
neither grpcurl nor Postman (both still work through server reflection).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from sensorlog.v1 import query_pb2 as pb
from sensorlog.v1 import query_pb2_grpc as pb_grpc
from sensorlog_query.tls import channel_credentials

DEFAULT_TARGET = "127.0.0.1:50051"
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(us|ms|s|m|h|d|w)?$")
_FIELDS = {"temperature": pb.FIELD_TEMPERATURE, "cpu": pb.FIELD_CPU}
_AGGS = {
    "avg": pb.AGGREGATION_AVG,
    "min": pb.AGGREGATION_MIN,
    "max": pb.AGGREGATION_MAX,
    "count": pb.AGGREGATION_COUNT,
    "first": pb.AGGREGATION_FIRST,
    "last": pb.AGGREGATION_LAST,
}


# --------------------------------------------------------------------------- parsing


def parse_duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``1h``, ``1d``, ``1w``, ``500ms``; a bare number is seconds."""
    m = _DURATION.match(text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 30s, 5m, 1h, 1d)")
    return timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2) or "s"])


def parse_time(text: str) -> datetime:
    """ISO 8601 (naive means UTC), ``now``, or ``-<duration>`` meaning that long ago."""
    text = text.strip()
    now = datetime.now(UTC)
    if text == "now":
        return now
    if text.startswith("-"):
        return now - parse_duration(text[1:])
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a time: {text!r} (ISO 8601 like 2024-05-01T12:00:00Z, now, or -1h)"
        ) from None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _ts(dt: datetime) -> Timestamp:
    t = Timestamp()
    t.FromDatetime(dt)
    return t


def _dur(td: timedelta) -> Duration:
    d = Duration()
    d.FromTimedelta(td)
    return d


# --------------------------------------------------------------------------- output


def _fmt_ts(ts: Timestamp) -> str:
    return str(ts.ToDatetime(tzinfo=UTC).isoformat()).replace("+00:00", "Z")


def _fmt_num(x: float | None) -> str:
    return "" if x is None else f"{x:.6g}"


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    widths = [len(h) for h in header]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def _as_dict(msg: Message) -> dict[str, Any]:
    out: dict[str, Any] = MessageToDict(msg, preserving_proto_field_name=True)
    return out


READING_HEADER = ["sensor_id", "ts", "temperature", "cpu", "extra"]


def reading_row(r: pb.Reading) -> list[str]:
    return [
        str(r.sensor_id),
        _fmt_ts(r.ts),
        _fmt_num(r.temperature if r.HasField("temperature") else None),
        _fmt_num(r.cpu if r.HasField("cpu") else None),
        " ".join(f"{k}={_fmt_num(v)}" for k, v in sorted(r.extra.items())),
    ]


def sensor_row(s: pb.Sensor) -> list[str]:
    meta = json.dumps(MessageToDict(s.metadata), sort_keys=True) if s.metadata.fields else ""
    return [str(s.id), s.type, s.location, _fmt_ts(s.updated_at), meta]


def _print_readings(readings: Iterable[pb.Reading], as_json: bool) -> None:
    if as_json:
        print(json.dumps([_as_dict(r) for r in readings], indent=2))
    else:
        print(table([reading_row(r) for r in readings], READING_HEADER))


# --------------------------------------------------------------------------- commands


def _sensor_ids(args: argparse.Namespace) -> list[int]:
    return list(args.sensor or [])


def cmd_sensors(stub: pb_grpc.QueryServiceStub, args: argparse.Namespace, timeout: float) -> None:
    req = pb.ListSensorsRequest(
        type=args.type or "", location=args.location or "", page_size=args.page_size
    )
    req.page_token = args.page_token or ""
    resp = stub.ListSensors(req, timeout=timeout)
    if args.json:
        print(json.dumps(_as_dict(resp), indent=2))
        return
    header = ["id", "type", "location", "updated_at", "metadata"]
    print(table([sensor_row(s) for s in resp.sensors], header))
    if resp.next_page_token:
        print(f"\nnext page: --page-token {resp.next_page_token}")


def cmd_sensor(stub: pb_grpc.QueryServiceStub, args: argparse.Namespace, timeout: float) -> None:
    s = stub.GetSensor(pb.GetSensorRequest(id=args.id), timeout=timeout)
    if args.json:
        print(json.dumps(_as_dict(s), indent=2))
    else:
        print(table([sensor_row(s)], ["id", "type", "location", "updated_at", "metadata"]))


def _order(args: argparse.Namespace) -> pb.Order:
    return pb.ORDER_DESC if args.desc else pb.ORDER_ASC


def cmd_readings(stub: pb_grpc.QueryServiceStub, args: argparse.Namespace, timeout: float) -> None:
    req = pb.ListReadingsRequest(
        sensor_ids=_sensor_ids(args),
        start=_ts(args.start),
        end=_ts(args.end),
        page_size=args.page_size,
        page_token=args.page_token or "",
        order=_order(args),
    )
    resp = stub.ListReadings(req, timeout=timeout)
    if args.json:
        print(json.dumps(_as_dict(resp), indent=2))
        return
    print(table([reading_row(r) for r in resp.readings], READING_HEADER))
    if resp.next_page_token:
        print(f"\nnext page: --page-token {resp.next_page_token}")


def _stream(
    stub: pb_grpc.QueryServiceStub, args: argparse.Namespace, timeout: float
) -> Iterator[pb.Reading]:
    req = pb.StreamReadingsRequest(
        sensor_ids=_sensor_ids(args), start=_ts(args.start), end=_ts(args.end), order=_order(args)
    )
    for batch in stub.StreamReadings(req, timeout=timeout):
        yield from batch.readings


def cmd_stream(stub: pb_grpc.QueryServiceStub, args: argparse.Namespace, timeout: float) -> None:
    if args.json:
        # JSON lines: a stream may be too large to hold as one document.
        for r in _stream(stub, args, timeout):
            print(json.dumps(_as_dict(r)))
        return
    print("  ".join(READING_HEADER))
    for r in _stream(stub, args, timeout):
        print("  ".join(reading_row(r)).rstrip())


def cmd_aggregate(stub: pb_grpc.QueryServiceStub, args: argparse.Namespace, timeout: float) -> None:
    req = pb.AggregateReadingsRequest(
        sensor_ids=_sensor_ids(args),
        start=_ts(args.start),
        end=_ts(args.end),
        bucket=_dur(args.bucket),
        fields=[_FIELDS[f] for f in args.field or []],
        aggregations=[_AGGS[a] for a in args.agg or []],
        fill_gaps=args.fill_gaps,
    )
    resp = stub.AggregateReadings(req, timeout=timeout)
    if args.json:
        print(json.dumps(_as_dict(resp), indent=2))
        return
    field_names: dict[int, str] = {int(v): k for k, v in _FIELDS.items()}
    agg_names: dict[int, str] = {int(v): k for k, v in _AGGS.items()}
    columns: list[tuple[int, int]] = []
    for b in resp.buckets:
        for val in b.values:
            if (val.field, val.aggregation) not in columns:
                columns.append((val.field, val.aggregation))
    header = ["sensor_id", "bucket_start", "count"] + [
        f"{agg_names.get(a, str(a))}({field_names.get(f, str(f))})" for f, a in columns
    ]
    rows = []
    for b in resp.buckets:
        by_key = {
            (x.field, x.aggregation): (x.value if x.HasField("value") else None) for x in b.values
        }
        rows.append(
            [str(b.sensor_id), _fmt_ts(b.bucket_start), str(b.count)]
            + [_fmt_num(by_key.get(c)) for c in columns]
        )
    print(table(rows, header))


def cmd_latest(stub: pb_grpc.QueryServiceStub, args: argparse.Namespace, timeout: float) -> None:
    req = pb.LatestReadingsRequest(sensor_ids=_sensor_ids(args))
    if args.before:
        req.before.CopyFrom(_ts(args.before))
    if args.since:
        req.since.CopyFrom(_ts(args.since))
    resp = stub.LatestReadings(req, timeout=timeout)
    if args.json:
        print(json.dumps(_as_dict(resp), indent=2))
    else:
        _print_readings(resp.readings, False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sensorlog-query",
        description="Query sensorlog over gRPC (e.g. through kubectl port-forward "
        "svc/sensorlog-query 50051). Times: ISO 8601 (UTC if no offset), now, or -1h.",
    )
    parser.add_argument(
        "--target",
        default=os.environ.get("SENSORLOG_QUERY_TARGET", DEFAULT_TARGET),
        help="host:port of the query service (env SENSORLOG_QUERY_TARGET; default %(default)s)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--tls",
        action="store_true",
        help="connect with TLS (implied by --ca/--cert/--key); trusts the system roots unless --ca",
    )
    parser.add_argument("--ca", help="PEM CA that signed the server's certificate")
    parser.add_argument("--cert", help="PEM client certificate, for servers that require mTLS")
    parser.add_argument("--key", help="PEM key of --cert")
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds before giving up (the call deadline)"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def with_sensors(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--sensor", type=int, action="append", help="sensor id (repeatable); default: all"
        )

    def with_range(p: argparse.ArgumentParser) -> None:
        p.add_argument("--start", type=parse_time, required=True, help="inclusive start")
        p.add_argument("--end", type=parse_time, default="now", help="exclusive end (now)")

    p = sub.add_parser("sensors", help="ListSensors")
    p.add_argument("--type")
    p.add_argument("--location")
    p.add_argument("--page-size", type=int, default=0)
    p.add_argument("--page-token")
    p.set_defaults(run=cmd_sensors)

    p = sub.add_parser("sensor", help="GetSensor")
    p.add_argument("id", type=int)
    p.set_defaults(run=cmd_sensor)

    p = sub.add_parser("readings", help="ListReadings (one page)")
    with_sensors(p)
    with_range(p)
    p.add_argument("--page-size", type=int, default=0)
    p.add_argument("--page-token")
    p.add_argument("--desc", action="store_true", help="newest first")
    p.set_defaults(run=cmd_readings)

    p = sub.add_parser("stream", help="StreamReadings (whole range)")
    with_sensors(p)
    with_range(p)
    p.add_argument("--desc", action="store_true", help="newest first")
    p.set_defaults(run=cmd_stream)

    p = sub.add_parser("aggregate", help="AggregateReadings")
    with_sensors(p)
    with_range(p)
    p.add_argument("--bucket", type=parse_duration, required=True, help="e.g. 5m, 1h, 1d")
    p.add_argument("--field", choices=sorted(_FIELDS), action="append")
    p.add_argument("--agg", choices=list(_AGGS), action="append")
    p.add_argument("--fill-gaps", action="store_true")
    p.set_defaults(run=cmd_aggregate)

    p = sub.add_parser("latest", help="LatestReadings")
    with_sensors(p)
    p.add_argument("--before", type=parse_time)
    p.add_argument("--since", type=parse_time)
    p.set_defaults(run=cmd_latest)
    return parser


def open_channel(args: argparse.Namespace) -> grpc.Channel:
    if bool(args.cert) != bool(args.key):
        raise SystemExit("error: --cert and --key go together")
    if not (args.tls or args.ca or args.cert):
        return grpc.insecure_channel(args.target)
    try:
        creds = channel_credentials(args.ca, args.cert, args.key)
    except OSError as exc:
        raise SystemExit(f"error: {exc.filename}: {exc.strerror}") from None
    return grpc.secure_channel(args.target, creds)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    with open_channel(args) as channel:
        stub = pb_grpc.QueryServiceStub(channel)  # type: ignore[no-untyped-call]
        try:
            args.run(stub, args, args.timeout)
        except grpc.RpcError as exc:
            print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
            raise SystemExit(1) from None
        except BrokenPipeError:  # e.g. piped into head
            raise SystemExit(0) from None


if __name__ == "__main__":
    main()
