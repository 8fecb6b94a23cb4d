"""Typed wire models for everything Syndr answers or pushes, and the parsers that build them.

The adapter, the simulator's tests and the market-data service all read the
venue's JSON through this module, so the document's quirks are decided once:

* Money (prices, amounts, fees, PnL, weights, greeks) is ``Decimal``, never
  float. The document sends most of it as strings but some as JSON numbers
  (candles, ``quotes.*``, ``user.fills.*``, ``user.orders.*``); frames are
  decoded with ``parse_float=Decimal`` so a number keeps the digits it was sent
  with. Only the ``book.*`` hot path uses orjson, and book levels are strings.
* Timestamps become int milliseconds since the epoch, whatever was sent: int or
  string milliseconds, ISO 8601 strings (``public/get_trades``), seconds
  (``user.orders.*``, deposits, API keys) or microseconds. The unit is inferred
  from the magnitude (see :func:`to_ms`). ``usIn``/``usOut``/``usDiff`` are
  kept in microseconds (``us_*``), as named, with ``*_ms`` properties.
* A required field that is missing or has the wrong type raises
  :class:`SyndrProtocolError` naming the method or channel and the field;
  unknown extra fields are ignored, because venues add fields.
* Where the document's table and its example disagree, both spellings are
  accepted (``apiKey``/``api_key``, ``createdAt``/``created_at``,
  ``tx_hash``/``txn_hash``, ``creator``/``account``, trades' ``amount``/``size``),
  and where results come wrapped differently (``private/edit``'s
  ``{"status", "result"}``, a single object where a list is documented) the
  parser unwraps them.

Parsers come in one shape, ``parse_<thing>(obj, *, where=...) -> Model``, taking
an already-decoded ``result`` (or notification ``data``); :data:`RESULT_PARSERS`
maps each method to its parser. Frames (bytes or str) go through
:func:`parse_rpc_response`, :func:`parse_notification` or, for order-book
deltas at thousands per second, :func:`parse_book_change`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import chain
from types import MappingProxyType
from typing import Any, Final, NoReturn, TypeAlias

import orjson

from portico.venues.syndr.constants import NOTIFICATION_METHODS
from portico.venues.syndr.errors import SyndrProtocolError, SyndrRpcError, rpc_error_from_object

__all__ = [
    "RESULT_PARSERS",
    "SECONDS_BELOW",
    "AccountSummary",
    "ApiKey",
    "ApiKeyDeactivation",
    "AuthResult",
    "BookChange",
    "BookLevel",
    "Burst",
    "Candle",
    "Collateral",
    "CreatedApiKey",
    "Deposit",
    "FillsManager",
    "Frame",
    "Greeks",
    "Instrument",
    "L3Contracts",
    "LeverageUpdate",
    "MarketStats",
    "Notification",
    "NotificationData",
    "Order",
    "OrderBook",
    "OrderUpdate",
    "PortfolioMarginData",
    "PortfolioMarginToggle",
    "Position",
    "PositionUpdate",
    "Quote",
    "RawBookLevel",
    "RpcErrorObject",
    "RpcRequest",
    "RpcResponse",
    "SigningKeyRegistration",
    "Ticker",
    "Trade",
    "TransactionUpdate",
    "UnreadableInstrument",
    "UserTrade",
    "book_change_from_data",
    "decode",
    "order_object",
    "parse_account_summary",
    "parse_api_key_deactivation",
    "parse_api_keys",
    "parse_auth",
    "parse_book_change",
    "parse_burst",
    "parse_cancel_all",
    "parse_chart_data",
    "parse_created_api_key",
    "parse_currencies",
    "parse_deposits",
    "parse_index_price_names",
    "parse_instrument",
    "parse_instrument_names",
    "parse_instruments",
    "parse_instruments_readable",
    "parse_l3_contracts",
    "parse_leverage_update",
    "parse_notification",
    "parse_order",
    "parse_order_book",
    "parse_order_update",
    "parse_orders",
    "parse_portfolio_margin_data",
    "parse_portfolio_margin_toggle",
    "parse_position_update",
    "parse_positions",
    "parse_quote",
    "parse_register_signing_key",
    "parse_request",
    "parse_result",
    "parse_rpc_response",
    "parse_subscriptions",
    "parse_supported_collaterals",
    "parse_ticker",
    "parse_trade",
    "parse_trades",
    "parse_transaction_update",
    "parse_user_trade",
    "parse_user_trades",
    "readable_levels",
    "to_ms",
]

Frame: TypeAlias = bytes | bytearray | memoryview | str
BookLevel: TypeAlias = tuple[Decimal, Decimal]
"""``(price, amount)``; an amount of zero removes the price level."""
RawBookLevel: TypeAlias = tuple[str, str]
"""``(price, amount)`` exactly as the venue spelled them (checksums are over these)."""

_EMPTY: Final[Mapping[str, Any]] = MappingProxyType({})


# =========================================================================== decoding and field readers


def _protocol(where: str, message: str) -> NoReturn:
    raise SyndrProtocolError(f"{where}: {message}")


def _reject_constant(name: str) -> NoReturn:
    raise SyndrProtocolError(f"JSON constant {name} is not a number")


def decode(frame: Frame, *, where: str = "frame") -> Any:
    """Decode JSON keeping every number exact: floats become ``Decimal``, NaN/Infinity are refused."""
    if isinstance(frame, memoryview | bytearray):
        frame = bytes(frame)
    try:
        return json.loads(frame, parse_float=Decimal, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        _protocol(where, f"not valid JSON ({exc})")


def _object(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        _protocol(where, f"expected an object, got {type(value).__name__}")
    return value


def _array(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        _protocol(where, f"expected an array, got {type(value).__name__}")
    return value


def _present(obj: Mapping[str, Any], keys: tuple[str, ...]) -> tuple[str, Any]:
    """The first of `keys` (aliases) present with a non-null value, else (first key, None)."""
    for key in keys:
        value = obj.get(key)
        if value is not None:
            return key, value
    return keys[0], None


def _required(obj: Mapping[str, Any], where: str, *keys: str) -> tuple[str, Any]:
    key, value = _present(obj, keys)
    if value is None:
        _protocol(where, f"field {key!r} is missing")
    return key, value


_DECIMAL_TEXT: Final = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
# Bounds on a venue's number: far beyond any price, amount or balance (an 18-decimal fixed-point uint256 has
# 78 digits), far short of what would exhaust memory once printed in plain form ("1e999999" is a valid
# JSON number; as a plain decimal string it is a megabyte).
_MAX_DECIMAL_CHARS: Final = 100
_MAX_DECIMAL_EXPONENT: Final = 100


def _preview(value: Any) -> str:
    """A bounded picture of an unreadable value, for an error message."""
    if type(value) is int:
        return f"an integer of {value.bit_length()} bits"  # repr() refuses ints of more than 4,300 digits
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:40]}... ({len(text)} characters)"


def _to_decimal(value: Any, where: str, key: str) -> Decimal:
    kind = type(value)
    number: Decimal | None = None
    if kind is str:
        if len(value) <= _MAX_DECIMAL_CHARS and _DECIMAL_TEXT.fullmatch(value):
            number = Decimal(value)
    elif kind is Decimal:
        if value.is_finite():
            number = value
    elif kind is int:
        if -(10 ** _MAX_DECIMAL_EXPONENT) < value < 10 ** _MAX_DECIMAL_EXPONENT:
            return Decimal(value)
    elif kind is float and math.isfinite(value):
        number = Decimal(repr(value))  # orjson-decoded: the shortest spelling that round-trips
    if number is not None and abs(number.as_tuple().exponent) <= _MAX_DECIMAL_EXPONENT:  # type: ignore[arg-type]
        return number
    _protocol(where, f"field {key!r} is not a decimal number in range: {_preview(value)}")


def _dec(obj: Mapping[str, Any], where: str, *keys: str) -> Decimal:
    key, value = _required(obj, where, *keys)
    return _to_decimal(value, where, key)


def _opt_dec(obj: Mapping[str, Any], where: str, *keys: str) -> Decimal | None:
    key, value = _present(obj, keys)
    if value is None or value == "":
        return None
    return _to_decimal(value, where, key)


def _to_str(value: Any, where: str, key: str) -> str:
    if type(value) is not str:
        # The type only: the field may be a secret (`api_secret`) the venue sent in another shape.
        _protocol(where, f"field {key!r} is not a string (a {type(value).__name__})")
    return value


def _str(obj: Mapping[str, Any], where: str, *keys: str) -> str:
    key, value = _required(obj, where, *keys)
    return _to_str(value, where, key)


def _opt_str(obj: Mapping[str, Any], where: str, *keys: str) -> str | None:
    key, value = _present(obj, keys)
    return None if value is None else _to_str(value, where, key)


def _opt_text(obj: Mapping[str, Any], where: str, *keys: str) -> str | None:
    """A text field the document types as a number somewhere (a number is kept as its digits)."""
    key, value = _present(obj, keys)
    if value is None:
        return None
    if type(value) in (int, float, Decimal):  # a float only from an orjson-decoded answer
        return str(value)
    return _to_str(value, where, key)


def _ident(obj: Mapping[str, Any], where: str, *keys: str) -> str:
    """An identifier the document shows as a string but sometimes types as a number."""
    key, value = _required(obj, where, *keys)
    if type(value) is int:
        return str(value)
    return _to_str(value, where, key)


# Integers in the venue's answers are ids, counts, times and uint256 salts (78 digits). A longer digit string
# would make `int()` raise (Python's 4,300-digit limit) or, from an exponent ("1e999999999"), build a number of a
# billion digits: either is a malformed answer, not an integer to convert.
_MAX_INT_DIGITS = 100


def _to_int(value: Any, where: str, key: str) -> int:
    kind = type(value)
    if kind is int:
        return value  # type: ignore[no-any-return]
    if kind is str and value.isascii() and value.isdigit() and len(value) <= _MAX_INT_DIGITS:
        return int(value)
    if (kind is Decimal and value.is_finite() and value.adjusted() < _MAX_INT_DIGITS
            and value == value.to_integral_value()):
        return int(value)
    _protocol(where, f"field {key!r} is not an integer: {_preview(value)}")


def _int(obj: Mapping[str, Any], where: str, *keys: str) -> int:
    key, value = _required(obj, where, *keys)
    return _to_int(value, where, key)


def _opt_int(obj: Mapping[str, Any], where: str, *keys: str) -> int | None:
    key, value = _present(obj, keys)
    return None if value is None or value == "" else _to_int(value, where, key)


def _to_bool(value: Any, where: str, key: str) -> bool:
    if type(value) is not bool:
        _protocol(where, f"field {key!r} is not a boolean: {_preview(value)}")
    return value


def _bool(obj: Mapping[str, Any], where: str, *keys: str) -> bool:
    key, value = _required(obj, where, *keys)
    return _to_bool(value, where, key)


def _opt_bool(obj: Mapping[str, Any], where: str, *keys: str) -> bool | None:
    key, value = _present(obj, keys)
    return None if value is None else _to_bool(value, where, key)


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MS: Final = timedelta(milliseconds=1)


SECONDS_BELOW: Final = 100_000_000_000
"""An epoch timestamp below this is in seconds (1e11 ms would be March 1973)."""


def to_ms(value: int) -> int:
    """Scale an epoch timestamp of unknown unit to milliseconds, by magnitude.

    Below 1e11 it is seconds (1e11 ms would be March 1973), below 1e14
    milliseconds, below 1e17 microseconds, else nanoseconds. The document uses
    seconds, milliseconds and microseconds for fields it calls "timestamp".
    """
    if value < SECONDS_BELOW:
        return value * 1000
    if value < 100_000_000_000_000:
        return value
    if value < 100_000_000_000_000_000:
        return value // 1000
    return value // 1_000_000


def _to_ms(value: Any, where: str, key: str) -> int:
    kind = type(value)
    if kind is int or kind is Decimal or (kind is str and value.isascii() and value.isdigit()):
        number = _to_int(value, where, key)
        if number >= 0:
            return to_ms(number)
    elif kind is str:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            return (moment - _EPOCH) // _MS
    _protocol(where, f"field {key!r} is not a timestamp: {value!r}")


def _ms(obj: Mapping[str, Any], where: str, *keys: str) -> int:
    key, value = _required(obj, where, *keys)
    return _to_ms(value, where, key)


def _opt_ms(obj: Mapping[str, Any], where: str, *keys: str) -> int | None:
    key, value = _present(obj, keys)
    return None if value is None or value == "" else _to_ms(value, where, key)


def _decimals(value: Any, where: str, key: str) -> tuple[Decimal, ...]:
    items = _array(value, f"{where} {key!r}")
    return tuple(_to_decimal(item, where, f"{key}[{i}]") for i, item in enumerate(items))


def _decimal_map(obj: Mapping[str, Any], where: str, key: str) -> Mapping[str, Decimal]:
    value = obj.get(key)
    if value is None:
        return _EMPTY
    entries = _object(value, f"{where} {key!r}")
    return MappingProxyType({name: _to_decimal(v, where, f"{key}.{name}") for name, v in entries.items()})


def _levels(value: Any, where: str, key: str) -> tuple[BookLevel, ...]:
    """Book levels off the hot path: `[price, amount]` pairs, strings or numbers, neither negative."""
    levels = []
    for i, level in enumerate(_array(value, f"{where} {key!r}")):
        if not isinstance(level, list) or len(level) != 2:
            _protocol(where, f"field '{key}[{i}]' is not a [price, amount] pair: {_preview(level)}")
        price, amount = _to_decimal(level[0], where, f"{key}[{i}][0]"), _to_decimal(level[1], where, f"{key}[{i}][1]")
        if price.is_signed() or amount.is_signed():
            _protocol(where, f"field '{key}[{i}]' has a negative price or amount")
        levels.append((price, amount))
    return tuple(levels)


def _items(value: Any, where: str) -> list[Any]:
    """A documented array that some examples send as a single object."""
    return [value] if isinstance(value, dict) else _array(value, where)


# =========================================================================== JSON-RPC envelope


@dataclass(frozen=True, slots=True, kw_only=True)
class RpcErrorObject:
    """JSON-RPC ``error``: kept as data so callers choose when to raise."""

    code: int
    message: str
    data: Any = None

    def to_exception(self, method: str = "") -> SyndrRpcError:
        return rpc_error_from_object({"code": self.code, "message": self.message, "data": self.data}, method=method)


@dataclass(frozen=True, slots=True, kw_only=True)
class RpcResponse:
    """A JSON-RPC response; ``result`` stays decoded-but-untyped until a ``parse_*`` is applied."""

    id: int | str | None
    result: Any = None
    error: RpcErrorObject | None = None
    us_in: int | None = None
    us_out: int | None = None
    us_diff: int | None = None

    @property
    def in_ms(self) -> int | None:
        return None if self.us_in is None else self.us_in // 1000

    @property
    def out_ms(self) -> int | None:
        return None if self.us_out is None else self.us_out // 1000

    def unwrap(self, method: str = "") -> Any:
        """The result, or the venue's error raised as the matching ``SyndrRpcError``."""
        if self.error is not None:
            raise self.error.to_exception(method)
        return self.result


@dataclass(frozen=True, slots=True, kw_only=True)
class RpcRequest:
    """A JSON-RPC request (what the simulator receives, what the fixtures show)."""

    id: int | str | None
    method: str
    params: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)


def _envelope(frame: Frame | Mapping[str, Any], where: str) -> Mapping[str, Any]:
    obj = frame if isinstance(frame, Mapping) else decode(frame, where=where)
    obj = _object(obj, where)
    if obj.get("jsonrpc") != "2.0":
        _protocol(where, f"field 'jsonrpc' is not \"2.0\": {obj.get('jsonrpc')!r}")
    return obj


def _rpc_id(obj: Mapping[str, Any], where: str) -> int | str | None:
    value = obj.get("id")
    if value is None or type(value) in (int, str):
        return value
    _protocol(where, f"field 'id' is not an integer or string: {value!r}")


def parse_rpc_response(frame: Frame | Mapping[str, Any], *, where: str = "response") -> RpcResponse:
    """Parse the envelope of an answer: exactly one of ``result`` and ``error``."""
    obj = _envelope(frame, where)
    error = None
    if "error" in obj and obj["error"] is not None:
        raw = _object(obj["error"], f"{where} 'error'")
        error = RpcErrorObject(code=_int(raw, f"{where} error", "code"),
                               message=_opt_str(raw, f"{where} error", "message") or "", data=raw.get("data"))
    elif "result" not in obj:
        _protocol(where, "field 'result' is missing (and there is no 'error')")
    return RpcResponse(
        id=_rpc_id(obj, where),
        result=obj.get("result"),
        error=error,
        us_in=_opt_int(obj, where, "usIn"),
        us_out=_opt_int(obj, where, "usOut"),
        us_diff=_opt_int(obj, where, "usDiff"),
    )


def parse_request(frame: Frame | Mapping[str, Any], *, where: str = "request") -> RpcRequest:
    obj = _envelope(frame, where)
    params = obj.get("params")
    return RpcRequest(
        id=_rpc_id(obj, where),
        method=_str(obj, where, "method"),
        params=MappingProxyType(dict(_object(params, f"{where} 'params'"))) if params is not None else _EMPTY,
    )


# =========================================================================== reference data


@dataclass(frozen=True, slots=True, kw_only=True)
class Instrument:
    """``public/get_instrument(s)``, ``get_instruments_by_currency``."""

    name: str
    id: int
    kind: str
    base_currency: str
    quote_currency: str
    contract_size: Decimal
    tick_size: Decimal
    min_trade_amount: Decimal
    maker_commission: Decimal
    taker_commission: Decimal
    is_active: bool
    max_leverage: Decimal | None = None
    max_liquidation_commission: Decimal | None = None
    price_index: str | None = None
    settlement_period: str | None = None
    underlying_name: str | None = None


def parse_instrument(obj: Any, *, where: str = "public/get_instrument") -> Instrument:
    o = _object(obj, where)
    return Instrument(
        name=_str(o, where, "name", "instrument_name"),
        id=_int(o, where, "id", "instrument_id"),
        kind=_str(o, where, "kind"),
        base_currency=_str(o, where, "base_currency"),
        quote_currency=_str(o, where, "quote_currency"),
        contract_size=_dec(o, where, "contract_size"),
        tick_size=_dec(o, where, "tick_size"),
        min_trade_amount=_dec(o, where, "min_trade_amount"),
        maker_commission=_dec(o, where, "maker_commission"),
        taker_commission=_dec(o, where, "taker_commission"),
        is_active=_bool(o, where, "is_active"),
        max_leverage=_opt_dec(o, where, "max_leverage"),
        max_liquidation_commission=_opt_dec(o, where, "max_liquidation_commission"),
        price_index=_opt_str(o, where, "price_index"),
        settlement_period=_opt_str(o, where, "settlement_period"),
        underlying_name=_opt_str(o, where, "underlying_name"),
    )


def parse_instruments(obj: Any, *, where: str = "public/get_instruments") -> dict[str, Instrument]:
    """Name -> instrument. The document keys them by name; a plain array is accepted too.

    Any entry that cannot be read fails the whole listing; :func:`parse_instruments_readable` sets it aside.
    """
    entries = obj.items() if isinstance(obj, dict) else enumerate(_array(obj, where))
    instruments = (parse_instrument(entry, where=f"{where} result[{key!r}]") for key, entry in entries)
    return {instrument.name: instrument for instrument in instruments}


@dataclass(frozen=True, slots=True, kw_only=True)
class UnreadableInstrument:
    """A listed instrument that could not be read: its name if that much is readable, and what was wrong."""

    name: str | None
    error: str


_MAX_NAME_CHARS: Final = 100  # far beyond any instrument name; a longer one is not named in logs and errors
_MAX_ERROR_CHARS: Final = 300


def _listed_name(key: Any, entry: Any) -> str | None:
    """The name an unreadable listing entry goes by: its own `name` if a string, else the key it is listed
    under (the document keys the listing by name; an array's position is no name)."""
    candidates = (entry.get("name"), entry.get("instrument_name")) if isinstance(entry, dict) else ()
    for name in (*candidates, key):
        if type(name) is str and 0 < len(name) <= _MAX_NAME_CHARS:
            return name
    return None


def parse_instruments_readable(obj: Any, *, where: str = "public/get_instruments"
                               ) -> tuple[dict[str, Instrument], tuple[UnreadableInstrument, ...]]:
    """Like :func:`parse_instruments`, but an entry that cannot be read (a required field missing, a field of
    the wrong type, a malformed number) is set aside instead of failing the whole listing: returns the
    readable ones (name -> instrument) and the unreadable ones, in listing order. A listing that is neither
    an object nor an array still raises :class:`SyndrProtocolError`."""
    entries = obj.items() if isinstance(obj, dict) else enumerate(_array(obj, where))
    readable: dict[str, Instrument] = {}
    unreadable: list[UnreadableInstrument] = []
    for key, entry in entries:
        at = f"{where} result[{key!r}]" if type(key) is int else f"{where} result[{_preview(key)}]"
        try:
            instrument = parse_instrument(entry, where=at)
        except SyndrProtocolError as exc:  # the field and its value, never the entry, and bounded
            error = str(exc)  # (some readers quote a value whole: a megabyte `is_active` must not reach a log)
            if len(error) > _MAX_ERROR_CHARS:
                error = f"{error[:_MAX_ERROR_CHARS]}... ({len(error)} characters)"
            unreadable.append(UnreadableInstrument(name=_listed_name(key, entry), error=error))
            continue
        readable[instrument.name] = instrument
    return readable, tuple(unreadable)


def _strings(obj: Any, where: str, keys: tuple[str, ...] = ()) -> tuple[str, ...]:
    """An array of names; objects carrying the name under one of `keys` are accepted too."""
    names = []
    for i, item in enumerate(_array(obj, where)):
        names.append(_str(item, f"{where} result[{i}]", *keys) if keys and isinstance(item, dict)
                     else _to_str(item, where, f"result[{i}]"))
    return tuple(names)


def parse_instrument_names(obj: Any, *, where: str = "public/get_all_instrument_names") -> tuple[str, ...]:
    return _strings(obj, where)


def parse_currencies(obj: Any, *, where: str = "public/get_currencies") -> tuple[str, ...]:
    """Currency symbols ("BTC"). The document shows no example: names, objects or an object keyed by name."""
    if isinstance(obj, dict):
        return tuple(obj)
    return _strings(obj, where, ("currency", "symbol", "name"))


def parse_index_price_names(obj: Any, *, where: str = "public/get_index_price_names") -> tuple[str, ...]:
    """Index names ("BTC/USD"). The document shows no example: names, or objects with the name."""
    if isinstance(obj, dict):
        return tuple(obj)
    return _strings(obj, where, ("name", "index_name", "price_index"))


@dataclass(frozen=True, slots=True, kw_only=True)
class Collateral:
    """``public/get_supported_collaterals``: one collateral token."""

    symbol: str
    decimals: int
    collateral_weight: Decimal
    im_weight: Decimal | None = None
    mm_weight: Decimal | None = None
    name: str | None = None
    paused: bool | None = None
    price_index: str | None = None
    oracle_price_id: str | None = None
    oracle_update_data: str | None = None
    l2_address: str | None = None
    l2_gateway: str | None = None
    l3_address: str | None = None


def parse_supported_collaterals(obj: Any, *, where: str = "public/get_supported_collaterals") -> dict[str, Collateral]:
    collaterals = {}
    for key, entry in _object(obj, where).items():
        at = f"{where} result[{key!r}]"
        o = _object(entry, at)
        collaterals[key] = Collateral(
            symbol=_opt_str(o, at, "symbol") or key,
            decimals=_int(o, at, "decimals"),
            collateral_weight=_dec(o, at, "collateral_weight"),
            im_weight=_opt_dec(o, at, "im_weight"),
            mm_weight=_opt_dec(o, at, "mm_weight"),
            name=_opt_str(o, at, "name"),
            paused=_opt_bool(o, at, "paused"),
            price_index=_opt_str(o, at, "price_index"),
            oracle_price_id=_opt_str(o, at, "oracle_price_id"),
            oracle_update_data=_opt_str(o, at, "oracle_update_data"),
            l2_address=_opt_str(o, at, "l2_address"),
            l2_gateway=_opt_str(o, at, "l2_gateway"),
            l3_address=_opt_str(o, at, "l3_address"),
        )
    return collaterals


@dataclass(frozen=True, slots=True, kw_only=True)
class L3Contracts:
    """``public/get_l3_contracts``: the signing keys manager; orderbook and chain id are this project's additions."""

    signing_keys_manager_address: str
    orderbook_address: str | None = None
    chain_id: int | None = None


def parse_l3_contracts(obj: Any, *, where: str = "public/get_l3_contracts") -> L3Contracts:
    o = _object(obj, where)
    return L3Contracts(
        signing_keys_manager_address=_str(o, where, "signing_keys_manager_address"),
        orderbook_address=_opt_str(o, where, "orderbook_address"),
        chain_id=_opt_int(o, where, "chain_id"),
    )


# =========================================================================== market data


@dataclass(frozen=True, slots=True, kw_only=True)
class MarketStats:
    """``stats``: the three places that have it name its fields three ways, so all are optional."""

    high: Decimal | None = None
    low: Decimal | None = None
    price_change: Decimal | None = None
    volume: Decimal | None = None
    volume_usd: Decimal | None = None
    change_24h: Decimal | None = None
    max_24h: Decimal | None = None
    min_24h: Decimal | None = None
    volume_24h: Decimal | None = None


_STATS_FIELDS: Final = MarketStats.__slots__


def _stats(o: Mapping[str, Any], where: str) -> MarketStats | None:
    value = o.get("stats")
    if value is None:
        return None
    s = _object(value, f"{where} 'stats'")
    at = f"{where} stats"
    return MarketStats(**{name: _opt_dec(s, at, name) for name in _STATS_FIELDS})


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderBook:
    """``public/get_order_book``."""

    instrument_name: str
    timestamp: int
    bids: tuple[BookLevel, ...]
    asks: tuple[BookLevel, ...]
    best_bid_price: Decimal | None = None
    best_bid_amount: Decimal | None = None
    best_ask_price: Decimal | None = None
    best_ask_amount: Decimal | None = None
    mark_price: Decimal | None = None
    index_price: Decimal | None = None
    last_price: Decimal | None = None
    min_price: Decimal | None = None
    max_price: Decimal | None = None
    funding_rate: Decimal | None = None
    open_interest: Decimal | None = None
    stats: MarketStats | None = None
    # The venue's own strings of each level (for checksums computed from them), and the change id
    # the book reflects (a field this project's venue adds so a snapshot lines up with book.*.raw).
    bids_raw: tuple[RawBookLevel, ...] = ()
    asks_raw: tuple[RawBookLevel, ...] = ()
    change_id: int | None = None


def _raw_levels(value: Any) -> tuple[RawBookLevel, ...]:
    return tuple((str(price), str(amount)) for price, amount in value)


def parse_order_book(obj: Any, *, where: str = "public/get_order_book") -> OrderBook:
    o = _object(obj, where)
    bids = _levels(_required(o, where, "bids")[1], where, "bids")
    asks = _levels(_required(o, where, "asks")[1], where, "asks")
    change_id = o.get("change_id")
    return OrderBook(
        bids_raw=_raw_levels(o["bids"]),
        asks_raw=_raw_levels(o["asks"]),
        change_id=change_id if isinstance(change_id, int) and not isinstance(change_id, bool) else None,
        instrument_name=_str(o, where, "instrument_name"),
        timestamp=_ms(o, where, "timestamp"),
        bids=bids,
        asks=asks,
        best_bid_price=_opt_dec(o, where, "best_bid_price"),
        best_bid_amount=_opt_dec(o, where, "best_bid_amount"),
        best_ask_price=_opt_dec(o, where, "best_ask_price"),
        best_ask_amount=_opt_dec(o, where, "best_ask_amount"),
        mark_price=_opt_dec(o, where, "mark_price"),
        index_price=_opt_dec(o, where, "index_price"),
        last_price=_opt_dec(o, where, "last_price"),
        min_price=_opt_dec(o, where, "min_price"),
        max_price=_opt_dec(o, where, "max_price"),
        funding_rate=_opt_dec(o, where, "funding_rate"),
        open_interest=_opt_dec(o, where, "open_interest"),
        stats=_stats(o, where),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Greeks:
    """Option greeks of a ticker; absent for perpetuals and futures."""

    delta: Decimal | None = None
    gamma: Decimal | None = None
    rho: Decimal | None = None
    sigma: Decimal | None = None
    tau: Decimal | None = None
    theta: Decimal | None = None
    vega: Decimal | None = None


_GREEK_FIELDS: Final = Greeks.__slots__


@dataclass(frozen=True, slots=True, kw_only=True)
class Ticker:
    """``public/ticker`` result and ``ticker.{instrument}`` notification data (the same shape)."""

    instrument_name: str
    timestamp: int
    mark_price: Decimal
    best_bid_price: Decimal | None = None
    best_bid_amount: Decimal | None = None
    best_ask_price: Decimal | None = None
    best_ask_amount: Decimal | None = None
    index_price: Decimal | None = None
    last_price: Decimal | None = None
    min_price: Decimal | None = None
    max_price: Decimal | None = None
    open_interest: Decimal | None = None
    funding_rate: Decimal | None = None
    funding_8h: Decimal | None = None
    contract_size: Decimal | None = None
    interest_value: Decimal | None = None
    stats: MarketStats | None = None
    greeks: Greeks | None = None
    best_bid_iv: Decimal | None = None
    best_ask_iv: Decimal | None = None
    best_bid_delta: Decimal | None = None
    best_ask_delta: Decimal | None = None
    strike: Decimal | None = None
    is_call: bool | None = None


def parse_ticker(obj: Any, *, where: str = "public/ticker") -> Ticker:
    o = _object(obj, where)
    greeks = {name: _opt_dec(o, where, name) for name in _GREEK_FIELDS}
    return Ticker(
        instrument_name=_str(o, where, "instrument_name"),
        timestamp=_ms(o, where, "timestamp"),
        mark_price=_dec(o, where, "mark_price"),
        best_bid_price=_opt_dec(o, where, "best_bid_price"),
        best_bid_amount=_opt_dec(o, where, "best_bid_amount"),
        best_ask_price=_opt_dec(o, where, "best_ask_price"),
        best_ask_amount=_opt_dec(o, where, "best_ask_amount"),
        index_price=_opt_dec(o, where, "index_price"),
        last_price=_opt_dec(o, where, "last_price"),
        min_price=_opt_dec(o, where, "min_price"),
        max_price=_opt_dec(o, where, "max_price"),
        open_interest=_opt_dec(o, where, "open_interest"),
        funding_rate=_opt_dec(o, where, "funding_rate"),
        funding_8h=_opt_dec(o, where, "funding_8h"),
        contract_size=_opt_dec(o, where, "contract_size"),
        interest_value=_opt_dec(o, where, "interest_value"),
        stats=_stats(o, where),
        greeks=Greeks(**greeks) if any(v is not None for v in greeks.values()) else None,
        best_bid_iv=_opt_dec(o, where, "best_bid_iv"),
        best_ask_iv=_opt_dec(o, where, "best_ask_iv"),
        best_bid_delta=_opt_dec(o, where, "best_bid_delta"),
        best_ask_delta=_opt_dec(o, where, "best_ask_delta"),
        strike=_opt_dec(o, where, "strike"),
        is_call=_opt_bool(o, where, "is_call"),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Trade:
    """A public trade: ``public/get_trades``, ``trades.{instrument}.raw``, an order's ``Trades``.

    The channel calls the amount ``size``; it is ``amount`` here either way.
    """

    id: str
    instrument_name: str
    side: str
    price: Decimal
    amount: Decimal
    timestamp: int


def parse_trade(obj: Any, *, where: str = "trades") -> Trade:
    o = _object(obj, where)
    return Trade(
        id=_ident(o, where, "id", "trade_id"),
        instrument_name=_str(o, where, "instrument_name"),
        side=_str(o, where, "side", "direction"),
        price=_dec(o, where, "price"),
        amount=_dec(o, where, "amount", "size"),
        timestamp=_ms(o, where, "timestamp"),
    )


def parse_trades(obj: Any, *, where: str = "public/get_trades") -> tuple[Trade, ...]:
    return tuple(parse_trade(item, where=f"{where} result[{i}]") for i, item in enumerate(_items(obj, where)))


@dataclass(frozen=True, slots=True, kw_only=True)
class Candle:
    """``public/get_tradingview_chart_data``: one candle (sent as JSON numbers)."""

    time: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    last_updated_time: int | None = None


def parse_chart_data(obj: Any, *, where: str = "public/get_tradingview_chart_data") -> tuple[Candle, ...]:
    candles = []
    for i, item in enumerate(_array(obj, where)):
        at = f"{where} result[{i}]"
        o = _object(item, at)
        candles.append(Candle(
            time=_ms(o, at, "time"),
            open=_dec(o, at, "open"),
            high=_dec(o, at, "high"),
            low=_dec(o, at, "low"),
            close=_dec(o, at, "close"),
            volume=_dec(o, at, "volume"),
            last_updated_time=_opt_ms(o, at, "LastUpdatedTime", "last_updated_time"),
        ))
    return tuple(candles)


@dataclass(frozen=True, slots=True, kw_only=True)
class Quote:
    """``quotes.{instrument}``: best bid/ask (sent as JSON numbers; null when a side is empty)."""

    instrument_name: str
    timestamp: int
    best_bid_price: Decimal | None = None
    best_bid_amount: Decimal | None = None
    best_ask_price: Decimal | None = None
    best_ask_amount: Decimal | None = None
    best_bid_iv: Decimal | None = None
    best_bid_delta: Decimal | None = None
    best_ask_iv: Decimal | None = None
    best_ask_delta: Decimal | None = None


def parse_quote(obj: Any, *, where: str = "quotes") -> Quote:
    o = _object(obj, where)
    return Quote(
        instrument_name=_str(o, where, "instrument_name"),
        timestamp=_ms(o, where, "timestamp"),
        best_bid_price=_opt_dec(o, where, "best_bid_price"),
        best_bid_amount=_opt_dec(o, where, "best_bid_amount"),
        best_ask_price=_opt_dec(o, where, "best_ask_price"),
        best_ask_amount=_opt_dec(o, where, "best_ask_amount"),
        best_bid_iv=_opt_dec(o, where, "best_bid_iv"),
        best_bid_delta=_opt_dec(o, where, "best_bid_delta"),
        best_ask_iv=_opt_dec(o, where, "best_ask_iv"),
        best_ask_delta=_opt_dec(o, where, "best_ask_delta"),
    )


# --------------------------------------------------------------------------- book.* (the hot path)


@dataclass(frozen=True, slots=True, kw_only=True)
class BookChange:
    """``book.{instrument}.15.raw`` (a change with ids) or ``book.{instrument}.15.100ms`` (no ids).

    Levels are ``(price, amount)``; an amount of zero removes the level. The
    venue's strings are kept in ``bids_raw``/``asks_raw`` for checksums (a
    Decimal does not remember "3110.0" vs "3110"); they cost ~1 us a frame.
    Decimals are built eagerly, measured at ~10 of ~20 us for 15 levels a
    side: deferring them would only pay off for a consumer that never reads
    the levels, and would move a malformed-price error from here to wherever
    a level is first read.
    """

    channel: str
    instrument_name: str
    timestamp: int
    bids: tuple[BookLevel, ...]
    asks: tuple[BookLevel, ...]
    bids_raw: tuple[RawBookLevel, ...]
    asks_raw: tuple[RawBookLevel, ...]
    type: str | None = None
    change_id: int | None = None
    previous_change_id: int | None = None


_D: Final = Decimal


# A level's price or amount as the venue may spell it: a non-negative decimal, an exponent of at most two digits.
_LEVEL_TEXT: Final = re.compile(r"(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]{1,2})?")


def readable_levels(levels: Iterable[tuple[str, str]], text: str) -> bool:
    """Whether a side's `[price, amount]` strings (`text`: all of them joined) are decimals a level may be.

    Decimal() itself rejects "", "1.2.3" or "."; it would take NaN/Infinity, non-ASCII digits, underscores,
    a sign and any exponent ("1e999999999", which costs a gigabyte once formatted). The venue's usual
    spelling ("3110", "0.02") has none of the characters these need, which a few substring checks on the
    joined side show for a fraction of a per-value regex's cost; only a side with one of them (an
    exponent such as "1e-3", or junk) is checked value by value.
    """
    if (text.isascii() and "n" not in text and "N" not in text and "_" not in text and "-" not in text
            and "+" not in text and "e" not in text and "E" not in text):
        return True
    match = _LEVEL_TEXT.fullmatch
    return all(match(price) and match(amount) for price, amount in levels)


def _book_side(data: Mapping[str, Any], key: str, where: str) -> tuple[tuple[RawBookLevel, ...], tuple[BookLevel, ...]]:
    """Validate one side with whole-side checks (no per-level isinstance) and build both forms.

    `readable_levels` checks the strings before Decimal() parses them.
    """
    try:
        raw = tuple([(p, a) for p, a in data[key]])  # unpacking checks the [price, amount] shape
        text = "".join(chain.from_iterable(raw))  # TypeError unless every value is a string
        if readable_levels(raw, text):
            return raw, tuple([(_D(p), _D(a)) for p, a in raw])
    except KeyError:
        _protocol(where, f"field {key!r} is missing")
    except (TypeError, ValueError, ArithmeticError):
        pass
    _protocol(where, f"field {key!r} is not a list of [price, amount] decimal strings")


def _book_change(channel: str, data: Any) -> BookChange:
    if type(data) is not dict:
        _protocol(channel, "field 'data' is not an object")
    bids_raw, bids = _book_side(data, "bids", channel)
    asks_raw, asks = _book_side(data, "asks", channel)
    timestamp = data.get("timestamp")
    instrument_name = data.get("instrument_name")
    change_id = data.get("change_id")
    previous_change_id = data.get("previous_change_id")
    kind = data.get("type")
    return BookChange(
        channel=channel,
        instrument_name=instrument_name if type(instrument_name) is str else _str(data, channel, "instrument_name"),
        timestamp=(int(timestamp) if type(timestamp) is str and timestamp.isdigit() and len(timestamp) == 13
                   else _ms(data, channel, "timestamp")),
        bids=bids,
        asks=asks,
        bids_raw=bids_raw,
        asks_raw=asks_raw,
        type=kind if kind is None or type(kind) is str else _to_str(kind, channel, "type"),
        change_id=(change_id if change_id is None or type(change_id) is int
                   else _to_int(change_id, channel, "change_id")),
        previous_change_id=(previous_change_id if previous_change_id is None or type(previous_change_id) is int
                            else _to_int(previous_change_id, channel, "previous_change_id")),
    )


def book_change_from_data(channel: str, data: Any) -> BookChange:
    """A ``book.*`` notification's already-decoded ``data`` as a BookChange (no second JSON parse)."""
    return _book_change(channel, data)


def parse_book_change(frame: Frame) -> BookChange:
    """Parse a ``book.*`` notification frame: orjson, then straight to tuples (thousands a second)."""
    try:
        message = orjson.loads(frame)
        params = message["params"]
        channel = params["channel"]
        data = params["data"]
    except orjson.JSONDecodeError as exc:
        _protocol("book notification", f"not valid JSON ({exc})")
    except (KeyError, TypeError):
        _protocol("book notification", "not a notification: 'params.channel' or 'params.data' is missing")
    if message.get("method") not in NOTIFICATION_METHODS:
        _protocol("book notification", f"field 'method' is not a notification method: {message.get('method')!r}")
    if type(channel) is not str or not channel.startswith("book."):
        _protocol("book notification", f"field 'channel' is not a book channel: {channel!r}")
    return _book_change(channel, data)


# =========================================================================== trading


@dataclass(frozen=True, slots=True, kw_only=True)
class Order:
    """An order as ``private/buy|sell|edit|cancel``, ``get_open_orders``, order history and ``user.orders.*`` show it.

    ``creator`` is the account (the history calls it ``account``). Timestamps
    the channel sends in seconds are milliseconds here like everywhere else.
    """

    order_id: str
    instrument_name: str
    direction: str
    order_type: str
    order_state: str
    price: Decimal
    amount: Decimal
    filled_amount: Decimal
    creation_timestamp: int
    last_update_timestamp: int
    unfilled_amount: Decimal | None = None
    average_price: Decimal | None = None
    original_amount: Decimal | None = None
    time_in_force: str | None = None
    post_only: bool | None = None
    reduce_only: bool | None = None
    is_liquidation: bool | None = None
    label: str | None = None
    creator: str | None = None
    order_signer: str | None = None
    expiration: int | None = None
    trigger_price: Decimal | None = None
    trigger_condition: str | None = None
    triggered: bool | None = None
    contract_size: Decimal | None = None
    salt: int | None = None
    signature: str | None = None
    trades: tuple[Trade, ...] = ()


def _order(obj: Any, where: str) -> Order:
    o = _object(obj, where)
    trades = o.get("trades", o.get("Trades"))
    return Order(
        order_id=_ident(o, where, "order_id"),
        instrument_name=_str(o, where, "instrument_name"),
        direction=_str(o, where, "direction"),
        order_type=_str(o, where, "order_type"),
        order_state=_str(o, where, "order_state"),
        price=_dec(o, where, "price"),
        amount=_dec(o, where, "amount"),
        filled_amount=_dec(o, where, "filled_amount"),
        creation_timestamp=_ms(o, where, "creation_timestamp"),
        last_update_timestamp=_ms(o, where, "last_update_timestamp"),
        unfilled_amount=_opt_dec(o, where, "unfilled_amount"),
        average_price=_opt_dec(o, where, "average_price"),
        original_amount=_opt_dec(o, where, "original_amount"),
        time_in_force=_opt_str(o, where, "time_in_force"),
        post_only=_opt_bool(o, where, "post_only"),
        reduce_only=_opt_bool(o, where, "reduce_only"),
        is_liquidation=_opt_bool(o, where, "is_liquidation"),
        label=_opt_str(o, where, "label"),
        creator=_opt_str(o, where, "creator", "account"),
        order_signer=_opt_str(o, where, "order_signer"),
        expiration=_opt_ms(o, where, "expiration"),
        trigger_price=_opt_dec(o, where, "trigger_price"),
        # The user.orders tables type it as a number; every example sends "".
        trigger_condition=_opt_text(o, where, "trigger_condition"),
        triggered=_opt_bool(o, where, "triggered"),
        contract_size=_opt_dec(o, where, "contract_size"),
        salt=_opt_int(o, where, "salt"),
        # The user.orders tables type it as a number; every example sends a hex string.
        signature=_opt_text(o, where, "signature"),
        trades=() if trades is None else tuple(
            parse_trade(t, where=f"{where} trades[{i}]") for i, t in enumerate(_array(trades, f"{where} 'trades'"))
        ),
    )


def order_object(obj: Any) -> dict[str, Any] | None:
    """The order object of an answer as the venue sent it, or None: unwraps ``{"order": order}``, ``{"Order": ...}``
    (the name private/buy's and private/sell's tables give it) and ``{"status", "result": order}`` (private/edit)."""
    if not isinstance(obj, dict):
        return None
    if "order_id" in obj:
        return obj
    for key in ("order", "Order", "result"):
        if isinstance(obj.get(key), dict):
            return order_object(obj[key])
    return None


def parse_order(obj: Any, *, where: str = "order") -> Order:
    """One order; unwraps ``{"status", "result": order}`` (``private/edit``) and ``{"order": order}``."""
    return _order(_object(order_object(obj) or obj, where), where)


def parse_orders(obj: Any, *, where: str = "orders") -> tuple[Order, ...]:
    """Orders from an array, or from ``get_open_orders``' documented currency/kind/instrument/id nesting."""
    if isinstance(obj, list):
        return tuple(parse_order(item, where=f"{where} result[{i}]") for i, item in enumerate(obj))
    orders: list[Order] = []

    def walk(node: Any, path: str) -> None:
        node = _object(node, f"{where} {path}")
        if "order_id" in node:
            orders.append(_order(node, f"{where} {path}"))
            return
        for key, child in node.items():
            walk(child, f"{path}[{key!r}]")

    walk(obj, "result")
    return tuple(orders)


def parse_cancel_all(obj: Any, *, where: str = "private/cancel_all") -> int | str:
    """The acknowledgement: ``1`` for ``cancel_all``, a sentence for ``cancel_all_by_instrument``."""
    if type(obj) in (int, str):
        return obj  # type: ignore[no-any-return]
    _protocol(where, f"field 'result' is not an acknowledgement: {obj!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class LeverageUpdate:
    """``private/update_instrument_leverage``."""

    success: bool


def parse_leverage_update(obj: Any, *, where: str = "private/update_instrument_leverage") -> LeverageUpdate:
    key, value = _required(_object(obj, where), where, "success")
    if type(value) is bool or value in (0, 1):
        return LeverageUpdate(success=bool(value))
    _protocol(where, f"field {key!r} is not 0/1: {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class UserTrade:
    """A fill of ours: ``get_user_trades_*`` (with ``maker_order``/``taker_order``) and ``user.fills.*``."""

    id: str
    instrument_name: str
    side: str
    price: Decimal
    amount: Decimal
    timestamp: int
    trade_sequence: int | None = None
    incoming_order_id: str | None = None
    book_order_id: str | None = None
    maker: str | None = None
    taker: str | None = None
    maker_order: Order | None = None
    taker_order: Order | None = None
    status: str | None = None
    instrument_id: int | None = None
    contract_size: Decimal | None = None
    tx_hash: str | None = None
    is_sync: bool | None = None
    salt: int | None = None
    expiration: int | None = None
    maker_signature: str | None = None
    taker_signature: str | None = None


def parse_user_trade(obj: Any, *, where: str = "user trade") -> UserTrade:
    o = _object(obj, where)
    maker_order = o.get("maker_order")
    taker_order = o.get("taker_order")
    return UserTrade(
        id=_ident(o, where, "id", "trade_id"),
        instrument_name=_str(o, where, "instrument_name"),
        side=_str(o, where, "side"),
        price=_dec(o, where, "price"),
        amount=_dec(o, where, "amount", "size"),
        timestamp=_ms(o, where, "timestamp"),
        trade_sequence=_opt_int(o, where, "trade_sequence"),
        incoming_order_id=_opt_str(o, where, "incoming_order_id"),
        book_order_id=_opt_str(o, where, "book_order_id"),
        maker=_opt_str(o, where, "maker"),
        taker=_opt_str(o, where, "taker"),
        maker_order=None if maker_order is None else _order(maker_order, f"{where} maker_order"),
        taker_order=None if taker_order is None else _order(taker_order, f"{where} taker_order"),
        status=_opt_str(o, where, "status"),
        instrument_id=_opt_int(o, where, "instrument_id"),
        contract_size=_opt_dec(o, where, "contract_size"),
        tx_hash=_opt_str(o, where, "tx_hash", "txn_hash"),
        is_sync=_opt_bool(o, where, "is_sync"),
        salt=_opt_int(o, where, "salt"),
        expiration=_opt_ms(o, where, "expiration"),
        maker_signature=_opt_str(o, where, "maker_signature"),
        taker_signature=_opt_str(o, where, "taker_signature"),
    )


def parse_user_trades(obj: Any, *, where: str = "private/get_user_trades") -> tuple[UserTrade, ...]:
    """Documented as an array; two of the three examples send one object, which is accepted."""
    return tuple(parse_user_trade(item, where=f"{where} result[{i}]") for i, item in enumerate(_items(obj, where)))


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderUpdate:
    """``user.orders.{instrument|ALL}.raw``."""

    update_type: str
    order: Order


def parse_order_update(obj: Any, *, where: str = "user.orders") -> OrderUpdate:
    o = _object(obj, where)
    return OrderUpdate(update_type=_str(o, where, "update_type"),
                       order=_order(_required(o, where, "order")[1], f"{where} order"))


# =========================================================================== account


@dataclass(frozen=True, slots=True, kw_only=True)
class Position:
    """``private/get_positions`` entry, and ``user.positions``' ``updated_position``."""

    instrument_name: str
    direction: str
    size: Decimal
    average_price: Decimal
    account: str | None = None
    kind: str | None = None
    instrument_id: int | None = None
    mark_price: Decimal | None = None
    index_price: Decimal | None = None
    settlement_price: Decimal | None = None
    position_delta: Decimal | None = None
    size_in_base: Decimal | None = None
    contract_size: Decimal | None = None
    realized_pnl: Decimal | None = None
    unrealized_pnl: Decimal | None = None
    total_pnl: Decimal | None = None
    realized_funding: Decimal | None = None
    cached_funding_index: Decimal | None = None
    trade_fee: Decimal | None = None
    initial_margin: Decimal | None = None
    maintenance_margin: Decimal | None = None
    is_synced_onchain: bool | None = None
    last_update_timestamp: int | None = None


def _position(obj: Any, where: str, instrument_name: str | None = None) -> Position:
    o = _object(obj, where)
    return Position(
        instrument_name=_opt_str(o, where, "instrument_name") or instrument_name or _str(o, where, "instrument_name"),
        direction=_str(o, where, "direction"),
        size=_dec(o, where, "size"),
        average_price=_dec(o, where, "average_price"),
        account=_opt_str(o, where, "account"),
        kind=_opt_str(o, where, "kind"),
        instrument_id=_opt_int(o, where, "instrument_id"),
        mark_price=_opt_dec(o, where, "mark_price"),
        index_price=_opt_dec(o, where, "index_price"),
        settlement_price=_opt_dec(o, where, "settlement_price"),
        position_delta=_opt_dec(o, where, "position_delta"),
        size_in_base=_opt_dec(o, where, "size_in_base"),
        contract_size=_opt_dec(o, where, "contract_size"),
        realized_pnl=_opt_dec(o, where, "realized_pnl"),
        unrealized_pnl=_opt_dec(o, where, "unrealized_pnl"),
        total_pnl=_opt_dec(o, where, "total_pnl"),
        realized_funding=_opt_dec(o, where, "realized_funding"),
        cached_funding_index=_opt_dec(o, where, "cached_funding_index"),
        trade_fee=_opt_dec(o, where, "trade_fee"),
        initial_margin=_opt_dec(o, where, "initial_margin"),
        maintenance_margin=_opt_dec(o, where, "maintenance_margin"),
        is_synced_onchain=_opt_bool(o, where, "is_synced_onchain"),
        last_update_timestamp=_opt_ms(o, where, "last_update_timestamp"),
    )


def parse_positions(obj: Any, *, where: str = "private/get_positions") -> tuple[Position, ...]:
    return tuple(_position(item, f"{where} result[{i}]") for i, item in enumerate(_items(obj, where)))


@dataclass(frozen=True, slots=True, kw_only=True)
class FillsManager:
    """``user.positions``' ``fills_manager`` (in the example, not in the table); pending fills are undocumented."""

    pending_fills: tuple[Any, ...] = ()
    latest_size: Decimal | None = None
    latest_average_price: Decimal | None = None
    latest_realized_pnl: Decimal | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PositionUpdate:
    """``user.positions``. The table documents ``updated_position``, the example ``fills_manager``: both are read.

    ``position`` is ``updated_position`` when sent, else one built from ``fills_manager`` (the example's only
    position data), so a consumer of ``position`` sees the update in either shape.
    """

    instrument_name: str
    underlying: str | None = None
    instrument_kind: str | None = None
    position: Position | None = None
    fills_manager: FillsManager | None = None


def _position_of_fills(name: str, manager: FillsManager | None) -> Position | None:
    """The position a ``fills_manager`` states (its size signed, as the simulator's, so negative is a short)."""
    if manager is None or manager.latest_size is None or manager.latest_average_price is None:
        return None
    return Position(instrument_name=name, direction="sell" if manager.latest_size < 0 else "buy",
                    size=manager.latest_size, average_price=manager.latest_average_price,
                    realized_pnl=manager.latest_realized_pnl)


def parse_position_update(obj: Any, *, where: str = "user.positions") -> PositionUpdate:
    o = _object(obj, where)
    # The example spells the instrument "ETH_PERP"; the document's names (and every other example) use "-".
    name = _str(o, where, "instrument_name").replace("_", "-")
    updated = o.get("updated_position")
    fills = o.get("fills_manager")
    manager = None
    if fills is not None:
        f = _object(fills, f"{where} 'fills_manager'")
        at = f"{where} fills_manager"
        pending = f.get("pending_fills")
        manager = FillsManager(
            pending_fills=() if pending is None else tuple(_array(pending, f"{at} 'pending_fills'")),
            latest_size=_opt_dec(f, at, "latest_size"),
            latest_average_price=_opt_dec(f, at, "latest_average_price"),
            latest_realized_pnl=_opt_dec(f, at, "latest_realized_pnl"),
        )
    return PositionUpdate(
        instrument_name=name,
        underlying=_opt_str(o, where, "underlying"),
        instrument_kind=_opt_str(o, where, "instrument_kind"),
        position=(_position_of_fills(name, manager) if updated is None
                  else _position(updated, f"{where} updated_position", name)),
        fills_manager=manager,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Burst:
    """``user.bursts.{instrument|ALL}``: a trade batch that failed on chain."""

    instrument_name: str
    sequence: int
    tx_hash: str


def parse_burst(obj: Any, *, where: str = "user.bursts") -> Burst:
    o = _object(obj, where)
    return Burst(instrument_name=_str(o, where, "instrument_name"), sequence=_int(o, where, "sequence"),
                 tx_hash=_str(o, where, "tx_hash"))


@dataclass(frozen=True, slots=True, kw_only=True)
class TransactionUpdate:
    """``user.transactions``: how an on-chain batch ended."""

    instrument_name: str
    sequence: int
    tx_hash: str
    tx_status: str


def parse_transaction_update(obj: Any, *, where: str = "user.transactions") -> TransactionUpdate:
    o = _object(obj, where)
    return TransactionUpdate(instrument_name=_str(o, where, "instrument_name"), sequence=_int(o, where, "sequence"),
                             tx_hash=_str(o, where, "tx_hash"), tx_status=_str(o, where, "tx_status"))


@dataclass(frozen=True, slots=True, kw_only=True)
class Deposit:
    """``private/get_deposits`` entry."""

    asset_name: str
    amount: Decimal
    timestamp: int
    tx_hash: str
    asset_address: str | None = None
    user: str | None = None
    is_pending: bool | None = None


def parse_deposits(obj: Any, *, where: str = "private/get_deposits") -> dict[str, tuple[Deposit, ...]]:
    """Asset -> its deposits."""
    deposits = {}
    for asset, entries in _object(obj, where).items():
        items = []
        for i, item in enumerate(_array(entries, f"{where} result[{asset!r}]")):
            at = f"{where} result[{asset!r}][{i}]"
            o = _object(item, at)
            items.append(Deposit(
                asset_name=_opt_str(o, at, "asset_name") or asset,
                amount=_dec(o, at, "amount"),
                timestamp=_ms(o, at, "timestamp"),
                tx_hash=_str(o, at, "tx_hash"),
                asset_address=_opt_str(o, at, "asset_address"),
                user=_opt_str(o, at, "user"),
                is_pending=_opt_bool(o, at, "is_pending"),
            ))
        deposits[asset] = tuple(items)
    return deposits


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountSummary:
    """``private/get_account_summary``."""

    equity: Decimal
    available_balance: Decimal
    initial_margin: Decimal
    maintenance_margin: Decimal
    available_withdrawable_funds: Decimal | None = None
    initial_margin_utilization: Decimal | None = None
    maintenance_margin_utilization: Decimal | None = None
    open_orders_im: Decimal | None = None
    realized_pnl: Decimal | None = None
    unrealized_pnl: Decimal | None = None
    total_pnl: Decimal | None = None
    collateral: Mapping[str, Decimal] = field(default_factory=lambda: _EMPTY)
    delta_total: Mapping[str, Decimal] = field(default_factory=lambda: _EMPTY)
    is_cancel_on_disconnect: bool | None = None
    is_portfolio_margined: bool | None = None
    status: str | None = None
    updated_at: int | None = None


def parse_account_summary(obj: Any, *, where: str = "private/get_account_summary") -> AccountSummary:
    o = _object(obj, where)
    return AccountSummary(
        equity=_dec(o, where, "equity"),
        available_balance=_dec(o, where, "available_balance"),
        initial_margin=_dec(o, where, "initial_margin"),
        maintenance_margin=_dec(o, where, "maintenance_margin"),
        available_withdrawable_funds=_opt_dec(o, where, "available_withdrawable_funds"),
        initial_margin_utilization=_opt_dec(o, where, "initial_margin_utilization"),
        maintenance_margin_utilization=_opt_dec(o, where, "maintenance_margin_utilization"),
        open_orders_im=_opt_dec(o, where, "open_orders_im"),
        realized_pnl=_opt_dec(o, where, "realized_pnl"),
        unrealized_pnl=_opt_dec(o, where, "unrealized_pnl"),
        total_pnl=_opt_dec(o, where, "total_pnl"),
        collateral=_decimal_map(o, where, "collateral"),
        delta_total=_decimal_map(o, where, "delta_total"),
        is_cancel_on_disconnect=_opt_bool(o, where, "is_cancel_on_disconnect"),
        is_portfolio_margined=_opt_bool(o, where, "is_portfolio_margined"),
        status=_opt_str(o, where, "status"),
        updated_at=_opt_ms(o, where, "updated_at"),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class PortfolioMarginData:
    """``private/get_portfolio_margin_data``: losses per scenario and contingencies."""

    future_loss_array: tuple[Decimal, ...]
    options_loss_array: tuple[Decimal, ...]
    total_loss_array: tuple[Decimal, ...]
    futures_contingency: Decimal
    options_contingency: Decimal


def parse_portfolio_margin_data(obj: Any, *, where: str = "private/get_portfolio_margin_data") -> PortfolioMarginData:
    o = _object(obj, where)
    return PortfolioMarginData(
        future_loss_array=_decimals(_required(o, where, "future_loss_array")[1], where, "future_loss_array"),
        options_loss_array=_decimals(_required(o, where, "options_loss_array")[1], where, "options_loss_array"),
        total_loss_array=_decimals(_required(o, where, "total_loss_array")[1], where, "total_loss_array"),
        futures_contingency=_dec(o, where, "futures_contingency"),
        options_contingency=_dec(o, where, "options_contingency"),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class PortfolioMarginToggle:
    """``private/toggle_portfolio_margin``: the mode after the switch."""

    portfolio_margin: bool


def parse_portfolio_margin_toggle(obj: Any, *, where: str = "private/toggle_portfolio_margin") -> PortfolioMarginToggle:
    return PortfolioMarginToggle(portfolio_margin=_bool(_object(obj, where), where, "portfolio_margin_toggle"))


# =========================================================================== keys and sessions


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthResult:
    """``public/auth``."""

    status: str
    account: str


def parse_auth(obj: Any, *, where: str = "public/auth") -> AuthResult:
    o = _object(obj, where)
    return AuthResult(status=_str(o, where, "status"), account=_str(o, where, "account"))


@dataclass(frozen=True, slots=True, kw_only=True)
class SigningKeyRegistration:
    """``public/register_signing_key``: the table says ``api_key``/``tx_hash``, the example ``apiKey``/``txHash``."""

    api_key: str
    api_secret: str = field(repr=False)
    signing_key: str | None = None
    tx_hash: str | None = None
    account: str | None = None


def parse_register_signing_key(obj: Any, *, where: str = "public/register_signing_key") -> SigningKeyRegistration:
    o = _object(obj, where)
    return SigningKeyRegistration(
        api_key=_str(o, where, "api_key", "apiKey"),
        api_secret=_str(o, where, "api_secret", "apiSecret"),
        signing_key=_opt_str(o, where, "signer_public_address", "signingKey", "signing_key"),
        tx_hash=_opt_str(o, where, "tx_hash", "txHash"),
        account=_opt_str(o, where, "account"),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class CreatedApiKey:
    """``private/create_api_key``."""

    api_key: str
    api_secret: str = field(repr=False)
    account: str = ""


def parse_created_api_key(obj: Any, *, where: str = "private/create_api_key") -> CreatedApiKey:
    """The key and its secret are required; `account` is not: the venue shows a secret once, and an answer
    missing only the account must not lose a secret received (its key would stay active, held by nobody)."""
    o = _object(obj, where)
    return CreatedApiKey(api_key=_str(o, where, "api_key", "apiKey"),
                         api_secret=_str(o, where, "api_secret", "apiSecret"),
                         account=_opt_str(o, where, "account") or "")


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiKey:
    """``private/get_api_keys`` entry (times are sent in seconds)."""

    api_key: str
    scope: int
    api_secret: str | None = field(default=None, repr=False)
    name: str | None = None
    created_at: int | None = None
    updated_at: int | None = None


def parse_api_keys(obj: Any, *, where: str = "private/get_api_keys") -> tuple[ApiKey, ...]:
    """The document wraps the array in ``{"apiKeys": [...]}``; a bare array is accepted too."""
    entries = _required(_object(obj, where), where, "apiKeys", "api_keys")[1] if isinstance(obj, dict) else obj
    keys = []
    for i, item in enumerate(_array(entries, f"{where} 'apiKeys'")):
        at = f"{where} apiKeys[{i}]"
        o = _object(item, at)
        keys.append(ApiKey(
            api_key=_str(o, at, "api_key", "apiKey"),
            scope=_int(o, at, "scope"),
            api_secret=_opt_str(o, at, "api_secret", "apiSecret"),
            name=_opt_str(o, at, "name"),
            created_at=_opt_ms(o, at, "created_at", "createdAt"),
            updated_at=_opt_ms(o, at, "updated_at", "updatedAt"),
        ))
    return tuple(keys)


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiKeyDeactivation:
    """``private/deactivate_api_key``: the venue's word for it ("Success")."""

    status: str


def parse_api_key_deactivation(obj: Any, *, where: str = "private/deactivate_api_key") -> ApiKeyDeactivation:
    if type(obj) is str:
        return ApiKeyDeactivation(status=obj)
    return ApiKeyDeactivation(status=_str(_object(obj, where), where, "apiKeys", "status"))


def parse_subscriptions(obj: Any, *, where: str = "public/subscribe") -> tuple[str, ...]:
    """``public|private/(un)subscribe``: the channels now (un)subscribed."""
    return _strings(obj, where)


# =========================================================================== dispatch


RESULT_PARSERS: Final[Mapping[str, Callable[..., object]]] = MappingProxyType({
    "public/get_all_instrument_names": parse_instrument_names,
    "public/get_instruments": parse_instruments,
    "public/get_instruments_by_currency": parse_instruments,
    "public/get_instrument": parse_instrument,
    "public/get_order_book": parse_order_book,
    "public/get_trades": parse_trades,
    "public/ticker": parse_ticker,
    "public/get_tradingview_chart_data": parse_chart_data,
    "public/get_supported_collaterals": parse_supported_collaterals,
    "public/get_index_price_names": parse_index_price_names,
    "public/get_currencies": parse_currencies,
    "public/get_l3_contracts": parse_l3_contracts,
    "public/register_signing_key": parse_register_signing_key,
    "public/auth": parse_auth,
    "public/subscribe": parse_subscriptions,
    "public/unsubscribe": parse_subscriptions,
    "private/subscribe": parse_subscriptions,
    "private/unsubscribe": parse_subscriptions,
    "private/buy": parse_order,
    "private/sell": parse_order,
    "private/edit": parse_order,
    "private/cancel": parse_order,
    "private/cancel_all": parse_cancel_all,
    "private/cancel_all_by_instrument": parse_cancel_all,
    "private/update_instrument_leverage": parse_leverage_update,
    "private/get_open_orders": parse_orders,
    "private/get_order_history_by_kind": parse_orders,
    "private/get_order_history_by_instrument": parse_orders,
    "private/get_positions": parse_positions,
    "private/get_user_trades_by_order": parse_user_trades,
    "private/get_user_trades_by_instrument": parse_user_trades,
    "private/get_user_trades_by_kind": parse_user_trades,
    "private/get_deposits": parse_deposits,
    "private/create_api_key": parse_created_api_key,
    "private/get_api_keys": parse_api_keys,
    "private/deactivate_api_key": parse_api_key_deactivation,
    "private/get_portfolio_margin_data": parse_portfolio_margin_data,
    "private/get_account_summary": parse_account_summary,
    "private/toggle_portfolio_margin": parse_portfolio_margin_toggle,
})
"""Method -> the parser of its ``result``. Every parser takes ``(result, *, where=...)``."""


def parse_result(method: str, result: Any) -> object:
    """Type a method's ``result`` (errors name the method)."""
    parser = RESULT_PARSERS.get(method)
    if parser is None:
        _protocol(method, "no model for this method's result")
    return parser(result, where=method)


NotificationData: TypeAlias = (
    BookChange | Ticker | Trade | Quote | UserTrade | OrderUpdate | PositionUpdate | Burst | TransactionUpdate
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Notification:
    """A subscription notification: ``method`` is ``subscription`` or ``subscriptions`` (the document uses both)."""

    method: str
    channel: str
    data: NotificationData


_CHANNEL_PARSERS: Final[Mapping[str, Callable[..., NotificationData]]] = MappingProxyType({
    "ticker": parse_ticker,
    "trades": parse_trade,
    "quotes": parse_quote,
    "user.fills": parse_user_trade,
    "user.orders": parse_order_update,
    "user.positions": parse_position_update,
    "user.bursts": parse_burst,
    "user.transactions": parse_transaction_update,
})


def _channel_family(channel: str) -> str:
    """``trades.ETH-PERP.raw`` -> ``trades``; ``user.orders.ALL.raw`` -> ``user.orders``."""
    head, _, rest = channel.partition(".")
    return f"user.{rest.partition('.')[0]}" if head == "user" else head


def parse_notification(frame: Frame) -> Notification:
    """Parse any notification frame into its typed model, dispatching on the channel.

    ``book.*`` frames take the orjson hot path; the others are decoded again
    exactly (``parse_float=Decimal``), as some send prices as JSON numbers.
    """
    try:
        message = orjson.loads(frame)
    except orjson.JSONDecodeError as exc:
        _protocol("notification", f"not valid JSON ({exc})")
    params = _object(_object(message, "notification").get("params"), "notification 'params'")
    method = message.get("method")
    channel = params.get("channel")
    if method not in NOTIFICATION_METHODS:
        _protocol("notification", f"field 'method' is not a notification method: {method!r}")
    if type(channel) is not str:
        _protocol("notification", f"field 'channel' is not a string: {channel!r}")
    if channel.startswith("book."):
        return Notification(method=method, channel=channel, data=_book_change(channel, params.get("data")))
    parser = _CHANNEL_PARSERS.get(_channel_family(channel))
    if parser is None:
        _protocol(channel, "no model for this channel")
    exact = decode(frame, where=channel)
    data = exact["params"].get("data")
    if data is None:
        _protocol(channel, "field 'data' is missing")
    return Notification(method=method, channel=channel, data=parser(data, where=channel))
