"""The dead-man's switch: cancel everything of an account unless someone keeps re-arming it.

It covers what the venue's cancel-on-disconnect does not (a client that is
connected but wedged, a crashed strategy behind a healthy gateway). When it
fires it uses a client of its own (its own connection pool), so a stuck
shared pool cannot keep it from cancelling, and retries, with growing pauses,
until the venue takes the cancel: cancelling everything twice is harmless, and
giving up would leave the orders of an account nobody watches on the book. The
first attempt uses the record the switch was armed with (no Vault read delays
it); after a failure the record is read again, so a key rotated since arming
(the venue refuses the old one for ever) does not keep it from cancelling.
A cancel that keeps failing is logged when it first fails, when the pause
grows, and then about once a minute (with the attempt count), not on every
attempt: a venue that refuses for good would otherwise fill the log.
When it fires it first tells `on_fire` (the order manager's `deadman_fired`),
before its cancel is sent: an order of the account whose placement's outcome
is unknown and that the venue never got must not be sent again by its
reconciliation after the cancel.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Final

from portico.execution.venue import SyndrVenue
from portico.runtime.errors import Unavailable
from portico.runtime.lifecycle import cancel_and_wait
from portico.venues.accounts import VenueAccount

__all__ = ["DeadmanSwitches"]

log = logging.getLogger("portico.execution.deadman")

# A cancel the venue did not take is sent again after this, the pause doubling up to the maximum.
_RETRY_S: Final = 0.2
_RETRY_MAX_S: Final = 5.0
# While the cancel keeps failing at the longest pause, a failure is logged at most this often.
_FAILURE_LOG_EVERY_S: Final = 60.0


class DeadmanSwitches:
    """One timer per (venue, account).

    At any moment an account has at most one live timer, and it is the one in `_timers`: `arm` swaps the
    new timer in (or the old one out) without awaiting in between, so concurrent arms of one account
    cannot each store a timer over the other's, and only then cancels the one it replaced. A timer that
    fires leaves `_timers` (only if it is still the entry there) and goes on cancelling; re-arming does not
    stop a firing's first attempt (a missed deadline cancels), but it does stop its retries: one whose first
    attempt failed and that is waiting to retry (`_retrying`) is cancelled, and one whose attempt was on its
    way when the account was re-armed (or disarmed) is not retried if that attempt fails (`_arms` counts the
    arms): the client is back, and a cancel that lands once the venue returns from an outage would take the
    orders it placed since. `_tasks` holds every timer and firing not yet finished, for `aclose`.

    Only arming an account that has no live timer reads its record (which also tells an account we cannot
    act for, NOT_FOUND); re-arming and disarming use the record the live timer holds (`_records`) and do not
    await before the swap, so a re-arm handled before the deadline always wins over the timer, and neither
    depends on Vault being readable: a Vault outage must not cancel a healthy client's orders.
    """

    def __init__(self, venue: SyndrVenue, *, firing_wait_s: float = 10.0,
                 on_fire: Callable[[str, str, int], None] | None = None):
        self._venue = venue
        # Told (venue, account, epoch ms) when a switch fires, before its cancel is sent; must not block.
        self._on_fire = on_fire
        # At shutdown, how long a firing whose cancel is on its way may take to finish it (a venue call's worst
        # case): cancelled half-way, it would leave the orders of an account nobody watches on the book.
        self._firing_wait_s = firing_wait_s
        self._firing: set[asyncio.Task[None]] = set()  # timers whose deadline passed: cancelling now
        self._timers: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._records: dict[tuple[str, str], VenueAccount] = {}  # the record each live timer fires with
        self._retrying: dict[tuple[str, str], asyncio.Task[None]] = {}  # firings whose first cancel failed
        # How many times each account was armed or disarmed: a firing whose cancel fails after the account was
        # (re-/dis)armed since it fired is not retried (the client is back), as one waiting to retry is dropped.
        self._arms: dict[tuple[str, str], int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self.fired: dict[tuple[str, str], int] = {}  # times fired, for tests and metrics

    async def arm(self, venue_name: str, account: str, ttl_s: float) -> float | None:
        """(Re-)arm for `ttl_s` seconds and return when it fires (epoch seconds); 0 disarms and returns None."""
        key = (venue_name, account.lower())
        record = self._records.get(key) if key in self._timers else None
        if record is None:
            record = (await self._venue.session(account)).record  # NOT_FOUND for an account we cannot act for
        if self._closed:
            raise Unavailable("the dead-man's switch is shutting down", reason="SHUTTING_DOWN")
        # No await from here until the swap is done: the entry is replaced atomically.
        self._arms[key] = self._arms.get(key, 0) + 1
        fire_at: float | None = None
        if ttl_s > 0:
            fire_at = time.time() + ttl_s
            task = asyncio.create_task(self._fire_after(key, record, ttl_s), name=f"deadman-{account}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            old = self._timers.get(key)
            self._timers[key] = task
            self._records[key] = record
        else:
            old = self._timers.pop(key, None)
            self._records.pop(key, None)
            log.info("dead-man's switch disarmed", extra={"account": account})
        retrying = self._retrying.pop(key, None)
        await cancel_and_wait(old)  # replaced: it can no longer fire (cancelled before its sleep ends)
        if retrying is not None:
            log.warning("dead-man's switch re-armed while the cancel of a missed deadline was still failing: that "
                        "cancel is dropped", extra={"account": account})
            await cancel_and_wait(retrying)
        return fire_at

    async def _fire_after(self, key: tuple[str, str], record: VenueAccount, ttl_s: float) -> None:
        await asyncio.sleep(ttl_s)
        if self._timers.get(key) is asyncio.current_task():  # never drop a newer timer of the account
            del self._timers[key]
            del self._records[key]
        log.warning("dead-man's switch fired: cancelling all orders", extra={"account": record.account})
        if self._on_fire is not None:
            try:
                self._on_fire(key[0], record.account, time.time_ns() // 1_000_000)
            except Exception:  # never in the way of the cancel
                log.exception("dead-man's switch could not record its firing", extra={"account": record.account})
        self._firing.add(asyncio.current_task())  # type: ignore[arg-type]
        arms = self._arms.get(key)
        attempt, pause = 1, _RETRY_S
        logged_pause, logged_at = 0.0, 0.0  # the first failure is logged: its pause is more than 0
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    async with self._venue.independent_client(record) as client:
                        await client.call("private/cancel_all", {})
                    break
                except Exception as exc:
                    if self._arms.get(key) != arms:  # re-armed or disarmed since it fired: the client is back
                        log.warning("dead-man's switch re-armed or disarmed while its cancel was on its way: that "
                                    "cancel failed and is not tried again",
                                    extra={"account": record.account, "attempt": attempt,
                                           "error": type(exc).__name__})
                        return
                    if self._closed:
                        log.error("dead-man's cancel failed while shutting down: the account's orders may still "
                                  "be on the book", extra={"account": record.account, "attempt": attempt,
                                                           "error": type(exc).__name__})
                        return
                    if pause > logged_pause or loop.time() - logged_at >= _FAILURE_LOG_EVERY_S:
                        log.error("dead-man's cancel failed %d time(s); trying again in %.1f s", attempt, pause,
                                  extra={"account": record.account, "attempt": attempt,
                                         "error": type(exc).__name__})
                        logged_pause, logged_at = pause, loop.time()
                self._retrying[key] = asyncio.current_task()  # type: ignore[assignment]
                await asyncio.sleep(pause)
                attempt, pause = attempt + 1, min(pause * 2, _RETRY_MAX_S)
                record = await self._current(record)
        finally:
            self._firing.discard(asyncio.current_task())
            if self._retrying.get(key) is asyncio.current_task():
                del self._retrying[key]
        log.warning("dead-man's switch cancelled all orders", extra={"account": record.account, "attempt": attempt})
        self.fired[key] = self.fired.get(key, 0) + 1

    async def _current(self, record: VenueAccount) -> VenueAccount:
        """The account's record as Vault has it now (the key may have been rotated since arming); `record` if
        it cannot be read."""
        try:
            return await self._venue.current_record(record.account)
        except Exception as exc:
            log.warning("dead-man's switch keeps the record it was armed with: reading it again failed",
                        extra={"account": record.account, "error": type(exc).__name__})
            return record

    async def aclose(self) -> None:
        """Arm no more and cancel every timer (switches do not survive a restart); a firing whose cancel is on
        its way gets up to `firing_wait_s` to finish that attempt (no retry after it), then is cancelled too."""
        self._closed = True
        self._timers.clear()
        self._records.clear()
        self._arms.clear()
        tasks, self._tasks = list(self._tasks), set()
        firing = [task for task in tasks if task in self._firing]  # one waiting to retry tries once more
        self._retrying.clear()
        for task in tasks:
            if task not in firing:
                task.cancel()  # all of them first: none fires while we wait for another
        if firing:
            _, unfinished = await asyncio.wait(firing, timeout=self._firing_wait_s)
            if unfinished:
                log.error("dead-man's cancel still on its way at shutdown, after %.0f s: abandoned; the account's "
                          "orders may still be on the book", self._firing_wait_s)
        for task in tasks:
            await cancel_and_wait(task)
