"""A REST gateway on a free loopback port in front of a reference-data gRPC target, for tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from portico.gateway.app import Gateway
from portico.runtime.client import open_channel


@contextlib.asynccontextmanager
async def serving(target: str) -> AsyncIterator[str]:
    """A gateway on 127.0.0.1 over a channel to `target`; yields its URL."""
    async with open_channel(target) as channel:
        runner = web.AppRunner(Gateway(channel).app())
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        try:
            yield f"http://127.0.0.1:{runner.addresses[0][1]}"
        finally:
            await runner.cleanup()
