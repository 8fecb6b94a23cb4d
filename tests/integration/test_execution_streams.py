"""StreamOrderUpdates against a real simulator, OpenBao, signer, reference data and journal: a journal outage while
the venue notifies, and an API key rotated while the account's WebSocket is up."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from tests.support.execution import ExecutionStack, RunningExecution, resting_bid, rotate_api_key, running_execution
from tests.support.waiting import until

from portico.common.v1 import side_pb2
from portico.execution import streams
from portico.execution.model import OrderState
from portico.execution.v1 import execution_service_pb2 as pb
from portico.execution.v1 import order_pb2
from portico.runtime.client import open_channel
from portico.runtime.lifecycle import cancel_and_wait
from portico.sim.server import SimConfig, Simulator
from portico.venues.syndr.http import SyndrHttpClient

SYMBOL = "ETH-PERP"


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimConfig(port=0, seed=11, book_changes_per_second=50, market_maker_instruments=(SYMBOL,),
                                   rate_limit_capacity=100_000, rate_limit_refill_per_s=100_000)) as simulator:
        yield simulator


def place_request(stack: ExecutionStack, client_order_id: str, price: str) -> pb.PlaceOrderRequest:
    return pb.PlaceOrderRequest(venue="syndr", account=stack.account.address, symbol=SYMBOL, side=side_pb2.SIDE_BUY,
                                type=order_pb2.ORDER_TYPE_LIMIT, amount="0.1", price=price,
                                client_order_id=client_order_id)


class OrderStream:
    """One StreamOrderUpdates call, collected in the background."""

    def __init__(self, running: RunningExecution, channel: grpc.aio.Channel):
        self.updates: list[pb.OrderUpdate] = []
        stub = running.stub(channel)
        request = pb.StreamOrderUpdatesRequest(venue="syndr", account=running.stack.account.address)

        async def follow() -> None:
            async for message in stub.StreamOrderUpdates(request, metadata=running.metadata("read")):
                self.updates.extend(message.updates)

        self.task = asyncio.create_task(follow())

    def has(self, order_id: str, state: int) -> bool:
        return any(u.order.order_id == order_id and u.order.state == state for u in self.updates)

    def contiguous(self) -> bool:
        sequences = [u.sequence for u in self.updates]
        return sequences == list(range(sequences[0], sequences[0] + len(sequences)))


async def until_true(check: Callable[[], Awaitable[bool]], timeout_s: float = 20.0) -> None:
    """`until` for a check that has to await."""
    async with asyncio.timeout(timeout_s):
        while not await check():  # noqa: ASYNC110 - polls state that no event announces
            await asyncio.sleep(0.05)


async def feed_of(running: RunningExecution) -> Any:
    key = ("syndr", running.stack.account.address.lower())
    await until(lambda: key in running.app.feeds._feeds)
    return running.app.feeds._feeds[key]


async def test_the_stream_names_our_orders_by_their_client_order_id(stack: ExecutionStack) -> None:
    """The venue's echo of an order just placed arrives after PlaceOrder journaled that very state; its update
    still carries the client order id (before: empty, since nothing new was journaled)."""
    async with running_execution(stack) as running, open_channel(running.target) as channel:
        stream = OrderStream(running, channel)
        try:
            await feed_of(running)
            placed = await running.stub(channel).PlaceOrder(place_request(stack, "named-1", resting_bid(stack.sim)),
                                                            metadata=running.metadata())
            await until(lambda: stream.has(placed.order.order_id, order_pb2.ORDER_STATE_OPEN))
            [update] = [u for u in stream.updates if u.order.order_id == placed.order.order_id]
            assert update.order.client_order_id == "named-1"
            assert update.order.salt == placed.order.salt
        finally:
            await cancel_and_wait(stream.task)


async def test_a_journal_outage_costs_the_stream_no_update_and_the_journal_catches_up(
        stack: ExecutionStack, monkeypatch: pytest.MonkeyPatch) -> None:
    """The venue cancels a resting order while the journal is down: the consumer still gets CANCELLED with the
    next sequence (before: no update and no sequence consumed), and the journal reaches CANCELLED once it is back
    (before: it stayed OPEN, since the reconciler only looks at unresolved entries)."""
    monkeypatch.setattr(streams, "_JOURNAL_RETRY_S", 0.1, raising=False)
    sim = stack.sim
    address = stack.account.address
    async with running_execution(stack) as running, open_channel(running.target) as channel:
        stream = OrderStream(running, channel)
        try:
            await feed_of(running)
            placed = await running.stub(channel).PlaceOrder(place_request(stack, "rest-1", resting_bid(sim)),
                                                            metadata=running.metadata())
            order_id = placed.order.order_id
            await until(lambda: stream.has(order_id, order_pb2.ORDER_STATE_OPEN))

            journal = running.app.journal
            real_find_order = journal.find_order

            async def journal_down(*args: Any) -> Any:
                raise sqlite3.OperationalError("disk I/O error")

            monkeypatch.setattr(journal, "find_order", journal_down)
            async with SyndrHttpClient(sim.http_url, credentials=stack.account.credentials) as venue:
                await venue.call("private/cancel", {"instrument_name": SYMBOL, "order_id": order_id})  # not Portico
            await until(lambda: stream.has(order_id, order_pb2.ORDER_STATE_CANCELLED), timeout_s=20)
            assert stream.contiguous()
            entry = await journal.get("syndr", address, "rest-1")
            assert entry is not None and entry.state == OrderState.OPEN  # the journal is still down

            monkeypatch.setattr(journal, "find_order", real_find_order)

            async def journal_cancelled() -> bool:
                entry = await journal.get("syndr", address, "rest-1")
                return entry is not None and entry.state == OrderState.CANCELLED

            await until_true(journal_cancelled)
            assert [u.order.state for u in stream.updates if u.order.order_id == order_id] == [
                order_pb2.ORDER_STATE_OPEN, order_pb2.ORDER_STATE_CANCELLED]
        finally:
            await cancel_and_wait(stream.task)


async def test_a_rotated_api_key_reauthenticates_the_feed_and_the_stream_goes_on(stack: ExecutionStack) -> None:
    """The account's API key is replaced (new key in Vault, old one deactivated at the venue) while the feed's
    WebSocket is up; then the venue drops the socket. Re-authenticating with the old key is refused for ever, so
    before the fix the stream went silent; now the socket re-authenticates with the key Vault has, catches up,
    and the same stream goes on with contiguous sequences."""
    sim = stack.sim
    address = stack.account.address
    async with running_execution(stack, {"PORTICO_EXECUTION_CREDENTIALS_CACHE_SECONDS": "1"}) as running, \
            open_channel(running.target) as channel:
        stream = OrderStream(running, channel)
        stub = running.stub(channel)
        try:
            feed = await feed_of(running)
            first = await stub.PlaceOrder(place_request(stack, "before-1", resting_bid(sim)),
                                          metadata=running.metadata())
            await until(lambda: stream.has(first.order.order_id, order_pb2.ORDER_STATE_OPEN))

            new = await rotate_api_key(stack)
            assert await sim.close_websockets() >= 1

            # The HTTP side picks the new record up within the cache time; so must the feed.
            async def rotated() -> bool:
                return (await running.app.venue.session(address)).record.credentials == new

            await until_true(rotated)
            second = await stub.PlaceOrder(place_request(stack, "after-1", resting_bid(sim)),
                                           metadata=running.metadata())
            await stub.CancelOrder(pb.CancelOrderRequest(venue="syndr", account=address,
                                                         order_id=first.order.order_id), metadata=running.metadata())
            await until(lambda: stream.has(second.order.order_id, order_pb2.ORDER_STATE_OPEN), timeout_s=30)
            await until(lambda: stream.has(first.order.order_id, order_pb2.ORDER_STATE_CANCELLED), timeout_s=30)
            assert stream.contiguous()
            # The venue's own notification over the new socket arrives too (not only the catch-up read).
            async with SyndrHttpClient(sim.http_url, credentials=new) as venue:
                await venue.call("private/cancel", {"instrument_name": SYMBOL, "order_id": second.order.order_id})
            await until(lambda: stream.has(second.order.order_id, order_pb2.ORDER_STATE_CANCELLED), timeout_s=30)
            assert stream.contiguous()
            assert not stream.task.done()  # the same gRPC stream throughout
            assert running.app.feeds._feeds[("syndr", address.lower())] is feed
            assert any(r.transport == "ws" and r.api_key == new.api_key for r in sim.requests)
        finally:
            await cancel_and_wait(stream.task)


async def test_an_order_past_its_expiration_ends_cancelled_on_the_stream_and_in_the_journal(
        stack: ExecutionStack) -> None:
    """Every order is signed with an expiration (PORTICO_EXECUTION_ORDER_TTL_SECONDS later), after which the
    venue takes it off the book if it is still resting: the stream and the journal follow it to its end."""
    async with running_execution(stack, {"PORTICO_EXECUTION_ORDER_TTL_SECONDS": "1"}) as running, \
            open_channel(running.target) as channel:
        stream = OrderStream(running, channel)
        try:
            await feed_of(running)
            placed = await running.stub(channel).PlaceOrder(place_request(stack, "ttl-1", resting_bid(stack.sim)),
                                                            metadata=running.metadata())
            assert placed.order.state == order_pb2.ORDER_STATE_OPEN
            await until(lambda: stream.has(placed.order.order_id, order_pb2.ORDER_STATE_CANCELLED), timeout_s=10)
            assert stream.contiguous()

            async def journaled_cancelled() -> bool:
                entry = await running.app.journal.get("syndr", stack.account.address, "ttl-1")
                return entry is not None and entry.state == OrderState.CANCELLED

            await until_true(journaled_cancelled, timeout_s=10)
        finally:
            await cancel_and_wait(stream.task)
