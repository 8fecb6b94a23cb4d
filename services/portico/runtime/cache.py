"""A per-key cache that reloads ahead of expiry, so a request path rarely waits for a reload.

Used for what the order path reads from elsewhere: instrument rules
(reference data), venue credentials and signing keys (Vault). A value is used
for at most `max_age_s` after it was read, as before this cache existed; but
the first request after `refresh_after_s` (two thirds of that by default)
starts one background reload and is answered from the cache. So steady
traffic never waits for a reload, a changed value is picked up within
`max_age_s`, and a value older than that is never used, also while its
source is down: it is then loaded on the caller's path, one load per key
however many callers wait.

A background reload that fails with one of `drop_on` (the thing no longer
exists, say) drops the value, so the next caller sees that error itself; any
other failure keeps the value until its `max_age_s` and tries again after
`retry_s`. `forget`, `clear` and `put` invalidate: a load that was running
then is neither cached nor joined by later callers, who start a load of their
own (after `put`, that load may have read the value the write replaced).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from portico.runtime.lifecycle import cancel_and_wait

__all__ = ["RefreshingCache"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Entry(Generic[V]):
    value: V
    loaded_at: float
    retry_at: float = 0.0  # no background reload before this (after a failed one)


class RefreshingCache(Generic[K, V]):
    """Values by key from `load(key)`, reloaded in the background ahead of `max_age_s`."""

    def __init__(self, load: Callable[[K], Awaitable[V]], *, max_age_s: float, name: str,
                 refresh_after_s: float | None = None, drop_on: tuple[type[BaseException], ...] = (),
                 retry_s: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self._load = load
        self._max_age_s = max_age_s
        self._refresh_after_s = max_age_s * 2 / 3 if refresh_after_s is None else min(refresh_after_s, max_age_s)
        self._name = name
        self._drop_on = drop_on
        self._retry_s = retry_s
        self._clock = clock
        self._entries: dict[K, _Entry[V]] = {}
        self._loading: dict[K, tuple[int, asyncio.Task[V]]] = {}  # key -> (generation it began in, load)
        self._refreshing: dict[K, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[V]] = set()  # every running load, also those invalidated meanwhile
        self._generation = 0

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: K) -> V:
        entry = self._entries.get(key)
        if entry is not None:
            age = self._clock() - entry.loaded_at
            if age < self._refresh_after_s:
                return entry.value
            if age < self._max_age_s:
                self._refresh_in_background(key, entry)
                return entry.value
        return await self._load_once(key)

    def put(self, key: K, value: V) -> None:
        """A value the caller just wrote to the source: its age starts now, and no load begun before replaces it."""
        self._generation += 1
        self._entries[key] = _Entry(value, self._clock())

    def forget(self, key: K) -> None:
        """Drop one value (known to be wrong): the next `get` loads it on its own path."""
        self._generation += 1
        self._entries.pop(key, None)

    def clear(self) -> None:
        self._generation += 1
        self._entries.clear()

    async def aclose(self) -> None:
        """Stop the loads still running (at shutdown)."""
        for task in [*self._tasks, *self._refreshing.values()]:
            if not task.done():  # one that just failed is not ours to raise (its callers have the error)
                await cancel_and_wait(task)

    async def _load_once(self, key: K) -> V:
        """Load `key` once for every concurrent caller, in a task of its own (a caller giving up does not
        cancel it for the others); cached unless invalidated meanwhile."""
        running = self._loading.get(key)
        if running is not None and running[0] == self._generation:
            task = running[1]
        else:  # none, or one begun before an invalidation: its value may be the one just invalidated
            task = asyncio.create_task(self._load_and_keep(key, self._generation), name=f"load-{self._name}")
            task.add_done_callback(_retrieve)  # no "never retrieved" warning when every caller gave up
            task.add_done_callback(self._tasks.discard)
            self._tasks.add(task)
            self._loading[key] = (self._generation, task)
        return await asyncio.shield(task)

    async def _load_and_keep(self, key: K, generation: int) -> V:
        try:
            value = await self._load(key)
            if generation == self._generation:
                self._entries[key] = _Entry(value, self._clock())
            return value
        finally:
            if self._loading.get(key) == (generation, asyncio.current_task()):
                del self._loading[key]

    def _refresh_in_background(self, key: K, entry: _Entry[V]) -> None:
        if key in self._refreshing or key in self._loading or self._clock() < entry.retry_at:
            return
        self._refreshing[key] = asyncio.create_task(self._refresh(key, entry), name=f"refresh-{self._name}")

    async def _refresh(self, key: K, entry: _Entry[V]) -> None:
        try:
            await self._load_once(key)
        except self._drop_on:
            if self._entries.get(key) is entry:
                del self._entries[key]
        except Exception as exc:
            entry.retry_at = self._clock() + self._retry_s
            log.warning("background reload failed; serving the cached value", extra={
                "cache": self._name, "error": type(exc).__name__,
                "expires_in_s": round(entry.loaded_at + self._max_age_s - self._clock(), 1)})
        finally:
            self._refreshing.pop(key, None)


def _retrieve(task: asyncio.Task[V]) -> None:
    if not task.cancelled():
        task.exception()
