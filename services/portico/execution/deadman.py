"""The dead-man's switch: cancel everything of an account unless someone keeps re-arming it.

It covers what the venue's cancel-on-disconnect does not (a client that is
connected but wedged, a crashed strategy behind a healthy gateway). When it
fires it uses a client of its own (its own connection pool), so a stuck
shared pool cannot keep it from cancelling, and retries: cancelling
everything twice is harmless.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Final

from portico.execution.venue import SyndrVenue
from portico.runtime.lifecycle import cancel_and_wait
from portico.venues.accounts import VenueAccount
from portico.venues.syndr.errors import SyndrError

__all__ = ["DeadmanSwitches"]

log = logging.getLogger("portico.execution.deadman")

_ATTEMPTS: Final = 5


class DeadmanSwitches:
    """One timer per (venue, account)."""

    def __init__(self, venue: SyndrVenue):
        self._venue = venue
        self._timers: dict[tuple[str, str], asyncio.Task[None]] = {}
        self.fired: dict[tuple[str, str], int] = {}  # times fired, for tests and metrics

    async def arm(self, venue_name: str, account: str, ttl_s: float) -> float | None:
        """(Re-)arm for `ttl_s` seconds and return when it fires (epoch seconds); 0 disarms and returns None."""
        record = (await self._venue.session(account)).record  # NOT_FOUND for an account we cannot act for
        key = (venue_name, account.lower())
        await cancel_and_wait(self._timers.pop(key, None))
        if ttl_s <= 0:
            log.info("dead-man's switch disarmed", extra={"account": account})
            return None
        fire_at = time.time() + ttl_s
        self._timers[key] = asyncio.create_task(self._fire_after(key, record, ttl_s), name=f"deadman-{account}")
        return fire_at

    async def _fire_after(self, key: tuple[str, str], record: VenueAccount, ttl_s: float) -> None:
        await asyncio.sleep(ttl_s)
        self._timers.pop(key, None)
        log.warning("dead-man's switch fired: cancelling all orders", extra={"account": record.account})
        async with self._venue.independent_client(record) as client:
            for attempt in range(1, _ATTEMPTS + 1):
                try:
                    await client.call("private/cancel_all", {})
                    break
                except SyndrError as exc:
                    log.error("dead-man's cancel failed", extra={"account": record.account, "attempt": attempt,
                                                                 "error": type(exc).__name__})
                    await asyncio.sleep(min(2.0, 0.1 * 2 ** attempt))
        self.fired[key] = self.fired.get(key, 0) + 1

    async def aclose(self) -> None:
        for task in list(self._timers.values()):
            await cancel_and_wait(task)
        self._timers.clear()
