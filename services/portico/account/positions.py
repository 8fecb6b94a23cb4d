"""Per-account position streams from the venue's `user.positions` channel, with catch-up after reconnects.

One authenticated WebSocket per account that someone streams. After a
reconnect (or a local overflow) the feed reads `private/get_positions` and
emits every position that differs from what it last emitted, including ones
that went flat (size 0), so a consumer's view is whole again. Each update gets
the account's next sequence; a consumer that cannot keep up is cut off with
RESOURCE_EXHAUSTED. A stream carries changes from the moment it starts (the
account's sequence goes on where it is); `ListPositions` gives the state.
"""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal
from typing import Any

from portico.account.convert import position_proto
from portico.account.v1 import account_service_pb2 as pb
from portico.runtime.fanout import StreamConsumer
from portico.runtime.lifecycle import cancel_and_wait
from portico.venues.accounts import SyndrAccounts
from portico.venues.syndr import models
from portico.venues.syndr.errors import SyndrError
from portico.venues.syndr.ws import Message, Overflow, Reconnected, SyndrWebSocket

__all__ = ["PositionFeed", "PositionFeeds"]

log = logging.getLogger("portico.account.positions")


class PositionFeed:
    """One account's positions: the last emitted state per instrument, and its consumers."""

    def __init__(self, venue_name: str, account: str, ws: SyndrWebSocket, accounts: SyndrAccounts):
        self.venue_name = venue_name
        self.account = account
        self._ws = ws
        self._accounts = accounts
        self._consumers: set[StreamConsumer] = set()
        self._last: dict[str, tuple[Any, ...]] = {}
        self.sequence = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._ws.start()
        subscription = await self._ws.subscribe(["user.positions"])
        self._task = asyncio.create_task(self._run(subscription), name=f"account-positions-{self.account}")

    def add(self, consumer: StreamConsumer) -> None:
        self._consumers.add(consumer)

    def remove(self, consumer: StreamConsumer) -> None:
        self._consumers.discard(consumer)

    @property
    def consumers(self) -> int:
        return len(self._consumers)

    async def _run(self, subscription: Any) -> None:
        async for event in subscription:
            try:
                if isinstance(event, Message):
                    update = models.parse_position_update(event.data)
                    if update.position is not None:
                        self._emit(update.position)
                elif isinstance(event, Reconnected | Overflow):
                    await self.catch_up()
            except SyndrError as exc:
                log.warning("position update failed", extra={"account": self.account, "error": type(exc).__name__})
            except Exception:
                log.exception("position update failed", extra={"account": self.account})

    def _emit(self, position: models.Position, *, quietly: bool = False) -> None:
        version = (position.direction, position.size, position.average_price, position.realized_pnl,
                   position.unrealized_pnl, position.last_update_timestamp)
        if self._last.get(position.instrument_name) == version:
            return
        self._last[position.instrument_name] = version
        if quietly:
            return
        self.sequence += 1
        message = pb.PositionUpdate(sequence=self.sequence,
                                    position=position_proto(self.venue_name, self.account, position))
        for consumer in list(self._consumers):
            consumer.offer(message)

    async def catch_up(self, *, quietly: bool = False) -> None:
        """Read the venue's positions and emit what differs from what was emitted (flat ones too).

        `quietly` only records them (the feed's starting point).
        """
        result = (await self._accounts.call(self.account, "private/get_positions")).result
        current = {p.instrument_name: p for p in models.parse_positions(result)}
        for name in list(self._last):
            if name not in current and self._last[name][1] != Decimal(0):
                current[name] = models.Position(instrument_name=name, direction="buy", size=Decimal(0),
                                                average_price=Decimal(0))
        for position in current.values():
            self._emit(position, quietly=quietly)

    async def aclose(self) -> None:
        await cancel_and_wait(self._task)
        await self._ws.aclose()


class PositionFeeds:
    """One feed per (venue, account), started by the first stream and kept while the process runs."""

    def __init__(self, ws_url: str, accounts: SyndrAccounts):
        self._ws_url = ws_url
        self._accounts = accounts
        self._feeds: dict[tuple[str, str], PositionFeed] = {}
        self._lock = asyncio.Lock()

    async def get(self, venue_name: str, account: str) -> PositionFeed:
        key = (venue_name, account.lower())
        async with self._lock:
            feed = self._feeds.get(key)
            if feed is None:
                session = await self._accounts.session(account)
                ws = SyndrWebSocket(self._ws_url, credentials=session.record.credentials, compress=False,
                                    rate_budget=self._accounts.budget(session.record),
                                    refresh_credentials=lambda: self._accounts.current_credentials(account))
                feed = PositionFeed(venue_name, account, ws, self._accounts)
                try:
                    await feed.start()
                    await feed.catch_up(quietly=True)  # the starting point: later changes are compared with it
                except BaseException:
                    await feed.aclose()
                    raise
                self._feeds[key] = feed
            return feed

    async def aclose(self) -> None:
        for feed in self._feeds.values():
            await feed.aclose()
        self._feeds.clear()
