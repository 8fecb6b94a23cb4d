"""`portico order`: place, cancel and list orders through the execution service from a terminal.

    portico order buy ETH-PERP 0.1 --price 3000 [--client-order-id ID] [--post-only] [--reduce-only]
                                                [--tif gtc|ioc|fok] [--label L]
    portico order sell ETH-PERP 0.1 --market
    portico order cancel (--order-id ID | --client-order-id ID | --all [--symbol S])
    portico order list [--symbol S]

The execution address, the bearer token (`trade`; `read` for `list`) and the
account come from the `portico up` state file unless `--target`,
`--token-env` and `--account` say otherwise. Every order carries a client
order id, generated (and printed before the call) when none is given, so an
order whose outcome is unclear can be sent again with the same id without
being placed twice. Prices and amounts stay decimal strings end to end.

Exit codes: 0 done, 1 the call failed or the venue rejected the order (one
line on stderr: gRPC status, message, ErrorInfo reason), 2 bad arguments or no
state file.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import secrets
import sys
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import TextIO

import grpc

from portico.common.v1 import side_pb2
from portico.connection import (
    TLS_HELP,
    ConfigError,
    Connection,
    PagingError,
    StateFile,
    add_connection_arguments,
    connection,
    default_account,
    describe_rpc_error,
    read_pages,
    timeout_seconds,
)
from portico.enum_labels import enum_label
from portico.execution.v1 import execution_service_pb2 as pb
from portico.execution.v1 import execution_service_pb2_grpc as pb_grpc
from portico.execution.v1 import order_pb2
from portico.runtime.client import bearer
from portico.runtime.decimals import MAX_DECIMAL_CHARS

__all__ = [
    "UsageError",
    "add_arguments",
    "check_arguments",
    "new_client_order_id",
    "place_request",
    "render_order",
    "render_orders",
    "run",
]

SERVICE = "execution"
# The execution service's rule for client order ids, checked here too so a typo fails before any call.
CLIENT_ORDER_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
# What `portico order` takes as an amount or price: a signed decimal with an optional exponent, ASCII digits only.
_DECIMAL_INPUT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
TIME_IN_FORCE = {
    "gtc": order_pb2.TIME_IN_FORCE_GOOD_TIL_CANCELLED,
    "ioc": order_pb2.TIME_IN_FORCE_IMMEDIATE_OR_CANCEL,
    "fok": order_pb2.TIME_IN_FORCE_FILL_OR_KILL,
}
LIST_PAGE_SIZE = 500
NAME = "portico order"


class UsageError(Exception):
    """The arguments do not make an order request; the message says why."""


# --- argument types -----------------------------------------------------------------------------------------------


def _positive_decimal(text: str) -> str:
    """A positive decimal, returned as a plain decimal string (never a float; `1e-3` -> `0.001`).

    ASCII digits only: `Decimal()` alone also reads `0_5` as 5 (PEP 515 underscores) and digits of any script.
    The plain string must fit the services' limit on a decimal, which is checked before it is written out
    (`1e999999999` would otherwise be a billion digits).
    """
    stripped = text.strip()
    if not _DECIMAL_INPUT.fullmatch(stripped):
        raise argparse.ArgumentTypeError(f"{text!r} is not a decimal number")
    try:
        value = Decimal(stripped)
    except InvalidOperation:  # an exponent beyond what Decimal can hold
        raise argparse.ArgumentTypeError(f"{text!r} is not a decimal number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive decimal number")
    exponent = int(value.as_tuple().exponent)
    if exponent < -MAX_DECIMAL_CHARS or value.adjusted() >= MAX_DECIMAL_CHARS \
            or len(plain := format(value, "f")) > MAX_DECIMAL_CHARS:
        raise argparse.ArgumentTypeError(f"{text!r} is longer than {MAX_DECIMAL_CHARS} characters as a plain decimal")
    return plain


def _client_order_id(text: str) -> str:
    if not CLIENT_ORDER_ID.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r}: 1-64 characters of A-Z a-z 0-9 . _ : -")
    return text


def _time_in_force(text: str) -> str:
    value = text.strip().lower()
    if value not in TIME_IN_FORCE:
        raise argparse.ArgumentTypeError(f"{text!r}: choose from {', '.join(TIME_IN_FORCE)}")
    return value



def _common(parser: argparse.ArgumentParser, scope: str) -> None:
    add_connection_arguments(parser, service=SERVICE, what="execution service", scope=scope)
    parser.add_argument("--venue", default="syndr", help="venue (syndr)")
    parser.add_argument("--account", metavar="0x...", help="account address (default: demo.account in the state file)")
    parser.add_argument("--timeout", type=timeout_seconds, default=15.0, metavar="SECONDS",
                        help="deadline of each call (15)")
    parser.set_defaults(scope=scope)


def add_arguments(order_parser: argparse.ArgumentParser) -> None:
    """The sub-commands of `portico order`: buy, sell, cancel, list."""
    order_parser.epilog = TLS_HELP
    sub = order_parser.add_subparsers(dest="order_command", required=True, metavar="{buy,sell,cancel,list}")
    for side in ("buy", "sell"):
        place = sub.add_parser(side, help=f"place a {side} order", allow_abbrev=False)
        place.add_argument("symbol", help="venue symbol, e.g. ETH-PERP")
        place.add_argument("amount", type=_positive_decimal, help="amount, a decimal on the instrument's increment")
        pricing = place.add_mutually_exclusive_group(required=True)
        pricing.add_argument("--price", type=_positive_decimal, help="limit price, on the instrument's tick")
        pricing.add_argument("--market", action="store_true", help="a market order (no price)")
        place.add_argument("--client-order-id", type=_client_order_id, metavar="ID",
                           help="idempotency key (default: generated and printed); the same id again never "
                                "places a second order")
        place.add_argument("--post-only", action="store_true", help="maker only")
        place.add_argument("--reduce-only", action="store_true", help="may only reduce a position")
        place.add_argument("--tif", type=_time_in_force, metavar="{gtc,ioc,fok}",
                           help="time in force (default: the venue's, GTC)")
        place.add_argument("--label", default="", help="free-form label sent to the venue")
        _common(place, "trade")

    cancel = sub.add_parser("cancel", help="cancel one order, or all of them", allow_abbrev=False)
    which = cancel.add_mutually_exclusive_group(required=True)
    which.add_argument("--order-id", metavar="ID", help="the venue's order id")
    which.add_argument("--client-order-id", type=_client_order_id, metavar="ID",
                       help="the client order id the order was placed with")
    which.add_argument("--all", action="store_true", help="every open order of the account (or of --symbol)")
    cancel.add_argument("--symbol", help="with --all: only this instrument's orders")
    _common(cancel, "trade")

    listing = sub.add_parser("list", help="list open orders", allow_abbrev=False)
    listing.add_argument("--symbol", help="only this instrument's orders")
    _common(listing, "read")


def check_arguments(args: argparse.Namespace) -> None:
    """Rules between arguments that argparse cannot express; UsageError names the one broken.

    A blank value is refused rather than taken as absent: `cancel --all --symbol ""` must not cancel every order.
    """
    command = args.order_command
    if not args.venue.strip():
        raise UsageError("--venue must not be empty")
    if command in ("buy", "sell") and not args.symbol.strip():
        raise UsageError("the symbol must not be empty")
    if command in ("cancel", "list") and args.symbol is not None and not args.symbol.strip():
        raise UsageError("--symbol must not be empty")
    if command == "cancel" and args.order_id is not None and not args.order_id.strip():
        raise UsageError("--order-id must not be empty")
    if command in ("buy", "sell") and args.market and args.post_only:
        raise UsageError("--post-only needs a limit price: a market order always takes liquidity")
    if command == "cancel" and args.symbol is not None and not args.all:
        raise UsageError("--symbol only goes with --all")
    if args.account is not None and not re.fullmatch(r"0x[0-9a-fA-F]{40}", args.account):
        raise UsageError(f"--account {args.account!r} is not a 0x-prefixed 20-byte hex address")


def new_client_order_id() -> str:
    """A fresh client order id for an order the user did not name."""
    return "cli-" + secrets.token_hex(8)


def place_request(args: argparse.Namespace, venue: str, account: str, client_order_id: str) -> pb.PlaceOrderRequest:
    """The PlaceOrderRequest of `portico order buy|sell` (amount and price as the decimal strings given)."""
    return pb.PlaceOrderRequest(
        venue=venue, account=account, symbol=args.symbol,
        side=side_pb2.SIDE_BUY if args.order_command == "buy" else side_pb2.SIDE_SELL,
        type=order_pb2.ORDER_TYPE_MARKET if args.market else order_pb2.ORDER_TYPE_LIMIT,
        amount=args.amount, price="" if args.market else args.price,
        time_in_force=TIME_IN_FORCE[args.tif] if args.tif else order_pb2.TIME_IN_FORCE_UNSPECIFIED,
        post_only=args.post_only, reduce_only=args.reduce_only,
        client_order_id=client_order_id, label=args.label)


# --- rendering (pure) ---------------------------------------------------------------------------------------------


def _state(order: order_pb2.Order) -> str:
    return enum_label(order_pb2.OrderState.DESCRIPTOR, order.state)


def _side(order: order_pb2.Order) -> str:
    return enum_label(side_pb2.Side.DESCRIPTOR, order.side).lower()


def render_order(order: order_pb2.Order) -> str:
    """One line: state, side, amount, symbol, price, filled, order id, client order id (and why, if rejected)."""
    price = order.price or "market"
    line = (f"{_state(order)}  {_side(order)} {order.amount} {order.symbol} @ {price}  "
            f"filled {order.filled_amount or '0'}  order-id {order.order_id or '-'}  "
            f"client-order-id {order.client_order_id or '-'}")
    if order.reject_reason:
        line += f"  reason: {order.reject_reason}"
    return line


def render_orders(orders: Sequence[order_pb2.Order]) -> list[str]:
    """An aligned table of orders (text columns left, numbers right), or one line saying there are none."""
    if not orders:
        return ["no open orders"]
    header = ("ORDER ID", "CLIENT ORDER ID", "SYMBOL", "SIDE", "PRICE", "AMOUNT", "FILLED", "STATE")
    numeric = {4, 5, 6}
    rows = [(o.order_id or "-", o.client_order_id or "-", o.symbol, _side(o), o.price or "market", o.amount,
             o.filled_amount or "0", _state(o)) for o in orders]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        cells = [cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i]) for i, cell in enumerate(row)]
        return "  ".join(cells).rstrip()

    return [line(header), *(line(row) for row in rows)]


# --- running ------------------------------------------------------------------------------------------------------


async def _call(args: argparse.Namespace, connection: Connection, venue: str, account: str, out: TextIO) -> int:
    metadata = bearer(connection.token)
    async with connection.channel() as channel:
        stub = pb_grpc.ExecutionServiceStub(channel)
        command = args.order_command
        if command in ("buy", "sell"):
            client_order_id = args.client_order_id
            if client_order_id is None:
                client_order_id = new_client_order_id()
                print(f"client-order-id {client_order_id} (generated; to retry without placing twice: "
                      f"--client-order-id {client_order_id})", file=out, flush=True)
            placed = await stub.PlaceOrder(place_request(args, venue, account, client_order_id), metadata=metadata,
                                           timeout=args.timeout)
            print(render_order(placed.order), file=out, flush=True)
            return 1 if placed.order.state == order_pb2.ORDER_STATE_REJECTED else 0
        if command == "cancel" and args.all:
            request = pb.CancelAllOrdersRequest(venue=venue, account=account)
            if args.symbol is not None:
                request.symbol = args.symbol
            reply = await stub.CancelAllOrders(request, metadata=metadata, timeout=args.timeout)
            print(f"cancelled {reply.cancelled_count} order(s)", file=out, flush=True)
            return 0
        if command == "cancel":
            cancelled = await stub.CancelOrder(pb.CancelOrderRequest(
                venue=venue, account=account, order_id=args.order_id or "",
                client_order_id=args.client_order_id or ""), metadata=metadata, timeout=args.timeout)
            print(render_order(cancelled.order), file=out, flush=True)
            return 0
        async def list_page(page_token: str) -> pb.ListOpenOrdersResponse:
            listing = pb.ListOpenOrdersRequest(venue=venue, account=account, page_size=LIST_PAGE_SIZE,
                                               page_token=page_token)
            if args.symbol is not None:
                listing.symbol = args.symbol
            page: pb.ListOpenOrdersResponse = await stub.ListOpenOrders(listing, metadata=metadata,
                                                                         timeout=args.timeout)
            return page

        orders: list[order_pb2.Order] = []
        async for page in read_pages(list_page, what="open orders"):
            orders.extend(page.orders)
        for text in render_orders(orders):
            print(text, file=out)
        out.flush()
        return 0


def run(args: argparse.Namespace, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run one `portico order` command; the exit code (0 done, 1 call failed or rejected, 2 usage/config)."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    try:
        check_arguments(args)
        state = StateFile(args.state_file)
        resolved = connection(args, service=SERVICE, scope=args.scope, state=state)
        account = default_account(args.account, state)
    except (UsageError, ConfigError) as exc:
        print(f"{NAME}: {exc}", file=err, flush=True)
        return 2
    try:
        return asyncio.run(_call(args, resolved, args.venue, account, out))
    except grpc.aio.AioRpcError as exc:
        print(f"{NAME} {args.order_command}: {describe_rpc_error(exc, resolved.target)}", file=err, flush=True)
        return 1
    except PagingError as exc:
        print(f"{NAME} {args.order_command}: {resolved.target} {exc}", file=err, flush=True)
        return 1
    except KeyboardInterrupt:
        return 130
