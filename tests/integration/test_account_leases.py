"""The account service's leases (account/leases.py) against a real OpenBao, each "process" with its own Vault
session under the account service's policy (deploy/vault/account.hcl): one holder at a time, waiting, expiry and
take-over, and a holder that outlived its lease stopping short."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from tests.support.account import ACCOUNT_POLICY
from tests.support.openbao import OpenBaoDevServer

from portico.account import leases
from portico.account.leases import AccountLeases, lease_path
from portico.runtime.errors import Internal, Unavailable
from portico.runtime.vault import VaultSession, VaultSettings, VaultUnavailable

VENUE = "syndr"


@pytest.fixture
async def sessions(openbao: OpenBaoDevServer) -> AsyncIterator[Callable[[], VaultSession]]:
    """Vault sessions as the account service has them (its policy), one per simulated process."""
    openbao.write_policy("portico-account", ACCOUNT_POLICY)
    opened: list[VaultSession] = []

    def session() -> VaultSession:
        token = openbao.client().auth.token.create(policies=["portico-account"], ttl="1h")["auth"]["client_token"]
        vault = VaultSession(VaultSettings(addr=openbao.addr, auth_method="token", token=token))
        opened.append(vault)
        return vault

    yield session
    for vault in opened:
        await vault.aclose()


def account() -> str:
    return "0x" + secrets.token_hex(20)


async def test_a_lease_has_one_holder_and_the_next_gets_it_once_released(
        sessions: Callable[[], VaultSession]) -> None:
    first, second = AccountLeases(sessions()), AccountLeases(sessions())
    address = account()
    held = await first.acquire(VENUE, address, "signing-key", "a test")
    waiting = asyncio.ensure_future(second.acquire(VENUE, address, "signing-key", "a test"))
    await asyncio.sleep(0.5)
    assert not waiting.done()  # the other process waits while the lease is held
    other = await first.acquire(VENUE, address, "portfolio-margin", "a test")  # another change is another lease
    await held.release()
    taken = await asyncio.wait_for(waiting, 2)
    assert taken.version == held.version + 2  # taken, released, taken
    record = await first.vault.read_kv(lease_path(VENUE, address, "signing-key"))
    assert record["holder"] == second.holder and record["version"] == taken.version
    await taken.release()
    await other.release()


async def test_an_expired_lease_is_taken_over_and_its_old_holder_neither_goes_on_nor_frees_it(
        sessions: Callable[[], VaultSession], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(leases, "_CLOCK_SKEW_S", 0.0)
    # A lease long enough that taking it (a Vault write) leaves half of it even on a slow machine.
    first, second = AccountLeases(sessions(), ttl_s=3), AccountLeases(sessions(), ttl_s=30)
    third = AccountLeases(sessions(), ttl_s=30)
    address = account()
    stale = await first.acquire(VENUE, address, "signing-key", "a test")
    stale.check(1.5, "the venue's call")  # plenty left now
    taken = await asyncio.wait_for(second.acquire(VENUE, address, "signing-key", "a test"), 20)  # after expiry
    with pytest.raises(Unavailable) as refused:
        stale.check(0.0, "the venue's call")
    assert refused.value.reason == "LEASE_EXPIRED"
    await stale.release()  # too late: the lease is the second holder's now, and stays so
    waiting = asyncio.ensure_future(third.acquire(VENUE, address, "signing-key", "a test"))
    await asyncio.sleep(0.5)
    assert not waiting.done()
    await taken.release()
    await (await asyncio.wait_for(waiting, 2)).release()


async def test_a_lease_record_out_of_step_is_an_error_not_a_loop(sessions: Callable[[], VaultSession]) -> None:
    vault = sessions()
    holder = AccountLeases(vault)
    address = account()
    await vault.write_kv(lease_path(VENUE, address, "signing-key"), {"holder": "", "version": 7})  # Vault's 1
    with pytest.raises(Internal) as caught:
        await asyncio.wait_for(holder.acquire(VENUE, address, "signing-key", "a test"), 5)
    assert caught.value.reason == "LEASE_INVALID"
    await vault.write_kv(lease_path(VENUE, address, "portfolio-margin"), {"something": "else"})
    with pytest.raises(Internal) as caught:
        await holder.acquire(VENUE, address, "portfolio-margin", "a test")
    assert caught.value.reason == "LEASE_INVALID"


async def test_waiting_for_a_lease_ends_unavailable_after_a_leases_length(
        sessions: Callable[[], VaultSession], monkeypatch: pytest.MonkeyPatch) -> None:
    """A process that keeps the lease longer than a lease lasts (its clock ahead, say) is not waited for without
    end: the waiter gives up with UNAVAILABLE, naming the holder."""
    monkeypatch.setattr(leases, "_CLOCK_SKEW_S", 0.0)
    first, second = AccountLeases(sessions(), ttl_s=30), AccountLeases(sessions(), ttl_s=0.5)
    address = account()
    held = await first.acquire(VENUE, address, "signing-key", "a test")
    with pytest.raises(Unavailable) as caught:
        await asyncio.wait_for(second.acquire(VENUE, address, "signing-key", "a signing-key registration"), 3)
    assert caught.value.reason == "ACCOUNT_BUSY" and caught.value.metadata["holder"] == first.holder
    await held.release()


async def test_a_lease_whose_release_failed_does_not_keep_its_own_process_waiting(
        sessions: Callable[[], VaultSession]) -> None:
    """Vault refuses the release: the record still names this process until it expires. The next change of the
    account in this process takes it at once (the process knows it holds nothing there), while another process
    still waits for it."""
    vault = sessions()
    holder, other = AccountLeases(vault, ttl_s=30), AccountLeases(sessions(), ttl_s=30)
    address = account()
    first = await holder.acquire(VENUE, address, "portfolio-margin", "a test")
    write_kv = vault.write_kv

    async def refuse(path: str, data: Any, **kwargs: Any) -> int:
        raise VaultUnavailable("vault write refused (test)", operation="write", path=path, status=503)

    vault.write_kv = refuse  # type: ignore[method-assign]
    await first.release()  # logged; the record still names `holder`
    vault.write_kv = write_kv  # type: ignore[method-assign]
    assert (await vault.read_kv(lease_path(VENUE, address, "portfolio-margin")))["holder"] == holder.holder
    waiting = asyncio.ensure_future(other.acquire(VENUE, address, "portfolio-margin", "a test"))
    again = await asyncio.wait_for(holder.acquire(VENUE, address, "portfolio-margin", "a test"), 2)
    assert again.version == first.version + 1
    with pytest.raises(TimeoutError):  # still held (by the new lease): another process waits
        await asyncio.wait_for(asyncio.shield(waiting), 0.5)
    # ...and so does this process while it holds the new one
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(holder.acquire(VENUE, address, "portfolio-margin", "a test"), 0.5)
    await again.release()
    await (await asyncio.wait_for(waiting, 2)).release()
