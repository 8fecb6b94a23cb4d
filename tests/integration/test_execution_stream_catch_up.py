"""The order and fill streams across a reconnect, against a real simulator, OpenBao, signer, reference data and
journal: whatever the venue did while the feed's WebSocket was down reaches the streams once, in sequence, however
much it was and however old the orders it touched.

The venue's trades and orders while the socket is down are made straight on the simulator's engine with no await
in between (the feed cannot reconnect meanwhile, so none of it can arrive live); a last change made once the feed
has reconnected arrives live, after the catch-up, and marks the point by which the stream must have it all.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from tests.support.execution import ExecutionStack, RunningExecution, running_execution
from tests.support.waiting import until

from portico.execution.v1 import execution_service_pb2 as pb
from portico.execution.v1 import order_pb2
from portico.runtime.client import open_channel
from portico.runtime.lifecycle import cancel_and_wait
from portico.sim.server import SimConfig, Simulator

SYMBOL = "ETH-PERP"
COUNTERPARTY = "0x" + "5a" * 20


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    # No market maker: every trade of the account is one this test made.
    async with Simulator(SimConfig(port=0, seed=29, market_maker=False, rate_limit_capacity=1_000_000,
                                   rate_limit_refill_per_s=1_000_000)) as simulator:
        yield simulator


class Stream:
    """One StreamOrderUpdates or StreamFills call, collected in the background."""

    def __init__(self, running: RunningExecution, channel: Any, kind: str):
        self.updates: list[Any] = []
        stub = running.stub(channel)
        account = running.stack.account.address

        async def follow() -> None:
            if kind == "orders":
                calls = stub.StreamOrderUpdates(pb.StreamOrderUpdatesRequest(venue="syndr", account=account),
                                                metadata=running.metadata("read"))
            else:
                calls = stub.StreamFills(pb.StreamFillsRequest(venue="syndr", account=account),
                                         metadata=running.metadata("read"))
            async for message in calls:
                self.updates.extend(message.updates)

        self.task = asyncio.create_task(follow())

    def contiguous(self) -> bool:
        sequences = [u.sequence for u in self.updates]
        return sequences == list(range(sequences[0], sequences[0] + len(sequences)))


async def following(running: RunningExecution, channel: Any, kind: str) -> tuple[Any, Stream]:
    """The account's feed, with a stream of `kind` attached to it."""
    stream = Stream(running, channel, kind)
    key = ("syndr", running.stack.account.address.lower())
    await until(lambda: key in running.app.feeds._feeds)
    feed = running.app.feeds._feeds[key]
    await until(lambda: any(c.kind == kind for c in feed._consumers))
    return feed, stream


def price_units(sim: Simulator) -> tuple[Decimal, Decimal]:
    """A price on the tick near the mark, and the contract size."""
    instrument = sim.engine.instrument(SYMBOL)
    return (sim.engine.mark_price(SYMBOL) // instrument.tick_size) * instrument.tick_size, instrument.contract_size


def buy(sim: Simulator, account: str, price: Decimal, amount: Decimal, tif: Any = "GTC") -> Any:
    return sim.engine.place(account, SYMBOL, side="buy", order_type="limit", amount=amount, price=price,
                            time_in_force=tif).order


def counterparty_offers(sim: Simulator, price: Decimal, amount: Decimal) -> None:
    """Another account rests a sell of `amount` at `price`, for the account's buys to fill against."""
    sim.engine.open_account(COUNTERPARTY, {"USDT": Decimal("100000000")})
    sim.engine.place(COUNTERPARTY, SYMBOL, side="sell", order_type="limit", amount=amount, price=price)


async def cut(sim: Simulator, feed: Any) -> int:
    """Drop the feed's WebSocket; return its reconnect count before (the caller then acts with no await)."""
    before = int(feed._ws.reconnects)
    assert await sim.close_websockets() >= 1
    return before


async def test_every_fill_made_while_the_feed_was_cut_is_streamed_once_however_many(stack: ExecutionStack) -> None:
    """600 fills while the socket is down: more than the newest 500 the catch-up read (before the fix the 100
    oldest never reached the stream, and the sequence showed no gap since it is numbered as fills are emitted)."""
    sim, account = stack.sim, stack.account.address
    price, size = price_units(sim)
    counterparty_offers(sim, price, size * 1_000)
    async with running_execution(stack) as running, open_channel(running.target) as channel:
        feed, stream = await following(running, channel, "fills")
        try:
            buy(sim, account, price, size, "IOC")  # one fill live, before the cut
            await until(lambda: len(stream.updates) == 1)
            reconnects = await cut(sim, feed)
            for _ in range(600):
                buy(sim, account, price, size, "IOC")
            await until(lambda: feed._ws.reconnects > reconnects, timeout_s=20)
            buy(sim, account, price, size, "IOC")  # live, after the catch-up
            newest = sim.engine.user_trades(account)[0]["id"]
            await until(lambda: any(u.fill.fill_id == newest for u in stream.updates), timeout_s=20)

            venue_ids = [t["id"] for t in sim.engine.user_trades(account, sort_asc=True)]
            assert len(venue_ids) == 602
            streamed = [u.fill.fill_id for u in stream.updates]
            assert len(streamed) == len(set(streamed))  # none twice
            assert sorted(streamed) == sorted(venue_ids)  # none missing
            assert stream.contiguous()
        finally:
            await cancel_and_wait(stream.task)


async def test_a_fill_stamped_ahead_of_our_clock_is_caught_up(stack: ExecutionStack,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The venue's clock runs 5 s ahead of ours (the order history read allows a minute of skew): a fill made
    while the socket was down is still in the catch-up's window (before the fix the window ended one second
    past our clock, so the fill was never streamed)."""
    sim, account = stack.sim, stack.account.address
    monkeypatch.setattr(sim.engine, "_now", lambda: time.time_ns() // 1_000_000 + 5_000)
    price, size = price_units(sim)
    counterparty_offers(sim, price, size * 10)
    async with running_execution(stack) as running, open_channel(running.target) as channel:
        feed, stream = await following(running, channel, "fills")
        try:
            reconnects = await cut(sim, feed)
            buy(sim, account, price, size, "IOC")
            missed = sim.engine.user_trades(account)[0]["id"]
            await until(lambda: feed._ws.reconnects > reconnects, timeout_s=20)
            buy(sim, account, price, size, "IOC")
            live = sim.engine.user_trades(account)[0]["id"]
            await until(lambda: any(u.fill.fill_id == live for u in stream.updates), timeout_s=20)
            assert [u.fill.fill_id for u in stream.updates] == [missed, live]
            assert stream.contiguous()
        finally:
            await cancel_and_wait(stream.task)


async def test_an_old_order_closed_while_the_feed_was_cut_reaches_the_stream_behind_many_newer_ones(
        stack: ExecutionStack) -> None:
    """A resting order is cancelled while the socket is down, and 250 orders are placed (and end) after it: it is
    neither open nor among the newest 200 of the history the catch-up read, so before the fix its stream's last
    word stayed OPEN for ever (and so did its journal entry), and the 50 oldest of the others were never
    streamed."""
    sim, account = stack.sim, stack.account.address
    price, size = price_units(sim)
    low = price / 2
    async with running_execution(stack) as running, open_channel(running.target) as channel:
        feed, stream = await following(running, channel, "orders")
        try:
            old = buy(sim, account, low, size)
            await until(lambda: any(u.order.order_id == old.order_id for u in stream.updates))
            reconnects = await cut(sim, feed)
            others = [buy(sim, account, low, size, "IOC").order_id for _ in range(250)]  # nothing to match: ended
            sim.engine.cancel(account, old.order_id)
            await until(lambda: feed._ws.reconnects > reconnects, timeout_s=20)
            live = buy(sim, account, low, size)
            await until(lambda: any(u.order.order_id == live.order_id for u in stream.updates), timeout_s=20)

            last: dict[str, Any] = {}
            for update in stream.updates:
                last[update.order.order_id] = update.order
            assert last[old.order_id].state == order_pb2.ORDER_STATE_CANCELLED
            assert all(order_id in last and last[order_id].state == order_pb2.ORDER_STATE_CANCELLED
                       for order_id in others), sum(order_id not in last for order_id in others)
            assert stream.contiguous()
        finally:
            await cancel_and_wait(stream.task)
