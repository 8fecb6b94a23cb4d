"""The execution service in-process, with everything it needs real: simulator, OpenBao, signer, reference data.

`execution_stack` registers a fresh account with the simulator the way the
document's script does (keys generated here, imported into Vault for the
signer), stores its venue record in Vault where the execution service reads
it, and starts reference data (synced) and the signer. `running_execution`
starts (and can restart) the execution service itself over that stack.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import grpc

from portico.execution.model import OrderState
from portico.execution.service import ExecutionApp
from portico.execution.settings import ExecutionSettings
from portico.execution.v1 import execution_service_pb2_grpc as pb_grpc
from portico.refdata.v1 import reference_data_service_pb2 as refdata_pb
from portico.runtime.client import bearer, open_channel
from portico.runtime.secp256k1 import Secp256k1Key, generate_private_key
from portico.runtime.signing_keys import KeyAdmin, KeyPaths, KeyPolicy
from portico.runtime.vault import VaultSession, VaultSettings
from portico.sim.server import Simulator
from portico.venues.accounts import VenueAccount, VenueAccountStore
from portico.venues.syndr import models, typed_data
from portico.venues.syndr.constants import ApiKeyScope
from portico.venues.syndr.credentials import ApiCredentials
from portico.venues.syndr.http import SyndrHttpClient
from tests.support.openbao import OpenBaoDevServer
from tests.support.refdata import running_refdata
from tests.support.signer import RunningSigner, make_tokens, running_signer
from tests.support.syndr_account import SyndrAccount, register

VAULT_POLICIES = Path(__file__).resolve().parents[2] / "deploy" / "vault"
EXECUTION_POLICY = (VAULT_POLICIES / "execution.hcl").read_text()
SIGNER_POLICY = (VAULT_POLICIES / "signer.hcl").read_text()


@dataclass
class ExecutionStack:
    """Everything around the execution service, and the account it trades for."""

    sim: Simulator
    vault: OpenBaoDevServer
    signer: RunningSigner
    refdata_target: str
    account: SyndrAccount
    signing_key_id: str
    service_token: str  # what execution presents to the signer and reference data
    execution_vault_token: str
    data_dir: Path
    tokens: dict[str, str] = field(default_factory=dict)  # for callers of execution
    auth_config: str = ""

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "PORTICO_LISTEN_ADDR": "127.0.0.1:0",
            "PORTICO_AUTH_TOKENS": self.auth_config,
            "PORTICO_SERVICE_TOKEN": self.service_token,
            "PORTICO_VAULT_ADDR": self.vault.addr,
            "PORTICO_VAULT_TOKEN": self.execution_vault_token,
            "PORTICO_EXECUTION_SIGNER_ADDR": self.signer.target,
            "PORTICO_EXECUTION_REFDATA_ADDR": self.refdata_target,
            "PORTICO_EXECUTION_JOURNAL_DB": str(self.data_dir / "journal.sqlite3"),
            "PORTICO_EXECUTION_RECONCILE_SECONDS": "0.2",
            "PORTICO_SYNDR_HTTP_URL": self.sim.http_url,
            "PORTICO_SYNDR_WS_URL": self.sim.ws_url,
            "PORTICO_SHUTDOWN_GRACE_SECONDS": "1",
            **extra,
        }


@dataclass
class RunningExecution:
    app: ExecutionApp
    target: str
    stack: ExecutionStack

    def metadata(self, scope: str = "trade") -> tuple[tuple[str, str]]:
        return bearer(self.stack.tokens[scope])

    def stub(self, channel: grpc.aio.Channel) -> pb_grpc.ExecutionServiceStub:
        return pb_grpc.ExecutionServiceStub(channel)


async def provision_account(sim: Simulator, vault: OpenBaoDevServer, key_prefix: str) -> tuple[SyndrAccount, str]:
    """A registered venue account whose signing key lives in Vault and whose record execution can read."""
    account_secret = generate_private_key()
    account_key = Secp256k1Key(account_secret)
    signing_secret = generate_private_key()
    signing_key = Secp256k1Key(signing_secret)
    async with SyndrHttpClient(sim.http_url) as http:
        account = await register(http, account_key=account_key, signing_key=signing_key)
    signing_key_id = f"{key_prefix}-signing"
    account_key_id = f"{key_prefix}-account"
    async with VaultSession(VaultSettings(addr=vault.addr, auth_method="token", token=vault.root_token)) as session:
        admin = KeyAdmin(session, KeyPaths())
        await admin.import_key(signing_key_id, signing_secret.hex(), KeyPolicy.build(
            primary_types=["Order", "SignKey"], domain_names=[typed_data.SYNDR_DOMAIN_NAME],
            chain_ids=[typed_data.SYNDR_CHAIN_ID]))
        await admin.import_key(account_key_id, account_secret.hex(), KeyPolicy.build(
            primary_types=["RegisterSigningKey"], domain_names=[typed_data.SYNDR_DOMAIN_NAME],
            chain_ids=[typed_data.SYNDR_CHAIN_ID]))
        await VenueAccountStore(session).put(VenueAccount(
            venue="syndr", account=account.address, credentials=account.credentials,
            signing_key_id=signing_key_id, signing_key_address=signing_key.address, account_key_id=account_key_id))
    return account, signing_key_id


@contextlib.asynccontextmanager
async def execution_stack(sim: Simulator, vault: OpenBaoDevServer, data_dir: Path) -> AsyncIterator[ExecutionStack]:
    """Signer and reference data (synced from `sim`) running, and a provisioned account."""
    import secrets

    prefix = f"exec-{secrets.token_hex(4)}"
    account, signing_key_id = await provision_account(sim, vault, prefix)
    vault.write_policy("portico-execution", EXECUTION_POLICY)
    execution_vault_token = vault.client().auth.token.create(policies=["portico-execution"], ttl="1h")[
        "auth"]["client_token"]
    vault.write_policy("portico-signer", SIGNER_POLICY)
    signer_vault_token = vault.client().auth.token.create(policies=["portico-signer"], ttl="1h")["auth"]["client_token"]
    # One token list for the whole stack, as `portico up` has: execution presents the trade token (it includes
    # read) to the signer and to reference data, and the tests call execution with the same tokens.
    tokens, auth_config = make_tokens()
    shared = {"PORTICO_AUTH_TOKENS": auth_config}
    async with running_signer(vault.addr, signer_vault_token, data_dir / "signer", shared) as signer, \
            running_refdata(sim.http_url, {"PORTICO_REFDATA_DB": str(data_dir / "refdata.sqlite3")},
                            shared) as refdata:
        async with open_channel(refdata.target) as channel:
            await refdata.stub(channel).SyncInstruments(refdata_pb.SyncInstrumentsRequest(venue="syndr"),
                                                        metadata=bearer(tokens["admin"]))
        yield ExecutionStack(sim=sim, vault=vault, signer=signer, refdata_target=refdata.target, account=account,
                             signing_key_id=signing_key_id, service_token=tokens["trade"],
                             execution_vault_token=execution_vault_token, data_dir=data_dir, tokens=tokens,
                             auth_config=auth_config)


@contextlib.asynccontextmanager
async def running_execution(stack: ExecutionStack, env: Mapping[str, str] | None = None,
                            *, wait_serving: bool = True) -> AsyncIterator[RunningExecution]:
    full_env = stack.env(**dict(env or {}))
    app = ExecutionApp(ExecutionSettings.from_env(full_env), full_env)
    await app.start()
    try:
        if wait_serving:
            await asyncio.wait_for(app.reconciled.wait(), 30)
        yield RunningExecution(app, f"127.0.0.1:{app.port}", stack)
    finally:
        await app.aclose(grace_s=0.5)


async def rotate_api_key(stack: ExecutionStack, *, update_vault: bool = True) -> ApiCredentials:
    """A key rotation as the venue and the account service do it: a new API key, the account's record in Vault
    names it (unless `update_vault` is False: then `store_api_key` later), the old key is deactivated at the
    venue. Returns the new key pair."""
    old = stack.account.credentials
    async with SyndrHttpClient(stack.sim.http_url, credentials=old) as venue:
        created = models.parse_created_api_key((await venue.call(
            "private/create_api_key", {"scope": int(ApiKeyScope.ADMIN), "name": "rotated"})).result)
    new = ApiCredentials(created.api_key, created.api_secret)
    if update_vault:
        await store_api_key(stack, new)
    async with SyndrHttpClient(stack.sim.http_url, credentials=new) as venue:
        await venue.call("private/deactivate_api_key", {"api_key": old.api_key, "api_secret": old.api_secret})
    return new


async def store_api_key(stack: ExecutionStack, credentials: ApiCredentials) -> None:
    """Make the account's record in Vault name `credentials`."""
    async with VaultSession(VaultSettings(addr=stack.vault.addr, auth_method="token",
                                          token=stack.vault.root_token)) as session:
        store = VenueAccountStore(session)
        record = await store.get("syndr", stack.account.address)
        await store.put(dataclasses.replace(record, credentials=credentials))
        await store.aclose()


async def until_journaled(running: RunningExecution, client_order_id: str, state: OrderState,
                          timeout_s: float = 20.0) -> None:
    """Wait until the journal itself holds `state` for the order of `client_order_id` (not GetOrder: it reads the
    venue and journals what it says, so it would hide whether anything else kept the journal up to date)."""
    async with asyncio.timeout(timeout_s):
        while True:
            entry = await running.app.journal.get("syndr", running.stack.account.address, client_order_id)
            if entry is not None and entry.state == state:
                return
            await asyncio.sleep(0.05)


def resting_bid(sim: Simulator, symbol: str = "ETH-PERP", fraction: str = "0.8") -> str:
    """A bid price on the tick, `fraction` of the best bid: well below the market, so the order rests."""
    tick = sim.engine.instrument(symbol).tick_size
    return str(((sim.engine.book(symbol, 1).bids[0][0] * Decimal(fraction)) // tick) * tick)
