"""The execution service's order and fill feed (execution/streams.py) when its catch-up read after a reconnect
fails: retried while live updates go on, and the streams ended with UNAVAILABLE if the venue stays unreadable.
The venue and the order manager are stand-ins (as in test_execution_feed.py)."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest
from tests.support.subscriptions import QueuedSubscription as Subscription
from tests.support.waiting import until

from portico.execution.streams import AccountFeed
from portico.execution.v1 import order_pb2
from portico.runtime import fanout
from portico.runtime.errors import Unavailable
from portico.runtime.fanout import StreamConsumer
from portico.venues.syndr.errors import SyndrHttpError
from portico.venues.syndr.ws import Message, Reconnected

ACCOUNT = "0x52908400098527886E0F7030069857D2E4169EE7"


def order(order_id: str, state: str, filled: str, updated_ms: int) -> dict[str, Any]:
    return {"instrument_name": "ETH-PERP", "order_id": order_id, "order_type": "limit", "order_state": state,
            "direction": "buy", "time_in_force": "GTC", "reduce_only": False, "is_liquidation": False,
            "post_only": False, "account": ACCOUNT, "creation_timestamp": 1_000, "last_update_timestamp": updated_ms,
            "expiration": 9_999_999_999_999, "price": "2380", "average_price": "2380", "amount": "0.2",
            "unfilled_amount": "0.2" if filled == "0" else "0", "filled_amount": filled, "label": "",
            "salt": "471058"}


FILLED_WHILE_CUT = order("a1", "filled", "0.2", 2_000)  # the change the live channel missed
LIVE = order("b2", "open", "0", 3_000)  # placed after the reconnect, notified live


class Venue:
    """The catch-up's HTTP reads: order history answers `history`; every read fails while `failures` is above
    zero (one failure per catch-up: its first read)."""

    def __init__(self, history: list[dict[str, Any]], failures: int):
        self.history = history
        self.failures = failures
        self.catch_ups = 0

    async def call(self, account: str, method: str, params: Any = None, **kwargs: Any) -> Any:
        if method == "private/get_open_orders":  # the first read of a catch-up
            self.catch_ups += 1
            if self.failures:
                self.failures -= 1
                raise SyndrHttpError(503, "service unavailable")
        if method.startswith("private/get_order_history"):
            return SimpleNamespace(result=list(self.history))
        return SimpleNamespace(result=[])


class Orders:
    async def on_venue_order(self, venue: str, account: str, o: dict[str, Any]) -> None:
        return None


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fanout, "_CATCH_UP_RETRY_S", 0.05, raising=False)
    monkeypatch.setattr(fanout, "_CATCH_UP_RETRY_MAX_S", 0.1, raising=False)
    monkeypatch.setattr(fanout, "_CATCH_UP_GIVE_UP_S", 1.0, raising=False)


async def running_feed(venue: Venue | FillsVenue) -> tuple[AccountFeed, Subscription, StreamConsumer, StreamConsumer]:
    ws = SimpleNamespace(aclose=lambda: asyncio.sleep(0))
    feed = AccountFeed("syndr", ACCOUNT, ws=ws, venue=venue, orders=Orders())  # type: ignore[arg-type]
    subscription = Subscription()
    feed._task = asyncio.create_task(feed._run(subscription))
    orders, fills = StreamConsumer("orders"), StreamConsumer("fills")
    feed.add(orders)
    feed.add(fills)
    return feed, subscription, orders, fills


async def test_an_order_state_missed_while_cut_is_emitted_even_if_the_first_catch_up_read_fails(quick: None) -> None:
    """Before the fix the failed read was logged and the fill of a1 never reached the stream."""
    venue = Venue([FILLED_WHILE_CUT], failures=1)
    feed, subscription, orders, _ = await running_feed(venue)
    try:
        subscription.events.put_nowait(Reconnected(1))
        subscription.events.put_nowait(Message("user.orders.ALL.raw", {"order": LIVE}, b"", 0))
        await until(lambda: orders.queue.qsize() == 2, 5)
        updates = [orders.queue.get_nowait() for _ in range(2)]
        # The live update was not held up by the retry; the missed fill followed once the venue answered.
        assert [(u.sequence, u.order.order_id, u.order.state) for u in updates] == [
            (1, "b2", order_pb2.ORDER_STATE_OPEN), (2, "a1", order_pb2.ORDER_STATE_FILLED)]
        assert venue.catch_ups == 2
    finally:
        await feed.aclose()


async def test_when_the_venue_stays_unreadable_both_streams_end_with_unavailable(quick: None) -> None:
    venue = Venue([FILLED_WHILE_CUT], failures=1_000)
    feed, subscription, orders, fills = await running_feed(venue)
    try:
        subscription.events.put_nowait(Reconnected(1))
        for consumer in (orders, fills):
            with pytest.raises(Unavailable):
                async with asyncio.timeout(5):
                    async for _ in consumer.batches():
                        pass
        assert 3 <= venue.catch_ups < 50
    finally:
        await feed.aclose()


def fill(trade_id: str, timestamp_ms: int) -> dict[str, Any]:
    return {"id": trade_id, "instrument_name": "ETH-PERP", "side": "buy", "price": "2380", "amount": "0.001",
            "timestamp": timestamp_ms, "incoming_order_id": "a1", "book_order_id": "m1"}


class FillsVenue:
    """The account's fills, listed newest first by `count` and `offset` as the venue pages them; the first
    catch-up's first read fails."""

    def __init__(self) -> None:
        self.fills: list[dict[str, Any]] = []  # oldest first
        self.failures = 1

    async def call(self, account: str, method: str, params: Any = None, **kwargs: Any) -> Any:
        if method == "private/get_open_orders" and self.failures:
            self.failures -= 1
            raise SyndrHttpError(503, "service unavailable")
        if method == "private/get_user_trades_by_kind":
            newest_first = self.fills[::-1]
            return SimpleNamespace(result=newest_first[params["offset"]:params["offset"] + params["count"]])
        return SimpleNamespace(result=[])


async def test_a_catch_up_retried_while_live_fills_arrive_still_reads_back_to_the_cut(quick: None) -> None:
    """700 fills while the socket was down, the first catch-up read fails, and a fill made after the reconnect
    is handled live before the retry: the retry still reads back past the last fill before the cut (not just
    past the live one), so every fill reaches the stream once (before the fix only the newest 500 were read)."""
    venue = FillsVenue()
    feed, subscription, _, fills = await running_feed(venue)
    try:
        t0 = int(time.time() * 1000)  # the fills are made after the feed started
        before = fill("f-before", t0)
        venue.fills.append(before)
        subscription.events.put_nowait(Message("user.fills.ALL", before, b"", 0))
        venue.fills += [fill(f"f-cut-{i}", t0 + 60_000 + i) for i in range(700)]
        live = fill("f-live", t0 + 120_000)
        venue.fills.append(live)
        subscription.events.put_nowait(Reconnected(1))
        subscription.events.put_nowait(Message("user.fills.ALL", live, b"", 0))
        await until(lambda: fills.queue.qsize() == 702, 5)
        await until(lambda: not feed._catch_up.retrying, 5)
        updates = [fills.queue.get_nowait() for _ in range(fills.queue.qsize())]
        assert [u.sequence for u in updates] == list(range(1, 703))
        assert [u.fill.fill_id for u in updates] == ["f-before", "f-live", *(f"f-cut-{i}" for i in range(700))]
    finally:
        await feed.aclose()


async def test_a_reconnect_before_anything_was_handled_reads_back_only_to_the_feed_s_start(quick: None) -> None:
    """The socket reconnects before the feed handled any update (while its first catch-up runs, say): the
    catch-up reads back to the feed's start, not the account's whole history, whose old fills would reach the
    stream as if new."""
    venue = FillsVenue()
    venue.failures = 0
    an_hour_ago = int(time.time() * 1000) - 3_600_000
    venue.fills = [fill(f"old-{i}", an_hour_ago + i) for i in range(1_000)]
    feed, subscription, _, fills = await running_feed(venue)
    try:
        subscription.events.put_nowait(Reconnected(1))
        await until(lambda: feed._catch_up_asks == 1 and feed._catch_up_since is None, 5)
        updates = [fills.queue.get_nowait() for _ in range(fills.queue.qsize())]
        # The newest page, as a catch-up always emitted; nothing further back.
        assert [u.fill.fill_id for u in updates] == [f"old-{i}" for i in range(500, 1_000)]
    finally:
        await feed.aclose()
