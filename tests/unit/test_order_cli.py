"""`portico order`: argument parsing and validation, requests, rendering, exit codes (no server)."""

from __future__ import annotations

import argparse
import io
import json
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from portico.cli import build_parser
from portico.common.v1 import side_pb2
from portico.execution.v1 import execution_service_pb2 as pb
from portico.execution.v1 import execution_service_pb2_grpc as pb_grpc
from portico.execution.v1 import order_pb2
from portico.order_cli import (
    CLIENT_ORDER_ID,
    UsageError,
    check_arguments,
    new_client_order_id,
    place_request,
    render_order,
    render_orders,
    run,
)

ACCOUNT = "0x" + "ab" * 20


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["order", *argv])


def rejected(*argv: str) -> None:
    """Parse `argv`, which argparse must refuse as a usage error (exit code 2)."""
    with pytest.raises(SystemExit) as exit_info:
        parse(*argv)
    assert exit_info.value.code == 2


def test_buy_defaults_and_request() -> None:
    args = parse("buy", "ETH-PERP", "0.1", "--price", "3000.50")
    assert (args.order_command, args.symbol, args.amount, args.price, args.market, args.client_order_id,
            args.post_only, args.reduce_only, args.tif, args.label, args.venue, args.account, args.scope,
            args.state_file, args.target, args.token_env) == (
        "buy", "ETH-PERP", "0.1", "3000.50", False, None, False, False, None, "", "syndr", None, "trade",
        None, None, None)
    check_arguments(args)
    request = place_request(args, "syndr", ACCOUNT, "cli-1")
    assert (request.side, request.type, request.amount, request.price, request.time_in_force,
            request.client_order_id, request.account) == (
        side_pb2.SIDE_BUY, order_pb2.ORDER_TYPE_LIMIT, "0.1", "3000.50", order_pb2.TIME_IN_FORCE_UNSPECIFIED,
        "cli-1", ACCOUNT)


def test_sell_market_with_options() -> None:
    args = parse("sell", "BTC-PERP", "1e-2", "--market", "--tif", "IOC", "--reduce-only", "--label", "x",
                 "--client-order-id", "desk.a:1_b-2", "--account", ACCOUNT)
    check_arguments(args)
    request = place_request(args, "syndr", args.account, args.client_order_id)
    # A decimal in exponent form becomes a plain decimal string; never a float.
    assert (request.side, request.type, request.amount, request.price, request.time_in_force,
            request.reduce_only, request.label, request.client_order_id) == (
        side_pb2.SIDE_SELL, order_pb2.ORDER_TYPE_MARKET, "0.01", "", order_pb2.TIME_IN_FORCE_IMMEDIATE_OR_CANCEL,
        True, "x", "desk.a:1_b-2")
    assert parse("buy", "X", "0.30000000000000000001", "--price", "1").amount == "0.30000000000000000001"


@pytest.mark.parametrize("argv", [
    ["buy", "ETH-PERP", "0.1"],  # neither --price nor --market
    ["buy", "ETH-PERP", "0.1", "--price", "3000", "--market"],
    ["buy", "ETH-PERP", "0", "--price", "3000"],
    ["buy", "ETH-PERP", "-0.1", "--price", "3000"],
    ["buy", "ETH-PERP", "abc", "--price", "3000"],
    ["buy", "ETH-PERP", "NaN", "--price", "3000"],
    ["buy", "ETH-PERP", "Infinity", "--price", "3000"],
    ["buy", "ETH-PERP", "0.1", "--price", "0"],
    ["buy", "ETH-PERP", "0.1", "--price", "3,000"],
    ["buy", "ETH-PERP", "0.1", "--price", "3000", "--tif", "day"],
    ["buy", "ETH-PERP", "0.1", "--price", "3000", "--client-order-id", "has space"],
    ["buy", "ETH-PERP", "0.1", "--price", "3000", "--client-order-id", "x" * 65],
    ["buy", "ETH-PERP", "0.1", "--price", "3000", "--client", "abc"],  # no abbreviations
    ["buy", "ETH-PERP", "0.1", "--price", "3000", "--timeout", "0"],
    ["buy", "ETH-PERP", "0.1", "--price", "3000", "--token", "secret"],
    ["buy", "ETH-PERP", "0.1", "--price", "3000", "--tok", "secret"],
    ["sell", "ETH-PERP", "--price", "3000"],  # no amount
    ["cancel"],  # what to cancel?
    ["cancel", "--order-id", "1", "--client-order-id", "a"],
    ["cancel", "--order-id", "1", "--all"],
    ["list", "--token=secret"],
    ["amend", "x"],
    [],
])
def test_bad_arguments_are_usage_errors(argv: list[str]) -> None:
    rejected(*argv)


def test_token_on_the_command_line_says_why(capsys: pytest.CaptureFixture[str]) -> None:
    rejected("list", "--token", "secret")
    assert "--token is not accepted" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "message"), [
    (["buy", "ETH-PERP", "0.1", "--market", "--post-only"], "--post-only needs a limit price"),
    (["cancel", "--order-id", "1", "--symbol", "ETH-PERP"], "--symbol only goes with --all"),
    (["list", "--account", "0x1234"], "is not a 0x-prefixed 20-byte hex address"),
    # Blank is not absent: `cancel --all --symbol ""` must not cancel every order of the account.
    (["cancel", "--all", "--symbol", ""], "--symbol must not be empty"),
    (["cancel", "--all", "--symbol", " \t"], "--symbol must not be empty"),
    (["list", "--symbol", ""], "--symbol must not be empty"),
    (["cancel", "--order-id", " "], "--order-id must not be empty"),
    (["list", "--venue", ""], "--venue must not be empty"),
    (["buy", " ", "0.1", "--market"], "the symbol must not be empty"),
])
def test_rules_between_arguments(argv: list[str], message: str) -> None:
    args = parse(*argv)
    with pytest.raises(UsageError, match=message):
        check_arguments(args)


def test_cancel_and_list_arguments() -> None:
    args = parse("cancel", "--all", "--symbol", "ETH-PERP")
    check_arguments(args)
    assert (args.all, args.symbol, args.order_id, args.client_order_id, args.scope) == (
        True, "ETH-PERP", None, None, "trade")
    args = parse("cancel", "--client-order-id", "cli-1")
    check_arguments(args)
    assert (args.all, args.client_order_id) == (False, "cli-1")
    args = parse("list")
    assert (args.symbol, args.scope) == (None, "read")  # listing only needs the read token


def test_generated_client_order_ids_are_valid_and_fresh() -> None:
    ids = {new_client_order_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(CLIENT_ORDER_ID.fullmatch(i) and i.startswith("cli-") for i in ids)


def order(**fields: Any) -> order_pb2.Order:
    base: dict[str, Any] = {"order_id": "77", "client_order_id": "cli-1", "symbol": "ETH-PERP",
                            "side": side_pb2.SIDE_BUY, "price": "2400.5", "amount": "0.1",
                            "filled_amount": "0", "state": order_pb2.ORDER_STATE_OPEN}
    return order_pb2.Order(**{**base, **fields})


def test_render_order_line() -> None:
    assert render_order(order()) == (
        "OPEN  buy 0.1 ETH-PERP @ 2400.5  filled 0  order-id 77  client-order-id cli-1")
    line = render_order(order(state=order_pb2.ORDER_STATE_REJECTED, price="", order_id="", side=side_pb2.SIDE_SELL,
                              reject_reason="post only would take"))
    assert line == ("REJECTED  sell 0.1 ETH-PERP @ market  filled 0  order-id -  client-order-id cli-1"
                    "  reason: post only would take")


def test_render_orders_table_is_aligned() -> None:
    assert render_orders([]) == ["no open orders"]
    lines = render_orders([order(), order(order_id="123456", client_order_id="a", price="10", amount="12.25",
                                          filled_amount="2.25")])
    assert lines == [
        "ORDER ID  CLIENT ORDER ID  SYMBOL    SIDE   PRICE  AMOUNT  FILLED  STATE",
        "77        cli-1            ETH-PERP  buy   2400.5     0.1       0  OPEN",
        "123456    a                ETH-PERP  buy       10   12.25    2.25  OPEN",
    ]


def test_missing_state_file_and_missing_values_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    args = parse("list", "--state-file", str(tmp_path / "none.json"))
    assert run(args) == 2
    assert capsys.readouterr().err.startswith(f"portico order: no state file at {tmp_path / 'none.json'}")

    state = tmp_path / "state.json"
    state.write_text(json.dumps({"services": {"execution": "127.0.0.1:1"}, "tokens": {"read": "r"}}))
    assert run(parse("buy", "ETH-PERP", "0.1", "--price", "1", "--state-file", str(state))) == 2
    assert "has no tokens.trade" in capsys.readouterr().err  # trading needs the trade token
    assert run(parse("list", "--state-file", str(state))) == 2
    assert "has no demo.account" in capsys.readouterr().err

    monkeypatch.delenv("PORTICO_TEST_TOKEN", raising=False)
    assert run(parse("list", "--target", "127.0.0.1:1", "--token-env", "PORTICO_TEST_TOKEN",
                     "--account", ACCOUNT)) == 2
    assert "PORTICO_TEST_TOKEN is not set or empty" in capsys.readouterr().err
    assert run(parse("buy", "X", "1", "--market", "--post-only", "--state-file", str(state))) == 2
    assert "--post-only needs a limit price" in capsys.readouterr().err


def test_cancel_all_with_a_blank_symbol_exits_2_without_a_call(capsys: pytest.CaptureFixture[str],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTICO_TEST_TOKEN", "t")
    # 127.0.0.1:1 answers nothing: a call would exit 1 (UNAVAILABLE), not 2.
    args = parse("cancel", "--all", "--symbol", "", "--target", "127.0.0.1:1", "--token-env", "PORTICO_TEST_TOKEN",
                 "--account", ACCOUNT, "--timeout", "2")
    assert run(args) == 2
    assert capsys.readouterr().err == "portico order: --symbol must not be empty\n"


@pytest.mark.parametrize("token", ["t\u00f6k", "two words", "a\x01b", "a\tb", "x\u00a0y"])
def test_a_token_grpc_cannot_send_exits_2_without_showing_it(token: str, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTICO_TEST_TOKEN", token)
    assert run(parse("list", "--target", "127.0.0.1:1", "--token-env", "PORTICO_TEST_TOKEN",
                     "--account", ACCOUNT)) == 2
    err = capsys.readouterr().err
    assert err == ("portico order: the token from environment variable PORTICO_TEST_TOKEN is not a bearer token: "
                   "only printable ASCII without spaces\n")
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"services": {"execution": "127.0.0.1:1"}, "tokens": {"read": token},
                                 "demo": {"account": ACCOUNT}}))
    assert run(parse("list", "--state-file", str(state))) == 2
    err = capsys.readouterr().err
    assert f"the token from tokens.read in {state} is not a bearer token" in err and token not in err


@pytest.mark.parametrize("flag", ["--target", "--token-env"])
def test_a_blank_target_or_token_env_is_not_the_state_files(flag: str, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"services": {"execution": "127.0.0.1:1"}, "tokens": {"trade": "t"},
                                 "demo": {"account": ACCOUNT}}))
    assert run(parse("cancel", "--all", "--state-file", str(state), flag, " ")) == 2
    assert capsys.readouterr().err == f"portico order: {flag} must not be empty\n"


def test_a_failed_call_exits_1_with_the_status(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTICO_TEST_TOKEN", "t")
    out, err = io.StringIO(), io.StringIO()
    args = parse("cancel", "--order-id", "1", "--target", "127.0.0.1:1", "--token-env", "PORTICO_TEST_TOKEN",
                 "--account", ACCOUNT, "--timeout", "2")
    assert run(args, out=out, err=err) == 1
    assert err.getvalue().startswith("portico order cancel: UNAVAILABLE from 127.0.0.1:1: ")
    assert out.getvalue() == ""
    # An order placed without an id gets one, printed before the call so that it can be retried.
    args = parse("buy", "ETH-PERP", "0.1", "--price", "1", "--target", "127.0.0.1:1", "--token-env",
                 "PORTICO_TEST_TOKEN", "--account", ACCOUNT, "--timeout", "2")
    assert run(args, out=out, err=err) == 1
    generated = out.getvalue().split()[1]
    assert generated.startswith("cli-") and f"--client-order-id {generated}" in out.getvalue()


class NewerExecution(pb_grpc.ExecutionServiceServicer):
    """An execution service newer than this client: its orders carry an OrderState and a Side this client lacks."""

    def __init__(self) -> None:
        self.placed: list[pb.PlaceOrderRequest] = []

    def PlaceOrder(self, request: pb.PlaceOrderRequest, context: grpc.ServicerContext) -> pb.PlaceOrderResponse:
        self.placed.append(request)
        return pb.PlaceOrderResponse(order=order(state=99, client_order_id=request.client_order_id))

    def ListOpenOrders(self, request: pb.ListOpenOrdersRequest,
                       context: grpc.ServicerContext) -> pb.ListOpenOrdersResponse:
        return pb.ListOpenOrdersResponse(orders=[order(state=99), order(order_id="78", side=7)])


def test_an_order_state_or_side_newer_than_the_client_is_shown_not_a_traceback(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # proto3 enums are open: a newer service may send a value this client has no name for. The order was placed;
    # the line that says so (with its order id) must still be printed, not a ValueError traceback.
    assert render_order(order(state=99, side=7)).startswith("99  7 0.1 ETH-PERP @ 2400.5")
    assert render_orders([order(state=99)])[1].endswith("ETH-PERP  buy   2400.5     0.1       0  99")

    servicer = NewerExecution()  # type: ignore[abstract]  # the RPCs it does not script answer UNIMPLEMENTED
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_ExecutionServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        monkeypatch.setenv("PORTICO_TEST_TOKEN", "t")
        connect = ["--target", f"127.0.0.1:{port}", "--token-env", "PORTICO_TEST_TOKEN", "--account", ACCOUNT]
        out, err = io.StringIO(), io.StringIO()
        assert run(parse("buy", "ETH-PERP", "0.1", "--price", "2400.5", *connect), out=out, err=err) == 0
        generated = servicer.placed[0].client_order_id
        assert out.getvalue().splitlines()[1] == (
            f"99  buy 0.1 ETH-PERP @ 2400.5  filled 0  order-id 77  client-order-id {generated}")
        assert err.getvalue() == ""
        out = io.StringIO()
        assert run(parse("list", *connect), out=out, err=err) == 0
        assert [line.split()[-2:] for line in out.getvalue().splitlines()[1:]] == [["0", "99"], ["0", "OPEN"]]
        assert out.getvalue().splitlines()[2].split()[3] == "7"
    finally:
        server.stop(grace=None)


@pytest.mark.parametrize("text", [
    "0_5",  # Decimal() reads PEP 515 underscores: this would be an order for 5, not 0.5
    "1_000",
    "\u0661\u0660",  # Arabic-Indic digits: Decimal() reads them as 10
    "\uff11",  # a full-width 1
    "1e100",  # 101 digits written out: longer than any decimal string the services take (80 characters)
    "1e-100",
    "9e99999",  # and `1e999999999` would be written out as a billion digits before any check
])
def test_amounts_and_prices_are_plain_ascii_decimals_of_a_sane_length(text: str) -> None:
    rejected("buy", "ETH-PERP", text, "--price", "3000")
    rejected("buy", "ETH-PERP", "0.1", "--price", text)
    # What stays accepted: plain decimals, a leading or trailing point, an exponent that writes out short.
    args = parse("buy", "ETH-PERP", " .5 ", "--price", "3e3")
    assert (args.amount, args.price) == ("0.5", "3000")
    assert parse("sell", "X", "1.", "--price", "2.5E-2").price == "0.025"


def test_target_and_token_env_without_a_state_file_ask_for_the_account(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    # Before, the message asked for --target and --token-env, the very flags given: the account was what was missing.
    monkeypatch.setenv("PORTICO_TEST_TOKEN", "t")
    assert run(parse("cancel", "--all", "--target", "127.0.0.1:1", "--token-env", "PORTICO_TEST_TOKEN",
                     "--state-file", str(tmp_path / "none.json"))) == 2
    assert capsys.readouterr().err == (f"portico order: no --account given, and no state file at "
                                       f"{tmp_path / 'none.json'} to take demo.account from: pass --account 0x... "
                                       "(or --state-file)\n")
