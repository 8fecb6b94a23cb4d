"""AccountService listings paged while the account changes: every entry that exists from the first page to the
last is listed exactly once. A real simulator (making markets in three instruments), OpenBao, signer and
reference data."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import grpc
import pytest
from tests.integration.test_account import request
from tests.support.account import running_account
from tests.support.execution import ExecutionStack

from portico.account.v1 import account_service_pb2 as pb
from portico.runtime.client import open_channel
from portico.runtime.errors import error_info
from portico.runtime.paging import offset_from_token, page_token
from portico.runtime.secp256k1 import to_checksum_address
from portico.sim.server import SimConfig, Simulator
from portico.venues.syndr.http import SyndrHttpClient

SYMBOLS = ("BTC-PERP", "ETH-27NOV26", "ETH-PERP")  # in the order ListPositions lists them


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimConfig(port=0, seed=29, book_changes_per_second=50, market_maker_instruments=SYMBOLS,
                                   rate_limit_capacity=100_000, rate_limit_refill_per_s=100_000)) as simulator:
        yield simulator


async def trade(stack: ExecutionStack, symbol: str, side: str, amount: Decimal) -> None:
    async with SyndrHttpClient(stack.sim.http_url, credentials=stack.account.credentials) as http:
        await http.call(f"private/{side}", stack.account.order(symbol, side, str(amount), order_type="market",
                                                               time_in_force="IOC"))


async def test_a_position_closed_while_paging_does_not_hide_the_next_one(stack: ExecutionStack) -> None:
    """Three positions, one a page. After the first page (BTC-PERP) that position is closed: the next page must
    be ETH-27NOV26. With an offset (1) over what the venue then has, it was ETH-PERP, and ETH-27NOV26, open all
    along, was never listed."""
    sim = stack.sim
    sizes = {symbol: sim.engine.instrument(symbol).contract_size * 3 for symbol in SYMBOLS}
    for symbol in SYMBOLS:
        await trade(stack, symbol, "buy", sizes[symbol])
    assert sorted(p["instrument_name"] for p in sim.engine.positions(stack.account.address)) == list(SYMBOLS)
    async with running_account(stack) as running, open_channel(running.target) as channel:
        stub = running.stub(channel)

        async def page(token: str) -> pb.ListPositionsResponse:
            response: pb.ListPositionsResponse = await stub.ListPositions(
                request(pb.ListPositionsRequest, stack, page_size=1, page_token=token),
                metadata=running.metadata("read"))
            return response

        pages = [await page("")]
        await trade(stack, SYMBOLS[0], "sell", sizes[SYMBOLS[0]])  # the first page's position is closed
        assert SYMBOLS[0] not in {p["instrument_name"] for p in sim.engine.positions(stack.account.address)}
        while pages[-1].next_page_token:
            pages.append(await page(pages[-1].next_page_token))
        assert [p.symbol for r in pages for p in r.positions] == list(SYMBOLS)
        # The token still carries an offset, for a service of an earlier version (the other pod of a rollout).
        query = ("positions", "syndr", to_checksum_address(stack.account.address))
        assert offset_from_token(pages[0].next_page_token, query) == 1

        # A token of another query (another account) is refused, naming the field.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ListPositions(pb.ListPositionsRequest(venue="syndr", account="0x" + "12" * 20,
                                                             page_token=pages[0].next_page_token),
                                     metadata=running.metadata("read"))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        info = error_info(caught.value)
        assert info is not None and info.metadata["field"] == "page_token"


async def test_an_offset_token_of_an_earlier_version_still_pages(stack: ExecutionStack) -> None:
    """A token issued before positions paged by symbol (an offset; e.g. by the old pod of a rolling update) is
    still honoured."""
    sim = stack.sim
    for symbol in SYMBOLS:
        await trade(stack, symbol, "buy", sim.engine.instrument(symbol).contract_size)
    account = stack.account.address
    async with running_account(stack) as running, open_channel(running.target) as channel:
        reply = await running.stub(channel).ListPositions(
            request(pb.ListPositionsRequest, stack, page_size=5,
                    page_token=page_token(1, ("positions", "syndr", to_checksum_address(account)))),
            metadata=running.metadata("read"))
    assert [p.symbol for p in reply.positions] == list(SYMBOLS[1:]) and not reply.next_page_token

