"""Orders whose placement is journaled UNKNOWN: amended by the venue's order id, and under CancelAllOrders.

An edit gives the venue's order a new salt (the signer signs a salt for one payload). Reconciliation looks an
unknown order up by the salt it was placed with, so once the order is amended that look-up can no longer find
it, and a resend of the original bytes is refused as a reused salt: the entry would stay UNKNOWN for ever,
blocking new orders on the instrument and the service's readiness at every start. The amend itself must
resolve the entry (by the salt the venue lists before the edit), and a reconciliation that read the venue after
the edit must not overwrite what the amend journaled.

A real simulator, OpenBao, signer, reference data and journal. The simulator's WebSocket stays silent so the
account's feed does not resolve the entry first, and the reconciler is left asleep (a long period, its wake-up
replaced) until the test runs a pass itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal

import grpc
import pytest
from tests.support.execution import ExecutionStack, RunningExecution, resting_bid, running_execution
from tests.support.waiting import until

from portico.common.v1 import side_pb2
from portico.execution.model import OrderState
from portico.execution.v1 import execution_service_pb2 as pb
from portico.execution.v1 import order_pb2
from portico.runtime.client import open_channel
from portico.runtime.errors import error_info
from portico.sim.server import SimConfig, Simulator

SYMBOL = "ETH-PERP"
QUIET_RECONCILER = {"PORTICO_EXECUTION_RECONCILE_SECONDS": "3600"}


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimConfig(port=0, seed=23, market_maker_instruments=(SYMBOL,),
                                   rate_limit_capacity=100_000, rate_limit_refill_per_s=100_000)) as simulator:
        yield simulator


def place(stack: ExecutionStack, client_order_id: str, price: str) -> pb.PlaceOrderRequest:
    return pb.PlaceOrderRequest(venue="syndr", account=stack.account.address, symbol=SYMBOL, side=side_pb2.SIDE_BUY,
                                type=order_pb2.ORDER_TYPE_LIMIT, amount="0.1", price=price,
                                client_order_id=client_order_id)


async def place_unknown(running: RunningExecution, stub: object, client_order_id: str, price: str) -> str:
    """Place an order whose answer is lost (journaled UNKNOWN, resting at the venue); return its venue id."""
    stack, sim = running.stack, running.stack.sim
    running.app.orders.wake_reconciler = lambda: None  # the test runs the reconciler's passes itself
    await stub.PlaceOrder(place(stack, "warm-up", resting_bid(sim, fraction="0.7")),  # type: ignore[attr-defined]
                          metadata=running.metadata())  # venue reads cached
    sim.faults.update({"silent": True, "drop_response_rate": 1.0})
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.PlaceOrder(place(stack, client_order_id, price),  # type: ignore[attr-defined]
                              metadata=running.metadata())
    info = error_info(raised.value)
    assert info is not None and info.reason == "ORDER_OUTCOME_UNKNOWN"
    sim.faults.update({"drop_response_rate": 0.0})  # the WebSocket stays silent: no feed resolves it
    entry = await running.app.journal.get("syndr", stack.account.address, client_order_id)
    assert entry is not None and entry.state == OrderState.UNKNOWN
    [order] = [o for o in sim.engine.open_orders(stack.account.address) if o.label == client_order_id]
    return str(order.order_id)


async def test_amending_by_order_id_an_order_journaled_unknown_resolves_it(stack: ExecutionStack,
                                                                           sim: Simulator) -> None:
    account = stack.account.address
    price = resting_bid(sim)
    async with running_execution(stack, QUIET_RECONCILER) as running, open_channel(running.target) as channel:
        stub = running.stub(channel)
        order_id = await place_unknown(running, stub, "amend-u-1", price)
        new_price = str(Decimal(price) - sim.engine.instrument(SYMBOL).tick_size)
        amended = await stub.AmendOrder(pb.AmendOrderRequest(venue="syndr", account=account, order_id=order_id,
                                                             price=new_price), metadata=running.metadata())
        assert amended.order.order_id == order_id and Decimal(amended.order.price) == Decimal(new_price)
        assert amended.order.client_order_id == "amend-u-1"  # the journal's entry was found and resolved
        assert await running.app.orders.reconcile_all() == 0  # nothing is left unknown
        entry = await running.app.journal.get("syndr", account, "amend-u-1")
        assert entry is not None and entry.state == OrderState.OPEN and entry.order_id == order_id
        got = await stub.GetOrder(pb.GetOrderRequest(venue="syndr", account=account, client_order_id="amend-u-1"),
                                  metadata=running.metadata("read"))
        assert got.order.order_id == order_id and Decimal(got.order.price) == Decimal(new_price)
        # A new order on the instrument is not blocked by an unknown outcome that is no longer unknown.
        await stub.PlaceOrder(place(stack, "after-amend", price), metadata=running.metadata())
    assert [o.label for o in sim.engine.open_orders(account)].count("amend-u-1") == 1


async def test_a_reconciliation_that_read_the_venue_after_an_amend_does_not_undo_it(stack: ExecutionStack,
                                                                                    sim: Simulator) -> None:
    """The reconciler's read of the open orders is held at the venue while the amend goes through: by the time
    it executes, the order carries the edit's salt, so it is not found by the placement's. The reconciler must
    see that the amend resolved the entry meanwhile, rather than resend (a reused salt: UNKNOWN again)."""
    account = stack.account.address
    price = resting_bid(sim)
    async with running_execution(stack, QUIET_RECONCILER) as running, open_channel(running.target) as channel:
        stub = running.stub(channel)
        order_id = await place_unknown(running, stub, "amend-u-2", price)
        sim.faults.update({"http_hold_next": 1, "http_hold_ms": 1500, "http_hold_method": "private/get_open_orders"})
        reconciling = asyncio.create_task(running.app.orders.reconcile_all())
        await until(lambda: sim.faults.http_hold_next == 0, 10, 0.005)  # the reconciler's read is held
        new_price = str(Decimal(price) - sim.engine.instrument(SYMBOL).tick_size)
        await stub.AmendOrder(pb.AmendOrderRequest(venue="syndr", account=account, order_id=order_id,
                                                   price=new_price), metadata=running.metadata())
        await reconciling
        entry = await running.app.journal.get("syndr", account, "amend-u-2")
        assert entry is not None and entry.state == OrderState.OPEN and entry.order_id == order_id
        assert await running.app.orders.reconcile_all() == 0
    assert [o.label for o in sim.engine.open_orders(account)].count("amend-u-2") == 1


async def test_cancel_all_of_an_instrument_also_cancels_an_order_of_unknown_outcome_resent_later(
        stack: ExecutionStack, sim: Simulator) -> None:
    """The order never reached the venue (a 503), so it is journaled UNKNOWN and not on the book when the caller
    cancels everything on its instrument. Before the fix, the reconciliation after the cancel did not find it and
    sent its bytes again: an order rested on an instrument the caller had just cleared."""
    account = stack.account.address
    async with running_execution(stack, QUIET_RECONCILER) as running, open_channel(running.target) as channel:
        stub = running.stub(channel)
        running.app.orders.wake_reconciler = lambda: None
        await stub.PlaceOrder(place(stack, "warm-up", resting_bid(sim, fraction="0.7")), metadata=running.metadata())
        sim.faults.update({"http_5xx_next": 1, "http_5xx_method": "private/buy"})
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.PlaceOrder(place(stack, "lost-1", resting_bid(sim)), metadata=running.metadata())
        info = error_info(raised.value)
        assert info is not None and info.reason == "ORDER_OUTCOME_UNKNOWN"
        await stub.CancelAllOrders(pb.CancelAllOrdersRequest(venue="syndr", account=account, symbol=SYMBOL),
                                   metadata=running.metadata())
        await running.app.orders.reconcile_all()
        entry = await running.app.journal.get("syndr", account, "lost-1")
        assert entry is not None and not entry.unresolved
        assert entry.state != OrderState.OPEN
    assert [o.label for o in sim.engine.open_orders(account)] == []  # nothing rests on the cleared instrument
