"""AmendOrder and CancelOrder against venue answers shaped like the Syndr document's own examples.

The document's `private/edit` and `private/cancel` examples answer an order object whose `instrument_name` and
`time_in_force` are empty and whose `order_type` is "Limit" (capitalised); its `private/cancel` example still says
`"order_state": "open"` for the order it cancelled. Its listings (`get_open_orders`, order history, `user.orders`)
spell "limit". The simulator answers the listings' shape everywhere, so these tests wrap its edit and cancel
handlers (and, for the second amend, its open-orders listing) to answer as the document's examples do.

A real simulator, OpenBao, signer, reference data and journal.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from tests.support.execution import ExecutionStack, resting_bid, running_execution

from portico.common.v1 import side_pb2
from portico.execution.model import OrderState
from portico.execution.v1 import execution_service_pb2 as pb
from portico.execution.v1 import order_pb2
from portico.runtime.client import open_channel
from portico.sim.server import Method, SimConfig, Simulator

SYMBOL = "ETH-PERP"


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimConfig(port=0, seed=17, market_maker_instruments=(SYMBOL,),
                                   rate_limit_capacity=100_000, rate_limit_refill_per_s=100_000)) as simulator:
        yield simulator


def as_in_the_document(order: dict[str, Any]) -> dict[str, Any]:
    """An order object as the document's edit and cancel examples show one."""
    return {**order, "instrument_name": "", "time_in_force": "", "order_type": "Limit"}


def answer_edit_and_cancel_as_the_document(sim: Simulator) -> None:
    edit, cancel = sim.methods["private/edit"], sim.methods["private/cancel"]

    def documented_edit(s: Simulator, p: Any, ctx: Any) -> Any:
        answer = edit.handler(s, p, ctx)
        return {"status": "success", "result": as_in_the_document(answer["result"])}

    def documented_cancel(s: Simulator, p: Any, ctx: Any) -> Any:
        # The example's order still says "open": the state it was in when the cancel was asked for.
        return {**as_in_the_document(cancel.handler(s, p, ctx)), "order_state": "open"}

    sim.methods["private/edit"] = Method(documented_edit, True)
    sim.methods["private/cancel"] = Method(documented_cancel, True)


def list_open_orders_with_the_edits_spelling(sim: Simulator) -> None:
    """Open orders whose `order_type` (and `direction`) are spelt as the edit example spells its order."""
    listing = sim.methods["private/get_open_orders"]

    def capitalised(node: Any) -> Any:
        if isinstance(node, dict) and "order_id" in node:
            return {**node, "order_type": str(node["order_type"]).capitalize(),
                    "direction": str(node["direction"]).capitalize()}
        if isinstance(node, dict):
            return {key: capitalised(child) for key, child in node.items()}
        return node

    sim.methods["private/get_open_orders"] = Method(lambda s, p, ctx: capitalised(listing.handler(s, p, ctx)), True)


async def test_amend_and_cancel_answered_as_the_documents_examples(stack: ExecutionStack, sim: Simulator) -> None:
    account = stack.account.address
    async with running_execution(stack) as running, open_channel(running.target) as channel:
        stub = running.stub(channel)
        request = pb.PlaceOrderRequest(venue="syndr", account=account, symbol=SYMBOL, side=side_pb2.SIDE_BUY,
                                       type=order_pb2.ORDER_TYPE_LIMIT, amount="0.1", price=resting_bid(sim),
                                       client_order_id="doc-1")
        placed = await stub.PlaceOrder(request, metadata=running.metadata())
        answer_edit_and_cancel_as_the_document(sim)
        tick = sim.engine.instrument(SYMBOL).tick_size

        new_price = Decimal(placed.order.price) - tick
        amended = await stub.AmendOrder(pb.AmendOrderRequest(venue="syndr", account=account, client_order_id="doc-1",
                                                             price=str(new_price)), metadata=running.metadata())
        assert Decimal(amended.order.price) == new_price
        assert amended.order.symbol == SYMBOL  # not the answer's empty instrument_name
        assert amended.order.type == order_pb2.ORDER_TYPE_LIMIT
        assert amended.order.time_in_force == order_pb2.TIME_IN_FORCE_GOOD_TIL_CANCELLED
        # The journal keeps a whole order: the same id again answers with its instrument.
        again = await stub.PlaceOrder(request, metadata=running.metadata())
        assert again.order.order_id == placed.order.order_id and again.order.symbol == SYMBOL

        # The venue lists the edited order as its edit answer spelt it: a limit buy, amendable again.
        list_open_orders_with_the_edits_spelling(sim)
        newer_price = new_price - tick
        amended = await stub.AmendOrder(pb.AmendOrderRequest(venue="syndr", account=account, client_order_id="doc-1",
                                                             price=str(newer_price)), metadata=running.metadata())
        assert Decimal(amended.order.price) == newer_price
        venue_order = sim.engine.order(account, placed.order.order_id).to_wire()
        assert Decimal(str(venue_order["price"])) == newer_price and venue_order["direction"] == "buy"

        cancelled = await stub.CancelOrder(pb.CancelOrderRequest(venue="syndr", account=account,
                                                                 client_order_id="doc-1"),
                                           metadata=running.metadata())
        assert sim.engine.order(account, placed.order.order_id).to_wire()["order_state"] == "cancelled"
        assert cancelled.order.state == order_pb2.ORDER_STATE_CANCELLED  # the cancel succeeded
        assert cancelled.order.symbol == SYMBOL
        entry = await running.app.journal.get("syndr", account, "doc-1")
        assert entry is not None and entry.state == OrderState.CANCELLED
