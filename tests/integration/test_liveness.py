"""Liveness does not depend on the venue: a service waiting for it is alive, only not ready.

The Deployments' liveness probes ask grpc.health.v1 for `LIVENESS_SERVICE`, their readiness probes for the
service's own name. A service whose venue is unreachable at start must answer the first SERVING (so the
kubelet does not restart it into a crash loop) and the second NOT_SERVING (so it gets no traffic), then
become ready by itself once the venue answers. The venue is the real simulator behind a `TcpProxy` that
refuses every connection until it is unblocked.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tests.support.execution import ExecutionStack, resting_bid, running_execution
from tests.support.signer import make_tokens
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import until

from portico.common.v1 import side_pb2
from portico.execution.service import SERVICE_NAME as EXECUTION_SERVICE
from portico.execution.v1 import execution_service_pb2 as pb
from portico.execution.v1 import order_pb2
from portico.marketdata.service import SERVICE_NAME as MARKETDATA_SERVICE
from portico.marketdata.service import MarketDataApp, MarketDataSettings
from portico.runtime.client import open_channel
from portico.runtime.lifecycle import cancel_and_wait
from portico.runtime.server import LIVENESS_SERVICE
from portico.sim.server import SimConfig, Simulator

SYMBOL = "ETH-PERP"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimConfig(port=0, seed=17, book_changes_per_second=20,
                                   market_maker_instruments=(SYMBOL,))) as simulator:
        yield simulator


def through(proxy: TcpProxy, sim: Simulator) -> dict[str, str]:
    """The venue URLs, by way of `proxy`."""
    direct = f"{sim.config.host}:{sim.port}"
    return {"PORTICO_SYNDR_HTTP_URL": sim.http_url.replace(direct, proxy.addr),
            "PORTICO_SYNDR_WS_URL": sim.ws_url.replace(direct, proxy.addr)}


async def statuses(target: str, *services: str) -> list[int]:
    """What a kubelet's gRPC probe of each service would get (unauthenticated, as probes are)."""
    async with open_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return [(await stub.Check(health_pb2.HealthCheckRequest(service=s), timeout=5)).status for s in services]


async def test_marketdata_listens_alive_but_not_ready_until_its_venue_connects(sim: Simulator) -> None:
    _, auth = make_tokens()
    async with TcpProxy(sim.config.host, sim.port) as proxy:
        await proxy.block()
        env = {"PORTICO_LISTEN_ADDR": "127.0.0.1:0", "PORTICO_AUTH_TOKENS": auth,
               "PORTICO_SHUTDOWN_GRACE_SECONDS": "0.5", **through(proxy, sim)}
        app = MarketDataApp(MarketDataSettings.from_env(env), env)
        starting = asyncio.create_task(app.start(), name="marketdata-start")
        try:
            try:
                await until(lambda: app.port, timeout_s=10)
            except TimeoutError:
                pytest.fail("market data does not listen while its venue is unreachable")
            target = f"127.0.0.1:{app.port}"
            await until(lambda: proxy.rejected >= 2, timeout_s=10)  # it is trying the venue, and failing
            assert not starting.done()
            assert await statuses(target, LIVENESS_SERVICE, "", MARKETDATA_SERVICE) == [
                SERVING, NOT_SERVING, NOT_SERVING]
            await asyncio.sleep(1.0)  # a while later: still alive, still not ready
            assert await statuses(target, LIVENESS_SERVICE, "", MARKETDATA_SERVICE) == [
                SERVING, NOT_SERVING, NOT_SERVING]

            await proxy.unblock()  # the venue is back: ready by itself, no restart
            await asyncio.wait_for(starting, 30)
            assert app.ws.connected
            assert await statuses(target, LIVENESS_SERVICE, "", MARKETDATA_SERVICE) == [SERVING] * 3
        finally:
            await cancel_and_wait(starting)
            await app.aclose(grace_s=0.2)


async def test_execution_is_alive_but_not_ready_until_it_reconciles_with_an_unreachable_venue(
        stack: ExecutionStack) -> None:
    sim = stack.sim

    def order(client_order_id: str) -> pb.PlaceOrderRequest:
        return pb.PlaceOrderRequest(venue="syndr", account=stack.account.address, symbol=SYMBOL,
                                    side=side_pb2.SIDE_BUY, type=order_pb2.ORDER_TYPE_LIMIT, amount="0.1",
                                    price=resting_bid(sim), client_order_id=client_order_id)

    # An order of unknown outcome in the journal: its answer lost, the WebSockets silent (as in
    # test_execution.py's test_restart_reconciles_before_serving).
    async with running_execution(stack) as running, open_channel(running.target) as channel:
        stub = running.stub(channel)
        await stub.PlaceOrder(order("warm-up"), metadata=running.metadata())
        sim.faults.update({"drop_response_rate": 1.0, "silent": True})
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.PlaceOrder(order("lost-0"), metadata=running.metadata())
        await running.app.aclose(grace_s=0)
    sim.faults.reset()

    # Restarted while the venue cannot be reached at all.
    async with TcpProxy(sim.config.host, sim.port) as proxy:
        await proxy.block()
        async with running_execution(stack, through(proxy, sim), wait_serving=False) as restarted:
            await until(lambda: proxy.rejected >= 2, timeout_s=10)  # reconciliation tries the venue, and fails
            assert await statuses(restarted.target, LIVENESS_SERVICE, "", EXECUTION_SERVICE) == [
                SERVING, NOT_SERVING, NOT_SERVING]
            await asyncio.sleep(1.0)  # several reconciliation passes later: still alive, still not ready
            assert not restarted.app.reconciled.is_set()
            assert await statuses(restarted.target, LIVENESS_SERVICE, "", EXECUTION_SERVICE) == [
                SERVING, NOT_SERVING, NOT_SERVING]

            await proxy.unblock()
            await asyncio.wait_for(restarted.app.reconciled.wait(), 15)
            assert await statuses(restarted.target, LIVENESS_SERVICE, "", EXECUTION_SERVICE) == [SERVING] * 3
            entry = await restarted.app.journal.get("syndr", stack.account.address, "lost-0")
            assert entry is not None and not entry.unresolved


async def test_marketdata_streams_asked_for_before_its_venue_connects_fail_clearly(sim: Simulator) -> None:
    """Listening before the venue's WebSocket is up: a stream asked for meanwhile (by a client that does not
    heed readiness) waits for the connection, then ends UNAVAILABLE, as a book stream does, never INTERNAL."""
    from portico.marketdata.v1 import market_data_service_pb2 as md_pb
    from portico.marketdata.v1 import market_data_service_pb2_grpc as md_grpc

    tokens, auth = make_tokens()
    async with TcpProxy(sim.config.host, sim.port) as proxy:
        await proxy.block()
        env = {"PORTICO_LISTEN_ADDR": "127.0.0.1:0", "PORTICO_AUTH_TOKENS": auth,
               "PORTICO_SHUTDOWN_GRACE_SECONDS": "0.5", "PORTICO_SYNDR_HTTP_URL": sim.http_url,
               "PORTICO_SYNDR_WS_URL": through(proxy, sim)["PORTICO_SYNDR_WS_URL"]}
        app = MarketDataApp(MarketDataSettings.from_env(env), env)
        starting = asyncio.create_task(app.start(), name="marketdata-start")
        try:
            await until(lambda: app.port, timeout_s=10)
            metadata = (("authorization", f"Bearer {tokens['read']}"),)
            async with open_channel(f"127.0.0.1:{app.port}") as channel:
                stub = md_grpc.MarketDataServiceStub(channel)
                calls = {
                    "StreamTickers": stub.StreamTickers(md_pb.StreamTickersRequest(venue="syndr", symbols=[SYMBOL]),
                                                        metadata=metadata, timeout=20),
                    "StreamTrades": stub.StreamTrades(md_pb.StreamTradesRequest(venue="syndr", symbols=[SYMBOL]),
                                                      metadata=metadata, timeout=20),
                    "StreamOrderBook": stub.StreamOrderBook(
                        md_pb.StreamOrderBookRequest(venue="syndr", symbol=SYMBOL), metadata=metadata, timeout=20),
                }
                for name, call in calls.items():
                    with pytest.raises(grpc.aio.AioRpcError) as caught:
                        await call.read()
                    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, (name, caught.value)
            assert not starting.done()
        finally:
            await cancel_and_wait(starting)
            await app.aclose(grace_s=0.2)
