"""Every order is checked against reference data before anything is signed or sent.

Request-shape checks (`intent_from_request`) name the field; instrument
rules (`check_against_instrument`) name the rule in ErrorInfo's reason, so a
caller can tell "price not on tick" from "amount below minimum" without
parsing text. None of them calls the venue.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Context, Decimal, DivisionByZero, InvalidOperation, Overflow
from typing import Final

import grpc

from portico.common.v1 import side_pb2
from portico.execution.model import OrderIntent
from portico.execution.v1 import execution_service_pb2 as pb
from portico.execution.v1 import order_pb2
from portico.refdata.v1 import instrument_pb2
from portico.refdata.v1 import reference_data_service_pb2 as refdata_pb
from portico.refdata.v1 import reference_data_service_pb2_grpc as refdata_grpc
from portico.refdata.watch import follow_instruments
from portico.runtime.cache import RefreshingCache
from portico.runtime.client import bearer
from portico.runtime.decimals import parse_decimal
from portico.runtime.errors import InvalidArgument, Unavailable
from portico.venues.accounts import check_account, check_venue

__all__ = ["MAX_INCREMENTS", "Instruments", "check_against_instrument", "check_client_order_id", "intent_from_request"]

_CLIENT_ID = re.compile(r"[A-Za-z0-9._:\-]{1,64}")
_SIDES = {side_pb2.SIDE_BUY: "buy", side_pb2.SIDE_SELL: "sell"}
_TYPES = {order_pb2.ORDER_TYPE_LIMIT: "limit", order_pb2.ORDER_TYPE_MARKET: "market"}
# What Syndr's document says it accepts: "Currently only GTC supported (good till canceled) IOC and more types
# coming soon", and its examples and order updates already carry IOC. FOK is in the contract for other venues.
_VENUE_TIME_IN_FORCE = frozenset({"GTC", "IOC"})
_TIF = {order_pb2.TIME_IN_FORCE_UNSPECIFIED: "GTC", order_pb2.TIME_IN_FORCE_GOOD_TIL_CANCELLED: "GTC",
        order_pb2.TIME_IN_FORCE_IMMEDIATE_OR_CANCEL: "IOC", order_pb2.TIME_IN_FORCE_FILL_OR_KILL: "FOK"}


def check_client_order_id(value: str, field: str = "client_order_id") -> str:
    if not _CLIENT_ID.fullmatch(value or ""):
        raise InvalidArgument(field, "required: 1-64 characters of A-Z a-z 0-9 . _ : -")
    return value


def intent_from_request(request: pb.PlaceOrderRequest) -> OrderIntent:
    """The request as an OrderIntent, or INVALID_ARGUMENT naming the first bad field."""
    venue = check_venue(request.venue)
    account = check_account(request.account)
    if not request.symbol:
        raise InvalidArgument("symbol", "required")
    side = _SIDES.get(request.side)
    if side is None:
        raise InvalidArgument("side", "must be SIDE_BUY or SIDE_SELL")
    order_type = _TYPES.get(request.type)
    if order_type is None:
        raise InvalidArgument("type", "must be ORDER_TYPE_LIMIT or ORDER_TYPE_MARKET")
    time_in_force = _TIF.get(request.time_in_force)
    if time_in_force is None:
        raise InvalidArgument("time_in_force", f"unknown value {request.time_in_force}")
    if time_in_force not in _VENUE_TIME_IN_FORCE:
        raise InvalidArgument("time_in_force", f"the venue does not accept {time_in_force}: its document lists GTC "
                                               "(and IOC as coming); use GTC or IOC",
                              reason="TIME_IN_FORCE_NOT_ACCEPTED")
    amount = parse_decimal(request.amount, "amount", positive=True)
    price: Decimal | None = None
    if order_type == "limit":
        if not request.price:
            raise InvalidArgument("price", "required for limit orders")
        price = parse_decimal(request.price, "price", positive=True)
    elif request.price:
        raise InvalidArgument("price", "must be empty for market orders")
    if request.post_only and order_type == "market":
        raise InvalidArgument("post_only", "a market order cannot be post-only", reason="POST_ONLY_MARKET")
    if request.post_only and time_in_force != "GTC":
        raise InvalidArgument("post_only", f"a post-only order must rest (GTC), not {time_in_force}",
                              reason="POST_ONLY_NOT_GTC")
    if len(request.label) > 64:
        raise InvalidArgument("label", "at most 64 characters")
    return OrderIntent(venue=venue, account=account, client_order_id=check_client_order_id(request.client_order_id),
                       symbol=request.symbol, side=side, order_type=order_type, time_in_force=time_in_force,
                       post_only=request.post_only, reduce_only=request.reduce_only, price=price, amount=amount,
                       label=request.label)


@dataclass(frozen=True)
class InstrumentRules:
    """The parts of a reference-data instrument an order is checked against."""

    symbol: str
    venue_instrument_id: int
    active: bool
    price_increment: Decimal
    amount_increment: Decimal
    min_trade_amount: Decimal
    max_leverage: Decimal | None
    expiry_ms: int | None = None  # futures and options; epoch ms

    @classmethod
    def from_proto(cls, i: instrument_pb2.Instrument) -> InstrumentRules:
        return cls(symbol=i.symbol, venue_instrument_id=i.venue_instrument_id, active=i.active,
                   price_increment=Decimal(i.price_increment), amount_increment=Decimal(i.amount_increment),
                   min_trade_amount=Decimal(i.min_trade_amount or "0"),
                   max_leverage=Decimal(i.max_leverage) if i.max_leverage else None,
                   expiry_ms=i.expiry.ToMilliseconds() if i.HasField("expiry") else None)


# A price of more than this many ticks, or an amount of more than this many increments, is refused whatever the
# instrument (no real order comes near it). Below it the quotient has at most 18 integer digits, so `_EXACT`'s
# remainder is exact, where `%` in the default 28-digit context raised InvalidOperation for a huge quotient.
MAX_INCREMENTS: Final = Decimal(10) ** 18
_EXACT: Final = Context(prec=40, traps=[InvalidOperation, DivisionByZero, Overflow])


def _on_increment(value: Decimal, increment: Decimal, field: str, what: str) -> bool:
    """Whether `value` is a whole number of `increment`s; INVALID_ARGUMENT naming `field` (reason
    `PRICE_TOO_LARGE` / `AMOUNT_TOO_LARGE`) when it is `MAX_INCREMENTS` of them or more."""
    if _EXACT.divide(value, increment) >= MAX_INCREMENTS:
        raise InvalidArgument(field, f"{value} is 10^18 or more times the {what} {increment}",
                              reason=f"{field.upper()}_TOO_LARGE", metadata={"max_increments": f"{MAX_INCREMENTS:f}"})
    return bool(_EXACT.remainder(value, increment) == 0)


def check_against_instrument(price: Decimal | None, amount: Decimal, rules: InstrumentRules,
                             now_ms: int | None = None) -> None:
    """INVALID_ARGUMENT naming the rule broken; nothing here reaches the venue.

    An instrument past its expiry is refused although reference data may still call it active: it is
    marked inactive only by the next sync after the venue delists it (minutes, in the deployment).
    """
    if not rules.active:
        raise InvalidArgument("symbol", f"{rules.symbol} is not active", reason="INSTRUMENT_INACTIVE")
    if rules.expiry_ms is not None and (time.time_ns() // 1_000_000 if now_ms is None else now_ms) >= rules.expiry_ms:
        expiry = datetime.fromtimestamp(rules.expiry_ms / 1000, UTC).isoformat().replace("+00:00", "Z")
        raise InvalidArgument("symbol", f"{rules.symbol} expired at {expiry}", reason="INSTRUMENT_EXPIRED",
                              metadata={"expiry": expiry})
    if price is not None and rules.price_increment > 0 and not _on_increment(price, rules.price_increment,
                                                                             "price", "tick size"):
        raise InvalidArgument("price", f"{price} is not on the tick size {rules.price_increment}",
                              reason="PRICE_NOT_ON_TICK", metadata={"tick_size": str(rules.price_increment)})
    if rules.amount_increment > 0 and not _on_increment(amount, rules.amount_increment, "amount",
                                                        "amount increment"):
        raise InvalidArgument("amount", f"{amount} is not a multiple of the amount increment "
                              f"{rules.amount_increment}", reason="AMOUNT_NOT_ON_INCREMENT",
                              metadata={"amount_increment": str(rules.amount_increment)})
    if amount < rules.min_trade_amount:
        raise InvalidArgument("amount", f"{amount} is below the minimum {rules.min_trade_amount}",
                              reason="AMOUNT_TOO_SMALL", metadata={"min_trade_amount": str(rules.min_trade_amount)})


class Instruments:
    """Instrument rules from reference data, cached; an unknown symbol is INVALID_ARGUMENT.

    `follow(venue)`, run for the life of the service, applies a change the moment reference data
    publishes it: the changed instrument is dropped and reloaded by the next order that needs it, and
    on every (re)connect of the watch the whole cache is dropped, since changes published meanwhile are
    never delivered. `cache_s` bounds a value's age all the same (reloaded in the background ahead of
    it), should the watch be down.
    """

    def __init__(self, channel: grpc.aio.Channel, token: str, *, cache_s: float = 10.0, timeout_s: float = 5.0):
        self._stub = refdata_grpc.ReferenceDataServiceStub(channel)
        self._metadata = bearer(token)
        self._timeout_s = timeout_s
        self._cache: RefreshingCache[tuple[str, str], InstrumentRules] = RefreshingCache(
            self._load, max_age_s=cache_s, name="instruments", drop_on=(InvalidArgument,))
        self.watches_established = 0  # for operators and tests
        self.changes_applied = 0

    def forget(self, venue: str, symbol: str) -> None:
        self._cache.forget((venue, symbol))

    async def get(self, venue: str, symbol: str) -> InstrumentRules:
        return await self._cache.get((venue, symbol))

    async def follow(self, venue: str) -> None:
        """Watch `venue`'s instruments in reference data until cancelled (see the class docstring)."""
        async def established() -> None:
            self._cache.clear()
            self.watches_established += 1

        def changed(event: refdata_pb.InstrumentEvent) -> None:
            self.forget(venue, event.instrument.symbol)
            self.changes_applied += 1

        await follow_instruments(self._stub, self._metadata, venue, watcher="execution", on_established=established,
                                 on_event=changed, established_timeout_s=self._timeout_s)

    async def aclose(self) -> None:
        await self._cache.aclose()

    async def _load(self, key: tuple[str, str]) -> InstrumentRules:
        venue, symbol = key
        try:
            reply = await self._stub.GetInstrument(refdata_pb.GetInstrumentRequest(venue=venue, symbol=symbol),
                                                   metadata=self._metadata, timeout=self._timeout_s)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise InvalidArgument("symbol", f"{venue} has no instrument {symbol!r}",
                                      reason="INSTRUMENT_NOT_FOUND") from None
            raise Unavailable(f"reference data unavailable: {exc.code().name}",
                              reason="REFDATA_UNAVAILABLE") from None
        return InstrumentRules.from_proto(reply.instrument)
