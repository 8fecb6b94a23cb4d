"""Syndr transport: HTTP and WebSocket JSON-RPC clients and the client-side rate budget, against a loopback stub."""

from __future__ import annotations

import asyncio
import io
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from tests.support.ports import free_port
from tests.support.syndr_stub import SyndrStub

from portico.venues.syndr.constants import API_KEY_HEADER, API_SECRET_HEADER, ErrorCode
from portico.venues.syndr.credentials import ApiCredentials
from portico.venues.syndr.errors import (
    SyndrAuthError,
    SyndrConnectionError,
    SyndrError,
    SyndrHttpError,
    SyndrInvalidRequest,
    SyndrNotFound,
    SyndrProtocolError,
    SyndrRateLimited,
    SyndrRejected,
    SyndrTimeout,
    SyndrVenueFailure,
)
from portico.venues.syndr.http import SyndrHttpClient
from portico.venues.syndr.ratelimit import Priority, RateBudget
from portico.venues.syndr.ws import (
    ChangeIdTracker,
    Disconnected,
    Gap,
    GapDetected,
    Message,
    Overflow,
    Reconnected,
    Subscription,
    SyndrWebSocket,
    WsEvent,
)

KEY = f"key-{secrets.token_hex(8)}"
SECRET = f"secret-{secrets.token_hex(16)}"
CREDS = ApiCredentials(KEY, SECRET)


@pytest.fixture
async def stub() -> AsyncIterator[SyndrStub]:
    async with SyndrStub(api_key=KEY, api_secret=SECRET) as server:
        yield server


def ws_client(stub: SyndrStub, **overrides: Any) -> SyndrWebSocket:
    options: dict[str, Any] = {"credentials": CREDS, "heartbeat_s": 0.2, "silence_timeout_s": 0.8,
                               "reconnect_initial_s": 0.05, "reconnect_max_s": 0.2, "call_timeout_s": 2.0}
    options.update(overrides)
    return SyndrWebSocket(stub.ws_url, **options)


async def next_event(sub: Subscription, within_s: float = 2.0) -> WsEvent:
    return await asyncio.wait_for(anext(sub), within_s)


async def next_message(sub: Subscription, within_s: float = 2.0) -> Message:
    event = await next_event(sub, within_s)
    assert isinstance(event, Message), event
    return event


# --------------------------------------------------------------------------- credentials


def test_credentials_hide_the_secret() -> None:
    assert SECRET not in repr(CREDS) and SECRET not in str(CREDS)
    assert CREDS.headers() == {API_KEY_HEADER: KEY, API_SECRET_HEADER: SECRET}
    with pytest.raises(ValueError, match="api_secret") as info:
        ApiCredentials(KEY, "")
    assert KEY not in str(info.value)


# --------------------------------------------------------------------------- HTTP


async def test_http_result_and_server_timings(stub: SyndrStub) -> None:
    stub.results["public/ticker"] = {"instrument_name": "ETH-PERP", "mark_price": "2304.35"}
    async with SyndrHttpClient(stub.http_url) as client:
        answer = await client.call("public/ticker", {"instrument_name": "ETH-PERP"})
    assert answer.result == {"instrument_name": "ETH-PERP", "mark_price": "2304.35"}
    assert isinstance(answer.us_in, int) and isinstance(answer.us_out, int)
    assert answer.us_diff == answer.us_out - answer.us_in >= 0
    assert orjson.loads(answer.raw)["result"] == answer.result
    assert stub.http_requests[0].params == {"instrument_name": "ETH-PERP"}


async def test_http_params_already_serialised_go_out_as_their_bytes(stub: SyndrStub) -> None:
    """An order's journaled request is sent again byte for byte: numbers no float or 64-bit integer could hold,
    and the spelling of every value, as journaled."""
    journaled = b'{"amount":0.1000000000000000001,"big":18446744073709551616,"price":"1E+2","label":"\xc3\xa9"}'
    async with SyndrHttpClient(stub.http_url, credentials=CREDS) as client:
        await client.call("private/buy", orjson.Fragment(journaled))
    [record] = stub.http_requests
    assert b'"params":' + journaled in record.body
    assert record.method == "private/buy" and record.headers[API_KEY_HEADER] == KEY


async def test_http_private_headers_only_on_private_methods(stub: SyndrStub) -> None:
    async with SyndrHttpClient(stub.http_url, credentials=CREDS) as client:
        await client.call("public/get_instruments")
        await client.call("private/get_positions")
        await client.call("public/get_order_book", {"instrument_name": "ETH-PERP"})
    public1, private, public2 = stub.http_requests
    for record in (public1, public2):
        assert API_KEY_HEADER not in record.headers and API_SECRET_HEADER not in record.headers
    assert private.headers[API_KEY_HEADER] == KEY and private.headers[API_SECRET_HEADER] == SECRET
    ids = [r.id for r in stub.http_requests]
    assert ids == sorted(ids) and len(set(ids)) == 3


async def test_http_public_call_retried_on_500(stub: SyndrStub) -> None:
    stub.fail_http(2, "500")
    async with SyndrHttpClient(stub.http_url, retries=2) as client:
        answer = await client.call("public/get_instruments")
    assert answer.result["method"] == "public/get_instruments"
    assert len(stub.http_requests) == 3
    ids = [r.id for r in stub.http_requests]
    assert ids == sorted(ids) and len(set(ids)) == 3  # a retry is a new request


async def test_http_public_retries_end_within_the_call_timeout(stub: SyndrStub) -> None:
    """A retried read still ends within its timeout: an attempt that used it all up is not repeated, and a
    retry after a quick failure gets only what is left. Before the fix every attempt had the whole timeout,
    so a read the venue never answers took three timeouts (1.5 s here) and hit the venue three times."""
    async with SyndrHttpClient(stub.http_url, timeout_s=0.5, retries=2) as client:
        await client.call("public/get_instruments")  # the connection is up: the timeout is the read's alone
        stub.fail_http(3, "timeout")
        started, sent = time.monotonic(), len(stub.http_requests)
        with pytest.raises(SyndrTimeout):
            await client.call("public/get_instruments")
        assert len(stub.http_requests) - sent == 1
        assert time.monotonic() - started < 2  # a sanity bound (a slow host); the count above tells the fix
    async with SyndrStub() as other, SyndrHttpClient(other.http_url, timeout_s=0.5, retries=2) as client:
        await client.call("public/get_instruments")
        other.fail_http(1, "500")
        other.fail_http(2, "timeout")
        started, sent = time.monotonic(), len(other.http_requests)
        with pytest.raises(SyndrTimeout):
            await client.call("public/get_instruments")
        assert len(other.http_requests) - sent == 2  # the 500 was retried once, into what was left of the timeout
        assert time.monotonic() - started < 2


async def test_http_private_and_state_changing_calls_not_retried(stub: SyndrStub) -> None:
    async with SyndrHttpClient(stub.http_url, credentials=CREDS, retries=2) as client:
        stub.fail_http(1, "500")
        with pytest.raises(SyndrHttpError) as info:
            await client.call("private/buy", {"instrument_name": "ETH-PERP"})
        assert info.value.status == 500
        assert len(stub.http_requests) == 1
        stub.fail_http(1, "500")
        with pytest.raises(SyndrHttpError):
            await client.call("public/register_signing_key", {})
        assert len(stub.http_requests) == 2


@pytest.mark.parametrize(("code", "expected"), [
    (ErrorCode.NOT_ENOUGH_FUNDS, SyndrRejected),
    (ErrorCode.UNAUTHORIZED, SyndrAuthError),
    (ErrorCode.TOO_MANY_REQUESTS, SyndrRateLimited),
    (ErrorCode.ORDER_NOT_FOUND, SyndrNotFound),
    (ErrorCode.INVALID_PARAMS, SyndrInvalidRequest),
    (ErrorCode.INTERNAL_ERROR, SyndrVenueFailure),
])
async def test_http_rpc_error_maps_to_class(stub: SyndrStub, code: int, expected: type[SyndrError]) -> None:
    stub.fail_http(1, "rpc_error", code=code, message="venue says no")
    async with SyndrHttpClient(stub.http_url, credentials=CREDS) as client:
        with pytest.raises(expected) as info:
            await client.call("public/get_instrument", {"instrument_name": "ETH-PERP"})
    assert type(info.value) is expected
    assert info.value.code == code and info.value.venue_message == "venue says no"  # type: ignore[attr-defined]
    assert len(stub.http_requests) == 1  # an answer, even an error, is never retried


async def test_http_timeout_and_connection_refused_and_garbage(stub: SyndrStub) -> None:
    async with SyndrHttpClient(stub.http_url, credentials=CREDS, timeout_s=0.3) as client:
        stub.fail_http(1, "timeout")
        started = time.monotonic()
        with pytest.raises(SyndrTimeout):
            await client.call("private/get_open_orders")
        assert time.monotonic() - started < 1.0
        stub.fail_http(1, "garbage")
        with pytest.raises(SyndrProtocolError):
            await client.call("private/get_open_orders")
    async with SyndrHttpClient(f"http://127.0.0.1:{free_port()}", retries=1) as client:
        with pytest.raises(SyndrConnectionError):
            await client.call("public/get_instruments")


async def test_http_traceparent_and_client_span(stub: SyndrStub, spans: InMemorySpanExporter) -> None:
    tracer = trace.get_tracer("test")
    async with SyndrHttpClient(stub.http_url, credentials=CREDS) as client:
        with tracer.start_as_current_span("caller") as parent:
            await client.call("private/get_positions", {"marker": "PARAM-MARKER-123"})
    traceparent = stub.http_requests[0].headers["traceparent"]
    _version, trace_id, parent_span_id, _flags = traceparent.split("-")
    assert int(trace_id, 16) == parent.get_span_context().trace_id
    (span,) = [s for s in spans.get_finished_spans() if s.name == "private/get_positions"]
    assert span.kind is SpanKind.CLIENT
    assert span.context is not None and int(parent_span_id, 16) == span.context.span_id
    assert span.parent is not None and span.parent.span_id == parent.get_span_context().span_id
    attributes = dict(span.attributes or {})
    assert attributes["rpc.system"] == "jsonrpc" and attributes["rpc.method"] == "private/get_positions"
    assert isinstance(attributes["syndr.us_in"], int) and isinstance(attributes["syndr.us_out"], int)
    assert "syndr.us_diff" in attributes and attributes["http.response.status_code"] == 200
    dumped = span.to_json()
    for forbidden in (KEY, SECRET, "PARAM-MARKER-123"):
        assert forbidden not in dumped


async def test_http_credentials_absent_from_errors(stub: SyndrStub, spans: InMemorySpanExporter,
                                                   log_lines: io.StringIO) -> None:
    errors: list[BaseException] = []
    async with SyndrHttpClient(stub.http_url, credentials=CREDS, timeout_s=0.3, retries=1) as client:
        scenarios: list[tuple[str, str, dict[str, Any]]] = [
            ("500", "private/buy", {}),
            ("rpc_error", "private/sell", {"message": f"bad key {KEY} / {SECRET}", "code": ErrorCode.UNAUTHORIZED}),
            ("timeout", "private/cancel", {}), ("garbage", "private/edit", {}),
        ]
        for kind, method, extra in scenarios:
            stub.fail_http(1, kind, **extra)  # type: ignore[arg-type]
            try:
                await client.call(method, {"api_secret_echo": "x"})
            except SyndrError as exc:
                errors.append(exc)
        for method in ("public/ticker", "private/get_positions"):  # and one failing on every attempt
            stub.fail_http(2, "500")
            with pytest.raises(SyndrHttpError) as info:
                await client.call(method)
            errors.append(info.value)
        texts = [repr(client), repr(CREDS), str(CREDS)]
    async with SyndrHttpClient(f"http://127.0.0.1:{free_port()}", credentials=CREDS, retries=0) as client:
        with pytest.raises(SyndrConnectionError) as refused:
            await client.call("private/get_positions")
        errors.append(refused.value)
    assert len(errors) == 7
    texts += [f"{e!s} {e!r} {e.args!r}" for e in errors]
    texts += [s.to_json() for s in spans.get_finished_spans()]
    texts.append(log_lines.getvalue())
    for text in texts:
        assert SECRET not in text
    for text in texts[3:]:
        assert KEY not in text
    assert "***" in str(errors[1])


# --------------------------------------------------------------------------- WebSocket


async def test_ws_auth_then_private_subscribe(stub: SyndrStub, log_lines: io.StringIO) -> None:
    async with ws_client(stub) as ws:
        sub = await ws.subscribe(["user.orders.ETH-PERP"])
        answer = await ws.call("private/get_positions", {})
        assert answer.result["method"] == "private/get_positions" and answer.us_in is not None
    assert stub.ws_methods() == ["public/auth", "private/subscribe", "private/get_positions"]
    assert stub.ws_requests[0].params == {"api_key": KEY, "api_secret": SECRET}
    assert stub.ws_requests[1].params == {"channels": ["user.orders.ETH-PERP"]}
    assert sub.closed
    assert SECRET not in log_lines.getvalue()


async def test_ws_refused_credentials_fail_start(stub: SyndrStub) -> None:
    ws = ws_client(stub, credentials=ApiCredentials(KEY, "wrong-secret"))
    with pytest.raises(SyndrAuthError):
        await asyncio.wait_for(ws.start(), 3)
    assert stub.ws_methods() == ["public/auth"]
    with pytest.raises(SyndrConnectionError):
        await ws.call("public/ticker", {})


async def test_ws_notifications_in_order_per_subscription(stub: SyndrStub) -> None:
    async with ws_client(stub) as ws:
        ticker = await ws.subscribe(["ticker.ETH-PERP"])
        orders = await ws.subscribe(["user.orders.ETH-PERP", "trades.ETH-PERP.raw"])
        assert stub.ws_methods()[1:] == ["public/subscribe", "private/subscribe", "public/subscribe"]
        for i in range(50):
            await stub.notify("ticker.ETH-PERP", {"seq": i})
            await stub.notify("user.orders.ETH-PERP", {"seq": i})
            await stub.notify("trades.ETH-PERP.raw", {"seq": i}, method="subscriptions")
        got_ticker = [await next_message(ticker) for _ in range(50)]
        got_orders = [await next_message(orders) for _ in range(100)]
    assert [m.data["seq"] for m in got_ticker] == list(range(50))
    assert {m.channel for m in got_ticker} == {"ticker.ETH-PERP"}
    for channel in ("user.orders.ETH-PERP", "trades.ETH-PERP.raw"):
        assert [m.data["seq"] for m in got_orders if m.channel == channel] == list(range(50))
    first = got_ticker[0]
    assert orjson.loads(first.raw)["params"] == {"channel": "ticker.ETH-PERP", "data": {"seq": 0}}
    assert abs(first.received_ns - time.time_ns()) < 10 * 10**9


async def test_ws_reconnects_reauths_and_resubscribes_every_channel(stub: SyndrStub) -> None:
    async with ws_client(stub) as ws:
        book = await ws.subscribe(["book.ETH-PERP.15.raw", "ticker.ETH-PERP"])
        orders = await ws.subscribe(["user.orders.ETH-PERP"])
        await stub.notify("ticker.ETH-PERP", {"seq": 1})
        assert (await next_message(book)).data == {"seq": 1}
        assert await stub.close_all_websockets() == 1
        for sub in (book, orders):
            assert isinstance(await next_event(sub), Disconnected)
            reconnected = await next_event(sub)
            assert isinstance(reconnected, Reconnected) and reconnected.attempt >= 1
        assert stub.ws_connections == 2 and ws.reconnects == 1
        second = stub.ws_methods(conn=2)
        assert second[0] == "public/auth"
        resubscribed = {c for r in stub.ws_requests if r.conn == 2 and r.method.endswith("/subscribe")
                        for c in r.params["channels"]}
        assert resubscribed == {"book.ETH-PERP.15.raw", "ticker.ETH-PERP", "user.orders.ETH-PERP"}
        assert {r.method for r in stub.ws_requests if r.conn == 2 and "user.orders.ETH-PERP" in
                (r.params or {}).get("channels", [])} == {"private/subscribe"}
        await stub.notify("ticker.ETH-PERP", {"seq": 2})
        await stub.notify("user.orders.ETH-PERP", {"seq": 3})
        assert (await next_message(book)).data == {"seq": 2}
        assert (await next_message(orders)).data == {"seq": 3}
        assert (await ws.call("public/ticker", {})).result["method"] == "public/ticker"


async def test_ws_reauthenticates_with_refreshed_credentials_after_a_reconnect(stub: SyndrStub) -> None:
    asked: list[int] = []
    rotated = ApiCredentials("rotated-key", "rotated-secret")

    async def refresh() -> ApiCredentials:
        asked.append(1)
        if len(asked) == 1:
            raise RuntimeError("vault away")  # the first reconnect keeps the key it has
        return rotated

    async with ws_client(stub, refresh_credentials=refresh) as ws:
        orders = await ws.subscribe(["user.orders.ETH-PERP"])
        assert asked == []  # the first connection uses the credentials given
        assert await stub.close_all_websockets() == 1
        assert isinstance(await next_event(orders), Disconnected)
        assert isinstance(await next_event(orders), Reconnected)
        assert len(asked) == 1 and stub.ws_connections == 2  # refresh failed: the old key, still valid here
        # The venue now knows only the rotated key (the old one was deactivated).
        stub.api_key, stub.api_secret = rotated.api_key, rotated.api_secret
        assert await stub.close_all_websockets() == 1
        assert isinstance(await next_event(orders), Disconnected)
        assert isinstance(await next_event(orders), Reconnected)
        auths = [r.params for r in stub.ws_requests if r.method == "public/auth"]
        assert auths[-1] == {"api_key": "rotated-key", "api_secret": "rotated-secret"}
        assert (await ws.call("private/get_open_orders", {})).result is not None
        assert "rotated-secret" not in repr(ws)


async def test_ws_silence_detected_and_reconnected(stub: SyndrStub) -> None:
    # A silence timeout well above the heartbeat: a host that stalls the loop for a while is not silence.
    async with ws_client(stub, heartbeat_s=0.2, silence_timeout_s=1.5) as ws:
        sub = await ws.subscribe(["ticker.ETH-PERP"])
        # Quiet but healthy: pongs alone keep the connection alive past the silence timeout.
        with pytest.raises(TimeoutError):
            await next_event(sub, within_s=2)
        assert stub.ws_connections == 1
        # The last frame before the silence is one the test sees arrive (not a pong at some point in the last
        # heartbeat): the silence timeout counts from about then.
        await stub.notify("ticker.ETH-PERP", {"seq": 0})
        assert (await next_message(sub)).data == {"seq": 0}
        stub.silence_websockets()
        started = time.monotonic()
        disconnected = await next_event(sub, within_s=5)
        detected_after = time.monotonic() - started
        assert isinstance(disconnected, Disconnected) and "no frame" in disconnected.reason
        assert 1.2 < detected_after < 4.5, detected_after  # after the silence timeout, not at a missed pong
        assert isinstance(await next_event(sub, within_s=3), Reconnected)
        assert stub.ws_connections == 2
        await stub.notify("ticker.ETH-PERP", {"seq": 1})
        assert (await next_message(sub)).data == {"seq": 1}


async def test_ws_gap_detected_before_offending_message(stub: SyndrStub) -> None:
    channel = "book.ETH-PERP.15.raw"

    def change(change_id: int, previous: int) -> dict[str, Any]:
        return {"type": "change", "change_id": change_id, "previous_change_id": previous, "bids": [], "asks": []}

    async with ws_client(stub) as ws:
        sub = await ws.subscribe([channel])
        for change_id, previous in ((10, 9), (11, 10), (13, 12), (14, 13)):
            await stub.notify(channel, change(change_id, previous))
        events = [await next_event(sub) for _ in range(5)]
    assert [type(e) for e in events] == [Message, Message, GapDetected, Message, Message]
    assert events[2] == GapDetected(channel, Gap(expected_previous=11, got_previous=12, change_id=13))
    assert isinstance(events[3], Message) and events[3].data["change_id"] == 13


async def test_ws_callback_subscription_gets_every_event_in_order(stub: SyndrStub) -> None:
    """With `on_event` the same events arrive synchronously, in order, and a failing callback is contained."""
    channel = "book.ETH-PERP.15.raw"
    seen: list[WsEvent] = []

    def on_event(event: WsEvent) -> None:
        seen.append(event)
        if isinstance(event, Message) and event.data["change_id"] == 11:
            raise RuntimeError("a consumer bug")

    def change(change_id: int, previous: int) -> dict[str, Any]:
        return {"type": "change", "change_id": change_id, "previous_change_id": previous, "bids": [], "asks": []}

    async with ws_client(stub) as ws:
        sub = await ws.subscribe([channel], on_event=on_event)
        queued = await ws.subscribe([channel])  # an ordinary subscription to the same channel still gets everything
        for change_id, previous in ((10, 9), (11, 10), (13, 12)):
            await stub.notify(channel, change(change_id, previous))
        queued_events = [await next_event(queued) for _ in range(4)]
        assert await stub.close_all_websockets() == 1
        assert isinstance(await next_event(queued), Disconnected)
        assert isinstance(await next_event(queued), Reconnected)
        await stub.notify(channel, change(20, 19))
        await next_message(queued)
        assert sub.pending() == 0
        await sub.close()
        with pytest.raises(StopAsyncIteration):
            await next_event(sub)
    assert [type(e) for e in seen] == [Message, Message, GapDetected, Message, Disconnected, Reconnected, Message]
    assert [type(e) for e in queued_events] == [Message, Message, GapDetected, Message]
    assert [e.data["change_id"] for e in seen if isinstance(e, Message)] == [10, 11, 13, 20]


def test_change_id_tracker() -> None:
    tracker = ChangeIdTracker()
    assert tracker.check(5, 4) is None  # the first message establishes the chain
    assert tracker.check(6, 5) is None
    assert tracker.check(9, 8) == Gap(6, 8, 9)
    assert tracker.check(10, 9) is None  # the chain continues from the message after the gap
    tracker.reset()
    assert tracker.check(20, 17) is None and tracker.last_change_id == 20


async def test_ws_pending_call_fails_on_disconnect(stub: SyndrStub) -> None:
    stub.hold_ws("public/get_order_book")
    async with ws_client(stub) as ws:
        call = asyncio.create_task(ws.call("public/get_order_book", {"instrument_name": "ETH-PERP"}))
        await stub.wait_until(lambda: "public/get_order_book" in stub.ws_methods())
        started = time.monotonic()
        await stub.close_all_websockets()
        with pytest.raises(SyndrConnectionError, match="outcome unknown"):
            await call
        assert time.monotonic() - started < 1.0
        # And the client is usable again once reconnected.
        assert (await ws.call("public/ticker", {})).result["method"] == "public/ticker"


async def test_ws_slow_consumer_overflows_others_unaffected(stub: SyndrStub) -> None:
    async with ws_client(stub) as ws:
        slow = await ws.subscribe(["ticker.ETH-PERP"], max_queue=5)
        fast = await ws.subscribe(["ticker.ETH-PERP"])
        assert stub.ws_methods().count("public/subscribe") == 1  # the channel is shared upstream
        for i in range(20):
            await stub.notify("ticker.ETH-PERP", {"seq": i})
        assert [(await next_message(fast)).data["seq"] for _ in range(20)] == list(range(20))
        backlog: list[WsEvent] = []
        while slow.pending():
            backlog.append(await next_event(slow))
        assert isinstance(backlog[0], Overflow) and slow.overflows >= 1
        seqs = [e.data["seq"] for e in backlog[1:] if isinstance(e, Message)]
        assert len(backlog) == len(seqs) + 1 <= 5
        assert seqs == list(range(seqs[0], 20))  # what is left is the newest, in order
        assert backlog[0].dropped + len(seqs) == 20  # every message accounted for
        await stub.notify("ticker.ETH-PERP", {"seq": 20})
        assert (await next_message(slow)).data == {"seq": 20}
        assert (await next_message(fast)).data == {"seq": 20}


async def test_ws_subscription_close_unsubscribes_when_unshared(stub: SyndrStub) -> None:
    async with ws_client(stub) as ws:
        first = await ws.subscribe(["ticker.ETH-PERP", "user.orders.ETH-PERP"])
        second = await ws.subscribe(["ticker.ETH-PERP"])
        await first.close()
        assert [e async for e in first] == []
        assert stub.ws_methods()[-1] == "private/unsubscribe"
        assert stub.ws_requests[-1].params == {"channels": ["user.orders.ETH-PERP"]}
        await second.close()
        assert stub.ws_methods()[-1] == "public/unsubscribe"
        assert stub.ws_requests[-1].params == {"channels": ["ticker.ETH-PERP"]}


async def test_ws_aclose_completes_iterators_and_fails_calls(stub: SyndrStub) -> None:
    stub.hold_ws("public/get_trades")
    ws = ws_client(stub)
    await ws.start()
    sub = await ws.subscribe(["ticker.ETH-PERP"])
    await stub.notify("ticker.ETH-PERP", {"seq": 1})

    async def consume() -> list[WsEvent]:
        return [event async for event in sub]

    consumer = asyncio.create_task(consume())
    call = asyncio.create_task(ws.call("public/get_trades", {}))
    await stub.wait_until(lambda: "public/get_trades" in stub.ws_methods())
    await ws.aclose()
    events = await asyncio.wait_for(consumer, 1)
    assert [e.data for e in events if isinstance(e, Message)] == [{"seq": 1}]
    with pytest.raises(SyndrConnectionError):
        await call
    with pytest.raises(SyndrConnectionError):
        await ws.call("public/ticker", {})
    await stub.wait_until(lambda: stub.live_connections() == 0, within_s=2)


# --------------------------------------------------------------------------- rate budget


async def test_budget_cancels_overtake_queued_reads() -> None:
    budget = RateBudget(capacity=100, refill_per_s=500, safety=0.8)  # 80 credits, 400 credits/s
    while budget.try_acquire("public/ticker") or budget.try_acquire("private/cancel"):
        pass
    order: list[str] = []

    async def take(label: str, method: str) -> None:
        await budget.acquire(method)
        order.append(label)

    reads = [asyncio.create_task(take(f"read{i}", "public/get_order_book")) for i in range(3)]
    await asyncio.sleep(0)
    edit = asyncio.create_task(take("edit", "private/edit"))
    cancel = asyncio.create_task(take("cancel", "private/cancel"))
    await asyncio.wait_for(asyncio.gather(*reads, edit, cancel), 3)
    assert order == ["cancel", "edit", "read0", "read1", "read2"]


async def test_budget_never_exceeded_over_a_burst() -> None:
    budget = RateBudget(capacity=500, refill_per_s=5000, safety=0.8)  # 400 credits, 4,000 credits/s
    grants: list[tuple[float, int]] = []
    methods = ["public/get_order_book", "private/buy", "private/cancel", "private/get_positions"] * 25

    async def take(method: str) -> None:
        await budget.acquire(method)
        grants.append((time.monotonic(), 50 if method.endswith(("order_book", "positions")) else 10))

    started = time.monotonic()
    await asyncio.wait_for(asyncio.gather(*(take(m) for m in methods)), 5)
    elapsed = time.monotonic() - started
    total = sum(cost for _, cost in grants)  # 3,000 credits
    assert len(grants) == 100
    # Lower bound: the bucket cannot pay out faster than capacity + refill x time...
    assert elapsed >= (total - budget.capacity) / budget.refill_per_s * 0.9
    # ...upper bound: nor sit idle while callers wait (generous: a busy 2-core host once took 1.5 s for the
    # 0.65 s this needs; a budget whose timer stalled would take many times that).
    assert elapsed < 3 * (total - budget.capacity) / budget.refill_per_s + 1.0
    for window in (0.05, 0.1, 0.25, 0.5):
        for i, (start, _) in enumerate(grants):
            spent = sum(cost for t, cost in grants[i:] if t - start <= window)
            assert spent <= budget.capacity + budget.refill_per_s * window + 1e-6, (window, spent)


async def test_budget_gives_up_after_timeout_and_frees_the_place() -> None:
    budget = RateBudget(capacity=125, refill_per_s=50, safety=0.8)  # 100 credits, 40 credits/s
    while budget.try_acquire("private/buy"):
        pass
    started = time.monotonic()
    with pytest.raises(SyndrRateLimited) as refused:
        await budget.acquire("public/get_order_book", timeout_s=0.1)  # 50 credits: more than 1 s away
    assert 0.09 <= time.monotonic() - started < 1.0
    assert refused.value.code == ErrorCode.TOO_MANY_REQUESTS and "not sent" in str(refused.value)
    assert budget.waiting == 0  # nobody left queued ahead of later callers
    await asyncio.wait_for(budget.acquire("private/cancel", timeout_s=1.0), 2)  # 10 credits: a quarter second


async def test_budget_priority_override_queues_a_read_as_a_cancel() -> None:
    budget = RateBudget(capacity=100, refill_per_s=500, safety=0.8)  # 80 credits, 400 credits/s
    while budget.try_acquire("private/buy"):
        pass
    order: list[str] = []

    async def take(label: str, method: str, priority: Priority | None = None) -> None:
        await budget.acquire(method, priority=priority)
        order.append(label)

    edits = [asyncio.create_task(take(f"edit{i}", "private/edit")) for i in range(3)]
    await asyncio.sleep(0)
    read = asyncio.create_task(take("read-for-cancel", "private/get_open_orders", Priority.CANCEL))
    await asyncio.wait_for(asyncio.gather(*edits, read), 3)
    assert order[0] == "read-for-cancel", order


def test_budget_try_acquire() -> None:
    budget = RateBudget(capacity=125, refill_per_s=1, safety=0.8)  # 100 credits, ~no refill in-test
    assert budget.try_acquire("public/ticker") and budget.try_acquire("public/ticker")
    assert not budget.try_acquire("public/ticker")
    assert not budget.try_acquire("private/cancel")
    assert budget.available < 10
    with pytest.raises(ValueError):
        RateBudget(capacity=10)


async def test_budget_shared_by_both_clients(stub: SyndrStub) -> None:
    budget = RateBudget(capacity=1000, refill_per_s=0.01, safety=1.0)  # no meaningful refill in-test
    full = budget.available
    async with SyndrHttpClient(stub.http_url, credentials=CREDS, rate_budget=budget) as client, \
            ws_client(stub, rate_budget=budget) as ws:
        await client.call("private/buy", {})
        await ws.call("private/cancel", {})
        spent = full - budget.available
    # auth (50) + buy (10) + cancel (10): both clients drew from the one budget
    assert 69 < spent <= 70


async def test_a_callers_baggage_does_not_leave_for_the_venue(stub: SyndrStub, spans: InMemorySpanExporter) -> None:
    # Baggage comes from our callers' metadata and is theirs; the venue is outside: it gets our trace id only.
    tracer = trace.get_tracer("test")
    token = otel_context.attach(baggage.set_baggage("desk.user", "alice@example.internal"))
    try:
        async with SyndrHttpClient(stub.http_url, credentials=CREDS) as client:
            with tracer.start_as_current_span("caller"):
                await client.call("private/get_positions")
    finally:
        otel_context.detach(token)
    headers = {name.lower(): value for name, value in stub.http_requests[0].headers.items()}
    assert "traceparent" in headers
    assert "baggage" not in headers and not any("alice" in value for value in headers.values())
