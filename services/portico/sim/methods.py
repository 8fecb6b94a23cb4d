"""Every JSON-RPC method of the Syndr document, and the notifications of every channel.

Handlers take `(sim, params, ctx)` and return the `result` object in the
document's shape; they raise `RpcFailure` (or the engine's `EngineError`) to
answer with a JSON-RPC error. `Notifier` turns the matching core's events into
the document's subscription notifications.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import time
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import orjson

from portico.sim.errors import RpcFailure
from portico.sim.instruments import fmt_decimal
from portico.sim.params import Params
from portico.sim.security import _secret_digest, parse_address
from portico.venues.syndr import typed_data
from portico.venues.syndr.constants import (
    NOTIFICATION_METHOD_PUBLIC,
    NOTIFICATION_METHOD_USER,
    ApiKeyScope,
    ErrorCode,
)

if TYPE_CHECKING:
    from portico.sim.server import CallContext, Method, Simulator

__all__ = ["Notifier", "registry"]

KINDS = ("perpetual", "future", "option")
_SNAPSHOT_DEPTH = 15


_s = fmt_decimal  # a decimal as the venue writes it: plain notation, no exponent
_ORDER_TIMES = ("creation_timestamp", "last_update_timestamp", "expiration")  # epoch ms in the wire order


def _account(ctx: CallContext) -> str:
    assert ctx.api_key is not None  # private methods are only dispatched with a key
    return ctx.api_key.account


# --------------------------------------------------------------------------- market data


def get_all_instrument_names(sim: Simulator, p: Params, ctx: CallContext) -> Any:
    return [i.name for i in sim.engine.instruments() if i.is_active]


def _instruments_result(sim: Simulator, kind: str, currency: str | None) -> dict[str, Any]:
    return {i.name: sim.faults.corrupt(i.name, i.to_wire()) for i in sim.engine.instruments()
            if i.is_active and (kind == "any" or i.kind == kind)
            and (currency is None or i.base_currency == currency)}


def get_instruments(sim: Simulator, p: Params, ctx: CallContext) -> Any:
    return _instruments_result(sim, p.text("kind", choices=(*KINDS, "any")), None)


def get_instruments_by_currency(sim: Simulator, p: Params, ctx: CallContext) -> Any:
    return _instruments_result(sim, p.text("kind", choices=(*KINDS, "any")), p.text("currency"))


def get_instrument(sim: Simulator, p: Params, ctx: CallContext) -> Any:
    return sim.engine.instrument(p.text("instrument_name")).to_wire()


def get_order_book(sim: Simulator, p: Params, ctx: CallContext) -> Any:
    """The document's result, plus the `change_id` the book reflects (so a client can line it up
    with the book.*.raw stream) and an optional `depth` (default 50)."""
    depth = p.integer("depth", 50, minimum=1)
    return sim.engine.order_book(p.text("instrument_name"), min(depth, 10_000))


def get_trades(sim: Simulator, p: Params, ctx: CallContext) -> Any:
    name = p.text("instrument_name")
    count = p.integer("count", 100, minimum=1)
    return sim.engine.public_trades(name, min(count, 1000))


def ticker(sim: Simulator, p: Params, ctx: CallContext) -> Any:
    return sim.engine.ticker(p.text("instrument_name"))


_RESOLUTIONS = ("1", "5", "30", "60", "240", "1D")


def get_tradingview_chart_data(sim: Simulator, p: Params, ctx: CallContext) -> Any:
    name = p.text("instrument_name")
    start = p.integer("from", minimum=0)
    end = p.integer("to", minimum=0)
    resolution = p.text("resolution", choices=_RESOLUTIONS)
    if end < start:
        raise RpcFailure(ErrorCode.INVALID_PARAMS, "to must not be before from")
    # The document sends candle values as JSON numbers: write the exact decimal text as a number.
    return [{k: orjson.Fragment(_s(v).encode()) if isinstance(v, Decimal) else v for k, v in candle.items()}
            for candle in sim.engine.candles(name, resolution, start, end)]


def get_supported_collaterals(sim: Simulator, p: Params, ctx: CallContext) -> Any:
    return sim.engine.collaterals()


def get_index_price_names(sim: Simulator, p: Params, ctx: CallContext) -> Any:
    indices = sorted({i.price_index for i in sim.engine.instruments()})
    return [f"{i[:-3]}/{i[-3:]}" if len(i) > 3 else i for i in indices]


def get_currencies(sim: Simulator, p: Params, ctx: CallContext) -> Any:
    return sorted({i.base_currency for i in sim.engine.instruments()} | set(sim.engine.collaterals()))


def get_l3_contracts(sim: Simulator, p: Params, ctx: CallContext) -> Any:
    return {"orderbook_address": sim.orderbook_address,
            "signing_keys_manager_address": sim.signing_keys_manager_address,
            "chain_id": typed_data.SYNDR_CHAIN_ID}


# --------------------------------------------------------------------------- keys and auth


def get_signing_key_nonces(sim: Simulator, p: Params, ctx: CallContext) -> Any:
    account = parse_address(p.text("account"), "account")
    signing_key = parse_address(p.text("signing_key"), "signing_key")
    return sim.security.nonces(account, signing_key)


def register_signing_key(sim: Simulator, p: Params, ctx: CallContext) -> Any:
    account, signing_key = sim.security.register_signing_key(dict(p.raw))
    if not sim.engine.account_exists(account):
        sim.open_account(account, {"USDT": sim.config.default_collateral})
    key, secret = sim.security.create_api_key(account, ApiKeyScope.ADMIN, "registered signing key")
    tx_hash = "0x" + sim.rng.randbytes(32).hex()
    # The document's table names the fields api_key / api_secret / signer_public_address / tx_hash,
    # its example apiKey / apiSecret / signingKey / txHash: answer with both; and its script also reads `account`.
    return {"account": account, "api_key": key.api_key, "api_secret": secret, "signer_public_address": signing_key,
            "tx_hash": tx_hash, "apiKey": key.api_key, "apiSecret": secret, "signingKey": signing_key,
            "txHash": tx_hash}


def auth(sim: Simulator, p: Params, ctx: CallContext) -> Any:
    key = sim.security.authenticate(p.raw.get("api_key"), p.raw.get("api_secret"))
    if ctx.connection is None:
        raise RpcFailure(ErrorCode.INVALID_REQUEST, "public/auth authenticates a WebSocket; over HTTP send headers")
    ctx.connection.api_key = key
    return {"status": "connection authenticated", "account": key.account}


def create_api_key(sim: Simulator, p: Params, ctx: CallContext) -> Any:
    scope = p.integer("scope", minimum=0)
    if scope not in (0, 1, 2):
        raise RpcFailure(ErrorCode.INVALID_PARAMS, "scope must be 0 (admin), 1 (read-write) or 2 (read-only)")
    key, secret = sim.security.create_api_key(_account(ctx), ApiKeyScope(scope), p.text("name", ""))
    return {"account": key.account, "api_key": key.api_key, "api_secret": secret}


def get_api_keys(sim: Simulator, p: Params, ctx: CallContext) -> Any:
    return {"apiKeys": [k.to_wire() for k in sim.security.api_keys(_account(ctx))]}


def deactivate_api_key(sim: Simulator, p: Params, ctx: CallContext) -> Any:
    """The document's table requires the key (`api-key`; its examples say `api_key`) and that key's own
    `api_secret`: a missing one is INVALID_PARAMS, a wrong one UNAUTHORIZED, and the key stays active."""
    account = _account(ctx)
    api_key = p.text("api-key") if "api-key" in p.raw or "api_key" not in p.raw else p.text("api_key")
    api_secret = p.text("api_secret")
    key = next((k for k in sim.security.api_keys(account) if k.api_key == api_key), None)
    if key is not None and not hmac.compare_digest(key.secret_sha256, _secret_digest(api_secret)):
        raise RpcFailure(ErrorCode.UNAUTHORIZED, "api_secret is not the secret of that api key")
    sim.security.deactivate_api_key(account, api_key)
    return {"apiKeys": "Success"}


# --------------------------------------------------------------------------- trading


_ORDER_TYPES = {"limit": typed_data.OrderType.LIMIT, "market": typed_data.OrderType.MARKET}
_TIME_IN_FORCE = {"GTC": typed_data.TimeInForce.GTC, "IOC": typed_data.TimeInForce.IOC,
                  "FOK": typed_data.TimeInForce.FOK}
# What the API takes on a new order: the document lists GTC, "IOC and more types coming soon", and shows IOC;
# the engine keeps FOK (and orders keep their own on edits), but no request places one.
_NEW_ORDER_TIME_IN_FORCE = ("GTC", "IOC")


def _place(sim: Simulator, p: Params, ctx: CallContext, side: str) -> Any:
    account = _account(ctx)
    name = p.text("instrument_name")
    instrument = sim.engine.instrument(name)
    order_type = p.text("order_type", "limit", choices=tuple(_ORDER_TYPES))
    time_in_force = p.text("time_in_force", "GTC", choices=_NEW_ORDER_TIME_IN_FORCE)
    post_only = p.flag("post_only", False)
    reduce_only = p.flag("reduce_only", False)
    amount = p.number("amount")
    price = p.number("price") if order_type == "limit" else p.number("price", Decimal(0))
    if amount <= 0:
        raise RpcFailure(ErrorCode.INVALID_PARAMS, "amount must be positive")
    if order_type == "limit" and price <= 0:
        raise RpcFailure(ErrorCode.INVALID_PARAMS, "price must be positive")
    salt = p.integer("salt", minimum=0)
    expiration = p.integer("expiration", minimum=0)
    timestamp = p.integer("timestamp", minimum=0)
    label = p.text("label", "")
    signer = sim.security.verify_order(
        account, instrument_id=instrument.id, is_buy=side == "buy", order_type=int(_ORDER_TYPES[order_type]),
        time_in_force=int(_TIME_IN_FORCE[time_in_force]), post_only=post_only, reduce_only=reduce_only,
        price=price, amount=amount, salt=salt, expiration=expiration, timestamp=timestamp,
        signature=p.raw.get("signature"))
    placement = sim.engine.place(
        account, name, side="buy" if side == "buy" else "sell", order_type=order_type, amount=amount,
        price=price if order_type == "limit" else None, time_in_force=time_in_force, post_only=post_only,
        reduce_only=reduce_only, label=label, salt=str(salt), expiration_ms=expiration,
        signature=str(p.raw.get("signature")), order_signer=signer)
    sim.security.consume_salt(account, salt)
    return placement.to_wire()


def buy(sim: Simulator, p: Params, ctx: CallContext) -> Any:
    return _place(sim, p, ctx, "buy")


def sell(sim: Simulator, p: Params, ctx: CallContext) -> Any:
    return _place(sim, p, ctx, "sell")


def _own_order(sim: Simulator, p: Params, account: str) -> dict[str, Any]:
    """The account's order named by `order_id`, which must be on `instrument_name` (both required by the
    document's tables for edit and cancel): a wrong instrument is refused, never silently ignored."""
    instrument_name = p.text("instrument_name")
    wire = sim.engine.order(account, p.text("order_id")).to_wire()
    if wire["instrument_name"] != instrument_name:
        raise RpcFailure(ErrorCode.INVALID_PARAMS,
                         f"order {wire['order_id']} is on {wire['instrument_name']}, not {instrument_name}")
    return wire


def edit(sim: Simulator, p: Params, ctx: CallContext) -> Any:
    """Re-price / re-size an open order; the change is signed like a new order.

    The document's table marks `instrument_name`, `amount`, `time_in_force` and `type` required and `price`
    optional (the order keeps its price); `time_in_force` and `type` must be the order's own, since the
    signature covers them. (The table's `signature: false` aside, the change is signed, salt, expiration and
    timestamp as a new order's: an unsigned edit of a signed order is not taken.)
    """
    account = _account(ctx)
    wire = _own_order(sim, p, account)
    instrument = sim.engine.instrument(wire["instrument_name"])
    amount = p.number("amount")
    price = p.number("price", Decimal(str(wire["price"])))
    for name, own in (("time_in_force", str(wire["time_in_force"])), ("type", str(wire["order_type"]))):
        if p.text(name) != own:
            raise RpcFailure(ErrorCode.INVALID_PARAMS, f"{name} must be the order's own ({own}): it is signed")
    salt = p.integer("salt", int(wire["salt"] or 0), minimum=0)
    expiration = p.integer("expiration", int(wire["expiration"] or 0), minimum=0)
    timestamp = p.integer("timestamp", minimum=0)
    if amount <= 0 or price <= 0:
        raise RpcFailure(ErrorCode.INVALID_PARAMS, "amount and price must be positive")
    same_salt = str(salt) == str(wire["salt"])
    try:
        sim.security.verify_order(
            account, instrument_id=instrument.id, is_buy=wire["direction"] == "buy",
            order_type=int(_ORDER_TYPES[wire["order_type"]]),
            time_in_force=int(_TIME_IN_FORCE[wire["time_in_force"]]), post_only=bool(wire["post_only"]),
            reduce_only=bool(wire["reduce_only"]), price=price, amount=amount, salt=salt, expiration=expiration,
            timestamp=timestamp, signature=p.raw.get("signature"))
    except RpcFailure as failure:
        if not (same_salt and failure.code == ErrorCode.SALT_REUSED):  # an edit may keep its order's salt
            raise
    placement = sim.engine.edit(account, wire["order_id"], amount=amount, price=price,
                                signature=str(p.raw.get("signature")), salt=str(salt), expiration_ms=expiration)
    if not same_salt:
        sim.security.consume_salt(account, salt)
    placed = placement.to_wire()
    return {"status": "success", "result": placed["order"], "trades": placed["trades"]}


def cancel(sim: Simulator, p: Params, ctx: CallContext) -> Any:
    account = _account(ctx)
    return sim.engine.cancel(account, _own_order(sim, p, account)["order_id"]).to_wire()


def cancel_all(sim: Simulator, p: Params, ctx: CallContext) -> Any:
    sim.engine.cancel_all(_account(ctx))
    return 1  # the document: "Acknowledgement of the operation (e.g., success)", its example 1; not a count


def cancel_all_by_instrument(sim: Simulator, p: Params, ctx: CallContext) -> Any:
    sim.engine.cancel_all(_account(ctx), instrument_name=p.text("instrument_name"))
    return "All orders cancelled"  # the document's result: a string acknowledgement, not a count


def update_instrument_leverage(sim: Simulator, p: Params, ctx: CallContext) -> Any:
    """The document's params, both required: `instrument_id` (a string in its example; the integer id taken too)
    and `updated_leverage`, an integer."""
    instrument = sim.engine.instrument_by_id(p.integer("instrument_id", minimum=0, digits=True))
    sim.engine.set_leverage(_account(ctx), instrument.name, p.integer("updated_leverage"))
    return {"success": 1}


def get_open_orders(sim: Simulator, p: Params, ctx: CallContext) -> Any:
    """Open orders grouped currency -> kind -> instrument -> order id, as the document shows."""
    grouped: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    for order in sim.engine.open_orders(_account(ctx)):
        wire = order.to_wire()
        instrument = sim.engine.instrument(wire["instrument_name"])
        by_kind = grouped.setdefault(instrument.base_currency, {}).setdefault(str(instrument.kind), {})
        by_kind.setdefault(instrument.name, {})[wire["order_id"]] = wire
    return grouped


def get_positions(sim: Simulator, p: Params, ctx: CallContext) -> Any:
    return sim.engine.positions(_account(ctx))


def _paging(p: Params) -> dict[str, Any]:
    """count / offset, and the document's start_time / end_time (seconds, of the orders' creation) as a
    millisecond window; count and the window are required, as the document's tables and examples have them."""
    start, end = p.integer("start_time", minimum=0), p.integer("end_time", minimum=0)
    return {"count": min(p.integer("count", minimum=1), 1000), "offset": p.integer("offset", 0, minimum=0),
            "start_ms": start * 1000, "end_ms": end * 1000 + 999}


def get_order_history_by_kind(sim: Simulator, p: Params, ctx: CallContext) -> Any:
    kind = p.text("kind", choices=(*KINDS, "spot", "any"))
    return [o.to_wire() for o in sim.engine.order_history(
        _account(ctx), kind=None if kind == "any" else kind, **_paging(p))]


def get_order_history_by_instrument(sim: Simulator, p: Params, ctx: CallContext) -> Any:
    return [o.to_wire() for o in sim.engine.order_history(
        _account(ctx), instrument_name=p.text("instrument_name"), **_paging(p))]


def _sort_asc(p: Params) -> bool:
    return bool(p.text("sort_by", "DESC", choices=("ASC", "DESC")) == "ASC")


def _trade_paging(p: Params, *, required: bool = False) -> dict[str, Any]:
    """The document's count / offset / start_timestamp / end_timestamp (seconds).

    `required`: the by-instrument and by-kind calls, where the document marks count and the window
    required (a missing one is INVALID_PARAMS, as the venue answers); by order, no count means all.
    """
    def read(name: str, minimum: int) -> Any:
        return p.integer(name, minimum=minimum) if required else p.integer(name, None, minimum=minimum)

    start, end, count = read("start_timestamp", 0), read("end_timestamp", 0), read("count", 1)
    return {"count": None if count is None else min(count, 1000), "offset": p.integer("offset", 0, minimum=0),
            "start_ms": None if start is None else start * 1000,
            "end_ms": None if end is None else end * 1000 + 999}


def get_user_trades_by_order(sim: Simulator, p: Params, ctx: CallContext) -> Any:
    """The order is `order-id` (hyphen) in the document's table and all its examples; `order_id` is not read."""
    order_id = p.text("order-id")
    return sim.engine.user_trades(_account(ctx), order_id=order_id, sort_asc=_sort_asc(p), **_trade_paging(p))


def get_user_trades_by_instrument(sim: Simulator, p: Params, ctx: CallContext) -> Any:
    return sim.engine.user_trades(_account(ctx), instrument_name=p.text("instrument_name"), sort_asc=_sort_asc(p),
                                  **_trade_paging(p, required=True))


def get_user_trades_by_kind(sim: Simulator, p: Params, ctx: CallContext) -> Any:
    kind = p.text("kind", choices=(*KINDS, "spot", "any"))
    return sim.engine.user_trades(_account(ctx), kind=None if kind == "any" else kind, sort_asc=_sort_asc(p),
                                  **_trade_paging(p, required=True))


def get_deposits(sim: Simulator, p: Params, ctx: CallContext) -> Any:
    return sim.engine.deposits(_account(ctx))


def get_portfolio_margin_data(sim: Simulator, p: Params, ctx: CallContext) -> Any:
    account = _account(ctx)
    requested = parse_address(p.text("from"), "from")  # the table marks it required
    if requested != account:
        raise RpcFailure(ErrorCode.FORBIDDEN, "from must be the authenticated account")
    return sim.engine.portfolio_margin(account, p.text("currency"))


def get_account_summary(sim: Simulator, p: Params, ctx: CallContext) -> Any:
    p.integer("timestamp", minimum=0)  # the table: true, "Current time in seconds"
    return sim.engine.account_summary(_account(ctx))


def toggle_portfolio_margin(sim: Simulator, p: Params, ctx: CallContext) -> Any:
    return {"portfolio_margin_toggle": sim.engine.toggle_portfolio_margin(_account(ctx))}


# --------------------------------------------------------------------------- subscriptions

_INSTRUMENT = r"(?P<instrument>[A-Z0-9]+-[A-Z0-9]+(?:-[0-9.]+-[CP])?)"
_PUBLIC_CHANNELS = [
    re.compile(rf"ticker\.{_INSTRUMENT}"),
    re.compile(rf"book\.{_INSTRUMENT}\.(?P<depth>\d+)\.(?P<interval>raw|100ms)"),
    re.compile(rf"trades\.{_INSTRUMENT}\.raw"),
    re.compile(rf"quotes\.{_INSTRUMENT}"),
]
_USER_CHANNELS = [
    re.compile(rf"user\.fills\.(?:ALL|{_INSTRUMENT})"),
    re.compile(rf"user\.orders\.(?:ALL|{_INSTRUMENT})\.raw"),
    # The document's own private/subscribe example uses `user.orders.ETH-PERP`, without `.raw`.
    re.compile(rf"user\.orders\.{_INSTRUMENT}"),
    re.compile(r"user\.positions"),
    re.compile(rf"user\.bursts\.(?:ALL|{_INSTRUMENT})"),
    re.compile(r"user\.transactions"),
]


def _channel_key(sim: Simulator, channel: str, ctx: CallContext, *, private: bool) -> str:
    """Validate a channel name; return the fan-out key (user channels are per account)."""
    for pattern in _PUBLIC_CHANNELS:
        match = pattern.fullmatch(channel)
        if match:
            _refused_by_fault(sim, channel, match.group("instrument"))
            sim.engine.instrument(match.group("instrument"))
            if match.groupdict().get("depth") and match.group("depth") != "15":
                # The document's book channels are depth 15 only: another depth would be acknowledged and
                # then never published, a subscriber that looks connected and hears nothing.
                raise RpcFailure(ErrorCode.INVALID_PARAMS, f"{channel}: the book channels are depth 15 only")
            return channel
    for pattern in _USER_CHANNELS:
        match = pattern.fullmatch(channel)
        if match:
            _refused_by_fault(sim, channel, match.groupdict().get("instrument"))
            if not private:
                raise RpcFailure(ErrorCode.UNAUTHORIZED, f"{channel} needs private/subscribe on an authenticated "
                                                         "connection")
            if match.groupdict().get("instrument"):
                sim.engine.instrument(match.group("instrument"))
            return f"{channel}@{_account(ctx)}"
    raise RpcFailure(ErrorCode.INVALID_PARAMS, f"unknown channel {channel}")


def _refused_by_fault(sim: Simulator, channel: str, instrument: str | None) -> None:
    """Fault knob `refuse_channels`: the venue no longer serves this channel, as if its instrument were gone."""
    if channel in sim.faults.refuse_channels:
        if instrument:
            raise RpcFailure(ErrorCode.INSTRUMENT_NOT_FOUND, instrument)
        raise RpcFailure(ErrorCode.INVALID_PARAMS, f"unknown channel {channel}")


def _subscription(sim: Simulator, p: Params, ctx: CallContext, *, private: bool, add: bool) -> Any:
    if ctx.connection is None:
        raise RpcFailure(ErrorCode.INVALID_REQUEST, "subscriptions need a WebSocket connection")
    channels = p.strings("channels")
    keys = [_channel_key(sim, channel, ctx, private=private) for channel in channels]
    for key in keys:
        (sim.subscribe if add else sim.unsubscribe)(ctx.connection, key)
    return channels


def public_subscribe(sim: Simulator, p: Params, ctx: CallContext) -> Any:
    return _subscription(sim, p, ctx, private=False, add=True)


def public_unsubscribe(sim: Simulator, p: Params, ctx: CallContext) -> Any:
    return _subscription(sim, p, ctx, private=False, add=False)


def private_subscribe(sim: Simulator, p: Params, ctx: CallContext) -> Any:
    return _subscription(sim, p, ctx, private=True, add=True)


def private_unsubscribe(sim: Simulator, p: Params, ctx: CallContext) -> Any:
    return _subscription(sim, p, ctx, private=True, add=False)


def registry() -> dict[str, Method]:
    """Method name -> handler, for every method of the document."""
    from portico.sim.server import Method

    public = {
        "public/get_all_instrument_names": get_all_instrument_names,
        "public/get_instruments": get_instruments,
        "public/get_instruments_by_currency": get_instruments_by_currency,
        "public/get_instrument": get_instrument,
        "public/get_order_book": get_order_book,
        "public/get_trades": get_trades,
        "public/ticker": ticker,
        "public/get_tradingview_chart_data": get_tradingview_chart_data,
        "public/get_supported_collaterals": get_supported_collaterals,
        "public/get_index_price_names": get_index_price_names,
        "public/get_currencies": get_currencies,
        "public/get_l3_contracts": get_l3_contracts,
        "public/get_signing_key_nonces": get_signing_key_nonces,
        "public/register_signing_key": register_signing_key,
        "public/auth": auth,
        "public/subscribe": public_subscribe,
        "public/unsubscribe": public_unsubscribe,
    }
    private = {
        "private/buy": buy,
        "private/sell": sell,
        "private/edit": edit,
        "private/cancel": cancel,
        "private/cancel_all": cancel_all,
        "private/cancel_all_by_instrument": cancel_all_by_instrument,
        "private/update_instrument_leverage": update_instrument_leverage,
        "private/get_open_orders": get_open_orders,
        "private/get_positions": get_positions,
        "private/get_order_history_by_kind": get_order_history_by_kind,
        "private/get_order_history_by_instrument": get_order_history_by_instrument,
        "private/get_user_trades_by_order": get_user_trades_by_order,
        "private/get_user_trades_by_instrument": get_user_trades_by_instrument,
        "private/get_user_trades_by_kind": get_user_trades_by_kind,
        "private/get_deposits": get_deposits,
        "private/create_api_key": create_api_key,
        "private/get_api_keys": get_api_keys,
        "private/deactivate_api_key": deactivate_api_key,
        "private/get_portfolio_margin_data": get_portfolio_margin_data,
        "private/get_account_summary": get_account_summary,
        "private/toggle_portfolio_margin": toggle_portfolio_margin,
        "private/subscribe": private_subscribe,
        "private/unsubscribe": private_unsubscribe,
    }
    return {**{k: Method(v, False) for k, v in public.items()}, **{k: Method(v, True) for k, v in private.items()}}


# --------------------------------------------------------------------------- notifications


class Notifier:
    """Turns matching-core events into the document's notifications."""

    def __init__(self, sim: Simulator):
        self.sim = sim
        self._dirty_books: set[str] = set()
        self._dirty_tickers: set[str] = set()
        self._last_quotes: dict[str, tuple[Any, ...]] = {}
        self._tx_sequence: dict[str, int] = {}

    def _frame(self, method: str, channel: str, data: Any) -> str:
        from portico.sim.server import dumps

        return dumps({"jsonrpc": "2.0", "method": method, "params": {"channel": channel, "data": data}})

    def _publish(self, channel: str, data: Any, *, user: str | None = None, named: str | None = None) -> None:
        """Send `data` to the subscribers of `channel`, in frames that name the channel `named` (default: it)."""
        key = f"{channel}@{user}" if user else channel
        if self.sim.has_subscribers(key):
            method = NOTIFICATION_METHOD_USER if user or channel.startswith(("trades.", "quotes.")) \
                else NOTIFICATION_METHOD_PUBLIC
            self.sim.publish(key, self._frame(method, named or channel, data))

    def _as_example(self, shape: str) -> bool:
        """Whether the `example_shapes` knob asks for this example's shape rather than the table's."""
        return shape in self.sim.faults.example_shapes

    def on_event(self, event: Any) -> None:
        from portico.sim import engine

        if isinstance(event, engine.BookChanged):
            self._book_changed(event)
        elif isinstance(event, engine.PublicTrade):
            self._publish(f"trades.{event.instrument_name}.raw", {
                "id": event.trade_id, "size": _s(event.amount), "price": _s(event.price), "side": event.side,
                "timestamp": event.timestamp_ms, "instrument_name": event.instrument_name})
            self._dirty_tickers.add(event.instrument_name)
        elif isinstance(event, engine.OrderUpdated):
            order = event.order_wire
            if self._as_example("seconds"):  # the user.orders example: 1722419045 where its table says ms
                order = {**order, **{k: order[k] // 1000 for k in _ORDER_TIMES}}
            data = {"update_type": order["order_state"], "order": order}
            self._publish(f"user.orders.{order['instrument_name']}.raw", data, user=event.account)
            self._publish(f"user.orders.{order['instrument_name']}", data, user=event.account)
            self._publish("user.orders.ALL.raw", data, user=event.account)
        elif isinstance(event, engine.UserFill):
            fill = event.fill_wire
            if self._as_example("seconds"):  # the user.fills example: "expiration": 1722509314
                fill = {**fill, "expiration": fill["expiration"] // 1000}
            instrument_channel = f"user.fills.{fill['instrument_name']}"
            self._publish(instrument_channel, fill, user=event.account)
            # The user.fills.ALL example's frame names the instrument's channel, not user.fills.ALL.
            self._publish("user.fills.ALL", fill, user=event.account,
                          named=instrument_channel if self._as_example("fills_channel") else None)
            sequence = self._tx_sequence.get(event.account, 0) + 1
            self._tx_sequence[event.account] = sequence
            self._publish("user.transactions", {"instrument_name": fill["instrument_name"], "sequence": sequence,
                                                "tx_hash": "0x" + self.sim.rng.randbytes(32).hex(),
                                                "tx_status": "success"}, user=event.account)
        elif isinstance(event, engine.PositionChanged):
            self._position_changed(event.account, event.position_wire)
        elif isinstance(event, engine.TickerChanged):
            self._dirty_tickers.add(event.instrument_name)

    def _book_changed(self, event: Any) -> None:
        name = event.instrument_name
        self._dirty_books.add(name)
        self._dirty_tickers.add(name)
        channel = f"book.{name}.15.raw"
        if not self.sim.has_subscribers(channel):
            return
        if self.sim.faults.take_skip(name):
            return  # fault: this change never reaches subscribers, so change_id jumps
        self.sim.publish(channel, self._frame(NOTIFICATION_METHOD_PUBLIC, channel, event.to_wire()))

    def _position_changed(self, account: str, position: dict[str, Any]) -> None:
        """user.positions: the table's `updated_position` and the example's `fills_manager`, both."""
        if not self.sim.has_subscribers(f"user.positions@{account}"):
            return
        name = position["instrument_name"]
        manager = {"pending_fills": [], "latest_size": position["size"], "latest_average_price":
                   position["average_price"], "latest_realized_pnl": position["realized_pnl"]}
        if self._as_example("user.positions"):  # the example: these two fields and nothing else
            self._publish("user.positions", {"fills_manager": manager, "instrument_name": name}, user=account)
            return
        instrument = self.sim.engine.instrument(name)
        self._publish("user.positions", {
            "instrument_name": name,
            "underlying": instrument.underlying_name,
            "instrument_kind": str(instrument.kind),
            "updated_position": position,
            "fills_manager": manager,
        }, user=account)

    def burst(self, account: str, instrument_name: str) -> None:
        """Fault knob: report an on-chain failure of the account's trade batch."""
        sequence = self._tx_sequence.get(account, 0) + 1
        self._tx_sequence[account] = sequence
        data = {"instrument_name": instrument_name, "sequence": sequence,
                "tx_hash": "0x" + self.sim.rng.randbytes(32).hex()}
        self._publish(f"user.bursts.{instrument_name}", data, user=account)
        self._publish("user.bursts.ALL", data, user=account)

    async def periodic(self) -> None:
        """Every 100 ms: resting orders past their expiration cancelled, then ticker, 100 ms book snapshots and
        quotes of what changed."""
        while True:
            await asyncio.sleep(0.1)
            self.sim.engine.expire_orders()  # their user.orders notifications go out with the engine's events
            books, self._dirty_books = self._dirty_books, set()
            tickers, self._dirty_tickers = self._dirty_tickers, set()
            now_ms = time.time_ns() // 1_000_000
            for name in books:
                channel = f"book.{name}.15.100ms"
                quotes = f"quotes.{name}"
                if not (self.sim.has_subscribers(channel) or self.sim.has_subscribers(quotes)):
                    continue
                try:
                    book = self.sim.engine.book(name, _SNAPSHOT_DEPTH)
                except Exception:  # noqa: S112 - delisted between the event and now
                    continue
                self._publish(channel, {"asks": [[_s(px), _s(a)] for px, a in book.asks],
                                        "bids": [[_s(px), _s(a)] for px, a in book.bids],
                                        "instrument_name": name, "timestamp": book.timestamp_ms})
                top = (book.bids[:1], book.asks[:1])
                if self._last_quotes.get(name) != top:
                    self._last_quotes[name] = top
                    bid = book.bids[0] if book.bids else None
                    ask = book.asks[0] if book.asks else None
                    self._publish(quotes, {
                        "timestamp": now_ms, "instrument_name": name,
                        "best_bid_price": _s(bid[0]) if bid else None, "best_bid_amount": _s(bid[1]) if bid else "0",
                        "best_ask_price": _s(ask[0]) if ask else None, "best_ask_amount": _s(ask[1]) if ask else "0"})
            for name in tickers:
                channel = f"ticker.{name}"
                if self.sim.has_subscribers(channel):
                    try:
                        data = self.sim.engine.ticker(name)
                    except Exception:  # noqa: S112 - delisted between the event and now
                        continue
                    # public/ticker's table types the timestamp as a string, the channel's as an integer.
                    self._publish(channel, {**data, "timestamp": int(data["timestamp"])})
