"""AccountService when things go wrong: callers that go away mid-change, venue answers that are lost or refuse,
concurrent changes, bad durations, and listings that change while a caller pages through them."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from tests.integration.test_account import SYMBOL, request, vault_secret, venue_signing_address
from tests.support.account import RunningAccount, running_account
from tests.support.execution import ExecutionStack
from tests.support.waiting import until

from portico.account.v1 import account_pb2
from portico.account.v1 import account_service_pb2 as pb
from portico.runtime.client import open_channel
from portico.runtime.errors import error_info
from portico.runtime.vault import VaultError, VaultUnavailable
from portico.sim.errors import RpcFailure
from portico.sim.server import Method, SimConfig, Simulator
from portico.venues.accounts import account_path
from portico.venues.syndr.constants import ApiKeyScope, ErrorCode
from portico.venues.syndr.http import SyndrHttpClient


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimConfig(port=0, seed=17, book_changes_per_second=50, market_maker_instruments=(SYMBOL,),
                                   rate_limit_capacity=100_000, rate_limit_refill_per_s=100_000)) as simulator:
        yield simulator


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not await check():  # noqa: ASYNC110 - polls Vault and the venue, which announce nothing
            await asyncio.sleep(0.05)


def api_key_secret_path(stack: ExecutionStack, api_key: str) -> str:
    return f"portico/venues/syndr/api-keys/{stack.account.address.lower()}/{api_key}"


async def stored_secret(stack: ExecutionStack, api_key: str) -> str | None:
    try:
        return str((await vault_secret(stack, api_key_secret_path(stack, api_key)))["api_secret"])
    except VaultError:
        return None


def wrap(sim: Simulator, method: str, after: Callable[[Any], None]) -> Method:
    """Run the simulator's own handler, then `after(result)`; returns the original."""
    original = sim.methods[method]

    def handler(sim_: Any, p: Any, ctx: Any) -> Any:
        result = original.handler(sim_, p, ctx)
        after(result)
        return result

    sim.methods[method] = Method(handler, original.private)
    return original


def failing_api_key_writes(running: RunningAccount) -> None:
    """The account service's Vault refuses the secrets of new API keys (and only those)."""
    vault = running.app.vault
    write_kv = vault.write_kv

    async def refuse(path: str, data: Any, **kwargs: Any) -> int:
        if "/api-keys/" in path:
            raise VaultUnavailable("vault write refused (test)", operation="write", path=path, status=503)
        return await write_kv(path, data, **kwargs)

    vault.write_kv = refuse  # type: ignore[method-assign]


def deactivations(sim: Simulator) -> list[dict[str, Any]]:
    return [r.params for r in sim.requests if r.method == "private/deactivate_api_key"]


# --------------------------------------------------------------------------- RegisterSigningKey


async def test_register_signing_key_outlives_a_client_deadline(stack: ExecutionStack) -> None:
    """The caller's deadline passes while the venue holds `public/register_signing_key`: the registration still
    ends with Vault naming the key (and API key pair) the venue now uses."""
    sim = stack.sim
    account = stack.account.address
    old_key = stack.account.signing_key.address.lower()
    async with running_account(stack) as running, open_channel(running.target) as channel:
        # The steps before the venue's call (Vault, the signer) take well over half a second on a busy machine,
        # and a deadline passing during them rightly registers nothing: the deadline is 2 s, the venue holds 4 s.
        sim.faults.update({"http_hold_next": 1, "http_hold_ms": 4000,
                           "http_hold_method": "public/register_signing_key"})
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await running.stub(channel).RegisterSigningKey(
                request(pb.RegisterSigningKeyRequest, stack, validity=Duration(seconds=86_400)),
                metadata=running.metadata("admin"), timeout=2)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert sim.faults.http_hold_next == 0  # the deadline passed while the venue held the registration

        async def agreed() -> bool:  # the venue has a new key, and Vault names it
            venue_key = venue_signing_address(sim, account).lower()
            record = await vault_secret(stack, account_path("syndr", account))
            return venue_key != old_key and bool(record["signing_key_address"].lower() == venue_key)

        await eventually(agreed, 20)
        record = await vault_secret(stack, account_path("syndr", account))
        key = sim.security.authenticate(record["api_key"], record["api_secret"])  # the pair the venue issued
        assert key.active and key.scope == ApiKeyScope.ADMIN


async def test_shutdown_waits_for_a_registration_whose_caller_went_away(stack: ExecutionStack) -> None:
    """The service stops right after the caller gave up: closing waits for the registration to reach Vault."""
    sim = stack.sim
    account = stack.account.address
    async with running_account(stack) as running, open_channel(running.target) as channel:
        sim.faults.update({"http_hold_next": 1, "http_hold_ms": 3000,
                           "http_hold_method": "public/register_signing_key"})
        call = running.stub(channel).RegisterSigningKey(request(pb.RegisterSigningKeyRequest, stack),
                                                        metadata=running.metadata("admin"))
        # The caller goes away once the venue holds the registration (a fixed 0.3 s deadline could pass before
        # the service got there on a busy machine, and then, rightly, nothing was registered).
        await until(lambda: sim.faults.http_hold_next == 0, timeout_s=30)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
    # Closed (grace 0.5 s, less than the venue's hold): the work was waited for, not cut off.
    record = await vault_secret(stack, account_path("syndr", account))
    assert record["signing_key_address"].lower() == venue_signing_address(sim, account).lower()
    assert record["signing_key_address"].lower() != stack.account.signing_key.address.lower()
    assert sim.security.authenticate(record["api_key"], record["api_secret"]).active


async def test_a_lost_registration_answer_is_logged_as_needing_re_registration(stack: ExecutionStack,
                                                                               log_lines: io.StringIO) -> None:
    """The venue registers the key, then its answer is lost: the outcome is unknown to the service, which says
    so (an error log line, and the caller's status), and a new registration puts things right."""
    sim = stack.sim
    account = stack.account.address
    original = wrap(sim, "public/register_signing_key", lambda _: sim.faults.update({"drop_response_rate": 1.0}))
    async with running_account(stack) as running, open_channel(running.target) as channel:
        stub = running.stub(channel)
        try:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.RegisterSigningKey(request(pb.RegisterSigningKeyRequest, stack),
                                              metadata=running.metadata("admin"))
        finally:
            sim.faults.update({"drop_response_rate": 0.0})
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        info = error_info(caught.value)
        assert info is not None and info.reason == "REGISTRATION_OUTCOME_UNKNOWN"
        # The venue took the new key; Vault still names the old one: what the log line warns about.
        record = await vault_secret(stack, account_path("syndr", account))
        assert record["signing_key_address"].lower() == stack.account.signing_key.address.lower()
        assert venue_signing_address(sim, account).lower() != record["signing_key_address"].lower()
        errors = [line for line in log_lines.getvalue().splitlines()
                  if '"ERROR"' in line and "register_signing_key outcome unknown" in line]
        assert errors and "re-registration is needed" in errors[0] and account in errors[0]

        sim.methods["public/register_signing_key"] = original
        again = await stub.RegisterSigningKey(request(pb.RegisterSigningKeyRequest, stack),
                                              metadata=running.metadata("admin"))
        record = await vault_secret(stack, account_path("syndr", account))
        assert record["signing_key_address"] == again.signing_key_address
        assert venue_signing_address(sim, account).lower() == again.signing_key_address.lower()
    assert stack.account.credentials.api_secret not in log_lines.getvalue()
    assert record["api_secret"] not in log_lines.getvalue()


@pytest.mark.parametrize("validity", [
    Duration(seconds=2**62), Duration(seconds=-(2**62)), Duration(seconds=315_576_000_000),
    Duration(seconds=86_400, nanos=-1), Duration(seconds=59, nanos=999_999_999),
])
async def test_an_out_of_range_validity_is_invalid_argument(stack: ExecutionStack, validity: Duration) -> None:
    sim = stack.sim
    account = stack.account.address
    async with running_account(stack) as running, open_channel(running.target) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await running.stub(channel).RegisterSigningKey(
                request(pb.RegisterSigningKeyRequest, stack, validity=validity), metadata=running.metadata("admin"))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
        info = error_info(caught.value)
        assert info is not None and info.metadata["field"] == "validity"
        assert venue_signing_address(sim, account) == stack.account.signing_key.address


# --------------------------------------------------------------------------- API keys


async def test_create_api_key_outlives_a_client_deadline(stack: ExecutionStack) -> None:
    """The caller's deadline passes while the venue holds `private/create_api_key`: the new (admin) key's
    secret still reaches Vault; no active key is left whose secret nobody holds."""
    sim = stack.sim
    account = stack.account.address
    before = {k.api_key for k in sim.security.api_keys(account)}
    async with running_account(stack) as running, open_channel(running.target) as channel:
        sim.faults.update({"http_hold_next": 1, "http_hold_ms": 1500, "http_hold_method": "private/create_api_key"})
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await running.stub(channel).CreateApiKey(
                request(pb.CreateApiKeyRequest, stack, name="ops", scope=account_pb2.API_KEY_SCOPE_ADMIN),
                metadata=running.metadata("admin"), timeout=0.5)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        await until(lambda: len(sim.security.api_keys(account)) > len(before))  # the venue made it

        async def stored() -> bool:
            return all(await asyncio.gather(*(stored_secret(stack, k.api_key) for k in new_keys())))

        def new_keys() -> list[Any]:
            return [k for k in sim.security.api_keys(account) if k.api_key not in before]

        await eventually(stored, 5)
    new = new_keys()
    assert len(new) == 1 and new[0].active
    secret = await stored_secret(stack, new[0].api_key)
    assert secret is not None and sim.security.authenticate(new[0].api_key, secret) is new[0]


async def test_a_new_key_vault_refuses_is_deactivated_with_its_secret(stack: ExecutionStack) -> None:
    sim = stack.sim
    account = stack.account.address
    before = {k.api_key for k in sim.security.api_keys(account)}
    async with running_account(stack) as running, open_channel(running.target) as channel:
        failing_api_key_writes(running)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await running.stub(channel).CreateApiKey(
                request(pb.CreateApiKeyRequest, stack, name="ops", scope=account_pb2.API_KEY_SCOPE_READ_ONLY),
                metadata=running.metadata("admin"))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    info = error_info(caught.value)
    assert info is not None and info.reason == "VAULT_UNAVAILABLE"
    new = [k for k in sim.security.api_keys(account) if k.api_key not in before]
    assert len(new) == 1 and not new[0].active
    # The document's table requires the key's secret to deactivate it: it was sent (the simulator checks it).
    assert [sorted(p) for p in deactivations(sim)] == [["api_key", "api_secret"]]


async def test_a_new_key_is_deactivated_when_vault_goes_down_altogether(stack: ExecutionStack) -> None:
    """Vault stops answering right after the venue made the key: the secret cannot be stored, and the rollback
    must not need Vault either. It did: the venue call read the account's credentials from Vault again (its
    cache had expired: with a cache of 0 s, always), so the key stayed active and nothing said so."""
    sim = stack.sim
    account = stack.account.address
    before = {k.api_key for k in sim.security.api_keys(account)}
    down = False

    def vault_goes_down(_: Any) -> None:
        nonlocal down
        down = True

    wrap(sim, "private/create_api_key", vault_goes_down)
    async with running_account(stack, {"PORTICO_ACCOUNT_CREDENTIALS_CACHE_SECONDS": "0"}) as running, \
            open_channel(running.target) as channel:
        vault = running.app.vault
        read_kv, write_kv = vault.read_kv, vault.write_kv

        async def read(path: str) -> Any:
            if down:
                raise VaultUnavailable("vault read refused (test)", operation="read", path=path, status=503)
            return await read_kv(path)

        async def write(path: str, data: Any, **kwargs: Any) -> int:
            if down:
                raise VaultUnavailable("vault write refused (test)", operation="write", path=path, status=503)
            return await write_kv(path, data, **kwargs)

        vault.read_kv, vault.write_kv = read, write  # type: ignore[method-assign]
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await running.stub(channel).CreateApiKey(
                request(pb.CreateApiKeyRequest, stack, name="ops", scope=account_pb2.API_KEY_SCOPE_ADMIN),
                metadata=running.metadata("admin"))
    new = [k for k in sim.security.api_keys(account) if k.api_key not in before]
    assert len(new) == 1 and not new[0].active, "an active key whose secret nobody holds"
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    info = error_info(caught.value)
    assert info is not None and info.reason == "VAULT_UNAVAILABLE"
    assert "deactivated" in (caught.value.details() or "")


async def test_a_failed_rollback_is_reported_as_a_key_left_active(stack: ExecutionStack,
                                                                  log_lines: io.StringIO) -> None:
    sim = stack.sim
    account = stack.account.address
    secrets: list[str] = []
    wrap(sim, "private/create_api_key", lambda result: secrets.append(result["api_secret"]))

    def venue_fails(sim_: Any, p: Any, ctx: Any) -> Any:
        raise RpcFailure(ErrorCode.INTERNAL_ERROR, "internal error")

    sim.methods["private/deactivate_api_key"] = Method(venue_fails, True)
    before = {k.api_key for k in sim.security.api_keys(account)}
    async with running_account(stack) as running, open_channel(running.target) as channel:
        failing_api_key_writes(running)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await running.stub(channel).CreateApiKey(
                request(pb.CreateApiKeyRequest, stack, name="ops", scope=account_pb2.API_KEY_SCOPE_ADMIN),
                metadata=running.metadata("admin"))
    new = [k for k in sim.security.api_keys(account) if k.api_key not in before]
    assert len(new) == 1 and new[0].active
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    info = error_info(caught.value)
    assert info is not None and info.reason == "API_KEY_LEFT_ACTIVE" and info.metadata["api_key"] == new[0].api_key
    assert "key created, secret not stored, still active: deactivate it" in (caught.value.details() or "")
    assert len(deactivations(sim)) == 3  # retried: the venue's internal error does not prove nothing was done
    logged = log_lines.getvalue()
    assert any('"ERROR"' in line and "STILL ACTIVE" in line and account in line for line in logged.splitlines())
    assert secrets and secrets[0] not in logged and secrets[0] not in (caught.value.details() or "")


async def test_deactivate_api_key_sends_the_secret_vault_holds(stack: ExecutionStack) -> None:
    sim = stack.sim
    account = stack.account.address
    async with running_account(stack) as running, open_channel(running.target) as channel:
        stub = running.stub(channel)
        created = (await stub.CreateApiKey(
            request(pb.CreateApiKeyRequest, stack, name="reporting", scope=account_pb2.API_KEY_SCOPE_READ_ONLY),
            metadata=running.metadata("admin"))).api_key
        reply = await stub.DeactivateApiKey(request(pb.DeactivateApiKeyRequest, stack, api_key=created.api_key),
                                            metadata=running.metadata("admin"))
        assert not reply.api_key.active
        assert [k.active for k in sim.security.api_keys(account) if k.api_key == created.api_key] == [False]
        assert [sorted(p) for p in deactivations(sim)] == [["api_key", "api_secret"]]

        # A key made elsewhere: Portico does not hold its secret, so it cannot deactivate it (and says why).
        async with SyndrHttpClient(sim.http_url, credentials=stack.account.credentials) as venue:
            other = (await venue.call("private/create_api_key", {"scope": 2, "name": "elsewhere"})).result
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.DeactivateApiKey(request(pb.DeactivateApiKeyRequest, stack, api_key=other["api_key"]),
                                        metadata=running.metadata("admin"))
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        info = error_info(caught.value)
        assert info is not None and info.reason == "API_KEY_SECRET_NOT_HELD"
        assert "does not hold the secret" in (caught.value.details() or "")
        assert [k.active for k in sim.security.api_keys(account) if k.api_key == other["api_key"]] == [True]
        assert len(deactivations(sim)) == 1  # nothing was sent for it

        # An API key is part of a Vault path: no way out of the account's keys.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.DeactivateApiKey(request(pb.DeactivateApiKeyRequest, stack,
                                                api_key=f"../../accounts/{account.lower()}"),
                                        metadata=running.metadata("admin"))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# --------------------------------------------------------------------------- margin and leverage


async def test_concurrent_portfolio_margin_calls_toggle_once(stack: ExecutionStack) -> None:
    sim = stack.sim
    account = stack.account.address
    assert sim.engine.account_summary(account)["is_portfolio_margined"] is False
    async with running_account(stack) as running, open_channel(running.target) as channel:
        stub = running.stub(channel)
        sim.faults.update({"http_hold_next": 1, "http_hold_ms": 300,
                           "http_hold_method": "private/toggle_portfolio_margin"})
        replies = await asyncio.gather(*(
            stub.SetPortfolioMargin(request(pb.SetPortfolioMarginRequest, stack, enabled=True),
                                    metadata=running.metadata("admin")) for _ in range(3)))
        assert [r.margin_mode for r in replies] == [account_pb2.MARGIN_MODE_PORTFOLIO] * 3
        assert sim.engine.account_summary(account)["is_portfolio_margined"] is True
        assert sum(r.method == "private/toggle_portfolio_margin" for r in sim.requests) == 1


async def test_a_toggle_that_lands_on_the_other_mode_is_not_reported_as_done(stack: ExecutionStack) -> None:
    """Something else toggles the account at the same moment: the venue's answer names the mode not asked for."""
    sim = stack.sim
    account = stack.account.address

    def toggled_twice(sim_: Any, p: Any, ctx: Any) -> Any:
        sim_.engine.toggle_portfolio_margin(account)
        return {"portfolio_margin_toggle": sim_.engine.toggle_portfolio_margin(account)}

    sim.methods["private/toggle_portfolio_margin"] = Method(toggled_twice, True)
    async with running_account(stack) as running, open_channel(running.target) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await running.stub(channel).SetPortfolioMargin(
                request(pb.SetPortfolioMarginRequest, stack, enabled=True), metadata=running.metadata("admin"))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = error_info(caught.value)
    assert info is not None and info.reason == "MARGIN_MODE_NOT_SET"


async def test_leverage_the_venue_did_not_apply_is_failed_precondition(stack: ExecutionStack) -> None:
    sim = stack.sim
    account = stack.account.address
    before = sim.engine.leverage(account, SYMBOL)

    def refuse(sim_: Any, p: Any, ctx: Any) -> Any:
        return {"success": 0}  # the document: 1 for success, 0 for failure

    sim.methods["private/update_instrument_leverage"] = Method(refuse, True)
    async with running_account(stack) as running, open_channel(running.target) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await running.stub(channel).SetLeverage(
                request(pb.SetLeverageRequest, stack, symbol=SYMBOL, leverage="2" if before != 2 else "3"),
                metadata=running.metadata("admin"))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = error_info(caught.value)
    assert info is not None and info.reason == "VENUE_REFUSED"
    assert sim.engine.leverage(account, SYMBOL) == before


# --------------------------------------------------------------------------- deposits


async def test_deposits_arriving_while_paging_neither_repeat_nor_skip_entries(stack: ExecutionStack) -> None:
    sim = stack.sim
    account = stack.account.address
    for amount in ("1", "2", "3", "4"):
        sim.engine.deposit(account, "USDT", Decimal(amount))
    sim.engine.deposit(account, "USDC", Decimal("1"))
    await asyncio.sleep(1.1)  # the venue's timestamps are in seconds: the next deposits come a second later
    expected = {r["tx_hash"] for records in sim.engine.deposits(account).values() for r in records}
    async with running_account(stack) as running, open_channel(running.target) as channel:
        stub = running.stub(channel)

        async def page(token: str) -> pb.ListDepositsResponse:
            response: pb.ListDepositsResponse = await stub.ListDeposits(
                request(pb.ListDepositsRequest, stack, page_size=2, page_token=token),
                metadata=running.metadata("read"))
            return response

        pages = [await page("")]
        while pages[-1].next_page_token:
            # A deposit arrives between every two pages (in the first page's second, or later).
            sim.engine.deposit(account, "USDT" if len(pages) % 2 else "USDC", Decimal(len(pages)))
            pages.append(await page(pages[-1].next_page_token))
        listed = [d.tx_hash for p in pages for d in p.deposits]
        assert len(listed) == len(set(listed)), "a deposit appears on two pages"
        assert set(listed) == expected  # each deposit the first page's listing held, and only those
        times = [d.deposit_time.ToMilliseconds() for p in pages for d in p.deposits]
        assert times == sorted(times, reverse=True)
        fresh = await stub.ListDeposits(request(pb.ListDepositsRequest, stack, page_size=1000),
                                        metadata=running.metadata("read"))
        assert len(fresh.deposits) == len(expected) + len(pages) - 1 and not fresh.next_page_token
