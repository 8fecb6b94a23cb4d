"""Fidelity: the simulator types request parameters as the Syndr document's tables do.

Where the document types a parameter `integer` (its tables, and the examples, which send JSON integers) the
simulator used to take a string of digits too (`"count": "10"`), so an adapter that sent one would pass every
test here and be refused, or misread, by the venue. It now refuses a string there as INVALID_PARAMS naming the
parameter, as it refuses any other wrong type. Where the document types an id as a string (`instrument_id` of
`private/update_instrument_leverage`, "1" in its example) both spellings stay accepted.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from tests.support.syndr_account import SyndrAccount, register

from portico.sim.server import SimConfig, Simulator
from portico.venues.syndr import models
from portico.venues.syndr.constants import ErrorCode
from portico.venues.syndr.errors import SyndrInvalidRequest
from portico.venues.syndr.http import SyndrHttpClient


@dataclass
class Venue:
    sim: Simulator
    account: SyndrAccount
    public: SyndrHttpClient
    http: SyndrHttpClient


@pytest.fixture(scope="module")
async def venue() -> AsyncIterator[Venue]:
    async with Simulator(SimConfig(port=0, seed=11, book_changes_per_second=0)) as sim, \
            SyndrHttpClient(sim.http_url) as public:
        account = await register(public)
        async with SyndrHttpClient(sim.http_url, credentials=account.credentials) as http:
            yield Venue(sim, account, public, http)


def _now_s() -> int:
    return int(time.time())


# (method, params with the parameter as the document types it, the parameter, document line)
INTEGER_PARAMS: list[tuple[str, dict[str, Any], str, str]] = [
    ("private/get_order_history_by_kind",
     {"kind": "any", "count": 10, "offset": 0, "start_time": 0, "end_time": 0}, "count",
     "4305: count true integer number of records want to fetch"),
    ("private/get_order_history_by_kind",
     {"kind": "any", "count": 10, "offset": 0, "start_time": 0, "end_time": 0}, "offset",
     "4306: offset false integer If pagination is required offset is needed"),
    ("private/get_order_history_by_instrument",
     {"instrument_name": "ETH-PERP", "count": 10, "start_time": 0, "end_time": 0}, "end_time",
     "4553: end_time true integer Current time in seconds"),
    ("private/get_user_trades_by_kind",
     {"kind": "any", "count": 10, "start_timestamp": 0, "end_timestamp": 0}, "start_timestamp",
     "5312: start_timestamp true integer time from which you want to fetch"),
    ("private/get_user_trades_by_instrument",
     {"instrument_name": "ETH-PERP", "count": 10, "start_timestamp": 0, "end_timestamp": 0}, "count",
     "5072: count true integer number of records want to fetch"),
    ("private/get_account_summary", {"timestamp": 0}, "timestamp",
     "6535: timestamp true integer Current time in seconds"),
    ("private/create_api_key", {"scope": 2}, "scope",
     "5771: scope true integer permission level to be given to the api key"),
    ("private/update_instrument_leverage", {"instrument_id": "1", "updated_leverage": 10}, "updated_leverage",
     "3726: updated_leverage true integer The new leverage value to set"),
    ("public/get_tradingview_chart_data",
     {"instrument_name": "ETH-PERP", "resolution": "1", "from": 0, "to": 0}, "from",
     "1678: from true integer Unix timestamp from"),
]


@pytest.mark.parametrize(("method", "params", "name", "line"), INTEGER_PARAMS,
                         ids=[f"{m}:{n}" for m, _, n, _ in INTEGER_PARAMS])
async def test_an_integer_parameter_sent_as_a_string_is_refused(venue: Venue, method: str, params: dict[str, Any],
                                                                name: str, line: str) -> None:
    params = dict(params)
    if "end_time" in params:
        params["end_time"] = _now_s() + 60
    if "end_timestamp" in params:
        params["end_timestamp"] = _now_s() + 60
    if "timestamp" in params:
        params["timestamp"] = _now_s()
    if method == "public/get_tradingview_chart_data":
        params.update({"from": (_now_s() - 3600) * 1000, "to": _now_s() * 1000})
    if method == "private/update_instrument_leverage":
        params["instrument_id"] = str(venue.account.instrument_ids["ETH-PERP"])
    client = venue.http if method.startswith("private/") else venue.public
    await client.call(method, params)  # as the document types it: answered
    with pytest.raises(SyndrInvalidRequest, match=name) as refused:
        await client.call(method, {**params, name: str(params[name])})
    assert refused.value.code == ErrorCode.INVALID_PARAMS, line


async def test_order_integers_are_json_integers_as_the_examples_send_them(venue: Venue) -> None:
    """private/buy has no parameter table; its examples send `timestamp`, `expiration` and `salt` as JSON integers
    (2345: "timestamp": 1718133867572, "expiration": 1718133868572, "salt": 647684)."""
    book = models.parse_order_book((await venue.public.call("public/get_order_book",
                                                            {"instrument_name": "ETH-PERP"})).result)
    assert book.best_bid_price is not None
    price = str(book.best_bid_price - 100)
    for name in ("timestamp", "expiration", "salt"):
        params = venue.account.order("ETH-PERP", "buy", "0.01", price, post_only=True)
        with pytest.raises(SyndrInvalidRequest, match=name):
            await venue.http.call("private/buy", {**params, name: str(params[name])})
    placed = (await venue.http.call("private/buy", venue.account.order("ETH-PERP", "buy", "0.01", price,
                                                                       post_only=True))).result
    await venue.http.call("private/cancel", {"instrument_name": "ETH-PERP", "order_id": placed["order"]["order_id"]})


async def test_update_instrument_leverage_takes_the_tables_string_instrument_id_and_the_integer(venue: Venue) -> None:
    """3725: `instrument_id` true string (the example: "1"); the id as get_instruments types it (integer) too."""
    ident = venue.account.instrument_ids["ETH-PERP"]
    for instrument_id in (str(ident), ident):
        answer = await venue.http.call("private/update_instrument_leverage",
                                       {"instrument_id": instrument_id, "updated_leverage": 5})
        assert answer.result == {"success": 1}
