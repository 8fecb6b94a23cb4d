"""`portico instruments`: argument parsing and validation, the filter, rendering, exit codes (no server)."""

from __future__ import annotations

import argparse
import io
import json
import re
from collections.abc import Sequence
from pathlib import Path

import grpc
import pytest

from portico.cli import build_parser
from portico.connection import describe_rpc_error
from portico.instruments_cli import (
    TABLE_HEADER,
    UsageError,
    check_arguments,
    instrument_filter,
    list_instruments,
    render_instrument,
    render_instruments,
    render_json,
    render_sync,
    run,
)
from portico.refdata.v1 import instrument_pb2 as ipb
from portico.refdata.v1 import reference_data_service_pb2 as pb


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["instruments", *argv])


def rejected(*argv: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse(*argv)
    assert exit_info.value.code == 2


def test_defaults_and_scope_per_command() -> None:
    listing = parse("list")
    assert (listing.instruments_command, listing.scope, listing.venue, listing.json, listing.page_size,
            listing.timeout, listing.state_file, listing.target, listing.token_env) == (
        "list", "read", "syndr", False, 500, 15.0, None, None, None)
    check_arguments(listing)
    show = parse("show", "ETH-PERP", "--json", "--target", "h:1", "--token-env", "T", "--state-file", "/tmp/s.json")
    assert (show.symbol, show.scope, show.json, show.target, show.token_env, show.state_file) == (
        "ETH-PERP", "read", True, "h:1", "T", Path("/tmp/s.json"))
    sync = parse("sync", "--symbol", "ETH-PERP", "BTC-PERP", "--symbol", "ETH-25DEC26", "--venue", "syndr")
    assert (sync.scope, sync.symbols, sync.timeout) == ("admin", ["ETH-PERP", "BTC-PERP", "ETH-25DEC26"], 60.0)
    assert parse("sync").symbols == []


def test_the_filter_carries_every_flag() -> None:
    flt = instrument_filter(parse("list"))
    assert flt.ListFields() == [] and not flt.HasField("active")  # an empty filter: everything, active or not
    flt = instrument_filter(parse("list", "--kind", "option", "FUTURE", "--kind", "perpetual",
                                  "--contract-type", "call_option", "--base", "eth", "btc", "--quote", "USD",
                                  "--active-only"))
    assert list(flt.types) == [ipb.INSTRUMENT_TYPE_OPTION, ipb.INSTRUMENT_TYPE_FUTURE, ipb.INSTRUMENT_TYPE_PERPETUAL]
    assert list(flt.contract_types) == [ipb.CONTRACT_TYPE_CALL_OPTION]
    assert (list(flt.base_currencies), list(flt.quote_currencies)) == (["ETH", "BTC"], ["USD"])
    assert flt.HasField("active") and flt.active is True
    flt = instrument_filter(parse("list", "--inactive-only", "--kind", "spot"))
    assert flt.HasField("active") and flt.active is False and list(flt.types) == [ipb.INSTRUMENT_TYPE_SPOT]


@pytest.mark.parametrize("argv", [
    [],  # a sub-command is required
    ["delete"],
    ["list", "--kind", "swap"],
    ["list", "--kind", "unspecified"],
    ["list", "--kind"],
    ["list", "--contract-type", "linear"],
    ["list", "--active-only", "--inactive-only"],
    ["list", "--page-size", "0"],
    ["list", "--page-size", "1001"],
    ["list", "--page-size", "ten"],
    ["list", "--base", " "],
    ["list", "--timeout", "0"],
    ["list", "ETH-PERP"],  # no positional arguments
    ["list", "--act"],  # no abbreviations
    ["list", "--token", "secret"],
    ["list", "--tok", "secret"],
    ["show"],
    ["show", "ETH-PERP", "BTC-PERP"],
    ["sync", "--symbol"],
    ["sync", "ETH-PERP"],
])
def test_bad_arguments_are_usage_errors(argv: list[str]) -> None:
    rejected(*argv)


@pytest.mark.parametrize(("argv", "message"), [
    (["show", " "], "the symbol must not be empty"),
    (["sync", "--symbol", "ETH-PERP", ""], "--symbol must not be empty"),
    (["list", "--venue", ""], "--venue must not be empty"),
])
def test_rules_between_arguments(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        check_arguments(parse(*argv))


def instrument(symbol: str = "ETH-PERP", **fields: object) -> ipb.Instrument:
    base: dict[str, object] = {
        "symbol": symbol, "dataset_id": symbol, "venue": "syndr", "base_currency": "ETH", "quote_currency": "USD",
        "type": ipb.INSTRUMENT_TYPE_PERPETUAL, "active": True, "price_increment": "0.1", "amount_increment": "0.001",
        "min_trade_amount": "0.001", "maker_fee": "-0.000025", "taker_fee": "0.00025", "inverse": False,
        "contract_type": ipb.CONTRACT_TYPE_LINEAR_PERPETUAL, "contract_multiplier": "1",
        "settlement_currency": "USD", "venue_instrument_id": 1, "venue_kind": "perpetual", "max_leverage": "50",
        "underlying": "ETHUSD",
    }
    base.update(fields)
    message = ipb.Instrument(**base)  # type: ignore[arg-type]
    message.available_since.FromMilliseconds(1_700_000_000_000)
    return message


def option(symbol: str, strike: str, option_type: int, **fields: object) -> ipb.Instrument:
    message = instrument(symbol, type=ipb.INSTRUMENT_TYPE_OPTION, contract_type=ipb.CONTRACT_TYPE_PUT_OPTION,
                         strike_price=strike, option_type=option_type, **fields)
    message.expiry.FromMilliseconds(1_798_185_600_000)  # 2026-12-25T08:00:00Z
    return message


def columns(table: Sequence[str]) -> list[list[str]]:
    """The cells of every row, checking the alignment: text columns start, number columns end, at one offset."""
    numeric = {"TICK SIZE", "AMOUNT INCR", "MIN AMOUNT", "MULTIPLIER", "STRIKE"}
    rows = [list(re.finditer(r"\S+(?: \S+)*", line)) for line in table]  # cells are 2+ spaces apart
    assert {len(row) for row in rows} == {len(TABLE_HEADER)}, table
    for i, label in enumerate(TABLE_HEADER):
        edges = {row[i].end() if label in numeric else row[i].start() for row in rows}
        assert len(edges) == 1, (label, table)
    return [[cell.group() for cell in row] for row in rows]


def test_table_is_aligned_and_keeps_decimals_as_given() -> None:
    long_tick = "0.000000000000000000000000001"  # a float would print 1e-27
    table = render_instruments([
        instrument("BTC-PERP", base_currency="BTC", price_increment="0.50", amount_increment="0.0001",
                   min_trade_amount="123456789012345678901234567890.1"),  # a float would round it
        option("ETH-25DEC26-3000-P", "3000", ipb.OPTION_TYPE_PUT, price_increment=long_tick, active=False),
        instrument("X-PERP", base_currency="", quote_currency="", underlying="XUSD", type=0, venue_kind="swap",
                   contract_multiplier="10"),
    ])
    assert len(table) == 4 and all(line == line.rstrip() for line in table)
    cells = columns(table)
    assert cells[0] == list(TABLE_HEADER)
    assert cells[1] == ["BTC-PERP", "perpetual", "BTC/USD", "0.50", "0.0001", "123456789012345678901234567890.1", "1",
                        "-", "-", "-", "yes"]
    assert cells[2] == ["ETH-25DEC26-3000-P", "option", "ETH/USD", long_tick, "0.001", "0.001", "1",
                        "2026-12-25T08:00:00Z", "3000", "put", "no"]
    # No base/quote: the underlying; no normalised type: the venue's kind.
    assert cells[3] == ["X-PERP", "swap", "XUSD", "0.1", "0.001", "0.001", "10", "-", "-", "-", "yes"]


def test_an_instrument_without_optional_values_shows_dashes() -> None:
    bare = ipb.Instrument(symbol="S", type=ipb.INSTRUMENT_TYPE_SPOT)
    assert columns(render_instruments([bare]))[1] == ["S", "spot", "-", "-", "-", "-", "-", "-", "-", "-", "no"]


def test_empty_list_prints_one_line() -> None:
    assert render_instruments([]) == ["no instruments"]
    assert render_instruments([], empty="no instruments match the filter") == ["no instruments match the filter"]


def test_show_prints_every_field_once_in_the_contracts_order() -> None:
    record = option("ETH-25DEC26-3000-P", "3000.50", ipb.OPTION_TYPE_PUT, maker_fee="-0.000025")
    lines = render_instrument(record)
    labels = [line.split()[0] for line in lines]
    assert labels == [field.name for field in ipb.Instrument.DESCRIPTOR.fields]
    values = {line.split()[0]: line.split(maxsplit=1)[1] for line in lines}
    assert values["symbol"] == "ETH-25DEC26-3000-P"
    assert (values["type"], values["contract_type"], values["option_type"]) == ("option", "put_option", "put")
    assert (values["strike_price"], values["maker_fee"], values["price_increment"]) == ("3000.50", "-0.000025", "0.1")
    assert (values["expiry"], values["available_since"]) == ("2026-12-25T08:00:00Z", "2023-11-14T22:13:20Z")
    assert (values["available_to"], values["quanto"], values["update_time"]) == ("-", "-", "-")  # unset
    assert (values["inverse"], values["active"], values["venue_instrument_id"]) == ("false", "true", "1")
    assert values["changes"] == "none"
    # Values line up after the longest name.
    assert len({line.index(line.split()[1], len(line.split()[0])) for line in lines}) == 1


def test_show_lists_each_change_with_what_it_records() -> None:
    record = instrument()
    first = record.changes.add(price_increment="0.05")
    first.until.FromMilliseconds(1_700_000_000_000)
    second = record.changes.add(amount_increment="0.01", contract_multiplier="10")
    second.until.FromMilliseconds(1_700_000_001_500)
    lines = render_instrument(record)
    assert [line for line in lines if line.startswith("changes")] == [
        "changes[0]                  until 2023-11-14T22:13:20Z  price_increment 0.05",
        "changes[1]                  until 2023-11-14T22:13:21.500Z  amount_increment 0.01  contract_multiplier 10",
    ]
    assert not any(line.split()[0] == "changes" for line in lines)


def test_json_keeps_decimals_as_strings_and_every_field() -> None:
    record = option("ETH-25DEC26-3000-P", "3000.50", ipb.OPTION_TYPE_PUT, price_increment="0.10", active=False)
    text = render_json(record)
    assert "\n" not in text
    document = json.loads(text)
    assert (document["symbol"], document["price_increment"], document["strike_price"]) == (
        "ETH-25DEC26-3000-P", "0.10", "3000.50")
    assert (document["active"], document["option_type"], document["type"]) == (
        False, "OPTION_TYPE_PUT", "INSTRUMENT_TYPE_OPTION")
    assert (document["expiry"], document["venue_instrument_id"], document["changes"]) == (
        "2026-12-25T08:00:00Z", "1", [])
    assert "available_to" not in document and "quanto" not in document  # unset fields with presence


class PagedStub:
    """ListInstruments over `pages`, each page's token naming the next; records the requests it gets."""

    def __init__(self, pages: list[list[str]]):
        self.pages = pages
        self.requests: list[pb.ListInstrumentsRequest] = []

    async def ListInstruments(self, request: pb.ListInstrumentsRequest, **call: object) -> pb.ListInstrumentsResponse:
        assert call == {"metadata": (("authorization", "Bearer t"),), "timeout": 5}
        self.requests.append(request)
        index = int(request.page_token or "0")
        reply = pb.ListInstrumentsResponse(instruments=[instrument(s) for s in self.pages[index]])
        if index + 1 < len(self.pages):
            reply.next_page_token = str(index + 1)
        return reply


async def test_list_reads_every_page_with_the_same_filter() -> None:
    stub = PagedStub([["A-PERP", "B-PERP"], ["C-PERP", "D-PERP"], ["E-PERP"]])
    flt = instrument_filter(parse("list", "--kind", "perpetual", "--active-only"))
    found = await list_instruments(stub, "syndr", flt, (("authorization", "Bearer t"),),  # type: ignore[arg-type]
                                   page_size=2, call_timeout=5)
    assert [i.symbol for i in found] == ["A-PERP", "B-PERP", "C-PERP", "D-PERP", "E-PERP"]
    assert [r.page_token for r in stub.requests] == ["", "1", "2"]
    assert all((r.venue, r.page_size, r.filter) == ("syndr", 2, flt) for r in stub.requests)


def test_render_sync() -> None:
    reply = pb.SyncInstrumentsResponse(venue="syndr", synced=24, added=3, updated=2, deactivated=1)
    assert render_sync(reply) == "synced 24 instrument(s) from syndr: 3 added, 2 updated, 1 deactivated"


def test_missing_state_file_and_missing_values_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    assert run(parse("list", "--state-file", str(tmp_path / "none.json"))) == 2
    assert capsys.readouterr().err.startswith(f"portico instruments: no state file at {tmp_path / 'none.json'}")

    state = tmp_path / "state.json"
    state.write_text(json.dumps({"services": {"account": "127.0.0.1:1"}, "tokens": {"read": "r", "admin": "a"}}))
    assert run(parse("list", "--state-file", str(state))) == 2
    assert "has no services.refdata" in capsys.readouterr().err
    # Each sub-command takes its own scope's token, nothing broader or narrower.
    state.write_text(json.dumps({"services": {"refdata": "127.0.0.1:1"}, "tokens": {"read": "r"}}))
    assert run(parse("sync", "--state-file", str(state))) == 2
    assert "has no tokens.admin" in capsys.readouterr().err
    state.write_text(json.dumps({"services": {"refdata": "127.0.0.1:1"}, "tokens": {"admin": "a"}}))
    assert run(parse("show", "ETH-PERP", "--state-file", str(state))) == 2
    assert "has no tokens.read" in capsys.readouterr().err

    monkeypatch.delenv("PORTICO_TEST_TOKEN", raising=False)
    assert run(parse("list", "--target", "127.0.0.1:1", "--token-env", "PORTICO_TEST_TOKEN")) == 2
    assert "PORTICO_TEST_TOKEN is not set or empty" in capsys.readouterr().err
    assert run(parse("show", "", "--state-file", str(state))) == 2
    assert capsys.readouterr().err == "portico instruments: the symbol must not be empty\n"
    # A token gRPC cannot send is a configuration error, not a traceback; the message does not show it.
    state.write_text(json.dumps({"services": {"refdata": "127.0.0.1:1"}, "tokens": {"admin": "a\x1bb"}}))
    assert run(parse("sync", "--state-file", str(state))) == 2
    err = capsys.readouterr().err
    assert f"the token from tokens.admin in {state} is not a bearer token" in err and "a\x1bb" not in err


@pytest.mark.parametrize("argv", [["list"], ["show", "ETH-PERP"], ["sync"]])
def test_a_failed_call_exits_1_with_the_status(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTICO_TEST_TOKEN", "t")
    out, err = io.StringIO(), io.StringIO()
    args = parse(*argv, "--target", "127.0.0.1:1", "--token-env", "PORTICO_TEST_TOKEN", "--timeout", "2")
    assert run(args, out=out, err=err) == 1
    assert err.getvalue().startswith(f"portico instruments {argv[0]}: UNAVAILABLE from 127.0.0.1:1: ")
    assert err.getvalue().count("\n") == 1 and out.getvalue() == ""


@pytest.mark.parametrize(("details", "shown"), [
    ("syndr has no instrument 'ETH  PERP'", "syndr has no instrument 'ETH  PERP'"),  # the symbol's spaces as sent
    ("  padded\n", "padded"),
    ("two\n  lines\tand\u2028a tab", "two lines and a tab"),  # one line
    ("\x1b[2Jcleared", "\\x1b[2Jcleared"),  # shown, not acted on by the terminal
    ("", "no details"),
])
def test_an_error_line_keeps_the_servers_spaces_and_stays_one_line(details: str, shown: str) -> None:
    error = grpc.aio.AioRpcError(grpc.StatusCode.NOT_FOUND, grpc.aio.Metadata(), grpc.aio.Metadata(), details)
    assert describe_rpc_error(error, "127.0.0.1:1") == f"NOT_FOUND from 127.0.0.1:1: {shown}"
