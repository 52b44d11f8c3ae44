"""OpenTelemetry tracing: one setup call per process, W3C context over Kafka headers, SQL spans.

Off (no endpoint) installs nothing: the API's no-op provider stays in place, so
``tracer.start_as_current_span`` costs a few attribute look-ups and the Kafka
helpers below skip header work entirely (:func:`enabled` is False).

On, spans go through a :class:`BatchSpanProcessor`: ending a span only appends
to a bounded in-memory queue; a background thread exports over OTLP/gRPC. An
unreachable collector therefore costs dropped spans and a warning from the
exporter, never a blocked event loop or a crashed service.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.trace import Link, Span, SpanKind

if TYPE_CHECKING:
    from sensorlog_core.settings import ServiceSettings

log = logging.getLogger(__name__)

# Kafka headers are (str, bytes) pairs; the W3C propagator wants str values.
KafkaHeaders = list[tuple[str, bytes]]

# A writer batch links to every traced message it carries; the SDK default
# (128) would silently drop most links of a 10k-record batch. Bounded all the
# same: a link is ~100 bytes and a batch span must fit one OTLP message.
MAX_LINKS = 10_000
# Seconds one export (and the final flush at shutdown) may take; the exporter
# retries within this budget and then drops the batch.
EXPORT_TIMEOUT_S = 5.0

_enabled = False


def enabled() -> bool:
    """True once :func:`setup_tracing` installed an SDK provider in this process."""
    return _enabled


@dataclass
class Tracing:
    """Handle of an installed provider; :meth:`shutdown` flushes what is queued."""

    provider: Any  # opentelemetry.sdk.trace.TracerProvider (imported lazily)
    service_name: str

    def shutdown(self, timeout: float = EXPORT_TIMEOUT_S) -> None:
        """Flush and stop, waiting at most ``timeout`` s: a dead collector must not hold up exit."""
        global _enabled
        worker = threading.Thread(target=self.provider.shutdown, name="otel-shutdown", daemon=True)
        worker.start()
        worker.join(timeout)
        if worker.is_alive():
            log.warning("trace exporter did not flush in time; queued spans are dropped")
        _enabled = False


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def setup_tracing(
    settings: ServiceSettings, default_name: str, distribution: str = "sensorlog-core"
) -> Tracing | None:
    """Install the SDK provider and OTLP/gRPC exporter; ``tracing_endpoint`` empty: do nothing.

    The endpoint is an OTLP gRPC URL (``http://jaeger:4317``; ``https://`` uses
    TLS). Sampling is parent-based: a request that arrives traced stays traced,
    new root traces are kept with probability ``tracing_sample_ratio``.
    ``distribution`` names the package whose version becomes service.version.
    """
    global _enabled
    endpoint = settings.tracing_endpoint
    if not endpoint:
        return None
    service_name = settings.tracing_service_name or default_name
    sample_ratio = settings.tracing_sample_ratio
    # Imported here so a process with tracing off never loads the SDK.
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import SpanLimits, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": service_name, "service.version": _version(distribution)}
        ),
        sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
        span_limits=SpanLimits(max_links=MAX_LINKS),
    )
    exporter = OTLPSpanExporter(
        endpoint=endpoint,
        insecure=not endpoint.startswith("https://"),
        timeout=EXPORT_TIMEOUT_S,
    )
    provider.add_span_processor(
        BatchSpanProcessor(
            exporter,
            # Full queue: new spans are dropped (counted by the SDK), the caller never waits.
            max_queue_size=4096,
            max_export_batch_size=512,
            schedule_delay_millis=1000,
            export_timeout_millis=int(EXPORT_TIMEOUT_S * 1000),
        )
    )
    trace.set_tracer_provider(provider)
    _enabled = True
    log.info(
        "tracing on",
        extra={"endpoint": endpoint, "service": service_name, "sample_ratio": sample_ratio},
    )
    return Tracing(provider, service_name)


# --------------------------------------------------------------------------- Kafka headers


class _HeaderGetter(Getter[Sequence[tuple[str, bytes]]]):
    def get(self, carrier: Sequence[tuple[str, bytes]], key: str) -> list[str] | None:
        values = [v.decode("latin-1") for k, v in carrier if k.lower() == key and v is not None]
        return values or None

    def keys(self, carrier: Sequence[tuple[str, bytes]]) -> list[str]:
        return [k for k, _ in carrier]


class _HeaderSetter(Setter[KafkaHeaders]):
    def set(self, carrier: KafkaHeaders, key: str, value: str) -> None:
        carrier[:] = [(k, v) for k, v in carrier if k != key]
        carrier.append((key, value.encode("latin-1")))


_GETTER = _HeaderGetter()
_SETTER = _HeaderSetter()


def inject_headers(headers: KafkaHeaders, context: Context | None = None) -> KafkaHeaders:
    """Add ``traceparent``/``tracestate`` of ``context`` (default: the current one)."""
    propagate.inject(headers, context=context, setter=_SETTER)
    return headers


def extract_headers(headers: Sequence[tuple[str, bytes]] | None) -> Context:
    return propagate.extract(headers or (), getter=_GETTER)


def links_from_headers(records_headers: Iterable[Sequence[tuple[str, bytes]] | None]) -> list[Link]:
    """One link per record that arrived with a valid trace context (others carry none)."""
    links = []
    for headers in records_headers:
        if not headers:
            continue
        ctx = trace.get_current_span(extract_headers(headers)).get_span_context()
        if ctx.is_valid:
            links.append(Link(ctx))
    return links


# --------------------------------------------------------------------------- SQL


def _operation(sql: str) -> str:
    words = sql.lstrip(" (\n\t").split(None, 1)
    return words[0].upper() if words else "SQL"


@contextlib.contextmanager
def sql_span(
    tracer: trace.Tracer, statement: str, operation: str | None = None, database: str = ""
) -> Iterator[Span]:
    """A client span for one SQL statement: its text with $n placeholders, never the values."""
    if not _enabled:
        # Off: not even a no-op span object per statement.
        yield trace.INVALID_SPAN
        return
    op = operation or _operation(statement)
    attributes: dict[str, str] = {
        # Both the stable (db.system.name, db.query.text) and the older names,
        # so Jaeger's and Tempo's SQL views work whichever they follow.
        "db.system": "postgresql",
        "db.system.name": "postgresql",
        "db.operation.name": op,
        "db.statement": statement,
        "db.query.text": statement,
    }
    if database:
        attributes["db.namespace"] = database
    with tracer.start_as_current_span(op, kind=SpanKind.CLIENT, attributes=attributes) as span:
        yield span
