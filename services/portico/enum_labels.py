"""Enum values as the terminal commands show them, including values newer than this client.

proto3 enums are open: a server deployed after this client may send a number the client's compiled
contract does not name (a new order state, say). A command must still show what it got (an order
already placed, an account's summary), so such a value is shown as its number, never a traceback.
"""

from __future__ import annotations

from google.protobuf.descriptor import EnumDescriptor

__all__ = ["enum_label"]


def enum_label(enum: EnumDescriptor, number: int) -> str:
    """The value's name without its type's prefix (`ORDER_STATE_OPEN` -> `OPEN`, 0 -> `UNSPECIFIED`); the number
    itself for a value newer than this client."""
    value = enum.values_by_number.get(number)
    if value is None:
        return str(number)
    unspecified = enum.values_by_number.get(0)
    prefix = unspecified.name.removesuffix("UNSPECIFIED") if unspecified is not None else ""
    return str(value.name).removeprefix(prefix)
