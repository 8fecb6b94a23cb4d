"""Request parameters as Syndr's wire wants them: decimals as exact JSON numbers.

The document types `amount` and `price` as numbers (private/edit's table: `amount true number`,
`price false number`; the private/buy and private/sell examples send `"price": 3500, "amount": 1`).
A Decimal goes out as its own digits (`orjson.Fragment`), never through a float, and a request
journaled that way is read back the same way, so a resend is the same bytes.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import orjson

from portico.runtime.decimals import format_decimal

__all__ = ["number", "params_from_json"]

# The integers orjson writes itself; any other goes back out as its literal.
_INT_MIN, _INT_END = -(1 << 63), 1 << 64


def number(value: Decimal) -> orjson.Fragment:
    """`value` as a JSON number with exactly its digits (`Decimal("0.001")` -> `0.001`)."""
    return orjson.Fragment(format_decimal(value))


def _integer(literal: str) -> int | orjson.Fragment:
    """An integer literal: a Python int where orjson writes it back as the same text, else the literal itself
    (`18446744073709551616`, an amount past 64 bits; `-0`)."""
    value = int(literal)
    return value if _INT_MIN <= value < _INT_END and str(value) == literal else orjson.Fragment(literal)


def params_from_json(body: bytes) -> dict[str, Any]:
    """Parameters serialised earlier (a journaled request), ready to be serialised again to the same bytes.

    orjson would read `0.1000000000000000001` as a float and write `0.1`, and refuses integers past 64 bits: here
    every number with a fraction or an exponent, and every integer orjson cannot write as it was, goes back out as
    its own literal (`orjson.Fragment`), at any depth (nested objects and lists too).
    """
    params: dict[str, Any] = json.loads(body, parse_float=orjson.Fragment, parse_int=_integer)
    return params
