"""Private notifications in the shapes of the document's examples, where its tables say otherwise.

The simulator follows the tables; its `example_shapes` fault knob sends what the
examples show instead, since the examples read as captured from the venue:

- user.positions (document line 9411): `{"fills_manager": {...}, "instrument_name": "ETH_PERP"}`, no
  `updated_position` (the table, 9433);
- user.orders (8859, 9135): `creation_timestamp` / `last_update_timestamp` / `expiration` in seconds
  (the table, 8919-8922: milliseconds);
- user.fills.ALL (8604): the frame names `user.fills.ETH-PERP`, not the channel subscribed.

Execution compares an update in seconds with an answer in milliseconds in one unit (`stored_is_newer`), and
the WebSocket client hands a frame named after one instrument to the ALL channel's subscribers too.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any, cast

import pytest
from tests.support.syndr_account import SyndrAccount

from portico.account.positions import PositionFeed
from portico.common.v1 import side_pb2
from portico.execution.orders import stored_is_newer
from portico.runtime.fanout import StreamConsumer
from portico.sim.server import SimConfig, Simulator
from portico.venues.accounts import SyndrAccounts
from portico.venues.syndr import models
from portico.venues.syndr.http import SyndrHttpClient
from portico.venues.syndr.ws import Message, Subscription, SyndrWebSocket


@pytest.fixture(scope="module")
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimConfig(port=0, seed=17, book_changes_per_second=200)) as simulator:
        yield simulator


@pytest.fixture
async def shapes(sim: Simulator) -> AsyncIterator[None]:
    yield
    sim.faults.reset()


async def take(private: SyndrHttpClient, public: SyndrHttpClient, account: SyndrAccount, side: str = "buy",
               amount: str = "0.01") -> dict[str, Any]:
    """An IOC order of ours that fills against the market maker; the venue's answer."""
    book = models.parse_order_book((await public.call("public/get_order_book",
                                                      {"instrument_name": "ETH-PERP"})).result)
    if side == "buy":
        assert book.best_ask_price is not None
        price = book.best_ask_price + 50
    else:
        assert book.best_bid_price is not None
        price = book.best_bid_price - 50
    result = (await private.call(f"private/{side}", account.order("ETH-PERP", side, amount, str(price),
                                                                  time_in_force="IOC"))).result
    return cast(dict[str, Any], result["order"])


async def first_message(subscription: Subscription, timeout_s: float = 5.0) -> Message:
    async def find() -> Message:
        async for event in subscription:
            if isinstance(event, Message):
                return event
        raise AssertionError("subscription ended")

    return await asyncio.wait_for(find(), timeout_s)


async def test_the_position_stream_follows_the_examples_user_positions(
        sim: Simulator, shapes: None, account: SyndrAccount, public: SyndrHttpClient,
        private: SyndrHttpClient) -> None:
    """The example carries the position only in `fills_manager`: the account's position stream still moves."""
    sim.faults.update({"example_shapes": ["user.positions"]})
    ws = SyndrWebSocket(sim.ws_url, credentials=account.credentials)
    feed = PositionFeed("syndr", account.address, ws, cast(SyndrAccounts, None))  # no catch-up here
    consumer = StreamConsumer("positions")
    try:
        await feed.start()
        feed.add(consumer)
        await take(private, public, account, "sell", "0.02")
        updates = await asyncio.wait_for(consumer.batch(), 5)
    finally:
        await feed.aclose()
    position = updates[0].position
    assert (position.symbol, position.direction, Decimal(position.size)) == ("ETH-PERP", side_pb2.SIDE_SELL,
                                                                             Decimal("0.02"))
    assert Decimal(position.average_price) > 0


async def test_the_examples_user_positions_frame_parses_to_a_position(
        sim: Simulator, shapes: None, account: SyndrAccount, public: SyndrHttpClient,
        private: SyndrHttpClient) -> None:
    sim.faults.update({"example_shapes": ["user.positions"]})
    async with SyndrWebSocket(sim.ws_url, credentials=account.credentials) as ws:
        await ws.start()
        positions = await ws.subscribe(["user.positions"])
        await take(private, public, account, "buy", "0.01")
        message = await first_message(positions)
    assert set(message.data) == {"fills_manager", "instrument_name"}
    update = models.parse_notification(message.raw).data
    assert isinstance(update, models.PositionUpdate) and update.position is not None
    assert (update.position.direction, update.position.size) == ("buy", Decimal("0.01"))


async def test_an_order_update_in_seconds_is_not_older_than_the_answer_in_ms(
        sim: Simulator, shapes: None, account: SyndrAccount, public: SyndrHttpClient,
        private: SyndrHttpClient) -> None:
    """The journal holds private/buy's answer (ms); the stream's update of that order (seconds) is as new."""
    sim.faults.update({"example_shapes": ["seconds"]})
    async with SyndrWebSocket(sim.ws_url, credentials=account.credentials) as ws:
        await ws.start()
        orders = await ws.subscribe(["user.orders.ALL.raw"])
        book = models.parse_order_book((await public.call("public/get_order_book",
                                                          {"instrument_name": "ETH-PERP"})).result)
        assert book.best_bid_price is not None
        placed = (await private.call("private/buy", account.order(
            "ETH-PERP", "buy", "0.01", str(book.best_bid_price - 100), post_only=True))).result["order"]
        await first_message(orders)  # its "open" echo
        cancelled = await private.call("private/cancel", {"instrument_name": "ETH-PERP",
                                                          "order_id": placed["order_id"]})
        update = (await first_message(orders)).data["order"]
    assert update["order_state"] == "cancelled" and update["last_update_timestamp"] < 10**11  # seconds
    assert models.parse_order(update).last_update_timestamp // 1000 == \
        models.parse_order(cancelled.result).last_update_timestamp // 1000
    assert not stored_is_newer(placed, update)


async def test_a_user_fills_all_subscriber_gets_frames_named_after_the_instrument(
        sim: Simulator, shapes: None, account: SyndrAccount, public: SyndrHttpClient,
        private: SyndrHttpClient) -> None:
    sim.faults.update({"example_shapes": ["fills_channel"]})
    async with SyndrWebSocket(sim.ws_url, credentials=account.credentials) as ws:
        await ws.start()
        fills = await ws.subscribe(["user.fills.ALL"])
        taker = await take(private, public, account)
        message = await first_message(fills, timeout_s=2)
    assert message.channel == "user.fills.ETH-PERP"
    assert models.parse_user_trade(message.data).incoming_order_id == taker["order_id"]


def test_the_example_shapes_knob_names_only_known_examples(sim: Simulator, shapes: None) -> None:
    with pytest.raises(ValueError, match="example_shapes"):
        sim.faults.update({"example_shapes": ["user.orders"]})
    sim.faults.update({"example_shapes": ["seconds", "fills_channel"]})
    assert sim.faults.to_dict()["example_shapes"] == ["seconds", "fills_channel"]
