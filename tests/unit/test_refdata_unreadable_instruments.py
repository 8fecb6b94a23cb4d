"""A listing with an instrument that cannot be read: the tolerant parser sets it aside (named, with what was
wrong, bounded), the strict one still refuses the whole listing, and the CLI and simulator knob around it."""

from __future__ import annotations

from typing import Any

import pytest
from tests.support.refdata import syndr_instrument

from portico.instruments_cli import render_sync
from portico.refdata.v1 import reference_data_service_pb2 as pb
from portico.sim.faults import Faults
from portico.venues.syndr import models as m
from portico.venues.syndr.errors import SyndrProtocolError


def listing(**broken: dict[str, Any]) -> dict[str, Any]:
    """ETH-PERP, BTC-PERP and SOL-PERP keyed by name, with `broken`'s fields written over (None removes one)."""
    entries = {name: syndr_instrument(name, i) for i, name in enumerate(("ETH-PERP", "BTC-PERP", "SOL-PERP"))}
    for name, fields in broken.items():
        entries[name] = {k: v for k, v in {**entries[name], **fields}.items() if v is not None}
    return entries


@pytest.mark.parametrize(("fields", "said"), [
    ({"tick_size": "abc"}, "field 'tick_size' is not a decimal number in range: 'abc'"),
    ({"tick_size": None}, "field 'tick_size' is missing"),
    ({"is_active": "yes"}, "field 'is_active' is not a boolean"),
    ({"id": [1]}, "field 'id' is not an integer"),
])
def test_an_unreadable_instrument_is_set_aside_with_its_name_and_what_was_wrong(
        fields: dict[str, Any], said: str) -> None:
    readable, unreadable = m.parse_instruments_readable(listing(**{"BTC-PERP": fields}))
    assert sorted(readable) == ["ETH-PERP", "SOL-PERP"]
    assert [u.name for u in unreadable] == ["BTC-PERP"]
    assert said in unreadable[0].error and "BTC-PERP" in unreadable[0].error
    with pytest.raises(SyndrProtocolError):  # the strict parser (the adapter's RESULT_PARSERS) still refuses
        m.parse_instruments(listing(**{"BTC-PERP": fields}))


def test_the_name_of_an_unreadable_instrument_is_its_own_or_its_key_or_none() -> None:
    _, unreadable = m.parse_instruments_readable({"ETH-PERP": {"name": "ETH-PERP"}, "BTC-PERP": {"name": 7},
                                                  "x" * 500: "not an object"})
    assert [u.name for u in unreadable] == ["ETH-PERP", "BTC-PERP", None]
    _, unreadable = m.parse_instruments_readable([{"instrument_name": "SOL-PERP"}, 5])  # an array: no keys
    assert [u.name for u in unreadable] == ["SOL-PERP", None]
    assert unreadable[1].error.startswith("public/get_instruments result[1]: expected an object")


def test_what_was_wrong_is_bounded_never_the_payload() -> None:
    huge = "y" * 1_000_000
    _, unreadable = m.parse_instruments_readable(listing(**{"ETH-PERP": {"is_active": huge},
                                                            "BTC-PERP": {"tick_size": huge}}))
    assert len(unreadable) == 2
    assert all(len(u.error) < 400 and "taker_commission" not in u.error for u in unreadable)


@pytest.mark.parametrize("shape", ["abc", 5, None, True])
def test_a_listing_that_is_neither_an_object_nor_an_array_still_fails(shape: Any) -> None:
    with pytest.raises(SyndrProtocolError, match="expected an array"):
        m.parse_instruments_readable(shape)


def test_the_cli_names_skipped_instruments_only_when_there_are_some() -> None:
    reply = pb.SyncInstrumentsResponse(venue="syndr", synced=23, added=0, updated=0, deactivated=1, skipped=1)
    assert render_sync(reply) == ("synced 23 instrument(s) from syndr: 0 added, 0 updated, 1 deactivated; 1 skipped "
                                  "as unreadable (left out, so inactive: see the service's log)")
    reply.skipped = 0
    assert render_sync(reply) == "synced 23 instrument(s) from syndr: 0 added, 0 updated, 1 deactivated"


def test_the_corrupt_instruments_knob() -> None:
    faults = Faults()
    wire = syndr_instrument("ETH-PERP", 3)
    assert faults.corrupt("ETH-PERP", wire) is wire
    faults.update({"corrupt_instruments": {"ETH-PERP": {"tick_size": "abc", "min_trade_amount": None}}})
    corrupted = faults.corrupt("ETH-PERP", wire)
    assert corrupted["tick_size"] == "abc" and "min_trade_amount" not in corrupted and wire["tick_size"] == "0.1"
    assert faults.corrupt("BTC-PERP", syndr_instrument("BTC-PERP", 4))["tick_size"] == "0.1"
    for bad in ({"ETH-PERP": "abc"}, ["ETH-PERP"], {"ETH-PERP": {1: "x"}}):
        with pytest.raises(ValueError, match="corrupt_instruments"):
            faults.update({"corrupt_instruments": bad})
    faults.reset()
    assert faults.corrupt_instruments == {}
