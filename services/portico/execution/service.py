"""`portico.execution.v1.ExecutionService`, and the app that wires it to the journal, signer, venue and Vault."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Final, TypeVar

from portico.execution.convert import fill_proto, order_proto
from portico.execution.deadman import DeadmanSwitches
from portico.execution.journal import OrderJournal, open_journal
from portico.execution.model import JournalEntry, OrderState
from portico.execution.orders import OrderManager
from portico.execution.settings import ExecutionSettings
from portico.execution.streams import AccountFeeds
from portico.execution.v1 import execution_service_pb2 as pb
from portico.execution.v1 import execution_service_pb2_grpc as pb_grpc
from portico.execution.validation import Instruments, check_client_order_id, intent_from_request
from portico.execution.venue import (
    SyndrVenue,
    history_until_s,
    open_orders,
    order_history_page,
    user_trades_page,
)
from portico.runtime.auth import TokenAuthenticator
from portico.runtime.client import open_channel
from portico.runtime.errors import AlreadyExists, InvalidArgument, NotFound
from portico.runtime.fanout import StreamConsumer
from portico.runtime.lifecycle import GrpcServiceApp, cancel_and_wait, wait_event
from portico.runtime.paging import cursor_from_token, page_size, page_token, position_from_token
from portico.runtime.server import GrpcServer
from portico.runtime.vault import VaultSession
from portico.signer.client import SignerClient
from portico.venues.accounts import VenueAccountStore, check_account, check_venue
from portico.venues.syndr import models
from portico.venues.syndr.errors import SyndrError, map_venue_errors, to_portico_error

__all__ = ["SERVICE_NAME", "ExecutionApp", "ExecutionServicer"]

log = logging.getLogger("portico.execution")
# After a reconciliation pass that left orders unresolved, the first pause before the next (then doubled).
_RECONCILE_RETRY_S = 0.05

_SERVICE = pb.DESCRIPTOR.services_by_name["ExecutionService"]
SERVICE_NAME = _SERVICE.full_name
_TRADE_METHODS = frozenset({"PlaceOrder", "AmendOrder", "CancelOrder", "CancelAllOrders", "ArmDeadman"})
METHOD_SCOPES = {f"/{SERVICE_NAME}/{m.name}": "trade" if m.name in _TRADE_METHODS else "read"
                 for m in _SERVICE.methods}
ERROR_DOMAIN = "execution.portico"
MAX_DEADMAN_TTL_S: Final = 86_400
T = TypeVar("T")


# The venue's most orders (or fills) per history call: `count` above it is answered with this many (the Syndr
# document gives no maximum; the simulator caps at 1000). `_read_in_chunks` never asks for more.
VENUE_HISTORY_MAX_COUNT: Final = 1000


async def _read_in_chunks(fetch: Callable[[int, int], Awaitable[Sequence[T]]], offset: int, count: int) -> list[T]:
    """Up to `count` items from `offset` of a venue listing, in as many calls of at most
    `VENUE_HISTORY_MAX_COUNT` as it takes (the page size's maximum plus one needs two)."""
    items: list[T] = []
    while len(items) < count:
        asked = min(count - len(items), VENUE_HISTORY_MAX_COUNT)
        chunk = await fetch(offset + len(items), asked)
        items.extend(chunk[:asked])
        if len(chunk) < asked:  # the end of the listing
            break
    return items


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _window_end_s(first_read_ms: Iterable[int], read_until_s: int) -> int:
    """The end (epoch seconds) of the window a listing's later pages keep to: the second of the newest item its
    first page read (items newest first, so every later item is in it too). The first page itself reads a minute
    past our clock, as the venue stamps with its own; pinning later pages there instead would let everything made
    in that minute after the first page shift them (an item listed twice). `read_until_s` if no item has a time."""
    newest_ms = max(first_read_ms, default=0)
    return newest_ms // 1000 if newest_ms > 0 else read_until_s


def _open_key(order: dict[str, Any]) -> tuple[int, str]:
    """Where an open order sorts in ListOpenOrders (newest first, by this key descending)."""
    return int(order.get("creation_timestamp") or 0), str(order.get("order_id"))


def _open_position_text(order: dict[str, Any]) -> str:
    """An order's `_open_key` as a page token's `after`."""
    created, order_id = _open_key(order)
    return f"{created}:{order_id}"


def _fill_key(trade: models.UserTrade) -> tuple[int, str]:
    """Where a fill sorts in one order's ListFills (newest first, by this key descending)."""
    return trade.timestamp, trade.id


def _open_position(text: str) -> tuple[int, str]:
    """A page token's `after` as an `_open_key` (or a `_fill_key`); INVALID_ARGUMENT naming `page_token` if it is
    not one."""
    created, colon, order_id = text.partition(":")
    if not colon or not (created.isascii() and created.isdigit()) or len(created) > 20:
        raise InvalidArgument("page_token", "not a token of this query")
    return int(created), order_id


def _deadman_ttl_s(seconds: int, nanos: int) -> float:
    """ArmDeadman's `ttl` in seconds: zero, or 1 s to `MAX_DEADMAN_TTL_S`; INVALID_ARGUMENT naming `ttl` otherwise.

    Range-checked as exact integer nanoseconds before any conversion: `Duration.ToTimedelta` overflows
    (which was an INTERNAL error) for a huge `seconds`.
    """
    total_ns = seconds * 1_000_000_000 + nanos
    if total_ns < 0:
        raise InvalidArgument("ttl", "must not be negative (zero disarms)")
    if total_ns > MAX_DEADMAN_TTL_S * 1_000_000_000:
        raise InvalidArgument("ttl", f"must be between 0 and {MAX_DEADMAN_TTL_S} seconds")
    if 0 < total_ns < 1_000_000_000:
        raise InvalidArgument("ttl", "must be at least one second (or zero to disarm)")
    return total_ns / 1e9


class ExecutionServicer(pb_grpc.ExecutionServiceServicer):
    """The RPCs; the order rules live in `OrderManager`."""

    def __init__(self, orders: OrderManager, feeds: AccountFeeds, deadman: DeadmanSwitches):
        self.orders = orders
        self.venue = orders.venue
        self.journal = orders.journal
        self.feeds = feeds
        self.deadman = deadman

    def _order(self, venue: str, account: str, order: dict[str, Any] | None,
               entry: JournalEntry | None) -> Any:
        return order_proto(venue, account, order, entry)

    @map_venue_errors
    async def PlaceOrder(self, request: pb.PlaceOrderRequest, context: Any) -> pb.PlaceOrderResponse:
        intent = intent_from_request(request)
        try:
            entry = await self.orders.place(intent)
        except (InvalidArgument, AlreadyExists, NotFound):
            raise
        except Exception:
            self.feeds.ensure(intent.venue, intent.account)  # follow the account: the order may be live
            raise
        self.feeds.ensure(intent.venue, intent.account)  # the journal follows the order to its end
        return pb.PlaceOrderResponse(order=self._order(intent.venue, intent.account, entry.venue_order_json(), entry))

    @map_venue_errors
    async def AmendOrder(self, request: pb.AmendOrderRequest, context: Any) -> pb.AmendOrderResponse:
        venue, account = check_venue(request.venue), check_account(request.account)
        entry, order = await self.orders.amend(venue, account, request.order_id, self._client_id(request),
                                               request.amount, request.price)
        return pb.AmendOrderResponse(order=self._order(venue, account, order, entry))

    @map_venue_errors
    async def CancelOrder(self, request: pb.CancelOrderRequest, context: Any) -> pb.CancelOrderResponse:
        venue, account = check_venue(request.venue), check_account(request.account)
        entry, order = await self.orders.cancel(venue, account, request.order_id, self._client_id(request))
        return pb.CancelOrderResponse(order=self._order(venue, account, order, entry))

    @map_venue_errors
    async def CancelAllOrders(self, request: pb.CancelAllOrdersRequest, context: Any) -> pb.CancelAllOrdersResponse:
        venue, account = check_venue(request.venue), check_account(request.account)
        symbol = request.symbol if request.HasField("symbol") else None
        if symbol == "":
            raise InvalidArgument("symbol", "must not be empty when given")
        count = await self.orders.cancel_all(venue, account, symbol)
        return pb.CancelAllOrdersResponse(cancelled_count=count)

    @map_venue_errors
    async def GetOrder(self, request: pb.GetOrderRequest, context: Any) -> pb.GetOrderResponse:
        venue, account = check_venue(request.venue), check_account(request.account)
        client_id = self._client_id(request)
        if client_id and not request.order_id:
            entry = await self.journal.get(venue, account, client_id)
            if entry is not None and entry.unresolved:
                entry = await self.orders.reconcile(entry)
            if entry is not None and not entry.order_id:  # never reached the book: the journal is all there is
                return pb.GetOrderResponse(order=self._order(venue, account, None, entry))
        entry, order = await self.orders.fetch(venue, account, request.order_id, client_id)
        return pb.GetOrderResponse(order=self._order(venue, account, order, entry))

    @map_venue_errors
    async def ListOpenOrders(self, request: pb.ListOpenOrdersRequest, context: Any) -> pb.ListOpenOrdersResponse:
        venue, account = check_venue(request.venue), check_account(request.account)
        symbol = request.symbol if request.HasField("symbol") else None
        size = page_size(request.page_size)
        query = ("open", venue, account, symbol)
        after, offset = cursor_from_token(request.page_token, query)
        cut = None if after is None else _open_position(after)
        try:
            orders = [o for o in await open_orders(self.venue, account)
                      if symbol is None or o.get("instrument_name") == symbol]
        except SyndrError as exc:
            raise to_portico_error(exc) from None
        orders.sort(key=_open_key, reverse=True)
        # Orders close between pages: a page starts after the last order listed, not at an offset into a list
        # that may have lost entries before it (which skipped open orders that were never listed).
        start = offset if cut is None else next((i for i, o in enumerate(orders) if _open_key(o) < cut),
                                                len(orders))
        page = orders[start:start + size]
        more = start + size < len(orders)
        return pb.ListOpenOrdersResponse(
            orders=await self._with_journal(venue, account, page),
            next_page_token=page_token(start + size, query, after=_open_position_text(page[-1])) if more else "")

    @map_venue_errors
    async def ListOrderHistory(self, request: pb.ListOrderHistoryRequest,
                               context: Any) -> pb.ListOrderHistoryResponse:
        venue, account = check_venue(request.venue), check_account(request.account)
        symbol = request.symbol if request.HasField("symbol") else None
        size = page_size(request.page_size)
        query = ("history", venue, account, symbol)
        offset, as_of = position_from_token(request.page_token, query)
        until = history_until_s() if as_of is None else as_of  # later pages: the window the first page fixed
        try:
            page = await self._history_page(account, symbol, offset, size + 1, until)  # one more: a next page?
        except SyndrError as exc:
            raise to_portico_error(exc) from None
        more = len(page) > size
        if more and as_of is None:
            as_of = _window_end_s((models.to_ms(_int(o.get("creation_timestamp"))) for o in page), until)
        return pb.ListOrderHistoryResponse(
            orders=await self._with_journal(venue, account, page[:size]),
            next_page_token=page_token(offset + size, query, as_of=as_of) if more else "")

    async def _history_page(self, account: str, symbol: str | None, offset: int, count: int,
                            until_s: int) -> list[dict[str, Any]]:
        """Up to `count` orders of history from `offset`, created up to `until_s` (see `_read_in_chunks`)."""
        return await _read_in_chunks(
            lambda at, n: order_history_page(self.venue, account, symbol, at, n, until_s), offset, count)

    @map_venue_errors
    async def ListFills(self, request: pb.ListFillsRequest, context: Any) -> pb.ListFillsResponse:
        venue, account = check_venue(request.venue), check_account(request.account)
        symbol = request.symbol if request.HasField("symbol") else None
        order_id = request.order_id if request.HasField("order_id") else None
        size = page_size(request.page_size)
        query = ("fills", venue, account, symbol, order_id)
        offset, as_of = position_from_token(request.page_token, query)
        after: str | None = None
        try:
            if order_id is not None:  # one order's fills: the venue answers them all at once
                cursor, _ = cursor_from_token(request.page_token, query)
                cut = None if cursor is None else _open_position(cursor)
                result = await self.venue.call(account, "private/get_user_trades_by_order",
                                               {"order-id": order_id, "sort_by": "DESC"})
                every = sorted((t for t in models.parse_user_trades(result.result)
                                if symbol is None or t.instrument_name == symbol), key=_fill_key, reverse=True)
                # The order fills on between pages, at the top of the list: a page starts after the last fill
                # listed, not at an offset that a new fill shifts (which listed that fill again).
                if cut is not None:
                    offset = next((i for i, t in enumerate(every) if _fill_key(t) < cut), len(every))
                page, more = every[offset:offset + size], offset + size < len(every)
                if more:
                    timestamp, fill_id = _fill_key(page[-1])
                    after = f"{timestamp}:{fill_id}"
            else:  # paged at the venue, within the window the first page fixed (later fills do not shift it)
                until = history_until_s() if as_of is None else as_of
                window = await _read_in_chunks(
                    lambda at, n: user_trades_page(self.venue, account, symbol, at, n, until), offset, size + 1)
                trades = models.parse_user_trades(window)
                page, more = list(trades[:size]), len(window) > size
                if more and as_of is None:
                    as_of = _window_end_s((t.timestamp for t in trades), until)
        except SyndrError as exc:
            raise to_portico_error(exc) from None
        client_ids: dict[str, str] = {}
        for trade in page:
            for oid in (trade.incoming_order_id, trade.book_order_id):
                if oid and oid not in client_ids:
                    entry = await self.journal.find_order(venue, account, oid)
                    if entry is not None:
                        client_ids[oid] = entry.intent.client_order_id
        return pb.ListFillsResponse(fills=[fill_proto(venue, account, t, client_ids) for t in page],
                                    next_page_token=page_token(offset + size, query, as_of=as_of, after=after)
                                    if more else "")

    @map_venue_errors
    async def ArmDeadman(self, request: pb.ArmDeadmanRequest, context: Any) -> pb.ArmDeadmanResponse:
        venue, account = check_venue(request.venue), check_account(request.account)
        if not request.HasField("ttl"):
            raise InvalidArgument("ttl", "required (zero disarms)")
        fire_at = await self.deadman.arm(venue, account, _deadman_ttl_s(request.ttl.seconds, request.ttl.nanos))
        response = pb.ArmDeadmanResponse()
        if fire_at is not None:
            response.fire_time.FromNanoseconds(int(fire_at * 1e9))
        return response

    async def StreamOrderUpdates(self, request: pb.StreamOrderUpdatesRequest,
                                 context: Any) -> AsyncIterator[pb.StreamOrderUpdatesResponse]:
        async for batch in self._stream(request.venue, request.account, "orders"):
            yield pb.StreamOrderUpdatesResponse(updates=batch)

    async def StreamFills(self, request: pb.StreamFillsRequest,
                          context: Any) -> AsyncIterator[pb.StreamFillsResponse]:
        async for batch in self._stream(request.venue, request.account, "fills"):
            yield pb.StreamFillsResponse(updates=batch)

    async def _stream(self, venue: str, account: str, kind: str) -> AsyncIterator[list[Any]]:
        venue, account = check_venue(venue), check_account(account)
        try:
            feed = await self.feeds.get(venue, account)
        except SyndrError as exc:
            raise to_portico_error(exc) from None
        consumer = StreamConsumer(kind)
        feed.add(consumer)
        try:
            async for batch in consumer.batches():
                yield batch
        finally:
            feed.remove(consumer)

    @staticmethod
    def _client_id(request: Any) -> str:
        return check_client_order_id(request.client_order_id) if request.client_order_id else ""

    async def _with_journal(self, venue: str, account: str, orders: list[dict[str, Any]]) -> list[Any]:
        out = []
        for order in orders:
            entry = await self.journal.find_order(venue, account, str(order.get("order_id")))
            out.append(self._order(venue, account, order, entry))
        return out


class ExecutionApp(GrpcServiceApp):
    """The execution process: journal, Vault, signer and refdata channels, venue clients, gRPC server.

    It listens once the journal is open, alive (`LIVENESS_SERVICE` SERVING) but
    not ready: the overall status and the service's own are NOT_SERVING until
    every journaled order of unknown outcome has been reconciled against the
    venue, however long the venue is away. It keeps reconciling in the
    background (woken at once when a call ends unknown).
    """

    def __init__(self, settings: ExecutionSettings, env: Mapping[str, str]):
        self.settings = settings
        self.vault = VaultSession(settings.vault)
        self.journal: OrderJournal = open_journal(sqlite_path=settings.journal_db, dsn=settings.journal_dsn,
                                                  synchronous=settings.journal_sync)
        self.signer_channel = open_channel(settings.signer_addr, tls=settings.upstream_tls)
        self.refdata_channel = open_channel(settings.refdata_addr, tls=settings.upstream_tls)
        self.venue = SyndrVenue(settings.syndr_http_url,
                                VenueAccountStore(self.vault, cache_ttl_s=settings.credentials_cache_s),
                                timeout_s=settings.venue_timeout_s, rate_share=settings.venue_rate_share)
        self.orders = OrderManager(
            self.journal, self.venue, SignerClient(self.signer_channel, settings.service_token),
            Instruments(self.refdata_channel, settings.service_token, cache_s=settings.instrument_cache_s),
            order_ttl_s=settings.order_ttl_s)
        self.feeds = AccountFeeds(settings.syndr_ws_url, self.venue, self.orders)
        # At shutdown a cancel on its way gets a venue call's worst case (the wait for the rate budget, the call).
        # A firing is told to the order manager first: it then never sends again an order of the account placed
        # before it whose outcome was unknown (the switch cancelled the account's orders).
        self.deadman = DeadmanSwitches(self.venue, firing_wait_s=2 * settings.venue_timeout_s,
                                       on_fire=self.orders.deadman_fired)
        self.server = GrpcServer(settings.server, domain=ERROR_DOMAIN,
                                 authenticator=TokenAuthenticator.from_env(env), method_scopes=METHOD_SCOPES)
        pb_grpc.add_ExecutionServiceServicer_to_server(ExecutionServicer(self.orders, self.feeds, self.deadman),
                                                       self.server.grpc)
        self._wake = asyncio.Event()
        self.orders.wake_reconciler = self._wake.set
        self.reconciled = asyncio.Event()
        self._reconciler: asyncio.Task[None] | None = None
        self._refdata_watch: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.journal.start()  # first: it takes the journal's writer lock, or refuses to start
        await self.vault.start()
        await self.orders.load()
        await self.server.start([SERVICE_NAME], serving=False)
        self._refdata_watch = asyncio.create_task(self.orders.instruments.follow("syndr"),
                                                  name="execution-refdata-watch")
        self._reconciler = asyncio.create_task(self._reconcile_forever(), name="execution-reconciler")

    async def _reconcile_forever(self) -> None:
        """A pass over every order of unknown outcome, every `reconcile_s` or at once when woken (an outcome just
        became unknown). A pass that leaves orders unresolved (the venue failing) is followed by the next after a
        pause doubling from `_RECONCILE_RETRY_S` up to `reconcile_s`, however soon it is woken: its own resends
        that fail wake it, and it would otherwise go round as fast as the venue fails them (hundreds of resends
        and look-ups a second, using up the rate budget new orders need)."""
        retry_s = 0.0
        while True:
            self._wake.clear()
            try:
                remaining = await self.orders.reconcile_all()
            except Exception:
                log.exception("reconciliation pass failed")
                remaining = -1
            if remaining == 0 and not self.reconciled.is_set():
                self.reconciled.set()
                await self.server.set_ready(True)
                log.info("journal reconciled; serving")
                for venue, account in await self.journal.accounts({OrderState.OPEN}):
                    self.feeds.ensure(venue, account)
            if remaining == 0:
                retry_s = 0.0
                await wait_event(self._wake, self.settings.reconcile_s)
            else:
                retry_s = min(max(2 * retry_s, _RECONCILE_RETRY_S), self.settings.reconcile_s)
                await asyncio.sleep(retry_s)

    async def aclose(self, grace_s: float | None = None) -> None:
        await cancel_and_wait(self._reconciler)
        await cancel_and_wait(self._refdata_watch)
        await self.server.stop(grace_s)
        await self.deadman.aclose()
        await self.feeds.aclose()
        await self.orders.aclose()
        await self.orders.instruments.aclose()
        await self.venue.aclose()
        await self.journal.aclose()
        await self.signer_channel.close()
        await self.refdata_channel.close()
        await self.vault.aclose()
