"""Bearer-token authentication with the scopes `read`, `trade` and `admin`.

Services never hold plaintext tokens: the configuration lists each token's
SHA-256 digest with a name and its scopes, e.g.

    PORTICO_AUTH_TOKENS='[{"name": "desk-a", "sha256": "9f86...", "scopes": ["read", "trade"]}]'

(`portico token new` makes a token and prints its entry). The caller's name
is what audit logs record. Scopes are independent: a token has exactly the
scopes listed.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from portico.runtime.config import ConfigError, setting
from portico.runtime.errors import PermissionDenied, Unauthenticated

__all__ = [
    "SCOPES",
    "Principal",
    "TokenAuthenticator",
    "current_principal",
    "hash_token",
    "new_token",
]

SCOPES = ("read", "trade", "admin")
TOKEN_PREFIX = "pt_"  # noqa: S105 - a prefix, not a credential

AUTH_TOKENS = setting(
    "PORTICO_AUTH_TOKENS", "",
    'Bearer tokens as JSON: `[{"name", "sha256", "scopes": [...]}]` (SHA-256 of each token, never the token).')
AUTH_TOKENS_FILE = setting(
    "PORTICO_AUTH_TOKENS_FILE", "",
    "Path of a file holding the same JSON as `PORTICO_AUTH_TOKENS` (e.g. a mounted Secret).")

_SHA256_RE = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, and what they may do."""

    name: str
    scopes: frozenset[str]


current_principal: ContextVar[Principal | None] = ContextVar("portico_principal", default=None)


def new_token() -> str:
    """A fresh random bearer token."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """The hex SHA-256 digest under which a token is configured."""
    return hashlib.sha256(token.encode()).hexdigest()


class TokenAuthenticator:
    """Resolves `authorization: Bearer <token>` metadata to a `Principal`."""

    def __init__(self, entries: Iterable[Mapping[str, Any]]):
        self._by_digest: dict[bytes, Principal] = {}
        for index, entry in enumerate(entries):
            where = f"auth token entry {index}"
            if not isinstance(entry, Mapping):
                raise ConfigError(f"{where} must be an object with `name`, `sha256` and `scopes`")
            name = entry.get("name")
            digest = entry.get("sha256")
            scopes = entry.get("scopes")
            if not isinstance(name, str) or not name:
                raise ConfigError(f"{where}: `name` must be a non-empty string")
            if not isinstance(digest, str) or not _SHA256_RE.fullmatch(digest):
                raise ConfigError(f"{where} ({name}): `sha256` must be 64 lowercase hex characters")
            if not isinstance(scopes, list) or not all(s in SCOPES for s in scopes):
                raise ConfigError(f"{where} ({name}): `scopes` must be a list drawn from {list(SCOPES)}")
            key = bytes.fromhex(digest)
            if key in self._by_digest:  # one of the two would silently lose its name and scopes
                raise ConfigError(f"{where} ({name}): the same token as `{self._by_digest[key].name}`")
            self._by_digest[key] = Principal(name, frozenset(scopes))

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TokenAuthenticator:
        raw: Any = AUTH_TOKENS.get_json(env)
        source = AUTH_TOKENS.name
        path = AUTH_TOKENS_FILE.get_path(env)
        if raw is None and path is not None:
            source = AUTH_TOKENS_FILE.name
            try:
                raw = json.loads(path.read_text())
            except (OSError, ValueError) as exc:  # ValueError: not JSON, or not UTF-8 (a binary file, say)
                raise ConfigError(f"{AUTH_TOKENS_FILE.name}: cannot read token list ({type(exc).__name__})") from None
        if raw is None:
            raw = []
        if not isinstance(raw, list):
            raise ConfigError(f"{source} must be a JSON list")
        try:
            return cls(raw)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    def __len__(self) -> int:
        return len(self._by_digest)

    def authenticate(self, metadata: Sequence[tuple[str, str | bytes]]) -> Principal:
        """Return the caller, or raise UNAUTHENTICATED."""
        header = None
        for key, value in metadata:
            if key == "authorization":
                header = value if isinstance(value, str) else value.decode("latin-1")
                break
        if header is None:
            raise Unauthenticated("missing bearer token", reason="TOKEN_MISSING")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("authorization must be `Bearer <token>`", reason="TOKEN_MALFORMED")
        digest = hashlib.sha256(token.encode()).digest()
        # Looking up by the SHA-256 of the presented token reveals nothing about
        # configured tokens through timing: an attacker would need a preimage.
        principal = self._by_digest.get(digest)
        if principal is None:
            raise Unauthenticated("invalid bearer token", reason="TOKEN_INVALID")
        return principal

    @staticmethod
    def authorize(principal: Principal, scope: str, method: str) -> None:
        """Raise PERMISSION_DENIED unless `principal` holds `scope`."""
        if scope not in principal.scopes:
            raise PermissionDenied(
                f"{method} requires scope `{scope}`", reason="SCOPE_MISSING",
                metadata={"required_scope": scope, "caller": principal.name},
            )

