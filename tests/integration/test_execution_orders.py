"""OrderManager's journal rules that need no venue: the venue's words on an order, in whatever order they arrive.

A real SQLite journal; the signer, venue and instrument collaborators are not
touched by these paths, so none is given.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from portico.execution.journal import SqliteOrderJournal
from portico.execution.model import JournalEntry, OrderIntent, OrderState
from portico.execution.orders import OrderManager
from portico.runtime.errors import Unavailable
from portico.venues.syndr.constants import ErrorCode
from portico.venues.syndr.errors import SyndrRpcError

ACCOUNT = "0x52908400098527886E0F7030069857D2E4169EE7"


@pytest.fixture
async def orders(tmp_path: Path) -> AsyncIterator[OrderManager]:
    journal = SqliteOrderJournal(tmp_path / "journal.sqlite3")
    await journal.start()
    manager = OrderManager(journal, None, None, None, order_ttl_s=60)  # type: ignore[arg-type]
    await manager.load()
    yield manager
    await journal.aclose()


def venue_order(state: str, updated_ms: int, filled: str, salt: int) -> dict[str, Any]:
    return {"order_id": "0xfeed", "order_state": state, "last_update_timestamp": updated_ms, "filled_amount": filled,
            "amount": "0.002", "price": "1500", "instrument_name": "ETH-PERP", "salt": str(salt)}


async def placed(orders: OrderManager) -> JournalEntry:
    intent = OrderIntent(venue="syndr", account=ACCOUNT, client_order_id="c-1", symbol="ETH-PERP", side="buy",
                         order_type="limit", time_in_force="GTC", post_only=False, reduce_only=False,
                         price=Decimal("1500"), amount=Decimal("0.002"), label="")
    entry = JournalEntry(intent=intent, salt=77, timestamp_ms=1, expiration_ms=2, signer_address="0xsigner",
                         request=orjson.dumps({"salt": 77}))
    return await orders.journal.insert(entry)


async def test_the_placing_answer_does_not_overwrite_a_fill_the_stream_journaled_first(orders: OrderManager) -> None:
    entry = await placed(orders)  # PENDING: the call to the venue is on its way
    filled = venue_order("filled", 1_005, "0.002", entry.salt)
    streamed = await orders.on_venue_order("syndr", ACCOUNT, filled)  # via the order stream
    assert streamed is not None and streamed.state == OrderState.FILLED
    # Then the answer to the placing call arrives, with the older "open", for the entry as it was sent.
    answered = await orders.apply_venue_order(entry, venue_order("open", 1_000, "0", entry.salt))
    stored = await orders.journal.get("syndr", ACCOUNT, "c-1")
    assert stored is not None and stored.state == OrderState.FILLED and answered.state == OrderState.FILLED
    assert orjson.loads(stored.venue_order)["filled_amount"] == "0.002"


async def test_a_newer_answer_still_replaces_an_older_state(orders: OrderManager) -> None:
    entry = await placed(orders)
    opened = await orders.apply_venue_order(entry, venue_order("open", 1_000, "0", entry.salt))
    assert opened.state == OrderState.OPEN
    partly = await orders.on_venue_order("syndr", ACCOUNT, venue_order("open", 1_002, "0.001", entry.salt))
    assert partly is not None and orjson.loads(partly.venue_order)["filled_amount"] == "0.001"
    done = await orders.apply_venue_order(partly, venue_order("filled", 1_004, "0.002", entry.salt))
    assert done.state == OrderState.FILLED


class _AnsweringWith:
    """The venue edge of `_send`: every call answers the JSON-RPC error `code`."""

    def __init__(self, code: int):
        self.code = code

    async def call(self, account: str, method: str, params: Any) -> Any:
        raise SyndrRpcError(self.code, "refused", method=method)


@pytest.mark.parametrize("code", [ErrorCode.SALT_REUSED, ErrorCode.INTERNAL_ERROR])
async def test_an_unknown_outcome_the_venue_answered_wakes_the_reconciler_at_once(orders: OrderManager,
                                                                                  code: int) -> None:
    entry = await placed(orders)
    woken: list[bool] = []
    orders.wake_reconciler = lambda: woken.append(True)
    orders.venue = _AnsweringWith(code)  # type: ignore[assignment]
    with pytest.raises(Unavailable) as raised:
        await orders._send(entry)
    assert raised.value.reason == "ORDER_OUTCOME_UNKNOWN"
    stored = await orders.journal.get("syndr", ACCOUNT, "c-1")
    assert stored is not None and stored.state == OrderState.UNKNOWN
    assert woken == [True]  # as after a dropped connection: not left for the loop's next round
