"""The account service's venue-to-contract conversion: a position's size is absolute and exact."""

from __future__ import annotations

from decimal import Decimal

import pytest

from portico.account.convert import position_proto
from portico.common.v1 import side_pb2
from portico.venues.syndr import models

# More significant digits than the default decimal context (28) keeps: abs() would round them.
SIZE = "123456789012345678901234567890.123456789"


@pytest.mark.parametrize(("direction", "size", "side"), [
    ("sell", "-" + SIZE, side_pb2.SIDE_SELL),  # a venue that signs a short's size
    ("sell", SIZE, side_pb2.SIDE_SELL),
    ("buy", SIZE, side_pb2.SIDE_BUY),
])
def test_a_positions_size_is_absolute_with_every_digit(direction: str, size: str, side: int) -> None:
    position = models.Position(instrument_name="ETH-PERP", direction=direction, size=Decimal(size),
                               average_price=Decimal("2380.5"))
    message = position_proto("syndr", "0x" + "12" * 20, position)
    assert (message.direction, message.size) == (side, SIZE)
