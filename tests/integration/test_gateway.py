"""The REST edge: the sync document's endpoint and the metadata document's endpoints, over real HTTP."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from tests.support.gateway import serving
from tests.support.ports import taken_port
from tests.support.refdata import RunningRefdata, database, running_refdata

from portico.gateway.__main__ import GatewaySettings
from portico.gateway.app import Gateway
from portico.runtime.config import ConfigError
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
            async with running_refdata(sim.http_url, db_env) as refdata, serving(refdata.target) as url:
                yield Edge(url, refdata, sim)


async def request(method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.request(method, url, **kwargs) as response:
        return response.status, json.loads(await response.text())


async def test_sync_answers_in_the_documents_envelope(edge: Edge) -> None:
    status, body = await request("POST", edge.url + SYNC, json={"venue": "SYNDR"}, headers=edge.auth("admin"))
    count = len([i for i in edge.sim.engine.instruments() if i.is_active])
    assert status == 200
    assert body == {"data": {"venue": "syndr", "synced": count, "added": count, "updated": 0, "deactivated": 0,
                             "skipped": 0}, "success": True, "errno": 0, "error": None}
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


BTC = quote(json.dumps({"baseCurrency": "BTC"}))


@pytest.mark.parametrize(("query", "error"), [
    # Before, each was a 200 with every instrument: a misspelt filter silently listed everything.
    (f"fitler={BTC}", "unknown query parameter: fitler (only filter)"),
    (f"filter={BTC}&active=true", "unknown query parameter: active (only filter)"),
    (f"filter={BTC}&filter={quote(json.dumps({'baseCurrency': 'ETH'}))}", "filter given more than once"),
])
async def test_a_query_parameter_other_than_one_filter_is_400_naming_it(edge: Edge, query: str, error: str) -> None:
    await request("POST", edge.url + SYNC, json={"venue": "syndr"}, headers=edge.auth("admin"))
    status, body = await request("GET", f"{edge.url}/v1/instruments/syndr?{query}", headers=edge.auth("read"))
    assert (status, body) == (400, {"error": f"Invalid request: {error}"})


async def test_a_method_or_path_the_gateway_has_no_route_for_still_answers_json(edge: Edge) -> None:
    # Before, aiohttp's text/plain "405: Method Not Allowed" and "404: Not Found": a JSON client could not read them,
    # and the sync endpoint's failure was not in its envelope.
    async with aiohttp.ClientSession() as session:
        async with session.get(edge.url + SYNC, headers=edge.auth("admin")) as response:
            assert (response.status, response.content_type, response.headers.get("Allow")) == (
                405, "application/json", "POST")
            assert await response.json() == {"data": None, "success": False, "errno": 405,
                                             "error": "Method not allowed: GET (allowed: POST)"}
        async with session.post(edge.url + "/v1/instruments/syndr/ETH-PERP", headers=edge.auth("read")) as response:
            assert (response.status, response.headers.get("Allow")) == (405, "GET,HEAD")
            assert await response.json() == {"error": "Method not allowed: POST (allowed: GET, HEAD)"}
        for path in ("/v2/nothing", "/v1/instruments/", SYNC + "/"):
            async with session.get(edge.url + path, headers=edge.auth("read")) as response:
                assert (response.status, await response.json()) == (404, {"error": "Not found: no such endpoint"})


@pytest.fixture
async def unreachable() -> AsyncIterator[str]:
    """A gateway whose reference data is a port nobody listens on: any gRPC call it makes fails UNAVAILABLE."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with serving(f"127.0.0.1:{port}") as url:
        yield url


MALFORMED = "Unauthorized: authorization must be `Bearer <token>`"


@pytest.mark.parametrize("header", ["Bearer pt_\u00e9", "Bearer pt_\u212a", "Bearer \u212a", "Basic abc", "Bearer",
                                    "Bearer a b", "Token pt_x"])
async def test_a_malformed_authorization_is_401_before_any_call(edge: Edge, unreachable: str, header: str) -> None:
    """Non-ASCII metadata fails inside gRPC's core (a 500, and ~1 KB leaked per call): refuse it at the edge."""
    for url in (edge.url, unreachable):  # unreachable: a forwarded header would have been a 503
        status, body = await request("POST", url + SYNC, json={"venue": "syndr"}, headers={"Authorization": header})
        assert (status, body["errno"], body["error"]) == (401, 401, MALFORMED)
        status, body = await request("GET", url + "/v1/instruments/syndr/ETH-PERP", headers={"Authorization": header})
        assert (status, body) == (401, {"error": MALFORMED})


async def test_a_bearer_token_too_long_for_grpc_metadata_is_401_every_time(edge: Edge) -> None:
    # gRPC refuses metadata over its 8 KiB soft limit at random (more often the larger it is) with RESOURCE_EXHAUSTED.
    # Before, such a token got a 401 most times and otherwise a 429 `Too many requests` whose text listed the call's
    # internal metadata; header lines up to aiohttp's 8190 bytes carry it.
    headers = {"Authorization": "Bearer " + "a" * 8150}
    async with aiohttp.ClientSession() as session:
        answers = set()
        for _ in range(100):
            async with session.get(edge.url + "/v1/instruments/syndr/ETH-PERP", headers=headers) as response:
                answers.add((response.status, (await response.json())["error"]))
    assert answers == {(401, "Unauthorized: the bearer token is longer than 4096 characters")}


async def test_the_bearer_scheme_is_case_insensitive(edge: Edge) -> None:
    status, _ = await request("GET", edge.url + "/v1/instruments/syndr/ETH-PERP",
                              headers={"Authorization": f"bearer  {edge.refdata.tokens['read']}"})
    assert status == 404  # authenticated: the instrument is not synced yet


@pytest.mark.parametrize("data", [b'{"venue": "\\ud800"}', b'{"venue": "syndr", "symbols": ["\\udfff"]}',
                                  b"[" * 20000 + b"]" * 20000, b'{"venue": "syndr", "a": ' + b"[" * 2000 + b"]" * 2000,
                                  b'{"venue": "syndr\xff"}'])
async def test_bodies_json_cannot_represent_are_400(edge: Edge, data: bytes) -> None:
    status, body = await request("POST", edge.url + SYNC, data=data, headers=edge.auth("admin"))
    assert (status, body) == (400, {"data": None, "success": False, "errno": 400,
                                    "error": "Invalid request: body must be JSON: {venue, symbols?}"})


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_body_its_content_encoding_does_not_decode_is_400(edge: Edge, encoding: str,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    # Before, a 500 `internal error`, and the gateway logged the caller's mistake as its own failure, traceback and all.
    headers = {**edge.auth("admin"), "Content-Encoding": encoding, "Content-Type": "application/json"}
    with caplog.at_level(logging.ERROR, logger="portico.gateway"):
        status, body = await request("POST", edge.url + SYNC, data=b'{"venue": "syndr"}', headers=headers)
    assert (status, body) == (400, {"data": None, "success": False, "errno": 400,
                                    "error": "Invalid request: the body could not be read: is it what its "
                                             "Content-Encoding says, and whole?"})
    assert [r for r in caplog.records if r.name == "portico.gateway"] == []


async def test_the_body_is_utf8_whatever_charset_it_claims(edge: Edge) -> None:
    headers = {**edge.auth("admin"), "Content-Type": "application/json; charset=nope"}
    status, body = await request("POST", edge.url + SYNC, data=b'{"venue": "syndr"}', headers=headers)
    assert (status, body["success"]) == (200, True)


@pytest.mark.parametrize("flt", ['{"baseCurrency": "\\ud800"}', "[" * 2000, '{"active": NaN}'])
async def test_filters_json_cannot_represent_are_400(edge: Edge, flt: str) -> None:
    status, body = await request("GET", f"{edge.url}/v1/instruments/syndr?filter={quote(flt)}",
                                 headers=edge.auth("read"))
    assert (status, body) == (400, {"error": "Invalid request: filter must be url-encoded JSON"})


async def test_an_oversized_body_gets_the_sync_envelope(edge: Edge) -> None:
    data = b'{"venue": "syndr", "x": "' + b"a" * 70_000 + b'"}'
    status, body = await request("POST", edge.url + SYNC, data=data, headers=edge.auth("admin"))
    assert status == 413
    assert body["data"] is None and body["success"] is False and body["errno"] == 413
    assert body["error"].startswith("Request too large: ")


async def test_an_unexpected_error_gets_the_sync_envelope_and_no_details(edge: Edge, monkeypatch: pytest.MonkeyPatch,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(Gateway, "_call", broken)
    with caplog.at_level(logging.ERROR, logger="portico.gateway"):
        status, body = await request("POST", edge.url + SYNC, json={"venue": "syndr"}, headers=edge.auth("admin"))
    assert (status, body) == (500, {"data": None, "success": False, "errno": 500,
                                    "error": "Internal error: internal error"})
    logged = [r for r in caplog.records if r.name == "portico.gateway"]
    assert logged and logged[0].exc_info is not None and "secret internals" in str(logged[0].exc_info[1])


async def test_unreachable_reference_data_is_503_without_its_address(unreachable: str) -> None:
    """gRPC's own text for a failed connection names internal addresses: it stays inside."""
    read = {"Authorization": "Bearer pt_anything"}
    status, body = await request("POST", unreachable + SYNC, json={"venue": "syndr"}, headers=read)
    assert (status, body["errno"], body["error"]) == (503, 503, "Service unavailable: reference data unavailable")
    for path in ("/v1/instruments/syndr/ETH-PERP", "/v1/instruments/syndr"):
        status, body = await request("GET", unreachable + path, headers=read)
        assert (status, body) == (503, {"error": "Service unavailable: reference data unavailable"})


async def test_a_services_own_unavailable_message_passes_through(edge: Edge) -> None:
    """Reference data's UNAVAILABLE carries Portico's ErrorInfo: its message is meant for the caller."""
    await edge.sim.stop()
    status, body = await request("POST", edge.url + SYNC, json={"venue": "syndr"}, headers=edge.auth("admin"))
    assert (status, body["errno"]) == (503, 503)
    assert body["error"].startswith("Service unavailable: ") and "reference data unavailable" not in body["error"]


@pytest.mark.parametrize("value", [
    "127.0.0.1:99999", "127.0.0.1:65536", "127.0.0.1:-1", "127.0.0.1:", ":8080", "8080",
    "127.0.0.1:\uff18\uff10", "127.0.0.1:\u00b2",  # digits to str.isdigit, not a port
    "::1:8080", "[::1]", "[]:8080"])
def test_a_bad_listen_address_is_a_configuration_error(value: str) -> None:
    with pytest.raises(ConfigError, match="PORTICO_GATEWAY_LISTEN_ADDR"):
        GatewaySettings.from_env({"PORTICO_GATEWAY_LISTEN_ADDR": value})


@pytest.mark.parametrize(("value", "host", "port"), [
    ("127.0.0.1:0", "127.0.0.1", 0), ("0.0.0.0:65535", "0.0.0.0", 65535), ("[::1]:0", "::1", 0),
    ("[::]:8080", "::", 8080), ("localhost:8080", "localhost", 8080)])
def test_listen_addresses(value: str, host: str, port: int) -> None:
    settings = GatewaySettings.from_env({"PORTICO_GATEWAY_LISTEN_ADDR": value})
    assert (settings.host, settings.port) == (host, port)


def test_the_gateway_refuses_a_bad_listen_address_with_exit_status_2() -> None:
    """Before, 127.0.0.1:99999 listened on port 99999 % 65536 = 34463."""
    env = {**os.environ, "PORTICO_GATEWAY_LISTEN_ADDR": "127.0.0.1:99999", "PORTICO_REFDATA_ADDR": "127.0.0.1:1"}
    try:
        done = subprocess.run([sys.executable, "-m", "portico.gateway"], env=env, capture_output=True, text=True,
                              timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("the gateway started on 127.0.0.1:99999")
    assert done.returncode == 2
    assert "configuration error" in done.stderr and "PORTICO_GATEWAY_LISTEN_ADDR" in done.stderr


def test_a_listen_port_in_use_is_one_line_and_exit_status_1() -> None:
    """Before, aiohttp's OSError ended the gateway with a traceback."""
    with taken_port() as port:
        env = {**os.environ, "PORTICO_GATEWAY_LISTEN_ADDR": f"127.0.0.1:{port}", "PORTICO_REFDATA_ADDR": "127.0.0.1:1"}
        done = subprocess.run([sys.executable, "-m", "portico.gateway"], env=env, capture_output=True, text=True,
                              timeout=30)
    assert done.returncode == 1
    assert done.stderr.startswith(f"portico-gateway: not started: cannot listen on 127.0.0.1:{port} "
                                  "(PORTICO_GATEWAY_LISTEN_ADDR): ")
    assert "in use" in done.stderr and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
