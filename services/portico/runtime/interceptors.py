"""The per-RPC pipeline every Portico server runs, and the client side of it.

Server side, one interceptor wraps each call in this order:

1. an OpenTelemetry SERVER span, continuing the caller's trace from the
   `traceparent` metadata;
2. bearer-token authentication and the method's required scope
   (health and reflection are public, so probes and tools work unauthenticated);
3. a request whose bytes are not the RPC's protobuf message (garbage, a string
   field that is not UTF-8) is INVALID_ARGUMENT, reason REQUEST_MALFORMED,
   naming the message type and, for a bad string, the field. gRPC decodes a
   request before any of this runs, and would answer UNKNOWN with the
   decoder's exception text, to anyone; so each method's deserializer is
   wrapped to hand the error on, and it is raised here, after step 2 (a
   caller who may not call the method learns nothing about its request);
4. the servicer;
5. error mapping: a `PorticoError` becomes its status code with ErrorInfo
   details; a database that cannot be reached or used just now is
   UNAVAILABLE, reason DATABASE_UNAVAILABLE (`sqlstore.database_unavailable`),
   so callers retry; any other exception becomes INTERNAL with a generic
   message and a log line carrying the trace id.

It is one interceptor rather than three so the hot path wraps each call once.
Client side, `TracedChannel` starts a CLIENT span per call and injects the
trace context into its outgoing metadata.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from portico.runtime.auth import TokenAuthenticator, current_principal
from portico.runtime.errors import (
    InvalidArgument,
    MalformedRequest,
    PermissionDenied,
    PorticoError,
    to_grpc_status,
)
from portico.runtime.sqlstore import database_unavailable

__all__ = ["PUBLIC_SERVICES", "ServerInterceptor", "TracedChannel"]

log = logging.getLogger("portico.rpc")
_tracer = trace.get_tracer("portico.runtime")

PUBLIC_SERVICES = frozenset({
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
})

Behavior = Callable[..., Any]
Deserializer = Callable[[bytes], Any]
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
        if handler is None:
            return handler
        method: str = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        service, _ = _split(method)
        if service in PUBLIC_SERVICES:
            wrapped = _rewrap(handler, method, lambda behavior, streaming: self._wrap_public(behavior, streaming),
                              name_field=False)
        else:
            scope = self._scopes.get(method)
            wrapped = _rewrap(handler, method,
                              lambda behavior, streaming: self._wrap(behavior, method, scope, streaming))
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap_public(self, behavior: Behavior, streaming: bool) -> Behavior:
        """Health and reflection: no span, no auth, no error mapping; only a request that does not decode is
        INVALID_ARGUMENT (REQUEST_MALFORMED) naming the message type, as everywhere, rather than gRPC's UNKNOWN
        with the decoder's text. Anyone may call these, so no field is looked for in the bytes."""
        async def refuse(error: PorticoError, context: grpc.aio.ServicerContext) -> None:
            status = to_grpc_status(error, self._domain)
            await context.abort(status.code, status.details, status.trailing_metadata)

        if not streaming:
            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                if request.__class__ is _Undecodable:
                    await refuse(request.error, context)
                return await behavior(request, context)
            return unary

        async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            if request.__class__ is _Undecodable:
                await refuse(request.error, context)
            try:
                result = behavior(request, context)
                if inspect.isasyncgen(result):
                    async for item in result:
                        yield item
                else:
                    await result
            except MalformedRequest as exc:  # a streamed request's message, decoded as the servicer reads it
                await refuse(exc, context)
        return stream

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
            status = None
            if not isinstance(exc, PorticoError) and (unavailable := database_unavailable(exc)) is not None:
                log.warning("database unavailable", extra={"rpc": method, "error": type(exc).__name__})
                exc = unavailable
            if isinstance(exc, PorticoError):
                try:
                    status = to_grpc_status(exc, self._domain)
                except Exception as unbuildable:  # reported below as what it is: a bug, never its text
                    exc = unbuildable
            if isinstance(exc, PorticoError) and status is not None:
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
                    if request.__class__ is _Undecodable:
                        raise request.error
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
                if request.__class__ is _Undecodable:
                    raise request.error
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


def _rewrap(handler: grpc.RpcMethodHandler, method: str, wrap: Callable[[Behavior, bool], Behavior], *,
            name_field: bool = True) -> grpc.RpcMethodHandler:
    deserializer = _guarded(handler.request_deserializer, method, handler.request_streaming, name_field=name_field)
    codec = {"request_deserializer": deserializer, "response_serializer": handler.response_serializer}
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(wrap(handler.unary_unary, False), **codec)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(wrap(handler.unary_stream, True), **codec)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(wrap(handler.stream_unary, False), **codec)
    return grpc.stream_stream_rpc_method_handler(wrap(handler.stream_stream, True), **codec)


class _Undecodable:
    """What a single-request method's deserializer returns for bytes that are not its message.

    gRPC decodes a unary request before it calls the method and answers UNKNOWN if the decoder raises, so the
    failure is returned as this instead, and the wrapped method raises `error` once the caller is authenticated.
    The error is worked out only then: naming a bad field walks the bytes, work nobody unauthenticated may cause.
    """

    __slots__ = ("_cause", "_data", "_descriptor", "_name")

    def __init__(self, cause: Exception, data: bytes, descriptor: Descriptor | None, name: str):
        self._cause, self._data, self._descriptor, self._name = cause, data, descriptor, name

    @property
    def error(self) -> PorticoError:
        return _malformed(self._cause, self._data, self._descriptor, self._name)


def _guarded(deserializer: Deserializer | None, method: str, request_streaming: bool, *,
             name_field: bool = True) -> Deserializer | None:
    """`deserializer`, turning a decode failure into the caller's INVALID_ARGUMENT (see `_Undecodable`).

    A streamed request's messages are decoded as the servicer reads them, after authentication: there the
    error is raised, out of the servicer's read and on to the error mapping (not INTERNAL, as the decoder's
    own exception would be). The success path costs one Python call per message. Without `name_field` the
    error names the message type only (no walk over the bytes for a bad string).
    """
    if deserializer is None:  # bytes in, bytes out: nothing to fail
        return None
    message = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)  # `Message.FromString`'s class
    found = message if isinstance(message, Descriptor) else None
    name = found.full_name if found is not None else f"request of {method}"
    descriptor = found if name_field else None
    decode = deserializer

    if request_streaming:
        def strict(data: bytes) -> Any:
            try:
                return decode(data)
            except Exception as exc:
                raise _malformed(exc, data, descriptor, name) from None
        return strict

    def tolerant(data: bytes) -> Any:
        try:
            return decode(data)
        except Exception as exc:
            return _Undecodable(exc, data, descriptor, name)
    return tolerant


def _malformed(exc: Exception, data: bytes, descriptor: Descriptor | None, name: str) -> PorticoError:
    """The caller's error for `data`, which did not decode as the message `name`."""
    field = None
    if descriptor is not None:
        try:
            field = _bad_utf8_field(descriptor, memoryview(data), 0, [_WALK_FIELDS])
        except Exception:  # a best effort on input already known to be broken; the message type is named anyway
            field = None
    if field is not None:
        return InvalidArgument(field, f"not valid UTF-8; the request is not a valid {name}",
                               reason=MalformedRequest.default_reason, metadata={"message_type": name})
    # upb says "Error parsing message with type 'T': Wire format was corrupt"; only the part after the type is
    # the caller's news. Any other exception's text is not known to be about the input, so it is not quoted.
    detail = "it does not decode"
    if isinstance(exc, DecodeError):
        text = str(exc).rpartition("': ")[2].strip()
        if text:
            detail = text[0].lower() + text[1:]
    return MalformedRequest(f"the request is not a valid {name}: {detail}", metadata={"message_type": name})


# Fields the bad-UTF-8 walk reads at most (a few milliseconds); a bad string past them goes unnamed.
_WALK_FIELDS = 10_000


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while shift < 70:
        byte = data[pos]  # an IndexError past the end: the caller gives up
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    raise ValueError("varint too long")


def _bad_utf8_field(descriptor: Descriptor, data: memoryview, depth: int, budget: list[int]) -> str | None:
    """The path (`filter.quote_currencies[1]`) of the first string field in `data` that is not UTF-8, as proto3
    requires; None if there is none before the wire format itself breaks. Run only on a request that failed.

    `budget[0]` is how many more fields (at any depth) may be read: Python walks a request of millions of tiny
    fields (4 MB, and more if the server allows it) for seconds, where upb refused it in milliseconds. Past the
    budget the walk raises, and the caller names the message type only.
    """
    seen: dict[int, int] = {}
    pos, end = 0, len(data)
    while pos < end:
        budget[0] -= 1
        if budget[0] < 0:
            raise ValueError("too many fields to look for the bad one")
        tag, pos = _varint(data, pos)
        number, wire_type = tag >> 3, tag & 7
        if wire_type == 0:
            _, pos = _varint(data, pos)
        elif wire_type == 1:
            pos += 8
        elif wire_type == 5:
            pos += 4
        elif wire_type == 2:
            size, pos = _varint(data, pos)
            chunk, pos = data[pos:pos + size], pos + size
            if pos > end:
                return None
            field = descriptor.fields_by_number.get(number)
            if field is None:
                continue
            path = field.name
            if field.is_repeated:
                seen[number] = index = seen.get(number, -1) + 1
                path = f"{path}[{index}]"
            if field.type == FieldDescriptor.TYPE_STRING:
                try:
                    str(chunk, "utf-8")
                except UnicodeDecodeError:
                    return path
            elif field.message_type is not None and depth < 100:  # a message field; protobuf's nesting limit
                inner = _bad_utf8_field(field.message_type, chunk, depth + 1, budget)
                if inner is not None:
                    return f"{path}.{inner}"
        else:  # groups (not in proto3) or a broken tag
            return None
    return None


def _client_span(method: str | bytes, metadata: Metadata | None) -> tuple[trace.Span, grpc.aio.Metadata]:
    """A CLIENT span for one call, and the call's metadata with the span's `traceparent` added."""
    name = method.decode() if isinstance(method, bytes) else method
    service, rpc = _split(name)
    span = _tracer.start_span(
        name.lstrip("/"), kind=SpanKind.CLIENT,
        attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": rpc},
    )
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    outgoing = grpc.aio.Metadata(*(metadata or ()))
    for key, value in carrier.items():
        outgoing.add(key, value)
    return span, outgoing


def _end_client_span(span: trace.Span, code: grpc.StatusCode) -> None:
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code != grpc.StatusCode.OK:
        span.set_status(Status(StatusCode.ERROR, code.name))
    span.end()


def _finished_code(call: Any) -> grpc.StatusCode:
    """A finished call's status code. aio's `code()` is a coroutine, but on a finished call it returns
    without suspending, so it is run to its end here rather than in a task of its own."""
    pending = call.code()
    try:
        pending.send(None)
    except StopIteration as finished:
        return finished.value
    except Exception:
        return grpc.StatusCode.UNKNOWN
    pending.close()
    return grpc.StatusCode.UNKNOWN


class _Traced:
    """A multicallable whose calls each get a CLIENT span, ended by the call's own done callback."""

    __slots__ = ("_inner", "_method")

    def __init__(self, inner: Any, method: str | bytes):
        self._inner = inner
        self._method = method

    def __call__(self, request: Any, *, metadata: Metadata | None = None, **kwargs: Any) -> Any:
        span, outgoing = _client_span(self._method, metadata)
        try:
            call = self._inner(request, metadata=outgoing, **kwargs)
        except BaseException:
            _end_client_span(span, grpc.StatusCode.INTERNAL)
            raise
        call.add_done_callback(lambda finished: _end_client_span(span, _finished_code(finished)))
        return call


class TracedChannel(grpc.aio.Channel):
    """A grpc.aio channel whose unary and server-streaming calls each get a CLIENT span and carry `traceparent`.

    This does what a grpc.aio client interceptor would, without one: an intercepted call costs gRPC an
    extra task and call object per RPC, about 0.1 ms of CPU here for a Sign call (one in flight,
    measured against a plain channel). The contracts have no client-streaming RPCs; such calls pass
    through untraced.
    """

    def __init__(self, channel: grpc.aio.Channel):
        self._channel = channel

    async def __aenter__(self) -> TracedChannel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._channel.close(None)

    async def close(self, grace: float | None = None) -> None:
        await self._channel.close(grace)

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return self._channel.get_state(try_to_connect)

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        await self._channel.wait_for_state_change(last_observed_state)

    async def channel_ready(self) -> None:
        await self._channel.channel_ready()

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _Traced(self._channel.unary_unary(method, *args, **kwargs), method)

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _Traced(self._channel.unary_stream(method, *args, **kwargs), method)

    def stream_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._channel.stream_unary(method, *args, **kwargs)

    def stream_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._channel.stream_stream(method, *args, **kwargs)
