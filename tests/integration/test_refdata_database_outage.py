"""Reference data while its PostgreSQL cannot be reached: calls are UNAVAILABLE (retry), not INTERNAL (a bug),
and the service answers again by itself once the database is back. The database sits behind a TCP proxy the
test cuts; everything is real (PostgreSQL at 127.0.0.1:5432, the simulator, the gRPC server)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import grpc
import pytest
from tests.support.postgres import fresh_database, postgres_reachable
from tests.support.refdata import RunningRefdata, running_refdata
from tests.support.tcp_proxy import TcpProxy

from portico.refdata.v1 import reference_data_service_pb2 as pb
from portico.runtime.client import open_channel
from portico.runtime.errors import error_info
from portico.sim.server import SimConfig, Simulator


@pytest.fixture
async def behind_proxy() -> AsyncIterator[tuple[RunningRefdata, TcpProxy]]:
    if not postgres_reachable():
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432")
    with fresh_database("portico_refdata_outage") as dsn:
        parts = urlsplit(dsn)
        async with TcpProxy("127.0.0.1", parts.port or 5432) as proxy, \
                Simulator(SimConfig(port=0, market_maker=False)) as sim:
            proxied = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}"))
            async with running_refdata(sim.http_url, {"PORTICO_REFDATA_DSN": proxied}) as refdata:
                yield refdata, proxy


async def test_reads_and_syncs_while_postgresql_is_away_are_unavailable_then_answer_again(
        behind_proxy: tuple[RunningRefdata, TcpProxy], caplog: pytest.LogCaptureFixture) -> None:
    refdata, proxy = behind_proxy
    async with open_channel(refdata.target) as channel:
        stub = refdata.stub(channel)
        await stub.SyncInstruments(pb.SyncInstrumentsRequest(venue="syndr"), metadata=refdata.metadata(), timeout=30)
        listed = await stub.ListInstruments(pb.ListInstrumentsRequest(venue="syndr"),
                                            metadata=refdata.metadata("read"), timeout=10)
        assert listed.instruments

        await proxy.block()  # every pooled connection is cut, and new ones are refused
        calls = {
            "ListInstruments": stub.ListInstruments(pb.ListInstrumentsRequest(venue="syndr"),
                                                    metadata=refdata.metadata("read"), timeout=40),
            "SyncInstruments": stub.SyncInstruments(pb.SyncInstrumentsRequest(venue="syndr"),
                                                    metadata=refdata.metadata(), timeout=40),
        }
        for name, call in calls.items():
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, (name, caught.value.details())
            info = error_info(caught.value)
            assert info is not None and info.reason == "DATABASE_UNAVAILABLE", name
            assert str(proxy.port) not in (caught.value.details() or "")  # the driver's text stays out
        assert any(r.getMessage() == "database unavailable" and r.levelno == logging.WARNING for r in caplog.records)

        await proxy.unblock()
        async with asyncio.timeout(60):  # the pool reconnects by itself
            while True:
                try:
                    again = await stub.ListInstruments(pb.ListInstrumentsRequest(venue="syndr"),
                                                       metadata=refdata.metadata("read"), timeout=10)
                    break
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc.details()
                    await asyncio.sleep(0.2)
        assert [i.symbol for i in again.instruments] == [i.symbol for i in listed.instruments]
