"""The venue's security, as Syndr would have it: API keys, signing keys, order signatures.

- API keys carry a scope (admin / read-write / read-only) and authenticate
  HTTP calls (`syndr-api-key` / `syndr-api-secret` headers) and WebSocket
  connections (`public/auth`).
- `public/register_signing_key` verifies both EIP-712 signatures of the seed's
  script (`SignKey` by the new key, `RegisterSigningKey` by the account) against
  the current nonces, then issues an admin API key. One signing key is active
  per account: registering a new one replaces (revokes) the previous one.
- Every order carries an EIP-712 `Order` signature that must recover to the
  account's active signing key; a salt is accepted once per account.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from portico.runtime.eip712 import TypedDataError, hash_typed_data
from portico.runtime.secp256k1 import recover_address, to_checksum_address
from portico.sim.errors import RpcFailure
from portico.venues.syndr import typed_data
from portico.venues.syndr.constants import ApiKeyScope, ErrorCode

__all__ = ["ApiKey", "Security", "SigningKey", "required_scope"]


# Which API-key scopes may call which private methods.
_READ_ONLY = frozenset({
    "private/get_open_orders", "private/get_positions", "private/get_order_history_by_kind",
    "private/get_order_history_by_instrument", "private/get_user_trades_by_order",
    "private/get_user_trades_by_instrument", "private/get_user_trades_by_kind", "private/get_deposits",
    "private/get_portfolio_margin_data", "private/get_account_summary", "private/subscribe", "private/unsubscribe",
})
_ADMIN_ONLY = frozenset({"private/create_api_key", "private/get_api_keys", "private/deactivate_api_key",
                         "private/toggle_portfolio_margin"})


def required_scope(method: str) -> ApiKeyScope:
    """The weakest scope that may call `method` (a lower value is a stronger scope)."""
    if method in _READ_ONLY:
        return ApiKeyScope.READ_ONLY
    if method in _ADMIN_ONLY:
        return ApiKeyScope.ADMIN
    return ApiKeyScope.READ_WRITE


@dataclass
class ApiKey:
    api_key: str
    account: str
    scope: ApiKeyScope
    name: str
    created_at: int
    updated_at: int
    active: bool = True
    secret_sha256: bytes = field(repr=False, default=b"")

    def to_wire(self) -> dict[str, Any]:
        """The get_api_keys item. The document shows secrets there; this venue never returns one twice.
        Its table names the times `created_at` / `updated_at`, its example `createdAt` / `updatedAt`: both."""
        return {"api_key": self.api_key, "name": self.name, "scope": int(self.scope),
                "created_at": self.created_at, "updated_at": self.updated_at,
                "createdAt": self.created_at, "updatedAt": self.updated_at, "active": self.active}


@dataclass
class SigningKey:
    address: str
    expires_at: int
    registered_at: int


def _secret_digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def parse_address(value: Any, name: str) -> str:
    """A 20-byte 0x address in any case, returned checksummed; INVALID_PARAMS otherwise."""
    if not isinstance(value, str) or not value.startswith("0x") or len(value) != 42:
        raise RpcFailure(ErrorCode.INVALID_PARAMS, f"{name} must be a 0x-prefixed 20-byte address")
    try:
        return to_checksum_address(bytes.fromhex(value[2:]))
    except ValueError:
        raise RpcFailure(ErrorCode.INVALID_PARAMS, f"{name} is not a valid address") from None


def _signature(value: Any, name: str) -> bytes:
    if not isinstance(value, str):
        raise RpcFailure(ErrorCode.INVALID_PARAMS, f"{name} must be a 0x-hex string")
    text = value[2:] if value.startswith("0x") else value
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise RpcFailure(ErrorCode.INVALID_PARAMS, f"{name} is not hex") from None
    if len(raw) != 65:
        raise RpcFailure(ErrorCode.INVALID_PARAMS, f"{name} must be 65 bytes")
    return raw


def _recover(data: dict[str, Any], signature: bytes) -> str | None:
    try:
        return recover_address(hash_typed_data(data).digest, signature)
    except (TypedDataError, ValueError):
        return None


class Security:
    """API keys, signing keys, nonces and used salts of every account."""

    def __init__(self, *, orderbook_address: str, signing_keys_manager_address: str):
        self.orderbook_address = orderbook_address
        self.signing_keys_manager_address = signing_keys_manager_address
        self._keys: dict[str, ApiKey] = {}
        self._signing: dict[str, SigningKey] = {}  # account -> active signing key
        self._verify_nonce: dict[str, int] = {}  # account -> SignKey nonce
        self._register_nonce: dict[str, int] = {}  # signing key -> RegisterSigningKey nonce
        self._salts: dict[str, set[str]] = {}  # account -> used salts

    # ------------------------------------------------------------------ API keys

    def create_api_key(self, account: str, scope: ApiKeyScope, name: str = "") -> tuple[ApiKey, str]:
        """Issue a key; the secret is returned once and only its digest is kept."""
        api_key = secrets.token_urlsafe(32)
        secret = f"{secrets.token_hex(32)}.{secrets.token_hex(32)}"
        now = int(time.time())
        key = ApiKey(api_key, account, scope, name, now, now, True, _secret_digest(secret))
        self._keys[api_key] = key
        return key, secret

    def authenticate(self, api_key: Any, api_secret: Any) -> ApiKey:
        if not isinstance(api_key, str) or not isinstance(api_secret, str) or not api_key or not api_secret:
            raise RpcFailure(ErrorCode.UNAUTHORIZED, "api key and secret required")
        key = self._keys.get(api_key)
        if key is None or not key.active or not hmac.compare_digest(key.secret_sha256, _secret_digest(api_secret)):
            raise RpcFailure(ErrorCode.UNAUTHORIZED, "invalid api key or secret")
        return key

    @staticmethod
    def authorize(key: ApiKey, method: str) -> None:
        if key.scope > required_scope(method):
            raise RpcFailure(ErrorCode.FORBIDDEN, f"api key scope does not allow {method}")

    def api_keys(self, account: str) -> list[ApiKey]:
        return [k for k in self._keys.values() if k.account == account]

    def deactivate_api_key(self, account: str, api_key: Any) -> ApiKey:
        key = self._keys.get(api_key) if isinstance(api_key, str) else None
        if key is None or key.account != account:
            raise RpcFailure(ErrorCode.API_KEY_NOT_FOUND, "api key not found")
        key.active = False
        key.updated_at = int(time.time())
        return key

    # ------------------------------------------------------------------ signing keys

    def nonces(self, account: str, signing_key: str) -> dict[str, int]:
        return {"verify_signing_key_nonce": self._verify_nonce.get(account, 0),
                "signing_key_register_nonce": self._register_nonce.get(signing_key, 0)}

    def register_signing_key(self, params: dict[str, Any]) -> tuple[str, str]:
        """Verify both signatures at the current nonces; return (account, signing key address)."""
        def param(*names: str) -> Any:
            for name in names:
                if name in params:
                    return params[name]
            raise RpcFailure(ErrorCode.INVALID_PARAMS, f"missing parameter {names[0]}")

        account = parse_address(param("account"), "account")
        key = parse_address(param("signerPublicAddress", "signer_public_address"), "signerPublicAddress")
        expires_raw = param("expiresAt", "expires_at")
        try:
            expires_at = int(expires_raw)
        except (TypeError, ValueError):
            raise RpcFailure(ErrorCode.INVALID_PARAMS, "expiresAt must be an integer") from None
        if expires_at < 0 or expires_at >= 2**256:
            raise RpcFailure(ErrorCode.INVALID_PARAMS, "expiresAt out of range")
        key_signature = _signature(param("signingKeySignature", "signing_key_signature"), "signingKeySignature")
        account_signature = _signature(param("accountSignature", "account_signature"), "accountSignature")

        verify_nonce = self._verify_nonce.get(account, 0)
        register_nonce = self._register_nonce.get(key, 0)
        sign_key = typed_data.sign_key_typed_data(
            verifying_contract=self.signing_keys_manager_address, account=account, nonce=verify_nonce)
        register = typed_data.register_signing_key_typed_data(
            verifying_contract=self.signing_keys_manager_address, key=key, expires_at=expires_at,
            nonce=register_nonce)
        if _recover(sign_key, key_signature) != key:
            raise RpcFailure(ErrorCode.INVALID_SIGNATURE,
                             "signingKeySignature is not the signer's SignKey signature at the current nonce")
        if _recover(register, account_signature) != account:
            raise RpcFailure(ErrorCode.INVALID_SIGNATURE,
                             "accountSignature is not the account's RegisterSigningKey signature at the current nonce")
        self._verify_nonce[account] = verify_nonce + 1
        self._register_nonce[key] = register_nonce + 1
        self._signing[account] = SigningKey(key, expires_at, int(time.time()))
        return account, key

    def signing_key(self, account: str) -> SigningKey | None:
        return self._signing.get(account)

    # ------------------------------------------------------------------ orders

    def verify_order(self, account: str, *, instrument_id: int, is_buy: bool, order_type: int, time_in_force: int,
                     post_only: bool, reduce_only: bool, price: Decimal, amount: Decimal, salt: int,
                     expiration: int, timestamp: int, signature: Any) -> str:
        """Check an order's signature against the account's signing key and that its salt is unused.

        The salt is consumed by `consume_salt` once the order is accepted, so a
        rejected order's retry sees the real rejection again, not SALT_REUSED.
        """
        registered = self._signing.get(account)
        if registered is None:
            raise RpcFailure(ErrorCode.SIGNING_KEY_NOT_REGISTERED, "no signing key registered for this account")
        if registered.expires_at < int(time.time()):
            raise RpcFailure(ErrorCode.SIGNING_KEY_EXPIRED, "the account's signing key has expired")
        raw = _signature(signature, "signature")
        try:
            data = typed_data.order_typed_data(
                verifying_contract=self.orderbook_address, account=account, instrument_id=instrument_id,
                is_buy=is_buy, order_type=order_type, time_in_force=time_in_force, post_only=post_only,
                reduce_only=reduce_only, price=price, amount=amount, salt=salt, expiration=expiration,
                timestamp=timestamp)
        except ValueError as exc:
            raise RpcFailure(ErrorCode.INVALID_PARAMS, str(exc)) from None
        if _recover(data, raw) != registered.address:
            raise RpcFailure(ErrorCode.INVALID_SIGNATURE, "order signature does not match the registered signing key")
        if str(salt) in self._salts.get(account, ()):
            raise RpcFailure(ErrorCode.SALT_REUSED, "salt already used")
        return registered.address

    def consume_salt(self, account: str, salt: int) -> None:
        self._salts.setdefault(account, set()).add(str(salt))
