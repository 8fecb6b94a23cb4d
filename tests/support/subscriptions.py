"""A venue WebSocket subscription stand-in for unit tests of the feeds: the test puts events, the feed reads them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any


class QueuedSubscription:
    """Iterates, without end, over what the test puts into `events`."""

    def __init__(self) -> None:
        self.events: asyncio.Queue[Any] = asyncio.Queue()

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._events()

    async def _events(self) -> AsyncIterator[Any]:
        while True:
            yield await self.events.get()
