"""MarketDataService against the simulator: exact books under faults, fan-out, slow consumers, the rest."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from aiohttp import web
from google.protobuf.timestamp_pb2 import Timestamp
from tests.support.book_consumer import RESYNCING, STALE, Consumer
from tests.support.refdata import RestartableRefdata, database, running_refdata
from tests.support.signer import make_tokens

from portico.marketdata.book import Book, book_checksum
from portico.marketdata.feed import Change, FeedSettings, InstrumentFeed
from portico.marketdata.service import MarketDataApp, MarketDataSettings
from portico.marketdata.v1 import market_data_service_pb2 as pb
from portico.marketdata.v1 import market_data_service_pb2_grpc as pb_grpc
from portico.marketdata.v1 import order_book_pb2, trade_pb2
from portico.refdata.service import ERROR_DOMAIN, METHOD_SCOPES, SERVICE_NAME, ReferenceDataServicer
from portico.refdata.v1 import reference_data_service_pb2 as refdata_pb
from portico.refdata.v1 import reference_data_service_pb2_grpc as refdata_pb_grpc
from portico.runtime.auth import TokenAuthenticator
from portico.runtime.client import open_channel
from portico.runtime.errors import Unavailable
from portico.runtime.server import GrpcServer, ServerSettings
from portico.sim.instruments import fmt_decimal
from portico.sim.server import SimConfig, Simulator
from portico.venues.syndr.http import SyndrHttpClient


@dataclass
class Running:
    app: MarketDataApp
    target: str
    tokens: dict[str, str]

    def metadata(self) -> tuple[tuple[str, str]]:
        return (("authorization", f"Bearer {self.tokens['read']}"),)


@contextlib.asynccontextmanager
async def running_marketdata(sim: Simulator, **env: str) -> AsyncIterator[Running]:
    tokens, auth = make_tokens()
    full = {"PORTICO_LISTEN_ADDR": "127.0.0.1:0", "PORTICO_AUTH_TOKENS": auth, "PORTICO_SYNDR_HTTP_URL": sim.http_url,
            "PORTICO_SYNDR_WS_URL": sim.ws_url, "PORTICO_SHUTDOWN_GRACE_SECONDS": "0.5", **env}
    app = MarketDataApp(MarketDataSettings.from_env(full), full)
    await app.start()
    try:
        yield Running(app, f"127.0.0.1:{app.port}", tokens)
    finally:
        await app.aclose(grace_s=0.2)


async def consume(stub: pb_grpc.MarketDataServiceStub, running: Running, consumer: Consumer,
                  symbol: str = "ETH-PERP") -> None:
    stream = stub.StreamOrderBook(pb.StreamOrderBookRequest(venue="syndr", symbol=symbol, depth=consumer.depth),
                                  metadata=running.metadata())
    with contextlib.suppress(asyncio.CancelledError):
        async for message in stream:
            for update in message.updates:
                consumer.apply(update)


def venue_top(sim: Simulator, symbol: str, depth: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    view = sim.engine.book(symbol, depth)
    return ([(fmt_decimal(p), fmt_decimal(a)) for p, a in view.bids],
            [(fmt_decimal(p), fmt_decimal(a)) for p, a in view.asks])


async def until(predicate: object, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimConfig(port=0, seed=21, book_changes_per_second=1500)) as simulator:
        yield simulator


async def rebuilt(feed: InstrumentFeed, before: int) -> None:
    """Until a rebuild started after `before` rebuilds is live again: a fault while one runs is merged into it (its
    snapshot is fetched again), so each fault injected only after that starts a rebuild of its own."""
    await until(lambda: feed.rebuilds > before and feed.live, timeout_s=30)


async def test_consumers_hold_the_venues_book_exactly_through_faults(sim: Simulator) -> None:
    async with running_marketdata(sim) as running, open_channel(running.target) as channel:
        stub = pb_grpc.MarketDataServiceStub(channel)
        consumers = [Consumer(depth) for depth in (1, 5, 10, 10, 50)]
        tasks = [asyncio.create_task(consume(stub, running, c)) for c in consumers]
        await until(lambda: all(c.snapshots for c in consumers))
        feed = running.app.books["syndr"].feeds["ETH-PERP"]
        await asyncio.sleep(1.5)
        for _ in range(2):
            before = feed.rebuilds
            await sim.close_websockets()  # upstream drops: reconnect, resubscribe, rebuild
            await rebuilt(feed, before)
            await asyncio.sleep(1.5)
        # Updates flow again after the drops (their reconnects back off more and more: the venue drops each
        # connection soon after it goes live), to every depth, the shallowest included.
        await until(lambda: all(c.updates > 100 for c in consumers), timeout_s=20)
        # Gaps last, so that no later rebuild could hide a mishandled one: each dropped change must
        # be noticed and repaired by the service itself.
        for _ in range(4):
            before = feed.rebuilds
            sim.faults.update({"skip_change_ids": {"ETH-PERP": 1}})
            await rebuilt(feed, before)
        sim.market_maker.changes_per_second = 0  # let everything drain, then compare
        await until(lambda: feed.live and feed.book is not None
                    and feed.book.change_id == sim.engine.book("ETH-PERP", 1).change_id)
        await until(lambda: all(c.sequence == feed.book.change_id or c.top() == venue_top(sim, "ETH-PERP", c.depth)
                                for c in consumers if feed.book is not None))
        await asyncio.sleep(0.3)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert feed.rebuilds >= 7  # the start, two reconnects and each of the four gaps
    for consumer in consumers:
        assert consumer.broken == []
        assert consumer.top() == venue_top(sim, "ETH-PERP", consumer.depth)
        assert consumer.updates > 100 and consumer.snapshots >= 3 and RESYNCING in consumer.statuses


async def test_many_consumers_share_one_upstream_subscription(sim: Simulator) -> None:
    async with running_marketdata(sim) as running, open_channel(running.target) as channel:
        stub = pb_grpc.MarketDataServiceStub(channel)
        consumers = [Consumer(10) for _ in range(25)]
        tasks = [asyncio.create_task(consume(stub, running, c)) for c in consumers]
        await until(lambda: all(c.updates > 20 for c in consumers))
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    subscribed = [c for r in sim.requests if r.method == "public/subscribe" for c in r.params["channels"]]
    assert subscribed.count("book.ETH-PERP.15.raw") == 1
    assert all(c.broken == [] for c in consumers)


async def test_a_consumer_that_stops_reading_is_conflated_and_cut_off() -> None:
    async with Simulator(SimConfig(port=0, seed=3, book_changes_per_second=6000)) as sim, \
            running_marketdata(sim, PORTICO_MARKETDATA_MAX_QUEUE="50") as running, \
            open_channel(running.target) as channel:
        stub = pb_grpc.MarketDataServiceStub(channel)
        readers = [Consumer(10) for _ in range(3)]
        tasks = [asyncio.create_task(consume(stub, running, c)) for c in readers]
        await until(lambda: all(c.snapshots for c in readers))  # all three attached before the slow one counts
        # The slow consumer has its own connection with a small, fixed flow-control window (no BDP
        # probing), so the server's writes to it block as soon as it stops reading.
        async with open_channel(running.target, options={"grpc.http2.bdp_probe": 0}) as slow_channel:
            slow = pb_grpc.MarketDataServiceStub(slow_channel).StreamOrderBook(
                pb.StreamOrderBookRequest(venue="syndr", symbol="ETH-PERP", depth=50), metadata=running.metadata())
            await slow.read()  # opened, then never read again
            feed = running.app.books["syndr"].feeds["ETH-PERP"]
            peak = 0
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                queues = [c.pending() for v in feed.views.values() for c in v.consumers]
                peak = max(peak, *queues)
                if len(queues) == 3:  # the slow one has been cut off
                    break
                await asyncio.sleep(0.05)
            counts = [c.updates for c in readers]
            await asyncio.sleep(1)
            assert all(c.updates > n for c, n in zip(readers, counts, strict=True))  # the others keep flowing
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                async with asyncio.timeout(20):
                    while True:
                        await slow.read()
            slow.cancel()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert peak <= 50  # the server never held more than the bound for it
    assert all(c.broken == [] for c in readers)


async def test_cancelled_streams_free_their_resources_and_unsubscribe(sim: Simulator, spans: Any,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    async with running_marketdata(sim, PORTICO_MARKETDATA_UNSUBSCRIBE_LINGER_SECONDS="0.2") as running, \
            open_channel(running.target) as channel:
        stub = pb_grpc.MarketDataServiceStub(channel)
        consumers = [Consumer(10) for _ in range(3)]
        tasks = [asyncio.create_task(consume(stub, running, c)) for c in consumers]
        await until(lambda: all(c.snapshots for c in consumers))
        books = running.app.books["syndr"]
        assert books.feeds["ETH-PERP"].consumers() == 3
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await until(lambda: "ETH-PERP" not in books.feeds)
    assert any(r.method == "public/unsubscribe" and "book.ETH-PERP.15.raw" in r.params["channels"]
               for r in sim.requests)
    # Each cancelled stream's server span was ended, and nothing failed while cleaning up.
    ended = [s for s in spans.get_finished_spans()
             if s.name == "portico.marketdata.v1.MarketDataService/StreamOrderBook" and s.kind.name == "SERVER"]
    assert len(ended) == 3
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


async def test_a_silent_book_is_reported_stale() -> None:
    async with Simulator(SimConfig(port=0, market_maker=False)) as quiet, \
            running_marketdata(quiet, PORTICO_MARKETDATA_SILENCE_SECONDS="0.3") as running, \
            open_channel(running.target) as channel:
        consumer = Consumer(5)
        task = asyncio.create_task(consume(pb_grpc.MarketDataServiceStub(channel), running, consumer))
        await until(lambda: STALE in consumer.statuses, timeout_s=5)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert consumer.snapshots == 1 and consumer.broken == []


@pytest.mark.parametrize(("request_", "code"), [
    (pb.StreamOrderBookRequest(venue="syndr", symbol="DOGE-PERP", depth=5), grpc.StatusCode.NOT_FOUND),
    (pb.StreamOrderBookRequest(venue="syndr", symbol="ETH-PERP", depth=1000), grpc.StatusCode.INVALID_ARGUMENT),
    (pb.StreamOrderBookRequest(venue="syndr", symbol="ETH-PERP", depth=-1), grpc.StatusCode.INVALID_ARGUMENT),
    (pb.StreamOrderBookRequest(venue="kraken", symbol="ETH-PERP"), grpc.StatusCode.INVALID_ARGUMENT),
])
async def test_bad_stream_requests(sim: Simulator, request_: pb.StreamOrderBookRequest, code: grpc.StatusCode) -> None:
    async with running_marketdata(sim) as running, open_channel(running.target) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in pb_grpc.MarketDataServiceStub(channel).StreamOrderBook(request_,
                                                                                  metadata=running.metadata()):
                pass
    assert caught.value.code() == code


async def test_unary_reads_and_ticker_and_trade_streams(sim: Simulator) -> None:
    async with running_marketdata(sim) as running, open_channel(running.target) as channel:
        stub = pb_grpc.MarketDataServiceStub(channel)
        md = running.metadata()
        book = (await stub.GetOrderBook(pb.GetOrderBookRequest(venue="syndr", symbol="ETH-PERP", depth=5),
                                        metadata=md)).order_book
        assert len(book.bids) == 5 and book.sequence > 0
        assert book.checksum == book_checksum([(lv.price, lv.amount) for lv in book.bids],
                                              [(lv.price, lv.amount) for lv in book.asks])
        ticker = (await stub.GetTicker(pb.GetTickerRequest(venue="syndr", symbol="ETH-PERP"), metadata=md)).ticker
        assert ticker.mark_price and ticker.symbol == "ETH-PERP"
        tickers = stub.StreamTickers(pb.StreamTickersRequest(venue="syndr", symbols=["ETH-PERP", "BTC-PERP"]),
                                     metadata=md)
        seen: set[str] = set()
        async for message in tickers:
            seen.update(t.symbol for t in message.tickers)
            if seen == {"ETH-PERP", "BTC-PERP"}:
                break
        tickers.cancel()
        trades = stub.StreamTrades(pb.StreamTradesRequest(venue="syndr", symbols=["ETH-PERP"]), metadata=md)
        first = await asyncio.wait_for(trades.read(), 10)
        trades.cancel()
        assert first.trades[0].symbol == "ETH-PERP" and first.trades[0].price
        recent = (await stub.ListTrades(pb.ListTradesRequest(venue="syndr", symbol="ETH-PERP"), metadata=md)).trades
        assert recent and recent[0].trade_time.ToMilliseconds() >= recent[-1].trade_time.ToMilliseconds()
        start, end = Timestamp(), Timestamp()
        start.FromMilliseconds(int(time.time() * 1000) - 3_600_000)
        end.FromMilliseconds(int(time.time() * 1000) + 60_000)
        candles = (await stub.GetCandles(pb.GetCandlesRequest(
            venue="syndr", symbol="ETH-PERP", resolution=trade_pb2.CANDLE_RESOLUTION_1_MINUTE, start_time=start,
            end_time=end), metadata=md)).candles
        assert candles and candles[-1].close
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetCandles(pb.GetCandlesRequest(venue="syndr", symbol="ETH-PERP", start_time=start,
                                                       end_time=end), metadata=md)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_tick_size_change_in_reference_data_rebuilds_the_book(sim: Simulator, tmp_path: Path) -> None:


    with database("sqlite", tmp_path) as db_env:
        async with running_refdata(sim.http_url, db_env) as refdata, open_channel(refdata.target) as refdata_channel:
            sync = refdata.stub(refdata_channel).SyncInstruments
            await sync(refdata_pb.SyncInstrumentsRequest(venue="syndr"), metadata=refdata.metadata())
            async with running_marketdata(sim, PORTICO_MARKETDATA_REFDATA_ADDR=refdata.target,
                                          PORTICO_SERVICE_TOKEN=refdata.tokens["read"]) as running, \
                    open_channel(running.target) as channel:
                consumer = Consumer(10)
                task = asyncio.create_task(consume(pb_grpc.MarketDataServiceStub(channel), running, consumer))
                await until(lambda: consumer.snapshots == 1)
                # No wait for the service's reference-data watch: a change made before it is established is
                # caught up on when it is, one made after arrives as an event.
                epoch = consumer.epoch
                sim.update_instrument("ETH-PERP", tick_size="0.2")
                await sync(refdata_pb.SyncInstrumentsRequest(venue="syndr", symbols=["ETH-PERP"]),
                           metadata=refdata.metadata())
                await until(lambda: consumer.snapshots == 2)
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
    assert consumer.epoch > epoch and RESYNCING in consumer.statuses and consumer.broken == []


@contextlib.asynccontextmanager
async def refdata_and_a_live_book(sim: Simulator, tmp_path: Path
                                  ) -> AsyncIterator[tuple[RestartableRefdata, Running, Consumer]]:
    """Synced reference data, market data watching it, and a consumer of ETH-PERP holding its first snapshot."""

    with database("sqlite", tmp_path) as db_env:
        refdata = RestartableRefdata(sim, db_env)
        await refdata.start()
        try:
            await refdata.sync()
            async with running_marketdata(sim, PORTICO_MARKETDATA_REFDATA_ADDR=refdata.target,
                                          PORTICO_SERVICE_TOKEN=refdata.tokens["read"]) as running, \
                    open_channel(running.target) as channel:
                consumer = Consumer(10)
                task = asyncio.create_task(consume(pb_grpc.MarketDataServiceStub(channel), running, consumer))
                try:
                    await until(lambda: consumer.snapshots == 1)
                    # The first watch is established and caught up: what follows is about reconnects.
                    await until(lambda: running.app.refdata_catch_ups == 1)
                    yield refdata, running, consumer
                finally:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
        finally:
            await refdata.stop()


async def test_a_tick_size_change_while_the_watch_is_down_rebuilds_the_book_on_reconnect(
        sim: Simulator, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="portico.marketdata")
    async with refdata_and_a_live_book(sim, tmp_path) as (refdata, running, consumer):
        feed = running.app.books["syndr"].feeds["ETH-PERP"]
        assert feed.rebuilds == 1 and feed.live
        await refdata.stop()  # the watch breaks
        sim.update_instrument("ETH-PERP", tick_size="0.2")
        # Reference data syncs the change and publishes it before it listens: no watcher can get the event.
        await refdata.start(sync_on_start=True)
        await until(lambda: consumer.snapshots == 2, timeout_s=30)
        assert running.app.refdata_catch_ups == 2
    assert feed.rebuilds == 2 and RESYNCING in consumer.statuses and consumer.broken == []
    rebuilt = [r for r in caplog.records if r.name == "portico.marketdata" and getattr(r, "symbol", None) == "ETH-PERP"
               and r.getMessage().startswith("tick size changed while the reference-data watch was down")]
    assert len(rebuilt) == 1
    assert (rebuilt[0].previous_price_increment, rebuilt[0].price_increment) == ("0.1", "0.2")  # type: ignore[attr-defined]


async def test_a_reconnect_without_a_change_since_the_watermark_rebuilds_nothing(sim: Simulator,
                                                                                 tmp_path: Path) -> None:
    async with refdata_and_a_live_book(sim, tmp_path) as (refdata, running, consumer):
        # One clock here, so no skew margin: the change below (before the watermark) must not count again.
        running.app.refdata_skew_margin_ms = 0
        feed = running.app.books["syndr"].feeds["ETH-PERP"]
        sim.update_instrument("ETH-PERP", tick_size="0.2")
        await refdata.sync("ETH-PERP")  # watched: the event rebuilds the book
        await until(lambda: consumer.snapshots == 2)
        assert feed.rebuilds == 2
        await refdata.stop()
        await refdata.start(sync_on_start=True)  # nothing changed: nothing published
        await until(lambda: running.app.refdata_catch_ups == 2, timeout_s=30)
        # A catch-up resyncs before it counts itself: had it rebuilt the book, that would show already.
        assert feed.rebuilds == 2 and feed.live


async def test_a_failing_catch_up_is_retried_and_the_watch_never_consumes_without_it(sim: Simulator,
                                                                                       tmp_path: Path) -> None:
    """A ListInstruments that fails (injected on a real server over the real store) keeps the watch
    reconnecting with the watermark where it was; once it succeeds the missed change rebuilds the book."""


    class FlakyList(ReferenceDataServicer):
        failing = True
        failures = 0

        async def ListInstruments(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
            if self.failing:
                self.failures += 1
                raise Unavailable("injected listing failure", reason="INJECTED")
            return await super().ListInstruments(request, context)

    with database("sqlite", tmp_path) as db_env:
        async with running_refdata(sim.http_url, db_env) as refdata, open_channel(refdata.target) as refdata_channel:
            stub = refdata.stub(refdata_channel)
            from portico.refdata.v1 import reference_data_service_pb2 as refdata_pb

            await stub.SyncInstruments(refdata_pb.SyncInstrumentsRequest(venue="syndr"), metadata=refdata.metadata())
            tokens, auth = make_tokens()
            flaky = FlakyList(refdata.app.store, refdata.app.syncer, refdata.app.hub)
            server = GrpcServer(ServerSettings(listen_addr="127.0.0.1:0", shutdown_grace_s=0.2), domain=ERROR_DOMAIN,
                                authenticator=TokenAuthenticator.from_env({"PORTICO_AUTH_TOKENS": auth}),
                                method_scopes=METHOD_SCOPES)
            refdata_pb_grpc.add_ReferenceDataServiceServicer_to_server(flaky, server.grpc)
            await server.start([SERVICE_NAME])
            try:
                async with running_marketdata(sim, PORTICO_MARKETDATA_REFDATA_ADDR=f"127.0.0.1:{server.port}",
                                              PORTICO_SERVICE_TOKEN=tokens["read"]) as running, \
                        open_channel(running.target) as channel:
                    consumer = Consumer(10)
                    task = asyncio.create_task(consume(pb_grpc.MarketDataServiceStub(channel), running, consumer))
                    await until(lambda: consumer.snapshots == 1)
                    feed = running.app.books["syndr"].feeds["ETH-PERP"]
                    sim.update_instrument("ETH-PERP", tick_size="0.2")
                    await stub.SyncInstruments(refdata_pb.SyncInstrumentsRequest(venue="syndr", symbols=["ETH-PERP"]),
                                               metadata=refdata.metadata())
                    failed = flaky.failures
                    await until(lambda: flaky.failures >= failed + 2)  # the loop lives on, reconnecting whole
                    assert running.app.refdata_catch_ups == 0 and feed.rebuilds == 1 and running.app._watch is not None
                    assert not running.app._watch.done()
                    flaky.failing = False
                    await until(lambda: consumer.snapshots == 2, timeout_s=15)
                    assert running.app.refdata_catch_ups == 1 and feed.rebuilds == 2
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
            finally:
                await server.stop(0.2)
    assert RESYNCING in consumer.statuses and consumer.broken == []


async def test_the_audit_finds_no_divergence_and_repairs_a_corrupted_book(sim: Simulator) -> None:
    async with running_marketdata(sim, PORTICO_MARKETDATA_AUDIT_SECONDS="0.2") as running, \
            open_channel(running.target) as channel:
        consumer = Consumer(10)
        task = asyncio.create_task(consume(pb_grpc.MarketDataServiceStub(channel), running, consumer))
        await until(lambda: consumer.snapshots == 1)
        feed = running.app.books["syndr"].feeds["ETH-PERP"]
        await until(lambda: feed.audits >= 3)
        assert feed.divergences == 0
        assert feed.book is not None
        feed.book.apply([("1", "7")], [])  # corrupt the service's own book, far from the top
        await until(lambda: feed.divergences == 1 and feed.live)
        await until(lambda: consumer.snapshots >= 2)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert consumer.broken == []


class SnapshotServer:
    """`public/get_order_book` on loopback that answers only when the test lets it: snapshot n has change_id n."""

    def __init__(self) -> None:
        self.requests = 0
        self.released = 0
        self._turn = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _answer(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests += 1
        number = self.requests
        async with self._turn:
            await self._turn.wait_for(lambda: self.released >= number)
        return web.json_response({"jsonrpc": "2.0", "id": body["id"], "usIn": 1, "usOut": 2, "usDiff": 1, "result": {
            "instrument_name": "ETH-PERP", "timestamp": 1_700_000_000_000, "change_id": number,
            "bids": [["100", "1"]], "asks": [["101", "1"]], "stats": {}}})

    async def release(self) -> None:
        async with self._turn:
            self.released += 1
            self._turn.notify_all()

    async def __aenter__(self) -> SnapshotServer:
        app = web.Application()
        app.router.add_post("/api/v1", self._answer)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/api/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


@pytest.mark.parametrize("asked_again", ["while the snapshot is on its way", "before it was asked for"])
async def test_a_resync_during_a_rebuild_refetches_only_a_snapshot_that_may_predate_it(asked_again: str) -> None:
    """A tick-size change (or any reason) arriving while a rebuild's snapshot is in flight must not be answered by
    that older snapshot; one arriving before the fetch started is."""
    async with SnapshotServer() as venue, SyndrHttpClient(venue.url) as http:
        feed = InstrumentFeed("syndr", "ETH-PERP", None, http, FeedSettings(), lambda f: None)  # type: ignore[arg-type]
        feed.resync("first")
        if asked_again == "before it was asked for":
            feed.resync("tick size changed")
        await until(lambda: venue.requests == 1)
        if asked_again == "while the snapshot is on its way":
            feed.resync("tick size changed")
        await venue.release()
        expected = 2 if asked_again == "while the snapshot is on its way" else 1
        if expected == 2:
            await until(lambda: venue.requests == 2)
            await venue.release()
        await until(lambda: feed.live)
        assert feed.book is not None and feed.book.change_id == expected
        assert venue.requests == expected and feed.rebuilds == 1
        await feed.aclose()


# --------------------------------------------------------------------------- depth views, without a network


def _feed(settings: FeedSettings, book: Book) -> InstrumentFeed:
    """A live feed that is never started: changes go in through `_on_change`, as the WebSocket reader would."""
    feed = InstrumentFeed("syndr", "ETH-PERP", None, None, settings, lambda f: None)  # type: ignore[arg-type]
    feed.book, feed.live = book, True
    return feed


def _updates(data: bytes) -> list[order_book_pb2.BookUpdate]:
    return list(pb.StreamOrderBookResponse.FromString(data).updates)


async def test_views_skip_changes_below_their_depth_and_stay_exact() -> None:
    """Random changes, many beyond the shown levels: every view's consumer holds the book's top exactly."""
    rng = random.Random(7)
    book = Book.from_snapshot([(str(100 - i), "1") for i in range(30)], [(str(101 + i), "1") for i in range(30)], 1)
    feed = _feed(FeedSettings(linger_s=0), book)
    consumers = {depth: (feed.attach(depth), Consumer(depth)) for depth in (1, 5, 10, 50)}
    for change_id in range(2, 3000):
        side = rng.choice(("bids", "asks"))
        level = rng.randrange(40)
        price = str(100 - level) if side == "bids" else str(101 + level)
        amount = rng.choice(("0", "1", "2.5", "3"))
        feed._on_change(Change(change_id, change_id - 1, [(price, amount)] if side == "bids" else [],
                               [(price, amount)] if side == "asks" else [], change_id))
        for server_side, client in consumers.values():
            data, _, _ = server_side.take()
            for update in _updates(data):
                client.apply(update)
    for depth, (_, client) in consumers.items():
        assert client.broken == []
        assert client.top() == book.top(depth)
    assert consumers[1][1].updates < consumers[50][1].updates  # the shallow view skipped what it cannot show


async def test_a_view_shares_one_log_and_trims_it() -> None:
    book = Book.from_snapshot([("100", "1")], [("101", "1")], 1)
    feed = _feed(FeedSettings(linger_s=0), book)
    consumers = [feed.attach(10) for _ in range(20)]
    view = feed.views[10]
    for change_id in range(2, 2000):
        feed._on_change(Change(change_id, change_id - 1, [("100", str(change_id))], [], change_id))
        if change_id % 50 == 0:
            batches = {c.take()[0][-200:] for c in consumers}
            assert len(batches) == 1  # the same bytes for everyone
    assert len(view.log) <= 50 + 256  # entries every cursor has passed are dropped


async def test_a_lone_laggard_is_cut_off_but_a_view_wide_backlog_is_only_conflated() -> None:
    book = Book.from_snapshot([("100", "1")], [("101", "1")], 1)
    feed = _feed(FeedSettings(linger_s=0, max_queue=20, max_conflations=2), book)
    fast = [feed.attach(10) for _ in range(3)]
    slow = feed.attach(10)
    change_id = 1
    for _ in range(100):  # only `slow` stops reading
        change_id += 1
        feed._on_change(Change(change_id, change_id - 1, [("100", str(change_id))], [], change_id))
        for consumer in fast:
            consumer.take()
    assert slow.error is not None and slow.error.reason == "CONSUMER_TOO_SLOW"
    assert all(c.error is None and not c.conflations for c in fast)
    for _ in range(200):  # now nobody reads: the service is behind, not the consumers
        change_id += 1
        feed._on_change(Change(change_id, change_id - 1, [("100", str(change_id))], [], change_id))
    assert all(c.error is None and c.pending() <= 20 for c in fast)
    client = Consumer(10)
    for update in _updates(fast[0].take()[0]):
        client.apply(update)
    assert client.snapshots == 1 and client.broken == [] and client.top() == book.top(10)
