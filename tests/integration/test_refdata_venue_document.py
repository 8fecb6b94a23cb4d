"""Reference data against a venue that answers exactly as Syndr's document says, no more.

`public/get_instruments` takes `kind` = `perpetual`, `option` or `future` and lists the active instruments of
that kind; whether it also takes `any` the document leaves unclear (its row reads "perpetual, option, future, any
kind of instrument you want for the list", where `private/get_order_history`'s enum plainly lists `any`). A venue
refusing `any` must still be synced completely, and a listing that failed for one kind must not deactivate that kind.
The venue refusing a listing call is not the sync caller's bad request: UNAVAILABLE, not INVALID_ARGUMENT
naming `venue` (a 400 "invalid venue" over REST).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from tests.support.refdata import RunningRefdata, refdata_on, syndr_instrument
from tests.support.syndr_stub import SyndrStub

from portico.refdata.v1 import instrument_pb2
from portico.refdata.v1 import reference_data_service_pb2 as pb
from portico.runtime.errors import error_info
from portico.venues.syndr.constants import ErrorCode


def _wire(name: str, ident: int, kind: str) -> dict[str, Any]:
    return syndr_instrument(name, ident, kind=kind,
                            settlement_period="perpetual" if kind == "perpetual" else "month")


LISTING = {
    "perpetual": {"ETH-PERP": _wire("ETH-PERP", 1, "perpetual")},
    "future": {"ETH-25DEC26": _wire("ETH-25DEC26", 2, "future")},
    "option": {"ETH-25DEC26-2400-C": _wire("ETH-25DEC26-2400-C", 3, "option")},
}


class DocumentedVenue(SyndrStub):
    """`public/get_instruments` per the document: one kind per call, `invalid params` for anything else."""

    failing_kind: str | None = None

    def _answer(self, method: str, params: Any, conn: Any) -> tuple[Any, dict[str, Any] | None]:
        if method != "public/get_instruments":
            return super()._answer(method, params, conn)
        kind = params.get("kind") if isinstance(params, dict) else None
        if kind not in LISTING or kind == self.failing_kind:
            return None, {"code": ErrorCode.INVALID_PARAMS, "message": "invalid params"}
        return LISTING[kind], None


@pytest.fixture
async def documented(tmp_path: Path) -> AsyncIterator[tuple[DocumentedVenue, RunningRefdata, grpc.aio.Channel]]:
    async with DocumentedVenue() as venue, refdata_on(venue.http_url, tmp_path) as (refdata, channel):
        yield venue, refdata, channel


async def test_a_sync_lists_every_documented_kind_and_never_asks_for_any(
        documented: tuple[DocumentedVenue, RunningRefdata, grpc.aio.Channel]) -> None:
    venue, refdata, channel = documented
    stub = refdata.stub(channel)
    reply = await stub.SyncInstruments(pb.SyncInstrumentsRequest(venue="syndr"), metadata=refdata.metadata(),
                                       timeout=10)
    assert (reply.synced, reply.added, reply.deactivated) == (3, 3, 0)
    kinds = sorted(r.params["kind"] for r in venue.http_requests if r.method == "public/get_instruments")
    assert kinds == ["future", "option", "perpetual"]
    listed = await stub.ListInstruments(pb.ListInstrumentsRequest(venue="syndr"), metadata=refdata.metadata("read"),
                                        timeout=10)
    assert [(i.symbol, i.type) for i in listed.instruments] == [
        ("ETH-25DEC26", instrument_pb2.INSTRUMENT_TYPE_FUTURE),
        ("ETH-25DEC26-2400-C", instrument_pb2.INSTRUMENT_TYPE_OPTION),
        ("ETH-PERP", instrument_pb2.INSTRUMENT_TYPE_PERPETUAL)]


async def test_a_listing_the_venue_refuses_fails_the_sync_as_unavailable_and_deactivates_nothing(
        documented: tuple[DocumentedVenue, RunningRefdata, grpc.aio.Channel]) -> None:
    venue, refdata, channel = documented
    stub = refdata.stub(channel)
    await stub.SyncInstruments(pb.SyncInstrumentsRequest(venue="syndr"), metadata=refdata.metadata(), timeout=10)
    # One kind's listing failing fails the sync: its instruments are not taken for delisted.
    venue.failing_kind = "option"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SyncInstruments(pb.SyncInstrumentsRequest(venue="syndr"), metadata=refdata.metadata(), timeout=10)
    # The venue refusing our listing call is not the caller's bad request ("venue: invalid params", a 400).
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    info = error_info(caught.value)
    assert info is not None and info.reason == "VENUE_INVALID_PARAMS" and "field" not in info.metadata
    option = await stub.GetInstrument(pb.GetInstrumentRequest(venue="syndr", symbol="ETH-25DEC26-2400-C"),
                                      metadata=refdata.metadata("read"), timeout=10)
    assert option.instrument.active
