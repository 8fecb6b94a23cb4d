"""Venue account records read from a real OpenBao, used against a real venue (simulator or loopback stub):
what a refusal of the record on file does to Vault.

The Vault session is the real one; it only counts the reads of each path, which is what these tests are about.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import hvac
import pytest
from tests.support.openbao import OpenBaoDevServer
from tests.support.syndr_account import register
from tests.support.syndr_stub import SyndrStub

from portico.runtime.errors import Internal, Unavailable
from portico.runtime.secp256k1 import to_checksum_address
from portico.runtime.vault import VaultSession, VaultSettings
from portico.sim.server import SimConfig, Simulator
from portico.venues import accounts as accounts_module
from portico.venues.accounts import SyndrAccounts, VenueAccountStore, account_path
from portico.venues.syndr import models
from portico.venues.syndr.constants import ApiKeyScope
from portico.venues.syndr.credentials import ApiCredentials
from portico.venues.syndr.errors import SyndrAuthError
from portico.venues.syndr.http import SyndrHttpClient


class CountingVault(VaultSession):
    """The real Vault session, counting how often each KV path is read."""

    def __init__(self, settings: VaultSettings) -> None:
        super().__init__(settings)
        self.reads: Counter[str] = Counter()

    async def read_kv(self, path: str) -> dict[str, Any]:
        self.reads[path] += 1
        return await super().read_kv(path)


@pytest.fixture
async def vault(openbao: OpenBaoDevServer) -> AsyncIterator[CountingVault]:
    async with CountingVault(VaultSettings(addr=openbao.addr, auth_method="token",
                                           token=openbao.root_token)) as session:
        yield session


async def write_record(vault: VaultSession, account: str, credentials: ApiCredentials) -> None:
    await vault.write_kv(account_path("syndr", account), {
        "api_key": credentials.api_key, "api_secret": credentials.api_secret, "signing_key_id": "test-signing",
        "signing_key_address": "", "account_key_id": "test-account"})


async def test_a_record_the_venue_keeps_refusing_is_not_read_again_on_every_call(
        vault: CountingVault, monkeypatch: pytest.MonkeyPatch) -> None:
    """Vault holds a key the venue refuses: each refusal dropped the record, so every call read Vault again (a
    Vault read per order at the order rate). Now it is read again once, and again only after a pause, so a
    fixed record in Vault is still picked up soon."""
    # A pause no run of the loop below outlasts, however slow the machine; ended below by setting it to 0.
    monkeypatch.setattr(accounts_module, "_REREAD_REFUSED_S", 60.0, raising=False)
    account = to_checksum_address("0x" + secrets.token_hex(20))
    path = account_path("syndr", account)
    async with SyndrStub(api_key="good-key", api_secret="good-secret") as stub:
        await write_record(vault, account, ApiCredentials("good-key", "revoked-secret"))
        accounts = SyndrAccounts(stub.http_url, VenueAccountStore(vault), timeout_s=2)
        try:
            for _ in range(10):
                with pytest.raises(SyndrAuthError):
                    await accounts.call(account, "private/get_positions")
            assert vault.reads[path] == 2  # the first load, and one more after the first refusal
            assert len(stub.http_requests) == 10

            await write_record(vault, account, ApiCredentials("good-key", "good-secret"))  # an operator fixes it
            monkeypatch.setattr(accounts_module, "_REREAD_REFUSED_S", 0.0, raising=False)  # the pause is over
            with pytest.raises(SyndrAuthError):  # the refused record is still the one in use...
                await accounts.call(account, "private/get_positions")
            # ...but after the pause this refusal drops it, and the next call reads the fixed one.
            assert (await accounts.call(account, "private/get_positions")).result["method"] == "private/get_positions"
            assert vault.reads[path] == 3
        finally:
            await accounts.aclose()


async def test_a_late_refusal_of_a_replaced_record_does_not_drop_its_replacement(vault: CountingVault) -> None:
    """A call sent with the old key is answered after the rotated record is in use: the refusal is about the
    old record, which is gone already. Before the fix it dropped the new record too, one Vault read more per
    call still in flight with the old key."""
    async with Simulator(SimConfig(port=0, seed=11, market_maker=False)) as sim:
        async with SyndrHttpClient(sim.http_url) as public:
            account = await register(public)
        old = account.credentials
        path = account_path("syndr", account.address)
        await write_record(vault, account.address, old)
        accounts = SyndrAccounts(sim.http_url, VenueAccountStore(vault), timeout_s=5)
        try:
            await accounts.call(account.address, "private/get_positions")
            assert vault.reads[path] == 1
            # One call with the old key is held at the venue (authenticated after the hold) while the key rotates.
            sim.faults.update({"http_hold_next": 1, "http_hold_ms": 1500, "http_hold_method": "private/get_positions"})
            held = asyncio.create_task(accounts.call(account.address, "private/get_positions"))
            await asyncio.sleep(0.1)
            async with SyndrHttpClient(sim.http_url, credentials=old) as venue:
                created = models.parse_created_api_key((await venue.call(
                    "private/create_api_key", {"scope": int(ApiKeyScope.ADMIN), "name": "rotated"})).result)
            new = ApiCredentials(created.api_key, created.api_secret)
            await write_record(vault, account.address, new)
            async with SyndrHttpClient(sim.http_url, credentials=new) as venue:
                await venue.call("private/deactivate_api_key", {"api_key": old.api_key, "api_secret": old.api_secret})
            with pytest.raises(SyndrAuthError):  # the cached old record, refused: dropped
                await accounts.call(account.address, "private/get_open_orders")
            await accounts.call(account.address, "private/get_open_orders")  # the new one, read once
            assert vault.reads[path] == 2
            with pytest.raises(SyndrAuthError):
                await held  # the old key, refused late
            await accounts.call(account.address, "private/get_open_orders")
            assert (await accounts.session(account.address)).record.credentials == new
            assert vault.reads[path] == 2  # the new record was kept
        finally:
            await accounts.aclose()


async def test_a_record_vault_will_not_let_the_service_read_is_unavailable_for_permission_not_outage(
        openbao: OpenBaoDevServer) -> None:
    # A token Vault accepts but whose policy grants no venue record: the operator's problem, and it says so.
    root = hvac.Client(url=openbao.addr, token=openbao.root_token)
    token = root.auth.token.create(policies=["default"], ttl="10m")["auth"]["client_token"]
    async with VaultSession(VaultSettings(addr=openbao.addr, auth_method="token", token=token)) as session:
        store = VenueAccountStore(session)
        with pytest.raises(Unavailable) as refused:
            await store.get("syndr", to_checksum_address("0x" + secrets.token_hex(20)))
        await store.aclose()
    assert refused.value.reason == "VAULT_PERMISSION_DENIED"
    assert token not in str(refused.value)


@pytest.mark.parametrize("field", ["api_key", "api_secret", "signing_key_id"])
@pytest.mark.parametrize("value", [None, "", 7])
async def test_a_record_with_a_credential_that_is_not_text_is_invalid_not_sent(
        vault: CountingVault, field: str, value: object) -> None:
    """`str()` made a null secret the credential "None", sent to the venue on every call."""
    account = to_checksum_address("0x" + secrets.token_hex(20))
    await write_record(vault, account, ApiCredentials("po-key", "s3cret"))
    record = await vault.read_kv(account_path("syndr", account))
    await vault.write_kv(account_path("syndr", account), {**record, field: value})
    store = VenueAccountStore(vault)
    try:
        with pytest.raises(Internal) as invalid:
            await store.get("syndr", account)
    finally:
        await store.aclose()
    assert invalid.value.reason == "ACCOUNT_RECORD_INVALID"
    assert "s3cret" not in str(invalid.value)
