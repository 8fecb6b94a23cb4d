"""VaultWatch: readiness follows each change of Vault access, and each outage is logged once."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from types import SimpleNamespace
from typing import cast

import pytest

from portico.runtime.vault import VaultAccess, VaultSession, VaultWatch

A, R, U = VaultAccess.AVAILABLE, VaultAccess.REFUSED, VaultAccess.UNAVAILABLE


class FakeVault:
    """Answers `check_access` from a script, then repeats its last answer."""

    def __init__(self, answers: Iterable[VaultAccess]) -> None:
        self.answers = list(answers)
        self.checks = 0
        self.settings = SimpleNamespace(addr="http://vault.test:8200")

    async def check_access(self) -> VaultAccess:
        self.checks += 1
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def watch_of(vault: FakeVault, changes: list[VaultAccess], interval_s: float = 3600) -> VaultWatch:
    async def on_change(access: VaultAccess) -> None:
        changes.append(access)

    return VaultWatch(cast(VaultSession, vault), interval_s, on_change, logger=logging.getLogger("test.watch"))


def outage_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [getattr(r, "vault_access", "") for r in caplog.records
            if r.name == "test.watch" and r.levelno == logging.WARNING]


async def test_each_change_is_reported_and_each_outage_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="test.watch")
    changes: list[VaultAccess] = []
    watch = watch_of(FakeVault([A, R, R, R, A, A]), changes)
    verdicts = [await watch.check() for _ in range(6)]
    assert verdicts == [A, R, R, R, A, A]
    assert changes == [A, R, A]
    assert outage_lines(caplog) == ["refused"]
    assert watch.available


async def test_a_new_cause_during_an_outage_is_logged_again(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="test.watch")
    changes: list[VaultAccess] = []
    watch = watch_of(FakeVault([U, U, R, R]), changes)
    for _ in range(4):
        await watch.check()
    assert changes == [U, R]
    assert outage_lines(caplog) == ["unavailable", "refused"]
    assert not watch.available


async def test_on_change_sees_the_new_verdict() -> None:
    """A service combining readiness conditions reads `available` inside on_change: it is the new verdict."""
    seen: list[bool] = []

    async def on_change(access: VaultAccess) -> None:
        seen.append(watch.available)

    watch = VaultWatch(cast(VaultSession, FakeVault([A, R, A])), 3600, on_change)
    for _ in range(3):
        await watch.check()
    assert seen == [True, False, True]


async def test_a_failed_change_is_reported_again_at_the_next_check() -> None:
    calls: list[VaultAccess] = []

    async def on_change(access: VaultAccess) -> None:
        calls.append(access)
        if len(calls) == 1:
            raise RuntimeError("health not updated")

    watch = VaultWatch(cast(VaultSession, FakeVault([R])), 3600, on_change)
    with pytest.raises(RuntimeError):
        await watch.check()
    assert watch.access is None
    assert await watch.check() is R
    assert calls == [R, R] and watch.access is R


async def test_started_it_checks_in_the_background_until_closed() -> None:
    vault = FakeVault([A, R])
    changes: list[VaultAccess] = []
    watch = watch_of(vault, changes, interval_s=0.01)
    await watch.start()
    assert changes == [A]  # the first check is done before start returns
    deadline = time.monotonic() + 10
    while vault.checks < 3:
        assert time.monotonic() < deadline, "the watch did not check again"
        await asyncio.sleep(0.01)
    await watch.aclose()
    assert changes == [A, R]
    checks = vault.checks
    await asyncio.sleep(0.05)
    assert vault.checks == checks
    await watch.aclose()  # idempotent
