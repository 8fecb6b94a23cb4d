"""AccountService, adversarial review: a DeactivateApiKey whose stored secret the venue refuses, a CreateApiKey whose
venue-issued key Vault cannot name, and the position stream's sequence across a replaced feed and a restart.

Each against the real simulator, OpenBao, signer and reference data (tests/support)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import grpc
import pytest
from tests.integration.test_account import SYMBOL, request, take
from tests.integration.test_account_failures import api_key_secret_path, deactivations
from tests.support.account import RunningAccount, running_account
from tests.support.execution import ExecutionStack
from tests.support.waiting import until

from portico.account.v1 import account_pb2
from portico.account.v1 import account_service_pb2 as pb
from portico.runtime.client import open_channel
from portico.runtime.errors import error_info
from portico.runtime.vault import VaultSession, VaultSettings
from portico.sim.server import Method, SimConfig, Simulator
from portico.venues.accounts import account_path


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimConfig(port=0, seed=29, book_changes_per_second=50, market_maker_instruments=(SYMBOL,),
                                   rate_limit_capacity=100_000, rate_limit_refill_per_s=100_000)) as simulator:
        yield simulator


async def write_secret(stack: ExecutionStack, path: str, data: dict[str, Any]) -> None:
    settings = VaultSettings(addr=stack.vault.addr, auth_method="token", token=stack.vault.root_token)
    async with VaultSession(settings) as vault:
        await vault.write_kv(path, data)


def record_reads(running: RunningAccount) -> list[str]:
    """The account-record paths the service reads from Vault from now on."""
    vault = running.app.vault
    read_kv = vault.read_kv
    reads: list[str] = []

    async def counting(path: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if "/accounts/" in path:
            reads.append(path)
        return await read_kv(path, *args, **kwargs)

    vault.read_kv = counting  # type: ignore[method-assign]
    return reads


# --------------------------------------------------------------------------- DeactivateApiKey


async def test_a_stored_secret_the_venue_refuses_is_failed_precondition_and_keeps_the_account_record(
        stack: ExecutionStack) -> None:
    """Vault holds a wrong secret for a key CreateApiKey made (overwritten by hand, restored from an old backup):
    the venue refuses `private/deactivate_api_key` UNAUTHORIZED. That is the secret of the key being deactivated,
    not the account's own credentials: before the fix the call ended PERMISSION_DENIED as if Portico's own key had
    been refused, and the account's cached record was dropped (read from Vault again) for nothing."""
    sim = stack.sim
    account = stack.account.address
    async with running_account(stack) as running, open_channel(running.target) as channel:
        stub = running.stub(channel)
        created = (await stub.CreateApiKey(
            request(pb.CreateApiKeyRequest, stack, name="reporting", scope=account_pb2.API_KEY_SCOPE_READ_ONLY),
            metadata=running.metadata("admin"))).api_key
        wrong = "0" * 64 + "." + "1" * 64
        await write_secret(stack, api_key_secret_path(stack, created.api_key),
                           {"api_key": created.api_key, "api_secret": wrong, "name": "reporting", "scope": 2})
        reads = record_reads(running)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.DeactivateApiKey(request(pb.DeactivateApiKeyRequest, stack, api_key=created.api_key),
                                        metadata=running.metadata("admin"))
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION, caught.value.details()
        info = error_info(caught.value)
        assert info is not None and info.reason == "API_KEY_SECRET_REFUSED"
        assert info.metadata["api_key"] == created.api_key
        assert wrong not in (caught.value.details() or "") and wrong not in str(dict(info.metadata))
        assert len(deactivations(sim)) == 1
        assert [k.active for k in sim.security.api_keys(account) if k.api_key == created.api_key] == [True]
        # The account's own record was fine: it is neither dropped nor read again.
        await stub.ListApiKeys(request(pb.ListApiKeysRequest, stack), metadata=running.metadata("read"))
        assert reads == []


async def test_deactivate_api_key_with_the_accounts_own_key_refused_is_still_permission_denied(
        stack: ExecutionStack) -> None:
    """The other reading of the same venue answer: the account's own API key is no longer valid (deactivated at
    the venue). That stays PERMISSION_DENIED, and the refused record is dropped so the next call reads Vault."""
    sim = stack.sim
    account = stack.account.address
    async with running_account(stack) as running, open_channel(running.target) as channel:
        stub = running.stub(channel)
        created = (await stub.CreateApiKey(
            request(pb.CreateApiKeyRequest, stack, name="reporting", scope=account_pb2.API_KEY_SCOPE_READ_ONLY),
            metadata=running.metadata("admin"))).api_key
        sim.security.deactivate_api_key(account, stack.account.credentials.api_key)
        reads = record_reads(running)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.DeactivateApiKey(request(pb.DeactivateApiKeyRequest, stack, api_key=created.api_key),
                                        metadata=running.metadata("admin"))
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED, caught.value.details()
        assert [k.active for k in sim.security.api_keys(account) if k.api_key == created.api_key] == [True]
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.ListApiKeys(request(pb.ListApiKeysRequest, stack), metadata=running.metadata("read"))
        assert account_path("syndr", account) in reads  # dropped, so read again


# --------------------------------------------------------------------------- CreateApiKey


@pytest.mark.parametrize("issued", ["..", "ops key", "k/"])
async def test_a_new_key_vault_cannot_name_is_deactivated_not_left_active(stack: ExecutionStack,
                                                                          issued: str) -> None:
    """The venue names the new key in a form that is no Vault path segment (`..`: Vault refuses the path), or one
    DeactivateApiKey would never take back (a space, a trailing slash): before the fix the first left the key
    active with its secret in nobody's hands (the write raised ValueError, not VaultError, so no rollback), and the
    others stored a secret of a key Portico could then not deactivate."""
    sim = stack.sim
    account = stack.account.address
    original = sim.methods["private/create_api_key"]

    def renamed(sim_: Any, p: Any, ctx: Any) -> Any:
        result = original.handler(sim_, p, ctx)
        key = sim_.security._keys.pop(result["api_key"])
        sim_.security._keys[issued] = dataclasses.replace(key, api_key=issued)
        return {**result, "api_key": issued}

    sim.methods["private/create_api_key"] = Method(renamed, original.private)
    async with running_account(stack) as running, open_channel(running.target) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await running.stub(channel).CreateApiKey(
                request(pb.CreateApiKeyRequest, stack, name="ops", scope=account_pb2.API_KEY_SCOPE_ADMIN),
                metadata=running.metadata("admin"))
        assert caught.value.code() == grpc.StatusCode.INTERNAL, caught.value.details()
        info = error_info(caught.value)
        assert info is not None and info.reason == "VENUE_PROTOCOL_ERROR"
        assert [k.active for k in sim.security.api_keys(account) if k.api_key == issued] == [False]
        assert [p["api_key"] for p in deactivations(sim)] == [issued]


# --------------------------------------------------------------------------- StreamPositions


async def first_update(stub: Any, stack: ExecutionStack, running: RunningAccount, amount: Decimal) -> int:
    """Open a stream, trade `amount`, and return the sequence of the first update it carries."""
    call = stub.StreamPositions(request(pb.StreamPositionsRequest, stack), metadata=running.metadata("read"))
    key = ("syndr", stack.account.address.lower())
    await until(lambda: key in running.app.positions._feeds and running.app.positions._feeds[key].consumers > 0, 10)
    await take(stack, "buy", amount)
    async with asyncio.timeout(10):
        message = await call.read()
    call.cancel()
    return int(message.updates[0].sequence)


async def test_position_sequences_never_repeat_when_a_feed_is_replaced_or_the_service_restarts(
        stack: ExecutionStack) -> None:
    """A consumer that keeps the account's last sequence (and takes a number it saw for a repeat) must see numbers
    go on upwards when the venue refused the channel and a new feed followed it, and after a restart: before the
    fix each new feed numbered from 1 again."""
    sim = stack.sim
    increment = sim.engine.instrument(SYMBOL).contract_size
    async with running_account(stack) as running, open_channel(running.target) as channel:
        stub = running.stub(channel)
        first = await first_update(stub, stack, running, increment)
        key = ("syndr", stack.account.address.lower())
        feed = running.app.positions._feeds[key]
        last = feed.sequence
        assert last >= first
        sim.faults.update({"refuse_channels": ["user.positions"]})
        await sim.close_websockets()
        await until(lambda: feed.ended is not None, 10)
        sim.faults.update({"refuse_channels": []})
        second = await first_update(stub, stack, running, increment)
        assert second > last
        last = running.app.positions._feeds[key].sequence
    async with running_account(stack) as running, open_channel(running.target) as channel:
        third = await first_update(running.stub(channel), stack, running, increment)
        assert third > last
