"""Syndr's wire constants in one place, shared by the adapter and the simulator.

Paths, method and channel names follow the Syndr API document. The document
gives no error codes, no nonce methods (the real venue reads nonces from a
contract) and no rate-limit figures; the values here are this project's, and
the simulator and the adapter both take them from this module so they cannot
drift apart.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum
from typing import Final

# Paths. The document's HTTP endpoint is `<host>/api/v1`; its WebSocket examples
# use `<host>/api/v1/ws/api/v1`, and DESIGN.md's embedded default uses
# `<host>/ws/api/v1`. The simulator serves all of them.
HTTP_PATH: Final = "/api/v1"
WS_PATH: Final = "/ws/api/v1"
HTTP_PATH_ALIASES: Final = ("/api/v1", "/api/v1/api/v1")
WS_PATH_ALIASES: Final = ("/ws/api/v1", "/api/v1/ws/api/v1")

# Private calls over HTTP carry these headers; over WebSocket, `public/auth` first.
API_KEY_HEADER: Final = "syndr-api-key"
API_SECRET_HEADER: Final = "syndr-api-secret"  # noqa: S105 - a header name

# Notification envelopes: the document shows `subscription` for market-data
# channels and `subscriptions` for `user.*` channels.
NOTIFICATION_METHOD_PUBLIC: Final = "subscription"
NOTIFICATION_METHOD_USER: Final = "subscriptions"
NOTIFICATION_METHODS: Final = frozenset({NOTIFICATION_METHOD_PUBLIC, NOTIFICATION_METHOD_USER})

PUBLIC_METHODS: Final = (
    "public/get_all_instrument_names",
    "public/get_instruments",
    "public/get_instruments_by_currency",
    "public/get_instrument",
    "public/get_order_book",
    "public/get_trades",
    "public/ticker",
    "public/get_tradingview_chart_data",
    "public/get_supported_collaterals",
    "public/get_index_price_names",
    "public/get_currencies",
    "public/get_l3_contracts",
    "public/register_signing_key",
    "public/auth",
    "public/subscribe",
    "public/unsubscribe",
    # Not in the document: the real venue reads these nonces from the signing
    # keys manager contract (getVerifySigningKeyNonces / getSigningKeyRegisterNonces).
    "public/get_signing_key_nonces",
)

MATCHING_ENGINE_METHODS: Final = frozenset({
    "private/buy",
    "private/sell",
    "private/edit",
    "private/cancel",
    "private/cancel_all",
    "private/cancel_all_by_instrument",
})

PRIVATE_METHODS: Final = (
    *sorted(MATCHING_ENGINE_METHODS),
    "private/update_instrument_leverage",
    "private/get_open_orders",
    "private/get_positions",
    "private/get_order_history_by_kind",
    "private/get_order_history_by_instrument",
    "private/get_user_trades_by_order",
    "private/get_user_trades_by_instrument",
    "private/get_user_trades_by_kind",
    "private/get_deposits",
    "private/create_api_key",
    "private/get_api_keys",
    "private/deactivate_api_key",
    "private/get_portfolio_margin_data",
    "private/get_account_summary",
    "private/toggle_portfolio_margin",
    "private/subscribe",
    "private/unsubscribe",
)

# Cancels are what a client must still be able to send when its budget is tight.
CANCEL_METHODS: Final = frozenset({"private/cancel", "private/cancel_all", "private/cancel_all_by_instrument"})


class ApiKeyScope(IntEnum):
    """`scope` of `private/create_api_key` and `private/get_api_keys`."""

    ADMIN = 0
    READ_WRITE = 1
    READ_ONLY = 2


class InstrumentKind(StrEnum):
    PERPETUAL = "perpetual"
    FUTURE = "future"
    OPTION = "option"


class ErrorCode(IntEnum):
    """JSON-RPC `error.code` values. Negative ones are JSON-RPC 2.0's own."""

    PARSE_ERROR = -32700
    INVALID_REQUEST = -32600
    METHOD_NOT_FOUND = -32601
    INVALID_PARAMS = -32602
    INTERNAL_ERROR = -32603
    # Authentication and authorisation.
    UNAUTHORIZED = 13009  # missing or wrong API key / secret, or WebSocket not authenticated
    FORBIDDEN = 13021  # the API key's scope does not allow the method
    # Rate limiting.
    TOO_MANY_REQUESTS = 10028
    # Reference data.
    INSTRUMENT_NOT_FOUND = 10004
    INSTRUMENT_INACTIVE = 10005
    # Orders.
    NOT_ENOUGH_FUNDS = 10009
    ORDER_NOT_FOUND = 11044
    PRICE_NOT_ON_TICK = 11050
    AMOUNT_NOT_ON_INCREMENT = 11051
    AMOUNT_TOO_SMALL = 11052
    POST_ONLY_WOULD_TAKE = 11054
    REDUCE_ONLY_WOULD_INCREASE = 11055
    NO_LIQUIDITY = 11056  # a market order with nothing to match
    ORDER_EXPIRED = 11057
    LEVERAGE_TOO_HIGH = 11058
    # Signatures and signing keys.
    INVALID_SIGNATURE = 13010  # not signed by the account's registered signing key, or tampered
    SALT_REUSED = 13011
    SIGNING_KEY_NOT_REGISTERED = 13012
    NONCE_MISMATCH = 13013
    SIGNING_KEY_EXPIRED = 13014
    # API keys.
    API_KEY_NOT_FOUND = 13020


ERROR_MESSAGES: Final[dict[ErrorCode, str]] = {
    ErrorCode.PARSE_ERROR: "parse error",
    ErrorCode.INVALID_REQUEST: "invalid request",
    ErrorCode.METHOD_NOT_FOUND: "method not found",
    ErrorCode.INVALID_PARAMS: "invalid params",
    ErrorCode.INTERNAL_ERROR: "internal error",
    ErrorCode.UNAUTHORIZED: "unauthorized",
    ErrorCode.FORBIDDEN: "forbidden",
    ErrorCode.TOO_MANY_REQUESTS: "too_many_requests",
    ErrorCode.INSTRUMENT_NOT_FOUND: "instrument_not_found",
    ErrorCode.INSTRUMENT_INACTIVE: "instrument_inactive",
    ErrorCode.NOT_ENOUGH_FUNDS: "not_enough_funds",
    ErrorCode.ORDER_NOT_FOUND: "order_not_found",
    ErrorCode.PRICE_NOT_ON_TICK: "price_not_on_tick",
    ErrorCode.AMOUNT_NOT_ON_INCREMENT: "amount_not_on_increment",
    ErrorCode.AMOUNT_TOO_SMALL: "amount_too_small",
    ErrorCode.POST_ONLY_WOULD_TAKE: "post_only_reject",
    ErrorCode.REDUCE_ONLY_WOULD_INCREASE: "reduce_only_reject",
    ErrorCode.NO_LIQUIDITY: "no_liquidity",
    ErrorCode.ORDER_EXPIRED: "order_expired",
    ErrorCode.LEVERAGE_TOO_HIGH: "leverage_too_high",
    ErrorCode.INVALID_SIGNATURE: "invalid_signature",
    ErrorCode.SALT_REUSED: "salt_reused",
    ErrorCode.SIGNING_KEY_NOT_REGISTERED: "signing_key_not_registered",
    ErrorCode.NONCE_MISMATCH: "nonce_mismatch",
    ErrorCode.SIGNING_KEY_EXPIRED: "signing_key_expired",
    ErrorCode.API_KEY_NOT_FOUND: "api_key_not_found",
}


class RateLimit:
    """The venue's credit bucket per API key (the simulator enforces it, the adapter stays under it).

    Each call costs credits; the bucket holds `CAPACITY` and refills at
    `REFILL_PER_S`. Matching-engine calls are cheaper than reads, as on
    venues that want orders and cancels to flow: with these defaults a key can
    sustain 1,000 matching-engine calls/s or 200 other calls/s.
    """

    CAPACITY: Final = 50_000
    REFILL_PER_S: Final = 10_000
    MATCHING_ENGINE_COST: Final = 10
    OTHER_COST: Final = 50

    @staticmethod
    def cost(method: str) -> int:
        return RateLimit.MATCHING_ENGINE_COST if method in MATCHING_ENGINE_METHODS else RateLimit.OTHER_COST


# Instrument naming (the document's "Naming" section).
MONTHS: Final = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
