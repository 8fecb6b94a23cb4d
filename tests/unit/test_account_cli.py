"""`portico account`: argument parsing and validation, rendering, the position view, exit codes (no server)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from portico.account.v1 import account_pb2
from portico.account.v1 import account_service_pb2 as pb
from portico.account.v1 import account_service_pb2_grpc as pb_grpc
from portico.account_cli import (
    PositionBook,
    UsageError,
    check_arguments,
    render_account,
    render_positions,
    render_summary,
    run,
    watch,
)
from portico.cli import build_parser
from portico.common.v1 import side_pb2
from portico.connection import Connection
from portico.terminal import CURSOR_HOME

ACCOUNT = "0x" + "ab" * 20


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["account", *argv])


def rejected(*argv: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse(*argv)
    assert exit_info.value.code == 2


def test_defaults() -> None:
    args = parse()
    assert (args.venue, args.account, args.watch, args.seconds, args.refresh_hz, args.timeout, args.state_file,
            args.target, args.token_env) == ("syndr", None, False, None, 10.0, 15.0, None, None, None)
    check_arguments(args)
    args = parse("--watch", "--seconds", "2.5", "--account", ACCOUNT, "--target", "h:1", "--token-env", "T",
                 "--state-file", "/tmp/s.json")
    check_arguments(args)
    assert (args.watch, args.seconds, args.account, args.target, args.token_env, args.state_file) == (
        True, 2.5, ACCOUNT, "h:1", "T", Path("/tmp/s.json"))


@pytest.mark.parametrize("argv", [
    ["--seconds", "0", "--watch"],
    ["--seconds", "-1", "--watch"],
    ["--seconds", "inf", "--watch"],
    ["--seconds", "soon", "--watch"],
    ["--refresh-hz", "0"],
    ["--timeout", "0"],
    ["--timeout", "3600"],
    ["--token", "secret"],
    ["--tok", "secret"],  # no abbreviations
    ["--wat"],
    ["positions"],  # no positional arguments
])
def test_bad_arguments_are_usage_errors(argv: list[str]) -> None:
    rejected(*argv)


@pytest.mark.parametrize(("argv", "message"), [
    (["--seconds", "5"], "--seconds only goes with --watch"),
    (["--account", "0x1234"], "is not a 0x-prefixed 20-byte hex address"),
    (["--account", "ab" * 21], "is not a 0x-prefixed 20-byte hex address"),
    (["--venue", " "], "--venue must not be empty"),
])
def test_rules_between_arguments(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        check_arguments(parse(*argv))


def summary(**fields: Any) -> account_pb2.AccountSummary:
    base: dict[str, Any] = {
        "venue": "syndr", "account": ACCOUNT, "equity": "10012.5", "available_balance": "9500.25",
        "initial_margin": "512.25", "maintenance_margin": "256.125", "initial_margin_utilization": "5.116",
        "maintenance_margin_utilization": "2.558", "realized_pnl": "-3.5", "unrealized_pnl": "16",
        "total_pnl": "12.5", "collateral": {"USDT": "4000", "USDC": "6000.000001"},
        "margin_mode": account_pb2.MARGIN_MODE_STANDARD, "state": account_pb2.ACCOUNT_STATE_ACTIVE,
        "venue_status": "ACTIVE"}
    return account_pb2.AccountSummary(**{**base, **fields})


def test_render_summary() -> None:
    assert render_summary(summary()) == [
        f"account {ACCOUNT} at syndr",
        "  equity              10012.5",
        "  available balance   9500.25",
        "  initial margin      512.25  (5.116% of equity)",
        "  maintenance margin  256.125  (2.558% of equity)",
        "  realized pnl        -3.5",
        "  unrealized pnl      16",
        "  total pnl           12.5",
        "  collateral USDC     6000.000001",
        "  collateral USDT     4000",
        "  margin mode         standard",
        "  state               active",
    ]


def test_render_summary_with_missing_values_and_other_states() -> None:
    lines = render_summary(summary(equity="", initial_margin_utilization="", collateral={},
                                   margin_mode=account_pb2.MARGIN_MODE_PORTFOLIO,
                                   state=account_pb2.ACCOUNT_STATE_UNSPECIFIED, venue_status="FROZEN"))
    assert "  equity              -" in lines
    assert "  initial margin      512.25  (- of equity)" in lines
    assert "  collateral          none" in lines
    assert lines[-2:] == ["  margin mode         portfolio", "  state               unknown (FROZEN)"]


def position(symbol: str = "ETH-PERP", **fields: Any) -> account_pb2.Position:
    base: dict[str, Any] = {"venue": "syndr", "account": ACCOUNT, "symbol": symbol,
                            "direction": side_pb2.SIDE_BUY, "size": "0.1", "average_price": "2400.5",
                            "mark_price": "2410", "unrealized_pnl": "0.95", "realized_pnl": "0"}
    return account_pb2.Position(**{**base, **fields})


def test_render_positions_table_is_aligned_sorted_and_skips_closed() -> None:
    assert render_positions([]) == ["no open positions"]
    assert render_positions([position(size="0")]) == ["no open positions"]
    lines = render_positions([
        position("ETH-PERP"),
        position("BTC-PERP", direction=side_pb2.SIDE_SELL, size="1.25", average_price="60000",
                 mark_price="59000.5", unrealized_pnl="1249.375", realized_pnl="-12.5"),
        position("SOL-PERP", size="0.000"),
    ])
    assert lines == [
        "SYMBOL    SIDE   SIZE  AVG PRICE  MARK PRICE  UNREALIZED PNL  REALIZED PNL",
        "BTC-PERP  short  1.25      60000     59000.5        1249.375         -12.5",
        "ETH-PERP  long    0.1     2400.5        2410            0.95             0",
    ]


def test_render_account_joins_summary_and_positions() -> None:
    lines = render_account(summary(), [position()])
    assert lines[0] == f"account {ACCOUNT} at syndr" and "" in lines
    assert lines[-1].startswith("ETH-PERP  long")
    assert render_account(None, []) == ["account summary: waiting", "", "no open positions"]


def update(sequence: int, pos: account_pb2.Position, time_ms: int = 0) -> pb.PositionUpdate:
    message = pb.PositionUpdate(sequence=sequence, position=pos)
    if time_ms:
        message.position.update_time.FromMilliseconds(time_ms)
    return message


def test_position_book_applies_stream_updates_on_the_snapshot() -> None:
    book = PositionBook()
    snapshot = position("ETH-PERP", size="0.1")
    snapshot.update_time.FromMilliseconds(2_000)
    book.load([snapshot, position("BTC-PERP", size="0")])
    assert list(book.positions) == ["ETH-PERP"]

    # An update older than the snapshot's view of the position does not overwrite it.
    assert not book.apply(update(1, position("ETH-PERP", size="0.05"), time_ms=1_000))
    assert book.positions["ETH-PERP"].size == "0.1"
    assert book.apply(update(2, position("ETH-PERP", size="0.2"), time_ms=3_000))
    assert book.positions["ETH-PERP"].size == "0.2"
    # The same sequence again is a duplicate.
    assert not book.apply(update(2, position("ETH-PERP", size="0.3"), time_ms=4_000))
    assert book.apply(update(3, position("BTC-PERP", size="1", direction=side_pb2.SIDE_SELL)))
    assert sorted(book.positions) == ["BTC-PERP", "ETH-PERP"]
    # Size 0 closes the position; closing one that is not shown changes nothing.
    assert book.apply(update(4, position("ETH-PERP", size="0"), time_ms=5_000))
    assert not book.apply(update(5, position("SOL-PERP", size="0")))
    assert list(book.positions) == ["BTC-PERP"]
    assert (book.last_sequence, book.updates) == (5, 5)


def test_missing_state_file_and_missing_values_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    assert run(parse("--state-file", str(tmp_path / "none.json"))) == 2
    assert capsys.readouterr().err.startswith(f"portico account: no state file at {tmp_path / 'none.json'}")

    state = tmp_path / "state.json"
    state.write_text(json.dumps({"services": {"execution": "127.0.0.1:1"}, "tokens": {"read": "r"}}))
    assert run(parse("--state-file", str(state))) == 2
    assert "has no services.account" in capsys.readouterr().err
    state.write_text(json.dumps({"services": {"account": "127.0.0.1:1"}, "tokens": {"trade": "t"}}))
    assert run(parse("--state-file", str(state))) == 2
    assert "has no tokens.read" in capsys.readouterr().err  # the read token, nothing broader
    state.write_text(json.dumps({"services": {"account": "127.0.0.1:1"}, "tokens": {"read": "r"}}))
    assert run(parse("--state-file", str(state))) == 2
    assert "has no demo.account" in capsys.readouterr().err

    monkeypatch.delenv("PORTICO_TEST_TOKEN", raising=False)
    assert run(parse("--target", "127.0.0.1:1", "--token-env", "PORTICO_TEST_TOKEN", "--account", ACCOUNT)) == 2
    assert "PORTICO_TEST_TOKEN is not set or empty" in capsys.readouterr().err
    assert run(parse("--seconds", "1", "--state-file", str(state))) == 2
    assert "--seconds only goes with --watch" in capsys.readouterr().err
    # A token gRPC cannot send is a configuration error, not a traceback; the message does not show it.
    monkeypatch.setenv("PORTICO_TEST_TOKEN", "s\u00e9cret")
    assert run(parse("--target", "127.0.0.1:1", "--token-env", "PORTICO_TEST_TOKEN", "--account", ACCOUNT)) == 2
    err = capsys.readouterr().err
    assert "PORTICO_TEST_TOKEN is not a bearer token" in err and "s\u00e9cret" not in err


@pytest.mark.parametrize("watch", [False, True])
def test_a_failed_call_exits_1_with_the_status(watch: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTICO_TEST_TOKEN", "t")
    out, err = io.StringIO(), io.StringIO()
    argv = ["--target", "127.0.0.1:1", "--token-env", "PORTICO_TEST_TOKEN", "--account", ACCOUNT, "--timeout", "2"]
    if watch:
        argv += ["--watch", "--seconds", "10"]
    assert run(parse(*argv), out=out, err=err) == 1
    assert err.getvalue().startswith("portico account: UNAVAILABLE from 127.0.0.1:1: ")
    if not watch:
        assert out.getvalue() == ""


def test_a_margin_mode_or_state_newer_than_the_client_is_shown_not_a_traceback() -> None:
    # proto3 enums are open: a newer account service may send a value this client has no name for.
    lines = render_summary(summary(margin_mode=42, state=9, venue_status="LIQUIDATING"))
    assert lines[-2:] == ["  margin mode         42", "  state               9 (LIQUIDATING)"]


def test_stream_updates_applied_before_the_snapshot_arrives_are_not_undone_by_it() -> None:
    # The stream is subscribed before ListPositions is read, so an update can be applied before the snapshot
    # arrives; a snapshot older than it must not put the old size back (nothing would correct it afterwards).
    book = PositionBook()
    assert book.apply(update(1, position("ETH-PERP", size="0.3"), time_ms=2_000))
    assert not book.apply(update(2, position("BTC-PERP", size="0"), time_ms=2_000))  # closed (not shown yet)
    older = [position("BTC-PERP", size="1"), position("ETH-PERP", size="0.1")]
    for listed in older:
        listed.update_time.FromMilliseconds(1_000)
    book.load(older)
    assert {symbol: p.size for symbol, p in book.positions.items()} == {"ETH-PERP": "0.3"}

    # A snapshot newer than what the stream said is the newer view.
    book = PositionBook()
    assert book.apply(update(1, position("ETH-PERP", size="0.3"), time_ms=2_000))
    newer = position("ETH-PERP", size="0.4")
    newer.update_time.FromMilliseconds(3_000)
    book.load([newer, position("SOL-PERP", size="2")])
    assert {symbol: p.size for symbol, p in book.positions.items()} == {"ETH-PERP": "0.4", "SOL-PERP": "2"}


class RacingAccount(pb_grpc.AccountServiceServicer):
    """Answers ListPositions only after StreamPositions has sent a change newer than that listing."""

    def __init__(self) -> None:
        self.streamed = asyncio.Event()

    async def StreamPositions(self, request: pb.StreamPositionsRequest,
                              context: grpc.aio.ServicerContext) -> AsyncIterator[pb.StreamPositionsResponse]:
        yield pb.StreamPositionsResponse(updates=[update(1, position("ETH-PERP", size="0.3"), time_ms=2_000)])
        self.streamed.set()
        await asyncio.Event().wait()

    async def ListPositions(self, request: pb.ListPositionsRequest,
                            context: grpc.aio.ServicerContext) -> pb.ListPositionsResponse:
        await self.streamed.wait()
        await asyncio.sleep(0.2)  # the client has applied the streamed change by now
        listed = position("ETH-PERP", size="0.1")
        listed.update_time.FromMilliseconds(1_000)
        return pb.ListPositionsResponse(positions=[listed])

    async def GetAccountSummary(self, request: pb.GetAccountSummaryRequest,
                                context: grpc.aio.ServicerContext) -> pb.GetAccountSummaryResponse:
        return pb.GetAccountSummaryResponse(summary=summary())


async def test_watch_shows_the_streamed_position_not_the_older_listing() -> None:
    server = grpc.aio.server()
    pb_grpc.add_AccountServiceServicer_to_server(RacingAccount(), server)  # type: ignore[abstract]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        out, err = io.StringIO(), io.StringIO()
        assert await watch(Connection(f"127.0.0.1:{port}", "t"), "syndr", ACCOUNT, call_timeout=5, out=out, err=err,
                           refresh_hz=20, max_seconds=1.5, stop=None) == 0
    finally:
        await server.stop(grace=None)
    last_frame = out.getvalue().rsplit(CURSOR_HOME, 1)[1]
    assert [line.split()[:3] for line in last_frame.splitlines() if line.startswith("ETH-PERP")] == [
        ["ETH-PERP", "long", "0.3"]], err.getvalue()


class FailingAccount(pb_grpc.AccountServiceServicer):
    """StreamPositions fails at once; ListPositions fails once it has (the account service going away)."""

    def __init__(self) -> None:
        self.stream_failed = asyncio.Event()

    async def StreamPositions(self, request: pb.StreamPositionsRequest,
                              context: grpc.aio.ServicerContext) -> AsyncIterator[pb.StreamPositionsResponse]:
        self.stream_failed.set()
        await context.abort(grpc.StatusCode.UNAVAILABLE, "going away")
        yield pb.StreamPositionsResponse()  # never reached: makes this a server-streaming handler

    async def ListPositions(self, request: pb.ListPositionsRequest,
                            context: grpc.aio.ServicerContext) -> pb.ListPositionsResponse:
        await self.stream_failed.wait()
        await asyncio.sleep(0.2)  # the client has read the stream's failure by now
        await context.abort(grpc.StatusCode.UNAVAILABLE, "going away")
        raise AssertionError("unreachable")


async def test_watch_failing_before_the_listing_leaves_no_unread_task_error(caplog: pytest.LogCaptureFixture) -> None:
    """The stream's own failure, while the listing was still being read, was left in a task nobody awaited:
    besides the one-line error, asyncio printed "Task exception was never retrieved" and a traceback."""
    server = grpc.aio.server()
    pb_grpc.add_AccountServiceServicer_to_server(FailingAccount(), server)  # type: ignore[abstract]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        out, err = io.StringIO(), io.StringIO()
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            assert await watch(Connection(f"127.0.0.1:{port}", "t"), "syndr", ACCOUNT, call_timeout=5, out=out, err=err,
                               refresh_hz=20, max_seconds=5, stop=None) == 1
            gc.collect()  # a task whose exception nobody read says so when it is collected
            await asyncio.sleep(0)
    finally:
        await server.stop(grace=None)
    assert err.getvalue().startswith("portico account: UNAVAILABLE from ") and err.getvalue().count("\n") == 1
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == []
