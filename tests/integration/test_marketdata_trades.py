"""StreamTrades across upstream drops, and StreamOrderBook when the venue cannot give a book."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from decimal import Decimal

import grpc
import pytest
from tests.integration.test_marketdata import Running, running_marketdata, until

from portico.marketdata.v1 import market_data_service_pb2 as pb
from portico.marketdata.v1 import market_data_service_pb2_grpc as pb_grpc
from portico.runtime.client import open_channel
from portico.sim.server import SimConfig, Simulator

SYMBOL = "ETH-PERP"
OTHER = "BTC-PERP"
TAKER = "0x" + "ab" * 20


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    # A quiet market maker: its quotes are there to be taken, and it makes no trades of its own.
    async with Simulator(SimConfig(port=0, seed=31, book_changes_per_second=5,
                                   market_maker_instruments=(SYMBOL, OTHER))) as simulator:
        simulator.engine.open_account(TAKER, {"USDT": Decimal(10_000_000)})
        yield simulator


def take(sim: Simulator, side: str, symbol: str = SYMBOL) -> list[str]:
    """A market order against the maker's quotes, made in the venue at once; the ids of its trades."""
    inst = sim.engine.instrument(symbol)
    placed = sim.engine.place(TAKER, symbol, side=side, order_type="market",  # type: ignore[arg-type]
                              amount=inst.min_trade_amount)
    assert placed.trades, "the market maker quoted nothing to take"
    return [t.trade_id for t in placed.trades]


def venue_trades(sim: Simulator, symbol: str = SYMBOL) -> list[str]:
    """The venue's trade ids of `symbol`, oldest first."""
    return [t["id"] for t in reversed(sim.engine.public_trades(symbol, 1000))]


@contextlib.asynccontextmanager
async def streamed_trades(sim: Simulator, symbols: tuple[str, ...] = (SYMBOL,), streams: int = 1
                          ) -> AsyncIterator[list[list[str]]]:
    """Market data on `sim`, and per StreamTrades stream of `symbols`, the ids it delivers as they come (once the
    venue has the subscriptions)."""
    received: list[list[str]] = [[] for _ in range(streams)]

    async def read(stub: pb_grpc.MarketDataServiceStub, running: Running, into: list[str]) -> None:
        stream = stub.StreamTrades(pb.StreamTradesRequest(venue="syndr", symbols=symbols),
                                   metadata=running.metadata())
        with contextlib.suppress(asyncio.CancelledError):
            async for message in stream:
                into.extend(t.trade_id for t in message.trades)

    async with running_marketdata(sim) as running, open_channel(running.target) as channel:
        stub = pb_grpc.MarketDataServiceStub(channel)
        readers = [asyncio.create_task(read(stub, running, into)) for into in received]
        try:
            await until(lambda: all(sim.has_subscribers(f"trades.{s}.raw") for s in symbols))
            yield received
        finally:
            for reader in readers:
                reader.cancel()
            await asyncio.gather(*readers)


def get_trades_calls(sim: Simulator, symbol: str) -> int:
    return sum(r.method == "public/get_trades" and r.params.get("instrument_name") == symbol for r in sim.requests)


async def test_trades_made_while_the_upstream_was_down_are_streamed_once_and_in_order(sim: Simulator) -> None:
    async with streamed_trades(sim) as (received,):
        first = take(sim, "buy")
        await until(lambda: set(first) <= set(received))
        for side in ("sell", "buy"):
            await sim.close_websockets()
            # Made before the service can reconnect (this runs without yielding to its event loop): the venue
            # publishes them to nobody.
            missed = take(sim, side) + take(sim, side)
            await until(lambda: set(missed) <= set(received))  # noqa: B023 (awaited in the loop)
        live = take(sim, "sell")
        await until(lambda: set(live) <= set(received))
    made = venue_trades(sim)
    assert received == made[made.index(first[0]):]  # each once, none missing, in the venue's order


async def test_streams_of_the_same_symbols_share_one_catch_up_read_per_symbol(sim: Simulator) -> None:
    """Three streams of two symbols: one reconnect reads each symbol's trades from the venue once, not once per
    stream, and each stream still gets every trade made meanwhile, once."""
    symbols = (SYMBOL, OTHER)
    async with streamed_trades(sim, symbols, streams=3) as received:
        first = {s: take(sim, "buy", s) for s in symbols}
        await until(lambda: all({t for ts in first.values() for t in ts} <= set(r) for r in received))  # all live
        sim.requests.clear()
        await sim.close_websockets()
        missed = [trade for s in symbols for side in ("sell", "buy") for trade in take(sim, side, s)]
        await until(lambda: all(set(missed) <= set(r) for r in received))
        assert {s: get_trades_calls(sim, s) for s in symbols} == {s: 1 for s in symbols}
    for symbol in symbols:
        made = venue_trades(sim, symbol)
        for stream in received:  # each once, none missing, in the venue's order
            assert [t for t in stream if t in made] == made[made.index(first[symbol][0]):]


async def test_a_failed_shared_catch_up_read_ends_every_stream_waiting_for_it(sim: Simulator) -> None:
    """The venue fails each symbol's one catch-up read (every attempt of it): all three streams end with
    TRADES_MISSED. Were the failure not shared, a stream reading again would get the listing."""
    symbols = (SYMBOL, OTHER)
    attempts_per_read = 3  # the venue client's first try and its two retries of a public read
    async with running_marketdata(sim) as running, open_channel(running.target) as channel:
        stub = pb_grpc.MarketDataServiceStub(channel)
        streams = [stub.StreamTrades(pb.StreamTradesRequest(venue="syndr", symbols=symbols),
                                     metadata=running.metadata()) for _ in range(3)]
        await until(lambda: all(sim.has_subscribers(f"trades.{s}.raw") for s in symbols))
        take(sim, "buy")
        for stream in streams:  # every stream is live
            assert (await asyncio.wait_for(stream.read(), 10)).trades
        sim.faults.update({"http_5xx_next": attempts_per_read * len(symbols), "http_5xx_method": "public/get_trades"})
        await sim.close_websockets()
        take(sim, "sell")  # published to nobody
        for stream in streams:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await asyncio.wait_for(stream.read(), 20)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "TRADES_MISSED" in str(caught.value.trailing_metadata())


async def test_a_catch_up_the_venue_cannot_serve_ends_the_stream_rather_than_skip_trades(sim: Simulator) -> None:
    async with running_marketdata(sim) as running, open_channel(running.target) as channel:
        stub = pb_grpc.MarketDataServiceStub(channel)
        stream = stub.StreamTrades(pb.StreamTradesRequest(venue="syndr", symbols=[SYMBOL]),
                                   metadata=running.metadata())
        await until(lambda: sim.has_subscribers(f"trades.{SYMBOL}.raw"))
        take(sim, "buy")
        assert (await asyncio.wait_for(stream.read(), 10)).trades
        sim.faults.update({"http_5xx_rate": 1.0, "http_5xx_method": "public/get_trades"})
        await sim.close_websockets()
        take(sim, "sell")  # published to nobody, and the venue will not list it
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await asyncio.wait_for(stream.read(), 20)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "TRADES_MISSED" in str(caught.value.trailing_metadata())


async def test_a_book_stream_the_venue_cannot_start_is_unavailable_not_internal(sim: Simulator) -> None:
    async with running_marketdata(sim) as running, open_channel(running.target) as channel:
        stub = pb_grpc.MarketDataServiceStub(channel)
        await stub.GetTicker(pb.GetTickerRequest(venue="syndr", symbol=SYMBOL), metadata=running.metadata())
        sim.faults.update({"fail_rate": 1.0})  # the symbol is known; the book's subscription is then refused
        try:
            stream = stub.StreamOrderBook(pb.StreamOrderBookRequest(venue="syndr", symbol=SYMBOL, depth=5),
                                          metadata=running.metadata(), timeout=30)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stream.read()
        finally:
            sim.faults.update({"fail_rate": 0.0})
        assert caught.value.code() != grpc.StatusCode.INTERNAL, caught.value.details()
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_trade_stamped_behind_our_clock_is_still_caught_up(sim: Simulator,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The venue's clock runs 3 s behind ours and no trade was streamed before the upstream dropped: the catch-up
    still sends the trade made meanwhile (before, it filtered the venue's times against our clock at the
    stream's start, and left it out)."""
    monkeypatch.setattr(sim.engine, "_now", lambda: time.time_ns() // 1_000_000 - 3_000)
    async with streamed_trades(sim) as (received,):
        await sim.close_websockets()
        missed = take(sim, "buy")
        await until(lambda: set(missed) <= set(received))
