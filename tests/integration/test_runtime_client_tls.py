"""Client-side TLS and mTLS by configuration: the channels a service opens to the services it calls.

`PORTICO_UPSTREAM_TLS_*` turn TLS on for every outgoing gRPC channel of a process (execution to the signer and
reference data, account to the signer and reference data, market data and the gateway to reference data): the
CA its servers' certificates are checked against, a client certificate for servers that ask for one, and the
name to check when the address is not it. Real servers of the shared runtime, a throwaway CA; no mocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import grpc
import pytest
from tests.support.demo_server import build
from tests.support.execution import (
    EXECUTION_POLICY,
    SIGNER_POLICY,
    ExecutionStack,
    provision_account,
    resting_bid,
    running_execution,
)
from tests.support.openbao import OpenBaoDevServer
from tests.support.pki import NAMED_SERVER, Pki, make_pki, server_env, upstream_env
from tests.support.ports import free_port
from tests.support.refdata import running_refdata
from tests.support.signer import make_tokens, running_signer

from portico.common.v1 import side_pb2
from portico.execution.v1 import execution_service_pb2 as pb
from portico.execution.v1 import order_pb2
from portico.marketdata.service import MarketDataApp, MarketDataSettings
from portico.refdata.v1 import reference_data_service_pb2 as refdata_pb
from portico.runtime.client import ChannelTls, bearer, open_channel
from portico.runtime.errors import NotFound, Unavailable
from portico.runtime.server import GrpcServer
from portico.sim.server import SimConfig, Simulator

REPO = Path(__file__).resolve().parents[2]
SYMBOL = "ETH-PERP"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tokens() -> tuple[dict[str, str], str]:
    return make_tokens()


@contextlib.asynccontextmanager
async def demo(env: dict[str, str], tokens: tuple[dict[str, str], str]) -> AsyncIterator[str]:
    server: GrpcServer = build({"PORTICO_LISTEN_ADDR": "127.0.0.1:0", "PORTICO_AUTH_TOKENS": tokens[1], **env})
    port = await server.start(["test.Demo"])
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


async def wait_call(channel: grpc.aio.Channel, token: str) -> bytes:
    """The token rides in the call's metadata, as the services send theirs, over TLS as over plaintext."""
    rpc = channel.unary_unary("/test.Demo/Wait")
    return await rpc(b"1", metadata=bearer(token), timeout=10)  # type: ignore[no-any-return]


async def refused(channel: grpc.aio.Channel, token: str) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await wait_call(channel, token)
    return caught.value.code()


# --------------------------------------------------------------------------- the channel against a real server


async def test_a_channel_with_the_upstream_settings_is_accepted_by_an_mtls_server(
        pki: Pki, tokens: tuple[dict[str, str], str]) -> None:
    tls = ChannelTls.from_env(upstream_env(pki))
    assert tls is not None
    async with demo(server_env(pki), tokens) as target, open_channel(target, tls=tls) as channel:
        assert await wait_call(channel, tokens[0]["read"]) == b"1"


async def test_without_a_client_certificate_an_mtls_server_refuses_the_channel(
        pki: Pki, tokens: tuple[dict[str, str], str]) -> None:
    tls = ChannelTls.from_env(upstream_env(pki, client_cert=False))
    async with demo(server_env(pki), tokens) as target, open_channel(target, tls=tls) as channel:
        assert await refused(channel, tokens[0]["read"]) == grpc.StatusCode.UNAVAILABLE


async def test_a_server_certificate_of_another_ca_is_refused(pki: Pki, tokens: tuple[dict[str, str], str]) -> None:
    """The upstream CA is the trust for the called servers: one from another CA is not spoken to."""
    tls = ChannelTls.from_env(upstream_env(pki, ca=pki.rogue_ca))
    async with demo(server_env(pki), tokens) as target, open_channel(target, tls=tls) as channel:
        assert await refused(channel, tokens[0]["read"]) == grpc.StatusCode.UNAVAILABLE
    async with demo(server_env(pki, mtls=False), tokens) as target, open_channel(target, tls=tls) as channel:
        assert await refused(channel, tokens[0]["read"]) == grpc.StatusCode.UNAVAILABLE


async def test_without_the_upstream_settings_the_channel_is_plaintext_and_a_tls_server_refuses_it(
        pki: Pki, tokens: tuple[dict[str, str], str]) -> None:
    assert ChannelTls.from_env({}) is None
    async with demo(server_env(pki), tokens) as target, open_channel(target, tls=None) as channel:
        assert await refused(channel, tokens[0]["read"]) == grpc.StatusCode.UNAVAILABLE


async def test_the_server_name_setting_checks_that_name_when_dialing_by_address(
        pki: Pki, tokens: tuple[dict[str, str], str]) -> None:
    """A certificate for `signer.portico.test` only, dialed at 127.0.0.1: refused unless that name is set."""
    async with demo(server_env(pki, named=True), tokens) as target:
        async with open_channel(target, tls=ChannelTls.from_env(upstream_env(pki))) as channel:
            assert await refused(channel, tokens[0]["read"]) == grpc.StatusCode.UNAVAILABLE
        named = ChannelTls.from_env({**upstream_env(pki), "PORTICO_UPSTREAM_TLS_SERVER_NAME": NAMED_SERVER})
        async with open_channel(target, tls=named) as channel:
            assert await wait_call(channel, tokens[0]["read"]) == b"1"
        other = ChannelTls.from_env({**upstream_env(pki), "PORTICO_UPSTREAM_TLS_SERVER_NAME": "other.portico.test"})
        async with open_channel(target, tls=other) as channel:
            assert await refused(channel, tokens[0]["read"]) == grpc.StatusCode.UNAVAILABLE


def test_tls_settings_and_separate_files_are_not_both_taken(pki: Pki) -> None:
    tls = ChannelTls.from_env(upstream_env(pki))
    with pytest.raises(ValueError, match="tls"):
        open_channel("127.0.0.1:1", tls=tls, ca_file=pki.ca)


# --------------------------------------------------------------------------- a real service's outgoing channels


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimConfig(port=0, seed=17, book_changes_per_second=20, market_maker_instruments=(SYMBOL,),
                                   rate_limit_capacity=100_000, rate_limit_refill_per_s=100_000)) as simulator:
        yield simulator


@pytest.fixture
async def mtls_stack(sim: Simulator, openbao: OpenBaoDevServer, tmp_path: Path, pki: Pki
                     ) -> AsyncIterator[ExecutionStack]:
    """The execution stack of tests/support/execution.py, with the signer and reference data serving mTLS only."""
    account, signing_key_id = await provision_account(sim, openbao, f"tls-{secrets.token_hex(4)}")
    openbao.write_policy("portico-execution", EXECUTION_POLICY)
    openbao.write_policy("portico-signer", SIGNER_POLICY)
    execution_vault_token = openbao.client().auth.token.create(policies=["portico-execution"], ttl="1h")[
        "auth"]["client_token"]
    signer_vault_token = openbao.client().auth.token.create(policies=["portico-signer"], ttl="1h")[
        "auth"]["client_token"]
    tokens, auth_config = make_tokens()
    env = {"PORTICO_AUTH_TOKENS": auth_config, **server_env(pki)}
    async with running_signer(openbao.addr, signer_vault_token, tmp_path / "signer", env) as signer, \
            running_refdata(sim.http_url, {"PORTICO_REFDATA_DB": str(tmp_path / "refdata.sqlite3")}, env) as refdata:
        async with open_channel(refdata.target, tls=ChannelTls.from_env(upstream_env(pki))) as channel:
            await refdata.stub(channel).SyncInstruments(refdata_pb.SyncInstrumentsRequest(venue="syndr"),
                                                        metadata=bearer(tokens["admin"]), timeout=30)
        yield ExecutionStack(sim=sim, vault=openbao, signer=signer, refdata_target=refdata.target, account=account,
                             signing_key_id=signing_key_id, service_token=tokens["trade"],
                             execution_vault_token=execution_vault_token, data_dir=tmp_path, tokens=tokens,
                             auth_config=auth_config)


def order(stack: ExecutionStack, client_order_id: str) -> pb.PlaceOrderRequest:
    return pb.PlaceOrderRequest(venue="syndr", account=stack.account.address, symbol=SYMBOL, side=side_pb2.SIDE_BUY,
                                type=order_pb2.ORDER_TYPE_LIMIT, amount="0.1", price=resting_bid(stack.sim),
                                client_order_id=client_order_id)


def venue_orders(sim: Simulator) -> int:
    return sum(1 for r in sim.requests if r.method in ("private/buy", "private/sell"))


async def test_execution_with_the_upstream_settings_trades_through_an_mtls_signer_and_reference_data(
        mtls_stack: ExecutionStack, pki: Pki) -> None:
    stack = mtls_stack
    async with running_execution(stack, upstream_env(pki)) as running, open_channel(running.target) as channel:
        placed = await running.stub(channel).PlaceOrder(order(stack, "tls-1"), metadata=running.metadata(),
                                                        timeout=30)
    assert placed.order.state == order_pb2.ORDER_STATE_OPEN
    # Signed by the signer over mTLS, checked against reference data over mTLS, accepted by the venue.
    venue_order = stack.sim.engine.order(stack.account.address, placed.order.order_id).to_wire()
    assert venue_order["order_signer"].lower() == stack.account.signing_key.address.lower()


async def test_execution_without_the_upstream_settings_cannot_reach_an_mtls_signer(mtls_stack: ExecutionStack,
                                                                                    pki: Pki) -> None:
    """Fails closed: nothing reaches the venue (the plaintext channels, and a TLS one without a client
    certificate, are refused by the servers)."""
    stack = mtls_stack
    for env in ({}, upstream_env(pki, client_cert=False)):
        async with running_execution(stack, env) as running, open_channel(running.target) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await running.stub(channel).PlaceOrder(order(stack, f"plain-{len(env)}"), metadata=running.metadata(),
                                                       timeout=30)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value
    assert venue_orders(stack.sim) == 0


@pytest.fixture
async def mtls_refdata(sim: Simulator, tmp_path: Path, pki: Pki) -> AsyncIterator[tuple[str, dict[str, str]]]:
    """Reference data serving mTLS only, synced: its target and the tokens it takes."""
    tokens, auth_config = make_tokens()
    env = {"PORTICO_AUTH_TOKENS": auth_config, **server_env(pki)}
    async with running_refdata(sim.http_url, {"PORTICO_REFDATA_DB": str(tmp_path / "refdata.sqlite3")}, env) as refdata:
        async with open_channel(refdata.target, tls=ChannelTls.from_env(upstream_env(pki))) as channel:
            await refdata.stub(channel).SyncInstruments(refdata_pb.SyncInstrumentsRequest(venue="syndr"),
                                                        metadata=bearer(tokens["admin"]), timeout=30)
        yield refdata.target, tokens


async def test_market_data_checks_symbols_with_mtls_reference_data_through_the_upstream_settings(
        sim: Simulator, mtls_refdata: tuple[str, dict[str, str]], pki: Pki) -> None:
    """An unknown symbol is NOT_FOUND only when reference data answered; unreachable, it is UNAVAILABLE."""
    target, tokens = mtls_refdata
    for env, code in ((upstream_env(pki), grpc.StatusCode.NOT_FOUND), ({}, grpc.StatusCode.UNAVAILABLE)):
        settings_env = {"PORTICO_LISTEN_ADDR": "127.0.0.1:0", "PORTICO_AUTH_TOKENS": make_tokens()[1],
                        "PORTICO_SYNDR_HTTP_URL": sim.http_url, "PORTICO_SYNDR_WS_URL": sim.ws_url,
                        "PORTICO_MARKETDATA_REFDATA_ADDR": target, "PORTICO_SERVICE_TOKEN": tokens["read"], **env}
        app = MarketDataApp(MarketDataSettings.from_env(settings_env), settings_env)
        try:
            await app.start()
            check = app.symbols.check
            if code == grpc.StatusCode.NOT_FOUND:
                await check("syndr", SYMBOL)  # listed: reference data said so
                with pytest.raises(NotFound):
                    await check("syndr", "NOPE-PERP")
            else:
                with pytest.raises(Unavailable, match="reference data unavailable"):
                    await check("syndr", SYMBOL)
        finally:
            await app.aclose(grace_s=0.2)


async def test_the_gateway_serves_instruments_from_mtls_reference_data_through_the_upstream_settings(
        mtls_refdata: tuple[str, dict[str, str]], pki: Pki, tmp_path: Path) -> None:
    """The gateway process itself (`python -m portico.gateway`), configured only by its environment."""
    target, tokens = mtls_refdata
    for env, expected in ((upstream_env(pki), 200), ({}, 503)):
        port = free_port()
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "portico.gateway", cwd=tmp_path, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PORTICO_GATEWAY_LISTEN_ADDR": f"127.0.0.1:{port}", "PORTICO_REFDATA_ADDR": target,
                 **env})
        try:
            url = f"http://127.0.0.1:{port}/v1/instruments/syndr/{SYMBOL}"
            async with aiohttp.ClientSession() as session:
                status = None
                for _ in range(200):  # until it listens
                    try:
                        async with session.get(url, headers={"Authorization": f"Bearer {tokens['read']}"}) as answer:
                            status, body = answer.status, await answer.json()
                            break
                    except aiohttp.ClientConnectionError:
                        await asyncio.sleep(0.05)
            assert status == expected, body
            if expected == 200:
                assert SYMBOL in json.dumps(body)
        finally:
            process.terminate()
            await asyncio.wait_for(process.wait(), 30)


# --------------------------------------------------------------------------- configuration errors at start


@pytest.mark.parametrize("module", ["portico.execution", "portico.account", "portico.marketdata", "portico.gateway"])
@pytest.mark.parametrize("case", ["missing_ca", "key_of_another_certificate"])
def test_each_calling_service_refuses_unusable_upstream_tls_files_with_exit_status_2(
        module: str, case: str, pki: Pki, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PORTICO_LISTEN_ADDR": "127.0.0.1:0", "PORTICO_GATEWAY_LISTEN_ADDR": "127.0.0.1:0",
        "PORTICO_VAULT_ADDR": "http://127.0.0.1:1", "PORTICO_VAULT_TOKEN": "t", "PORTICO_SERVICE_TOKEN": "t",
        "PORTICO_MARKETDATA_REFDATA_ADDR": "127.0.0.1:1", "PORTICO_REFDATA_ADDR": "127.0.0.1:1",
        "PORTICO_EXECUTION_JOURNAL_DB": str(tmp_path / "journal.sqlite3"),
        "PORTICO_SYNDR_HTTP_URL": "http://127.0.0.1:1/api/v1", "PORTICO_SYNDR_WS_URL": "ws://127.0.0.1:1/ws/api/v1",
    }
    if case == "missing_ca":
        env |= {"PORTICO_UPSTREAM_TLS_CA_FILE": str(tmp_path / "missing-ca.pem")}
        needle = "PORTICO_UPSTREAM_TLS_CA_FILE: cannot read"
    else:
        env |= {**upstream_env(pki), "PORTICO_UPSTREAM_TLS_KEY_FILE": str(pki.server.key)}
        needle = "PORTICO_UPSTREAM_TLS_KEY_FILE is not the unencrypted PEM private key"
    try:
        done = subprocess.run([sys.executable, "-m", module], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{module} started with unusable upstream TLS files")
    assert done.returncode == 2, done.stderr
    assert "configuration error" in done.stderr and needle in done.stderr, done.stderr
    assert "PRIVATE KEY" not in done.stderr and pki.client.key.read_text() not in done.stderr
