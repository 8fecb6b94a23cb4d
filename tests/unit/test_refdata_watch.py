"""follow_instruments: the cancellation that stops a service always stops its reference-data watch.

The stream here is a stand-in for a grpc.aio call whose initial metadata the
test releases, so the race can be set up exactly: a cancellation arriving in the
same loop step as the metadata. (With the real services the same race hung a
test's teardown now and then: tests/integration/test_execution.py.)
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from portico.refdata.watch import follow_instruments


class HeldCall:
    """A watch call whose initial metadata arrives when the test says; it then streams nothing, forever."""

    def __init__(self, metadata_arrives: asyncio.Event):
        self._arrives = metadata_arrives
        self.cancelled = False

    async def initial_metadata(self) -> tuple[()]:
        await self._arrives.wait()
        return ()

    def done(self) -> bool:
        return False

    def cancel(self) -> bool:
        self.cancelled = True
        return True

    def __aiter__(self) -> HeldCall:
        return self

    async def __anext__(self) -> Any:
        await asyncio.Event().wait()


class Stub:
    def __init__(self, metadata_arrives: asyncio.Event):
        self.calls: list[HeldCall] = []
        self._arrives = metadata_arrives

    def WatchInstruments(self, request: Any, metadata: Any) -> HeldCall:
        self.calls.append(HeldCall(self._arrives))
        return self.calls[-1]


@pytest.mark.parametrize("settle_steps", [0, 1, 2, 3])
async def test_a_cancellation_arriving_with_the_metadata_ends_the_watch(settle_steps: int) -> None:
    arrives = asyncio.Event()
    stub = Stub(arrives)
    established: list[int] = []

    async def on_established() -> None:
        established.append(1)

    watch = asyncio.create_task(follow_instruments(stub, (), "syndr", watcher="test",  # type: ignore[arg-type]
                                                   on_established=on_established, on_event=lambda event: None))
    for _ in range(3):
        await asyncio.sleep(0)
    arrives.set()
    for _ in range(settle_steps):
        await asyncio.sleep(0)
    watch.cancel()
    done, _ = await asyncio.wait([watch], timeout=2)
    assert watch in done and watch.cancelled(), "the watch outlived its cancellation"
    assert stub.calls[-1].cancelled
