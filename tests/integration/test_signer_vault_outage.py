"""Vault sealed, unreachable, absent at start, refusing the signer's token, and AppRole with short-lived tokens."""

from __future__ import annotations

import asyncio
import io
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
from portico.runtime.server import LIVENESS_SERVICE
from portico.runtime.signing_keys import KeyAdmin, KeyPaths, KeyPolicy
from portico.runtime.vault import VaultSession, VaultSettings
from portico.signer.v1 import signer_service_pb2 as pb
from portico.venues.syndr import typed_data as syndr

REPO = Path(__file__).resolve().parents[2]
KEY = "outage-key"
OTHER_KEY = "outage-other-key"  # a key the one-key policy below does not grant
SERVICE = "portico.signer.v1.SignerService"
ONE_KEY_POLICY = f"""
path "secret/data/portico/signer/keys/{KEY}" {{ capabilities = ["read"] }}
path "secret/data/portico/signer/policies/{KEY}" {{ capabilities = ["read"] }}
"""


@pytest.fixture(scope="module")
def vault() -> Iterator[OpenBaoDevServer]:
    """A Vault of this module's own: these tests seal it."""
    with OpenBaoDevServer() as server:
        client = server.client()
        client.sys.create_or_update_policy("signer", (REPO / "deploy" / "vault" / "signer.hcl").read_text())
        client.sys.create_or_update_policy("signer-one-key", ONE_KEY_POLICY)
        yield server


@pytest.fixture(scope="module")
async def signer_token(vault: OpenBaoDevServer) -> str:
    async with VaultSession(VaultSettings(addr=vault.addr, auth_method="token", token=vault.root_token)) as session:
        for key_id in (KEY, OTHER_KEY):
            await KeyAdmin(session, KeyPaths()).create(key_id, KeyPolicy.build(
                primary_types=["Order"], domain_names=["Syndr"], chain_ids=[421614]))
    return str(vault.client().auth.token.create(policies=["signer"], ttl="1h")["auth"]["client_token"])


@pytest.fixture
async def proxy(vault: OpenBaoDevServer) -> AsyncIterator[TcpProxy]:
    async with TcpProxy("127.0.0.1", vault.port) as proxy:
        yield proxy


def order_request(key_id: str = KEY) -> pb.SignRequest:
    data = syndr.order_typed_data(
        verifying_contract="0x" + "ab" * 20, account="0x" + "12" * 20, instrument_id=1, is_buy=False, order_type=0,
        time_in_force=0, post_only=True, reduce_only=False, price=Decimal("2500"), amount=Decimal("1"),
        salt=secrets.randbits(64), expiration=1_900_000_000_000, timestamp=1_800_000_000_000)
    return pb.SignRequest(key_id=key_id, typed_data_json=json.dumps(data))


async def readiness(channel: grpc.aio.Channel) -> int:
    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=SERVICE))
    return int(reply.status)


async def until(predicate, timeout_s: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def sign_code(channel: grpc.aio.Channel, signer: RunningSigner,
                    key_id: str = KEY) -> tuple[grpc.StatusCode, str | None]:
    try:
        await stub(channel).Sign(order_request(key_id), metadata=signer.metadata(), timeout=10)
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
        # Readiness (the overall status as well as the service's) follows Vault; liveness stays up.
        health = health_pb2_grpc.HealthStub(channel)
        overall = await health.Check(health_pb2.HealthCheckRequest(service=""))
        assert overall.status == health_pb2.HealthCheckResponse.NOT_SERVING
        alive = await health.Check(health_pb2.HealthCheckRequest(service=LIVENESS_SERVICE))
        assert alive.status == health_pb2.HealthCheckResponse.SERVING
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


def warnings_about_vault(lines: io.StringIO) -> list[dict[str, object]]:
    """The signer's WARNING lines about its access to Vault (the readiness watch's)."""
    records = [json.loads(line) for line in lines.getvalue().splitlines() if line.startswith("{")]
    return [r for r in records if r.get("level") == "WARNING" and r.get("vault_access")]


async def test_a_token_vault_refuses_is_not_serving_until_vault_accepts_one(
        vault: OpenBaoDevServer, signer_token: str, tmp_path: Path, log_lines: io.StringIO) -> None:
    """A revoked token is an outage of the whole signer: readiness says so (once in the logs), and comes back
    by itself when the token file holds a token Vault accepts."""
    root = vault.client()
    first = str(root.auth.token.create(policies=["signer"], ttl="1h")["auth"]["client_token"])
    token_file = tmp_path / "vault-token"
    token_file.write_text(first + "\n")
    env = {"PORTICO_VAULT_TOKEN": "", "PORTICO_VAULT_TOKEN_FILE": str(token_file)}
    async with running_signer(vault.addr, "", tmp_path, env=env) as signer, open_channel(signer.target) as channel:
        assert await sign_code(channel, signer) == (grpc.StatusCode.OK, None)
        assert await readiness(channel) == health_pb2.HealthCheckResponse.SERVING

        root.auth.token.revoke(first)
        await until(lambda: _is(readiness(channel), health_pb2.HealthCheckResponse.NOT_SERVING))
        assert await sign_code(channel, signer) == (grpc.StatusCode.UNAVAILABLE, "VAULT_PERMISSION_DENIED")
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=LIVENESS_SERVICE))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING  # alive, only not ready
        for _ in range(3):  # more checks during the same outage: still one warning
            await signer.app.vault_watch.check()
        assert await readiness(channel) == health_pb2.HealthCheckResponse.NOT_SERVING

        second = str(root.auth.token.create(policies=["signer"], ttl="1h")["auth"]["client_token"])
        token_file.write_text(second + "\n")
        await until(lambda: _is(readiness(channel), health_pb2.HealthCheckResponse.SERVING))
        assert await sign_code(channel, signer) == (grpc.StatusCode.OK, None)

    warnings = warnings_about_vault(log_lines)
    assert [w["vault_access"] for w in warnings] == ["refused"], warnings
    text = log_lines.getvalue()
    assert first not in text and second not in text


async def test_a_static_token_revoked_before_start_is_not_serving(
        vault: OpenBaoDevServer, tmp_path: Path) -> None:
    token = str(vault.client().auth.token.create(policies=["signer"], ttl="1h")["auth"]["client_token"])
    vault.client().auth.token.revoke(token)
    async with running_signer(vault.addr, token, tmp_path) as signer, open_channel(signer.target) as channel:
        assert await readiness(channel) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert await sign_code(channel, signer) == (grpc.StatusCode.UNAVAILABLE, "VAULT_PERMISSION_DENIED")


async def test_a_key_the_policy_does_not_grant_fails_alone(vault: OpenBaoDevServer, signer_token: str,
                                                           tmp_path: Path, log_lines: io.StringIO) -> None:
    """One key Vault will not let the signer read is that key's problem, not an outage: the signer stays
    ready for its other keys. (A caller choosing key ids must not be able to take the signer out of rotation.)"""
    token = str(vault.client().auth.token.create(policies=["signer-one-key"], ttl="1h")["auth"]["client_token"])
    async with running_signer(vault.addr, token, tmp_path) as signer, open_channel(signer.target) as channel:
        assert await sign_code(channel, signer) == (grpc.StatusCode.OK, None)
        assert await sign_code(channel, signer, OTHER_KEY) == (grpc.StatusCode.UNAVAILABLE,
                                                                "VAULT_PERMISSION_DENIED")
        assert await sign_code(channel, signer, "no-such-key") == (grpc.StatusCode.UNAVAILABLE,
                                                                    "VAULT_PERMISSION_DENIED")
        await signer.app.vault_watch.check()
        assert await readiness(channel) == health_pb2.HealthCheckResponse.SERVING
        assert await sign_code(channel, signer) == (grpc.StatusCode.OK, None)
    assert warnings_about_vault(log_lines) == []


async def test_a_rate_limited_token_check_keeps_the_signer_ready(vault: OpenBaoDevServer, signer_token: str,
                                                                 tmp_path: Path) -> None:
    """lookup-self refused by a rate limit (Vault's health exempt from it) says nothing about the token: the
    signer stays ready and keeps its keys rather than reload them from a Vault already limiting it."""
    quota = "sys/quotas/rate-limit/signer-lookup-self"
    async with running_signer(vault.addr, signer_token, tmp_path) as signer, open_channel(signer.target) as channel:
        assert await sign_code(channel, signer) == (grpc.StatusCode.OK, None)
        vault.client().write_data(quota, data={"path": "auth/token/lookup-self", "rate": 1, "interval": "1h"})
        try:
            for _ in range(3):
                assert await signer.app.vault_watch.check() == "available"
            assert len(signer.app.keys) == 1
            assert await readiness(channel) == health_pb2.HealthCheckResponse.SERVING
            assert await sign_code(channel, signer) == (grpc.StatusCode.OK, None)
        finally:
            vault.client().delete(quota)


async def test_approle_logs_in_again_when_its_token_is_revoked(vault: OpenBaoDevServer, tmp_path: Path) -> None:
    """With a login method, a revoked token is replaced by a fresh login at the next check: no outage."""
    mount = "approle-signer-revoked"
    role_id, secret_id = vault.enable_approle("signer-revoked", policies=["signer"], token_ttl="1h",
                                              token_max_ttl="2h", mount=mount)
    env = {"PORTICO_VAULT_AUTH": "approle", "PORTICO_VAULT_ROLE_ID": role_id, "PORTICO_VAULT_SECRET_ID": secret_id,
           "PORTICO_VAULT_APPROLE_MOUNT": mount, "PORTICO_VAULT_TOKEN": ""}
    async with running_signer(vault.addr, "", tmp_path, env=env) as signer, open_channel(signer.target) as channel:
        assert await sign_code(channel, signer) == (grpc.StatusCode.OK, None)
        vault.revoke_logins(mount)
        assert await signer.app.vault_watch.check() == "available"
        assert await readiness(channel) == health_pb2.HealthCheckResponse.SERVING
        assert await sign_code(channel, signer) == (grpc.StatusCode.OK, None)

        # The login itself refused (secret_id gone) as well as the token: an outage until Vault accepts a login.
        vault.client().write_data(f"auth/{mount}/role/signer-revoked/secret-id/destroy", data={"secret_id": secret_id})
        vault.revoke_logins(mount)
        await until(lambda: _is(readiness(channel), health_pb2.HealthCheckResponse.NOT_SERVING))
        assert await sign_code(channel, signer) == (grpc.StatusCode.UNAVAILABLE, "VAULT_PERMISSION_DENIED")


async def test_a_login_token_without_the_default_policy_is_ready(vault: OpenBaoDevServer, signer_token: str,
                                                                  tmp_path: Path, log_lines: io.StringIO) -> None:
    """A token Vault gives without its `default` policy may not look itself up: that must read neither as
    refused nor as a dead token to replace at every check."""
    mount = "approle-signer-no-default"
    role_id, secret_id = vault.enable_approle("signer-no-default", policies=["signer"], token_ttl="1h",
                                              token_max_ttl="2h", mount=mount)
    vault.client().write_data(f"auth/{mount}/role/signer-no-default", data={"token_no_default_policy": True})
    env = {"PORTICO_VAULT_AUTH": "approle", "PORTICO_VAULT_ROLE_ID": role_id, "PORTICO_VAULT_SECRET_ID": secret_id,
           "PORTICO_VAULT_APPROLE_MOUNT": mount, "PORTICO_VAULT_TOKEN": ""}
    async with running_signer(vault.addr, "", tmp_path, env=env) as signer, open_channel(signer.target) as channel:
        for _ in range(3):
            assert await signer.app.vault_watch.check() == "available"
        assert await readiness(channel) == health_pb2.HealthCheckResponse.SERVING
        assert await sign_code(channel, signer) == (grpc.StatusCode.OK, None)
    events = [json.loads(line).get("vault_event") for line in log_lines.getvalue().splitlines()
              if line.startswith("{")]
    assert events.count("login") == 1 and "token_rejected" not in events, events


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
