"""Syndr order-book notification parsing: frames/s on one core.

    python -m tests.bench.bench_syndr_parse [--out bench-results/syndr_parse.json] [--seconds 1] [--repeats 5]

``book.*.raw`` notifications arrive at thousands a second, and the market-data
service parses every one, so this measures what that costs next to the bare
decoders. Frames are synthetic ``book.ETH-PERP.15.raw`` changes with 15 levels a
side spelled like the venue's ("3114.9", "0.821"), each frame different so no
cache flatters the result. Measured, in the same process, pinned to one CPU:

* ``orjson_decode``: ``orjson.loads`` only, the floor;
* ``parse_book_change``: orjson plus the typed ``BookChange`` with Decimal levels
  and the raw strings (what the service uses);
* ``parse_notification_book``: the same frame through the generic dispatcher;
* ``stdlib_json_decode``: ``json.loads`` only, for scale.

Figures are medians of ``--repeats`` runs of ``--seconds`` each; the garbage
collector stays on, as in the service. The target is 25,000 typed
notifications/s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from portico.venues.syndr.models import parse_book_change, parse_notification

TARGET_FPS = 25_000
LEVELS = 15
FRAMES = 2_000


def make_frames(count: int, seed: int = 7) -> list[bytes]:
    """Distinct book change frames with venue-like decimal strings."""
    rng = random.Random(seed)
    frames = []
    for i in range(count):
        mid = 3112.0 + rng.uniform(-50, 50)
        best_ask = round(mid + 0.1 * rng.randint(1, 5), 1)
        best_bid = round(mid - 0.1 * rng.randint(1, 5), 1)
        asks = [[f"{best_ask + 0.1 * k:.1f}", f"{rng.uniform(0.001, 40):.3f}"] for k in range(LEVELS)]
        bids = [[f"{best_bid - 0.1 * k:.1f}", f"{rng.uniform(0.001, 40):.3f}"] for k in range(LEVELS)]
        for side in (asks, bids):  # some levels removed, as changes do
            if rng.random() < 0.3:
                side[rng.randrange(LEVELS)][1] = "0"
        frames.append(orjson.dumps({
            "jsonrpc": "2.0",
            "method": "subscription",
            "params": {
                "channel": "book.ETH-PERP.15.raw",
                "data": {"type": "change", "asks": asks, "bids": bids, "change_id": i + 2, "previous_change_id": i + 1,
                         "instrument_name": "ETH-PERP", "timestamp": str(1722850180027 + i)},
            },
        }))
    return frames


def pin_to_one_cpu() -> int | None:
    """Pin the process to one CPU (the last one) so figures are one core's; None where unsupported."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    cpu = max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return cpu


def frames_per_second(fn: Callable[[bytes], Any], frames: list[bytes], seconds: float) -> float:
    """Call `fn` over the frames, round after round, for about `seconds`; return frames/s."""
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for frame in frames:
            fn(frame)
        done += len(frames)
        now = time.perf_counter()
        if now >= deadline:
            return done / (now - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    cpu = pin_to_one_cpu()
    frames = make_frames(FRAMES)
    change = parse_book_change(frames[0])
    assert len(change.bids) == LEVELS and len(change.asks_raw) == LEVELS

    cases: dict[str, Callable[[bytes], Any]] = {
        "orjson_decode": orjson.loads,
        "parse_book_change": parse_book_change,
        "parse_notification_book": parse_notification,
        "stdlib_json_decode": json.loads,
    }
    for fn in cases.values():  # warm up
        frames_per_second(fn, frames, 0.2)
    runs: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.repeats):
        for name, fn in cases.items():  # interleaved, so drift in machine load hits every case alike
            runs[name].append(frames_per_second(fn, frames, args.seconds))
    medians = {name: statistics.median(values) for name, values in runs.items()}

    typed = medians["parse_book_change"]
    report = {
        "benchmark": "syndr_parse",
        "when": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "python": platform.python_version(),
        "orjson": orjson.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, pinned to CPU {cpu}",
        "frame": {"channel": "book.ETH-PERP.15.raw", "levels_per_side": LEVELS,
                  "bytes": round(statistics.mean(len(f) for f in frames)), "distinct_frames": FRAMES},
        "seconds_per_run": args.seconds,
        "repeats": args.repeats,
        "frames_per_second": {name: {"median": round(value), "runs": [round(v) for v in runs[name]]}
                              for name, value in medians.items()},
        "microseconds_per_frame": {name: round(1e6 / value, 2) for name, value in medians.items()},
        "ratios": {
            "parse_book_change_vs_orjson_decode": round(typed / medians["orjson_decode"], 3),
            "parse_book_change_vs_stdlib_json_decode": round(typed / medians["stdlib_json_decode"], 3),
            "orjson_vs_stdlib_json_decode": round(medians["orjson_decode"] / medians["stdlib_json_decode"], 3),
        },
        "target_frames_per_second": TARGET_FPS,
        "meets_target": typed >= TARGET_FPS,
    }
    text = json.dumps(report, indent=2) + "\n"
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    sys.stdout.write(text)
    return 0 if report["meets_target"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
