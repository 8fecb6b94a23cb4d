"""The execution service's order and fill feed (execution/streams.py) when its catch-up read after a reconnect
fails: retried while live updates go on, and the streams ended with UNAVAILABLE if the venue stays unreadable.
The venue and the order manager are stand-ins (as in test_execution_feed.py)."""

from __future__ import annotations

import asyncio
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


async def running_feed(venue: Venue) -> tuple[AccountFeed, Subscription, StreamConsumer, StreamConsumer]:
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
