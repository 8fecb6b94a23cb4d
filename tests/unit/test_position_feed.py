"""The account service's position feed (account/positions.py) on its own: its catch-up after a reconnect when
the venue's read fails, the order of what it emits while live updates and a catch-up interleave, and starting
feeds of different accounts. The venue is a stand-in; tests/integration/test_account_positions_recovery.py runs
the same against the simulator."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from tests.support.subscriptions import QueuedSubscription as Subscription
from tests.support.waiting import until

from portico.account import positions
from portico.account.positions import PositionFeed, PositionFeeds
from portico.account.v1 import account_service_pb2 as pb
from portico.runtime import fanout
from portico.runtime.errors import Unavailable
from portico.runtime.fanout import StreamConsumer
from portico.venues.syndr.errors import SyndrConnectionError, SyndrHttpError, to_portico_error
from portico.venues.syndr.ws import Message, Reconnected

ACCOUNT = "0x52908400098527886E0F7030069857D2E4169EE7"
OTHER = "0x8ba1f109551bD432803012645Ac136ddd64DBA72"


def position(size: str, at_ms: int, instrument: str = "ETH-PERP") -> dict[str, Any]:
    return {"instrument_name": instrument, "direction": "buy", "size": size, "average_price": "2380",
            "realized_pnl": "0", "unrealized_pnl": "0", "last_update_timestamp": at_ms}


def notification(p: dict[str, Any]) -> Message:
    return Message("user.positions", {"instrument_name": p["instrument_name"], "updated_position": p}, b"", 0)


class Accounts:
    """`private/get_positions` of the venue: answers `positions`, fails while `failures` is above zero (HTTP 503);
    read number `hold_read` takes the venue's positions, then waits for `hold` before answering (the live updates
    handled meanwhile are the test's)."""

    def __init__(self, positions_now: list[dict[str, Any]], failures: int = 0):
        self.positions = positions_now
        self.failures = failures
        self.reads = 0
        self.hold = asyncio.Event()
        self.hold_read = 0

    async def call(self, account: str, method: str, params: Any = None, **kwargs: Any) -> Any:
        assert method == "private/get_positions"
        self.reads += 1
        answer = list(self.positions)  # what the venue has when the read reaches it
        if self.reads == self.hold_read:
            await self.hold.wait()
        if self.failures:
            self.failures -= 1
            raise SyndrHttpError(503, "service unavailable")
        return SimpleNamespace(result=answer)


def sizes(consumer: StreamConsumer) -> list[tuple[int, str]]:
    out = []
    while not consumer.queue.empty():
        update: pb.PositionUpdate = consumer.queue.get_nowait()
        out.append((update.sequence, update.position.size))
    return out


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fanout, "_CATCH_UP_RETRY_S", 0.02, raising=False)
    monkeypatch.setattr(fanout, "_CATCH_UP_RETRY_MAX_S", 0.05, raising=False)
    monkeypatch.setattr(fanout, "_CATCH_UP_GIVE_UP_S", 1.0, raising=False)


@pytest.fixture
async def feed() -> AsyncIterator[tuple[PositionFeed, Accounts, Subscription, StreamConsumer]]:
    accounts = Accounts([position("0.7", 1_000)])
    ws = SimpleNamespace(aclose=lambda: asyncio.sleep(0))
    f = PositionFeed("syndr", ACCOUNT, ws, accounts)  # type: ignore[arg-type]
    await f.catch_up(quietly=True)  # the starting point: 0.7
    subscription = Subscription()
    f._task = asyncio.create_task(f._run(subscription))
    consumer = StreamConsumer("positions")
    f.add(consumer)
    try:
        yield f, accounts, subscription, consumer
    finally:
        await f.aclose()


async def test_a_change_missed_while_cut_is_emitted_even_if_the_first_read_fails(
        quick: None, feed: tuple[PositionFeed, Accounts, Subscription, StreamConsumer]) -> None:
    """Reconnected; the venue now has 1.2 but answers the first read with a 503. Before the fix the failure was
    logged and the 1.2 never came (until some later change of the same instrument)."""
    _, accounts, subscription, consumer = feed
    accounts.positions, accounts.failures = [position("1.2", 2_000)], 1
    subscription.events.put_nowait(Reconnected(1))
    await until(lambda: not consumer.queue.empty(), 5)
    assert sizes(consumer) == [(1, "1.2")]
    assert accounts.reads == 3  # the starting point, the failed read, the retry


async def test_live_updates_flow_while_the_catch_up_is_retried_and_it_emits_nothing_older_after_them(
        quick: None, feed: tuple[PositionFeed, Accounts, Subscription, StreamConsumer]) -> None:
    """While cut, ETH-PERP (0.7) was closed and BTC-PERP opened. The first read fails; the retry's read finds ETH
    flat, and while its answer is on the way ETH is opened again and then grows, notified live. Those live updates
    are not held up by the retry, and its answer must not follow them with the flat ETH it read earlier (no
    timestamp to tell): the consumer's last word on ETH is 0.5; BTC (not touched live) comes from the catch-up."""
    f, accounts, subscription, consumer = feed
    accounts.positions = [position("0.01", 2_000, "BTC-PERP")]
    accounts.failures, accounts.hold_read = 1, 3  # read 1 was the starting point, 2 fails, 3 is the retry
    subscription.events.put_nowait(Reconnected(1))
    await until(lambda: accounts.reads == 3)  # the retry has read the venue; its answer is held
    subscription.events.put_nowait(notification(position("0.3", 5_000)))
    subscription.events.put_nowait(notification(position("0.5", 6_000)))
    await until(lambda: consumer.queue.qsize() == 2)
    accounts.hold.set()
    await until(lambda: not f._catch_up.retrying)
    assert sizes(consumer) == [(1, "0.3"), (2, "0.5"), (3, "0.01")]


async def test_a_notification_older_than_what_the_catch_up_emitted_is_not_emitted(
        feed: tuple[PositionFeed, Accounts, Subscription, StreamConsumer]) -> None:
    """The catch-up read 1.2 (t=2000); the notification of 1.0 (t=1500, queued while it read) comes after it."""
    f, accounts, subscription, consumer = feed
    accounts.positions = [position("1.2", 2_000)]
    for event in (Reconnected(1), notification(position("1.0", 1_500)), notification(position("1.2", 2_000)),
                  notification(position("1.3", 2_500))):
        subscription.events.put_nowait(event)
    await until(lambda: f._last.get("ETH-PERP", (None, None))[1] == Decimal("1.3"))  # all four handled
    assert sizes(consumer) == [(1, "1.2"), (2, "1.3")]


async def test_when_the_venue_stays_unreadable_the_stream_ends_with_unavailable(
        quick: None, feed: tuple[PositionFeed, Accounts, Subscription, StreamConsumer]) -> None:
    f, accounts, subscription, consumer = feed
    accounts.positions, accounts.failures = [position("1.2", 2_000)], 1_000
    subscription.events.put_nowait(Reconnected(1))
    with pytest.raises(Unavailable) as raised:
        async with asyncio.timeout(5):
            async for _ in consumer.batches():
                pass
    assert raised.value.reason == "CATCH_UP_FAILED"
    assert not f._catch_up.retrying


class HangingWebSocket:
    """SyndrWebSocket whose start never returns for the accounts in `unreachable` (the venue does not answer)."""

    unreachable: set[str] = set()
    closed: list[str] = []

    def __init__(self, url: str, *, credentials: Any, **kwargs: Any):
        self.account = credentials

    async def start(self) -> None:
        if self.account in self.unreachable:
            await asyncio.Event().wait()

    async def subscribe(self, channels: list[str]) -> Subscription:
        return Subscription()

    async def aclose(self) -> None:
        self.closed.append(self.account)


class SessionAccounts(Accounts):
    async def session(self, account: str) -> Any:
        return SimpleNamespace(record=SimpleNamespace(credentials=account))

    def budget(self, record: Any) -> None:
        return None


async def test_an_unreachable_venue_fails_the_start_with_unavailable_and_blocks_no_other_account(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Before the fix the first stream of an account whose WebSocket cannot connect waited for ever, holding the
    one lock every other account's first stream needed."""
    monkeypatch.setattr(positions, "SyndrWebSocket", HangingWebSocket)
    monkeypatch.setattr(HangingWebSocket, "unreachable", {ACCOUNT})
    monkeypatch.setattr(HangingWebSocket, "closed", [])
    monkeypatch.setattr(positions, "_START_TIMEOUT_S", 1.0, raising=False)
    feeds = PositionFeeds("ws://venue.invalid", SessionAccounts([]))  # type: ignore[arg-type]
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        stuck = asyncio.create_task(feeds.get("syndr", ACCOUNT))
        await asyncio.sleep(0.05)
        async with asyncio.timeout(0.5):  # not behind the stuck start
            other = await feeds.get("syndr", OTHER)
        assert other.account == OTHER
        with pytest.raises(SyndrConnectionError) as raised:
            async with asyncio.timeout(3):
                await stuck
        assert 0.9 < loop.time() - started < 2
        assert to_portico_error(raised.value).code.name == "UNAVAILABLE"
        assert HangingWebSocket.closed == [ACCOUNT]  # the failed start leaves nothing behind
        assert await feeds.get("syndr", OTHER) is other
    finally:
        await feeds.aclose()


async def test_streams_of_one_account_starting_together_share_one_feed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(positions, "SyndrWebSocket", HangingWebSocket)
    monkeypatch.setattr(HangingWebSocket, "unreachable", set())
    accounts = SessionAccounts([position("0.7", 1_000)])
    feeds = PositionFeeds("ws://venue.invalid", accounts)  # type: ignore[arg-type]
    try:
        first, second = await asyncio.gather(feeds.get("syndr", ACCOUNT), feeds.get("syndr", ACCOUNT.lower()))
        assert first is second and accounts.reads == 1
        assert first._last["ETH-PERP"][1] == Decimal("0.7")
    finally:
        await feeds.aclose()
