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


def number(value: Decimal) -> orjson.Fragment:
    """`value` as a JSON number with exactly its digits (`Decimal("0.001")` -> `0.001`)."""
    return orjson.Fragment(format_decimal(value))


def params_from_json(body: bytes) -> dict[str, Any]:
    """Parameters serialised earlier (a journaled request), ready to be serialised again to the same numbers.

    orjson would read `0.1000000000000000001` as a float and write `0.1`; here a number with a fraction or an
    exponent is read as a Decimal and written back as the same digits.
    """
    params: dict[str, Any] = json.loads(body, parse_float=Decimal)
    return {key: orjson.Fragment(format(value, "f")) if isinstance(value, Decimal) else value
            for key, value in params.items()}
