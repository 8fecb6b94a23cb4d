"""MarketDataService edge cases against the simulator: symbols no venue could list, prices the venue re-spells."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from tests.integration.test_marketdata import consume, running_marketdata, until
from tests.support.book_consumer import Consumer
from tests.support.refdata import database, running_refdata

from portico.marketdata import service
from portico.marketdata.v1 import market_data_service_pb2 as pb
from portico.marketdata.v1 import market_data_service_pb2_grpc as pb_grpc
from portico.marketdata.v1 import trade_pb2
from portico.refdata.v1 import reference_data_service_pb2 as refdata_pb
from portico.runtime.client import open_channel
from portico.runtime.errors import error_info
from portico.sim.instruments import fmt_decimal
from portico.sim.server import SimConfig, Simulator


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimConfig(port=0, seed=5, book_changes_per_second=0)) as simulator:
        yield simulator


async def _first_error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        if isinstance(call, grpc.aio.UnaryStreamCall):
            async for _ in call:
                pass
        else:
            await call
    return caught.value


@pytest.mark.parametrize("bad", ["ETH-PERP\x00", "X" * 300])
async def test_a_symbol_no_venue_could_list_is_invalid_argument_naming_it_with_reference_data(
        sim: Simulator, tmp_path: Path, bad: str) -> None:
    """Reference data refuses such a symbol with INVALID_ARGUMENT: that is the caller's mistake, not reference
    data being unavailable (a retryable UNAVAILABLE a client would retry for ever)."""
    with database("sqlite", tmp_path) as db_env:
        async with running_refdata(sim.http_url, db_env) as refdata, open_channel(refdata.target) as refdata_channel:
            await refdata.stub(refdata_channel).SyncInstruments(refdata_pb.SyncInstrumentsRequest(venue="syndr"),
                                                                metadata=refdata.metadata())
            async with running_marketdata(sim, PORTICO_MARKETDATA_REFDATA_ADDR=refdata.target,
                                          PORTICO_SERVICE_TOKEN=refdata.tokens["read"]) as running, \
                    open_channel(running.target) as channel:
                stub, md = pb_grpc.MarketDataServiceStub(channel), running.metadata()
                calls = {
                    "symbol": [stub.GetTicker(pb.GetTickerRequest(venue="syndr", symbol=bad), metadata=md),
                               stub.StreamOrderBook(pb.StreamOrderBookRequest(venue="syndr", symbol=bad),
                                                    metadata=md)],
                    "symbols[1]": [stub.StreamTickers(pb.StreamTickersRequest(
                        venue="syndr", symbols=["ETH-PERP", bad]), metadata=md)],
                }
                for field, field_calls in calls.items():
                    for call in field_calls:
                        error = await _first_error(call)
                        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
                        info = error_info(error)
                        assert info is not None and info.metadata["field"] == field


async def test_a_price_the_venue_spells_anew_stays_in_the_consumers_book(sim: Simulator) -> None:
    """A venue may spell a level it holds differently in a later change ("2996.7", then "2996.70"): to a
    consumer keying its book by price, as `Book` does, the delta must not remove the level it just set."""
    async with running_marketdata(sim) as running, open_channel(running.target) as channel:
        consumer = Consumer(5)
        task = asyncio.create_task(consume(pb_grpc.MarketDataServiceStub(channel), running, consumer))
        await until(lambda: consumer.snapshots == 1)
        venue = sim.engine.book("ETH-PERP", 5)
        price = fmt_decimal(venue.bids[0][0])
        respelled = f"{price}0" if "." in price else f"{price}.0"
        data = {"type": "change", "bids": [[respelled, "7"]], "asks": [], "change_id": venue.change_id + 1,
                "previous_change_id": venue.change_id, "instrument_name": "ETH-PERP",
                "timestamp": str(time.time_ns() // 1_000_000)}
        sim.publish("book.ETH-PERP.15.raw", json.dumps({
            "jsonrpc": "2.0", "method": "subscription", "params": {"channel": "book.ETH-PERP.15.raw", "data": data}}))
        await until(lambda: consumer.sequence == venue.change_id + 1)
        await asyncio.sleep(0.1)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert consumer.broken == []
    assert consumer.top()[0][0] == (respelled, "7")


def _notification(channel: str, data: dict[str, Any]) -> str:
    return json.dumps({"jsonrpc": "2.0", "method": "subscription", "params": {"channel": channel, "data": data}})


async def test_tickers_and_trades_queued_for_a_consumer_leave_together_in_order(sim: Simulator) -> None:
    """A consumer with several updates queued gets them in one message (the design's rule for every stream,
    which one gRPC message per update would cap near 30,000 messages/s for the whole machine), still in order."""
    burst = 3000
    async with running_marketdata(sim) as running, open_channel(running.target) as channel:
        stub, md = pb_grpc.MarketDataServiceStub(channel), running.metadata()
        tickers = stub.StreamTickers(pb.StreamTickersRequest(venue="syndr", symbols=["ETH-PERP"]), metadata=md)
        trades = stub.StreamTrades(pb.StreamTradesRequest(venue="syndr", symbols=["ETH-PERP"]), metadata=md)
        await until(lambda: sim.has_subscribers("ticker.ETH-PERP") and sim.has_subscribers("trades.ETH-PERP.raw"))
        now_ms = int(time.time() * 1000)
        expected = [f"0.{i:05d}" for i in range(1, burst + 1)]  # no price the market maker would quote
        for price in expected:  # published at once, as a venue's burst arrives
            sim.publish("ticker.ETH-PERP", _notification("ticker.ETH-PERP", {
                "instrument_name": "ETH-PERP", "timestamp": now_ms, "mark_price": price, "last_price": price}))
            sim.publish("trades.ETH-PERP.raw", _notification("trades.ETH-PERP.raw", {
                "id": f"burst-{price}", "size": "1", "price": price, "side": "buy", "timestamp": now_ms,
                "instrument_name": "ETH-PERP"}))

        async def read(call: Any, items: str, value: str) -> tuple[list[str], int]:
            seen: list[str] = []
            messages = 0
            async for message in call:
                messages += 1
                seen.extend(v for item in getattr(message, items) if (v := getattr(item, value)).startswith("0.0"))
                if len(seen) >= burst:
                    break
            call.cancel()
            return seen, messages

        (marks, ticker_messages), (prices, trade_messages) = await asyncio.wait_for(asyncio.gather(
            read(tickers, "tickers", "mark_price"), read(trades, "trades", "price")), 30)
    assert [Decimal(v) for v in marks] == [Decimal(v) for v in expected] == [Decimal(v) for v in prices]
    assert ticker_messages < burst and trade_messages < burst, (ticker_messages, trade_messages)


async def test_an_instrument_the_venue_no_longer_lists_is_not_found_without_reference_data_too(
        sim: Simulator) -> None:
    """Checked against the venue (no reference data configured), an instrument the venue lists as inactive is
    NOT_FOUND, as reference data's check has it, not a stream of a dead book."""
    sim.delist("BTC-PERP")
    async with running_marketdata(sim) as running, open_channel(running.target) as channel:
        stub, md = pb_grpc.MarketDataServiceStub(channel), running.metadata()
        for call in (stub.GetTicker(pb.GetTickerRequest(venue="syndr", symbol="BTC-PERP"), metadata=md),
                     stub.StreamOrderBook(pb.StreamOrderBookRequest(venue="syndr", symbol="BTC-PERP"), metadata=md,
                                          timeout=10),
                     stub.StreamTrades(pb.StreamTradesRequest(venue="syndr", symbols=["BTC-PERP"]), metadata=md,
                                       timeout=10)):
            error = await _first_error(call)
            assert error.code() == grpc.StatusCode.NOT_FOUND, error.details()
            info = error_info(error)
            assert info is not None and info.reason == "INSTRUMENT_INACTIVE"
        assert "BTC-PERP" not in running.app.books["syndr"].feeds
        ticker = await stub.GetTicker(pb.GetTickerRequest(venue="syndr", symbol="ETH-PERP"), metadata=md)
        assert ticker.ticker.symbol == "ETH-PERP"


@pytest.mark.parametrize("rpc", ["StreamTickers", "StreamTrades"])
async def test_a_stream_of_more_symbols_than_the_bound_is_invalid_argument_naming_symbols(
        sim: Simulator, rpc: str) -> None:
    """Each symbol of a stream is checked and becomes an upstream subscription: a request may name at most
    MAX_STREAM_SYMBOLS. Before, any number was taken (1,001 times ETH-PERP streamed; 100,000 unknown symbols were
    checked one by one)."""
    limit = service.MAX_STREAM_SYMBOLS
    request = getattr(pb, f"{rpc}Request")
    channel_name = "ticker.ETH-PERP" if rpc == "StreamTickers" else "trades.ETH-PERP.raw"
    async with running_marketdata(sim) as running, open_channel(running.target) as channel:
        stub, md = pb_grpc.MarketDataServiceStub(channel), running.metadata()
        for symbols in (["ETH-PERP"] * (limit + 1), [f"NO-{i}-PERP" for i in range(100_000)]):
            error = await _first_error(getattr(stub, rpc)(request(venue="syndr", symbols=symbols), metadata=md,
                                                          timeout=10))
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
            assert error.details() == f"symbols: at most {limit} symbols in one stream (got {len(symbols)})"
            info = error_info(error)
            assert info is not None and info.metadata["field"] == "symbols"
        assert not sim.has_subscribers(channel_name)

        # The bound itself is taken.
        call = getattr(stub, rpc)(request(venue="syndr", symbols=["ETH-PERP"] * limit), metadata=md)
        await until(lambda: sim.has_subscribers(channel_name))
        call.cancel()


@pytest.mark.parametrize(("start", "end", "field"), [
    (Timestamp(seconds=2**63 - 1), Timestamp(seconds=1_700_000_000), "start_time"),  # past year 9999
    (Timestamp(seconds=1_700_000_000), Timestamp(seconds=253_402_300_800), "end_time"),
    (Timestamp(seconds=-62_135_596_801), Timestamp(seconds=1_700_000_000), "start_time"),  # before year 1
    (Timestamp(seconds=1_700_000_000, nanos=-1), Timestamp(seconds=1_700_003_600), "start_time"),
    (Timestamp(seconds=1_700_000_000), Timestamp(seconds=1_700_003_600, nanos=1_000_000_000), "end_time"),
    (Timestamp(seconds=-100_000), Timestamp(seconds=100), "start_time"),  # valid, but before the venue's epoch
])
async def test_get_candles_with_a_timestamp_out_of_range_is_invalid_argument_naming_it(
        sim: Simulator, start: Timestamp, end: Timestamp, field: str) -> None:
    """A Timestamp outside protobuf's range (years 1 to 9999, nanos 0 to 999,999,999) made `ToMilliseconds` raise
    ValueError: INTERNAL. One before 1970 went to the venue, whose refusal named the field `venue`."""
    async with running_marketdata(sim) as running, open_channel(running.target) as channel:
        error = await _first_error(pb_grpc.MarketDataServiceStub(channel).GetCandles(pb.GetCandlesRequest(
            venue="syndr", symbol="ETH-PERP", resolution=trade_pb2.CANDLE_RESOLUTION_1_MINUTE, start_time=start,
            end_time=end), metadata=running.metadata()))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
        info = error_info(error)
        assert info is not None and info.metadata["field"] == field, info
