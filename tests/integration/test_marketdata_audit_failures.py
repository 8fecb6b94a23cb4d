"""The book audit when the venue cannot give its snapshots: no warning per book per interval.

A real simulator and market-data service, auditing every 0.1 s. Before the fix every live book logged "audit
snapshot failed" every interval while the venue's HTTP side was down (a line per book per interval, for as long
as the outage lasted), and sent its look-up regardless.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator

import pytest
from tests.integration.test_marketdata import consume, running_marketdata, until
from tests.support.book_consumer import Consumer

from portico.marketdata.v1 import market_data_service_pb2_grpc as pb_grpc
from portico.runtime.client import open_channel
from portico.sim.server import SimConfig, Simulator

SYMBOLS = ("ETH-PERP", "BTC-PERP")


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimConfig(port=0, seed=23, book_changes_per_second=200)) as simulator:
        yield simulator


def messages(log_lines: io.StringIO, prefix: str) -> list[dict[str, object]]:
    return [line for line in map(json.loads, log_lines.getvalue().splitlines()) if line["msg"].startswith(prefix)]


async def test_an_unreachable_venue_pauses_the_audits_with_one_warning_and_one_line_when_they_resume(
        sim: Simulator, log_lines: io.StringIO) -> None:
    async with running_marketdata(sim, PORTICO_MARKETDATA_AUDIT_SECONDS="0.1") as running, \
            open_channel(running.target) as channel:
        stub = pb_grpc.MarketDataServiceStub(channel)
        consumers = {symbol: Consumer(10) for symbol in SYMBOLS}
        tasks = [asyncio.create_task(consume(stub, running, c, symbol)) for symbol, c in consumers.items()]
        books = running.app.books["syndr"]
        await until(lambda: all(symbol in books.feeds and books.feeds[symbol].audits >= 1 for symbol in SYMBOLS))

        sim.faults.update({"http_5xx_method": "public/get_order_book", "http_5xx_rate": 1.0})
        await until(lambda: books.audit_rounds_cut >= 10)
        paused = messages(log_lines, "book audits paused")
        assert len(paused) == 1, paused  # before the fix: a warning per book per round
        assert messages(log_lines, "audit snapshot failed") == []

        sim.faults.update({"http_5xx_method": "", "http_5xx_rate": 0.0})
        audited = {symbol: books.feeds[symbol].audits for symbol in SYMBOLS}
        await until(lambda: all(books.feeds[symbol].audits > audited[symbol] + 2 for symbol in SYMBOLS))
        assert len(messages(log_lines, "book audits resumed")) == 1
        assert len(messages(log_lines, "book audits paused")) == 1
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert all(c.broken == [] for c in consumers.values())


async def test_one_books_failing_snapshot_is_logged_once_and_the_other_books_go_on_being_audited(
        sim: Simulator, log_lines: io.StringIO) -> None:
    async with running_marketdata(sim, PORTICO_MARKETDATA_AUDIT_SECONDS="0.1") as running, \
            open_channel(running.target) as channel:
        stub = pb_grpc.MarketDataServiceStub(channel)
        tasks = [asyncio.create_task(consume(stub, running, Consumer(10), symbol)) for symbol in SYMBOLS]
        books = running.app.books["syndr"]
        await until(lambda: all(symbol in books.feeds and books.feeds[symbol].audits >= 1 for symbol in SYMBOLS))

        failing, healthy = SYMBOLS
        sim.faults.update({"unknown_instruments": [failing]})  # its snapshot only: INSTRUMENT_NOT_FOUND
        before = books.feeds[healthy].audits
        await until(lambda: books.feeds[healthy].audits >= before + 10)  # audited each round regardless
        failed = messages(log_lines, "audit snapshot failed")
        assert [line["symbol"] for line in failed] == [failing], failed
        assert books.audit_rounds_cut == 0 and messages(log_lines, "book audits paused") == []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
