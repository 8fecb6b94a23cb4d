"""The account service's shutdown waits for a venue change as long as that change can take: a signing-key
registration the venue accepted while Vault is slow still gets its record written before the process ends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from tests.integration.test_account import SYMBOL, request, vault_secret, venue_signing_address
from tests.support.account import running_account
from tests.support.execution import ExecutionStack
from tests.support.tcp_proxy import TcpProxy

from portico.account import settings as account_settings
from portico.account.leases import DEFAULT_TTL_S as LEASE_TTL_S
from portico.account.v1 import account_service_pb2 as pb
from portico.runtime.client import open_channel
from portico.sim.server import SimConfig, Simulator
from portico.venues.accounts import account_path

VENUE_TIMEOUT_MS = 1000
VAULT_TIMEOUT_S = 2.5
FAILED_WRITES = 4  # of the registration's 5 tries: each waits out the Vault timeout (10 s, plus 2 s of pauses)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimConfig(port=0, seed=23, book_changes_per_second=50, market_maker_instruments=(SYMBOL,),
                                   rate_limit_capacity=100_000, rate_limit_refill_per_s=100_000)) as simulator:
        yield simulator


async def test_shutdown_waits_for_a_registration_whose_vault_write_is_slow(stack: ExecutionStack) -> None:
    """The venue registers the key, then Vault stops answering: the record's first four writes time out (12 s in
    all, more than 3x the venue timeout + 5 s, the wait this once had). Shutdown starts meanwhile and waits; the
    fifth write lands, and Vault names the key the venue now accepts."""
    sim = stack.sim
    account = stack.account.address
    vault_url = urlsplit(stack.vault.addr)
    assert vault_url.hostname is not None and vault_url.port is not None
    async with TcpProxy(vault_url.hostname, vault_url.port) as proxy:
        env = {"PORTICO_VAULT_ADDR": f"http://{proxy.addr}", "PORTICO_VAULT_TIMEOUT": str(VAULT_TIMEOUT_S),
               "PORTICO_ACCOUNT_VENUE_TIMEOUT_MS": str(VENUE_TIMEOUT_MS)}
        record_written = asyncio.Event()
        async with running_account(stack, env) as running, open_channel(running.target) as channel:
            vault = running.app.vault
            write_kv = vault.write_kv
            writes = 0

            async def slow_vault(path: str, data: Any, **kwargs: Any) -> int:
                nonlocal writes
                if path == account_path("syndr", account):  # the record, after the venue registered the key
                    writes += 1
                    if writes == 1:
                        proxy.stall()
                        record_written.set()
                    elif writes == FAILED_WRITES + 1:
                        proxy.resume()
                return await write_kv(path, data, **kwargs)

            vault.write_kv = slow_vault  # type: ignore[method-assign]
            call = asyncio.ensure_future(running.stub(channel).RegisterSigningKey(
                request(pb.RegisterSigningKeyRequest, stack), metadata=running.metadata("admin")))
            await asyncio.wait_for(record_written.wait(), 30)
        # The caller went away and the service shut down (grace 0.5 s) while Vault was stalled.
        call.cancel()
        assert writes == FAILED_WRITES + 1
    record = await vault_secret(stack, account_path("syndr", account))
    assert record["signing_key_address"].lower() == venue_signing_address(sim, account).lower()
    assert record["signing_key_address"].lower() != stack.account.signing_key.address.lower()
    assert sim.security.authenticate(record["api_key"], record["api_secret"]).active


def test_the_completion_wait_covers_a_registration_with_vault_slow_for_its_whole_lease() -> None:
    """The default timeouts (5 s each): a registration may write its record until a Vault timeout past its
    60 s lease, then release the lease; 3x the venue timeout + 5 s (20 s) did not cover a slow Vault at all."""
    wait = account_settings.completion_wait_s(5.0, 5.0)
    assert wait >= LEASE_TTL_S + 5.0 + 2 * 5.0
    # Larger either timeout, longer the wait.
    assert account_settings.completion_wait_s(5.0, 10.0) > wait < account_settings.completion_wait_s(10.0, 5.0)
