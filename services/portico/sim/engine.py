"""The simulator's matching core: books, orders, accounts, positions and margin, with no I/O.

The JSON-RPC server drives one `Engine` and turns its results and events into
Syndr's wire shapes; everything here is synchronous, single-threaded and
deterministic given the injected clock (`now_ms`) and `random.Random`.

Decisions the document leaves open (the server and the adapter rely on them):

* Matching is price-time priority; trades print at the resting order's price.
  The maker pays ``price * amount * maker_commission`` (negative = rebate),
  the taker ``price * amount * taker_commission``; fees come out of realised PnL.
* Self-trades are allowed: an account's incoming order may fill against its own
  resting order (both legs are booked; one UserFill is emitted for the account).
* Reduce-only orders are rejected (REDUCE_ONLY_WOULD_INCREASE) when, at
  placement or edit, they would increase the position or flip it (amount
  larger than the position). A resting reduce-only order whose position has
  since shrunk is clamped at match time to what it still reduces, and cancelled
  once nothing is left to reduce. Reduce-only orders reserve no margin.
* `expiration` is the signature's validity: an order whose expiration is at or
  before now is rejected (ORDER_EXPIRED), and a resting order is cancelled once
  its expiration passes (`expire_orders`, run every 100 ms by the simulator).
  It is epoch milliseconds, as the tables of user.orders and user.fills say
  and the private/buy and private/sell examples send it (only the channels'
  examples show seconds): a value in seconds is long past, so refused.
* FOK that cannot fill entirely, a post-only order that would take (the
  document: it "will be first put in order book before execution or will be
  cancelled"), and the unfilled rest of IOC and market orders, end "cancelled"
  (not an error). An edit that would make a post-only order take is refused
  (POST_ONLY_WOULD_TAKE): the order keeps resting as it was. A market order with an empty opposite side is
  rejected with NO_LIQUIDITY. Price bands (min/max_price) are informational only.
* Amounts are in underlying units (1 = 1 ETH). Position size is signed
  (negative = short) with direction "buy"/"sell". PnL is linear for every kind,
  options included (premium is not exchanged up front): unrealised =
  (mark - average_price) * size; realised on reductions, minus fees.
* Marks: perpetual = index; future = index * (1 + 5%/year * time to expiry);
  option = Black-76 on the index with a fixed 60% vol. Marks are re-evaluated
  when an index moves and at least once a minute. Black-76 runs in binary
  floating point (Decimal has no erf); its outputs are rounded to 8 decimals
  and become Decimals at once; no float touches a book, fill, fee or PnL.
* Margin (standard): initial = sum |size| * mark / leverage over positions +
  open-orders IM (unfilled * price / leverage over resting non-reduce-only
  orders); maintenance = half the positions' initial margin. Leverage defaults
  to min(max_leverage, 10). An order is refused (NOT_ENOUGH_FUNDS) when its own
  initial margin (amount * limit price, or mark for market orders, / leverage)
  exceeds available_balance = equity - initial margin, where equity =
  collateral (USD) + realised PnL + unrealised PnL.
* Portfolio margin: loss of each currency's positions over 11 index moves
  (-15% .. +15% in 3% steps) plus contingencies (0.6% of futures notional, 1%
  of the index per unit of option size); when enabled, the worst loss plus the
  contingencies replace the positions' initial margin; maintenance is half.
* Unknown accounts are UNAUTHORIZED: the server opens an account (with
  `open_account`) when its signing key is registered.

Events are buffered during each operation and delivered after it, in this
order: BookChanged (one per instrument whose aggregated book changed, with
each changed level's new total, 0 = removed), IndexChanged / InstrumentChanged
/ PublicTrade / UserFill in the order they happened, OrderUpdated (each order
touched, once, in its final state: the incoming order first, then the resting
orders it hit), PositionChanged (each position touched, once),
TickerChanged (instruments whose best prices, last price, mark or index moved).
Listeners should not call mutating methods; an exception in a listener is logged
and does not stop delivery.
"""

from __future__ import annotations

import heapq
import logging
import math
import random
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from itertools import islice
from operator import neg
from typing import Any, Literal, TypeAlias

from sortedcontainers import SortedDict

from portico.sim.instruments import DEFAULT_INDEX_PRICES, Instrument, fmt_decimal, parse_instrument_name
from portico.venues.syndr.constants import ERROR_MESSAGES, ErrorCode, InstrumentKind

__all__ = [
    "COLLATERALS",
    "RESOLUTIONS",
    "SCENARIO_MOVES",
    "BookChanged",
    "BookView",
    "Engine",
    "EngineError",
    "Event",
    "IndexChanged",
    "InstrumentChanged",
    "OrderState",
    "OrderType",
    "OrderUpdated",
    "Placement",
    "Position",
    "PositionChanged",
    "PublicTrade",
    "Side",
    "SimOrder",
    "SimTrade",
    "TickerChanged",
    "TimeInForce",
    "UserFill",
    "black76",
]

_log = logging.getLogger(__name__)

Side = Literal["buy", "sell"]
OrderType = Literal["limit", "market"]
OrderState = Literal["open", "filled", "cancelled", "rejected"]
TimeInForce = Literal["GTC", "IOC", "FOK"]

ZERO = Decimal(0)
ONE = Decimal(1)
HUNDRED = Decimal(100)
_EIGHT_PLACES = Decimal("0.00000001")
_UTILIZATION_PLACES = Decimal("0.0000000001")
_ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"

MINUTE_MS = 60_000
DAY_MS = 86_400_000
YEAR_MS = 365 * DAY_MS
DEFAULT_LEVERAGE_CAP = Decimal(10)
PRICE_BAND = Decimal("0.015")  # min/max_price = mark -/+ 1.5%, as in the document's ticker example
FUNDING_CAP = Decimal("0.0005")
FUTURES_BASIS_PER_YEAR = Decimal("0.05")
OPTION_VOL = 0.6
MARK_REFRESH_MS = MINUTE_MS
SCENARIO_MOVES: tuple[Decimal, ...] = tuple(Decimal("0.03") * k for k in range(-5, 6))
FUTURES_CONTINGENCY = Decimal("0.006")
OPTIONS_CONTINGENCY = Decimal("0.01")
RESOLUTIONS: dict[str, int] = {"1": 1, "5": 5, "30": 30, "60": 60, "240": 240, "1D": 1440}
MAX_CANDLES = 10_000
CANDLE_RETENTION_MS = 8 * DAY_MS
PUBLIC_TRADES_KEPT = 1_000

_SIDES = frozenset({"buy", "sell"})
_ORDER_TYPES = frozenset({"limit", "market"})
_TIME_IN_FORCE = frozenset({"GTC", "IOC", "FOK"})

COLLATERALS: dict[str, dict[str, Any]] = {
    "DAI": {
        "collateral_weight": "1", "decimals": 18, "im_weight": "1",
        "l2_address": "0x667094b03b8534d9f93b97a1e211c01c63f6bc2e",
        "l2_gateway": "0xbb0d77b2ae2843409f60fe99c7a54b377e26b363",
        "l3_address": "0x0e55f649ea4843dd173520c3733839cf2f215d16",
        "mm_weight": "1", "name": "Syndr L3 DAI", "oracle_price_id": "DAIUSD", "oracle_update_data": "0x",
        "paused": False, "price_index": "DAIUSD", "symbol": "DAI",
    },
    "USDC": {
        "collateral_weight": "1", "decimals": 6, "im_weight": "1",
        "l2_address": "0xce1c613bffc4d7b1e8c64d851274c59ccd13bc97",
        "l2_gateway": "0xbb0d77b2ae2843409f60fe99c7a54b377e26b363",
        "l3_address": "0x85d4cd6a8dc7d6280d53254477ac681ac46a2d50",
        "mm_weight": "1", "name": "Syndr L3 Circle USD", "oracle_price_id": "USDCUSD", "oracle_update_data": "0x",
        "paused": False, "price_index": "USDCUSD", "symbol": "USDC",
    },
    "USDT": {
        "collateral_weight": "1", "decimals": 6, "im_weight": "1",
        "l2_address": "0x68e53712bdabfabc0da19a1065dfdeec90572f8b",
        "l2_gateway": "0xbb0d77b2ae2843409f60fe99c7a54b377e26b363",
        "l3_address": "0xf96ea8426edc799ea7dbf34c86b565722e52ccce",
        "mm_weight": "1", "name": "Syndr L3 Tether USD", "oracle_price_id": "USDTUSD", "oracle_update_data": "0x",
        "paused": False, "price_index": "USDTUSD", "symbol": "USDT",
    },
}
"""public/get_supported_collaterals, as in the document (the oracle payloads are elided)."""

_fmt = fmt_decimal


class EngineError(Exception):
    """A rejected request: `code` and `message` are what the JSON-RPC error object carries."""

    def __init__(self, code: ErrorCode, detail: str = ""):
        self.code = code
        self.message = ERROR_MESSAGES[code]
        self.detail = detail
        super().__init__(f"{self.message}: {detail}" if detail else self.message)


# --------------------------------------------------------------------------- orders and trades


@dataclass(eq=False, slots=True, kw_only=True)
class SimOrder:
    """An order as the venue keeps it; `to_wire` gives the document's order object."""

    order_id: str
    instrument_name: str
    instrument_id: int
    direction: Side
    order_type: OrderType
    order_state: OrderState
    time_in_force: TimeInForce
    post_only: bool
    reduce_only: bool
    is_liquidation: bool
    label: str
    creator: str
    order_signer: str
    price: Decimal
    average_price: Decimal
    amount: Decimal
    original_amount: Decimal
    filled_amount: Decimal
    unfilled_amount: Decimal
    contract_size: Decimal
    creation_timestamp: int
    last_update_timestamp: int
    expiration: int
    salt: str
    signature: str
    trades: list[SimTrade] = field(default_factory=list)
    filled_notional: Decimal = field(default=ZERO, repr=False)
    im: Decimal = field(default=ZERO, repr=False)  # initial margin reserved while resting
    seq: int = field(default=0, repr=False)

    def to_wire(self, *, with_trades: bool = True) -> dict[str, Any]:
        """The union of the document's order shapes (buy/edit/cancel results, order history, user.orders).

        Without `with_trades`, as embedded in a user trade (the document's `maker_order` / `taker_order` carry no
        trades list): a resting order filled n times would otherwise make each of its n trades O(n) long.
        """
        wire = {
            "instrument_name": self.instrument_name,
            "order_id": self.order_id,
            "order_type": self.order_type,
            "order_state": self.order_state,
            "direction": self.direction,
            "time_in_force": self.time_in_force,
            "reduce_only": self.reduce_only,
            "is_liquidation": self.is_liquidation,
            "post_only": self.post_only,
            "creator": self.creator,
            "account": self.creator,
            "order_signer": self.order_signer or _ZERO_ADDRESS,
            "contract_size": _fmt(self.contract_size),
            "creation_timestamp": self.creation_timestamp,
            "last_update_timestamp": self.last_update_timestamp,
            "expiration": self.expiration,
            "price": _fmt(self.price),
            "average_price": _fmt(self.average_price),
            "trigger_price": "0",
            "trigger_condition": "",
            "triggered": False,
            "original_amount": _fmt(self.original_amount),
            "amount": _fmt(self.amount),
            "unfilled_amount": _fmt(self.unfilled_amount),
            "filled_amount": _fmt(self.filled_amount),
            "label": self.label,
            "salt": self.salt,
            "signature": self.signature,
        }
        if with_trades:
            wire["trades"] = [trade.order_trade_wire() for trade in self.trades]
        return wire


@dataclass(eq=False, slots=True, kw_only=True)
class SimTrade:
    """One execution between a resting (maker) and an incoming (taker) order."""

    trade_id: str
    trade_sequence: int
    instrument_name: str
    instrument_id: int
    contract_size: Decimal
    price: Decimal
    amount: Decimal
    side: Side  # the taker's side, as in public/get_trades and the document's user trades
    maker: str
    taker: str
    maker_order: SimOrder
    taker_order: SimOrder
    maker_fee: Decimal
    taker_fee: Decimal
    timestamp_ms: int
    tx_hash: str = ""
    is_sync: bool = False

    def order_trade_wire(self) -> dict[str, Any]:
        """An entry of an order's trades list."""
        return {"id": self.trade_id, "instrument_name": self.instrument_name, "price": _fmt(self.price),
                "side": self.side, "amount": _fmt(self.amount), "timestamp": self.timestamp_ms}

    def public_wire(self) -> dict[str, Any]:
        """An item of public/get_trades (the example's ISO timestamp, not the table's integer)."""
        return {"amount": _fmt(self.amount), "id": self.trade_id, "instrument_name": self.instrument_name,
                "price": _fmt(self.price), "side": self.side, "timestamp": _iso(self.timestamp_ms)}

    def fill_wire(self) -> dict[str, Any]:
        """The data of a user.fills notification (salt and expiration are the maker order's)."""
        return {
            "id": self.trade_id, "trade_sequence": self.trade_sequence, "side": self.side,
            "price": _fmt(self.price), "amount": _fmt(self.amount),
            "incoming_order_id": self.taker_order.order_id, "book_order_id": self.maker_order.order_id,
            "maker": self.maker, "taker": self.taker, "instrument_id": self.instrument_id,
            "contract_size": _fmt(self.contract_size), "timestamp": self.timestamp_ms,
            "instrument_name": self.instrument_name, "txn_hash": self.tx_hash, "is_sync": self.is_sync,
            "salt": self.maker_order.salt, "expiration": self.maker_order.expiration,
            "maker_signature": self.maker_order.signature, "taker_signature": self.taker_order.signature,
        }

    def user_wire(self, *, with_orders: bool = True) -> dict[str, Any]:
        """An item of private/get_user_trades_* (by_instrument omits the two order objects)."""
        wire: dict[str, Any] = {
            "id": self.trade_id, "trade_sequence": self.trade_sequence, "side": self.side,
            "price": _fmt(self.price), "amount": _fmt(self.amount),
            "incoming_order_id": self.taker_order.order_id, "book_order_id": self.maker_order.order_id,
            "maker": self.maker, "taker": self.taker,
        }
        if with_orders:
            wire["maker_order"] = self.maker_order.to_wire(with_trades=False)
            wire["taker_order"] = self.taker_order.to_wire(with_trades=False)
        wire.update({
            "status": "", "timestamp": self.timestamp_ms, "instrument_id": self.instrument_id,
            "instrument_name": self.instrument_name, "tx_hash": self.tx_hash, "is_sync": self.is_sync,
            "salt": self.maker_order.salt, "expiration": self.maker_order.expiration,
            "maker_signature": self.maker_order.signature, "taker_signature": self.taker_order.signature,
        })
        return wire


@dataclass(slots=True)
class Placement:
    """What buy/sell/edit return: the order after matching and the trades this call made."""

    order: SimOrder
    trades: list[SimTrade]

    def to_wire(self) -> dict[str, Any]:
        return {"order": self.order.to_wire(), "trades": [trade.order_trade_wire() for trade in self.trades]}


@dataclass(slots=True, kw_only=True)
class Position:
    """An account's position in one instrument; size is signed and in underlying units."""

    instrument_name: str
    instrument_id: int
    kind: InstrumentKind
    size: Decimal = ZERO
    average_price: Decimal = ZERO  # cost_basis / |size|
    cost_basis: Decimal = ZERO  # entry notional of the open size, so unrealised PnL is exact
    realized_pnl: Decimal = ZERO  # closing PnL minus every fee paid on this instrument
    trade_fee: Decimal = ZERO
    last_update_timestamp: int = 0


@dataclass(frozen=True, slots=True)
class BookView:
    """A book snapshot: bids best (highest) first, asks best (lowest) first, as (price, amount)."""

    instrument_name: str
    bids: list[tuple[Decimal, Decimal]]
    asks: list[tuple[Decimal, Decimal]]
    change_id: int
    timestamp_ms: int


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class BookChanged:
    """Changed levels of one instrument's book, each with its new total (0 = gone); change ids chain by 1."""

    instrument_name: str
    change_id: int
    previous_change_id: int
    bids: tuple[tuple[Decimal, Decimal], ...]
    asks: tuple[tuple[Decimal, Decimal], ...]
    timestamp_ms: int

    def to_wire(self) -> dict[str, Any]:
        """The data of a book.{instrument}.*.raw notification (its table: `timestamp number`, the example a string)."""
        return {"type": "change", "asks": [[_fmt(p), _fmt(a)] for p, a in self.asks],
                "bids": [[_fmt(p), _fmt(a)] for p, a in self.bids], "change_id": self.change_id,
                "previous_change_id": self.previous_change_id, "instrument_name": self.instrument_name,
                "timestamp": self.timestamp_ms}


@dataclass(frozen=True, slots=True)
class PublicTrade:
    """A trade for the trades.{instrument}.raw channel; `side` is the taker's."""

    instrument_name: str
    trade_id: str
    price: Decimal
    amount: Decimal
    side: Side
    timestamp_ms: int

    def to_wire(self) -> dict[str, Any]:
        return {"id": self.trade_id, "size": _fmt(self.amount), "price": _fmt(self.price), "side": self.side,
                "timestamp": self.timestamp_ms, "instrument_name": self.instrument_name}


@dataclass(frozen=True, slots=True)
class OrderUpdated:
    """An order of `account` changed (user.orders.*; its update_type is the wire's order_state)."""

    account: str
    order_wire: dict[str, Any]


@dataclass(frozen=True, slots=True)
class UserFill:
    """`account` took part in a trade (user.fills.*); each distinct counterparty gets one."""

    account: str
    fill_wire: dict[str, Any]


@dataclass(frozen=True, slots=True)
class PositionChanged:
    """A position of `account` changed (user.positions); the wire is a get_positions item."""

    account: str
    position_wire: dict[str, Any]


@dataclass(frozen=True, slots=True)
class InstrumentChanged:
    """The catalogue changed; `instrument` is a copy taken at the time."""

    instrument: Instrument
    what: Literal["added", "updated", "delisted"]


@dataclass(frozen=True, slots=True)
class TickerChanged:
    """Something public/ticker shows moved (best prices, last price, mark, index); the server throttles."""

    instrument_name: str


@dataclass(frozen=True, slots=True)
class IndexChanged:
    """An index price was set; every instrument on it also gets a TickerChanged."""

    price_index: str
    price: Decimal
    timestamp_ms: int


Event: TypeAlias = (
    BookChanged | PublicTrade | OrderUpdated | UserFill | PositionChanged | InstrumentChanged | TickerChanged
    | IndexChanged
)


# --------------------------------------------------------------------------- internals


class _Level:
    __slots__ = ("orders", "total")

    def __init__(self) -> None:
        self.orders: deque[SimOrder] = deque()
        self.total = ZERO


class _Bucket:
    """One minute of trades: OHLC, volume (underlying), notional (USD), last trade time."""

    __slots__ = ("close", "high", "last_ms", "low", "notional", "open", "volume")

    def __init__(self, price: Decimal, ts: int) -> None:
        self.open = self.high = self.low = self.close = price
        self.volume = ZERO
        self.notional = ZERO
        self.last_ms = ts


class _Market:
    """One instrument's book and public statistics."""

    __slots__ = ("asks", "bids", "book_ts", "buckets", "change_id", "inst", "last_price", "mark", "mark_key",
                 "open_interest", "top_before", "touched", "trade_seq", "trades")

    def __init__(self, inst: Instrument) -> None:
        self.inst = inst
        self.bids: Any = SortedDict(neg)  # price -> _Level, highest first
        self.asks: Any = SortedDict()  # price -> _Level, lowest first
        self.change_id = 0
        self.book_ts = 0
        self.touched: dict[tuple[bool, Decimal], Decimal] | None = None  # level -> total before this operation
        self.top_before: tuple[Decimal | None, ...] = ()
        self.trades: deque[SimTrade] = deque(maxlen=PUBLIC_TRADES_KEPT)
        self.buckets: Any = SortedDict()  # minute start ms -> _Bucket
        self.last_price: Decimal | None = None
        self.open_interest = ZERO
        self.trade_seq = 0
        self.mark = ZERO
        self.mark_key: tuple[int, int] | None = None


class _Account:
    __slots__ = ("address", "cancel_on_disconnect", "closed", "collateral", "deposits", "is_pm", "leverage",
                 "open_by_instrument", "open_orders", "orders_im", "pos_im", "positions", "realized_pnl",
                 "risk_key", "trades", "upnl")

    def __init__(self, address: str, history_limit: int) -> None:
        self.address = address
        self.collateral: dict[str, Decimal] = {}
        self.deposits: dict[str, list[dict[str, Any]]] = {}
        self.realized_pnl = ZERO
        self.positions: dict[str, Position] = {}
        self.leverage: dict[str, Decimal] = {}
        self.is_pm = False
        self.cancel_on_disconnect = False
        self.open_orders: dict[str, SimOrder] = {}
        self.open_by_instrument: dict[str, dict[str, SimOrder]] = {}
        self.closed: OrderedDict[str, SimOrder] = OrderedDict()
        self.trades: deque[SimTrade] = deque(maxlen=history_limit)
        self.orders_im = ZERO
        self.risk_key: tuple[int, int] | None = None  # (price version, minute) the cached pos_im/upnl are for
        self.pos_im = ZERO
        self.upnl = ZERO


def _iso(ms: int) -> str:
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _dec8(value: float) -> Decimal:
    """A model output (float) as a Decimal with 8 decimals; the only float-to-Decimal door."""
    if not math.isfinite(value):
        return ZERO
    return Decimal(f"{value:.8f}")


def _norm_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def _norm_pdf(x: float) -> float:
    return math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def black76(forward: float, strike: float, years: float, vol: float, is_call: bool) -> dict[str, float]:
    """Black-76 price and greeks (r = 0): vega per vol point, theta per day."""
    years = max(years, MINUTE_MS / YEAR_MS)
    if forward <= 0 or strike <= 0 or vol <= 0:
        intrinsic = max(forward - strike, 0.0) if is_call else max(strike - forward, 0.0)
        return {"price": intrinsic, "delta": 0.0, "gamma": 0.0, "vega": 0.0, "theta": 0.0, "rho": 0.0}
    sd = vol * math.sqrt(years)
    d1 = (math.log(forward / strike) + 0.5 * sd * sd) / sd
    d2 = d1 - sd
    if is_call:
        price = forward * _norm_cdf(d1) - strike * _norm_cdf(d2)
        delta = _norm_cdf(d1)
    else:
        price = strike * _norm_cdf(-d2) - forward * _norm_cdf(-d1)
        delta = _norm_cdf(d1) - 1.0
    pdf = _norm_pdf(d1)
    return {
        "price": max(price, 0.0),
        "delta": delta,
        "gamma": pdf / (forward * sd),
        "vega": forward * pdf * math.sqrt(years) / 100.0,
        "theta": -forward * pdf * vol / (2.0 * math.sqrt(years)) / 365.0,
        "rho": -years * price / 100.0,
    }


def _implied_vol(price: float, forward: float, strike: float, years: float, is_call: bool) -> float:
    """Bisection on Black-76; clamps to [1%, 500%]."""
    low, high = 0.01, 5.0
    if price <= black76(forward, strike, years, low, is_call)["price"]:
        return low
    if price >= black76(forward, strike, years, high, is_call)["price"]:
        return high
    for _ in range(60):
        mid = (low + high) / 2
        if black76(forward, strike, years, mid, is_call)["price"] < price:
            low = mid
        else:
            high = mid
    return (low + high) / 2


_ALL_KINDS = frozenset(InstrumentKind)


def _kinds(kind: InstrumentKind | str | None) -> frozenset[InstrumentKind]:
    """The kinds a filter admits: None / "any" = all, "spot" (listed by the document, never traded) = none."""
    if kind is None or kind == "any":
        return _ALL_KINDS
    if kind == "spot":
        return frozenset()
    try:
        return frozenset({InstrumentKind(kind)})
    except ValueError:
        raise EngineError(ErrorCode.INVALID_PARAMS, f"unknown instrument kind: {kind!r}") from None


def _expired(expiration: int, now_ms: int) -> bool:
    """Whether a signed expiration (epoch ms; 0: none) has passed."""
    return bool(expiration) and expiration <= now_ms


def _require_decimal(value: object, what: str) -> Decimal:
    if not isinstance(value, Decimal) or not value.is_finite():
        raise EngineError(ErrorCode.INVALID_PARAMS, f"{what} must be a finite Decimal")
    return value


# --------------------------------------------------------------------------- the engine


class Engine:
    """The venue: catalogue, books, accounts. Every price, amount, fee and PnL is a Decimal."""

    def __init__(
        self,
        instruments: Iterable[Instrument],
        *,
        now_ms: Callable[[], int],
        rng: random.Random,
        index_prices: Mapping[str, Decimal] | None = None,
        history_limit: int = 10_000,
    ) -> None:
        self._now = now_ms
        self._rng = rng
        self._history_limit = history_limit
        self._t = now_ms()
        self._markets: dict[str, _Market] = {}
        self._by_id: dict[int, str] = {}
        self._by_index: dict[str, list[str]] = {}
        self._index: dict[str, Decimal] = dict(DEFAULT_INDEX_PRICES if index_prices is None else index_prices)
        self._price_version = 0
        self._accounts: dict[str, _Account] = {}
        self._listeners: list[Callable[[Event], None]] = []
        self._order_seq = 0
        self._catalog_version = 0
        # Resting orders by signed expiration: (expires at ms, push order, account, order id); may hold entries
        # of orders closed or re-signed since, which expire_orders skips.
        self._expiries: list[tuple[int, int, str, str]] = []
        self._expiry_seq = 0
        # Buffers of the operation in progress, flushed as events when it ends.
        self._dirty_markets: list[_Market] = []
        self._queue: list[Event] = []
        self._dirty_orders: dict[str, SimOrder] = {}
        self._dirty_positions: dict[tuple[str, str], tuple[_Account, Position]] = {}
        self._dirty_tickers: dict[str, None] = {}
        for inst in instruments:
            self._add_market(inst)

    # ----------------------------------------------------------------- events

    def subscribe(self, listener: Callable[[Event], None]) -> Callable[[], None]:
        """Deliver every event to `listener` (synchronously, after each operation); returns the unsubscriber."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def _flush(self) -> None:
        """End an operation: number the book changes, then deliver the buffered events."""
        t = self._t
        events: list[Event] = []
        for mkt in self._dirty_markets:
            touched = mkt.touched or {}
            mkt.touched = None
            bids: list[tuple[Decimal, Decimal]] = []
            asks: list[tuple[Decimal, Decimal]] = []
            for (is_bid, price), before in touched.items():
                level = (mkt.bids if is_bid else mkt.asks).get(price)
                after = level.total if level is not None else ZERO
                if after != before:
                    (bids if is_bid else asks).append((price, after))
            if bids or asks:
                bids.sort(reverse=True)
                asks.sort()
                mkt.change_id += 1
                mkt.book_ts = t
                events.append(BookChanged(mkt.inst.name, mkt.change_id, mkt.change_id - 1, tuple(bids), tuple(asks), t))
            if self._top(mkt) != mkt.top_before:
                self._dirty_tickers[mkt.inst.name] = None
        self._dirty_markets.clear()
        listeners = tuple(self._listeners)
        if listeners:
            events.extend(self._queue)
            events.extend(OrderUpdated(order.creator, order.to_wire()) for order in self._dirty_orders.values())
            events.extend(PositionChanged(acct.address, self._position_wire(acct, pos))
                          for acct, pos in self._dirty_positions.values())
            events.extend(TickerChanged(name) for name in self._dirty_tickers)
        self._queue.clear()
        self._dirty_orders.clear()
        self._dirty_positions.clear()
        self._dirty_tickers.clear()
        for event in events:
            for listener in listeners:
                try:
                    listener(event)
                except Exception:
                    _log.exception("simulator event listener failed on %s", type(event).__name__)

    # ----------------------------------------------------------------- catalogue

    def _add_market(self, inst: Instrument) -> None:
        try:
            _, kind, _, _, _ = parse_instrument_name(inst.name)
        except ValueError as exc:
            raise EngineError(ErrorCode.INVALID_PARAMS, str(exc)) from None
        if kind is not inst.kind:
            raise EngineError(ErrorCode.INVALID_PARAMS, f"{inst.name} is not a {inst.kind.value}")
        if inst.name in self._markets or inst.id in self._by_id:
            raise EngineError(ErrorCode.INVALID_PARAMS, f"duplicate instrument {inst.name} / id {inst.id}")
        self._markets[inst.name] = _Market(inst)
        self._by_id[inst.id] = inst.name
        self._by_index.setdefault(inst.price_index, []).append(inst.name)

    def _market(self, name: str) -> _Market:
        mkt = self._markets.get(name)
        if mkt is None:
            raise EngineError(ErrorCode.INSTRUMENT_NOT_FOUND, name)
        return mkt

    @property
    def catalog_version(self) -> int:
        """Goes up whenever an instrument is added, updated or delisted."""
        return self._catalog_version

    def instruments(self) -> list[Instrument]:
        """Every instrument, active or not, in the order added (do not mutate them: use update_instrument)."""
        return [mkt.inst for mkt in self._markets.values()]

    def instrument(self, name: str) -> Instrument:
        return self._market(name).inst

    def instrument_by_id(self, instrument_id: int) -> Instrument:
        name = self._by_id.get(instrument_id)
        if name is None:
            raise EngineError(ErrorCode.INSTRUMENT_NOT_FOUND, str(instrument_id))
        return self._markets[name].inst

    def add_instrument(self, inst: Instrument) -> None:
        """List a new instrument (INVALID_PARAMS for a malformed or duplicate name or id)."""
        self._t = self._now()
        self._add_market(inst)
        self._catalog_version += 1
        try:
            if self._listeners:
                self._queue.append(InstrumentChanged(replace(inst), "added"))
        finally:
            self._flush()

    _UPDATABLE = frozenset({"tick_size", "contract_size", "min_trade_amount", "maker_commission", "taker_commission",
                            "max_leverage", "max_liquidation_commission", "settlement_period", "is_active"})
    _POSITIVE = frozenset({"tick_size", "contract_size", "min_trade_amount", "max_leverage"})

    def update_instrument(self, name: str, /, **fields: Any) -> Instrument:
        """Change an instrument's terms (tick size, contract size, fees, ...); resting orders stay as they are."""
        self._t = self._now()
        mkt = self._market(name)
        for key, value in fields.items():
            if key not in self._UPDATABLE:
                raise EngineError(ErrorCode.INVALID_PARAMS, f"cannot update {key}")
            if key == "is_active":
                if not isinstance(value, bool):
                    raise EngineError(ErrorCode.INVALID_PARAMS, "is_active must be a bool")
            elif key == "settlement_period":
                if not isinstance(value, str):
                    raise EngineError(ErrorCode.INVALID_PARAMS, "settlement_period must be a string")
            else:
                _require_decimal(value, key)
                if key in self._POSITIVE and value <= 0:
                    raise EngineError(ErrorCode.INVALID_PARAMS, f"{key} must be positive")
        try:
            for key, value in fields.items():
                setattr(mkt.inst, key, value)
            self._catalog_version += 1
            self._price_version += 1  # leverage caps and marks may have changed
            self._dirty_tickers[name] = None
            if self._listeners:
                self._queue.append(InstrumentChanged(replace(mkt.inst), "updated"))
        finally:
            self._flush()
        return mkt.inst

    def delist(self, name: str) -> list[SimOrder]:
        """Deactivate an instrument and cancel every order resting on it; returns them. Positions stay."""
        self._t = self._now()
        mkt = self._market(name)
        if not mkt.inst.is_active:
            return []
        cancelled: list[SimOrder] = []
        try:
            mkt.inst.is_active = False
            self._catalog_version += 1
            for side in (mkt.bids, mkt.asks):
                for order in [o for level in side.values() for o in level.orders]:
                    self._book_remove(mkt, order)
                    self._close(order, "cancelled")
                    cancelled.append(order)
            if self._listeners:
                self._queue.append(InstrumentChanged(replace(mkt.inst), "delisted"))
        finally:
            self._flush()
        return cancelled

    # ----------------------------------------------------------------- prices

    def set_index_price(self, price_index: str, price: Decimal) -> None:
        """Move an index; marks of every instrument on it follow."""
        self._t = self._now()
        _require_decimal(price, "price")
        if price <= 0:
            raise EngineError(ErrorCode.INVALID_PARAMS, "index price must be positive")
        try:
            self._index[price_index] = price
            self._price_version += 1
            if self._listeners:
                self._queue.append(IndexChanged(price_index, price, self._t))
                for name in self._by_index.get(price_index, ()):
                    self._dirty_tickers[name] = None
        finally:
            self._flush()

    def index_price(self, price_index: str) -> Decimal:
        """The index's price, 0 if it was never set."""
        return self._index.get(price_index, ZERO)

    def index_prices(self) -> dict[str, Decimal]:
        return dict(self._index)

    def mark_price(self, instrument_name: str) -> Decimal:
        self._t = self._now()
        return self._mark(self._market(instrument_name))

    def _mark(self, mkt: _Market) -> Decimal:
        key = (self._price_version, self._t // MARK_REFRESH_MS)
        if mkt.mark_key != key:
            mkt.mark = self._compute_mark(mkt.inst)
            mkt.mark_key = key
        return mkt.mark

    def _years_to_expiry(self, inst: Instrument) -> float:
        if inst.expiry_ms is None:
            return 0.0
        return max(inst.expiry_ms - self._t, 0) / YEAR_MS

    def _compute_mark(self, inst: Instrument) -> Decimal:
        index = self._index.get(inst.price_index, ZERO)
        if inst.kind is InstrumentKind.PERPETUAL or index <= 0:
            return index
        if inst.kind is InstrumentKind.FUTURE:
            remaining = Decimal(max((inst.expiry_ms or 0) - self._t, 0))
            return (index * (ONE + FUTURES_BASIS_PER_YEAR * remaining / YEAR_MS)).quantize(_EIGHT_PLACES)
        return _dec8(self._option_model(inst, index)["price"])

    def _option_model(self, inst: Instrument, forward: Decimal, vol: float = OPTION_VOL) -> dict[str, float]:
        return black76(float(forward), float(inst.strike or 0), self._years_to_expiry(inst), vol,
                       inst.option_type == "call")

    # ----------------------------------------------------------------- accounts

    def _account(self, address: str) -> _Account:
        acct = self._accounts.get(address.lower())
        if acct is None:
            raise EngineError(ErrorCode.UNAUTHORIZED, f"unknown account {address}")
        return acct

    def account_exists(self, address: str) -> bool:
        return address.lower() in self._accounts

    def open_account(self, address: str, collateral: Mapping[str, Decimal] | None = None) -> bool:
        """Open an account with initial deposits; a no-op (False) if it exists. Addresses are case-insensitive."""
        self._t = self._now()
        if address.lower() in self._accounts:
            return False
        for currency, amount in (collateral or {}).items():
            self._check_deposit(currency, amount)
        self._accounts[address.lower()] = _Account(address, self._history_limit)
        for currency, amount in (collateral or {}).items():
            self._record_deposit(self._accounts[address.lower()], currency, amount)
        return True

    def _check_deposit(self, currency: str, amount: Decimal) -> None:
        if currency not in COLLATERALS:
            raise EngineError(ErrorCode.INVALID_PARAMS, f"unsupported collateral {currency!r}")
        if _require_decimal(amount, "amount") <= 0:
            raise EngineError(ErrorCode.INVALID_PARAMS, "deposit amount must be positive")

    def _record_deposit(self, acct: _Account, currency: str, amount: Decimal) -> dict[str, Any]:
        acct.collateral[currency] = acct.collateral.get(currency, ZERO) + amount
        record = {
            "amount": _fmt(amount), "asset_address": COLLATERALS[currency]["l3_address"], "asset_name": currency,
            "is_pending": False, "timestamp": self._t // 1000, "tx_hash": f"0x{self._rng.getrandbits(256):064x}",
            "user": acct.address,
        }
        acct.deposits.setdefault(currency, []).append(record)
        return record

    def deposit(self, address: str, currency: str, amount: Decimal) -> dict[str, Any]:
        """Credit collateral and record the deposit; returns the private/get_deposits record."""
        self._t = self._now()
        acct = self._account(address)
        self._check_deposit(currency, amount)
        return self._record_deposit(acct, currency, amount)

    def deposits(self, address: str) -> dict[str, list[dict[str, Any]]]:
        """private/get_deposits: records by asset, oldest first."""
        return {currency: list(records) for currency, records in self._account(address).deposits.items()}

    def set_cancel_on_disconnect(self, address: str, enabled: bool) -> None:
        """Only reported by account_summary: the server does the cancelling."""
        self._account(address).cancel_on_disconnect = enabled

    def toggle_portfolio_margin(self, address: str) -> bool:
        """Flip the account's margin mode; returns the new state."""
        acct = self._account(address)
        acct.is_pm = not acct.is_pm
        acct.risk_key = None
        return acct.is_pm

    def leverage(self, address: str, instrument_name: str) -> Decimal:
        return self._leverage(self._account(address), self._market(instrument_name).inst)

    def _leverage(self, acct: _Account, inst: Instrument) -> Decimal:
        chosen = acct.leverage.get(inst.name)
        return chosen if chosen is not None else min(inst.max_leverage, DEFAULT_LEVERAGE_CAP)

    def set_leverage(self, address: str, instrument_name: str, leverage: Decimal | int) -> Decimal:
        """private/update_instrument_leverage: a whole number from 1 to max_leverage (LEVERAGE_TOO_HIGH above)."""
        self._t = self._now()
        acct = self._account(address)
        inst = self._market(instrument_name).inst
        value = Decimal(leverage) if isinstance(leverage, int) else _require_decimal(leverage, "leverage")
        if value < 1 or value != value.to_integral_value():
            raise EngineError(ErrorCode.INVALID_PARAMS, "leverage must be a whole number of at least 1")
        if value > inst.max_leverage:
            raise EngineError(ErrorCode.LEVERAGE_TOO_HIGH, f"{value} > {inst.max_leverage}")
        previous = acct.leverage.get(inst.name)
        lowered = value < self._leverage(acct, inst)
        acct.leverage[inst.name] = value
        acct.risk_key = None
        self._reprice_orders_im(acct, inst.name)
        if lowered and self._available(acct) < 0:
            if previous is None:
                del acct.leverage[inst.name]
            else:
                acct.leverage[inst.name] = previous
            acct.risk_key = None
            self._reprice_orders_im(acct, inst.name)
            raise EngineError(ErrorCode.NOT_ENOUGH_FUNDS, "not enough funds for the margin at that leverage")
        return value

    def _reprice_orders_im(self, acct: _Account, name: str) -> None:
        for order in acct.open_by_instrument.get(name, {}).values():
            im = self._order_im(acct, order)
            acct.orders_im += im - order.im
            order.im = im

    # ----------------------------------------------------------------- risk

    def _risk_key(self) -> tuple[int, int]:
        return self._price_version, self._t // MARK_REFRESH_MS

    def _contribution(self, acct: _Account, mkt: _Market, pos: Position) -> tuple[Decimal, Decimal]:
        """(initial margin, unrealised PnL) of one position."""
        if not pos.size:
            return ZERO, ZERO
        mark = self._mark(mkt)
        return abs(pos.size) * mark / self._leverage(acct, mkt.inst), self._unrealized(pos, mark)

    @staticmethod
    def _unrealized(pos: Position, mark: Decimal) -> Decimal:
        """(mark - average price) * size, computed from the cost basis so that it is exact."""
        if pos.size > 0:
            return mark * pos.size - pos.cost_basis
        if pos.size < 0:
            return pos.cost_basis + mark * pos.size
        return ZERO

    def _risk(self, acct: _Account) -> tuple[Decimal, Decimal]:
        """(positions' initial margin, unrealised PnL), cached per price version and minute."""
        key = self._risk_key()
        if acct.risk_key != key:
            pos_im = upnl = ZERO
            for name, pos in acct.positions.items():
                if pos.size:
                    im, pnl = self._contribution(acct, self._markets[name], pos)
                    pos_im += im
                    upnl += pnl
            if acct.is_pm:
                pos_im = self._pm_initial_margin(acct)
            acct.pos_im, acct.upnl, acct.risk_key = pos_im, upnl, key
        return acct.pos_im, acct.upnl

    def _collateral_usd(self, acct: _Account) -> Decimal:
        return sum((amount * self._index.get(f"{currency}USD", ONE) for currency, amount in acct.collateral.items()),
                   ZERO)

    def _available(self, acct: _Account) -> Decimal:
        pos_im, upnl = self._risk(acct)
        return self._collateral_usd(acct) + acct.realized_pnl + upnl - pos_im - acct.orders_im

    def _order_im(self, acct: _Account, order: SimOrder) -> Decimal:
        if order.reduce_only or order.order_state != "open" or not order.unfilled_amount:
            return ZERO
        return order.unfilled_amount * order.price / self._leverage(acct, self._markets[order.instrument_name].inst)

    # ----------------------------------------------------------------- the book

    def _top(self, mkt: _Market) -> tuple[Decimal | None, ...]:
        bid = mkt.bids.peekitem(0) if mkt.bids else None
        ask = mkt.asks.peekitem(0) if mkt.asks else None
        return (bid[0] if bid else None, bid[1].total if bid else None,
                ask[0] if ask else None, ask[1].total if ask else None)

    def _touch(self, mkt: _Market, is_bid: bool, price: Decimal, total: Decimal) -> None:
        touched = mkt.touched
        if touched is None:
            touched = mkt.touched = {}
            mkt.top_before = self._top(mkt)
            self._dirty_markets.append(mkt)
        key = (is_bid, price)
        if key not in touched:
            touched[key] = total

    def _book_add(self, mkt: _Market, order: SimOrder) -> None:
        is_bid = order.direction == "buy"
        side = mkt.bids if is_bid else mkt.asks
        level = side.get(order.price)
        if level is None:
            self._touch(mkt, is_bid, order.price, ZERO)
            level = side[order.price] = _Level()
        else:
            self._touch(mkt, is_bid, order.price, level.total)
        level.orders.append(order)
        level.total += order.unfilled_amount
        self._watch_expiry(order)

    def _watch_expiry(self, order: SimOrder) -> None:
        """Have expire_orders look at a resting order when its expiration comes (it checks it is still due)."""
        if order.expiration:
            self._expiry_seq += 1
            heapq.heappush(self._expiries, (order.expiration, self._expiry_seq,
                                            order.creator.lower(), order.order_id))

    def expire_orders(self) -> list[SimOrder]:
        """Cancel the resting orders whose signed expiration has passed; return them.

        The document: `expiration` is the "time in milliseconds after which trade will expire if not
        executed", and its order states are open, filled and cancelled, so an expired order is reported
        cancelled. The simulator runs this every 100 ms.
        """
        t = self._now()
        if not self._expiries or self._expiries[0][0] > t:
            return []
        self._t = t
        expired: list[SimOrder] = []
        try:
            while self._expiries and self._expiries[0][0] <= t:
                _, _, account, order_id = heapq.heappop(self._expiries)
                acct = self._accounts.get(account)
                order = acct.open_orders.get(order_id) if acct is not None else None
                if order is None or not _expired(order.expiration, t):  # closed since, or its expiry moved
                    continue
                self._book_remove(self._markets[order.instrument_name], order)
                self._close(order, "cancelled")
                expired.append(order)
        finally:
            self._flush()
        if len(self._expiries) > 1024 and len(self._expiries) > 4 * sum(len(a.open_orders) for a in
                                                                          self._accounts.values()):
            self._expiries = [entry for entry in self._expiries  # entries of orders closed since: dropped
                              if entry[3] in self._accounts[entry[2]].open_orders]
            heapq.heapify(self._expiries)
        return expired

    def _book_remove(self, mkt: _Market, order: SimOrder) -> None:
        is_bid = order.direction == "buy"
        side = mkt.bids if is_bid else mkt.asks
        level = side[order.price]
        self._touch(mkt, is_bid, order.price, level.total)
        level.orders.remove(order)
        level.total -= order.unfilled_amount
        if not level.orders:
            del side[order.price]

    def _open(self, acct: _Account, order: SimOrder) -> None:
        """Register a resting order with its account and reserve its margin."""
        acct.open_orders[order.order_id] = order
        acct.open_by_instrument.setdefault(order.instrument_name, {})[order.order_id] = order
        order.im = self._order_im(acct, order)
        acct.orders_im += order.im

    def _close(self, order: SimOrder, state: OrderState) -> None:
        """Move an order to its final state and to its account's history (off the book already)."""
        acct = self._accounts[order.creator.lower()]
        order.order_state = state
        order.last_update_timestamp = self._t
        if acct.open_orders.pop(order.order_id, None) is not None:
            by_instrument = acct.open_by_instrument[order.instrument_name]
            del by_instrument[order.order_id]
            if not by_instrument:
                del acct.open_by_instrument[order.instrument_name]
            acct.orders_im -= order.im
            order.im = ZERO
        acct.closed[order.order_id] = order
        if len(acct.closed) > self._history_limit:
            acct.closed.popitem(last=False)
        self._dirty_orders[order.order_id] = order

    # ----------------------------------------------------------------- orders

    def _new_id(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def _check_terms(self, inst: Instrument, amount: Decimal, price: Decimal | None) -> None:
        if price is not None:
            if _require_decimal(price, "price") <= 0:
                raise EngineError(ErrorCode.INVALID_PARAMS, "price must be positive")
            if price % inst.tick_size:
                raise EngineError(ErrorCode.PRICE_NOT_ON_TICK, f"{price} is not a multiple of {inst.tick_size}")
        if _require_decimal(amount, "amount") <= 0:
            raise EngineError(ErrorCode.INVALID_PARAMS, "amount must be positive")
        if amount % inst.contract_size:
            raise EngineError(ErrorCode.AMOUNT_NOT_ON_INCREMENT, f"{amount} is not a multiple of {inst.contract_size}")
        if amount < inst.min_trade_amount:
            raise EngineError(ErrorCode.AMOUNT_TOO_SMALL, f"{amount} < {inst.min_trade_amount}")

    @staticmethod
    def _crosses(mkt: _Market, is_buy: bool, price: Decimal) -> bool:
        if is_buy:
            return bool(mkt.asks) and mkt.asks.peekitem(0)[0] <= price
        return bool(mkt.bids) and mkt.bids.peekitem(0)[0] >= price

    def _position_size(self, acct: _Account, name: str) -> Decimal:
        pos = acct.positions.get(name)
        return pos.size if pos is not None else ZERO

    def _check_reduce_only(self, acct: _Account, name: str, is_buy: bool, amount: Decimal) -> None:
        size = self._position_size(acct, name)
        if not size or (size > 0) == is_buy:
            raise EngineError(ErrorCode.REDUCE_ONLY_WOULD_INCREASE, "the order would increase the position")
        if amount > abs(size):
            raise EngineError(ErrorCode.REDUCE_ONLY_WOULD_INCREASE, "the order would flip the position")

    def _reduce_allowance(self, order: SimOrder) -> Decimal:
        size = self._position_size(self._accounts[order.creator.lower()], order.instrument_name)
        if order.direction == "buy":
            return -size if size < 0 else ZERO
        return size if size > 0 else ZERO

    def _check_funds(self, acct: _Account, needed: Decimal) -> None:
        if needed > 0 and needed > self._available(acct):
            raise EngineError(ErrorCode.NOT_ENOUGH_FUNDS, f"needs {_fmt(needed)} of initial margin")

    def place(
        self,
        account: str,
        instrument_name: str,
        *,
        side: Side,
        order_type: OrderType,
        amount: Decimal,
        price: Decimal | None = None,
        time_in_force: TimeInForce = "GTC",
        post_only: bool = False,
        reduce_only: bool = False,
        label: str = "",
        salt: str = "",
        expiration_ms: int = 0,
        signature: str = "",
        order_signer: str = "",
        is_liquidation: bool = False,
    ) -> Placement:
        """private/buy and private/sell: validate, match, rest what a GTC limit order has left."""
        t = self._t = self._now()
        acct = self._account(account)
        mkt = self._market(instrument_name)
        inst = mkt.inst
        if not inst.is_active:
            raise EngineError(ErrorCode.INSTRUMENT_INACTIVE, instrument_name)
        if side not in _SIDES:
            raise EngineError(ErrorCode.INVALID_PARAMS, f"side must be buy or sell: {side!r}")
        if order_type not in _ORDER_TYPES:
            raise EngineError(ErrorCode.INVALID_PARAMS, f"order type must be limit or market: {order_type!r}")
        if time_in_force not in _TIME_IN_FORCE:
            raise EngineError(ErrorCode.INVALID_PARAMS, f"time in force must be GTC, IOC or FOK: {time_in_force!r}")
        is_limit = order_type == "limit"
        if is_limit and price is None:
            raise EngineError(ErrorCode.INVALID_PARAMS, "a limit order needs a price")
        if not is_limit and post_only:
            raise EngineError(ErrorCode.INVALID_PARAMS, "a market order cannot be post-only")
        self._check_terms(inst, amount, price if is_limit else None)
        if _expired(expiration_ms, t):
            raise EngineError(ErrorCode.ORDER_EXPIRED, f"expired at {expiration_ms}")
        is_buy = side == "buy"
        limit_price = price if is_limit and price is not None else ZERO
        # The document: a post-only order "will be first put in order book before execution or will be
        # cancelled": one that would take is placed and closed as cancelled, not refused with an error.
        would_take = post_only and self._crosses(mkt, is_buy, limit_price)
        if reduce_only:
            self._check_reduce_only(acct, inst.name, is_buy, amount)
        opposite = mkt.asks if is_buy else mkt.bids
        if not is_limit and not opposite:
            raise EngineError(ErrorCode.NO_LIQUIDITY, f"no {'asks' if is_buy else 'bids'} in {instrument_name}")
        if not reduce_only:
            reference = limit_price if is_limit else (self._mark(mkt) or opposite.peekitem(0)[0])
            self._check_funds(acct, amount * reference / self._leverage(acct, inst))

        self._order_seq += 1
        order = SimOrder(
            order_id=self._new_id(), instrument_name=inst.name, instrument_id=inst.id, direction=side,
            order_type=order_type, order_state="open", time_in_force=time_in_force, post_only=post_only,
            reduce_only=reduce_only, is_liquidation=is_liquidation, label=label, creator=acct.address,
            order_signer=order_signer, price=limit_price, average_price=ZERO, amount=amount,
            original_amount=amount, filled_amount=ZERO, unfilled_amount=amount, contract_size=inst.contract_size,
            creation_timestamp=t, last_update_timestamp=t, expiration=expiration_ms, salt=salt,
            signature=signature, seq=self._order_seq,
        )
        try:
            self._dirty_orders[order.order_id] = order
            if would_take or (time_in_force == "FOK"
                               and not self._can_fill(mkt, is_buy, price if is_limit else None, amount)):
                self._close(order, "cancelled")
            else:
                self._match(mkt, order)
                self._settle_incoming(acct, mkt, order)
        finally:
            self._flush()
        return Placement(order, list(order.trades))

    def _can_fill(self, mkt: _Market, is_buy: bool, limit: Decimal | None, amount: Decimal) -> bool:
        available = ZERO
        for price, level in (mkt.asks if is_buy else mkt.bids).items():
            if limit is not None and (price > limit if is_buy else price < limit):
                break
            available += level.total
            if available >= amount:
                return True
        return False

    def _settle_incoming(self, acct: _Account, mkt: _Market, order: SimOrder) -> None:
        """After matching: rest a GTC limit order's remainder, or close the order."""
        if not order.unfilled_amount:
            self._close(order, "filled")
        elif (order.order_type == "limit" and order.time_in_force == "GTC"
              and (not order.reduce_only or self._reduce_allowance(order) > 0)):
            self._book_add(mkt, order)
            self._open(acct, order)
        else:
            self._close(order, "cancelled")

    def _match(self, mkt: _Market, order: SimOrder) -> None:
        """Fill `order` against the opposite side while it crosses; price-time priority."""
        is_buy = order.direction == "buy"
        opposite = mkt.asks if is_buy else mkt.bids
        limit = order.price if order.order_type == "limit" else None
        stop = False
        while order.unfilled_amount and opposite and not stop:
            best, level = opposite.peekitem(0)
            if limit is not None and (best > limit if is_buy else best < limit):
                break
            self._touch(mkt, not is_buy, best, level.total)
            queue = level.orders
            while queue and order.unfilled_amount:
                maker = queue[0]
                qty = min(maker.unfilled_amount, order.unfilled_amount)
                if maker.reduce_only:
                    allowed = self._reduce_allowance(maker)
                    if allowed <= 0:
                        queue.popleft()
                        level.total -= maker.unfilled_amount
                        self._close(maker, "cancelled")
                        continue
                    qty = min(qty, allowed)
                if order.reduce_only:
                    allowed = self._reduce_allowance(order)
                    if allowed <= 0:
                        stop = True
                        break
                    qty = min(qty, allowed)
                self._fill(mkt, order, maker, best, qty)
                level.total -= qty
                if not maker.unfilled_amount:
                    queue.popleft()
                    self._close(maker, "filled")
            if not queue:
                del opposite[best]

    def _fill(self, mkt: _Market, taker: SimOrder, maker: SimOrder, price: Decimal, qty: Decimal) -> None:
        t = self._t
        inst = mkt.inst
        notional = price * qty
        maker_fee = notional * inst.maker_commission
        taker_fee = notional * inst.taker_commission
        mkt.trade_seq += 1
        maker_acct = self._accounts[maker.creator.lower()]
        taker_acct = self._accounts[taker.creator.lower()]
        trade = SimTrade(
            trade_id=self._new_id(), trade_sequence=mkt.trade_seq, instrument_name=inst.name,
            instrument_id=inst.id, contract_size=inst.contract_size, price=price, amount=qty, side=taker.direction,
            maker=maker_acct.address, taker=taker_acct.address, maker_order=maker, taker_order=taker,
            maker_fee=maker_fee, taker_fee=taker_fee, timestamp_ms=t,
        )
        for order in (maker, taker):
            order.filled_amount += qty
            order.unfilled_amount -= qty
            order.filled_notional += notional
            order.average_price = order.filled_notional / order.filled_amount
            order.last_update_timestamp = t
            order.trades.append(trade)
            self._dirty_orders[order.order_id] = order
        if maker.im:
            im = self._order_im(maker_acct, maker)
            maker_acct.orders_im += im - maker.im
            maker.im = im
        self._apply(maker_acct, mkt, qty if maker.direction == "buy" else -qty, price, maker_fee)
        self._apply(taker_acct, mkt, qty if taker.direction == "buy" else -qty, price, taker_fee)
        maker_acct.trades.append(trade)
        if taker_acct is not maker_acct:
            taker_acct.trades.append(trade)
        self._record_trade(mkt, trade)
        if self._listeners:
            self._queue.append(PublicTrade(inst.name, trade.trade_id, price, qty, taker.direction, t))
            wire = trade.fill_wire()
            self._queue.append(UserFill(maker_acct.address, wire))
            if taker_acct is not maker_acct:
                self._queue.append(UserFill(taker_acct.address, dict(wire)))

    def _apply(self, acct: _Account, mkt: _Market, delta: Decimal, price: Decimal, fee: Decimal) -> None:
        """Book a fill into a position: average price on increases, realised PnL on reductions, minus the fee."""
        inst = mkt.inst
        pos = acct.positions.get(inst.name)
        if pos is None:
            pos = acct.positions[inst.name] = Position(instrument_name=inst.name, instrument_id=inst.id, kind=inst.kind)
        incremental = acct.risk_key == self._risk_key() and not acct.is_pm
        if incremental:
            im_before, upnl_before = self._contribution(acct, mkt, pos)
        old = pos.size
        new = old + delta
        if not old or (old > 0) == (delta > 0):
            pos.cost_basis += price * abs(delta)
        else:
            closed = min(abs(delta), abs(old))
            released = pos.cost_basis if closed == abs(old) else pos.cost_basis * closed / abs(old)
            pnl = price * closed - released if old > 0 else released - price * closed
            pos.realized_pnl += pnl
            acct.realized_pnl += pnl
            pos.cost_basis = price * (abs(delta) - abs(old)) if abs(delta) > abs(old) else pos.cost_basis - released
        pos.average_price = pos.cost_basis / abs(new) if new else ZERO
        pos.size = new
        pos.trade_fee += fee
        pos.realized_pnl -= fee
        acct.realized_pnl -= fee
        pos.last_update_timestamp = self._t
        mkt.open_interest += max(new, ZERO) - max(old, ZERO)
        if incremental:
            im_after, upnl_after = self._contribution(acct, mkt, pos)
            acct.pos_im += im_after - im_before
            acct.upnl += upnl_after - upnl_before
        else:
            acct.risk_key = None
        self._dirty_positions[(acct.address, inst.name)] = (acct, pos)

    def _record_trade(self, mkt: _Market, trade: SimTrade) -> None:
        mkt.trades.append(trade)
        mkt.last_price = trade.price
        minute = trade.timestamp_ms - trade.timestamp_ms % MINUTE_MS
        bucket = mkt.buckets.get(minute)
        if bucket is None:
            bucket = mkt.buckets[minute] = _Bucket(trade.price, trade.timestamp_ms)
            cutoff = minute - CANDLE_RETENTION_MS
            while mkt.buckets and mkt.buckets.peekitem(0)[0] < cutoff:
                mkt.buckets.popitem(0)
        bucket.high = max(bucket.high, trade.price)
        bucket.low = min(bucket.low, trade.price)
        bucket.close = trade.price
        bucket.volume += trade.amount
        bucket.notional += trade.amount * trade.price
        bucket.last_ms = trade.timestamp_ms
        self._dirty_tickers[mkt.inst.name] = None

    def _open_order(self, acct: _Account, order_id: str) -> SimOrder:
        order = acct.open_orders.get(order_id)
        if order is None:
            raise EngineError(ErrorCode.ORDER_NOT_FOUND, order_id)
        return order

    def edit(
        self,
        account: str,
        order_id: str,
        *,
        amount: Decimal,
        price: Decimal,
        signature: str | None = None,
        salt: str | None = None,
        expiration_ms: int | None = None,
    ) -> Placement:
        """private/edit: new total amount and price for a resting order.

        The order keeps its place in the queue only when the price is unchanged
        and the amount does not grow; otherwise it goes to the back of its (new)
        level, and a new price that crosses matches at once.
        """
        t = self._t = self._now()
        acct = self._account(account)
        order = self._open_order(acct, order_id)
        mkt = self._markets[order.instrument_name]
        inst = mkt.inst
        if not inst.is_active:
            raise EngineError(ErrorCode.INSTRUMENT_INACTIVE, inst.name)
        self._check_terms(inst, amount, price)
        if amount <= order.filled_amount:
            raise EngineError(ErrorCode.INVALID_PARAMS, f"amount must exceed the filled {order.filled_amount}")
        if expiration_ms is not None and _expired(expiration_ms, t):
            raise EngineError(ErrorCode.ORDER_EXPIRED, f"expired at {expiration_ms}")
        is_buy = order.direction == "buy"
        unfilled = amount - order.filled_amount
        if order.post_only and self._crosses(mkt, is_buy, price):
            raise EngineError(ErrorCode.POST_ONLY_WOULD_TAKE, f"{price} would cross the book")
        if order.reduce_only:
            self._check_reduce_only(acct, inst.name, is_buy, unfilled)
        else:
            self._check_funds(acct, unfilled * price / self._leverage(acct, inst) - order.im)
        before = len(order.trades)
        try:
            order.last_update_timestamp = t
            if signature is not None:
                order.signature = signature
            if salt is not None:
                order.salt = salt
            if expiration_ms is not None and expiration_ms != order.expiration:
                order.expiration = expiration_ms
                self._watch_expiry(order)  # if it stays where it rests, _book_add will not
            self._dirty_orders[order.order_id] = order
            if price == order.price and unfilled <= order.unfilled_amount:
                level = (mkt.bids if is_buy else mkt.asks)[order.price]
                self._touch(mkt, is_buy, order.price, level.total)
                level.total -= order.unfilled_amount - unfilled
                order.amount = amount
                order.unfilled_amount = unfilled
                self._reprice_order(acct, order)
            else:
                self._book_remove(mkt, order)
                acct.orders_im -= order.im
                order.im = ZERO
                order.price = price
                order.amount = amount
                order.unfilled_amount = unfilled
                self._match(mkt, order)
                if not order.unfilled_amount:
                    self._close(order, "filled")
                elif order.reduce_only and self._reduce_allowance(order) <= 0:
                    self._close(order, "cancelled")
                else:
                    self._book_add(mkt, order)
                    self._reprice_order(acct, order)
        finally:
            self._flush()
        return Placement(order, order.trades[before:])

    def _reprice_order(self, acct: _Account, order: SimOrder) -> None:
        im = self._order_im(acct, order)
        acct.orders_im += im - order.im
        order.im = im

    def cancel(self, account: str, order_id: str) -> SimOrder:
        """private/cancel (ORDER_NOT_FOUND unless the order is open and the account's)."""
        self._t = self._now()
        acct = self._account(account)
        order = self._open_order(acct, order_id)
        try:
            self._book_remove(self._markets[order.instrument_name], order)
            self._close(order, "cancelled")
        finally:
            self._flush()
        return order

    def cancel_all(
        self, account: str, instrument_name: str | None = None, kind: InstrumentKind | str | None = None
    ) -> list[SimOrder]:
        """private/cancel_all and cancel_all_by_instrument; returns the cancelled orders (one BookChanged each book)."""
        self._t = self._now()
        acct = self._account(account)
        if instrument_name is not None:
            self._market(instrument_name)
            candidates = list(acct.open_by_instrument.get(instrument_name, {}).values())
        else:
            candidates = list(acct.open_orders.values())
        wanted = _kinds(kind)
        if wanted is not _ALL_KINDS:
            candidates = [o for o in candidates if self._markets[o.instrument_name].inst.kind in wanted]
        try:
            for order in candidates:
                self._book_remove(self._markets[order.instrument_name], order)
                self._close(order, "cancelled")
        finally:
            self._flush()
        return candidates

    # ----------------------------------------------------------------- reads: market data

    def book(self, instrument_name: str, depth: int | None = None) -> BookView:
        """Aggregated levels, best first; `depth` levels a side (all when None)."""
        mkt = self._market(instrument_name)
        if depth is not None and depth < 0:
            raise EngineError(ErrorCode.INVALID_PARAMS, "depth must not be negative")
        return BookView(
            instrument_name,
            [(price, level.total) for price, level in islice(mkt.bids.items(), depth)],
            [(price, level.total) for price, level in islice(mkt.asks.items(), depth)],
            mkt.change_id,
            mkt.book_ts,
        )

    def book_levels_count(self, instrument_name: str) -> int:
        """Number of price levels, both sides."""
        mkt = self._market(instrument_name)
        return len(mkt.bids) + len(mkt.asks)

    def _stats(self, mkt: _Market) -> dict[str, Decimal]:
        start = self._t - DAY_MS
        buckets = [b for _, b in mkt.buckets.items()[mkt.buckets.bisect_left(start - start % MINUTE_MS):]]
        if not buckets:
            return {"high": ZERO, "low": ZERO, "change": ZERO, "volume": ZERO, "volume_usd": ZERO}
        return {
            "high": max(b.high for b in buckets),
            "low": min(b.low for b in buckets),
            "change": buckets[-1].close - buckets[0].open,
            "volume": sum((b.volume for b in buckets), ZERO),
            "volume_usd": sum((b.notional for b in buckets), ZERO),
        }

    def ticker(self, instrument_name: str) -> dict[str, Any]:
        """public/ticker, with the ticker channel's extra fields (and greeks for options)."""
        t = self._t = self._now()
        mkt = self._market(instrument_name)
        inst = mkt.inst
        mark = self._mark(mkt)
        index = self._index.get(inst.price_index, ZERO)
        bid_price, bid_amount, ask_price, ask_amount = self._top(mkt)
        stats = self._stats(mkt)
        funding = ZERO
        if inst.kind is InstrumentKind.PERPETUAL and index > 0 and bid_price is not None and ask_price is not None:
            premium = ((bid_price + ask_price) / 2 - index) / index
            funding = max(-FUNDING_CAP, min(FUNDING_CAP, premium)).quantize(_EIGHT_PLACES)
        wire: dict[str, Any] = {
            "best_ask_amount": _fmt(ask_amount or ZERO),
            "best_ask_price": _fmt(ask_price or ZERO),
            "best_bid_amount": _fmt(bid_amount or ZERO),
            "best_bid_price": _fmt(bid_price or ZERO),
            "contract_size": _fmt(inst.contract_size),
            "funding_8h": _fmt(funding),
            "funding_rate": _fmt(funding),
            "index_price": _fmt(index),
            "instrument_name": inst.name,
            "interest_value": "0",
            "last_price": _fmt(mkt.last_price or ZERO),
            "mark_price": _fmt(mark),
            "max_price": _fmt(mark * (ONE + PRICE_BAND)),
            "min_price": _fmt(mark * (ONE - PRICE_BAND)),
            "open_interest": _fmt(mkt.open_interest),
            "stats": {
                "change_24h": _fmt(stats["change"]),
                "max_24h": _fmt(stats["high"]),
                "min_24h": _fmt(stats["low"]),
                "volume_24h": _fmt(stats["volume"]),
                "high": _fmt(stats["high"]),
                "low": _fmt(stats["low"]),
                "price_change": _fmt(stats["change"]),
                "volume": _fmt(stats["volume"]),
                "volume_usd": _fmt(stats["volume_usd"]),
            },
            "timestamp": str(t),
        }
        if inst.kind is InstrumentKind.OPTION:
            wire.update(self._option_fields(inst, index, bid_price, ask_price))
        return wire

    def _option_fields(self, inst: Instrument, index: Decimal, bid: Decimal | None,
                       ask: Decimal | None) -> dict[str, Any]:
        model = self._option_model(inst, index)
        years = self._years_to_expiry(inst)
        is_call = inst.option_type == "call"
        fields: dict[str, Any] = {
            "strike": _fmt(inst.strike or ZERO), "is_call": is_call,
            "delta": _fmt(_dec8(model["delta"])), "gamma": _fmt(_dec8(model["gamma"])),
            "rho": _fmt(_dec8(model["rho"])), "sigma": _fmt(_dec8(OPTION_VOL)), "tau": _fmt(_dec8(years)),
            "theta": _fmt(_dec8(model["theta"])), "vega": _fmt(_dec8(model["vega"])),
        }
        for name, price in (("best_bid", bid), ("best_ask", ask)):
            if price is None or index <= 0:
                fields[f"{name}_iv"] = "0"
                fields[f"{name}_delta"] = "0"
                continue
            iv = _implied_vol(float(price), float(index), float(inst.strike or 0), years, is_call)
            fields[f"{name}_iv"] = _fmt(_dec8(iv))
            fields[f"{name}_delta"] = _fmt(_dec8(self._option_model(inst, index, iv)["delta"]))
        return fields

    def order_book(self, instrument_name: str, depth: int | None = None) -> dict[str, Any]:
        """public/get_order_book, plus the `change_id` the book channel continues from."""
        ticker = self.ticker(instrument_name)
        view = self.book(instrument_name, depth)
        stats = ticker["stats"]
        return {
            "asks": [[_fmt(p), _fmt(a)] for p, a in view.asks],
            "best_ask_amount": ticker["best_ask_amount"],
            "best_ask_price": ticker["best_ask_price"],
            "best_bid_amount": ticker["best_bid_amount"],
            "best_bid_price": ticker["best_bid_price"],
            "bids": [[_fmt(p), _fmt(a)] for p, a in view.bids],
            "change_id": view.change_id,
            "funding_rate": ticker["funding_rate"],
            "index_price": ticker["index_price"],
            "instrument_name": instrument_name,
            "last_price": ticker["last_price"],
            "mark_price": ticker["mark_price"],
            "max_price": ticker["max_price"],
            "min_price": ticker["min_price"],
            "open_interest": ticker["open_interest"],
            "stats": {"high": stats["high"], "low": stats["low"], "price_change": stats["price_change"],
                      "volume": stats["volume"]},
            "timestamp": ticker["timestamp"],
        }

    def public_trades(self, instrument_name: str, count: int = 20) -> list[dict[str, Any]]:
        """public/get_trades: the latest trades, newest first (the last 1,000 are kept)."""
        trades = self._market(instrument_name).trades
        return [trades[i].public_wire() for i in range(len(trades) - 1, max(len(trades) - count, 0) - 1, -1)]

    def candles(self, instrument_name: str, resolution: str, from_ms: int, to_ms: int) -> list[dict[str, Any]]:
        """public/get_tradingview_chart_data from executed trades.

        Bars between trades repeat the last close with volume 0 (as in the
        document's example); none before the first trade; at most 10,000 (the
        latest). Prices and volume stay Decimals: the document sends them as
        JSON numbers, which is the encoder's job.
        """
        mkt = self._market(instrument_name)
        minutes = RESOLUTIONS.get(resolution)
        if minutes is None:
            raise EngineError(ErrorCode.INVALID_PARAMS, f"resolution must be one of {', '.join(RESOLUTIONS)}")
        span = minutes * MINUTE_MS
        start, end = from_ms - from_ms % span, to_ms - to_ms % span
        if end < start:
            return []
        start = max(start, end - (MAX_CANDLES - 1) * span)
        buckets = mkt.buckets
        position = buckets.bisect_left(start)
        close: Decimal | None = buckets.peekitem(position - 1)[1].close if position > 0 else None
        out: list[dict[str, Any]] = []
        for bar in range(start, end + 1, span):
            inside = [buckets[key] for key in buckets.irange(bar, bar + span - 1)]
            if inside:
                close = inside[-1].close
                out.append({"LastUpdatedTime": inside[-1].last_ms, "close": close,
                            "high": max(b.high for b in inside), "low": min(b.low for b in inside),
                            "open": inside[0].open, "time": bar, "volume": sum((b.volume for b in inside), ZERO)})
            elif close is not None:
                out.append({"LastUpdatedTime": bar, "close": close, "high": close, "low": close, "open": close,
                            "time": bar, "volume": ZERO})
        return out

    @staticmethod
    def collaterals() -> dict[str, dict[str, Any]]:
        """public/get_supported_collaterals."""
        return {symbol: dict(entry) for symbol, entry in COLLATERALS.items()}

    # ----------------------------------------------------------------- reads: accounts

    def open_orders(self, account: str, instrument_name: str | None = None) -> list[SimOrder]:
        """Resting orders, in placement order (the server groups them by currency, kind and instrument)."""
        acct = self._account(account)
        if instrument_name is None:
            return list(acct.open_orders.values())
        return list(acct.open_by_instrument.get(instrument_name, {}).values())

    def order(self, account: str, order_id: str) -> SimOrder:
        """An open order, or a closed one still in the account's history (ORDER_NOT_FOUND otherwise)."""
        acct = self._account(account)
        order = acct.open_orders.get(order_id) or acct.closed.get(order_id)
        if order is None:
            raise EngineError(ErrorCode.ORDER_NOT_FOUND, order_id)
        return order

    def order_history(
        self,
        account: str,
        *,
        instrument_name: str | None = None,
        kind: InstrumentKind | str | None = None,
        count: int = 20,
        offset: int = 0,
        start_ms: int | None = None,
        end_ms: int | None = None,
    ) -> list[SimOrder]:
        """Open and closed orders, newest first (the latest `history_limit` closed ones are kept)."""
        acct = self._account(account)
        wanted = _kinds(kind)
        if instrument_name is not None:
            self._market(instrument_name)
        orders = [
            o for o in (*acct.open_orders.values(), *acct.closed.values())
            if (instrument_name is None or o.instrument_name == instrument_name)
            and self._markets[o.instrument_name].inst.kind in wanted
            and (start_ms is None or o.creation_timestamp >= start_ms)
            and (end_ms is None or o.creation_timestamp <= end_ms)
        ]
        orders.sort(key=lambda o: o.seq, reverse=True)
        return orders[max(offset, 0):max(offset, 0) + max(count, 0)]

    def user_trades(
        self,
        account: str,
        *,
        order_id: str | None = None,
        instrument_name: str | None = None,
        kind: InstrumentKind | str | None = None,
        sort_asc: bool = False,
        count: int | None = None,
        offset: int = 0,
        start_ms: int | None = None,
        end_ms: int | None = None,
        with_orders: bool = True,
    ) -> list[dict[str, Any]]:
        """private/get_user_trades_*: the account's trades (maker or taker), newest first unless `sort_asc`.

        `with_orders` adds the maker_order / taker_order objects (by_order and
        by_kind show them, by_instrument does not).
        """
        acct = self._account(account)
        wanted = _kinds(kind)
        if instrument_name is not None:
            self._market(instrument_name)
        trades = [
            tr for tr in acct.trades
            if (order_id is None or order_id in (tr.maker_order.order_id, tr.taker_order.order_id))
            and (instrument_name is None or tr.instrument_name == instrument_name)
            and self._markets[tr.instrument_name].inst.kind in wanted
            and (start_ms is None or tr.timestamp_ms >= start_ms)
            and (end_ms is None or tr.timestamp_ms <= end_ms)
        ]
        if not sort_asc:
            trades.reverse()
        offset = max(offset, 0)
        page = trades[offset:] if count is None else trades[offset:offset + max(count, 0)]
        return [trade.user_wire(with_orders=with_orders) for trade in page]

    def position(self, account: str, instrument_name: str) -> Position | None:
        """The account's position record in one instrument (None if it never traded it)."""
        return self._account(account).positions.get(instrument_name)

    def positions(self, account: str) -> list[dict[str, Any]]:
        """private/get_positions: every non-zero position."""
        self._t = self._now()
        acct = self._account(account)
        return [self._position_wire(acct, pos) for pos in acct.positions.values() if pos.size]

    def _position_delta(self, mkt: _Market, size: Decimal) -> Decimal:
        if mkt.inst.kind is not InstrumentKind.OPTION or not size:
            return size
        index = self._index.get(mkt.inst.price_index, ZERO)
        return (size * _dec8(self._option_model(mkt.inst, index)["delta"])).quantize(_EIGHT_PLACES)

    def _position_wire(self, acct: _Account, pos: Position) -> dict[str, Any]:
        mkt = self._markets[pos.instrument_name]
        inst = mkt.inst
        mark = self._mark(mkt)
        upnl = self._unrealized(pos, mark)
        im = abs(pos.size) * mark / self._leverage(acct, inst)
        return {
            "account": acct.address,
            "average_price": _fmt(pos.average_price),
            "cached_funding_index": "0",
            "direction": "sell" if pos.size < 0 else "buy",
            "index_price": _fmt(self._index.get(inst.price_index, ZERO)),
            "instrument_id": inst.id,
            "instrument_name": inst.name,
            "is_synced_onchain": False,
            "kind": inst.kind.value,
            "last_update_timestamp": str(pos.last_update_timestamp),
            "mark_price": _fmt(mark),
            "position_delta": _fmt(self._position_delta(mkt, pos.size)),
            "realized_funding": "0",
            "realized_pnl": _fmt(pos.realized_pnl),
            "settlement_price": "0",
            "size": _fmt(pos.size),
            "total_pnl": _fmt(pos.realized_pnl + upnl),
            "trade_fee": _fmt(pos.trade_fee),
            "unrealized_pnl": _fmt(upnl),
            # user.positions' extra fields
            "contract_size": _fmt(inst.contract_size),
            "size_in_base": _fmt(pos.size),
            "initial_margin": _fmt(im),
            "maintenance_margin": _fmt(im / 2),
        }

    def account_summary(self, account: str) -> dict[str, Any]:
        """private/get_account_summary."""
        t = self._t = self._now()
        acct = self._account(account)
        pos_im, upnl = self._risk(acct)
        collateral = self._collateral_usd(acct)
        equity = collateral + acct.realized_pnl + upnl
        initial = pos_im + acct.orders_im
        maintenance = pos_im / 2
        deltas: dict[str, Decimal] = {}
        for name, pos in acct.positions.items():
            if pos.size:
                mkt = self._markets[name]
                deltas[mkt.inst.price_index] = deltas.get(mkt.inst.price_index, ZERO) + self._position_delta(
                    mkt, pos.size)
        return {
            "available_balance": _fmt(equity - initial),
            "available_withdrawable_funds": _fmt(max(ZERO, min(equity, collateral + acct.realized_pnl) - initial)),
            "collateral": {currency: _fmt(amount) for currency, amount in acct.collateral.items()},
            "delta_total": {index: _fmt(delta) for index, delta in deltas.items()},
            "equity": _fmt(equity),
            "initial_margin": _fmt(initial),
            "initial_margin_utilization": _fmt(self._utilization(initial, equity)),
            "is_cancel_on_disconnect": acct.cancel_on_disconnect,
            "is_portfolio_margined": acct.is_pm,
            "maintenance_margin": _fmt(maintenance),
            "maintenance_margin_utilization": _fmt(self._utilization(maintenance, equity)),
            "open_orders_im": _fmt(acct.orders_im),
            "realized_pnl": _fmt(acct.realized_pnl),
            "status": "ACTIVE",
            "total_pnl": _fmt(acct.realized_pnl + upnl),
            "unrealized_pnl": _fmt(upnl),
            "updated_at": str(t),
        }

    @staticmethod
    def _utilization(margin: Decimal, equity: Decimal) -> Decimal:
        """Margin as a percentage of equity (100 when there is margin and no equity)."""
        if equity <= 0:
            return HUNDRED if margin > 0 else ZERO
        return (margin / equity * HUNDRED).quantize(_UTILIZATION_PLACES)

    # ----------------------------------------------------------------- portfolio margin

    def portfolio_margin(self, account: str, currency: str) -> dict[str, Any]:
        """private/get_portfolio_margin_data for one base currency (e.g. "ETH"); losses are positive."""
        self._t = self._now()
        acct = self._account(account)
        futures, options, futures_cont, options_cont = self._scenarios(acct, currency)
        return {
            "future_loss_array": [_fmt(v) for v in futures],
            "futures_contingency": _fmt(futures_cont),
            "options_contingency": _fmt(options_cont),
            "options_loss_array": [_fmt(v) for v in options],
            "total_loss_array": [_fmt(f + o) for f, o in zip(futures, options, strict=True)],
        }

    def _scenarios(self, acct: _Account, currency: str) -> tuple[list[Decimal], list[Decimal], Decimal, Decimal]:
        futures = [ZERO] * len(SCENARIO_MOVES)
        options = [ZERO] * len(SCENARIO_MOVES)
        futures_cont = options_cont = ZERO
        for name, pos in acct.positions.items():
            mkt = self._markets[name]
            inst = mkt.inst
            if not pos.size or inst.base_currency != currency:
                continue
            mark = self._mark(mkt)
            index = self._index.get(inst.price_index, ZERO)
            if inst.kind is InstrumentKind.OPTION:
                options_cont += abs(pos.size) * index * OPTIONS_CONTINGENCY
                for i, move in enumerate(SCENARIO_MOVES):
                    shocked = _dec8(self._option_model(inst, index * (ONE + move))["price"])
                    options[i] -= (shocked - mark) * pos.size
            else:
                futures_cont += abs(pos.size) * mark * FUTURES_CONTINGENCY
                for i, move in enumerate(SCENARIO_MOVES):
                    futures[i] -= mark * move * pos.size
        return futures, options, futures_cont, options_cont

    def _pm_initial_margin(self, acct: _Account) -> Decimal:
        total = ZERO
        currencies = {self._markets[name].inst.base_currency for name, pos in acct.positions.items() if pos.size}
        for currency in sorted(currencies):
            futures, options, futures_cont, options_cont = self._scenarios(acct, currency)
            worst = max(f + o for f, o in zip(futures, options, strict=True))
            total += max(worst, ZERO) + futures_cont + options_cont
        return total
