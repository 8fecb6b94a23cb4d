"""The reconciler does not go round as fast as a failing venue refuses its resends.

An order's placement is answered 503 before the venue executes it, and so is every resend: the order stays of
unknown outcome. Each failed resend wakes the reconciler (an outcome just became unknown); before the fix that
wake started the next pass at once, so the reconciler resent the order (and read the venue's open orders and
history for it) hundreds of times a second, using up the rate budget new orders need. Now a pass that leaves
orders unresolved is followed by the next after a pause doubling up to the reconcile period.

A real simulator, OpenBao, signer, reference data, journal and reconciler.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from tests.support.execution import ExecutionStack, resting_bid, running_execution, until_journaled

from portico.common.v1 import side_pb2
from portico.execution.model import OrderState
from portico.execution.v1 import execution_service_pb2 as pb
from portico.execution.v1 import order_pb2
from portico.runtime.client import open_channel
from portico.sim.server import SimConfig, Simulator

SYMBOL = "ETH-PERP"


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimConfig(port=0, seed=41, market_maker_instruments=(SYMBOL,),
                                   rate_limit_capacity=100_000, rate_limit_refill_per_s=100_000)) as simulator:
        yield simulator


async def test_resends_the_venue_keeps_refusing_back_off(stack: ExecutionStack, sim: Simulator) -> None:
    account = stack.account.address
    async with running_execution(stack, {"PORTICO_EXECUTION_RECONCILE_SECONDS": "1"}) as running, \
            open_channel(running.target) as channel:
        stub = running.stub(channel)
        sim.faults.update({"http_5xx_method": "private/buy", "http_5xx_rate": 1.0})
        request = pb.PlaceOrderRequest(venue="syndr", account=account, symbol=SYMBOL, side=side_pb2.SIDE_BUY,
                                       type=order_pb2.ORDER_TYPE_LIMIT, amount="0.1", price=resting_bid(sim),
                                       client_order_id="refused-503")
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.PlaceOrder(request, metadata=running.metadata())
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        await asyncio.sleep(2.5)  # the time the backoff is measured over: about 6 passes (0.05 s doubling to 1 s)
        entry = await running.app.journal.get("syndr", account, "refused-503")
        assert entry is not None and entry.state == OrderState.UNKNOWN
        assert entry.attempts <= 12, entry.attempts  # before the fix: hundreds
        sim.faults.update({"http_5xx_method": "", "http_5xx_rate": 0.0})  # the venue is well again: placed, once
        await until_journaled(running, "refused-503", OrderState.OPEN)
        assert [o.label for o in sim.engine.open_orders(account)] == ["refused-503"]
