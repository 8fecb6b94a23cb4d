"""What the services that fan venue updates out to gRPC streams share: a consumer's bounded queue, and the
catch-up a feed runs after its WebSocket reconnected (or overflowed).

A consumer that falls `max_pending` updates behind is cut off (its stream ends
with RESOURCE_EXHAUSTED) rather than silently skipped or allowed to grow the
server's memory: updates carry sequences, and a consumer must never believe it
has them all when it does not. For the same reason a feed whose catch-up read
keeps failing does not go on as if nothing was missed: it retries with growing
pauses (live updates keep flowing meanwhile) and, if the venue still cannot be
read, ends its consumers with UNAVAILABLE so they re-read the state.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from portico.runtime.errors import PorticoError, ResourceExhausted, Unavailable
from portico.runtime.lifecycle import cancel_and_wait

__all__ = ["CatchUp", "ConsumerFeed", "RecentKeys", "StreamConsumer"]

_CONSUMER_QUEUE: Final = 10_000
# A catch-up that failed is tried again after this, the pause doubling up to the maximum; once the next pause
# would end later than _CATCH_UP_GIVE_UP_S after the first failure, the feed's consumers are ended instead.
_CATCH_UP_RETRY_S: Final = 0.5
_CATCH_UP_RETRY_MAX_S: Final = 8.0
_CATCH_UP_GIVE_UP_S: Final = 60.0


class RecentKeys:
    """A bounded memory of what a stream already emitted (oldest forgotten first): live updates and a
    catch-up read after a reconnect overlap, and each must go out once."""

    def __init__(self, limit: int):
        self._keys: OrderedDict[Hashable, None] = OrderedDict()
        self._limit = limit

    def add(self, key: Hashable) -> bool:
        """True if `key` is new."""
        if key in self._keys:
            return False
        self._keys[key] = None
        if len(self._keys) > self._limit:
            self._keys.popitem(last=False)
        return True

    def __contains__(self, key: Hashable) -> bool:
        return key in self._keys


@dataclass(eq=False)
class StreamConsumer:
    """One gRPC stream's queue of messages; `error` set means it was cut off.

    The queue holds `_CONSUMER_QUEUE` updates plus one slot kept for the end
    marker, so cutting a consumer off never drops an update it was going to
    get: what it receives before the error still chains.
    """

    kind: str  # what it streams, e.g. "orders" or "fills"
    queue: asyncio.Queue[Any] = field(default_factory=lambda: asyncio.Queue(_CONSUMER_QUEUE + 1))
    error: Exception | None = None

    def offer(self, update: Any) -> None:
        if self.error is not None:
            return
        if 0 < self.queue.maxsize <= self.queue.qsize() + 1:  # only the end marker's slot is left
            self.end(ResourceExhausted("stream consumer fell too far behind; reconnect and re-read the state",
                                       reason="CONSUMER_TOO_SLOW"))
            return
        self.queue.put_nowait(update)

    def end(self, error: Exception) -> None:
        """Cut the stream off: it delivers what is queued, then raises `error` (once ended, this does nothing)."""
        if self.error is not None:
            return
        self.error = error
        if not self.queue.full():  # always true with the spare slot; a full queue wakes the stream anyway
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
            # Updates offered while that batch was being sent still go out before the error.
            if self.error is not None and self.queue.empty():
                raise self.error


class ConsumerFeed:
    """A feed's consumers, and how they end together once the venue will not feed it any more.

    When the venue refuses the feed's channel after a reconnect, every stream of it ends with that error, a
    stream that comes for the feed as it ends gets the error at once, and `on_end` drops the feed so the next
    stream starts a new one.
    """

    def __init__(self, on_end: Callable[[Any], None] | None, *, logger: logging.Logger, what: str,
                 extra: Mapping[str, Any]):
        self._on_end = on_end
        self._end_logger, self._end_what, self._end_extra = logger, what, dict(extra)
        self.ended: PorticoError | None = None  # set once the venue refused the channel: the feed is dead
        self._consumers: set[StreamConsumer] = set()

    def add(self, consumer: StreamConsumer) -> None:
        if self.ended is not None:  # came for the feed as it ended
            consumer.end(self.ended)
        self._consumers.add(consumer)

    def remove(self, consumer: StreamConsumer) -> None:
        self._consumers.discard(consumer)

    def _end(self, error: PorticoError) -> None:
        """The feed's streams end with `error`; `on_end` drops the feed."""
        self._end_logger.error("the venue refused %s after a reconnect: its streams end", self._end_what,
                               extra={**self._end_extra, "error": error.message})
        self.ended = error
        for consumer in list(self._consumers):
            consumer.end(error)
        if self._on_end is not None:
            self._on_end(self)


class CatchUp:
    """A feed's catch-up (`attempt`: read the venue, emit what the stream missed), tried until it succeeds.

    The feed calls `run()` from its event loop on every reconnect or overflow.
    The first attempt runs there and then; if it fails, the attempts go on in
    a background task with growing pauses while the feed keeps handling live
    updates, so `attempt` must cope with live updates handled while it reads
    (never emit a state older than one already emitted). A `run()` while
    attempts go on is folded into them: after the attempt that succeeds,
    another follows if one was asked for since that attempt started. If the
    venue still cannot be read after `_CATCH_UP_GIVE_UP_S`, the feed's
    consumers (`consumers()`) are ended with UNAVAILABLE: what they hold may
    lack a change, so they re-read the state and stream again.
    """

    def __init__(self, attempt: Callable[[], Awaitable[None]], consumers: Callable[[], Iterable[StreamConsumer]],
                 *, logger: logging.Logger, extra: Mapping[str, Any] | None = None, name: str = "catch-up"):
        self._name = name
        self._attempt = attempt
        self._consumers = consumers
        self._log = logger
        self._extra = dict(extra or {})
        self._task: asyncio.Task[None] | None = None
        self._again = False

    @property
    def retrying(self) -> bool:
        """A catch-up failed and its retries are under way."""
        return self._task is not None and not self._task.done()

    async def run(self) -> None:
        """Catch up now; if that fails, keep trying in the background (returns without waiting for it)."""
        if self.retrying:
            self._again = True  # the retries read again after the attempt in flight (or their next one covers it)
            return
        try:
            await self._attempt()
        except Exception as exc:
            self._log.warning("catch-up failed; retrying in the background",
                              extra={**self._extra, "error": type(exc).__name__})
            self._task = asyncio.create_task(self._retries(), name=self._name)

    async def _retries(self) -> None:
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + _CATCH_UP_GIVE_UP_S
        pause, next_pause = _CATCH_UP_RETRY_S, min(_CATCH_UP_RETRY_S * 2, _CATCH_UP_RETRY_MAX_S)
        failures = 1
        while True:
            await asyncio.sleep(pause)
            self._again = False
            try:
                await self._attempt()
            except Exception as exc:
                failures += 1
                pause, next_pause = next_pause, min(next_pause * 2, _CATCH_UP_RETRY_MAX_S)
                if loop.time() + pause > give_up_at:
                    self._give_up(failures, exc)
                    return
                self._log.warning("catch-up failed again; retrying in %.1f s", pause,
                                  extra={**self._extra, "error": type(exc).__name__})
                continue
            if not self._again:
                self._log.info("caught up after %d failed attempt(s)", failures, extra=self._extra)
                return
            # Asked again while this attempt ran (another reconnect or overflow): the next attempt at once,
            # with a fresh allowance.
            give_up_at = loop.time() + _CATCH_UP_GIVE_UP_S
            pause, next_pause, failures = 0.0, _CATCH_UP_RETRY_S, 0

    def _give_up(self, failures: int, error: Exception) -> None:
        consumers = list(self._consumers())
        self._log.error("catch-up failed %d times; ending %d stream(s) with UNAVAILABLE", failures, len(consumers),
                        extra={**self._extra, "error": type(error).__name__})
        for consumer in consumers:
            consumer.end(Unavailable("the venue could not be read after the stream's connection to it was "
                                     "interrupted, so updates may be missing; re-read the state and stream again",
                                     reason="CATCH_UP_FAILED"))

    async def aclose(self) -> None:
        await cancel_and_wait(self._task)
