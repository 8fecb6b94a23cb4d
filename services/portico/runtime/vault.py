"""Async access to Vault / OpenBao for Portico services.

The signer keeps private keys in KV v2 and the venue services read API
credentials from it, so every service needs the same things: log in by
configuration (token, AppRole or Kubernetes), keep the token alive, get a new
one when it cannot be kept alive, and tell callers clearly whether Vault is
*down* (answer gRPC UNAVAILABLE, it will come back) or *refusing* them (a
configuration problem).  That logic lives here, once, and so does `VaultWatch`,
which checks both in the background so a service's readiness can follow them.

hvac is blocking, so HTTP calls run on a small dedicated thread pool; each
pool thread owns its own hvac adapter (and so its own ``requests`` session),
which sidesteps ``requests.Session``'s lack of thread-safety guarantees without
serialising calls behind one lock.

Secrets (tokens, secret_ids, JWTs, secret values) never reach logs, exception
messages or reprs: error texts are built here from Vault's error strings after
scrubbing, and the hvac/requests exceptions are not chained.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
import random
import re
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Awaitable, Callable, Container, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, Self, cast, get_args

import hvac.adapters
import requests

from portico.runtime.config import ConfigError, setting
from portico.runtime.errors import Unavailable
from portico.runtime.lifecycle import cancel_and_wait

__all__ = [
    "VAULT_ENV_DOC",
    "AuthMethod",
    "KvMetadata",
    "KvVersion",
    "VaultAccess",
    "VaultAuthError",
    "VaultCasMismatch",
    "VaultError",
    "VaultHealth",
    "VaultNotFound",
    "VaultSealed",
    "VaultSession",
    "VaultSettings",
    "VaultUnavailable",
    "VaultWatch",
    "vault_unavailable",
]

log = logging.getLogger("portico.vault")

AuthMethod = Literal["token", "approle", "kubernetes"]
_AUTH_METHODS: Final[tuple[str, ...]] = get_args(AuthMethod)
DEFAULT_K8S_JWT_FILE: Final = "/var/run/secrets/kubernetes.io/serviceaccount/token"

# Floor for any scheduled maintenance step, so a tiny TTL cannot spin the loop.
_MIN_STEP_S: Final = 0.25
# How often a token without expiry (ttl 0, e.g. a root token) is re-checked.
_IDLE_CHECK_S: Final = 300.0
# TTL assumed when Vault reports 0 s left on a token that does expire (it floors TTLs).
_LAST_SECOND_TTL: Final = 0.5
# Longest Vault error text kept in an exception message.
_MAX_DETAIL: Final = 300


# --------------------------------------------------------------------------- settings

# (env suffix, settings field, default, description).  One table drives `from_env`,
# `VAULT_ENV_DOC` and the project's settings registry, so the README cannot drift.
_ENV_SPEC: Final[tuple[tuple[str, str, str, str], ...]] = (
    ("ADDR", "addr", "",
     "Required. Vault/OpenBao API address, e.g. https://vault.internal:8200; falls back to VAULT_ADDR."),
    ("AUTH", "auth_method", "token", "Auth method: token, approle or kubernetes."),
    ("TOKEN", "token", "",
     "Vault token for AUTH=token; falls back to VAULT_TOKEN. Prefer the _FILE variant."),
    ("TOKEN_FILE", "token_file", "",
     "File holding the token for AUTH=token; re-read when the token is rejected (e.g. Vault Agent sink)."),
    ("ROLE_ID", "approle_role_id", "", "AppRole role_id (required for AUTH=approle)."),
    ("SECRET_ID", "approle_secret_id", "", "AppRole secret_id. Prefer the _FILE variant."),
    ("SECRET_ID_FILE", "approle_secret_id_file", "",
     "File holding the AppRole secret_id; re-read at every login so it can be rotated."),
    ("APPROLE_MOUNT", "approle_mount", "approle", "Mount path of the AppRole auth method."),
    ("K8S_ROLE", "kubernetes_role", "", "Vault role for AUTH=kubernetes (required for it)."),
    ("K8S_JWT_FILE", "kubernetes_jwt_file", DEFAULT_K8S_JWT_FILE,
     "Service-account JWT; re-read at every login because projected tokens rotate."),
    ("K8S_MOUNT", "kubernetes_mount", "kubernetes", "Mount path of the Kubernetes auth method."),
    ("KV_MOUNT", "kv_mount", "secret", "Mount path of the KV v2 secrets engine."),
    ("NAMESPACE", "namespace", "", "Vault Enterprise / OpenBao namespace (unset: root namespace)."),
    ("CACERT", "ca_cert", "", "PEM CA bundle used to verify Vault's TLS certificate (unset: system trust)."),
    ("TIMEOUT", "timeout_s", "5", "Per-request timeout in seconds (connect and read)."),
)

VAULT_ENV_DOC: list[tuple[str, str, str]] = [
    (f"PORTICO_VAULT_{suffix}", default, description) for suffix, _f, default, description in _ENV_SPEC
]
"""(variable, default, description) for every variable `VaultSettings.from_env` reads."""


def _declare_settings() -> None:
    """Put the variables in the project-wide table (`portico config-table`, README)."""
    for name, default, description in VAULT_ENV_DOC:
        secret = name.removeprefix("PORTICO_VAULT_") in ("TOKEN", "SECRET_ID")
        setting(name, default, description, scope="services using Vault", secret=secret)


_declare_settings()


def _validate_settings(values: Mapping[str, Any], name: Callable[[str], str]) -> None:
    """Raise ConfigError (a ValueError) for an unusable configuration, naming settings, never values."""
    addr = values.get("addr")
    if not addr:
        raise ConfigError(f"{name('addr')} is required")
    if not isinstance(addr, str) or not addr.startswith(("http://", "https://")):
        raise ConfigError(f"{name('addr')} must be an http:// or https:// URL")
    try:
        parts = urllib.parse.urlsplit(addr)
        parts.port  # noqa: B018 (parsed for its ValueError)
    except ValueError:
        raise ConfigError(f"{name('addr')} is not a valid URL") from None
    if not parts.hostname:
        raise ConfigError(f"{name('addr')} must name a host")
    if parts.username is not None or parts.password is not None:
        # The address is logged and shown (health, errors); Vault's credentials are its token or login.
        raise ConfigError(f"{name('addr')} must not carry credentials: give them as a token or a login method")
    method = values.get("auth_method")
    if method not in _AUTH_METHODS:
        raise ConfigError(f"{name('auth_method')} must be one of {', '.join(_AUTH_METHODS)}")

    def one_of(value_field: str, file_field: str) -> None:
        has_value, has_file = bool(values.get(value_field)), bool(values.get(file_field))
        if has_value and has_file:
            raise ConfigError(f"set only one of {name(value_field)} and {name(file_field)}")
        if not (has_value or has_file):
            raise ConfigError(
                f"{name(value_field)} or {name(file_field)} is required when {name('auth_method')}={method}"
            )

    if method == "token":
        one_of("token", "token_file")
    elif method == "approle":
        if not values.get("approle_role_id"):
            raise ConfigError(f"{name('approle_role_id')} is required when {name('auth_method')}=approle")
        one_of("approle_secret_id", "approle_secret_id_file")
    else:
        if not values.get("kubernetes_role"):
            raise ConfigError(f"{name('kubernetes_role')} is required when {name('auth_method')}=kubernetes")
        if not values.get("kubernetes_jwt_file"):
            raise ConfigError(f"{name('kubernetes_jwt_file')} must not be empty")
    for mount in ("approle_mount", "kubernetes_mount", "kv_mount"):
        if not str(values.get(mount) or "").strip("/"):
            raise ConfigError(f"{name(mount)} must not be empty")
    timeout = values.get("timeout_s")
    if not isinstance(timeout, int | float) or not math.isfinite(timeout) or timeout <= 0:
        raise ConfigError(f"{name('timeout_s')} must be a positive number of seconds")
    fraction = values.get("renew_fraction")
    if not isinstance(fraction, int | float) or not 0 < fraction < 1:
        raise ConfigError(f"{name('renew_fraction')} must be between 0 and 1 (exclusive)")


@dataclass(frozen=True)
class VaultSettings:
    """How to reach and authenticate to Vault; secrets are kept out of the repr."""

    addr: str
    auth_method: AuthMethod = "token"
    token: str | None = field(default=None, repr=False)
    token_file: str | None = None
    approle_role_id: str | None = None
    approle_secret_id: str | None = field(default=None, repr=False)
    approle_secret_id_file: str | None = None
    approle_mount: str = "approle"
    kubernetes_role: str | None = None
    kubernetes_jwt_file: str = DEFAULT_K8S_JWT_FILE
    kubernetes_mount: str = "kubernetes"
    kv_mount: str = "secret"
    namespace: str | None = None
    ca_cert: str | None = None
    timeout_s: float = 5.0
    renew_fraction: float = 2 / 3

    def __post_init__(self) -> None:
        """Fail at construction, not at the first request, on an unusable configuration."""
        _validate_settings(vars(self), lambda f: f)

    @classmethod
    def from_env(cls, env: Mapping[str, str], prefix: str = "PORTICO_VAULT_") -> VaultSettings:
        """Build settings from environment variables (see `VAULT_ENV_DOC`).

        Empty variables count as unset.  The standard VAULT_ADDR / VAULT_TOKEN are
        honoured when the prefixed ones are unset, so existing tooling keeps working.
        Errors name the variable, never its value.
        """
        field_to_var = {f: prefix + suffix for suffix, f, _d, _desc in _ENV_SPEC}

        def get(f: str) -> str | None:
            return env.get(field_to_var[f]) or None

        values: dict[str, Any] = {f: get(f) for f in field_to_var}
        values["addr"] = values["addr"] or env.get("VAULT_ADDR") or None
        values["auth_method"] = (values["auth_method"] or "token").strip().lower()
        if values["auth_method"] == "token" and not values["token"] and not values["token_file"]:
            values["token"] = env.get("VAULT_TOKEN") or None
        for f, default in (
            ("approle_mount", "approle"),
            ("kubernetes_mount", "kubernetes"),
            ("kubernetes_jwt_file", DEFAULT_K8S_JWT_FILE),
            ("kv_mount", "secret"),
        ):
            values[f] = values[f] or default
        raw_timeout = values["timeout_s"]
        try:
            values["timeout_s"] = 5.0 if raw_timeout is None else float(raw_timeout)
        except ValueError:
            raise ConfigError(f"{field_to_var['timeout_s']} must be a positive number of seconds") from None
        values["renew_fraction"] = 2 / 3

        fallbacks = {"addr": "VAULT_ADDR", "token": "VAULT_TOKEN"}

        def name(f: str) -> str:
            if f in fallbacks:
                return f"{field_to_var[f]} (or {fallbacks[f]})"
            return field_to_var.get(f, f)

        _validate_settings(values, name)
        return cls(**values)


# --------------------------------------------------------------------------- errors


class VaultError(Exception):
    """Any failure talking to Vault; the message names the operation and path only."""

    def __init__(
        self, message: str, *, operation: str = "", path: str = "", status: int | None = None
    ) -> None:
        super().__init__(message)
        self.operation = operation
        self.path = path
        self.status = status


class VaultUnavailable(VaultError):
    """Vault cannot serve now (unreachable, timeout, 5xx, sealed, no active node): retry later."""


class VaultSealed(VaultUnavailable):
    """Vault answered but is sealed; it recovers once an operator unseals it."""


class VaultAuthError(VaultError):
    """Login failed or the token lacks permission (401/403): a configuration problem, not an outage."""


class VaultNotFound(VaultError):
    """The secret or path does not exist (or its latest version is deleted)."""


class VaultCasMismatch(VaultError):
    """A check-and-set write lost: the secret's current version is not the one given."""


def vault_unavailable(error: VaultError, what: str) -> Unavailable:
    """The caller's status for a Vault failure while trying to `what` (e.g. "read key k1"), by its cause.

    Always UNAVAILABLE (the caller cannot fix any of them; the operator can), with the reason saying
    which: VAULT_SEALED, VAULT_UNAVAILABLE (unreachable, timeout, 5xx), VAULT_PERMISSION_DENIED (Vault
    refuses this service's token or policy: a configuration problem, not an outage) or VAULT_ERROR. The
    text names the operation only, never Vault's own words.
    """
    if isinstance(error, VaultSealed):
        return Unavailable(f"Vault is sealed; cannot {what}", reason="VAULT_SEALED")
    if isinstance(error, VaultUnavailable):
        return Unavailable(f"Vault is unreachable; cannot {what}", reason="VAULT_UNAVAILABLE")
    if isinstance(error, VaultAuthError):
        return Unavailable(f"Vault does not let this service {what}", reason="VAULT_PERMISSION_DENIED")
    return Unavailable(f"Vault failed; cannot {what}", reason="VAULT_ERROR")


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class VaultHealth:
    """What `sys/health` says; `reachable` is False when no answer came back at all."""

    reachable: bool
    initialized: bool
    sealed: bool
    standby: bool
    version: str | None = None

    @property
    def available(self) -> bool:
        """True when requests can be served (standbys forward to the active node)."""
        return self.reachable and self.initialized and not self.sealed


class VaultAccess(enum.StrEnum):
    """Whether a session can use Vault now, as `VaultSession.check_access` finds it."""

    AVAILABLE = "available"
    SEALED = "sealed"
    UNAVAILABLE = "unavailable"  # unreachable, timing out, 5xx: Vault itself is away
    REFUSED = "refused"  # Vault answers but refuses this session's token and, if it has one, its login
    ERROR = "error"  # anything else (TLS, a closed session): not usable either


@dataclass(frozen=True)
class KvVersion:
    """One version of a KV v2 secret, as listed in its metadata."""

    created_time: str
    deletion_time: str
    destroyed: bool


@dataclass(frozen=True)
class KvMetadata:
    """KV v2 metadata for one secret path (never contains secret values)."""

    current_version: int
    oldest_version: int
    max_versions: int
    cas_required: bool
    created_time: str
    updated_time: str
    custom_metadata: Mapping[str, str]
    versions: Mapping[int, KvVersion]


# --------------------------------------------------------------------------- internals


@dataclass(frozen=True)
class _Response:
    status: int
    body: dict[str, Any] | None = field(repr=False)


@dataclass(frozen=True)
class _TokenState:
    """A token and what lookup/renewal told us about it (monotonic clock)."""

    token: str = field(repr=False)
    ttl: float
    renewable: bool
    creation_ttl: float
    learned_at: float
    generation: int
    capped: bool = False
    # False for a login's token without Vault's `default` policy: lookup-self is then forbidden to it, so it
    # says nothing about the token (`check_access` does not ask it).
    self_lookup: bool = True

    def expired(self, now: float) -> bool:
        return self.ttl > 0 and now >= self.learned_at + self.ttl


_URL_CREDENTIALS = re.compile(r"(?<=//)[^/@\s]+@")
_TOKEN_LIKE = re.compile(r"\b(?:hv[sbr]|s|b|r)\.[A-Za-z0-9_\-]{16,}")
_OK: Final = frozenset({200, 204})
_RETRYABLE_STATUSES: Final = frozenset({412, 429})


def _clean_path(path: str, *, allow_empty: bool = False) -> str:
    """Normalise a KV path and reject ones that could escape the mount or break the URL."""
    cleaned = path.strip("/")
    if not cleaned:
        if allow_empty:
            return ""
        raise ValueError("vault path must not be empty")
    if any(seg in ("", ".", "..") for seg in cleaned.split("/")) or any(
        ord(ch) < 0x20 or ch == "\x7f" for ch in cleaned
    ):
        raise ValueError(f"invalid vault path {path!r}")
    return cleaned


def _quote(path: str) -> str:
    return urllib.parse.quote(path, safe="/")


def _renewal_refused(exc: VaultUnavailable) -> bool:
    """Whether a 5xx to renew-self means "never" (a 500 "past the max TTL") rather than "not now".

    Taking a rate limit (429) or an overloaded standby (503) for a refusal would mark a
    static token as capped, and it would then be left to expire although it can be renewed.
    """
    return exc.status == 500 and "max ttl" in str(exc).lower()


def _as_float(value: Any) -> float:
    try:
        return float(value or 0)
    except (TypeError, ValueError):
        return 0.0


class VaultSession:
    """One authenticated connection to Vault, kept alive in the background.

    Use ``async with VaultSession(settings) as vault:`` (or ``start()`` /
    ``aclose()``).  If Vault is down at start, ``start()`` still returns and
    the session keeps trying to log in; calls raise `VaultUnavailable` until it
    is back.  Bad credentials raise `VaultAuthError` from ``start()``.
    """

    def __init__(
        self,
        settings: VaultSettings,
        *,
        max_workers: int = 4,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
    ) -> None:
        self._settings = settings
        self._backoff_initial = backoff_initial_s
        self._backoff_max = max(backoff_max_s, backoff_initial_s)
        # A dedicated pool: a hung Vault must not starve the loop's default executor.
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="portico-vault")
        self._local = threading.local()
        self._adapters: list[Any] = []
        self._adapters_lock = threading.Lock()
        self._state: _TokenState | None = None
        self._generation = 0
        self._logins_finished = 0
        self._last_login_error: VaultError | None = None
        self._token_refused = False  # the last verdict of `check_access` on the token
        self._auth_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        # Everything we must never echo: configured secrets (kept for good) plus recent tokens/JWTs.
        self._configured_secrets = tuple(s for s in (settings.token, settings.approle_secret_id) if s)
        self._secrets: deque[str] = deque(maxlen=8)

    # ----------------------------------------------------------------- lifecycle

    def __repr__(self) -> str:
        s = self._settings
        return f"VaultSession(addr={s.addr!r}, auth_method={s.auth_method!r}, authenticated={self.authenticated})"

    @property
    def settings(self) -> VaultSettings:
        return self._settings

    @property
    def authenticated(self) -> bool:
        """True while we hold a token that, as far as we know, is still valid."""
        state = self._state
        return not self._closed and state is not None and not state.expired(time.monotonic())

    async def start(self) -> None:
        """Log in and start the background maintenance task.

        Vault being down is not an error here (the task keeps trying to log in).
        Rejected credentials raise `VaultAuthError`, but the task still runs and
        retries with backoff, so e.g. a secret_id file written late is picked up.
        """
        if self._closed:
            raise VaultError("vault start: session is closed", operation="start")
        if self._task is not None:
            return
        self._task = asyncio.create_task(self._maintain(), name="portico-vault-maintenance")
        async with self._auth_lock:
            try:
                await self._login("start")
            except VaultUnavailable as exc:
                log.warning(
                    "vault unavailable at start; will keep retrying in the background",
                    extra=self._extra("start_unavailable", error=type(exc).__name__),
                )

    async def aclose(self) -> None:
        """Stop the renewal task and release connections; idempotent."""
        if self._closed:
            return
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # we are being cancelled ourselves: do not swallow it
        self._state = None
        with self._adapters_lock:
            adapters, self._adapters = self._adapters, []
        for adapter in adapters:
            with contextlib.suppress(Exception):
                adapter.close()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # ----------------------------------------------------------------- KV v2 API

    async def read_kv(self, path: str) -> dict[str, Any]:
        """Latest version's data; `VaultNotFound` if missing or its latest version is deleted."""
        p = _clean_path(path)
        resp = await self._authed("read", p, "GET", f"/v1/{self._kv}/data/{_quote(p)}", retry=True)
        data = ((resp.body or {}).get("data") or {}).get("data")
        if not isinstance(data, dict):
            raise VaultNotFound(f"vault read {p!r}: no data", operation="read", path=p, status=resp.status)
        return data

    async def write_kv(self, path: str, data: Mapping[str, Any], *, cas: int | None = None) -> int:
        """Write a new version and return its number; ``cas=0`` means create-only.

        Not retried after a rejected token (the session re-authenticates so the
        caller's own retry succeeds); `VaultCasMismatch` when ``cas`` loses.
        """
        p = _clean_path(path)
        payload: dict[str, Any] = {"data": dict(data), "options": {} if cas is None else {"cas": cas}}
        values = [v for v in data.values() if isinstance(v, str)]
        resp = await self._authed(
            "write", p, "POST", f"/v1/{self._kv}/data/{_quote(p)}", payload=payload, retry=False, extra_secrets=values
        )
        version = ((resp.body or {}).get("data") or {}).get("version")
        if not isinstance(version, int):
            raise VaultError(f"vault write {p!r}: response carried no version", operation="write", path=p)
        return version

    async def list_kv(self, prefix: str = "") -> list[str]:
        """Keys directly under `prefix` (sub-folders end in '/'); [] when there are none."""
        p = _clean_path(prefix, allow_empty=True)
        url = f"/v1/{self._kv}/metadata/{_quote(p)}" + ("/" if p else "")
        resp = await self._authed("list", p, "GET", url, params={"list": "true"}, retry=True, ok=_OK | {404})
        if resp.status == 404:
            if (resp.body or {}).get("errors"):  # e.g. "no handler for route": the mount is wrong
                raise self._status_error("list", p, resp, ())
            return []  # Vault's way of saying "no keys"
        keys = ((resp.body or {}).get("data") or {}).get("keys") or []
        return [str(k) for k in keys]

    async def read_kv_metadata(self, path: str) -> KvMetadata:
        """Versions and custom metadata of a secret; `VaultNotFound` if it never existed."""
        p = _clean_path(path)
        resp = await self._authed("read_metadata", p, "GET", f"/v1/{self._kv}/metadata/{_quote(p)}", retry=True)
        d: dict[str, Any] = (resp.body or {}).get("data") or {}
        versions = {
            int(k): KvVersion(
                created_time=str(v.get("created_time") or ""),
                deletion_time=str(v.get("deletion_time") or ""),
                destroyed=bool(v.get("destroyed")),
            )
            for k, v in (d.get("versions") or {}).items()
        }
        return KvMetadata(
            current_version=int(d.get("current_version") or 0),
            oldest_version=int(d.get("oldest_version") or 0),
            max_versions=int(d.get("max_versions") or 0),
            cas_required=bool(d.get("cas_required")),
            created_time=str(d.get("created_time") or ""),
            updated_time=str(d.get("updated_time") or ""),
            custom_metadata={str(k): str(v) for k, v in (d.get("custom_metadata") or {}).items()},
            versions=versions,
        )

    async def write_kv_metadata(self, path: str, custom_metadata: Mapping[str, str]) -> None:
        """Replace a secret's custom metadata (leaves max_versions etc. untouched)."""
        p = _clean_path(path)
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in custom_metadata.items()):
            raise TypeError("custom_metadata keys and values must be str")
        await self._authed(
            "write_metadata",
            p,
            "POST",
            f"/v1/{self._kv}/metadata/{_quote(p)}",
            payload={"custom_metadata": dict(custom_metadata)},
            retry=False,
        )

    async def health(self) -> VaultHealth:
        """Query `sys/health`; never raises for sealed / standby / unreachable."""
        params = {
            "standbyok": "true",
            "perfstandbyok": "true",
            "standbycode": "200",
            "performancestandbycode": "200",
            "drsecondarycode": "200",
            "sealedcode": "200",
            "uninitcode": "200",
        }
        try:
            resp = await self._send(
                "health", "sys/health", "GET", "/v1/sys/health", token=None, params=params, ok=range(100, 600)
            )
        except VaultUnavailable:
            return VaultHealth(reachable=False, initialized=False, sealed=False, standby=False)
        body = resp.body
        if body is None or "sealed" not in body:
            return VaultHealth(reachable=False, initialized=False, sealed=False, standby=False)
        return VaultHealth(
            reachable=True,
            initialized=bool(body.get("initialized")),
            sealed=bool(body.get("sealed")),
            standby=bool(body.get("standby")),
            version=str(body["version"]) if body.get("version") else None,
        )

    async def check_access(self) -> VaultAccess:
        """Whether this session can use Vault now: up, unsealed, and accepting its token (no VaultError).

        Meant for a background readiness check (`VaultWatch`), not a request path: `sys/health`, then
        lookup-self with the token, the cheapest call that fails for a revoked or expired token. A token
        Vault refuses is replaced as on any rejected call (a new login, the token file read again), so
        REFUSED means Vault refuses that too. What the token's policy grants is not checked: a path it
        denies is an error of that path for its caller, not an outage of the session.
        """
        try:
            health = await self.health()
        except VaultError:  # not a plain outage: TLS, say
            return VaultAccess.ERROR
        if not health.reachable:
            return VaultAccess.UNAVAILABLE
        if health.sealed or not health.initialized:
            return VaultAccess.SEALED
        try:
            await self._check_token()
        except VaultSealed:
            return VaultAccess.SEALED
        except VaultAuthError:
            self._token_refused = True
            return VaultAccess.REFUSED
        except VaultError:
            # No verdict on the token (a timeout, a rate limit, a 5xx) from a Vault that answered its health:
            # keep the last one rather than make a service drop its keys over one slow or limited call.
            return VaultAccess.REFUSED if self._token_refused else VaultAccess.AVAILABLE
        self._token_refused = False
        return VaultAccess.AVAILABLE

    # ----------------------------------------------------------------- requests

    @property
    def _kv(self) -> str:
        return _quote(self._settings.kv_mount.strip("/"))

    def _adapter_for_thread(self) -> Any:
        """This pool thread's own hvac adapter (and requests session)."""
        adapter = getattr(self._local, "adapter", None)
        if adapter is None:
            s = self._settings
            adapter = hvac.adapters.RawAdapter(
                base_uri=s.addr,
                token=None,
                verify=s.ca_cert or True,
                timeout=s.timeout_s,
                namespace=s.namespace,
            )
            with self._adapters_lock:
                if self._closed:
                    adapter.close()
                    raise VaultError("vault: session is closed")
                self._adapters.append(adapter)
            self._local.adapter = adapter
        return adapter

    def _http_blocking(
        self,
        method: str,
        url: str,
        token: str | None,
        payload: Mapping[str, Any] | None,
        params: Mapping[str, str] | None,
    ) -> _Response:
        adapter = self._adapter_for_thread()
        adapter.token = token
        kwargs: dict[str, Any] = {}
        if payload is not None:
            kwargs["json"] = payload
        if params is not None:
            kwargs["params"] = dict(params)
        resp = adapter.request(method, url, raise_exception=False, **kwargs)
        body: Any = None
        if resp.content:
            try:
                body = resp.json()
            except ValueError:
                body = None
        return _Response(int(resp.status_code), body if isinstance(body, dict) else None)

    async def _send(
        self,
        op: str,
        path: str,
        method: str,
        url: str,
        *,
        token: str | None,
        payload: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        ok: Container[int] = _OK,
        extra_secrets: Iterable[str] = (),
    ) -> _Response:
        """One HTTP call on the pool, with transport and status errors mapped to VaultError."""
        if self._closed:
            raise VaultError(f"vault {op}: session is closed", operation=op, path=path)
        loop = asyncio.get_running_loop()
        # requests bounds the connect and each read; this bounds the wait for a pool thread too, which
        # a hung Vault keeps busy: without it, each call queued behind the hung ones waits a timeout more.
        deadline_s = 2 * self._settings.timeout_s
        try:
            async with asyncio.timeout(deadline_s):
                resp = await loop.run_in_executor(
                    self._executor, self._http_blocking, method, url, token, payload, params
                )
        except TimeoutError:
            raise VaultUnavailable(
                self._msg(op, path, f"no answer within {deadline_s:g}s"), operation=op, path=path
            ) from None
        except asyncio.CancelledError:
            # aclose() cancels the calls still queued for the pool: unless the caller itself
            # is being cancelled, that is a closed session, not a cancellation to pass on.
            task = asyncio.current_task()
            if task is not None and not task.cancelling() and self._closed:
                raise VaultError(f"vault {op}: session is closed", operation=op, path=path) from None
            raise
        except requests.exceptions.SSLError as exc:
            detail = self._scrub(str(exc), extra_secrets)
            raise VaultError(self._msg(op, path, f"TLS error: {detail}"), operation=op, path=path) from None
        except requests.exceptions.Timeout:
            raise VaultUnavailable(
                self._msg(op, path, f"timed out after {self._settings.timeout_s:g}s"), operation=op, path=path
            ) from None
        except requests.exceptions.RequestException as exc:
            detail = self._scrub(str(exc), extra_secrets)
            raise VaultUnavailable(
                self._msg(op, path, f"cannot reach vault ({type(exc).__name__}: {detail})"),
                operation=op,
                path=path,
            ) from None
        except OSError as exc:
            # requests raises a bare OSError for an unusable CA bundle (ca_cert): a configuration problem.
            detail = self._scrub(str(exc), extra_secrets)
            raise VaultError(self._msg(op, path, f"cannot connect: {detail}"), operation=op, path=path) from None
        except RuntimeError as exc:
            # The pool refuses work after aclose(); report it as a closed session.
            if self._closed:
                raise VaultError(f"vault {op}: session is closed", operation=op, path=path) from None
            raise VaultError(self._msg(op, path, type(exc).__name__), operation=op, path=path) from None
        if resp.status in ok:
            return resp
        raise self._status_error(op, path, resp, extra_secrets)

    def _status_error(self, op: str, path: str, resp: _Response, extra_secrets: Iterable[str]) -> VaultError:
        status = resp.status
        errors = (resp.body or {}).get("errors")
        if isinstance(errors, list) and errors:
            detail = self._scrub("; ".join(str(e) for e in errors), extra_secrets)
        else:
            detail = f"HTTP {status}"
        msg = self._msg(op, path, detail if detail.startswith("HTTP") else f"HTTP {status}: {detail}")
        lowered = detail.lower()
        kw: dict[str, Any] = {"operation": op, "path": path, "status": status}
        if status >= 500 and "sealed" in lowered:
            return VaultSealed(msg, **kw)
        if status >= 500 or status in _RETRYABLE_STATUSES:
            return VaultUnavailable(msg, **kw)
        if status in (401, 403) or (op == "login" and status == 400):
            return VaultAuthError(msg, **kw)
        if status == 404:
            return VaultNotFound(msg, **kw)
        if status == 400 and "check-and-set" in lowered:
            return VaultCasMismatch(msg, **kw)
        return VaultError(msg, **kw)

    async def _authed(
        self,
        op: str,
        path: str,
        method: str,
        url: str,
        *,
        retry: bool,
        payload: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        ok: Container[int] = _OK,
        extra_secrets: Iterable[str] = (),
    ) -> _Response:
        """An authenticated call; a rejected token triggers one re-login and, if `retry`, one retry."""
        extra = tuple(extra_secrets)
        state = await self._ensure_token()
        try:
            return await self._send(
                op, path, method, url, token=state.token, payload=payload, params=params, ok=ok, extra_secrets=extra
            )
        except VaultAuthError as exc:
            if not await self._recover_rejected_token(state.generation, op):
                raise
            if not retry:
                raise VaultAuthError(
                    self._msg(op, path, "token was rejected; re-authenticated, request not retried"),
                    operation=op,
                    path=path,
                    status=exc.status,
                ) from None
        fresh = self._state
        if fresh is None:  # aclose() raced us
            raise VaultError(f"vault {op}: session is closed", operation=op, path=path)
        return await self._send(
            op, path, method, url, token=fresh.token, payload=payload, params=params, ok=ok, extra_secrets=extra
        )

    # ----------------------------------------------------------------- tokens

    @property
    def _can_relogin(self) -> bool:
        return self._settings.auth_method != "token"

    async def _ensure_token(self) -> _TokenState:
        state = self._state
        if state is not None and not state.expired(time.monotonic()):
            return state
        finished_seen = self._logins_finished
        async with self._auth_lock:
            state = self._state
            if state is None or state.expired(time.monotonic()):
                await self._login_unless_one_failed_since(
                    finished_seen, "no valid token" if state is None else "token expired"
                )
                state = self._state
            if state is None:
                raise VaultError("vault: session is closed")
            return state

    async def _login_unless_one_failed_since(self, finished_seen: int, reason: str) -> None:
        """Log in, unless a login (also one already running when we queued) failed meanwhile: then share
        its verdict instead of queueing one timeout per waiting request (caller holds _auth_lock)."""
        failed = self._last_login_error
        if self._logins_finished != finished_seen and failed is not None:
            raise type(failed)(str(failed), operation=failed.operation, path=failed.path, status=failed.status)
        await self._login(reason)

    async def _check_token(self) -> None:
        """Raise unless Vault accepts the current token, after one try at replacing a refused one."""
        state = await self._ensure_token()  # logs in first if there is no token (refused before, expired)
        if not state.self_lookup:
            return  # lookup-self is forbidden to it: nothing cheap to ask; a rejected call replaces it anyway
        try:
            await self._send("lookup-self", "auth/token/lookup-self", "GET", "/v1/auth/token/lookup-self",
                             token=state.token)
        except VaultAuthError:
            await self._recover_rejected_token(state.generation, "check")

    async def _recover_rejected_token(self, generation: int, op: str) -> bool:
        """After a 401/403: True if the token was dead and has been replaced, False if it is a real denial."""
        finished_seen = self._logins_finished
        async with self._auth_lock:
            state = self._state
            if state is None or state.generation != generation:
                if state is None:
                    await self._login_unless_one_failed_since(finished_seen, "token rejected")
                return True
            try:
                await self._send("lookup-self", "auth/token/lookup-self", "GET",
                                 "/v1/auth/token/lookup-self", token=state.token)
            except VaultAuthError:
                pass
            else:
                return False  # the token is fine: genuine permission denied
            log.warning("vault token rejected; re-authenticating", extra=self._extra("token_rejected", op=op))
            self._state = None
            await self._login("token rejected")
            return True

    async def _read_secret_file(self, what: str, filename: str) -> str:
        def read() -> str:
            return Path(filename).read_text(encoding="utf-8").strip()

        try:
            value = await asyncio.to_thread(read)
        except OSError as exc:
            raise VaultAuthError(
                f"vault login: cannot read {what} file {filename!r} ({exc.strerror or type(exc).__name__})",
                operation="login",
                path=filename,
            ) from None
        if not value:
            raise VaultAuthError(f"vault login: {what} file {filename!r} is empty", operation="login", path=filename)
        self._remember_secret(value)
        return value

    async def _login(self, reason: str) -> None:
        """Get a fresh token by the configured method and learn its TTL (caller holds _auth_lock)."""
        self._last_login_error = None  # a login abandoned half-way (its caller cancelled) has no verdict
        try:
            await self._login_once(reason)
        except VaultError as exc:
            self._last_login_error = exc
            raise
        finally:
            self._logins_finished += 1

    async def _login_once(self, reason: str) -> None:
        s = self._settings
        login_auth: dict[str, Any] | None = None
        if s.auth_method == "token":
            token = s.token or await self._read_secret_file("token", cast(str, s.token_file))
            mount = "token"
        else:
            if s.auth_method == "approle":
                mount = s.approle_mount.strip("/")
                secret_id = s.approle_secret_id or await self._read_secret_file(
                    "secret_id", cast(str, s.approle_secret_id_file)
                )
                payload = {"role_id": s.approle_role_id, "secret_id": secret_id}
            else:
                mount = s.kubernetes_mount.strip("/")
                jwt = await self._read_secret_file("kubernetes jwt", s.kubernetes_jwt_file)
                payload = {"role": s.kubernetes_role, "jwt": jwt}
            resp = await self._send(
                "login", f"auth/{mount}", "POST", f"/v1/auth/{_quote(mount)}/login", token=None, payload=payload
            )
            login_auth = (resp.body or {}).get("auth") or {}
            token = str(login_auth.get("client_token") or "")
            if not token:
                raise VaultAuthError(
                    f"vault login auth/{mount}: response carried no token", operation="login", path=f"auth/{mount}"
                )
            self._remember_secret(token)
        await self._adopt(token, reason, login_auth, mount)

    async def _adopt(self, token: str, reason: str, login_auth: Mapping[str, Any] | None, mount: str) -> None:
        """lookup-self the token and make it current; wakes the maintenance task."""
        try:
            resp = await self._send(
                "lookup-self", "auth/token/lookup-self", "GET", "/v1/auth/token/lookup-self", token=token
            )
            data: Mapping[str, Any] = (resp.body or {}).get("data") or {}
            ttl, renewable = _as_float(data.get("ttl")), bool(data.get("renewable"))
            creation_ttl = _as_float(data.get("creation_ttl")) or ttl
            if ttl <= 0 and (data.get("expire_time") or creation_ttl > 0):
                # lookup-self floors the TTL: 0 here means "under a second left", not "never expires".
                ttl = _LAST_SECOND_TTL
            self_lookup = True
        except VaultAuthError:
            if login_auth is None:
                raise  # a static token that lookup-self rejects is simply invalid
            # Fresh login without the default policy: trust what the login said.
            ttl, renewable = _as_float(login_auth.get("lease_duration")), bool(login_auth.get("renewable"))
            creation_ttl = ttl
            self_lookup = False
        if self._closed:
            raise VaultError("vault login: session is closed", operation="login")
        previous = self._state
        same_token = previous is not None and previous.token == token
        self._generation += 1
        self._state = _TokenState(
            token=token,
            ttl=ttl,
            renewable=renewable and ttl > 0,
            creation_ttl=creation_ttl,
            learned_at=time.monotonic(),
            generation=self._generation,
            # A static token we already failed to extend stays "capped": only re-check it.
            capped=same_token and previous is not None and previous.capped,
            self_lookup=self_lookup,
        )
        self._wake.set()
        log.log(
            logging.DEBUG if same_token else logging.INFO,
            "vault token checked" if same_token else "vault authenticated",
            extra=self._extra("login", reason=reason, mount=mount, ttl_s=ttl, renewable=renewable),
        )
        if self._settings.auth_method == "token" and ttl > 0 and not renewable:
            log.warning(
                "static vault token is not renewable and will expire",
                extra=self._extra("token_not_renewable", ttl_s=ttl),
            )

    async def _renew(self, state: _TokenState) -> None:
        increment = max(int(state.creation_ttl), 1)
        resp = await self._send(
            "renew-self",
            "auth/token/renew-self",
            "POST",
            "/v1/auth/token/renew-self",
            token=state.token,
            payload={"increment": f"{increment}s"},
        )
        auth: Mapping[str, Any] = (resp.body or {}).get("auth") or {}
        ttl = _as_float(auth.get("lease_duration")) or _LAST_SECOND_TTL
        capped = ttl < increment
        self._state = _TokenState(
            token=state.token,
            ttl=ttl,
            renewable=bool(auth.get("renewable")) and ttl > 0,
            creation_ttl=state.creation_ttl,
            learned_at=time.monotonic(),
            generation=state.generation,
            capped=capped,
            self_lookup=state.self_lookup,
        )
        log.debug("vault token renewed", extra=self._extra("renew", ttl_s=ttl, capped=capped))
        if capped:
            log.info("vault token reached its max TTL", extra=self._extra("max_ttl", ttl_s=ttl))

    def _next_step_in(self) -> float:
        """Seconds until the maintenance task should act."""
        state = self._state
        if state is None:
            return 0.0
        if state.capped and self._can_relogin:
            return 0.0
        if state.ttl <= 0:
            due = state.learned_at + _IDLE_CHECK_S
        else:
            due = state.learned_at + state.ttl * self._settings.renew_fraction
        return max(_MIN_STEP_S, due - time.monotonic())

    async def _maintain_once(self) -> None:
        async with self._auth_lock:
            if self._next_step_in() > _MIN_STEP_S:
                return  # someone else (start, a request) refreshed the token meanwhile
            state = self._state
            if state is None:
                await self._login("recover")
            elif self._can_relogin and (state.capped or not state.renewable):
                await self._login("max ttl" if state.capped else "not renewable")
            elif state.renewable and not state.capped:
                try:
                    await self._renew(state)
                except (VaultUnavailable, VaultAuthError) as exc:
                    if isinstance(exc, VaultUnavailable) and not _renewal_refused(exc):
                        raise  # Vault is not answering, or not now (429, 503...): back off and try again
                    # Vault answered but will not extend this token (expired, revoked,
                    # "past the max TTL" comes back as a 500): replace it if we can.
                    # Expected at the max TTL when we can log in again; worth a warning otherwise.
                    log.log(
                        logging.INFO if self._can_relogin else logging.WARNING,
                        "vault token renewal refused",
                        extra=self._extra("renew_refused", error=type(exc).__name__, detail=str(exc)),
                    )
                    if not self._can_relogin:
                        self._state = replace(state, capped=True)
                        return
                    self._state = None
                    await self._login("renewal refused")
            else:
                # Static token that cannot be extended: re-read / re-check it.
                await self._login("refresh static token")

    async def _maintain(self) -> None:
        """Renew or replace the token forever, backing off while Vault is unreachable."""
        backoff = self._backoff_initial
        while not self._closed:
            self._wake.clear()
            delay = self._next_step_in()
            if delay > 0:
                # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel that
                # lands just as the event fires, and aclose() would then wait forever.
                try:
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
                except TimeoutError:
                    pass
                else:
                    continue  # state changed under us; reschedule
            try:
                await self._maintain_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                pause = backoff * random.uniform(0.5, 1.0)
                level = logging.WARNING if isinstance(exc, VaultError) else logging.ERROR
                log.log(
                    level,
                    "vault token maintenance failed; retrying",
                    extra=self._extra("maintenance_failed", error=type(exc).__name__,
                                      detail=str(exc) if isinstance(exc, VaultError) else "",
                                      retry_in_s=round(pause, 3)),
                )
                await asyncio.sleep(pause)
                backoff = min(backoff * 2, self._backoff_max)
            else:
                backoff = self._backoff_initial

    # ----------------------------------------------------------------- hygiene

    def _remember_secret(self, value: str | None) -> None:
        if value and value not in self._secrets:
            self._secrets.append(value)

    def _scrub(self, text: str, extra: Iterable[str] = ()) -> str:
        """Remove anything secret-looking from text that came from Vault or requests."""
        for secret in (*self._configured_secrets, *self._secrets, *extra):
            if secret and len(secret) >= 4:
                text = text.replace(secret, "<redacted>")
        text = _URL_CREDENTIALS.sub("<redacted>@", text)
        text = _TOKEN_LIKE.sub("<redacted>", text)
        return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 3] + "..."

    @staticmethod
    def _msg(op: str, path: str, detail: str) -> str:
        return f"vault {op} {path!r}: {detail}" if path else f"vault {op}: {detail}"

    def _extra(self, event: str, **fields: Any) -> dict[str, Any]:
        extra: dict[str, Any] = {
            "vault_event": event,
            "vault_addr": self._settings.addr,
            "vault_auth_method": self._settings.auth_method,
        }
        extra.update({f"vault_{k}": v for k, v in fields.items()})
        return extra


# --------------------------------------------------------------------------- readiness


_OUTAGE_MESSAGES: Final[Mapping[VaultAccess, str]] = {
    VaultAccess.SEALED: "vault is sealed: not ready until it is unsealed",
    VaultAccess.UNAVAILABLE: "vault is unreachable: not ready until it answers",
    VaultAccess.REFUSED: "vault refuses this service's token: not ready until it accepts one",
    VaultAccess.ERROR: "vault fails: not ready until it answers properly",
}


class VaultWatch:
    """Check a session's access to Vault every `interval_s` and report each change, for readiness.

    A service that cannot work without Vault must not say it is ready while Vault is sealed, away, or
    refusing its token (revoked, expired, a login Vault no longer honours): Kubernetes would keep routing
    calls that can only fail. `on_change(access)` runs at the first check and at every change of verdict,
    off the request path; the service drops what it cached and sets its health there. Each outage is
    logged once at WARNING when it begins (again only if its cause changes) and at INFO when it ends.
    """

    def __init__(self, vault: VaultSession, interval_s: float,
                 on_change: Callable[[VaultAccess], Awaitable[None]], *, logger: logging.Logger = log) -> None:
        self._vault = vault
        self._interval_s = interval_s
        self._on_change = on_change
        self._log = logger
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.access: VaultAccess | None = None
        """The last verdict (None before the first check)."""

    @property
    def available(self) -> bool:
        return self.access is VaultAccess.AVAILABLE

    async def start(self) -> None:
        """Check once now, so the service starts with the right readiness, then every `interval_s`."""
        await self.check()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="vault-watch")

    async def check(self) -> VaultAccess:
        """Check now, report a change, and return the verdict (checks never overlap)."""
        async with self._lock:
            access = await self._vault.check_access()
            if access != self.access:
                previous, self.access = self.access, access  # `available` is current inside on_change
                try:
                    await self._on_change(access)
                except BaseException:
                    self.access = previous  # not applied: reported again at the next check
                    raise
                extra = {"vault_access": access.value, "vault_previous": previous.value if previous else None,
                         "vault_addr": self._vault.settings.addr}
                if access is VaultAccess.AVAILABLE:
                    self._log.info("vault available: ready", extra=extra)
                else:
                    self._log.warning(_OUTAGE_MESSAGES[access], extra=extra)
            return access

    async def aclose(self) -> None:
        """Stop checking; idempotent."""
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.check()
            except Exception:  # the service's on_change failed: keep watching, it is tried again next time
                self._log.exception("vault readiness update failed")
