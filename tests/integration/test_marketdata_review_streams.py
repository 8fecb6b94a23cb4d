"""Adversarial review of market data: book status across rebuilds and upstream outages, against the simulator."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from tests.integration.test_marketdata import running_marketdata, until
from tests.support.book_consumer import RESYNCING, SNAPSHOT, STALE, Consumer
from tests.support.tcp_proxy import TcpProxy

from portico.marketdata.v1 import market_data_service_pb2 as pb
from portico.marketdata.v1 import market_data_service_pb2_grpc as pb_grpc
from portico.runtime.client import open_channel
from portico.runtime.errors import error_info
from portico.sim.server import SimConfig, Simulator


class Recorder(Consumer):
    """A checking consumer that also keeps every update's type, in order."""

    def __init__(self, depth: int) -> None:
        super().__init__(depth)
        self.kinds: list[int] = []

    def apply(self, update: object) -> None:
        self.kinds.append(update.type)  # type: ignore[attr-defined]
        super().apply(update)  # type: ignore[arg-type]

    def since_last_snapshot(self) -> list[int]:
        last = max(i for i, kind in enumerate(self.kinds) if kind == SNAPSHOT)
        return self.kinds[last:]


async def record(stub: pb_grpc.MarketDataServiceStub, metadata: tuple[tuple[str, str]], consumer: Recorder,
                 symbol: str = "ETH-PERP") -> None:
    call = stub.StreamOrderBook(pb.StreamOrderBookRequest(venue="syndr", symbol=symbol, depth=consumer.depth),
                                metadata=metadata)
    with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
        async for message in call:
            for update in message.updates:
                consumer.apply(update)


@contextlib.asynccontextmanager
async def quiet_sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimConfig(port=0, market_maker=False)) as simulator:
        yield simulator


async def test_a_consumer_that_lived_through_a_rebuild_of_a_stale_book_is_told_it_is_still_stale() -> None:
    """STALE is sent once per silence; a rebuild (here after an upstream drop) sends a fresh SNAPSHOT, and a
    consumer that joins then is told the book is still STALE. One that was already there must be told the same,
    not left holding what looks like a live book while the venue stays silent."""
    async with quiet_sim() as sim, running_marketdata(sim, PORTICO_MARKETDATA_SILENCE_SECONDS="0.3") as running, \
            open_channel(running.target) as channel:
        stub, md = pb_grpc.MarketDataServiceStub(channel), running.metadata()
        old = Recorder(5)
        task = asyncio.create_task(record(stub, md, old))
        await until(lambda: STALE in old.kinds)
        feed = running.app.books["syndr"].feeds["ETH-PERP"]
        rebuilds = feed.rebuilds
        await sim.close_websockets()  # reconnect: RESYNCING, a rebuild, a fresh SNAPSHOT
        await until(lambda: feed.rebuilds > rebuilds and feed.live and old.snapshots == 2)
        new = Recorder(5)
        tasks = [task, asyncio.create_task(record(stub, md, new))]
        await until(lambda: new.snapshots == 1)
        await asyncio.sleep(1.0)  # several silence limits, and no upstream change
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert new.since_last_snapshot() == [SNAPSHOT, STALE]
    assert RESYNCING in old.kinds
    assert old.since_last_snapshot() == [SNAPSHOT, STALE]
    assert old.broken == [] and new.broken == []


async def test_a_rebuild_that_ends_while_the_upstream_is_down_does_not_declare_the_book_live() -> None:
    """A rebuild whose snapshot arrives (over HTTP) after the WebSocket dropped would build a book that no change
    can reach until the upstream is back: it must stay RESYNCING (not a SNAPSHOT to trade on, nor a 'live' book
    for GetOrderBook) until the reconnect rebuilds it."""
    async with Simulator(SimConfig(port=0, seed=11, book_changes_per_second=300)) as sim:
        proxy = TcpProxy("127.0.0.1", sim.port)
        await proxy.start()
        ws_url = sim.ws_url.replace(f":{sim.port}", f":{proxy.port}")
        try:
            async with running_marketdata(sim, PORTICO_SYNDR_WS_URL=ws_url, PORTICO_MARKETDATA_AUDIT_SECONDS="0") \
                    as running, open_channel(running.target) as channel:
                stub, md = pb_grpc.MarketDataServiceStub(channel), running.metadata()
                consumer = Recorder(10)
                task = asyncio.create_task(record(stub, md, consumer))
                await until(lambda: consumer.snapshots == 1 and consumer.updates > 5)
                feed = running.app.books["syndr"].feeds["ETH-PERP"]
                # The next snapshot is held at the venue while the upstream drops and stays down.
                sim.faults.update({"http_hold_next": 1, "http_hold_ms": 1000.0,
                                   "http_hold_method": "public/get_order_book"})
                feed.resync("review")
                await asyncio.sleep(0.2)
                await proxy.block()
                await until(lambda: not running.app.ws.connected)
                await asyncio.sleep(1.5)  # the held snapshot has long come back
                down = (feed.live, consumer.kinds[-1])
                await proxy.unblock()
                await until(lambda: feed.live and running.app.ws.connected, timeout_s=20)
                await until(lambda: consumer.kinds[-1] != RESYNCING)
                await asyncio.sleep(0.3)
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        finally:
            await proxy.stop()
    assert down == (False, RESYNCING)
    assert consumer.broken == []



def _notification(channel: str, data: dict[str, object]) -> str:
    return json.dumps({"jsonrpc": "2.0", "method": "subscription", "params": {"channel": channel, "data": data}})


async def test_an_unreadable_ticker_is_skipped_and_an_unreadable_trade_ends_the_stream_unavailable() -> None:
    """A frame the venue gets wrong is not Portico's INTERNAL error. A ticker is the venue's latest state, so an
    unreadable one is skipped (the next replaces it) and the stream goes on; a trade stream never goes on with a
    hole, so it ends UNAVAILABLE (TRADES_MISSED: re-read with ListTrades), as when the venue cannot be read."""
    async with Simulator(SimConfig(port=0, seed=5, book_changes_per_second=0)) as sim, \
            running_marketdata(sim) as running, open_channel(running.target) as channel:
        stub, md = pb_grpc.MarketDataServiceStub(channel), running.metadata()
        tickers = stub.StreamTickers(pb.StreamTickersRequest(venue="syndr", symbols=["ETH-PERP"]), metadata=md)
        trades = stub.StreamTrades(pb.StreamTradesRequest(venue="syndr", symbols=["ETH-PERP"]), metadata=md)
        await until(lambda: sim.has_subscribers("ticker.ETH-PERP") and sim.has_subscribers("trades.ETH-PERP.raw"))
        now_ms = int(time.time() * 1000)
        sim.publish("ticker.ETH-PERP", _notification("ticker.ETH-PERP", {
            "instrument_name": "ETH-PERP", "timestamp": now_ms, "mark_price": "not a price"}))
        sim.publish("ticker.ETH-PERP", _notification("ticker.ETH-PERP", {
            "instrument_name": "ETH-PERP", "timestamp": now_ms, "mark_price": "0.00042"}))
        sim.publish("trades.ETH-PERP.raw", _notification("trades.ETH-PERP.raw", {
            "id": "t-1", "size": "1", "price": "not a price", "side": "buy", "timestamp": now_ms,
            "instrument_name": "ETH-PERP"}))
        async with asyncio.timeout(10):
            message = await tickers.read()
        assert [t.mark_price for t in message.tickers] == ["0.00042"]
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async with asyncio.timeout(10):
                async for _ in trades:
                    pass
        tickers.cancel()
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value.details()
    info = error_info(caught.value)
    assert info is not None and info.reason == "TRADES_MISSED"


async def test_a_book_whose_instrument_the_venue_no_longer_knows_ends_not_found_rather_than_resync_for_ever() -> None:
    """A rebuild whose snapshot the venue refuses because it no longer knows the instrument would retry for ever
    (consumers RESYNCING for ever, the venue asked every 2 s). Like a channel the venue refuses after a reconnect,
    every stream of the book ends NOT_FOUND, and the feed is dropped and unsubscribed."""
    async with Simulator(SimConfig(port=0, seed=7, book_changes_per_second=300)) as sim, \
            running_marketdata(sim, PORTICO_MARKETDATA_AUDIT_SECONDS="0") as running, \
            open_channel(running.target) as channel:
        stub, md = pb_grpc.MarketDataServiceStub(channel), running.metadata()
        call = stub.StreamOrderBook(pb.StreamOrderBookRequest(venue="syndr", symbol="ETH-PERP", depth=5), metadata=md)
        await call.read()  # the first snapshot
        books = running.app.books["syndr"]
        feed = books.feeds["ETH-PERP"]
        sim.faults.update({"unknown_instruments": ["ETH-PERP"]})
        feed.resync("review")  # as a gap, an audit or reference data would
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async with asyncio.timeout(10):
                while await call.read() is not grpc.aio.EOF:
                    pass
        await until(lambda: "ETH-PERP" not in books.feeds and not sim.has_subscribers("book.ETH-PERP.15.raw"))
        asked = sum(r.method == "public/get_order_book" for r in sim.requests)
        await asyncio.sleep(0.5)
        assert sum(r.method == "public/get_order_book" for r in sim.requests) == asked  # no more retries
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND, caught.value.details()
