"""AccountService against the contract and the venue document: what a short position looks like, the venue
calls' parameters as the document types them, a margin mode the venue does not report, and what calls for an
unknown account leave behind. A real simulator, OpenBao, signer and reference data."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal

import grpc
import pytest
from tests.integration.test_account import SYMBOL, request, take, vault_secret
from tests.integration.test_account_failures import wrap
from tests.support.account import running_account
from tests.support.execution import ExecutionStack
from tests.support.waiting import until

from portico.account.leases import lease_path
from portico.account.v1 import account_pb2
from portico.account.v1 import account_service_pb2 as pb
from portico.common.v1 import side_pb2
from portico.runtime.client import open_channel
from portico.runtime.errors import error_info
from portico.runtime.vault import VaultNotFound
from portico.sim.server import SimConfig, Simulator


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimConfig(port=0, seed=31, book_changes_per_second=50, market_maker_instruments=(SYMBOL,),
                                   rate_limit_capacity=100_000, rate_limit_refill_per_s=100_000)) as simulator:
        yield simulator


async def test_a_short_position_is_a_sell_of_absolute_size_listed_and_streamed(stack: ExecutionStack) -> None:
    """`Position.size` is absolute (the contract), the side is in `direction`: a venue that reports a short with a
    negative size must not reach a desk as `SELL -x`, which reads as long once the side is applied."""
    sim = stack.sim
    increment = sim.engine.instrument(SYMBOL).contract_size
    async with running_account(stack) as running, open_channel(running.target) as channel:
        stub = running.stub(channel)
        updates: list[pb.PositionUpdate] = []

        async def follow() -> None:
            async for message in stub.StreamPositions(request(pb.StreamPositionsRequest, stack),
                                                      metadata=running.metadata("read")):
                updates.extend(message.updates)

        task = asyncio.create_task(follow())
        try:
            await until(lambda: running.app.positions.consumers("syndr", stack.account.address) == 1, 20)  # streaming
            await take(stack, "sell", increment * 4)
            venue = {p["instrument_name"]: p for p in sim.engine.positions(stack.account.address)}[SYMBOL]
            assert venue["direction"] == "sell"
            listed = (await stub.ListPositions(request(pb.ListPositionsRequest, stack),
                                               metadata=running.metadata("read"))).positions
            assert [(p.symbol, p.direction, Decimal(p.size)) for p in listed] == [
                (SYMBOL, side_pb2.SIDE_SELL, increment * 4)]
            await until(lambda: bool(updates))
            assert [(u.position.direction, Decimal(u.position.size)) for u in updates] == [
                (side_pb2.SIDE_SELL, increment * 4)]
        finally:
            task.cancel()


async def test_leverage_names_the_instrument_by_a_string_id_as_the_document_types_it(stack: ExecutionStack) -> None:
    """`private/update_instrument_leverage`: the document's table types `instrument_id` as a string (its example
    sends "1"); `updated_leverage` is an integer."""
    sim = stack.sim
    instrument = sim.engine.instrument(SYMBOL)
    async with running_account(stack) as running, open_channel(running.target) as channel:
        await running.stub(channel).SetLeverage(request(pb.SetLeverageRequest, stack, symbol=SYMBOL, leverage="2"),
                                                metadata=running.metadata("admin"))
    sent = [r.params for r in sim.requests if r.method == "private/update_instrument_leverage"]
    assert sent == [{"instrument_id": str(instrument.id), "updated_leverage": 2}]
    assert sim.engine.leverage(stack.account.address, SYMBOL) == 2


async def test_a_summary_without_the_margin_mode_toggles_nothing(stack: ExecutionStack) -> None:
    """The venue's summary leaves out `is_portfolio_margined`: the mode is not known, so SetPortfolioMargin must not
    toggle blind (asked for "on" while it is on, it would switch it off), and the summary says UNSPECIFIED."""
    sim = stack.sim
    account = stack.account.address
    sim.engine.toggle_portfolio_margin(account)
    assert sim.engine.account_summary(account)["is_portfolio_margined"] is True
    wrap(sim, "private/get_account_summary", lambda result: result.pop("is_portfolio_margined"))
    async with running_account(stack) as running, open_channel(running.target) as channel:
        stub = running.stub(channel)
        summary = (await stub.GetAccountSummary(request(pb.GetAccountSummaryRequest, stack),
                                                metadata=running.metadata("read"))).summary
        assert summary.margin_mode == account_pb2.MARGIN_MODE_UNSPECIFIED
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.SetPortfolioMargin(request(pb.SetPortfolioMarginRequest, stack, enabled=True),
                                          metadata=running.metadata("admin"))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    info = error_info(caught.value)
    assert info is not None and info.reason == "MARGIN_MODE_UNKNOWN"
    assert not [r for r in sim.requests if r.method == "private/toggle_portfolio_margin"]
    assert sim.engine.account_summary(account)["is_portfolio_margined"] is True


async def test_calls_for_an_account_portico_does_not_hold_leave_nothing_behind(stack: ExecutionStack) -> None:
    """Every address a caller names must not leave a lease record in Vault, nor a lock in the process: each is
    NOT_FOUND before either is taken."""
    unknown = ["0x" + f"{i:02x}" * 20 for i in range(0xa1, 0xa4)]
    async with running_account(stack) as running, open_channel(running.target) as channel:
        stub = running.stub(channel)
        for address in unknown:
            calls = [
                stub.SetPortfolioMargin(pb.SetPortfolioMarginRequest(venue="syndr", account=address, enabled=True),
                                        metadata=running.metadata("admin")),
                stub.RegisterSigningKey(pb.RegisterSigningKeyRequest(venue="syndr", account=address),
                                        metadata=running.metadata("admin")),
            ]
            for call in calls:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await call
                assert caught.value.code() == grpc.StatusCode.NOT_FOUND
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                async for _ in stub.StreamPositions(pb.StreamPositionsRequest(venue="syndr", account=address),
                                                    metadata=running.metadata("read")):
                    pass
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
            for change in ("portfolio-margin", "signing-key"):
                with pytest.raises(VaultNotFound):
                    await vault_secret(stack, lease_path("syndr", address, change))
        assert not running.app.positions._locks
        assert not running.app.registrar._locks
