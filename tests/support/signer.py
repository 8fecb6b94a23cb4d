"""Run the signer in-process on a free port, wired to a real OpenBao, for tests."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

from portico.runtime.auth import hash_token, new_token
from portico.runtime.signing_keys import KeyAdmin, KeyPaths, KeyPolicy
from portico.runtime.vault import VaultSession, VaultSettings
from portico.signer.service import SignerApp
from portico.signer.settings import SignerSettings
from portico.signer.v1 import signer_service_pb2_grpc
from tests.support.openbao import OpenBaoDevServer
from tests.support.ports import free_port

REPO = Path(__file__).resolve().parents[2]
TOKEN_SCOPES = {"read": ["read"], "trade": ["read", "trade"], "admin": ["read", "trade", "admin"]}


@dataclass
class RunningSigner:
    app: SignerApp
    target: str
    tokens: dict[str, str]

    def metadata(self, scope: str = "trade") -> tuple[tuple[str, str]]:
        return (("authorization", f"Bearer {self.tokens[scope]}"),)


def make_tokens() -> tuple[dict[str, str], str]:
    """Plain tokens per scope, and the PORTICO_AUTH_TOKENS value for them."""
    tokens = {scope: new_token() for scope in TOKEN_SCOPES}
    config = json.dumps([{"name": f"test-{scope}", "sha256": hash_token(token), "scopes": TOKEN_SCOPES[scope]}
                         for scope, token in tokens.items()])
    return tokens, config


def signer_vault_token(openbao: OpenBaoDevServer) -> str:
    """A Vault token bound to the signer's own policy file (deploy/vault/signer.hcl), as `portico up` and
    Kubernetes give it."""
    client = openbao.client()
    client.sys.create_or_update_policy("signer", (REPO / "deploy" / "vault" / "signer.hcl").read_text())
    return str(client.auth.token.create(policies=["signer"], ttl="1h")["auth"]["client_token"])


async def create_key(openbao: OpenBaoDevServer, key_id: str, policy: KeyPolicy) -> str:
    """A new signing key in Vault, created as an operator would (`portico signer keys create`); its address."""
    async with VaultSession(VaultSettings(addr=openbao.addr, auth_method="token", token=openbao.root_token)) as vault:
        return await KeyAdmin(vault, KeyPaths()).create(key_id, policy)


@contextlib.asynccontextmanager
async def running_signer(vault_addr: str, vault_token: str, data_dir: Path,
                         env: Mapping[str, str] | None = None) -> AsyncIterator[RunningSigner]:
    tokens, auth_config = make_tokens()
    port = free_port()
    full_env = {
        "PORTICO_LISTEN_ADDR": f"127.0.0.1:{port}",
        "PORTICO_VAULT_ADDR": vault_addr,
        "PORTICO_VAULT_TOKEN": vault_token,
        "PORTICO_AUTH_TOKENS": auth_config,
        "PORTICO_SIGNER_WATERMARK_DB": str(data_dir / "watermarks.sqlite3"),
        "PORTICO_SIGNER_VAULT_CHECK_SECONDS": "0.2",
        "PORTICO_SHUTDOWN_GRACE_SECONDS": "1",
        **(env or {}),
    }
    app = SignerApp(SignerSettings.from_env(full_env), full_env)
    await app.start()
    try:
        yield RunningSigner(app, f"127.0.0.1:{app.port}", tokens)
    finally:
        await app.aclose(grace_s=0.5)


def stub(channel: grpc.aio.Channel) -> signer_service_pb2_grpc.SignerServiceStub:
    return signer_service_pb2_grpc.SignerServiceStub(channel)
