"""`portico.marketdata.v1.MarketDataService`, and the app that wires it to the venue and reference data."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from portico.common.v1 import side_pb2
from portico.marketdata.book import book_checksum
from portico.marketdata.feed import LATENCY, QUEUE_DEPTH, FeedSettings, VenueBooks
from portico.marketdata.v1 import market_data_service_pb2 as pb
from portico.marketdata.v1 import order_book_pb2, ticker_pb2, trade_pb2
from portico.refdata.v1 import instrument_pb2
from portico.refdata.v1 import reference_data_service_pb2 as refdata_pb2
from portico.refdata.v1 import reference_data_service_pb2_grpc as refdata_grpc
from portico.refdata.watch import follow_instruments
from portico.runtime.auth import TokenAuthenticator
from portico.runtime.client import SERVICE_TOKEN, ChannelTls, bearer, open_channel
from portico.runtime.config import ConfigError, setting
from portico.runtime.decimals import format_decimal
from portico.runtime.errors import InvalidArgument, NotFound, PorticoError, ResourceExhausted, Unavailable
from portico.runtime.fanout import RecentKeys
from portico.runtime.lifecycle import GrpcServiceApp, cancel_and_wait
from portico.runtime.server import GrpcServer, ServerSettings
from portico.venues.syndr import models
from portico.venues.syndr.errors import SyndrError, SyndrNotFound, refused_channel_error, to_portico_error
from portico.venues.syndr.http import SyndrHttpClient
from portico.venues.syndr.settings import SYNDR_HTTP_URL, SYNDR_WS_URL
from portico.venues.syndr.ws import (
    ChannelRefused,
    Message,
    Overflow,
    Reconnected,
    Subscription,
    SyndrWebSocket,
    WsEvent,
)

__all__ = ["SERVICE_NAME", "MarketDataApp", "MarketDataServicer", "MarketDataSettings"]

log = logging.getLogger("portico.marketdata")

_SERVICE = pb.DESCRIPTOR.services_by_name["MarketDataService"]
SERVICE_NAME = _SERVICE.full_name
METHOD_SCOPES = {f"/{SERVICE_NAME}/{m.name}": "read" for m in _SERVICE.methods}
ERROR_DOMAIN = "marketdata.portico"
DEFAULT_PORT = 50052
MAX_DEPTH = 100
MAX_SYMBOL_CHARS = 256  # as reference data and the venue take
# Symbols in one StreamTickers / StreamTrades request: each is checked and becomes an upstream subscription. The
# venue's document states no bound on a subscribe's channels; this keeps one request from asking for unbounded work.
MAX_STREAM_SYMBOLS = 1000
DEFAULT_DEPTH = 10
VENUES = ("syndr",)
_SCOPE = "marketdata"
# A reconnecting reference-data watch re-reads tick-size changes from this long before its watermark: the
# two services' clocks may differ, and a stream may be noticed broken a little after it broke.
REFDATA_SKEW_MARGIN_MS = 5_000
_CATCH_UP_PAGE_SIZE = 1000  # reference data's largest page
_CATCH_UP_TIMEOUT_S = 10.0  # for the watch's initial metadata and each page
# A trade stream's catch-up after an upstream reconnect reads the venue's latest trades, at most this many
# per instrument (public/get_trades' largest count), and remembers this many emitted trade ids.
_TRADES_CATCH_UP = 1000
_TRADES_SEEN = 20_000
_TRADES_CLOCK_SKEW_MS = 5_000
_TRADES_CATCH_UP_READS = 4  # public/get_trades catch-up calls at once per venue, for every stream together
# A finished catch-up read still serves the streams that reach their catch-up this much later, then it is dropped.
_TRADES_LISTING_KEPT_S = 5.0

REFDATA_ADDR = setting("PORTICO_MARKETDATA_REFDATA_ADDR", "", "host:port of reference data, to check symbols "
                       "(unset: symbols are checked against the venue).", scope=_SCOPE)
LINGER_MS = setting("PORTICO_MARKETDATA_LINGER_MS", "2", "A stream's batch goes out once its oldest update has "
                    "waited this long since it was received (or at once when the batch is full).", scope=_SCOPE)
MAX_QUEUE = setting("PORTICO_MARKETDATA_MAX_QUEUE", "5000", "Updates a book consumer may have pending before it is "
                    "conflated to a fresh snapshot.", scope=_SCOPE)
SILENCE_S = setting("PORTICO_MARKETDATA_SILENCE_SECONDS", "10", "No upstream change for this long marks a book STALE.",
                    scope=_SCOPE)
AUDIT_S = setting("PORTICO_MARKETDATA_AUDIT_SECONDS", "30", "Compare each live book with the venue's snapshot at the "
                  "same change id this often (0: never); a divergence is counted and repaired.", scope=_SCOPE)
LINGER_UNSUBSCRIBE_S = setting("PORTICO_MARKETDATA_UNSUBSCRIBE_LINGER_SECONDS", "5", "Keep an upstream "
                               "subscription this long after its last consumer leaves.", scope=_SCOPE)


@dataclass(frozen=True)
class MarketDataSettings:
    server: ServerSettings
    syndr_http_url: str
    syndr_ws_url: str
    refdata_addr: str | None
    service_token: str | None = field(repr=False)  # a bearer token: never in a repr
    feed: FeedSettings
    upstream_tls: ChannelTls | None = None  # PORTICO_UPSTREAM_TLS_*: the reference-data channel

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> MarketDataSettings:
        refdata = REFDATA_ADDR.get_str(env) or None
        token = SERVICE_TOKEN.get_str(env) or None
        if refdata and not token:
            raise ConfigError(f"{REFDATA_ADDR.name} needs {SERVICE_TOKEN.name} to call reference data")
        feed = FeedSettings(linger_s=LINGER_MS.get_float(env, minimum=0) / 1000,
                            max_queue=MAX_QUEUE.get_int(env, minimum=10),
                            silence_limit_s=SILENCE_S.get_float(env, minimum=0.1),
                            linger_unsubscribe_s=LINGER_UNSUBSCRIBE_S.get_float(env, minimum=0),
                            audit_interval_s=AUDIT_S.get_float(env, minimum=0))
        return cls(ServerSettings.from_env(env, DEFAULT_PORT), SYNDR_HTTP_URL.get_str(env), SYNDR_WS_URL.get_str(env),
                   refdata, token, feed, upstream_tls=ChannelTls.from_env(env))


def _now_ms() -> int:
    """Wall-clock milliseconds, comparable with reference data's change times (not monotonic on purpose)."""
    return time.time_ns() // 1_000_000


def _ts(target: Any, ms: int) -> None:
    target.FromMilliseconds(ms)


def _d(value: Decimal | None) -> str:
    return format_decimal(value) if value is not None else ""


def ticker_proto(venue: str, t: models.Ticker) -> ticker_pb2.Ticker:
    message = ticker_pb2.Ticker(
        venue=venue, symbol=t.instrument_name, best_bid_price=_d(t.best_bid_price),
        best_bid_amount=_d(t.best_bid_amount), best_ask_price=_d(t.best_ask_price),
        best_ask_amount=_d(t.best_ask_amount), last_price=_d(t.last_price), mark_price=_d(t.mark_price),
        index_price=_d(t.index_price), funding_rate=_d(t.funding_rate), funding_8h=_d(t.funding_8h),
        open_interest=_d(t.open_interest), max_price=_d(t.max_price), min_price=_d(t.min_price))
    if t.stats is not None:
        message.stats.CopyFrom(ticker_pb2.TickerStats(
            change_24h=_d(t.stats.change_24h or t.stats.price_change), max_24h=_d(t.stats.max_24h or t.stats.high),
            min_24h=_d(t.stats.min_24h or t.stats.low), volume_24h=_d(t.stats.volume_24h or t.stats.volume)))
    if t.greeks is not None:
        g = t.greeks
        message.greeks.CopyFrom(ticker_pb2.Greeks(delta=_d(g.delta), gamma=_d(g.gamma), rho=_d(g.rho),
                                                  sigma=_d(g.sigma), tau=_d(g.tau), theta=_d(g.theta),
                                                  vega=_d(g.vega)))
    _ts(message.venue_time, t.timestamp)
    return message


def trade_proto(venue: str, t: models.Trade) -> trade_pb2.Trade:
    message = trade_pb2.Trade(venue=venue, symbol=t.instrument_name, trade_id=t.id, price=_d(t.price),
                              amount=_d(t.amount),
                              taker_side=side_pb2.SIDE_BUY if t.side == "buy" else side_pb2.SIDE_SELL)
    _ts(message.trade_time, t.timestamp)
    return message


_R = TypeVar("_R")  # a streaming RPC's response message
_RESOLUTIONS = {trade_pb2.CANDLE_RESOLUTION_1_MINUTE: "1", trade_pb2.CANDLE_RESOLUTION_5_MINUTES: "5",
                trade_pb2.CANDLE_RESOLUTION_30_MINUTES: "30", trade_pb2.CANDLE_RESOLUTION_1_HOUR: "60",
                trade_pb2.CANDLE_RESOLUTION_4_HOURS: "240", trade_pb2.CANDLE_RESOLUTION_1_DAY: "1D"}


# google.protobuf.Timestamp's valid range (0001-01-01 to 9999-12-31 UTC); `ToMilliseconds` raises ValueError outside.
_TIMESTAMP_MIN_S, _TIMESTAMP_MAX_S = -62_135_596_800, 253_402_300_799


def _timestamp_ms(stamp: Timestamp, field: str) -> int:
    """A request's Timestamp in epoch milliseconds; INVALID_ARGUMENT naming `field` if it is not a valid one."""
    if not (_TIMESTAMP_MIN_S <= stamp.seconds <= _TIMESTAMP_MAX_S and 0 <= stamp.nanos <= 999_999_999):
        raise InvalidArgument(field, "must be a valid Timestamp: seconds within years 1 to 9999, nanos 0 to "
                                     "999,999,999")
    return int(stamp.ToMilliseconds())


class MarketDataServicer:
    """The RPCs; StreamOrderBook yields pre-encoded response bytes (see `handlers`)."""

    def __init__(self, books: Mapping[str, VenueBooks], symbols: SymbolCheck, settings: FeedSettings):
        self._books = books
        self._symbols = symbols
        self._settings = settings
        self._trade_listings = {venue: SharedTradeListings(venue_books) for venue, venue_books in books.items()}
        self._delistings = {venue: Delistings(venue) for venue in books}

    def streamed_symbols(self, venue: str) -> set[str]:
        """Every symbol of `venue` a stream (or a book feed) is open for, or being opened for."""
        return self._books[venue].symbols() | self._delistings[venue].symbols()

    def delisted(self, venue: str, symbol: str) -> None:
        """Reference data reports `symbol` delisted: it is checked again before any new stream or read, every
        stream of its book ends (the feed dropped and unsubscribed), and so does every ticker and trade stream
        naming it, each whole (its queued tickers or trades sent first, its upstream subscription closed)."""
        error = delisted_error(venue, symbol)
        self._symbols.forget(venue, symbol)
        self._books[venue].end(symbol, error)
        self._delistings[venue].end(symbol, error)

    async def aclose(self) -> None:
        for delistings in self._delistings.values():
            await delistings.aclose()

    def _venue(self, venue: str) -> VenueBooks:
        books = self._books.get(venue.strip().lower())
        if books is None:
            raise InvalidArgument("venue", f"unknown venue {venue!r} (known: {', '.join(self._books)})",
                                  reason="UNKNOWN_VENUE")
        return books

    @staticmethod
    def _depth(depth: int) -> int:
        if depth < 0 or depth > MAX_DEPTH:
            raise InvalidArgument("depth", f"must be between 1 and {MAX_DEPTH} (0 for the default, {DEFAULT_DEPTH})")
        return depth or DEFAULT_DEPTH

    async def StreamOrderBook(self, request: pb.StreamOrderBookRequest,
                              context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        books = self._venue(request.venue)
        depth = self._depth(request.depth)
        # Watched from before its check: a delisting reported between the check and the attach ends it too.
        with self._delistings[books.venue].watch([request.symbol]) as watch:
            await self._symbols.check(books.venue, request.symbol)
            try:
                consumer = await books.attach(request.symbol, depth)
            except SyndrError as exc:  # the venue could not give us the book (unreachable, refused): not INTERNAL
                raise to_portico_error(exc) from None
        if watch.error is not None:  # the feed may have started after the delisting ended the symbol's others
            books.end(request.symbol, watch.error)
        try:
            while True:
                if not consumer.ready():
                    await consumer.view.wait()  # woken with the view's other consumers once updates have lingered
                    continue
                if consumer.error is not None:
                    raise consumer.error
                batch, count, oldest = consumer.take()
                if count:
                    QUEUE_DEPTH.record(count)
                    LATENCY.record((time.time_ns() - oldest) / 1e6)
                    yield batch
        finally:
            books.detach(consumer)

    async def GetOrderBook(self, request: pb.GetOrderBookRequest,
                           context: grpc.aio.ServicerContext) -> pb.GetOrderBookResponse:
        books = self._venue(request.venue)
        depth = self._depth(request.depth)
        await self._symbols.check(books.venue, request.symbol)
        feed = books.feeds.get(request.symbol)
        message = order_book_pb2.OrderBook(venue=books.venue, symbol=request.symbol)
        if feed is not None and feed.live and feed.book is not None:  # the live book
            bids, asks = feed.book.top(depth)
            message.sequence = feed.book.change_id
            _ts(message.venue_time, feed.venue_time_ms)
        else:
            snapshot = await _venue_call(books.http, "public/get_order_book",
                                         {"instrument_name": request.symbol, "depth": depth}, models.parse_order_book)
            bids, asks = list(snapshot.bids_raw[:depth]), list(snapshot.asks_raw[:depth])
            message.sequence = snapshot.change_id or 0
            message.mark_price, message.index_price = _d(snapshot.mark_price), _d(snapshot.index_price)
            _ts(message.venue_time, snapshot.timestamp)
        message.bids.extend(order_book_pb2.PriceLevel(price=p, amount=a) for p, a in bids)
        message.asks.extend(order_book_pb2.PriceLevel(price=p, amount=a) for p, a in asks)
        message.checksum = book_checksum(bids, asks)
        return pb.GetOrderBookResponse(order_book=message)

    async def GetTicker(self, request: pb.GetTickerRequest, context: grpc.aio.ServicerContext) -> pb.GetTickerResponse:
        books = self._venue(request.venue)
        await self._symbols.check(books.venue, request.symbol)
        ticker = await _venue_call(books.http, "public/ticker", {"instrument_name": request.symbol},
                                   models.parse_ticker)
        return pb.GetTickerResponse(ticker=ticker_proto(books.venue, ticker))

    async def ListTrades(self, request: pb.ListTradesRequest, context: grpc.aio.ServicerContext
                         ) -> pb.ListTradesResponse:
        books = self._venue(request.venue)
        if request.page_size < 0 or request.page_token:
            raise InvalidArgument("page_token" if request.page_token else "page_size",
                                  "recent trades come in one page of up to 1000")
        await self._symbols.check(books.venue, request.symbol)
        count = min(request.page_size or 100, 1000)
        trades = await _venue_call(books.http, "public/get_trades", {"instrument_name": request.symbol, "count": count},
                                   models.parse_trades)
        # The document lists no `count` for this method: a venue that ignores it must not widen the page.
        ordered = sorted(trades, key=lambda t: t.timestamp, reverse=True)[:count]
        return pb.ListTradesResponse(trades=[trade_proto(books.venue, t) for t in ordered])

    async def GetCandles(self, request: pb.GetCandlesRequest, context: grpc.aio.ServicerContext
                         ) -> pb.GetCandlesResponse:
        books = self._venue(request.venue)
        resolution = _RESOLUTIONS.get(request.resolution)
        if resolution is None:
            raise InvalidArgument("resolution", "must be a specified candle resolution")
        start, end = _timestamp_ms(request.start_time, "start_time"), _timestamp_ms(request.end_time, "end_time")
        if not request.HasField("start_time") or not request.HasField("end_time") or end <= start:
            raise InvalidArgument("end_time", "start_time and end_time are required, end after start")
        if start < 0:  # the venue counts from the epoch (and would name no field)
            raise InvalidArgument("start_time", "must not be before 1970-01-01T00:00:00Z")
        await self._symbols.check(books.venue, request.symbol)
        candles = await _venue_call(books.http, "public/get_tradingview_chart_data",
                                    {"instrument_name": request.symbol, "resolution": resolution, "from": start,
                                     "to": end}, models.parse_chart_data)
        response = pb.GetCandlesResponse()
        for c in candles:
            candle = response.candles.add(open=_d(c.open), high=_d(c.high), low=_d(c.low), close=_d(c.close),
                                          volume=_d(c.volume))
            _ts(candle.open_time, c.time)
            _ts(candle.update_time, c.last_updated_time or c.time)
        return response

    @staticmethod
    def _bounded_symbols(symbols: list[str]) -> list[str]:
        if not symbols:
            raise InvalidArgument("symbols", "at least one symbol is required")
        if len(symbols) > MAX_STREAM_SYMBOLS:  # before any check: each could be a call to reference data
            raise InvalidArgument("symbols", f"at most {MAX_STREAM_SYMBOLS} symbols in one stream (got {len(symbols)})")
        return symbols

    async def _check_symbols(self, books: VenueBooks, symbols: list[str]) -> list[str]:
        for i, symbol in enumerate(symbols):
            await self._symbols.check(books.venue, symbol, field=f"symbols[{i}]")
        return list(dict.fromkeys(symbols))

    async def StreamTickers(self, request: pb.StreamTickersRequest, context: grpc.aio.ServicerContext
                            ) -> AsyncIterator[pb.StreamTickersResponse]:
        """The tickers as they come; those queued for this stream leave together, in one message. A symbol that
        reference data reports delisted ends the whole stream (`delisted_error`), after the tickers queued."""
        books = self._venue(request.venue)
        async with contextlib.aclosing(self._delistable(
                books, list(request.symbols), lambda s: f"ticker.{s}",
                lambda subscription, _: self._tickers(books, subscription))) as responses:
            async for response in responses:
                yield response

    async def _delistable(self, books: VenueBooks, requested: list[str], channel: Callable[[str], str],
                          body: Callable[[Subscription, list[str]], AsyncGenerator[_R, None]]
                          ) -> AsyncGenerator[_R, None]:
        """A ticker or trade stream: `body`'s responses for the subscription to `requested` symbols' channels,
        ended whole, after what is queued, with `delisted_error` when one of them is delisted."""
        requested = self._bounded_symbols(requested)
        with self._delistings[books.venue].watch(requested) as watch:
            symbols = await self._check_symbols(books, requested)
            try:
                async with await _subscribe(books, [channel(s) for s in symbols]) as subscription:
                    watch.attach(subscription)  # a delisting closes it: what is queued drains, then the loop ends
                    async with contextlib.aclosing(body(subscription, symbols)) as responses:
                        async for response in responses:
                            yield response
            except PorticoError:
                if watch.error is None:
                    raise
                raise watch.error from None  # what a delisting led to (a catch-up refused, say): say why
            if watch.error is not None:
                raise watch.error

    async def _tickers(self, books: VenueBooks, subscription: Subscription
                       ) -> AsyncGenerator[pb.StreamTickersResponse, None]:
        async for events in _queued(subscription, self._settings.max_batch):
            tickers = []
            for event in events:
                if isinstance(event, Message):
                    try:
                        ticker = models.parse_ticker(event.data, where=event.channel)
                    except SyndrError as exc:  # the venue's mistake, not ours: its next ticker replaces it
                        log.warning("unreadable ticker skipped", extra={"channel": event.channel,
                                                                        "error": str(exc)})
                        continue
                    tickers.append(ticker_proto(books.venue, ticker))
                    continue
                if isinstance(event, Overflow | ChannelRefused) and tickers:  # what came before still goes
                    yield pb.StreamTickersResponse(tickers=tickers)
                if isinstance(event, Overflow):  # the backlog was dropped: a symbol's last ticker may be missing
                    raise ResourceExhausted("the ticker stream fell behind; tickers would be missing or stale",
                                            reason="CONSUMER_TOO_SLOW")
                if isinstance(event, ChannelRefused):  # the venue would not subscribe it again after a reconnect
                    raise refused_channel_error(event.channel, event.error, venue=books.venue)
            if tickers:
                yield pb.StreamTickersResponse(tickers=tickers)

    async def StreamTrades(self, request: pb.StreamTradesRequest, context: grpc.aio.ServicerContext
                           ) -> AsyncIterator[pb.StreamTradesResponse]:
        """Every trade from the stream's start, once: after an upstream reconnect, the trades made while it was
        down are read from the venue (`public/get_trades`) and sent before the live ones that follow. Trades
        queued for this stream leave together, in one message. A symbol that reference data reports delisted ends
        the whole stream (`delisted_error`), after the trades queued."""
        books = self._venue(request.venue)
        async with contextlib.aclosing(self._delistable(
                books, list(request.symbols), lambda s: f"trades.{s}.raw",
                lambda subscription, symbols: self._trades(books, subscription, symbols))) as responses:
            async for response in responses:
                yield response

    async def _trades(self, books: VenueBooks, subscription: Subscription, symbols: list[str]
                      ) -> AsyncGenerator[pb.StreamTradesResponse, None]:
        seen = RecentKeys(_TRADES_SEEN)
        # Per symbol, the latest trade time emitted (the venue's clock); until one is, our start less the clock
        # skew we allow: a catch-up may then send a trade made just before the stream began, never miss one.
        since_ms = dict.fromkeys(symbols, int(time.time() * 1000) - _TRADES_CLOCK_SKEW_MS)
        async for events in _queued(subscription, self._settings.max_batch):
            trades: list[trade_pb2.Trade] = []
            for event in events:
                if isinstance(event, Message):
                    try:
                        trade = models.parse_trade(event.data, where=event.channel)
                    except SyndrError as exc:  # never a hole in the stream: end it, as a failed catch-up does
                        if trades:
                            yield pb.StreamTradesResponse(trades=trades)
                        raise Unavailable(f"the venue sent a trade that cannot be read ({exc}); re-read the "
                                          "trades with ListTrades", reason="TRADES_MISSED") from None
                    if seen.add(trade.id):
                        since_ms[trade.instrument_name] = max(since_ms.get(trade.instrument_name, 0),
                                                              trade.timestamp)
                        trades.append(trade_proto(books.venue, trade))
                    continue
                if trades:  # what came before the event goes first, whatever the event leads to
                    yield pb.StreamTradesResponse(trades=trades)
                    trades = []
                if isinstance(event, Overflow):
                    raise ResourceExhausted("the trade stream fell behind; trades would be missing",
                                            reason="CONSUMER_TOO_SLOW")
                if isinstance(event, ChannelRefused):
                    raise refused_channel_error(event.channel, event.error, venue=books.venue)
                if isinstance(event, Reconnected):
                    trades = [trade_proto(books.venue, t) for t in await self._missed_trades(books, since_ms, seen)]
            if trades:
                yield pb.StreamTradesResponse(trades=trades)

    async def _missed_trades(self, books: VenueBooks, since_ms: dict[str, int], seen: RecentKeys
                             ) -> list[models.Trade]:
        """The trades of `since_ms`'s symbols made at or after its time and not emitted yet, oldest first.

        UNAVAILABLE (reason TRADES_MISSED) when more were made than the venue lists (the consumer re-reads
        `ListTrades`), or when the venue cannot be read: a stream never goes on with a hole in it. The venue's
        listings are shared with the other streams catching up (`SharedTradeListings`), a few read at once.
        """
        listings = self._trade_listings[books.venue]

        async def latest(symbol: str) -> list[models.Trade]:
            try:
                return await listings.latest(symbol)
            except PorticoError as exc:
                raise Unavailable(f"the trades of {symbol} made while the venue connection was down could not "
                                  f"be read ({exc}); re-read them with ListTrades", reason="TRADES_MISSED") from None

        try:
            async with asyncio.TaskGroup() as group:
                listed_by_symbol = {symbol: group.create_task(latest(symbol)) for symbol in since_ms}
        except* Unavailable as failed:  # this catch-up's other waits are cancelled; the shared reads go on
            raise failed.exceptions[0] from None
        missed: list[models.Trade] = []
        for symbol, read in listed_by_symbol.items():
            listed, since = read.result(), since_ms[symbol]
            if len(listed) >= _TRADES_CATCH_UP and min(t.timestamp for t in listed) > since:
                raise Unavailable(f"more trades of {symbol} were made while the venue connection was down than the "
                                  "venue lists; re-read them with ListTrades", reason="TRADES_MISSED")
            new = [t for t in reversed(listed) if t.timestamp >= since and t.id not in seen]  # listed newest first
            for trade in new:
                seen.add(trade.id)
            if new:
                since_ms[symbol] = max(t.timestamp for t in new)
            missed.extend(new)
        missed.sort(key=lambda t: t.timestamp)
        return missed


class SharedTradeListings:
    """One venue's latest trades per symbol, read once per upstream reconnect for every trade stream catching up.

    Every StreamTrades stream catches up after a reconnect: without sharing, N streams of the same S symbols
    would send the venue N x S identical `public/get_trades` at once, against its public rate limit. The first
    stream to ask starts the read; the others await the same result, or the same failure (a failure is not kept
    for the streams that ask after it). At most `_TRADES_CATCH_UP_READS` reads run at once, for every stream
    together: streams of different symbols share no read, and a bound per stream would let N of them flood.
    """

    def __init__(self, books: VenueBooks):
        self._books = books
        self._reconnect = -1  # the upstream reconnect (`SyndrWebSocket.reconnects`) the reads below came after
        self._reads: dict[str, asyncio.Task[list[models.Trade]]] = {}
        self._calls = asyncio.Semaphore(_TRADES_CATCH_UP_READS)

    async def latest(self, symbol: str) -> list[models.Trade]:
        """`symbol`'s latest trades, newest first, read after the upstream's last reconnect went live.

        A read started before that reconnect is never shared: it may lack the trades of that outage. One started
        after it also serves a stream still catching up on an earlier reconnect: what was made since reaches that
        stream live, after its `Reconnected`.
        """
        reconnect = self._books.ws.reconnects
        if reconnect != self._reconnect:  # superseded: the earlier reconnect's reads are dropped
            self._reconnect, self._reads = reconnect, {}
        read = self._reads.get(symbol)
        if read is None:
            read = asyncio.create_task(self._read(symbol), name=f"trades-catch-up-{self._books.venue}-{symbol}")
            read.add_done_callback(functools.partial(self._drop_later, symbol))
            self._reads[symbol] = read
        return await asyncio.shield(read)  # one stream giving up does not cancel the others' read

    async def _read(self, symbol: str) -> list[models.Trade]:
        async with self._calls:
            listed: list[models.Trade] = await _venue_call(
                self._books.http, "public/get_trades", {"instrument_name": symbol, "count": _TRADES_CATCH_UP},
                models.parse_trades)
            return listed

    def _drop_later(self, symbol: str, read: asyncio.Task[list[models.Trade]]) -> None:
        """Keep a listing briefly for the streams that reach their catch-up late, not until the next reconnect: a
        listing is up to `_TRADES_CATCH_UP` trades per symbol. A failure goes at once: the streams waiting for
        the read share it, one that asks later reads again (the venue may answer by then)."""
        if read.cancelled() or read.exception() is not None:  # retrieved, even if every stream that asked has gone
            self._drop(symbol, read)
            return
        asyncio.get_running_loop().call_later(_TRADES_LISTING_KEPT_S, self._drop, symbol, read)

    def _drop(self, symbol: str, read: asyncio.Task[list[models.Trade]]) -> None:
        if self._reads.get(symbol) is read:
            del self._reads[symbol]


async def _queued(subscription: Subscription, limit: int) -> AsyncIterator[list[WsEvent]]:
    """The subscription's events, each with those queued behind it (at most `limit` in all): a stream sends
    what it has queued in one message, not one message an update."""
    async for event in subscription:
        events = [event]
        while len(events) < limit and subscription.pending():
            try:
                events.append(await anext(subscription))  # queued: returns without waiting
            except StopAsyncIteration:  # its end; the `async for` above sees it next
                break
        yield events


async def _subscribe(books: VenueBooks, channels: list[str]) -> Subscription:
    """Subscribe to `channels`; the venue unreachable (before its first connection too) or refusing is not
    INTERNAL."""
    try:
        return await books.ws.subscribe(channels)
    except SyndrError as exc:
        raise to_portico_error(exc) from None


async def _venue_call(http: SyndrHttpClient, method: str, params: dict[str, Any], parse: Any) -> Any:
    try:
        return parse((await http.call(method, params)).result)
    except SyndrError as exc:
        raise to_portico_error(exc) from None


def delisted_error(venue: str, symbol: str) -> NotFound:
    """What a stream of `symbol` ends with once reference data reports it delisted (as a new stream of it is
    refused). A ticker or trade stream of several symbols ends as a whole: this names the one delisted."""
    return NotFound(f"{venue} no longer lists {symbol!r} (reference data reports it delisted): its streams end; a "
                    "stream of several symbols ends as a whole, open it again without this one",
                    reason="INSTRUMENT_INACTIVE", metadata={"venue": venue, "symbol": symbol})


class StreamWatch:
    """One ticker, trade or book stream, told when one of its symbols is delisted (see `Delistings`)."""

    __slots__ = ("_owner", "error", "subscription")

    def __init__(self, owner: Delistings):
        self._owner = owner
        self.error: PorticoError | None = None  # the first delisting of one of its symbols
        self.subscription: Subscription | None = None

    def end(self, error: PorticoError) -> None:
        if self.error is not None:
            return
        self.error = error
        if self.subscription is not None:
            self._owner.close_later(self.subscription)

    def attach(self, subscription: Subscription) -> None:
        """The stream's upstream subscription: closed once a symbol is delisted (now, if one was already)."""
        self.subscription = subscription
        if self.error is not None:
            self._owner.close_later(subscription)


class Delistings:
    """One venue's open streams by symbol, so that a delisting ends those naming it.

    A ticker or trade stream's subscription is closed, not the stream's task cancelled: closing ends its
    iterator after what is already queued (so queued trades are still sent), detaches it at once and
    unsubscribes the channels no other stream needs; the stream then ends with the watch's error.
    """

    def __init__(self, venue: str):
        self.venue = venue
        self._streams: dict[str, set[StreamWatch]] = {}
        self._closing: set[asyncio.Task[None]] = set()

    @contextlib.contextmanager
    def watch(self, symbols: Iterable[str]) -> Iterator[StreamWatch]:
        watch = StreamWatch(self)
        names = list(dict.fromkeys(symbols))
        for symbol in names:
            self._streams.setdefault(symbol, set()).add(watch)
        try:
            yield watch
        finally:
            for symbol in names:
                watches = self._streams.get(symbol)
                if watches is not None:
                    watches.discard(watch)
                    if not watches:
                        del self._streams[symbol]

    def symbols(self) -> set[str]:
        return set(self._streams)

    def end(self, symbol: str, error: PorticoError) -> None:
        watches = list(self._streams.get(symbol, ()))
        if watches:
            log.warning("the instrument is delisted: its ticker and trade streams end",
                        extra={"venue": self.venue, "symbol": symbol, "streams": len(watches)})
        for watch in watches:
            watch.end(error)

    def close_later(self, subscription: Subscription) -> None:
        closing = asyncio.create_task(subscription.close(), name=f"delisted-close-{self.venue}")
        self._closing.add(closing)
        closing.add_done_callback(self._closed)

    def _closed(self, task: asyncio.Task[None]) -> None:
        self._closing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("closing a delisted stream's subscription failed", extra={"error": repr(task.exception())})

    async def aclose(self) -> None:
        await asyncio.gather(*self._closing, return_exceptions=True)


class SymbolCheck:
    """Unknown symbols are NOT_FOUND: checked against reference data (or the venue), cached briefly; a symbol
    reference data reports delisted is forgotten at once (`forget`), so the next check asks again."""

    def __init__(self, http: Mapping[str, SyndrHttpClient], refdata: grpc.aio.Channel | None, token: str | None,
                 ttl_s: float = 60.0):
        self._http = http
        self._refdata = refdata_grpc.ReferenceDataServiceStub(refdata) if refdata is not None else None
        self._token = token
        self._ttl = ttl_s
        self._known: dict[tuple[str, str], float] = {}
        # Counts `forget` / `retain` calls: a check that was answered before one of them must not cache its answer.
        self._forgets = 0

    def forget(self, venue: str, symbol: str) -> None:
        """`symbol` was delisted: the next check of it asks again (a check under way does not cache its answer)."""
        self._known.pop((venue, symbol), None)
        self._forgets += 1

    def retain(self, venue: str, symbols: set[str]) -> None:
        """Forget every cached symbol of `venue` not in `symbols` (the instruments it lists as active)."""
        for key in [key for key in self._known if key[0] == venue and key[1] not in symbols]:
            del self._known[key]
        self._forgets += 1

    async def check(self, venue: str, symbol: str, *, field: str = "symbol") -> None:
        """NOT_FOUND for a symbol the venue does not list; INVALID_ARGUMENT naming `field` for one no venue
        could (empty, a NUL, longer than any symbol), here rather than as reference data's or the venue's
        answer, which would name their own fields, or (reference data's) read as it being unavailable."""
        if not symbol:
            raise InvalidArgument(field, "is required")
        if "\x00" in symbol or len(symbol) > MAX_SYMBOL_CHARS:
            raise InvalidArgument(field, f"not a symbol: at most {MAX_SYMBOL_CHARS} characters, no NUL")
        key = (venue, symbol)
        if time.monotonic() - self._known.get(key, -1e9) < self._ttl:
            return
        forgets = self._forgets
        if self._refdata is not None:
            try:
                reply = await self._refdata.GetInstrument(refdata_pb2.GetInstrumentRequest(venue=venue, symbol=symbol),
                                                          metadata=bearer(self._token or ""), timeout=5)
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.NOT_FOUND:
                    raise NotFound(f"{venue} has no instrument {symbol!r}", reason="INSTRUMENT_NOT_FOUND") from None
                if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:  # the venue is known here: it is the symbol
                    raise InvalidArgument(field, f"not a symbol reference data takes ({exc.details()})") from None
                raise Unavailable(f"reference data unavailable: {exc.code().name}",
                                  reason="REFDATA_UNAVAILABLE") from None
            if not reply.instrument.active:
                raise NotFound(f"{venue} no longer lists {symbol!r}", reason="INSTRUMENT_INACTIVE")
        else:
            try:
                answer = await self._http[venue].call("public/get_instrument", {"instrument_name": symbol})
            except SyndrNotFound:
                raise NotFound(f"{venue} has no instrument {symbol!r}", reason="INSTRUMENT_NOT_FOUND") from None
            except SyndrError as exc:
                raise to_portico_error(exc) from None
            # Listed but not tradable counts as not listed, as in reference data (which the check above asks).
            if isinstance(answer.result, dict) and answer.result.get("is_active") is False:
                raise NotFound(f"{venue} no longer lists {symbol!r}", reason="INSTRUMENT_INACTIVE")
        if self._forgets == forgets:  # no delisting was reported while this check was under way
            self._known[key] = time.monotonic()


def handlers(servicer: MarketDataServicer) -> grpc.GenericRpcHandler:
    """The service's method handlers; StreamOrderBook sends its pre-encoded bytes untouched."""
    def stream(behavior: Any, request: Any, response: Any, identity: bool = False) -> grpc.RpcMethodHandler:
        return grpc.unary_stream_rpc_method_handler(
            behavior, request_deserializer=request.FromString,
            response_serializer=(lambda b: b) if identity else response.SerializeToString)

    def unary(behavior: Any, request: Any, response: Any) -> grpc.RpcMethodHandler:
        return grpc.unary_unary_rpc_method_handler(behavior, request_deserializer=request.FromString,
                                                   response_serializer=response.SerializeToString)

    return grpc.method_handlers_generic_handler(SERVICE_NAME, {
        "StreamOrderBook": stream(servicer.StreamOrderBook, pb.StreamOrderBookRequest, pb.StreamOrderBookResponse,
                                  identity=True),
        "StreamTickers": stream(servicer.StreamTickers, pb.StreamTickersRequest, pb.StreamTickersResponse),
        "StreamTrades": stream(servicer.StreamTrades, pb.StreamTradesRequest, pb.StreamTradesResponse),
        "GetOrderBook": unary(servicer.GetOrderBook, pb.GetOrderBookRequest, pb.GetOrderBookResponse),
        "GetTicker": unary(servicer.GetTicker, pb.GetTickerRequest, pb.GetTickerResponse),
        "ListTrades": unary(servicer.ListTrades, pb.ListTradesRequest, pb.ListTradesResponse),
        "GetCandles": unary(servicer.GetCandles, pb.GetCandlesRequest, pb.GetCandlesResponse),
    })


class MarketDataApp(GrpcServiceApp):
    """The market-data process: venue connections, book feeds, symbol checks, gRPC server."""

    def __init__(self, settings: MarketDataSettings, env: Mapping[str, str]):
        self.settings = settings
        self.http = SyndrHttpClient(settings.syndr_http_url)
        self.ws = SyndrWebSocket(settings.syndr_ws_url)
        self.books = {"syndr": VenueBooks("syndr", self.ws, self.http, settings.feed)}
        self.refdata = (open_channel(settings.refdata_addr, tls=settings.upstream_tls) if settings.refdata_addr
                        else None)
        self.symbols = SymbolCheck({"syndr": self.http}, self.refdata, settings.service_token)
        self.server = GrpcServer(settings.server, domain=ERROR_DOMAIN,
                                 authenticator=TokenAuthenticator.from_env(env), method_scopes=METHOD_SCOPES)
        self.servicer = MarketDataServicer(self.books, self.symbols, settings.feed)
        self.server.grpc.add_generic_rpc_handlers([handlers(self.servicer)])
        self._watch: asyncio.Task[None] | None = None
        self._started_ms = _now_ms()  # the first watch catches up on everything since: no book is older
        self.refdata_skew_margin_ms = REFDATA_SKEW_MARGIN_MS
        self.refdata_catch_ups = 0  # completed catch-ups, one per established watch (for operators and tests)

    async def start(self) -> None:
        """Listen at once, alive but not ready; return ready, once the venue's WebSocket is connected.

        A venue unreachable at start leaves the process listening, `LIVENESS_SERVICE` SERVING and its
        readiness NOT_SERVING while the WebSocket retries with backoff, for as long as that takes: probes
        see it alive and not ready, not a process that never listens. Calls that come meanwhile wait for
        the connection as they do during a reconnect.
        """
        await self.server.start([SERVICE_NAME], serving=False)
        try:
            await self.ws.start()
        except BaseException:  # it never became ready (cancelled, or the venue refused it): stop listening
            await self.server.stop(0)
            raise
        for books in self.books.values():
            books.start_audits()
        await self.server.set_ready(True)
        log.info("venue connected; serving")
        if self.refdata is not None:
            self._watch = asyncio.create_task(self._watch_reference_data(), name="marketdata-refdata-watch")

    async def _watch_reference_data(self) -> None:
        """A tick-size (or any) change of an instrument from reference data rebuilds that book; a delisting
        ends every stream of the instrument (`MarketDataServicer.delisted`).

        Each established watch first catches up on the tick-size changes since the watermark: the last
        moment a caught-up watch was known to be up (the process start for the first one). See
        `portico.refdata.watch` for why a watch must catch up before it consumes.
        """
        assert self.refdata is not None
        stub = refdata_grpc.ReferenceDataServiceStub(self.refdata)
        metadata = bearer(self.settings.service_token or "")
        watermark_ms = self._started_ms

        async def catch_up() -> None:
            await self._catch_up_on_reference_data(stub, metadata, watermark_ms)

        def on_event(event: refdata_pb2.InstrumentEvent) -> None:
            if event.type == refdata_pb2.INSTRUMENT_EVENT_TYPE_UPDATED:
                self.books["syndr"].resync(event.instrument.symbol, "reference data changed")
            elif event.type == refdata_pb2.INSTRUMENT_EVENT_TYPE_DEACTIVATED:
                log.info("reference data reports the instrument delisted: its streams end",
                         extra={"symbol": event.instrument.symbol})
                self.servicer.delisted("syndr", event.instrument.symbol)

        def on_ended(caught_up: bool) -> None:
            nonlocal watermark_ms
            if caught_up:
                watermark_ms = _now_ms()

        await follow_instruments(stub, metadata, "syndr", watcher="marketdata", on_established=catch_up,
                                 on_event=on_event, on_ended=on_ended, established_timeout_s=_CATCH_UP_TIMEOUT_S)

    async def _catch_up_on_reference_data(self, stub: refdata_grpc.ReferenceDataServiceStub,
                                          metadata: tuple[tuple[str, str]], since_ms: int) -> None:
        """Rebuild every live book whose tick size changed since `since_ms` (less the clock-skew margin), and
        end the streams of every instrument no longer active.

        Those changes were published while no watch of ours was registered, so no event will ever tell of
        them. `until` of a `changes` entry is when reference data stored the new tick size, on its clock.
        A needless rebuild is harmless, a missed one is not: hence the margin, and every page is read
        before any book is touched, so a failed listing is simply retried whole.

        A delisting while no watch was up is never reported either. The listing is of every active instrument,
        so a symbol streamed when it began (each checked active in reference data when its stream opened, and
        records are never deleted) that it lacks was delisted meanwhile: its streams end as on the event, and
        the symbols not listed leave `SymbolCheck`'s cache. A stream opened while the listing runs is not judged
        by it (its instrument may be listed after the listing passed it); a delisting then is an event.
        """
        books = self.books["syndr"]
        streamed = self.servicer.streamed_symbols("syndr")
        active: set[str] = set()
        cutoff_ms = since_ms - self.refdata_skew_margin_ms
        changed: dict[str, tuple[instrument_pb2.Instrument, instrument_pb2.InstrumentChange]] = {}
        request = refdata_pb2.ListInstrumentsRequest(
            venue="syndr", filter=instrument_pb2.InstrumentFilter(active=True), page_size=_CATCH_UP_PAGE_SIZE)
        listed = 0
        while True:
            page = await stub.ListInstruments(request, metadata=metadata, timeout=_CATCH_UP_TIMEOUT_S)
            listed += len(page.instruments)
            for instrument in page.instruments:
                active.add(instrument.symbol)
                recent = [c for c in instrument.changes
                          if c.HasField("price_increment") and c.until.ToMilliseconds() >= cutoff_ms]
                if recent:
                    changed[instrument.symbol] = (instrument, recent[-1])
            if not page.next_page_token:
                break
            request.page_token = page.next_page_token
        # Reference data listing nothing active (a new, empty database; a venue never synced) says nothing of
        # what the venue lists: no stream is ended for that.
        delisted = sorted(streamed - active) if active else []
        if active:
            self.symbols.retain("syndr", active)
        for symbol in delisted:
            log.warning("an instrument streamed was delisted while the reference-data watch was down: its "
                        "streams end", extra={"symbol": symbol, "watermark_ms": since_ms})
            self.servicer.delisted("syndr", symbol)
        rebuilt = []
        for symbol, (instrument, change) in changed.items():
            if symbol not in books.feeds:
                continue  # no live book: the next one starts from a fresh snapshot anyway
            log.info("tick size changed while the reference-data watch was down; rebuilding the book",
                     extra={"symbol": symbol, "previous_price_increment": change.price_increment,
                            "price_increment": instrument.price_increment,
                            "changed_ms": change.until.ToMilliseconds(), "watermark_ms": since_ms})
            books.resync(symbol, "tick size changed while the reference-data watch was down")
            rebuilt.append(symbol)
        self.refdata_catch_ups += 1
        log.info("caught up on reference data", extra={"watermark_ms": since_ms, "cutoff_ms": cutoff_ms,
                                                       "instruments": listed, "rebuilt": rebuilt,
                                                       "delisted": delisted})

    async def aclose(self, grace_s: float | None = None) -> None:
        await cancel_and_wait(self._watch)
        await self.server.stop(grace_s)
        await self.servicer.aclose()
        for books in self.books.values():
            await books.aclose()
        await self.ws.aclose()
        await self.http.aclose()
        if self.refdata is not None:
            await self.refdata.close()
