"""The simulator's matching core: priority, order types, fees, PnL, margin, events, and the market maker."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from portico.sim.engine import (
    SCENARIO_MOVES,
    BookChanged,
    BookView,
    Engine,
    EngineError,
    Event,
    IndexChanged,
    InstrumentChanged,
    OrderUpdated,
    Placement,
    PositionChanged,
    PublicTrade,
    TickerChanged,
    UserFill,
)
from portico.sim.instruments import Instrument, default_catalog, expiry_ms
from portico.sim.market_maker import DEFAULT_ACCOUNTS, MarketMaker
from portico.sim.server import SimConfig, Simulator
from portico.venues.syndr.constants import ErrorCode, InstrumentKind

D = Decimal
TODAY = date(2026, 11, 21)
T0 = int(datetime(2026, 11, 21, 12, tzinfo=UTC).timestamp() * 1000)
PERP = "ETH-PERP"
FUTURE = "ETH-25DEC26"
OPTION = "ETH-25DEC26-3000-C"
A = "0xaaaa000000000000000000000000000000000001"
B = "0xbbbb000000000000000000000000000000000002"
C = "0xcccc000000000000000000000000000000000003"
M = "0xdddd000000000000000000000000000000000004"
FUNDS = D(1_000_000)


class Clock:
    def __init__(self) -> None:
        self.ms = T0

    def __call__(self) -> int:
        return self.ms


def make_engine(clock: Clock, seed: int = 7, **kwargs: Any) -> Engine:
    engine = Engine(default_catalog(today=TODAY), now_ms=clock, rng=random.Random(seed), **kwargs)
    for account in (A, B, C, M):
        engine.open_account(account, {"USDT": FUNDS})
    return engine


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def engine(clock: Clock) -> Engine:
    return make_engine(clock)


@pytest.fixture
def events(engine: Engine) -> list[Event]:
    captured: list[Event] = []
    engine.subscribe(captured.append)
    return captured


def limit(engine: Engine, account: str, side: str, amount: str, price: str, name: str = PERP,
          **kwargs: Any) -> Placement:
    return engine.place(account, name, side=side, order_type="limit", amount=D(amount), price=D(price),  # type: ignore[arg-type]
                        **kwargs)


def market(engine: Engine, account: str, side: str, amount: str, name: str = PERP, **kwargs: Any) -> Placement:
    return engine.place(account, name, side=side, order_type="market", amount=D(amount), **kwargs)  # type: ignore[arg-type]


def levels(engine: Engine, name: str = PERP) -> tuple[list[tuple[Decimal, Decimal]], list[tuple[Decimal, Decimal]]]:
    view = engine.book(name)
    return view.bids, view.asks


def of(events: list[Event], kind: type[Any]) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


def rejects(code: ErrorCode, action: Callable[[], object]) -> EngineError:
    with pytest.raises(EngineError) as caught:
        action()
    assert caught.value.code == code, caught.value
    return caught.value


# --------------------------------------------------------------------------- matching


def test_price_time_priority(engine: Engine) -> None:
    first = limit(engine, A, "sell", "1", "3001").order
    second = limit(engine, B, "sell", "1", "3001").order
    better = limit(engine, C, "sell", "0.5", "3000.5").order
    taken = limit(engine, M, "buy", "1.5", "3001")
    assert [(t.maker_order.order_id, t.price, t.amount) for t in taken.trades] == [
        (better.order_id, D("3000.5"), D("0.5")), (first.order_id, D(3001), D(1))]
    assert (first.order_state, second.order_state, better.order_state) == ("filled", "open", "filled")
    assert levels(engine) == ([], [(D(3001), D(1))])
    assert engine.open_orders(B)[0] is second


def test_partial_fill_leaves_the_rest_resting(engine: Engine) -> None:
    maker = limit(engine, A, "sell", "2", "3001").order
    taker = limit(engine, B, "buy", "0.5", "3001").order
    assert (taker.order_state, taker.filled_amount, taker.unfilled_amount) == ("filled", D("0.5"), D(0))
    assert (maker.order_state, maker.filled_amount, maker.unfilled_amount) == ("open", D("0.5"), D("1.5"))
    assert maker.average_price == D(3001) and len(maker.trades) == 1
    assert levels(engine) == ([], [(D(3001), D("1.5"))])


def _ladder(engine: Engine) -> None:
    limit(engine, A, "sell", "1", "3001")
    limit(engine, A, "sell", "1", "3002")
    limit(engine, B, "sell", "2", "3003")


def test_market_order_sweeps_levels(engine: Engine) -> None:
    _ladder(engine)
    placed = market(engine, C, "buy", "2.5")
    assert [(t.price, t.amount) for t in placed.trades] == [(D(3001), D(1)), (D(3002), D(1)), (D(3003), D("0.5"))]
    assert placed.order.order_state == "filled"
    assert placed.order.average_price == D("3001.8")
    assert placed.order.price == 0 and placed.order.to_wire()["price"] == "0"
    assert levels(engine) == ([], [(D(3003), D("1.5"))])


def test_market_order_beyond_liquidity_is_cancelled_after_filling_what_exists(engine: Engine) -> None:
    _ladder(engine)
    placed = market(engine, C, "buy", "10")
    assert (placed.order.order_state, placed.order.filled_amount, placed.order.unfilled_amount) == (
        "cancelled", D(4), D(6))
    assert levels(engine) == ([], [])
    assert engine.open_orders(C) == []


def test_ioc_fills_what_crosses_and_cancels_the_rest(engine: Engine) -> None:
    _ladder(engine)
    placed = limit(engine, C, "buy", "3", "3002", time_in_force="IOC")
    assert [t.amount for t in placed.trades] == [D(1), D(1)]
    assert (placed.order.order_state, placed.order.unfilled_amount) == ("cancelled", D(1))
    assert levels(engine) == ([], [(D(3003), D(2))])


def test_fok_fills_entirely_or_not_at_all(engine: Engine, events: list[Event]) -> None:
    _ladder(engine)
    events.clear()
    killed = limit(engine, C, "buy", "5", "3003", time_in_force="FOK")
    assert (killed.order.order_state, killed.trades) == ("cancelled", [])
    assert levels(engine)[1] == [(D(3001), D(1)), (D(3002), D(1)), (D(3003), D(2))]
    assert [type(e) for e in events] == [OrderUpdated]
    assert limit(engine, C, "buy", "3", "3002", time_in_force="FOK").order.order_state == "cancelled"
    filled = limit(engine, C, "buy", "4", "3003", time_in_force="FOK")
    assert filled.order.order_state == "filled" and sum(t.amount for t in filled.trades) == 4


def test_gtc_limit_rests_what_it_could_not_fill(engine: Engine) -> None:
    _ladder(engine)
    placed = limit(engine, C, "buy", "3", "3002")
    assert (placed.order.order_state, placed.order.filled_amount) == ("open", D(2))
    assert levels(engine) == ([(D(3002), D(1))], [(D(3003), D(2))])


def test_post_only_rests_or_is_cancelled(engine: Engine, events: list[Event]) -> None:
    """The document: a post-only order "will be first put in order book before execution or will be cancelled"."""
    limit(engine, A, "sell", "1", "3001")
    events.clear()
    for price in ("3001", "3005"):
        placed = limit(engine, B, "buy", "1", price, post_only=True)
        assert (placed.order.order_state, placed.order.filled_amount, placed.trades) == ("cancelled", D(0), [])
    assert levels(engine) == ([], [(D(3001), D(1))])  # nothing taken, nothing rested
    assert [o.order_state for o in engine.open_orders(B)] == []
    assert len(engine.order_history(B, count=10)) == 2  # both are the account's (cancelled) orders
    assert limit(engine, B, "buy", "1", "3000.9", post_only=True).order.order_state == "open"


def test_self_trade_is_allowed_and_booked_on_both_legs(engine: Engine, events: list[Event]) -> None:
    limit(engine, A, "sell", "1", "3001")
    events.clear()
    placed = limit(engine, A, "buy", "1", "3001")
    assert len(placed.trades) == 1
    position = engine.position(A, PERP)
    assert position is not None and position.size == 0
    fee = D(3001) * (D("-0.000025") + D("0.00025"))
    assert position.trade_fee == fee and position.realized_pnl == -fee
    assert len(of(events, UserFill)) == 1


# --------------------------------------------------------------------------- reduce-only


def test_reduce_only_cannot_open_increase_or_flip(engine: Engine) -> None:
    rejects(ErrorCode.REDUCE_ONLY_WOULD_INCREASE, lambda: limit(engine, A, "sell", "1", "3000", reduce_only=True))
    limit(engine, B, "sell", "1", "3000")
    market(engine, A, "buy", "1")
    rejects(ErrorCode.REDUCE_ONLY_WOULD_INCREASE, lambda: limit(engine, A, "buy", "1", "2900", reduce_only=True))
    rejects(ErrorCode.REDUCE_ONLY_WOULD_INCREASE, lambda: limit(engine, A, "sell", "2", "3100", reduce_only=True))
    resting = limit(engine, A, "sell", "0.5", "3100", reduce_only=True).order
    assert resting.order_state == "open" and engine.account_summary(A)["open_orders_im"] == "0"


def test_resting_reduce_only_is_clamped_then_cancelled_when_the_position_shrinks(engine: Engine) -> None:
    limit(engine, B, "sell", "1", "3000")
    market(engine, A, "buy", "1")
    reduce = limit(engine, A, "sell", "1", "3010", reduce_only=True).order
    limit(engine, C, "buy", "0.6", "2990")
    market(engine, A, "sell", "0.6")  # the position is now 0.4
    taken = limit(engine, C, "buy", "1", "3010")
    assert [(t.maker_order.order_id, t.amount) for t in taken.trades] == [(reduce.order_id, D("0.4"))]
    assert (reduce.order_state, reduce.filled_amount) == ("cancelled", D("0.4"))
    position = engine.position(A, PERP)
    assert position is not None and position.size == 0
    assert levels(engine) == ([(D(3010), D("0.6"))], [])


def test_reduce_only_taker_sweeps_down_to_flat(engine: Engine) -> None:
    limit(engine, B, "sell", "1", "3000")
    market(engine, A, "buy", "1")
    for price, amount in (("2999", "0.3"), ("2998", "0.3"), ("2997", "2")):
        limit(engine, C, "buy", amount, price)
    placed = market(engine, A, "sell", "1", reduce_only=True)
    assert [(t.price, t.amount) for t in placed.trades] == [(D(2999), D("0.3")), (D(2998), D("0.3")),
                                                              (D(2997), D("0.4"))]
    position = engine.position(A, PERP)
    assert position is not None and position.size == 0 and position.average_price == 0
    assert levels(engine)[0] == [(D(2997), D("1.6"))]


# --------------------------------------------------------------------------- cancel and edit


def test_cancel(engine: Engine, events: list[Event]) -> None:
    order = limit(engine, A, "buy", "1", "2990").order
    rejects(ErrorCode.ORDER_NOT_FOUND, lambda: engine.cancel(B, order.order_id))
    rejects(ErrorCode.ORDER_NOT_FOUND, lambda: engine.cancel(A, "no-such-order"))
    events.clear()
    cancelled = engine.cancel(A, order.order_id)
    assert cancelled is order and order.order_state == "cancelled"
    assert levels(engine) == ([], [])
    assert [type(e) for e in events] == [BookChanged, OrderUpdated, TickerChanged]
    assert of(events, BookChanged)[0].bids == ((D(2990), D(0)),)
    rejects(ErrorCode.ORDER_NOT_FOUND, lambda: engine.cancel(A, order.order_id))
    assert engine.order(A, order.order_id).order_state == "cancelled"


def test_cancel_all_by_instrument_kind_and_everything(engine: Engine, events: list[Event]) -> None:
    perp = limit(engine, A, "buy", "1", "2990").order
    limit(engine, A, "buy", "2", "2990")
    future = limit(engine, A, "buy", "1", "2990", name=FUTURE).order
    option = limit(engine, A, "buy", "1", "100", name=OPTION).order
    other = limit(engine, B, "buy", "1", "2990").order
    rejects(ErrorCode.INSTRUMENT_NOT_FOUND, lambda: engine.cancel_all(A, "NOPE-PERP"))
    rejects(ErrorCode.INVALID_PARAMS, lambda: engine.cancel_all(A, kind="spot-ish"))
    assert engine.cancel_all(A, kind="option") == [option]
    events.clear()
    cancelled = engine.cancel_all(A, PERP)
    assert cancelled[0].order_id == perp.order_id and len(cancelled) == 2
    assert len(of(events, BookChanged)) == 1 and of(events, BookChanged)[0].bids == ((D(2990), D(1)),)
    assert engine.cancel_all(A) == [future]
    assert engine.cancel_all(A) == []
    assert other.order_state == "open"


def test_edit_keeps_priority_only_when_shrinking_at_the_same_price(engine: Engine) -> None:
    first = limit(engine, A, "sell", "2", "3001").order
    second = limit(engine, B, "sell", "1", "3001").order
    shrunk = engine.edit(A, first.order_id, amount=D("1.5"), price=D(3001))
    assert shrunk.trades == [] and levels(engine)[1] == [(D(3001), D("2.5"))]
    assert market(engine, C, "buy", "1").trades[0].maker_order is first  # still first in the queue
    engine.edit(A, first.order_id, amount=D(3), price=D(3001))  # grows: goes to the back
    assert first.unfilled_amount == D(2) and first.amount == D(3) and first.original_amount == D(2)
    assert market(engine, C, "buy", "1").trades[0].maker_order is second


def test_edit_to_a_new_price_moves_to_the_back_and_may_match(engine: Engine) -> None:
    moving = limit(engine, A, "sell", "1", "3002").order
    waiting = limit(engine, B, "sell", "1", "3001").order
    engine.edit(A, moving.order_id, amount=D(1), price=D(3001))
    assert levels(engine)[1] == [(D(3001), D(2))]
    assert market(engine, C, "buy", "1").trades[0].maker_order is waiting
    limit(engine, C, "buy", "1", "2990")
    crossed = engine.edit(A, moving.order_id, amount=D(2), price=D(2990))
    assert [(t.price, t.amount) for t in crossed.trades] == [(D(2990), D(1))]
    assert (moving.order_state, moving.unfilled_amount) == ("open", D(1))
    assert levels(engine) == ([], [(D(2990), D(1))])


def test_edit_rejections_leave_the_order_alone(engine: Engine) -> None:
    order = limit(engine, A, "buy", "1", "2990", post_only=True).order
    limit(engine, B, "sell", "1", "3000")
    rejects(ErrorCode.POST_ONLY_WOULD_TAKE, lambda: engine.edit(A, order.order_id, amount=D(1), price=D(3000)))
    rejects(ErrorCode.PRICE_NOT_ON_TICK, lambda: engine.edit(A, order.order_id, amount=D(1), price=D("2990.05")))
    rejects(ErrorCode.ORDER_NOT_FOUND, lambda: engine.edit(B, order.order_id, amount=D(1), price=D(2991)))
    limit(engine, C, "sell", "0.5", "2990")
    rejects(ErrorCode.INVALID_PARAMS, lambda: engine.edit(A, order.order_id, amount=D("0.5"), price=D(2990)))
    assert (order.price, order.amount, order.unfilled_amount) == (D(2990), D(1), D("0.5"))
    assert levels(engine) == ([(D(2990), D("0.5"))], [(D(3000), D(1))])


# --------------------------------------------------------------------------- rejections


def _expired(engine: Engine, clock: Clock) -> object:
    return limit(engine, A, "buy", "1", "2990", expiration_ms=clock.ms)


def test_expiration_is_in_milliseconds(engine: Engine, clock: Clock) -> None:
    """The tables of user.orders and user.fills: milliseconds. An hour ahead written in seconds is in 1970."""
    assert limit(engine, A, "buy", "1", "2990", expiration_ms=clock.ms + 1).order.expiration == clock.ms + 1
    rejects(ErrorCode.ORDER_EXPIRED, lambda: limit(engine, A, "buy", "1", "2990",
                                                   expiration_ms=clock.ms // 1000 + 3600))
    rejects(ErrorCode.ORDER_EXPIRED, lambda: limit(engine, A, "buy", "1", "2990", expiration_ms=clock.ms))
    order = engine.open_orders(A)[0]
    rejects(ErrorCode.ORDER_EXPIRED, lambda: engine.edit(A, order.order_id, amount=D(1), price=D(2991),
                                                         expiration_ms=clock.ms - 1))


def test_resting_orders_are_cancelled_when_their_expiration_passes(engine: Engine, clock: Clock,
                                                                    events: list[Event]) -> None:
    """The document: `expiration` is the "time in milliseconds after which trade will expire if not executed"."""
    soon = limit(engine, A, "buy", "1", "2990", expiration_ms=clock.ms + 1_000).order
    later = limit(engine, A, "buy", "2", "2989", expiration_ms=clock.ms + 5_000).order
    in_two_s = limit(engine, A, "buy", "3", "2988", expiration_ms=clock.ms + 2_000).order
    moved = limit(engine, A, "buy", "4", "2987", expiration_ms=clock.ms + 1_000).order
    engine.edit(A, moved.order_id, amount=D(4), price=D(2986), expiration_ms=clock.ms + 60_000)  # re-signed, later
    shrunk = limit(engine, A, "buy", "6", "2984", expiration_ms=clock.ms + 1_000).order
    engine.edit(A, shrunk.order_id, amount=D(5), price=D(2984), expiration_ms=clock.ms + 60_000)  # stays in place
    never = limit(engine, A, "buy", "5", "2985").order  # no expiration: rests until cancelled
    assert engine.expire_orders() == []
    events.clear()
    clock.ms += 1_000
    assert [o.order_id for o in engine.expire_orders()] == [soon.order_id]
    assert soon.order_state == "cancelled" and soon.filled_amount == 0
    updated = [e for e in of(events, OrderUpdated) if e.order_wire["order_id"] == soon.order_id]
    assert [e.order_wire["order_state"] for e in updated] == ["cancelled"]
    assert (D(2990), D(1)) not in levels(engine)[0]
    clock.ms += 5_000
    assert {o.order_id for o in engine.expire_orders()} == {later.order_id, in_two_s.order_id}
    assert {o.order_id for o in engine.open_orders(A)} == {moved.order_id, shrunk.order_id, never.order_id}
    clock.ms += 60_000
    assert {o.order_id for o in engine.expire_orders()} == {moved.order_id, shrunk.order_id}
    assert [o.order_id for o in engine.open_orders(A)] == [never.order_id]


REJECTIONS: list[tuple[ErrorCode, Callable[[Engine, Clock], object]]] = [
    (ErrorCode.INSTRUMENT_NOT_FOUND, lambda e, c: limit(e, A, "buy", "1", "2990", name="ETH-1JAN27")),
    (ErrorCode.INSTRUMENT_NOT_FOUND, lambda e, c: e.instrument("XRP-PERP")),
    (ErrorCode.INSTRUMENT_NOT_FOUND, lambda e, c: e.book("XRP-PERP")),
    (ErrorCode.INSTRUMENT_INACTIVE, lambda e, c: (e.delist(FUTURE), limit(e, A, "buy", "1", "2990", name=FUTURE))),
    (ErrorCode.PRICE_NOT_ON_TICK, lambda e, c: limit(e, A, "buy", "1", "2990.05")),
    (ErrorCode.AMOUNT_NOT_ON_INCREMENT, lambda e, c: limit(e, A, "buy", "1.0005", "2990")),
    (ErrorCode.AMOUNT_TOO_SMALL, lambda e, c: (e.update_instrument(PERP, min_trade_amount=D("0.01")),
                                               limit(e, A, "buy", "0.005", "2990"))),
    (ErrorCode.ORDER_EXPIRED, _expired),
    (ErrorCode.REDUCE_ONLY_WOULD_INCREASE, lambda e, c: limit(e, A, "buy", "1", "2990", reduce_only=True)),
    (ErrorCode.NO_LIQUIDITY, lambda e, c: market(e, A, "buy", "1")),
    (ErrorCode.NOT_ENOUGH_FUNDS, lambda e, c: limit(e, A, "buy", "3400", "3000")),
    (ErrorCode.ORDER_NOT_FOUND, lambda e, c: e.cancel(A, "e50464e8-16d0-4c3d-aac5-77100359e34e")),
    (ErrorCode.ORDER_NOT_FOUND, lambda e, c: e.order(A, "e50464e8-16d0-4c3d-aac5-77100359e34e")),
    (ErrorCode.ORDER_NOT_FOUND, lambda e, c: e.edit(A, "nope", amount=D(1), price=D(1))),
    (ErrorCode.LEVERAGE_TOO_HIGH, lambda e, c: e.set_leverage(A, PERP, 51)),
    (ErrorCode.INVALID_PARAMS, lambda e, c: e.set_leverage(A, PERP, D("2.5"))),
    (ErrorCode.INVALID_PARAMS, lambda e, c: e.place(A, PERP, side="hold", order_type="limit",  # type: ignore[arg-type]
                                                    amount=D(1), price=D(2990))),
    (ErrorCode.INVALID_PARAMS, lambda e, c: e.place(A, PERP, side="buy", order_type="stop",  # type: ignore[arg-type]
                                                    amount=D(1), price=D(2990))),
    (ErrorCode.INVALID_PARAMS, lambda e, c: limit(e, A, "buy", "1", "2990", time_in_force="GTD")),
    (ErrorCode.INVALID_PARAMS, lambda e, c: e.place(A, PERP, side="buy", order_type="limit", amount=D(1))),
    (ErrorCode.INVALID_PARAMS, lambda e, c: market(e, A, "buy", "1", post_only=True)),
    (ErrorCode.INVALID_PARAMS, lambda e, c: limit(e, A, "buy", "0", "2990")),
    (ErrorCode.INVALID_PARAMS, lambda e, c: limit(e, A, "buy", "1", "-3000")),
    (ErrorCode.INVALID_PARAMS, lambda e, c: limit(e, A, "buy", "NaN", "2990")),
    (ErrorCode.INVALID_PARAMS, lambda e, c: e.candles(PERP, "2", 0, 1)),
    (ErrorCode.INVALID_PARAMS, lambda e, c: e.deposit(A, "DOGE", D(1))),
    (ErrorCode.INVALID_PARAMS, lambda e, c: e.deposit(A, "USDT", D(0))),
    (ErrorCode.INVALID_PARAMS, lambda e, c: e.order_history(A, kind="swap")),
    (ErrorCode.INVALID_PARAMS, lambda e, c: e.book(PERP, -1)),
    (ErrorCode.UNAUTHORIZED, lambda e, c: limit(e, "0x9999999999999999999999999999999999999999", "buy", "1",
                                                "2990")),
    (ErrorCode.UNAUTHORIZED, lambda e, c: e.account_summary("0x9999999999999999999999999999999999999999")),
]


@pytest.mark.parametrize(("code", "action"), REJECTIONS, ids=[f"{c.name}-{i}" for i, (c, _) in enumerate(REJECTIONS)])
def test_every_rejection_has_its_code_and_no_side_effects(
        engine: Engine, clock: Clock, code: ErrorCode, action: Callable[[Engine, Clock], object]) -> None:
    error = rejects(code, lambda: action(engine, clock))
    assert error.message and str(error).startswith(error.message)
    orders_a = engine.order_history(A, count=100)
    assert all(o.order_state != "rejected" for o in orders_a)
    assert engine.open_orders(A) == []
    assert engine.account_summary(A)["equity"] == "1000000"


def test_a_rejected_order_emits_nothing(engine: Engine, events: list[Event]) -> None:
    for code, action in REJECTIONS:
        if code not in (ErrorCode.INSTRUMENT_INACTIVE, ErrorCode.AMOUNT_TOO_SMALL):
            with pytest.raises(EngineError):
                action(engine, Clock())
    assert events == []


def test_not_enough_funds_and_leverage(engine: Engine) -> None:
    poor = "0xeeee000000000000000000000000000000000005"
    engine.open_account(poor, {"USDC": D(1000)})
    limit(engine, poor, "buy", "1", "3000")
    assert engine.account_summary(poor)["open_orders_im"] == "300"
    rejects(ErrorCode.NOT_ENOUGH_FUNDS, lambda: limit(engine, poor, "buy", "3", "3000"))
    assert engine.set_leverage(poor, PERP, 50) == 50 and engine.leverage(poor, PERP) == 50
    assert engine.account_summary(poor)["open_orders_im"] == "60"
    limit(engine, poor, "buy", "3", "3000")
    rejects(ErrorCode.LEVERAGE_TOO_HIGH, lambda: engine.set_leverage(poor, PERP, 51))
    rejects(ErrorCode.NOT_ENOUGH_FUNDS, lambda: engine.set_leverage(poor, PERP, 1))
    assert engine.leverage(poor, PERP) == 50 and engine.account_summary(poor)["open_orders_im"] == "240"
    rejects(ErrorCode.INVALID_PARAMS, lambda: engine.set_leverage(poor, PERP, 0))
    assert engine.leverage(poor, OPTION) == 1 and engine.leverage(poor, FUTURE) == 10


# --------------------------------------------------------------------------- fees and PnL


def test_fees_maker_rebate_and_taker_charge(engine: Engine) -> None:
    limit(engine, M, "sell", "2", "3000")
    trade = market(engine, A, "buy", "2").trades[0]
    assert (trade.maker_fee, trade.taker_fee) == (D("-0.15"), D("1.5"))
    taker, maker = engine.position(A, PERP), engine.position(M, PERP)
    assert taker is not None and maker is not None
    assert (taker.trade_fee, taker.realized_pnl) == (D("1.5"), D("-1.5"))
    assert (maker.trade_fee, maker.realized_pnl) == (D("-0.15"), D("0.15"))
    option_trade = (limit(engine, M, "sell", "1", "250", name=OPTION), market(engine, A, "buy", "1", name=OPTION))
    assert option_trade[1].trades[0].taker_fee == D("0.075")  # 250 * 1 * 0.0003


def test_average_price_and_pnl_through_a_sequence_of_trades(engine: Engine) -> None:
    """A always takes, M always makes; every figure below is worked out by hand."""
    limit(engine, M, "sell", "2", "3000")
    market(engine, A, "buy", "2")
    limit(engine, M, "sell", "1", "3030")
    limit(engine, A, "buy", "1", "3030")
    pos = engine.position(A, PERP)
    assert pos is not None
    assert (pos.size, pos.average_price, pos.cost_basis, pos.trade_fee) == (D(3), D(3010), D(9030), D("2.2575"))

    limit(engine, M, "buy", "1.5", "3050")
    market(engine, A, "sell", "1.5")  # closes 1.5 bought at 3010 on average: +60, fee 1.14375
    assert (pos.size, pos.average_price, pos.realized_pnl) == (D("1.5"), D(3010), D("56.59875"))

    engine.set_index_price("ETHUSD", D(3100))
    wire = engine.positions(A)[0]
    assert (wire["unrealized_pnl"], wire["total_pnl"], wire["mark_price"]) == ("135", "191.59875", "3100")

    limit(engine, M, "buy", "2.5", "3080")
    limit(engine, A, "sell", "2.5", "3080")  # closes 1.5 (+105), opens a 1 short at 3080; fee 1.925
    assert (pos.size, pos.average_price, pos.realized_pnl, pos.trade_fee) == (
        D(-1), D(3080), D("159.67375"), D("5.32625"))
    wire = engine.positions(A)[0]
    assert (wire["direction"], wire["size"], wire["unrealized_pnl"], wire["average_price"]) == (
        "sell", "-1", "-20", "3080")

    maker = engine.position(M, PERP)
    assert maker is not None
    assert (maker.size, maker.average_price, maker.realized_pnl) == (D(1), D(3080), D("-164.467375"))
    assert pos.realized_pnl + maker.realized_pnl == -(pos.trade_fee + maker.trade_fee)  # zero-sum but for fees

    summary = engine.account_summary(A)
    assert summary["realized_pnl"] == "159.67375"
    assert summary["unrealized_pnl"] == "-20"
    assert summary["equity"] == "1000139.67375"
    assert summary["initial_margin"] == "310"  # |-1| * 3100 / 10
    assert summary["maintenance_margin"] == "155"
    assert summary["available_balance"] == "999829.67375"
    assert summary["delta_total"] == {"ETHUSD": "-1"}


def test_account_summary_is_consistent(engine: Engine) -> None:
    limit(engine, M, "sell", "2", "3000")
    market(engine, A, "buy", "2")
    limit(engine, M, "buy", "1", "2500", name=FUTURE)
    market(engine, A, "sell", "1", name=FUTURE)
    limit(engine, M, "sell", "3", "200", name=OPTION)
    market(engine, A, "buy", "3", name=OPTION)
    limit(engine, A, "buy", "1", "2900")
    limit(engine, A, "buy", "1", "2400", name=FUTURE, reduce_only=True)
    engine.deposit(A, "DAI", D("500.5"))
    engine.set_index_price("ETHUSD", D("3123.4"))
    summary = engine.account_summary(A)
    number = {k: D(v) for k, v in summary.items() if isinstance(v, str) and k not in ("status", "updated_at")}
    positions = engine.positions(A)
    assert len(positions) == 3
    assert number["equity"] == FUNDS + D("500.5") + number["realized_pnl"] + number["unrealized_pnl"]
    assert number["total_pnl"] == number["realized_pnl"] + number["unrealized_pnl"]
    assert number["unrealized_pnl"] == sum(D(p["unrealized_pnl"]) for p in positions)
    assert number["realized_pnl"] == sum(D(p["realized_pnl"]) for p in positions)
    assert number["open_orders_im"] == D(290)  # the reduce-only sell reserves nothing
    assert number["initial_margin"] == sum(D(p["initial_margin"]) for p in positions) + D(290)
    assert number["maintenance_margin"] == sum(D(p["maintenance_margin"]) for p in positions)
    assert number["available_balance"] == number["equity"] - number["initial_margin"]
    assert number["initial_margin_utilization"] == (
        number["initial_margin"] / number["equity"] * 100).quantize(D("1E-10"))
    assert summary["collateral"] == {"USDT": "1000000", "DAI": "500.5"}
    assert summary["status"] == "ACTIVE" and summary["is_portfolio_margined"] is False
    delta = D(2) - 1 + D(next(p for p in positions if p["instrument_name"] == OPTION)["position_delta"])
    assert D(summary["delta_total"]["ETHUSD"]) == delta
    assert set(summary) == {
        "available_balance", "available_withdrawable_funds", "collateral", "delta_total", "equity", "initial_margin",
        "initial_margin_utilization", "is_cancel_on_disconnect", "is_portfolio_margined", "maintenance_margin",
        "maintenance_margin_utilization", "open_orders_im", "realized_pnl", "status", "total_pnl", "unrealized_pnl",
        "updated_at"}


def test_portfolio_margin(engine: Engine) -> None:
    limit(engine, M, "sell", "1.5", "3000")
    market(engine, A, "buy", "1.5")
    data = engine.portfolio_margin(A, "ETH")
    expected = [str(-D(3000) * move * D("1.5")).rstrip("0").rstrip(".") or "0" for move in SCENARIO_MOVES]
    assert [D(v) for v in data["future_loss_array"]] == [D(v) for v in expected]
    assert data["future_loss_array"][0] == "675" and data["future_loss_array"][5] == "0"
    assert data["total_loss_array"] == data["future_loss_array"] and data["options_loss_array"] == ["0"] * 11
    assert data["futures_contingency"] == "27"  # 0.6% of 4500
    assert engine.portfolio_margin(A, "BTC")["total_loss_array"] == ["0"] * 11
    assert engine.toggle_portfolio_margin(A) is True
    summary = engine.account_summary(A)
    assert (summary["is_portfolio_margined"], summary["initial_margin"], summary["maintenance_margin"]) == (
        True, "702", "351")
    assert engine.toggle_portfolio_margin(A) is False
    assert engine.account_summary(A)["initial_margin"] == "450"


def test_options_have_black_76_marks_and_greeks(engine: Engine) -> None:
    call = engine.ticker(OPTION)
    put = engine.ticker("ETH-25DEC26-3000-P")
    assert D(call["mark_price"]) == D(put["mark_price"])  # at the money, r = 0: put-call parity
    assert D(call["delta"]) - D(put["delta"]) == pytest.approx(D(1), abs=D("1E-7"))
    assert call["is_call"] is True and put["is_call"] is False and call["strike"] == "3000"
    assert {"gamma", "rho", "sigma", "tau", "theta", "vega", "best_bid_iv", "best_ask_iv"} <= set(call)
    assert D(call["theta"]) < 0 < D(call["vega"])
    engine.set_index_price("ETHUSD", D(3300))
    assert D(engine.ticker(OPTION)["mark_price"]) > D(call["mark_price"])
    engine.set_index_price("ETHUSD", D(3000))
    limit(engine, M, "sell", "1", "350", name=OPTION)
    limit(engine, M, "buy", "1", "300", name=OPTION)
    ticker = engine.ticker(OPTION)
    assert D(ticker["best_bid_iv"]) < D(ticker["best_ask_iv"])
    assert 0 < D(ticker["best_bid_delta"]) < 1


# --------------------------------------------------------------------------- market data


def test_ticker_fields_and_stats(engine: Engine, clock: Clock) -> None:
    limit(engine, M, "sell", "2", "3010")
    limit(engine, M, "buy", "2", "2990")
    market(engine, A, "buy", "0.5")
    clock.ms += 60_000
    market(engine, B, "sell", "1.5")
    ticker = engine.ticker(PERP)
    assert {"best_ask_amount", "best_ask_price", "best_bid_amount", "best_bid_price", "funding_8h", "funding_rate",
            "index_price", "instrument_name", "last_price", "mark_price", "max_price", "min_price", "open_interest",
            "stats", "timestamp", "contract_size"} <= set(ticker)
    assert (ticker["best_bid_price"], ticker["best_bid_amount"]) == ("2990", "0.5")
    assert (ticker["best_ask_price"], ticker["best_ask_amount"]) == ("3010", "1.5")
    assert (ticker["last_price"], ticker["mark_price"], ticker["index_price"]) == ("2990", "3000", "3000")
    assert (ticker["min_price"], ticker["max_price"]) == ("2955", "3045")
    assert ticker["open_interest"] == "1.5"  # A long 0.5, M long 1 (sold 0.5, bought 1.5), B short 1.5
    assert ticker["stats"] == {"change_24h": "-20", "max_24h": "3010", "min_24h": "2990", "volume_24h": "2",
                               "high": "3010", "low": "2990", "price_change": "-20", "volume": "2",
                               "volume_usd": "5990"}
    assert D(ticker["funding_rate"]) == 0 and ticker["timestamp"] == str(clock.ms)
    clock.ms += 86_400_000 + 60_000
    assert engine.ticker(PERP)["stats"]["volume_24h"] == "0"
    book = engine.order_book(PERP, 1)
    assert book["bids"] == [["2990", "0.5"]] and book["change_id"] == engine.book(PERP).change_id


def test_public_trades_newest_first(engine: Engine) -> None:
    limit(engine, M, "sell", "1", "3001")
    limit(engine, M, "sell", "1", "3002")
    market(engine, A, "buy", "2")
    trades = engine.public_trades(PERP, 10)
    assert [(t["price"], t["side"]) for t in trades] == [("3002", "buy"), ("3001", "buy")]
    assert trades[0]["timestamp"] == "2026-11-21T12:00:00.000Z"
    assert set(trades[0]) == {"amount", "id", "instrument_name", "price", "side", "timestamp"}
    assert len(engine.public_trades(PERP, 1)) == 1 and engine.public_trades(PERP, 0) == []


def test_candles(engine: Engine, clock: Clock) -> None:
    base = T0 - T0 % 300_000
    clock.ms = base + 1_000
    limit(engine, M, "sell", "5", "3010")
    market(engine, A, "buy", "1")
    clock.ms = base + 61_000
    limit(engine, M, "sell", "1", "3005")
    market(engine, A, "buy", "2")
    clock.ms = base + 241_000
    limit(engine, M, "buy", "1", "2990")
    market(engine, A, "sell", "1")
    bars = engine.candles(PERP, "1", base - 120_000, base + 300_000)
    assert [b["time"] - base for b in bars] == [0, 60_000, 120_000, 180_000, 240_000, 300_000]
    assert [(b["open"], b["high"], b["low"], b["close"], b["volume"]) for b in bars[:3]] == [
        (D(3010), D(3010), D(3010), D(3010), D(1)),
        (D(3005), D(3010), D(3005), D(3010), D(2)),
        (D(3010), D(3010), D(3010), D(3010), D(0)),
    ]
    assert bars[4]["close"] == D(2990) and bars[5]["volume"] == 0
    assert set(bars[0]) == {"LastUpdatedTime", "close", "high", "low", "open", "time", "volume"}
    five = engine.candles(PERP, "5", base, base + 299_999)
    assert len(five) == 1 and (five[0]["open"], five[0]["low"], five[0]["close"], five[0]["volume"]) == (
        D(3010), D(2990), D(2990), D(4))
    assert engine.candles(PERP, "1D", base, base)[0]["volume"] == 4
    assert engine.candles(PERP, "1", base + 10, base - 100_000) == []
    assert engine.candles(FUTURE, "60", base, base + 3_600_000) == []


# --------------------------------------------------------------------------- reads


def test_order_wire_has_every_documented_field(engine: Engine) -> None:
    limit(engine, M, "sell", "1", "3000")
    order = limit(engine, A, "buy", "2", "3000", label="lbl", salt="396049", signature="0xsig",
                  expiration_ms=T0 + 1000, order_signer="0x" + "1" * 40).order
    wire = order.to_wire()
    documented = {"amount", "average_price", "creation_timestamp", "creator", "direction", "filled_amount",
                  "instrument_name", "is_liquidation", "label", "last_update_timestamp", "order_id", "order_state",
                  "order_type", "post_only", "price", "reduce_only", "time_in_force", "unfilled_amount", "account",
                  "order_signer", "expiration", "trigger_price", "trigger_condition", "triggered", "original_amount",
                  "salt", "signature", "contract_size", "trades"}
    assert documented <= set(wire)
    assert (wire["amount"], wire["filled_amount"], wire["unfilled_amount"], wire["price"]) == ("2", "1", "1", "3000")
    assert (wire["salt"], wire["signature"], wire["expiration"], wire["label"]) == ("396049", "0xsig", T0 + 1000,
                                                                                      "lbl")
    assert wire["trades"][0] == {"id": order.trades[0].trade_id, "instrument_name": PERP, "price": "3000",
                                 "side": "buy", "amount": "1", "timestamp": T0}
    assert len(order.order_id) == 36 and order.order_id[14] == "4"  # a uuid4


def test_order_history_and_user_trades(engine: Engine, clock: Clock) -> None:
    first = limit(engine, M, "sell", "1", "3000").order
    clock.ms += 1
    limit(engine, M, "sell", "1", "2600", name=FUTURE)
    clock.ms += 1
    taker = market(engine, A, "buy", "2").order
    clock.ms += 1
    option = limit(engine, A, "buy", "1", "100", name=OPTION).order
    history = engine.order_history(A, count=10)
    assert [o.order_id for o in history] == [option.order_id, taker.order_id]
    assert engine.order_history(M, count=1)[0].instrument_name == FUTURE
    assert engine.order_history(M, count=1, offset=1)[0] is first
    assert engine.order_history(M, kind="future", count=5)[0].instrument_name == FUTURE
    assert engine.order_history(M, instrument_name=PERP, count=5) == [first]
    assert engine.order_history(M, start_ms=T0 + 1, count=5)[0].instrument_name == FUTURE
    assert engine.order_history(A, kind="any", count=5, end_ms=T0 + 2) == [taker]

    trades = engine.user_trades(A)
    assert len(trades) == 1 and trades[0]["incoming_order_id"] == taker.order_id
    assert trades[0]["maker_order"]["order_state"] == "filled" and trades[0]["taker"] == A
    assert engine.user_trades(M, order_id=first.order_id)[0]["book_order_id"] == first.order_id
    assert engine.user_trades(M, instrument_name=FUTURE) == []
    assert "maker_order" not in engine.user_trades(M, instrument_name=PERP, with_orders=False)[0]
    limit(engine, M, "sell", "1", "3000")
    clock.ms += 1
    market(engine, B, "buy", "1")
    newest = engine.user_trades(M)
    assert [t["taker"] for t in newest] == [B, A]
    assert [t["taker"] for t in engine.user_trades(M, sort_asc=True)] == [A, B]
    assert [t["taker"] for t in engine.user_trades(M, count=1, offset=1)] == [A]
    assert engine.user_trades(M, kind=InstrumentKind.OPTION) == []
    assert engine.user_trades(M, kind="spot") == [] and engine.order_history(M, kind="spot") == []
    assert len(engine.user_trades(M, kind="any")) == 2


def test_a_user_trade_embeds_its_orders_without_their_trades(engine: Engine) -> None:
    """As the document's user trades do: a resting order filled n times made each of its n trades O(n) long (600
    fills were 360,000 embedded trade entries to read back after a reconnect)."""
    resting = limit(engine, M, "sell", "50", "3000").order
    for _ in range(50):
        market(engine, A, "buy", "1")
    trades = engine.user_trades(A)
    assert len(trades) == 50 and len(resting.trades) == 50
    for trade in trades:
        assert "trades" not in trade["maker_order"] and "trades" not in trade["taker_order"]
        assert trade["maker_order"]["order_id"] == resting.order_id
    assert len(resting.to_wire()["trades"]) == 50  # an order on its own still lists its trades


def test_history_is_bounded(clock: Clock) -> None:
    engine = make_engine(clock, history_limit=3)
    orders = [limit(engine, A, "buy", "1", str(2900 + i)).order for i in range(5)]
    for order in orders:
        engine.cancel(A, order.order_id)
    assert [o.order_id for o in engine.order_history(A, count=10)] == [o.order_id for o in orders[:1:-1]]
    rejects(ErrorCode.ORDER_NOT_FOUND, lambda: engine.order(A, orders[0].order_id))


def test_accounts_and_deposits(engine: Engine, clock: Clock) -> None:
    assert engine.account_exists(A.upper().replace("0X", "0x")) and not engine.account_exists("0x1")
    assert engine.open_account(A, {"USDT": D(5)}) is False
    record = engine.deposit(A.upper().replace("0X", "0x"), "USDC", D("250.25"))
    assert record["amount"] == "250.25" and record["asset_name"] == "USDC" and record["is_pending"] is False
    assert record["timestamp"] == T0 // 1000 and record["user"] == A and len(record["tx_hash"]) == 66
    deposits = engine.deposits(A)
    assert [d["amount"] for d in deposits["USDT"]] == ["1000000"] and len(deposits["USDC"]) == 1
    assert engine.account_summary(A)["collateral"] == {"USDT": "1000000", "USDC": "250.25"}
    assert set(engine.collaterals()) == {"USDT", "USDC", "DAI"}
    assert engine.collaterals()["USDC"]["decimals"] == 6
    engine.set_cancel_on_disconnect(A, True)
    assert engine.account_summary(A)["is_cancel_on_disconnect"] is True


# --------------------------------------------------------------------------- catalogue changes


def test_delist_cancels_every_order_and_keeps_positions(engine: Engine, events: list[Event]) -> None:
    limit(engine, M, "sell", "1", "2600", name=FUTURE)
    market(engine, A, "buy", "1", name=FUTURE)
    orders = [limit(engine, acct, side, "1", price, name=FUTURE).order
              for acct, side, price in ((A, "buy", "2500"), (B, "buy", "2500"), (C, "sell", "2700"))]
    events.clear()
    cancelled = engine.delist(FUTURE)
    assert {o.order_id for o in cancelled} == {o.order_id for o in orders}
    assert all(o.order_state == "cancelled" for o in orders)
    assert levels(engine, FUTURE) == ([], [])
    assert len(of(events, BookChanged)) == 1 and len(of(events, OrderUpdated)) == 3
    changed = of(events, InstrumentChanged)
    assert len(changed) == 1 and changed[0].what == "delisted" and changed[0].instrument.is_active is False
    assert engine.instrument(FUTURE).is_active is False
    rejects(ErrorCode.INSTRUMENT_INACTIVE, lambda: limit(engine, A, "buy", "1", "2500", name=FUTURE))
    assert any(p["instrument_name"] == FUTURE for p in engine.positions(A))
    assert engine.delist(FUTURE) == []


def test_add_and_update_instruments(engine: Engine, events: list[Event]) -> None:
    new = Instrument(id=999, name="ETH-26MAR27", kind=InstrumentKind.FUTURE, base_currency="ETH",
                     tick_size=D("0.5"), contract_size=D("0.01"), min_trade_amount=D("0.01"),
                     maker_commission=D(0), taker_commission=D("0.0005"), max_leverage=D(20),
                     max_liquidation_commission=D(5), price_index="ETHUSD", underlying_name="ETHUSD",
                     settlement_period="month", expiry_ms=expiry_ms(date(2027, 3, 26)))
    version = engine.catalog_version
    engine.add_instrument(new)
    assert engine.catalog_version > version and engine.instrument_by_id(999) is new
    assert of(events, InstrumentChanged)[0].what == "added"
    assert limit(engine, A, "buy", "1", "2500.5", name=new.name).order.order_state == "open"
    rejects(ErrorCode.INVALID_PARAMS, lambda: engine.add_instrument(new))
    for bad in (replace(new, name="ETH-26MAR27-X", id=1000), replace(new, name="ETH-PERP", id=1001),
                replace(new, name="ETH-27MAR27", id=1)):  # malformed, not a future, duplicate id
        rejects(ErrorCode.INVALID_PARAMS, lambda bad=bad: engine.add_instrument(bad))  # type: ignore[misc]
    assert engine.catalog_version == version + 1
    rejects(ErrorCode.INSTRUMENT_NOT_FOUND, lambda: engine.instrument_by_id(12345))

    resting = limit(engine, A, "buy", "1", "2990.1").order
    events.clear()
    updated = engine.update_instrument(PERP, tick_size=D(1), taker_commission=D("0.0004"))
    assert updated.tick_size == 1 and updated.to_wire()["tick_size"] == "1"
    change = of(events, InstrumentChanged)[0]
    assert change.what == "updated" and change.instrument.tick_size == 1 and change.instrument is not updated
    assert resting.order_state == "open" and levels(engine)[0] == [(D("2990.1"), D(1))]
    rejects(ErrorCode.PRICE_NOT_ON_TICK, lambda: limit(engine, A, "buy", "1", "2990.5"))
    rejects(ErrorCode.INVALID_PARAMS, lambda: engine.update_instrument(PERP, name="X"))
    rejects(ErrorCode.INVALID_PARAMS, lambda: engine.update_instrument(PERP, tick_size=D(0)))
    rejects(ErrorCode.INVALID_PARAMS, lambda: engine.update_instrument(PERP, tick_size=0.5))
    assert engine.book(PERP).bids == [(D("2990.1"), D(1))]
    engine.update_instrument(FUTURE, is_active=False)
    rejects(ErrorCode.INSTRUMENT_INACTIVE, lambda: limit(engine, A, "buy", "1", "2500", name=FUTURE))


# --------------------------------------------------------------------------- events


def test_event_order_for_a_crossing_order(engine: Engine, events: list[Event]) -> None:
    maker = limit(engine, M, "sell", "1", "3001").order
    events.clear()
    taker = limit(engine, A, "buy", "2", "3001").order
    assert [type(e) for e in events] == [BookChanged, PublicTrade, UserFill, UserFill, OrderUpdated, OrderUpdated,
                                         PositionChanged, PositionChanged, TickerChanged]
    assert of(events, OrderUpdated)[0].order_wire["order_id"] == taker.order_id  # the incoming order, then makers
    book = events[0]
    assert isinstance(book, BookChanged)
    assert (book.bids, book.asks) == (((D(3001), D(1)),), ((D(3001), D(0)),))
    assert (book.change_id, book.previous_change_id) == (2, 1)
    assert book.to_wire()["bids"] == [["3001", "1"]] and book.to_wire()["type"] == "change"
    fills = of(events, UserFill)
    assert [f.account for f in fills] == [M, A]
    assert set(fills[0].fill_wire) == {
        "id", "trade_sequence", "side", "price", "amount", "incoming_order_id", "book_order_id", "maker", "taker",
        "instrument_id", "contract_size", "timestamp", "instrument_name", "txn_hash", "is_sync", "salt",
        "expiration", "maker_signature", "taker_signature"}
    assert (fills[0].fill_wire["incoming_order_id"], fills[0].fill_wire["book_order_id"]) == (
        taker.order_id, maker.order_id)
    updates = of(events, OrderUpdated)
    assert [(u.account, u.order_wire["order_state"]) for u in updates] == [(A, "open"), (M, "filled")]
    positions = of(events, PositionChanged)
    assert [(p.account, p.position_wire["size"]) for p in positions] == [(M, "-1"), (A, "1")]
    trade = of(events, PublicTrade)[0]
    assert trade.to_wire() == {"id": trade.trade_id, "size": "1", "price": "3001", "side": "buy", "timestamp": T0,
                               "instrument_name": PERP}


def test_index_moves_touch_tickers(engine: Engine, events: list[Event]) -> None:
    engine.set_index_price("BTCUSD", D(61000))
    index = of(events, IndexChanged)
    assert index == [IndexChanged("BTCUSD", D(61000), T0)]
    btc = {i.name for i in engine.instruments() if i.price_index == "BTCUSD"}
    assert {t.instrument_name for t in of(events, TickerChanged)} == btc
    assert engine.mark_price("BTC-PERP") == 61000 and engine.index_price("BTCUSD") == 61000
    rejects(ErrorCode.INVALID_PARAMS, lambda: engine.set_index_price("BTCUSD", D(0)))


def test_listener_failures_do_not_stop_delivery(engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    seen: list[Event] = []

    def broken(event: Event) -> None:
        raise RuntimeError("listener bug")

    engine.subscribe(broken)
    unsubscribe = engine.subscribe(seen.append)
    with caplog.at_level(logging.ERROR):
        limit(engine, A, "buy", "1", "2990")
    assert len(seen) == 3 and "listener failed" in caplog.text
    unsubscribe()
    unsubscribe()
    limit(engine, A, "buy", "1", "2990")
    assert len(seen) == 3


# --------------------------------------------------------------------------- the book stream reproduces the book


class Replica:
    """A consumer that builds books from a snapshot plus BookChanged events."""

    def __init__(self) -> None:
        self.books: dict[str, tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]]] = {}
        self.change_ids: dict[str, int] = {}
        self.applied = 0

    def snapshot(self, view: BookView) -> None:
        self.books[view.instrument_name] = (dict(view.bids), dict(view.asks))
        self.change_ids[view.instrument_name] = view.change_id

    def __call__(self, event: Event) -> None:
        if isinstance(event, InstrumentChanged) and event.what == "added":
            self.books[event.instrument.name] = ({}, {})
            self.change_ids[event.instrument.name] = 0
        if not isinstance(event, BookChanged) or event.instrument_name not in self.books:
            return
        name = event.instrument_name
        if event.change_id <= self.change_ids[name]:
            return  # already in the snapshot
        assert event.previous_change_id == self.change_ids[name], f"gap in {name}"
        assert event.change_id == event.previous_change_id + 1
        assert event.bids or event.asks
        assert list(event.bids) == sorted(event.bids, reverse=True)
        assert list(event.asks) == sorted(event.asks)
        for side, changes in zip(self.books[name], (event.bids, event.asks), strict=True):
            for price, amount in changes:
                assert amount >= 0
                if amount:
                    assert side.get(price) != amount, "a level reported changed did not change"
                    side[price] = amount
                else:
                    assert price in side
                    del side[price]
        self.change_ids[name] = event.change_id
        self.applied += 1

    def view(self, name: str) -> tuple[list[tuple[Decimal, Decimal]], list[tuple[Decimal, Decimal]]]:
        bids, asks = self.books[name]
        return sorted(bids.items(), reverse=True), sorted(asks.items())


USERS = (A, B, C)


def random_session(engine: Engine, clock: Clock, rng: random.Random, operations: int,
                   on_operation: Callable[[int], None] | None = None) -> None:
    """Users' random orders, edits and cancels interleaved with market-maker steps and catalogue changes."""
    maker = MarketMaker(engine, rng=random.Random(rng.random()), changes_per_second=2000)
    maker.seed()
    names = [PERP, "BTC-PERP", FUTURE, OPTION, "BTC-27NOV26-55000-P"]
    for step in range(operations):
        clock.ms += rng.randint(0, 40)
        if on_operation:
            on_operation(step)
        roll = rng.random()
        try:
            if step == operations // 3:
                engine.delist("BTC-27NOV26-55000-P")
                names.remove("BTC-27NOV26-55000-P")
            elif step == operations // 2:
                new = Instrument(id=5000, name="ETH-26MAR27", kind=InstrumentKind.FUTURE, base_currency="ETH",
                                 tick_size=D("0.1"), contract_size=D("0.001"), min_trade_amount=D("0.001"),
                                 maker_commission=D(0), taker_commission=D("0.0005"), max_leverage=D(20),
                                 max_liquidation_commission=D(5), price_index="ETHUSD", underlying_name="ETHUSD",
                                 settlement_period="month", expiry_ms=expiry_ms(date(2027, 3, 26)))
                engine.add_instrument(new)
                names.append(new.name)
            elif roll < 0.3:
                maker.step(clock.ms, rng.randint(1, 30))
            elif roll < 0.65:
                name = rng.choice(names)
                inst = engine.instrument(name)
                mark = engine.mark_price(name)
                price = max(inst.tick_size, (mark / inst.tick_size).to_integral_value() * inst.tick_size
                            + inst.tick_size * rng.randint(-40, 40))
                engine.place(rng.choice(USERS), name, side=rng.choice(("buy", "sell")),
                             order_type="market" if rng.random() < 0.1 else "limit",
                             amount=inst.contract_size * rng.randint(1, 3000), price=price,
                             time_in_force=rng.choice(("GTC", "GTC", "IOC", "FOK")),
                             post_only=rng.random() < 0.2, reduce_only=rng.random() < 0.05)
            elif roll < 0.8:
                user = rng.choice(USERS)
                mine = engine.open_orders(user)
                if mine:
                    order = rng.choice(mine)
                    inst = engine.instrument(order.instrument_name)
                    engine.edit(user, order.order_id, amount=order.filled_amount + inst.contract_size * rng.randint(
                        1, 3000), price=max(inst.tick_size, order.price + inst.tick_size * rng.randint(-30, 30)))
            elif roll < 0.95:
                user = rng.choice(USERS)
                mine = engine.open_orders(user)
                if mine:
                    engine.cancel(user, rng.choice(mine).order_id)
            elif roll < 0.98:
                engine.cancel_all(rng.choice(USERS), rng.choice([None, *names]))
            else:
                index = rng.choice(("ETHUSD", "BTCUSD"))
                engine.set_index_price(index, engine.index_price(index) * (1 + D(rng.randint(-50, 50)) / 10_000))
        except EngineError:
            pass


def _check_book_matches_orders(engine: Engine) -> None:
    for inst in engine.instruments():
        view = engine.book(inst.name)
        if view.bids and view.asks:
            assert view.bids[0][0] < view.asks[0][0], f"{inst.name} is crossed"
        assert engine.book_levels_count(inst.name) == len(view.bids) + len(view.asks)


def test_book_changes_chain_and_reproduce_every_book(clock: Clock) -> None:
    engine = make_engine(clock)
    from_start = Replica()
    for inst in engine.instruments():
        from_start.snapshot(engine.book(inst.name))
    engine.subscribe(from_start)
    midway = Replica()
    runs: list[list[str]] = [[]]  # consecutive BookChanged events: one operation's (others always follow them)

    def count(event: Event) -> None:
        if isinstance(event, BookChanged):
            runs[-1].append(event.instrument_name)
        elif runs[-1]:
            runs.append([])

    engine.subscribe(count)
    engine.subscribe(midway)

    def on_operation(step: int) -> None:
        if step == 1500:
            for inst in engine.instruments():
                midway.snapshot(engine.book(inst.name))

    random_session(engine, clock, random.Random(2024), 4000, on_operation)
    assert from_start.applied > 5000
    assert len(runs) > 1000 and all(len(run) == len(set(run)) for run in runs)  # one per instrument and operation
    assert any(engine.open_orders(user) for user in USERS)
    for inst in engine.instruments():
        view = engine.book(inst.name)
        assert from_start.view(inst.name) == (view.bids, view.asks), inst.name
        assert midway.view(inst.name) == (view.bids, view.asks), inst.name
        assert from_start.change_ids[inst.name] == view.change_id
    _check_book_matches_orders(engine)


def test_level_totals_equal_the_orders_resting_there(clock: Clock) -> None:
    engine = make_engine(clock)
    random_session(engine, clock, random.Random(11), 1500)
    totals: dict[tuple[str, str, Decimal], Decimal] = {}
    for account in (*USERS, *DEFAULT_ACCOUNTS):
        for order in engine.open_orders(account):
            assert order.order_state == "open" and order.unfilled_amount > 0
            key = (order.instrument_name, order.direction, order.price)
            totals[key] = totals.get(key, D(0)) + order.unfilled_amount
    from_book = {(inst.name, side, price): amount for inst in engine.instruments()
                 for side, book_side in (("buy", engine.book(inst.name).bids), ("sell", engine.book(inst.name).asks))
                 for price, amount in book_side}
    assert totals == from_book


# --------------------------------------------------------------------------- determinism


def _recorded_session(seed: int) -> tuple[list[str], dict[str, tuple[Any, Any]]]:
    clock = Clock()
    engine = Engine(default_catalog(today=TODAY), now_ms=clock, rng=random.Random(seed))
    for account in (A, B, C, M):
        engine.open_account(account, {"USDT": FUNDS})
    stream: list[str] = []
    engine.subscribe(lambda event: stream.append(repr(event)))
    random_session(engine, clock, random.Random(seed), 800)
    books = {i.name: (engine.book(i.name).bids, engine.book(i.name).asks) for i in engine.instruments()}
    return stream, books


def test_same_seed_same_venue() -> None:
    first, second = _recorded_session(5), _recorded_session(5)
    assert first[0] == second[0] and first[1] == second[1]
    assert len(first[0]) > 1000
    assert _recorded_session(6)[0][:50] != first[0][:50]


# --------------------------------------------------------------------------- the market maker


def test_market_maker_keeps_books_two_sided_and_uncrossed(clock: Clock) -> None:
    engine = make_engine(clock)
    changes: list[BookChanged] = []
    engine.subscribe(lambda e: changes.append(e) if isinstance(e, BookChanged) else None)
    maker = MarketMaker(engine, rng=random.Random(3), changes_per_second=1000)
    assert maker.seed() >= len(engine.instruments()) * 2 * maker.min_levels
    changes.clear()
    trades_before = sum(len(engine.public_trades(i.name, 1000)) for i in engine.instruments())
    done = 0
    for _ in range(300):
        clock.ms += 10
        step_done = maker.step(clock.ms, 20)
        assert step_done <= 20
        done += step_done
    assert done > 5000
    assert 0.9 * done <= len(changes) <= done
    for inst in engine.instruments():
        view = engine.book(inst.name)
        assert view.bids and view.asks, inst.name
        assert view.bids[0][0] < view.asks[0][0], inst.name
        assert 2 * maker.min_levels <= sum(len(engine.open_orders(a, inst.name)) for a in maker.accounts)
    assert sum(len(engine.public_trades(i.name, 1000)) for i in engine.instruments()) > trades_before
    assert engine.index_price("ETHUSD") != D(3000)  # 3 s of simulated time: the index walked


def test_market_maker_budget_follows_the_rate_and_the_catalogue(clock: Clock) -> None:
    engine = make_engine(clock)
    maker = MarketMaker(engine, rng=random.Random(4), changes_per_second=250, instruments=[PERP, FUTURE])
    assert maker.step(clock.ms) == 0
    clock.ms += 1000
    assert maker.step(clock.ms) == 250
    clock.ms += 2
    assert maker.step(clock.ms) == 0  # half an action carried over
    clock.ms += 2
    assert maker.step(clock.ms) == 1
    assert {i.name for i in engine.instruments() if engine.book(i.name).bids} == {PERP, FUTURE}
    engine.delist(FUTURE)
    clock.ms += 1000
    maker.step(clock.ms)
    assert engine.book(FUTURE).bids == [] and engine.book(PERP).bids


def test_market_maker_leaves_instruments_without_an_index_alone(clock: Clock) -> None:
    catalog = default_catalog(today=TODAY)
    engine = Engine(catalog, now_ms=clock, rng=random.Random(1), index_prices={"ETHUSD": D(3000)})
    maker = MarketMaker(engine, rng=random.Random(2))
    maker.seed()
    for _ in range(20):
        clock.ms += 100
        maker.step(clock.ms, 50)
    assert engine.book("BTC-PERP").bids == [] and engine.book(PERP).bids


def test_market_maker_with_many_instruments(clock: Clock) -> None:
    catalog = default_catalog(500, today=TODAY)
    engine = Engine(catalog, now_ms=clock, rng=random.Random(1))
    maker = MarketMaker(engine, rng=random.Random(2))
    assert maker.seed() >= 2 * maker.min_levels * len(catalog)
    for _ in range(50):
        clock.ms += 20
        maker.step(clock.ms, 40)
    assert all(engine.book(i.name, 1).bids and engine.book(i.name, 1).asks for i in catalog)


async def test_a_market_maker_that_falls_behind_drops_the_backlog_instead_of_blocking_longer_and_longer() -> None:
    """Each change costs twice the time it stands for (a loaded machine). Before the fix the loop owed every
    change since its last step, so each step was twice as long as the one before and the venue's event loop
    (shared with the services under test) soon spent seconds at a time in one step."""
    class Slow:
        changes_per_second = 1000.0

        def __init__(self) -> None:
            self.steps: list[int] = []

        def step(self, now_ms: int, budget: int) -> int:
            self.steps.append(budget)
            time.sleep(budget * 2 / self.changes_per_second)  # a synchronous step, as the real one is
            return budget

    sim = Simulator(SimConfig(port=0))
    slow = Slow()
    sim.market_maker = slow  # type: ignore[assignment]
    loop = asyncio.create_task(sim._market_maker_loop())
    await asyncio.sleep(1.5)
    loop.cancel()
    with pytest.raises(asyncio.CancelledError):
        await loop
    assert len(slow.steps) >= 3, slow.steps  # it kept stepping (each step at most ~0.2 s)
    assert max(slow.steps) <= 100, slow.steps  # a tenth of a second's worth at most
