"""The REST edge: the sync document's endpoint and the metadata document's endpoints, over real HTTP."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web
from tests.support.refdata import RunningRefdata, database, running_refdata

from portico.gateway.app import Gateway
from portico.runtime.client import open_channel
from portico.sim.server import SimConfig, Simulator

SYNC = "/api/v3/market/instrument/sync"
SEEDS = Path(__file__).resolve().parents[3] / "shared" / "seeds"


@dataclass
class Edge:
    url: str
    refdata: RunningRefdata
    sim: Simulator

    def auth(self, scope: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.refdata.tokens[scope]}"}


@pytest.fixture
async def edge(tmp_path: Path) -> AsyncIterator[Edge]:
    async with Simulator(SimConfig(port=0, market_maker=False)) as sim:
        with database("sqlite", tmp_path) as db_env:
            async with running_refdata(sim.http_url, db_env) as refdata, open_channel(refdata.target) as channel:
                runner = web.AppRunner(Gateway(channel).app())
                await runner.setup()
                site = web.TCPSite(runner, "127.0.0.1", 0)
                await site.start()
                port = runner.addresses[0][1]
                try:
                    yield Edge(f"http://127.0.0.1:{port}", refdata, sim)
                finally:
                    await runner.cleanup()


async def request(method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.request(method, url, **kwargs) as response:
        return response.status, json.loads(await response.text())


async def test_sync_answers_in_the_documents_envelope(edge: Edge) -> None:
    status, body = await request("POST", edge.url + SYNC, json={"venue": "SYNDR"}, headers=edge.auth("admin"))
    count = len([i for i in edge.sim.engine.instruments() if i.is_active])
    assert status == 200
    assert body == {"data": {"venue": "syndr", "synced": count, "added": count, "updated": 0, "deactivated": 0},
                    "success": True, "errno": 0, "error": None}
    status, body = await request("POST", edge.url + SYNC, json={"venue": "syndr", "symbols": ["ETH-PERP"]},
                                 headers=edge.auth("admin"))
    assert (status, body["data"]["synced"], body["data"]["added"]) == (200, 1, 0)


@pytest.mark.parametrize(("headers", "body", "status", "title"), [
    ({}, {"venue": "syndr"}, 401, "Unauthorized"),
    ({"Authorization": "Bearer pt_wrong"}, {"venue": "syndr"}, 401, "Unauthorized"),
    ({"Authorization": "Basic abc"}, {"venue": "syndr"}, 401, "Unauthorized"),
    ("read", {"venue": "syndr"}, 403, "Forbidden"),
    ("admin", {"venue": "BINANCE"}, 400, "Invalid request"),
    ("admin", {"symbols": ["ETH-PERP"]}, 400, "Invalid request"),
    ("admin", {"venue": "syndr", "symbols": "ETH-PERP"}, 400, "Invalid request"),
    ("admin", {"venue": "syndr", "symbols": ["NOPE-PERP"]}, 400, "Invalid request"),
])
async def test_every_error_row_of_the_sync_document(edge: Edge, headers: Any, body: dict[str, Any], status: int,
                                                    title: str) -> None:
    if isinstance(headers, str):
        headers = edge.auth(headers)
    got_status, got = await request("POST", edge.url + SYNC, json=body, headers=headers)
    assert got_status == status
    assert got["data"] is None and got["success"] is False and got["errno"] == status
    assert got["error"].startswith(title)


async def test_a_body_that_is_not_json_is_invalid(edge: Edge) -> None:
    status, body = await request("POST", edge.url + SYNC, data=b"venue=syndr", headers=edge.auth("admin"))
    assert (status, body["success"]) == (400, False)


def _sample_record() -> dict[str, Any]:
    """The metadata document's sample response, parsed from the document itself."""
    text = (SEEDS / "003_43cee24a4074a349.txt").read_text()
    sample = text.split("sample response", 1)[1].split("Copied!", 1)[0]
    lines = [re.sub(r"^\d+$", "", line) for line in sample.splitlines()]
    return dict(json.loads("".join(lines)))


@pytest.mark.skipif(not (SEEDS / "003_43cee24a4074a349.txt").exists(), reason="shared/seeds is not beside the checkout")
async def test_single_instrument_has_the_metadata_documents_shape(edge: Edge) -> None:
    await request("POST", edge.url + SYNC, json={"venue": "syndr"}, headers=edge.auth("admin"))
    sample = _sample_record()
    status, record = await request("GET", edge.url + "/v1/instruments/syndr/ETH-PERP", headers=edge.auth("read"))
    assert status == 200
    for key, value in sample.items():
        assert key in record, key
        assert type(record[key]) is type(value) or {type(record[key]), type(value)} <= {int, float}, key
    assert record["id"] == "ETH-PERP" and record["exchange"] == "syndr" and record["contractType"] == "linear_perpetual"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["availableSince"])
    option = next(i.name for i in edge.sim.engine.instruments() if i.kind == "option")
    status, record = await request("GET", edge.url + f"/v1/instruments/syndr/{option}", headers=edge.auth("read"))
    assert {"expiry", "strikePrice", "optionType"} <= record.keys()
    assert isinstance(record["strikePrice"], int | float)


async def test_unknown_instrument_and_bad_token(edge: Edge) -> None:
    status, _ = await request("GET", edge.url + "/v1/instruments/syndr/ETH-PERP", headers=edge.auth("read"))
    assert status == 404
    status, _ = await request("GET", edge.url + "/v1/instruments/syndr/ETH-PERP")
    assert status == 401


async def test_filter_with_single_values_and_lists(edge: Edge) -> None:
    await request("POST", edge.url + SYNC, json={"venue": "syndr"}, headers=edge.auth("admin"))
    instruments = [i for i in edge.sim.engine.instruments() if i.is_active]

    async def filtered(flt: dict[str, Any]) -> list[str]:
        status, records = await request("GET", f"{edge.url}/v1/instruments/syndr?filter={quote(json.dumps(flt))}",
                                        headers=edge.auth("read"))
        assert status == 200
        return [r["id"] for r in records]

    assert await filtered({"baseCurrency": "BTC", "type": "perpetual"}) == ["BTC-PERP"]
    assert await filtered({"baseCurrency": ["BTC", "ETH"], "quoteCurrency": ["USD", "USDT"], "type": "perpetual"}) == [
        "BTC-PERP", "ETH-PERP"]
    assert await filtered({"contractType": ["call_option"]}) == sorted(
        i.name for i in instruments if i.option_type == "call")
    assert await filtered({"active": True}) == sorted(i.name for i in instruments)
    assert await filtered({"active": False}) == []
    status, everything = await request("GET", f"{edge.url}/v1/instruments/syndr", headers=edge.auth("read"))
    assert status == 200 and len(everything) == len(instruments)


@pytest.mark.parametrize("flt", ['{"type": "spaceship"}', '{"colour": "red"}', '{"active": "yes"}', "not json",
                                 '["BTC"]', '{"baseCurrency": []}'])
async def test_bad_filters_are_400(edge: Edge, flt: str) -> None:
    status, body = await request("GET", f"{edge.url}/v1/instruments/syndr?filter={quote(flt)}",
                                 headers=edge.auth("read"))
    assert status == 400 and body["error"].startswith("Invalid request")
