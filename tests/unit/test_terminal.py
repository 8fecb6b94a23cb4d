"""`portico.terminal`: the verified local book, the pure views, and the watchers against an in-process fake service."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import re
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from tests.support.waiting import until

from portico import terminal
from portico.common.v1 import side_pb2
from portico.connection import Connection
from portico.marketdata.book import Book, book_checksum
from portico.marketdata.v1 import market_data_service_pb2 as md_pb2
from portico.marketdata.v1 import market_data_service_pb2_grpc as md_grpc
from portico.marketdata.v1 import order_book_pb2 as ob
from portico.marketdata.v1 import trade_pb2
from portico.terminal import (
    CURSOR_HOME,
    HIDE_CURSOR,
    SHOW_CURSOR,
    BookStatus,
    LocalBook,
    add_arguments,
    render_book,
    render_trades,
    run_book,
    watch_book,
    watch_trades,
)

TOKEN = "read-token-for-tests"
DEPTH = 5
Levels = Sequence[tuple[str, str]]

BIDS = [("2000.0", "1.5"), ("1999.5", "3"), ("1999", "0.25")]
ASKS = [("2000.5", "2"), ("2001", "0.75"), ("2002.25", "4")]


def levels(pairs: Iterable[tuple[str, str]]) -> list[ob.PriceLevel]:
    return [ob.PriceLevel(price=price, amount=amount) for price, amount in pairs]


class VenueBook:
    """The service's side of one stream: every update carries the checksum of its own book."""

    def __init__(self, depth: int = DEPTH, epoch: int = 1, sequence: int = 100) -> None:
        self.depth, self.epoch, self.sequence = depth, epoch, sequence
        self.book = Book()

    def checksum(self) -> int:
        return book_checksum(*self.book.top(self.depth))

    def snapshot(self, bids: Levels = BIDS, asks: Levels = ASKS, *, epoch: int | None = None,
                 sequence: int | None = None) -> ob.BookUpdate:
        self.epoch = self.epoch if epoch is None else epoch
        self.sequence = self.sequence if sequence is None else sequence
        self.book = Book.from_snapshot(bids, asks, self.sequence)
        return ob.BookUpdate(type=ob.BOOK_EVENT_TYPE_SNAPSHOT, venue="syndr", symbol="ETH-PERP", epoch=self.epoch,
                             sequence=self.sequence, bids=levels(bids), asks=levels(asks), checksum=self.checksum())

    def delta(self, bids: Levels = (), asks: Levels = (), *, previous: int | None = None,
              epoch: int | None = None, checksum: int | None = None) -> ob.BookUpdate:
        self.book.apply(bids, asks)
        prev, self.sequence = self.sequence, self.sequence + 1
        return ob.BookUpdate(type=ob.BOOK_EVENT_TYPE_DELTA, venue="syndr", symbol="ETH-PERP",
                             epoch=self.epoch if epoch is None else epoch, sequence=self.sequence,
                             previous_sequence=prev if previous is None else previous, bids=levels(bids),
                             asks=levels(asks), checksum=self.checksum() if checksum is None else checksum)

    def event(self, kind: ob.BookEventType.ValueType) -> ob.BookUpdate:
        return ob.BookUpdate(type=kind, venue="syndr", symbol="ETH-PERP", epoch=self.epoch, sequence=self.sequence)


# --- LocalBook ------------------------------------------------------------------------------------------------


def test_snapshot_then_deltas_stay_live_and_match_the_venue() -> None:
    venue, local = VenueBook(), LocalBook(DEPTH)
    assert local.status is BookStatus.WAITING
    assert local.apply(venue.snapshot()) is BookStatus.LIVE
    assert local.apply(venue.delta(bids=[("2000.0", "2.5")], asks=[("2000.5", "0")])) is BookStatus.LIVE
    assert local.apply(venue.delta(bids=[("2000.25", "1")], asks=[("2000.75", "0.5")])) is BookStatus.LIVE
    assert local.book.top(DEPTH) == venue.book.top(DEPTH)
    bids, asks = local.book.top(DEPTH)
    assert bids[0] == ("2000.25", "1") and bids[1] == ("2000.0", "2.5")
    assert asks[0] == ("2000.75", "0.5")  # 2000.5 was removed by amount "0"
    assert (local.epoch, local.sequence, local.updates, local.snapshots, local.breaks) == (1, 102, 3, 1, 0)
    assert local.venue == "syndr" and local.symbol == "ETH-PERP"


def test_a_gap_breaks_the_book_until_the_next_snapshot() -> None:
    venue, local = VenueBook(), LocalBook(DEPTH)
    local.apply(venue.snapshot())
    local.apply(venue.delta(bids=[("1999.5", "4")]))
    venue.delta(bids=[("1999", "1")])  # the consumer never sees this one: sequence 102
    assert local.apply(venue.delta(asks=[("2001", "1")])) is BookStatus.BROKEN
    assert local.breaks == 1
    assert "gap" in local.problem and "follows 102" in local.problem and "last applied is 101" in local.problem
    # Later deltas chain onto the venue's book, not ours: skipped and counted, never applied.
    assert local.apply(venue.delta(asks=[("2003", "1")])) is BookStatus.BROKEN
    assert (local.breaks, local.skipped, local.sequence) == (1, 1, 101)
    # RESYNCING and STALE do not hide a break either.
    assert local.apply(venue.event(ob.BOOK_EVENT_TYPE_STALE)) is BookStatus.BROKEN
    assert local.apply(venue.event(ob.BOOK_EVENT_TYPE_RESYNCING)) is BookStatus.BROKEN
    bids, asks = venue.book.top(DEPTH)
    assert local.apply(venue.snapshot(bids, asks)) is BookStatus.LIVE
    assert local.apply(venue.delta(bids=[("1998", "2")])) is BookStatus.LIVE
    assert local.breaks == 1 and local.book.top(DEPTH) == venue.book.top(DEPTH)


def test_a_checksum_mismatch_breaks_the_book() -> None:
    venue, local = VenueBook(), LocalBook(DEPTH)
    local.apply(venue.snapshot())
    update = venue.delta(bids=[("2000.0", "7")], checksum=12345)
    assert local.apply(update) is BookStatus.BROKEN
    assert local.breaks == 1 and "checksum mismatch at sequence 101" in local.problem
    assert "0x00003039" in local.problem  # the stream's value, so it can be compared with the server's logs


def test_a_snapshot_with_a_wrong_checksum_is_broken_too() -> None:
    venue, local = VenueBook(), LocalBook(DEPTH)
    update = venue.snapshot()
    update.checksum ^= 1
    assert local.apply(update) is BookStatus.BROKEN
    assert local.apply(venue.delta(bids=[("1999", "1")])) is BookStatus.BROKEN  # no valid base to chain onto
    assert local.skipped == 1


def test_the_checksum_covers_exactly_depth_levels() -> None:
    bids = [(str(2000 - i), "1") for i in range(8)]
    asks = [(str(2001 + i), "1") for i in range(8)]
    venue = VenueBook(depth=3)
    snapshot = venue.snapshot(bids[:3], asks[:3])
    assert LocalBook(3).apply(snapshot) is BookStatus.LIVE
    assert LocalBook(4).apply(snapshot) is BookStatus.LIVE  # fewer levels than depth: the same top
    deep = VenueBook(depth=3).snapshot(bids, asks)  # eight levels, checksum over three
    assert LocalBook(3).apply(deep) is BookStatus.LIVE
    assert LocalBook(5).apply(deep) is BookStatus.BROKEN  # a consumer asking for another depth must notice


def test_an_epoch_change_needs_a_snapshot() -> None:
    venue, local = VenueBook(), LocalBook(DEPTH)
    local.apply(venue.snapshot())
    local.apply(venue.delta(bids=[("1999", "5")]))
    assert local.apply(venue.delta(asks=[("2001", "2")], epoch=2)) is BookStatus.BROKEN
    assert "epoch changed 1 -> 2" in local.problem
    # The rebuilt book starts a new epoch with its own sequence numbers.
    assert local.apply(venue.snapshot(epoch=2, sequence=7)) is BookStatus.LIVE
    assert local.apply(venue.delta(bids=[("1999", "0")])) is BookStatus.LIVE
    assert (local.epoch, local.sequence, local.breaks) == (2, 8, 1)


def test_resyncing_waits_for_a_snapshot_and_stale_resumes_with_a_chaining_delta() -> None:
    venue, local = VenueBook(), LocalBook(DEPTH)
    local.apply(venue.snapshot())
    assert local.apply(venue.event(ob.BOOK_EVENT_TYPE_STALE)) is BookStatus.STALE
    assert local.apply(venue.delta(bids=[("1999", "2")])) is BookStatus.LIVE
    assert local.apply(venue.event(ob.BOOK_EVENT_TYPE_RESYNCING)) is BookStatus.RESYNCING
    assert local.apply(venue.snapshot(epoch=2, sequence=500)) is BookStatus.LIVE
    assert local.breaks == 0
    # A delta during a rebuild has nothing valid to chain onto.
    local.apply(venue.event(ob.BOOK_EVENT_TYPE_RESYNCING))
    assert local.apply(venue.delta(bids=[("1999", "3")])) is BookStatus.BROKEN
    assert "while RESYNCING" in local.problem


def test_deltas_before_any_snapshot_and_unknown_types_are_breaks() -> None:
    venue = VenueBook()
    local = LocalBook(DEPTH)
    assert local.apply(venue.delta(bids=[("1", "1")])) is BookStatus.BROKEN
    assert "before a snapshot" in local.problem
    other = LocalBook(DEPTH)
    other.apply(venue.snapshot())
    assert other.apply(ob.BookUpdate(type=ob.BOOK_EVENT_TYPE_UNSPECIFIED)) is BookStatus.BROKEN
    with pytest.raises(ValueError, match="depth"):
        LocalBook(0)


def test_update_rate() -> None:
    venue, local = VenueBook(), LocalBook(DEPTH)
    local.apply(venue.snapshot(), now=100.0)
    for i in range(20):
        local.apply(venue.delta(bids=[("1999", str(i + 1))]), now=100.0 + i * 0.1)
    assert local.refresh_rate(102.0) == pytest.approx(21 / 2.0)
    assert local.refresh_rate(200.0) == 0.0


# --- views ----------------------------------------------------------------------------------------------------


def test_render_book_layout() -> None:
    venue, local = VenueBook(), LocalBook(DEPTH)
    local.apply(venue.snapshot(), now=0.0)
    local.refresh_rate(1.0)
    lines = render_book(local, "ETH-PERP", DEPTH, 80)
    assert len(lines) == 2 * DEPTH + 4  # fixed, even with only three levels a side
    assert all(len(line) <= 80 for line in lines)
    assert lines[0].startswith("syndr ETH-PERP  LIVE  epoch 1  seq 100  1.0 upd/s  breaks 0")
    assert "checksum verified" in lines[1]
    assert lines[2].split() == ["PRICE", "AMOUNT", "CUMULATIVE"]
    asks, spread, bids = lines[3:3 + DEPTH], lines[3 + DEPTH], lines[4 + DEPTH:]
    assert asks[:2] == ["", ""]  # padding on the far side
    assert [line.split()[:4] for line in asks[2:]] == [
        ["ask", "2002.25", "4", "6.75"], ["ask", "2001", "0.75", "2.75"], ["ask", "2000.5", "2", "2"]]
    assert "spread 0.5 (2.50 bps)  mid 2000.25" in spread and spread.startswith("---")
    assert [line.split()[:4] for line in bids[:3]] == [
        ["bid", "2000.0", "1.5", "1.5"], ["bid", "1999.5", "3", "4.5"], ["bid", "1999", "0.25", "4.75"]]
    assert bids[3:] == ["", ""]
    # Decimal points line up, and the bars grow outwards with the cumulative amount (6.75 is the widest).
    assert len({line.index(".") for line in (asks[2], asks[4], bids[0], bids[1])}) == 1
    bars = [line.count("\u2588") for line in (*asks[2:], *bids[:3])]
    assert bars[0] == max(bars) and bars[0] > bars[1] > bars[2] and bars[3] < bars[4] < bars[5]


def test_render_book_never_shows_an_exponent() -> None:
    # Decimal arithmetic gives Decimal("1E-7") for 0 + 0.0000001: str() wrote the cumulative column, the spread and
    # the mid of a book priced or sized below a millionth in exponent form.
    venue, local = VenueBook(), LocalBook(DEPTH)
    local.apply(venue.snapshot(bids=[("0.0000001", "0.0000001")], asks=[("0.0000003", "0.00000010")]))
    lines = render_book(local, "PEPE-PERP", DEPTH, 100)
    assert not any(re.search(r"[0-9]E[-+]?[0-9]", line) for line in lines), lines
    ask, spread, bid = lines[3 + DEPTH - 1], lines[3 + DEPTH], lines[4 + DEPTH]
    assert ask.split()[:4] == ["ask", "0.0000003", "0.00000010", "0.00000010"]
    assert "spread 0.0000002 (10000.00 bps)  mid 0.0000002 " in spread
    assert bid.split()[:4] == ["bid", "0.0000001", "0.0000001", "0.0000001"]


def test_render_book_states_and_narrow_width() -> None:
    local = LocalBook(DEPTH, venue="syndr")
    lines = render_book(local, "ETH-PERP", 3, 40)
    assert "WAITING" in lines[0] and lines[1] == "waiting for the first snapshot"
    assert "spread -  mid -" in lines[6] and len(lines) == 10
    assert all(len(line) <= 40 for line in lines)
    venue = VenueBook()
    local.apply(venue.snapshot())
    local.apply(venue.delta(bids=[("1999", "1")], checksum=1))
    broken = render_book(local, "ETH-PERP", 3, 200)
    assert "BROKEN" in broken[0] and "breaks 1" in broken[0]
    assert broken[1].startswith("BROKEN: checksum mismatch at sequence 101")


def test_render_book_shows_a_crossed_book() -> None:
    local = LocalBook(2)
    bids, asks = [("2001", "1")], [("2000", "1")]
    local.apply(ob.BookUpdate(type=ob.BOOK_EVENT_TYPE_SNAPSHOT, bids=levels(bids), asks=levels(asks),
                              checksum=book_checksum(bids, asks)))
    assert "CROSSED: best bid 2001 >= best ask 2000" in render_book(local, "X", 2, 80)[5]


def trade(trade_id: int, price: str, amount: str, side: side_pb2.Side.ValueType, seconds: int, millis: int = 0,
          symbol: str = "ETH-PERP") -> trade_pb2.Trade:
    return trade_pb2.Trade(venue="syndr", symbol=symbol, trade_id=str(trade_id), price=price, amount=amount,
                           taker_side=side, trade_time=Timestamp(seconds=seconds, nanos=millis * 1_000_000))


def test_render_trades_newest_first() -> None:
    base = 1_700_000_000  # 2023-11-14 22:13:20 UTC
    trades = [trade(1, "2000.5", "0.1", side_pb2.SIDE_BUY, base),
              trade(2, "2000", "1.25", side_pb2.SIDE_SELL, base + 1, 1),
              trade(3, "2000.25", "3", side_pb2.SIDE_BUY, base + 2, 250)]
    lines = render_trades(trades, 60)
    assert lines[0].split() == ["TIME", "(UTC)", "SIDE", "PRICE", "AMOUNT"]
    assert [line.split() for line in lines[1:]] == [
        ["22:13:22.250", "BUY", "2000.25", "3"],
        ["22:13:21.001", "SELL", "2000", "1.25"],
        ["22:13:20.000", "BUY", "2000.5", "0.1"],
    ]
    price_end = lines[0].index("PRICE") + len("PRICE")
    assert len({line.index(".", 13) for line in lines[1:] if "." in line[13:price_end]}) == 1  # prices align
    assert render_trades(list(reversed(trades)), 60) == lines  # order comes from trade time, not arrival
    assert all(len(line) <= 20 for line in render_trades(trades, 20))


def test_render_trades_adds_a_symbol_column_for_several_instruments() -> None:
    lines = render_trades([trade(1, "100", "1", side_pb2.SIDE_SELL, 10, symbol="BTC-PERP"),
                           trade(2, "2000", "2", side_pb2.SIDE_UNSPECIFIED, 11)], 80)
    assert lines[0].split() == ["TIME", "(UTC)", "SYMBOL", "SIDE", "PRICE", "AMOUNT"]
    assert lines[1].split()[1:3] == ["ETH-PERP", "?"] and lines[2].split()[1:3] == ["BTC-PERP", "SELL"]
    assert render_trades([], 80) == render_trades([trade(1, "1", "1", side_pb2.SIDE_BUY, 1)], 80)[:1]
    assert "SYMBOL" not in render_trades([], 80)[0]


# --- the fake service -----------------------------------------------------------------------------------------

Script = list[md_pb2.StreamOrderBookResponse | float | None]  # a response, a pause in seconds, None = hold open


class FakeMarketData(md_grpc.MarketDataServiceServicer):
    """Plays scripted streams; one book script per subscription, the last one repeating."""

    def __init__(self) -> None:
        self.book_scripts: list[Script] = []
        self.trade_script: list[md_pb2.StreamTradesResponse | float | None] = []
        self.book_requests: list[md_pb2.StreamOrderBookRequest] = []

    @staticmethod
    async def _authorize(context: grpc.aio.ServicerContext) -> None:
        metadata = dict(context.invocation_metadata() or ())
        if metadata.get("authorization") != f"Bearer {TOKEN}":
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or unknown bearer token")

    async def StreamOrderBook(self, request: md_pb2.StreamOrderBookRequest,
                              context: grpc.aio.ServicerContext) -> AsyncIterator[md_pb2.StreamOrderBookResponse]:
        await self._authorize(context)
        if request.symbol != "ETH-PERP":
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no instrument {request.symbol} on\n{request.venue}")
        self.book_requests.append(request)
        script = self.book_scripts[min(len(self.book_requests), len(self.book_scripts)) - 1]
        for step in script:
            if step is None:
                await asyncio.Event().wait()
            elif isinstance(step, float):
                await asyncio.sleep(step)
            else:
                yield step

    async def StreamTrades(self, request: md_pb2.StreamTradesRequest,
                           context: grpc.aio.ServicerContext) -> AsyncIterator[md_pb2.StreamTradesResponse]:
        await self._authorize(context)
        for step in self.trade_script:
            if step is None:
                await asyncio.Event().wait()
            elif isinstance(step, float):
                await asyncio.sleep(step)
            else:
                yield step


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeMarketData, str]]:
    servicer = FakeMarketData()  # type: ignore[abstract]  # the RPCs it does not script answer UNIMPLEMENTED
    server = grpc.aio.server()
    md_grpc.add_MarketDataServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        await server.stop(grace=None)


def responses(*updates: ob.BookUpdate) -> md_pb2.StreamOrderBookResponse:
    return md_pb2.StreamOrderBookResponse(updates=list(updates))


def live_script(venue: VenueBook, count: int, pause: float = 0.02) -> Script:
    script: Script = [responses(venue.snapshot())]
    for i in range(count):
        script += [pause, responses(venue.delta(bids=[("1999.5", f"{3 + i % 7}")], asks=[("2001", f"0.{i % 9 + 1}")]))]
    return script


def frames(text: str) -> list[str]:
    return text.split(CURSOR_HOME)[1:]


def last_frame_shows(out: io.StringIO, text: str) -> bool:
    drawn = frames(out.getvalue())
    return bool(drawn) and text in drawn[-1]


@pytest.fixture
def books(monkeypatch: pytest.MonkeyPatch) -> list[LocalBook]:
    """Every `LocalBook` `watch_book` makes, so a test can wait on its state while no frame is drawn."""
    made: list[LocalBook] = []

    class Recorded(LocalBook):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(terminal, "LocalBook", Recorded)
    return made


# --- watchers -------------------------------------------------------------------------------------------------


async def test_watch_book_draws_the_live_book_and_exits_0(fake: tuple[FakeMarketData, str]) -> None:
    servicer, target = fake
    venue = VenueBook()
    # 30 updates 10 ms apart: 0.3 s of stream, well inside the 1.5 s the view runs even on a loaded machine.
    servicer.book_scripts = [[*live_script(venue, 30, pause=0.01), None]]
    out, err = io.StringIO(), io.StringIO()
    started = asyncio.get_running_loop().time()
    code = await watch_book(Connection(target, TOKEN), "syndr", "ETH-PERP", DEPTH, out=out, err=err, max_seconds=1.5)
    elapsed = asyncio.get_running_loop().time() - started
    assert code == 0, err.getvalue()
    assert err.getvalue() == ""
    assert 1.4 < elapsed < 3.0
    text = out.getvalue()
    assert text.startswith(HIDE_CURSOR) and text.endswith(SHOW_CURSOR)
    drawn = frames(text)
    assert 3 <= len(drawn) <= 18  # at most refresh_hz (10) frames a second, plus the final one
    last = drawn[-1]
    assert "syndr ETH-PERP  LIVE  epoch 1  seq 130" in last
    assert re.search(r"ask 2000\.5 +2 ", last) and re.search(r"bid 2000\.0 +1\.5 ", last)
    assert last.index("ask 2000.5") < last.index("spread 0.5") < last.index("bid 2000.0")
    assert servicer.book_requests[0].depth == DEPTH and servicer.book_requests[0].venue == "syndr"


async def test_watch_book_exits_when_the_stream_ends(fake: tuple[FakeMarketData, str]) -> None:
    servicer, target = fake
    servicer.book_scripts = [live_script(VenueBook(), 3)]
    out = io.StringIO()
    started = asyncio.get_running_loop().time()
    assert await watch_book(Connection(target, TOKEN), "syndr", "ETH-PERP", DEPTH, out=out, err=io.StringIO(),
                            max_seconds=10) == 0
    assert asyncio.get_running_loop().time() - started < 2
    assert "seq 103" in frames(out.getvalue())[-1]


async def test_watch_book_grpc_error_is_one_line_and_exit_1(fake: tuple[FakeMarketData, str]) -> None:
    _, target = fake
    out, err = io.StringIO(), io.StringIO()
    assert await watch_book(Connection(target, TOKEN), "syndr", "NOPE-PERP", DEPTH, out=out, err=err,
                            max_seconds=5) == 1
    assert err.getvalue() == f"portico book: NOT_FOUND from {target}: no instrument NOPE-PERP on syndr\n"
    assert out.getvalue().endswith(SHOW_CURSOR)
    err = io.StringIO()
    assert await watch_book(Connection(target, "wrong"), "syndr", "ETH-PERP", DEPTH, out=io.StringIO(), err=err,
                            max_seconds=5) == 1
    assert err.getvalue().startswith("portico book: UNAUTHENTICATED from ")
    assert err.getvalue().count("\n") == 1


async def test_watch_book_unreachable_service() -> None:
    err = io.StringIO()
    assert await watch_book(Connection("127.0.0.1:1", TOKEN), "syndr", "ETH-PERP", DEPTH, out=io.StringIO(), err=err,
                            max_seconds=5) == 1
    assert err.getvalue().startswith("portico book: UNAVAILABLE from 127.0.0.1:1: ")
    assert err.getvalue().count("\n") == 1


async def test_watch_book_resubscribes_after_a_break_and_reports_it(fake: tuple[FakeMarketData, str]) -> None:
    servicer, target = fake
    venue = VenueBook()
    first: Script = [responses(venue.snapshot()), 0.05, responses(venue.delta(bids=[("1999", "9")], checksum=7)),
                     None]
    again = VenueBook(sequence=200)
    servicer.book_scripts = [first, [responses(again.snapshot()), None]]
    out, err = io.StringIO(), io.StringIO()
    code = await watch_book(Connection(target, TOKEN), "syndr", "ETH-PERP", DEPTH, out=out, err=err, max_seconds=1.6)
    assert code == 1
    assert len(servicer.book_requests) == 2
    drawn = frames(out.getvalue())
    assert any("BROKEN" in frame and "checksum mismatch at sequence 101" in frame for frame in drawn)
    assert "LIVE  epoch 1  seq 200" in drawn[-1] and "breaks 1  resubscribed 1" in drawn[-1]
    assert err.getvalue() == ("portico book: the local book broke 1 time(s), 0 delta(s) skipped; "
                              "last: checksum mismatch at sequence 101: ours 0x"
                              f"{book_checksum(*venue.book.top(DEPTH)):08x}, stream 0x00000007\n")


async def test_watch_book_throttles_redraws(fake: tuple[FakeMarketData, str]) -> None:
    servicer, target = fake
    servicer.book_scripts = [[*live_script(VenueBook(), 200, pause=0.004), None]]
    out = io.StringIO()
    assert await watch_book(Connection(target, TOKEN), "syndr", "ETH-PERP", DEPTH, out=out, err=io.StringIO(),
                            refresh_hz=4, max_seconds=1.0) == 0
    assert 3 <= len(frames(out.getvalue())) <= 6


async def test_watch_book_cancellation_restores_the_cursor(fake: tuple[FakeMarketData, str]) -> None:
    servicer, target = fake
    servicer.book_scripts = [[*live_script(VenueBook(), 2), None]]
    out = io.StringIO()
    task = asyncio.create_task(watch_book(Connection(target, TOKEN), "syndr", "ETH-PERP", DEPTH, out=out,
                                          err=io.StringIO()))
    # Cancellation draws no last frame: wait until one shows the whole script before cancelling.
    await until(lambda: last_frame_shows(out, "seq 102"), timeout_s=20)
    task.cancel()  # what asyncio.run does on Ctrl-C
    with pytest.raises(asyncio.CancelledError):
        await task
    assert out.getvalue().endswith(SHOW_CURSOR) and "seq 102" in frames(out.getvalue())[-1]


async def test_watch_book_stop_event_ends_it_like_time_up(fake: tuple[FakeMarketData, str],
                                                          books: list[LocalBook]) -> None:
    """What Ctrl-C and SIGTERM do under `run_book`: a clean end, with the exit code and summary of `--seconds`."""
    servicer, target = fake
    servicer.book_scripts = [[*live_script(VenueBook(), 2), None]]
    stop, out = asyncio.Event(), io.StringIO()
    # A 50 s refresh: only `stop` can end the wait in time. No frame comes before it, so wait on the book itself.
    task = asyncio.create_task(watch_book(Connection(target, TOKEN), "syndr", "ETH-PERP", DEPTH, out=out,
                                          err=io.StringIO(), refresh_hz=0.02, stop=stop))
    await until(lambda: books and books[0].sequence == 102, timeout_s=20)
    stop.set()
    stopped = asyncio.get_running_loop().time()
    assert await task == 0
    assert asyncio.get_running_loop().time() - stopped < 10  # not held up by the slow refresh
    assert out.getvalue().endswith(SHOW_CURSOR) and "seq 102" in frames(out.getvalue())[-1]
    venue = VenueBook()
    # A clean resubscription, so a late `stop` cannot see a second break (scripts count from this run's first).
    servicer.book_requests.clear()
    servicer.book_scripts = [[responses(venue.snapshot()), responses(venue.delta(previous=5)), None],
                             [responses(VenueBook(sequence=200).snapshot()), None]]
    stop, err = asyncio.Event(), io.StringIO()
    task = asyncio.create_task(watch_book(Connection(target, TOKEN), "syndr", "ETH-PERP", DEPTH, out=io.StringIO(),
                                          err=err, stop=stop))
    await until(lambda: len(books) == 2 and books[1].breaks == 1, timeout_s=20)
    stop.set()
    assert await task == 1
    assert "broke 1 time(s)" in err.getvalue() and "gap: delta 101 follows 5" in err.getvalue()


async def test_watch_trades_draws_the_tape(fake: tuple[FakeMarketData, str]) -> None:
    servicer, target = fake
    base = 1_700_000_000
    servicer.trade_script = [
        md_pb2.StreamTradesResponse(trades=[trade(1, "2000.5", "0.1", side_pb2.SIDE_BUY, base)]), 0.1,
        md_pb2.StreamTradesResponse(trades=[trade(2, "2000", "1.25", side_pb2.SIDE_SELL, base + 1),
                                            trade(3, "2000.25", "3", side_pb2.SIDE_BUY, base + 2)]), None]
    out, err = io.StringIO(), io.StringIO()
    assert await watch_trades(Connection(target, TOKEN), "syndr", ["ETH-PERP"], out=out, err=err, max_seconds=0.6) == 0
    last = frames(out.getvalue())[-1].replace("\x1b[K", "").splitlines()
    assert last[0].startswith("syndr ETH-PERP  trades  3 received")
    assert [line.split()[:3] for line in last[2:5]] == [
        ["22:13:22.000", "BUY", "2000.25"], ["22:13:21.000", "SELL", "2000"], ["22:13:20.000", "BUY", "2000.5"]]
    err = io.StringIO()
    assert await watch_trades(Connection(target, "wrong"), "syndr", ["ETH-PERP"], out=io.StringIO(), err=err,
                              max_seconds=5) == 1
    assert err.getvalue().startswith("portico trades: UNAUTHENTICATED")


# --- command line ---------------------------------------------------------------------------------------------


def parsers() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser, argparse.ArgumentParser]:
    root = argparse.ArgumentParser(prog="portico")
    sub = root.add_subparsers(dest="command", required=True)
    book, trades = sub.add_parser("book"), sub.add_parser("trades")
    add_arguments(book, trades)
    return root, book, trades


def write_state(path: Path, target: str, token: str = TOKEN) -> Path:
    path.write_text(json.dumps({"services": {"marketdata": target}, "tokens": {"read": token, "trade": "x"}}))
    return path


def test_arguments_and_defaults() -> None:
    root, _, _ = parsers()
    args = root.parse_args(["book", "ETH-PERP"])
    assert (args.symbol, args.venue, args.depth, args.state_file, args.target, args.token_env, args.seconds,
            args.refresh_hz) == ("ETH-PERP", "syndr", 10, None, None, None, None, 10.0)
    args = root.parse_args(["trades", "ETH-PERP", "BTC-PERP", "--venue", "other", "--seconds", "2.5"])
    assert (args.symbols, args.venue, args.seconds) == (["ETH-PERP", "BTC-PERP"], "other", 2.5)
    for bad in (["book", "X", "--depth", "0"], ["trades"], ["book", "X", "--token", "secret"],
                ["trades", "X", "--token=secret"], ["book", "X", "--tok", "secret"]):
        with pytest.raises(SystemExit):
            root.parse_args(bad)


def test_a_token_on_the_command_line_is_refused_with_a_reason(capsys: pytest.CaptureFixture[str]) -> None:
    root, _, _ = parsers()
    with pytest.raises(SystemExit):
        root.parse_args(["book", "ETH-PERP", "--token", "secret"])
    assert "--token is not accepted" in capsys.readouterr().err


def test_missing_state_file_or_token_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    root, _, _ = parsers()
    assert run_book(root.parse_args(["book", "ETH-PERP", "--state-file", str(tmp_path / "none.json")])) == 2
    assert "no state file at" in capsys.readouterr().err
    monkeypatch.delenv("PORTICO_TEST_TOKEN", raising=False)
    args = root.parse_args(["book", "ETH-PERP", "--target", "127.0.0.1:1", "--token-env", "PORTICO_TEST_TOKEN"])
    assert run_book(args) == 2
    assert capsys.readouterr().err == "portico book: environment variable PORTICO_TEST_TOKEN is not set or empty\n"
    (tmp_path / "bad.json").write_text(json.dumps({"services": {}}))
    assert run_book(root.parse_args(["book", "ETH-PERP", "--state-file", str(tmp_path / "bad.json")])) == 2
    assert "has no services.marketdata" in capsys.readouterr().err
    # A token gRPC cannot send is a configuration error, not a traceback; the message does not show it.
    state = write_state(tmp_path / "state.json", "127.0.0.1:1", token="t\u00f6ken")
    assert run_book(root.parse_args(["book", "ETH-PERP", "--state-file", str(state), "--seconds", "1"])) == 2
    assert capsys.readouterr().err == (f"portico book: the token from tokens.read in {state} is not a bearer token: "
                                       "only printable ASCII without spaces\n")


async def test_run_book_and_run_trades_from_the_state_file(fake: tuple[FakeMarketData, str], tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from portico.terminal import run_trades

    servicer, target = fake
    servicer.book_scripts = [[*live_script(VenueBook(), 5), None]]
    servicer.trade_script = [md_pb2.StreamTradesResponse(trades=[trade(1, "5", "1", side_pb2.SIDE_BUY, 1)]), None]
    state = write_state(tmp_path / "state.json", target)
    root, _, _ = parsers()
    # --seconds: long enough for the whole script on a loaded machine (0.5 s once fell short at seq 102).
    args: Any = root.parse_args(["book", "ETH-PERP", "--state-file", str(state), "--seconds", "2"])
    # run_book calls asyncio.run, so it runs on its own thread (and loop) while the fake serves on this one.
    assert await asyncio.to_thread(run_book, args) == 0
    captured = capsys.readouterr()
    assert "LIVE  epoch 1  seq 105" in frames(captured.out)[-1] and captured.err == ""
    # --target and --token-env override the state file (which here holds a wrong token).
    monkeypatch.setenv("PORTICO_TEST_TOKEN", TOKEN + "\n")
    write_state(state, "127.0.0.1:1", "wrong")
    args = root.parse_args(["trades", "ETH-PERP", "--state-file", str(state), "--target", target,
                            "--token-env", "PORTICO_TEST_TOKEN", "--seconds", "2"])
    assert await asyncio.to_thread(run_trades, args) == 0
    assert "1 received" in frames(capsys.readouterr().out)[-1]
    args = root.parse_args(["book", "ETH-PERP", "--state-file", str(state), "--target", target, "--seconds", "5"])
    assert await asyncio.to_thread(run_book, args) == 1  # the state file's (wrong) token
    assert capsys.readouterr().err.startswith("portico book: UNAUTHENTICATED")


def test_a_depth_the_request_cannot_carry_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    # `depth` is an int32 in the contract: a larger number used to end in a ValueError traceback from protobuf.
    root, _, _ = parsers()
    for depth in ("2147483648", "99999999999", "x"):
        with pytest.raises(SystemExit) as exit_info:
            root.parse_args(["book", "ETH-PERP", "--depth", depth])
        assert exit_info.value.code == 2
    assert "argument --depth: must be between 1 and 2147483647" in capsys.readouterr().err
    assert root.parse_args(["book", "ETH-PERP", "--depth", "2147483647"]).depth == 2147483647
