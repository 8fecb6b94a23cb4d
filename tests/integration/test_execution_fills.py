"""ListFills pages at the venue, with the parameters the document requires, inside a window the first page fixed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from tests.support.execution import ExecutionStack, running_execution

from portico.common.v1 import side_pb2
from portico.execution.v1 import execution_service_pb2 as pb
from portico.execution.v1 import order_pb2
from portico.runtime.client import open_channel
from portico.sim.server import SimConfig, Simulator

SYMBOL = "ETH-PERP"
TRADE_METHODS = ("private/get_user_trades_by_kind", "private/get_user_trades_by_instrument")


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimConfig(port=0, seed=17, market_maker_instruments=(SYMBOL,),
                                   rate_limit_capacity=100_000, rate_limit_refill_per_s=100_000)) as simulator:
        yield simulator


async def take(stub: object, running: object, stack: ExecutionStack, sim: Simulator, client_order_id: str) -> None:
    """One small buy through the best ask: at least one fill of ours.

    Priced 2 % through the ask read here, so a market maker that re-quotes before the order arrives (on a loaded
    machine that can be many re-quotes: ten ticks were once not enough) does not leave it resting; it still fills
    at the best ask then, the book's price, not ours.
    """
    instrument = sim.engine.instrument(SYMBOL)
    ask = sim.engine.book(SYMBOL, 1).asks[0][0]
    price = (ask * Decimal("1.02") // instrument.tick_size) * instrument.tick_size
    reply = await stub.PlaceOrder(pb.PlaceOrderRequest(  # type: ignore[attr-defined]
        venue="syndr", account=stack.account.address, symbol=SYMBOL, side=side_pb2.SIDE_BUY,
        type=order_pb2.ORDER_TYPE_LIMIT, amount=str(instrument.contract_size), price=str(price),
        client_order_id=client_order_id),
        metadata=running.metadata(), timeout=30)  # type: ignore[attr-defined]
    assert reply.order.state == order_pb2.ORDER_STATE_FILLED, reply.order


def venue_fill_ids(sim: Simulator, account: str) -> list[str]:
    """The account's fills as the venue lists them, newest first."""
    return [t["id"] for t in sim.engine.user_trades(account, sort_asc=False, with_orders=False)]


async def test_fills_page_at_the_venue_and_a_new_fill_does_not_shift_later_pages(
        stack: ExecutionStack, sim: Simulator) -> None:
    account = stack.account.address
    async with running_execution(stack) as running, open_channel(running.target) as channel:
        stub = running.stub(channel)
        for i in range(5):
            await take(stub, running, stack, sim, f"take-{i}")
        expected = venue_fill_ids(sim, account)
        assert len(expected) >= 5

        request = pb.ListFillsRequest(venue="syndr", account=account, page_size=2)
        first = await stub.ListFills(request, metadata=running.metadata("read"), timeout=30)
        pages = [[f.fill_id for f in first.fills]]
        # A fill made after the first page (in a later second than the window the first page fixed) ...
        started = time.time()
        await asyncio.sleep(max(0.0, int(started) + 1.05 - started))
        await take(stub, running, stack, sim, "take-late")
        token = first.next_page_token
        while token:
            page = await stub.ListFills(pb.ListFillsRequest(venue="syndr", account=account, page_size=2,
                                                            page_token=token),
                                        metadata=running.metadata("read"), timeout=30)
            pages.append([f.fill_id for f in page.fills])
            token = page.next_page_token
        # ... is not in the later pages, which neither repeat nor skip a fill of the window.
        assert [fill for page in pages for fill in page] == expected
        assert all(len(page) == 2 for page in pages[:-1])

        # A new listing sees the late fill first.
        fresh = await stub.ListFills(request, metadata=running.metadata("read"), timeout=30)
        assert fresh.fills[0].fill_id == venue_fill_ids(sim, account)[0] != expected[0]

        # Every venue call (the pages', and the order stream's catch-up) carried count, offset and the time
        # window the document requires; the pages asked for a page and one, not the whole history.
        calls = [r for r in sim.requests if r.method in TRADE_METHODS]
        assert calls
        for call in calls:
            assert {"count", "offset", "start_timestamp", "end_timestamp"} <= set(call.params), call.params
            assert 1 <= call.params["count"] <= 1000
        assert sum(1 for call in calls if call.params["count"] == 3) >= len(pages)

        by_symbol = await stub.ListFills(pb.ListFillsRequest(venue="syndr", account=account, symbol=SYMBOL,
                                                             page_size=1000),
                                         metadata=running.metadata("read"), timeout=30)
        assert [f.fill_id for f in by_symbol.fills] == venue_fill_ids(sim, account)
        assert [r.method for r in sim.requests if r.method in TRADE_METHODS][-1] == TRADE_METHODS[1]


async def test_a_fill_the_venue_stamped_ahead_of_our_clock_is_listed(stack: ExecutionStack, sim: Simulator,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The venue's clock runs 5 s ahead of ours, as the order history read and the streams' catch-up allow for (a
    minute of skew). A fill just made is on the first page of ListFills: before the fix the listing's window ended
    at our clock's second, so the newest fills were missing from it (and from every page after it)."""
    account = stack.account.address
    monkeypatch.setattr(sim.engine, "_now", lambda: time.time_ns() // 1_000_000 + 5_000)
    async with running_execution(stack) as running, open_channel(running.target) as channel:
        stub = running.stub(channel)
        for i in range(3):
            await take(stub, running, stack, sim, f"ahead-{i}")
        expected = venue_fill_ids(sim, account)
        listed: list[str] = []
        token = ""
        while True:
            page = await stub.ListFills(pb.ListFillsRequest(venue="syndr", account=account, page_size=2,
                                                            page_token=token),
                                        metadata=running.metadata("read"), timeout=30)
            listed += [f.fill_id for f in page.fills]
            token = page.next_page_token
            if not token:
                break
        assert listed == expected
