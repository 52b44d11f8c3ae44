"""Tracing setup: off costs nothing, a dead collector blocks nothing, logs carry ids."""

from __future__ import annotations

import io
import json
import logging
import socket
import subprocess
import sys
import textwrap

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from sensorlog_core import tracing
from sensorlog_core.logs import JsonFormatter
from sensorlog_core.settings import ServiceSettings


def test_off_installs_no_sdk_provider() -> None:
    assert tracing.setup_tracing(ServiceSettings(tracing_endpoint=""), "x") is None
    assert not tracing.enabled()
    # The API's proxy stays in place: spans are non-recording and cost nothing.
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)
    with tracing.sql_span(trace.get_tracer("t"), "SELECT 1") as span:
        assert span is trace.INVALID_SPAN


def test_json_log_lines_inside_a_span_carry_its_trace_and_span_ids() -> None:
    # A provider of the test's own: the global one can be set once per process.
    tracer = TracerProvider().get_tracer("test")
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("test.tracing.ids")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with tracer.start_as_current_span("outer") as span:
            logger.info("inside")
        logger.info("outside")
    finally:
        logger.removeHandler(handler)
    inside, outside = (json.loads(line) for line in out.getvalue().splitlines())
    ctx = span.get_span_context()
    assert inside["trace_id"] == format(ctx.trace_id, "032x")
    assert inside["span_id"] == format(ctx.span_id, "016x")
    assert "trace_id" not in outside


def test_kafka_headers_round_trip_the_w3c_context() -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("produce") as span:
        headers = tracing.inject_headers([("other", b"kept")])
    assert dict(headers)["other"] == b"kept"
    assert dict(headers)["traceparent"].startswith(b"00-")
    [link] = tracing.links_from_headers([headers, None, [("other", b"x")]])
    assert link.context.trace_id == span.get_span_context().trace_id
    assert link.context.span_id == span.get_span_context().span_id


def test_unreachable_collector_neither_blocks_nor_crashes_the_process() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    script = textwrap.dedent(
        f"""
        import time
        from opentelemetry import trace
        from sensorlog_core import tracing
        from sensorlog_core.settings import ServiceSettings

        t = tracing.setup_tracing(
            ServiceSettings(tracing_endpoint="http://127.0.0.1:{dead}"), "dead-collector"
        )
        tracer = trace.get_tracer("t")
        started = time.monotonic()
        for i in range(20000):  # more than the queue holds: the excess is dropped
            with tracer.start_as_current_span("s"):
                pass
        spent = time.monotonic() - started
        started = time.monotonic()
        t.shutdown(timeout=2)
        print(spent, time.monotonic() - started)
        """
    )
    r = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert r.returncode == 0, r.stderr
    spans_s, shutdown_s = map(float, r.stdout.split())
    assert spans_s < 10, "ending spans waited on the exporter"
    assert shutdown_s < 3.5, "shutdown waited on the dead collector past its bound"
