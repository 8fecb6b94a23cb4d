"""Fault knobs, so tests can make the venue misbehave the way real ones do.

Set through `Simulator.faults` in-process or `POST /admin/faults` when the
simulator runs on its own. Every decision uses the simulator's seeded RNG.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = ["EXAMPLE_SHAPES", "Faults"]

EXAMPLE_SHAPES: dict[str, str] = {
    "user.positions": "data is only `fills_manager` and `instrument_name` (the table: `updated_position`, ...)",
    "seconds": "user.orders timestamps and expiration, and user.fills expiration, in seconds (the tables: ms)",
    "fills_channel": "a user.fills.ALL subscriber's frames name the channel user.fills.{instrument}",
}
"""The `example_shapes` knob's values, each an example of the document that its own table contradicts."""


@dataclass
class Faults:
    """What to break. All rates are probabilities per call or per frame."""

    fail_rate: float = 0.0  # answer calls with a JSON-RPC internal error (nothing executed)
    http_5xx_rate: float = 0.0  # answer HTTP calls with 503 (nothing executed)
    http_5xx_next: int = 0  # answer exactly the next N HTTP calls with 503 (deterministic, for tests)
    http_5xx_method: str = ""  # if set, the two knobs above hit only calls of this method (others pass)
    http_hold_next: int = 0  # hold exactly the next N HTTP calls before executing them (a slow path in)
    http_hold_ms: float = 0.0  # ... for this long
    http_hold_method: str = ""  # if set, only calls of this method are held (others pass)
    drop_response_rate: float = 0.0  # execute the call, then lose the response (the caller cannot know)
    delay_ms: float = 0.0  # delay every WebSocket frame (responses and notifications) by this much
    reorder_rate: float = 0.0  # swap a WebSocket notification with the next one
    silent: bool = False  # WebSocket: send nothing at all, not even pongs
    skip_change_ids: dict[str, int] = field(default_factory=dict)  # instrument -> raw book frames to drop
    # (un)subscribe calls naming any of these channels are refused whole, as if the venue no longer knew the
    # channel's instrument (INSTRUMENT_NOT_FOUND), or the channel (INVALID_PARAMS) if it names no instrument
    refuse_channels: list[str] = field(default_factory=list)
    # calls naming one of these instruments (`instrument_name`) are answered INSTRUMENT_NOT_FOUND, as if the venue
    # had removed it while a client still follows it (its channels: `refuse_channels`)
    unknown_instruments: list[str] = field(default_factory=list)
    # Notifications as the document's examples send them where its tables say otherwise (EXAMPLE_SHAPES), so
    # tests can show the adapter copes with a venue that follows its examples.
    example_shapes: list[str] = field(default_factory=list)
    # instrument -> {field: value}: the fields written over that instrument's object in public/get_instruments
    # (and get_instruments_by_currency) answers, a null removing the field (`{"ETH-PERP": {"tick_size": "abc"}}`),
    # so tests can show one unreadable instrument does not spoil the rest of a listing. Set whole (`{}` clears).
    corrupt_instruments: dict[str, dict[str, Any]] = field(default_factory=dict)

    def update(self, changes: dict[str, Any]) -> None:
        """Apply `{"knob": value}`; unknown knobs or bad values raise ValueError."""
        known = {f.name: f for f in fields(self)}
        for name, value in changes.items():
            if name not in known:
                raise ValueError(f"unknown fault knob {name!r}")
            if name == "silent":
                if not isinstance(value, bool):
                    raise ValueError("silent must be true or false")
            elif name.endswith("_method"):
                if not isinstance(value, str):
                    raise ValueError(f"{name} must be a method name")
            elif name.endswith("_next"):
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ValueError(f"{name} must be a non-negative integer")
            elif name in ("refuse_channels", "unknown_instruments"):
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise ValueError(f"{name} must be a list of names")
                value = list(value)
            elif name == "example_shapes":
                if not isinstance(value, list) or not set(value) <= EXAMPLE_SHAPES.keys():
                    raise ValueError(f"example_shapes must be a list of {sorted(EXAMPLE_SHAPES)}")
                value = list(value)
            elif name == "corrupt_instruments":
                if not isinstance(value, dict) or not all(
                        isinstance(overrides, dict) and all(isinstance(k, str) for k in overrides)
                        for overrides in value.values()):
                    raise ValueError("corrupt_instruments must map instrument names to {field: value} objects")
                value = {instrument: dict(overrides) for instrument, overrides in value.items()}
            elif name == "skip_change_ids":
                if not isinstance(value, dict) or not all(isinstance(v, int) and v >= 0 for v in value.values()):
                    raise ValueError("skip_change_ids must map instrument names to counts")
                value = {**self.skip_change_ids, **value}
            else:
                if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                    raise ValueError(f"{name} must be a non-negative number")
                if name.endswith("_rate") and value > 1:
                    raise ValueError(f"{name} must be at most 1")
            setattr(self, name, value)

    def reset(self) -> None:
        for f in fields(self):
            setattr(self, f.name, f.default_factory() if callable(f.default_factory) else f.default)

    def roll(self, rng: random.Random, rate: float) -> bool:
        return rate > 0 and rng.random() < rate

    def take_http_5xx(self, rng: random.Random) -> bool:
        """True if this HTTP call is to be answered 503."""
        if self.http_5xx_next > 0:
            self.http_5xx_next -= 1
            return True
        return self.roll(rng, self.http_5xx_rate)

    def take_http_hold(self, method: object) -> float:
        """Seconds to hold this HTTP call before executing it (0: none)."""
        if self.http_hold_next <= 0 or (self.http_hold_method and method != self.http_hold_method):
            return 0.0
        self.http_hold_next -= 1
        return self.http_hold_ms / 1000

    def take_skip(self, instrument: str) -> bool:
        """True (and count down) if this instrument's next raw book frame is to be dropped."""
        left = self.skip_change_ids.get(instrument, 0)
        if left <= 0:
            return False
        self.skip_change_ids[instrument] = left - 1
        return True

    def corrupt(self, instrument: str, wire: dict[str, Any]) -> dict[str, Any]:
        """`wire` (an instrument's object in a listing) with the `corrupt_instruments` fields written over it."""
        overrides = self.corrupt_instruments.get(instrument)
        if not overrides:
            return wire
        corrupted = {**wire, **overrides}
        return {key: value for key, value in corrupted.items() if value is not None}

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}
