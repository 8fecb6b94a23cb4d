"""Per-account order and fill streams from the venue's private channels, with catch-up after reconnects.

One authenticated WebSocket per account carries `user.orders.ALL.raw` and
`user.fills.ALL`. Every update is journaled (so the journal follows orders
to their final state even with nobody streaming) and fanned out to the
account's gRPC consumers. After a reconnect (or a local overflow) the feed
reads open orders, recent order history and recent fills over HTTP and
emits whatever it had not seen, so a consumer misses no order's latest
state and no fill. A catch-up read that fails is retried with growing pauses
while live updates go on (`CatchUp`); if the venue still cannot be read, the
account's streams end with UNAVAILABLE. The read reaches as far back as the
gap can: order history back past the newest update handled before the cut
(and past the creation of every order last emitted open that the venue no
longer lists open, however old), and fills back past the newest fill handled
(`_CATCH_UP_MARGIN_MS` further, for updates in flight when it dropped), in
as many pages as that takes. An order update older than one
already emitted for that order (a notification that queued while the
catch-up read a later state) is not emitted: a consumer's last word on an
order is the newest the feed saw.
Each update gets the next number of the account's sequence (orders and fills
count separately; a feed that replaces an ended one goes on from its numbers;
a process starts every account's numbers at its start time in microseconds, so
they go on upwards across restarts);
a consumer that cannot keep up is cut off with RESOURCE_EXHAUSTED rather than
silently skipped.

The stream reflects the venue, not the journal: an update the journal could
not take is still emitted (and journaled again later), so a journal outage
never costs a consumer an update or a sequence number. After a reconnect the
socket authenticates with the account's current API key (read again from
Vault), so a rotated key does not silence the feed. If the venue refuses to
subscribe a channel again after a reconnect, the account's streams end with
that refusal (`refused_channel_error`) and the feed is dropped: the next
stream or order starts a new one. While the journal still holds orders of the
account that are not final, the service tries to follow it again by itself,
with growing pauses (`AccountFeeds._follow_again`; so too when a feed started
in the background, at start or after an order, could not start), so orders
resting at the venue do not stay open in the journal for want of a client; the
feed that follows catches up from where the ended one stopped (`Watermarks`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from portico.execution.convert import fill_proto, order_proto
from portico.execution.model import FINAL_STATES, OrderState
from portico.execution.orders import OrderManager, order_at_version, stored_is_newer, venue_state, venue_version
from portico.execution.v1 import execution_service_pb2 as pb
from portico.execution.venue import (
    HISTORY_PAGE,
    SyndrVenue,
    history_until_s,
    open_orders,
    order_history_page,
    user_trades_page,
)
from portico.runtime.fanout import CatchUp, ConsumerFeed, RecentKeys
from portico.runtime.lifecycle import cancel_and_wait
from portico.venues.syndr import models
from portico.venues.syndr.errors import SyndrError, SyndrProtocolError, refused_channel_error
from portico.venues.syndr.http import backoff_s
from portico.venues.syndr.ws import ChannelRefused, Message, Overflow, Reconnected, SyndrWebSocket

__all__ = ["AccountFeed", "AccountFeeds"]

log = logging.getLogger("portico.execution.streams")

CHANNELS: Final = ("user.orders.ALL.raw", "user.fills.ALL")
# Dedupe memory: a catch-up re-reads at most a few hundred recent orders and fills, so remembering the last
# few thousand updates is enough, and keeps the process's memory flat however long it runs.
_SEEN_LIMIT: Final = 5_000
# A catch-up's first page of order history and of fills (all of it is emitted unless already emitted); further
# pages (of `HISTORY_PAGE`) are read only while the gap reaches back further.
_CATCH_UP_ORDERS: Final = 200
_CATCH_UP_FILLS: Final = 500
# What the channels missed is newer than the newest update they delivered before the cut, give or take venue
# timestamps that are only roughly ordered and the updates in flight when the connection dropped: a catch-up
# reads back this much further (what it reads again is not emitted again).
_CATCH_UP_MARGIN_MS: Final = 10_000
# Until the feed has handled an update, the newest is taken to be its start, less this much for the venue's clock
# being behind ours: what happened before the feed started is nobody's gap.
_START_SLACK_MS: Final = 60_000
# A journal write that failed is retried after this, the pause doubling up to the maximum while it keeps failing.
_JOURNAL_RETRY_S: Final = 1.0
_JOURNAL_RETRY_MAX_S: Final = 30.0
# After the venue refused an account's channel, following it again is tried after this, the pause doubling up to
# the maximum while it keeps failing (each failure logged once).
_FOLLOW_AGAIN_S: Final = 1.0
_FOLLOW_AGAIN_MAX_S: Final = 60.0
# The journal states of an order the venue may still change: while an account has one, the service follows it.
_NOT_FINAL: Final = frozenset(OrderState) - FINAL_STATES


@dataclass(frozen=True, slots=True)
class Watermarks:
    """Where a feed stopped: how far back its next catch-up would read (orders, fills; epoch ms), and the orders
    it last saw open (order id -> creation ms). The account's next feed catches up from there."""

    since_ms: tuple[int, int]
    open_orders: dict[str, int]


def _earlier(since: tuple[int, int], other: tuple[int, int] | None) -> tuple[int, int]:
    """The earlier of two catch-up starts, orders and fills each on its own."""
    return since if other is None else (min(since[0], other[0]), min(since[1], other[1]))


def _ms(order: dict[str, Any], key: str) -> int:
    """An order's timestamp in epoch milliseconds, whatever unit the venue sent (as the typed models scale it);
    0 if it is missing or not a number."""
    try:
        return models.to_ms(int(order.get(key) or 0))
    except (TypeError, ValueError):
        return 0


def _fill_ms(fill: dict[str, Any]) -> int:
    """A fill's timestamp in epoch milliseconds, as `_fill` reads it."""
    return models.parse_user_trade(fill).timestamp


def _order_of(data: Any) -> dict[str, Any]:
    """The order object of a `user.orders` notification (the full parse happens once, if it is streamed)."""
    order = data.get("order") if isinstance(data, dict) else None
    if not isinstance(order, dict) or "order_id" not in order:
        raise SyndrProtocolError("user.orders: notification without an order object")
    return order


class AccountFeed(ConsumerFeed):
    """The private channels of one account: journaled and fanned out."""

    def __init__(self, venue_name: str, account: str, ws: SyndrWebSocket, venue: SyndrVenue, orders: OrderManager,
                 on_end: Callable[[AccountFeed], None] | None = None):
        super().__init__(on_end, logger=log, what="the account's channel", extra={"account": account})
        self.venue_name = venue_name
        self.account = account
        self._ws = ws
        self._venue = venue
        self._orders = orders
        # The last state emitted per order id (a `venue_version`), oldest forgotten first.
        self._emitted: OrderedDict[str, tuple[Any, ...]] = OrderedDict()
        self._seen_fills = RecentKeys(_SEEN_LIMIT)
        # Orders whose last emitted state is open (order id -> creation time): one the venue no longer lists
        # open changed while the channels were cut, and a catch-up reads the history back to its creation.
        self._open: dict[str, int] = {}
        # The newest venue timestamps handled (order updates, fills), and how far back the next catch-up reads
        # (orders, fills; None: its first pages only), with a count of the catch-ups asked for.
        self._newest_order_ms = self._newest_fill_ms = int(time.time() * 1000) - _START_SLACK_MS
        self._catch_up_since: tuple[int, int] | None = None
        self._catch_up_asks = 0
        # Venue updates the journal did not take (the latest per order id), retried by `_journal_retries`.
        self._unjournaled: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._journal_lock = asyncio.Lock()  # one journal write of this feed at a time: a retry never overtakes
        self._journal_wake = asyncio.Event()
        self._retrying: asyncio.Task[None] | None = None
        self.order_sequence = 0
        self.fill_sequence = 0
        self._task: asyncio.Task[None] | None = None
        self._catch_up = CatchUp(self.catch_up, lambda: self._consumers, logger=log, extra={"account": account},
                                 name=f"execution-feed-catch-up-{account}")
        self.ready = asyncio.Event()

    async def start(self) -> None:
        await self._ws.start()
        subscription = await self._ws.subscribe(list(CHANNELS))
        self.ready.set()
        self._task = asyncio.create_task(self._run(subscription), name=f"execution-feed-{self.account}")

    async def _run(self, subscription: Any) -> None:
        async for event in subscription:
            if isinstance(event, ChannelRefused):  # its last event: the venue will not feed this account any more
                self._end(refused_channel_error(event.channel, event.error, venue=self.venue_name))
                return
            await self._handle(event)

    async def _handle(self, event: Any) -> None:
        try:
            if isinstance(event, Message):
                if event.channel.startswith("user.orders."):
                    await self._order(_order_of(event.data))
                elif event.channel.startswith("user.fills."):
                    self._fill(event.data)
            elif isinstance(event, Reconnected | Overflow):
                self._ask_catch_up()
                await self._catch_up.run()  # retried in the background if the venue cannot be read now
        except SyndrError as exc:
            log.warning("account feed update failed", extra={"account": self.account, "error": type(exc).__name__})
        except Exception:
            log.exception("account feed update failed", extra={"account": self.account})

    def _ask_catch_up(self) -> None:
        """Fix how far back the catch-up for this reconnect (or overflow) reads: past the newest updates handled
        until now, which live updates handled while it is retried must not move. The earliest asked for holds
        until a catch-up that started after it succeeds."""
        self._catch_up_since = _earlier(self._since_newest(), self._catch_up_since)
        self._catch_up_asks += 1

    def _since_newest(self) -> tuple[int, int]:
        """How far back a catch-up must read for what followed the newest updates handled (orders, fills)."""
        return (max(0, self._newest_order_ms - _CATCH_UP_MARGIN_MS),
                max(0, self._newest_fill_ms - _CATCH_UP_MARGIN_MS))

    def consumers(self, kind: str) -> int:
        """How many streams of `kind` ("orders", "fills") this feed has now."""
        return sum(1 for c in self._consumers if c.kind == kind)

    def watermarks(self) -> Watermarks:
        """Where this feed stands: what a catch-up asked for now would read back to, and its open orders."""
        return Watermarks(_earlier(self._since_newest(), self._catch_up_since), dict(self._open))

    def resume(self, marks: Watermarks) -> None:
        """Catch up (first, before `start`) from where an ended feed of the account stopped, so what the venue
        did while nobody followed the account reaches the journal, however far back that reaches."""
        self._open.update(marks.open_orders)
        self._catch_up_since = _earlier(marks.since_ms, self._catch_up_since)

    async def _order(self, order: dict[str, Any]) -> None:
        """Journal a venue order update, then emit it unless the order's consumers have it or a later state."""
        order_id = str(order.get("order_id", ""))
        entry = await self._journal(order)
        self._newest_order_ms = max(self._newest_order_ms, _ms(order, "last_update_timestamp"))
        version = venue_version(order)
        last = self._emitted.get(order_id)
        if last is not None and (last == version or stored_is_newer(order_at_version(order_id, last), order)):
            return  # emitted already, or older than what was: the consumer's last word stays the newest
        if venue_state(order) == OrderState.OPEN:
            self._open[order_id] = _ms(order, "creation_timestamp")
        else:
            self._open.pop(order_id, None)
        self._emitted[order_id] = version
        self._emitted.move_to_end(order_id)
        if len(self._emitted) > _SEEN_LIMIT:
            self._emitted.popitem(last=False)
        self.order_sequence += 1
        consumers = [c for c in self._consumers if c.kind == "orders"]
        if not consumers:
            return  # nobody streams this account's orders: the journal has it, no message to build
        message = pb.OrderUpdate(sequence=self.order_sequence,
                                 order=order_proto(self.venue_name, self.account, order, entry))
        for consumer in consumers:
            consumer.offer(message)

    async def _journal(self, order: dict[str, Any]) -> Any:
        """`on_venue_order`, or None if the journal failed: the update is still emitted and journaled later.

        The stream reflects the venue, and its sequence exists so that a consumer can tell it missed an
        update, so a journal outage must not swallow one: the consumer gets the venue's word (without what
        only the journal knows, such as the client order id) and the journal gets it from a retry.
        """
        order_id = str(order.get("order_id", ""))
        try:
            async with self._journal_lock:
                entry = await self._orders.on_venue_order(self.venue_name, self.account, order)
        except Exception:
            log.warning("journal update failed; the update is streamed and journaling will be retried",
                        extra={"account": self.account, "order_id": order_id},
                        exc_info=not self._unjournaled)  # the traceback once per outage, not per update
            self._remember_unjournaled(order)
            return None
        pending = self._unjournaled.get(order_id)
        if pending is not None and not stored_is_newer(pending, order):
            del self._unjournaled[order_id]  # what failed before is journaled now (or older than what is)
        return entry

    def _remember_unjournaled(self, order: dict[str, Any]) -> None:
        order_id = str(order.get("order_id", ""))
        pending = self._unjournaled.get(order_id)
        if pending is None or not stored_is_newer(pending, order):
            self._unjournaled[order_id] = order
        self._unjournaled.move_to_end(order_id)
        if len(self._unjournaled) > _SEEN_LIMIT:
            lost, _ = self._unjournaled.popitem(last=False)
            log.error("journal retry memory full: this order's last venue update is not retried (the next "
                      "catch-up or a read of the order journals it)", extra={"account": self.account,
                                                                             "order_id": lost})
        self._journal_wake.set()
        if self._retrying is None or self._retrying.done():
            self._retrying = asyncio.create_task(self._journal_retries(),
                                                 name=f"execution-feed-journal-{self.account}")

    async def _journal_retries(self) -> None:
        """Journal the updates the journal refused, with growing pauses while it keeps refusing."""
        delay = _JOURNAL_RETRY_S
        while True:
            await self._journal_wake.wait()
            await asyncio.sleep(delay)
            failed, error = 0, ""
            for order_id, order in list(self._unjournaled.items()):
                if self._unjournaled.get(order_id) is not order:
                    continue  # journaled meanwhile, or replaced by a later update (retried next)
                try:
                    async with self._journal_lock:
                        await self._orders.on_venue_order(self.venue_name, self.account, order)
                except Exception as exc:
                    failed, error = failed + 1, type(exc).__name__
                    continue
                if self._unjournaled.get(order_id) is order:
                    del self._unjournaled[order_id]
            if failed:
                log.warning("journal still failing; %d order update(s) wait to be journaled", failed,
                            extra={"account": self.account, "error": error})
                delay = min(delay * 2, _JOURNAL_RETRY_MAX_S)
            else:
                delay = _JOURNAL_RETRY_S
            if not self._unjournaled:
                self._journal_wake.clear()

    def _fill(self, data: dict[str, Any]) -> None:
        trade = models.parse_user_trade(data)
        self._newest_fill_ms = max(self._newest_fill_ms, trade.timestamp)
        if not self._seen_fills.add(trade.id):
            return
        self.fill_sequence += 1
        consumers = [c for c in self._consumers if c.kind == "fills"]
        if not consumers:
            return
        message = pb.FillUpdate(sequence=self.fill_sequence,
                                fill=fill_proto(self.venue_name, self.account, trade, {}))
        for consumer in consumers:
            consumer.offer(message)

    async def catch_up(self) -> None:
        """Read what the venue says now and emit whatever the channels did not deliver."""
        asks, since = self._catch_up_asks, self._catch_up_since
        await self._catch_up_orders(None if since is None else since[0])
        await self._catch_up_fills(None if since is None else since[1])
        if self._catch_up_asks == asks:  # none asked for meanwhile: the next one reads from where it stands then
            self._catch_up_since = None

    async def _catch_up_orders(self, since_ms: int | None) -> None:
        """The open orders and the order history, newest first, back past `since_ms` and past the creation of
        every order last emitted open that the venue no longer lists open."""
        orders = await open_orders(self._venue, self.account)
        listed = {str(o.get("order_id", "")) for o in orders}
        gone = {order_id: created for order_id, created in self._open.items() if order_id not in listed}
        back_to = min([*gone.values(), *([] if since_ms is None else [since_ms])], default=None)
        offset, count = 0, _CATCH_UP_ORDERS
        while True:
            page = await order_history_page(self._venue, self.account, None, offset, count)
            # The first page is all emitted (as ever); the pages further back only for what the gap concerns.
            orders += page if offset == 0 else [
                o for o in page if str(o.get("order_id", "")) in gone
                or (since_ms is not None and _ms(o, "creation_timestamp") >= since_ms)]
            if len(page) < count or back_to is None or min(_ms(o, "creation_timestamp") for o in page) < back_to:
                break
            offset, count = offset + len(page), HISTORY_PAGE
        for order in sorted(orders, key=lambda o: _ms(o, "last_update_timestamp")):
            await self._order(order)
        read = {str(o.get("order_id", "")) for o in orders}
        for order_id in gone.keys() - read:  # the venue lists it nowhere any more: nothing more to learn
            self._open.pop(order_id, None)

    async def _catch_up_fills(self, since_ms: int | None) -> None:
        """The fills, newest first (then emitted oldest first), back past `since_ms`. The window reaches as far
        past our clock as the order history's (the venue stamps fills with its own)."""
        until_s = history_until_s()
        fills: list[dict[str, Any]] = []
        offset, count = 0, _CATCH_UP_FILLS
        while True:
            page = await user_trades_page(self._venue, self.account, None, offset, count, until_s)
            fills += page if offset == 0 else [f for f in page if _fill_ms(f) >= (since_ms or 0)]
            if len(page) < count or since_ms is None or min(_fill_ms(f) for f in page) < since_ms:
                break
            offset, count = offset + len(page), HISTORY_PAGE
        for fill in reversed(fills):
            self._fill(fill)

    async def aclose(self) -> None:
        await cancel_and_wait(self._retrying)
        await cancel_and_wait(self._task)
        await self._catch_up.aclose()  # after the task that starts it
        await self._ws.aclose()


class AccountFeeds:
    """One feed per (venue, account), started on first use and kept for the life of the process (or until the
    venue refuses its channels: then followed again while the account has orders that are not final)."""

    def __init__(self, ws_url: str, venue: SyndrVenue, orders: OrderManager):
        self._ws_url = ws_url
        self._venue = venue
        self._orders = orders
        self._feeds: dict[tuple[str, str], AccountFeed] = {}
        self._starting: dict[tuple[str, str], asyncio.Task[AccountFeed]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._retiring: set[asyncio.Task[None]] = set()  # closing feeds that ended
        self._resume: dict[tuple[str, str], Watermarks] = {}  # where the ended feed of an account stopped
        # The (order, fill) sequence numbers an account's ended feed had reached: the feed that replaces it goes
        # on from there, so the account's numbers never repeat within the process (kept however the feed ended).
        self._sequences: dict[tuple[str, str], tuple[int, int]] = {}
        # Where every account's numbers start in this process: its start in epoch microseconds, so that they go on
        # upwards across restarts of the service (a process numbers far fewer updates than microseconds pass)
        # instead of back to 1, where a consumer would take numbers it saw before for repeats.
        self._first_sequence = time.time_ns() // 1_000
        self._following_again: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._closing = False

    def consumers(self, venue_name: str, account: str, kind: str) -> int:
        """How many streams of `kind` follow the account's live feed now (0 without one): for operators and tests.
        A stream counts once its feed has subscribed and caught up: it gets every update from then on."""
        feed = self._feeds.get((venue_name, account.lower()))
        return 0 if feed is None or feed.ended is not None else feed.consumers(kind)

    async def get(self, venue_name: str, account: str) -> AccountFeed:
        key = (venue_name, account.lower())
        feed = self._feeds.get(key)
        if feed is not None and feed.ended is None:
            return feed
        task = self._starting.get(key)
        if task is None:
            task = asyncio.create_task(self._start(venue_name, account), name=f"execution-feed-start-{account}")
            task.add_done_callback(lambda t: self._started(key, t))
            self._starting[key] = task
        return await asyncio.shield(task)

    def _started(self, key: tuple[str, str], task: asyncio.Task[AccountFeed]) -> None:
        """A start ended: it is no longer the account's start, whether or not anyone still waits for it (its
        callers may all have gone away; a start left behind would keep `ensure` from starting another, and hand
        its old error to the next caller). Its outcome is retrieved even if nobody waits."""
        if self._starting.get(key) is task:
            del self._starting[key]
        if not task.cancelled():
            task.exception()

    def ensure(self, venue_name: str, account: str) -> None:
        """Start following an account in the background (the journal then tracks its orders to the end)."""
        key = (venue_name, account.lower())
        feed = self._feeds.get(key)
        if (feed is not None and feed.ended is None) or key in self._starting:
            return
        task = asyncio.create_task(self._quietly(venue_name, account))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _quietly(self, venue_name: str, account: str) -> None:
        try:
            await self.get(venue_name, account)
        except Exception:
            log.warning("cannot follow account", extra={"account": account}, exc_info=True)
            # Refused at subscribe, or its first catch-up failed: tried again while the account has orders that
            # are not final, as for a feed that ended (a restart while the venue refuses the channel, say).
            self._follow_again_later(venue_name, account)

    async def _start(self, venue_name: str, account: str) -> AccountFeed:
        session = await self._venue.session(account)
        ws = SyndrWebSocket(self._ws_url, credentials=session.record.credentials, compress=False,
                            rate_budget=self._venue.budget(session.record),
                            refresh_credentials=lambda: self._venue.current_credentials(account))
        feed = AccountFeed(venue_name, account, ws, self._venue, self._orders, on_end=self._retire)
        key = (venue_name, account.lower())
        marks = self._resume.get(key)
        if marks is not None:
            feed.resume(marks)
        feed.order_sequence, feed.fill_sequence = self._sequences.get(key, (self._first_sequence,) * 2)
        try:
            await feed.start()
            await feed.catch_up()
            if feed.ended is not None:  # a channel refused by a reconnect while it caught up
                raise feed.ended
        except BaseException:
            await feed.aclose()
            raise
        self._feeds[key] = feed
        self._resume.pop(key, None)  # caught up from there
        return feed

    def _retire(self, feed: AccountFeed) -> None:
        """A feed that ended: forget it and close it (in the background: this runs in the feed's own task), and
        follow the account again from where it stopped."""
        key = (feed.venue_name, feed.account.lower())
        if self._feeds.get(key) is feed:
            del self._feeds[key]
        self._resume[key] = feed.watermarks()  # it resumed any earlier ones, so they are in its own
        self._sequences[key] = (feed.order_sequence, feed.fill_sequence)
        task = asyncio.create_task(feed.aclose(), name=f"execution-feed-close-{feed.account}")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)
        self._follow_again_later(feed.venue_name, feed.account)

    def _follow_again_later(self, venue_name: str, account: str) -> None:
        """Start `_follow_again` for the account, unless it runs already (one per account) or the service closes."""
        key = (venue_name, account.lower())
        following = self._following_again.get(key)
        if not self._closing and (following is None or following.done()):
            self._following_again[key] = asyncio.create_task(
                self._follow_again(venue_name, account), name=f"execution-feed-follow-again-{account}")

    async def _follow_again(self, venue_name: str, account: str) -> None:
        """Start a feed for the account again, with growing pauses, while the journal holds orders of it that are
        not final: nobody else may (no client streams it or places orders), and without a feed their fills and
        cancels at the venue would never reach the journal. Ends once a feed is live or nothing is left open."""
        pause = backoff_s(1, _FOLLOW_AGAIN_S, _FOLLOW_AGAIN_MAX_S)
        attempt = 0
        while True:
            await asyncio.sleep(pause)
            attempt += 1
            try:
                if not await self._orders.journal.entries(venue_name, account, states=_NOT_FINAL, limit=1):
                    log.info("the account has no open order left: not following it again",
                             extra={"account": account, "attempt": attempt})
                    self._resume.pop((venue_name, account.lower()), None)  # nothing left to catch up for
                    return
                feed = await self.get(venue_name, account)
                if feed.ended is None:
                    log.info("following the account again", extra={"account": account, "attempt": attempt})
                    return
                error = type(feed.ended).__name__  # refused again as it started: the pause grows all the same
            except Exception as exc:
                error = type(exc).__name__
            pause = backoff_s(attempt + 1, _FOLLOW_AGAIN_S, _FOLLOW_AGAIN_MAX_S)
            log.warning("cannot follow the account again; its open orders are not tracked until it can be: "
                        "trying again in %.1f s", pause, extra={"account": account, "attempt": attempt, "error": error})

    async def aclose(self) -> None:
        self._closing = True
        for task in [*self._following_again.values(), *self._background, *self._starting.values()]:
            await cancel_and_wait(task)
        self._following_again.clear()
        self._starting.clear()
        await asyncio.gather(*self._retiring, return_exceptions=True)
        for feed in self._feeds.values():
            await feed.aclose()
        self._feeds.clear()
