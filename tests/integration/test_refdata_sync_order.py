"""Overlapping syncs of one venue commit in the order they fetched the venue's listing: an older listing never
overwrites a newer one (reverting a tick size, deactivating a just-listed instrument), in one process or two."""
from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from tests.support.postgres import fresh_database

from portico.refdata.model import InstrumentRecord
from portico.refdata.store import InstrumentStore, open_store
from portico.refdata.sync import EventHub, InstrumentSyncer, Listing, VenueSource


def rec(symbol: str, tick: str) -> InstrumentRecord:
    return InstrumentRecord(venue="syndr", symbol=symbol, dataset_id=symbol, base_currency="ETH",
                            quote_currency="USD", type="perpetual", active=True, available_since=0,
                            price_increment=Decimal(tick), amount_increment=Decimal("0.001"),
                            min_trade_amount=Decimal("0.001"), maker_fee=Decimal(0), taker_fee=Decimal(0),
                            contract_type="linear_perpetual", contract_multiplier=Decimal(1))


class Venue:
    """The venue's current listing; the first fetch answers with it only once `slow_done` is set."""

    def __init__(self) -> None:
        self.state = {"ETH-PERP": "0.1"}
        self.slow_done = asyncio.Event()
        self.calls = 0

    async def source(self) -> Listing:
        self.calls += 1
        listing = Listing([rec(s, t) for s, t in sorted(self.state.items())])  # today's list...
        if self.calls == 1:
            await self.slow_done.wait()  # ...arriving late (a big response, parsed slowly)
        return listing


@pytest.fixture(params=["sqlite", "postgres"])
def locations(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Path | str]]:
    if request.param == "sqlite":
        yield {"sqlite_path": tmp_path / "instruments.sqlite3"}
        return
    with fresh_database() as dsn:
        yield {"dsn": dsn}


def store_at(where: dict[str, Path | str]) -> InstrumentStore:
    path, dsn = where.get("sqlite_path"), where.get("dsn")
    return open_store(sqlite_path=path if isinstance(path, Path) else None, dsn=dsn if isinstance(dsn, str) else None)


async def race(slow: InstrumentSyncer, quick: InstrumentSyncer, venue: Venue) -> None:
    """A full sync fetches; the venue changes; a quick sync of the changed symbols runs; the full one returns."""
    first = asyncio.create_task(slow.sync("syndr"))
    await asyncio.sleep(0.1)
    venue.state["ETH-PERP"] = "0.2"  # a new tick size, and a new listing
    venue.state["BTC-PERP"] = "1"
    second = asyncio.create_task(quick.sync("syndr", ["ETH-PERP", "BTC-PERP"]))
    await asyncio.sleep(0.1)
    venue.slow_done.set()
    await asyncio.wait_for(asyncio.gather(first, second), 10)


async def check(store: InstrumentStore) -> None:
    eth = await store.get("syndr", "ETH-PERP")
    btc = await store.get("syndr", "BTC-PERP")
    assert eth is not None and eth.price_increment == Decimal("0.2"), "an older listing reverted the tick size"
    assert btc is not None and btc.active, "an older listing deactivated a listed instrument"


async def test_an_older_listing_never_commits_after_a_newer_one_in_one_process(
        locations: dict[str, Path | str]) -> None:
    venue = Venue()
    async with store_at(locations) as store:
        await store.sync_venue("syndr", [rec("ETH-PERP", "0.1")], full=True, now_ms=1)
        sources: dict[str, VenueSource] = {"syndr": venue.source}
        syncer = InstrumentSyncer(store, sources, EventHub(), now_ms=iter(range(1_000, 10**9, 1_000)).__next__)
        await race(syncer, syncer, venue)
        await check(store)


@pytest.fixture
def postgres_location() -> Iterator[dict[str, Path | str]]:
    """Several processes share a database only on PostgreSQL (one process per SQLite file)."""
    with fresh_database() as dsn:
        yield {"dsn": dsn}


async def test_an_older_listing_never_commits_after_a_newer_one_across_processes(
        postgres_location: dict[str, Path | str]) -> None:
    locations = postgres_location
    venue = Venue()
    async with store_at(locations) as one, store_at(locations) as other:  # two processes' stores
        await one.sync_venue("syndr", [rec("ETH-PERP", "0.1")], full=True, now_ms=1)
        clock = iter(range(1_000, 10**9, 1_000)).__next__
        sources: dict[str, VenueSource] = {"syndr": venue.source}
        await race(InstrumentSyncer(one, sources, EventHub(), now_ms=clock),
                   InstrumentSyncer(other, sources, EventHub(), now_ms=clock), venue)
        await check(one)
