"""Syncs that go wrong part-way: what the database holds and what watchers are told must agree.

- A caller that goes away (its deadline, a disconnect) while the sync's write is under way: the write runs to
  its end and its events still reach the watchers (SQLite cannot stop a statement running on its thread, and a
  commit that nobody published would leave market data and execution on the old tick size).
- PostgreSQL's statistics refresh after a big sync failing (a lock timeout behind autovacuum, a dropped
  connection): the sync has committed, so it is reported and published, not turned into an error.
- The venue listing an instrument with `is_active: false`: it is not tradable, so it is not active here.
- The venue answering with an empty listing (or none it can read): refused, rather than every instrument
  deactivated and every order refused until the next sync.
- The venue listing one instrument this service cannot read (a tick size that is no number): that one is
  skipped, logged and counted, so not active here (no trading on terms we cannot read), and the rest synced;
  once it reads again the next sync makes it active again.
- The venue not up yet when the service starts (the suite starting together): the failed first sync is tried
  again within seconds, not at the next scheduled sync minutes later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path

import grpc
import pytest
from tests.support.postgres import fresh_database, postgres_reachable
from tests.support.refdata import RunningRefdata, database, refdata_on, running_refdata
from tests.support.refdata import syndr_instrument as _wire
from tests.support.syndr_stub import SyndrStub

from portico.refdata.model import InstrumentRecord
from portico.refdata.store import PostgresInstrumentStore
from portico.refdata.v1 import instrument_pb2
from portico.refdata.v1 import reference_data_service_pb2 as pb
from portico.runtime.client import open_channel
from portico.sim.server import SimConfig, Simulator


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@contextlib.contextmanager
def writes_blocked(db_env: dict[str, str]) -> Iterator[None]:
    """Hold the lock a sync's write transaction needs (SQLite's writer lock, or the venue's PostgreSQL
    transaction lock), from another connection, until the block ends."""
    if "PORTICO_REFDATA_DB" in db_env:
        db = sqlite3.connect(db_env["PORTICO_REFDATA_DB"], isolation_level=None)
        try:
            db.execute("BEGIN IMMEDIATE")
            yield
            db.execute("ROLLBACK")
        finally:
            db.close()
        return
    import psycopg

    with psycopg.connect(db_env["PORTICO_REFDATA_DSN"]) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", ("syndr",))
        yield


async def test_a_sync_whose_caller_went_away_still_tells_the_watchers(backend: str, tmp_path: Path) -> None:
    async with Simulator(SimConfig(port=0, market_maker=False)) as sim:
        with database(backend, tmp_path) as db_env:
            async with running_refdata(sim.http_url, db_env) as refdata, open_channel(refdata.target) as channel:
                stub = refdata.stub(channel)
                await stub.SyncInstruments(pb.SyncInstrumentsRequest(venue="syndr"), metadata=refdata.metadata(),
                                           timeout=30)
                watch = stub.WatchInstruments(pb.WatchInstrumentsRequest(venue="syndr"),
                                              metadata=refdata.metadata("read"))
                await asyncio.wait_for(watch.initial_metadata(), 10)
                sim.update_instrument("ETH-PERP", tick_size="0.5")

                with writes_blocked(db_env):
                    with pytest.raises(grpc.aio.AioRpcError) as caught:
                        await stub.SyncInstruments(pb.SyncInstrumentsRequest(venue="syndr", symbols=["ETH-PERP"]),
                                                   metadata=refdata.metadata(), timeout=1)
                    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                    await asyncio.sleep(0.3)  # the server has cancelled the call by now

                # The write that was waiting for the lock goes through, and the watcher hears of it.
                message = await asyncio.wait_for(watch.read(), 10)
                watch.cancel()
                assert [(e.type, e.instrument.symbol, e.instrument.price_increment) for e in message.events] == [
                    (pb.INSTRUMENT_EVENT_TYPE_UPDATED, "ETH-PERP", "0.5")]
                stored = await stub.GetInstrument(pb.GetInstrumentRequest(venue="syndr", symbol="ETH-PERP"),
                                                  metadata=refdata.metadata("read"), timeout=10)
                assert stored.instrument.price_increment == "0.5"
                assert [c.price_increment for c in stored.instrument.changes] == ["0.1"]  # recorded once
                again = await stub.SyncInstruments(pb.SyncInstrumentsRequest(venue="syndr"),
                                                   metadata=refdata.metadata(), timeout=30)
                assert (again.added, again.updated, again.deactivated) == (0, 0, 0)


def _record(i: int) -> InstrumentRecord:
    symbol = f"ETH-{i + 1}JAN27"
    return InstrumentRecord(venue="syndr", symbol=symbol, dataset_id=symbol, base_currency="ETH",
                            quote_currency="USD", type="future", active=True, available_since=0,
                            price_increment=Decimal("0.1"), amount_increment=Decimal("0.001"),
                            min_trade_amount=Decimal("0.001"), maker_fee=Decimal(0), taker_fee=Decimal(0),
                            contract_type="linear_future", contract_multiplier=Decimal(1))


@pytest.fixture
def pg_dsn() -> Iterator[str]:
    if not postgres_reachable():
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432")
    with fresh_database() as dsn:
        yield dsn


async def test_a_committed_sync_is_reported_even_if_the_statistics_refresh_after_it_fails(pg_dsn: str) -> None:
    import psycopg

    # An operator's lock_timeout, and something (autovacuum, a manual VACUUM) holding the lock ANALYZE needs.
    async with PostgresInstrumentStore(pg_dsn + "?options=-c%20lock_timeout%3D200") as store:
        with psycopg.connect(pg_dsn) as other, other.transaction():
            other.execute("LOCK TABLE instruments IN SHARE UPDATE EXCLUSIVE MODE")  # does not block writes
            outcome = await store.sync_venue("syndr", [_record(i) for i in range(60)], full=True, now_ms=1_000)
        assert (outcome.added, outcome.updated, outcome.deactivated, len(outcome.events)) == (60, 0, 0, 60)
        assert await store.count("syndr") == 60


@pytest.fixture
async def stub_refdata(tmp_path: Path) -> AsyncIterator[tuple[SyndrStub, RunningRefdata, grpc.aio.Channel]]:
    async with SyndrStub() as venue, refdata_on(venue.http_url, tmp_path) as (refdata, channel):
        yield venue, refdata, channel


async def test_an_instrument_the_venue_marks_inactive_is_not_active_here(
        stub_refdata: tuple[SyndrStub, RunningRefdata, grpc.aio.Channel]) -> None:
    venue, refdata, channel = stub_refdata
    stub = refdata.stub(channel)

    async def sync(*symbols: str) -> pb.SyncInstrumentsResponse:
        reply: pb.SyncInstrumentsResponse = await stub.SyncInstruments(
            pb.SyncInstrumentsRequest(venue="syndr", symbols=symbols), metadata=refdata.metadata(), timeout=10)
        return reply

    async def active(symbol: str) -> bool:
        reply = await stub.GetInstrument(pb.GetInstrumentRequest(venue="syndr", symbol=symbol),
                                         metadata=refdata.metadata("read"), timeout=10)
        return bool(reply.instrument.active)

    venue.results["public/get_instruments"] = {"ETH-PERP": _wire("ETH-PERP", 3), "BTC-PERP": _wire("BTC-PERP", 4)}
    first = await sync()
    assert (first.added, first.deactivated) == (2, 0)

    venue.results["public/get_instruments"] = {"ETH-PERP": _wire("ETH-PERP", 3),
                                               "BTC-PERP": _wire("BTC-PERP", 4, is_active=False)}
    second = await sync()
    assert (second.synced, second.added, second.updated, second.deactivated) == (1, 0, 0, 1)
    assert await active("ETH-PERP") and not await active("BTC-PERP")
    with pytest.raises(grpc.aio.AioRpcError) as caught:  # a sync of just that one says the venue does not list it
        await sync("BTC-PERP")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "BTC-PERP" in (caught.value.details() or "")
    # Never seen active: never added.
    venue.results["public/get_instruments"]["SOL-PERP"] = _wire("SOL-PERP", 5, is_active=False)
    assert (await sync()).added == 0

    venue.results["public/get_instruments"] = {"ETH-PERP": _wire("ETH-PERP", 3), "BTC-PERP": _wire("BTC-PERP", 4)}
    assert (await sync()).updated == 1  # active again
    assert await active("BTC-PERP")


async def test_an_empty_listing_deactivates_nothing(
        stub_refdata: tuple[SyndrStub, RunningRefdata, grpc.aio.Channel]) -> None:
    venue, refdata, channel = stub_refdata
    stub = refdata.stub(channel)
    venue.results["public/get_instruments"] = {"ETH-PERP": _wire("ETH-PERP", 3), "BTC-PERP": _wire("BTC-PERP", 4)}
    await stub.SyncInstruments(pb.SyncInstrumentsRequest(venue="syndr"), metadata=refdata.metadata(), timeout=10)
    # Nothing listed; nothing readable (a name, a tick size); a listing that is no listing at all (a protocol
    # error, not an empty listing).
    for glitch, status, reason in (
            ({}, grpc.StatusCode.UNAVAILABLE, "EMPTY_LISTING"),
            ({"??": _wire("??", 9)}, grpc.StatusCode.UNAVAILABLE, "EMPTY_LISTING"),
            ({"ETH-PERP": _wire("ETH-PERP", 3, tick_size="abc")}, grpc.StatusCode.UNAVAILABLE, "EMPTY_LISTING"),
            ("ETH-PERP", grpc.StatusCode.INTERNAL, "VENUE_PROTOCOL_ERROR")):
        venue.results["public/get_instruments"] = glitch
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.SyncInstruments(pb.SyncInstrumentsRequest(venue="syndr"), metadata=refdata.metadata(),
                                       timeout=10)
        assert caught.value.code() == status, glitch
        assert reason in str(caught.value.trailing_metadata())
        for symbol in ("ETH-PERP", "BTC-PERP"):
            reply = await stub.GetInstrument(pb.GetInstrumentRequest(venue="syndr", symbol=symbol),
                                             metadata=refdata.metadata("read"), timeout=10)
            assert reply.instrument.active, symbol
    # Every instrument explicitly inactive is the venue's word, not a glitch: they are deactivated.
    venue.results["public/get_instruments"] = {"ETH-PERP": _wire("ETH-PERP", 3, is_active=False)}
    reply = await stub.SyncInstruments(pb.SyncInstrumentsRequest(venue="syndr"), metadata=refdata.metadata(),
                                       timeout=10)
    assert reply.deactivated == 2


async def test_tick_sizes_sent_as_json_numbers_are_exact_decimals(
        stub_refdata: tuple[SyndrStub, RunningRefdata, grpc.aio.Channel]) -> None:
    """The document types them as strings; a venue sending numbers (1e-05 from a float) must not change them."""
    venue, refdata, channel = stub_refdata
    stub = refdata.stub(channel)
    venue.results["public/get_instruments"] = {
        "ETH-PERP": _wire("ETH-PERP", 3, tick_size=1e-05, contract_size=0.001, min_trade_amount="1E-3"),
        "ETH-27DEC26-2400.5-C": _wire("ETH-27DEC26-2400.5-C", 6, kind="option", tick_size=5, contract_size="0.010"),
    }
    await stub.SyncInstruments(pb.SyncInstrumentsRequest(venue="syndr"), metadata=refdata.metadata(), timeout=10)
    perp = (await stub.GetInstrument(pb.GetInstrumentRequest(venue="syndr", symbol="ETH-PERP"),
                                     metadata=refdata.metadata("read"), timeout=10)).instrument
    assert (perp.price_increment, perp.amount_increment, perp.min_trade_amount) == ("0.00001", "0.001", "0.001")
    option = (await stub.GetInstrument(pb.GetInstrumentRequest(venue="syndr", symbol="ETH-27DEC26-2400.5-C"),
                                       metadata=refdata.metadata("read"), timeout=10)).instrument
    assert (option.price_increment, option.amount_increment, option.strike_price) == ("5", "0.01", "2400.5")
    assert option.expiry.ToJsonString() == "2026-12-27T08:00:00Z"
    # The same values spelled differently (a string now) are no change.
    venue.results["public/get_instruments"]["ETH-PERP"] = _wire("ETH-PERP", 3, tick_size="0.000010",
                                                                contract_size="0.001", min_trade_amount="0.001")
    again = await stub.SyncInstruments(pb.SyncInstrumentsRequest(venue="syndr"), metadata=refdata.metadata(),
                                       timeout=10)
    assert (again.added, again.updated, again.deactivated) == (0, 0, 0)


async def test_a_first_sync_that_found_no_venue_is_retried_soon(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a loopback port nothing listens on (yet)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    db_env = {"PORTICO_REFDATA_DB": str(tmp_path / "instruments.sqlite3")}
    async with running_refdata(f"http://127.0.0.1:{port}", db_env,
                               {"PORTICO_REFDATA_SYNC_ON_START": "true",
                                "PORTICO_REFDATA_SYNC_INTERVAL_SECONDS": "300"}) as refdata:
        assert await refdata.app.store.get("syndr", "ETH-PERP") is None  # the venue was not there
        async with Simulator(SimConfig(port=port, seed=5, book_changes_per_second=1)):
            deadline = time.monotonic() + 10
            while await refdata.app.store.get("syndr", "ETH-PERP") is None:
                assert time.monotonic() < deadline, "the failed first sync was not retried"
                await asyncio.sleep(0.1)


async def test_an_instrument_that_cannot_be_read_is_skipped_and_the_rest_synced(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with Simulator(SimConfig(port=0, market_maker=False)) as sim:
        with database("sqlite", tmp_path) as db_env:
            async with running_refdata(sim.http_url, db_env) as refdata, open_channel(refdata.target) as channel:
                stub = refdata.stub(channel)

                async def sync(*symbols: str) -> pb.SyncInstrumentsResponse:
                    reply: pb.SyncInstrumentsResponse = await stub.SyncInstruments(
                        pb.SyncInstrumentsRequest(venue="syndr", symbols=symbols), metadata=refdata.metadata(),
                        timeout=30)
                    return reply

                async def stored() -> dict[str, instrument_pb2.Instrument]:
                    found: dict[str, instrument_pb2.Instrument] = {}
                    token = ""
                    while True:
                        page = await stub.ListInstruments(
                            pb.ListInstrumentsRequest(venue="syndr", page_size=500, page_token=token),
                            metadata=refdata.metadata("read"), timeout=10)
                        found.update((i.symbol, i) for i in page.instruments)
                        token = page.next_page_token
                        if not token:
                            return found

                listed = sorted(i.name for i in sim.engine.instruments() if i.is_active)
                assert "ETH-PERP" in listed and "BTC-PERP" in listed and len(listed) > 2
                first = await sync()
                assert (first.synced, first.added, first.skipped) == (len(listed), len(listed), 0)

                sim.update_instrument("BTC-PERP", tick_size="1")  # a change in the same listing still lands
                sim.faults.update({"corrupt_instruments": {"ETH-PERP": {"tick_size": "abc"}}})
                with caplog.at_level(logging.WARNING, logger="portico.refdata.sync"):
                    second = await sync()
                assert (second.synced, second.added, second.updated, second.deactivated, second.skipped) == (
                    len(listed) - 1, 0, 1, 1, 1)
                warnings = [r for r in caplog.records if r.name == "portico.refdata.sync" and
                            r.levelno == logging.WARNING and r.getMessage().startswith("skipping")]
                assert len(warnings) == 1
                assert getattr(warnings[0], "symbol", None) == "ETH-PERP"
                error = str(getattr(warnings[0], "error", ""))
                assert "'tick_size'" in error and "'abc'" in error and "taker_commission" not in error, error
                after = await stored()
                assert sorted(after) == listed
                assert sorted(s for s, i in after.items() if i.active) == [s for s in listed if s != "ETH-PERP"]
                assert after["BTC-PERP"].price_increment == "1"
                assert after["ETH-PERP"].price_increment == "0.1"  # its last readable terms, kept (inactive)

                # Naming it in a sync of symbols fails, saying why, rather than "not listed" or a silent success.
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await sync("ETH-PERP", "BTC-PERP")
                assert caught.value.code() == grpc.StatusCode.INTERNAL
                details = caught.value.details() or ""
                assert "ETH-PERP" in details and "tick_size" in details, details
                assert "VENUE_PROTOCOL_ERROR" in str(caught.value.trailing_metadata())
                assert (await sync("BTC-PERP")).skipped == 0  # the others still sync by name

                sim.faults.update({"corrupt_instruments": {}})  # readable again
                third = await sync()
                assert (third.synced, third.added, third.updated, third.deactivated, third.skipped) == (
                    len(listed), 0, 1, 0, 0)
                assert all(i.active for i in (await stored()).values())
