"""Reconciling orders of unknown outcome: what the venue did with them since, their expiry, readiness at start.

The first tests drive `OrderManager` over a real journal (SQLite and PostgreSQL alike) with a stand-in venue
that knows one order; the last runs the service against the simulator, OpenBao, signer and reference data.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import orjson
import pytest
from tests.support.execution import ExecutionStack, resting_bid, running_execution, until_journaled
from tests.support.postgres import fresh_database, postgres_reachable
from tests.support.waiting import until

from portico.common.v1 import side_pb2
from portico.execution.journal import OrderJournal, open_journal
from portico.execution.model import JournalEntry, OrderIntent, OrderState
from portico.execution.orders import OrderManager
from portico.execution.v1 import execution_service_pb2 as pb
from portico.execution.v1 import order_pb2
from portico.runtime.client import open_channel
from portico.runtime.errors import error_info
from portico.sim.server import SimConfig, Simulator

ACCOUNT = "0x52908400098527886E0F7030069857D2E4169EE7"
SYMBOLS = ("ETH-PERP", "BTC-PERP")


@pytest.fixture(params=["sqlite", "postgres"])
def journal_target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    if request.param == "sqlite":
        yield {"sqlite_path": tmp_path / "journal.sqlite3", "dsn": None}
        return
    if not postgres_reachable():
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432")
    with fresh_database("portico_reconcile") as dsn:
        yield {"sqlite_path": None, "dsn": dsn}


@pytest.fixture
async def journal(journal_target: dict[str, Any]) -> AsyncIterator[OrderJournal]:
    async with open_journal(**journal_target) as opened:
        yield opened


class KnowsOneOrder:
    """The venue edge of reconciliation: it has `order` (or nothing), and takes a resend as a new order."""

    def __init__(self, order: dict[str, Any] | None):
        self.order = order
        self.calls: list[tuple[str, bytes]] = []

    async def find_by_salt(self, account: str, symbol: str, salt: int, since_ms: int) -> dict[str, Any] | None:
        return self.order if self.order is not None and str(self.order.get("salt")) == str(salt) else None

    async def call(self, account: str, method: str, params: Any) -> Any:
        self.calls.append((method, bytes(params)))
        raise AssertionError("a resend was made")


async def unknown_entry(journal: OrderJournal, *, expired: bool) -> JournalEntry:
    now_ms = time.time_ns() // 1_000_000
    intent = OrderIntent(venue="syndr", account=ACCOUNT, client_order_id="u-1", symbol="ETH-PERP", side="buy",
                         order_type="limit", time_in_force="GTC", post_only=False, reduce_only=False,
                         price=Decimal("1500"), amount=Decimal("0.002"))
    entry = JournalEntry(intent=intent, salt=2**63 + 7, timestamp_ms=now_ms - 120_000,
                         expiration_ms=now_ms - 1_000 if expired else now_ms + 60_000, signer_address="0xsigner",
                         request=orjson.dumps({"salt": 2**63 + 7}), state=OrderState.UNKNOWN)
    return await journal.insert(entry)


def venue_order(state: str, filled: str) -> dict[str, Any]:
    return {"order_id": "0xabc", "order_state": state, "last_update_timestamp": 1_000, "creation_timestamp": 900,
            "filled_amount": filled, "amount": "0.002", "price": "1500", "instrument_name": "ETH-PERP",
            "direction": "buy", "order_type": "limit", "salt": str(2**63 + 7)}


@pytest.mark.parametrize("expired", [False, True])
@pytest.mark.parametrize(("venue_state", "filled", "journaled"), [
    ("filled", "0.002", OrderState.FILLED),
    ("cancelled", "0.001", OrderState.CANCELLED),  # partly filled, then cancelled (or taken off at its expiry)
    ("open", "0", OrderState.OPEN),
])
async def test_an_unknown_order_the_venue_has_is_journaled_as_the_venue_has_it_now(
        journal: OrderJournal, venue_state: str, filled: str, journaled: OrderState, expired: bool) -> None:
    entry = await unknown_entry(journal, expired=expired)
    venue = KnowsOneOrder(venue_order(venue_state, filled))
    orders = OrderManager(journal, venue, None, None, order_ttl_s=60)  # type: ignore[arg-type]
    await orders.load()
    resolved = await orders.reconcile(entry)
    assert resolved.state == journaled and resolved.order_id == "0xabc"  # what the venue did wins over expiry
    stored = await journal.get(*entry.key)
    assert stored is not None and stored.state == journaled
    assert orjson.loads(stored.venue_order)["filled_amount"] == filled
    assert venue.calls == []
    assert await orders.reconcile_all() == 0 and await journal.unresolved() == []


async def test_an_unknown_order_the_venue_never_had_and_whose_signature_expired_is_rejected_unsent(
        journal: OrderJournal) -> None:
    entry = await unknown_entry(journal, expired=True)
    venue = KnowsOneOrder(None)
    orders = OrderManager(journal, venue, None, None, order_ttl_s=60)  # type: ignore[arg-type]
    await orders.load()
    assert await orders.reconcile_all() == 0
    stored = await journal.get(*entry.key)
    assert stored is not None and stored.state == OrderState.REJECTED and stored.order_id == ""
    assert venue.calls == []  # the venue would refuse the expired signature anyway


class CancelsOneOrder:
    """The venue edge of a cancel by order id: it lists `order` as open and cancels it, answering as the
    document's example does (no salt, no instrument name, the order as it was: "open")."""

    def __init__(self, order: dict[str, Any]):
        self.order = order
        self.calls: list[str] = []

    async def call(self, account: str, method: str, params: Any = None, *, priority: Any = None) -> Any:
        self.calls.append(method)
        if method == "private/get_open_orders":
            return SimpleNamespace(result=[self.order])
        if method == "private/cancel":
            assert params == {"instrument_name": "ETH-PERP", "order_id": "0xabc"}
            answer = {key: value for key, value in self.order.items() if key != "salt"}
            return SimpleNamespace(result={**answer, "instrument_name": "", "time_in_force": "",
                                           "order_type": "Limit", "last_update_timestamp": 2_000})
        raise AssertionError(f"unexpected call {method}")


async def test_cancelling_by_order_id_an_order_journaled_unknown_resolves_it_at_once(journal: OrderJournal) -> None:
    """The caller learned the order id elsewhere (the venue's own listing, say) while the journal still says
    UNKNOWN: the cancel finds the entry by the salt the venue lists, not at the next reconciliation."""
    entry = await unknown_entry(journal, expired=False)
    venue = CancelsOneOrder(venue_order("open", "0"))
    orders = OrderManager(journal, venue, None, None, order_ttl_s=60)  # type: ignore[arg-type]
    await orders.load()
    cancelled, order = await orders.cancel("syndr", ACCOUNT, "0xabc", "")
    assert venue.calls == ["private/get_open_orders", "private/cancel"]
    assert order["order_state"] == "cancelled" and order["instrument_name"] == "ETH-PERP"
    assert cancelled is not None and cancelled.key == entry.key
    assert cancelled.state == OrderState.CANCELLED and cancelled.order_id == "0xabc"
    assert await journal.unresolved() == []


# ----------------------------------------------------------------------------------------------------------------
# Readiness at start


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimConfig(port=0, seed=19, market_maker_instruments=SYMBOLS,
                                   rate_limit_capacity=100_000, rate_limit_refill_per_s=100_000)) as simulator:
        yield simulator


def place(stack: ExecutionStack, client_order_id: str, symbol: str) -> pb.PlaceOrderRequest:
    inst = stack.sim.engine.instrument(symbol)
    return pb.PlaceOrderRequest(venue="syndr", account=stack.account.address, symbol=symbol, side=side_pb2.SIDE_BUY,
                                type=order_pb2.ORDER_TYPE_LIMIT, amount=str(inst.min_trade_amount),
                                price=resting_bid(stack.sim, symbol), client_order_id=client_order_id)


async def test_not_ready_while_an_unknown_order_a_caller_is_retrying_at_start_is_still_unknown(
        stack: ExecutionStack, sim: Simulator, journal_target: dict[str, Any]) -> None:
    env = ({"PORTICO_EXECUTION_JOURNAL_DB": str(journal_target["sqlite_path"])} if journal_target["dsn"] is None
           else {"PORTICO_EXECUTION_JOURNAL_DSN": journal_target["dsn"]})
    account = stack.account.address
    a, x = place(stack, "a-1", SYMBOLS[0]), place(stack, "x-1", SYMBOLS[1])
    async with running_execution(stack, env) as running, open_channel(running.target) as channel:
        stub = running.stub(channel)
        await stub.PlaceOrder(place(stack, "warm-up", SYMBOLS[0]), metadata=running.metadata())  # venue reads cached
        # a-1 reaches the venue but its answer is lost; x-1 never reaches it (503). Reads are lost too, so
        # neither is resolved before the "crash".
        sim.faults.update({"drop_response_rate": 1.0, "silent": True})
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.PlaceOrder(a, metadata=running.metadata())
        sim.faults.update({"http_5xx_next": 1, "http_5xx_method": "private/buy"})
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.PlaceOrder(x, metadata=running.metadata())
        for cid in ("a-1", "x-1"):
            entry = await running.app.journal.get("syndr", account, cid)
            assert entry is not None and entry.state == OrderState.UNKNOWN
        await running.app.aclose(grace_s=0)
    # At the restart, the reconciler's read for a-1 is slow; meanwhile x-1's caller retries it, and what x-1's
    # reconciliation reads of the order history fails (as it keeps failing while the caller's call is on its way).
    sim.faults.reset()
    sim.faults.update({"silent": True, "http_hold_next": 2, "http_hold_ms": 1500,
                       "http_hold_method": "private/get_open_orders", "http_5xx_next": 1_000,
                       "http_5xx_method": "private/get_order_history_by_instrument"})
    async with running_execution(stack, env, wait_serving=False) as restarted, \
            open_channel(restarted.target) as channel:
        await until(lambda: sim.faults.http_hold_next == 1, 10, 0.005)  # the reconciler's read of a-1 is held
        with pytest.raises(grpc.aio.AioRpcError) as retried:
            await restarted.stub(channel).PlaceOrder(x, metadata=restarted.metadata())
        info = error_info(retried.value)
        assert info is not None and info.reason == "ORDER_OUTCOME_UNKNOWN"
        await until_journaled(restarted, "a-1", OrderState.OPEN)  # the held read is answered: the pass is past a-1
        a_entry = await restarted.app.journal.get("syndr", account, "a-1")
        x_entry = await restarted.app.journal.get("syndr", account, "x-1")
        assert a_entry is not None and a_entry.state == OrderState.OPEN
        assert x_entry is not None and x_entry.state == OrderState.UNKNOWN
        assert not restarted.app.reconciled.is_set()  # an unknown entry is left: not ready
        sim.faults.reset()
        await asyncio.wait_for(restarted.app.reconciled.wait(), 10)
        x_entry = await restarted.app.journal.get("syndr", account, "x-1")
        assert x_entry is not None and x_entry.state == OrderState.OPEN
    assert [o.label for o in sim.engine.open_orders(account)].count("x-1") == 1
