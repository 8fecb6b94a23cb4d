"""Vault sealed, unreachable, absent at start, and AppRole with short-lived tokens."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tests.support.openbao import OpenBaoDevServer
from tests.support.signer import RunningSigner, running_signer, stub
from tests.support.tcp_proxy import TcpProxy

from portico.runtime.client import open_channel
from portico.runtime.errors import error_info
from portico.runtime.signing_keys import KeyAdmin, KeyPaths, KeyPolicy
from portico.runtime.vault import VaultSession, VaultSettings
from portico.signer.v1 import signer_service_pb2 as pb
from portico.venues.syndr import typed_data as syndr

REPO = Path(__file__).resolve().parents[2]
KEY = "outage-key"
SERVICE = "portico.signer.v1.SignerService"


@pytest.fixture(scope="module")
def vault() -> Iterator[OpenBaoDevServer]:
    """A Vault of this module's own: these tests seal it."""
    with OpenBaoDevServer() as server:
        client = server.client()
        client.sys.create_or_update_policy("signer", (REPO / "deploy" / "vault" / "signer.hcl").read_text())
        yield server


@pytest.fixture(scope="module")
async def signer_token(vault: OpenBaoDevServer) -> str:
    async with VaultSession(VaultSettings(addr=vault.addr, auth_method="token", token=vault.root_token)) as session:
        await KeyAdmin(session, KeyPaths()).create(KEY, KeyPolicy.build(
            primary_types=["Order"], domain_names=["Syndr"], chain_ids=[421614]))
    return str(vault.client().auth.token.create(policies=["signer"], ttl="1h")["auth"]["client_token"])


@pytest.fixture
async def proxy(vault: OpenBaoDevServer) -> AsyncIterator[TcpProxy]:
    async with TcpProxy("127.0.0.1", vault.port) as proxy:
        yield proxy


def order_request() -> pb.SignRequest:
    data = syndr.order_typed_data(
        verifying_contract="0x" + "ab" * 20, account="0x" + "12" * 20, instrument_id=1, is_buy=False, order_type=0,
        time_in_force=0, post_only=True, reduce_only=False, price=Decimal("2500"), amount=Decimal("1"),
        salt=secrets.randbits(64), expiration=1_900_000_000_000, timestamp=1_800_000_000_000)
    return pb.SignRequest(key_id=KEY, typed_data_json=json.dumps(data))


async def readiness(channel: grpc.aio.Channel) -> int:
    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=SERVICE))
    return int(reply.status)


async def until(predicate, timeout_s: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def sign_code(channel: grpc.aio.Channel, signer: RunningSigner) -> tuple[grpc.StatusCode, str | None]:
    try:
        await stub(channel).Sign(order_request(), metadata=signer.metadata(), timeout=10)
    except grpc.aio.AioRpcError as exc:
        info = error_info(exc)
        return exc.code(), info.reason if info else None
    return grpc.StatusCode.OK, None


async def test_unreachable_vault_is_unavailable_then_recovers(proxy: TcpProxy, signer_token: str,
                                                              tmp_path: Path) -> None:
    async with running_signer(f"http://{proxy.addr}", signer_token, tmp_path) as signer, \
            open_channel(signer.target) as channel:
        assert await sign_code(channel, signer) == (grpc.StatusCode.OK, None)
        await proxy.block()
        await until(lambda: _is(readiness(channel), health_pb2.HealthCheckResponse.NOT_SERVING))
        assert await sign_code(channel, signer) == (grpc.StatusCode.UNAVAILABLE, "VAULT_UNAVAILABLE")
        # Liveness stays up: only the service's readiness follows Vault.
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        await proxy.unblock()
        await until(lambda: _is(readiness(channel), health_pb2.HealthCheckResponse.SERVING))
        assert await sign_code(channel, signer) == (grpc.StatusCode.OK, None)


async def test_sealed_vault_is_unavailable_then_recovers(vault: OpenBaoDevServer, signer_token: str,
                                                         tmp_path: Path) -> None:
    async with running_signer(vault.addr, signer_token, tmp_path) as signer, open_channel(signer.target) as channel:
        assert await sign_code(channel, signer) == (grpc.StatusCode.OK, None)
        vault.seal()
        try:
            await until(lambda: _is(readiness(channel), health_pb2.HealthCheckResponse.NOT_SERVING))
            code, reason = await sign_code(channel, signer)
            assert code == grpc.StatusCode.UNAVAILABLE
            assert reason in ("VAULT_SEALED", "VAULT_UNAVAILABLE")
        finally:
            vault.unseal()
        await until(lambda: _is(readiness(channel), health_pb2.HealthCheckResponse.SERVING))
        assert await sign_code(channel, signer) == (grpc.StatusCode.OK, None)


async def test_signer_started_while_vault_is_down_recovers(proxy: TcpProxy, signer_token: str,
                                                           tmp_path: Path) -> None:
    await proxy.block()
    async with running_signer(f"http://{proxy.addr}", signer_token, tmp_path) as signer, \
            open_channel(signer.target) as channel:
        assert await readiness(channel) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert (await sign_code(channel, signer))[0] == grpc.StatusCode.UNAVAILABLE
        await proxy.unblock()
        await until(lambda: _is(readiness(channel), health_pb2.HealthCheckResponse.SERVING), timeout_s=20)
        await until(lambda: _ok(sign_code(channel, signer)), timeout_s=20)


async def test_approle_with_short_token_ttl_keeps_signing(vault: OpenBaoDevServer, signer_token: str,
                                                          tmp_path: Path) -> None:
    role_id, secret_id = vault.enable_approle("signer-short", policies=["signer"], token_ttl="2s",
                                              token_max_ttl="4s", secret_id_ttl="10m")
    env = {"PORTICO_VAULT_AUTH": "approle", "PORTICO_VAULT_ROLE_ID": role_id, "PORTICO_VAULT_SECRET_ID": secret_id,
           "PORTICO_VAULT_TOKEN": "", "PORTICO_SIGNER_KEY_CACHE_SECONDS": "0.5"}
    async with running_signer(vault.addr, "", tmp_path, env=env) as signer, open_channel(signer.target) as channel:
        deadline = time.monotonic() + 7  # beyond the token's max ttl: renewals, then a fresh login
        while time.monotonic() < deadline:
            assert await sign_code(channel, signer) == (grpc.StatusCode.OK, None)
            await asyncio.sleep(0.6)


async def _is(awaitable, expected: int) -> bool:  # type: ignore[no-untyped-def]
    return bool(await awaitable == expected)


async def _ok(awaitable) -> bool:  # type: ignore[no-untyped-def]
    return bool((await awaitable)[0] == grpc.StatusCode.OK)
