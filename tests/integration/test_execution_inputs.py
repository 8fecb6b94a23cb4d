"""ExecutionService at the edges of its input: absurd prices, amounts and ttls are INVALID_ARGUMENT naming the field
(never INTERNAL, never a venue call), and ListOrderHistory pages through everything at any page size, the largest
included. A real simulator, OpenBao, signer, reference data and journal; no mocks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from tests.support.execution import ExecutionStack, running_execution

from portico.common.v1 import side_pb2
from portico.execution.v1 import execution_service_pb2 as pb
from portico.execution.v1 import order_pb2
from portico.runtime.client import open_channel
from portico.runtime.errors import error_info
from portico.runtime.paging import MAX_PAGE
from portico.sim.server import SimConfig, Simulator

SYMBOL = "ETH-PERP"
HUGE_AMOUNT = "1" + "0" * 30
HUGE_PRICE = "1" + "0" * 40


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimConfig(port=0, seed=11, book_changes_per_second=5, market_maker_instruments=(SYMBOL,),
                                   rate_limit_capacity=100_000, rate_limit_refill_per_s=100_000)) as simulator:
        yield simulator


def far_bid(sim: Simulator, fraction: str = "0.8") -> Decimal:
    """A bid price on the tick well below the market."""
    bid = sim.engine.book(SYMBOL, 1).bids[0][0]
    tick = sim.engine.instrument(SYMBOL).tick_size
    return (bid * Decimal(fraction)) // tick * tick


def place_request(stack: ExecutionStack, client_order_id: str, price: str, amount: str) -> pb.PlaceOrderRequest:
    return pb.PlaceOrderRequest(venue="syndr", account=stack.account.address, symbol=SYMBOL, side=side_pb2.SIDE_BUY,
                                type=order_pb2.ORDER_TYPE_LIMIT, price=price, amount=amount,
                                client_order_id=client_order_id)


def private_calls(sim: Simulator) -> list[str]:
    return [r.method for r in sim.requests if r.method.startswith("private/")]


def assert_invalid(error: grpc.aio.AioRpcError, field: str, reason: str | None = None) -> None:
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
    info = error_info(error)
    assert info is not None and info.metadata["field"] == field, info
    if reason is not None:
        assert info.reason == reason, info


@pytest.mark.parametrize(("price", "amount", "field", "reason"), [
    ("FAR", HUGE_AMOUNT, "amount", "AMOUNT_TOO_LARGE"),
    (HUGE_PRICE, "0.1", "price", "PRICE_TOO_LARGE"),
    (HUGE_PRICE, HUGE_AMOUNT, "price", "PRICE_TOO_LARGE"),
])
async def test_a_huge_price_or_amount_is_invalid_argument_without_calling_the_venue(
        stack: ExecutionStack, price: str, amount: str, field: str, reason: str) -> None:
    sim = stack.sim
    request = place_request(stack, "huge-1", str(far_bid(sim)) if price == "FAR" else price, amount)
    async with running_execution(stack) as running, open_channel(running.target) as channel:
        sim.requests.clear()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await running.stub(channel).PlaceOrder(request, metadata=running.metadata())
        assert_invalid(caught.value, field, reason)
        assert private_calls(sim) == []
        assert await running.app.journal.get("syndr", stack.account.address, "huge-1") is None


async def test_amending_to_a_huge_price_or_amount_is_invalid_argument_and_never_edits(stack: ExecutionStack) -> None:
    sim = stack.sim
    account = stack.account.address
    async with running_execution(stack) as running, open_channel(running.target) as channel:
        stub = running.stub(channel)
        placed = await stub.PlaceOrder(place_request(stack, "amend-huge", str(far_bid(sim)), "0.1"),
                                       metadata=running.metadata())
        sim.requests.clear()
        for field, change in (("amount", {"amount": HUGE_AMOUNT}), ("price", {"price": HUGE_PRICE}),
                              ("price", {"amount": HUGE_AMOUNT, "price": HUGE_PRICE})):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.AmendOrder(pb.AmendOrderRequest(venue="syndr", account=account,
                                                           order_id=placed.order.order_id, **change),
                                      metadata=running.metadata())
            assert_invalid(caught.value, field, f"{field.upper()}_TOO_LARGE")
        assert "private/edit" not in private_calls(sim)
        [order] = sim.engine.open_orders(account)
        assert (order.price, order.amount) == (Decimal(placed.order.price), Decimal(placed.order.amount))


async def test_arm_deadman_ttl_out_of_range_is_invalid_argument_naming_ttl(stack: ExecutionStack) -> None:
    account = stack.account.address
    bad = {
        "10^15 s (overflows a timedelta)": Duration(seconds=10**15),
        "-10^15 s": Duration(seconds=-10**15),
        "max int64 s": Duration(seconds=2**63 - 1),
        "-1 s": Duration(seconds=-1),
        "-1 ns": Duration(nanos=-1),
        "24 h + 1 s": Duration(seconds=86_401),
        "24 h + 1 ns": Duration(seconds=86_400, nanos=1),
        "0.5 s": Duration(nanos=500_000_000),
    }
    async with running_execution(stack) as running, open_channel(running.target) as channel:
        stub = running.stub(channel)
        for name, ttl in bad.items():
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.ArmDeadman(pb.ArmDeadmanRequest(venue="syndr", account=account, ttl=ttl),
                                      metadata=running.metadata())
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (name, caught.value.details())
            assert_invalid(caught.value, "ttl")
            assert running.app.deadman._timers == {}, name  # nothing armed
        # The ends of the range still work: 24 h arms (fire_time a day away), 1 s arms, zero disarms.
        for seconds in (86_400, 1):
            armed = await stub.ArmDeadman(pb.ArmDeadmanRequest(venue="syndr", account=account,
                                                               ttl=Duration(seconds=seconds)),
                                          metadata=running.metadata())
            assert armed.HasField("fire_time")
            disarmed = await stub.ArmDeadman(pb.ArmDeadmanRequest(venue="syndr", account=account, ttl=Duration()),
                                             metadata=running.metadata())
            assert not disarmed.HasField("fire_time")
            assert running.app.deadman._timers == {}


async def test_order_history_pages_through_everything_at_every_page_size(stack: ExecutionStack) -> None:
    sim = stack.sim
    account = stack.account.address
    inst = sim.engine.instrument(SYMBOL)
    price = far_bid(sim, "0.5")

    def add_history(n: int) -> None:  # IOC far below the market: each ends cancelled, in the account's history
        for _ in range(n):
            sim.engine.place(account, SYMBOL, side="buy", order_type="limit", amount=inst.min_trade_amount,
                             price=price, time_in_force="IOC")

    def venue_history() -> list[str]:
        return [o.order_id for o in sim.engine.order_history(account, count=10**6)]

    async with running_execution(stack) as running, open_channel(running.target) as channel:
        stub = running.stub(channel)

        async def pages(page_size: int, symbol: str | None = None) -> list[list[str]]:
            out, token = [], ""
            while True:
                request = pb.ListOrderHistoryRequest(venue="syndr", account=account, page_size=page_size,
                                                     page_token=token)
                if symbol is not None:
                    request.symbol = symbol
                page = await stub.ListOrderHistory(request, metadata=running.metadata("read"))
                out.append([o.order_id for o in page.orders])
                token = page.next_page_token
                if not token:
                    return out
                assert len(out) < 100, "paging does not end"

        add_history(MAX_PAGE)  # exactly one full page of the largest size: no next page
        assert await pages(MAX_PAGE) == [venue_history()]
        add_history(50)  # now there is more than the largest page
        expected = venue_history()
        assert len(expected) == MAX_PAGE + 50
        for page_size in (MAX_PAGE, MAX_PAGE + 1, MAX_PAGE - 1, 500, 0):  # above the maximum means the maximum
            got = await pages(page_size)
            size = min(page_size or 100, MAX_PAGE)
            assert [len(p) for p in got] == [min(size, len(expected) - i) for i in range(0, len(expected), size)]
            assert [oid for p in got for oid in p] == expected, page_size
        by_symbol = await pages(MAX_PAGE, SYMBOL)
        assert [len(p) for p in by_symbol] == [MAX_PAGE, 50]
        assert [oid for p in by_symbol for oid in p] == expected


async def test_cancelling_an_order_the_journal_does_not_hold_names_its_instrument(stack: ExecutionStack) -> None:
    """`private/cancel` requires `instrument_name` (the document's table): for an order placed elsewhere the
    service finds it among the open orders; an order id the venue has open nowhere is NOT_FOUND, never sent."""
    sim = stack.sim
    account = stack.account.address
    inst = sim.engine.instrument(SYMBOL)
    elsewhere = sim.engine.place(account, SYMBOL, side="buy", order_type="limit", amount=inst.min_trade_amount,
                                 price=far_bid(sim)).to_wire()["order"]
    async with running_execution(stack) as running, open_channel(running.target) as channel:
        stub = running.stub(channel)
        cancelled = await stub.CancelOrder(pb.CancelOrderRequest(venue="syndr", account=account,
                                                                 order_id=elsewhere["order_id"]),
                                           metadata=running.metadata())
        assert cancelled.order.state == order_pb2.ORDER_STATE_CANCELLED
        sent = [r.params for r in sim.requests if r.method == "private/cancel"]
        assert sent == [{"instrument_name": SYMBOL, "order_id": elsewhere["order_id"]}]
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.CancelOrder(pb.CancelOrderRequest(venue="syndr", account=account, order_id="0x" + "ab" * 32),
                                   metadata=running.metadata())
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        assert len([r for r in sim.requests if r.method == "private/cancel"]) == 1
