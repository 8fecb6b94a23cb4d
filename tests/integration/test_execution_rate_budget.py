"""Execution keeps under its share of the venue's per-key rate limit: queued calls, cancels first, none lost.

A real simulator (with the venue's own limits), OpenBao, signer, reference data and journal. The service runs
with a tiny share (0.01: a bucket of 500 credits refilled at 100 a second, so 50 order calls at once and 10 a
second after), which a burst of orders overruns at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from tests.support.execution import ExecutionStack, running_execution
from tests.support.waiting import until

from portico.common.v1 import side_pb2
from portico.execution.model import OrderState
from portico.execution.v1 import execution_service_pb2 as pb
from portico.execution.v1 import order_pb2
from portico.runtime.client import open_channel
from portico.runtime.errors import error_info
from portico.sim.server import SimConfig, Simulator
from portico.venues.syndr.constants import ErrorCode, RateLimit

SYMBOL = "ETH-PERP"
SHARE = 0.01
CAPACITY_CALLS = RateLimit.CAPACITY * SHARE / RateLimit.MATCHING_ENGINE_COST  # 50 order calls at once
REFILL_CALLS_PER_S = RateLimit.REFILL_PER_S * SHARE / RateLimit.MATCHING_ENGINE_COST  # then 10 a second


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimConfig(port=0, seed=5, market_maker_instruments=(SYMBOL,))) as simulator:
        yield simulator


def resting_price(sim: Simulator) -> str:
    bid = sim.engine.book(SYMBOL, 1).bids[0][0]
    tick = sim.engine.instrument(SYMBOL).tick_size
    return str((bid / 2 // tick) * tick)


def place(stack: ExecutionStack, client_order_id: str, price: str) -> pb.PlaceOrderRequest:
    return pb.PlaceOrderRequest(venue="syndr", account=stack.account.address, symbol=SYMBOL, side=side_pb2.SIDE_BUY,
                                type=order_pb2.ORDER_TYPE_LIMIT, amount="0.1", price=price,
                                client_order_id=client_order_id)


async def test_a_burst_stays_under_the_share_and_what_waited_too_long_is_not_sent(
        stack: ExecutionStack, sim: Simulator) -> None:
    env = {"PORTICO_EXECUTION_VENUE_RATE_SHARE": str(SHARE), "PORTICO_EXECUTION_VENUE_TIMEOUT_MS": "1000"}
    async with running_execution(stack, env) as running, open_channel(running.target) as channel:
        stub = running.stub(channel)
        price = resting_price(sim)
        started = time.monotonic()
        ids = [f"burst-{i}" for i in range(90)]
        outcomes = await asyncio.gather(*(stub.PlaceOrder(place(stack, cid, price), metadata=running.metadata(),
                                                          timeout=20) for cid in ids), return_exceptions=True)
        elapsed = time.monotonic() - started

        placed = {cid for cid, outcome in zip(ids, outcomes, strict=True) if isinstance(outcome, pb.PlaceOrderResponse)}
        refused = {cid: outcome for cid, outcome in zip(ids, outcomes, strict=True) if cid not in placed}
        sent = [r.params.get("label", "") for r in sim.requests if r.method == "private/buy"]
        # What reached the venue is exactly what was placed, each once, and no more than the share allows.
        assert sorted(sent) == sorted(placed)
        assert len(sent) <= CAPACITY_CALLS + REFILL_CALLS_PER_S * elapsed + 1
        # The rest waited past the venue timeout: refused RESOURCE_EXHAUSTED, never sent, journaled as rejected
        # (a final state: nothing is left to reconcile and the instrument is not blocked).
        assert refused, "the burst should have overrun a 50-call bucket"
        for cid, error in refused.items():
            assert isinstance(error, grpc.aio.AioRpcError), error
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
            assert "not sent" in (error.details() or "")
            info = error_info(error)
            assert info is not None and info.metadata.get("venue_code") == str(int(ErrorCode.TOO_MANY_REQUESTS))
            entry = await running.app.journal.get("syndr", stack.account.address, cid)
            assert entry is not None and entry.state == OrderState.REJECTED
            assert entry.reject_code == ErrorCode.TOO_MANY_REQUESTS
        assert not await running.app.journal.unresolved("syndr", stack.account.address, SYMBOL)

        # Nothing was executed, so a retry of a refused id (once there are credits) sends its journaled bytes.
        again = next(iter(refused))
        await asyncio.sleep(0.5)
        placed_again = await stub.PlaceOrder(place(stack, again, price), metadata=running.metadata(), timeout=20)
        assert placed_again.order.state == order_pb2.ORDER_STATE_OPEN
        assert [r.params.get("label") for r in sim.requests if r.method == "private/buy"].count(again) == 1


async def test_a_cancel_overtakes_orders_queued_for_the_budget(stack: ExecutionStack, sim: Simulator) -> None:
    env = {"PORTICO_EXECUTION_VENUE_RATE_SHARE": str(SHARE), "PORTICO_EXECUTION_VENUE_TIMEOUT_MS": "30000"}
    async with running_execution(stack, env) as running, open_channel(running.target) as channel:
        stub = running.stub(channel)
        price = resting_price(sim)
        # The bucket holds 50 order calls: the other 50 queue for it, draining at 10 a second.
        orders = [asyncio.ensure_future(stub.PlaceOrder(place(stack, f"queued-{i}", price),
                                                        metadata=running.metadata(), timeout=60))
                  for i in range(int(CAPACITY_CALLS) + 50)]
        await until(lambda: any(r.method == "private/buy" for r in sim.requests))  # the account's client exists
        budget = running.app.venue.budget((await running.app.venue.session(stack.account.address)).record)
        assert budget is not None
        # Cancel once the budget's own queue is long (not after a while): even if the cancel then takes 2 s to
        # reach the budget on a slow host, orders are still queued behind it.
        await until(lambda: budget.waiting >= 25, timeout_s=20)
        reply = await stub.CancelAllOrders(pb.CancelAllOrdersRequest(venue="syndr", account=stack.account.address,
                                                                     symbol=SYMBOL),
                                           metadata=running.metadata(), timeout=60)
        results = await asyncio.gather(*orders, return_exceptions=True)
        assert all(isinstance(r, pb.PlaceOrderResponse) for r in results), results
        # The cancel (and the read of open orders it starts with) went ahead of the orders still queued, which
        # were placed after it (without the priority, every queued order went first and none came after it).
        methods = [r.method for r in sim.requests if r.method in ("private/buy", "private/cancel_all_by_instrument")]
        cancel_at = methods.index("private/cancel_all_by_instrument")
        assert methods[cancel_at + 1:].count("private/buy") >= 5, methods
        assert reply.cancelled_count == methods[:cancel_at].count("private/buy")
