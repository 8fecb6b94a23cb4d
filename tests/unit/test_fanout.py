"""runtime/fanout.py on its own: a stream consumer's bounded queue, and `CatchUp` (a feed's catch-up after a
reconnect, retried until it succeeds or the feed's consumers are ended with UNAVAILABLE). The feeds that use
them are tested in test_position_feed.py and test_execution_catch_up.py."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from tests.support.waiting import until

from portico.runtime import fanout
from portico.runtime.errors import ResourceExhausted, Unavailable
from portico.runtime.fanout import CatchUp, StreamConsumer

log = logging.getLogger("tests.fanout")


async def drain(consumer: StreamConsumer) -> tuple[list[Any], Exception | None]:
    received: list[Any] = []
    try:
        async with asyncio.timeout(5):
            async for batch in consumer.batches():
                received.extend(batch)
    except (ResourceExhausted, Unavailable) as exc:
        return received, exc
    return received, None


async def test_a_consumer_cut_off_gets_every_update_up_to_the_cut_without_a_gap() -> None:
    """One update more than fits: the stream delivers 1..N and then RESOURCE_EXHAUSTED (before the fix the end
    marker took the place of update 1, so the last batch started at 2: a gap the consumer could not see)."""
    consumer = StreamConsumer("positions")
    limit = fanout._CONSUMER_QUEUE
    for sequence in range(1, limit + 3):
        consumer.offer(sequence)
    received, error = await drain(consumer)
    assert isinstance(error, ResourceExhausted) and error.reason == "CONSUMER_TOO_SLOW"
    assert received == list(range(1, limit + 1))


async def test_a_consumer_that_keeps_up_is_never_cut_off() -> None:
    consumer = StreamConsumer("orders")
    for round_ in range(3):
        for i in range(fanout._CONSUMER_QUEUE):
            consumer.offer(round_ * fanout._CONSUMER_QUEUE + i)
        assert len(await consumer.batch()) == fanout._CONSUMER_QUEUE
    assert consumer.error is None


async def test_end_delivers_what_is_queued_then_the_error_once() -> None:
    consumer = StreamConsumer("fills")
    consumer.offer(1)
    consumer.offer(2)
    consumer.end(Unavailable("venue unreadable", reason="CATCH_UP_FAILED"))
    consumer.end(ResourceExhausted("ignored: already ended"))
    consumer.offer(3)  # after the end: dropped
    received, error = await drain(consumer)
    assert received == [1, 2]
    assert isinstance(error, Unavailable) and error.reason == "CATCH_UP_FAILED"


class Venue:
    """An `attempt` that fails while `failures` is above zero (one failure used per call)."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0
        self.hold: asyncio.Event | None = None  # set: the next call waits for it

    async def attempt(self) -> None:
        self.calls += 1
        if self.hold is not None:
            hold, self.hold = self.hold, None
            await hold.wait()
        if self.failures:
            self.failures -= 1
            raise OSError("503")


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fanout, "_CATCH_UP_RETRY_S", 0.01, raising=False)
    monkeypatch.setattr(fanout, "_CATCH_UP_RETRY_MAX_S", 0.04, raising=False)
    monkeypatch.setattr(fanout, "_CATCH_UP_GIVE_UP_S", 1.0, raising=False)


async def test_a_failed_catch_up_is_retried_in_the_background_until_it_succeeds(quick: None) -> None:
    venue = Venue(failures=3)
    consumer = StreamConsumer("positions")
    catch_up = CatchUp(venue.attempt, lambda: [consumer], logger=log)
    await catch_up.run()  # the first attempt fails; run() returns at once, the retries go on
    assert venue.calls == 1 and catch_up.retrying
    await until(lambda: not catch_up.retrying, 5)
    assert venue.calls == 4
    assert consumer.error is None


async def test_a_request_while_retrying_is_served_by_another_attempt_after_the_one_in_flight(quick: None) -> None:
    venue = Venue(failures=1)
    catch_up = CatchUp(venue.attempt, list, logger=log)
    await catch_up.run()
    venue.hold = hold = asyncio.Event()
    await until(lambda: venue.calls == 2)  # the retry is reading
    await catch_up.run()  # another reconnect meanwhile: not run beside it, but after it
    assert venue.calls == 2
    hold.set()
    await until(lambda: not catch_up.retrying)
    assert venue.calls == 3


async def test_when_the_venue_stays_unreadable_the_consumers_end_with_unavailable(quick: None) -> None:
    venue = Venue(failures=1_000)
    consumers = [StreamConsumer("orders"), StreamConsumer("fills")]
    consumers[0].offer("queued before")
    catch_up = CatchUp(venue.attempt, lambda: consumers, logger=log)
    await catch_up.run()
    await until(lambda: not catch_up.retrying, 5)
    assert 3 <= venue.calls < 100  # growing pauses, then given up
    received, error = await drain(consumers[0])
    assert received == ["queued before"]
    assert isinstance(error, Unavailable) and error.reason == "CATCH_UP_FAILED"
    assert isinstance(consumers[1].error, Unavailable)


async def test_closing_cancels_the_retries(quick: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fanout, "_CATCH_UP_RETRY_S", 30.0, raising=False)
    venue = Venue(failures=1)
    catch_up = CatchUp(venue.attempt, list, logger=log)
    await catch_up.run()
    assert catch_up.retrying
    async with asyncio.timeout(1):
        await catch_up.aclose()
    retrying: bool = catch_up.retrying  # read again: mypy keeps the narrowing from before aclose()
    assert not retrying and venue.calls == 1


async def test_updates_queued_while_a_batch_is_being_sent_are_delivered_before_the_error() -> None:
    """The stream is suspended in its `yield` while gRPC sends a batch; updates offered meanwhile and then the
    end must both reach the consumer, in that order (they used to be dropped: the error was raised at once)."""
    consumer = StreamConsumer("fills")
    stream = consumer.batches()
    consumer.offer(1)
    assert await anext(stream) == [1]  # being sent
    consumer.offer(2)
    consumer.offer(3)
    consumer.end(Unavailable("venue unreadable", reason="CATCH_UP_FAILED"))
    assert await anext(stream) == [2, 3]
    with pytest.raises(Unavailable):
        await anext(stream)
