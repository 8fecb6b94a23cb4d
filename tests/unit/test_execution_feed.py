"""AccountFeed (the execution service's order and fill streams) on its own: what it emits, in which order, with
which sequence numbers, and what it does when the journal fails. The venue and the order manager are stand-ins;
tests/integration/test_execution_streams.py runs the feed against the simulator and a real journal."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from tests.support.waiting import until

from portico.execution import streams
from portico.execution.streams import AccountFeed
from portico.execution.v1 import execution_service_pb2 as pb
from portico.execution.v1 import order_pb2
from portico.runtime.fanout import StreamConsumer
from portico.runtime.lifecycle import cancel_and_wait
from portico.venues.syndr.errors import SyndrConnectionError
from portico.venues.syndr.ws import Message, Reconnected

ACCOUNT = "0x52908400098527886E0F7030069857D2E4169EE7"
ORDER_ID = "b914d2d0"


def order(state: str, filled: str, updated_ms: int, order_id: str = ORDER_ID) -> dict[str, Any]:
    return {"instrument_name": "ETH-PERP", "order_id": order_id, "order_type": "limit", "order_state": state,
            "direction": "buy", "time_in_force": "GTC", "reduce_only": False, "is_liquidation": False,
            "post_only": False, "account": ACCOUNT, "creation_timestamp": 1_000, "last_update_timestamp": updated_ms,
            "expiration": 9_999_999_999_999, "price": "2380", "average_price": "2380", "amount": "0.2",
            "unfilled_amount": str(Decimal("0.2") - Decimal(filled)), "filled_amount": filled, "label": "",
            "salt": "471058"}


OPEN = order("open", "0", 1_000)
PARTIAL = order("open", "0.1", 1_001)
FILLED = order("filled", "0.2", 1_002)


class Venue:
    """The HTTP reads of a catch-up: `history` is what the venue says now."""

    def __init__(self, history: list[dict[str, Any]]):
        self.history = history

    async def call(self, account: str, method: str, params: Any = None, **kwargs: Any) -> Any:
        if method.startswith("private/get_order_history"):
            return SimpleNamespace(result=list(self.history))
        return SimpleNamespace(result=[])  # no open orders, no fills


class Orders:
    """`on_venue_order` of the order manager: records what it was given; raises while `down`."""

    def __init__(self) -> None:
        self.down = False
        self.journaled: list[dict[str, Any]] = []
        self.refused: list[dict[str, Any]] = []

    async def on_venue_order(self, venue: str, account: str, o: dict[str, Any]) -> None:
        if self.down:
            self.refused.append(o)
            raise OSError("journal unavailable")
        self.journaled.append(o)


def notification(o: dict[str, Any]) -> Message:
    return Message("user.orders.ALL.raw", {"order": o}, b"", 0)


async def events(*items: Any) -> AsyncIterator[Any]:
    for item in items:
        yield item


def feed_with_consumer(venue: Venue, orders: Orders) -> tuple[AccountFeed, StreamConsumer]:
    feed = AccountFeed("syndr", ACCOUNT, ws=None, venue=venue, orders=orders)  # type: ignore[arg-type]
    consumer = StreamConsumer("orders")
    feed.add(consumer)
    return feed, consumer


def taken(consumer: StreamConsumer) -> list[pb.OrderUpdate]:
    out = []
    while not consumer.queue.empty():
        out.append(consumer.queue.get_nowait())
    return out


async def test_a_notification_older_than_the_catch_up_is_not_emitted_after_it() -> None:
    """The catch-up after a reconnect already read FILLED; the partial fill and the fill notified meanwhile are
    handled after it. The consumer's last word stays FILLED (before the fix: OPEN 0.1 filled came last)."""
    orders = Orders()
    feed, consumer = feed_with_consumer(Venue([FILLED]), orders)
    await feed._run(events(Reconnected(1), notification(PARTIAL), notification(FILLED)))
    updates = taken(consumer)
    assert [(u.sequence, u.order.state, u.order.filled_amount) for u in updates] == [
        (1, order_pb2.ORDER_STATE_FILLED, "0.2")]
    # The journal still saw every update (it keeps the newest itself).
    assert [o["last_update_timestamp"] for o in orders.journaled] == [1_002, 1_001, 1_002]


async def test_after_a_catch_up_only_newer_states_are_emitted_each_once() -> None:
    """Catch-up reads PARTIAL; the queued OPEN (older), PARTIAL (the same) and FILLED (newer) follow, with another
    order in between: each state the consumer gets is newer than the one before it for that order, and other
    orders are not held back (before the fix OPEN came after PARTIAL)."""
    orders = Orders()
    feed, consumer = feed_with_consumer(Venue([PARTIAL]), orders)
    other = order("open", "0", 1_001, order_id="c0ffee")
    await feed._run(events(Reconnected(1), notification(OPEN), notification(PARTIAL), notification(other),
                           notification(FILLED), notification(FILLED)))
    updates = taken(consumer)
    assert [(u.sequence, u.order.order_id, u.order.filled_amount) for u in updates] == [
        (1, ORDER_ID, "0.1"), (2, "c0ffee", "0"), (3, ORDER_ID, "0.2")]
    assert updates[-1].order.state == order_pb2.ORDER_STATE_FILLED


async def test_the_emitted_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streams, "_SEEN_LIMIT", 3, raising=False)
    feed, consumer = feed_with_consumer(Venue([]), Orders())
    await feed._run(events(*[notification(order("open", "0", 1_000, order_id=f"o{i}")) for i in range(10)]))
    assert len(taken(consumer)) == 10
    assert list(feed._emitted) == ["o7", "o8", "o9"]


async def test_a_journal_failure_still_emits_the_update_and_the_journal_catches_up(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The journal is down while FILLED is notified: the consumer gets it with the next sequence (before the fix:
    nothing, and no sequence consumed, so the loss was invisible); the journal gets it once it is back."""
    monkeypatch.setattr(streams, "_JOURNAL_RETRY_S", 0.05, raising=False)
    orders = Orders()
    feed, consumer = feed_with_consumer(Venue([]), orders)
    try:
        await feed._run(events(notification(PARTIAL)))
        orders.down = True
        with caplog.at_level(logging.WARNING, logger="portico.execution.streams"):
            await feed._run(events(notification(FILLED)))
        updates = taken(consumer)
        assert [(u.sequence, u.order.state) for u in updates] == [
            (1, order_pb2.ORDER_STATE_OPEN), (2, order_pb2.ORDER_STATE_FILLED)]
        assert any(getattr(r, "order_id", None) == ORDER_ID and "journal" in r.getMessage() for r in caplog.records)
        assert orders.journaled == [PARTIAL]
        await until(lambda: len(orders.refused) >= 2)  # retried while the journal is still down
        assert orders.journaled == [PARTIAL]
        orders.down = False
        await until(lambda: orders.journaled[-1] is FILLED)
        await until(lambda: not feed._unjournaled)
        count = len(orders.journaled)
        await feed._run(events(notification(FILLED)))  # the echo: journaled (the manager skips it), not emitted
        assert taken(consumer) == []
        assert len(orders.journaled) == count + 1
    finally:
        await cancel_and_wait(getattr(feed, "_retrying", None))


async def test_a_retry_never_replays_a_state_older_than_one_journaled_since(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streams, "_JOURNAL_RETRY_S", 0.05, raising=False)
    orders = Orders()
    feed, consumer = feed_with_consumer(Venue([]), orders)
    try:
        orders.down = True
        await feed._run(events(notification(PARTIAL)))
        orders.down = False
        await feed._run(events(notification(FILLED)))  # journaled before the retry comes round
        assert [u.order.filled_amount for u in taken(consumer)] == ["0.1", "0.2"]
        assert not feed._unjournaled
        await until(lambda: feed._retrying is not None and not feed._journal_wake.is_set())
        assert orders.journaled == [FILLED]
    finally:
        await cancel_and_wait(getattr(feed, "_retrying", None))


async def test_a_start_whose_only_caller_went_away_does_not_hold_the_account_up() -> None:
    """A feed start that failed after the one stream waiting for it went away (its client disconnected) must not
    stay behind as the account's start: `ensure` (after an order, at start) then did nothing, so nothing followed
    the account, and the next stream failed with that old error instead of starting a feed."""
    feeds = streams.AccountFeeds("ws://unused", None, None)  # type: ignore[arg-type]
    key = ("syndr", ACCOUNT.lower())
    release, starts = asyncio.Event(), []

    async def start(venue_name: str, account: str) -> Any:
        starts.append(account)
        if len(starts) == 1:
            await release.wait()
            raise SyndrConnectionError("the first start fails")
        feed = SimpleNamespace(ended=None)
        feeds._feeds[key] = feed  # type: ignore[assignment]
        return feed

    feeds._start = start  # type: ignore[method-assign]
    try:
        waiting = asyncio.create_task(feeds.get("syndr", ACCOUNT))
        await until(lambda: starts)
        first = feeds._starting[key]
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
        release.set()
        await until(first.done)
        await asyncio.sleep(0.01)

        feeds.ensure("syndr", ACCOUNT)
        await until(lambda: len(starts) == 2, timeout_s=2)
        assert await feeds.get("syndr", ACCOUNT) is feeds._feeds[key]
    finally:
        feeds._feeds.clear()
        await feeds.aclose()
