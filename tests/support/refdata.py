"""Run the reference-data service (and the gateway) in-process against a simulator, for tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from portico.refdata.service import RefdataApp
from portico.refdata.settings import RefdataSettings
from portico.refdata.v1 import reference_data_service_pb2, reference_data_service_pb2_grpc
from portico.runtime.client import open_channel
from portico.sim.server import Simulator
from tests.support.postgres import fresh_database, postgres_reachable
from tests.support.signer import make_tokens


@dataclass
class RunningRefdata:
    app: RefdataApp
    target: str
    tokens: dict[str, str]

    def metadata(self, scope: str = "admin") -> tuple[tuple[str, str]]:
        return (("authorization", f"Bearer {self.tokens[scope]}"),)

    def stub(self, channel: grpc.aio.Channel) -> reference_data_service_pb2_grpc.ReferenceDataServiceStub:
        return reference_data_service_pb2_grpc.ReferenceDataServiceStub(channel)


@contextlib.contextmanager
def database(backend: str, tmp: Path) -> Iterator[dict[str, str]]:
    """Environment selecting a fresh SQLite file or a fresh PostgreSQL database."""
    if backend == "sqlite":
        yield {"PORTICO_REFDATA_DB": str(tmp / "instruments.sqlite3")}
        return
    if not postgres_reachable():
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432")
    with fresh_database() as dsn:
        yield {"PORTICO_REFDATA_DSN": dsn}


@contextlib.asynccontextmanager
async def running_refdata(sim_http_url: str, db_env: dict[str, str],
                          extra_env: dict[str, str] | None = None) -> AsyncIterator[RunningRefdata]:
    tokens, auth = make_tokens()
    env = {"PORTICO_LISTEN_ADDR": "127.0.0.1:0", "PORTICO_AUTH_TOKENS": auth,
           "PORTICO_SYNDR_HTTP_URL": sim_http_url, "PORTICO_SHUTDOWN_GRACE_SECONDS": "1", **db_env,
           **(extra_env or {})}
    app = RefdataApp(RefdataSettings.from_env(env), env)
    await app.start()
    try:
        yield RunningRefdata(app, f"127.0.0.1:{app.port}", tokens)
    finally:
        await app.aclose(grace_s=0.5)


class RestartableRefdata:
    """Reference data that a test stops and starts again on the same address, database and tokens."""

    def __init__(self, sim: Simulator, db_env: dict[str, str]):
        self.tokens, self._auth = make_tokens()
        self._sim = sim
        self._db_env = db_env
        self.target = ""
        self.running: RunningRefdata | None = None
        self._stack: contextlib.AsyncExitStack | None = None

    def metadata(self, scope: str = "admin") -> tuple[tuple[str, str]]:
        return (("authorization", f"Bearer {self.tokens[scope]}"),)

    async def start(self, *, sync_on_start: bool = False) -> None:
        """With `sync_on_start` the sync runs (and publishes) before the server listens: nobody watches it."""
        env = {"PORTICO_AUTH_TOKENS": self._auth, "PORTICO_REFDATA_SYNC_ON_START": str(sync_on_start).lower()}
        if self.target:
            env["PORTICO_LISTEN_ADDR"] = self.target
        self._stack = contextlib.AsyncExitStack()
        self.running = await self._stack.enter_async_context(running_refdata(self._sim.http_url, self._db_env, env))
        self.target = self.running.target

    async def stop(self) -> None:
        stack, self._stack, self.running = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    async def sync(self, *symbols: str) -> None:
        async with open_channel(self.target) as channel:
            await reference_data_service_pb2_grpc.ReferenceDataServiceStub(channel).SyncInstruments(
                reference_data_service_pb2.SyncInstrumentsRequest(venue="syndr", symbols=symbols),
                metadata=self.metadata(), timeout=30)


def syndr_instrument(name: str, ident: int, **overrides: Any) -> dict[str, Any]:
    """One entry of `public/get_instruments`' answer as the document shows it (an ETH perpetual), for stub venues."""
    return {"base_currency": "ETH", "contract_size": "0.001", "id": ident, "is_active": True, "kind": "perpetual",
            "maker_commission": "-0.000025", "max_leverage": "50", "max_liquidation_commission": "5",
            "min_trade_amount": "0.001", "name": name, "price_index": "ETHUSD", "quote_currency": "USD",
            "settlement_period": "perpetual", "taker_commission": "0.00025", "tick_size": "0.1",
            "underlying_name": "ETHUSD", **overrides}


@contextlib.asynccontextmanager
async def refdata_on(venue_http_url: str, tmp: Path) -> AsyncIterator[tuple[RunningRefdata, grpc.aio.Channel]]:
    """Reference data on a fresh SQLite file, syncing from the venue at `venue_http_url`, and a channel to it."""
    with database("sqlite", tmp) as db_env:
        async with running_refdata(venue_http_url, db_env) as refdata, open_channel(refdata.target) as channel:
            yield refdata, channel
