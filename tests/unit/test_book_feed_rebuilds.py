"""Order book feed rebuilds and start-up: a WebSocket behind the HTTP snapshot, and cancelled first subscribers."""
from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from portico.marketdata.feed import BookConsumer, Change, FeedSettings, InstrumentFeed, VenueBooks
from portico.marketdata.v1 import market_data_service_pb2 as pb
from portico.marketdata.v1 import order_book_pb2
from portico.venues.syndr.ws import Message

RESYNCING = order_book_pb2.BOOK_EVENT_TYPE_RESYNCING
SNAPSHOT = order_book_pb2.BOOK_EVENT_TYPE_SNAPSHOT


def change(cid: int, previous: int | None = None) -> Change:
    return Change(cid, cid - 1 if previous is None else previous, [("100", str(cid))], [], 1_700_000_000_000 + cid)


class SnapshotHttp:
    """`public/get_order_book` answering with the venue's book at `change_id`."""

    def __init__(self, change_id: int) -> None:
        self.change_id = change_id
        self.calls = 0

    async def call(self, method: str, params: dict[str, Any]) -> SimpleNamespace:
        self.calls += 1
        cid = self.change_id
        return SimpleNamespace(result={
            "instrument_name": "ETH-PERP", "timestamp": 1_700_000_000_000, "change_id": cid,
            "bids": [["100", str(cid)]], "asks": [["101", "1"]], "stats": {}})


async def rebuilt_feed(http: SnapshotHttp) -> tuple[InstrumentFeed, BookConsumer]:
    feed = InstrumentFeed("syndr", "ETH-PERP", None, http, FeedSettings(), lambda f: None)  # type: ignore[arg-type]
    consumer = feed.attach(10)
    feed.resync("start")
    assert feed._rebuild is not None
    await feed._rebuild
    assert feed.live and feed.book is not None
    return feed, consumer


def kinds(consumer: BookConsumer) -> list[int]:
    data, _, _ = consumer.take()
    return [u.type for u in pb.StreamOrderBookResponse.FromString(data).updates]


async def test_changes_the_snapshot_already_covers_are_dropped_not_taken_for_a_gap() -> None:
    http = SnapshotHttp(10)  # the HTTP snapshot is at 10; the WebSocket is still delivering 8, 9, 10
    feed, consumer = await rebuilt_feed(http)
    try:
        kinds(consumer)
        for cid in (8, 9, 10, 11, 12):
            feed._on_change(change(cid))
        assert feed.rebuilds == 1 and feed.live
        assert feed.book is not None and feed.book.change_id == 12
        assert RESYNCING not in kinds(consumer)
    finally:
        await feed.aclose()


async def test_a_real_gap_after_a_rebuild_still_rebuilds() -> None:
    http = SnapshotHttp(10)
    feed, _ = await rebuilt_feed(http)
    try:
        feed._on_change(change(9))  # covered by the snapshot: dropped
        feed._on_change(change(12, previous=11))  # 11 never arrived
        assert feed.rebuilds == 2 and not feed.live
    finally:
        await feed.aclose()


async def test_once_live_past_the_snapshot_an_old_change_is_a_gap_again() -> None:
    http = SnapshotHttp(10)
    feed, _ = await rebuilt_feed(http)
    try:
        feed._on_change(change(11))
        feed._on_change(change(5))  # not the lag after a snapshot any more
        assert feed.rebuilds == 2
    finally:
        await feed.aclose()


class SlowWs:
    """`subscribe` takes a while (a round trip; longer while the socket reconnects)."""

    def __init__(self) -> None:
        self.answer = asyncio.Event()
        self.calls = 0
        self.closed = 0

    async def subscribe(self, channels: list[str], *, on_event: Any = None) -> Any:
        self.calls += 1
        await self.answer.wait()
        ws = self

        class Sub:
            async def close(self) -> None:
                ws.closed += 1
        return Sub()


async def test_a_cancelled_first_subscriber_does_not_fail_the_others() -> None:
    ws = SlowWs()
    books = VenueBooks("syndr", ws, SnapshotHttp(1), FeedSettings())  # type: ignore[arg-type]
    try:
        first = asyncio.create_task(books.attach("ETH-PERP", 10))
        await asyncio.sleep(0)
        second = asyncio.create_task(books.attach("ETH-PERP", 10))
        await asyncio.sleep(0)
        first.cancel()  # the first client went away while the upstream subscribe was in flight
        await asyncio.sleep(0)
        ws.answer.set()
        consumer = await asyncio.wait_for(second, 2)
        assert isinstance(consumer, BookConsumer)
        assert first.cancelled()
        assert ws.calls == 1 and list(books.feeds) == ["ETH-PERP"]
    finally:
        await books.aclose()


async def test_a_feed_every_waiter_gave_up_on_closes_after_the_linger() -> None:
    ws = SlowWs()
    books = VenueBooks("syndr", ws, SnapshotHttp(1), FeedSettings(linger_unsubscribe_s=0.01))  # type: ignore[arg-type]
    try:
        only = asyncio.create_task(books.attach("ETH-PERP", 10))
        await asyncio.sleep(0)
        only.cancel()
        await asyncio.sleep(0)
        ws.answer.set()
        for _ in range(100):
            await asyncio.sleep(0.01)
            if ws.closed:
                break
        assert ws.closed == 1 and not books.feeds
    finally:
        await books.aclose()


async def test_a_snapshot_without_change_id_ends_the_streams_saying_why() -> None:
    """The venue document's get_order_book example has no change_id: no exact book, and no endless RESYNCING."""

    class NoChangeId(SnapshotHttp):
        async def call(self, method: str, params: dict[str, Any]) -> SimpleNamespace:
            answer = await super().call(method, params)
            del answer.result["change_id"]
            return answer

    feed = InstrumentFeed("syndr", "ETH-PERP", None, NoChangeId(10), FeedSettings(),  # type: ignore[arg-type]
                          lambda f: None)
    try:
        first = feed.attach(10)
        feed.resync("start")
        assert feed._rebuild is not None
        await feed._rebuild  # ends instead of raising in a task nobody awaits
        assert first.error is not None and first.error.reason == "SNAPSHOT_WITHOUT_CHANGE_ID"
        later = feed.attach(5)  # a stream that comes later is told at once, too
        assert later.error is first.error
    finally:
        await feed.aclose()


@pytest.mark.parametrize("level", [["100", "-5"], ["-100", "5"], ["1e999999999", "5"], ["100", "+5"]])
async def test_a_level_the_venue_never_spells_is_unreadable_and_rebuilds_the_book(level: list[str]) -> None:
    """A signed or exponent level (Decimal() takes both) is not applied: consumers never see it."""
    http = SnapshotHttp(10)
    feed, consumer = await rebuilt_feed(http)
    try:
        kinds(consumer)
        data = {"change_id": 11, "previous_change_id": 10, "bids": [level], "asks": [], "timestamp": 1}
        feed._on_event(Message("book.ETH-PERP.15.raw", data, b"", 0))
        assert feed.rebuilds == 2 and not feed.live
        assert feed.book is not None and feed.book.change_id == 10
        assert [level[0], level[1]] not in [list(bid) for bid in feed.book.bids.values()]
    finally:
        await feed.aclose()
