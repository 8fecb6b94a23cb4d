"""Two account service processes at once (a rolling update runs the old and the new pod side by side): changes of
one account that read the venue's state and act on it are serialised across processes, not only within one.

Two `AccountApp`s share the simulator and one OpenBao, as two pods share the venue and Vault."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from tests.integration.test_account import SYMBOL, request, vault_secret, venue_signing_address
from tests.support.account import running_account
from tests.support.execution import ExecutionStack
from tests.support.waiting import until

from portico.account.v1 import account_pb2
from portico.account.v1 import account_service_pb2 as pb
from portico.runtime.client import open_channel
from portico.sim.server import SimConfig, Simulator
from portico.venues.accounts import account_path


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimConfig(port=0, seed=23, book_changes_per_second=50, market_maker_instruments=(SYMBOL,),
                                   rate_limit_capacity=100_000, rate_limit_refill_per_s=100_000)) as simulator:
        yield simulator


async def test_two_processes_rotating_one_accounts_key_leave_vault_naming_the_key_the_venue_uses(
        stack: ExecutionStack) -> None:
    """The first process's registration reaches the venue, then its write of the new record is slow (Vault
    slow for it). Meanwhile the second process registers another key for the account. Whatever the order, the
    record Vault ends with must be the one of the key the venue registered last: before the lease, the second
    rotation ran in full in between (the venue's nonce had moved on, so it was accepted) and the first process's
    late write then put back a key the venue no longer accepted (every order of the account refused)."""
    sim = stack.sim
    account = stack.account.address
    async with running_account(stack) as first, running_account(stack) as second, \
            open_channel(first.target) as first_channel, open_channel(second.target) as second_channel:
        parked, go_on = asyncio.Event(), asyncio.Event()
        write_kv = first.app.vault.write_kv

        async def slow_record_write(path: str, data: Any, **kwargs: Any) -> int:
            if path == account_path("syndr", account):
                parked.set()
                await go_on.wait()
            return await write_kv(path, data, **kwargs)

        first.app.vault.write_kv = slow_record_write  # type: ignore[method-assign]
        one = asyncio.ensure_future(first.stub(first_channel).RegisterSigningKey(
            request(pb.RegisterSigningKeyRequest, stack), metadata=first.metadata("admin")))
        await asyncio.wait_for(parked.wait(), 10)  # the venue took the first key; its record is on its way
        first_key = venue_signing_address(sim, account)
        two = asyncio.ensure_future(second.stub(second_channel).RegisterSigningKey(
            request(pb.RegisterSigningKeyRequest, stack), metadata=second.metadata("admin")))
        await asyncio.wait({two}, timeout=3)  # time enough for a whole rotation, if nothing stops it
        go_on.set()
        replies = await asyncio.gather(one, two)

    assert replies[0].signing_key_address.lower() == first_key.lower()
    assert replies[1].signing_key_address.lower() != first_key.lower()
    venue_key = venue_signing_address(sim, account).lower()
    assert venue_key == replies[1].signing_key_address.lower()  # the second registered after the first
    record = await vault_secret(stack, account_path("syndr", account))
    assert record["signing_key_address"].lower() == venue_key
    assert record["signing_key_id"] == replies[1].signing_key_id
    assert sim.security.authenticate(record["api_key"], record["api_secret"]).active


async def test_two_processes_enabling_portfolio_margin_toggle_once(stack: ExecutionStack) -> None:
    """A caller's SetPortfolioMargin is slow at the venue; it retries on the other process (as a client does
    after a deadline, and a rolling update spreads calls over both pods). The retry must read the mode the
    first call leaves, not the mode before it: before the lease it toggled too, so the account ended in
    standard margin while the retry answered PORTFOLIO."""
    sim = stack.sim
    account = stack.account.address
    assert sim.engine.account_summary(account)["is_portfolio_margined"] is False
    async with running_account(stack) as first, running_account(stack) as second, \
            open_channel(first.target) as first_channel, open_channel(second.target) as second_channel:
        sim.faults.update({"http_hold_next": 1, "http_hold_ms": 1500,
                           "http_hold_method": "private/toggle_portfolio_margin"})
        one = asyncio.ensure_future(first.stub(first_channel).SetPortfolioMargin(
            request(pb.SetPortfolioMarginRequest, stack, enabled=True), metadata=first.metadata("admin")))
        await until(lambda: sim.faults.http_hold_next == 0)  # the first toggle is at the venue, held
        two = asyncio.ensure_future(second.stub(second_channel).SetPortfolioMargin(
            request(pb.SetPortfolioMarginRequest, stack, enabled=True), metadata=second.metadata("admin")))
        replies = await asyncio.gather(one, two, return_exceptions=True)

    assert [getattr(r, "margin_mode", r) for r in replies] == [account_pb2.MARGIN_MODE_PORTFOLIO] * 2
    assert sim.engine.account_summary(account)["is_portfolio_margined"] is True
    assert sum(r.method == "private/toggle_portfolio_margin" for r in sim.requests) == 1
