"""Simulator core benchmark: book changes per second from the market maker and raw engine operations.

    python -m tests.bench.bench_sim_engine [--seconds 3] [--repeats 3] [--out bench-results/sim_engine.json]

One process, one core, no I/O. For each catalogue size (the default
catalogue and 10,000 instruments) it seeds the market maker, then calls
`step(now_ms, 50)` in a loop (the server's timer hands out budgets like that)
and counts BookChanged events. Three listener set-ups show what the events
cost: none; counting only; and rendering every event to its wire dict and
JSON (roughly what the server's notifier pays before it sends a frame).
A second section times bare engine calls on one instrument: resting limit
orders, cancels, and crossing orders that trade. Figures are medians over
`--repeats` runs; CPU time per change is steadier than wall time on a busy
machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from collections.abc import Callable
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from portico.sim.engine import (
    BookChanged,
    Engine,
    Event,
    OrderUpdated,
    PositionChanged,
    PublicTrade,
    UserFill,
)
from portico.sim.instruments import default_catalog
from portico.sim.market_maker import MarketMaker

TODAY = date(2026, 11, 21)
START_MS = 1_795_000_000_000


class Clock:
    def __init__(self) -> None:
        self.ms = START_MS

    def __call__(self) -> int:
        return self.ms


def _wire_listener(counter: list[int]) -> Callable[[Event], None]:
    def on_event(event: Event) -> None:
        if isinstance(event, BookChanged):
            counter[0] += 1
            orjson.dumps(event.to_wire())
        elif isinstance(event, PublicTrade):
            orjson.dumps(event.to_wire())
        elif isinstance(event, OrderUpdated):
            orjson.dumps(event.order_wire)
        elif isinstance(event, UserFill):
            orjson.dumps(event.fill_wire)
        elif isinstance(event, PositionChanged):
            orjson.dumps(event.position_wire)

    return on_event


def _count_listener(counter: list[int]) -> Callable[[Event], None]:
    def on_event(event: Event) -> None:
        if type(event) is BookChanged:
            counter[0] += 1

    return on_event


def market_maker_run(instruments: int, listener: str, seconds: float, seed: int) -> dict[str, Any]:
    clock = Clock()
    base = len(default_catalog(today=TODAY))
    engine = Engine(default_catalog(max(instruments - base, 0), today=TODAY), now_ms=clock,
                    rng=random.Random(seed))
    counter = [0]
    if listener == "count":
        engine.subscribe(_count_listener(counter))
    elif listener == "wire":
        engine.subscribe(_wire_listener(counter))
    maker = MarketMaker(engine, rng=random.Random(seed + 1))
    started = time.perf_counter()
    seeded = maker.seed()
    seed_seconds = time.perf_counter() - started
    changes_before = sum(engine.book(i.name).change_id for i in engine.instruments())
    actions = 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    while time.perf_counter() - wall0 < seconds:
        clock.ms += 10
        actions += maker.step(clock.ms, 50)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    changes = sum(engine.book(i.name).change_id for i in engine.instruments()) - changes_before
    trades = sum(len(engine.public_trades(i.name, 1000)) for i in engine.instruments())
    return {"instruments": len(engine.instruments()), "listener": listener, "seed_orders": seeded,
            "seed_seconds": round(seed_seconds, 3), "actions": actions, "book_changes": changes,
            "book_changes_per_s": round(changes / wall), "cpu_us_per_change": round(cpu / changes * 1e6, 1),
            "public_trades_kept": trades}


def engine_run(seconds: float, seed: int) -> dict[str, Any]:
    """Bare calls on ETH-PERP: rest a limit order, cancel it; and orders that cross and trade."""
    clock = Clock()
    engine = Engine(default_catalog(today=TODAY), now_ms=clock, rng=random.Random(seed))
    for account in ("0xa", "0xb"):
        engine.open_account(account, {"USDT": Decimal(10) ** 12})
    rng = random.Random(seed)
    tick = Decimal("0.1")
    results: dict[str, Any] = {}

    count, wall0 = 0, time.perf_counter()
    while time.perf_counter() - wall0 < seconds:
        price = Decimal(2900) + tick * rng.randint(0, 500)
        order = engine.place("0xa", "ETH-PERP", side="buy", order_type="limit", amount=Decimal("0.01"), price=price)
        engine.cancel("0xa", order.order.order_id)
        count += 2
    results["place_and_cancel_ops_per_s"] = round(count / (time.perf_counter() - wall0))

    count, wall0 = 0, time.perf_counter()
    while time.perf_counter() - wall0 < seconds:
        engine.place("0xa", "ETH-PERP", side="sell", order_type="limit", amount=Decimal("0.01"), price=Decimal(3000))
        engine.place("0xb", "ETH-PERP", side="buy", order_type="limit", amount=Decimal("0.01"), price=Decimal(3000))
        count += 2
    results["resting_then_crossing_ops_per_s"] = round(count / (time.perf_counter() - wall0))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[24, 10_000])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    runs: list[dict[str, Any]] = []
    for size in args.sizes:
        for listener in ("none", "count", "wire"):
            samples = [market_maker_run(size, listener, args.seconds, seed) for seed in range(args.repeats)]
            median = dict(samples[0])
            for key in ("book_changes_per_s", "cpu_us_per_change", "seed_seconds"):
                median[key] = statistics.median(s[key] for s in samples)
            runs.append(median)
            print(json.dumps(median))
    engine_samples = [engine_run(args.seconds, seed) for seed in range(args.repeats)]
    engine_median = {key: statistics.median(s[key] for s in engine_samples) for key in engine_samples[0]}
    print(json.dumps(engine_median))
    report = {"benchmark": "sim_engine", "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "machine": {"python": platform.python_version(), "processor": platform.processor() or platform.machine()},
              "seconds_per_run": args.seconds, "repeats": args.repeats, "market_maker": runs,
              "engine": engine_median}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
