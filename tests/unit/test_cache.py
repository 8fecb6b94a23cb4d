"""RefreshingCache: reloads ahead of expiry without making callers wait, never serves past max age."""

from __future__ import annotations

import asyncio

import pytest

from portico.runtime.cache import RefreshingCache


class Gone(Exception):
    pass


class Down(Exception):
    pass


class Source:
    """A loader whose answers the test controls: values, failures, and when a load may finish."""

    def __init__(self) -> None:
        self.version = 0
        self.loads = 0
        self.fail: Exception | None = None
        self.gate: asyncio.Event | None = None  # set: loads finish; None: they finish at once

    async def load(self, key: str) -> str:
        self.loads += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        self.version += 1
        return f"{key}-v{self.version}"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(source: Source, clock: Clock, **kwargs: float) -> RefreshingCache[str, str]:
    return RefreshingCache(source.load, max_age_s=30, refresh_after_s=20, name="test", drop_on=(Gone,),
                           clock=clock, **kwargs)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_young_value_is_served_without_loading_again() -> None:
    source, clock = Source(), Clock()
    cache = make(source, clock)
    assert await cache.get("a") == "a-v1"
    clock.now += 19
    assert await cache.get("a") == "a-v1"
    assert source.loads == 1


async def test_an_ageing_value_is_served_at_once_and_reloaded_in_the_background() -> None:
    source, clock = Source(), Clock()
    cache = make(source, clock)
    await cache.get("a")
    source.gate = asyncio.Event()  # the reload cannot finish yet
    clock.now += 21
    assert await asyncio.wait_for(cache.get("a"), 1) == "a-v1"  # answered without waiting for the source
    assert await cache.get("a") == "a-v1"
    await settle()
    assert source.loads == 2  # one background reload, however many callers
    source.gate.set()
    await settle()
    assert await cache.get("a") == "a-v2"
    clock.now += 19
    assert await cache.get("a") == "a-v2"  # its age restarted at the reload
    assert source.loads == 2
    await cache.aclose()


async def test_a_value_past_its_max_age_is_never_served() -> None:
    source, clock = Source(), Clock()
    cache = make(source, clock)
    await cache.get("a")
    clock.now += 31
    assert await cache.get("a") == "a-v2"
    source.fail = Down()
    clock.now += 31
    with pytest.raises(Down):
        await cache.get("a")


async def test_concurrent_callers_share_one_load() -> None:
    source, clock = Source(), Clock()
    source.gate = asyncio.Event()
    cache = make(source, clock)
    waiting = [asyncio.ensure_future(cache.get("a")) for _ in range(10)]
    await settle()
    source.gate.set()
    assert await asyncio.gather(*waiting) == ["a-v1"] * 10
    assert source.loads == 1


async def test_a_failed_background_reload_keeps_the_value_and_waits_before_retrying() -> None:
    source, clock = Source(), Clock()
    cache = make(source, clock, retry_s=2)
    await cache.get("a")
    source.fail = Down()
    clock.now += 21
    assert await cache.get("a") == "a-v1"
    await settle()
    assert source.loads == 2
    clock.now += 1
    assert await cache.get("a") == "a-v1"
    await settle()
    assert source.loads == 2  # within retry_s: no new attempt
    clock.now += 1.5
    source.fail = None
    assert await cache.get("a") == "a-v1"
    await settle()
    assert source.loads == 3
    assert await cache.get("a") == "a-v2"


async def test_a_background_reload_that_finds_the_thing_gone_drops_it() -> None:
    source, clock = Source(), Clock()
    cache = make(source, clock)
    await cache.get("a")
    source.fail = Gone()
    clock.now += 21
    assert await cache.get("a") == "a-v1"
    await settle()
    with pytest.raises(Gone):  # the next caller learns it at once, not at max age
        await cache.get("a")


async def test_a_load_running_when_the_key_is_forgotten_is_not_cached() -> None:
    source, clock = Source(), Clock()
    source.gate = asyncio.Event()
    cache = make(source, clock)
    first = asyncio.ensure_future(cache.get("a"))
    await settle()
    cache.forget("a")
    source.gate.set()
    assert await first == "a-v1"  # the caller that asked still gets an answer
    source.gate = None
    assert await cache.get("a") == "a-v2"  # but it was not kept


async def test_a_caller_after_an_invalidation_does_not_join_the_load_begun_before_it() -> None:
    """That load may return the very value just invalidated (a tick size reference data has since changed)."""
    source, clock = Source(), Clock()
    source.gate = asyncio.Event()
    cache = make(source, clock)
    before = asyncio.ensure_future(cache.get("a"))
    await settle()
    cache.clear()
    after = asyncio.ensure_future(cache.get("a"))
    also_after = asyncio.ensure_future(cache.get("a"))
    await settle()
    assert source.loads == 2  # one load of its own for the later callers, shared between them
    source.gate.set()
    assert {await before, await after} == {"a-v1", "a-v2"}
    assert await after == await also_after
    assert await cache.get("a") == await after  # the later load is the one kept
    assert source.loads == 2


async def test_aclose_also_stops_a_load_that_was_invalidated() -> None:
    source, clock = Source(), Clock()
    source.gate = asyncio.Event()
    cache = make(source, clock)
    stale = asyncio.ensure_future(cache.get("a"))
    await settle()
    cache.forget("a")
    fresh = asyncio.ensure_future(cache.get("a"))  # a load of its own: the stale one is no longer joined
    await settle()
    await cache.aclose()  # returns although neither load can ever finish
    for caller in (stale, fresh):
        with pytest.raises(asyncio.CancelledError):
            await caller


async def test_a_caller_giving_up_does_not_cancel_the_load_for_the_others() -> None:
    source, clock = Source(), Clock()
    source.gate = asyncio.Event()
    cache = make(source, clock)
    impatient = asyncio.ensure_future(cache.get("a"))
    patient = asyncio.ensure_future(cache.get("a"))
    await settle()
    impatient.cancel()
    await settle()
    source.gate.set()
    assert await patient == "a-v1"
    assert impatient.cancelled()
    assert source.loads == 1


async def test_put_starts_a_values_age_and_aclose_stops_running_loads() -> None:
    source, clock = Source(), Clock()
    cache = make(source, clock)
    cache.put("a", "written")
    clock.now += 19
    assert await cache.get("a") == "written"
    assert source.loads == 0
    source.gate = asyncio.Event()
    clock.now += 2
    await cache.get("a")
    await settle()
    assert source.loads == 1
    await cache.aclose()  # returns although the reload can never finish
    assert len(cache) == 1


async def test_a_reload_running_when_a_value_is_put_does_not_overwrite_it() -> None:
    """The reload read the source before the write: keeping its answer would bring back the old value."""
    source, clock = Source(), Clock()
    cache = make(source, clock)
    await cache.get("a")
    source.gate = asyncio.Event()
    clock.now += 21
    assert await cache.get("a") == "a-v1"  # starts a background reload, which reads the old value
    await settle()
    cache.put("a", "written")  # meanwhile the caller wrote a new value to the source
    source.gate.set()
    await settle()
    assert await cache.get("a") == "written"
    await cache.aclose()


@pytest.mark.parametrize("steps", range(4))
async def test_aclose_does_not_raise_the_error_of_a_load_that_just_failed(steps: int) -> None:
    """Shutdown must go on (closing what comes after the cache), whenever a failed load's callbacks run."""
    source, clock = Source(), Clock()
    source.gate, source.fail = asyncio.Event(), Down()
    cache = make(source, clock)
    caller = asyncio.ensure_future(cache.get("a"))
    await settle()
    source.gate.set()
    for _ in range(steps):  # one of these lands between the load failing and its done-callbacks
        await asyncio.sleep(0)
    await cache.aclose()
    with pytest.raises((Down, asyncio.CancelledError)):
        await caller
