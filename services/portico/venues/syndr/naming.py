"""Syndr's instrument naming, shared by the adapter (reference data parses names) and the simulator.

Names follow the document's "Naming" section: ``ETH-PERP``; futures
``BTC-DMMMYY`` (``BTC-5AUG26``: day without a leading zero, first three
letters of the English month, two-digit year); options
``ETH-DMMMYY-STRIKE-K`` with ``K`` = ``C`` or ``P``. Expiries are at 08:00 UTC
on the named day, as on Deribit-style venues (the document does not say).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Literal

from portico.venues.syndr.constants import MONTHS, InstrumentKind

__all__ = [
    "EXPIRY_HOUR_UTC",
    "OptionType",
    "expiry_ms",
    "fmt_decimal",
    "instrument_name",
    "parse_instrument_name",
]

OptionType = Literal["call", "put"]

EXPIRY_HOUR_UTC = 8
"""Dated instruments expire at 08:00 UTC on the day in their name."""


_BASE_RE = re.compile(r"[A-Z][A-Z0-9]*")
_DATE_RE = re.compile(r"([1-9]|[12]\d|3[01])([A-Z]{3})(\d{2})")
_STRIKE_RE = re.compile(r"(0|[1-9]\d*)(\.\d*[1-9])?")
_OPTION_LETTER: dict[str, OptionType] = {"C": "call", "P": "put"}


def fmt_decimal(value: Decimal) -> str:
    """Render a Decimal the way Syndr's documents do: plain, no exponent, no trailing zeros ("0.1", "2200")."""
    if not value:
        return "0"
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def expiry_ms(day: date) -> int:
    """Milliseconds since the epoch at which an instrument dated `day` expires."""
    moment = datetime(day.year, day.month, day.day, EXPIRY_HOUR_UTC, tzinfo=UTC)
    return int(moment.timestamp()) * 1000


def _date_code(day: date) -> str:
    return f"{day.day}{MONTHS[day.month - 1]}{day.year % 100:02d}"


def instrument_name(
    base: str,
    kind: InstrumentKind | str,
    expiry: date | None = None,
    strike: Decimal | None = None,
    option_type: str | None = None,
) -> str:
    """Build a Syndr instrument name; raise ValueError when the parts do not make one.

    `option_type` is "call" / "put" (or the name's own "C" / "P").
    """
    kind = InstrumentKind(kind)
    if not _BASE_RE.fullmatch(base):
        raise ValueError(f"base currency must be upper-case letters and digits: {base!r}")
    if kind is InstrumentKind.PERPETUAL:
        if expiry is not None or strike is not None or option_type is not None:
            raise ValueError("a perpetual has no expiry, strike or option type")
        return f"{base}-PERP"
    if expiry is None:
        raise ValueError(f"a {kind.value} needs an expiry date")
    if not 2000 <= expiry.year <= 2099:
        raise ValueError(f"expiry year out of range: {expiry.year}")
    if kind is InstrumentKind.FUTURE:
        if strike is not None or option_type is not None:
            raise ValueError("a future has no strike or option type")
        return f"{base}-{_date_code(expiry)}"
    if strike is None or not strike.is_finite() or strike <= 0:
        raise ValueError(f"an option needs a positive strike: {strike!r}")
    letter = {"call": "C", "put": "P", "C": "C", "P": "P"}.get(option_type or "")
    if letter is None:
        raise ValueError(f"option type must be call or put: {option_type!r}")
    return f"{base}-{_date_code(expiry)}-{fmt_decimal(strike)}-{letter}"


def parse_instrument_name(name: str) -> tuple[str, InstrumentKind, date | None, Decimal | None, OptionType | None]:
    """Split a Syndr instrument name into (base, kind, expiry date, strike, option type).

    Only the canonical spelling is accepted (no leading zeros in the day or the
    strike, upper case), so that `instrument_name(*parse_instrument_name(n)) == n`.
    Raises ValueError for anything else.
    """
    parts = name.split("-")
    if len(parts) < 2 or not _BASE_RE.fullmatch(parts[0]):
        raise ValueError(f"malformed instrument name: {name!r}")
    base = parts[0]
    if len(parts) == 2 and parts[1] == "PERP":
        return base, InstrumentKind.PERPETUAL, None, None, None
    day = _parse_date(parts[1], name)
    if len(parts) == 2:
        return base, InstrumentKind.FUTURE, day, None, None
    if len(parts) != 4 or not _STRIKE_RE.fullmatch(parts[2]) or parts[3] not in _OPTION_LETTER:
        raise ValueError(f"malformed instrument name: {name!r}")
    strike = Decimal(parts[2])
    if strike <= 0:
        raise ValueError(f"option strike must be positive: {name!r}")
    return base, InstrumentKind.OPTION, day, strike, _OPTION_LETTER[parts[3]]


def _parse_date(code: str, name: str) -> date:
    match = _DATE_RE.fullmatch(code)
    if match is None or match.group(2) not in MONTHS:
        raise ValueError(f"malformed expiry in instrument name: {name!r}")
    try:
        return date(2000 + int(match.group(3)), MONTHS.index(match.group(2)) + 1, int(match.group(1)))
    except ValueError:
        raise ValueError(f"no such expiry date in instrument name: {name!r}") from None
