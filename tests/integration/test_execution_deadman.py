"""The dead-man's switch against a real simulator, OpenBao, signer, reference data and journal: it still cancels
when the venue refuses its first attempts, and when the account's API key was rotated after it was armed, and a
cancel the venue keeps refusing does not log a line per attempt."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from tests.support.execution import ExecutionStack, resting_bid, rotate_api_key, running_execution, store_api_key
from tests.support.waiting import until

from portico.common.v1 import side_pb2
from portico.execution import deadman
from portico.execution.v1 import execution_service_pb2 as pb
from portico.execution.v1 import order_pb2
from portico.runtime.client import open_channel
from portico.sim.server import SimConfig, Simulator

SYMBOL = "ETH-PERP"


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimConfig(port=0, seed=31, market_maker_instruments=(SYMBOL,),
                                   rate_limit_capacity=100_000, rate_limit_refill_per_s=100_000)) as simulator:
        yield simulator


async def rest_orders(stub: object, running: object, stack: ExecutionStack, count: int) -> None:
    for i in range(count):
        reply = await stub.PlaceOrder(pb.PlaceOrderRequest(  # type: ignore[attr-defined]
            venue="syndr", account=stack.account.address, symbol=SYMBOL, side=side_pb2.SIDE_BUY,
            type=order_pb2.ORDER_TYPE_LIMIT, amount="0.1", price=resting_bid(stack.sim), client_order_id=f"dm-{i}"),
            metadata=running.metadata())  # type: ignore[attr-defined]
        assert reply.order.state == order_pb2.ORDER_STATE_OPEN


async def fire_with_its_cancel_held(stub: object, running: object, stack: ExecutionStack, *, hold_ms: int) -> None:
    """Two resting orders, then a switch armed for 1 s whose cancel_all the venue holds `hold_ms` on its way in;
    returns once the switch has fired and its cancel is held."""
    await rest_orders(stub, running, stack, 2)
    stack.sim.faults.update({"http_hold_next": 1, "http_hold_ms": hold_ms, "http_hold_method": "private/cancel_all"})
    await stub.ArmDeadman(pb.ArmDeadmanRequest(  # type: ignore[attr-defined]
        venue="syndr", account=stack.account.address, ttl=Duration(seconds=1)),
        metadata=running.metadata())  # type: ignore[attr-defined]
    await until(lambda: stack.sim.faults.http_hold_next == 0, timeout_s=10)


async def test_the_switch_keeps_trying_until_the_venue_takes_the_cancel(stack: ExecutionStack,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The venue answers the first eight cancel_all calls 503: before the fix the switch gave up after five
    attempts (and counted itself fired), leaving every order of an account nobody watches on the book."""
    monkeypatch.setattr(deadman, "_RETRY_S", 0.05, raising=False)
    monkeypatch.setattr(deadman, "_RETRY_MAX_S", 0.1, raising=False)
    sim, account = stack.sim, stack.account.address
    async with running_execution(stack) as running, open_channel(running.target) as channel:
        stub = running.stub(channel)
        await rest_orders(stub, running, stack, 3)
        sim.faults.update({"http_5xx_method": "private/cancel_all", "http_5xx_next": 8})
        await stub.ArmDeadman(pb.ArmDeadmanRequest(venue="syndr", account=account, ttl=Duration(seconds=1)),
                              metadata=running.metadata())
        await until(lambda: sim.faults.http_5xx_next == 0, timeout_s=10)
        await until(lambda: sim.engine.open_orders(account) == [], timeout_s=10)
        await until(lambda: running.app.deadman.fired.get(("syndr", account.lower())) == 1)


async def test_the_switch_cancels_with_the_key_vault_holds_when_it_fires(stack: ExecutionStack,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The account's API key is rotated (new key in Vault, the old one deactivated at the venue) after the switch
    was armed and before it fires: before the fix it sent cancel_all with the key it was armed with, which the
    venue refuses for ever, so nothing was cancelled."""
    monkeypatch.setattr(deadman, "_RETRY_S", 0.05, raising=False)
    sim, account = stack.sim, stack.account.address
    async with running_execution(stack) as running, open_channel(running.target) as channel:
        stub = running.stub(channel)
        await rest_orders(stub, running, stack, 2)
        with pytest.raises(grpc.aio.AioRpcError) as refused:  # arming needs scope `trade`
            await stub.ArmDeadman(pb.ArmDeadmanRequest(venue="syndr", account=account, ttl=Duration(seconds=2)),
                                  metadata=running.metadata("read"))
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert running.app.deadman._timers == {}
        await stub.ArmDeadman(pb.ArmDeadmanRequest(venue="syndr", account=account, ttl=Duration(seconds=2)),
                              metadata=running.metadata())

        new = await rotate_api_key(stack)

        await until(lambda: sim.engine.open_orders(account) == [], timeout_s=15)
        assert any(r.method == "private/cancel_all" and r.api_key == new.api_key for r in sim.requests)


async def test_rearm_and_disarm_work_while_vault_cannot_be_read(stack: ExecutionStack) -> None:
    """Vault refuses the execution service (its token revoked) once the switch is armed. A client that keeps
    re-arming in time, then disarms, keeps its orders: the switch already has what it needs to fire (before the
    fix every re-arm and the disarm first read the account's record again, failed UNAVAILABLE once the cached
    one was a second old, and the switch cancelled a healthy client's orders)."""
    sim, account = stack.sim, stack.account.address
    async with running_execution(stack, {"PORTICO_EXECUTION_CREDENTIALS_CACHE_SECONDS": "1"}) as running, \
            open_channel(running.target) as channel:
        stub = running.stub(channel)
        await rest_orders(stub, running, stack, 2)

        async def arm(seconds: int) -> pb.ArmDeadmanResponse:
            return await stub.ArmDeadman(pb.ArmDeadmanRequest(venue="syndr", account=account,  # type: ignore[no-any-return]
                                                              ttl=Duration(seconds=seconds)),
                                         metadata=running.metadata())

        await arm(2)
        stack.vault.client().auth.token.revoke(stack.execution_vault_token)
        for _ in range(8):  # 4 s of heart-beats, twice the ttl
            await asyncio.sleep(0.5)
            assert (await arm(2)).HasField("fire_time")
        assert len(sim.engine.open_orders(account)) == 2
        assert not (await arm(0)).HasField("fire_time")
        await asyncio.sleep(2.5)
        assert len(sim.engine.open_orders(account)) == 2
        assert running.app.deadman.fired == {}


async def test_a_cancel_refused_for_good_is_logged_far_less_often_than_it_is_tried(
        stack: ExecutionStack, monkeypatch: pytest.MonkeyPatch, log_lines: io.StringIO) -> None:
    """The account's API key is revoked at the venue and Vault still names it: every cancel is refused, and the
    switch keeps trying. It logs the first failure, each longer pause, then once per `_FAILURE_LOG_EVERY_S` (before
    the fix: an ERROR line on every attempt, every 5 s for ever). Once Vault names the new key the cancel goes
    through, and that is logged with the number of attempts it took."""
    monkeypatch.setattr(deadman, "_RETRY_S", 0.02, raising=False)
    monkeypatch.setattr(deadman, "_RETRY_MAX_S", 0.08, raising=False)  # pauses 0.02, 0.04, 0.08, 0.08, ...
    monkeypatch.setattr(deadman, "_FAILURE_LOG_EVERY_S", 1.0, raising=False)
    sim, account = stack.sim, stack.account.address
    async with running_execution(stack) as running, open_channel(running.target) as channel:
        stub = running.stub(channel)
        await rest_orders(stub, running, stack, 1)
        new = await rotate_api_key(stack, update_vault=False)
        await stub.ArmDeadman(pb.ArmDeadmanRequest(venue="syndr", account=account, ttl=Duration(seconds=1)),
                              metadata=running.metadata())
        await until(lambda: "dead-man's cancel failed" in log_lines.getvalue(), timeout_s=10)
        # Dozens of attempts, over a second and more at the longest pause (a failure logged late enough says so).
        await until(lambda: max(attempts_logged(log_lines), default=0) >= 25, timeout_s=60)
        await store_api_key(stack, new)
        await until(lambda: sim.engine.open_orders(account) == [], timeout_s=10)
        await until(lambda: running.app.deadman.fired.get(("syndr", account.lower())) == 1)

    lines = [json.loads(line) for line in log_lines.getvalue().splitlines()]
    failures = [line for line in lines if line["msg"].startswith("dead-man's cancel failed")]
    done = [line for line in lines if line["msg"] == "dead-man's switch cancelled all orders"]
    assert len(done) == 1 and done[0]["attempt"] > 25, done
    assert failures[0]["attempt"] == 1 and all(line["level"] == "ERROR" for line in failures)
    assert [line["attempt"] for line in failures] == sorted(line["attempt"] for line in failures)
    # The first failure and the two longer pauses (0.04 s, 0.08 s) are logged; the twenty and more attempts
    # spent at the longest pause are logged once a second of their span, bounded by the log's own clock, not ours.
    assert [line["attempt"] for line in failures[:3]] == [1, 2, 3], [line["msg"] for line in failures]
    span_s = (logged_at(done[0]) - logged_at(failures[2])).total_seconds()
    assert 1 <= len(failures) - 3 <= span_s / 1.0 + 1, (span_s, [line["msg"] for line in failures])


def attempts_logged(log_lines: io.StringIO) -> list[int]:
    return [line["attempt"] for line in map(json.loads, log_lines.getvalue().splitlines())
            if line["msg"].startswith("dead-man's cancel failed")]


def logged_at(line: dict[str, Any]) -> datetime:
    return datetime.strptime(line["ts"], "%Y-%m-%dT%H:%M:%S.%fZ")


async def test_a_rearm_while_the_missed_deadlines_cancel_is_on_its_way_stops_its_retries(
        stack: ExecutionStack, monkeypatch: pytest.MonkeyPatch) -> None:
    """The deadline passes and the switch's cancel_all is held on its way to the venue (a slow path) past the venue
    timeout; the client re-arms meanwhile. The held cancel lands (a missed deadline cancels), then the client rests
    a new order. Before the fix the timed-out attempt was retried after its pause, although the client had re-armed
    before it failed, and that retry cancelled the new order; only a re-arm during the pause dropped retries."""
    monkeypatch.setattr(deadman, "_RETRY_S", 3.0, raising=False)
    sim, account = stack.sim, stack.account.address
    async with running_execution(stack, {"PORTICO_EXECUTION_VENUE_TIMEOUT_MS": "1000"}) as running, \
            open_channel(running.target) as channel:
        stub = running.stub(channel)
        await fire_with_its_cancel_held(stub, running, stack, hold_ms=2500)
        await stub.ArmDeadman(pb.ArmDeadmanRequest(venue="syndr", account=account, ttl=Duration(seconds=600)),
                              metadata=running.metadata())  # the client is back
        await until(lambda: sim.engine.open_orders(account) == [], timeout_s=10)  # the held cancel landed
        reply = await stub.PlaceOrder(pb.PlaceOrderRequest(
            venue="syndr", account=account, symbol=SYMBOL, side=side_pb2.SIDE_BUY, type=order_pb2.ORDER_TYPE_LIMIT,
            amount="0.1", price=resting_bid(sim), client_order_id="after-rearm"), metadata=running.metadata())
        assert reply.order.state == order_pb2.ORDER_STATE_OPEN
        await asyncio.sleep(3.5)  # past the retry the timed-out attempt would have made
        assert [o.order_id for o in sim.engine.open_orders(account)] == [reply.order.order_id]
        assert sum(1 for r in sim.requests if r.method == "private/cancel_all") == 1
        assert running.app.deadman.fired == {}


async def test_a_cancel_on_its_way_at_shutdown_is_finished_not_abandoned(stack: ExecutionStack) -> None:
    """The deadline passes and the switch's cancel_all is on its way (held by a slow path) when the service shuts
    down. Before the fix shutdown cancelled it half-way: whether the venue cancelled anything was left to chance,
    and the orders of an account nobody watches could stay on the book. It now finishes that attempt."""
    sim, account = stack.sim, stack.account.address
    async with running_execution(stack, {"PORTICO_EXECUTION_VENUE_TIMEOUT_MS": "3000"}) as running, \
            open_channel(running.target) as channel:
        stub = running.stub(channel)
        await fire_with_its_cancel_held(stub, running, stack, hold_ms=1500)
        app = running.app
    # The service has shut down (running_execution's exit): the held cancel was waited for, and it landed.
    assert app.deadman.fired == {("syndr", account.lower()): 1}
    assert sim.engine.open_orders(account) == []
