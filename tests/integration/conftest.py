"""Fixtures shared by the integration tests that trade or call the venue: each module defines its own `sim` (seed,
rate limits); a module defining a fixture of the same name (`account`, say) uses its own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.support.execution import ExecutionStack, execution_stack
from tests.support.openbao import OpenBaoDevServer
from tests.support.syndr_account import SyndrAccount, register

from portico.sim.server import Simulator
from portico.venues.syndr.http import SyndrHttpClient


@pytest.fixture
async def stack(sim: Simulator, openbao: OpenBaoDevServer, tmp_path: Path) -> AsyncIterator[ExecutionStack]:
    """Signer and reference data (synced from the module's `sim`) running, and a provisioned account."""
    async with execution_stack(sim, openbao, tmp_path) as s:
        yield s


@pytest.fixture
async def public(sim: Simulator) -> AsyncIterator[SyndrHttpClient]:
    """An unauthenticated venue client of the module's `sim`."""
    async with SyndrHttpClient(sim.http_url) as client:
        yield client


@pytest.fixture
async def account(public: SyndrHttpClient) -> SyndrAccount:
    """A venue account registered with the module's `sim` (its keys held by the test)."""
    return await register(public)


@pytest.fixture
async def private(sim: Simulator, account: SyndrAccount) -> AsyncIterator[SyndrHttpClient]:
    """A venue client authenticated as `account`."""
    async with SyndrHttpClient(sim.http_url, credentials=account.credentials) as client:
        yield client
