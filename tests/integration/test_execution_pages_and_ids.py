"""ListOpenOrders and ListOrderHistory paged while the account's orders change, and a client order id reused with
an order that differs only past the 28th significant digit. A real simulator, OpenBao, signer, reference data and
journal; no mocks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from tests.support.execution import ExecutionStack, resting_bid, running_execution

from portico.common.v1 import side_pb2
from portico.execution.v1 import execution_service_pb2 as pb
from portico.execution.v1 import order_pb2
from portico.runtime.client import open_channel
from portico.runtime.errors import error_info
from portico.runtime.paging import page_token
from portico.sim.server import SimConfig, Simulator

SYMBOL = "ETH-PERP"


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimConfig(port=0, seed=41, market_maker_instruments=(SYMBOL,),
                                   rate_limit_capacity=100_000, rate_limit_refill_per_s=100_000)) as simulator:
        yield simulator


def place(stack: ExecutionStack, client_order_id: str, price: str, amount: str = "0.1") -> pb.PlaceOrderRequest:
    return pb.PlaceOrderRequest(venue="syndr", account=stack.account.address, symbol=SYMBOL, side=side_pb2.SIDE_BUY,
                                type=order_pb2.ORDER_TYPE_LIMIT, amount=amount, price=price,
                                client_order_id=client_order_id)


async def test_an_open_order_listed_on_no_page_when_an_earlier_one_closes_between_pages(stack: ExecutionStack,
                                                                                       sim: Simulator) -> None:
    """Three resting orders, listed one a page. The first page's order is cancelled before the second page is
    asked for: before the fix the second page skipped to the oldest order (the token was an offset into a list
    that had lost an entry), so the middle one, still open, was never listed."""
    async with running_execution(stack) as running, open_channel(running.target) as channel:
        stub = running.stub(channel)
        placed = []
        for i in range(3):
            reply = await stub.PlaceOrder(place(stack, f"paged-{i}", resting_bid(sim)), metadata=running.metadata())
            assert reply.order.state == order_pb2.ORDER_STATE_OPEN
            placed.append(reply.order.order_id)
        request = pb.ListOpenOrdersRequest(venue="syndr", account=stack.account.address, page_size=1)
        first = await stub.ListOpenOrders(request, metadata=running.metadata("read"))
        assert len(first.orders) == 1 and first.next_page_token
        await stub.CancelOrder(pb.CancelOrderRequest(venue="syndr", account=stack.account.address,
                                                     order_id=first.orders[0].order_id), metadata=running.metadata())
        listed = [first.orders[0].order_id]
        token = first.next_page_token
        while token:
            page = await stub.ListOpenOrders(pb.ListOpenOrdersRequest(
                venue="syndr", account=stack.account.address, page_size=1, page_token=token),
                metadata=running.metadata("read"))
            listed += [o.order_id for o in page.orders]
            token = page.next_page_token
        assert sorted(listed) == sorted(placed), (listed, placed)  # every order open throughout is listed
        assert len(listed) == len(set(listed))

        # A token of this query whose position is not one the service writes is INVALID_ARGUMENT naming it.
        forged = page_token(1, ("open", "syndr", stack.account.address, None), after="not-a-position")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.ListOpenOrders(pb.ListOpenOrdersRequest(venue="syndr", account=stack.account.address,
                                                               page_size=1, page_token=forged),
                                      metadata=running.metadata("read"))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        info = error_info(refused.value)
        assert info is not None and info.metadata["field"] == "page_token"


async def test_an_order_placed_after_the_first_page_of_history_does_not_shift_the_later_pages(
        stack: ExecutionStack, sim: Simulator) -> None:
    """Five orders, listed two a page; a sixth is placed (in a later second) after the first page. The later pages
    keep to the window the first page fixed: before the fix that window reached a minute past our clock (the
    allowance for the venue's clock being ahead), so the sixth order was in it, every later page shifted by one,
    and an order was listed twice."""
    account = stack.account.address
    async with running_execution(stack) as running, open_channel(running.target) as channel:
        stub = running.stub(channel)
        for i in range(5):
            await stub.PlaceOrder(place(stack, f"history-{i}", resting_bid(sim)), metadata=running.metadata())
        expected = [o.order_id for o in sim.engine.order_history(account, count=100)]
        assert len(expected) == 5
        request = pb.ListOrderHistoryRequest(venue="syndr", account=account, page_size=2)
        first = await stub.ListOrderHistory(request, metadata=running.metadata("read"))
        listed = [o.order_id for o in first.orders]
        started = time.time()
        await asyncio.sleep(max(0.0, int(started) + 1.05 - started))
        await stub.PlaceOrder(place(stack, "history-late", resting_bid(sim)), metadata=running.metadata())
        token = first.next_page_token
        while token:
            page = await stub.ListOrderHistory(pb.ListOrderHistoryRequest(
                venue="syndr", account=account, page_size=2, page_token=token), metadata=running.metadata("read"))
            listed += [o.order_id for o in page.orders]
            token = page.next_page_token
        assert listed == expected

        fresh = await stub.ListOrderHistory(request, metadata=running.metadata("read"))  # a new listing has it
        assert fresh.orders[0].client_order_id == "history-late"


async def test_a_client_order_id_reused_with_an_amount_differing_past_28_digits_is_already_exists(
        stack: ExecutionStack, sim: Simulator) -> None:
    """The same client id with another amount is ALREADY_EXISTS. Before the fix the order's fingerprint rounded
    its decimals to 28 significant digits, so `0.1000000000000000000000000000001` (which is not even on the amount
    increment) was taken for the first order's `0.1` and answered with that order as if it had been placed."""
    async with running_execution(stack) as running, open_channel(running.target) as channel:
        stub = running.stub(channel)
        price = resting_bid(sim)
        first = await stub.PlaceOrder(place(stack, "digits-1", price), metadata=running.metadata())
        assert first.order.state == order_pb2.ORDER_STATE_OPEN
        with_point = price if "." in price else price + "."
        for amount, other_price in (("0.1000000000000000000000000000001", price),
                                    ("0.1", with_point + "0" * 30 + "1")):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.PlaceOrder(place(stack, "digits-1", other_price, amount), metadata=running.metadata())
            assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS, (amount, other_price, refused.value)
        # The same order again (written with other trailing zeros) is still the first order.
        again = await stub.PlaceOrder(place(stack, "digits-1", with_point + "000", "0.10"), metadata=running.metadata())
        assert again.order.order_id == first.order.order_id
        assert len([o for o in sim.engine.open_orders(stack.account.address) if o.label == "digits-1"]) == 1


async def test_salts_are_exact_as_json_numbers_read_as_doubles(stack: ExecutionStack, sim: Simulator) -> None:
    """The salt goes on the wire as a JSON number, which the document's examples keep to six digits: a venue
    reading JSON numbers as IEEE doubles (JavaScript's JSON.parse) rounds integers above 2^53, and would check the
    signature over another salt. Every salt, placed or amended, is below 2^53 (before the fix: 64 random bits, so
    all but one in 2,048 were above)."""
    async with running_execution(stack) as running, open_channel(running.target) as channel:
        stub = running.stub(channel)
        salts = []
        for i in range(12):
            reply = await stub.PlaceOrder(place(stack, f"salt-{i}", resting_bid(sim)), metadata=running.metadata())
            salts.append(int(reply.order.salt))
        amended = await stub.AmendOrder(pb.AmendOrderRequest(venue="syndr", account=stack.account.address,
                                                             order_id=reply.order.order_id, amount="0.2"),
                                        metadata=running.metadata())
        salts.append(int(amended.order.salt))
        sent = [r.params["salt"] for r in sim.requests if r.method in ("private/buy", "private/edit")]
        assert len(sent) == 13 and all(type(s) is int for s in sent), sent
        assert all(0 <= s < 2**53 for s in salts + sent), [s for s in salts + sent if s >= 2**53]
        assert len(set(salts)) == 13
