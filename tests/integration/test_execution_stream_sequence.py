"""The per-account sequence of StreamOrderUpdates and StreamFills when the account's feed is replaced (the venue
refused its channel after a reconnect, and a new stream starts a new feed): the account's number goes on, never
back. A real simulator (whose `refuse_channels` knob refuses the channel), OpenBao, signer, reference data and
journal; no mocks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from tests.support.execution import ExecutionStack, resting_bid, running_execution
from tests.support.waiting import until

from portico.common.v1 import side_pb2
from portico.execution.v1 import execution_service_pb2 as pb
from portico.execution.v1 import order_pb2
from portico.runtime.client import open_channel
from portico.sim.server import SimConfig, Simulator

SYMBOL = "ETH-PERP"


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimConfig(port=0, seed=43, market_maker_instruments=(SYMBOL,),
                                   rate_limit_capacity=100_000, rate_limit_refill_per_s=100_000)) as simulator:
        yield simulator


async def read_until(call: Any, wanted: Any, seen: list[int], within_s: float = 10.0) -> None:
    """Read `call`, noting every update's sequence in `seen`, until an update satisfies `wanted`."""
    async with asyncio.timeout(within_s):
        while (message := await call.read()) is not grpc.aio.EOF:
            seen.extend(u.sequence for u in message.updates)
            if any(wanted(u) for u in message.updates):
                return
    raise AssertionError("the stream ended")


async def test_a_new_feed_of_the_account_goes_on_from_the_account_s_number(stack: ExecutionStack,
                                                                         sim: Simulator) -> None:
    """Six order updates stream; the venue refuses the channel after a reconnect, and the stream ends. The next
    stream's feed is a new one: before the fix it numbered the account's updates from 1 again, so a consumer saw
    numbers it had already seen (for other updates) and could not tell loss from repetition."""
    account = stack.account.address
    async with running_execution(stack) as running, open_channel(running.target) as channel:
        stub = running.stub(channel)
        request = pb.StreamOrderUpdatesRequest(venue="syndr", account=account)
        first = stub.StreamOrderUpdates(request, metadata=running.metadata("read"))
        key = ("syndr", account.lower())
        await until(lambda: key in running.app.feeds._feeds, 10)
        seen: list[int] = []
        for i in range(3):
            placed = await stub.PlaceOrder(pb.PlaceOrderRequest(
                venue="syndr", account=account, symbol=SYMBOL, side=side_pb2.SIDE_BUY,
                type=order_pb2.ORDER_TYPE_LIMIT, amount="0.1", price=resting_bid(sim), client_order_id=f"seq-{i}"),
                metadata=running.metadata())
            await stub.CancelOrder(pb.CancelOrderRequest(venue="syndr", account=account,
                                                         order_id=placed.order.order_id), metadata=running.metadata())
            order_id = placed.order.order_id
            await read_until(first, lambda u, oid=order_id: u.order.order_id == oid
                             and u.order.state == order_pb2.ORDER_STATE_CANCELLED, seen)
        assert seen == list(range(seen[0], seen[0] + len(seen))) and len(seen) >= 6

        sim.faults.update({"refuse_channels": ["user.orders.ALL.raw"]})
        await sim.close_websockets()
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            async with asyncio.timeout(10):
                while await first.read() is not grpc.aio.EOF:
                    pass
        assert ended.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        sim.faults.update({"refuse_channels": []})

        second = stub.StreamOrderUpdates(request, metadata=running.metadata("read"))
        await until(lambda: key in running.app.feeds._feeds and running.app.feeds._feeds[key].ended is None, 10)
        placed = await stub.PlaceOrder(pb.PlaceOrderRequest(
            venue="syndr", account=account, symbol=SYMBOL, side=side_pb2.SIDE_BUY, type=order_pb2.ORDER_TYPE_LIMIT,
            amount="0.1", price=resting_bid(sim), client_order_id="seq-after"), metadata=running.metadata())
        after: list[int] = []
        await read_until(second, lambda u: u.order.order_id == placed.order.order_id, after)
        second.cancel()
        assert after and min(after) > max(seen), (seen, after)  # the account's number went on
        assert after == list(range(after[0], after[0] + len(after)))
