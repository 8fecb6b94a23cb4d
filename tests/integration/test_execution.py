"""ExecutionService end to end: a real simulator, OpenBao, signer, reference data and journal; no mocks."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest
from google.protobuf.duration_pb2 import Duration
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tests.support.execution import ExecutionStack, resting_bid, running_execution
from tests.support.postgres import fresh_database
from tests.support.refdata import RestartableRefdata, database
from tests.support.waiting import until

from portico.common.v1 import side_pb2
from portico.execution.model import FINAL_STATES, OrderState
from portico.execution.v1 import execution_service_pb2 as pb
from portico.execution.v1 import order_pb2
from portico.execution.validation import Instruments
from portico.runtime.client import open_channel
from portico.runtime.errors import error_info
from portico.runtime.lifecycle import cancel_and_wait
from portico.sim.server import SimConfig, Simulator
from portico.venues.syndr.constants import InstrumentKind
from portico.venues.syndr.naming import expiry_ms, instrument_name

SYMBOL = "ETH-PERP"
ORDER_METHODS = ("private/buy", "private/sell")


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimConfig(port=0, seed=11, book_changes_per_second=50,
                                   market_maker_instruments=(SYMBOL,), rate_limit_capacity=100_000,
                                   rate_limit_refill_per_s=100_000)) as simulator:
        yield simulator


def order_calls(sim: Simulator) -> list[Any]:
    return [r for r in sim.requests if r.method in ORDER_METHODS]


def best(sim: Simulator) -> tuple[Decimal, Decimal]:
    book = sim.engine.book(SYMBOL, 1)
    return book.bids[0][0], book.asks[0][0]


def place_request(stack: ExecutionStack, client_order_id: str, *, side: side_pb2.Side.ValueType = side_pb2.SIDE_BUY,
                  price: str | None = None, amount: str = "0.1", **fields: Any) -> pb.PlaceOrderRequest:
    request = pb.PlaceOrderRequest(venue="syndr", account=stack.account.address, symbol=SYMBOL, side=side,
                                   type=order_pb2.ORDER_TYPE_LIMIT, amount=amount, client_order_id=client_order_id,
                                   **fields)
    if price is not None:
        request.price = price
    return request


async def resync(stack: ExecutionStack) -> None:
    from portico.refdata.v1 import reference_data_service_pb2 as refdata_pb
    from portico.refdata.v1 import reference_data_service_pb2_grpc as refdata_grpc
    from portico.runtime.client import bearer

    async with open_channel(stack.refdata_target) as channel:
        await refdata_grpc.ReferenceDataServiceStub(channel).SyncInstruments(
            refdata_pb.SyncInstrumentsRequest(venue="syndr"), metadata=bearer(stack.tokens["admin"]))


async def test_place_partial_fill_amend_cancel_with_streams(stack: ExecutionStack) -> None:
    sim = stack.sim
    async with running_execution(stack) as running, open_channel(running.target) as channel:
        stub = running.stub(channel)
        account = stack.account.address
        updates: list[pb.OrderUpdate] = []
        fills: list[pb.FillUpdate] = []

        async def follow_orders() -> None:
            async for message in stub.StreamOrderUpdates(pb.StreamOrderUpdatesRequest(venue="syndr", account=account),
                                                         metadata=running.metadata("read")):
                updates.extend(message.updates)

        async def follow_fills() -> None:
            async for message in stub.StreamFills(pb.StreamFillsRequest(venue="syndr", account=account),
                                                  metadata=running.metadata("read")):
                fills.extend(message.updates)

        streams = [asyncio.create_task(follow_orders()), asyncio.create_task(follow_fills())]
        await asyncio.sleep(0.3)

        # A resting bid: OPEN, signed by the signing key held in Vault, verified by the venue.
        rest = await stub.PlaceOrder(place_request(stack, "rest-1", price=resting_bid(sim)),
                                     metadata=running.metadata())
        assert rest.order.state == order_pb2.ORDER_STATE_OPEN
        assert rest.order.order_id and rest.order.client_order_id == "rest-1"
        assert 0 < rest.order.venue_timing.us_in <= rest.order.venue_timing.us_out
        assert rest.order.signer_address.lower() == stack.account.signing_key.address.lower()
        venue_order = sim.engine.order(account, rest.order.order_id).to_wire()
        assert venue_order["order_signer"].lower() == stack.account.signing_key.address.lower()
        assert str(venue_order["salt"]) == rest.order.salt

        # Amend: re-signed, same order id, new price at the venue.
        tick = sim.engine.instrument(SYMBOL).tick_size
        new_price = Decimal(rest.order.price) - tick * 3
        amended = await stub.AmendOrder(pb.AmendOrderRequest(venue="syndr", account=account, client_order_id="rest-1",
                                                             price=str(new_price)), metadata=running.metadata())
        assert amended.order.order_id == rest.order.order_id
        assert Decimal(amended.order.price) == new_price
        assert Decimal(str(sim.engine.order(account, rest.order.order_id).to_wire()["price"])) == new_price

        # Cancel by order id.
        cancelled = await stub.CancelOrder(pb.CancelOrderRequest(venue="syndr", account=account,
                                                                 order_id=rest.order.order_id),
                                           metadata=running.metadata())
        assert cancelled.order.state == order_pb2.ORDER_STATE_CANCELLED

        # A bid through the best ask for more than the market maker shows: partly filled, the rest resting.
        book = sim.engine.book(SYMBOL, 1)
        ask_price, ask_amount = book.asks[0]
        amount = ask_amount + sim.engine.instrument(SYMBOL).contract_size * 5
        taker = await stub.PlaceOrder(place_request(stack, "take-1", price=str(ask_price), amount=str(amount)),
                                      metadata=running.metadata())
        assert Decimal(taker.order.filled_amount) > 0
        assert taker.order.state in (order_pb2.ORDER_STATE_OPEN, order_pb2.ORDER_STATE_FILLED)

        await until(lambda: any(f.fill.order_id == taker.order.order_id for f in fills))
        await until(lambda: any(u.order.order_id == rest.order.order_id
                                and u.order.state == order_pb2.ORDER_STATE_CANCELLED for u in updates))
        assert [u.sequence for u in updates] == list(range(updates[0].sequence, updates[0].sequence + len(updates)))
        assert [f.sequence for f in fills] == list(range(fills[0].sequence, fills[0].sequence + len(fills)))
        def ours() -> list[pb.FillUpdate]:
            return [f for f in fills if f.fill.order_id == taker.order.order_id]

        def streamed_is_venue_filled() -> bool:
            # The rest of the order rests, so the market maker may fill more of it meanwhile: read both again.
            venue_filled = Decimal(str(sim.engine.order(account, taker.order.order_id).to_wire()["filled_amount"]))
            return sum(Decimal(f.fill.amount) for f in ours()) == venue_filled

        await until(streamed_is_venue_filled)
        assert ours()[0].fill.client_order_id in ("", "take-1")
        assert ours()[0].fill.liquidity == order_pb2.LIQUIDITY_TAKER

        listed = await stub.ListFills(pb.ListFillsRequest(venue="syndr", account=account,
                                                          order_id=taker.order.order_id),
                                      metadata=running.metadata("read"))
        assert {f.fill_id for f in listed.fills} >= {f.fill.fill_id for f in ours()}
        assert all(f.client_order_id == "take-1" for f in listed.fills)

        history = await stub.ListOrderHistory(pb.ListOrderHistoryRequest(venue="syndr", account=account),
                                              metadata=running.metadata("read"))
        assert {o.client_order_id for o in history.orders} >= {"rest-1", "take-1"}

        got = await stub.GetOrder(pb.GetOrderRequest(venue="syndr", account=account, client_order_id="rest-1"),
                                  metadata=running.metadata("read"))
        assert got.order.state == order_pb2.ORDER_STATE_CANCELLED
        for task in streams:
            task.cancel()
        entry = await running.app.journal.get("syndr", account, "rest-1")
        assert entry is not None and entry.state == OrderState.CANCELLED


async def test_same_client_order_id_places_once(stack: ExecutionStack) -> None:
    sim = stack.sim
    async with running_execution(stack) as running, open_channel(running.target) as channel:
        stub = running.stub(channel)
        request = place_request(stack, "dup-1", price=resting_bid(sim))
        first, second = await asyncio.gather(stub.PlaceOrder(request, metadata=running.metadata()),
                                             stub.PlaceOrder(request, metadata=running.metadata()))
        third = await stub.PlaceOrder(request, metadata=running.metadata())
        assert first.order.order_id == second.order.order_id == third.order.order_id
        assert len(order_calls(sim)) == 1

        other = place_request(stack, "dup-1", price=resting_bid(sim), amount="0.2")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.PlaceOrder(other, metadata=running.metadata())
        assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
        assert len(order_calls(sim)) == 1


def wire_number(params: dict[str, Any], name: str) -> Decimal:
    """A parameter as the venue read it, which must be a JSON number (the simulator reads those exactly)."""
    value = params[name]
    assert isinstance(value, int | Decimal) and not isinstance(value, bool), f"{name} sent as {value!r}"
    return Decimal(value)


async def test_amounts_and_prices_go_to_the_venue_as_exact_json_numbers(stack: ExecutionStack) -> None:
    """The document types them as numbers (private/edit's table: `amount true number`, `price false number`; the
    buy and sell examples send `"price": 3500, "amount": 1`): a string would do only at a lenient venue."""
    sim = stack.sim
    async with running_execution(stack) as running, open_channel(running.target) as channel:
        stub = running.stub(channel)
        price = resting_bid(sim)
        sim.requests.clear()
        placed = await stub.PlaceOrder(place_request(stack, "numbers-1", price=price, amount="0.123"),
                                       metadata=running.metadata())
        [buy] = order_calls(sim)
        assert (wire_number(buy.params, "amount"), wire_number(buy.params, "price")) == (Decimal("0.123"),
                                                                                        Decimal(price))
        await stub.AmendOrder(pb.AmendOrderRequest(venue="syndr", account=stack.account.address,
                                                   order_id=placed.order.order_id, amount="0.2"),
                              metadata=running.metadata())
        [edit] = [r for r in sim.requests if r.method == "private/edit"]
        assert wire_number(edit.params, "amount") == Decimal("0.2")
        assert wire_number(edit.params, "price") == Decimal(price)

        # A resend sends the journaled bytes, numbers and all (tests/unit: exactly, never through a float).
        sim.faults.update({"http_5xx_next": 1, "http_5xx_method": "private/buy"})
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.PlaceOrder(place_request(stack, "numbers-2", price=price, amount="0.3"),
                                  metadata=running.metadata())
        await stub.PlaceOrder(place_request(stack, "numbers-2", price=price, amount="0.3"), metadata=running.metadata())
        [resent] = [r for r in order_calls(sim) if r.params.get("label") == "numbers-2"]
        assert wire_number(resent.params, "amount") == Decimal("0.3")


async def test_a_whole_number_amount_past_64_bits_reaches_the_venue_as_that_number(stack: ExecutionStack) -> None:
    """The journaled request is what is sent, read back with its numbers exact. With a lot of 1,000 contracts an
    amount may reach 10^21; one past 64 bits must not fail there (orjson writes no such integer), which left the
    order PENDING with nothing sent, its instrument blocked for the account until the signature expired."""
    sim = stack.sim
    sim.engine.update_instrument(SYMBOL, contract_size=Decimal(1000), min_trade_amount=Decimal(1000))
    await resync(stack)
    huge = "20000000000000000000"  # over 2**64, a whole number of lots
    async with running_execution(stack) as running, open_channel(running.target) as channel:
        sim.requests.clear()
        with contextlib.suppress(grpc.aio.AioRpcError):  # the venue may well refuse so large an order
            await running.stub(channel).PlaceOrder(place_request(stack, "huge-1", price=resting_bid(sim),
                                                                 amount=huge), metadata=running.metadata())
        [sent] = order_calls(sim)
        assert wire_number(sent.params, "amount") == Decimal(huge)
        entry = await running.app.journal.get("syndr", stack.account.address, "huge-1")
        assert entry is not None and not entry.unresolved, entry


async def test_unknown_outcome_is_reconciled_and_never_doubled(stack: ExecutionStack) -> None:
    sim = stack.sim
    async with running_execution(stack) as running, open_channel(running.target) as channel:
        stub = running.stub(channel)
        price = resting_bid(sim)
        await stub.PlaceOrder(place_request(stack, "warm-up", price=price), metadata=running.metadata())
        sim.requests.clear()
        sim.faults.update({"drop_response_rate": 1.0})
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.PlaceOrder(place_request(stack, "lost-1", price=price), metadata=running.metadata())
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        info = error_info(caught.value)
        assert info is not None and info.reason == "ORDER_OUTCOME_UNKNOWN"
        sim.faults.reset()
        # The order reached the venue; the retry finds it by salt instead of placing another.
        again = await stub.PlaceOrder(place_request(stack, "lost-1", price=price), metadata=running.metadata())
        assert again.order.state == order_pb2.ORDER_STATE_OPEN
        assert len(order_calls(sim)) == 1
        assert [o.order_id for o in sim.engine.open_orders(stack.account.address)
                if o.label == "lost-1"] == [again.order.order_id]

        # A call that never reached the matching core (HTTP 503): the same bytes are sent again, once.
        # (only private/buy: the account feed may be catching up over HTTP after the dropped WebSocket answers)
        sim.faults.update({"http_5xx_next": 1, "http_5xx_method": "private/buy"})
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.PlaceOrder(place_request(stack, "lost-2", price=price), metadata=running.metadata())
        entry = await running.app.journal.get("syndr", stack.account.address, "lost-2")
        assert entry is not None
        retried = await stub.PlaceOrder(place_request(stack, "lost-2", price=price), metadata=running.metadata())
        # The 503 was answered before the venue logged or executed anything; the retry sent the journaled bytes.
        calls = [r for r in order_calls(sim) if r.params.get("label") == "lost-2"]
        assert len(calls) == 1
        assert calls[0].params["signature"] == orjson.loads(entry.request)["signature"]
        assert retried.order.salt == str(entry.salt)
        final = await running.app.journal.get("syndr", stack.account.address, "lost-2")
        assert final is not None and final.attempts == 2 and final.state == OrderState.OPEN
        assert len(sim.engine.open_orders(stack.account.address)) == 3


@pytest.fixture(params=["sqlite", "postgres"])
def journal_env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The journal on a fresh SQLite file or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield {"PORTICO_EXECUTION_JOURNAL_DB": str(tmp_path / "journal-param.sqlite3")}
        return
    with fresh_database("portico_exec") as dsn:
        yield {"PORTICO_EXECUTION_JOURNAL_DSN": dsn}


async def health(target: str) -> int:
    async with open_channel(target) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="portico.execution.v1.ExecutionService"), timeout=2)
        return int(reply.status)


async def test_restart_reconciles_before_serving(stack: ExecutionStack, journal_env: dict[str, str]) -> None:
    sim = stack.sim
    async with running_execution(stack, journal_env) as running, open_channel(running.target) as channel:
        stub = running.stub(channel)
        await stub.PlaceOrder(place_request(stack, "warm-up", price=resting_bid(sim)), metadata=running.metadata())
        sim.requests.clear()
        # Every answer lost, and the WebSockets silent too: otherwise the private stream's echo of crash-0
        # resolves it (correctly) before crash-1 arrives, and nothing would be left unknown to test.
        sim.faults.update({"drop_response_rate": 1.0, "silent": True})
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.PlaceOrder(place_request(stack, "crash-0", price=resting_bid(sim)), metadata=running.metadata())
        # While crash-0's outcome is unknown, nothing new is sent on that instrument and account.
        with pytest.raises(grpc.aio.AioRpcError) as blocked:
            await stub.PlaceOrder(place_request(stack, "crash-1", price=resting_bid(sim)), metadata=running.metadata())
        info = error_info(blocked.value)
        assert blocked.value.code() == grpc.StatusCode.UNAVAILABLE
        assert info is not None and info.reason == "ORDER_OUTCOME_UNKNOWN"
        assert info.metadata["client_order_id"] == "crash-0"
        assert [r.params["label"] for r in order_calls(sim)] == ["crash-0"]
        await running.app.aclose(grace_s=0)  # "crash" with crash-0 journaled as UNKNOWN
    # Restarted while the venue still loses every answer: NOT_SERVING, since crash-0 cannot be resolved.
    async with running_execution(stack, journal_env, wait_serving=False) as restarted:
        await asyncio.sleep(0.6)
        assert not restarted.app.reconciled.is_set()
        assert await health(restarted.target) == health_pb2.HealthCheckResponse.NOT_SERVING
        sim.faults.reset()
        await asyncio.wait_for(restarted.app.reconciled.wait(), 10)
        assert await health(restarted.target) == health_pb2.HealthCheckResponse.SERVING
        entry = await restarted.app.journal.get("syndr", stack.account.address, "crash-0")
        assert entry is not None and entry.state == OrderState.OPEN
        assert await restarted.app.journal.get("syndr", stack.account.address, "crash-1") is None
    assert [r.params["label"] for r in order_calls(sim)] == ["crash-0"]  # found by salt, not sent again


@pytest.mark.parametrize(("fields", "field", "reason"), [
    ({"symbol": "NOPE-PERP"}, "symbol", "INSTRUMENT_NOT_FOUND"),
    ({"price": "TICK+"}, "price", "PRICE_NOT_ON_TICK"),
    ({"amount": "INC+"}, "amount", "AMOUNT_NOT_ON_INCREMENT"),
    ({"amount": "MIN-"}, "amount", "AMOUNT_TOO_SMALL"),
    ({"type": order_pb2.ORDER_TYPE_MARKET, "post_only": True, "price": ""}, "post_only", "POST_ONLY_MARKET"),
    ({"time_in_force": order_pb2.TIME_IN_FORCE_IMMEDIATE_OR_CANCEL, "post_only": True}, "post_only",
     "POST_ONLY_NOT_GTC"),
    ({"time_in_force": order_pb2.TIME_IN_FORCE_FILL_OR_KILL}, "time_in_force", "TIME_IN_FORCE_NOT_ACCEPTED"),
    ({"price": ""}, "price", "INVALID_ARGUMENT"),
    ({"type": order_pb2.ORDER_TYPE_MARKET}, "price", "INVALID_ARGUMENT"),
    ({"side": side_pb2.SIDE_UNSPECIFIED}, "side", "INVALID_ARGUMENT"),
    ({"type": order_pb2.ORDER_TYPE_UNSPECIFIED}, "type", "INVALID_ARGUMENT"),
    ({"amount": "-1"}, "amount", "INVALID_ARGUMENT"),
    ({"amount": "1e3"}, "amount", "INVALID_ARGUMENT"),
    ({"account": "0x123"}, "account", "INVALID_ARGUMENT"),
    ({"venue": "nowhere"}, "venue", "INVALID_ARGUMENT"),
    ({"client_order_id": ""}, "client_order_id", "INVALID_ARGUMENT"),
    ({"client_order_id": "has space"}, "client_order_id", "INVALID_ARGUMENT"),
])
async def test_each_validation_rule_answers_without_calling_the_venue(
        stack: ExecutionStack, fields: dict[str, Any], field: str, reason: str) -> None:
    sim = stack.sim
    inst = sim.engine.instrument(SYMBOL)
    price = Decimal(resting_bid(sim))
    values = dict(fields)
    if values.get("price") == "TICK+":
        values["price"] = str(price + inst.tick_size / 2)
    if values.get("amount") == "INC+":
        values["amount"] = str(inst.min_trade_amount + inst.contract_size / 2)
    if values.get("amount") == "MIN-":
        # Raise the minimum above the increment at the venue, and let reference data see it.
        inst = sim.engine.update_instrument(SYMBOL, min_trade_amount=inst.contract_size * 10)
        await resync(stack)
        values["amount"] = str(inst.min_trade_amount - inst.contract_size)
    request = place_request(stack, "bad-1", price=str(price), amount=str(inst.min_trade_amount))
    for key, value in values.items():
        if key == "price" and value == "":
            request.ClearField("price")
        else:
            setattr(request, key, value)
    async with running_execution(stack) as running, open_channel(running.target) as channel:
        sim.requests.clear()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await running.stub(channel).PlaceOrder(request, metadata=running.metadata())
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
        info = error_info(caught.value)
        assert info is not None and info.reason == reason and info.metadata["field"] == field
        assert order_calls(sim) == []
        assert [r.method for r in sim.requests if r.method.startswith("private/")] == []


async def test_inactive_instrument_is_refused_without_calling_the_venue(stack: ExecutionStack) -> None:
    sim = stack.sim
    async with running_execution(stack) as running, open_channel(running.target) as channel:
        sim.engine.delist("BTC-PERP")
        await resync(stack)
        request = place_request(stack, "inactive-1", price="100")
        request.symbol = "BTC-PERP"
        sim.requests.clear()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await running.stub(channel).PlaceOrder(request, metadata=running.metadata())
        info = error_info(caught.value)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert info is not None and info.reason == "INSTRUMENT_INACTIVE"
        assert order_calls(sim) == []


async def test_an_instrument_past_its_expiry_is_refused_without_calling_the_venue(stack: ExecutionStack) -> None:
    """Still listed and active at the venue and in reference data (a sync lags the delisting), but expired."""
    sim = stack.sim
    future = next(i for i in sim.engine.instruments() if i.kind is InstrumentKind.FUTURE)
    day = datetime.now(UTC).date() - timedelta(days=2)
    name = instrument_name(future.base_currency, InstrumentKind.FUTURE, day)
    sim.engine.add_instrument(replace(future, id=9_001, name=name, expiry_ms=expiry_ms(day)))
    await resync(stack)
    async with running_execution(stack) as running, open_channel(running.target) as channel:
        request = place_request(stack, "expired-1", price=str(future.tick_size * 1000),
                                amount=str(future.min_trade_amount))
        request.symbol = name
        sim.requests.clear()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await running.stub(channel).PlaceOrder(request, metadata=running.metadata())
        info = error_info(caught.value)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
        assert info is not None and info.reason == "INSTRUMENT_EXPIRED" and info.metadata["field"] == "symbol"
        assert info.metadata["expiry"] == f"{day.isoformat()}T08:00:00Z"
        assert order_calls(sim) == []


async def test_a_tick_size_change_applies_to_the_very_next_order(stack: ExecutionStack) -> None:
    """Reference data's event drops the cached rules at once; the cache's age alone (an hour here) would not."""
    sim = stack.sim
    async with running_execution(stack, {"PORTICO_EXECUTION_INSTRUMENT_CACHE_SECONDS": "3600"}) as running, \
            open_channel(running.target) as channel:
        stub, instruments = running.stub(channel), running.app.orders.instruments
        await until(lambda: instruments.watches_established == 1)
        tick = sim.engine.instrument(SYMBOL).tick_size
        price = Decimal(resting_bid(sim))
        if (price / (tick * 2)) % 1 == 0:
            price -= tick  # on the tick of now, off the doubled one
        first = await stub.PlaceOrder(place_request(stack, "tick-1", price=str(price)), metadata=running.metadata())
        assert first.order.state == order_pb2.ORDER_STATE_OPEN  # and the rules are cached
        sim.engine.update_instrument(SYMBOL, tick_size=tick * 2)
        await resync(stack)
        await until(lambda: instruments.changes_applied >= 1)
        sim.requests.clear()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.PlaceOrder(place_request(stack, "tick-2", price=str(price)), metadata=running.metadata())
        info = error_info(caught.value)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert info is not None and info.reason == "PRICE_NOT_ON_TICK"
        assert order_calls(sim) == []
        on_the_new_tick = await stub.PlaceOrder(place_request(stack, "tick-3", price=str(price - tick)),
                                                metadata=running.metadata())
        assert on_the_new_tick.order.state == order_pb2.ORDER_STATE_OPEN


async def test_rules_changed_while_the_watch_was_down_are_reloaded_on_reconnect(sim: Simulator,
                                                                                tmp_path: Path) -> None:
    """No event tells of a change published while no watch is registered: the reconnect drops the cache."""
    with database("sqlite", tmp_path) as db_env:
        refdata = RestartableRefdata(sim, db_env)
        await refdata.start()
        try:
            await refdata.sync()
            async with open_channel(refdata.target) as channel:
                instruments = Instruments(channel, refdata.tokens["read"], cache_s=3600)
                watch = asyncio.create_task(instruments.follow("syndr"))
                try:
                    await until(lambda: instruments.watches_established == 1)
                    before = await instruments.get("syndr", SYMBOL)
                    await refdata.stop()  # the watch breaks
                    sim.engine.update_instrument(SYMBOL, tick_size=before.price_increment * 2)
                    await refdata.start(sync_on_start=True)  # synced and published before anyone can watch
                    await until(lambda: instruments.watches_established == 2, timeout_s=30)
                    after = await instruments.get("syndr", SYMBOL)
                finally:
                    await cancel_and_wait(watch)
                    await instruments.aclose()
        finally:
            await refdata.stop()
    assert after.price_increment == before.price_increment * 2
    assert instruments.changes_applied == 0  # the reconnect's catch-up did it, not an event


async def test_venue_rejection_maps_to_status_with_venue_code(stack: ExecutionStack) -> None:
    sim = stack.sim
    async with running_execution(stack) as running, open_channel(running.target) as channel:
        stub = running.stub(channel)
        bid, ask = best(sim)
        # Reduce-only on the side that would grow the position (or open one): the venue refuses it.
        size = sum((Decimal(str(p["size"])) for p in sim.engine.positions(stack.account.address)
                    if p["instrument_name"] == SYMBOL), Decimal(0))
        side, price = (side_pb2.SIDE_BUY, bid) if size >= 0 else (side_pb2.SIDE_SELL, ask)
        request = place_request(stack, "ro-1", side=side, price=str(price), reduce_only=True)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.PlaceOrder(request, metadata=running.metadata())
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        info = error_info(caught.value)
        assert info is not None and info.metadata["venue_code"] == "11055"
        # The same id again: the same answer, and no second venue call.
        calls = len(order_calls(sim))
        with pytest.raises(grpc.aio.AioRpcError) as again:
            await stub.PlaceOrder(request, metadata=running.metadata())
        assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert len(order_calls(sim)) == calls
        entry = await running.app.journal.get("syndr", stack.account.address, "ro-1")
        assert entry is not None and entry.state == OrderState.REJECTED and entry.reject_code == 11055


async def test_a_post_only_order_that_would_take_comes_back_cancelled(stack: ExecutionStack) -> None:
    """The venue places it and cancels it (the document: "put in order book before execution or ... cancelled"):
    an order, cancelled and unfilled, journaled so; not an error."""
    sim = stack.sim
    async with running_execution(stack) as running, open_channel(running.target) as channel:
        _, ask = best(sim)
        # Twice the ask (on the tick, as the ask is): it takes however far the maker re-quotes first, where ten ticks
        # through once fell short on a host stalled for seconds. The document's price bands are informational.
        through = ask * 2
        placed = await running.stub(channel).PlaceOrder(place_request(stack, "po-1", price=str(through),
                                                                      post_only=True), metadata=running.metadata())
        assert placed.order.state == order_pb2.ORDER_STATE_CANCELLED
        assert Decimal(placed.order.filled_amount) == 0
        entry = await running.app.journal.get("syndr", stack.account.address, "po-1")
        assert entry is not None and entry.state == OrderState.CANCELLED and entry.order_id == placed.order.order_id


async def test_scopes(stack: ExecutionStack) -> None:
    async with running_execution(stack) as running, open_channel(running.target) as channel:
        stub = running.stub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.PlaceOrder(place_request(stack, "scope-1", price=resting_bid(stack.sim)),
                                  metadata=running.metadata("read"))
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        listed = await stub.ListOpenOrders(pb.ListOpenOrdersRequest(venue="syndr", account=stack.account.address),
                                           metadata=running.metadata("read"))
        assert list(listed.orders) == []
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await stub.ListOpenOrders(pb.ListOpenOrdersRequest(venue="syndr", account="0x" + "ab" * 20),
                                      metadata=running.metadata("read"))
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


async def test_deadman_cancels_everything_unless_rearmed(stack: ExecutionStack) -> None:
    sim = stack.sim
    account = stack.account.address
    async with running_execution(stack) as running, open_channel(running.target) as channel:
        stub = running.stub(channel)
        for i in range(3):
            await stub.PlaceOrder(place_request(stack, f"dm-{i}", price=resting_bid(sim)), metadata=running.metadata())
        # Deadlines 3 s on, re-armed half-way, looked at half-way between the two deadlines: 0.75 s or more of
        # slack at every step (it was 0.2 s to 0.4 s, which a stall on a busy machine could use up).
        armed = await stub.ArmDeadman(pb.ArmDeadmanRequest(venue="syndr", account=account,
                                                           ttl=Duration(seconds=3)), metadata=running.metadata())
        assert armed.HasField("fire_time")
        await asyncio.sleep(1.5)
        await stub.ArmDeadman(pb.ArmDeadmanRequest(venue="syndr", account=account, ttl=Duration(seconds=3)),
                              metadata=running.metadata())
        await asyncio.sleep(2.25)
        assert len(sim.engine.open_orders(account)) == 3  # re-armed in time: the first deadline has passed
        await until(lambda: len(sim.engine.open_orders(account)) == 0, 10)
        # Disarmed: nothing fires.
        await stub.PlaceOrder(place_request(stack, "dm-after", price=resting_bid(sim)), metadata=running.metadata())
        await stub.ArmDeadman(pb.ArmDeadmanRequest(venue="syndr", account=account, ttl=Duration(seconds=1)),
                              metadata=running.metadata())
        disarmed = await stub.ArmDeadman(pb.ArmDeadmanRequest(venue="syndr", account=account, ttl=Duration()),
                                         metadata=running.metadata())
        assert not disarmed.HasField("fire_time")
        await asyncio.sleep(1.3)
        assert len(sim.engine.open_orders(account)) == 1
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ArmDeadman(pb.ArmDeadmanRequest(venue="syndr", account=account, ttl=Duration(seconds=-1)),
                                  metadata=running.metadata())
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_cancel_all_journals_final_states(stack: ExecutionStack) -> None:
    sim = stack.sim
    async with running_execution(stack) as running, open_channel(running.target) as channel:
        stub = running.stub(channel)
        for i in range(4):
            await stub.PlaceOrder(place_request(stack, f"ca-{i}", price=resting_bid(sim)), metadata=running.metadata())
        reply = await stub.CancelAllOrders(pb.CancelAllOrdersRequest(venue="syndr", account=stack.account.address,
                                                                     symbol=SYMBOL), metadata=running.metadata())
        assert reply.cancelled_count == 4
        assert sim.engine.open_orders(stack.account.address) == []
        entries = await running.app.journal.entries("syndr", stack.account.address)
        assert len(entries) == 4 and all(e.state in FINAL_STATES for e in entries)
