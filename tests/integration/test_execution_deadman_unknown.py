"""The dead-man's switch and an order whose placement is journaled UNKNOWN, never having reached the venue.

The switch cancels all of the account's orders when the client stops re-arming it. Reconciling an order of
unknown outcome that the venue does not list sends its journaled bytes again: before the fix, a reconciliation
after the switch fired put an order of a client presumed dead on the book. Now an order placed before the firing
is journaled REJECTED instead, and a retry of its client id is refused without sending anything; an order placed
after the firing is sent again as before; a resend already on its way when the switch fires, landing after
its cancel, is cancelled; and the firing is journaled, so a restart does not forget it.

A real simulator, OpenBao, signer, reference data, journal and reconciler. The venue answers the lost placement
503 before executing it, and its resends too until the switch has fired, so no reconciliation can place the order
first.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from tests.support.execution import ExecutionStack, RunningExecution, resting_bid, running_execution, until_journaled
from tests.support.waiting import until

from portico.common.v1 import side_pb2
from portico.execution.model import JournalEntry, OrderState
from portico.execution.v1 import execution_service_pb2 as pb
from portico.execution.v1 import order_pb2
from portico.runtime.client import open_channel
from portico.runtime.errors import error_info
from portico.sim.server import SimConfig, Simulator

SYMBOL = "ETH-PERP"


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimConfig(port=0, seed=37, market_maker_instruments=(SYMBOL,),
                                   rate_limit_capacity=100_000, rate_limit_refill_per_s=100_000)) as simulator:
        yield simulator


def place(stack: ExecutionStack, client_order_id: str) -> pb.PlaceOrderRequest:
    return pb.PlaceOrderRequest(venue="syndr", account=stack.account.address, symbol=SYMBOL, side=side_pb2.SIDE_BUY,
                                type=order_pb2.ORDER_TYPE_LIMIT, amount="0.1", price=resting_bid(stack.sim),
                                client_order_id=client_order_id)


def sent(sim: Simulator, client_order_id: str) -> int:
    """How many placements with this client id the venue received (a call answered 503 is not received)."""
    return sum(1 for r in sim.requests if r.method == "private/buy" and r.params.get("label") == client_order_id)


async def resolved(running: RunningExecution, client_order_id: str) -> JournalEntry:
    """The order's journal entry once it no longer has an unknown outcome."""
    async with asyncio.timeout(20):
        while True:
            entry = await running.app.journal.get("syndr", running.stack.account.address, client_order_id)
            if entry is not None and not entry.unresolved:
                return entry
            await asyncio.sleep(0.05)


async def arm(stub: object, running: RunningExecution, seconds: int) -> None:
    await stub.ArmDeadman(pb.ArmDeadmanRequest(  # type: ignore[attr-defined]
        venue="syndr", account=running.stack.account.address, ttl=Duration(seconds=seconds)),
        metadata=running.metadata())


async def place_lost(stub: object, running: RunningExecution, client_order_id: str) -> pb.PlaceOrderRequest:
    """A placement the venue answers 503 before executing it (journaled UNKNOWN). The venue goes on answering
    `private/buy` 503, so the reconciler's resends in between fail the same way, never executed, and the order
    stays UNKNOWN until the test clears the fault. (Switching the fault to the order look-ups instead raced: a
    pass that had looked before the switch resent after it, and the order rested.) Returns the request, for
    retries."""
    sim = running.stack.sim
    request = place(running.stack, client_order_id)
    sim.faults.update({"http_5xx_method": "private/buy", "http_5xx_rate": 1.0})
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.PlaceOrder(request, metadata=running.metadata())  # type: ignore[attr-defined]
    info = error_info(raised.value)
    assert info is not None and info.reason == "ORDER_OUTCOME_UNKNOWN"
    entry = await running.app.journal.get("syndr", running.stack.account.address, client_order_id)
    assert entry is not None and entry.state == OrderState.UNKNOWN
    return request


async def test_an_order_lost_before_the_switch_fired_is_not_sent_again_after_it(stack: ExecutionStack,
                                                                               sim: Simulator) -> None:
    account = stack.account.address
    async with running_execution(stack) as running, open_channel(running.target) as channel:
        stub = running.stub(channel)
        rest = await stub.PlaceOrder(place(stack, "dm-rest"), metadata=running.metadata())
        assert rest.order.state == order_pb2.ORDER_STATE_OPEN
        lost = await place_lost(stub, running, "dm-lost")
        await arm(stub, running, 1)  # armed once both are placed: it fires after them however slow the host

        await until(lambda: running.app.deadman.fired.get(("syndr", account.lower())) == 1, timeout_s=10)
        assert sim.engine.open_orders(account) == []
        await arm(stub, running, 600)  # the client is back: that does not make the lost order sendable again
        entry = await running.app.journal.get("syndr", account, "dm-lost")
        # Refused 503 until now, or already journaled REJECTED by a pass since the firing: never placed.
        assert entry is not None
        assert entry.state in (OrderState.UNKNOWN, OrderState.REJECTED), entry.state

        sim.faults.update({"http_5xx_method": "", "http_5xx_rate": 0.0})
        running.app.orders.wake_reconciler()
        entry = await resolved(running, "dm-lost")
        assert entry.state == OrderState.REJECTED, entry.state  # before the fix: OPEN, sent again after the cancel
        assert "dead-man's switch cancelled the account's orders" in entry.reject_reason
        assert sent(sim, "dm-lost") == 0
        assert sim.engine.open_orders(account) == []

        requests = len(sim.requests)
        with pytest.raises(grpc.aio.AioRpcError) as refused:  # a retry of its client id
            await stub.PlaceOrder(lost, metadata=running.metadata())
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        info = error_info(refused.value)
        assert info is not None and info.reason == "ORDER_REJECTED"
        assert "dead-man" in (refused.value.details() or "")
        since = [r.method for r in list(sim.requests)[requests:]]
        assert "private/buy" not in since and "private/get_open_orders" not in since, since  # from the journal
        assert sent(sim, "dm-lost") == 0 and sim.engine.open_orders(account) == []

        # An order placed after the firing whose answer is lost is sent again by its reconciliation, as before.
        sim.faults.update({"http_5xx_method": "private/buy", "http_5xx_next": 1})
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.PlaceOrder(place(stack, "dm-after"), metadata=running.metadata())
        running.app.orders.wake_reconciler()
        await until_journaled(running, "dm-after", OrderState.OPEN)
        assert [o.label for o in sim.engine.open_orders(account)] == ["dm-after"]
        await arm(stub, running, 0)


async def test_a_resend_on_its_way_when_the_switch_fires_is_cancelled_if_it_lands_after_the_cancel(
        stack: ExecutionStack, sim: Simulator) -> None:
    """The reconciler sends the lost order again before the switch fires, and the venue holds that resend on its
    way in past the switch's cancel_all: it then rests, and is cancelled as soon as its answer comes back."""
    account = stack.account.address
    async with running_execution(stack) as running, open_channel(running.target) as channel:
        stub = running.stub(channel)
        await place_lost(stub, running, "dm-held")
        await arm(stub, running, 1)
        sim.faults.update({"http_5xx_method": "", "http_5xx_rate": 0.0, "http_hold_next": 1, "http_hold_ms": 2500,
                           "http_hold_method": "private/buy"})
        running.app.orders.wake_reconciler()
        await until(lambda: sim.faults.http_hold_next == 0, timeout_s=10)  # the resend is held
        await until(lambda: running.app.deadman.fired.get(("syndr", account.lower())) == 1, timeout_s=10)
        assert sent(sim, "dm-held") == 0  # the held resend has not been executed yet: the cancel_all went first
        await until_journaled(running, "dm-held", OrderState.CANCELLED)
        assert sent(sim, "dm-held") == 1
        assert sim.engine.open_orders(account) == []


async def test_an_order_lost_before_the_switch_fired_is_not_sent_again_after_a_restart(
        stack: ExecutionStack, sim: Simulator) -> None:
    """The switch fires while the venue fails every call (its cancel too, and every look-up of the lost order), and
    the service is stopped with the order still UNKNOWN. Before the fix the firing was kept in memory only: the
    reconciliation at the next start found the order nowhere and sent it again, onto the book of a client
    presumed dead. The firing is journaled now, and the order is journaled REJECTED without being sent."""
    account = stack.account.address
    async with running_execution(stack) as running, open_channel(running.target) as channel:
        stub = running.stub(channel)
        await place_lost(stub, running, "dm-restart")
        sim.faults.update({"fail_rate": 1.0})  # every call: the order stays UNKNOWN, the switch's cancel fails
        await arm(stub, running, 1)
        for _ in range(400):  # journaled in the background as the switch fires
            if await running.app.journal.deadman_firings():
                break
            await asyncio.sleep(0.05)
        assert list(await running.app.journal.deadman_firings()) == [("syndr", account.lower())]
        entry = await running.app.journal.get("syndr", account, "dm-restart")
        assert entry is not None and entry.state == OrderState.UNKNOWN
        assert running.app.deadman.fired == {}  # its cancel never went through

    sim.faults.reset()
    async with running_execution(stack) as restarted:  # serving only once every UNKNOWN order is resolved
        entry = await restarted.app.journal.get("syndr", account, "dm-restart")
        assert entry is not None
        assert entry.state == OrderState.REJECTED, entry.state  # before the fix: OPEN
        assert "dead-man's switch cancelled the account's orders" in entry.reject_reason
    assert sent(sim, "dm-restart") == 0
    assert sim.engine.open_orders(account) == []
