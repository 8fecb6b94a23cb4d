"""A client-side mirror of Syndr's per-API-key credit bucket.

The venue refuses calls once an API key's bucket is empty (`too_many_requests`),
and the calls we most need when that happens are cancels. So every call made
with a key first takes its credits (`RateLimit.cost`) from a local bucket sized
at `safety` x the venue's capacity and refill rate: in normal use the venue's
bucket never runs dry, and when ours does, callers queue here (not at the
venue) in priority order - cancels, then other matching-engine calls, then
everything else; FIFO within a class. One `RateBudget` per API key, shared by
that key's HTTP and WebSocket clients.

No background task: waiters are woken by one `loop.call_later` timer that is
re-armed for the head of the queue, so there is nothing to close.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from dataclasses import dataclass, field
from enum import IntEnum

from portico.venues.syndr.constants import CANCEL_METHODS, MATCHING_ENGINE_METHODS, ErrorCode, RateLimit
from portico.venues.syndr.errors import SyndrRateLimited

__all__ = ["Priority", "RateBudget", "priority_of"]

# Never sleep less than this when the head waiter is short of credits, so float
# rounding cannot turn the timer into a busy loop.
_MIN_SLEEP_S = 0.001


class Priority(IntEnum):
    """Who goes first when several callers wait (lower value first)."""

    CANCEL = 0
    MATCHING_ENGINE = 1
    OTHER = 2


def priority_of(method: str) -> Priority:
    """The queueing class of a JSON-RPC method."""
    if method in CANCEL_METHODS:
        return Priority.CANCEL
    if method in MATCHING_ENGINE_METHODS:
        return Priority.MATCHING_ENGINE
    return Priority.OTHER


@dataclass(order=True)
class _Waiter:
    priority: int
    seq: int
    cost: int = field(compare=False)
    future: asyncio.Future[None] = field(compare=False)


class RateBudget:
    """Token bucket at `safety` x the venue's capacity and refill; `acquire` waits, `try_acquire` does not."""

    def __init__(self, capacity: int = RateLimit.CAPACITY, refill_per_s: float = RateLimit.REFILL_PER_S, *,
                 safety: float = 0.8) -> None:
        if not 0 < safety <= 1:
            raise ValueError("safety must be in (0, 1]")
        if refill_per_s <= 0:
            raise ValueError("refill_per_s must be positive")
        self.capacity = capacity * safety
        self.refill_per_s = refill_per_s * safety
        largest = max(RateLimit.MATCHING_ENGINE_COST, RateLimit.OTHER_COST)
        if self.capacity < largest:
            # A call costing more than the bucket can hold would wait forever.
            raise ValueError(f"capacity x safety must hold at least one call ({largest} credits)")
        self._tokens = self.capacity
        self._updated = time.monotonic()
        self._waiters: list[_Waiter] = []
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        return (f"RateBudget(capacity={self.capacity:g}, refill_per_s={self.refill_per_s:g}, "
                f"available={self.available:.0f}, waiting={self.waiting})")

    @property
    def available(self) -> float:
        """Credits in the bucket right now."""
        self._refill()
        return self._tokens

    @property
    def waiting(self) -> int:
        """Callers queued in `acquire`."""
        return sum(1 for w in self._waiters if not w.future.done())

    def try_acquire(self, method: str, priority: Priority | None = None) -> bool:
        """Take `method`'s credits if they are there and nobody of the same or a higher class is queued.

        `priority` overrides the method's own class: a read made for a cancel is as urgent as the cancel.
        """
        cost = RateLimit.cost(method)
        priority = priority_of(method) if priority is None else priority
        self._refill()
        if self._blocked_by_queue(priority) or self._tokens < cost:
            return False
        self._tokens -= cost
        return True

    async def acquire(self, method: str, *, priority: Priority | None = None, timeout_s: float | None = None) -> None:
        """Wait until `method`'s credits are available, then take them.

        With `timeout_s`, a caller still queued after that long gives up with
        `SyndrRateLimited`: its call was not sent, which (unlike a call that
        timed out at the venue) leaves nothing to reconcile.
        """
        if self.try_acquire(method, priority):
            return
        waiter = _Waiter(priority_of(method) if priority is None else priority, next(self._seq), RateLimit.cost(method),
                         asyncio.get_running_loop().create_future())
        heapq.heappush(self._waiters, waiter)
        self._drain()
        try:
            async with asyncio.timeout(timeout_s):
                await waiter.future
        except (asyncio.CancelledError, TimeoutError) as exc:
            if waiter.future.done() and not waiter.future.cancelled():
                # Granted and given up in the same tick: give the credits back.
                self._tokens = min(self.capacity, self._tokens + waiter.cost)
            waiter.future.cancel()
            self._drain()
            if isinstance(exc, TimeoutError):
                raise SyndrRateLimited(ErrorCode.TOO_MANY_REQUESTS,
                                       f"not sent: still over this process's share of the API key's rate limit "
                                       f"after {timeout_s:g} s", method=method) from None
            raise

    # ------------------------------------------------------------------ internals

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.refill_per_s)
        self._updated = now

    def _blocked_by_queue(self, priority: int) -> bool:
        """True when a live waiter of the same or a more urgent class is queued (it goes first)."""
        self._prune()
        return any(w.priority <= priority for w in self._waiters if not w.future.done())

    def _prune(self) -> None:
        while self._waiters and self._waiters[0].future.done():
            heapq.heappop(self._waiters)

    def _drain(self) -> None:
        """Serve queued waiters in priority order while credits last, then re-arm the timer."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._refill()
        self._prune()
        while self._waiters and self._tokens >= self._waiters[0].cost:
            waiter = heapq.heappop(self._waiters)
            self._tokens -= waiter.cost
            waiter.future.set_result(None)
            self._prune()
        if self._waiters:
            delay = max(_MIN_SLEEP_S, (self._waiters[0].cost - self._tokens) / self.refill_per_s)
            self._timer = asyncio.get_running_loop().call_later(delay, self._drain)
