"""Prometheus metrics of the query service and the /metrics HTTP endpoint."""

from __future__ import annotations

import functools
import logging
import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

REQUESTS = Counter(
    "sensorlog_query_requests",
    "gRPC calls finished, by method and status code.",
    ["method", "code"],
)
LATENCY = Histogram(
    "sensorlog_query_request_seconds",
    "Time from a call's start to its last message, by method.",
    ["method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
ROWS = Counter(
    "sensorlog_query_rows_returned",
    "Rows (sensors, readings or buckets) sent to clients, by method.",
    ["method"],
)
AGGREGATE_SOURCE = Counter(
    "sensorlog_query_aggregate_plans",
    "AggregateReadings statements run, by source: raw rows only, or a continuous aggregate "
    "for its materialised buckets (raw rows for the rest, and for all when the statement "
    "finds the view stale).",
    ["source"],
)
DB_UP = Gauge("sensorlog_query_database_up", "1 while the health probe reaches the database.")

# The children of the labelled metrics, bound on first use and then reused:
# labels() checks its arguments and takes a lock on every call. A child appears
# in /metrics from its first use, as with labels().
requests = functools.cache(REQUESTS.labels)
latency = functools.cache(LATENCY.labels)
rows_returned = functools.cache(ROWS.labels)
aggregate_source = functools.cache(AGGREGATE_SOURCE.labels)


class MetricsServer:
    """The /metrics endpoint on its own thread; port 0 disables it."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.port == 0:
            return
        self._server, self._thread = start_http_server(self.port, self.host)
        log.info("metrics endpoint listening", extra={"host": self.host, "port": self.port})

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
