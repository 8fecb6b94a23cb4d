"""Fixtures shared by the integration tests that trade: each module defines its own `sim` (seed, rate limits)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.support.execution import ExecutionStack, execution_stack
from tests.support.openbao import OpenBaoDevServer

from portico.sim.server import Simulator


@pytest.fixture
async def stack(sim: Simulator, openbao: OpenBaoDevServer, tmp_path: Path) -> AsyncIterator[ExecutionStack]:
    """Signer and reference data (synced from the module's `sim`) running, and a provisioned account."""
    async with execution_stack(sim, openbao, tmp_path) as s:
        yield s
