"""StreamTrades' catch-up reads, shared per upstream reconnect (`SharedTradeListings`), without the venue."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

import pytest

from portico.marketdata import service
from portico.marketdata.service import SharedTradeListings
from portico.runtime.errors import Unavailable


class Venue:
    """`_venue_call` for public/get_trades: fails the first `failures` reads, each after `delay_s`."""

    def __init__(self, failures: int, delay_s: float = 0.05):
        self.failures, self.delay_s, self.reads = failures, delay_s, 0

    async def call(self, http: Any, method: str, params: dict[str, Any], parse: Any) -> list[str]:
        assert method == "public/get_trades"
        self.reads += 1
        await asyncio.sleep(self.delay_s)
        if self.reads <= self.failures:
            raise Unavailable("the venue answered 503", reason="VENUE_UNAVAILABLE")
        return [f"trade-{self.reads}"]


async def latest(shared: SharedTradeListings, symbol: str) -> list[str]:
    """`shared.latest(symbol)`: the fake venue's listings are strings standing in for `models.Trade`s."""
    return cast(list[str], await shared.latest(symbol))


def listings(monkeypatch: pytest.MonkeyPatch, venue: Venue) -> SharedTradeListings:
    monkeypatch.setattr(service, "_venue_call", venue.call)
    books = SimpleNamespace(venue="syndr", http=object(), ws=SimpleNamespace(reconnects=1))
    return SharedTradeListings(books)  # type: ignore[arg-type]


async def test_streams_asking_together_share_one_read_and_its_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    venue = Venue(failures=1)
    shared = listings(monkeypatch, venue)
    results = await asyncio.gather(*(shared.latest("ETH-PERP") for _ in range(3)), return_exceptions=True)
    assert venue.reads == 1 and all(isinstance(r, Unavailable) for r in results)


async def test_a_failed_read_is_not_served_to_a_stream_that_asks_after_it_failed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure is no listing: a stream reaching its catch-up after the shared read failed (a backlog ahead of its
    `Reconnected`, say) reads again, rather than end with TRADES_MISSED for a venue blip that has passed."""
    venue = Venue(failures=1)
    shared = listings(monkeypatch, venue)
    with pytest.raises(Unavailable):
        await shared.latest("ETH-PERP")
    await asyncio.sleep(0.1)  # well within the time a listing is kept for late streams
    assert await latest(shared, "ETH-PERP") == ["trade-2"]
    assert await latest(shared, "ETH-PERP") == ["trade-2"]  # a listing is still shared
    assert venue.reads == 2


async def test_a_new_reconnect_reads_again(monkeypatch: pytest.MonkeyPatch) -> None:
    venue = Venue(failures=0)
    shared = listings(monkeypatch, venue)
    assert await latest(shared, "ETH-PERP") == ["trade-1"]
    shared._books.ws.reconnects = 2
    assert await latest(shared, "ETH-PERP") == ["trade-2"]


async def test_reads_for_every_stream_together_stay_within_the_venue_wide_bound(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Streams of different symbols share no read, so a bound per catch-up would let N streams send 4 x N at once
    after a reconnect: the bound is on the venue's listings, for every stream together."""
    in_flight, most = 0, 0

    async def call(http: Any, method: str, params: dict[str, Any], parse: Any) -> list[str]:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.02)
        in_flight -= 1
        return [params["instrument_name"]]

    monkeypatch.setattr(service, "_venue_call", call)
    books = SimpleNamespace(venue="syndr", http=object(), ws=SimpleNamespace(reconnects=1))
    shared = SharedTradeListings(books)  # type: ignore[arg-type]
    symbols = [f"S{i}-PERP" for i in range(40)]
    results = await asyncio.gather(*(latest(shared, symbol) for symbol in symbols))
    assert results == [[symbol] for symbol in symbols]
    assert most == service._TRADES_CATCH_UP_READS
