"""Live books from one upstream WebSocket per venue, fanned out to many consumers.

Per instrument, an `InstrumentFeed` holds the service's own book and keeps it
exact: every raw change must chain onto the last (`previous_change_id ==
change_id` of the book). On a gap, an upstream reconnect or overflow, a
crossed book, or a tick-size change from reference data it rebuilds that one
instrument: it keeps its subscription (so no change is missed), buffers the
changes, fetches `public/get_order_book`, drops the buffered changes the
snapshot already covers, applies the rest, and starts a new epoch.

The WebSocket reader hands each book frame to the feed synchronously (no
queue, no task switch), and the feed does the least it can per change: it
applies it, and a depth view looks at a side only when the change reached
that side's shown levels.

Consumers are grouped by depth into `DepthView`s. A view turns each book
change into the change of its top `depth` levels, encodes that `BookUpdate`
once and appends it once to a log that all its consumers read, each with a
cursor: publishing costs the same for one consumer as for a hundred. A
consumer more than `max_queue` updates behind is conflated (its backlog
replaced by one fresh snapshot), and one that keeps falling behind is cut off
with RESOURCE_EXHAUSTED, so it never slows the others or grows memory. When
most of a view's consumers fall behind together the service itself is
overloaded: they are conflated alike, and that does not count against them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from itertools import chain
from typing import Any, NamedTuple

from opentelemetry import metrics

from portico.marketdata.book import Book, Level, side_text, top_diff
from portico.marketdata.v1 import market_data_service_pb2 as pb
from portico.marketdata.v1 import order_book_pb2
from portico.runtime.errors import FailedPrecondition, PorticoError, ResourceExhausted
from portico.runtime.lifecycle import cancel_and_wait
from portico.venues.syndr import models
from portico.venues.syndr.errors import (
    SyndrConnectionError,
    SyndrError,
    SyndrHttpError,
    SyndrNotFound,
    SyndrRateLimited,
    refused_channel_error,
    to_portico_error,
)
from portico.venues.syndr.http import SyndrHttpClient
from portico.venues.syndr.ws import (
    ChannelRefused,
    Disconnected,
    Message,
    Overflow,
    Reconnected,
    Subscription,
    SyndrWebSocket,
    WsEvent,
)

__all__ = ["BookConsumer", "DepthView", "FeedSettings", "InstrumentFeed", "VenueBooks", "change_from_data", "frame"]

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
SNAPSHOT = order_book_pb2.BOOK_EVENT_TYPE_SNAPSHOT
DELTA = order_book_pb2.BOOK_EVENT_TYPE_DELTA
RESYNCING = order_book_pb2.BOOK_EVENT_TYPE_RESYNCING
STALE = order_book_pb2.BOOK_EVENT_TYPE_STALE
_UPDATES_TAG = bytes([(pb.StreamOrderBookResponse.DESCRIPTOR.fields_by_name["updates"].number << 3) | 2])
# A view drops the log entries every consumer has read at least this often (in appended entries).
_TRIM_EVERY = 256


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


class Change(NamedTuple):
    """One raw book change as the feed needs it: ids, the venue's level strings, venue time."""

    change_id: int
    previous_change_id: int | None
    bids: list[Level]
    asks: list[Level]
    venue_time_ms: int


def _levels(data: dict[str, Any], key: str) -> list[Level]:
    """One side's `[price, amount]` pairs as the venue's strings, checked before `Book.apply` parses them."""
    levels = [(price, amount) for price, amount in data[key]]  # unpacking checks the pair shape
    text = "".join(chain.from_iterable(levels))  # TypeError unless every value is a string
    if not models.readable_levels(levels, text):  # Decimal() rejects other junk itself
        raise ValueError(f"{key!r} is not a list of [price, amount] decimal strings")
    return levels


def change_from_data(data: Any) -> Change | None:
    """The change in a `book.*.raw` notification's decoded `data`; None if it carries no change id.

    Built straight from the frame the WebSocket layer decoded, without the
    adapter's typed model: the book parses each price once, where it keys it.
    Raises KeyError, TypeError or ValueError for a malformed frame.
    """
    if type(data) is not dict:
        raise TypeError("book data is not an object")
    change_id = data.get("change_id")
    if change_id is None:
        return None
    previous = data.get("previous_change_id")
    if type(change_id) is not int or (previous is not None and type(previous) is not int):
        raise TypeError("change ids are not integers")
    return Change(change_id, previous, _levels(data, "bids"), _levels(data, "asks"), int(data["timestamp"]))


@dataclass(frozen=True)
class FeedSettings:
    max_queue: int = 5000  # updates a consumer may have pending before it is conflated
    max_conflations: int = 3  # ... and conflations within `conflation_window_s` before it is cut off
    conflation_window_s: float = 10.0
    max_batch: int = 500  # updates per stream message
    linger_s: float = 0.002  # an update waits at most this long after it was received for more to join its batch
    silence_limit_s: float = 10.0  # no upstream change for this long -> STALE
    linger_unsubscribe_s: float = 5.0  # keep the upstream subscription this long after the last consumer
    max_buffer: int = 100_000  # changes buffered during a rebuild before the rebuild starts over
    audit_interval_s: float = 30.0  # compare each live book with the venue's snapshot this often (0: never)


class BookConsumer:
    """One StreamOrderBook call: frames of its own (its first snapshot), then a cursor into its view's log."""

    __slots__ = ("conflations", "cursor", "error", "own", "own_ns", "view")

    def __init__(self, view: DepthView, first: list[bytes], now_ns: int):
        self.view = view
        self.cursor = view.end  # the log position of the next update to send
        self.own = first  # sent before the log: a snapshot or status this consumer alone needs
        self.own_ns = [now_ns] * len(first)
        self.error: PorticoError | None = None
        self.conflations: deque[float] = deque()

    def pending(self) -> int:
        """Updates waiting to be sent to this consumer (none once it is cut off)."""
        return 0 if self.error is not None else len(self.own) + self.view.end - self.cursor

    def ready(self) -> bool:
        """Something to do now: an error, frames of its own, updates that have lingered, or a full batch."""
        view = self.view
        return (self.error is not None or bool(self.own) or self.cursor < view.released
                or view.end - self.cursor >= view.settings.max_batch)

    def take(self) -> tuple[bytes, int, int]:
        """(response bytes, updates in it, oldest receive time in ns) of up to `max_batch` pending updates."""
        view = self.view
        own = self.own
        start = self.cursor - view.base
        stop = max(start, min(len(view.log), start + view.settings.max_batch - len(own)))
        if own:
            frames = own + view.log[start:stop]
            oldest = self.own_ns[0]
            self.own, self.own_ns = [], []
        elif stop > start:
            frames = view.log[start:stop]
            oldest = view.times[start]
        else:
            return b"", 0, time.time_ns()
        self.cursor = view.base + stop
        return b"".join(frames), len(frames), oldest


class DepthView:
    """The top `depth` levels of a feed's book, as one log of encoded updates its consumers read.

    Consumers with nothing to send sleep on the view, which wakes them
    together once its oldest unsent update has lingered `linger_s` since it
    was received, or at once when a full batch is waiting: one timer per
    view, not one per consumer. Entries every cursor has passed are dropped
    from the front of the log.
    """

    def __init__(self, feed: InstrumentFeed, depth: int, settings: FeedSettings):
        self.feed = feed
        self.depth = depth
        self.settings = settings
        self.bids: list[Level] = []
        self.asks: list[Level] = []
        # Book key of the last shown level of each side (None while a side shows fewer than `depth`):
        # a change whose best key lies beyond it cannot move this view.
        self._bid_edge: Decimal | None = None
        self._ask_edge: Decimal | None = None
        self._bid_text = self._ask_text = ""  # each side's part of the checksum text
        self.sequence = 0
        self.consumers: set[BookConsumer] = set()
        self.log: list[bytes] = []
        self.times: list[int] = []  # receive time (ns) of each log entry
        self.base = 0  # log position of log[0]
        self.released = 0  # entries before this position have lingered and may be sent
        self._release: asyncio.TimerHandle | None = None
        self._waiters: list[asyncio.Future[None]] = []
        self._check_at = _TRIM_EVERY  # log position at which to trim and look for laggards
        # Unsent updates that end the linger at once: a full message, or half the queue bound (so that
        # a burst cannot push a consumer that was only waiting for the linger over the bound).
        self._full = max(1, min(settings.max_batch, settings.max_queue // 2))
        self._snapshot: tuple[int, int, bytes] | None = None  # (epoch, sequence, frame) of the last snapshot

    @property
    def end(self) -> int:
        """The log position the next update will get."""
        return self.base + len(self.log)

    # ------------------------------------------------------------------ the view's state

    def reset(self, book: Book) -> None:
        self.bids, self._bid_edge = Book.top_side(book.bids, self.depth)
        self.asks, self._ask_edge = Book.top_side(book.asks, self.depth)
        self._bid_text, self._ask_text = side_text(self.bids), side_text(self.asks)
        self.sequence = book.change_id
        self._snapshot = None

    def changed(self, book: Book, bid_key: Decimal | None, ask_key: Decimal | None, received_ns: int) -> None:
        """Publish the delta of the top levels after a change whose best keys per side were `bid_key`/`ask_key`.

        A side is looked at only when the change reached its shown levels;
        nothing is published if no shown level moved.
        """
        bid_changes: list[Level] = []
        ask_changes: list[Level] = []
        if bid_key is not None and (self._bid_edge is None or bid_key <= self._bid_edge):
            bids, edge = Book.top_side(book.bids, self.depth)
            bid_changes = top_diff(self.bids, bids)
            if bid_changes:
                self.bids, self._bid_edge, self._bid_text = bids, edge, side_text(bids)
        if ask_key is not None and (self._ask_edge is None or ask_key <= self._ask_edge):
            asks, edge = Book.top_side(book.asks, self.depth)
            ask_changes = top_diff(self.asks, asks)
            if ask_changes:
                self.asks, self._ask_edge, self._ask_text = asks, edge, side_text(asks)
        if bid_changes or ask_changes:
            previous, self.sequence = self.sequence, book.change_id
            self.publish(self._encode(DELTA, bid_changes, ask_changes, previous), received_ns)

    def _encode(self, kind: order_book_pb2.BookEventType.ValueType, bids: list[Level], asks: list[Level],
                previous: int) -> bytes:
        feed = self.feed
        update = BookUpdate(
            type=kind, venue=feed.venue, symbol=feed.symbol, epoch=feed.epoch, sequence=self.sequence,
            previous_sequence=previous,
            checksum=zlib.crc32(f"b:{self._bid_text}#a:{self._ask_text}".encode()))  # = book_checksum(top levels)
        add = update.bids.add
        for price, amount in bids:
            add(price=price, amount=amount)
        add = update.asks.add
        for price, amount in asks:
            add(price=price, amount=amount)
        seconds, millis = divmod(feed.venue_time_ms, 1000)
        stamp = update.venue_time
        stamp.seconds, stamp.nanos = seconds, millis * 1_000_000
        seconds, nanos = divmod(feed.received_ns, 1_000_000_000)
        stamp = update.receive_time
        stamp.seconds, stamp.nanos = seconds, nanos
        return frame(update)

    def snapshot_frame(self) -> bytes:
        """The view's levels as a SNAPSHOT (encoded once per state, however many consumers need it)."""
        epoch = self.feed.epoch
        cached = self._snapshot
        if cached is None or cached[0] != epoch or cached[1] != self.sequence:
            cached = self._snapshot = (epoch, self.sequence, self._encode(SNAPSHOT, self.bids, self.asks, 0))
        return cached[2]

    def status_frame(self, kind: order_book_pb2.BookEventType.ValueType) -> bytes:
        update = BookUpdate(type=kind, venue=self.feed.venue, symbol=self.feed.symbol, epoch=self.feed.epoch,
                            sequence=self.sequence, previous_sequence=self.sequence)
        return frame(update)

    def first_frames(self) -> list[bytes]:
        """What a consumer starting (or restarting, after conflation) at the end of the log must get first."""
        if not self.feed.live:
            return [self.status_frame(RESYNCING)]
        if self.feed.stale:
            return [self.snapshot_frame(), self.status_frame(STALE)]
        return [self.snapshot_frame()]

    # ------------------------------------------------------------------ the log and its consumers

    def attach(self) -> BookConsumer:
        consumer = BookConsumer(self, self.first_frames(), time.time_ns())
        self.consumers.add(consumer)
        self._check_at = min(self._check_at, consumer.cursor + self.settings.max_queue + 1 - len(consumer.own))
        return consumer

    def publish(self, data: bytes, received_ns: int) -> None:
        """Append one encoded update for every consumer; they are woken once it has lingered."""
        self.log.append(data)
        self.times.append(received_ns)
        end = self.base + len(self.log)
        if end >= self._check_at:
            self._housekeep()
        if end - self.released >= self._full:  # a full batch does not linger
            if self._release is not None:
                self._release.cancel()
            self._release_now()
        elif self._release is None:
            delay = self.settings.linger_s - (time.time_ns() - received_ns) / 1e9
            if delay > 0:
                self._release = asyncio.get_running_loop().call_later(delay, self._release_now)
            else:
                self._release_now()

    def _release_now(self) -> None:
        self._release = None
        self.released = self.end
        self.wake()

    def wake(self) -> None:
        """Wake every consumer sleeping on the view (they re-check what they have to do)."""
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait(self) -> None:
        """Sleep until the view wakes its consumers."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)
            raise

    def _housekeep(self) -> None:
        """Conflate consumers more than `max_queue` behind; drop the entries every cursor has passed.

        When most of the view's consumers lag at once, the service (not they)
        is behind: they all skip to the same fresh snapshot and it does not
        count towards cutting them off. A consumer lagging on its own does.
        """
        end = self.end
        limit = self.settings.max_queue
        lagging = [c for c in self.consumers if c.error is None and len(c.own) + end - c.cursor > limit]
        if lagging:
            overload = len(lagging) >= 2 and 2 * len(lagging) > len(self.consumers)
            if overload:
                log.warning("most consumers of a view fell behind; all skip to a fresh snapshot",
                            extra={"symbol": self.feed.symbol, "depth": self.depth, "lagging": len(lagging)})
            for consumer in lagging:
                self._conflate(consumer, counts=not overload)
        slowest = end
        check_at = end + _TRIM_EVERY
        for consumer in self.consumers:
            if consumer.error is not None:
                consumer.cursor = end  # cut off: it holds nothing back
                continue
            slowest = min(slowest, consumer.cursor)
            check_at = min(check_at, consumer.cursor + limit + 1 - len(consumer.own))
        drop = slowest - self.base
        if drop > 0:
            del self.log[:drop]
            del self.times[:drop]
            self.base = slowest
        self._check_at = check_at

    def _conflate(self, consumer: BookConsumer, counts: bool = True) -> None:
        """Replace a lagging consumer's backlog with the view's current state, or cut it off if it keeps lagging."""
        CONFLATIONS.add(1)
        consumer.cursor = self.end
        conflations = consumer.conflations
        if counts:
            now = time.monotonic()
            while conflations and now - conflations[0] > self.settings.conflation_window_s:
                conflations.popleft()
            conflations.append(now)
        if len(conflations) > self.settings.max_conflations:
            consumer.own, consumer.own_ns = [], []
            consumer.error = ResourceExhausted("the consumer cannot keep up with the book even after conflation",
                                               reason="CONSUMER_TOO_SLOW")
            self.wake()
        else:
            consumer.own = self.first_frames()
            consumer.own_ns = [time.time_ns()] * len(consumer.own)

    def close(self, error: PorticoError) -> None:
        """End every consumer's stream with `error`."""
        if self._release is not None:
            self._release.cancel()
            self._release = None
        for consumer in self.consumers:
            consumer.error = consumer.error or error
        self.wake()


class InstrumentFeed:
    """One instrument's exact book, its rebuilds, and its views."""

    def __init__(self, venue: str, symbol: str, ws: SyndrWebSocket, http: SyndrHttpClient, settings: FeedSettings,
                 on_idle: Callable[[InstrumentFeed], None],
                 on_refused: Callable[[InstrumentFeed], None] | None = None):
        self.venue = venue
        self.symbol = symbol
        self.channel = f"book.{symbol}.15.raw"
        self._ws = ws
        self._http = http
        self._settings = settings
        self._on_idle = on_idle
        self._on_refused = on_refused
        self.book: Book | None = None
        self.epoch = 0
        self.live = False
        self.stale = False
        self.venue_time_ms = 0
        self.received_ns = 0
        self.last_data = time.monotonic()
        self.views: dict[int, DepthView] = {}
        self._buffer: list[Change] = []
        self._subscription: Subscription | None = None
        self._rebuild: asyncio.Task[None] | None = None
        self._rebuild_again = False  # a resync came while the running rebuild's snapshot was being fetched
        self._watchdog: asyncio.Task[None] | None = None
        self.rebuilds = 0
        self.audits = 0
        self.divergences = 0
        self.audits_skipped = 0
        self._audit: models.OrderBook | None = None  # a venue snapshot ahead of our book, to compare at its id
        # After a rebuild: the stream's changes up to this id are in the snapshot already (the WebSocket commonly
        # lags the HTTP snapshot); they are dropped until the first change past it, which must chain from it.
        self._covered_through: int | None = None
        self._dropped_covered = 0
        # Set when the venue's snapshot cannot be lined up with its changes: every stream of this feed ends with it.
        self.unusable: PorticoError | None = None
        # Between the upstream's `Disconnected` and `Reconnected`: no change can reach the book, so no rebuild
        # goes live (its snapshot would be a frozen book sent as a live one); the `Reconnected` rebuilds it.
        self._upstream_down = False

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._subscription = await self._ws.subscribe([self.channel], on_event=self._on_event)
        self._watchdog = asyncio.create_task(self._watch_silence(), name=f"stale-{self.symbol}")
        self.resync("start")

    async def aclose(self) -> None:
        if self._subscription is not None:
            await self._subscription.close()
        for task in (self._rebuild, self._watchdog):
            await cancel_and_wait(task)
        for view in self.views.values():
            view.close(PorticoError("feed closed"))

    def consumers(self) -> int:
        return sum(len(v.consumers) for v in self.views.values())

    def attach(self, depth: int) -> BookConsumer:
        view = self.views.get(depth)
        if view is None:
            view = self.views[depth] = DepthView(self, depth, self._settings)
            if self.live and self.book is not None:
                view.reset(self.book)
        CONSUMERS.add(1)
        consumer = view.attach()
        if self.unusable is not None:
            view.close(self.unusable)
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

    def _on_event(self, event: WsEvent) -> None:
        """Every upstream event of this book, handed over synchronously by the WebSocket reader, in order."""
        if type(event) is Message:
            try:  # the WebSocket layer has decoded the frame already: build the change from that
                change = change_from_data(event.data)
            except (KeyError, TypeError, ValueError):
                self._unreadable()
                return
            UPSTREAM_MESSAGES.add(1)
            self.last_data = time.monotonic()
            self.stale = False
            if change is not None:
                self.received_ns = event.received_ns
                self._on_change(change)
        elif isinstance(event, Reconnected | Overflow):
            if type(event) is Reconnected:
                self._upstream_down = False
            self.resync(type(event).__name__.lower())
        elif isinstance(event, Disconnected):
            self._upstream_down = True
            self._mark_resyncing()
        elif isinstance(event, ChannelRefused):
            self._refused(event)

    def _refused(self, event: ChannelRefused) -> None:
        """The venue would not subscribe the book again after a reconnect (the subscription has ended): every
        stream of it ends saying so, and the feed is dropped, so that the next stream starts a new one."""
        log.error("the venue refused the book channel after a reconnect: book streams end",
                  extra={"symbol": self.symbol, "error": str(event.error)})
        self._end(refused_channel_error(event.channel, event.error, venue=self.venue))

    def end(self, error: PorticoError) -> None:
        """Reference data reports the instrument delisted: end every stream of the book with `error` and drop the
        feed (unsubscribing its channel, which the venue may go on serving), as for a channel the venue refused."""
        log.warning("the instrument is delisted: book streams end", extra={"symbol": self.symbol})
        self._end(error)

    def _end(self, error: PorticoError) -> None:
        """The venue will not serve this book any more: every stream of it ends with `error`, and the feed is
        dropped (and unsubscribed), so that the next stream of the symbol starts a new one."""
        self.unusable = error
        for task in (self._rebuild, self._watchdog):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        for view in self.views.values():
            view.close(error)
        if self._on_refused is not None:
            self._on_refused(self)

    def _unreadable(self) -> None:
        log.warning("unreadable book frame; rebuilding", extra={"symbol": self.symbol})
        self.resync("unreadable frame")

    def _on_change(self, change: Change) -> None:
        if not self.live or self.book is None:
            self._buffer.append(change)
            if len(self._buffer) > self._settings.max_buffer:
                self._buffer.clear()
                self.resync("buffer overflow")
            return
        if self._covered_through is not None:
            if change.change_id <= self._covered_through:
                self._dropped_covered += 1
                if self._dropped_covered > self._settings.max_buffer:  # ids went backwards: not a lag, a reset
                    self._covered_through = None
                    self.resync("change ids behind the book")
                return
            self._covered_through = None  # the first change past the snapshot: it chains from it, or is a gap
        if change.previous_change_id != self.book.change_id:
            GAPS.add(1)
            log.info("book gap; rebuilding", extra={"symbol": self.symbol, "have": self.book.change_id,
                                                     "previous": change.previous_change_id})
            self.resync("gap")
            self._buffer.append(change)
            return
        try:
            bid_key, ask_key = self.book.apply(change.bids, change.asks)
        except ArithmeticError:  # a price or amount Decimal() cannot read; the book is rebuilt anyway
            self._unreadable()
            return
        self.book.change_id = change.change_id
        self.venue_time_ms = change.venue_time_ms
        if self.book.crossed():
            self.resync("crossed book")
            return
        if self._audit is not None and self.book.change_id >= (self._audit.change_id or 0):
            snapshot, self._audit = self._audit, None
            if self.book.change_id == snapshot.change_id and not self._compare(snapshot):
                return
        for view in self.views.values():
            view.changed(self.book, bid_key, ask_key, self.received_ns)

    # ------------------------------------------------------------------ rebuilds

    def _mark_resyncing(self) -> None:
        if self.live:
            self.live = False
            self.epoch += 1
            now = time.time_ns()
            for view in self.views.values():
                view.publish(view.status_frame(RESYNCING), now)

    def resync(self, reason: str) -> None:
        """Rebuild this instrument's book. While a rebuild runs, it fetches its snapshot once more if this came
        while the snapshot was on its way (a tick-size change, say, that snapshot may predate)."""
        self._mark_resyncing()
        if self._rebuild is not None and not self._rebuild.done():
            self._rebuild_again = True
            return
        RESNAPSHOTS.add(1)
        self.rebuilds += 1
        log.info("rebuilding book", extra={"symbol": self.symbol, "reason": reason})
        self._rebuild = asyncio.create_task(self._rebuild_book(), name=f"rebuild-{self.symbol}")

    async def _rebuild_book(self) -> None:
        delay = 0.05
        failures = 0  # snapshots in a row the venue failed: the first is logged at WARNING, the rest at DEBUG
        while True:
            if self._upstream_down:
                return  # the upstream's `Reconnected` starts the rebuild again
            self._rebuild_again = False  # what was asked before this fetch, the snapshot covers
            try:
                answer = await self._http.call("public/get_order_book",
                                               {"instrument_name": self.symbol, "depth": 10_000})
                snapshot = models.parse_order_book(answer.result)
            except SyndrNotFound as exc:  # the instrument is gone: retried, its streams would be RESYNCING for ever
                log.error("the venue no longer knows the instrument: book streams end",
                          extra={"symbol": self.symbol, "error": str(exc)})
                self._end(to_portico_error(exc, venue=self.venue))
                return
            except SyndrError as exc:
                failures += 1
                log.log(logging.WARNING if failures == 1 else logging.DEBUG, "snapshot failed; retrying",
                        extra={"symbol": self.symbol, "error": str(exc), "failures": failures})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            if failures:
                log.info("snapshot fetched again", extra={"symbol": self.symbol, "failures": failures})
                failures = 0
            if self._rebuild_again or self._upstream_down:
                # Asked again while this snapshot was on its way (it may predate the reason), or the upstream
                # dropped meanwhile (then the loop's start ends this rebuild).
                continue
            base = snapshot.change_id
            if base is None:
                # The venue document's own example of public/get_order_book shows no change_id (the simulator
                # sends one). Without it no snapshot can be lined up with the stream's changes, so rather than
                # resync for ever (or guess by timestamps), every stream of this book ends saying why.
                self.unusable = FailedPrecondition(
                    f"{self.venue}'s order book snapshot for {self.symbol} carries no change_id, so it cannot be "
                    "lined up with the stream's changes: no exact book can be built",
                    reason="SNAPSHOT_WITHOUT_CHANGE_ID")
                log.error("book snapshot without change_id: book streams end", extra={"symbol": self.symbol})
                for view in self.views.values():
                    view.close(self.unusable)
                return
            pending = [c for c in self._buffer if c.change_id > base]
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
                try:
                    book.apply(change.bids, change.asks)
                except ArithmeticError:
                    chained = False  # an unreadable buffered change: fetch again, it will be covered
                    break
                book.change_id = change.change_id
                self.venue_time_ms = change.venue_time_ms
            if not chained or book.crossed():
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            self._buffer.clear()
            self.book = book
            self._covered_through = book.change_id
            self._dropped_covered = 0
            self.live = True
            now = time.time_ns()
            for view in self.views.values():
                view.reset(book)
                for data in view.first_frames():  # as a consumer joining now gets: STALE too, if still silent
                    view.publish(data, now)
            return

    # ------------------------------------------------------------------ audit

    async def audit(self) -> bool:
        """Fetch the venue's book and compare it with ours at the same change id. False if there was nothing to
        audit (the book is not live), True once the venue's snapshot came back; SyndrError if it cannot be had
        (the audit loop decides what that says about the venue)."""
        if not self.live or self.book is None:
            return False
        snapshot = models.parse_order_book((await self._http.call(
            "public/get_order_book", {"instrument_name": self.symbol, "depth": 10_000})).result)
        if not self.live or self.book is None or snapshot.change_id is None:
            return True
        if snapshot.change_id == self.book.change_id:
            self._compare(snapshot)
        elif snapshot.change_id > self.book.change_id:
            self._audit = snapshot  # compared when our book reaches that change id
        else:
            self.audits_skipped += 1  # we are already past it; the next audit will line up
        return True

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
                now = time.time_ns()
                for view in self.views.values():
                    view.publish(view.status_frame(STALE), now)


def _venue_wide(exc: BaseException) -> bool:
    """True if a failed snapshot says the venue as a whole cannot answer now, not that one book's cannot."""
    if isinstance(exc, SyndrHttpError):
        return exc.status >= 500 or exc.status == 429
    return isinstance(exc, SyndrConnectionError | SyndrRateLimited)


class VenueBooks:
    """Every instrument feed of one venue, over one shared upstream WebSocket."""

    def __init__(self, venue: str, ws: SyndrWebSocket, http: SyndrHttpClient, settings: FeedSettings):
        self.venue = venue
        self.ws = ws
        self.http = http
        self.settings = settings
        self.feeds: dict[str, InstrumentFeed] = {}
        self._starting: dict[str, asyncio.Task[InstrumentFeed]] = {}
        self._waiting: dict[str, int] = {}  # callers of `attach` waiting for a feed's start, by symbol
        self._closing: dict[str, asyncio.TimerHandle] = {}
        self._dropping: set[asyncio.Task[None]] = set()  # feeds the venue ended, being closed
        self._auditor: asyncio.Task[None] | None = None
        self.audit_rounds_cut = 0  # audit rounds ended early because the venue's snapshots failed

    def start_audits(self) -> None:
        if self.settings.audit_interval_s > 0 and self._auditor is None:
            self._auditor = asyncio.create_task(self._audit_loop(), name=f"audit-{self.venue}")

    async def _audit_loop(self) -> None:
        """Audit every live book once per interval. A snapshot refused for a reason that is the venue's as a whole
        (no connection, a 5xx, its rate limit: `_venue_wide`) ends the round (the other books would fail alike,
        and a venue in trouble gets no burst of look-ups), logged once until a snapshot comes back. Any other
        failure (a time-out, a 4xx, an answer we cannot read) is one book's: logged once until that book's
        snapshot comes back, and the round goes on. Before, every book logged a warning every interval."""
        venue_failing: str | None = None  # why the venue's snapshots fail, while they do
        book_failing: set[str] = set()  # books whose own snapshot fails
        while True:
            await asyncio.sleep(self.settings.audit_interval_s)
            book_failing &= self.feeds.keys()  # a book closed and opened again starts afresh
            for symbol, feed in list(self.feeds.items()):
                try:
                    if not await feed.audit():
                        continue  # not live: nothing asked, nothing learnt
                except Exception as exc:
                    if _venue_wide(exc):
                        self.audit_rounds_cut += 1
                        if venue_failing is None:
                            log.warning("book audits paused: the venue's snapshots fail; trying again each interval",
                                        extra={"venue": self.venue, "symbol": symbol, "error": type(exc).__name__})
                        venue_failing = type(exc).__name__
                        break
                    if symbol not in book_failing:
                        book_failing.add(symbol)
                        log.warning("audit snapshot failed", extra={
                            "symbol": symbol, "error": str(exc) if isinstance(exc, SyndrError) else type(exc).__name__})
                    continue
                if venue_failing is not None:
                    log.info("book audits resumed: the venue's snapshots answer again",
                             extra={"venue": self.venue, "after": venue_failing})
                    venue_failing = None
                book_failing.discard(symbol)

    async def attach(self, symbol: str, depth: int) -> BookConsumer:
        pending_close = self._closing.pop(symbol, None)
        if pending_close is not None:
            pending_close.cancel()
        feed = self.feeds.get(symbol)
        if feed is None:
            # The feed starts in a task of its own, shared by every caller waiting for it: one caller giving up
            # (deadline, cancel) neither cancels the start nor hands its CancelledError to the others.
            starting = self._starting.get(symbol)
            if starting is None:
                starting = asyncio.create_task(self._start_feed(symbol), name=f"start-{self.venue}-{symbol}")
                self._starting[symbol] = starting
                starting.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved if none waits
            self._waiting[symbol] = self._waiting.get(symbol, 0) + 1
            try:
                feed = await asyncio.shield(starting)
            except asyncio.CancelledError:
                self._waiting[symbol] -= 1
                self._idle_if_unclaimed(symbol, starting)
                raise
            except BaseException:
                self._waiting[symbol] -= 1
                raise
            self._waiting[symbol] -= 1
        return feed.attach(depth)

    async def _start_feed(self, symbol: str) -> InstrumentFeed:
        try:
            feed = InstrumentFeed(self.venue, symbol, self.ws, self.http, self.settings, self._idle, self._drop)
            await feed.start()
            self.feeds[symbol] = feed
        finally:
            self._starting.pop(symbol, None)
        self._idle_if_unclaimed(symbol, None)
        return feed

    def _idle_if_unclaimed(self, symbol: str, starting: asyncio.Future[InstrumentFeed] | None) -> None:
        """Every caller that waited for this feed's start gave up: let it linger and close like an idle one."""
        if self._waiting.get(symbol, 0) > 0:
            return
        self._waiting.pop(symbol, None)
        if starting is not None and (not starting.done() or starting.cancelled() or starting.exception()):
            return  # still starting (it checks when done), or it failed: nothing to close
        feed = self.feeds.get(symbol)
        if feed is not None and not feed.views and symbol not in self._closing:
            self._idle(feed)

    def detach(self, consumer: BookConsumer) -> None:
        consumer.view.feed.detach(consumer)

    def _idle(self, feed: InstrumentFeed) -> None:
        """The last consumer left: unsubscribe upstream after a short linger."""
        if self.feeds.get(feed.symbol) is not feed:
            return  # dropped already (`_drop`); the symbol may have a new feed, with a linger of its own
        loop = asyncio.get_running_loop()
        self._closing[feed.symbol] = loop.call_later(self.settings.linger_unsubscribe_s,
                                                     lambda: asyncio.ensure_future(self._close(feed)))

    def _drop(self, feed: InstrumentFeed) -> None:
        """The venue ended the feed (refused its channel after a reconnect, or no longer knows its instrument):
        forget the feed now (its streams end), so that the next stream of the symbol starts a new one rather than
        join a dead one, and close it (unsubscribing a channel the venue still streams)."""
        if self.feeds.get(feed.symbol) is feed:
            del self.feeds[feed.symbol]
            pending_close = self._closing.pop(feed.symbol, None)
            if pending_close is not None:
                pending_close.cancel()
            closing = asyncio.create_task(feed.aclose(), name=f"drop-{self.venue}-{feed.symbol}")
            self._dropping.add(closing)
            closing.add_done_callback(self._dropping.discard)

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

    def symbols(self) -> set[str]:
        """The symbols with a feed, live, lingering or starting."""
        return set(self.feeds) | set(self._starting)

    def end(self, symbol: str, error: PorticoError) -> None:
        """The instrument is delisted: every stream of its book ends with `error` and its feed is dropped and
        unsubscribed (`InstrumentFeed.end`); a feed still starting is ended as soon as it has started."""
        feed = self.feeds.get(symbol)
        if feed is not None:
            feed.end(error)
        starting = self._starting.get(symbol)
        if starting is not None:
            def started(task: asyncio.Task[InstrumentFeed]) -> None:
                if not task.cancelled() and task.exception() is None:
                    task.result().end(error)
            starting.add_done_callback(started)

    async def aclose(self) -> None:
        await cancel_and_wait(self._auditor)
        starting = list(self._starting.values())
        for task in starting:
            task.cancel()
        await asyncio.gather(*starting, return_exceptions=True)
        for handle in self._closing.values():
            handle.cancel()
        await asyncio.gather(*self._dropping, return_exceptions=True)
        for feed in list(self.feeds.values()):
            await feed.aclose()
        self.feeds.clear()
