"""The venue's credit bucket per API key, priced by `RateLimit` in the shared constants."""

from __future__ import annotations

import time
from collections.abc import Callable

from portico.sim.errors import RpcFailure
from portico.venues.syndr.constants import ErrorCode, RateLimit

__all__ = ["CreditBuckets"]


class CreditBuckets:
    """One token bucket per API key; a call over budget is answered TOO_MANY_REQUESTS."""

    def __init__(self, *, capacity: float = RateLimit.CAPACITY, refill_per_s: float = RateLimit.REFILL_PER_S,
                 clock: Callable[[], float] = time.monotonic):
        self.capacity = capacity
        self.refill_per_s = refill_per_s
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # api key -> (credits, as of)

    def charge(self, api_key: str, method: str) -> None:
        now = self._clock()
        credits, as_of = self._buckets.get(api_key, (self.capacity, now))
        credits = min(self.capacity, credits + (now - as_of) * self.refill_per_s)
        cost = RateLimit.cost(method)
        if credits < cost:
            self._buckets[api_key] = (credits, now)
            raise RpcFailure(ErrorCode.TOO_MANY_REQUESTS, f"{method} costs {cost} credits; {int(credits)} left")
        self._buckets[api_key] = (credits - cost, now)
