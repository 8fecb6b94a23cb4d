"""A venue WebSocket that stays away is logged once per outage, not at every reconnect attempt.

The reconnect pause grows to `reconnect_max_s` (10 s by default), but before the fix every failed attempt (connect
or resync) logged a WARNING: one line every 5-10 s per connection for as long as the venue was away, and execution
keeps one connection per account. Here, at pauses of 10-50 ms, the tests wait for ten failed attempts (a warning
each before the fix) and find one warning. Now the first failure of an outage is a WARNING, the others DEBUG, and
the connection that ends it INFO.

A real simulator, started on the port the client keeps trying; then a venue that accepts the connection but fails
every re-subscribe (a resync failing at every attempt).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from tests.support.ports import free_port
from tests.support.waiting import until

from portico.sim.server import SimConfig, Simulator
from portico.venues.syndr import ws as ws_module
from portico.venues.syndr.ws import Disconnected, Reconnected, SyndrWebSocket

# Ten failed attempts at pauses of 10-50 ms: a second or less on an idle host, far longer on a stalled one.
ATTEMPTS_WITHIN_S = 30


def client(url: str) -> SyndrWebSocket:
    return SyndrWebSocket(url, heartbeat_s=0.5, silence_timeout_s=3.0, reconnect_initial_s=0.01,
                          reconnect_max_s=0.05, call_timeout_s=2.0, compress=False)


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == ws_module.log.name and r.levelno >= logging.WARNING]


def attempts(caplog: pytest.LogCaptureFixture, text: str) -> int:
    return sum(1 for r in caplog.records if r.name == ws_module.log.name and text in r.getMessage())


async def test_a_venue_that_stays_away_is_warned_of_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=ws_module.log.name)
    port = free_port()
    ws = client(f"ws://127.0.0.1:{port}")
    starting = asyncio.create_task(ws.start())
    try:
        await until(lambda: attempts(caplog, "connect attempt") >= 10, ATTEMPTS_WITHIN_S)  # still trying
        warned = warnings_of(caplog)
        assert len(warned) == 1 and warned[0].startswith("syndr websocket connect attempt 1 failed"), warned
        async with Simulator(SimConfig(port=port, market_maker=False)):
            await asyncio.wait_for(starting, 5)
            assert ws.connected
            assert any(r.getMessage().startswith("syndr websocket connected after") for r in caplog.records)
    finally:
        starting.cancel()
        await ws.aclose()


async def next_event(sub: Any) -> Any:
    return await asyncio.wait_for(sub.__anext__(), 5)


async def test_a_resync_that_keeps_failing_is_warned_of_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=ws_module.log.name)
    async with Simulator(SimConfig(port=0, market_maker=False)) as sim, client(sim.ws_url) as ws:
        sub = await ws.subscribe(["ticker.ETH-PERP"])
        sim.faults.update({"fail_rate": 1.0})  # every call answered with an internal error: each resync fails
        await sim.close_websockets()
        assert isinstance(await next_event(sub), Disconnected)
        await until(lambda: attempts(caplog, "resync failed") >= 10, ATTEMPTS_WITHIN_S)  # still trying
        assert len([m for m in warnings_of(caplog) if "resync failed" in m]) == 1, warnings_of(caplog)
        sim.faults.update({"fail_rate": 0.0})
        while not isinstance(await next_event(sub), Reconnected):
            pass
