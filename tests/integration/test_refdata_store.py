"""The instrument store on both backends: sync diffing, history, deactivation, filters, paging, migrations,
concurrent syncs, and 10k-record timings (printed, not asserted).

PostgreSQL tests run in a fresh database created for the session (`portico_test_<hex>`, dropped at the end
whatever happens) and a fresh schema per test; they are skipped only if nothing listens on 127.0.0.1:5432.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import socket
import sqlite3
import statistics
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from portico.refdata import store as store_module
from portico.refdata.model import InstrumentChange, InstrumentFilter, InstrumentRecord
from portico.refdata.store import (
    SCHEMA_VERSION,
    InstrumentStore,
    SchemaVersionError,
    SqliteInstrumentStore,
    SyncOutcome,
    open_store,
)

PG_HOST, PG_PORT = "127.0.0.1", 5432
PG_ADMIN_DSN = f"host={PG_HOST} port={PG_PORT} user=postgres dbname=postgres connect_timeout=5"
VENUE = "syndr"
T0 = 1_800_000_000_000
T1 = T0 + 60_000
T2 = T1 + 60_000

# --------------------------------------------------------------------------------------------------------------
# Realistic records, quickly

_BASES = ("BTC", "ETH", "SOL", "ARB", "DOGE", "XRP", "AVAX", "LINK", "OP", "SUI", "TIA", "PEPE")
_TICKS = {"BTC": "0.5", "ETH": "0.05", "SOL": "0.01"}
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")


@cache
def _universe() -> tuple[InstrumentRecord, ...]:
    """~12k distinct Syndr-like instruments (spot, perpetuals, futures, options), ordered so any slice mixes."""
    records: list[InstrumentRecord] = []

    def add(symbol: str, base: str, quote: str, kind: str, contract_type: str | None, *, expiry: int | None = None,
            strike: Decimal | None = None, option_type: str | None = None) -> None:
        tick = Decimal(_TICKS.get(base, "0.0001"))
        records.append(InstrumentRecord(
            venue=VENUE, symbol=symbol, dataset_id=symbol, base_currency=base, quote_currency=quote, type=kind,
            active=True, available_since=0, price_increment=tick * (10 if kind == "option" else 1),
            amount_increment=Decimal("0.001") if base == "BTC" else Decimal("0.01"),
            min_trade_amount=Decimal("0.01"), maker_fee=Decimal("0.0002"), taker_fee=Decimal("0.0005"),
            expiry=expiry, inverse=contract_type == "inverse_future" if contract_type else None,
            contract_type=contract_type, contract_multiplier=Decimal(1) if kind != "spot" else None,
            settlement_currency=quote, strike_price=strike, option_type=option_type,
            venue_instrument_id=len(records) + 1, venue_kind=kind, max_leverage=Decimal(20) if kind != "spot" else None,
            price_index=f"{base.lower()}_usd", underlying=f"{base}-USD", settlement_period="perpetual"
            if kind == "perpetual" else ("" if kind == "spot" else "month"),
            venue_base_currency=base, venue_quote_currency=quote))

    for b, base in enumerate(_BASES):
        add(f"{base}-USDC", base, "USDC", "spot", None)
        add(f"{base}-USDT", base, "USDT", "spot", None)
        add(f"{base}-PERP", base, "USD", "perpetual", "linear_perpetual")
        for e in range(24):
            day, month, year = 1 + (e * 7 + b) % 28, _MONTHS[e % 12], 26 + e // 12
            expiry_name = f"{day:02d}{month}{year}"
            expiry = T0 + (e + 1) * 2_592_000_000
            add(f"{base}-{expiry_name}", base, "USD", "future",
                "inverse_future" if base == "BTC" and e % 3 == 0 else "linear_future", expiry=expiry)
            for k in range(20):
                strike = Decimal(100 * (k + 1) * (b + 1))
                for option_type, letter in (("call", "C"), ("put", "P")):
                    add(f"{base}-{expiry_name}-{strike}-{letter}", base, "USD", "option", f"{option_type}_option",
                        expiry=expiry, strike=strike, option_type=option_type)
    rng = random.Random(7)
    others = [r for r in records if r.type != "option"]
    options = [r for r in records if r.type == "option"]
    rng.shuffle(others)
    rng.shuffle(options)
    mixed: list[InstrumentRecord] = []
    while others or options:  # one in four is a spot, perpetual or future while they last
        mixed.extend(others[:1] + options[:3])
        del others[:1], options[:3]
    return tuple(mixed)


def make_records(n: int, *, offset: int = 0) -> list[InstrumentRecord]:
    """`n` distinct records of venue "syndr" (a deterministic, well-mixed slice of the universe)."""
    universe = _universe()
    assert offset + n <= len(universe)
    return list(universe[offset:offset + n])


def by_symbol(records: Sequence[InstrumentRecord]) -> dict[str, InstrumentRecord]:
    return {r.symbol: r for r in records}


def counts(outcome: SyncOutcome) -> tuple[int, int, int]:
    return outcome.added, outcome.updated, outcome.deactivated


# --------------------------------------------------------------------------------------------------------------
# Backends


@dataclass
class Backend:
    """One database of one kind: stores on it, and raw SQL on it for what the store's API cannot show."""

    kind: str
    sqlite_path: Path | None = None
    dsn: str | None = None
    _sqlite_raw: sqlite3.Connection | None = field(default=None, repr=False)

    def store(self) -> InstrumentStore:
        return open_store(sqlite_path=self.sqlite_path, dsn=self.dsn)

    async def sql(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if self.kind == "sqlite":
            if self._sqlite_raw is None:
                assert self.sqlite_path is not None
                self._sqlite_raw = sqlite3.connect(self.sqlite_path, isolation_level=None)
            return self._sqlite_raw.execute(query.replace("%s", "?"), params).fetchall()
        import psycopg

        assert self.dsn is not None
        async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as conn:
            cursor = await conn.execute(query, params)
            return await cursor.fetchall() if cursor.description else []

    async def write_marker(self) -> Any:
        """Something that changes whenever a transaction wrote to `instruments` (and only then)."""
        if self.kind == "sqlite":
            # PRAGMA data_version changes when ANOTHER connection commits a change to the file.
            return await self.sql("PRAGMA data_version")
        return await self.sql("SELECT symbol, xmin::text FROM instruments ORDER BY symbol")

    def close(self) -> None:
        if self._sqlite_raw is not None:
            self._sqlite_raw.close()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this session; dropped at the end, also when tests fail."""
    try:
        socket.create_connection((PG_HOST, PG_PORT), timeout=2).close()
    except OSError as exc:
        pytest.skip(f"PostgreSQL is not reachable at {PG_HOST}:{PG_PORT} ({exc})")
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import make_conninfo

    name = f"portico_test_{secrets.token_hex(6)}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_conninfo(PG_ADMIN_DSN, dbname=name)
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """An empty database: a new SQLite file, or a new schema in the session's PostgreSQL database."""
    if request.param == "sqlite":
        made = Backend("sqlite", sqlite_path=tmp_path / "refdata" / "instruments.sqlite3")
    else:
        import psycopg
        from psycopg import sql
        from psycopg.conninfo import make_conninfo

        database: str = request.getfixturevalue("pg_database")
        schema = f"t_{secrets.token_hex(4)}"
        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        made = Backend("postgres", dsn=make_conninfo(database, options=f"-c search_path={schema}"))
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[InstrumentStore]:
    opened = backend.store()
    await opened.start()
    try:
        yield opened
    finally:
        await opened.aclose()


async def list_all(store: InstrumentStore, flt: InstrumentFilter | None = None) -> list[InstrumentRecord]:
    return await store.list(VENUE, flt or InstrumentFilter(), limit=100_000)


# --------------------------------------------------------------------------------------------------------------
# Sync semantics


async def test_first_sync_adds_everything(store: InstrumentStore) -> None:
    records = make_records(60)
    outcome = await store.sync_venue(VENUE, records, full=True, now_ms=T0)

    assert (outcome.synced, *counts(outcome)) == (60, 60, 0, 0)
    assert [e.record.symbol for e in outcome.events] == sorted(r.symbol for r in records)
    assert {e.kind for e in outcome.events} == {"added"} and {e.at_ms for e in outcome.events} == {T0}
    assert await store.count(VENUE) == 60
    assert await store.venues() == [VENUE]
    for incoming in records:
        stored = await store.get(VENUE, incoming.symbol)
        assert stored is not None
        assert stored.terms() == incoming.terms()
        assert (stored.active, stored.available_since, stored.available_to, stored.update_time, stored.changes) == (
            True, T0, None, T0, ())
    assert by_symbol([e.record for e in outcome.events]) == by_symbol(await list_all(store))
    assert await store.get(VENUE, "NOPE-PERP") is None
    assert await store.get("other", records[0].symbol) is None
    assert await store.count("other") == 0


async def test_lifecycle_fields_of_incoming_records_are_ignored(store: InstrumentStore) -> None:
    record = make_records(1)[0].with_lifecycle(active=False, available_since=5, available_to=6, update_time=7,
                                               changes=(InstrumentChange(1, price_increment=Decimal(1)),))
    await store.sync_venue(VENUE, [record], full=True, now_ms=T0)
    stored = await store.get(VENUE, record.symbol)
    assert stored is not None
    assert (stored.active, stored.available_since, stored.available_to, stored.update_time, stored.changes) == (
        True, T0, None, T0, ())


async def test_identical_resync_writes_nothing(store: InstrumentStore, backend: Backend) -> None:
    records = make_records(80)
    await store.sync_venue(VENUE, records, full=True, now_ms=T0)
    before = await backend.write_marker()
    stored_before = await list_all(store)

    again = await store.sync_venue(VENUE, list(reversed(records)), full=True, now_ms=T1)
    partial = await store.sync_venue(VENUE, records[:5], full=False, now_ms=T2)

    assert (again.synced, *counts(again), again.events) == (80, 0, 0, 0, ())
    assert (partial.synced, *counts(partial), partial.events) == (5, 0, 0, 0, ())
    assert await backend.write_marker() == before, "a no-op sync must not write"
    assert await list_all(store) == stored_before
    assert {r.update_time for r in stored_before} == {T0}

    # The marker does see a write (so the check above means something).
    await store.sync_venue(VENUE, [replace(records[0], taker_fee=Decimal("0.0007"))], full=False, now_ms=T2)
    assert await backend.write_marker() != before


async def test_tick_size_change_is_recorded_in_the_history(store: InstrumentStore) -> None:
    records = make_records(30)
    await store.sync_venue(VENUE, records, full=True, now_ms=T0)
    target = records[7]
    old_tick = target.price_increment
    changed = [replace(r, price_increment=old_tick * 2) if r.symbol == target.symbol else r for r in records]

    outcome = await store.sync_venue(VENUE, changed, full=True, now_ms=T1)

    assert counts(outcome) == (0, 1, 0)
    (event,) = outcome.events
    assert (event.kind, event.at_ms, event.record.symbol) == ("updated", T1, target.symbol)
    stored = await store.get(VENUE, target.symbol)
    assert stored == event.record
    assert stored.price_increment == old_tick * 2
    assert stored.changes == (InstrumentChange(until_ms=T1, price_increment=old_tick),)
    assert (stored.available_since, stored.update_time, stored.active, stored.available_to) == (T0, T1, True, None)
    untouched = await store.get(VENUE, records[8].symbol)
    assert untouched is not None and untouched.update_time == T0

    # A second change appends; several tracked fields changing at once make one entry holding each old value.
    assert target.contract_multiplier is not None
    again = [replace(r, price_increment=old_tick * 4, amount_increment=r.amount_increment * 10,
                     contract_multiplier=target.contract_multiplier * 2)
             if r.symbol == target.symbol else r for r in changed]
    assert counts(await store.sync_venue(VENUE, again, full=True, now_ms=T2)) == (0, 1, 0)
    stored = await store.get(VENUE, target.symbol)
    assert stored is not None
    assert stored.changes == (
        InstrumentChange(until_ms=T1, price_increment=old_tick),
        InstrumentChange(until_ms=T2, price_increment=old_tick * 2, amount_increment=target.amount_increment,
                         contract_multiplier=target.contract_multiplier),
    )
    assert stored.available_since == T0


async def test_untracked_change_updates_without_history(store: InstrumentStore) -> None:
    records = make_records(20)
    await store.sync_venue(VENUE, records, full=True, now_ms=T0)
    target = records[3]
    changed = [replace(r, maker_fee=Decimal("-0.0001")) if r is target else r for r in records]

    outcome = await store.sync_venue(VENUE, changed, full=True, now_ms=T1)

    assert counts(outcome) == (0, 1, 0)
    stored = await store.get(VENUE, target.symbol)
    assert stored is not None
    assert (stored.maker_fee, stored.changes, stored.update_time, stored.available_since) == (
        Decimal("-0.0001"), (), T1, T0)


async def test_full_sync_deactivates_and_relisting_reactivates(store: InstrumentStore) -> None:
    records = make_records(40)
    await store.sync_venue(VENUE, records, full=True, now_ms=T0)
    gone = records[11]
    remaining = [r for r in records if r is not gone]

    outcome = await store.sync_venue(VENUE, remaining, full=True, now_ms=T1)

    assert (outcome.synced, *counts(outcome)) == (39, 0, 0, 1)
    (event,) = outcome.events
    assert (event.kind, event.record.symbol, event.record.active) == ("deactivated", gone.symbol, False)
    stored = await store.get(VENUE, gone.symbol)
    assert stored == event.record
    assert (stored.active, stored.available_to, stored.update_time, stored.available_since) == (False, T1, T1, T0)
    assert await store.count(VENUE) == 40  # never deleted
    assert [r.symbol for r in await list_all(store, InstrumentFilter(active=False))] == [gone.symbol]
    assert gone.symbol not in {r.symbol for r in await list_all(store, InstrumentFilter(active=True))}
    # Still missing: nothing more to do (it is not deactivated again).
    assert counts(await store.sync_venue(VENUE, remaining, full=True, now_ms=T1 + 1)) == (0, 0, 0)

    back = await store.sync_venue(VENUE, records, full=True, now_ms=T2)

    assert counts(back) == (0, 1, 0)
    assert [(e.kind, e.record.symbol) for e in back.events] == [("updated", gone.symbol)]
    stored = await store.get(VENUE, gone.symbol)
    assert stored is not None
    assert (stored.active, stored.available_to, stored.update_time, stored.available_since, stored.changes) == (
        True, None, T2, T0, ())
    assert await list_all(store, InstrumentFilter(active=False)) == []


async def test_partial_sync_never_deactivates(store: InstrumentStore) -> None:
    records = make_records(30)
    await store.sync_venue(VENUE, records[:25], full=True, now_ms=T0)
    new = records[25]
    changed = replace(records[0], taker_fee=Decimal("0.001"))

    outcome = await store.sync_venue(VENUE, [new, changed], full=False, now_ms=T1)

    assert (outcome.synced, *counts(outcome)) == (2, 1, 1, 0)
    assert [(e.kind, e.record.symbol) for e in outcome.events] == sorted(
        [("added", new.symbol), ("updated", changed.symbol)], key=lambda pair: pair[1])
    assert await store.count(VENUE) == 26
    assert await list_all(store, InstrumentFilter(active=False)) == []

    # A partial sync of an inactive symbol reactivates it (and still deactivates nothing else).
    await store.sync_venue(VENUE, records[1:25], full=True, now_ms=T1)
    assert [r.symbol for r in await list_all(store, InstrumentFilter(active=False))] == sorted(
        [records[0].symbol, new.symbol])
    revived = await store.sync_venue(VENUE, [changed], full=False, now_ms=T2)
    assert counts(revived) == (0, 1, 0)
    assert [r.symbol for r in await list_all(store, InstrumentFilter(active=False))] == [new.symbol]


async def test_bad_input_is_refused_before_touching_the_database(store: InstrumentStore) -> None:
    record = make_records(1)[0]
    with pytest.raises(ValueError, match="belongs to venue"):
        await store.sync_venue("other", [record], full=True, now_ms=T0)
    with pytest.raises(ValueError, match="twice"):
        await store.sync_venue(VENUE, [record, record], full=True, now_ms=T0)
    with pytest.raises(ValueError, match="limit"):
        await store.list(VENUE, InstrumentFilter(), limit=-1)
    assert await store.count(VENUE) == 0
    assert await store.venues() == []


async def test_venues_are_kept_apart(store: InstrumentStore) -> None:
    records = make_records(10)
    other = [replace(r, venue="other") for r in records[:4]]
    await store.sync_venue(VENUE, records, full=True, now_ms=T0)
    await store.sync_venue("other", other, full=True, now_ms=T0)
    # A full sync of one venue does not deactivate the other's records.
    assert counts(await store.sync_venue("other", other[:1], full=True, now_ms=T1)) == (0, 0, 3)
    assert await store.venues() == ["other", VENUE]
    assert (await store.count(VENUE), await store.count("other")) == (10, 4)
    assert await list_all(store, InstrumentFilter(active=False)) == []


# --------------------------------------------------------------------------------------------------------------
# Listing


FILTERS = [
    InstrumentFilter(),
    InstrumentFilter(base_currencies=("ETH",)),
    InstrumentFilter(base_currencies=("BTC", "SOL", "NOPE")),
    InstrumentFilter(quote_currencies=("USDC",)),
    InstrumentFilter(quote_currencies=("USDC", "USDT")),
    InstrumentFilter(types=("option",)),
    InstrumentFilter(types=("spot", "perpetual")),
    InstrumentFilter(contract_types=("put_option",)),
    InstrumentFilter(contract_types=("inverse_future", "linear_perpetual")),
    InstrumentFilter(active=True),
    InstrumentFilter(active=False),
    InstrumentFilter(base_currencies=("ETH", "BTC"), types=("future", "option"), contract_types=("call_option",),
                     quote_currencies=("USD",), active=True),
    InstrumentFilter(base_currencies=("XRP",), active=False),
    InstrumentFilter(types=("nothing",)),
]


@pytest.fixture
async def listed(store: InstrumentStore) -> list[InstrumentRecord]:
    """600 records, 60 of them deactivated: what the store should hold, sorted by symbol."""
    records = make_records(600)
    await store.sync_venue(VENUE, records, full=True, now_ms=T0)
    await store.sync_venue(VENUE, records[60:], full=True, now_ms=T1)
    expected = sorted(await list_all(store), key=lambda r: r.symbol)
    assert sum(not r.active for r in expected) == 60
    return expected


@pytest.mark.parametrize("flt", FILTERS, ids=repr)
async def test_filters_match_the_model(store: InstrumentStore, listed: list[InstrumentRecord],
                                       flt: InstrumentFilter) -> None:
    expected = [r for r in listed if flt.matches(r)]
    assert await list_all(store, flt) == expected


async def test_filters_cover_every_kind_of_record(listed: list[InstrumentRecord]) -> None:
    for flt in FILTERS[1:11]:
        assert any(flt.matches(r) for r in listed), f"the data set does not exercise {flt}"
    assert {r.type for r in listed} == {"spot", "perpetual", "future", "option"}
    assert None in {r.contract_type for r in listed}


@pytest.mark.parametrize("limit", [1, 7, 50, 1000])
async def test_keyset_paging_is_complete_and_stable(store: InstrumentStore, listed: list[InstrumentRecord],
                                                   limit: int) -> None:
    for flt in (InstrumentFilter(), InstrumentFilter(types=("option",), active=True),
                InstrumentFilter(base_currencies=("ETH", "SOL"))):
        pages: list[list[InstrumentRecord]] = []
        after: str | None = None
        while True:
            page = await store.list(VENUE, flt, limit=limit, after_symbol=after)
            assert len(page) <= limit
            if not page:
                break
            pages.append(page)
            after = page[-1].symbol
        seen = [r.symbol for page in pages for r in page]
        assert seen == [r.symbol for r in listed if flt.matches(r)]  # in order, no duplicates, no misses
        assert all(len(page) == limit for page in pages[:-1])
    assert await store.list(VENUE, InstrumentFilter(), limit=0) == []
    # The cursor need not be a stored symbol, and a page boundary survives records appearing before it.
    middle = listed[len(listed) // 2].symbol
    tail = await store.list(VENUE, InstrumentFilter(), limit=100_000, after_symbol=middle + "!")
    assert [r.symbol for r in tail] == [r.symbol for r in listed if r.symbol > middle + "!"]
    await store.sync_venue(VENUE, make_records(5, offset=600), full=False, now_ms=T2)
    again = await store.list(VENUE, InstrumentFilter(), limit=3, after_symbol=middle)
    assert all(r.symbol > middle for r in again)


# --------------------------------------------------------------------------------------------------------------
# Migrations


async def test_migrations_are_idempotent(store: InstrumentStore, backend: Backend) -> None:
    await store.sync_venue(VENUE, make_records(10), full=True, now_ms=T0)
    versions = await backend.sql("SELECT version, description, applied_at_ms FROM schema_version ORDER BY version")
    assert [v[0] for v in versions] == list(range(1, SCHEMA_VERSION + 1))

    for _ in range(2):
        async with backend.store() as again:
            assert await again.count(VENUE) == 10
    await store.aclose()
    await store.start()  # no-op on a closed-and-restarted store too
    assert await backend.sql("SELECT version, description, applied_at_ms FROM schema_version ORDER BY version") == (
        versions)
    assert await store.count(VENUE) == 10


async def test_a_newer_database_is_refused(store: InstrumentStore, backend: Backend) -> None:
    await backend.sql("INSERT INTO schema_version (version, description, applied_at_ms) VALUES (%s, %s, %s)",
                      (SCHEMA_VERSION + 1, "from the future", T0))
    newer = backend.store()
    with pytest.raises(SchemaVersionError, match=rf"schema version {SCHEMA_VERSION + 1}, newer than"):
        await newer.start()
    with pytest.raises(RuntimeError, match="start"):
        await newer.count(VENUE)
    await newer.aclose()


async def test_concurrent_first_starts_migrate_once(backend: Backend) -> None:
    stores = [backend.store() for _ in range(4)]
    try:
        await asyncio.gather(*(s.start() for s in stores))
        versions = await backend.sql("SELECT version FROM schema_version")
        assert [v[0] for v in versions] == list(range(1, SCHEMA_VERSION + 1))
    finally:
        for s in stores:
            await s.aclose()


def test_open_store_picks_the_backend(tmp_path: Path) -> None:
    assert isinstance(open_store(sqlite_path=tmp_path / "x.sqlite3", dsn=None), SqliteInstrumentStore)
    assert type(open_store(sqlite_path=tmp_path / "x.sqlite3", dsn="dbname=x")).__name__ == "PostgresInstrumentStore"
    with pytest.raises(ValueError, match="DSN or a SQLite path"):
        open_store(sqlite_path=None, dsn=None)


# --------------------------------------------------------------------------------------------------------------
# Concurrency


def _next_listing(records: list[InstrumentRecord]) -> tuple[list[InstrumentRecord], int, int, int]:
    """From `records` (stored): 3 changed, 1 missing, 5 new; with the expected added/updated/deactivated."""
    changed = [replace(r, price_increment=r.price_increment * 10) if i < 3 else r for i, r in enumerate(records[:-1])]
    return changed + make_records(5, offset=len(records)), 5, 3, 1


async def _check_after_concurrent_syncs(store: InstrumentStore, outcomes: Sequence[SyncOutcome],
                                        listing: list[InstrumentRecord], original: list[InstrumentRecord],
                                        expected: tuple[int, int, int]) -> None:
    assert tuple(sum(c) for c in zip(*(counts(o) for o in outcomes), strict=True)) == expected
    assert sum(len(o.events) for o in outcomes) == sum(expected)
    stored = by_symbol(await list_all(store))
    assert len(stored) == len(original) + 5
    for incoming in listing:
        assert stored[incoming.symbol].terms() == incoming.terms()
        assert stored[incoming.symbol].active
    for record in original[:3]:  # exactly one history entry each, whoever won
        assert stored[record.symbol].changes == (InstrumentChange(until_ms=T1, price_increment=record.price_increment),)
    assert not stored[original[-1].symbol].active


async def test_concurrent_syncs_of_one_venue_never_double_count(store: InstrumentStore) -> None:
    original = make_records(200)
    await store.sync_venue(VENUE, original, full=True, now_ms=T0)
    listing, added, updated, deactivated = _next_listing(original)

    outcomes = await asyncio.gather(*(store.sync_venue(VENUE, listing, full=True, now_ms=T1) for _ in range(5)))

    await _check_after_concurrent_syncs(store, outcomes, listing, original, (added, updated, deactivated))


async def test_concurrent_syncs_from_two_stores_never_double_count(store: InstrumentStore, backend: Backend) -> None:
    """Two store instances: two pools on PostgreSQL, two connections (and threads) on one SQLite file."""
    original = make_records(200)
    await store.sync_venue(VENUE, original, full=True, now_ms=T0)
    listing, added, updated, deactivated = _next_listing(original)
    async with backend.store() as second:
        outcomes = await asyncio.gather(*(s.sync_venue(VENUE, listing, full=True, now_ms=T1)
                                          for s in (store, second, store, second, store, second)))
    await _check_after_concurrent_syncs(store, outcomes, listing, original, (added, updated, deactivated))


# --------------------------------------------------------------------------------------------------------------
# 10k timings (printed for the record; never asserted)


async def test_10k_timings(store: InstrumentStore, backend: Backend, capsys: pytest.CaptureFixture[str]) -> None:
    """Cold = the store's cache of decoded records emptied first (a fresh process); warm = steady state."""
    records = make_records(10_000)
    timings: list[str] = []

    async def timed(label: str, records: list[InstrumentRecord], now_ms: int, *, cold: bool) -> SyncOutcome:
        if cold:
            store_module._CACHE.clear()
        started = time.perf_counter()
        outcome = await store.sync_venue(VENUE, records, full=True, now_ms=now_ms)
        timings.append(f"{label} {time.perf_counter() - started:.3f} s")
        return outcome

    assert counts(await timed("first full sync", records, T0, cold=True)) == (10_000, 0, 0)
    assert counts(await timed("unchanged re-sync (warm)", records, T1, cold=False)) == (0, 0, 0)
    assert counts(await timed("unchanged re-sync (cold)", records, T1, cold=True)) == (0, 0, 0)
    changed = [replace(r, taker_fee=Decimal("0.0006")) if i % 100 == 0 else r for i, r in enumerate(records)]
    assert counts(await timed("99 updated + 100 deactivated (cold)", changed[:-100], T2, cold=True)) == (0, 99, 100)

    filters = [f for f in FILTERS if f.types != ("nothing",)]
    symbols = sorted(r.symbol for r in records)
    lines = []
    for limit, queries in ((101, 300), (1001, 60)):
        for cold in (True, False):
            if not cold:
                await list_all(store)  # every record decoded once, as a running service's syncs leave it
            samples = []
            for i in range(queries):
                flt = filters[i % len(filters)]
                after = None if i % 3 == 0 else symbols[(i * 37) % len(symbols)]
                if cold:
                    store_module._CACHE.clear()
                started = time.perf_counter()
                page = await store.list(VENUE, flt, limit=limit, after_symbol=after)
                samples.append((time.perf_counter() - started) * 1000)
                assert page == [r for r in page if flt.matches(r)]
            quantiles = statistics.quantiles(samples, n=100, method="inclusive")
            lines.append(f"list limit {limit} ({'cold' if cold else 'warm'}, {queries} filtered queries): "
                         f"p50 {quantiles[49]:.2f} ms, p99 {quantiles[98]:.2f} ms, max {max(samples):.2f} ms")

    with capsys.disabled():
        print(f"\n[{backend.kind}] 10k: " + ", ".join(timings))
        for line in lines:
            print(f"[{backend.kind}] {line}")
