"""A book rebuild whose snapshot the venue keeps failing logs that once, not at every attempt.

After an upstream reconnect every book is rebuilt from `public/get_order_book`. While the venue answers it 503,
each book's rebuild retries with a pause doubling to 2 s; before the fix every failed attempt logged a WARNING,
so a venue outage logged one line per book every 2 s for as long as it lasted (7 in the first 4 s for one
book). Now the first failure of a rebuild is logged at WARNING, the rest at DEBUG, the recovery at INFO.

A real simulator and market-data service, over gRPC on loopback.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
from tests.integration.test_marketdata import consume, running_marketdata, until
from tests.support.book_consumer import Consumer

from portico.marketdata import feed
from portico.marketdata.v1 import market_data_service_pb2_grpc as pb_grpc
from portico.runtime.client import open_channel
from portico.sim.server import SimConfig, Simulator

WINDOW_S = 4.0


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimConfig(port=0, seed=23, book_changes_per_second=50)) as simulator:
        yield simulator


def failures(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == "snapshot failed; retrying"]


async def test_a_snapshot_the_venue_keeps_failing_is_logged_once(sim: Simulator,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=feed.log.name)
    async with running_marketdata(sim) as running, open_channel(running.target) as channel:
        consumer = Consumer(5)
        task = asyncio.create_task(consume(pb_grpc.MarketDataServiceStub(channel), running, consumer))
        try:
            await until(lambda: consumer.snapshots >= 1)
            books = running.app.books["syndr"]
            sim.faults.update({"http_5xx_method": "public/get_order_book", "http_5xx_rate": 1.0})
            await sim.close_websockets()  # the reconnect rebuilds the book, from a snapshot the venue fails
            await until(lambda: failures(caplog))
            await asyncio.sleep(WINDOW_S)
            assert not books.feeds["ETH-PERP"].live
            logged = [r for r in failures(caplog) if r.levelno >= logging.WARNING]
            assert len(logged) == 1, len(logged)  # before the fix: 7
            assert len(failures(caplog)) >= 5  # still retried, at DEBUG: the pause grows to 2 s, no further

            sim.faults.update({"http_5xx_method": "", "http_5xx_rate": 0.0})  # the venue is well again
            await until(lambda: books.feeds["ETH-PERP"].live, 5)
            assert any(r.getMessage() == "snapshot fetched again" for r in caplog.records)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
