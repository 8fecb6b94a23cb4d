"""Per-account order and fill streams from the venue's private channels, with catch-up after reconnects.

One authenticated WebSocket per account carries `user.orders.ALL.raw` and
`user.fills.ALL`. Every update is journaled (so the journal follows orders
to their final state even with nobody streaming) and fanned out to the
account's gRPC consumers. After a reconnect (or a local overflow) the feed
reads open orders, recent order history and recent fills over HTTP and
emits whatever it had not seen, so a consumer misses no order's latest
state and no fill. Each update gets the next number of the account's
sequence (orders and fills count separately); a consumer that cannot keep
up is cut off with RESOURCE_EXHAUSTED rather than silently skipped.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any, Final

from portico.execution.convert import fill_proto, order_proto
from portico.execution.orders import OrderManager
from portico.execution.v1 import execution_service_pb2 as pb
from portico.execution.venue import SyndrVenue, open_orders, order_history_page
from portico.runtime.fanout import StreamConsumer
from portico.runtime.lifecycle import cancel_and_wait
from portico.venues.syndr import models
from portico.venues.syndr.errors import SyndrError, SyndrProtocolError
from portico.venues.syndr.ws import Message, Overflow, Reconnected, SyndrWebSocket

__all__ = ["AccountFeed", "AccountFeeds"]

log = logging.getLogger("portico.execution.streams")

CHANNELS: Final = ("user.orders.ALL.raw", "user.fills.ALL")
# Dedupe memory: a catch-up re-reads at most a few hundred recent orders and fills, so remembering the last
# few thousand updates is enough, and keeps the process's memory flat however long it runs.
_SEEN_LIMIT: Final = 5_000
_CATCH_UP_ORDERS: Final = 200
_CATCH_UP_FILLS: Final = 500


class _Seen:
    """A bounded memory of what was already emitted (oldest forgotten first)."""

    def __init__(self, limit: int = _SEEN_LIMIT):
        self._keys: OrderedDict[Hashable, None] = OrderedDict()
        self._limit = limit

    def add(self, key: Hashable) -> bool:
        """True if `key` is new."""
        if key in self._keys:
            return False
        self._keys[key] = None
        if len(self._keys) > self._limit:
            self._keys.popitem(last=False)
        return True


def _order_of(data: Any) -> dict[str, Any]:
    """The order object of a `user.orders` notification (the full parse happens once, if it is streamed)."""
    order = data.get("order") if isinstance(data, dict) else None
    if not isinstance(order, dict) or "order_id" not in order:
        raise SyndrProtocolError("user.orders: notification without an order object")
    return order


class AccountFeed:
    """The private channels of one account: journaled and fanned out."""

    def __init__(self, venue_name: str, account: str, ws: SyndrWebSocket, venue: SyndrVenue, orders: OrderManager):
        self.venue_name = venue_name
        self.account = account
        self._ws = ws
        self._venue = venue
        self._orders = orders
        self._consumers: set[StreamConsumer] = set()
        self._seen_orders = _Seen()
        self._seen_fills = _Seen()
        self.order_sequence = 0
        self.fill_sequence = 0
        self._task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    async def start(self) -> None:
        await self._ws.start()
        subscription = await self._ws.subscribe(list(CHANNELS))
        self.ready.set()
        self._task = asyncio.create_task(self._run(subscription), name=f"execution-feed-{self.account}")

    def add(self, consumer: StreamConsumer) -> None:
        self._consumers.add(consumer)

    def remove(self, consumer: StreamConsumer) -> None:
        self._consumers.discard(consumer)

    async def _run(self, subscription: Any) -> None:
        async for event in subscription:
            try:
                if isinstance(event, Message):
                    if event.channel.startswith("user.orders."):
                        await self._order(_order_of(event.data))
                    elif event.channel.startswith("user.fills."):
                        self._fill(event.data)
                elif isinstance(event, Reconnected | Overflow):
                    await self.catch_up()
            except SyndrError as exc:
                log.warning("account feed update failed", extra={"account": self.account,
                                                                 "error": type(exc).__name__})
            except Exception:
                log.exception("account feed update failed", extra={"account": self.account})

    async def _order(self, order: dict[str, Any]) -> None:
        entry = await self._orders.on_venue_order(self.venue_name, self.account, order)
        key = (order.get("order_id"), order.get("last_update_timestamp"), order.get("order_state"),
               str(order.get("filled_amount")), str(order.get("amount")), str(order.get("price")))
        if not self._seen_orders.add(key):
            return
        self.order_sequence += 1
        consumers = [c for c in self._consumers if c.kind == "orders"]
        if not consumers:
            return  # nobody streams this account's orders: the journal has it, no message to build
        message = pb.OrderUpdate(sequence=self.order_sequence,
                                 order=order_proto(self.venue_name, self.account, order, entry))
        for consumer in consumers:
            consumer.offer(message)

    def _fill(self, data: dict[str, Any]) -> None:
        trade = models.parse_user_trade(data)
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
        orders = await open_orders(self._venue, self.account)
        orders += await order_history_page(self._venue, self.account, None, 0, _CATCH_UP_ORDERS)
        for order in sorted(orders, key=lambda o: int(o.get("last_update_timestamp") or 0)):
            await self._order(order)
        # The newest fills only (the venue keeps thousands): newest first, then emitted oldest first.
        fills = (await self._venue.call(self.account, "private/get_user_trades_by_kind",
                                        {"kind": "any", "sort_by": "DESC", "count": _CATCH_UP_FILLS})).result
        for fill in reversed(fills if isinstance(fills, list) else [fills]):
            self._fill(fill)

    async def aclose(self) -> None:
        await cancel_and_wait(self._task)
        await self._ws.aclose()


class AccountFeeds:
    """One feed per (venue, account), started on first use and kept for the life of the process."""

    def __init__(self, ws_url: str, venue: SyndrVenue, orders: OrderManager):
        self._ws_url = ws_url
        self._venue = venue
        self._orders = orders
        self._feeds: dict[tuple[str, str], AccountFeed] = {}
        self._starting: dict[tuple[str, str], asyncio.Task[AccountFeed]] = {}
        self._background: set[asyncio.Task[None]] = set()

    async def get(self, venue_name: str, account: str) -> AccountFeed:
        key = (venue_name, account.lower())
        feed = self._feeds.get(key)
        if feed is not None:
            return feed
        task = self._starting.get(key)
        if task is None:
            task = asyncio.create_task(self._start(venue_name, account), name=f"execution-feed-start-{account}")
            task.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved even if nobody waits
            self._starting[key] = task
        try:
            return await asyncio.shield(task)
        finally:
            if task.done():
                self._starting.pop(key, None)

    def ensure(self, venue_name: str, account: str) -> None:
        """Start following an account in the background (the journal then tracks its orders to the end)."""
        if (venue_name, account.lower()) in self._feeds or (venue_name, account.lower()) in self._starting:
            return
        task = asyncio.create_task(self._quietly(venue_name, account))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _quietly(self, venue_name: str, account: str) -> None:
        try:
            await self.get(venue_name, account)
        except Exception:
            log.warning("cannot follow account", extra={"account": account}, exc_info=True)

    async def _start(self, venue_name: str, account: str) -> AccountFeed:
        session = await self._venue.session(account)
        ws = SyndrWebSocket(self._ws_url, credentials=session.record.credentials, compress=False,
                            rate_budget=self._venue.budget(session.record))
        feed = AccountFeed(venue_name, account, ws, self._venue, self._orders)
        try:
            await feed.start()
            await feed.catch_up()
        except BaseException:
            await feed.aclose()
            raise
        self._feeds[(venue_name, account.lower())] = feed
        return feed

    async def aclose(self) -> None:
        for task in [*self._background, *self._starting.values()]:
            await cancel_and_wait(task)
        self._starting.clear()
        for feed in self._feeds.values():
            await feed.aclose()
        self._feeds.clear()
