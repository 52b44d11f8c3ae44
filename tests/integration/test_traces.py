"""Traces over real OTLP: publish -> Kafka headers -> writer batch (links) -> database write,
and query RPC -> SQL statements, as received by an OTLP/gRPC receiver.

Jaeger is not built here (a ~10-minute Go build on this 2-core machine); the
receiver implements the same collector TraceService Jaeger's OTLP port does,
so the processes run their real exporters over real gRPC.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from sensorlog.v1 import query_pb2 as pb
from sensorlog.v1 import query_pb2_grpc as pb_grpc
from sensorlog_stack.kafka import Kafka, create_topics
from sensorlog_stack.otlp import OtlpReceiver, ReceivedSpan
from sensorlog_stack.pipeline import Topics, wait_for_rows, writer_env
from sensorlog_stack.services import QueryProcess, WriterProcess

pytestmark = pytest.mark.integration

# opentelemetry.proto.trace.v1.Span.SpanKind
SERVER, CLIENT, PRODUCER, CONSUMER = 2, 3, 4, 5
STATUS_ERROR = 2


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    r = OtlpReceiver().start()
    yield r
    r.stop()


def _one(spans: list[ReceivedSpan], **match: object) -> ReceivedSpan:
    found = [s for s in spans if all(getattr(s, k) == v for k, v in match.items())]
    assert len(found) == 1, f"expected one span {match}, got {len(found)}"
    return found[0]


async def test_publish_to_writer_batch_to_db_write_is_one_linked_trace(
    kafka: Kafka, pg_dsn: str, receiver: OtlpReceiver, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    t = Topics(f"readings-{tag}", f"sensors-{tag}", f"writer-{tag}")
    await create_topics(
        kafka.bootstrap, {t.readings: 3, t.sensors: 1, t.readings_dlq: 1, t.sensors_dlq: 1}
    )
    env = writer_env(
        kafka,
        pg_dsn,
        t,
        SENSORLOG_WRITER_TRACING_ENDPOINT=receiver.endpoint,
        # Everything in one batch, so one batch span must link all three messages.
        SENSORLOG_WRITER_BATCH_MAX_WAIT_MS="3000",
    )
    writer = WriterProcess(tmp_path / "writer.log", env).start()
    try:
        lines = [
            {"ts": 1_700_000_000, "sensor_id": 1, "temperature": 20.5},
            {"ts": 1_700_000_000, "sensor_id": 2, "temperature": 21.5},
            {"ts": "not a time", "sensor_id": 3},  # goes to the DLQ
        ]
        src = tmp_path / "readings.jsonl"
        src.write_text("".join(json.dumps(x) + "\n" for x in lines))
        publish = await asyncio.create_subprocess_exec(
            *[sys.executable, "-m", "sensorlog_writer.publish", "--bootstrap", kafka.bootstrap],
            *["--topic", t.readings, "file", str(src)],
            env={**os.environ, "SENSORLOG_PUBLISH_TRACING_ENDPOINT": receiver.endpoint},
        )
        assert await asyncio.wait_for(publish.wait(), 60) == 0
        assert await wait_for_rows(pg_dsn, 2, 60) == 2

        def complete(spans: list[ReceivedSpan]) -> bool:
            names = [s.name for s in spans]
            return names.count(f"send {t.readings}") == 3 and {
                "writer.batch",
                "writer.db_write",
                "writer.dlq_send",
            } <= set(names)

        spans = await asyncio.to_thread(receiver.wait_for, complete, 30, "publish+writer spans")
    finally:
        writer.stop()

    sends = [s for s in spans if s.name == f"send {t.readings}"]
    assert {s.service for s in sends} == {"sensorlog-publish"}
    assert {s.kind for s in sends} == {PRODUCER}
    assert all(s.attributes["messaging.destination.name"] == t.readings for s in sends)
    batch = _one(spans, name="writer.batch")
    assert (batch.service, batch.kind) == ("sensorlog-writer", CONSUMER)
    # Each message's context crossed Kafka in its headers and became a link.
    assert set(batch.links) == {(s.trace_id, s.span_id) for s in sends}
    assert batch.attributes["messaging.batch.message_count"] == 3
    write = _one(spans, name="writer.db_write")
    assert (write.trace_id, write.parent_span_id) == (batch.trace_id, batch.span_id)
    assert write.kind == CLIENT and write.attributes["db.system"] == "postgresql"
    assert write.attributes["sensorlog.inserted"] == 2
    dlq = _one(spans, name="writer.dlq_send")
    assert (dlq.trace_id, dlq.parent_span_id) == (batch.trace_id, batch.span_id)
    assert dlq.kind == PRODUCER


async def test_query_rpc_has_sql_child_spans_and_logs_carry_its_trace_id(
    pg_dsn: str, receiver: OtlpReceiver, tmp_path: Path
) -> None:
    log = tmp_path / "query.log"
    q = QueryProcess(
        log,
        {
            "SENSORLOG_QUERY_DATABASE_DSN": pg_dsn,
            "SENSORLOG_QUERY_TRACING_ENDPOINT": receiver.endpoint,
            "SENSORLOG_QUERY_TRACING_SERVICE_NAME": "query-under-test",
        },
    )
    q.start()
    caller_trace = uuid.uuid4().hex
    caller_span = uuid.uuid4().hex[:16]
    try:
        async with grpc.aio.insecure_channel(q.target) as channel:
            stub = pb_grpc.QueryServiceStub(channel)  # type: ignore[no-untyped-call]
            # The caller's W3C context in metadata: the server span must continue it.
            md = (("traceparent", f"00-{caller_trace}-{caller_span}-01"),)
            window = pb.ListReadingsRequest(sensor_ids=[7, 8])
            window.start.FromSeconds(1_700_000_000)
            window.end.FromSeconds(1_700_003_600)
            await stub.ListReadings(window, metadata=md)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.GetSensor(pb.GetSensorRequest(id=424242))
            assert err.value.code() == grpc.StatusCode.NOT_FOUND

        def complete(spans: list[ReceivedSpan]) -> bool:
            names = {s.name for s in spans}
            return {
                "sensorlog.v1.QueryService/ListReadings",
                "sensorlog.v1.QueryService/GetSensor",
            } <= names and sum(s.kind == CLIENT for s in spans) >= 2

        spans = await asyncio.to_thread(receiver.wait_for, complete, 30, "query spans")
    finally:
        q.stop()

    assert not [s for s in spans if s.name.startswith("grpc.health")], "probes are not traced"
    listing = _one(spans, name="sensorlog.v1.QueryService/ListReadings")
    assert (listing.service, listing.kind) == ("query-under-test", SERVER)
    assert (listing.trace_id, listing.parent_span_id) == (caller_trace, caller_span)
    assert listing.attributes["rpc.method"] == "ListReadings"
    assert listing.attributes["rpc.grpc.status_code"] == 0
    sql = [s for s in spans if s.parent_span_id == listing.span_id]
    assert len(sql) == 1 and sql[0].kind == CLIENT and sql[0].name == "SELECT"
    assert sql[0].attributes["db.system"] == "postgresql"
    statement = sql[0].attributes["db.statement"]
    assert "sensor_data" in statement and "$1" in statement
    # Statement text only: the sensor ids the caller sent are not in it.
    assert "{7,8}" not in statement and "7, 8" not in statement

    get = _one(spans, name="sensorlog.v1.QueryService/GetSensor")
    assert get.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert get.status_code != STATUS_ERROR, "NOT_FOUND is the caller's error, not the server's"
    assert [s.name for s in spans if s.parent_span_id == get.span_id] == ["SELECT"]
    # The server's log line for that call carries the call's trace and span ids.
    records = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
    failed = [r for r in records if r.get("message") == "request failed"]
    assert [(r["trace_id"], r["span_id"]) for r in failed] == [(get.trace_id, get.span_id)]
