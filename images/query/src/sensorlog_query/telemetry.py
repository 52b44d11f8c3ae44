"""A server span per gRPC call (grpc.aio interceptor), continuing the caller's W3C trace.

Installed only when tracing is on, so a server without tracing pays nothing.
Health checks and reflection are left out: probes every few seconds would
bury the calls that matter.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

import grpc
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

tracer = trace.get_tracer("sensorlog.query")

UNTRACED_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")
# Codes that mean the server failed (OTel's rule for gRPC server spans); the
# others (NOT_FOUND, INVALID_ARGUMENT, ...) are the caller's and leave the span OK.
SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)

Context = grpc.aio.ServicerContext[Any, Any]


def _finish(span: Span, context: Context, failed: BaseException | None) -> None:
    code = context.code()
    if not isinstance(code, grpc.StatusCode):
        code = grpc.StatusCode.OK if failed is None else grpc.StatusCode.UNKNOWN
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code in SERVER_ERRORS:
        span.set_status(Status(StatusCode.ERROR, context.details() or code.name))
        if failed is not None and not isinstance(failed, grpc.aio.AbortError):
            span.record_exception(failed)


if TYPE_CHECKING:  # generic only in grpc-stubs; at run time not subscriptable
    _Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    _Interceptor = grpc.aio.ServerInterceptor


class TracingInterceptor(_Interceptor):
    @contextlib.contextmanager
    def _span(self, method: str, context: Context) -> Iterator[Span]:
        service, _, name = method.lstrip("/").rpartition("/")
        parent = propagate.extract(dict(context.invocation_metadata() or ()))
        with tracer.start_as_current_span(
            method.lstrip("/"),
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            yield span

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(details)
        method: str = details.method
        if handler is None or method.startswith(UNTRACED_PREFIXES):
            return handler
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                # grpc-stubs type behaviors as sync; on grpc.aio they are coroutines.
                self._unary(method, handler.unary_unary),  # type: ignore[arg-type]
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(method, handler.unary_stream),  # type: ignore[arg-type]
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler  # client streaming: this service has none

    def _unary(
        self, method: str, behavior: Callable[[Any, Context], Awaitable[Any]]
    ) -> Callable[[Any, Context], Awaitable[Any]]:
        async def traced(request: Any, context: Context) -> Any:
            with self._span(method, context) as span:
                try:
                    response = await behavior(request, context)
                except BaseException as exc:
                    _finish(span, context, exc)
                    raise
                _finish(span, context, None)
                return response

        return traced

    def _stream(
        self, method: str, behavior: Callable[[Any, Context], AsyncIterator[Any]]
    ) -> Callable[[Any, Context], AsyncIterator[Any]]:
        async def traced(request: Any, context: Context) -> AsyncIterator[Any]:
            with self._span(method, context) as span:
                messages = 0
                try:
                    async for message in behavior(request, context):
                        messages += 1
                        yield message
                except BaseException as exc:
                    _finish(span, context, exc)
                    raise
                finally:
                    span.set_attribute("rpc.messages_sent", messages)
                _finish(span, context, None)

        return traced
