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
from portico.runtime.errors import Unavailable
from portico.runtime.lifecycle import cancel_and_wait
from portico.venues.accounts import VenueAccount
from portico.venues.syndr.errors import SyndrError

__all__ = ["DeadmanSwitches"]

log = logging.getLogger("portico.execution.deadman")

_ATTEMPTS: Final = 5


class DeadmanSwitches:
    """One timer per (venue, account).

    At any moment an account has at most one live timer, and it is the one in `_timers`: `arm` swaps the
    new timer in (or the old one out) without awaiting in between, so concurrent arms of one account
    cannot each store a timer over the other's, and only then cancels the one it replaced. A timer that
    fires leaves `_timers` (only if it is still the entry there) and goes on cancelling; re-arming does not
    stop a firing that has begun. `_tasks` holds every timer and firing not yet finished, for `aclose`.
    """

    def __init__(self, venue: SyndrVenue):
        self._venue = venue
        self._timers: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self.fired: dict[tuple[str, str], int] = {}  # times fired, for tests and metrics

    async def arm(self, venue_name: str, account: str, ttl_s: float) -> float | None:
        """(Re-)arm for `ttl_s` seconds and return when it fires (epoch seconds); 0 disarms and returns None."""
        record = (await self._venue.session(account)).record  # NOT_FOUND for an account we cannot act for
        if self._closed:
            raise Unavailable("the dead-man's switch is shutting down", reason="SHUTTING_DOWN")
        key = (venue_name, account.lower())
        # No await from here until the swap is done: the entry is replaced atomically.
        fire_at: float | None = None
        if ttl_s > 0:
            fire_at = time.time() + ttl_s
            task = asyncio.create_task(self._fire_after(key, record, ttl_s), name=f"deadman-{account}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            old = self._timers.get(key)
            self._timers[key] = task
        else:
            old = self._timers.pop(key, None)
            log.info("dead-man's switch disarmed", extra={"account": account})
        await cancel_and_wait(old)  # replaced: it can no longer fire (cancelled before its sleep ends)
        return fire_at

    async def _fire_after(self, key: tuple[str, str], record: VenueAccount, ttl_s: float) -> None:
        await asyncio.sleep(ttl_s)
        if self._timers.get(key) is asyncio.current_task():  # never drop a newer timer of the account
            del self._timers[key]
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
        """Cancel every timer and every firing in progress, and arm no more."""
        self._closed = True
        self._timers.clear()
        tasks, self._tasks = list(self._tasks), set()
        for task in tasks:
            task.cancel()  # all of them first: none fires while we wait for another
        for task in tasks:
            await cancel_and_wait(task)
