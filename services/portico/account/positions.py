"""Per-account position streams from the venue's `user.positions` channel, with catch-up after reconnects.

One authenticated WebSocket per account that someone streams. After a
reconnect (or a local overflow) the feed reads `private/get_positions` and
emits every position that differs from what it last emitted, including ones
that went flat (size 0), so a consumer's view is whole again. A read that
fails is retried with growing pauses while live updates go on (`CatchUp`);
if the venue still cannot be read, the account's streams end with
UNAVAILABLE. A position state older than one already emitted (by its
`last_update_timestamp`) is never emitted after it, and a catch-up leaves out
instruments a live update arrived for while it read. Each update gets the
account's next sequence; a consumer that cannot keep up is cut off with
RESOURCE_EXHAUSTED. A stream carries changes from the moment it starts (the
account's sequence goes on where it is, also when a feed replaces one that
ended, and across restarts: it starts at the process's start in epoch
microseconds); `ListPositions` gives the state. A
feed that cannot start (the venue's WebSocket unreachable) within
`_START_TIMEOUT_S` fails the stream with UNAVAILABLE; feeds of different
accounts start independently. If the venue refuses to subscribe
`user.positions` again after a reconnect, the account's streams end with that
refusal (`refused_channel_error`) and the feed is dropped: the next stream
starts a new one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Final

from portico.account.convert import position_proto
from portico.account.v1 import account_service_pb2 as pb
from portico.runtime.fanout import CatchUp, ConsumerFeed
from portico.runtime.lifecycle import cancel_and_wait
from portico.venues.accounts import SyndrAccounts
from portico.venues.syndr import models
from portico.venues.syndr.errors import SyndrConnectionError, SyndrError, refused_channel_error
from portico.venues.syndr.ws import ChannelRefused, Message, Overflow, Reconnected, SyndrWebSocket

__all__ = ["PositionFeed", "PositionFeeds"]

log = logging.getLogger("portico.account.positions")

# The first stream of an account waits this long for its feed (connect, subscribe, first read), then fails
# UNAVAILABLE: the WebSocket client itself retries an unreachable venue for ever.
_START_TIMEOUT_S: Final = 10.0


class PositionFeed(ConsumerFeed):
    """One account's positions: the last emitted state per instrument, and its consumers."""

    def __init__(self, venue_name: str, account: str, ws: SyndrWebSocket, accounts: SyndrAccounts,
                 on_end: Callable[[PositionFeed], None] | None = None):
        super().__init__(on_end, logger=log, what="the positions channel", extra={"account": account})
        self.venue_name = venue_name
        self.account = account
        self._ws = ws
        self._accounts = accounts
        self._last: dict[str, tuple[Any, ...]] = {}
        self._newest: dict[str, int] = {}  # per instrument, the latest `last_update_timestamp` emitted
        # Live position updates handled so far, and per instrument the count when its last one was handled:
        # a catch-up leaves out the instruments a live update came for after its read was sent.
        self._live = 0
        self._live_at: dict[str, int] = {}
        self.sequence = 0
        self._task: asyncio.Task[None] | None = None
        self._catch_up = CatchUp(self.catch_up, lambda: self._consumers, logger=log, extra={"account": account},
                                 name=f"account-positions-catch-up-{account}")

    async def start(self) -> None:
        await self._ws.start()
        subscription = await self._ws.subscribe(["user.positions"])
        self._task = asyncio.create_task(self._run(subscription), name=f"account-positions-{self.account}")

    @property
    def consumers(self) -> int:
        return len(self._consumers)

    async def _run(self, subscription: Any) -> None:
        async for event in subscription:
            if isinstance(event, ChannelRefused):  # its last event: the venue will not feed this account any more
                self._end(refused_channel_error(event.channel, event.error, venue=self.venue_name))
                return
            try:
                if isinstance(event, Message):
                    update = models.parse_position_update(event.data)
                    if update.position is not None:
                        self._live += 1
                        self._live_at[update.position.instrument_name] = self._live
                        self._emit(update.position)
                elif isinstance(event, Reconnected | Overflow):
                    await self._catch_up.run()  # retried in the background if the venue cannot be read now
            except SyndrError as exc:
                log.warning("position update failed", extra={"account": self.account, "error": type(exc).__name__})
            except Exception:
                log.exception("position update failed", extra={"account": self.account})

    def _emit(self, position: models.Position, *, quietly: bool = False) -> None:
        name, at = position.instrument_name, position.last_update_timestamp
        version = (position.direction, position.size, position.average_price, position.realized_pnl,
                   position.unrealized_pnl, at)
        if self._last.get(name) == version:
            return
        newest = self._newest.get(name)
        if at is not None and newest is not None and at < newest:
            return  # older than a state emitted already (a notification that queued while a catch-up read)
        self._last[name] = version
        if at is not None:
            self._newest[name] = at
        if quietly:
            return
        self.sequence += 1
        message = pb.PositionUpdate(sequence=self.sequence,
                                    position=position_proto(self.venue_name, self.account, position))
        for consumer in list(self._consumers):
            consumer.offer(message)

    async def catch_up(self, *, quietly: bool = False) -> None:
        """Read the venue's positions and emit what differs from what was emitted (flat ones too).

        `quietly` only records them (the feed's starting point). An instrument a live update was handled for
        after the read was sent is left out: that update may be newer than the read, and if it is older, every
        change after it comes live too (a lost one means another reconnect or overflow, so another catch-up).
        """
        sent_after = self._live
        result = (await self._accounts.call(self.account, "private/get_positions")).result
        current = {p.instrument_name: p for p in models.parse_positions(result)}
        for name in list(self._last):
            if name not in current and self._last[name][1] != Decimal(0):
                current[name] = models.Position(instrument_name=name, direction="buy", size=Decimal(0),
                                                average_price=Decimal(0))
        for name, position in current.items():
            if self._live_at.get(name, 0) <= sent_after:
                self._emit(position, quietly=quietly)

    async def aclose(self) -> None:
        await cancel_and_wait(self._task)
        await self._catch_up.aclose()  # after the task that starts it
        await self._ws.aclose()


class PositionFeeds:
    """One feed per (venue, account), started by the first stream and kept while the process runs.

    Feeds of different accounts start independently; one that does not start within the time limit
    fails the stream with UNAVAILABLE (`SyndrConnectionError`), and the next stream tries again.
    """

    def __init__(self, ws_url: str, accounts: SyndrAccounts):
        self._ws_url = ws_url
        self._accounts = accounts
        self._feeds: dict[tuple[str, str], PositionFeed] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}  # per account: one start at a time
        self._retiring: set[asyncio.Task[None]] = set()  # closing feeds that ended
        # The sequence an account's ended feed had reached: the feed that replaces it goes on from there, so the
        # account's numbers never repeat within the process. Every account's numbers start at this process's
        # start in epoch microseconds, so that they go on upwards across restarts too (a process numbers far
        # fewer updates than microseconds pass) instead of back to 1, where a consumer would take numbers it saw
        # before for repeats (as execution's order and fill streams do).
        self._sequences: dict[tuple[str, str], int] = {}
        self._first_sequence = time.time_ns() // 1_000

    def consumers(self, venue_name: str, account: str) -> int:
        """How many streams follow the account's live feed now (0 without one): for operators and tests."""
        feed = self._feeds.get((venue_name, account.lower()))
        return 0 if feed is None or feed.ended is not None else feed.consumers

    async def get(self, venue_name: str, account: str) -> PositionFeed:
        key = (venue_name, account.lower())
        feed = self._feeds.get(key)
        if feed is not None and feed.ended is None:
            return feed
        await self._accounts.session(account)  # NOT_FOUND for an account Portico does not hold, before its lock
        async with self._locks.setdefault(key, asyncio.Lock()):
            feed = self._feeds.get(key)
            if feed is None or feed.ended is not None:
                feed = await self._start(venue_name, account)
                self._feeds[key] = feed
            return feed

    async def _start(self, venue_name: str, account: str) -> PositionFeed:
        session = await self._accounts.session(account)
        ws = SyndrWebSocket(self._ws_url, credentials=session.record.credentials, compress=False,
                            rate_budget=self._accounts.budget(session.record),
                            refresh_credentials=lambda: self._accounts.current_credentials(account))
        feed = PositionFeed(venue_name, account, ws, self._accounts, on_end=self._retire)
        feed.sequence = self._sequences.get((venue_name, account.lower()), self._first_sequence)
        limit = asyncio.timeout(_START_TIMEOUT_S)
        try:
            async with limit:
                await feed.start()
                await feed.catch_up(quietly=True)  # the starting point: later changes are compared with it
            if feed.ended is not None:  # the channel refused by a reconnect while it read
                raise feed.ended
        except BaseException as exc:
            await feed.aclose()
            if isinstance(exc, TimeoutError) and limit.expired():
                raise SyndrConnectionError(f"the position feed did not start within {_START_TIMEOUT_S:g} s") from None
            raise
        return feed

    def _retire(self, feed: PositionFeed) -> None:
        """A feed that ended: forget it and close it (in the background: this runs in the feed's own task)."""
        key = (feed.venue_name, feed.account.lower())
        if self._feeds.get(key) is feed:
            del self._feeds[key]
        self._sequences[key] = max(feed.sequence, self._sequences.get(key, 0))
        task = asyncio.create_task(feed.aclose(), name=f"account-positions-close-{feed.account}")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def aclose(self) -> None:
        await asyncio.gather(*self._retiring, return_exceptions=True)
        for feed in self._feeds.values():
            await feed.aclose()
        self._feeds.clear()
