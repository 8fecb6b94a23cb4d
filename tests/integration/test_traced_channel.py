"""`open_channel`'s client tracing: a CLIENT span per call, ended with the call's status, `traceparent` sent.

A plain grpc.aio server on loopback (no Portico interceptor), so what the
server sees is only what the channel sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from tests.support.waiting import until

from portico.runtime.client import open_channel

ECHO = "/tests.Echo/Unary"
FAIL = "/tests.Echo/Fail"
SLOW = "/tests.Echo/Slow"


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    seen: list[dict[str, str]] = []

    async def unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        seen.append({k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)})
        return request[::-1]

    async def fail(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
        raise AssertionError("abort returns by raising")

    async def slow(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await asyncio.sleep(30)
        return request

    grpc_server = grpc.aio.server()
    grpc_server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("tests.Echo", {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
        "Slow": grpc.unary_unary_rpc_method_handler(slow),
    }),))
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), grpc_server)
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    await grpc_server.start()
    try:
        yield f"127.0.0.1:{port}", seen
    finally:
        await grpc_server.stop(None)


def client_spans(spans: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in spans.get_finished_spans() if s.kind == SpanKind.CLIENT and s.name == name]


async def test_unary_call_is_one_client_span_under_the_current_one_and_sends_its_traceparent(
        server: tuple[str, list[dict[str, str]]], spans: InMemorySpanExporter) -> None:
    target, seen = server
    with trace.get_tracer("tests").start_as_current_span("caller") as caller:
        async with open_channel(target) as channel:
            reply = await channel.unary_unary(ECHO)(b"abc", metadata=(("x-extra", "kept"),), timeout=5)
    assert reply == b"cba"
    (span,) = client_spans(spans, ECHO.lstrip("/"))
    assert span.parent is not None and span.parent.span_id == caller.get_span_context().span_id
    assert span.attributes is not None and span.attributes["rpc.grpc.status_code"] == 0
    assert span.attributes["rpc.service"] == "tests.Echo" and span.attributes["rpc.method"] == "Unary"
    assert span.status.status_code == StatusCode.UNSET
    (metadata,) = seen
    assert metadata["x-extra"] == "kept"  # the caller's own metadata still goes out
    assert metadata["traceparent"].split("-")[1:3] == [format(span.context.trace_id, "032x"),
                                                        format(span.context.span_id, "016x")]


async def test_failed_call_ends_its_span_with_the_status(server: tuple[str, list[dict[str, str]]],
                                                         spans: InMemorySpanExporter) -> None:
    target, _ = server
    with trace.get_tracer("tests").start_as_current_span("caller"):
        async with open_channel(target) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await channel.unary_unary(FAIL)(b"x", timeout=5)
    assert failed.value.code() == grpc.StatusCode.NOT_FOUND
    (span,) = client_spans(spans, FAIL.lstrip("/"))
    assert span.attributes is not None and span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert span.status.status_code == StatusCode.ERROR and span.status.description == "NOT_FOUND"


async def test_call_of_a_cancelled_caller_ends_its_span_as_cancelled(server: tuple[str, list[dict[str, str]]],
                                                                     spans: InMemorySpanExporter) -> None:
    target, _ = server
    with trace.get_tracer("tests").start_as_current_span("caller"):
        async with open_channel(target) as channel:
            slow = channel.unary_unary(SLOW)
            caller = asyncio.ensure_future(slow(b"x", timeout=60))  # awaited by a task that is cancelled
            await asyncio.sleep(0.2)
            caller.cancel()
            with pytest.raises(asyncio.CancelledError):
                await caller
            never_awaited = slow(b"y", timeout=60)  # a call nobody awaits, cancelled by its owner
            never_awaited.cancel()
            # The spans end from the cancellations (not the channel's close): wait for both in here.
            await until(lambda: len(client_spans(spans, SLOW.lstrip("/"))) >= 2, timeout_s=20)
    ended = client_spans(spans, SLOW.lstrip("/"))
    assert len(ended) == 2
    for span in ended:
        assert span.attributes is not None
        assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.CANCELLED.value[0]


async def test_server_stream_span_ends_when_the_stream_does(server: tuple[str, list[dict[str, str]]],
                                                            spans: InMemorySpanExporter) -> None:
    target, _ = server
    with trace.get_tracer("tests").start_as_current_span("caller"):
        async with open_channel(target) as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""), timeout=5)
            first = await anext(aiter(watch))
            assert first.status == health_pb2.HealthCheckResponse.SERVING
            assert client_spans(spans, "grpc.health.v1.Health/Watch") == []  # still open
            watch.cancel()
            # Ended by the cancel, not by the channel's close: wait for it in here.
            await until(lambda: client_spans(spans, "grpc.health.v1.Health/Watch"), timeout_s=20)
    (span,) = client_spans(spans, "grpc.health.v1.Health/Watch")
    assert span.attributes is not None and span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.CANCELLED.value[0]
