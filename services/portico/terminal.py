"""`portico book` and `portico trades`: watch a live order book or trade tape in a terminal.

The book view is also a consistency check of the market-data stream. `LocalBook`
applies updates exactly as a trading consumer must (a SNAPSHOT replaces the book,
each DELTA must chain onto the last applied sequence in the same epoch, and the
checksum of the top `depth` levels must match after every update), so a gap, an
epoch change without a snapshot or a checksum mismatch shows up as BROKEN and is
counted, never papered over. Rendering is pure (`render_book`, `render_trades`)
so the layout is testable; `watch_book` / `watch_trades` only stream, throttle
and redraw in place with ANSI escape codes.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, TextIO

import grpc

from portico.common.v1 import side_pb2
from portico.connection import (
    DEFAULT_STATE_FILE,
    ConfigError,
    Connection,
    add_connection_arguments,
    connection,
    describe_rpc_error,
    positive_float,
)
from portico.marketdata.book import Book, Level, book_checksum
from portico.marketdata.v1 import market_data_service_pb2 as md_pb2
from portico.marketdata.v1 import market_data_service_pb2_grpc as md_grpc
from portico.marketdata.v1 import order_book_pb2, trade_pb2
from portico.runtime.client import bearer

__all__ = [
    "DEFAULT_STATE_FILE",
    "BookStatus",
    "LocalBook",
    "add_arguments",
    "describe_rpc_error",
    "render_book",
    "render_trades",
    "run_book",
    "run_trades",
    "watch_book",
    "watch_trades",
]

BookUpdate = order_book_pb2.BookUpdate
Trade = trade_pb2.Trade

SERVICE, SCOPE = "marketdata", "read"  # what the views call, with which token from the state file

# ANSI escape codes: redraw in place instead of scrolling a new frame each time.
CURSOR_HOME = "\x1b[H"
CLEAR_LINE = "\x1b[K"  # to the end of the line
CLEAR_DOWN = "\x1b[J"  # to the end of the screen
HIDE_CURSOR = "\x1b[?25l"
SHOW_CURSOR = "\x1b[?25h"

RATE_WINDOW = 5.0  # seconds of history behind the updates/s figure
IDLE_REDRAW = 1.0  # redraw at least this often so rates decay while the stream is quiet
RESUBSCRIBE_INTERVAL = 1.0  # at most one new subscription per second after a break
TAPE_SIZE = 500  # trades kept for the tape
BAR = "\u2588"  # full block


class BookStatus(StrEnum):
    """What a consumer may do with its copy of the book."""

    WAITING = "WAITING"  # subscribed, no snapshot yet
    LIVE = "LIVE"  # verified against the last update's checksum
    RESYNCING = "RESYNCING"  # the service is rebuilding the book: do not trade on it
    STALE = "STALE"  # no upstream data for a while: prices may be old
    BROKEN = "BROKEN"  # a gap, an epoch change or a checksum mismatch: useless until the next SNAPSHOT


class _RateMeter:
    """Events per second over the last few seconds (for headers, not for accounting)."""

    def __init__(self, window: float = RATE_WINDOW) -> None:
        self._window = window
        self._times: deque[float] = deque()
        self._first: float | None = None

    def mark(self, now: float, count: int = 1) -> None:
        if self._first is None:
            self._first = now
        self._times.extend([now] * count)
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self._times and self._times[0] < now - self._window:
            self._times.popleft()

    def rate(self, now: float) -> float:
        self._trim(now)
        if self._first is None:
            return 0.0
        # Early on, divide by the time actually observed (at least 1 s) rather than the full window.
        span = max(1.0, min(self._window, now - self._first))
        return len(self._times) / span


def _levels(levels: Iterable[order_book_pb2.PriceLevel]) -> list[Level]:
    return [(level.price, level.amount) for level in levels]


class LocalBook:
    """A consumer's copy of one streamed book, verified after every update.

    `depth` must be the depth the stream was requested with: the checksum covers
    exactly the top `depth` levels of each side. Once BROKEN the book stays
    BROKEN (later deltas are skipped and counted) until the next SNAPSHOT, since
    a delta applied to a wrong base only produces a different wrong book.
    """

    def __init__(self, depth: int, *, venue: str = "", symbol: str = "") -> None:
        if depth < 1:
            raise ValueError("depth must be at least 1: the checksum covers exactly `depth` levels per side")
        self.depth = depth
        self.venue = venue
        self.symbol = symbol
        self.book = Book()
        self.status = BookStatus.WAITING
        self.epoch = 0
        self.sequence = 0
        self.updates = 0  # updates received, of every type
        self.snapshots = 0
        self.breaks = 0  # chain breaks, epoch changes and checksum mismatches detected
        self.skipped = 0  # deltas ignored because the book had no valid base
        self.resubscribes = 0  # kept by `watch_book`, shown in the header
        self.problem = ""  # why the book last broke
        self.rate = 0.0  # updates per second, as of the last `refresh_rate`
        self._has_base = False  # a verified snapshot that deltas may chain onto
        self._meter = _RateMeter()

    def apply(self, update: order_book_pb2.BookUpdate, now: float | None = None) -> BookStatus:
        """Apply one update as a trading consumer must; return the resulting status."""
        self.updates += 1
        self._meter.mark(time.monotonic() if now is None else now)
        if update.venue:
            self.venue = update.venue
        if update.symbol:
            self.symbol = update.symbol
        kind = update.type
        if kind == order_book_pb2.BOOK_EVENT_TYPE_SNAPSHOT:
            return self._snapshot(update)
        if kind == order_book_pb2.BOOK_EVENT_TYPE_DELTA:
            return self._delta(update)
        if kind == order_book_pb2.BOOK_EVENT_TYPE_RESYNCING:
            if self.status is not BookStatus.BROKEN:  # a break stays visible until the snapshot
                self.status = BookStatus.RESYNCING
            self._has_base = False  # the next thing to apply must be a SNAPSHOT
            return self.status
        if kind == order_book_pb2.BOOK_EVENT_TYPE_STALE:
            if self.status in (BookStatus.LIVE, BookStatus.STALE):
                self.status = BookStatus.STALE  # the base is still valid; a chaining DELTA revives it
            return self.status
        return self._break(f"update of unknown type {kind} at sequence {update.sequence}")

    def refresh_rate(self, now: float | None = None) -> float:
        """Recompute `rate` (kept out of `render_book` so rendering stays pure)."""
        self.rate = self._meter.rate(time.monotonic() if now is None else now)
        return self.rate

    def _snapshot(self, update: order_book_pb2.BookUpdate) -> BookStatus:
        try:
            book = Book.from_snapshot(_levels(update.bids), _levels(update.asks), update.sequence)
        except (InvalidOperation, ValueError):
            return self._break(f"snapshot at sequence {update.sequence} has a level that is not a decimal")
        self.book = book
        self.epoch = update.epoch
        self.sequence = update.sequence
        self.snapshots += 1
        if not self._checksum_ok(update):
            return self.status
        self._has_base = True
        self.status = BookStatus.LIVE
        return self.status

    def _delta(self, update: order_book_pb2.BookUpdate) -> BookStatus:
        if not self._has_base:
            if self.status is BookStatus.BROKEN:
                self.skipped += 1
                return self.status
            return self._break(f"delta {update.sequence} arrived while {self.status.value}, before a snapshot")
        if update.epoch != self.epoch:
            return self._break(f"epoch changed {self.epoch} -> {update.epoch} without a snapshot")
        if update.previous_sequence != self.sequence:
            return self._break(f"gap: delta {update.sequence} follows {update.previous_sequence}, "
                               f"last applied is {self.sequence}")
        try:
            self.book.apply(_levels(update.bids), _levels(update.asks))
        except (InvalidOperation, ValueError):
            return self._break(f"delta {update.sequence} has a level that is not a decimal")
        self.sequence = self.book.change_id = update.sequence
        if not self._checksum_ok(update):
            return self.status
        self.status = BookStatus.LIVE
        return self.status

    def _checksum_ok(self, update: order_book_pb2.BookUpdate) -> bool:
        ours = book_checksum(*self.book.top(self.depth))
        if ours == update.checksum:
            return True
        self._break(f"checksum mismatch at sequence {update.sequence}: "
                    f"ours {ours:#010x}, stream {update.checksum:#010x}")
        return False

    def _break(self, reason: str) -> BookStatus:
        self.status = BookStatus.BROKEN
        self.problem = reason
        self.breaks += 1
        self._has_base = False
        return self.status


# --- rendering (pure) -------------------------------------------------------------------------------------------


def _aligned(values: Sequence[str]) -> list[str]:
    """Pad decimal strings so that their decimal points line up in a right-aligned column."""
    parts = [value.partition(".") for value in values]
    int_width = max((len(whole) for whole, _, _ in parts), default=0)
    frac_width = max((len(dot) + len(frac) for _, dot, frac in parts), default=0)
    return [whole.rjust(int_width) + (dot + frac).ljust(frac_width) for whole, dot, frac in parts]


def _cumulative(levels: Sequence[Level]) -> list[Decimal]:
    total = Decimal(0)
    sums = []
    for _, amount in levels:
        total += Decimal(amount)
        sums.append(total)
    return sums


def _fit(line: str, width: int) -> str:
    return line[:max(width, 0)]


def _status_detail(book: LocalBook) -> str:
    if book.status is BookStatus.LIVE:
        return f"checksum verified after every update; {book.updates} updates, {book.snapshots} snapshot(s)"
    if book.status is BookStatus.WAITING:
        return "waiting for the first snapshot"
    if book.status is BookStatus.RESYNCING:
        return "RESYNCING: the book is being rebuilt; do not trade on it; waiting for a snapshot"
    if book.status is BookStatus.STALE:
        return "STALE: no upstream data for a while; prices may be old"
    return f"BROKEN: {book.problem}; waiting for a snapshot"


def _spread_line(bids: Sequence[Level], asks: Sequence[Level], width: int) -> str:
    if bids and asks:
        best_bid, best_ask = Decimal(bids[0][0]), Decimal(asks[0][0])
        spread = best_ask - best_bid
        mid = (best_ask + best_bid) / 2
        if spread <= 0:
            text = f" CROSSED: best bid {bids[0][0]} >= best ask {asks[0][0]} "
        else:
            bps = spread / mid * 10_000 if mid else Decimal(0)
            text = f" spread {spread:f} ({bps:.2f} bps)  mid {mid:f} "  # `f`: str() writes 1E-7
    else:
        text = " spread -  mid - "
    return _fit(text.center(max(width, len(text)), "-"), width)


def render_book(book: LocalBook, symbol: str, depth: int, width: int) -> list[str]:
    """The book as fixed-layout lines: always `2 * depth + 4` of them, so frames redraw in place.

    Asks come first with the best at the bottom (next to the spread line), then
    bids with the best at the top, like a ladder; each level shows its price,
    amount, the cumulative amount from the best level outwards and a bar of that
    cumulative amount (scaled to the larger side).
    """
    bids, asks = book.book.top(depth)
    header = (f"{book.venue or '-'} {symbol}  {book.status.value}  epoch {book.epoch}  seq {book.sequence}  "
              f"{book.rate:.1f} upd/s  breaks {book.breaks}")
    if book.resubscribes:
        header += f"  resubscribed {book.resubscribes}"
    bid_cums, ask_cums = _cumulative(bids), _cumulative(asks)
    levels = [*asks, *bids]
    prices = _aligned([price for price, _ in levels])
    amounts = _aligned([amount for _, amount in levels])
    cums = _aligned([format(total, "f") for total in (*ask_cums, *bid_cums)])  # str() writes 1E-7
    price_w = max([len("PRICE"), *map(len, prices)])
    amount_w = max([len("AMOUNT"), *map(len, amounts)])
    cum_w = max([len("CUMULATIVE"), *map(len, cums)])
    bar_room = width - (3 + 1 + price_w + 2 + amount_w + 2 + cum_w + 2)
    largest = max([Decimal(0), *bid_cums, *ask_cums])

    def row(label: str, index: int, total: Decimal) -> str:
        bar = ""
        if bar_room > 0 and largest > 0:
            bar = BAR * max(1, round(total / largest * bar_room))
        return _fit(f"{label} {prices[index]:>{price_w}}  {amounts[index]:>{amount_w}}  {cums[index]:>{cum_w}}  {bar}"
                    .rstrip(), width)

    lines = [_fit(header, width), _fit(_status_detail(book), width),
             _fit(f"{'':3} {'PRICE':>{price_w}}  {'AMOUNT':>{amount_w}}  {'CUMULATIVE':>{cum_w}}", width)]
    lines.extend([""] * (depth - len(asks)))  # the far end of the ask side stays empty
    lines.extend(row("ask", i, ask_cums[i]) for i in reversed(range(len(asks))))
    lines.append(_spread_line(bids, asks, width))
    lines.extend(row("bid", len(asks) + i, bid_cums[i]) for i in range(len(bids)))
    lines.extend([""] * (depth - len(bids)))
    return lines


def _trade_time(trade: trade_pb2.Trade) -> str:
    if not trade.HasField("trade_time"):
        return "-"
    moment = datetime.fromtimestamp(trade.trade_time.seconds, UTC)
    return f"{moment:%H:%M:%S}.{trade.trade_time.nanos // 1_000_000:03d}"


_SIDES = {side_pb2.SIDE_BUY: "BUY", side_pb2.SIDE_SELL: "SELL"}


def render_trades(trades: Sequence[trade_pb2.Trade], width: int) -> list[str]:
    """A tape, newest first: a column header, then time (UTC), side of the taker, price and amount.

    Trades are ordered by trade time, newest first (arrival order breaks ties),
    whatever order they are given in; a SYMBOL column appears only when the
    trades span several instruments.
    """
    order = sorted(range(len(trades)), key=lambda i: (trades[i].trade_time.seconds, trades[i].trade_time.nanos, i),
                   reverse=True)
    ordered = [trades[i] for i in order]
    several = len({trade.symbol for trade in ordered}) > 1
    prices = _aligned([trade.price for trade in ordered])
    amounts = _aligned([trade.amount for trade in ordered])
    price_w = max([len("PRICE"), *map(len, prices)])
    amount_w = max([len("AMOUNT"), *map(len, amounts)])
    symbol_w = max([len("SYMBOL"), *(len(trade.symbol) for trade in ordered)])

    def row(time_text: str, symbol: str, side: str, price: str, amount: str) -> str:
        symbol_part = f"{symbol:<{symbol_w}}  " if several else ""
        return _fit(f"{time_text:<12}  {symbol_part}{side:<4}  {price:>{price_w}}  {amount:>{amount_w}}".rstrip(),
                    width)

    lines = [row("TIME (UTC)", "SYMBOL", "SIDE", "PRICE", "AMOUNT")]
    lines.extend(row(_trade_time(trade), trade.symbol, _SIDES.get(trade.taker_side, "?"), prices[i], amounts[i])
                 for i, trade in enumerate(ordered))
    return lines


def _trades_header(venue: str, symbols: Sequence[str], received: int, rate: float, width: int) -> str:
    return _fit(f"{venue} {','.join(symbols)}  trades  {received} received  {rate:.1f}/s", width)


# --- watching -----------------------------------------------------------------------------------------------------


def _screen_size(out: TextIO) -> tuple[int, int]:
    """(columns, rows) of the terminal `out` writes to; unbounded rows when it is not a terminal."""
    try:
        if out.isatty():
            size = os.get_terminal_size(out.fileno())
            return size.columns, size.lines
    except (AttributeError, OSError, ValueError):
        pass
    return 100, 10_000


def _frame(lines: Sequence[str]) -> str:
    # Cursor home, each line followed by clear-to-end-of-line, then clear the rest of the screen:
    # a frame overwrites the previous one without flicker, whatever its length was.
    return CURSOR_HOME + "".join(line + CLEAR_LINE + "\n" for line in lines) + CLEAR_DOWN


async def _run_view(
    consume: Callable[[Callable[[], None]], Coroutine[Any, Any, None]],
    frame: Callable[[int, int], list[str]],
    *,
    name: str,
    target: str,
    out: TextIO,
    err: TextIO,
    refresh_hz: float,
    max_seconds: float | None,
    stop: asyncio.Event | None,
) -> int:
    """Run `consume` (the stream) and redraw `frame(columns, rows)` at most `refresh_hz` times a second.

    Returns 0 when the stream ends, `max_seconds` elapse or `stop` is set, and 1
    (after one line on `err`) when the call fails. Cancellation propagates. In
    every case the cursor is restored and the last frame stays on screen.
    """
    if not refresh_hz > 0:
        raise ValueError("refresh_hz must be positive")
    loop = asyncio.get_running_loop()
    interval = 1.0 / refresh_hz
    deadline = None if max_seconds is None else loop.time() + max_seconds
    dirty = True

    def changed() -> None:
        nonlocal dirty
        dirty = True

    task = asyncio.create_task(consume(changed))
    waiters: set[asyncio.Task[Any]] = {task}
    if stop is not None:
        waiters.add(asyncio.create_task(stop.wait()))
    last_draw = -math.inf
    out.write(HIDE_CURSOR)
    try:
        while True:
            now = loop.time()
            finished = (task.done() or (stop is not None and stop.is_set())
                        or (deadline is not None and now >= deadline))
            if dirty or finished or now - last_draw >= IDLE_REDRAW:
                columns, rows = _screen_size(out)
                # One column short of the edge (no pending auto-wrap) and one row short (no scrolling).
                out.write(_frame(frame(max(columns - 1, 20), max(rows - 1, 1))))
                out.flush()
                dirty, last_draw = False, now
            if finished:
                break
            timeout = interval if deadline is None else min(interval, deadline - now)
            # Frames are at least one interval apart; only the stream's end or `stop` cut the wait short.
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.wait(waiters)  # unlike `await task`, never swallows our own cancellation
        out.write(SHOW_CURSOR)
        out.flush()
    if task.cancelled():
        return 0
    error = task.exception()
    if error is None:
        return 0
    if isinstance(error, grpc.aio.AioRpcError):
        print(f"{name}: {describe_rpc_error(error, target)}", file=err, flush=True)
        return 1
    raise error


async def watch_book(
    connection: Connection,
    venue: str,
    symbol: str,
    depth: int,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
    refresh_hz: float = 10,
    max_seconds: float | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Stream a book into a `LocalBook` and redraw it in place until the stream ends, time is up or `stop` is set.

    After a break the book is resubscribed (at most once a second) to get a
    fresh snapshot. Exit code: 0 if the book stayed consistent, 1 if the call
    failed or the book broke at any point (one line on `err` says why, also on
    cancellation), so `portico book X --seconds 60` doubles as a stream
    consistency check. `out` / `err` default to the current `sys.stdout` /
    `sys.stderr` (looked up per call, so redirection and capture work).
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    book = LocalBook(depth, venue=venue, symbol=symbol)
    request = md_pb2.StreamOrderBookRequest(venue=venue, symbol=symbol, depth=depth)

    async def consume(changed: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        async with connection.channel() as channel:
            stub = md_grpc.MarketDataServiceStub(channel)
            while True:
                subscribed = loop.time()
                call = stub.StreamOrderBook(request, metadata=bearer(connection.token))
                try:
                    async for response in call:
                        for update in response.updates:
                            book.apply(update)
                        changed()
                        if book.status is BookStatus.BROKEN:
                            break  # a consumer's only remedy: subscribe again for a snapshot
                    else:
                        return
                finally:
                    call.cancel()
                book.resubscribes += 1
                changed()
                await asyncio.sleep(max(0.0, subscribed + RESUBSCRIBE_INTERVAL - loop.time()))

    def frame(columns: int, rows: int) -> list[str]:
        book.refresh_rate()
        shown = max(1, min(depth, (rows - 4) // 2))
        return render_book(book, symbol, shown, columns)

    try:
        code = await _run_view(consume, frame, name="portico book", target=connection.target, out=out, err=err,
                               refresh_hz=refresh_hz, max_seconds=max_seconds, stop=stop)
    finally:
        if book.breaks:
            print(f"portico book: the local book broke {book.breaks} time(s), {book.skipped} delta(s) skipped; "
                  f"last: {book.problem}", file=err, flush=True)
    return 1 if book.breaks else code


async def watch_trades(
    connection: Connection,
    venue: str,
    symbols: Sequence[str],
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
    refresh_hz: float = 10,
    max_seconds: float | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Stream public trades and redraw the tape (newest first) in place; ends and exit codes as `watch_book`."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    tape: deque[trade_pb2.Trade] = deque(maxlen=TAPE_SIZE)
    meter = _RateMeter()
    received = 0
    request = md_pb2.StreamTradesRequest(venue=venue, symbols=list(symbols))

    async def consume(changed: Callable[[], None]) -> None:
        nonlocal received
        async with connection.channel() as channel:
            stub = md_grpc.MarketDataServiceStub(channel)
            async for response in stub.StreamTrades(request, metadata=bearer(connection.token)):
                tape.extend(response.trades)
                received += len(response.trades)
                meter.mark(time.monotonic(), len(response.trades))
                changed()

    def frame(columns: int, rows: int) -> list[str]:
        header = _trades_header(venue, symbols, received, meter.rate(time.monotonic()), columns)
        return [header, *render_trades(list(tape), columns)][:rows]

    return await _run_view(consume, frame, name="portico trades", target=connection.target, out=out, err=err,
                           refresh_hz=refresh_hz, max_seconds=max_seconds, stop=stop)


# --- command line ---------------------------------------------------------------------------------------------


INT32_MAX = 2**31 - 1  # `depth` is an int32 in the contract


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= INT32_MAX:
        raise argparse.ArgumentTypeError(f"must be between 1 and {INT32_MAX}")
    return value



BOOK_HELP = """\
Stream one order book (StreamOrderBook) and redraw it in place. Every update is
applied as a trading consumer must and checked against the stream's chain and
checksum; a break shows as BROKEN and the book is subscribed again for a fresh
snapshot. The market-data address and the bearer token (`read`) come from the
`portico up` state file unless `--target` and `--token-env` say otherwise.

Exit codes: 0 the book stayed consistent (until --seconds, Ctrl-C or the end of
the stream), 1 the call failed or the local book broke at any point (one line on
stderr says why: gRPC status, message, ErrorInfo reason), 2 bad arguments or no
state file. So `portico book ETH-PERP --seconds 60` doubles as a consistency
check."""
TRADES_HELP = """\
Stream the public trades of one or more instruments (StreamTrades) as a tape,
newest first. The market-data address and the bearer token (`read`) come from
the `portico up` state file unless `--target` and `--token-env` say otherwise.

Exit codes: 0 the stream ended or was stopped (--seconds, Ctrl-C), 1 the call
failed (one line on stderr: gRPC status, message, ErrorInfo reason), 2 bad
arguments or no state file."""


def add_arguments(book_parser: argparse.ArgumentParser, trades_parser: argparse.ArgumentParser) -> None:
    """Arguments of `portico book SYMBOL` and `portico trades SYMBOL...`, and their help (BOOK_HELP, TRADES_HELP).

    The target and token come from the flags of `portico.connection` (state
    file, --target, --token-env; a --token on the command line is refused), TLS
    from the PORTICO_UPSTREAM_TLS_* variables (the help's epilog).
    """
    book_parser.description, trades_parser.description = BOOK_HELP, TRADES_HELP
    book_parser.add_argument("symbol", help="venue symbol, e.g. ETH-PERP")
    book_parser.add_argument("--depth", type=_positive_int, default=10,
                             help="levels per side to stream, verify (checksum) and show (10)")
    trades_parser.add_argument("symbols", nargs="+", metavar="SYMBOL", help="venue symbols, e.g. ETH-PERP")
    for parser in (book_parser, trades_parser):
        add_connection_arguments(parser, service=SERVICE, what="market-data service", scope=SCOPE)
        parser.add_argument("--venue", default="syndr", help="venue (syndr)")
        parser.add_argument("--seconds", type=positive_float, metavar="N",
                            help="exit after N seconds (default: run until Ctrl-C or the stream ends)")
        parser.add_argument("--refresh-hz", type=positive_float, default=10.0, metavar="HZ",
                            help="redraw at most this many times a second (10)")


Watch = Callable[[Connection, asyncio.Event], Coroutine[Any, Any, int]]


async def _until_signalled(watch: Watch, connection: Connection) -> int:
    """Run a view that Ctrl-C (SIGINT) or SIGTERM ends like `--seconds` does: cursor back, summary, exit code."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    installed = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stop.set)
            installed.append(signum)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no signals here
            pass
    try:
        return await watch(connection, stop)
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


def _run(name: str, args: argparse.Namespace, watch: Watch) -> int:
    symbols = [args.symbol] if name == "portico book" else args.symbols
    try:
        # A blank value is a bad argument (exit 2), as in `portico order` and `instruments`, not a call refused.
        if not args.venue.strip():
            raise ConfigError("--venue must not be empty")
        if any(not symbol.strip() for symbol in symbols):
            raise ConfigError("a symbol must not be empty")
        resolved = connection(args, service=SERVICE, scope=SCOPE)
    except ConfigError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_until_signalled(watch, resolved))
    except KeyboardInterrupt:  # Ctrl-C before the handler was installed: nothing to report
        return 130


def run_book(args: argparse.Namespace) -> int:
    """`portico book`: exit code 0 = consistent, 1 = call failed or book broke, 2 = no target/token."""
    return _run("portico book", args, lambda connection, stop: watch_book(
        connection, args.venue, args.symbol, args.depth, refresh_hz=args.refresh_hz, max_seconds=args.seconds,
        stop=stop))


def run_trades(args: argparse.Namespace) -> int:
    """`portico trades`: exit code 0 = stream ended or stopped, 1 = call failed, 2 = no target/token."""
    return _run("portico trades", args, lambda connection, stop: watch_trades(
        connection, args.venue, args.symbols, refresh_hz=args.refresh_hz, max_seconds=args.seconds, stop=stop))
