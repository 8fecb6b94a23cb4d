"""A market maker that keeps the simulator's books two-sided and moving.

It quotes post-only orders around each instrument's mark from a couple of
internal accounts, cancels and re-prices them, now and then sends a small IOC
order that takes the best level (so public trades happen), and random-walks
the index prices. Every action is one engine operation, so one action is at
most one BookChanged. The engine never lets a book cross; the market maker
keeps at least `min_levels` of its own orders on each side of every
instrument it has visited (`seed` visits them all at once).

The server calls `step(now_ms, budget)` from a timer; with `budget=None` the
budget follows `changes_per_second` and the time since the previous step.
Deterministic given the engine's and the market maker's random generators.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Sequence
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from portico.sim.engine import Engine, EngineError, SimOrder
from portico.sim.instruments import Instrument
from portico.venues.syndr.constants import InstrumentKind

__all__ = ["DEFAULT_ACCOUNTS", "MarketMaker"]

DEFAULT_ACCOUNTS: tuple[str, ...] = (
    "0x00000000000000000000000000000000000a11ce",
    "0x0000000000000000000000000000000000000b0b",
)
_COLLATERAL = Decimal(10) ** 12
_EIGHT_PLACES = Decimal("0.00000001")


def _floor(value: Decimal, tick: Decimal) -> Decimal:
    return (value / tick).to_integral_value(ROUND_FLOOR) * tick


def _ceil(value: Decimal, tick: Decimal) -> Decimal:
    return (value / tick).to_integral_value(ROUND_CEILING) * tick


class MarketMaker:
    """Quotes, cancels, re-prices and occasionally trades, at up to `changes_per_second` book changes a second."""

    def __init__(
        self,
        engine: Engine,
        *,
        rng: random.Random,
        accounts: Sequence[str] = DEFAULT_ACCOUNTS,
        changes_per_second: float = 1_000.0,
        instruments: list[str] | None = None,
        min_levels: int = 5,
        max_levels: int = 15,
        cross_probability: float = 0.03,
        half_spread: Decimal = Decimal("0.0005"),
        level_step: Decimal = Decimal("0.0002"),
        index_interval_ms: int = 1_000,
        index_step: Decimal = Decimal("0.0005"),
        core_share: float = 0.5,
    ) -> None:
        if not accounts:
            raise ValueError("the market maker needs at least one account")
        if not 1 <= min_levels <= max_levels:
            raise ValueError("need 1 <= min_levels <= max_levels")
        self.engine = engine
        self.rng = rng
        self.accounts = tuple(accounts)
        self.changes_per_second = changes_per_second
        self.min_levels = min_levels
        self.max_levels = max_levels
        self.cross_probability = cross_probability
        self.half_spread = half_spread
        self.level_step = level_step
        self.index_interval_ms = index_interval_ms
        self.index_step = index_step
        self.core_share = core_share
        for address in self.accounts:
            engine.open_account(address, {"USDT": _COLLATERAL})
        self._explicit = list(instruments) if instruments is not None else None
        self._catalog_version = -1
        self._names: list[str] = []
        self._core: list[str] = []  # perpetuals and futures: the busiest books, picked more often
        self._indices: list[str] = []
        self._needy: deque[str] = deque()
        self._last_step_ms: int | None = None
        self._last_index_ms: int | None = None
        self._carry = 0.0
        self._refresh()

    # ----------------------------------------------------------------- catalogue

    def _refresh(self) -> None:
        """Follow the engine's catalogue (added and delisted instruments)."""
        version = self.engine.catalog_version
        if version == self._catalog_version:
            return
        self._catalog_version = version
        known = set(self._names)
        if self._explicit is not None:
            insts = [self.engine.instrument(name) for name in self._explicit]
        else:
            insts = self.engine.instruments()
        active = [inst for inst in insts if inst.is_active]
        self._names = [inst.name for inst in active]
        self._core = [inst.name for inst in active if inst.kind is not InstrumentKind.OPTION]
        self._indices = sorted({inst.price_index for inst in active})
        self._needy.extend(name for name in self._names if name not in known)

    # ----------------------------------------------------------------- driving

    def step(self, now_ms: int, budget: int | None = None) -> int:
        """Do up to `budget` book-changing actions (by default: what `changes_per_second` allows since the last step).

        Also moves the index prices every `index_interval_ms`. Returns the
        number of actions done.
        """
        if budget is None:
            if self._last_step_ms is not None:
                self._carry += max(now_ms - self._last_step_ms, 0) / 1000 * self.changes_per_second
            budget = int(self._carry)
            self._carry -= budget
        self._last_step_ms = now_ms
        self._refresh()
        if self._last_index_ms is None:
            self._last_index_ms = now_ms
        elif now_ms - self._last_index_ms >= self.index_interval_ms:
            self._last_index_ms = now_ms
            self._walk_indices()
        done = attempts = 0
        while done < budget and attempts < 2 * budget + 10 and self._names:
            attempts += 1
            if self._act(self._pick()):
                done += 1
        return done

    def seed(self) -> int:
        """Put `min_levels` orders a side on every instrument at once; returns how many were placed."""
        self._refresh()
        placed = 0
        for name in self._names:
            for side in ("buy", "sell"):
                for _ in range(self.min_levels * 2):
                    if len(self._own(name, side)) >= self.min_levels:
                        break
                    placed += self._quote(name, side)
        self._needy.clear()
        return placed

    def _walk_indices(self) -> None:
        for index in self._indices:
            price = self.engine.index_price(index)
            if price <= 0:
                continue
            move = Decimal(self.rng.randint(-1000, 1000)) * self.index_step / 1000
            self.engine.set_index_price(index, (price * (1 + move)).quantize(_EIGHT_PLACES))

    def _pick(self) -> str:
        if self._needy:
            return self._needy.popleft()
        if self._core and self.rng.random() < self.core_share:
            return self.rng.choice(self._core)
        return self.rng.choice(self._names)

    def _own(self, name: str, side: str) -> list[SimOrder]:
        return [o for account in self.accounts for o in self.engine.open_orders(account, name) if o.direction == side]

    def _act(self, name: str) -> bool:
        """One action on one instrument; False if nothing changed (the caller tries another)."""
        try:
            inst = self.engine.instrument(name)
        except EngineError:
            return False
        if not inst.is_active:
            return False
        bids, asks = self._own(name, "buy"), self._own(name, "sell")
        if len(bids) < self.min_levels or len(asks) < self.min_levels:
            changed = self._quote(name, "buy" if len(bids) <= len(asks) else "sell")
            if len(bids) + len(asks) + changed < 2 * self.min_levels:
                self._needy.append(name)
            return bool(changed)
        if len(bids) > self.max_levels:
            return self._cancel_worst(inst, bids)
        if len(asks) > self.max_levels:
            return self._cancel_worst(inst, asks)
        roll = self.rng.random()
        if roll < self.cross_probability:
            return self._cross(inst, bids, asks)
        if roll < 0.4:
            return bool(self._quote(name, self.rng.choice(("buy", "sell"))))
        if roll < 0.7:
            side = self.rng.choice((bids, asks))
            return self._cancel_worst(inst, side) if len(side) > self.min_levels else bool(self._quote(
                name, side[0].direction))
        return self._reprice(inst, self.rng.choice(bids + asks))

    # ----------------------------------------------------------------- actions

    def _reference(self, inst: Instrument) -> tuple[Decimal, int, int]:
        """(mark floored at a couple of ticks, half-spread in ticks, level step in ticks)."""
        mark = self.engine.mark_price(inst.name)
        tick = inst.tick_size
        spread = max(1, int(mark * self.half_spread / tick))
        step = max(1, int(mark * self.level_step / tick))
        return max(mark, tick * (spread + 2)), spread, step

    def _price(self, inst: Instrument, side: str) -> Decimal | None:
        """A fresh quote price for `side` that does not cross the book (None without an index to quote around)."""
        if self.engine.index_price(inst.price_index) <= 0:
            return None
        reference, spread, step = self._reference(inst)
        tick = inst.tick_size
        offset = tick * (spread + step * self.rng.randrange(self.max_levels))
        book = self.engine.book(inst.name, 1)
        if side == "buy":
            price = max(_floor(reference - offset, tick), tick)
            if book.asks and price >= book.asks[0][0]:
                price = book.asks[0][0] - tick
            return price if price >= tick else None
        price = _ceil(reference + offset, tick)
        if book.bids and price <= book.bids[0][0]:
            price = book.bids[0][0] + tick
        return price

    def _amount(self, inst: Instrument, most: int = 100) -> Decimal:
        lot = _ceil(max(inst.min_trade_amount, inst.contract_size), inst.contract_size)
        return lot * self.rng.randint(1, most)

    def _quote(self, name: str, side: str) -> int:
        """Place one post-only quote; 1 if placed."""
        inst = self.engine.instrument(name)
        price = self._price(inst, side)
        if price is None:
            return 0
        try:
            placed = self.engine.place(self.rng.choice(self.accounts), name, side="buy" if side == "buy" else "sell",
                                       order_type="limit", amount=self._amount(inst), price=price, post_only=True,
                                       label="mm")
        except EngineError:
            return 0
        return 1 if placed.order.order_state == "open" else 0  # a quote that would have taken is cancelled

    def _ideal(self, inst: Instrument, side: str) -> Decimal:
        reference, spread, _ = self._reference(inst)
        offset = inst.tick_size * spread
        return reference - offset if side == "buy" else reference + offset

    def _cancel_worst(self, inst: Instrument, orders: list[SimOrder]) -> bool:
        """Cancel the worse placed of two random orders (farther from where a fresh quote would go)."""
        ideal = self._ideal(inst, orders[0].direction)
        first, second = self.rng.choice(orders), self.rng.choice(orders)
        worst = first if abs(first.price - ideal) >= abs(second.price - ideal) else second
        try:
            self.engine.cancel(worst.creator, worst.order_id)
        except EngineError:
            return False
        return True

    def _reprice(self, inst: Instrument, order: SimOrder) -> bool:
        price = self._price(inst, order.direction)
        if price is None:
            return False
        try:
            self.engine.edit(order.creator, order.order_id, amount=order.filled_amount + self._amount(inst),
                             price=price)
        except EngineError:
            return False
        return True

    def _cross(self, inst: Instrument, bids: list[SimOrder], asks: list[SimOrder]) -> bool:
        """Take (part of) the best level with an IOC order: a public trade."""
        side = self.rng.choice(("buy", "sell"))
        if len(asks if side == "buy" else bids) <= self.min_levels:
            return False
        book = self.engine.book(inst.name, 1)
        levels = book.asks if side == "buy" else book.bids
        if not levels:
            return False
        price, total = levels[0]
        amount = min(total, self._amount(inst, 20))
        try:
            self.engine.place(self.rng.choice(self.accounts), inst.name, side="buy" if side == "buy" else "sell",
                              order_type="limit", amount=amount, price=price, time_in_force="IOC", label="mm-take")
        except EngineError:
            return False
        return True
