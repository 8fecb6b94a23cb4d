"""Execution under faults: lost responses, a restart mid-burst, a cut WebSocket; and one trace per order."""

from __future__ import annotations

import asyncio
import io
import random
from collections import Counter
from collections.abc import AsyncIterator
from decimal import Decimal

import grpc
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from tests.support.execution import ExecutionStack, running_execution
from tests.support.ports import free_port
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import until

from portico.common.v1 import side_pb2
from portico.execution.model import FINAL_STATES
from portico.execution.service import ExecutionApp
from portico.execution.settings import ExecutionSettings
from portico.execution.v1 import execution_service_pb2 as pb
from portico.execution.v1 import execution_service_pb2_grpc as pb_grpc
from portico.execution.v1 import order_pb2
from portico.runtime.client import bearer, open_channel
from portico.sim.server import SimConfig, Simulator

SYMBOLS = ("ETH-PERP", "BTC-PERP")
BURST = 500


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimConfig(port=0, seed=5, book_changes_per_second=20, market_maker_instruments=SYMBOLS,
                                   rate_limit_capacity=1_000_000, rate_limit_refill_per_s=1_000_000)) as simulator:
        yield simulator


def resting_price(sim: Simulator, symbol: str) -> str:
    tick = sim.engine.instrument(symbol).tick_size
    bid = sim.engine.book(symbol, 1).bids[0][0]
    return str(((bid * Decimal("0.7")) // tick) * tick)


def order_request(stack: ExecutionStack, i: int) -> pb.PlaceOrderRequest:
    symbol = SYMBOLS[i % 2]
    inst = stack.sim.engine.instrument(symbol)
    ioc = i % 3 == 0  # a third are IOC far from the market: they end cancelled at once
    return pb.PlaceOrderRequest(
        venue="syndr", account=stack.account.address, symbol=symbol, side=side_pb2.SIDE_BUY,
        type=order_pb2.ORDER_TYPE_LIMIT, amount=str(inst.min_trade_amount), price=resting_price(stack.sim, symbol),
        time_in_force=(order_pb2.TIME_IN_FORCE_IMMEDIATE_OR_CANCEL if ioc
                       else order_pb2.TIME_IN_FORCE_GOOD_TIL_CANCELLED),
        post_only=not ioc, client_order_id=f"burst-{i:04d}")


async def test_burst_with_lost_responses_and_a_restart_places_each_order_exactly_once(stack: ExecutionStack) -> None:
    sim = stack.sim
    port = free_port()
    env = stack.env(PORTICO_LISTEN_ADDR=f"127.0.0.1:{port}")
    settings = ExecutionSettings.from_env(env)
    app = ExecutionApp(settings, env)
    await app.start()
    requests = [order_request(stack, i) for i in range(BURST)]
    done: dict[str, pb.PlaceOrderResponse] = {}
    rejected: dict[str, str] = {}
    rng = random.Random(1)
    retries: Counter[str] = Counter()
    sim.faults.update({"drop_response_rate": 0.15})

    async def client(indices: list[int]) -> None:
        async with open_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.ExecutionServiceStub(channel)
            for i in indices:
                request = requests[i]
                for _attempt in range(200):
                    try:
                        done[request.client_order_id] = await stub.PlaceOrder(
                            request, metadata=bearer(stack.tokens["trade"]), timeout=10)
                        break
                    except grpc.aio.AioRpcError as exc:
                        if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED,
                                          grpc.StatusCode.DEADLINE_EXCEEDED):
                            retries[exc.code().name] += 1
                            await asyncio.sleep(0.02 + rng.random() * 0.05)  # retry the SAME request
                            continue
                        rejected[request.client_order_id] = f"{exc.code().name}: {exc.details()}"
                        break
                else:
                    raise AssertionError(f"{request.client_order_id} never settled")

    indices = list(range(BURST))
    clients = [asyncio.create_task(client(indices[k::8])) for k in range(8)]
    # Restart the service (no grace: calls in flight are cut) once half the burst is through.
    await until(lambda: len(done) >= BURST // 2, 120, 0.01)
    await app.aclose(grace_s=0)
    restarted = ExecutionApp(settings, env)
    await restarted.start()
    try:
        async with asyncio.timeout(180):
            await asyncio.gather(*clients)
        sim.faults.reset()
        async with asyncio.timeout(30):
            await restarted.reconciled.wait()
        assert rejected == {}
        assert len(done) == BURST
        assert retries["UNAVAILABLE"] >= 20  # the faults did bite: lost answers, a restart

        # Exactly one venue order per client id (the label is the client id), and it is the one returned.
        venue_orders = sim.engine.order_history(stack.account.address, count=100_000)
        labels = Counter(o.label for o in venue_orders if o.label.startswith("burst-"))
        assert set(labels) == set(done) and set(labels.values()) == {1}
        by_label = {o.label: o for o in venue_orders}
        assert all(done[cid].order.order_id == by_label[cid].order_id for cid in done)

        # Cancel what rests; then every journal entry is final and agrees with the venue.
        async with open_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.ExecutionServiceStub(channel)
            for symbol in SYMBOLS:
                await stub.CancelAllOrders(pb.CancelAllOrdersRequest(venue="syndr", account=stack.account.address,
                                                                     symbol=symbol),
                                           metadata=bearer(stack.tokens["trade"]))
        entries = await restarted.journal.entries("syndr", stack.account.address)
        assert len(entries) == BURST
        venue_state = {o.order_id: o.to_wire()["order_state"] for o in
                       sim.engine.order_history(stack.account.address, count=100_000)}
        for entry in entries:
            assert entry.state in FINAL_STATES, entry
            assert entry.state.value.lower() == venue_state[entry.order_id], entry
    finally:
        await restarted.aclose(grace_s=0)


async def test_order_stream_catches_up_after_the_websocket_is_cut(stack: ExecutionStack) -> None:
    sim = stack.sim
    host, port = sim.ws_url.split("//", 1)[1].split("/", 1)[0].split(":")
    async with TcpProxy(host, int(port)) as proxy, \
            running_execution(stack, {"PORTICO_SYNDR_WS_URL": f"ws://{proxy.addr}/ws/api/v1"}) as running, \
            open_channel(running.target) as channel:
        stub = running.stub(channel)
        account = stack.account.address
        seen: list[pb.OrderUpdate] = []

        async def follow() -> None:
            async for message in stub.StreamOrderUpdates(pb.StreamOrderUpdatesRequest(venue="syndr", account=account),
                                                         metadata=running.metadata("read")):
                seen.extend(message.updates)

        task = asyncio.create_task(follow())
        first = await stub.PlaceOrder(order_request(stack, 1), metadata=running.metadata())
        await until(lambda: any(u.order.order_id == first.order.order_id for u in seen))
        await proxy.block()  # the private WebSocket is gone, and cannot come back for now
        second = await stub.PlaceOrder(order_request(stack, 5), metadata=running.metadata())
        await stub.CancelOrder(pb.CancelOrderRequest(venue="syndr", account=account, order_id=first.order.order_id),
                               metadata=running.metadata())
        await asyncio.sleep(0.3)
        missed = [u for u in seen if u.order.order_id == second.order.order_id]
        assert missed == []  # nothing arrived while cut: what follows comes from the catch-up read
        await proxy.unblock()
        await until(lambda: any(u.order.order_id == second.order.order_id
                                and u.order.state == order_pb2.ORDER_STATE_OPEN for u in seen)
                    and any(u.order.order_id == first.order.order_id
                            and u.order.state == order_pb2.ORDER_STATE_CANCELLED for u in seen), 20)
        sequences = [u.sequence for u in seen]
        assert sequences == list(range(sequences[0], sequences[0] + len(sequences)))
        task.cancel()


async def test_one_trace_per_order_across_execution_signer_and_venue(stack: ExecutionStack,
                                                                     spans: InMemorySpanExporter,
                                                                     log_lines: io.StringIO) -> None:
    async with running_execution(stack) as running, open_channel(running.target) as channel:
        spans.clear()
        reply = await running.stub(channel).PlaceOrder(order_request(stack, 2), metadata=running.metadata())
        sim_order = stack.sim.engine.order(stack.account.address, reply.order.order_id)
        assert sim_order.order_id == reply.order.order_id
    finished = spans.get_finished_spans()
    # No secret anywhere: not the venue API secret, not the bearer token, in no log line or span.
    secrets = [stack.account.credentials.api_secret, stack.tokens["trade"], stack.service_token]
    exported = log_lines.getvalue() + "".join(span.to_json() for span in finished) + str(reply)
    assert not [secret for secret in secrets if secret in exported]
    place = [s for s in finished if s.kind == SpanKind.SERVER and s.name.endswith("ExecutionService/PlaceOrder")]
    assert len(place) == 1
    trace_id = place[0].context.trace_id
    in_trace = {s.context.span_id: s for s in finished if s.context.trace_id == trace_id}

    def ancestors(span: object) -> list[str]:
        names = []
        parent = span.parent  # type: ignore[attr-defined]
        while parent is not None and parent.span_id in in_trace:
            names.append(in_trace[parent.span_id].name)
            parent = in_trace[parent.span_id].parent
        return names

    sign_server = [s for s in in_trace.values() if s.kind == SpanKind.SERVER and s.name.endswith("SignerService/Sign")]
    sign_client = [s for s in in_trace.values() if s.kind == SpanKind.CLIENT and s.name.endswith("SignerService/Sign")]
    venue = [s for s in in_trace.values() if s.kind == SpanKind.CLIENT and s.name == "private/buy"]
    assert len(sign_server) == 1 and len(sign_client) == 1 and len(venue) == 1
    assert sign_server[0].parent is not None and sign_server[0].parent.span_id == sign_client[0].context.span_id
    assert place[0].name in ancestors(sign_client[0])
    assert place[0].name in ancestors(venue[0])
    attributes = venue[0].attributes or {}
    us_in, us_out = attributes["syndr.us_in"], attributes["syndr.us_out"]
    assert isinstance(us_in, int) and isinstance(us_out, int), (us_in, us_out)
    assert us_in <= us_out
