"""The sensorlog.v1.QueryService servicer on grpc.aio.

Each method validates its request (validation.py), runs SQL built in
sensorlog_core.queries, and maps failures to status codes at this boundary:
user mistakes are INVALID_ARGUMENT/NOT_FOUND, an unreachable database is
UNAVAILABLE, a passed deadline is DEADLINE_EXCEEDED; only a bug in this
server is INTERNAL.

The client's deadline bounds every database wait: it is the timeout of pool
acquisition and of each statement (asyncpg cancels the statement on the
server when it passes), capped by the server's own statement timeout.

A call costs one statement round trip and no more: no per-call SET or
transaction (the deadline is asyncpg's ``timeout=``), no session reset when
the connection goes back to the pool (see ``Database.open``), metric children
bound once, and responses filled in place (AggregateReadings' encoded
directly, see wire.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import asyncpg
import grpc
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp
from opentelemetry import trace

from sensorlog.v1 import query_pb2 as pb
from sensorlog.v1 import query_pb2_grpc as pb_grpc
from sensorlog_core import caggs, db, queries, tracing
from sensorlog_query import validation as v
from sensorlog_query import wire
from sensorlog_query.metrics import aggregate_source, latency, requests, rows_returned
from sensorlog_query.settings import QuerySettings
from sensorlog_query.views import ViewCatalog

log = logging.getLogger(__name__)
tracer = trace.get_tracer("sensorlog.query")

T = TypeVar("T")
Context = grpc.aio.ServicerContext[Any, Any]


class NotFound(LookupError):
    pass


class DatabaseUnavailable(RuntimeError):
    pass


class DeadlinePassed(TimeoutError):
    pass


def is_connection_error(exc: BaseException) -> bool:
    """Errors that mean the database is not there (as opposed to a bad statement)."""
    return isinstance(
        exc,
        OSError
        | asyncpg.PostgresConnectionError
        | asyncpg.CannotConnectNowError
        | asyncpg.AdminShutdownError
        | asyncpg.CrashShutdownError
        | asyncpg.TooManyConnectionsError
        | asyncpg.InterfaceError
        # A connection left mid-protocol by the server going away ("another
        # operation is in progress"): the session is gone, not the request bad.
        | asyncpg.exceptions.InternalClientError,
    ) and not isinstance(exc, TimeoutError)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool reset: nothing to undo, so no round trip when a connection is released.

    asyncpg's default reset sends ``SELECT pg_advisory_unlock_all(); CLOSE ALL;
    UNLISTEN *; RESET ALL`` on every release: a second statement per call. This
    server never changes session state (no SET, LISTEN or advisory locks; its
    only cursor lives in a transaction), and asyncpg still rolls back a
    transaction left open before calling this.
    """


class Database:
    """The read pool, opened lazily so the server runs (NOT_SERVING) while the db is down."""

    def __init__(self, settings: QuerySettings) -> None:
        self.settings = settings
        self.pool: asyncpg.Pool | None = None
        self._flavor: db.Flavor | None = None
        self._refusal: str | None = None
        self.views = ViewCatalog()

    async def open(self) -> None:
        s = self.settings
        # min_size=0 by default: creating the pool then needs no connection.
        self.pool = await db.create_pool(
            s.read_dsn,
            min_size=s.pool_min_size,
            max_size=s.pool_max_size,
            command_timeout=None,
            timeout=s.connect_timeout,
            server_settings={
                "application_name": "sensorlog-query",
                "timezone": "UTC",
                # The backstop when no call-level timeout applies (e.g. a pool reset).
                "statement_timeout": str(int(s.statement_timeout * 1000) + 1000),
                "default_transaction_read_only": "on",
            },
            reset=_keep_session,
        )

    async def close(self, wait: float = 5.0) -> None:
        if self.pool is None:
            return
        try:
            await asyncio.wait_for(self.pool.close(), wait)
        except TimeoutError:
            self.pool.terminate()
        self.pool = None

    async def forget_connections(self) -> None:
        """After a connection error every pooled connection is suspect: reconnect on next use."""
        if self.pool is not None:
            await self.pool.expire_connections()

    @contextlib.asynccontextmanager
    async def connection(self, wait: float) -> AsyncIterator[asyncpg.Connection]:
        if self.pool is None:
            raise DatabaseUnavailable("the server is not connected to a database")
        try:
            # asyncio.timeout rather than acquire(timeout=): that one wraps every
            # acquisition in wait_for, a task per call.
            async with asyncio.timeout(wait):
                conn = await self.pool.acquire()
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            await self.forget_connections()
            raise DatabaseUnavailable(
                f"cannot get a database connection ({type(exc).__name__})"
            ) from exc
        try:
            yield conn
        finally:
            await self.pool.release(conn, timeout=wait)

    async def flavor(self, conn: asyncpg.Connection, wait: float) -> db.Flavor:
        if self._flavor is None:
            sql = "SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'"
            with tracing.sql_span(tracer, sql):
                installed = await conn.fetchval(sql, timeout=wait)
            self._flavor = db.Flavor.TIMESCALEDB if installed else db.Flavor.POSTGRES
        return self._flavor

    async def ping(self, wait: float) -> bool:
        try:
            async with self.connection(wait) as conn:
                await conn.fetchval(queries.PING.sql, timeout=wait)
            self._refusal = None
            return True
        except Exception as exc:  # any failure means "not serving"
            if is_connection_error(exc):
                await self.forget_connections()
            log.debug("database probe failed", extra={"error": repr(exc)})
            refusal = db.fatal_reason(exc.__cause__ or exc)
            if refusal != self._refusal:
                # Once per new reason, not per probe: the probe keeps running (it is
                # what notices the fix) but the log must not flood.
                self._refusal = refusal
                if refusal is not None:
                    log.error(
                        "the database refuses the query server; NOT_SERVING until the "
                        "settings are fixed",
                        extra={"reason": refusal},
                    )
            return False


# --------------------------------------------------------------------------- conversions


def _ts(us: int) -> Timestamp:
    s, rest = divmod(us, 1_000_000)
    return Timestamp(seconds=s, nanos=rest * 1000)


def _numeric_map(extra: Any) -> dict[str, float]:
    if not isinstance(extra, dict):
        return {}
    out = {}
    for k, val in extra.items():
        if isinstance(val, int | float) and not isinstance(val, bool):
            with contextlib.suppress(OverflowError):
                out[k] = float(val)
    return out


def add_readings(into: Any, rows: Sequence[Sequence[Any]]) -> None:
    """Append rows (sensor_id, ts_us, temperature, cpu, extra) to a repeated Reading field.

    Filling messages in place through ``add`` is ~2.5x faster than building
    Reading and Timestamp objects and copying them in (it bounds streaming).
    """
    add = into.add
    for sensor_id, ts_us, temperature, cpu, extra in rows:
        msg = add(sensor_id=sensor_id, temperature=temperature, cpu=cpu)
        s, rest = divmod(ts_us, 1_000_000)
        ts = msg.ts
        ts.seconds = s
        ts.nanos = rest * 1000
        if extra:
            msg.extra.update(_numeric_map(extra))


def sensor(row: Sequence[Any]) -> pb.Sensor:
    metadata = Struct()
    if isinstance(row[3], dict):
        metadata.update(row[3])
    return pb.Sensor(
        id=row[0],
        type=row[1] or "",
        location=row[2] or "",
        metadata=metadata,
        updated_at=_ts(row[4]),
    )


# --------------------------------------------------------------------------- servicer


class QueryService(pb_grpc.QueryServiceServicer):
    def __init__(self, settings: QuerySettings, database: Database) -> None:
        self.settings = settings
        self.db = database

    # ----------------------------------------------------------------- plumbing

    def _timeout(self, context: Context) -> float:
        """Seconds the next database wait may take: the client's deadline, capped."""
        remaining = context.time_remaining()
        if remaining is None:
            return self.settings.statement_timeout
        if remaining <= 0.001:
            raise DeadlinePassed("the client's deadline passed")
        return min(remaining, self.settings.statement_timeout)

    async def _status(self, exc: Exception, method: str) -> tuple[grpc.StatusCode, str]:
        if isinstance(exc, v.BadRequest):
            return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
        if isinstance(exc, queries.CursorError):
            return grpc.StatusCode.INVALID_ARGUMENT, f"page_token: {exc}"
        if isinstance(exc, NotFound):
            return grpc.StatusCode.NOT_FOUND, str(exc)
        if isinstance(exc, DatabaseUnavailable):
            return grpc.StatusCode.UNAVAILABLE, f"database unavailable: {exc}"
        if is_connection_error(exc):
            await self.db.forget_connections()
            return grpc.StatusCode.UNAVAILABLE, f"database unavailable ({type(exc).__name__})"
        if isinstance(exc, asyncpg.UndefinedTableError | asyncpg.UndefinedColumnError):
            log.error("database schema missing", extra={"method": method, "error": str(exc)})
            return grpc.StatusCode.FAILED_PRECONDITION, (
                "the database has no sensorlog schema (run sensorlog-migrate)"
            )
        if isinstance(exc, DeadlinePassed):
            return grpc.StatusCode.DEADLINE_EXCEEDED, str(exc)
        if isinstance(exc, TimeoutError | asyncpg.QueryCanceledError):
            return grpc.StatusCode.DEADLINE_EXCEEDED, (
                "the query was cancelled at the deadline (the client's, or the server's "
                f"statement timeout of {self.settings.statement_timeout:g}s); "
                "narrow the range or the sensors"
            )
        log.exception("unexpected error", extra={"method": method}, exc_info=exc)
        return grpc.StatusCode.INTERNAL, "internal error (logged on the server)"

    @staticmethod
    def _observe(method: str, code: grpc.StatusCode, started: float) -> None:
        requests(method, code.name).inc()
        latency(method).observe(time.perf_counter() - started)

    async def _unary(
        self, method: str, context: Context, run: Callable[[], Awaitable[tuple[T, int]]]
    ) -> T:
        started = time.perf_counter()
        try:
            response, rows = await run()
        except asyncio.CancelledError:
            self._observe(method, grpc.StatusCode.CANCELLED, started)
            raise
        except Exception as exc:
            code, message = await self._status(exc, method)
            self._observe(method, code, started)
            if code is not grpc.StatusCode.INTERNAL:
                log.info(
                    "request failed",
                    extra={"method": method, "code": code.name, "detail": message},
                )
            await context.abort(code, message)
        rows_returned(method).inc(rows)
        self._observe(method, grpc.StatusCode.OK, started)
        return response

    async def _fetch(self, context: Context, q: queries.Query) -> list[asyncpg.Record]:
        async with self.db.connection(self._timeout(context)) as conn:
            with tracing.sql_span(tracer, q.sql):
                rows: list[asyncpg.Record] = await conn.fetch(
                    q.sql, *q.args, timeout=self._timeout(context)
                )
            return rows

    # ----------------------------------------------------------------- sensors

    async def ListSensors(
        self, request: pb.ListSensorsRequest, context: Context
    ) -> pb.ListSensorsResponse:
        async def run() -> tuple[pb.ListSensorsResponse, int]:
            s = self.settings
            type_ = v.text_filter(request.type, "type")
            location = v.text_filter(request.location, "location")
            size = v.page_size(
                request.page_size, s.sensors_default_page_size, s.sensors_max_page_size
            )
            fp = queries.fingerprint("sensors", type_, location)
            after = None
            if request.page_token:
                (after,) = queries.decode_cursor(request.page_token, "sensors", fp, 1)
            q = queries.list_sensors(type_, location, after, size + 1)
            rows = await self._fetch(context, q)
            token = ""
            if len(rows) > size:
                rows = rows[:size]
                token = queries.encode_cursor("sensors", fp, [rows[-1][0]])
            resp = pb.ListSensorsResponse(sensors=[sensor(r) for r in rows], next_page_token=token)
            return resp, len(rows)

        return await self._unary("ListSensors", context, run)

    async def GetSensor(self, request: pb.GetSensorRequest, context: Context) -> pb.Sensor:
        async def run() -> tuple[pb.Sensor, int]:
            rows = await self._fetch(context, queries.get_sensor(request.id))
            if not rows:
                raise NotFound(f"sensor {request.id} not found")
            return sensor(rows[0]), 1

        return await self._unary("GetSensor", context, run)

    # ----------------------------------------------------------------- readings

    async def ListReadings(
        self, request: pb.ListReadingsRequest, context: Context
    ) -> pb.ListReadingsResponse:
        async def run() -> tuple[pb.ListReadingsResponse, int]:
            s = self.settings
            ids = v.sensor_ids(request.sensor_ids, s.max_sensor_ids)
            start, end = v.time_range(
                request.HasField("start"), request.start, request.HasField("end"), request.end
            )
            desc = v.order_desc(request.order)
            size = v.page_size(
                request.page_size, s.readings_default_page_size, s.readings_max_page_size
            )
            fp = queries.fingerprint("readings", ids, start, end, desc)
            after: tuple[int, int] | None = None
            if request.page_token:
                ts_us, sid = queries.decode_cursor(request.page_token, "readings", fp, 2)
                after = (ts_us, sid)
            q = queries.list_readings(ids, start, end, desc, after, size + 1)
            rows = await self._fetch(context, q)
            token = ""
            if len(rows) > size:
                rows = rows[:size]
                token = queries.encode_cursor("readings", fp, [rows[-1][1], rows[-1][0]])
            resp = pb.ListReadingsResponse(next_page_token=token)
            add_readings(resp.readings, rows)
            return resp, len(rows)

        return await self._unary("ListReadings", context, run)

    async def StreamReadings(
        self, request: pb.StreamReadingsRequest, context: Context
    ) -> AsyncIterator[pb.StreamReadingsResponse]:
        method = "StreamReadings"
        started = time.perf_counter()
        code, message = grpc.StatusCode.OK, ""
        try:
            ids = v.sensor_ids(request.sensor_ids, self.settings.max_sensor_ids)
            start, end = v.time_range(
                request.HasField("start"), request.start, request.HasField("end"), request.end
            )
            q = queries.stream_readings(ids, start, end, v.order_desc(request.order))
            batch = self.settings.stream_batch_size
            async with (
                self.db.connection(self._timeout(context)) as conn,
                # A server-side cursor lives in a transaction; each FETCH reads
                # one batch, so rows leave the database only as the client
                # consumes them (each yield waits for gRPC flow control).
                conn.transaction(readonly=True),
            ):
                with tracing.sql_span(tracer, q.sql):
                    cursor = await conn.cursor(q.sql, *q.args, timeout=self._timeout(context))
                while True:
                    with tracing.sql_span(tracer, f"FETCH {batch}", "FETCH"):
                        rows = await cursor.fetch(batch, timeout=self._timeout(context))
                    if rows:
                        rows_returned(method).inc(len(rows))
                        chunk = pb.StreamReadingsResponse()
                        add_readings(chunk.readings, rows)
                        yield chunk
                    if len(rows) < batch:
                        break
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception as exc:
            code, message = await self._status(exc, method)
        finally:
            self._observe(method, code, started)
        if code is not grpc.StatusCode.OK:
            await context.abort(code, message)

    # ----------------------------------------------------------------- aggregates

    async def AggregateReadings(
        self, request: pb.AggregateReadingsRequest, context: Context
    ) -> pb.AggregateReadingsResponse:
        async def run() -> tuple[pb.AggregateReadingsResponse, int]:
            s = self.settings
            ids = v.sensor_ids(request.sensor_ids, s.max_sensor_ids)
            start, end = v.time_range(
                request.HasField("start"), request.start, request.HasField("end"), request.end
            )
            width = v.bucket_us(request.HasField("bucket"), request.bucket)
            columns = v.aggregate_columns(request.fields, request.aggregations)
            v.check_buckets(start, end, width, s.max_buckets)
            async with self.db.connection(self._timeout(context)) as conn:
                flavor = await self.db.flavor(conn, self._timeout(context))
                plan = None
                if flavor is db.Flavor.TIMESCALEDB and s.continuous_aggregates:
                    available = await self.db.views.get(
                        conn, s.continuous_aggregates_refresh, self._timeout(context)
                    )
                    wanted = [(a.value, f.value) for f, a in columns]
                    plan = caggs.plan(available, start, end, width, wanted)
                build = functools.partial(
                    queries.aggregate_readings,
                    flavor,
                    ids,
                    start,
                    end,
                    width,
                    columns,
                    request.fill_gaps,
                )
                rows = await self._aggregate(context, conn, build, plan)
            return wire.buckets(rows, columns), len(rows)

        return await self._unary("AggregateReadings", context, run)

    async def _aggregate(
        self,
        context: Context,
        conn: asyncpg.Connection,
        build: Callable[..., queries.Query],
        plan: caggs.Plan | None,
    ) -> list[asyncpg.Record]:
        q = build(view=plan)
        try:
            with tracing.sql_span(tracer, q.sql) as span:
                if plan is not None:
                    span.set_attribute("sensorlog.continuous_aggregate", plan.view.name)
                rows: list[asyncpg.Record] = await conn.fetch(
                    q.sql, *q.args, timeout=self._timeout(context)
                )
        except (asyncpg.UndefinedTableError, asyncpg.UndefinedColumnError):
            if plan is None:
                raise
            # The view was dropped or changed since the catalog was read.
            self.db.views.forget()
            return await self._aggregate(context, conn, build, None)
        aggregate_source("raw" if plan is None else "continuous_aggregate").inc()
        return rows

    async def LatestReadings(
        self, request: pb.LatestReadingsRequest, context: Context
    ) -> pb.LatestReadingsResponse:
        async def run() -> tuple[pb.LatestReadingsResponse, int]:
            ids = v.sensor_ids(request.sensor_ids, self.settings.max_sensor_ids)
            before = (
                v.timestamp_us(request.before, "before", round_up=True)
                if request.HasField("before")
                else None
            )
            since = v.timestamp_us(request.since, "since") if request.HasField("since") else None
            if before is not None and since is not None and since >= before:
                raise v.BadRequest("since", "must be before 'before'")
            rows = await self._fetch(context, queries.latest_readings(ids, before, since))
            resp = pb.LatestReadingsResponse()
            add_readings(resp.readings, rows)
            return resp, len(rows)

        return await self._unary("LatestReadings", context, run)
