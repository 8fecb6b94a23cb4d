"""`portico account`: an account's summary and positions from the account service, in a terminal.

    portico account [--account 0x...] [--venue syndr]          print the summary and the positions, once
    portico account --watch [--seconds N]                       redraw in place as positions stream in

The summary shows equity, available balance, initial and maintenance margin
with their utilisation, realized / unrealized / total PnL, collateral per
currency, the margin mode and the account's state; the positions table shows
symbol, side, size, average and mark price and unrealized / realized PnL.
Decimals are printed as the service's decimal strings, never through floats.

The account-service address, the bearer token (`read`) and the account come
from the `portico up` state file unless `--target`, `--token-env` and
`--account` say otherwise. With `--watch`, positions come from
`StreamPositions` on top of one `ListPositions`, and the summary is read again
when positions change (at most once a second) and every few seconds, until
Ctrl-C or `--seconds`.

Exit codes: 0 done, 1 the call failed (one line on stderr: gRPC status,
message, ErrorInfo reason), 2 bad arguments or no state file.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal, InvalidOperation
from typing import TextIO

import grpc
from google.protobuf.descriptor import EnumDescriptor

from portico.account.v1 import account_pb2
from portico.account.v1 import account_service_pb2 as pb
from portico.account.v1 import account_service_pb2_grpc as pb_grpc
from portico.common.v1 import side_pb2
from portico.connection import (
    ConfigError,
    Connection,
    PagingError,
    StateFile,
    add_connection_arguments,
    connection,
    default_account,
    describe_rpc_error,
    positive_float,
    read_pages,
    timeout_seconds,
)
from portico.enum_labels import enum_label
from portico.runtime.client import bearer
from portico.runtime.lifecycle import wait_event

__all__ = [
    "PositionBook",
    "UsageError",
    "add_arguments",
    "check_arguments",
    "render_account",
    "render_positions",
    "render_summary",
    "run",
]

SERVICE, SCOPE = "account", "read"
NAME = "portico account"
LIST_PAGE_SIZE = 500
SUMMARY_MIN_INTERVAL = 1.0  # seconds: at most one summary read per second when positions change
SUMMARY_IDLE_INTERVAL = 5.0  # seconds: and at least one this often (PnL moves with the mark price)
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


class UsageError(Exception):
    """The arguments do not make a request; the message says why."""


# --- arguments ----------------------------------------------------------------------------------------------------





def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of `portico account`."""
    add_connection_arguments(parser, service=SERVICE, what="account service", scope=SCOPE)
    parser.add_argument("--venue", default="syndr", help="venue (syndr)")
    parser.add_argument("--account", metavar="0x...", help="account address (default: demo.account in the state file)")
    parser.add_argument("--watch", action="store_true",
                        help="redraw in place as positions stream in, until Ctrl-C (or --seconds)")
    parser.add_argument("--seconds", type=positive_float, metavar="N", help="with --watch: exit after N seconds")
    parser.add_argument("--refresh-hz", type=positive_float, default=10.0, metavar="HZ",
                        help="with --watch: redraw at most this many times a second (10)")
    parser.add_argument("--timeout", type=timeout_seconds, default=15.0, metavar="SECONDS",
                        help="deadline of each unary call (15)")


def check_arguments(args: argparse.Namespace) -> None:
    """Rules between arguments that argparse cannot express; UsageError names the one broken."""
    if not args.venue.strip():
        raise UsageError("--venue must not be empty")
    if args.seconds is not None and not args.watch:
        raise UsageError("--seconds only goes with --watch")
    if args.account is not None and not _ADDRESS.fullmatch(args.account):
        raise UsageError(f"--account {args.account!r} is not a 0x-prefixed 20-byte hex address")


# --- rendering (pure) ---------------------------------------------------------------------------------------------


def _value(text: str) -> str:
    return text or "-"


def _percent(text: str) -> str:
    return f"{text}%" if text else "-"


def _enum(enum: EnumDescriptor, number: int) -> str:
    """The value's short name in lower case, `unknown` when unspecified (the number if newer than this client)."""
    label = enum_label(enum, number)
    return "unknown" if label == "UNSPECIFIED" else label.lower()


def render_summary(summary: account_pb2.AccountSummary) -> list[str]:
    """The summary as `label  value` lines, values as the service's decimal strings ("-" when not given)."""
    margin_mode = _enum(account_pb2.MarginMode.DESCRIPTOR, summary.margin_mode)
    state = _enum(account_pb2.AccountState.DESCRIPTOR, summary.state)
    if summary.venue_status and summary.venue_status.lower() != state:
        state += f" ({summary.venue_status})"
    rows: list[tuple[str, str]] = [
        ("equity", _value(summary.equity)),
        ("available balance", _value(summary.available_balance)),
        ("initial margin", f"{_value(summary.initial_margin)}  ({_percent(summary.initial_margin_utilization)} "
                           "of equity)"),
        ("maintenance margin", f"{_value(summary.maintenance_margin)}  "
                               f"({_percent(summary.maintenance_margin_utilization)} of equity)"),
        ("realized pnl", _value(summary.realized_pnl)),
        ("unrealized pnl", _value(summary.unrealized_pnl)),
        ("total pnl", _value(summary.total_pnl)),
    ]
    if summary.collateral:
        rows.extend((f"collateral {currency}", amount) for currency, amount in sorted(summary.collateral.items()))
    else:
        rows.append(("collateral", "none"))
    rows.extend([("margin mode", margin_mode), ("state", state)])
    width = max(len(label) for label, _ in rows)
    header = f"account {summary.account or '-'} at {summary.venue or '-'}"
    return [header, *(f"  {label.ljust(width)}  {value}" for label, value in rows)]


def _side(position: account_pb2.Position) -> str:
    return {side_pb2.SIDE_BUY: "long", side_pb2.SIDE_SELL: "short"}.get(position.direction, "-")


def _is_open(position: account_pb2.Position) -> bool:
    try:
        return Decimal(position.size or "0") != 0
    except InvalidOperation:
        return True  # not a number: show it rather than hide it


def render_positions(positions: Iterable[account_pb2.Position]) -> list[str]:
    """An aligned table of the open positions (text columns left, numbers right), or one line saying none."""
    shown = sorted((p for p in positions if _is_open(p)), key=lambda p: p.symbol)
    if not shown:
        return ["no open positions"]
    header = ("SYMBOL", "SIDE", "SIZE", "AVG PRICE", "MARK PRICE", "UNREALIZED PNL", "REALIZED PNL")
    rows = [(p.symbol, _side(p), _value(p.size), _value(p.average_price), _value(p.mark_price),
             _value(p.unrealized_pnl), _value(p.realized_pnl)) for p in shown]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        cells = [cell.ljust(widths[i]) if i < 2 else cell.rjust(widths[i]) for i, cell in enumerate(row)]
        return "  ".join(cells).rstrip()

    return [line(header), *(line(row) for row in rows)]


def render_account(summary: account_pb2.AccountSummary | None, positions: Iterable[account_pb2.Position]) -> list[str]:
    """The whole view: summary, a blank line, the positions table."""
    head = render_summary(summary) if summary is not None else ["account summary: waiting"]
    return [*head, "", *render_positions(positions)]


class PositionBook:
    """The current positions by symbol: a `ListPositions` snapshot, then `StreamPositions` updates on top.

    The stream starts before the snapshot is read (so no change falls between
    them); an update older than what the snapshot already shows (by the
    position's update time) is not applied over it, and an update applied
    before the snapshot arrived is not undone by it unless the snapshot's own
    update time is later (a later change would come on the stream anyway; an
    undone one never would). A position whose size goes to 0 is closed and
    dropped.
    """

    def __init__(self) -> None:
        self.positions: dict[str, account_pb2.Position] = {}
        self.streamed: dict[str, account_pb2.Position] = {}  # the last update applied per symbol, closes included
        self.last_sequence = 0
        self.updates = 0

    def load(self, positions: Iterable[account_pb2.Position]) -> None:
        listed = {p.symbol: p for p in positions}
        for symbol, streamed in self.streamed.items():
            snapshot = listed.get(symbol)
            if snapshot is None or not (_time_ms(streamed) and _time_ms(snapshot) > _time_ms(streamed)):
                listed[symbol] = streamed
        self.positions = {symbol: p for symbol, p in listed.items() if _is_open(p)}

    def apply(self, update: pb.PositionUpdate) -> bool:
        """Apply one update; whether the view changed."""
        if update.sequence and update.sequence <= self.last_sequence:
            return False  # already applied
        self.last_sequence = max(self.last_sequence, update.sequence)
        self.updates += 1
        position = update.position
        current = self.positions.get(position.symbol)
        if current is not None and _time_ms(position) and _time_ms(position) < _time_ms(current):
            return False  # older than the snapshot's view
        self.streamed[position.symbol] = position
        if _is_open(position):
            self.positions[position.symbol] = position
            return True
        return self.positions.pop(position.symbol, None) is not None


def _time_ms(position: account_pb2.Position) -> int:
    if not position.HasField("update_time"):
        return 0
    return int(position.update_time.ToMilliseconds())


# --- running ------------------------------------------------------------------------------------------------------


async def _list_positions(stub: pb_grpc.AccountServiceStub, venue: str, account: str,
                          metadata: tuple[tuple[str, str]], call_timeout: float) -> list[account_pb2.Position]:
    async def list_page(page_token: str) -> pb.ListPositionsResponse:
        page: pb.ListPositionsResponse = await stub.ListPositions(pb.ListPositionsRequest(
            venue=venue, account=account, page_size=LIST_PAGE_SIZE, page_token=page_token),
            metadata=metadata, timeout=call_timeout)
        return page

    positions: list[account_pb2.Position] = []
    async for page in read_pages(list_page, what="positions"):
        positions.extend(page.positions)
    return positions


async def _summary(stub: pb_grpc.AccountServiceStub, venue: str, account: str,
                   metadata: tuple[tuple[str, str]], call_timeout: float) -> account_pb2.AccountSummary:
    reply = await stub.GetAccountSummary(pb.GetAccountSummaryRequest(venue=venue, account=account),
                                         metadata=metadata, timeout=call_timeout)
    summary: account_pb2.AccountSummary = reply.summary
    return summary


async def show_once(connection: Connection, venue: str, account: str, *, call_timeout: float, out: TextIO) -> int:
    """Print the summary and the positions table once."""
    metadata = bearer(connection.token)
    async with connection.channel() as channel:
        stub = pb_grpc.AccountServiceStub(channel)
        summary, positions = await asyncio.gather(_summary(stub, venue, account, metadata, call_timeout),
                                                  _list_positions(stub, venue, account, metadata, call_timeout))
    for line in render_account(summary, positions):
        print(line, file=out)
    out.flush()
    return 0


async def watch(connection: Connection, venue: str, account: str, *, call_timeout: float, out: TextIO, err: TextIO,
                refresh_hz: float, max_seconds: float | None, stop: asyncio.Event | None) -> int:
    """Redraw summary and positions in place as positions stream in; exit codes as `portico book`'s."""
    from portico.terminal import _run_view  # the shared redraw loop of the terminal views

    metadata = bearer(connection.token)
    book = PositionBook()
    summary: account_pb2.AccountSummary | None = None

    async def consume(changed: Callable[[], None]) -> None:
        nonlocal summary
        loop = asyncio.get_running_loop()
        async with connection.channel() as channel:
            stub = pb_grpc.AccountServiceStub(channel)
            call = stub.StreamPositions(pb.StreamPositionsRequest(venue=venue, account=account), metadata=metadata)
            moved = asyncio.Event()

            async def read_summary() -> None:
                nonlocal summary
                while True:
                    moved.clear()  # a change while the summary is read asks for another read
                    read_at = loop.time()
                    summary = await _summary(stub, venue, account, metadata, call_timeout)
                    changed()
                    if not await wait_event(moved, SUMMARY_IDLE_INTERVAL):
                        continue
                    await asyncio.sleep(max(0.0, read_at + SUMMARY_MIN_INTERVAL - loop.time()))

            async def read_stream() -> None:
                async for response in call:
                    if any([book.apply(update) for update in response.updates]):
                        moved.set()
                        changed()

            tasks = {asyncio.ensure_future(read_stream())}  # subscribed before the snapshot is read
            try:
                book.load(await _list_positions(stub, venue, account, metadata, call_timeout))
                changed()
                tasks.add(asyncio.ensure_future(read_summary()))
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                call.cancel()
                for task in tasks:
                    task.cancel()
                await asyncio.wait(tasks)
                for task in tasks:  # read here, also when the listing failed: else asyncio prints it at exit
                    if not task.cancelled():
                        task.exception()
            for task in done:
                task.result()  # the failure that ended it, if any

    def frame(columns: int, rows: int) -> list[str]:
        lines = render_account(summary, book.positions.values())
        lines.append("")
        lines.append(f"{book.updates} position update(s) streamed  (Ctrl-C to stop)")
        return [line[:columns] for line in lines][:rows]

    return await _run_view(consume, frame, name=NAME, target=connection.target, out=out, err=err,
                           refresh_hz=refresh_hz, max_seconds=max_seconds, stop=stop)


async def _watch_until_signalled(args: argparse.Namespace, connection: Connection, account: str, out: TextIO,
                                 err: TextIO) -> int:
    from portico.terminal import _until_signalled

    return await _until_signalled(lambda c, stop: watch(
        c, args.venue, account, call_timeout=args.timeout, out=out, err=err, refresh_hz=args.refresh_hz,
        max_seconds=args.seconds, stop=stop), connection)


def run(args: argparse.Namespace, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run `portico account`; the exit code (0 done, 1 call failed, 2 usage/config)."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    try:
        check_arguments(args)
        state = StateFile(args.state_file)
        resolved = connection(args, service=SERVICE, scope=SCOPE, state=state)
        account = default_account(args.account, state)
    except (UsageError, ConfigError) as exc:
        print(f"{NAME}: {exc}", file=err, flush=True)
        return 2
    try:
        if args.watch:
            return asyncio.run(_watch_until_signalled(args, resolved, account, out, err))
        return asyncio.run(show_once(resolved, args.venue, account, call_timeout=args.timeout, out=out))
    except grpc.aio.AioRpcError as exc:
        print(f"{NAME}: {describe_rpc_error(exc, resolved.target)}", file=err, flush=True)
        return 1
    except PagingError as exc:
        print(f"{NAME}: {resolved.target} {exc}", file=err, flush=True)
        return 1
    except KeyboardInterrupt:
        return 130
