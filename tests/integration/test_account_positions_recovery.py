"""StreamPositions when the venue misbehaves: the catch-up read after a reconnect fails (retried; the stream ends
UNAVAILABLE if the venue stays unreadable), and the venue's WebSocket cannot be reached at all (UNAVAILABLE within
the start limit, not a stream that hangs). A real simulator, OpenBao, signer and reference data; the private
WebSocket goes through a TCP proxy the test can cut."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import grpc
import pytest
from tests.support.account import RunningAccount, running_account
from tests.support.execution import ExecutionStack
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import until

from portico.account import positions
from portico.account.v1 import account_service_pb2 as pb
from portico.runtime import fanout
from portico.runtime.client import open_channel
from portico.runtime.errors import error_info
from portico.sim.server import SimConfig, Simulator
from portico.venues.syndr.http import SyndrHttpClient

SYMBOL = "ETH-PERP"


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimConfig(port=0, seed=17, book_changes_per_second=50, market_maker_instruments=(SYMBOL,),
                                   rate_limit_capacity=100_000, rate_limit_refill_per_s=100_000)) as simulator:
        yield simulator


def request(cls: Any, stack: ExecutionStack) -> Any:
    return cls(venue="syndr", account=stack.account.address)


async def take(stack: ExecutionStack, amount: Decimal) -> None:
    """Buy at the market straight at the venue (not through Portico)."""
    async with SyndrHttpClient(stack.sim.http_url, credentials=stack.account.credentials) as http:
        await http.call("private/buy", stack.account.order(SYMBOL, "buy", str(amount), order_type="market",
                                                           time_in_force="IOC"))


class Follower:
    """One StreamPositions call, collecting its updates and how it ended."""

    def __init__(self, running: RunningAccount, channel: grpc.aio.Channel, stack: ExecutionStack):
        self.updates: list[pb.PositionUpdate] = []
        self.error: grpc.aio.AioRpcError | None = None
        self._call = running.stub(channel).StreamPositions(request(pb.StreamPositionsRequest, stack),
                                                           metadata=running.metadata("read"))
        self.task = asyncio.create_task(self._follow())

    async def _follow(self) -> None:
        try:
            async for message in self._call:
                self.updates.extend(message.updates)
        except grpc.aio.AioRpcError as exc:
            self.error = exc

    def has_size(self, size: Decimal) -> bool:
        return any(Decimal(u.position.size) == size for u in self.updates)

    async def aclose(self) -> None:
        self._call.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


def ws_host_port(sim: Simulator) -> tuple[str, int]:
    host, port = sim.ws_url.split("//", 1)[1].split("/", 1)[0].split(":")
    return host, int(port)


async def test_a_change_missed_while_cut_is_streamed_even_if_the_first_catch_up_read_fails(
        stack: ExecutionStack) -> None:
    """The private WebSocket is cut, the position grows 0.7 -> 1.2, and the venue answers the catch-up's first
    `private/get_positions` with a 503. Before the fix the failure was logged and 1.2 never reached the stream."""
    sim = stack.sim
    increment = sim.engine.instrument(SYMBOL).contract_size
    async with TcpProxy(*ws_host_port(sim)) as proxy, \
            running_account(stack, {"PORTICO_SYNDR_WS_URL": f"ws://{proxy.addr}/ws/api/v1"}) as running, \
            open_channel(running.target) as channel:
        follower = Follower(running, channel, stack)
        try:
            await until(lambda: running.app.positions.consumers("syndr", stack.account.address) == 1, 20)  # streaming
            await take(stack, increment * 7)
            await until(lambda: follower.has_size(increment * 7))
            await proxy.block()
            await take(stack, increment * 5)  # missed by the cut socket
            sim.faults.update({"http_5xx_next": 1, "http_5xx_method": "private/get_positions"})
            await proxy.unblock()
            await until(lambda: follower.has_size(increment * 12), 20)
            assert sim.faults.http_5xx_next == 0  # the catch-up did meet the 503
            sequences = [u.sequence for u in follower.updates]
            assert sequences == list(range(sequences[0], sequences[0] + len(sequences)))
            assert follower.error is None
        finally:
            await follower.aclose()


async def test_a_stream_ends_unavailable_when_the_venue_stays_unreadable_after_a_reconnect(
        stack: ExecutionStack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fanout, "_CATCH_UP_RETRY_S", 0.1, raising=False)
    monkeypatch.setattr(fanout, "_CATCH_UP_RETRY_MAX_S", 0.2, raising=False)
    monkeypatch.setattr(fanout, "_CATCH_UP_GIVE_UP_S", 1.0, raising=False)
    sim = stack.sim
    increment = sim.engine.instrument(SYMBOL).contract_size
    async with TcpProxy(*ws_host_port(sim)) as proxy, \
            running_account(stack, {"PORTICO_SYNDR_WS_URL": f"ws://{proxy.addr}/ws/api/v1"}) as running, \
            open_channel(running.target) as channel:
        follower = Follower(running, channel, stack)
        try:
            await until(lambda: running.app.positions.consumers("syndr", stack.account.address) == 1, 20)  # streaming
            await proxy.block()
            await take(stack, increment * 3)
            sim.faults.update({"http_5xx_next": 1_000, "http_5xx_method": "private/get_positions"})
            await proxy.unblock()
            async with asyncio.timeout(20):
                await follower.task
            assert follower.error is not None and follower.error.code() == grpc.StatusCode.UNAVAILABLE
            info = error_info(follower.error)
            assert info is not None and info.reason == "CATCH_UP_FAILED"
            assert not follower.has_size(increment * 3)
        finally:
            sim.faults.update({"http_5xx_next": 0, "http_5xx_method": ""})
            await follower.aclose()


async def test_an_unreachable_venue_websocket_fails_the_stream_unavailable_instead_of_hanging(
        stack: ExecutionStack, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before the fix StreamPositions waited for ever (and held the lock every other account's stream needed)."""
    monkeypatch.setattr(positions, "_START_TIMEOUT_S", 1.0, raising=False)
    async with TcpProxy(*ws_host_port(stack.sim)) as proxy:
        await proxy.block()  # every connection is closed as soon as it is accepted
        async with running_account(stack, {"PORTICO_SYNDR_WS_URL": f"ws://{proxy.addr}/ws/api/v1"}) as running, \
                open_channel(running.target) as channel:
            stub = running.stub(channel)
            loop = asyncio.get_running_loop()
            for _ in range(2):  # and again: a failed start leaves nothing behind that a retry would wait for
                started = loop.time()
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    async with asyncio.timeout(10):
                        async for _message in stub.StreamPositions(request(pb.StreamPositionsRequest, stack),
                                                                   metadata=running.metadata("read")):
                            pass
                assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
                assert loop.time() - started < 5
            # The rest of the service is not stuck behind it.
            listed = await stub.ListPositions(request(pb.ListPositionsRequest, stack),
                                              metadata=running.metadata("read"))
            assert listed is not None
