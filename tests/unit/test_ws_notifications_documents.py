"""The document's notification examples, as the consumers read them (`parse_notification` and the models).

Each case is an example under tests/resources/syndr/ (extracted from the document), where the example and
its table disagree; the adapter reads both forms.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from portico.venues.syndr import models as m

RESOURCES = Path(__file__).resolve().parents[1] / "resources" / "syndr"


def frame(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((RESOURCES / name).read_text())
    return loaded


def encoded(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode()


def test_the_user_positions_example_is_a_position_update() -> None:
    """Line 9411: only `fills_manager` (the table's `updated_position` is absent) and "ETH_PERP"."""
    update = m.parse_notification(encoded(frame("channel.user.positions.notification.json"))).data
    assert isinstance(update, m.PositionUpdate)
    assert update.instrument_name == "ETH-PERP"
    assert update.position == m.Position(instrument_name="ETH-PERP", direction="buy", size=Decimal(20),
                                         average_price=Decimal(12), realized_pnl=Decimal(200))


def test_a_short_in_fills_manager_is_a_sell() -> None:
    message = frame("channel.user.positions.notification.json")
    message["params"]["data"]["fills_manager"]["latest_size"] = -3
    update = m.parse_notification(encoded(message)).data
    assert isinstance(update, m.PositionUpdate) and update.position is not None
    assert (update.position.direction, update.position.size) == ("sell", Decimal(-3))


def test_updated_position_wins_over_fills_manager() -> None:
    message = frame("channel.user.positions.notification.json")
    message["params"]["data"]["updated_position"] = {"direction": "sell", "size": "-2", "average_price": "3000",
                                                     "last_update_timestamp": 1722419045123}
    update = m.parse_notification(encoded(message)).data
    assert isinstance(update, m.PositionUpdate) and update.position is not None
    assert (update.position.size, update.position.last_update_timestamp) == (Decimal(-2), 1722419045123)


def test_fills_manager_without_a_size_is_no_position() -> None:
    message = frame("channel.user.positions.notification.json")
    message["params"]["data"]["fills_manager"] = {"pending_fills": []}
    update = m.parse_notification(encoded(message)).data
    assert isinstance(update, m.PositionUpdate) and update.position is None


@pytest.mark.parametrize("name", ["channel.user.orders.raw.notification.json",
                                  "channel.user.orders.ALL.raw.notification.json"])
def test_an_order_signature_typed_as_the_tables_number_is_read(name: str) -> None:
    """Lines 8930 / 9206: `signature number`; the examples send a hex string. Either is read."""
    message = frame(name)
    message["params"]["data"]["order"]["signature"] = 1234567890123456789
    update = m.parse_notification(encoded(message)).data
    assert isinstance(update, m.OrderUpdate) and update.order.signature == "1234567890123456789"
    assert isinstance(m.parse_notification(encoded(frame(name))).data, m.OrderUpdate)


@pytest.mark.parametrize("name", ["channel.user.orders.raw.notification.json",
                                  "channel.user.orders.ALL.raw.notification.json"])
def test_the_order_examples_seconds_are_milliseconds(name: str) -> None:
    """The examples' 1722419045 (seconds) where the table says milliseconds: scaled, as every timestamp is."""
    update = m.parse_notification(encoded(frame(name))).data
    assert isinstance(update, m.OrderUpdate)
    order = update.order
    assert (order.creation_timestamp, order.last_update_timestamp, order.expiration) == \
        (1722419045000, 1722419045000, 1722505445000)
