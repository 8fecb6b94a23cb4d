"""Venue orders and fills, and journal entries, as the contract's `Order` and `Fill` messages."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from portico.common.v1 import side_pb2
from portico.execution.model import JournalEntry, OrderState
from portico.execution.v1 import order_pb2
from portico.runtime.decimals import format_decimal
from portico.venues.syndr import models

__all__ = ["fill_proto", "order_proto"]

_SIDE = {"buy": side_pb2.SIDE_BUY, "sell": side_pb2.SIDE_SELL}
_TYPE = {"limit": order_pb2.ORDER_TYPE_LIMIT, "market": order_pb2.ORDER_TYPE_MARKET}
_TIF = {"GTC": order_pb2.TIME_IN_FORCE_GOOD_TIL_CANCELLED, "IOC": order_pb2.TIME_IN_FORCE_IMMEDIATE_OR_CANCEL,
        "FOK": order_pb2.TIME_IN_FORCE_FILL_OR_KILL}
_STATE = {
    OrderState.PENDING: order_pb2.ORDER_STATE_PENDING, OrderState.UNKNOWN: order_pb2.ORDER_STATE_UNKNOWN,
    OrderState.OPEN: order_pb2.ORDER_STATE_OPEN, OrderState.FILLED: order_pb2.ORDER_STATE_FILLED,
    OrderState.CANCELLED: order_pb2.ORDER_STATE_CANCELLED, OrderState.REJECTED: order_pb2.ORDER_STATE_REJECTED,
    OrderState.EXPIRED: order_pb2.ORDER_STATE_EXPIRED,
}
_VENUE_STATE = {"open": OrderState.OPEN, "filled": OrderState.FILLED, "cancelled": OrderState.CANCELLED,
                "rejected": OrderState.REJECTED, "expired": OrderState.EXPIRED}


def _d(value: Decimal | None) -> str:
    return format_decimal(value) if value is not None else ""


def order_proto(venue: str, account: str, venue_order: dict[str, Any] | None,
                entry: JournalEntry | None) -> order_pb2.Order:
    """One order: the venue's view when there is one, our journal's for what the venue never showed us."""
    message = order_pb2.Order(venue=venue, account=account)
    if entry is not None:
        intent = entry.intent
        message.client_order_id = intent.client_order_id
        message.symbol = intent.symbol
        message.side = _SIDE[intent.side]
        message.type = _TYPE[intent.order_type]
        message.time_in_force = _TIF[intent.time_in_force]
        message.post_only = intent.post_only
        message.reduce_only = intent.reduce_only
        message.price = _d(intent.price)
        message.amount = _d(intent.amount)
        message.filled_amount = "0"
        message.unfilled_amount = _d(intent.amount)
        message.state = _STATE[entry.state]
        message.label = intent.label
        message.salt = str(entry.salt)
        message.signer_address = entry.signer_address
        message.reject_reason = entry.reject_reason
        message.expire_time.FromMilliseconds(entry.expiration_ms)
        message.create_time.FromMilliseconds(entry.created_ms or entry.timestamp_ms)
        message.update_time.FromMilliseconds(entry.updated_ms or entry.timestamp_ms)
        message.order_id = entry.order_id
        if entry.venue_timing is not None:
            us_in, us_out, us_diff = entry.venue_timing
            message.venue_timing.us_in, message.venue_timing.us_out, message.venue_timing.us_diff = \
                us_in, us_out, us_diff
    if venue_order is None:
        return message
    o = models.parse_order(venue_order)
    message.order_id = o.order_id
    message.symbol = o.instrument_name
    message.side = _SIDE.get(o.direction, side_pb2.SIDE_UNSPECIFIED)
    message.type = _TYPE.get(o.order_type.lower(), order_pb2.ORDER_TYPE_UNSPECIFIED)
    if o.time_in_force:
        message.time_in_force = _TIF.get(o.time_in_force.upper(), order_pb2.TIME_IN_FORCE_UNSPECIFIED)
    message.post_only = bool(o.post_only)
    message.reduce_only = bool(o.reduce_only)
    message.price = _d(o.price) if message.type == order_pb2.ORDER_TYPE_LIMIT else ""
    message.amount = _d(o.amount)
    message.filled_amount = _d(o.filled_amount)
    message.unfilled_amount = _d(o.unfilled_amount if o.unfilled_amount is not None else o.amount - o.filled_amount)
    message.average_price = _d(o.average_price) if o.filled_amount else ""
    message.state = _STATE[_VENUE_STATE.get(o.order_state.lower(), OrderState.OPEN)]
    message.is_liquidation = bool(o.is_liquidation)
    if entry is None:
        message.label = o.label or ""
    if o.salt is not None:
        message.salt = str(o.salt)
    if o.order_signer:
        message.signer_address = o.order_signer
    message.create_time.FromMilliseconds(o.creation_timestamp)
    message.update_time.FromMilliseconds(o.last_update_timestamp)
    if o.expiration:
        message.expire_time.FromMilliseconds(o.expiration)
    return message


def fill_proto(venue: str, account: str, trade: models.UserTrade, client_order_ids: dict[str, str]) -> order_pb2.Fill:
    """One of the account's fills. The venue's `side` is the taker's; a maker's own side is the other one."""
    is_taker = (trade.taker or "").lower() == account.lower()
    order_id = (trade.incoming_order_id if is_taker else trade.book_order_id) or ""
    side = trade.side if is_taker else ("sell" if trade.side == "buy" else "buy")
    message = order_pb2.Fill(
        fill_id=trade.id, order_id=order_id, client_order_id=client_order_ids.get(order_id, ""), venue=venue,
        account=account, symbol=trade.instrument_name, side=_SIDE.get(side, side_pb2.SIDE_UNSPECIFIED),
        price=_d(trade.price), amount=_d(trade.amount),
        liquidity=order_pb2.LIQUIDITY_TAKER if is_taker else order_pb2.LIQUIDITY_MAKER,
        trade_sequence=trade.trade_sequence or 0)
    message.fill_time.FromMilliseconds(trade.timestamp)
    return message
