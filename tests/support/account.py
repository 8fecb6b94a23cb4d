"""The account service in-process, over the same stack as execution (simulator, OpenBao, signer, refdata)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import grpc

from portico.account.service import AccountApp
from portico.account.settings import AccountSettings
from portico.account.v1 import account_service_pb2_grpc as pb_grpc
from portico.runtime.client import bearer
from tests.support.execution import VAULT_POLICIES, ExecutionStack

ACCOUNT_POLICY = (VAULT_POLICIES / "account.hcl").read_text()


@dataclass
class RunningAccount:
    app: AccountApp
    target: str
    stack: ExecutionStack

    def metadata(self, scope: str = "admin") -> tuple[tuple[str, str]]:
        return bearer(self.stack.tokens[scope])

    def stub(self, channel: grpc.aio.Channel) -> pb_grpc.AccountServiceStub:
        return pb_grpc.AccountServiceStub(channel)


@contextlib.asynccontextmanager
async def running_account(stack: ExecutionStack, env: Mapping[str, str] | None = None) -> AsyncIterator[RunningAccount]:
    """The account service with its own Vault token, bound to deploy/vault/account.hcl."""
    stack.vault.write_policy("portico-account", ACCOUNT_POLICY)
    token = stack.vault.client().auth.token.create(policies=["portico-account"], ttl="1h")["auth"]["client_token"]
    full_env = {
        "PORTICO_LISTEN_ADDR": "127.0.0.1:0",
        "PORTICO_AUTH_TOKENS": stack.auth_config,
        "PORTICO_SERVICE_TOKEN": stack.service_token,
        "PORTICO_VAULT_ADDR": stack.vault.addr,
        "PORTICO_VAULT_TOKEN": token,
        "PORTICO_ACCOUNT_SIGNER_ADDR": stack.signer.target,
        "PORTICO_ACCOUNT_REFDATA_ADDR": stack.refdata_target,
        "PORTICO_SYNDR_HTTP_URL": stack.sim.http_url,
        "PORTICO_SYNDR_WS_URL": stack.sim.ws_url,
        "PORTICO_SHUTDOWN_GRACE_SECONDS": "1",
        **dict(env or {}),
    }
    app = AccountApp(AccountSettings.from_env(full_env), full_env)
    await app.start()
    try:
        yield RunningAccount(app, f"127.0.0.1:{app.port}", stack)
    finally:
        await app.aclose(grace_s=0.5)


