"""StreamTickers ends with RESOURCE_EXHAUSTED (CONSUMER_TOO_SLOW) when the upstream subscription dropped its
backlog, as StreamTrades does, rather than carrying on with some symbols' last tickers silently missing."""
from __future__ import annotations

from typing import Any, cast

import grpc
import pytest

from portico.marketdata.feed import FeedSettings, VenueBooks
from portico.marketdata.service import MarketDataServicer, SymbolCheck
from portico.marketdata.v1 import market_data_service_pb2 as pb
from portico.runtime.errors import PorticoError
from portico.venues.syndr.ws import Message, Overflow


def ticker(symbol: str, price: str) -> dict[str, Any]:
    return {"instrument_name": symbol, "timestamp": 1_700_000_000_000, "mark_price": price, "last_price": price}


class Subscription:
    def __init__(self, events: list[Any]) -> None:
        self._events = iter(events)

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass

    def __aiter__(self) -> Subscription:
        return self

    def pending(self) -> int:
        return 0

    async def __anext__(self) -> Any:
        try:
            return next(self._events)
        except StopIteration:
            raise StopAsyncIteration from None


class Ws:
    def __init__(self, events: list[Any]) -> None:
        self.events = events

    async def subscribe(self, channels: list[str], **kw: Any) -> Subscription:
        return Subscription(self.events)


class Books:
    venue = "syndr"

    def __init__(self, ws: Ws) -> None:
        self.ws = ws


class AnySymbol:
    async def check(self, venue: str, symbol: str, **kw: Any) -> None:
        pass


async def test_a_ticker_consumer_whose_backlog_was_dropped_is_told_so() -> None:
    events = [Message("ticker.ETH-PERP", ticker("ETH-PERP", "2000"), b"", 0),
              Overflow(dropped=10_000),  # BTC-PERP's only move was in there
              Message("ticker.ETH-PERP", ticker("ETH-PERP", "2001"), b"", 0)]
    servicer = MarketDataServicer({"syndr": cast(VenueBooks, Books(Ws(events)))}, cast(SymbolCheck, AnySymbol()),
                                  FeedSettings())
    seen: list[str] = []
    request = pb.StreamTickersRequest(venue="syndr", symbols=["ETH-PERP", "BTC-PERP"])
    with pytest.raises(PorticoError) as caught:
        async for response in servicer.StreamTickers(request, None):
            seen.extend(t.mark_price for t in response.tickers)
    assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert caught.value.reason == "CONSUMER_TOO_SLOW"
    assert seen == ["2000"]
