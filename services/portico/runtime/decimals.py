"""Decimal strings in protos <-> `decimal.Decimal` in Python, never floats.

Prices and amounts travel as plain decimal strings ("3114.9", "-0.000025").
Parsing is strict: no exponents, no NaN/Infinity, no whitespace, bounded
length, so that what a venue or caller sent is exactly what is used.
"""

from __future__ import annotations

import re
from decimal import Context, Decimal

from portico.runtime.errors import InvalidArgument

__all__ = ["format_decimal", "parse_decimal", "parse_optional_decimal"]

_DECIMAL_RE = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?|-?\.[0-9]+")  # ASCII digits: `\d` is any script's
MAX_DECIMAL_CHARS = 80


def parse_decimal(value: str, field: str, *, positive: bool = False, non_negative: bool = False) -> Decimal:
    """Parse a decimal string or raise INVALID_ARGUMENT naming `field`."""
    if not isinstance(value, str):
        raise InvalidArgument(field, "must be a decimal string")
    if value == "":
        raise InvalidArgument(field, "is required")
    if len(value) > MAX_DECIMAL_CHARS:
        raise InvalidArgument(field, f"is longer than {MAX_DECIMAL_CHARS} characters")
    if not _DECIMAL_RE.fullmatch(value):
        raise InvalidArgument(field, f"is not a plain decimal number: {value!r}")
    number = Decimal(value)
    if positive and number <= 0:
        raise InvalidArgument(field, "must be greater than zero")
    if non_negative and number < 0:
        raise InvalidArgument(field, "must not be negative")
    return number


def parse_optional_decimal(value: str, field: str, **kwargs: bool) -> Decimal | None:
    """Like `parse_decimal`, but an empty string means "not given"."""
    return None if value == "" else parse_decimal(value, field, **kwargs)


def format_decimal(value: Decimal) -> str:
    """Render a finite Decimal as a plain string without exponent or trailing zeros."""
    if not value.is_finite():
        raise ValueError("cannot format a non-finite decimal")
    if value == 0:
        return "0"
    # normalize() rounds to its context's precision (28 digits by default): give it one holding every digit.
    exact = Context(prec=max(1, len(value.as_tuple().digits)))
    return format(value.normalize(exact), "f")
