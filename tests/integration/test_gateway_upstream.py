"""The REST edge in front of a reference-data service that is not the one it was built with.

The backend here is a small real gRPC server implementing the two ReferenceDataService RPCs the read endpoints
call. It stands for what the real service cannot be made to do from its store: a newer deployed version whose
enums have values this gateway's compiled proto lacks, or one whose paging misbehaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from tests.support.gateway import serving

from portico.gateway import app as gateway_app
from portico.refdata.v1 import instrument_pb2
from portico.refdata.v1 import reference_data_service_pb2 as refdata_pb2
from portico.refdata.v1 import reference_data_service_pb2_grpc as refdata_grpc
from portico.runtime.errors import ResourceExhausted, to_grpc_status

READ = {"Authorization": "Bearer pt_anything"}  # the backend here checks no tokens
INTERNAL_ERROR = {"error": "Internal error: internal error"}


def _instrument(symbol: str = "ETH-PERP", **fields: Any) -> instrument_pb2.Instrument:
    values: dict[str, Any] = {
        "symbol": symbol, "dataset_id": f"syndr:{symbol}", "venue": "syndr", "base_currency": "ETH",
        "quote_currency": "USD", "type": instrument_pb2.INSTRUMENT_TYPE_PERPETUAL, "active": True,
        "available_since": Timestamp(seconds=1_700_000_000), "price_increment": "0.1", "amount_increment": "0.01",
        "min_trade_amount": "0.01", "maker_fee": "0.0001", "taker_fee": "0.0005",
        "contract_type": instrument_pb2.CONTRACT_TYPE_LINEAR_PERPETUAL, "contract_multiplier": "1",
        **fields,
    }
    return instrument_pb2.Instrument(**values)


@dataclass
class Backend(refdata_grpc.ReferenceDataServiceServicer):
    """GetInstrument answers `instrument`; each ListInstruments page is `instrument` with `next_token(page_token)`."""

    instrument: instrument_pb2.Instrument = field(default_factory=_instrument)
    next_token: Callable[[str], str] = lambda token: ""
    list_calls: list[refdata_pb2.ListInstrumentsRequest] = field(default_factory=list)
    refusal: grpc.Status | None = None  # when set, GetInstrument fails with this status (details and all)

    async def GetInstrument(self, request: refdata_pb2.GetInstrumentRequest,
                            context: grpc.aio.ServicerContext) -> refdata_pb2.GetInstrumentResponse:
        if self.refusal is not None:
            await context.abort(self.refusal.code, self.refusal.details, self.refusal.trailing_metadata)
        if request.symbol != self.instrument.symbol:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no instrument {request.symbol}")
        return refdata_pb2.GetInstrumentResponse(instrument=self.instrument)

    async def ListInstruments(self, request: refdata_pb2.ListInstrumentsRequest,
                              context: grpc.aio.ServicerContext) -> refdata_pb2.ListInstrumentsResponse:
        self.list_calls.append(request)
        return refdata_pb2.ListInstrumentsResponse(instruments=[self.instrument],
                                                   next_page_token=self.next_token(request.page_token))

    # Not called by the gateway's read endpoints; the servicer's interface declares them, so they are here,
    # answering UNIMPLEMENTED as the generated base class's would.
    async def SyncInstruments(self, request: refdata_pb2.SyncInstrumentsRequest,
                              context: grpc.aio.ServicerContext) -> refdata_pb2.SyncInstrumentsResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not implemented!")
        raise AssertionError("abort returns by raising")

    async def WatchInstruments(self, request: refdata_pb2.WatchInstrumentsRequest, context: grpc.aio.ServicerContext
                               ) -> AsyncIterator[refdata_pb2.WatchInstrumentsResponse]:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not implemented!")
        yield refdata_pb2.WatchInstrumentsResponse()  # never reached (abort raises): makes this a stream handler


@contextlib.asynccontextmanager
async def gateway_in_front_of(backend: Backend) -> AsyncIterator[str]:
    """`backend` served over real gRPC, a gateway over real HTTP in front of it; yields the gateway's URL."""
    server = grpc.aio.server()
    refdata_grpc.add_ReferenceDataServiceServicer_to_server(backend, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with serving(f"127.0.0.1:{port}") as url:
            try:
                yield url
            finally:
                await server.stop(0)  # first: a handler still calling it (a gateway that loops) then ends
    finally:
        await server.stop(0)


async def get(url: str) -> tuple[int, Any]:
    """GET with a read token; the body must be JSON (aiohttp's own 500 is a text page)."""
    async with aiohttp.ClientSession() as session, asyncio.timeout(20), session.get(url, headers=READ) as response:
        text = await response.text()
        assert response.content_type == "application/json", (response.status, text)
        return response.status, json.loads(text)


async def test_enum_values_newer_than_the_gateways_proto_render_as_unknown_and_their_number() -> None:
    """Reference data deployed before the gateway (a rolling deploy) may send enum numbers its proto lacks."""
    backend = Backend(_instrument("ETH-25DEC26-3000-X", type=9, contract_type=99, option_type=7,
                                  strike_price="3000"))
    async with gateway_in_front_of(backend) as url:
        status, record = await get(url + "/v1/instruments/syndr/ETH-25DEC26-3000-X")
        assert status == 200
        assert (record["type"], record["contractType"], record["optionType"]) == ("unknown_9", "unknown_99",
                                                                                 "unknown_7")
        status, records = await get(url + "/v1/instruments/syndr")
        assert (status, records) == (200, [record])


async def test_known_enum_values_keep_the_documents_names() -> None:
    backend = Backend(_instrument("ETH-25DEC26-3000-P", type=instrument_pb2.INSTRUMENT_TYPE_OPTION,
                                  contract_type=instrument_pb2.CONTRACT_TYPE_PUT_OPTION,
                                  option_type=instrument_pb2.OPTION_TYPE_PUT, strike_price="3000"))
    async with gateway_in_front_of(backend) as url:
        status, record = await get(url + "/v1/instruments/syndr/ETH-25DEC26-3000-P")
    assert status == 200
    assert (record["type"], record["contractType"], record["optionType"]) == ("option", "put_option", "put")


async def test_an_unexpected_failure_in_a_read_endpoint_is_a_json_500_without_details(
        caplog: pytest.LogCaptureFixture) -> None:
    """A price that is not a decimal fails the rendering: the caller gets the gateway's JSON error, the log the rest."""
    backend = Backend(_instrument(price_increment="ten cents"))
    async with gateway_in_front_of(backend) as url:
        for path in ("/v1/instruments/syndr/ETH-PERP", "/v1/instruments/syndr"):
            caplog.clear()
            with caplog.at_level(logging.ERROR, logger="portico.gateway"):
                assert await get(url + path) == (500, INTERNAL_ERROR)
            logged = [r for r in caplog.records if r.name == "portico.gateway"]
            assert logged and logged[0].exc_info is not None, path
            assert path in logged[0].getMessage()


async def test_an_unexpected_exception_text_never_reaches_the_caller(monkeypatch: pytest.MonkeyPatch,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    def broken(message: instrument_pb2.Instrument) -> dict[str, Any]:
        raise RuntimeError("secret internals at 10.0.0.7")

    monkeypatch.setattr(gateway_app, "instrument_json", broken)
    async with gateway_in_front_of(Backend()) as url:
        with caplog.at_level(logging.ERROR, logger="portico.gateway"):
            assert await get(url + "/v1/instruments/syndr/ETH-PERP") == (500, INTERNAL_ERROR)
    logged = [r for r in caplog.records if r.name == "portico.gateway" and r.exc_info]
    assert logged and "secret internals" in str(logged[0].exc_info[1])  # type: ignore[index]


async def test_aiohttps_own_errors_pass_through() -> None:
    async with gateway_in_front_of(Backend()) as url, aiohttp.ClientSession() as session:
        async with session.post(url + "/v1/instruments/syndr/ETH-PERP", headers=READ) as response:
            assert response.status == 405
        async with session.get(url + "/v2/nothing", headers=READ) as response:
            assert response.status == 404


async def test_the_filter_endpoint_answers_every_page_in_one_list() -> None:
    tokens = {"": "p1", "p1": "p2", "p2": ""}
    backend = Backend(next_token=tokens.__getitem__)
    async with gateway_in_front_of(backend) as url:
        status, records = await get(url + "/v1/instruments/syndr")
    assert status == 200 and len(records) == 3
    assert [c.page_token for c in backend.list_calls] == ["", "p1", "p2"]
    assert {c.page_size for c in backend.list_calls} == {gateway_app.LIST_PAGE_SIZE}


@pytest.mark.parametrize(("tokens", "calls"), [
    ({"": "same", "same": "same"}, 2),  # the same token again
    ({"": "a", "a": "b", "b": "a"}, 3),  # a longer cycle
])
async def test_a_repeated_page_token_is_a_502_not_an_endless_loop(tokens: dict[str, str], calls: int,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    backend = Backend(next_token=tokens.__getitem__)
    async with gateway_in_front_of(backend) as url:
        with caplog.at_level(logging.ERROR, logger="portico.gateway"):
            status, body = await get(url + "/v1/instruments/syndr")
    assert (status, body) == (502, {"error": "Bad gateway: reference data repeated a page token"})
    assert len(backend.list_calls) == calls
    assert any("repeated a page token" in r.getMessage() for r in caplog.records if r.name == "portico.gateway")


async def test_a_listing_past_the_page_limit_is_a_502() -> None:
    """Fresh tokens forever: the gateway stops after MAX_LIST_PAGES calls instead of growing without bound."""
    fresh = itertools.count(1)
    backend = Backend(next_token=lambda token: f"p{next(fresh)}")
    async with gateway_in_front_of(backend) as url:
        status, body = await get(url + "/v1/instruments/syndr")
    limit = gateway_app.MAX_LIST_PAGES
    assert (status, body) == (502, {"error": f"Bad gateway: reference data listed more than {limit} pages"})
    assert len(backend.list_calls) == limit


async def test_grpcs_own_resource_exhausted_is_a_502_without_grpcs_text() -> None:
    """A reply over gRPC's 4 MB receive limit fails in the gateway's own channel with RESOURCE_EXHAUSTED and no
    ErrorInfo: not a rate limit (before, a 429 `Too many requests` quoting gRPC's text), but a bad upstream."""
    huge = _instrument(venue_kind="x" * (5 * 1024 * 1024))
    async with gateway_in_front_of(Backend(huge)) as url:
        status, body = await get(url + "/v1/instruments/syndr/ETH-PERP")
        assert (status, body) == (502, {"error": "Bad gateway: reference data's answer exceeded a gRPC limit"})
        status, body = await get(url + "/v1/instruments/syndr")
        assert (status, body) == (502, {"error": "Bad gateway: reference data's answer exceeded a gRPC limit"})


async def test_a_services_own_resource_exhausted_stays_a_429_with_its_message() -> None:
    """A refusal our service raised carries ErrorInfo: it is the caller's rate limit, and its text is ours."""
    refusal = to_grpc_status(ResourceExhausted("too many syncs; retry in a second", reason="RATE_LIMITED"),
                             "portico.refdata")
    async with gateway_in_front_of(Backend(refusal=refusal)) as url:
        status, body = await get(url + "/v1/instruments/syndr/ETH-PERP")
    assert (status, body) == (429, {"error": "Too many requests: too many syncs; retry in a second"})
