"""A bad value in the filter endpoint's filter is a 400 naming the key the caller wrote (`baseCurrency`), not
the proto field reference data checked it under (`base_currencies`), which the REST caller never sees."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from tests.support.gateway import serving
from tests.support.refdata import RunningRefdata, database, running_refdata

from portico.sim.server import SimConfig, Simulator


@pytest.fixture
async def edge(tmp_path: Path) -> AsyncIterator[tuple[str, RunningRefdata]]:
    async with Simulator(SimConfig(port=0, market_maker=False)) as sim:
        with database("sqlite", tmp_path) as db_env:
            async with running_refdata(sim.http_url, db_env) as refdata, serving(refdata.target) as url:
                yield url, refdata


@pytest.mark.parametrize(("flt", "field"), [
    ({"baseCurrency": ["ETH", "B\x00TC"]}, "filter.baseCurrency[1]"),
    ({"quoteCurrency": "U" * 300}, "filter.quoteCurrency[0]"),
])
async def test_a_filter_value_reference_data_refuses_is_named_by_its_key(
        edge: tuple[str, RunningRefdata], flt: dict[str, Any], field: str) -> None:
    url, refdata = edge
    async with aiohttp.ClientSession() as session, session.get(
            f"{url}/v1/instruments/syndr", params={"filter": json.dumps(flt)},
            headers={"Authorization": f"Bearer {refdata.tokens['read']}"}) as response:
        status, body = response.status, await response.json()
    assert status == 400
    assert body["error"].startswith(f"Invalid request: {field}: "), body
