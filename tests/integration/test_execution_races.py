"""Calls that meet a PlaceOrder still on its way, and venue answers that do not settle an order.

A real simulator, OpenBao, signer, reference data and journal. The simulator holds the first `private/buy`
for a moment before executing it (its `http_hold_*` fault: a slow path to the venue), so another call can
run while that order's entry is PENDING and its bytes are in flight.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from tests.support.execution import (
    ExecutionStack,
    RunningExecution,
    resting_bid,
    rotate_api_key,
    running_execution,
    store_api_key,
)
from tests.support.waiting import until

from portico.common.v1 import side_pb2
from portico.execution.model import JournalEntry, OrderIntent, OrderState
from portico.execution.v1 import execution_service_pb2 as pb
from portico.execution.v1 import order_pb2
from portico.runtime.client import open_channel
from portico.runtime.errors import error_info
from portico.sim.server import SimConfig, Simulator
from portico.venues.syndr.constants import ErrorCode

SYMBOL = "ETH-PERP"
HOLD_MS = 1000
# Long enough for a caller to give up, and the service to see it, while the bytes are held (nothing waits it out).
SECOND_CALLER_HOLD_MS = 3000


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimConfig(port=0, seed=13, market_maker_instruments=(SYMBOL,),
                                   rate_limit_capacity=100_000, rate_limit_refill_per_s=100_000)) as simulator:
        yield simulator


def place(stack: ExecutionStack, client_order_id: str, price: str) -> pb.PlaceOrderRequest:
    return pb.PlaceOrderRequest(venue="syndr", account=stack.account.address, symbol=SYMBOL, side=side_pb2.SIDE_BUY,
                                type=order_pb2.ORDER_TYPE_LIMIT, amount="0.1", price=price,
                                client_order_id=client_order_id)


def buys(sim: Simulator, label: str) -> int:
    return sum(1 for r in sim.requests if r.method == "private/buy" and r.params.get("label") == label)


def hold_next_buy(sim: Simulator, hold_ms: int = HOLD_MS) -> None:
    sim.faults.update({"http_hold_next": 1, "http_hold_ms": hold_ms, "http_hold_method": "private/buy"})


async def until_journaled(stack: ExecutionStack, running: object, client_order_id: str) -> None:
    journal = running.app.journal  # type: ignore[attr-defined]
    for _ in range(500):
        if await journal.get("syndr", stack.account.address, client_order_id) is not None:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{client_order_id} was never journaled")


@pytest.mark.parametrize("rpc", ["GetOrder", "CancelOrder"])
async def test_a_call_by_client_id_waits_for_the_placement_in_flight(stack: ExecutionStack, sim: Simulator,
                                                                     rpc: str) -> None:
    async with running_execution(stack) as running, open_channel(running.target) as channel:
        stub = running.stub(channel)
        hold_next_buy(sim)
        placing = asyncio.ensure_future(stub.PlaceOrder(place(stack, "inflight-1", resting_bid(sim)),
                                                        metadata=running.metadata(), timeout=30))
        await until_journaled(stack, running, "inflight-1")  # PENDING: its bytes are held at the venue
        if rpc == "GetOrder":
            got = await stub.GetOrder(pb.GetOrderRequest(venue="syndr", account=stack.account.address,
                                                         client_order_id="inflight-1"),
                                      metadata=running.metadata("read"), timeout=30)
            expected = order_pb2.ORDER_STATE_OPEN
        else:
            got = await stub.CancelOrder(pb.CancelOrderRequest(venue="syndr", account=stack.account.address,
                                                               client_order_id="inflight-1"),
                                         metadata=running.metadata(), timeout=30)
            expected = order_pb2.ORDER_STATE_CANCELLED
        placed = await placing  # the placement is not told "rejected" for an order the venue took
        assert placed.order.order_id == got.order.order_id and got.order.state == expected
        assert buys(sim, "inflight-1") == 1  # the call did not resend the bytes in flight
        entry = await running.app.journal.get("syndr", stack.account.address, "inflight-1")
        assert entry is not None and entry.order_id == got.order.order_id
        assert entry.state == (OrderState.OPEN if rpc == "GetOrder" else OrderState.CANCELLED)


async def test_a_second_caller_is_not_handed_the_first_callers_cancellation(
        stack: ExecutionStack, sim: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    async with running_execution(stack) as running, open_channel(running.target) as channel:
        stub = running.stub(channel)
        # A first order warms Vault, the signer and the contracts: the held one below is on its way at once.
        await stub.PlaceOrder(place(stack, "warm-1", resting_bid(sim)), metadata=running.metadata(), timeout=30)
        calls: list[str] = []  # what the service's placements of twice-1 came to, in order
        place_order = running.app.orders.place

        async def watched(intent: OrderIntent) -> JournalEntry:
            calls.append("started")
            try:
                return await place_order(intent)
            except asyncio.CancelledError:
                calls.append("cancelled")
                raise

        monkeypatch.setattr(running.app.orders, "place", watched)
        hold_next_buy(sim, SECOND_CALLER_HOLD_MS)
        request = place(stack, "twice-1", resting_bid(sim))
        first = asyncio.ensure_future(stub.PlaceOrder(request, metadata=running.metadata(), timeout=30))
        await until(lambda: sim.faults.http_hold_next == 0)  # its bytes are held at the venue
        second = asyncio.ensure_future(stub.PlaceOrder(request, metadata=running.metadata(), timeout=30))
        await until(lambda: calls.count("started") == 2)  # the second waits for the first's placement
        first.cancel()  # the first caller gives up while its bytes are still held
        with pytest.raises(asyncio.CancelledError):
            await first
        placed = await second  # settled from the journal and the venue, not by the first caller's fate
        assert calls[:3] == ["started", "started", "cancelled"], calls  # the service saw the first one go
        assert placed.order.state == order_pb2.ORDER_STATE_OPEN
        assert [o.order_id for o in sim.engine.open_orders(stack.account.address)
                if o.label == "twice-1"] == [placed.order.order_id]


async def test_a_venue_internal_error_is_an_unknown_outcome_not_a_rejection(stack: ExecutionStack,
                                                                            sim: Simulator) -> None:
    async with running_execution(stack) as running, open_channel(running.target) as channel:
        stub = running.stub(channel)
        await stub.PlaceOrder(place(stack, "warm-1", resting_bid(sim)), metadata=running.metadata(), timeout=30)
        request = place(stack, "internal-1", resting_bid(sim))
        sim.faults.update({"fail_rate": 1.0})  # every call: the order's answer is -32603 "internal error"
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await stub.PlaceOrder(request, metadata=running.metadata(), timeout=30)
        entry = await running.app.journal.get("syndr", stack.account.address, "internal-1")
        sim.faults.reset()
        assert entry is not None and entry.state == OrderState.UNKNOWN  # to reconcile, not journaled as refused
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
        info = error_info(failed.value)
        assert info is not None and info.reason == "ORDER_OUTCOME_UNKNOWN"
        # Same id again once the venue is well: reconciled by salt (not found), the same bytes sent, placed.
        placed = await stub.PlaceOrder(request, metadata=running.metadata(), timeout=30)
        assert placed.order.state == order_pb2.ORDER_STATE_OPEN
        assert len([o for o in sim.engine.open_orders(stack.account.address) if o.label == "internal-1"]) == 1


async def test_a_rate_limited_order_is_sent_again_by_a_retry_with_its_id(stack: ExecutionStack,
                                                                         sim: Simulator) -> None:
    env = {"PORTICO_EXECUTION_VENUE_RATE_SHARE": "0.001", "PORTICO_EXECUTION_VENUE_TIMEOUT_MS": "300"}
    async with running_execution(stack, env) as running, open_channel(running.target) as channel:
        stub = running.stub(channel)
        price = resting_bid(sim)
        # A share of 0.001 holds 5 order calls and refills one a second: the sixth waits past the 0.3 s timeout.
        replies = await asyncio.gather(*(stub.PlaceOrder(place(stack, f"limited-{i}", price),
                                                         metadata=running.metadata(), timeout=30)
                                         for i in range(6)), return_exceptions=True)
        refused = [i for i, r in enumerate(replies) if isinstance(r, grpc.aio.AioRpcError)]
        assert refused, replies
        for i in refused:
            error = replies[i]
            assert isinstance(error, grpc.aio.AioRpcError)
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            entry = await running.app.journal.get("syndr", stack.account.address, f"limited-{i}")
            assert entry is not None and entry.reject_code == ErrorCode.TOO_MANY_REQUESTS
        again = f"limited-{refused[0]}"
        assert buys(sim, again) == 0
        await asyncio.sleep(2.5)  # the budget has a credit again
        placed = await stub.PlaceOrder(place(stack, again, price), metadata=running.metadata(), timeout=30)
        assert placed.order.state == order_pb2.ORDER_STATE_OPEN
        assert buys(sim, again) == 1
        entry = await running.app.journal.get("syndr", stack.account.address, again)
        assert entry is not None and entry.state == OrderState.OPEN and entry.attempts == 2
        retried_again = await stub.PlaceOrder(place(stack, again, price), metadata=running.metadata(), timeout=30)
        assert retried_again.order.order_id == placed.order.order_id and buys(sim, again) == 1


async def test_an_order_whose_api_key_was_rotated_meanwhile_is_sent_again_with_the_new_one(
        stack: ExecutionStack, sim: Simulator) -> None:
    """The account service rotated the API key (Vault names the new one, the venue refuses the old) while
    execution still holds the old one: the venue refuses the key before it looks at the order, so the same bytes
    go again at once with the key Vault holds (before, the order was REJECTED for good under its client id)."""
    async with running_execution(stack) as running, open_channel(running.target) as channel:
        stub = running.stub(channel)
        price = resting_bid(sim)
        await stub.PlaceOrder(place(stack, "before-rotation", price), metadata=running.metadata(), timeout=30)
        new = await rotate_api_key(stack)
        placed = await stub.PlaceOrder(place(stack, "after-rotation", price), metadata=running.metadata(), timeout=30)
        assert placed.order.state == order_pb2.ORDER_STATE_OPEN
        assert buys(sim, "after-rotation") == 1
        assert [r.api_key for r in sim.requests if r.method == "private/buy"
                and r.params.get("label") == "after-rotation"] == [new.api_key]
        entry = await running.app.journal.get("syndr", stack.account.address, "after-rotation")
        assert entry is not None and entry.state == OrderState.OPEN and entry.attempts == 2


async def refused_for_its_api_key(stack: ExecutionStack, sim: Simulator, running: RunningExecution,
                                  stub: Any, client_order_id: str, price: str) -> None:
    """Place `client_order_id` while the venue has a new API key Vault does not hold yet (a rotation half done):
    refused, journaled REJECTED for the key, nothing sent to the book. Then Vault gets the new key and the refused
    record may be read again, so a retry with the same id can go through."""
    await stub.PlaceOrder(place(stack, "warm", price), metadata=running.metadata(), timeout=30)
    new = await rotate_api_key(stack, update_vault=False)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.PlaceOrder(place(stack, client_order_id, price), metadata=running.metadata(), timeout=30)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    entry = await running.app.journal.get("syndr", stack.account.address, client_order_id)
    assert entry is not None and entry.state == OrderState.REJECTED and entry.reject_code == ErrorCode.UNAUTHORIZED
    assert buys(sim, client_order_id) == 0
    await store_api_key(stack, new)
    await asyncio.sleep(1.1)  # a record the venue refused is read again at most once a second


async def test_an_order_refused_for_its_api_key_is_sent_again_by_a_retry_with_its_id(
        stack: ExecutionStack, sim: Simulator) -> None:
    """The venue refuses the key while Vault still names it (a rotation half done): the order is refused, but
    nothing was executed, so once Vault has the new key a retry with the same client id sends the same bytes
    again rather than replaying the refusal."""
    async with running_execution(stack) as running, open_channel(running.target) as channel:
        stub = running.stub(channel)
        price = resting_bid(sim)
        await refused_for_its_api_key(stack, sim, running, stub, "refused-key", price)
        placed = await stub.PlaceOrder(place(stack, "refused-key", price), metadata=running.metadata(), timeout=30)
        assert placed.order.state == order_pb2.ORDER_STATE_OPEN
        assert buys(sim, "refused-key") == 1
        entry = await running.app.journal.get("syndr", stack.account.address, "refused-key")
        assert entry is not None and entry.state == OrderState.OPEN and str(entry.salt) == placed.order.salt


async def test_a_refused_order_is_not_sent_again_while_another_on_its_instrument_has_an_unknown_outcome(
        stack: ExecutionStack, sim: Simulator) -> None:
    """An order refused for the API key (nothing executed) is retried with its id while another order on the same
    instrument has an unknown outcome that cannot be resolved yet (the venue's open orders cannot be read). No
    order is sent on the instrument until that one is resolved, and the retry's answer names it: before the fix
    the retry's resend skipped that check and the refused order went to the venue."""
    async with running_execution(stack) as running, open_channel(running.target) as channel:
        stub = running.stub(channel)
        price = resting_bid(sim)
        await refused_for_its_api_key(stack, sim, running, stub, "refused-first", price)

        # The venue takes the next order but its answer is lost, and the venue's open orders cannot be read.
        sim.faults.update({"http_5xx_method": "private/get_open_orders", "http_5xx_rate": 1.0,
                           "drop_response_rate": 1.0})
        with pytest.raises(grpc.aio.AioRpcError) as lost:
            await stub.PlaceOrder(place(stack, "unknown-outcome", price), metadata=running.metadata(), timeout=30)
        sim.faults.update({"drop_response_rate": 0.0})
        assert lost.value.code() == grpc.StatusCode.UNAVAILABLE
        entry = await running.app.journal.get("syndr", stack.account.address, "unknown-outcome")
        assert entry is not None and entry.state == OrderState.UNKNOWN

        with pytest.raises(grpc.aio.AioRpcError) as blocked:
            await stub.PlaceOrder(place(stack, "refused-first", price), metadata=running.metadata(), timeout=30)
        assert blocked.value.code() == grpc.StatusCode.UNAVAILABLE
        info = error_info(blocked.value)
        assert info is not None and info.reason == "ORDER_OUTCOME_UNKNOWN"
        assert info.metadata["client_order_id"] == "unknown-outcome"
        assert buys(sim, "refused-first") == 0  # not sent

        sim.faults.reset()  # the unknown order can be resolved now: the retry goes through, once
        placed = await stub.PlaceOrder(place(stack, "refused-first", price), metadata=running.metadata(), timeout=30)
        assert placed.order.state == order_pb2.ORDER_STATE_OPEN and buys(sim, "refused-first") == 1
        assert len([o for o in sim.engine.open_orders(stack.account.address) if o.label == "unknown-outcome"]) == 1


async def test_callers_waiting_on_a_refused_placement_send_it_again_once_between_them(
        stack: ExecutionStack, sim: Simulator) -> None:
    """Two more calls with the client id wait for a placement the venue refuses for the API key (a rotation half
    done: the new key reaches Vault while the placement's sends are on their way). Nothing was executed, so the
    waiters send the same bytes again with the new key: once between them, and both answer with the order. Before
    the fix the waiters answered outside the calls in flight: the second found the first's resend PENDING, took it
    for an unknown outcome, reconciled it and sent the same bytes while the first's were still on their way (on a
    journal that yields, each simply resent); the later send was refused as a reused salt, so one caller was told
    the outcome was unknown (UNAVAILABLE) and the journal lost the order's state until it was reconciled."""
    async with running_execution(stack) as running, open_channel(running.target) as channel:
        stub = running.stub(channel)
        price = resting_bid(sim)
        await stub.PlaceOrder(place(stack, "warm", price), metadata=running.metadata(), timeout=30)
        new = await rotate_api_key(stack, update_vault=False)
        # The send and its at-once resend (with the key Vault still holds) are each held on their way, and so is
        # the next resend (a waiter's, with the new key).
        sim.faults.update({"http_hold_next": 3, "http_hold_ms": 1500, "http_hold_method": "private/buy"})
        request = place(stack, "waited-on", price)
        first = asyncio.ensure_future(stub.PlaceOrder(request, metadata=running.metadata(), timeout=30))
        await until_journaled(stack, running, "waited-on")
        waiters = [asyncio.ensure_future(stub.PlaceOrder(request, metadata=running.metadata(), timeout=30))
                   for _ in range(2)]
        await until(lambda: sim.faults.http_hold_next <= 1)  # the at-once resend is held now, with the old key
        await store_api_key(stack, new)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await first
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        answers = await asyncio.gather(*waiters, return_exceptions=True)
        assert all(not isinstance(a, BaseException) for a in answers), answers
        assert {a.order.order_id for a in answers} != {""}  # type: ignore[union-attr]
        assert len({a.order.order_id for a in answers}) == 1  # type: ignore[union-attr]
        assert len([o for o in sim.engine.open_orders(stack.account.address) if o.label == "waited-on"]) == 1
        entry = await running.app.journal.get("syndr", stack.account.address, "waited-on")
        assert entry is not None and entry.state == OrderState.OPEN and entry.order_id
