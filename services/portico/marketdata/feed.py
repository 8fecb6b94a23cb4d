"""Live books from one upstream WebSocket per venue, fanned out to many consumers.

Per instrument, an `InstrumentFeed` holds the service's own book and keeps it
exact: every raw change must chain onto the last (`previous_change_id ==
change_id` of the book). On a gap, an upstream reconnect or overflow, a
crossed book, or a tick-size change from reference data it rebuilds that one
instrument: it keeps its subscription (so no change is missed), buffers the
changes, fetches `public/get_order_book`, drops the buffered changes the
snapshot already covers, applies the rest, and starts a new epoch.

Consumers are grouped by depth into `DepthView`s. A view turns each book
change into the change of its top `depth` levels, encodes that `BookUpdate`
once, and hands the same bytes to every consumer of the view. Each consumer
has a bounded queue; one that falls behind is conflated (its backlog replaced
by one fresh snapshot), and one that keeps falling behind is cut off with
RESOURCE_EXHAUSTED, so it never slows the others or grows memory.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from opentelemetry import metrics

from portico.marketdata.book import Book, Level, book_checksum, top_diff
from portico.marketdata.v1 import market_data_service_pb2 as pb
from portico.marketdata.v1 import order_book_pb2
from portico.runtime.errors import PorticoError, ResourceExhausted
from portico.runtime.lifecycle import cancel_and_wait
from portico.venues.syndr import models
from portico.venues.syndr.errors import SyndrError
from portico.venues.syndr.http import SyndrHttpClient
from portico.venues.syndr.ws import Disconnected, Message, Overflow, Reconnected, Subscription, SyndrWebSocket

__all__ = ["BookConsumer", "FeedSettings", "InstrumentFeed", "VenueBooks", "frame"]

log = logging.getLogger("portico.marketdata")
_meter = metrics.get_meter("portico.marketdata")
UPSTREAM_MESSAGES = _meter.create_counter("marketdata.upstream.messages", description="raw book changes received")
GAPS = _meter.create_counter("marketdata.gaps", description="changes that did not chain onto the book")
RESNAPSHOTS = _meter.create_counter("marketdata.resnapshots", description="book rebuilds")
CONFLATIONS = _meter.create_counter("marketdata.conflations", description="consumers skipped to a fresh snapshot")
CONSUMERS = _meter.create_up_down_counter("marketdata.consumers", description="live book consumers")
QUEUE_DEPTH = _meter.create_histogram("marketdata.queue.depth", description="updates per batch sent to a consumer")
LATENCY = _meter.create_histogram("marketdata.latency", unit="ms",
                                  description="upstream frame received to batch handed to gRPC")
AUDITS = _meter.create_counter("marketdata.audits", description="books compared with the venue's snapshot")
DIVERGENCE = _meter.create_histogram("marketdata.audit.divergence",
                                     description="levels that differed from the venue's book at the same change id")

BookUpdate = order_book_pb2.BookUpdate
_UPDATES_TAG = bytes([(pb.StreamOrderBookResponse.DESCRIPTOR.fields_by_name["updates"].number << 3) | 2])


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def frame(update: order_book_pb2.BookUpdate) -> bytes:
    """One update encoded as an element of `StreamOrderBookResponse.updates`.

    A response is the concatenation of such elements, so a batch for any
    consumer is `b"".join(frames)`: each update is serialised once, for all.
    """
    body = update.SerializeToString()
    return _UPDATES_TAG + _varint(len(body)) + body


@dataclass(frozen=True)
class FeedSettings:
    max_queue: int = 5000  # updates a consumer may have pending before it is conflated
    max_conflations: int = 3  # ... and conflations within `conflation_window_s` before it is cut off
    conflation_window_s: float = 10.0
    max_batch: int = 500  # updates per stream message
    linger_s: float = 0.002  # wait this long for more updates before sending a batch
    silence_limit_s: float = 10.0  # no upstream change for this long -> STALE
    linger_unsubscribe_s: float = 5.0  # keep the upstream subscription this long after the last consumer
    max_buffer: int = 100_000  # changes buffered during a rebuild before the rebuild starts over
    audit_interval_s: float = 30.0  # compare each live book with the venue's snapshot this often (0: never)


@dataclass(eq=False)
class BookConsumer:
    """One StreamOrderBook call: a bounded queue of encoded updates."""

    view: DepthView
    settings: FeedSettings
    frames: deque[bytes] = field(default_factory=deque)
    received: deque[int] = field(default_factory=deque)  # receive time (ns) of each queued frame
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    error: PorticoError | None = None
    conflations: deque[float] = field(default_factory=deque)

    def push(self, data: bytes, received_ns: int) -> None:
        if len(self.frames) >= self.settings.max_queue:
            self._conflate()
            return
        self.frames.append(data)
        self.received.append(received_ns)
        self.wakeup.set()

    def _conflate(self) -> None:
        now = time.monotonic()
        while self.conflations and now - self.conflations[0] > self.settings.conflation_window_s:
            self.conflations.popleft()
        self.conflations.append(now)
        CONFLATIONS.add(1)
        self.frames.clear()
        self.received.clear()
        if len(self.conflations) > self.settings.max_conflations:
            self.error = ResourceExhausted("the consumer cannot keep up with the book even after conflation",
                                           reason="CONSUMER_TOO_SLOW")
        else:
            self.frames.append(self.view.snapshot_frame())
            self.received.append(time.time_ns())
        self.wakeup.set()

    def take(self) -> tuple[bytes, int, int]:
        """(response bytes, updates in it, oldest receive time in ns)."""
        count = min(len(self.frames), self.settings.max_batch)
        oldest = self.received[0] if self.received else time.time_ns()
        batch = b"".join(self.frames.popleft() for _ in range(count))
        for _ in range(count):
            self.received.popleft()
        if not self.frames:
            self.wakeup.clear()
        return batch, count, oldest


class DepthView:
    """The top `depth` levels of a feed's book, as a chain of updates shared by its consumers."""

    def __init__(self, feed: InstrumentFeed, depth: int):
        self.feed = feed
        self.depth = depth
        self.bids: list[Level] = []
        self.asks: list[Level] = []
        self.sequence = 0
        self.consumers: set[BookConsumer] = set()

    def _update(self, kind: order_book_pb2.BookEventType.ValueType, bids: list[Level], asks: list[Level],
                previous: int) -> order_book_pb2.BookUpdate:
        update = BookUpdate(
            type=kind, venue=self.feed.venue, symbol=self.feed.symbol, epoch=self.feed.epoch,
            sequence=self.sequence, previous_sequence=previous,
            bids=[order_book_pb2.PriceLevel(price=p, amount=a) for p, a in bids],
            asks=[order_book_pb2.PriceLevel(price=p, amount=a) for p, a in asks],
            checksum=book_checksum(self.bids, self.asks))
        update.venue_time.FromMilliseconds(self.feed.venue_time_ms)
        update.receive_time.FromNanoseconds(self.feed.received_ns)
        return update

    def reset(self, book: Book) -> None:
        self.bids, self.asks = book.top(self.depth)
        self.sequence = book.change_id

    def snapshot_frame(self) -> bytes:
        return frame(self._update(order_book_pb2.BOOK_EVENT_TYPE_SNAPSHOT, self.bids, self.asks, 0))

    def status_frame(self, kind: order_book_pb2.BookEventType.ValueType) -> bytes:
        update = BookUpdate(type=kind, venue=self.feed.venue, symbol=self.feed.symbol, epoch=self.feed.epoch,
                            sequence=self.sequence, previous_sequence=self.sequence)
        return frame(update)

    def changed(self, book: Book) -> bytes | None:
        """The delta of this view after `book` changed, or None if its top levels did not move."""
        bids, asks = book.top(self.depth)
        bid_changes, ask_changes = top_diff(self.bids, bids), top_diff(self.asks, asks)
        if not bid_changes and not ask_changes:
            return None
        previous = self.sequence
        self.bids, self.asks, self.sequence = bids, asks, book.change_id
        return frame(self._update(order_book_pb2.BOOK_EVENT_TYPE_DELTA, bid_changes, ask_changes, previous))

    def publish(self, data: bytes, received_ns: int) -> None:
        for consumer in self.consumers:
            consumer.push(data, received_ns)


class InstrumentFeed:
    """One instrument's exact book, its rebuilds, and its views."""

    def __init__(self, venue: str, symbol: str, ws: SyndrWebSocket, http: SyndrHttpClient, settings: FeedSettings,
                 on_idle: Callable[[InstrumentFeed], None]):
        self.venue = venue
        self.symbol = symbol
        self.channel = f"book.{symbol}.15.raw"
        self._ws = ws
        self._http = http
        self._settings = settings
        self._on_idle = on_idle
        self.book: Book | None = None
        self.epoch = 0
        self.live = False
        self.stale = False
        self.venue_time_ms = 0
        self.received_ns = 0
        self.last_data = time.monotonic()
        self.views: dict[int, DepthView] = {}
        self._buffer: list[models.BookChange] = []
        self._subscription: Subscription | None = None
        self._reader: asyncio.Task[None] | None = None
        self._rebuild: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self.rebuilds = 0
        self.audits = 0
        self.divergences = 0
        self.audits_skipped = 0
        self._audit: models.OrderBook | None = None  # a venue snapshot ahead of our book, to compare at its id

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._subscription = await self._ws.subscribe([self.channel])
        self._reader = asyncio.create_task(self._read(), name=f"book-{self.symbol}")
        self._watchdog = asyncio.create_task(self._watch_silence(), name=f"stale-{self.symbol}")
        self.resync("start")

    async def aclose(self) -> None:
        for task in (self._reader, self._rebuild, self._watchdog):
            await cancel_and_wait(task)
        if self._subscription is not None:
            await self._subscription.close()
        for view in self.views.values():
            for consumer in view.consumers:
                consumer.error = consumer.error or PorticoError("feed closed")
                consumer.wakeup.set()

    def consumers(self) -> int:
        return sum(len(v.consumers) for v in self.views.values())

    def attach(self, depth: int) -> BookConsumer:
        view = self.views.get(depth)
        if view is None:
            view = self.views[depth] = DepthView(self, depth)
            if self.live and self.book is not None:
                view.reset(self.book)
        consumer = BookConsumer(view, self._settings)
        view.consumers.add(consumer)
        CONSUMERS.add(1)
        now = time.time_ns()
        if self.live:
            consumer.push(view.snapshot_frame(), now)
        else:
            consumer.push(view.status_frame(order_book_pb2.BOOK_EVENT_TYPE_RESYNCING), now)
        return consumer

    def detach(self, consumer: BookConsumer) -> None:
        view = consumer.view
        if consumer in view.consumers:
            view.consumers.discard(consumer)
            CONSUMERS.add(-1)
        if not view.consumers:
            self.views.pop(view.depth, None)
        if not self.views:
            self._on_idle(self)

    # ------------------------------------------------------------------ upstream

    async def _read(self) -> None:
        assert self._subscription is not None
        async for event in self._subscription:
            if isinstance(event, Message):
                try:  # the WebSocket layer has decoded the frame already: build the change from that
                    change = models.book_change_from_data(event.channel, event.data)
                except SyndrError:
                    log.warning("unreadable book frame; rebuilding", extra={"symbol": self.symbol})
                    self.resync("unreadable frame")
                    continue
                self.received_ns = event.received_ns
                self._on_change(change)
            elif isinstance(event, Reconnected | Overflow):
                self.resync(type(event).__name__.lower())
            elif isinstance(event, Disconnected):
                self._mark_resyncing()

    def _on_change(self, change: models.BookChange) -> None:
        UPSTREAM_MESSAGES.add(1)
        self.last_data = time.monotonic()
        self.stale = False
        if change.change_id is None:
            return
        if not self.live or self.book is None:
            self._buffer.append(change)
            if len(self._buffer) > self._settings.max_buffer:
                self._buffer.clear()
                self.resync("buffer overflow")
            return
        if change.previous_change_id != self.book.change_id:
            GAPS.add(1)
            log.info("book gap; rebuilding", extra={"symbol": self.symbol, "have": self.book.change_id,
                                                     "previous": change.previous_change_id})
            self.resync("gap")
            self._buffer.append(change)
            return
        self._apply(change)
        if self.book.crossed():
            self.resync("crossed book")
            return
        if self._audit is not None and self.book.change_id >= (self._audit.change_id or 0):
            snapshot, self._audit = self._audit, None
            if self.book.change_id == snapshot.change_id and not self._compare(snapshot):
                return
        for view in self.views.values():
            data = view.changed(self.book)
            if data is not None:
                view.publish(data, self.received_ns)

    def _apply(self, change: models.BookChange) -> None:
        assert self.book is not None and change.change_id is not None
        self.book.apply(change.bids_raw, change.asks_raw)
        self.book.change_id = change.change_id
        self.venue_time_ms = change.timestamp

    # ------------------------------------------------------------------ rebuilds

    def _mark_resyncing(self) -> None:
        if self.live:
            self.live = False
            self.epoch += 1
            for view in self.views.values():
                view.publish(view.status_frame(order_book_pb2.BOOK_EVENT_TYPE_RESYNCING), time.time_ns())

    def resync(self, reason: str) -> None:
        """Rebuild this instrument's book (idempotent while a rebuild is running)."""
        self._mark_resyncing()
        if self._rebuild is not None and not self._rebuild.done():
            return
        RESNAPSHOTS.add(1)
        self.rebuilds += 1
        log.info("rebuilding book", extra={"symbol": self.symbol, "reason": reason})
        self._rebuild = asyncio.create_task(self._rebuild_book(), name=f"rebuild-{self.symbol}")

    async def _rebuild_book(self) -> None:
        delay = 0.05
        while True:
            try:
                answer = await self._http.call("public/get_order_book",
                                               {"instrument_name": self.symbol, "depth": 10_000})
                snapshot = models.parse_order_book(answer.result)
            except SyndrError as exc:
                log.warning("snapshot failed; retrying", extra={"symbol": self.symbol, "error": str(exc)})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            base = snapshot.change_id
            if base is None:
                raise RuntimeError("the venue's order book carries no change_id; cannot line it up with changes")
            pending = [c for c in self._buffer if c.change_id is not None and c.change_id > base]
            if pending and pending[0].previous_change_id != base:
                await asyncio.sleep(delay)  # the snapshot is older than the stream: fetch again
                delay = min(delay * 2, 2.0)
                continue
            book = Book.from_snapshot(snapshot.bids_raw, snapshot.asks_raw, base)
            chained = True
            for change in pending:
                if change.previous_change_id != book.change_id:
                    chained = False
                    break
                book.apply(change.bids_raw, change.asks_raw)
                assert change.change_id is not None
                book.change_id = change.change_id
                self.venue_time_ms = change.timestamp
            if not chained or book.crossed():
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            self._buffer.clear()
            self.book = book
            self.live = True
            now = time.time_ns()
            for view in self.views.values():
                view.reset(book)
                view.publish(view.snapshot_frame(), now)
            return

    # ------------------------------------------------------------------ audit

    async def audit(self) -> None:
        """Fetch the venue's book and compare it with ours at the same change id."""
        if not self.live or self.book is None:
            return
        try:
            snapshot = models.parse_order_book((await self._http.call(
                "public/get_order_book", {"instrument_name": self.symbol, "depth": 10_000})).result)
        except SyndrError as exc:
            log.warning("audit snapshot failed", extra={"symbol": self.symbol, "error": str(exc)})
            return
        if not self.live or self.book is None or snapshot.change_id is None:
            return
        if snapshot.change_id == self.book.change_id:
            self._compare(snapshot)
        elif snapshot.change_id > self.book.change_id:
            self._audit = snapshot  # compared when our book reaches that change id
        else:
            self.audits_skipped += 1  # we are already past it; the next audit will line up

    def _compare(self, snapshot: models.OrderBook) -> bool:
        """Record the divergence; rebuild if there is any. True if the books agree."""
        assert self.book is not None
        ours = dict(self.book.bids.values()), dict(self.book.asks.values())
        theirs = dict(snapshot.bids_raw), dict(snapshot.asks_raw)
        differing = sum(len(set(o.items()) ^ set(t.items())) for o, t in zip(ours, theirs, strict=True))
        self.audits += 1
        AUDITS.add(1)
        DIVERGENCE.record(differing)
        if differing:
            self.divergences += 1
            log.warning("book diverged from the venue; rebuilding",
                        extra={"symbol": self.symbol, "change_id": snapshot.change_id, "levels": differing})
            self.resync("audit divergence")
            return False
        return True

    async def _watch_silence(self) -> None:
        limit = self._settings.silence_limit_s
        while True:
            await asyncio.sleep(min(limit / 4, 1.0))
            if self.live and not self.stale and time.monotonic() - self.last_data > limit:
                self.stale = True
                for view in self.views.values():
                    view.publish(view.status_frame(order_book_pb2.BOOK_EVENT_TYPE_STALE), time.time_ns())


class VenueBooks:
    """Every instrument feed of one venue, over one shared upstream WebSocket."""

    def __init__(self, venue: str, ws: SyndrWebSocket, http: SyndrHttpClient, settings: FeedSettings):
        self.venue = venue
        self.ws = ws
        self.http = http
        self.settings = settings
        self.feeds: dict[str, InstrumentFeed] = {}
        self._starting: dict[str, asyncio.Future[InstrumentFeed]] = {}
        self._closing: dict[str, asyncio.TimerHandle] = {}
        self._auditor: asyncio.Task[None] | None = None

    def start_audits(self) -> None:
        if self.settings.audit_interval_s > 0 and self._auditor is None:
            self._auditor = asyncio.create_task(self._audit_loop(), name=f"audit-{self.venue}")

    async def _audit_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.audit_interval_s)
            for feed in list(self.feeds.values()):
                await feed.audit()

    async def attach(self, symbol: str, depth: int) -> BookConsumer:
        pending_close = self._closing.pop(symbol, None)
        if pending_close is not None:
            pending_close.cancel()
        feed = self.feeds.get(symbol)
        if feed is None:
            starting = self._starting.get(symbol)
            if starting is None:
                starting = asyncio.get_running_loop().create_future()
                self._starting[symbol] = starting
                try:
                    feed = InstrumentFeed(self.venue, symbol, self.ws, self.http, self.settings, self._idle)
                    await feed.start()
                    self.feeds[symbol] = feed
                    starting.set_result(feed)
                except BaseException as exc:
                    starting.set_exception(exc)
                    starting.exception()
                    raise
                finally:
                    self._starting.pop(symbol, None)
            else:
                feed = await asyncio.shield(starting)
        return feed.attach(depth)

    def detach(self, consumer: BookConsumer) -> None:
        consumer.view.feed.detach(consumer)

    def _idle(self, feed: InstrumentFeed) -> None:
        """The last consumer left: unsubscribe upstream after a short linger."""
        loop = asyncio.get_running_loop()
        self._closing[feed.symbol] = loop.call_later(self.settings.linger_unsubscribe_s,
                                                     lambda: asyncio.ensure_future(self._close(feed)))

    async def _close(self, feed: InstrumentFeed) -> None:
        self._closing.pop(feed.symbol, None)
        if feed.views or self.feeds.get(feed.symbol) is not feed:
            return
        del self.feeds[feed.symbol]
        await feed.aclose()

    def resync(self, symbol: str, reason: str) -> None:
        feed = self.feeds.get(symbol)
        if feed is not None:
            feed.resync(reason)

    async def aclose(self) -> None:
        await cancel_and_wait(self._auditor)
        for handle in self._closing.values():
            handle.cancel()
        for feed in list(self.feeds.values()):
            await feed.aclose()
        self.feeds.clear()
