"""Syndr's EIP-712 payloads, built in one place for the adapter and the simulator.

If Syndr changes what it signs, this module is the only thing to change.

Orders (DESIGN.md, "Syndr specifics the documents leave open"): domain
``{name: "Syndr", version: "1", chainId: 421614, verifyingContract: <orderbook
address from public/get_l3_contracts>}``, primary type ``Order``; ``price`` and
``amount`` are unsigned 18-decimal fixed point (:func:`to_fixed`). The uint8
codes of :class:`OrderType` and :class:`TimeInForce` are ours: Syndr's docs
name the values on the wire ("limit", "GTC") but not their numbers.

Signing-key registration follows the seed's "API Key Setup" script exactly:

* ``SignKey(address account,uint256 nonce)``: signed by the *new signing key*
  over the account address; the nonce is the contract's
  ``getVerifySigningKeyNonces(account)``.
* ``RegisterSigningKey(address key,uint256 expiresAt,uint256 nonce)``: signed
  by the *account key* over the new key's address; the nonce is
  ``getSigningKeyRegisterNonces(signing_key)``, i.e. keyed by the new key, not
  by the account. The script always uses ``expiresAt = 2**256 - 1``
  (:data:`SIGNING_KEY_NEVER_EXPIRES`) and sends it as a decimal string.
* Both use the same name, version and chain id as orders, with
  ``EIP712Domain`` declared explicitly (name, version, chainId,
  verifyingContract), but ``verifyingContract`` is the *signing keys manager*
  contract (``result.signing_keys_manager_address`` of
  ``public/get_l3_contracts``), not the orderbook. The seed never shows the
  orderbook address field of that call.

Other things the seed leaves inconsistent, for whoever builds the call: the
script posts snake_case parameters (``signer_public_address``, ``expires_at``,
``signing_key_signature``, ``account_signature``) where the parameter table
says camelCase, and it adds the ``0x`` to signatures itself because
``HexBytes.hex()`` omits it; the response table says ``api_key`` /
``api_secret`` while the example shows ``apiKey`` / ``apiSecret`` /
``signingKey`` / ``txHash``.

Everything returned is a fresh JSON-shaped dict (lists, str, int, bool),
ready for :func:`portico.runtime.eip712.hash_typed_data` or for sending.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from enum import IntEnum
from types import MappingProxyType
from typing import Any, Final

from portico.runtime.secp256k1 import to_checksum_address

__all__ = [
    "EIP712_DOMAIN_FIELDS",
    "ORDER_PRIMARY_TYPE",
    "ORDER_TYPES",
    "PRICE_DECIMALS",
    "REGISTER_SIGNING_KEY_PRIMARY_TYPE",
    "REGISTER_SIGNING_KEY_TYPES",
    "SIGNING_KEY_NEVER_EXPIRES",
    "SIGN_KEY_PRIMARY_TYPE",
    "SIGN_KEY_TYPES",
    "SYNDR_CHAIN_ID",
    "SYNDR_DOMAIN_NAME",
    "SYNDR_DOMAIN_VERSION",
    "OrderType",
    "TimeInForce",
    "from_fixed",
    "order_typed_data",
    "register_signing_key_typed_data",
    "sign_key_typed_data",
    "syndr_domain",
    "to_fixed",
]

SYNDR_DOMAIN_NAME: Final = "Syndr"
SYNDR_DOMAIN_VERSION: Final = "1"
SYNDR_CHAIN_ID: Final = 421614
PRICE_DECIMALS: Final = 18
"""Decimal places of the fixed-point ``price`` and ``amount`` in ``Order``."""

ORDER_PRIMARY_TYPE: Final = "Order"
SIGN_KEY_PRIMARY_TYPE: Final = "SignKey"
REGISTER_SIGNING_KEY_PRIMARY_TYPE: Final = "RegisterSigningKey"

SIGNING_KEY_NEVER_EXPIRES: Final = 2**256 - 1
"""``expiresAt`` the seed script registers signing keys with (max uint256)."""

_UINT256_LIMIT: Final = 1 << 256

_FieldDefs = Sequence[Mapping[str, str]]


def _fields(*pairs: tuple[str, str]) -> tuple[Mapping[str, str], ...]:
    return tuple(MappingProxyType({"name": name, "type": type_}) for name, type_ in pairs)


EIP712_DOMAIN_FIELDS: Final[_FieldDefs] = _fields(
    ("name", "string"),
    ("version", "string"),
    ("chainId", "uint256"),
    ("verifyingContract", "address"),
)

ORDER_TYPES: Final[Mapping[str, _FieldDefs]] = MappingProxyType(
    {
        "EIP712Domain": EIP712_DOMAIN_FIELDS,
        ORDER_PRIMARY_TYPE: _fields(
            ("account", "address"),
            ("instrumentId", "uint256"),
            ("isBuy", "bool"),
            ("orderType", "uint8"),
            ("timeInForce", "uint8"),
            ("postOnly", "bool"),
            ("reduceOnly", "bool"),
            ("price", "uint256"),
            ("amount", "uint256"),
            ("salt", "uint256"),
            ("expiration", "uint256"),
            ("timestamp", "uint256"),
        ),
    }
)
"""``types`` of an order (read-only: builders hand out copies)."""

SIGN_KEY_TYPES: Final[Mapping[str, _FieldDefs]] = MappingProxyType(
    {
        "EIP712Domain": EIP712_DOMAIN_FIELDS,
        SIGN_KEY_PRIMARY_TYPE: _fields(("account", "address"), ("nonce", "uint256")),
    }
)
"""``types`` of the signing key's consent to act for an account."""

REGISTER_SIGNING_KEY_TYPES: Final[Mapping[str, _FieldDefs]] = MappingProxyType(
    {
        "EIP712Domain": EIP712_DOMAIN_FIELDS,
        REGISTER_SIGNING_KEY_PRIMARY_TYPE: _fields(("key", "address"), ("expiresAt", "uint256"), ("nonce", "uint256")),
    }
)
"""``types`` of the account's registration of a signing key."""


class OrderType(IntEnum):
    """``Order.orderType`` codes (uint8), with Syndr's wire names."""

    LIMIT = 0
    MARKET = 1

    @property
    def wire(self) -> str:
        """Name in Syndr's JSON-RPC ``order_type``."""
        return self.name.lower()

    @classmethod
    def from_wire(cls, name: str) -> OrderType:
        """Parse Syndr's ``order_type`` ("limit", "market")."""
        try:
            return cls[name.upper()]
        except KeyError:
            raise ValueError(f"unknown order_type {name!r}") from None


class TimeInForce(IntEnum):
    """``Order.timeInForce`` codes (uint8), with Syndr's wire names.

    Syndr documents GTC as the only value accepted today, "IOC and more
    types coming soon", and already reports IOC on order updates; FOK is
    reserved here so the numbering need not change when it arrives.
    """

    GTC = 0
    IOC = 1
    FOK = 2

    @property
    def wire(self) -> str:
        """Name in Syndr's JSON-RPC ``time_in_force``."""
        return self.name

    @classmethod
    def from_wire(cls, name: str) -> TimeInForce:
        """Parse Syndr's ``time_in_force`` ("GTC", "IOC", "FOK")."""
        try:
            return cls[name.upper()]
        except KeyError:
            raise ValueError(f"unknown time_in_force {name!r}") from None


def to_fixed(value: Decimal, *, field: str = "value") -> int:
    """Convert a non-negative Decimal to 18-decimal fixed point, exactly.

    Raises ValueError naming ``field`` when the value is negative, not
    finite, does not fit in uint256, or needs more than 18 decimal places
    (trailing zeros are fine: ``Decimal("1.50000000000000000000")`` is 1.5).
    No Decimal context is involved, so nothing is ever rounded.
    """
    if not isinstance(value, Decimal):
        raise TypeError(f"{field} must be a Decimal, got {type(value).__name__}")
    if not value.is_finite():
        raise ValueError(f"{field} must be a finite number, got {value}")
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)  # finite, so never 'n' / 'N' / 'F'
    mantissa = int("".join(map(str, digits)))
    if mantissa == 0:
        return 0
    if sign:
        raise ValueError(f"{field} must not be negative, got {value}")
    # Bail out before building huge powers of ten from a crafted exponent.
    if len(digits) + exponent > 78:  # value >= 10**77, far past uint256 / 10**18
        raise ValueError(f"{field} is too large for uint256 fixed point")
    scale = exponent + PRICE_DECIMALS
    if -scale > len(digits):  # a non-zero digit sits beyond the 18th decimal place
        raise ValueError(f"{field} has more than {PRICE_DECIMALS} decimal places: {value}")
    fixed: int  # (int ** int is Any to mypy)
    if scale >= 0:
        fixed = mantissa * 10**scale
    else:
        fixed, remainder = divmod(mantissa, 10**-scale)
        if remainder:
            raise ValueError(f"{field} has more than {PRICE_DECIMALS} decimal places: {value}")
    if fixed >= _UINT256_LIMIT:
        raise ValueError(f"{field} is too large for uint256 fixed point")
    return fixed


def from_fixed(value: int) -> Decimal:
    """Convert an 18-decimal fixed-point integer to a Decimal, exactly and
    without trailing zeros (``1500000000000000000`` -> ``Decimal("1.5")``)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"fixed-point value must be an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"fixed-point value must not be negative, got {value}")
    if value == 0:
        return Decimal(0)
    digits = str(value)
    dropped = min(len(digits) - len(digits.rstrip("0")), PRICE_DECIMALS)
    return Decimal(f"{digits[: len(digits) - dropped]}E{dropped - PRICE_DECIMALS}")


def _address(value: str, field: str) -> str:
    try:
        return to_checksum_address(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{field}: {exc}") from None


def _uint(value: int, field: str, limit: int = _UINT256_LIMIT) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{field} must be an int, got {type(value).__name__}")
    if not 0 <= value < limit:
        raise ValueError(f"{field} out of range: {value}")
    return int(value)


def _code(enum: type[IntEnum], value: int, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{field} must be an int code, got {type(value).__name__}")
    try:
        return int(enum(value))
    except ValueError:
        raise ValueError(f"{field}: unknown code {value}") from None


def _bool(value: bool, field: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{field} must be a bool, got {type(value).__name__}")
    return value


def _copy_types(types: Mapping[str, _FieldDefs]) -> dict[str, list[dict[str, str]]]:
    return {name: [dict(field) for field in fields] for name, fields in types.items()}


def syndr_domain(verifying_contract: str) -> dict[str, Any]:
    """Syndr's EIP-712 domain for the given contract (orderbook for orders,
    signing keys manager for key registration)."""
    return {
        "name": SYNDR_DOMAIN_NAME,
        "version": SYNDR_DOMAIN_VERSION,
        "chainId": SYNDR_CHAIN_ID,
        "verifyingContract": _address(verifying_contract, "verifying_contract"),
    }


def order_typed_data(
    *,
    verifying_contract: str,
    account: str,
    instrument_id: int,
    is_buy: bool,
    order_type: int,
    time_in_force: int,
    post_only: bool,
    reduce_only: bool,
    price: Decimal,
    amount: Decimal,
    salt: int,
    expiration: int,
    timestamp: int,
) -> dict[str, Any]:
    """Build the ``eth_signTypedData_v4`` object of a Syndr order.

    ``verifying_contract`` is the orderbook address; ``price`` and
    ``amount`` are converted exactly to 18-decimal fixed point. Raises
    ValueError naming the parameter for anything Syndr could not accept.
    """
    order_type_code = _code(OrderType, order_type, "order_type")
    time_in_force_code = _code(TimeInForce, time_in_force, "time_in_force")
    return {
        "types": _copy_types(ORDER_TYPES),
        "primaryType": ORDER_PRIMARY_TYPE,
        "domain": syndr_domain(verifying_contract),
        "message": {
            "account": _address(account, "account"),
            "instrumentId": _uint(instrument_id, "instrument_id"),
            "isBuy": _bool(is_buy, "is_buy"),
            "orderType": order_type_code,
            "timeInForce": time_in_force_code,
            "postOnly": _bool(post_only, "post_only"),
            "reduceOnly": _bool(reduce_only, "reduce_only"),
            "price": to_fixed(price, field="price"),
            "amount": to_fixed(amount, field="amount"),
            "salt": _uint(salt, "salt"),
            "expiration": _uint(expiration, "expiration"),
            "timestamp": _uint(timestamp, "timestamp"),
        },
    }


def sign_key_typed_data(*, verifying_contract: str, account: str, nonce: int) -> dict[str, Any]:
    """Build the ``SignKey`` object the new signing key signs.

    ``verifying_contract`` is the signing keys manager; ``nonce`` is its
    ``getVerifySigningKeyNonces(account)``.
    """
    return {
        "types": _copy_types(SIGN_KEY_TYPES),
        "primaryType": SIGN_KEY_PRIMARY_TYPE,
        "domain": syndr_domain(verifying_contract),
        "message": {"account": _address(account, "account"), "nonce": _uint(nonce, "nonce")},
    }


def register_signing_key_typed_data(
    *, verifying_contract: str, key: str, expires_at: int = SIGNING_KEY_NEVER_EXPIRES, nonce: int
) -> dict[str, Any]:
    """Build the ``RegisterSigningKey`` object the account key signs.

    ``key`` is the new signing key's address, ``nonce`` the signing keys
    manager's ``getSigningKeyRegisterNonces(key)``; ``expires_at`` defaults
    to the seed's "never" (max uint256).
    """
    return {
        "types": _copy_types(REGISTER_SIGNING_KEY_TYPES),
        "primaryType": REGISTER_SIGNING_KEY_PRIMARY_TYPE,
        "domain": syndr_domain(verifying_contract),
        "message": {
            "key": _address(key, "key"),
            "expiresAt": _uint(expires_at, "expires_at"),
            "nonce": _uint(nonce, "nonce"),
        },
    }
