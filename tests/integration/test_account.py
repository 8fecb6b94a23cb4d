"""AccountService end to end: a real simulator, OpenBao, signer and reference data (and execution for rotation)."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tests.support.account import running_account
from tests.support.execution import ExecutionStack, running_execution
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import until

from portico.account.v1 import account_pb2
from portico.account.v1 import account_service_pb2 as pb
from portico.common.v1 import side_pb2
from portico.execution.v1 import execution_service_pb2 as exec_pb
from portico.execution.v1 import order_pb2
from portico.runtime.client import open_channel
from portico.runtime.errors import error_info
from portico.runtime.vault import VaultSession, VaultSettings
from portico.sim.instruments import fmt_decimal
from portico.sim.server import SimConfig, Simulator
from portico.venues.accounts import account_path
from portico.venues.syndr.http import SyndrHttpClient

SYMBOL = "ETH-PERP"


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimConfig(port=0, seed=13, book_changes_per_second=50, market_maker_instruments=(SYMBOL,),
                                   rate_limit_capacity=100_000, rate_limit_refill_per_s=100_000)) as simulator:
        yield simulator


def request(cls: Any, stack: ExecutionStack, **fields: Any) -> Any:
    return cls(venue="syndr", account=stack.account.address, **fields)


async def take(stack: ExecutionStack, side: str, amount: Decimal) -> None:
    """Trade against the market maker straight at the venue (a market order of the test account)."""
    async with SyndrHttpClient(stack.sim.http_url, credentials=stack.account.credentials) as http:
        await http.call(f"private/{side}", stack.account.order(SYMBOL, side, str(amount), order_type="market",
                                                               time_in_force="IOC"))


def venue_signing_address(sim: Simulator, account: str) -> str:
    """The address of the signing key the venue holds for `account` (which must have one)."""
    key = sim.security.signing_key(account)
    assert key is not None, f"the venue has no signing key for {account}"
    return key.address


async def vault_secret(stack: ExecutionStack, path: str) -> dict[str, Any]:
    settings = VaultSettings(addr=stack.vault.addr, auth_method="token", token=stack.vault.root_token)
    async with VaultSession(settings) as vault:
        return await vault.read_kv(path)


async def test_summary_and_positions_agree_with_the_venue_after_trades(stack: ExecutionStack) -> None:
    sim = stack.sim
    increment = sim.engine.instrument(SYMBOL).contract_size
    await take(stack, "buy", increment * 30)
    await take(stack, "sell", increment * 10)
    async with running_account(stack) as running, open_channel(running.target) as channel:
        stub = running.stub(channel)
        summary = (await stub.GetAccountSummary(request(pb.GetAccountSummaryRequest, stack),
                                                metadata=running.metadata("read"))).summary
        venue = sim.engine.account_summary(stack.account.address)
        assert Decimal(summary.equity) == Decimal(str(venue["equity"]))
        assert Decimal(summary.initial_margin) == Decimal(str(venue["initial_margin"]))
        assert Decimal(summary.maintenance_margin) == Decimal(str(venue["maintenance_margin"]))
        assert Decimal(summary.realized_pnl or "0") == Decimal(str(venue.get("realized_pnl") or 0))
        assert summary.margin_mode == account_pb2.MARGIN_MODE_STANDARD
        assert set(summary.collateral) == set(venue["collateral"])

        positions = (await stub.ListPositions(request(pb.ListPositionsRequest, stack),
                                              metadata=running.metadata("read"))).positions
        venue_positions = {p["instrument_name"]: p for p in sim.engine.positions(stack.account.address)}
        assert {p.symbol for p in positions} == set(venue_positions) == {SYMBOL}
        position = positions[0]
        assert Decimal(position.size) == Decimal(str(venue_positions[SYMBOL]["size"])) == increment * 20
        assert position.direction == side_pb2.SIDE_BUY
        assert Decimal(position.average_price) == Decimal(str(venue_positions[SYMBOL]["average_price"]))

        deposits = (await stub.ListDeposits(request(pb.ListDepositsRequest, stack),
                                            metadata=running.metadata("read"))).deposits
        assert [d.asset for d in deposits] == [a for a, records in
                                               sim.engine.deposits(stack.account.address).items() for _ in records]
        collaterals = (await stub.ListCollaterals(pb.ListCollateralsRequest(venue="syndr"),
                                                  metadata=running.metadata("read"))).collaterals
        assert {c.symbol for c in collaterals} == set(sim.engine.collaterals())
        assert all(c.collateral_weight for c in collaterals)
        margin = (await stub.GetPortfolioMargin(request(pb.GetPortfolioMarginRequest, stack, currency="ETH"),
                                                metadata=running.metadata("read"))).portfolio_margin
        assert margin.total_loss_array

        # Portfolio margin on and off (idempotent: the venue only toggles).
        for enabled, mode in ((True, account_pb2.MARGIN_MODE_PORTFOLIO), (True, account_pb2.MARGIN_MODE_PORTFOLIO),
                              (False, account_pb2.MARGIN_MODE_STANDARD)):
            reply = await stub.SetPortfolioMargin(request(pb.SetPortfolioMarginRequest, stack, enabled=enabled),
                                                  metadata=running.metadata("admin"))
            assert reply.margin_mode == mode
            assert sim.engine.account_summary(stack.account.address)["is_portfolio_margined"] is enabled


async def test_position_stream_follows_trades_and_catches_up_after_a_cut(stack: ExecutionStack) -> None:
    sim = stack.sim
    increment = sim.engine.instrument(SYMBOL).contract_size
    host, port = sim.ws_url.split("//", 1)[1].split("/", 1)[0].split(":")
    async with TcpProxy(host, int(port)) as proxy, \
            running_account(stack, {"PORTICO_SYNDR_WS_URL": f"ws://{proxy.addr}/ws/api/v1"}) as running, \
            open_channel(running.target) as channel:
        updates: list[pb.PositionUpdate] = []

        async def follow() -> None:
            async for message in running.stub(channel).StreamPositions(
                    request(pb.StreamPositionsRequest, stack), metadata=running.metadata("read")):
                updates.extend(message.updates)

        task = asyncio.create_task(follow())
        # Streaming once the feed has read its starting point: a trade before that is in the starting point, not
        # an update (a fixed 0.3 s fell short on a loaded machine).
        await until(lambda: running.app.positions.consumers("syndr", stack.account.address) == 1, 20)
        await take(stack, "buy", increment * 7)
        await until(lambda: any(Decimal(u.position.size) == increment * 7 for u in updates))
        await proxy.block()  # the private WebSocket is cut and cannot come back for now
        await take(stack, "buy", increment * 5)
        await asyncio.sleep(0.3)
        assert not any(Decimal(u.position.size) == increment * 12 for u in updates)
        await proxy.unblock()
        await until(lambda: any(Decimal(u.position.size) == increment * 12 for u in updates), 20)
        sequences = [u.sequence for u in updates]
        assert sequences == list(range(sequences[0], sequences[0] + len(sequences)))
        assert updates[-1].position.symbol == SYMBOL
        task.cancel()


async def test_signing_key_rotation_new_key_trades_old_key_refused(stack: ExecutionStack,
                                                                   spans: InMemorySpanExporter,
                                                                   log_lines: io.StringIO) -> None:
    sim = stack.sim
    account = stack.account.address
    old_api_secret = stack.account.credentials.api_secret
    async with running_account(stack) as running, open_channel(running.target) as channel, \
            running_execution(stack, {"PORTICO_EXECUTION_CREDENTIALS_CACHE_SECONDS": "0"}) as execution, \
            open_channel(execution.target) as exec_channel:
        trade = execution.stub(exec_channel)
        bid = sim.engine.book(SYMBOL, 1).bids[0][0]
        tick = sim.engine.instrument(SYMBOL).tick_size
        price = str(((bid * Decimal("0.8")) // tick) * tick)

        def order(client_order_id: str) -> exec_pb.PlaceOrderRequest:
            return exec_pb.PlaceOrderRequest(venue="syndr", account=account, symbol=SYMBOL, side=side_pb2.SIDE_BUY,
                                             type=order_pb2.ORDER_TYPE_LIMIT, amount="0.01", price=price,
                                             client_order_id=client_order_id)

        before = await trade.PlaceOrder(order("before-rotation"), metadata=execution.metadata())
        assert before.order.signer_address.lower() == stack.account.signing_key.address.lower()

        rotated = await running.stub(channel).RegisterSigningKey(
            request(pb.RegisterSigningKeyRequest, stack, validity=Duration(seconds=86_400)),
            metadata=running.metadata("admin"))
        assert rotated.signing_key_address.lower() != stack.account.signing_key.address.lower()
        assert rotated.HasField("expire_time") and rotated.api_key.api_key
        assert rotated.api_key.vault_path.endswith(account_path("syndr", account))
        record = await vault_secret(stack, account_path("syndr", account))
        assert record["signing_key_id"] == rotated.signing_key_id and record["api_key"] == rotated.api_key.api_key
        assert record["api_secret"] and record["api_secret"] != old_api_secret
        assert venue_signing_address(sim, account).lower() == rotated.signing_key_address.lower()

        # Orders through execution are now signed by the new key (read from Vault), and the venue takes them.
        after = await trade.PlaceOrder(order("after-rotation"), metadata=execution.metadata())
        assert after.order.state == order_pb2.ORDER_STATE_OPEN
        assert after.order.signer_address.lower() == rotated.signing_key_address.lower()
        # An order signed by the old key is refused by the venue.
        async with SyndrHttpClient(sim.http_url, credentials=stack.account.credentials) as http:
            with pytest.raises(Exception) as refused:
                await http.call("private/buy", stack.account.order(SYMBOL, "buy", "0.01", price))
        assert "13010" in str(refused.value) or "13012" in str(refused.value)

    # No secret anywhere: not the new or old API secret, in no log line, span or response.
    exported = log_lines.getvalue() + "".join(s.to_json() for s in spans.get_finished_spans()) + str(rotated)
    for secret in (record["api_secret"], old_api_secret, stack.tokens["admin"]):
        assert secret not in exported


async def test_api_keys_secrets_go_to_vault_only(stack: ExecutionStack, spans: InMemorySpanExporter,
                                                 log_lines: io.StringIO) -> None:
    async with running_account(stack) as running, open_channel(running.target) as channel:
        stub = running.stub(channel)
        created = (await stub.CreateApiKey(request(pb.CreateApiKeyRequest, stack, name="reporting",
                                                   scope=account_pb2.API_KEY_SCOPE_READ_ONLY),
                                           metadata=running.metadata("admin"))).api_key
        assert created.api_key and created.vault_path and created.scope == account_pb2.API_KEY_SCOPE_READ_ONLY
        stored = await vault_secret(stack, created.vault_path.split("/", 1)[1])
        assert stored["api_key"] == created.api_key and stored["api_secret"]
        listed = (await stub.ListApiKeys(request(pb.ListApiKeysRequest, stack),
                                         metadata=running.metadata("read"))).api_keys
        assert created.api_key in {k.api_key for k in listed}
        reply = await stub.DeactivateApiKey(request(pb.DeactivateApiKeyRequest, stack, api_key=created.api_key),
                                            metadata=running.metadata("admin"))
        assert not reply.api_key.active
        listed = (await stub.ListApiKeys(request(pb.ListApiKeysRequest, stack),
                                         metadata=running.metadata("read"))).api_keys
        assert [k.active for k in listed if k.api_key == created.api_key] == [False]
        # The key Portico trades with cannot be deactivated from here.
        with pytest.raises(grpc.aio.AioRpcError) as in_use:
            await stub.DeactivateApiKey(request(pb.DeactivateApiKeyRequest, stack,
                                                api_key=stack.account.credentials.api_key),
                                        metadata=running.metadata("admin"))
        assert in_use.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    exported = log_lines.getvalue() + "".join(s.to_json() for s in spans.get_finished_spans()) + str(listed)
    assert stored["api_secret"] not in exported
    assert stack.account.credentials.api_secret not in exported


@pytest.mark.parametrize(("method", "message", "scope", "code", "field"), [
    ("GetAccountSummary", pb.GetAccountSummaryRequest(venue="syndr", account="0x" + "12" * 20), "read",
     grpc.StatusCode.NOT_FOUND, None),
    ("GetAccountSummary", pb.GetAccountSummaryRequest(venue="syndr", account="0x12"), "read",
     grpc.StatusCode.INVALID_ARGUMENT, "account"),
    ("ListPositions", pb.ListPositionsRequest(venue="nowhere", account="0x" + "12" * 20), "read",
     grpc.StatusCode.INVALID_ARGUMENT, "venue"),
    ("SetLeverage", None, "read", grpc.StatusCode.PERMISSION_DENIED, None),
    ("SetLeverage", pb.SetLeverageRequest(venue="syndr", account="0x" + "12" * 20, symbol="ETH\x00PERP", leverage="2"),
     "admin", grpc.StatusCode.INVALID_ARGUMENT, "symbol"),
    ("SetLeverage", pb.SetLeverageRequest(venue="syndr", account="0x" + "12" * 20, symbol="X" * 300, leverage="2"),
     "admin", grpc.StatusCode.INVALID_ARGUMENT, "symbol"),
    ("SetLeverage", pb.SetLeverageRequest(venue="syndr", account="0x" + "12" * 20, symbol=SYMBOL, leverage="2.5"),
     "admin", grpc.StatusCode.INVALID_ARGUMENT, "leverage"),
    ("GetPortfolioMargin", None, "read", grpc.StatusCode.INVALID_ARGUMENT, "currency"),
    ("CreateApiKey", None, "admin", grpc.StatusCode.INVALID_ARGUMENT, "scope"),
    ("RegisterSigningKey", None, "admin", grpc.StatusCode.INVALID_ARGUMENT, "validity"),
    ("RegisterSigningKey", pb.RegisterSigningKeyRequest(venue="syndr", account="0x" + "34" * 20), "admin",
     grpc.StatusCode.NOT_FOUND, None),
])
async def test_bad_input_is_refused_and_nothing_changes(stack: ExecutionStack, method: str, message: Any,
                                                        scope: str, code: grpc.StatusCode,
                                                        field: str | None) -> None:
    defaults = {
        "SetLeverage": request(pb.SetLeverageRequest, stack, symbol=SYMBOL, leverage="2"),
        "GetPortfolioMargin": request(pb.GetPortfolioMarginRequest, stack, currency="eth!"),
        "CreateApiKey": request(pb.CreateApiKeyRequest, stack, name="x"),
        "RegisterSigningKey": request(pb.RegisterSigningKeyRequest, stack, validity=Duration(seconds=1)),
    }
    sim = stack.sim
    async with running_account(stack) as running, open_channel(running.target) as channel:
        keys_before = len(sim.security.api_keys(stack.account.address))
        signing_before = venue_signing_address(sim, stack.account.address)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await getattr(running.stub(channel), method)(message or defaults[method], metadata=running.metadata(scope))
        assert caught.value.code() == code, caught.value.details()
        if field is not None:
            info = error_info(caught.value)
            assert info is not None and info.metadata["field"] == field
        assert len(sim.security.api_keys(stack.account.address)) == keys_before
        assert venue_signing_address(sim, stack.account.address) == signing_before


async def test_leverage_is_checked_against_the_instruments_maximum(stack: ExecutionStack) -> None:
    sim = stack.sim
    maximum = sim.engine.instrument(SYMBOL).max_leverage
    before = sim.engine.leverage(stack.account.address, SYMBOL)
    async with running_account(stack) as running, open_channel(running.target) as channel:
        stub = running.stub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.SetLeverage(request(pb.SetLeverageRequest, stack, symbol=SYMBOL,
                                           leverage=fmt_decimal(maximum + 1)), metadata=running.metadata("admin"))
        info = error_info(caught.value)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert info is not None and info.reason == "LEVERAGE_TOO_HIGH"
        assert sim.engine.leverage(stack.account.address, SYMBOL) == before
        wanted = min(maximum, Decimal(3))
        reply = await stub.SetLeverage(request(pb.SetLeverageRequest, stack, symbol=SYMBOL,
                                               leverage=fmt_decimal(wanted)), metadata=running.metadata("admin"))
        assert Decimal(reply.leverage) == wanted == sim.engine.leverage(stack.account.address, SYMBOL)
