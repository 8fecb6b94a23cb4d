"""An instrument reference data reports delisted: market data ends every stream of it NOT_FOUND
(`INSTRUMENT_INACTIVE`, naming the symbol) rather than leave it silent (tickers, trades) or STALE (the book) for
ever, drops and unsubscribes its channels (the venue would go on serving them), and refuses new streams of it.
Streams of other instruments go on. Real simulator, real reference data (SQLite), real gRPC over loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from tests.integration.test_marketdata import Running, running_marketdata, until
from tests.support.refdata import RestartableRefdata, database

from portico.marketdata.v1 import market_data_service_pb2 as pb
from portico.marketdata.v1 import market_data_service_pb2_grpc as pb_grpc
from portico.runtime.client import open_channel
from portico.runtime.errors import error_info
from portico.sim.server import SimConfig, Simulator

GONE, STAYS = "ETH-27NOV26", "ETH-PERP"  # a future is delisted; the perpetual goes on
GONE_CHANNELS = [f"book.{GONE}.15.raw", f"ticker.{GONE}", f"trades.{GONE}.raw"]


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimConfig(port=0, seed=11, book_changes_per_second=300)) as simulator:
        yield simulator


@contextlib.asynccontextmanager
async def watched(sim: Simulator, tmp_path: Path
                  ) -> AsyncIterator[tuple[RestartableRefdata, Running, pb_grpc.MarketDataServiceStub]]:
    """Synced reference data and market data whose watch of it is established and caught up."""
    with database("sqlite", tmp_path) as db_env:
        refdata = RestartableRefdata(sim, db_env)
        await refdata.start()
        try:
            await refdata.sync()
            async with running_marketdata(sim, PORTICO_MARKETDATA_REFDATA_ADDR=refdata.target,
                                          PORTICO_SERVICE_TOKEN=refdata.tokens["read"],
                                          PORTICO_MARKETDATA_AUDIT_SECONDS="0") as running, \
                    open_channel(running.target) as channel:
                await until(lambda: running.app.refdata_catch_ups == 1)
                yield refdata, running, pb_grpc.MarketDataServiceStub(channel)
        finally:
            await refdata.stop()


async def _ends_with(call: Any, timeout_s: float = 10.0) -> grpc.aio.AioRpcError:
    """Read the stream until it ends; its error (an end without one fails the test)."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async with asyncio.timeout(timeout_s):
            while await call.read() is not grpc.aio.EOF:
                pass
    return caught.value


def _assert_inactive(error: grpc.aio.AioRpcError, symbol: str = GONE) -> None:
    assert error.code() == grpc.StatusCode.NOT_FOUND, error.details()
    info = error_info(error)
    assert info is not None and info.reason == "INSTRUMENT_INACTIVE", info
    assert symbol in (error.details() or "")


async def _open_streams(sim: Simulator, running: Running, stub: pb_grpc.MarketDataServiceStub
                        ) -> dict[str, Any]:
    """A book, a ticker and a multi-symbol trade stream of GONE, and a book and a ticker stream of STAYS, all
    subscribed upstream."""
    md = running.metadata()
    streams = {
        "book": stub.StreamOrderBook(pb.StreamOrderBookRequest(venue="syndr", symbol=GONE, depth=5), metadata=md),
        "tickers": stub.StreamTickers(pb.StreamTickersRequest(venue="syndr", symbols=[GONE]), metadata=md),
        # A stream of several symbols ends as a whole when one of them is delisted.
        "trades": stub.StreamTrades(pb.StreamTradesRequest(venue="syndr", symbols=[STAYS, GONE]), metadata=md),
        "other_book": stub.StreamOrderBook(pb.StreamOrderBookRequest(venue="syndr", symbol=STAYS, depth=5),
                                           metadata=md),
        "other_tickers": stub.StreamTickers(pb.StreamTickersRequest(venue="syndr", symbols=[STAYS]), metadata=md),
    }
    async with asyncio.timeout(10):
        await streams["book"].read()  # the first snapshot
        await streams["other_book"].read()
    await until(lambda: all(sim.has_subscribers(c) for c in GONE_CHANNELS)
                and sim.has_subscribers(f"ticker.{STAYS}") and sim.has_subscribers(f"trades.{STAYS}.raw"))
    return streams


async def _assert_delisted_everywhere(sim: Simulator, running: Running, stub: pb_grpc.MarketDataServiceStub,
                                      streams: dict[str, Any]) -> None:
    """Every stream of GONE ends NOT_FOUND INSTRUMENT_INACTIVE, naming it; nothing of it stays subscribed; a new
    stream of it is refused; the streams of STAYS go on."""
    errors = await asyncio.gather(*(_ends_with(streams[name]) for name in ("book", "tickers", "trades")))
    for error in errors:
        _assert_inactive(error)
    for error in errors:
        info = error_info(error)
        assert info is not None and info.metadata["symbol"] == GONE and info.metadata["venue"] == "syndr"
    books = running.app.books["syndr"]
    await until(lambda: GONE not in books.feeds and not any(sim.has_subscribers(c) for c in GONE_CHANNELS))
    assert sim.has_subscribers(f"book.{STAYS}.15.raw") and sim.has_subscribers(f"ticker.{STAYS}")
    # Refused at once, not from the symbol cache (which still held it as active, for up to 60 s).
    refused = stub.StreamOrderBook(pb.StreamOrderBookRequest(venue="syndr", symbol=GONE), metadata=running.metadata())
    _assert_inactive(await _ends_with(refused))
    trades = stub.StreamTrades(pb.StreamTradesRequest(venue="syndr", symbols=[STAYS, GONE]),
                               metadata=running.metadata())
    _assert_inactive(await _ends_with(trades))
    # The other instrument's streams go on.
    async with asyncio.timeout(10):
        other_book = await streams["other_book"].read()
        other_ticker = await streams["other_tickers"].read()
    assert other_book is not grpc.aio.EOF and other_book.updates[0].symbol == STAYS
    assert other_ticker is not grpc.aio.EOF and other_ticker.tickers[0].symbol == STAYS
    for call in streams.values():
        call.cancel()


async def test_a_delisting_reference_data_reports_ends_every_stream_of_the_instrument(
        sim: Simulator, tmp_path: Path) -> None:
    async with watched(sim, tmp_path) as (refdata, running, stub):
        streams = await _open_streams(sim, running, stub)
        sim.engine.delist(GONE)  # the venue keeps serving (and re-subscribing) its channels
        await refdata.sync()  # reference data sees it gone: DEACTIVATED
        await _assert_delisted_everywhere(sim, running, stub, streams)


async def test_a_delisting_while_the_reference_data_watch_is_down_ends_the_streams_on_reconnect(
        sim: Simulator, tmp_path: Path) -> None:
    """No event ever tells of a delisting published while the watch was down: the catch-up of the next
    established watch lists the active instruments and ends the streams of those no longer among them."""
    async with watched(sim, tmp_path) as (refdata, running, stub):
        streams = await _open_streams(sim, running, stub)
        await refdata.stop()  # the watch breaks
        sim.engine.delist(GONE)
        await refdata.start(sync_on_start=True)  # the sync publishes before anyone can watch
        await until(lambda: running.app.refdata_catch_ups == 2, timeout_s=30)
        await _assert_delisted_everywhere(sim, running, stub, streams)
