"""DeadmanSwitches alone, over a fake venue: concurrent re-arms, disarm and shutdown never leave a timer behind.

Nothing here waits for a timer not to fire: "it cannot fire" is checked as "no timer task is alive", which
holds or not the moment `arm` / `aclose` returns, whatever the machine's load.
"""

from __future__ import annotations

import asyncio
import secrets
from types import SimpleNamespace
from typing import Any

import pytest
from tests.support.waiting import until

from portico.execution.deadman import DeadmanSwitches
from portico.runtime.errors import Unavailable

FAR = 3_600.0  # a ttl that never runs out during a test


@pytest.fixture
def account() -> str:
    """A fresh account per test: timer tasks are named after it, so a test only ever sees its own."""
    return "0x" + secrets.token_hex(20).upper()


class FakeVenue:
    """`session()` answers like the cached path (no await) or like a Vault read (it yields); `private/cancel_all`
    is counted and can be held, to catch a firing in progress."""

    def __init__(self, *, session_yields: bool = False) -> None:
        self.session_yields = session_yields
        self.session_delay_s = 0.0  # a slow Vault read
        self.cancel_alls_started = 0
        self.cancel_alls_done = 0
        self.cancel_failures = 0  # this many cancel_all calls fail first (the venue unreachable)
        self.failures_after_release = 0  # this many held cancel_all calls fail once released (no answer came)
        self.release = asyncio.Event()
        self.release.set()

    async def session(self, account: str) -> Any:
        if self.session_yields:
            await asyncio.sleep(0)
        await asyncio.sleep(self.session_delay_s)
        return SimpleNamespace(record=SimpleNamespace(account=account))

    def independent_client(self, record: Any) -> Any:
        venue = self

        class Client:
            async def __aenter__(self) -> Any:
                return self

            async def __aexit__(self, *exc: Any) -> None:
                return None

            async def call(self, method: str, params: Any) -> None:
                assert method == "private/cancel_all"
                venue.cancel_alls_started += 1
                if venue.cancel_failures > 0:
                    venue.cancel_failures -= 1
                    raise ConnectionError("venue unreachable")
                await venue.release.wait()
                if venue.failures_after_release > 0:
                    venue.failures_after_release -= 1
                    raise ConnectionError("venue did not answer")
                venue.cancel_alls_done += 1

        return Client()


def key(account: str) -> tuple[str, str]:
    return ("syndr", account.lower())


def live_timers(account: str) -> list[asyncio.Task[Any]]:
    """Every dead-man task (timer or firing) of `account` that has not finished."""
    return [t for t in asyncio.all_tasks() if t.get_name().lower() == f"deadman-{account.lower()}" and not t.done()]


@pytest.mark.parametrize("session_yields", [False, True], ids=["cached-session", "vault-read-session"])
async def test_concurrent_rearms_leave_one_tracked_timer_and_disarm_leaves_none(session_yields: bool,
                                                                                account: str) -> None:
    switches = DeadmanSwitches(FakeVenue(session_yields=session_yields))  # type: ignore[arg-type]
    try:
        await switches.arm("syndr", account, FAR)
        await asyncio.gather(*(switches.arm("syndr", account, FAR) for _ in range(4)))  # concurrent heart-beats
        assert live_timers(account) == [switches._timers[key(account)]]  # one timer, and it is the tracked one
        assert await switches.arm("syndr", account, 0) is None
        assert live_timers(account) == []  # disarmed: nothing left that could cancel the account's orders
        assert switches._timers == {}
    finally:
        await switches.aclose()


async def test_concurrent_arm_and_disarm_end_in_one_state_or_the_other(account: str) -> None:
    switches = DeadmanSwitches(FakeVenue(session_yields=True))  # type: ignore[arg-type]
    try:
        await switches.arm("syndr", account, FAR)
        await asyncio.gather(switches.arm("syndr", account, FAR), switches.arm("syndr", account, 0),
                             switches.arm("syndr", account, FAR))
        tracked = [switches._timers[key(account)]] if key(account) in switches._timers else []
        assert live_timers(account) == tracked
    finally:
        await switches.aclose()
    assert live_timers(account) == []


async def test_aclose_cancels_every_timer_and_a_firing_in_progress(account: str) -> None:
    venue = FakeVenue()
    switches = DeadmanSwitches(venue)  # type: ignore[arg-type]
    venue.release.clear()  # the firing's cancel_all hangs until cancelled
    await switches.arm("syndr", account, 0.01)
    await until(lambda: venue.cancel_alls_started == 1)  # firing: no longer a timer in `_timers`
    assert switches._timers == {}
    await switches.arm("syndr", account, FAR)
    assert len(live_timers(account)) == 2  # the firing and the re-armed timer
    await switches.aclose()
    assert live_timers(account) == []
    assert venue.cancel_alls_done == 0
    with pytest.raises(Unavailable):
        await switches.arm("syndr", account, FAR)  # closed: arms no more
    assert live_timers(account) == []


async def test_a_timer_not_rearmed_fires_once_and_leaves_no_entry(account: str) -> None:
    venue = FakeVenue()
    switches = DeadmanSwitches(venue)  # type: ignore[arg-type]
    try:
        await switches.arm("syndr", account, 0.01)
        await until(lambda: switches.fired.get(key(account)) == 1)
        assert venue.cancel_alls_done == 1
        assert switches._timers == {}
        await until(lambda: live_timers(account) == [])
        # Re-armed after firing, the new timer is tracked as usual and a disarm stops it.
        await switches.arm("syndr", account, FAR)
        assert live_timers(account) == [switches._timers[key(account)]]
        await switches.arm("syndr", account, 0)
        assert live_timers(account) == []
    finally:
        await switches.aclose()


async def test_a_rearm_in_time_wins_even_if_reading_the_account_is_slow(account: str) -> None:
    """The account's record takes longer to read (Vault slow, or down and retried) than the switch has left: the
    re-arm, handled before the deadline, still wins (before the fix it read the record before replacing the timer,
    so the old timer fired while it waited and cancelled every order of a client that had re-armed in time)."""
    venue = FakeVenue()
    switches = DeadmanSwitches(venue)  # type: ignore[arg-type]
    try:
        await switches.arm("syndr", account, 0.3)
        venue.session_delay_s = 1.0
        await switches.arm("syndr", account, FAR)
        assert live_timers(account) == [switches._timers[key(account)]]
        assert venue.cancel_alls_started == 0
        assert await switches.arm("syndr", account, 0) is None  # disarming needs no read either
        assert live_timers(account) == []
    finally:
        await switches.aclose()
    assert venue.cancel_alls_started == 0 and switches.fired == {}


async def test_a_rearm_drops_a_missed_deadlines_cancel_that_is_still_failing(account: str,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The deadline passed during a venue outage: the cancel keeps failing and retrying. The client comes back and
    re-arms, then trades; the old cancel must not land once the venue is back and take the new orders (before,
    the retries went on until the venue took it)."""
    from portico.execution import deadman

    monkeypatch.setattr(deadman, "_RETRY_S", 0.02)
    venue = FakeVenue()
    venue.cancel_failures = 10**9
    switches = DeadmanSwitches(venue)  # type: ignore[arg-type]
    try:
        await switches.arm("syndr", account, 0.01)
        await until(lambda: venue.cancel_alls_started >= 2, 5)  # fired, failed, retrying
        await switches.arm("syndr", account, FAR)  # the client is back
        assert len(live_timers(account)) == 1  # the new timer; the failing firing is gone
        started = venue.cancel_alls_started
        venue.cancel_failures = 0  # the venue is back
        await asyncio.sleep(0.2)
        assert venue.cancel_alls_started == started and venue.cancel_alls_done == 0
        assert switches.fired.get(key(account), 0) == 0
    finally:
        await switches.aclose()


async def test_a_missed_deadline_still_cancels_when_the_venue_answers(account: str) -> None:
    """A re-arm right after the deadline does not stop a firing whose cancel is on its way."""
    venue = FakeVenue()
    venue.release.clear()  # the cancel is held at the venue
    switches = DeadmanSwitches(venue)  # type: ignore[arg-type]
    try:
        await switches.arm("syndr", account, 0.01)
        await until(lambda: venue.cancel_alls_started == 1, 5)
        await switches.arm("syndr", account, FAR)
        venue.release.set()
        await until(lambda: switches.fired.get(key(account)) == 1, 5)
        assert venue.cancel_alls_done == 1
    finally:
        await switches.aclose()


async def test_a_rearm_while_the_first_cancel_is_on_its_way_stops_its_retries_should_it_fail(
        account: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The deadline passed and the first cancel is on its way when the client re-arms; then that cancel fails (the
    venue did not take it). The client is back: a retry landing later would take the orders it placed since the
    re-arm. Before the fix only a re-arm during the pause between attempts dropped the retries, so this one went
    on until the venue took it."""
    from portico.execution import deadman

    monkeypatch.setattr(deadman, "_RETRY_S", 0.02)
    venue = FakeVenue()
    venue.release.clear()  # the first cancel is held at the venue ...
    venue.failures_after_release = 1  # ... and then fails
    switches = DeadmanSwitches(venue)  # type: ignore[arg-type]
    try:
        await switches.arm("syndr", account, 0.01)
        await until(lambda: venue.cancel_alls_started == 1, 5)  # fired: the first cancel is on its way
        await switches.arm("syndr", account, FAR)  # the client is back
        venue.release.set()
        await until(lambda: len(live_timers(account)) == 1, 5)  # the failed firing is over
        await asyncio.sleep(0.2)  # several retry pauses
        assert venue.cancel_alls_started == 1 and venue.cancel_alls_done == 0
        assert switches.fired.get(key(account), 0) == 0
        assert live_timers(account) == [switches._timers[key(account)]]  # the re-armed timer still guards
    finally:
        await switches.aclose()


async def test_a_disarm_while_the_first_cancel_is_on_its_way_stops_its_retries_should_it_fail(
        account: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """As above, for a disarm: the client said it no longer wants the switch."""
    from portico.execution import deadman

    monkeypatch.setattr(deadman, "_RETRY_S", 0.02)
    venue = FakeVenue()
    venue.release.clear()
    venue.failures_after_release = 1
    switches = DeadmanSwitches(venue)  # type: ignore[arg-type]
    try:
        await switches.arm("syndr", account, 0.01)
        await until(lambda: venue.cancel_alls_started == 1, 5)
        assert await switches.arm("syndr", account, 0) is None
        venue.release.set()
        await until(lambda: live_timers(account) == [], 5)
        assert venue.cancel_alls_started == 1 and venue.cancel_alls_done == 0
    finally:
        await switches.aclose()
