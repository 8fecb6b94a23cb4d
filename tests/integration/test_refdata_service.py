"""ReferenceDataService against the simulator over real sockets, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import grpc
import pytest
from tests.support.refdata import RunningRefdata, database, running_refdata

from portico.refdata.model import InstrumentRecord
from portico.refdata.store import InstrumentEvent
from portico.refdata.sync import EventHub
from portico.refdata.v1 import instrument_pb2
from portico.refdata.v1 import reference_data_service_pb2 as pb
from portico.runtime.client import open_channel
from portico.runtime.errors import ResourceExhausted, error_info
from portico.sim.server import SimConfig, Simulator


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimConfig(port=0, market_maker=False)) as simulator:
        yield simulator


@pytest.fixture
async def refdata(sim: Simulator, backend: str, tmp_path: Path) -> AsyncIterator[RunningRefdata]:
    with database(backend, tmp_path) as db_env:
        async with running_refdata(sim.http_url, db_env) as running:
            yield running


@pytest.fixture
async def channel(refdata: RunningRefdata) -> AsyncIterator[grpc.aio.Channel]:
    async with open_channel(refdata.target) as channel:
        yield channel


async def sync(refdata: RunningRefdata, channel: grpc.aio.Channel, *symbols: str,
               venue: str = "syndr") -> pb.SyncInstrumentsResponse:
    response: pb.SyncInstrumentsResponse = await refdata.stub(channel).SyncInstruments(
        pb.SyncInstrumentsRequest(venue=venue, symbols=symbols), metadata=refdata.metadata(), timeout=30)
    return response


async def get(refdata: RunningRefdata, channel: grpc.aio.Channel, symbol: str) -> instrument_pb2.Instrument:
    reply: pb.GetInstrumentResponse = await refdata.stub(channel).GetInstrument(
        pb.GetInstrumentRequest(venue="syndr", symbol=symbol), metadata=refdata.metadata("read"), timeout=10)
    return reply.instrument


async def list_all(refdata: RunningRefdata, channel: grpc.aio.Channel, flt: instrument_pb2.InstrumentFilter,
                   page_size: int = 7) -> list[instrument_pb2.Instrument]:
    found: list[instrument_pb2.Instrument] = []
    token = ""
    while True:
        reply = await refdata.stub(channel).ListInstruments(
            pb.ListInstrumentsRequest(venue="syndr", filter=flt, page_size=page_size, page_token=token),
            metadata=refdata.metadata("read"), timeout=10)
        found.extend(reply.instruments)
        token = reply.next_page_token
        if not token:
            return found


def active_names(sim: Simulator) -> list[str]:
    return sorted(i.name for i in sim.engine.instruments() if i.is_active)


async def test_first_sync_adds_everything_and_a_resync_changes_nothing(sim: Simulator, refdata: RunningRefdata,
                                                                        channel: grpc.aio.Channel) -> None:
    first = await sync(refdata, channel)
    count = len(active_names(sim))
    assert (first.venue, first.synced, first.added, first.updated, first.deactivated) == ("syndr", count, count, 0, 0)
    again = await sync(refdata, channel)
    assert (again.synced, again.added, again.updated, again.deactivated) == (count, 0, 0, 0)
    listed = await list_all(refdata, channel, instrument_pb2.InstrumentFilter())
    assert [i.symbol for i in listed] == active_names(sim)


async def test_normalised_record_of_a_perpetual_a_future_and_an_option(sim: Simulator, refdata: RunningRefdata,
                                                                       channel: grpc.aio.Channel) -> None:
    await sync(refdata, channel)
    perp = await get(refdata, channel, "ETH-PERP")
    assert (perp.base_currency, perp.quote_currency, perp.type, perp.contract_type) == (
        "ETH", "USD", instrument_pb2.INSTRUMENT_TYPE_PERPETUAL, instrument_pb2.CONTRACT_TYPE_LINEAR_PERPETUAL)
    assert perp.price_increment == "0.1" and perp.contract_multiplier == "1" and perp.inverse is False
    assert not perp.HasField("expiry") and not perp.HasField("available_to") and perp.active
    assert perp.venue_instrument_id == sim.engine.instrument("ETH-PERP").id and perp.max_leverage == "50"
    future = next(i for i in sim.engine.instruments() if i.kind == "future")
    record = await get(refdata, channel, future.name)
    assert record.type == instrument_pb2.INSTRUMENT_TYPE_FUTURE
    assert record.contract_type == instrument_pb2.CONTRACT_TYPE_LINEAR_FUTURE
    assert record.expiry.ToMilliseconds() == future.expiry_ms
    option = next(i for i in sim.engine.instruments() if i.kind == "option" and i.option_type == "put")
    record = await get(refdata, channel, option.name)
    assert record.type == instrument_pb2.INSTRUMENT_TYPE_OPTION
    assert record.contract_type == instrument_pb2.CONTRACT_TYPE_PUT_OPTION
    assert record.option_type == instrument_pb2.OPTION_TYPE_PUT
    assert record.strike_price == str(option.strike) and record.expiry.ToMilliseconds() == option.expiry_ms


async def test_tick_size_change_is_an_update_with_a_changes_entry(sim: Simulator, refdata: RunningRefdata,
                                                                  channel: grpc.aio.Channel) -> None:
    await sync(refdata, channel)
    before = time.time() * 1000
    sim.update_instrument("ETH-PERP", tick_size="0.5")
    result = await sync(refdata, channel)
    assert (result.added, result.updated, result.deactivated) == (0, 1, 0)
    record = await get(refdata, channel, "ETH-PERP")
    assert record.price_increment == "0.5"
    assert len(record.changes) == 1
    change = record.changes[0]
    assert change.price_increment == "0.1" and not change.HasField("amount_increment")
    assert before <= change.until.ToMilliseconds() <= time.time() * 1000
    sim.update_instrument("ETH-PERP", contract_size="0.01")
    assert (await sync(refdata, channel)).updated == 1
    record = await get(refdata, channel, "ETH-PERP")
    assert [c.HasField("amount_increment") for c in record.changes] == [False, True]
    assert record.changes[1].amount_increment == "0.001" and record.amount_increment == "0.01"


async def test_delisting_deactivates_and_never_deletes(sim: Simulator, refdata: RunningRefdata,
                                                       channel: grpc.aio.Channel) -> None:
    await sync(refdata, channel)
    sim.delist("BTC-PERP")
    result = await sync(refdata, channel)
    assert (result.added, result.updated, result.deactivated) == (0, 0, 1)
    record = await get(refdata, channel, "BTC-PERP")
    assert not record.active and record.HasField("available_to")
    inactive = await list_all(refdata, channel, instrument_pb2.InstrumentFilter(active=False))
    assert [i.symbol for i in inactive] == ["BTC-PERP"]
    assert (await sync(refdata, channel)).deactivated == 0  # already inactive


async def test_symbol_subset_syncs_only_those(sim: Simulator, refdata: RunningRefdata,
                                              channel: grpc.aio.Channel) -> None:
    result = await sync(refdata, channel, "ETH-PERP", "BTC-PERP")
    assert (result.synced, result.added) == (2, 2)
    listed = await list_all(refdata, channel, instrument_pb2.InstrumentFilter())
    assert [i.symbol for i in listed] == ["BTC-PERP", "ETH-PERP"]
    assert (await sync(refdata, channel, "ETH-PERP")).deactivated == 0  # a subset never deactivates


@pytest.mark.parametrize(("venue", "symbols", "field", "reason"), [
    ("binance", (), "venue", "UNKNOWN_VENUE"),
    ("", (), "venue", "UNKNOWN_VENUE"),
    ("syndr", ("ETH-PERP", "DOGE-PERP"), "symbols", "UNKNOWN_SYMBOL"),
    ("syndr", ("",), "symbols[0]", "INVALID_ARGUMENT"),
])
async def test_bad_sync_requests_name_the_field(refdata: RunningRefdata, channel: grpc.aio.Channel, venue: str,
                                                symbols: tuple[str, ...], field: str, reason: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await sync(refdata, channel, *symbols, venue=venue)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = error_info(caught.value)
    assert info is not None and (info.metadata["field"], info.reason) == (field, reason)
    if symbols and symbols[0]:
        assert "DOGE-PERP" in caught.value.details()


async def test_venue_is_case_insensitive_like_the_sync_document(refdata: RunningRefdata,
                                                                channel: grpc.aio.Channel) -> None:
    assert (await sync(refdata, channel, "ETH-PERP", venue="SYNDR")).venue == "syndr"


async def test_concurrent_syncs_do_not_double_count(sim: Simulator, refdata: RunningRefdata,
                                                    channel: grpc.aio.Channel) -> None:
    await sync(refdata, channel)
    for name in ("ETH-31DEC27", "BTC-31DEC27", "ETH-31DEC27-5000-C"):
        sim.add_instrument(name)
    results = await asyncio.gather(*(sync(refdata, channel) for _ in range(6)))
    assert sum(r.added for r in results) == 3
    assert sum(r.updated for r in results) == 0
    assert len(await list_all(refdata, channel, instrument_pb2.InstrumentFilter(), page_size=100)) == len(
        active_names(sim))


async def test_watch_sees_adds_updates_and_deactivations(sim: Simulator, refdata: RunningRefdata,
                                                         channel: grpc.aio.Channel) -> None:
    stream = refdata.stub(channel).WatchInstruments(pb.WatchInstrumentsRequest(venue="syndr"),
                                                    metadata=refdata.metadata("read"))
    seen: list[tuple[int, str]] = []

    async def collect(n: int) -> None:
        async for message in stream:
            seen.extend((e.type, e.instrument.symbol) for e in message.events)
            if len(seen) >= n:
                return

    await asyncio.wait_for(stream.initial_metadata(), 10)  # sent once the stream's watcher is registered
    await sync(refdata, channel, "ETH-PERP", "BTC-PERP")
    sim.update_instrument("ETH-PERP", tick_size="0.2")
    await sync(refdata, channel, "ETH-PERP")
    await sync(refdata, channel)  # adds the rest and nothing else
    sim.delist("BTC-PERP")
    await sync(refdata, channel)
    total = len(active_names(sim)) + 1 + 1 + 1  # adds of everything (BTC-PERP included), 1 update, 1 deactivation
    await asyncio.wait_for(collect(total), 10)
    stream.cancel()
    assert seen[:2] == [(pb.INSTRUMENT_EVENT_TYPE_ADDED, "BTC-PERP"), (pb.INSTRUMENT_EVENT_TYPE_ADDED, "ETH-PERP")]
    assert seen[2] == (pb.INSTRUMENT_EVENT_TYPE_UPDATED, "ETH-PERP")
    assert seen[-1] == (pb.INSTRUMENT_EVENT_TYPE_DEACTIVATED, "BTC-PERP")
    assert sum(1 for kind, _ in seen if kind == pb.INSTRUMENT_EVENT_TYPE_ADDED) == len(active_names(sim)) + 1


async def test_an_event_published_right_after_the_initial_metadata_is_delivered(
        sim: Simulator, refdata: RunningRefdata, channel: grpc.aio.Channel) -> None:
    """No lost-event window: a client that has the initial metadata is registered, before any message."""
    await sync(refdata, channel)
    stream = refdata.stub(channel).WatchInstruments(pb.WatchInstrumentsRequest(venue="syndr"),
                                                    metadata=refdata.metadata("read"))
    await asyncio.wait_for(stream.initial_metadata(), 10)
    assert refdata.app.hub.watchers("syndr") == 1
    sim.update_instrument("ETH-PERP", tick_size="0.2")
    await sync(refdata, channel, "ETH-PERP")
    message = await asyncio.wait_for(stream.read(), 10)
    stream.cancel()
    assert [(e.type, e.instrument.symbol, e.instrument.price_increment) for e in message.events] == [
        (pb.INSTRUMENT_EVENT_TYPE_UPDATED, "ETH-PERP", "0.2")]
    assert message.events[0].instrument.changes[-1].price_increment == "0.1"


async def test_a_refused_watch_registers_nothing(refdata: RunningRefdata, channel: grpc.aio.Channel) -> None:
    stream = refdata.stub(channel).WatchInstruments(pb.WatchInstrumentsRequest(venue="kraken"),
                                                    metadata=refdata.metadata("read"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await asyncio.wait_for(stream.read(), 10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refdata.app.hub.watchers("kraken") == refdata.app.hub.watchers("syndr") == 0


def _event(symbol: str) -> InstrumentEvent:
    """An event for the hub alone, which passes records through without reading them."""
    return InstrumentEvent("updated", cast(InstrumentRecord, SimpleNamespace(symbol=symbol)), 1)


async def test_hub_subscribe_registers_at_once_and_close_unregisters() -> None:
    hub = EventHub()
    with hub.subscribe("syndr", batch=2) as subscription:
        assert hub.watchers("syndr") == 1  # before anything iterates it
        hub.publish("syndr", [_event("A"), _event("B"), _event("C")])
        hub.publish("other", [_event("X")])
        batches = [[e.record.symbol for e in await anext(subscription)] for _ in range(2)]
        assert batches == [["A", "B"], ["C"]]
    assert hub.watchers("syndr") == 0
    hub.publish("syndr", [_event("D")])  # nobody to deliver to, nothing kept
    with pytest.raises(StopAsyncIteration):
        await anext(subscription)


async def test_hub_watcher_that_falls_behind_ends_with_resource_exhausted() -> None:
    hub = EventHub(queue_size=2)
    with hub.subscribe("syndr") as slow, hub.subscribe("syndr") as fast:
        hub.publish("syndr", [_event("A"), _event("B")])
        assert len(await anext(fast)) == 2
        hub.publish("syndr", [_event("C")])  # `slow` is full: it must not end silently short
        assert [e.record.symbol for e in await anext(fast)] == ["C"]
        with pytest.raises(ResourceExhausted) as caught:
            await anext(slow)
    assert caught.value.reason == "WATCHER_TOO_SLOW"
    assert hub.watchers("syndr") == 0


async def test_filters_and_paging(sim: Simulator, refdata: RunningRefdata, channel: grpc.aio.Channel) -> None:
    await sync(refdata, channel)
    instruments = [i for i in sim.engine.instruments() if i.is_active]
    options = await list_all(refdata, channel, instrument_pb2.InstrumentFilter(
        types=[instrument_pb2.INSTRUMENT_TYPE_OPTION], base_currencies=["eth"]))
    assert sorted(i.symbol for i in options) == sorted(
        i.name for i in instruments if i.kind == "option" and i.base_currency == "ETH")
    linear = await list_all(refdata, channel, instrument_pb2.InstrumentFilter(contract_types=[
        instrument_pb2.CONTRACT_TYPE_LINEAR_PERPETUAL, instrument_pb2.CONTRACT_TYPE_LINEAR_FUTURE]))
    assert sorted(i.symbol for i in linear) == sorted(i.name for i in instruments if i.kind != "option")
    both = await list_all(refdata, channel, instrument_pb2.InstrumentFilter(base_currencies=["BTC", "ETH"],
                                                                            quote_currencies=["USD"]), page_size=5)
    assert [i.symbol for i in both] == sorted(i.name for i in instruments)  # paged, in order, no gaps or repeats


@pytest.mark.parametrize(("request_", "field"), [
    (pb.ListInstrumentsRequest(venue="syndr", page_token="not-a-token"), "page_token"),
    (pb.ListInstrumentsRequest(venue="syndr", page_size=-1), "page_size"),
    (pb.ListInstrumentsRequest(venue="syndr", filter=instrument_pb2.InstrumentFilter(
        types=[instrument_pb2.INSTRUMENT_TYPE_UNSPECIFIED])), "filter.types[0]"),
    (pb.ListInstrumentsRequest(venue="nowhere"), "venue"),
])
async def test_bad_list_requests(refdata: RunningRefdata, channel: grpc.aio.Channel,
                                 request_: pb.ListInstrumentsRequest, field: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await refdata.stub(channel).ListInstruments(request_, metadata=refdata.metadata("read"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = error_info(caught.value)
    assert info is not None and info.metadata["field"] == field


async def test_a_page_token_only_works_for_its_own_filter(refdata: RunningRefdata, channel: grpc.aio.Channel) -> None:
    await sync(refdata, channel)
    first = await refdata.stub(channel).ListInstruments(pb.ListInstrumentsRequest(venue="syndr", page_size=2),
                                                        metadata=refdata.metadata("read"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await refdata.stub(channel).ListInstruments(pb.ListInstrumentsRequest(
            venue="syndr", page_size=2, page_token=first.next_page_token,
            filter=instrument_pb2.InstrumentFilter(active=True)), metadata=refdata.metadata("read"))
    info = error_info(caught.value)
    assert info is not None and info.metadata["field"] == "page_token"


async def test_a_page_token_works_for_the_same_filter_in_another_order(refdata: RunningRefdata,
                                                                       channel: grpc.aio.Channel) -> None:
    """The same instruments asked for with the filter's values reordered or repeated continue the same pages."""
    await sync(refdata, channel)
    stub, md = refdata.stub(channel), refdata.metadata("read")
    types = [instrument_pb2.INSTRUMENT_TYPE_PERPETUAL, instrument_pb2.INSTRUMENT_TYPE_FUTURE]
    whole = await stub.ListInstruments(pb.ListInstrumentsRequest(
        venue="syndr", filter=instrument_pb2.InstrumentFilter(base_currencies=["ETH", "BTC"], types=types)),
        metadata=md)
    first = await stub.ListInstruments(pb.ListInstrumentsRequest(
        venue="syndr", page_size=2, filter=instrument_pb2.InstrumentFilter(base_currencies=["ETH", "BTC"],
                                                                          types=types)), metadata=md)
    rest = await stub.ListInstruments(pb.ListInstrumentsRequest(
        venue="syndr", page_token=first.next_page_token,
        filter=instrument_pb2.InstrumentFilter(base_currencies=["btc", "ETH", "BTC"], types=types[::-1])),
        metadata=md)
    assert len(whole.instruments) > 2
    assert [i.symbol for i in [*first.instruments, *rest.instruments]] == [i.symbol for i in whole.instruments]


async def test_unknown_instrument_is_not_found_and_sync_needs_admin(refdata: RunningRefdata,
                                                                    channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await get(refdata, channel, "ETH-PERP")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await refdata.stub(channel).SyncInstruments(pb.SyncInstrumentsRequest(venue="syndr"),
                                                    metadata=refdata.metadata("read"))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_venue_down_is_unavailable(backend: str, tmp_path: Path) -> None:
    with database(backend, tmp_path) as db_env:
        async with running_refdata("http://127.0.0.1:9/api/v1", db_env) as refdata, \
                open_channel(refdata.target) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await sync(refdata, channel)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    info = error_info(caught.value)
    assert info is not None and info.reason == "VENUE_UNAVAILABLE"


async def test_scheduled_and_startup_syncs(sim: Simulator, backend: str, tmp_path: Path) -> None:
    with database(backend, tmp_path) as db_env:
        env = {"PORTICO_REFDATA_SYNC_ON_START": "true", "PORTICO_REFDATA_SYNC_INTERVAL_SECONDS": "0.2"}
        async with running_refdata(sim.http_url, db_env, env) as refdata, open_channel(refdata.target) as channel:
            assert len(await list_all(refdata, channel, instrument_pb2.InstrumentFilter(), 100)) == len(
                active_names(sim))
            sim.add_instrument("ETH-31DEC27")
            for _ in range(50):
                listed = await list_all(refdata, channel, instrument_pb2.InstrumentFilter(), 100)
                if "ETH-31DEC27" in {i.symbol for i in listed}:
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the scheduled sync did not pick up the new instrument")


async def test_a_service_configured_with_no_venues_serves_its_database_and_syncs_nothing(
        sim: Simulator, tmp_path: Path) -> None:
    with database("sqlite", tmp_path) as db_env:
        async with running_refdata(sim.http_url, db_env) as syncing, open_channel(syncing.target) as channel:
            await sync(syncing, channel)
        calls = len(sim.requests)
        env = {"PORTICO_REFDATA_VENUES": "", "PORTICO_REFDATA_SYNC_ON_START": "true"}
        async with running_refdata(sim.http_url, db_env, env) as serving, open_channel(serving.target) as channel:
            assert (await get(serving, channel, "ETH-PERP")).symbol == "ETH-PERP"  # what the database holds
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await sync(serving, channel)
            assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            info = error_info(caught.value)
            assert info is not None and info.reason == "VENUE_NOT_SYNCED"
        assert len(sim.requests) == calls  # not even the sync on start asked the venue
