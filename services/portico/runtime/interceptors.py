"""The per-RPC pipeline every Portico server runs, and the client side of it.

Server side, one interceptor wraps each call in this order:

1. an OpenTelemetry SERVER span, continuing the caller's trace from the
   `traceparent` metadata;
2. bearer-token authentication and the method's required scope
   (health and reflection are public, so probes and tools work unauthenticated);
3. the servicer;
4. error mapping: a `PorticoError` becomes its status code with ErrorInfo
   details; any other exception becomes INTERNAL with a generic message and
   a log line carrying the trace id.

It is one interceptor rather than three so the hot path wraps each call once.
Client side, `client_interceptors()` start CLIENT spans and inject the trace
context into outgoing metadata.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from portico.runtime.auth import TokenAuthenticator, current_principal
from portico.runtime.errors import PermissionDenied, PorticoError, to_grpc_status

__all__ = ["PUBLIC_SERVICES", "ServerInterceptor", "client_interceptors"]

log = logging.getLogger("portico.rpc")
_tracer = trace.get_tracer("portico.runtime")

PUBLIC_SERVICES = frozenset({
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
})

Behavior = Callable[..., Any]
Metadata = Sequence[tuple[str, str | bytes]]


def _split(method: str) -> tuple[str, str]:
    service, _, name = method.lstrip("/").partition("/")
    return service, name


class ServerInterceptor(grpc.aio.ServerInterceptor):
    """Tracing, auth and error mapping for every RPC of one server."""

    def __init__(self, *, domain: str, authenticator: TokenAuthenticator, method_scopes: Mapping[str, str]):
        self._domain = domain
        self._auth = authenticator
        self._scopes = dict(method_scopes)
        # method -> (the handler, its wrapped form): built once per method, not once per call.
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        service, _ = _split(method)
        if handler is None or service in PUBLIC_SERVICES:
            return handler
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        scope = self._scopes.get(method)
        wrapped = _rewrap(handler, lambda behavior, streaming: self._wrap(behavior, method, scope, streaming))
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, behavior: Behavior, method: str, scope: str | None, streaming: bool) -> Behavior:
        service, name = _split(method)
        attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}

        def start(metadata: Metadata) -> tuple[trace.Span, object, object]:
            parent = propagate.extract({k: v for k, v in metadata if isinstance(v, str)})
            span = _tracer.start_span(method.lstrip("/"), context=parent, kind=SpanKind.SERVER, attributes=attributes)
            ctx_token = otel_context.attach(trace.set_span_in_context(span, parent))
            return span, ctx_token, current_principal.set(None)

        def authorize(metadata: Metadata, span: trace.Span) -> None:
            if scope is None:
                # A servicer method without a declared scope is a wiring bug: fail closed.
                raise PermissionDenied(f"{method} has no declared scope", reason="SCOPE_UNDECLARED")
            principal = self._auth.authenticate(metadata)
            span.set_attribute("enduser.id", principal.name)
            self._auth.authorize(principal, scope, method)
            current_principal.set(principal)

        def finish(span: trace.Span, ctx_token: object, principal_token: object) -> None:
            span.end()
            try:
                current_principal.reset(principal_token)  # type: ignore[arg-type]
            except ValueError:
                # A cancelled stream's generator is closed from another context: the
                # variables set in ours are gone with it, and so must the OTel context be.
                return
            otel_context.detach(ctx_token)  # type: ignore[arg-type]

        async def fail(exc: BaseException, span: trace.Span, context: grpc.aio.ServicerContext) -> None:
            if isinstance(exc, PorticoError):
                status = to_grpc_status(exc, self._domain)
                span.set_attribute("rpc.grpc.status_code", exc.code.value[0])
                span.set_attribute("error.reason", exc.reason)
                span.set_status(Status(StatusCode.ERROR, exc.reason))
                serious = exc.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL)
                log.log(logging.WARNING if serious else logging.INFO, "rpc failed",
                        extra={"rpc": method, "code": exc.code.name, "reason": exc.reason})
                await context.abort(status.code, status.details, status.trailing_metadata)
            # Only the type goes on the span: spans leave the host, and an arbitrary
            # exception's text is not known to be free of secrets.
            span.add_event("exception", {"exception.type": type(exc).__qualname__})
            span.set_attribute("rpc.grpc.status_code", grpc.StatusCode.INTERNAL.value[0])
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            log.error("rpc raised an unexpected exception", exc_info=exc, extra={"rpc": method})
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")

        if not streaming:
            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                metadata = context.invocation_metadata() or ()  # read once: each call copies it out of the core
                span, *tokens = start(metadata)
                try:
                    authorize(metadata, span)
                    response = await behavior(request, context)
                    span.set_attribute("rpc.grpc.status_code", 0)
                    return response
                except (asyncio.CancelledError, grpc.aio.AbortError):
                    raise
                except Exception as exc:  # mapped to a status by fail()
                    await fail(exc, span, context)
                finally:
                    finish(span, *tokens)
            return unary

        async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            metadata = context.invocation_metadata() or ()
            span, *tokens = start(metadata)
            try:
                authorize(metadata, span)
                result = behavior(request, context)
                if inspect.isasyncgen(result):
                    async for item in result:
                        yield item
                else:
                    await result
                span.set_attribute("rpc.grpc.status_code", 0)
            except (asyncio.CancelledError, grpc.aio.AbortError):
                raise
            except Exception as exc:  # mapped to a status by fail()
                await fail(exc, span, context)
            finally:
                finish(span, *tokens)
        return stream


def _rewrap(handler: grpc.RpcMethodHandler, wrap: Callable[[Behavior, bool], Behavior]) -> grpc.RpcMethodHandler:
    codec = {"request_deserializer": handler.request_deserializer, "response_serializer": handler.response_serializer}
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(wrap(handler.unary_unary, False), **codec)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(wrap(handler.unary_stream, True), **codec)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(wrap(handler.stream_unary, False), **codec)
    return grpc.stream_stream_rpc_method_handler(wrap(handler.stream_stream, True), **codec)


_pending_span_ends: set[asyncio.Future[None]] = set()


class _ClientTracing:
    """Start a CLIENT span per call and put `traceparent` into its metadata."""

    def _prepare(self, client_call_details: Any) -> tuple[trace.Span, grpc.aio.ClientCallDetails]:
        method = client_call_details.method
        name = method.decode() if isinstance(method, bytes) else method
        service, rpc = _split(name)
        span = _tracer.start_span(
            name.lstrip("/"), kind=SpanKind.CLIENT,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": rpc},
        )
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        metadata = grpc.aio.Metadata(*(client_call_details.metadata or ()))
        for key, value in carrier.items():
            metadata.add(key, value)
        details = grpc.aio.ClientCallDetails(
            method=client_call_details.method, timeout=client_call_details.timeout, metadata=metadata,
            credentials=client_call_details.credentials, wait_for_ready=client_call_details.wait_for_ready,
        )
        return span, details

    @staticmethod
    def _finish(span: trace.Span, code: grpc.StatusCode) -> None:
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        if code != grpc.StatusCode.OK:
            span.set_status(Status(StatusCode.ERROR, code.name))
        span.end()


class _UnaryUnaryTracing(_ClientTracing, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        span, details = self._prepare(client_call_details)
        with trace.use_span(span, end_on_exit=False):
            call = await continuation(details, request)
        try:
            await call
            self._finish(span, grpc.StatusCode.OK)
        except grpc.aio.AioRpcError as exc:
            self._finish(span, exc.code())
        except asyncio.CancelledError:
            self._finish(span, grpc.StatusCode.CANCELLED)
            raise
        return call


class _UnaryStreamTracing(_ClientTracing, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        span, details = self._prepare(client_call_details)
        with trace.use_span(span, end_on_exit=False):
            call = await continuation(details, request)

        async def finish(finished: Any) -> None:
            try:
                code = await finished.code()
            except Exception:
                code = grpc.StatusCode.UNKNOWN
            self._finish(span, code)

        def done(finished: Any) -> None:
            # aio's code() is a coroutine; the call is over, so it resolves at once.
            task = asyncio.ensure_future(finish(finished))
            _pending_span_ends.add(task)
            task.add_done_callback(_pending_span_ends.discard)

        call.add_done_callback(done)
        return call


def client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """Interceptors for channels that call other Portico services."""
    return [_UnaryUnaryTracing(), _UnaryStreamTracing()]
