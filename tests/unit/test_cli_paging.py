"""The listing commands (`portico order list`, `portico account`, `portico instruments list`) against a server whose
paging never ends: a repeated page token, or fresh tokens forever.

The server is a small real gRPC server for the three services' listing RPCs. It stops answering after
`CUTOFF` pages (an error the command exits 1 with), so a command that does not guard its paging fails this test
instead of hanging it.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import itertools
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc
import pytest

from portico import account_cli, instruments_cli, order_cli
from portico import connection as connection_module
from portico.account.v1 import account_pb2
from portico.account.v1 import account_service_pb2 as account_pb
from portico.account.v1 import account_service_pb2_grpc as account_grpc
from portico.cli import build_parser
from portico.common.v1 import side_pb2
from portico.execution.v1 import execution_service_pb2 as execution_pb
from portico.execution.v1 import execution_service_pb2_grpc as execution_grpc
from portico.execution.v1 import order_pb2
from portico.refdata.v1 import instrument_pb2
from portico.refdata.v1 import reference_data_service_pb2 as refdata_pb
from portico.refdata.v1 import reference_data_service_pb2_grpc as refdata_grpc

ACCOUNT = "0x" + "ab" * 20
CUTOFF = 50  # pages; past this the server fails the call (a test of a looping command ends, and fails)
PAGE_LIMIT = 5  # MAX_LIST_PAGES for the fresh-token case, so it needs no 10,000 calls


class Pager:
    """The next page token for each token asked with; counts the listing calls and cuts them off at CUTOFF."""

    def __init__(self, next_token: Callable[[str], str]):
        self.next_token = next_token
        self.tokens: list[str] = []

    async def page(self, token: str, context: grpc.aio.ServicerContext) -> str:
        self.tokens.append(token)
        if len(self.tokens) > CUTOFF:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "the test's server stopped: endless paging")
        return self.next_token(token)


class Execution(execution_grpc.ExecutionServiceServicer):
    def __init__(self, pager: Pager):
        self.pager = pager

    async def ListOpenOrders(self, request: execution_pb.ListOpenOrdersRequest,
                             context: grpc.aio.ServicerContext) -> execution_pb.ListOpenOrdersResponse:
        order = order_pb2.Order(order_id="1", symbol="ETH-PERP", side=side_pb2.SIDE_BUY, price="2400", amount="0.1",
                                state=order_pb2.ORDER_STATE_OPEN)
        return execution_pb.ListOpenOrdersResponse(orders=[order],
                                                   next_page_token=await self.pager.page(request.page_token, context))


class Account(account_grpc.AccountServiceServicer):
    def __init__(self, pager: Pager):
        self.pager = pager

    async def ListPositions(self, request: account_pb.ListPositionsRequest,
                            context: grpc.aio.ServicerContext) -> account_pb.ListPositionsResponse:
        position = account_pb2.Position(symbol="ETH-PERP", size="0.1", direction=side_pb2.SIDE_BUY)
        return account_pb.ListPositionsResponse(positions=[position],
                                                next_page_token=await self.pager.page(request.page_token, context))

    async def GetAccountSummary(self, request: account_pb.GetAccountSummaryRequest,
                                context: grpc.aio.ServicerContext) -> account_pb.GetAccountSummaryResponse:
        return account_pb.GetAccountSummaryResponse(summary=account_pb2.AccountSummary(account=ACCOUNT))

    async def StreamPositions(self, request: account_pb.StreamPositionsRequest,
                              context: grpc.aio.ServicerContext) -> AsyncIterator[account_pb.StreamPositionsResponse]:
        await asyncio.Event().wait()  # nothing streams; the listing decides how the view ends
        yield account_pb.StreamPositionsResponse()


class ReferenceData(refdata_grpc.ReferenceDataServiceServicer):
    def __init__(self, pager: Pager):
        self.pager = pager

    async def ListInstruments(self, request: refdata_pb.ListInstrumentsRequest,
                              context: grpc.aio.ServicerContext) -> refdata_pb.ListInstrumentsResponse:
        instrument = instrument_pb2.Instrument(symbol="ETH-PERP", venue="syndr", base_currency="ETH",
                                               quote_currency="USD", price_increment="0.1",
                                               amount_increment="0.01", min_trade_amount="0.01")
        return refdata_pb.ListInstrumentsResponse(instruments=[instrument],
                                                  next_page_token=await self.pager.page(request.page_token, context))


def serve(pager: Pager) -> Iterator[str]:
    """The three services on one real gRPC server, in a thread with its own event loop; yields its address."""
    loop = asyncio.new_event_loop()
    started: list[tuple[grpc.aio.Server, int]] = []

    async def start() -> None:
        server = grpc.aio.server()
        # The generated stubs declare every RPC abstract; those these fakes do not script answer UNIMPLEMENTED.
        execution = Execution(pager)  # type: ignore[abstract]
        account = Account(pager)  # type: ignore[abstract]
        refdata = ReferenceData(pager)  # type: ignore[abstract]
        execution_grpc.add_ExecutionServiceServicer_to_server(execution, server)
        account_grpc.add_AccountServiceServicer_to_server(account, server)
        refdata_grpc.add_ReferenceDataServiceServicer_to_server(refdata, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        started.append((server, port))

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    server, port = started[0]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(0), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


COMMANDS: dict[str, tuple[list[str], Callable[..., int], str, str]] = {
    # command line -> its run(), the name its error line starts with, what the error names
    "order list": (["order", "list", "--account", ACCOUNT], order_cli.run, "portico order list", "open orders"),
    "account": (["account", "--account", ACCOUNT], account_cli.run, "portico account", "positions"),
    "account --watch": (["account", "--account", ACCOUNT, "--watch", "--seconds", "20"], account_cli.run,
                        "portico account", "positions"),
    "instruments list": (["instruments", "list"], instruments_cli.run, "portico instruments list", "instruments"),
}
FRESH = object()  # a new token on every page, forever


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize(("tokens", "calls", "error"), [
    ({"": "same", "same": "same"}, 2, "repeated a page token listing {what} (after 2 pages)"),
    ({"": "a", "a": "b", "b": "a"}, 3, "repeated a page token listing {what} (after 3 pages)"),
    (FRESH, PAGE_LIMIT, f"listed more than {PAGE_LIMIT} pages of {{what}}"),
], ids=["same-token", "cycle", "fresh-tokens"])
def test_a_listing_whose_paging_never_ends_exits_1_naming_it(command: str, tokens: Any, calls: int, error: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connection_module, "MAX_LIST_PAGES", PAGE_LIMIT, raising=False)
    monkeypatch.setenv("PORTICO_TEST_TOKEN", "t")
    fresh = itertools.count(1)
    pager = Pager((lambda token: f"p{next(fresh)}") if tokens is FRESH else tokens.__getitem__)
    argv, run, name, what = COMMANDS[command]
    for target in serve(pager):
        args: argparse.Namespace = build_parser().parse_args(
            [*argv, "--target", target, "--token-env", "PORTICO_TEST_TOKEN"])
        out, err = io.StringIO(), io.StringIO()
        assert run(args, out=out, err=err) == 1
        assert err.getvalue() == f"{name}: {target} {error.format(what=what)}\n"
        assert len(pager.tokens) == calls
        if not command.endswith("--watch"):
            assert out.getvalue() == ""  # nothing half-listed
