"""ListFills of one order (`order_id`), paged: the venue answers all of the order's fills at once, newest first,
so a page that starts at an offset into that list is shifted by a fill of the order made between pages (the last
fill of the previous page listed again). A later page must start after the last fill listed.

A real simulator (a counterparty of its own engine takes our resting order), OpenBao, signer, reference data and
journal; no mocks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from tests.support.execution import ExecutionStack, running_execution

from portico.common.v1 import side_pb2
from portico.execution.v1 import execution_service_pb2 as pb
from portico.execution.v1 import order_pb2
from portico.runtime.client import open_channel
from portico.sim.server import SimConfig, Simulator

SYMBOL = "BTC-PERP"  # no market maker quotes it: our ask is all the book has
COUNTERPARTY = "0x" + "c0" * 20


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimConfig(port=0, seed=29, market_maker_instruments=("ETH-PERP",),
                                   rate_limit_capacity=100_000, rate_limit_refill_per_s=100_000)) as simulator:
        yield simulator


def hit(sim: Simulator, price: Decimal) -> None:
    """The counterparty buys one contract at `price` (IOC), which only our resting ask can fill."""
    size = sim.engine.instrument(SYMBOL).contract_size
    sim.engine.place(COUNTERPARTY, SYMBOL, side="buy", order_type="limit", amount=size, price=price,
                     time_in_force="IOC")


async def test_a_fill_of_the_order_made_between_pages_does_not_shift_the_later_pages(stack: ExecutionStack,
                                                                                     sim: Simulator) -> None:
    account = stack.account.address
    instrument = sim.engine.instrument(SYMBOL)
    sim.engine.open_account(COUNTERPARTY, {"USDT": Decimal(10_000_000)})
    price = Decimal(60_000)  # on the tick
    async with running_execution(stack) as running, open_channel(running.target) as channel:
        stub = running.stub(channel)
        placed = await stub.PlaceOrder(pb.PlaceOrderRequest(
            venue="syndr", account=account, symbol=SYMBOL, side=side_pb2.SIDE_SELL, type=order_pb2.ORDER_TYPE_LIMIT,
            amount=str(instrument.contract_size * 10), price=str(price), client_order_id="fills-of-one"),
            metadata=running.metadata())
        order_id = placed.order.order_id
        for _ in range(3):
            hit(sim, price)
        request = pb.ListFillsRequest(venue="syndr", account=account, order_id=order_id, page_size=2)
        first = await stub.ListFills(request, metadata=running.metadata("read"))
        assert len(first.fills) == 2 and first.next_page_token
        hit(sim, price)  # a fourth fill of the order, made between the pages
        request.page_token = first.next_page_token
        second = await stub.ListFills(request, metadata=running.metadata("read"))
        listed = [f.fill_id for f in (*first.fills, *second.fills)]
        assert len(listed) == len(set(listed)) == 3, listed  # each of the three once, none twice
        assert not second.next_page_token
