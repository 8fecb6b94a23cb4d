"""The adapter against the simulator over real sockets: keys, orders, private channels, faults, bad input."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from tests.support.syndr_account import SyndrAccount, register

from portico.runtime.secp256k1 import Secp256k1Key, generate_private_key
from portico.sim.server import SimConfig, Simulator
from portico.venues.syndr import models
from portico.venues.syndr.constants import ErrorCode
from portico.venues.syndr.credentials import ApiCredentials
from portico.venues.syndr.errors import (
    SyndrAuthError,
    SyndrInvalidRequest,
    SyndrNotFound,
    SyndrRateLimited,
    SyndrRejected,
    SyndrTransportError,
    SyndrVenueFailure,
)
from portico.venues.syndr.http import SyndrHttpClient
from portico.venues.syndr.ws import Disconnected, GapDetected, Message, Reconnected, Subscription, SyndrWebSocket


@pytest.fixture(scope="module")
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimConfig(port=0, seed=11, book_changes_per_second=400)) as simulator:
        yield simulator


async def best(public: SyndrHttpClient, instrument: str = "ETH-PERP") -> models.OrderBook:
    return models.parse_order_book((await public.call("public/get_order_book", {"instrument_name": instrument})).result)


def bid_of(book: models.OrderBook) -> Decimal:
    """The book's best bid, which the simulator's market maker always quotes."""
    assert book.best_bid_price is not None, f"{book.instrument_name}: no bid"
    return book.best_bid_price


async def next_event(subscription: Subscription, predicate: Any, timeout_s: float = 5.0) -> Any:
    async def find() -> Any:
        async for event in subscription:
            if predicate(event):
                return event
        raise AssertionError("subscription ended")

    return await asyncio.wait_for(find(), timeout_s)


def on(channel_prefix: str) -> Any:
    return lambda e: isinstance(e, Message) and e.channel.startswith(channel_prefix)


# --------------------------------------------------------------------------- keys and orders


async def test_register_signing_key_then_account_summary(private: SyndrHttpClient) -> None:
    summary = models.parse_account_summary((await private.call("private/get_account_summary",
                                                               {"timestamp": int(time.time())})).result)
    assert summary.collateral["USDT"] == Decimal("1000000")
    assert summary.status == "ACTIVE"


async def test_order_lifecycle_with_private_channels(sim: Simulator, account: SyndrAccount, public: SyndrHttpClient,
                                                     private: SyndrHttpClient) -> None:
    async with SyndrWebSocket(sim.ws_url, credentials=account.credentials) as ws:
        await ws.start()
        orders = await ws.subscribe(["user.orders.ALL.raw"])
        fills = await ws.subscribe(["user.fills.ALL"])
        positions = await ws.subscribe(["user.positions"])
        transactions = await ws.subscribe(["user.transactions"])

        book = await best(public)
        resting_price = str(bid_of(book) - 50)
        placed = models.parse_order((await private.call("private/buy", account.order(
            "ETH-PERP", "buy", "0.01", resting_price, post_only=True, label="rest"))).result["order"])
        assert placed.order_state == "open" and placed.price == Decimal(resting_price)
        update = models.parse_order_update((await next_event(orders, on("user.orders"))).data)
        assert update.order.order_id == placed.order_id

        edited_price = str(bid_of(book) - 60)
        edit = (await private.call("private/edit", account.edit(placed, "0.02", edited_price))).result
        assert models.parse_order(edit["result"]).amount == Decimal("0.02")
        update = models.parse_order_update((await next_event(
            orders, lambda e: on("user.orders")(e) and e.data["order"]["amount"] == "0.02")).data)
        assert update.order.price == Decimal(edited_price)

        cancelled = models.parse_order((await private.call("private/cancel", {
            "instrument_name": "ETH-PERP", "order_id": placed.order_id})).result)
        assert cancelled.order_state == "cancelled"
        await next_event(orders, lambda e: on("user.orders")(e) and e.data["order"]["order_state"] == "cancelled")

        book = await best(public)
        taker = models.parse_order((await private.call("private/buy", account.order(
            "ETH-PERP", "buy", "0.005", str(book.best_ask_price), time_in_force="IOC"))).result["order"])
        assert taker.filled_amount == Decimal("0.005")
        fill = models.parse_user_trade((await next_event(fills, on("user.fills"))).data)
        assert fill.amount == Decimal("0.005") and fill.price == book.best_ask_price
        position = models.parse_position_update((await next_event(positions, on("user.positions"))).data)
        assert position.position is not None and position.position.size == Decimal("0.005")
        tx = models.parse_transaction_update((await next_event(transactions, on("user.transactions"))).data)
        assert tx.tx_status == "success"
        held = models.parse_positions((await private.call("private/get_positions")).result)
        assert [(p.instrument_name, p.size, p.direction) for p in held] == [("ETH-PERP", Decimal("0.005"), "buy")]


@pytest.mark.parametrize("case", ["wrong signer", "tampered price", "reused salt", "no signing key"])
async def test_order_signature_rejections(sim: Simulator, account: SyndrAccount, public: SyndrHttpClient,
                                          private: SyndrHttpClient, case: str) -> None:
    book = await best(public)
    price = str(bid_of(book) - 100)
    expected = ErrorCode.INVALID_SIGNATURE
    client = private
    if case == "wrong signer":
        params = account.order("ETH-PERP", "buy", "0.01", price, signed_by=Secp256k1Key(generate_private_key()))
    elif case == "tampered price":
        params = account.order("ETH-PERP", "buy", "0.01", price, sign_price=str(Decimal(price) - 1))
    elif case == "reused salt":
        await private.call("private/buy", account.order("ETH-PERP", "buy", "0.01", price, salt=4242))
        params = account.order("ETH-PERP", "buy", "0.01", str(Decimal(price) - 1), salt=4242)
        expected = ErrorCode.SALT_REUSED
    else:
        outsider = await register(public)
        client = SyndrHttpClient(sim.http_url, credentials=ApiCredentials("not-a-key", "not-a-secret"))
        params = outsider.order("ETH-PERP", "buy", "0.01", price)
        expected = ErrorCode.UNAUTHORIZED
    try:
        with pytest.raises((SyndrRejected, SyndrAuthError)) as caught:
            await client.call("private/buy", params)
    finally:
        if client is not private:
            await client.aclose()
    assert caught.value.code == expected


async def test_a_new_signing_key_revokes_the_old_one(sim: Simulator, account: SyndrAccount, public: SyndrHttpClient,
                                                     private: SyndrHttpClient) -> None:
    price = str(bid_of(await best(public)) - 100)
    await private.call("private/buy", account.order("ETH-PERP", "buy", "0.01", price))
    rotated = await register(public, account_key=account.account_key)
    assert rotated.signing_key.address != account.signing_key.address
    with pytest.raises(SyndrRejected) as caught:
        await private.call("private/buy", account.order("ETH-PERP", "buy", "0.01", price))
    assert caught.value.code == ErrorCode.INVALID_SIGNATURE
    await private.call("private/buy", rotated.order("ETH-PERP", "buy", "0.01", price))


async def test_api_key_scopes_and_deactivation(sim: Simulator, private: SyndrHttpClient, account: SyndrAccount,
                                               public: SyndrHttpClient) -> None:
    created = models.parse_created_api_key((await private.call("private/create_api_key",
                                                               {"scope": 2, "name": "reader"})).result)
    keys = models.parse_api_keys((await private.call("private/get_api_keys")).result)
    assert created.api_key in {k.api_key for k in keys}
    assert all(k.api_secret in (None, "") for k in keys)  # secrets are shown once, at creation
    price = str(bid_of(await best(public)) - 100)
    async with SyndrHttpClient(sim.http_url, credentials=ApiCredentials(created.api_key, created.api_secret)) as reader:
        await reader.call("private/get_open_orders")
        with pytest.raises(SyndrAuthError) as caught:
            await reader.call("private/buy", account.order("ETH-PERP", "buy", "0.01", price))
        assert caught.value.code == ErrorCode.FORBIDDEN
        # The document's table requires the key's own secret: missing or wrong, the key stays active.
        with pytest.raises(SyndrInvalidRequest):
            await private.call("private/deactivate_api_key", {"api-key": created.api_key})
        with pytest.raises(SyndrAuthError) as wrong:
            await private.call("private/deactivate_api_key", {"api-key": created.api_key, "api_secret": "x"})
        assert wrong.value.code == ErrorCode.UNAUTHORIZED
        await reader.call("private/get_open_orders")
        await private.call("private/deactivate_api_key", {"api-key": created.api_key,
                                                          "api_secret": created.api_secret})
        with pytest.raises(SyndrAuthError) as caught:
            await reader.call("private/get_open_orders")
        assert caught.value.code == ErrorCode.UNAUTHORIZED


async def test_rate_limit_answers_too_many_requests() -> None:
    config = SimConfig(port=0, market_maker=False, rate_limit_capacity=200, rate_limit_refill_per_s=1)
    async with Simulator(config) as tight, SyndrHttpClient(tight.http_url) as public:
        account = await register(public)
        async with SyndrHttpClient(tight.http_url, credentials=account.credentials) as client:
            answers = await asyncio.gather(*(client.call("private/get_positions") for _ in range(8)),
                                           return_exceptions=True)
    limited = [a for a in answers if isinstance(a, SyndrRateLimited)]
    assert len(limited) == 4 and all(a.code == ErrorCode.TOO_MANY_REQUESTS for a in limited)


# --------------------------------------------------------------------------- market data and faults


async def test_reconnect_resubscribes_every_channel(sim: Simulator) -> None:
    async with SyndrWebSocket(sim.ws_url, reconnect_initial_s=0.05) as ws:
        await ws.start()
        book = await ws.subscribe(["book.ETH-PERP.15.raw"])
        trades = await ws.subscribe(["ticker.ETH-PERP"])
        await next_event(book, on("book."))
        assert await sim.close_websockets() == 1
        await next_event(book, lambda e: isinstance(e, Disconnected))
        await next_event(book, lambda e: isinstance(e, Reconnected))
        await next_event(book, on("book."))
        await next_event(trades, on("ticker."))
    subscribed = [c for r in sim.requests if r.method == "public/subscribe" for c in r.params["channels"]]
    assert subscribed.count("book.ETH-PERP.15.raw") == 2 and subscribed.count("ticker.ETH-PERP") == 2


async def test_a_skipped_change_id_is_reported(sim: Simulator) -> None:
    async with SyndrWebSocket(sim.ws_url) as ws:
        await ws.start()
        book = await ws.subscribe(["book.ETH-PERP.15.raw"])
        first = await next_event(book, on("book."))
        sim.faults.update({"skip_change_ids": {"ETH-PERP": 1}})
        gap = await next_event(book, lambda e: isinstance(e, GapDetected))
        following = await next_event(book, on("book."))
    assert gap.gap.change_id == following.data["change_id"]
    assert gap.gap.got_previous == gap.gap.expected_previous + 1
    assert first.data["change_id"] <= gap.gap.expected_previous


async def test_a_silent_venue_is_detected_and_reconnected(sim: Simulator) -> None:
    async with SyndrWebSocket(sim.ws_url, heartbeat_s=0.2, silence_timeout_s=0.6, reconnect_initial_s=0.05) as ws:
        await ws.start()
        book = await ws.subscribe(["book.ETH-PERP.15.raw"])
        await next_event(book, on("book."))
        sim.faults.update({"silent": True})
        try:
            await next_event(book, lambda e: isinstance(e, Disconnected), timeout_s=5)
        finally:
            sim.faults.update({"silent": False})
        await next_event(book, lambda e: isinstance(e, Reconnected), timeout_s=10)
        await next_event(book, on("book."))


async def test_dropped_response_still_executed(sim: Simulator, account: SyndrAccount, public: SyndrHttpClient,
                                               private: SyndrHttpClient) -> None:
    price = str(bid_of(await best(public)) - 100)
    params = account.order("ETH-PERP", "buy", "0.01", price, label="dropped-response")
    sim.faults.update({"drop_response_rate": 1.0})
    try:
        with pytest.raises(SyndrTransportError):
            await private.call("private/buy", params)
    finally:
        sim.faults.update({"drop_response_rate": 0.0})
    grouped = (await private.call("private/get_open_orders")).result
    labels = [o["label"] for kinds in grouped.values() for names in kinds.values() for by_id in names.values()
              for o in by_id.values()]
    assert labels.count("dropped-response") == 1  # the venue has it; the caller must reconcile


async def test_fail_rate_answers_internal_errors_and_executes_nothing(sim: Simulator,
                                                                      public: SyndrHttpClient) -> None:
    sim.faults.update({"fail_rate": 1.0})
    try:
        with pytest.raises(SyndrVenueFailure) as caught:
            await public.call("public/get_instrument", {"instrument_name": "ETH-PERP"})
    finally:
        sim.faults.update({"fail_rate": 0.0})
    assert caught.value.code == ErrorCode.INTERNAL_ERROR


# --------------------------------------------------------------------------- admin


async def test_instrument_list_changes_at_run_time(sim: Simulator, public: SyndrHttpClient) -> None:
    async with aiohttp.ClientSession() as admin:
        added = await admin.post(f"{sim.admin_url}/instruments", json={"name": "ETH-31DEC27"})
        assert added.status == 201
        changed = await admin.patch(f"{sim.admin_url}/instruments/ETH-31DEC27", json={"tick_size": "0.5"})
        assert changed.status == 200 and (await changed.json())["tick_size"] == "0.5"
        bad = await admin.patch(f"{sim.admin_url}/instruments/ETH-31DEC27", json={"tick_size": "soon"})
        assert bad.status == 400
        listed = models.parse_instruments((await public.call("public/get_instruments", {"kind": "future"})).result)
        assert listed["ETH-31DEC27"].tick_size == Decimal("0.5")
        delisted = await admin.delete(f"{sim.admin_url}/instruments/ETH-31DEC27")
        assert delisted.status == 200 and (await delisted.json())["is_active"] is False
    names = (await public.call("public/get_all_instrument_names")).result
    assert "ETH-31DEC27" not in names
    with pytest.raises(SyndrNotFound):
        await public.call("public/get_instrument", {"instrument_name": "ETH-1JAN99"})


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(("body", "code"), [
    (b"{not json", ErrorCode.PARSE_ERROR),
    (b"[1, 2]", ErrorCode.INVALID_REQUEST),
    (b'"just a string"', ErrorCode.INVALID_REQUEST),
    (b'{"jsonrpc": "1.0", "id": 1, "method": "public/ticker"}', ErrorCode.INVALID_REQUEST),
    (b'{"jsonrpc": "2.0", "id": 1, "method": 5}', ErrorCode.INVALID_REQUEST),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "public/nope"}', ErrorCode.METHOD_NOT_FOUND),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "public/ticker", "params": [1]}', ErrorCode.INVALID_PARAMS),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "public/ticker", "params": {"instrument_name": 7}}',
     ErrorCode.INVALID_PARAMS),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "public/get_instruments", "params": {"kind": "spaceship"}}',
     ErrorCode.INVALID_PARAMS),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "private/buy", "params": {}}', ErrorCode.UNAUTHORIZED),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "public/get_tradingview_chart_data", '
     b'"params": {"instrument_name": "ETH-PERP", "from": "x", "to": 1, "resolution": "1"}}', ErrorCode.INVALID_PARAMS),
    (b"[" * 50_000 + b"]" * 50_000, ErrorCode.PARSE_ERROR),
])
async def test_bad_http_input_gets_json_rpc_errors(sim: Simulator, body: bytes, code: ErrorCode) -> None:
    async with aiohttp.ClientSession() as session:
        response = await session.post(sim.http_url, data=body, headers={"Content-Type": "application/json"})
        answer = json.loads(await response.text())
    assert answer["error"]["code"] == code
    assert {"usIn", "usOut", "usDiff"} <= answer.keys()


async def test_bad_websocket_input_gets_json_rpc_errors_and_the_venue_stays_up(sim: Simulator) -> None:
    frames: list[str | bytes] = [
        "{not json", "[]", '{"jsonrpc": "2.0", "id": 3, "method": "private/get_positions"}',
        '{"jsonrpc": "2.0", "id": 4, "method": "public/subscribe", "params": {"channels": ["user.positions"]}}',
        '{"jsonrpc": "2.0", "id": 5, "method": "public/subscribe", "params": {"channels": ["nonsense.X"]}}',
        '{"jsonrpc": "2.0", "id": 6, "method": "public/auth", "params": {"api_key": "k", "api_secret": "s"}}',
        "x" * (sim.config.max_frame_bytes + 1), b"\x00\x01binary",
    ]
    expected = [ErrorCode.PARSE_ERROR, ErrorCode.INVALID_REQUEST, ErrorCode.UNAUTHORIZED, ErrorCode.UNAUTHORIZED,
                ErrorCode.INVALID_PARAMS, ErrorCode.UNAUTHORIZED, ErrorCode.INVALID_REQUEST, ErrorCode.INVALID_REQUEST]
    async with aiohttp.ClientSession() as session, session.ws_connect(sim.ws_url) as ws:
        codes = []
        for frame in frames:
            if isinstance(frame, bytes):
                await ws.send_bytes(frame)
            else:
                await ws.send_str(frame)
            codes.append(json.loads((await ws.receive(timeout=5)).data)["error"]["code"])
        await ws.send_str('{"jsonrpc": "2.0", "id": 9, "method": "public/get_instrument", '
                          '"params": {"instrument_name": "ETH-PERP"}}')
        ok = json.loads((await ws.receive(timeout=5)).data)
    assert codes == expected
    assert ok["result"]["name"] == "ETH-PERP"


async def test_parameters_the_document_requires_are_required(sim: Simulator, account: SyndrAccount,
                                                              public: SyndrHttpClient,
                                                              private: SyndrHttpClient) -> None:
    """What the document's tables mark required is refused when missing (or when it names another instrument),
    so an adapter that leaves it out fails here rather than at the venue."""
    book = await best(public)
    bought = await private.call("private/buy", account.order("ETH-PERP", "buy", "0.01", str(bid_of(book) - 70)))
    placed = models.parse_order(bought.result["order"])
    edit = account.edit(placed, "0.02", str(bid_of(book) - 71))
    now_s = int(time.time())
    history = {"count": 10, "start_time": now_s - 60, "end_time": now_s + 60}
    refused = [
        ("private/cancel", {"order_id": placed.order_id}),
        ("private/cancel", {"instrument_name": "BTC-PERP", "order_id": placed.order_id}),
        ("private/edit", {k: v for k, v in edit.items() if k != "instrument_name"}),
        ("private/edit", {**edit, "instrument_name": "BTC-PERP"}),
        ("private/edit", {k: v for k, v in edit.items() if k != "time_in_force"}),
        ("private/edit", {k: v for k, v in edit.items() if k != "type"}),
        ("private/edit", {**edit, "time_in_force": "IOC"}),
        ("private/get_order_history_by_instrument", {"instrument_name": "ETH-PERP"}),
        *[("private/get_order_history_by_instrument",
           {"instrument_name": "ETH-PERP", **{k: v for k, v in history.items() if k != missing}})
          for missing in history],
        ("private/get_order_history_by_kind", history),
        ("private/get_user_trades_by_kind", {"count": 10, "start_timestamp": 0, "end_timestamp": now_s}),
        # "Currently only GTC supported ... IOC and more types coming soon": no FOK order is taken.
        ("private/buy", account.order("ETH-PERP", "buy", "0.01", str(book.best_ask_price), time_in_force="FOK")),
    ]
    for method, params in refused:
        with pytest.raises(SyndrInvalidRequest):
            await private.call(method, params)
    assert (await private.call("private/get_order_history_by_kind", {"kind": "any", **history})).result
    # Nothing above touched the order; with everything given, edit and cancel work (an edit's price is optional).
    price_kept = account.edit(placed, "0.03", str(placed.price))
    edited = models.parse_order((await private.call(
        "private/edit", {k: v for k, v in price_kept.items() if k != "price"})).result["result"])
    assert (edited.amount, edited.price) == (Decimal("0.03"), placed.price)
    cancelled = (await private.call("private/cancel", {"instrument_name": "ETH-PERP",
                                                       "order_id": placed.order_id})).result
    assert cancelled["order_state"] == "cancelled"
    # cancel_all answers the document's acknowledgement (its example: 1), also with nothing left to cancel.
    assert (await private.call("private/cancel_all", {})).result == 1


async def test_a_request_without_an_id_is_still_answered(sim: Simulator) -> None:
    """The document: the API "always responds with a JSON object" (the id is echoed when there is one)."""
    request = {"jsonrpc": "2.0", "method": "public/get_instrument", "params": {"instrument_name": "ETH-PERP"}}
    async with aiohttp.ClientSession() as session:
        response = await session.post(sim.http_url, json=request)
        over_http = json.loads(await response.text())
        async with session.ws_connect(sim.ws_url) as ws:
            await ws.send_str(json.dumps(request))
            over_ws = json.loads((await ws.receive(timeout=5)).data)
    for answer in (over_http, over_ws):
        assert answer["id"] is None and answer["result"]["name"] == "ETH-PERP"


async def test_book_channels_are_depth_15_only(sim: Simulator) -> None:
    """The document names book.{instrument}.15.raw and .15.{interval}; another depth is refused, not
    acknowledged and then never published."""
    async with aiohttp.ClientSession() as session, session.ws_connect(sim.ws_url) as ws:
        for i, channel in enumerate(["book.ETH-PERP.10.raw", "book.ETH-PERP.1.100ms", "book.ETH-PERP.15.raw"]):
            await ws.send_str(json.dumps({"jsonrpc": "2.0", "id": i, "method": "public/subscribe",
                                          "params": {"channels": [channel]}}))
            while True:
                answer = json.loads((await ws.receive(timeout=5)).data)
                if answer.get("id") == i:
                    break
            if channel.endswith(".15.raw"):
                assert answer["result"] == [channel]
            else:
                assert answer["error"]["code"] == ErrorCode.INVALID_PARAMS


async def test_oversized_http_body_is_an_error_not_a_crash(sim: Simulator, public: SyndrHttpClient) -> None:
    async with aiohttp.ClientSession() as session:
        response = await session.post(sim.http_url, data=b"{" + b" " * (sim.config.max_frame_bytes + 10) + b"}")
        answer = json.loads(await response.text())
    assert answer["error"]["code"] == ErrorCode.INVALID_REQUEST
    assert (await public.call("public/get_all_instrument_names")).result


async def test_reordered_frames_break_the_chain_and_are_reported(sim: Simulator) -> None:
    async with SyndrWebSocket(sim.ws_url) as ws:
        await ws.start()
        book = await ws.subscribe(["book.ETH-PERP.15.raw"])
        await next_event(book, on("book."))
        sim.faults.update({"reorder_rate": 1.0})
        try:
            gap = await next_event(book, lambda e: isinstance(e, GapDetected))
        finally:
            sim.faults.update({"reorder_rate": 0.0})
    assert gap.gap.got_previous != gap.gap.expected_previous


async def test_delayed_frames_arrive_late(sim: Simulator, public: SyndrHttpClient) -> None:
    async with SyndrWebSocket(sim.ws_url) as ws:
        await ws.start()
        started = time.monotonic()
        await ws.call("public/get_instrument", {"instrument_name": "ETH-PERP"})
        fast = time.monotonic() - started
        sim.faults.update({"delay_ms": 300})
        try:
            started = time.monotonic()
            await ws.call("public/get_instrument", {"instrument_name": "ETH-PERP"})
            slow = time.monotonic() - started
        finally:
            sim.faults.update({"delay_ms": 0})
    assert slow >= 0.3 > fast


async def test_http_5xx_is_retried_for_public_calls_only(sim: Simulator, account: SyndrAccount,
                                                         public: SyndrHttpClient, private: SyndrHttpClient) -> None:
    price = str(bid_of(await best(public)) - 100)
    before = len(sim.requests)
    sim.faults.update({"http_5xx_next": 1})
    with pytest.raises(SyndrTransportError):  # an order is never re-sent blindly
        await private.call("private/buy", account.order("ETH-PERP", "buy", "0.01", price))
    assert len(sim.requests) == before  # the 503 came before anything executed
    sim.faults.update({"http_5xx_next": 2})
    result = await public.call("public/get_instrument", {"instrument_name": "ETH-PERP"})  # third attempt
    assert result.result["name"] == "ETH-PERP" and sim.faults.http_5xx_next == 0



async def test_http_5xx_can_target_one_method(sim: Simulator, account: SyndrAccount, public: SyndrHttpClient,
                                              private: SyndrHttpClient) -> None:
    price = str(bid_of(await best(public)) - 100)
    sim.faults.update({"http_5xx_next": 1, "http_5xx_method": "private/buy"})
    await public.call("public/get_instrument", {"instrument_name": "ETH-PERP"})  # another method passes
    assert sim.faults.http_5xx_next == 1
    before = len(sim.requests)
    with pytest.raises(SyndrTransportError):
        await private.call("private/buy", account.order("ETH-PERP", "buy", "0.01", price))
    assert len(sim.requests) == before and sim.faults.http_5xx_next == 0  # refused before it executed
    with pytest.raises(ValueError, match="http_5xx_method"):
        sim.faults.update({"http_5xx_method": 3})

async def test_bursts_reach_the_account_that_subscribed(sim: Simulator, account: SyndrAccount) -> None:
    async with SyndrWebSocket(sim.ws_url, credentials=account.credentials) as ws, aiohttp.ClientSession() as admin:
        await ws.start()
        bursts = await ws.subscribe(["user.bursts.ALL"])
        response = await admin.post(f"{sim.admin_url}/bursts", json={"account": account.address,
                                                                     "instrument_name": "ETH-PERP"})
        assert response.status == 200
        burst = models.parse_burst((await next_event(bursts, on("user.bursts"))).data)
    assert burst.instrument_name == "ETH-PERP" and burst.tx_hash.startswith("0x")
