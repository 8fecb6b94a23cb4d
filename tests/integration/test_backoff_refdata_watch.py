"""The reference-data watch (`follow_instruments`, market data's and execution's) backs off while reference data
stays away, and logs the outage once.

Before the fix the watch tried again every `retry_s` (1 s) for as long as reference data was down or refused its
catch-up, and logged a WARNING (with a traceback, for a failed catch-up) at every attempt: over a window of 2.5 s
at `retry_s=0.05`, some 45 attempts and as many warnings. Now the pause doubles from `retry_s` (up to 30 s) and
the outage is logged once at WARNING (again only if its kind changes), and its end at INFO.

Real gRPC over loopback: a port nobody listens on, then a real reference-data service on it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc
import pytest
from tests.support.ports import free_port
from tests.support.refdata import running_refdata
from tests.support.signer import make_tokens

from portico.refdata import watch
from portico.refdata.v1 import reference_data_service_pb2_grpc as refdata_grpc
from portico.sim.server import SimConfig, Simulator

FAST_RECONNECT = [("grpc.initial_reconnect_backoff_ms", 50), ("grpc.min_reconnect_backoff_ms", 50),
                  ("grpc.max_reconnect_backoff_ms", 100)]
WINDOW_S = 2.5
RETRY_S = 0.05  # the pauses: 0.05, 0.1, 0.2, 0.4, 0.8, 1.6 s: about 6 attempts in the window


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimConfig(port=0, seed=7, market_maker=False)) as simulator:
        yield simulator


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == watch.log.name and r.levelno >= logging.WARNING]


async def test_a_watch_backs_off_while_reference_data_is_down(caplog: pytest.LogCaptureFixture, sim: Simulator,
                                                              tmp_path: object) -> None:
    caplog.set_level(logging.INFO, logger=watch.log.name)
    port = free_port()
    tokens, auth = make_tokens()  # the service's tokens, known before it runs
    ended: list[bool] = []
    established = asyncio.Event()

    async def on_established() -> None:
        established.set()

    # The channel's own reconnect backoff (1 s growing to 2 min by default) kept short: the watch's pauses are measured.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=FAST_RECONNECT) as channel:
        stub = refdata_grpc.ReferenceDataServiceStub(channel)
        task = asyncio.create_task(watch.follow_instruments(
            stub, (("authorization", f"Bearer {tokens['read']}"),), "syndr", watcher="test",
            on_established=on_established, on_event=lambda event: None,
            on_ended=ended.append, established_timeout_s=1.0, retry_s=RETRY_S))
        try:
            await asyncio.sleep(WINDOW_S)
            assert not established.is_set()
            assert len(ended) <= 8, len(ended)  # before the fix: ~45
            assert len(warnings_of(caplog)) == 1, [r.getMessage() for r in warnings_of(caplog)]  # once per outage
            # Reference data comes up on that port: the watch is established at its next attempt (<= 3.2 s away).
            async with running_refdata(sim.http_url, {"PORTICO_REFDATA_DB": str(tmp_path) + "/refdata.sqlite3"},
                                       {"PORTICO_LISTEN_ADDR": f"127.0.0.1:{port}", "PORTICO_AUTH_TOKENS": auth}):
                await asyncio.wait_for(established.wait(), 6)
                assert any(r.getMessage() == "reference-data watch established again" for r in caplog.records)
                assert len(warnings_of(caplog)) == 1, [(r.getMessage(), r.__dict__.get("code"))
                                                       for r in warnings_of(caplog)]
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def test_a_catch_up_that_keeps_failing_backs_off(caplog: pytest.LogCaptureFixture, sim: Simulator,
                                                       tmp_path: object) -> None:
    """Reference data is up, but the consumer's catch-up on what it missed keeps failing (its reads refused, say):
    each failure ends the connection, and the next comes after a growing pause, the failure logged once."""
    caplog.set_level(logging.INFO, logger=watch.log.name)
    attempts: list[int] = []

    async def on_established() -> None:
        attempts.append(1)
        raise RuntimeError("catch-up refused")

    async with running_refdata(sim.http_url, {"PORTICO_REFDATA_DB": str(tmp_path) + "/refdata.sqlite3"}) as refdata, \
            grpc.aio.insecure_channel(refdata.target) as channel:
        stub = refdata_grpc.ReferenceDataServiceStub(channel)
        task = asyncio.create_task(watch.follow_instruments(
            stub, refdata.metadata("read"), "syndr", watcher="test", on_established=on_established,
            on_event=lambda event: None, retry_s=RETRY_S))
        try:
            await asyncio.sleep(WINDOW_S)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert 2 <= len(attempts) <= 8, len(attempts)  # before the fix: ~45
    failures = warnings_of(caplog)
    assert len(failures) == 1, [r.getMessage() for r in failures]
    assert failures[0].exc_info is not None  # the traceback once
