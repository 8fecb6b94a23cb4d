"""Lifecycles every service shares: start, serve until SIGTERM, drain, close; and stopping tasks."""

from __future__ import annotations

import abc
import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from portico.runtime.server import GrpcServer

__all__ = ["GrpcServiceApp", "cancel_and_wait"]


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel a background task and wait until it has finished (None is fine)."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


class GrpcServiceApp(abc.ABC):
    """A service process built around one `GrpcServer`: subclasses start and close their parts."""

    server: GrpcServer

    @property
    def port(self) -> int:
        return self.server.port

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def aclose(self, grace_s: float | None = None) -> None: ...

    async def run(self) -> None:
        """Start, serve until SIGTERM/SIGINT, drain in-flight calls, and close."""
        await self.start()
        try:
            await self.server.run_until_signalled()
        finally:
            await self.aclose(grace_s=0)
