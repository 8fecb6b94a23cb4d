"""The per-account sequence of StreamOrderUpdates and StreamFills across a restart of the service.

A consumer that streamed an account's updates, lost the stream to a restart and streams again must see numbers
above every one it saw: a number it saw before, for another update, would read as a repeat (dropped by a
consumer that skips what it has) or hide a gap. The first process numbers six updates; the restarted one
must not number from 1 again. A real simulator, OpenBao, signer, reference data and journal; no mocks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from tests.integration.test_execution_stream_sequence import read_until
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
    async with Simulator(SimConfig(port=0, seed=47, market_maker_instruments=(SYMBOL,),
                                   rate_limit_capacity=100_000, rate_limit_refill_per_s=100_000)) as simulator:
        yield simulator


def place(stack: ExecutionStack, client_order_id: str) -> pb.PlaceOrderRequest:
    return pb.PlaceOrderRequest(venue="syndr", account=stack.account.address, symbol=SYMBOL, side=side_pb2.SIDE_BUY,
                                type=order_pb2.ORDER_TYPE_LIMIT, amount="0.1", price=resting_bid(stack.sim),
                                client_order_id=client_order_id)


async def test_order_update_numbers_go_on_upwards_across_a_restart(stack: ExecutionStack, sim: Simulator) -> None:
    account = stack.account.address
    request = pb.StreamOrderUpdatesRequest(venue="syndr", account=account)
    key = ("syndr", account.lower())
    seen: list[int] = []
    async with running_execution(stack) as running, open_channel(running.target) as channel:
        stub = running.stub(channel)
        stream = stub.StreamOrderUpdates(request, metadata=running.metadata("read"))
        await until(lambda: key in running.app.feeds._feeds, 10)
        for i in range(3):
            placed = await stub.PlaceOrder(place(stack, f"restart-{i}"), metadata=running.metadata())
            await stub.CancelOrder(pb.CancelOrderRequest(venue="syndr", account=account,
                                                         order_id=placed.order.order_id), metadata=running.metadata())
            order_id = placed.order.order_id
            await read_until(stream, lambda u, oid=order_id: u.order.order_id == oid
                             and u.order.state == order_pb2.ORDER_STATE_CANCELLED, seen)
        stream.cancel()
    assert len(seen) >= 6 and seen == list(range(seen[0], seen[0] + len(seen)))

    after: list[int] = []
    async with running_execution(stack) as restarted, open_channel(restarted.target) as channel:
        stub = restarted.stub(channel)
        stream = stub.StreamOrderUpdates(request, metadata=restarted.metadata("read"))
        await until(lambda: key in restarted.app.feeds._feeds, 10)
        placed = await stub.PlaceOrder(place(stack, "restart-after"), metadata=restarted.metadata())
        await read_until(stream, lambda u: u.order.order_id == placed.order.order_id, after)
        stream.cancel()
    assert after and min(after) > max(seen), (seen, after)  # never a number the consumer saw for another update
