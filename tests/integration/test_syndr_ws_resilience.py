"""The Syndr WebSocket client against the simulator: no subscription left behind upstream or dropped by a
reconnect, a channel the venue refuses after a reconnect ends the subscriptions that need it (and only those),
and reconnect pacing.

Each test drives the real client against the real simulator on loopback, making it misbehave with its fault
knobs (frames delayed, calls failed, every connection dropped) or by not running it at all for a while.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from tests.support.ports import free_port
from tests.support.waiting import until

from portico.sim.server import SimConfig, Simulator
from portico.venues.syndr import ws as ws_module
from portico.venues.syndr.constants import ErrorCode
from portico.venues.syndr.errors import SyndrNotFound, SyndrTimeout
from portico.venues.syndr.http import backoff_s
from portico.venues.syndr.ws import (
    ChannelRefused,
    Disconnected,
    Message,
    Reconnected,
    Subscription,
    SyndrWebSocket,
    WsEvent,
)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimConfig(port=0, market_maker=False)) as simulator:
        yield simulator


@pytest.fixture
async def busy_sim() -> AsyncIterator[Simulator]:
    """A simulator whose market maker keeps the books of ETH-PERP and BTC-PERP moving."""
    async with Simulator(SimConfig(port=0, seed=5, book_changes_per_second=100,
                                   market_maker_instruments=("ETH-PERP", "BTC-PERP"))) as simulator:
        yield simulator


def client(url: str, **overrides: Any) -> SyndrWebSocket:
    options: dict[str, Any] = {"heartbeat_s": 0.5, "silence_timeout_s": 3.0, "reconnect_initial_s": 0.05,
                               "reconnect_max_s": 0.2, "call_timeout_s": 2.0, "compress": False}
    options.update(overrides)
    return SyndrWebSocket(url, **options)


def subscribe_requests(sim: Simulator) -> int:
    return sum(1 for r in sim.requests if r.method == "public/subscribe")


async def next_event(sub: Subscription, within_s: float = 5.0) -> WsEvent:
    return await asyncio.wait_for(anext(sub), within_s)


@pytest.mark.parametrize("outcome", ["cancelled", "timed out"])
async def test_a_subscribe_that_fails_after_the_venue_acted_on_it_is_undone_upstream(sim: Simulator,
                                                                                     outcome: str) -> None:
    """A gRPC client that goes away while its subscribe is on the wire (or an answer that comes too late):
    the venue has subscribed the channel, so the client must unsubscribe it, or the venue streams it for ever
    to nobody."""
    async with client(sim.ws_url, call_timeout_s=0.3 if outcome == "timed out" else 2.0) as ws:
        sim.faults.update({"delay_ms": 600})  # every answer is late; the venue acts on the request at once
        attempt = asyncio.create_task(ws.subscribe(["ticker.ETH-PERP"]))
        await until(lambda: sim.has_subscribers("ticker.ETH-PERP"), 5)
        if outcome == "cancelled":
            attempt.cancel()
            with pytest.raises(asyncio.CancelledError):
                await attempt
        else:
            with pytest.raises(SyndrTimeout):
                await attempt
        sim.faults.update({"delay_ms": 0})
        await until(lambda: not sim.has_subscribers("ticker.ETH-PERP"), 5)
        # The channel can be subscribed again, and is undone once more when that subscription closes.
        again = await ws.subscribe(["ticker.ETH-PERP"])
        assert sim.has_subscribers("ticker.ETH-PERP")
        await again.close()
        await until(lambda: not sim.has_subscribers("ticker.ETH-PERP"), 5)


async def test_a_subscription_closed_while_the_reconnect_resubscribes_is_not_left_subscribed(sim: Simulator) -> None:
    async with client(sim.ws_url) as ws:
        keep = await ws.subscribe(["ticker.BTC-PERP"])
        leave = await ws.subscribe(["ticker.ETH-PERP"])
        sim.faults.update({"delay_ms": 400})  # the resync's subscribe is answered late
        before = subscribe_requests(sim)
        await sim.close_websockets()
        await until(lambda: subscribe_requests(sim) == before + 1, 5)  # the venue has re-subscribed both
        assert not ws.connected and sim.has_subscribers("ticker.ETH-PERP")
        await leave.close()  # the last consumer of ETH-PERP leaves during the resync
        sim.faults.update({"delay_ms": 0})
        assert isinstance(await next_event(keep), Disconnected)
        assert isinstance(await next_event(keep), Reconnected)
        await until(lambda: not sim.has_subscribers("ticker.ETH-PERP"), 5)
        assert sim.has_subscribers("ticker.BTC-PERP")


async def test_a_venue_that_drops_every_connection_at_once_gets_growing_pauses(
        sim: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each reconnect costs the venue an auth, a resubscribe of every channel and a book snapshot per feed: a
    connection that dies as soon as it is live must not reset the backoff, or the client reconnects at the
    shortest pause for ever. One that stayed up does reset it."""
    # The backoff step of each reconnect, as the client asks for its pause: the pause itself (jittered, plus
    # handshake and resubscribe on a loaded host) says little about which step it was.
    steps: list[int] = []

    def recording_backoff_s(attempt: int, base_s: float, max_s: float) -> float:
        if (base_s, max_s) == (0.05, 1.6):  # this test's client's (another's may still be reconnecting)
            steps.append(attempt)
        return backoff_s(attempt, base_s, max_s)

    monkeypatch.setattr(ws_module, "backoff_s", recording_backoff_s)  # the name the client calls it by
    # A connection up for less than reconnect_max_s flapped: ample, so that a stalled host dropping one a little
    # late still counts it as the flap it is.
    async with client(sim.ws_url, reconnect_initial_s=0.05, reconnect_max_s=1.6) as ws:
        sub = await ws.subscribe(["ticker.ETH-PERP"])
        for _ in range(5):
            await sim.close_websockets()
            assert isinstance(await next_event(sub), Disconnected)
            assert isinstance(await next_event(sub), Reconnected)
        # Growing: one step more per drop (0.1 s doubling up to 1.6 s, at 50-100 % jitter), not the first step
        # each time.
        assert steps == [2, 3, 4, 5, 6], steps
        await asyncio.sleep(1.7)  # up longer than reconnect_max_s: a healthy connection
        await sim.close_websockets()
        assert isinstance(await next_event(sub), Disconnected)
        assert isinstance(await next_event(sub), Reconnected)
        assert steps[5:] == [1], steps  # the first step again (25-50 ms), not the seventh


async def test_a_long_outage_does_not_kill_the_client(caplog: pytest.LogCaptureFixture) -> None:
    """After ~1,000 failed connection attempts (hours of outage at the default pauses) the client must still be
    trying, and connect once the venue is back."""
    caplog.set_level(logging.DEBUG, logger="portico.venues.syndr.ws")  # attempts after the first log at DEBUG
    port = free_port()
    ws = client(f"ws://127.0.0.1:{port}", reconnect_initial_s=0.0001, reconnect_max_s=0.0005)
    starting = asyncio.create_task(ws.start())
    try:
        async with asyncio.timeout(30):  # connection refused, over and over
            while sum(1 for r in caplog.records if "connect attempt" in r.getMessage()) < 1100:
                await asyncio.sleep(0.1)
                if starting.done():
                    break
        assert not starting.done(), starting
        async with Simulator(SimConfig(port=port, market_maker=False)):
            await asyncio.wait_for(starting, 10)
            assert ws.connected
            assert (await ws.call("public/get_instrument", {"instrument_name": "ETH-PERP"})).result
    finally:
        starting.cancel()
        await ws.aclose()


async def test_a_resubscribe_the_venue_failed_to_serve_is_retried_not_dropped(sim: Simulator) -> None:
    """An internal error (or a rate limit) answering the reconnect's re-subscribe is not a refusal of the channel:
    the client must try again rather than announce `Reconnected` and leave the subscription silent for ever."""
    async with client(sim.ws_url) as ws:
        sub = await ws.subscribe(["ticker.ETH-PERP"])
        sim.faults.update({"fail_rate": 1.0})  # every call answered with an internal error
        before = subscribe_requests(sim)
        await sim.close_websockets()
        assert isinstance(await next_event(sub), Disconnected)
        await until(lambda: subscribe_requests(sim) >= before + 2, 5)  # tried, failed, tried again
        assert not ws.connected and not sim.has_subscribers("ticker.ETH-PERP")
        sim.faults.update({"fail_rate": 0.0})
        assert isinstance(await next_event(sub), Reconnected)
        assert sim.has_subscribers("ticker.ETH-PERP") and ws.connected


async def message_after_reconnect(sub: Subscription, within_s: float = 5.0) -> Message:
    """Skip to `Reconnected` (what was queued before the drop comes first), then the next message."""
    async with asyncio.timeout(within_s):
        while not isinstance(event := await anext(sub), Reconnected):
            assert isinstance(event, Message | Disconnected), event
        event = await anext(sub)
    assert isinstance(event, Message), event
    return event


async def refusal(sub: Subscription, within_s: float = 5.0) -> ChannelRefused:
    """Skip to the end of `sub`, which must be a `ChannelRefused` right after the `Disconnected`."""
    async with asyncio.timeout(within_s):
        while not isinstance(event := await anext(sub), Disconnected):
            assert isinstance(event, Message), event
        event = await anext(sub)
        assert isinstance(event, ChannelRefused), event
        with pytest.raises(StopAsyncIteration):
            await anext(sub)
    assert sub.closed
    return event


async def test_a_channel_refused_after_a_reconnect_ends_the_subscriptions_needing_it_and_no_other(
        busy_sim: Simulator) -> None:
    """The venue re-subscribes a connection's channels in chunks and refuses a chunk whole if one channel in it is
    refused (an instrument gone while we were away). Before the fix the whole chunk was skipped and everyone
    told `Reconnected`: the book of ETH-PERP, in the same chunk as BTC-PERP's, went silent for ever, and so did
    BTC-PERP's subscribers, with nothing to tell them."""
    sim = busy_sim
    eth, btc = "book.ETH-PERP.15.raw", "book.BTC-PERP.15.raw"
    async with client(sim.ws_url) as ws:
        keep = await ws.subscribe([eth])
        doomed = await ws.subscribe([btc])
        mixed = await ws.subscribe(["ticker.ETH-PERP", btc])  # needs the refused channel: ends whole
        handed: list[WsEvent] = []
        hot = await ws.subscribe([btc], on_event=handed.append)
        for sub in (keep, doomed):
            assert isinstance(await next_event(sub), Message)
        sim.faults.update({"refuse_channels": [btc]})
        await sim.close_websockets()

        assert (await message_after_reconnect(keep)).channel == eth
        for sub in (doomed, mixed):
            refused = await refusal(sub)
            assert refused.channel == btc
            assert isinstance(refused.error, SyndrNotFound) and refused.error.code == ErrorCode.INSTRUMENT_NOT_FOUND
        await until(lambda: any(isinstance(e, ChannelRefused) for e in handed), 5)
        assert isinstance(handed[-1], ChannelRefused) and handed[-1].channel == btc and hot.closed
        assert not any(isinstance(e, Reconnected) for e in handed)
        # Upstream: the valid channel is subscribed again, the one only `mixed` needed is not left behind.
        assert ws.connected and sim.has_subscribers(eth)
        await until(lambda: not sim.has_subscribers("ticker.ETH-PERP"), 5)
        # Once the venue serves it again, the channel can be subscribed afresh.
        with pytest.raises(SyndrNotFound):
            await ws.subscribe([btc])
        sim.faults.update({"refuse_channels": []})
        again = await ws.subscribe([btc])
        assert isinstance(await next_event(again), Message)


async def test_a_refused_chunk_is_narrowed_down_in_a_few_calls(sim: Simulator) -> None:
    """One refused channel among a hundred: the client finds it by halving the chunk, so every other channel is
    subscribed again at the cost of a handful of calls (not one per channel), and only its subscriber ends."""
    channels = [f"{kind}.{inst.name}{suffix}" for inst in sim.engine.instruments()
                for kind, suffix in (("ticker", ""), ("trades", ".raw"), ("book", ".15.raw"), ("book", ".15.100ms"),
                                     ("quotes", ""))]
    assert len(channels) > 100  # two chunks
    bad = channels[37]
    async with client(sim.ws_url) as ws:
        subs = {c: await ws.subscribe([c]) for c in channels}
        sim.faults.update({"refuse_channels": [bad]})
        before = subscribe_requests(sim)
        await sim.close_websockets()
        assert isinstance(await refusal(subs.pop(bad)), ChannelRefused)
        for sub in subs.values():
            assert isinstance(await next_event(sub), Disconnected)
            assert isinstance(await next_event(sub), Reconnected)
        assert all(sim.has_subscribers(c) for c in subs) and not sim.has_subscribers(bad)
        # 2 chunks, then halving the refused one down to its bad channel: 2 calls per level, 7 levels for 100.
        assert subscribe_requests(sim) - before <= 2 + 2 * 7
