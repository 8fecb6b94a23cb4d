"""Waiting for state that no event announces (a venue's book, a journal row), with a deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def until(predicate: Callable[[], object], timeout_s: float = 10.0, interval_s: float = 0.02) -> None:
    """Poll `predicate` until it is truthy; TimeoutError after `timeout_s`."""
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110 - polls state that no event announces
            await asyncio.sleep(interval_s)
