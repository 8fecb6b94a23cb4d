"""Stopping background loops: a cancellation is never lost, whatever else wakes the loop at that moment."""

from __future__ import annotations

import asyncio

from portico.runtime.lifecycle import cancel_and_wait, wait_event


async def test_wait_event_says_whether_the_event_was_set() -> None:
    event = asyncio.Event()
    assert await wait_event(event, 0.01) is False
    event.set()
    assert await wait_event(event, 10) is True


async def test_a_loop_cancelled_as_its_event_is_set_still_stops() -> None:
    """The execution reconciler's shutdown hang: asyncio.wait_for on 3.11 swallowed this cancellation."""
    event = asyncio.Event()
    passes = 0

    async def loop() -> None:
        nonlocal passes
        while True:
            event.clear()
            passes += 1
            await wait_event(event, 10)

    task = asyncio.create_task(loop())
    await asyncio.sleep(0)
    assert passes == 1
    event.set()  # wakes the wait ...
    task.cancel()  # ... in the same loop iteration as the cancel
    stopper = asyncio.create_task(cancel_and_wait(task))
    finished, _ = await asyncio.wait({stopper}, timeout=5)
    if not finished:  # the bug: clean up before failing
        task.cancel()
        await asyncio.wait({stopper})
    assert finished == {stopper} and passes == 1
    assert task.cancelled()


async def test_cancel_and_wait_passes_on_its_callers_own_cancellation() -> None:
    async def stubborn() -> None:
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                await asyncio.sleep(0.05)  # takes its time to wind down
                raise

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    stopper = asyncio.create_task(cancel_and_wait(task))
    await asyncio.sleep(0.01)
    stopper.cancel()
    await asyncio.wait({stopper})
    assert stopper.cancelled()  # the caller's cancellation is not swallowed


async def test_a_clean_up_in_a_cancelled_task_runs_every_step() -> None:
    """A task cancelled mid-start closes what it started, step by step, in its `except BaseException`. Before the
    fix the first `cancel_and_wait` there re-raised (the caller was "being cancelled"), so the steps after it never
    ran: an execution feed whose start was cancelled at shutdown left its WebSocket reconnecting for ever."""
    children = [asyncio.create_task(asyncio.sleep(10)) for _ in range(3)]
    closed: list[int] = []

    async def starting() -> None:
        try:
            await asyncio.sleep(10)
        except BaseException:
            for i, child in enumerate(children):
                await cancel_and_wait(child)
                closed.append(i)
            raise

    task = asyncio.create_task(starting())
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.wait({task})
    assert task.cancelled()  # its own cancellation still ends it
    assert closed == [0, 1, 2] and all(child.cancelled() for child in children)


async def test_a_clean_up_cancelled_again_passes_that_on() -> None:
    """The caller is already being cancelled and is cancelled once more while it waits: that one is passed on."""
    release = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            await release.wait()  # winds down only when told
            raise

    child = asyncio.create_task(stubborn())
    after: list[str] = []

    async def cleaning() -> None:
        try:
            await asyncio.sleep(10)
        except BaseException:
            await cancel_and_wait(child)
            after.append("went on")
            raise

    await asyncio.sleep(0)
    task = asyncio.create_task(cleaning())
    await asyncio.sleep(0)
    task.cancel()  # into its clean-up, waiting for the stubborn child
    await asyncio.sleep(0.01)
    task.cancel()  # again, while it waits
    await asyncio.wait({task})
    assert task.cancelled() and after == []
    release.set()
    await asyncio.wait({child})
