"""Request strings a database cannot store or that no instrument could carry are INVALID_ARGUMENT naming the
field, on every backend (PostgreSQL refuses a NUL in text: that was INTERNAL), and so are malformed page tokens."""
from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from tests.support.refdata import RunningRefdata, database, running_refdata

from portico.refdata.service import MAX_FILTER_VALUES, _query_key, encode_page_token, filter_from_proto
from portico.refdata.v1 import instrument_pb2
from portico.refdata.v1 import reference_data_service_pb2 as pb
from portico.runtime.client import open_channel
from portico.sim.server import SimConfig, Simulator


@pytest.fixture(params=["sqlite", "postgres"])
async def refdata(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RunningRefdata]:
    async with Simulator(SimConfig(port=0, market_maker=False)) as sim:
        with database(str(request.param), tmp_path) as db_env:
            async with running_refdata(sim.http_url, db_env) as running:
                yield running


async def refused(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value.code(), caught.value.details() or ""


async def test_nul_and_overlong_request_strings_are_invalid_argument(refdata: RunningRefdata) -> None:
    token = encode_page_token("A\x00", _query_key("syndr", filter_from_proto(instrument_pb2.InstrumentFilter())))
    async with open_channel(refdata.target) as channel:
        stub, md = refdata.stub(channel), refdata.metadata("read")
        cases = {
            "symbol": stub.GetInstrument(pb.GetInstrumentRequest(venue="syndr", symbol="ETH-\x00PERP"),
                                         metadata=md, timeout=10),
            "symbol ": stub.GetInstrument(pb.GetInstrumentRequest(venue="syndr", symbol="X" * 257),
                                          metadata=md, timeout=10),
            "filter.base_currencies[0]": stub.ListInstruments(pb.ListInstrumentsRequest(
                venue="syndr", filter=instrument_pb2.InstrumentFilter(base_currencies=["E\x00"])),
                metadata=md, timeout=10),
            "filter.quote_currencies[1]": stub.ListInstruments(pb.ListInstrumentsRequest(
                venue="syndr", filter=instrument_pb2.InstrumentFilter(quote_currencies=["USD", "U\x00"])),
                metadata=md, timeout=10),
            "page_token": stub.ListInstruments(pb.ListInstrumentsRequest(venue="syndr", page_token=token),
                                               metadata=md, timeout=10),
        }
        for field, call in cases.items():
            code, details = await refused(call)
            assert code == grpc.StatusCode.INVALID_ARGUMENT, (field, code, details)
            assert field.strip() in details, (field, details)
        await stub.ListInstruments(pb.ListInstrumentsRequest(venue="syndr"), metadata=md, timeout=10)  # still up


async def test_deeply_nested_or_huge_page_tokens_are_invalid_argument(refdata: RunningRefdata) -> None:
    nested = base64.urlsafe_b64encode(b"[" * 100_000).decode()
    huge = base64.urlsafe_b64encode(b'{"a": "' + b"x" * 100_000 + b'", "q": "y"}').decode()
    async with open_channel(refdata.target) as channel:
        stub, md = refdata.stub(channel), refdata.metadata("read")
        for token in (nested, huge):
            code, details = await refused(stub.ListInstruments(
                pb.ListInstrumentsRequest(venue="syndr", page_token=token), metadata=md, timeout=10))
            assert code == grpc.StatusCode.INVALID_ARGUMENT and "page_token" in details, (code, details)


async def test_a_page_token_whose_cursor_is_not_unicode_text_is_invalid_argument(refdata: RunningRefdata) -> None:
    """JSON can spell a lone surrogate (`"\\ud800"`), which no database driver can encode: that was INTERNAL."""
    query = _query_key("syndr", filter_from_proto(instrument_pb2.InstrumentFilter()))
    async with open_channel(refdata.target) as channel:
        stub, md = refdata.stub(channel), refdata.metadata("read")
        for cursor in ("\ud800", "ETH-\udfff-PERP"):
            code, details = await refused(stub.ListInstruments(pb.ListInstrumentsRequest(
                venue="syndr", page_token=encode_page_token(cursor, query)), metadata=md, timeout=10))
            assert code == grpc.StatusCode.INVALID_ARGUMENT and "page_token" in details, (cursor, code, details)
        await stub.ListInstruments(pb.ListInstrumentsRequest(  # an ordinary cursor still works
            venue="syndr", page_token=encode_page_token("ETH-PERP", query)), metadata=md, timeout=10)


async def test_a_filter_with_more_values_than_a_database_takes_is_invalid_argument(refdata: RunningRefdata) -> None:
    """SQLite binds at most 250,000 parameters: more values in one list were INTERNAL there (and fine on
    PostgreSQL). Both now refuse a list longer than the service's bound, naming it, and stay up."""
    too_many, past_sqlite = MAX_FILTER_VALUES + 1, 250_001
    async with open_channel(refdata.target) as channel:
        stub, md = refdata.stub(channel), refdata.metadata("read")
        for field, flt in (
            ("filter.base_currencies", instrument_pb2.InstrumentFilter(
                base_currencies=[f"C{i}" for i in range(past_sqlite)])),
            ("filter.quote_currencies", instrument_pb2.InstrumentFilter(quote_currencies=["USD"] * too_many)),
            ("filter.types", instrument_pb2.InstrumentFilter(
                types=[instrument_pb2.INSTRUMENT_TYPE_OPTION] * past_sqlite)),
            ("filter.contract_types", instrument_pb2.InstrumentFilter(
                contract_types=[instrument_pb2.CONTRACT_TYPE_CALL_OPTION] * too_many)),
        ):
            code, details = await refused(stub.ListInstruments(pb.ListInstrumentsRequest(venue="syndr", filter=flt),
                                                               metadata=md, timeout=30))
            assert code == grpc.StatusCode.INVALID_ARGUMENT and field in details, (field, code, details)
        at_the_bound = instrument_pb2.InstrumentFilter(base_currencies=[f"C{i}" for i in range(MAX_FILTER_VALUES)])
        await stub.ListInstruments(pb.ListInstrumentsRequest(venue="syndr", filter=at_the_bound), metadata=md,
                                   timeout=10)
