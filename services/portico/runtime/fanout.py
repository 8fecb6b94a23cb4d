"""One stream consumer's bounded queue, shared by the services that fan venue updates out to gRPC streams.

A consumer that falls `max_pending` updates behind is cut off (its stream ends
with RESOURCE_EXHAUSTED) rather than silently skipped or allowed to grow the
server's memory: updates carry sequences, and a consumer must never believe it
has them all when it does not.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Final

from portico.runtime.errors import ResourceExhausted

__all__ = ["StreamConsumer"]

_CONSUMER_QUEUE: Final = 10_000


@dataclass(eq=False)
class StreamConsumer:
    """One gRPC stream's queue of messages; `error` set means it was cut off."""

    kind: str  # what it streams, e.g. "orders" or "fills"
    queue: asyncio.Queue[Any] = field(default_factory=lambda: asyncio.Queue(_CONSUMER_QUEUE))
    error: Exception | None = None

    def offer(self, update: Any) -> None:
        if self.error is not None:
            return
        try:
            self.queue.put_nowait(update)
        except asyncio.QueueFull:
            self.error = ResourceExhausted("stream consumer fell too far behind; reconnect and re-read the state",
                                           reason="CONSUMER_TOO_SLOW")
            with contextlib.suppress(asyncio.QueueEmpty):
                self.queue.get_nowait()
            self.queue.put_nowait(None)  # wake the stream so it reports the error

    async def batch(self) -> list[Any]:
        """Wait for at least one update and take everything queued (None means: cut off)."""
        items = [await self.queue.get()]
        while not self.queue.empty():
            items.append(self.queue.get_nowait())
        return items

    async def batches(self) -> AsyncIterator[list[Any]]:
        """The updates, a batch of whatever is queued at a time; raises `error` once cut off."""
        while True:
            updates = [u for u in await self.batch() if u is not None]
            if updates:
                yield updates
            if self.error is not None:
                raise self.error
