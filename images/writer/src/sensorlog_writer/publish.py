"""``sensorlog-publish``: send readings or sensors to Kafka, or a steady synthetic load.

Examples::

    sensorlog-publish reading --sensor-id 1 --temperature 30 --cpu 20
    sensorlog-publish sensor --id 1 --type thermometer --location rack-1
    sensorlog-publish file readings.jsonl          # one JSON message per line ('-': stdin)
    sensorlog-publish load --rate 5000 --sensors 100 --count 100000

The bootstrap servers come from ``--bootstrap`` or SENSORLOG_WRITER_KAFKA_BOOTSTRAP_SERVERS;
TLS/SASL from the writer's SENSORLOG_WRITER_KAFKA_* variables or the flags below
(the SASL password only from the environment or --sasl-password-file, never a flag).
With SENSORLOG_PUBLISH_TRACING_ENDPOINT set (an OTLP gRPC URL), each message
gets a producer span whose W3C context travels in the record's headers, so the
writer's batch span links back to it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from aiokafka import AIOKafkaProducer
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from pydantic_settings import SettingsConfigDict

from sensorlog_core import tracing
from sensorlog_core.kafka_security import KafkaSecuritySettings, client_kwargs
from sensorlog_core.settings import ServiceSettings, load

READINGS_TOPIC = "logger.sensor.ts"
SENSORS_TOPIC = "logger.sensor.instance"


class PublishSecurity(KafkaSecuritySettings):
    """The writer's Kafka security variables: one environment serves the writer and this CLI."""

    model_config = SettingsConfigDict(env_prefix="SENSORLOG_WRITER_", extra="ignore", frozen=True)


# flag dest -> PublishSecurity field
_SECURITY_FLAGS = {
    "security_protocol": "kafka_security_protocol",
    "ca_file": "kafka_ssl_ca_file",
    "cert_file": "kafka_ssl_cert_file",
    "key_file": "kafka_ssl_key_file",
    "sasl_mechanism": "kafka_sasl_mechanism",
    "sasl_username": "kafka_sasl_username",
    "sasl_password_file": "kafka_sasl_password_file",
}
PROGRAM = "sensorlog-publish"
tracer = trace.get_tracer("sensorlog.publish")


class PublishSettings(ServiceSettings):
    """Only the tracing_* fields matter to this command-line tool."""

    model_config = SettingsConfigDict(env_prefix="SENSORLOG_PUBLISH_", extra="ignore", frozen=True)


def synthetic_readings(
    count: int, sensors: int, start_ts: int, per_message: int = 1
) -> Iterator[list[dict[str, Any]]]:
    """Deterministic readings: reading k is sensor k % sensors at start_ts + k // sensors s.

    Every (sensor_id, ts) is unique, so a test can compare the table with the
    produced set exactly.
    """
    msg: list[dict[str, Any]] = []
    for k in range(count):
        sensor = k % sensors
        msg.append(
            {
                "ts": start_ts + k // sensors,
                "sensor_id": sensor,
                "temperature": round(20 + (k % 97) * 0.1, 2),
                "cpu": float(k % 100),
            }
        )
        if len(msg) == per_message:
            yield msg
            msg = []
    if msg:
        yield msg


def _encode(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def _key(doc: Any) -> bytes | None:
    first = doc[0] if isinstance(doc, list) and doc else doc
    if isinstance(first, dict):
        sid = first.get("sensor_id", first.get("id"))
        if isinstance(sid, int):
            return str(sid).encode()
    return None


async def _send_all(
    bootstrap: str,
    topic: str,
    docs: AsyncIterator[bytes],
    rate: float | None,
    security: KafkaSecuritySettings | None = None,
) -> dict[str, float]:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=10,
        max_batch_size=256 * 1024,
        **(client_kwargs(security) if security is not None else {}),
    )
    await producer.start()
    sent = 0
    started = time.monotonic()
    try:
        pending = []
        async for raw in docs:
            # Key by sensor: one sensor's readings stay in order on one partition.
            key = _key(json.loads(raw)) if raw.startswith((b"{", b"[")) else None
            if tracing.enabled():
                pending.append(await _send_traced(producer, topic, raw, key))
            else:
                pending.append(await producer.send(topic, raw, key=key))
            sent += 1
            if len(pending) >= 1000:
                await asyncio.gather(*pending)
                pending.clear()
            if rate:
                ahead = sent / rate - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return {"messages": sent, "seconds": round(time.monotonic() - started, 3)}


async def _send_traced(
    producer: AIOKafkaProducer, topic: str, raw: bytes, key: bytes | None
) -> asyncio.Future[Any]:
    """Send with a producer span that ends when the broker acknowledges the record."""
    span = tracer.start_span(
        f"send {topic}",
        kind=SpanKind.PRODUCER,
        attributes={
            "messaging.system": "kafka",
            "messaging.operation.type": "send",
            "messaging.destination.name": topic,
            "messaging.message.body.size": len(raw),
        },
    )
    headers = tracing.inject_headers([], trace.set_span_in_context(span))
    try:
        future: asyncio.Future[Any] = await producer.send(topic, raw, key=key, headers=headers)
    except BaseException as exc:
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        span.end()
        raise

    def acked(f: asyncio.Future[Any]) -> None:
        if f.cancelled() or f.exception() is not None:
            span.set_status(Status(StatusCode.ERROR, "not acknowledged"))
        else:
            meta = f.result()
            span.set_attribute("messaging.destination.partition.id", str(meta.partition))
            span.set_attribute("messaging.kafka.offset", meta.offset)
        span.end()

    future.add_done_callback(acked)
    return future


async def _aiter(items: Iterator[bytes]) -> AsyncIterator[bytes]:
    for item in items:
        yield item


def _lines(path: str) -> Iterator[bytes]:
    stream = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
    with stream:
        for line in stream:
            line = line.strip()
            if line:
                yield line


def _field(text: str) -> tuple[str, float]:
    name, _, value = text.partition("=")
    try:
        return name, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--field wants NAME=NUMBER, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sensorlog-publish",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--bootstrap",
        default=os.environ.get("SENSORLOG_WRITER_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
    )
    p.add_argument("--topic", help="override the topic (default depends on the command)")
    sec = p.add_argument_group("Kafka security (default: the SENSORLOG_WRITER_KAFKA_* variables)")
    sec.add_argument(
        "--security-protocol", choices=["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
    )
    sec.add_argument("--ca-file", help="PEM CA that signed the brokers' certificates")
    sec.add_argument("--cert-file", help="PEM client certificate (mTLS)")
    sec.add_argument("--key-file", help="PEM client key (mTLS)")
    sec.add_argument("--sasl-mechanism", choices=["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
    sec.add_argument("--sasl-username")
    sec.add_argument(
        "--sasl-password-file",
        help="file holding the SASL password (or env SENSORLOG_WRITER_KAFKA_SASL_PASSWORD)",
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("reading", help="send one reading")
    r.add_argument("--sensor-id", type=int, required=True)
    r.add_argument("--ts", help="epoch s/ms or RFC 3339 (default: now)")
    r.add_argument("--temperature", type=float)
    r.add_argument("--cpu", type=float)
    r.add_argument(
        "--field",
        type=_field,
        action="append",
        default=[],
        help="another numeric field, NAME=NUMBER (repeatable)",
    )
    s = sub.add_parser("sensor", help="send one sensor entity")
    s.add_argument("--id", type=int, required=True)
    s.add_argument("--type")
    s.add_argument("--location")
    s.add_argument("--metadata", type=json.loads, default=None, help="JSON object")
    s.add_argument("--updated-at", help="event time (default: the record's time)")
    f = sub.add_parser("file", help="send each line of a JSON Lines file ('-' for stdin)")
    f.add_argument("path")
    f.add_argument("--rate", type=float, help="messages per second (default: as fast as possible)")
    ld = sub.add_parser("load", help="steady synthetic readings")
    ld.add_argument("--rate", type=float, default=1000, help="readings per second (0: unlimited)")
    ld.add_argument("--sensors", type=int, default=100)
    ld.add_argument("--count", type=int, help="readings in all (default: rate x duration)")
    ld.add_argument("--duration", type=float, default=10, help="seconds, when --count is unset")
    ld.add_argument("--per-message", type=int, default=10, help="readings per Kafka message")
    ld.add_argument(
        "--start-ts",
        type=int,
        default=None,
        help="ts of the first round (default: now - count/sensors s)",
    )
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    security = load(
        PublishSecurity,
        **{
            field: getattr(args, dest)
            for dest, field in _SECURITY_FLAGS.items()
            if getattr(args, dest) is not None
        },
    )
    rate: float | None = None
    if args.cmd == "reading":
        doc: dict[str, Any] = {"ts": args.ts or int(time.time()), "sensor_id": args.sensor_id}
        if args.ts and args.ts.lstrip("-").isdigit():
            doc["ts"] = int(args.ts)
        for name in ("temperature", "cpu"):
            if getattr(args, name) is not None:
                doc[name] = getattr(args, name)
        doc.update(dict(args.field))
        docs: Iterator[bytes] = iter([_encode(doc)])
        topic = args.topic or READINGS_TOPIC
    elif args.cmd == "sensor":
        sdoc: dict[str, Any] = {"id": args.id, "type": args.type, "location": args.location}
        if args.metadata is not None:
            sdoc["metadata"] = args.metadata
        if args.updated_at:
            sdoc["updated_at"] = args.updated_at
        docs = iter([_encode(sdoc)])
        topic = args.topic or SENSORS_TOPIC
    elif args.cmd == "file":
        docs = _lines(args.path)
        topic = args.topic or READINGS_TOPIC
        rate = args.rate
    else:
        count = args.count if args.count is not None else int(args.rate * args.duration)
        start = args.start_ts
        if start is None:
            start = int(time.time()) - count // max(1, args.sensors) - 1
        docs = (
            _encode(m) for m in synthetic_readings(count, args.sensors, start, args.per_message)
        )
        topic = args.topic or READINGS_TOPIC
        rate = args.rate / args.per_message if args.rate else None
    traces = tracing.setup_tracing(load(PublishSettings), PROGRAM, "sensorlog-writer")
    try:
        summary = asyncio.run(_send_all(args.bootstrap, topic, _aiter(docs), rate, security))
    finally:
        if traces is not None:
            traces.shutdown()
    sys.stdout.write(json.dumps({"topic": topic, **summary}) + "\n")


if __name__ == "__main__":
    main()
