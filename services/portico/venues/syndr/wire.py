"""Request parameters as Syndr's wire wants them: decimals as exact JSON numbers.

The document types `amount` and `price` as numbers (private/edit's table: `amount true number`,
`price false number`; the private/buy and private/sell examples send `"price": 3500, "amount": 1`).
A Decimal goes out as its own digits (`orjson.Fragment`), never through a float. A request journaled
that way is sent again as its bytes (`SyndrHttpClient.call` takes the serialised object), never
parsed back into Python numbers.
"""

from __future__ import annotations

from decimal import Decimal

import orjson

from portico.runtime.decimals import format_decimal

__all__ = ["number"]


def number(value: Decimal) -> orjson.Fragment:
    """`value` as a JSON number with exactly its digits (`Decimal("0.001")` -> `0.001`)."""
    return orjson.Fragment(format_decimal(value))
