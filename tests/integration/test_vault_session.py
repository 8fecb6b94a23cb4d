"""VaultSession against a real OpenBao dev server (no mocks).

One server serves the module; tests that must destroy a server (restart) start
their own.  Unreachability is real too: a TcpProxy between session and server
is cut and restored.  The Kubernetes TokenReview API, which cannot run here, is
the only thing stood in for, by a loopback HTTP server that OpenBao calls.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
import traceback
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from tests.support.kubernetes import TokenReviewApi
from tests.support.openbao import OpenBaoDevServer
from tests.support.ports import free_port
from tests.support.tcp_proxy import TcpProxy

from portico.runtime.vault import (
    VAULT_ENV_DOC,
    VaultAuthError,
    VaultCasMismatch,
    VaultError,
    VaultNotFound,
    VaultSealed,
    VaultSession,
    VaultSettings,
    VaultUnavailable,
)

APP_POLICY = """
path "secret/data/app/*"     { capabilities = ["create", "read", "update", "list"] }
path "secret/metadata/app/*" { capabilities = ["create", "read", "update", "list"] }
"""

# Any parseable CA certificate: OpenBao requires one outside a pod, and never uses
# it for the http:// fake API server.  Public certificate only, no key.
FAKE_K8S_CA = """-----BEGIN CERTIFICATE-----
MIIBgTCCASegAwIBAgIUSRFu8Q8/mRmSiUbXb5QjBljuH8MwCgYIKoZIzj0EAwIw
FjEUMBIGA1UEAwwLZmFrZS1rOHMtY2EwHhcNMjYxMTIxMDk0NzEyWhcNMzYxMTE4
MDk0NzEyWjAWMRQwEgYDVQQDDAtmYWtlLWs4cy1jYTBZMBMGByqGSM49AgEGCCqG
SM49AwEHA0IABPgi7BWV25mmrdb9QkbW6NFVmixq0WUGyf37fb8pXYAseAr6tVxj
GrKb8RUyAwnUJo53/BqvyDGlS+KLXNdGTZOjUzBRMB0GA1UdDgQWBBSYS4Dj8KBj
gfpahNfiFeRo+US4PjAfBgNVHSMEGDAWgBSYS4Dj8KBjgfpahNfiFeRo+US4PjAP
BgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0gAMEUCIBM/byZteTUC5UCEswT7
TLXdqToUKh87kWqAk8AI7e/BAiEAsiKQHWVfXZ/oVFncysyp/4ECXh1QUD+3makS
P4HoPt8=
-----END CERTIFICATE-----
"""


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBaoDevServer]:
    with OpenBaoDevServer(workdir=tmp_path_factory.mktemp("openbao")) as server:
        server.write_policy("portico-app", APP_POLICY)
        yield server


@pytest.fixture
def prefix() -> str:
    """A KV folder of its own for each test."""
    return f"app/{uuid.uuid4().hex[:10]}"


@pytest.fixture
def vault_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="portico.vault")
    return caplog


def events(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "vault_event", None) == event]


def approle(
    bao: OpenBaoDevServer, addr: str | None = None, *, ttl: str = "60s", max_ttl: str = "600s", **kw: Any
) -> VaultSettings:
    """A fresh AppRole (own role name) with the app policy, as settings."""
    role = f"r-{uuid.uuid4().hex[:8]}"
    role_id, secret_id = bao.enable_approle(role, ["portico-app"], ttl, max_ttl, 0)
    return VaultSettings(
        addr=addr or bao.addr,
        auth_method="approle",
        approle_role_id=role_id,
        approle_secret_id=secret_id,
        **kw,
    )


async def read_for(session: VaultSession, path: str, seconds: float, every: float = 0.25) -> int:
    """Read `path` repeatedly for `seconds`; every read must succeed.  Returns the count."""
    reads = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert await session.read_kv(path) == {"v": "1"}
        reads += 1
        await asyncio.sleep(every)
    return reads


async def wait_until(predicate: Any, within_s: float, what: str) -> None:
    """Poll `predicate`; on timeout, fail with every task's stack to show what is stuck."""
    deadline = time.monotonic() + within_s
    while not predicate():
        if time.monotonic() > deadline:
            stacks = io.StringIO()
            for task in asyncio.all_tasks():
                task.print_stack(file=stacks)
            raise AssertionError(f"timed out after {within_s}s waiting for {what}\n{stacks.getvalue()}")
        await asyncio.sleep(0.05)


# --------------------------------------------------------------------------- basics


async def test_health_of_active_server(bao: OpenBaoDevServer) -> None:
    async with VaultSession(VaultSettings(addr=bao.addr, token=bao.root_token)) as vault:
        health = await vault.health()
    assert health.reachable and health.initialized and health.available
    assert not health.sealed and not health.standby
    assert health.version


async def test_token_auth_round_trip(bao: OpenBaoDevServer, prefix: str) -> None:
    session = VaultSession(VaultSettings(addr=bao.addr, token=bao.root_token))
    async with session as vault:
        assert vault.authenticated
        assert await vault.write_kv(f"{prefix}/venue/deribit", {"key": "k1", "secret": "s1"}) == 1
        assert await vault.write_kv(f"{prefix}/venue/deribit", {"key": "k2", "secret": "s2"}) == 2
        assert await vault.read_kv(f"/{prefix}/venue/deribit/") == {"key": "k2", "secret": "s2"}

        with pytest.raises(VaultCasMismatch) as cas_err:
            await vault.write_kv(f"{prefix}/venue/deribit", {"key": "k3"}, cas=0)
        assert cas_err.value.status == 400
        assert await vault.write_kv(f"{prefix}/venue/deribit", {"key": "k3", "secret": "s3"}, cas=2) == 3
        assert await vault.write_kv(f"{prefix}/signer/key-1", {"pk": "00" * 32}, cas=0) == 1
        assert await vault.write_kv(f"{prefix}/top", {"x": 1}) == 1

        assert sorted(await vault.list_kv(prefix)) == ["signer/", "top", "venue/"]
        assert await vault.list_kv(f"{prefix}/venue/") == ["deribit"]
        assert await vault.list_kv(f"{prefix}/nothing-here") == []
        assert "app/" in await vault.list_kv("")

        await vault.write_kv_metadata(f"{prefix}/venue/deribit", {"owner": "execution", "rotated": "2026-01"})
        meta = await vault.read_kv_metadata(f"{prefix}/venue/deribit")
        assert meta.custom_metadata == {"owner": "execution", "rotated": "2026-01"}
        assert meta.current_version == 3
        assert sorted(meta.versions) == [1, 2, 3]
        assert not meta.versions[3].destroyed and meta.created_time

        with pytest.raises(ValueError, match="invalid vault path"):
            await vault.read_kv(f"{prefix}/../../sys/x")
    assert not session.authenticated
    with pytest.raises(VaultError, match="closed"):
        await session.read_kv(f"{prefix}/top")


async def test_not_found(bao: OpenBaoDevServer, prefix: str) -> None:
    async with VaultSession(VaultSettings(addr=bao.addr, token=bao.root_token)) as vault:
        with pytest.raises(VaultNotFound) as err:
            await vault.read_kv(f"{prefix}/missing")
        assert err.value.status == 404 and err.value.operation == "read"
        assert f"{prefix}/missing" in str(err.value)
        with pytest.raises(VaultNotFound):
            await vault.read_kv_metadata(f"{prefix}/missing")
        assert await vault.list_kv(f"{prefix}/missing") == []
    wrong_mount = VaultSettings(addr=bao.addr, token=bao.root_token, kv_mount="no-such-mount")
    async with VaultSession(wrong_mount) as vault:
        with pytest.raises(VaultNotFound, match="no handler"):  # a bad mount is not an empty folder
            await vault.list_kv("app")


async def test_token_file_is_reread_when_token_is_rejected(
    bao: OpenBaoDevServer, prefix: str, tmp_path: Path
) -> None:
    """A token file rotated by an agent/sidecar is picked up without restarting the session."""
    root = bao.client()
    first = root.auth.token.create(policies=["portico-app"], ttl="60s")["auth"]["client_token"]
    token_file = tmp_path / "vault-token"
    token_file.write_text(first + "\n")
    async with VaultSession(VaultSettings(addr=bao.addr, token_file=str(token_file))) as vault:
        await vault.write_kv(f"{prefix}/s", {"v": "1"})
        root.auth.token.revoke(first)
        second = root.auth.token.create(policies=["portico-app"], ttl="60s")["auth"]["client_token"]
        token_file.write_text(second)
        assert await vault.read_kv(f"{prefix}/s") == {"v": "1"}

        root.auth.token.revoke(second)  # revoked and not replaced: a clear auth error
        with pytest.raises(VaultAuthError) as err:
            await vault.read_kv(f"{prefix}/s")
        assert second not in str(err.value)
        assert not vault.authenticated


async def test_approle_login_and_real_permission_denied(
    bao: OpenBaoDevServer, prefix: str, vault_log: pytest.LogCaptureFixture
) -> None:
    async with VaultSession(approle(bao)) as vault:
        assert vault.authenticated
        assert await vault.write_kv(f"{prefix}/creds", {"v": "1"}) == 1
        assert await vault.read_kv(f"{prefix}/creds") == {"v": "1"}
        # A policy denial is not an expired token: one lookup-self, no re-login storm.
        with pytest.raises(VaultAuthError) as err:
            await vault.read_kv("forbidden/thing")
        assert err.value.status == 403
        with pytest.raises(VaultAuthError):
            await vault.write_kv("forbidden/thing", {"v": "1"})
        assert vault.authenticated
    assert len(events(vault_log, "login")) == 1
    assert not events(vault_log, "token_rejected")


async def test_bad_approle_credentials_fail_start(bao: OpenBaoDevServer) -> None:
    good = approle(bao)
    bad = VaultSettings(
        addr=bao.addr, auth_method="approle", approle_role_id=good.approle_role_id, approle_secret_id="nope-nope"
    )
    session = VaultSession(bad)
    with pytest.raises(VaultAuthError, match="login"):
        await session.start()
    assert not session.authenticated
    await session.aclose()


# --------------------------------------------------------------------------- token lifecycle


async def test_renewal_keeps_session_alive_past_ttl(
    bao: OpenBaoDevServer, prefix: str, vault_log: pytest.LogCaptureFixture
) -> None:
    settings = approle(bao, ttl="2s", max_ttl="60s")
    async with VaultSession(settings) as vault:
        await vault.write_kv(f"{prefix}/s", {"v": "1"})
        await read_for(vault, f"{prefix}/s", 4.5)  # > 2x the token's TTL
        assert vault.authenticated
    assert len(events(vault_log, "renew")) >= 2
    assert len(events(vault_log, "login")) == 1, "renewal alone should have kept the first token"


async def test_relogin_when_token_reaches_max_ttl(
    bao: OpenBaoDevServer, prefix: str, vault_log: pytest.LogCaptureFixture
) -> None:
    settings = approle(bao, ttl="2s", max_ttl="4s")
    async with VaultSession(settings) as vault:
        await vault.write_kv(f"{prefix}/s", {"v": "1"})
        await read_for(vault, f"{prefix}/s", 5.5)  # past the 4 s max TTL
        assert vault.authenticated
    logins = events(vault_log, "login")
    assert len(logins) >= 2
    # Renewal either comes back short ("capped") or is refused once past the max TTL.
    assert {r.vault_reason for r in logins[1:]} <= {"max ttl", "renewal refused"}  # type: ignore[attr-defined]
    assert not events(vault_log, "token_rejected"), "re-login should happen before the token dies"


async def test_revoked_token_relogin_retries_reads_not_writes(
    bao: OpenBaoDevServer, prefix: str, vault_log: pytest.LogCaptureFixture
) -> None:
    role = f"r-{uuid.uuid4().hex[:8]}"
    mount = f"approle-{role}"  # own mount so revoking its logins touches nobody else
    role_id, secret_id = bao.enable_approle(role, ["portico-app"], "60s", "600s", 0, mount=mount)
    settings = VaultSettings(
        addr=bao.addr, auth_method="approle", approle_role_id=role_id, approle_secret_id=secret_id,
        approle_mount=mount,
    )
    async with VaultSession(settings) as vault:
        await vault.write_kv(f"{prefix}/s", {"v": "1"})

        bao.revoke_logins(mount)  # token gone, as if Vault forgot it
        # Concurrent readers all see the dead token; exactly one re-login serves them all.
        results = await asyncio.gather(*(vault.read_kv(f"{prefix}/s") for _ in range(12)))
        assert results == [{"v": "1"}] * 12
        assert len(events(vault_log, "token_rejected")) == 1
        assert len(events(vault_log, "login")) == 2

        bao.revoke_logins(mount)
        with pytest.raises(VaultAuthError, match="not retried"):
            await vault.write_kv(f"{prefix}/s", {"v": "2"})
        assert await vault.read_kv(f"{prefix}/s") == {"v": "1"}, "the rejected write must not have landed"
        assert await vault.write_kv(f"{prefix}/s", {"v": "2"}) == 2  # the session already re-logged in
    assert len(events(vault_log, "login")) == 3


async def test_aclose_right_after_a_token_refresh_does_not_hang(bao: OpenBaoDevServer) -> None:
    """Regression: with wait_for on 3.11, a cancel racing the wake-up was swallowed forever."""
    for _ in range(3):
        vault = VaultSession(VaultSettings(addr=bao.addr, token=bao.root_token))
        await vault.start()
        await asyncio.sleep(0.01)  # let the maintenance task park on its wake-up event
        vault._wake.set()  # white-box: what a re-login does, immediately followed by aclose()
        async with asyncio.timeout(5):
            await vault.aclose()


# --------------------------------------------------------------------------- outages


async def test_sealed_then_unsealed(bao: OpenBaoDevServer, prefix: str) -> None:
    async with VaultSession(approle(bao)) as vault:
        await vault.write_kv(f"{prefix}/s", {"v": "1"})
        bao.seal()
        try:
            with pytest.raises(VaultSealed) as err:
                await vault.read_kv(f"{prefix}/s")
            assert isinstance(err.value, VaultUnavailable) and err.value.status == 503
            with pytest.raises(VaultSealed):
                await vault.write_kv(f"{prefix}/s", {"v": "2"})
            health = await vault.health()
            assert health.reachable and health.sealed and not health.available
        finally:
            bao.unseal()
        assert await vault.read_kv(f"{prefix}/s") == {"v": "1"}
        assert (await vault.health()).available


async def test_unreachable_is_fast_and_recovers(bao: OpenBaoDevServer, prefix: str) -> None:
    async with TcpProxy("127.0.0.1", bao.port) as proxy:
        settings = approle(bao, f"http://{proxy.addr}", timeout_s=2.0)
        async with VaultSession(settings) as vault:
            await vault.write_kv(f"{prefix}/s", {"v": "1"})
            await proxy.block()
            started = time.monotonic()
            with pytest.raises(VaultUnavailable) as err:
                await vault.read_kv(f"{prefix}/s")
            assert not isinstance(err.value, VaultSealed)
            with pytest.raises(VaultUnavailable):
                await vault.write_kv(f"{prefix}/s", {"v": "2"})
            health = await vault.health()
            assert time.monotonic() - started < settings.timeout_s
            assert not health.reachable and not health.available

            await proxy.unblock()
            assert await vault.read_kv(f"{prefix}/s") == {"v": "1"}
            assert (await vault.health()).available


async def test_background_recovery_after_outage(
    bao: OpenBaoDevServer, prefix: str, vault_log: pytest.LogCaptureFixture
) -> None:
    """Vault down at start, then down for longer than the token TTL: the session heals itself."""
    async with TcpProxy("127.0.0.1", bao.port) as proxy:
        settings = approle(bao, f"http://{proxy.addr}", ttl="2s", max_ttl="60s", timeout_s=1.0)
        await proxy.block()
        vault = VaultSession(settings, backoff_initial_s=0.05, backoff_max_s=0.3)
        async with vault:  # does not raise: Vault being down is not a configuration error
            assert not vault.authenticated
            started = time.monotonic()
            outcomes = await asyncio.gather(
                *(vault.read_kv(f"{prefix}/s") for _ in range(8)), return_exceptions=True
            )
            assert all(isinstance(o, VaultUnavailable) for o in outcomes), outcomes
            assert time.monotonic() - started < settings.timeout_s
            await proxy.unblock()
            await wait_until(lambda: vault.authenticated, 10, "background login")
            await vault.write_kv(f"{prefix}/s", {"v": "1"})

            await proxy.block()
            await wait_until(lambda: not vault.authenticated, 10, "token expiry during the outage")
            await proxy.unblock()
            await wait_until(lambda: vault.authenticated, 10, "background re-login")
            assert await vault.read_kv(f"{prefix}/s") == {"v": "1"}


async def test_vault_restart_relogin(tmp_path: Path) -> None:
    """A restarted Vault has forgotten our token: the next request logs in again."""
    role_id, secret_id = str(uuid.uuid4()), str(uuid.uuid4())

    def provision(server: OpenBaoDevServer) -> None:
        server.write_policy("portico-app", APP_POLICY)
        server.enable_approle("svc", ["portico-app"], "60s", "600s", 0, role_id=role_id, secret_id=secret_id)

    first = OpenBaoDevServer(workdir=tmp_path / "a").start()
    second: OpenBaoDevServer | None = None
    try:
        provision(first)
        settings = VaultSettings(
            addr=first.addr, auth_method="approle", approle_role_id=role_id, approle_secret_id=secret_id,
            timeout_s=2.0,
        )
        async with VaultSession(settings) as vault:
            await vault.write_kv("app/restart/s", {"v": "1"})
            first.stop()
            with pytest.raises(VaultUnavailable):
                await vault.read_kv("app/restart/s")
            second = OpenBaoDevServer(port=first.port, workdir=tmp_path / "b").start()
            provision(second)
            second.client().secrets.kv.v2.create_or_update_secret("app/restart/s", {"v": "again"})
            assert await vault.read_kv("app/restart/s") == {"v": "again"}
            assert vault.authenticated
    finally:
        first.stop()
        if second is not None:
            second.stop()


# --------------------------------------------------------------------------- kubernetes


async def test_kubernetes_auth(bao: OpenBaoDevServer, prefix: str, tmp_path: Path) -> None:
    with TokenReviewApi() as k8s:
        mount = f"k8s-{uuid.uuid4().hex[:6]}"
        bao.enable_kubernetes(k8s.url, FAKE_K8S_CA, mount=mount)
        bao.create_kubernetes_role(
            "signer", service_account_names=["signer"], namespaces=["trading"], policies=["portico-app"],
            mount=mount,
        )
        jwt_file = tmp_path / "token"
        first_jwt = k8s.issue("trading", "signer")
        jwt_file.write_text(first_jwt + "\n")
        settings = VaultSettings(
            addr=bao.addr, auth_method="kubernetes", kubernetes_role="signer",
            kubernetes_jwt_file=str(jwt_file), kubernetes_mount=mount,
        )
        async with VaultSession(settings) as vault:
            assert vault.authenticated
            assert k8s.reviewed == [first_jwt]
            assert await vault.write_kv(f"{prefix}/k", {"v": "1"}) == 1

            # Projected tokens rotate: the next login must read the new JWT from the file.
            k8s.revoke_all()
            second_jwt = k8s.issue("trading", "signer")
            jwt_file.write_text(second_jwt)
            bao.revoke_logins(mount)
            assert await vault.read_kv(f"{prefix}/k") == {"v": "1"}
            assert k8s.reviewed[-1] == second_jwt

        # A JWT the API server rejects fails the login, without echoing the JWT.
        k8s.revoke_all()
        rejected = VaultSession(settings)
        with pytest.raises(VaultAuthError) as err:
            await rejected.start()
        await rejected.aclose()
        assert second_jwt not in str(err.value) and second_jwt not in repr(err.value)


# --------------------------------------------------------------------------- hygiene


async def test_no_secrets_in_reprs_messages_or_logs(
    bao: OpenBaoDevServer, prefix: str, vault_log: pytest.LogCaptureFixture
) -> None:
    good = approle(bao)
    assert good.approle_secret_id is not None
    wrong_secret_id = f"wrong-{uuid.uuid4()}"
    secret_value = f"private-key-{uuid.uuid4().hex}"
    secrets_seen: set[str] = {bao.root_token, good.approle_secret_id, wrong_secret_id, secret_value}
    errors: list[BaseException] = []
    texts: list[str] = []

    token_settings = VaultSettings(addr=bao.addr, token=bao.root_token)
    texts += [repr(good), str(good), repr(token_settings), str(token_settings)]

    bad = VaultSettings(
        addr=bao.addr, auth_method="approle", approle_role_id=good.approle_role_id,
        approle_secret_id=wrong_secret_id,
    )
    bad_session = VaultSession(bad)
    texts.append(repr(bad_session))
    try:
        await bad_session.start()
    except VaultError as exc:
        errors.append(exc)
    await bad_session.aclose()

    async with VaultSession(good) as vault:
        assert vault._state is not None  # white-box: the live token must not leak either
        secrets_seen.add(vault._state.token)
        texts.append(repr(vault))
        await vault.write_kv(f"{prefix}/key", {"pk": secret_value}, cas=0)
        for call in (
            vault.read_kv("forbidden/x"),
            vault.read_kv(f"{prefix}/missing"),
            vault.write_kv(f"{prefix}/key", {"pk": secret_value}, cas=0),
        ):
            try:
                await call
            except VaultError as exc:
                errors.append(exc)
        bao.seal()
        try:
            try:
                await vault.read_kv(f"{prefix}/key")
            except VaultError as exc:
                errors.append(exc)
        finally:
            bao.unseal()

    closed_port = free_port()
    async with VaultSession(VaultSettings(addr=f"http://127.0.0.1:{closed_port}", token=bao.root_token)) as down:
        try:
            await down.read_kv("app/x")
        except VaultError as exc:
            errors.append(exc)

    kinds = {type(e) for e in errors}
    assert {VaultAuthError, VaultNotFound, VaultCasMismatch, VaultSealed, VaultUnavailable} <= kinds, kinds
    for error in errors:
        texts += [str(error), repr(error), "".join(traceback.format_exception(error))]
    for record in vault_log.records:
        texts.append(record.getMessage())
        texts.extend(repr(v) for v in vars(record).values())
    assert texts and vault_log.records
    for text in texts:
        for secret in secrets_seen:
            assert secret not in text


# --------------------------------------------------------------------------- configuration


class RecordingEnv(Mapping[str, str]):
    """An environment that remembers which variables were looked up."""

    def __init__(self, values: dict[str, str]) -> None:
        self._values = values
        self.asked: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return self._values[key]

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return self._values.get(key, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def test_from_env_reads_documented_variables(tmp_path: Path) -> None:
    env = RecordingEnv({
        "PORTICO_VAULT_ADDR": "https://vault.internal:8200",
        "PORTICO_VAULT_AUTH": "approle",
        "PORTICO_VAULT_ROLE_ID": "role-1",
        "PORTICO_VAULT_SECRET_ID_FILE": str(tmp_path / "sid"),
        "PORTICO_VAULT_APPROLE_MOUNT": "approle-trading",
        "PORTICO_VAULT_KV_MOUNT": "portico",
        "PORTICO_VAULT_NAMESPACE": "ops",
        "PORTICO_VAULT_CACERT": "/etc/ssl/vault-ca.pem",
        "PORTICO_VAULT_TIMEOUT": "2.5",
    })
    s = VaultSettings.from_env(env)
    assert (s.addr, s.auth_method, s.approle_role_id, s.approle_mount) == (
        "https://vault.internal:8200", "approle", "role-1", "approle-trading",
    )
    assert (s.kv_mount, s.namespace, s.ca_cert, s.timeout_s) == ("portico", "ops", "/etc/ssl/vault-ca.pem", 2.5)
    assert s.approle_secret_id is None and s.approle_secret_id_file == str(tmp_path / "sid")
    documented = {name for name, _default, _desc in VAULT_ENV_DOC}
    assert env.asked - documented <= {"VAULT_ADDR", "VAULT_TOKEN"}
    assert documented <= env.asked, "every documented variable is read"
    assert all(desc for _n, _d, desc in VAULT_ENV_DOC)

    fallback = VaultSettings.from_env({"VAULT_ADDR": "http://127.0.0.1:8200", "VAULT_TOKEN": "tok-123456"})
    assert (fallback.addr, fallback.auth_method, fallback.token) == ("http://127.0.0.1:8200", "token", "tok-123456")
    assert "tok-123456" not in repr(fallback)
    k8s = VaultSettings.from_env({"PORTICO_VAULT_ADDR": "http://v:8200", "PORTICO_VAULT_AUTH": "kubernetes",
                                  "PORTICO_VAULT_K8S_ROLE": "signer"})
    assert k8s.kubernetes_jwt_file == "/var/run/secrets/kubernetes.io/serviceaccount/token"


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({}, "PORTICO_VAULT_ADDR"),
        ({"PORTICO_VAULT_ADDR": "vault:8200", "PORTICO_VAULT_TOKEN": "t"}, "PORTICO_VAULT_ADDR"),
        # credentials in the address would be logged and shown with it: Vault takes them as a token or login
        ({"PORTICO_VAULT_ADDR": "https://ops:sekrit-pw@vault:8200", "PORTICO_VAULT_TOKEN": "t"}, "PORTICO_VAULT_ADDR"),
        ({"PORTICO_VAULT_ADDR": "https://sekrit-user@vault:8200", "PORTICO_VAULT_TOKEN": "t"}, "PORTICO_VAULT_ADDR"),
        ({"PORTICO_VAULT_ADDR": "https://", "PORTICO_VAULT_TOKEN": "t"}, "PORTICO_VAULT_ADDR"),
        ({"PORTICO_VAULT_ADDR": "http://v", "PORTICO_VAULT_AUTH": "ldap-secret-word"}, "PORTICO_VAULT_AUTH"),
        ({"PORTICO_VAULT_ADDR": "http://v"}, "PORTICO_VAULT_TOKEN"),
        ({"PORTICO_VAULT_ADDR": "http://v", "PORTICO_VAULT_TOKEN": "sekrit-tok", "PORTICO_VAULT_TOKEN_FILE": "/f"},
         "PORTICO_VAULT_TOKEN_FILE"),
        ({"PORTICO_VAULT_ADDR": "http://v", "PORTICO_VAULT_AUTH": "approle", "PORTICO_VAULT_SECRET_ID": "sekrit-sid"},
         "PORTICO_VAULT_ROLE_ID"),
        ({"PORTICO_VAULT_ADDR": "http://v", "PORTICO_VAULT_AUTH": "approle", "PORTICO_VAULT_ROLE_ID": "r"},
         "PORTICO_VAULT_SECRET_ID"),
        ({"PORTICO_VAULT_ADDR": "http://v", "PORTICO_VAULT_AUTH": "kubernetes"}, "PORTICO_VAULT_K8S_ROLE"),
        ({"PORTICO_VAULT_ADDR": "http://v", "PORTICO_VAULT_TOKEN": "sekrit-tok", "PORTICO_VAULT_TIMEOUT": "soon"},
         "PORTICO_VAULT_TIMEOUT"),
        ({"PORTICO_VAULT_ADDR": "http://v", "PORTICO_VAULT_TOKEN": "sekrit-tok", "PORTICO_VAULT_TIMEOUT": "-1"},
         "PORTICO_VAULT_TIMEOUT"),
    ],
)
def test_from_env_errors_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ValueError) as err:
        VaultSettings.from_env(env)
    message = str(err.value)
    assert variable in message
    for value in env.values():
        if value.startswith(("sekrit", "ldap", "soon")):
            assert value not in message


def test_settings_validate_on_construction() -> None:
    with pytest.raises(ValueError, match="approle_role_id"):
        VaultSettings(addr="http://v", auth_method="approle", approle_secret_id="x")
    with pytest.raises(ValueError, match="renew_fraction"):
        VaultSettings(addr="http://v", token="t", renew_fraction=1.5)
    custom = VaultSettings.from_env({"SIGNER_VAULT_ADDR": "http://v", "SIGNER_VAULT_TOKEN": "t"}, "SIGNER_VAULT_")
    assert custom.addr == "http://v"


# --------------------------------------------------------------------------- review regressions


async def test_callers_waiting_on_a_hung_login_share_its_verdict(bao: OpenBaoDevServer) -> None:
    """Vault hanging: requests queued behind a login that times out fail with it, not one timeout each."""
    async with TcpProxy("127.0.0.1", bao.port) as proxy:
        settings = approle(bao, f"http://{proxy.addr}", timeout_s=1.0)
        proxy.stall()
        vault = VaultSession(settings, backoff_initial_s=30)  # the background task tries once, then sleeps
        try:
            await vault.start()  # times out; the background task starts its own attempt at once
            assert not vault.authenticated
            logins = vault._logins_finished  # start's
            started = time.monotonic()
            outcomes = await asyncio.gather(*(vault.read_kv("app/x") for _ in range(6)), return_exceptions=True)
            elapsed = time.monotonic() - started
            assert all(isinstance(o, VaultUnavailable) for o in outcomes), outcomes
            # They arrived while the background task's login hung: its timeout is their answer, not a login of
            # their own (counted, not timed: a loaded machine can stretch one login past 1.5 timeouts).
            assert vault._logins_finished - logins == 1, f"{vault._logins_finished - logins} logins for 6 callers"
            assert elapsed < 3 * settings.timeout_s, f"callers waited {elapsed:.1f}s"
        finally:
            proxy.resume()
            await vault.aclose()


async def test_a_cancelled_login_hands_no_stale_error_to_the_callers_behind_it(
    bao: OpenBaoDevServer, prefix: str
) -> None:
    """A caller giving up mid-login leaves no verdict: the next one logs in rather than repeating an old failure."""
    await bao_write(bao, f"{prefix}/s", {"v": "1"})
    async with TcpProxy("127.0.0.1", bao.port) as proxy:
        settings = approle(bao, f"http://{proxy.addr}", timeout_s=2.0)
        await proxy.block()
        vault = VaultSession(settings, backoff_initial_s=60)
        try:
            await vault.start()  # fails fast: an old "unreachable" verdict is now on record
            await wait_until(lambda: vault._logins_finished >= 2, 5, "the background login attempt")
            await proxy.unblock()
            proxy.stall()
            first = asyncio.create_task(vault.read_kv(f"{prefix}/s"))
            await asyncio.sleep(0.2)  # `first` is logging in, on a stalled connection
            second = asyncio.create_task(vault.read_kv(f"{prefix}/s"))
            await asyncio.sleep(0.2)  # `second` waits for that login
            first.cancel()
            proxy.resume()
            async with asyncio.timeout(5):
                assert await second == {"v": "1"}
        finally:
            await vault.aclose()


async def test_aclose_fails_queued_calls_with_a_vault_error_not_a_cancellation(
    bao: OpenBaoDevServer, prefix: str
) -> None:
    await bao_write(bao, f"{prefix}/s", {"v": "1"})
    async with TcpProxy("127.0.0.1", bao.port) as proxy:
        vault = VaultSession(approle(bao, f"http://{proxy.addr}", timeout_s=1.0), max_workers=1)
        await vault.start()
        proxy.stall()
        running = asyncio.create_task(vault.read_kv(f"{prefix}/s"))  # holds the only pool thread
        await asyncio.sleep(0.1)
        queued = asyncio.create_task(vault.read_kv(f"{prefix}/s"))  # waits for that thread
        await asyncio.sleep(0.1)
        await vault.aclose()
        outcomes = await asyncio.gather(running, queued, return_exceptions=True)
        proxy.resume()
    assert all(isinstance(o, VaultError) for o in outcomes), outcomes
    assert "closed" in str(outcomes[1])


async def test_a_transient_renewal_failure_does_not_stop_renewing_a_static_token(
    bao: OpenBaoDevServer, prefix: str, vault_log: pytest.LogCaptureFixture
) -> None:
    """A 429 (rate limit) on renew-self is an outage to wait out, not Vault refusing to extend the token."""
    root = bao.client()
    token = root.auth.token.create(policies=["portico-app"], ttl="4s", renewable=True)["auth"]["client_token"]
    root.secrets.kv.v2.create_or_update_secret(f"{prefix}/s", {"v": "1"})
    quota = f"renew-{uuid.uuid4().hex[:8]}"
    settings = VaultSettings(addr=bao.addr, token=token)
    vault = VaultSession(settings, backoff_initial_s=0.05, backoff_max_s=0.2)
    try:
        async with vault:
            root.write_data(f"sys/quotas/rate-limit/{quota}",
                            data={"path": "auth/token/renew-self", "rate": 1, "interval": "1h"})
            spare = root.auth.token.create(policies=["default"], ttl="60s")["auth"]["client_token"]
            bao.client(spare).auth.token.renew_self()  # uses up the quota: the session's renewals get 429
            await wait_until(
                lambda: events(vault_log, "renew_refused") or events(vault_log, "maintenance_failed"),
                5, "a renewal answered with 429")
            root.delete(f"sys/quotas/rate-limit/{quota}")
            quota = ""
            await read_for(vault, f"{prefix}/s", 4.0)  # past the token's 4 s TTL
            assert vault.authenticated
    finally:
        if quota:
            root.delete(f"sys/quotas/rate-limit/{quota}")
    assert len(events(vault_log, "renew")) >= 2


async def test_an_unusable_ca_bundle_is_a_clear_vault_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-ca.pem"
    settings = VaultSettings(addr=f"https://127.0.0.1:{free_port()}", token="s.not-a-real-token-0000",
                             ca_cert=str(missing))
    vault = VaultSession(settings)
    try:
        with pytest.raises(VaultError) as err:
            await vault.start()
        assert not isinstance(err.value, VaultUnavailable)  # a configuration problem, not an outage
        assert "CA" in str(err.value) and "not-a-real-token" not in str(err.value)
        with pytest.raises(VaultError):
            await vault.read_kv("app/x")
    finally:
        await vault.aclose()


async def test_a_configured_secret_id_stays_redacted_after_many_logins(bao: OpenBaoDevServer) -> None:
    role = f"r-{uuid.uuid4().hex[:8]}"
    mount = f"approle-{role}"
    role_id, secret_id = bao.enable_approle(role, ["portico-app"], "60s", "600s", 0, mount=mount)
    settings = VaultSettings(addr=bao.addr, auth_method="approle", approle_role_id=role_id,
                             approle_secret_id=secret_id, approle_mount=mount)
    async with VaultSession(settings) as vault:
        for _ in range(10):  # each revocation costs a re-login, and so one more token to redact
            bao.revoke_logins(mount)
            with pytest.raises(VaultNotFound):
                await vault.read_kv("app/none")
        # White-box: what every error text from Vault goes through.
        assert secret_id not in vault._scrub(f"invalid secret_id {secret_id}")


async def test_calls_queued_behind_a_hung_vault_time_out_too(bao: OpenBaoDevServer, prefix: str) -> None:
    """More calls than pool threads while Vault hangs: the ones waiting for a thread do not wait a timeout each."""
    await bao_write(bao, f"{prefix}/s", {"v": "1"})
    async with TcpProxy("127.0.0.1", bao.port) as proxy:
        settings = approle(bao, f"http://{proxy.addr}", timeout_s=1.0)
        async with VaultSession(settings, max_workers=2) as vault:
            proxy.stall()
            started = time.monotonic()
            outcomes = await asyncio.gather(*(vault.read_kv(f"{prefix}/s") for _ in range(8)),
                                            return_exceptions=True)
            elapsed = time.monotonic() - started
            assert all(isinstance(o, VaultUnavailable) for o in outcomes), outcomes
            assert elapsed < 2.5 * settings.timeout_s, f"the last call waited {elapsed:.1f}s"
            proxy.resume()
            async with asyncio.timeout(3 * settings.timeout_s):  # the pool drains: Vault is usable again
                while True:
                    try:
                        assert await vault.read_kv(f"{prefix}/s") == {"v": "1"}
                        break
                    except VaultUnavailable:
                        await asyncio.sleep(0.1)


async def bao_write(bao: OpenBaoDevServer, path: str, data: Mapping[str, Any]) -> None:
    await asyncio.to_thread(bao.client().secrets.kv.v2.create_or_update_secret, path, dict(data))
