"""`portico instruments` as a process against the real reference-data service and the simulator, on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest
from tests.support.portico_up import PORTICO, REPO
from tests.support.refdata import RunningRefdata, database, running_refdata

from portico.sim.server import SimConfig, Simulator


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimConfig(port=0, market_maker=False)) as simulator:
        yield simulator


@pytest.fixture
async def refdata(sim: Simulator, tmp_path: Path) -> AsyncIterator[RunningRefdata]:
    """Reference data on a free port, its own SQLite file, not synced yet (the CLI's `sync` does that)."""
    with database("sqlite", tmp_path) as db_env:
        async with running_refdata(sim.http_url, db_env) as running:
            yield running


@pytest.fixture
def state_file(refdata: RunningRefdata, tmp_path: Path) -> Path:
    """What `portico up` would write, for this reference-data service and its tokens."""
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"services": {"refdata": refdata.target}, "tokens": refdata.tokens}))
    return path


async def instruments(state_file: Path, *args: str, env: dict[str, str] | None = None
                      ) -> subprocess.CompletedProcess[str]:
    """`portico instruments ARGS` in a child process (in a thread: the service runs on this event loop)."""
    return await asyncio.to_thread(
        subprocess.run, [*PORTICO, "instruments", *args, "--state-file", str(state_file)], cwd=REPO,
        env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=60)


def active_instruments(sim: Simulator) -> dict[str, str]:
    """The simulator's own list: kind by name, of what it lists as active."""
    return {i.name: i.kind.value for i in sim.engine.instruments() if i.is_active}


def table_rows(stdout: str) -> list[list[str]]:
    """The rows of the `list` table under its header, as cells (the cells are two or more spaces apart)."""
    lines = stdout.splitlines()
    assert lines[0].split()[:2] == ["SYMBOL", "KIND"], stdout
    return [re.split(r" {2,}", line.strip()) for line in lines[1:]]


async def test_sync_needs_admin_then_list_shows_every_instrument(sim: Simulator, refdata: RunningRefdata,
                                                                 state_file: Path) -> None:
    before = await instruments(state_file, "list")
    assert (before.returncode, before.stdout, before.stderr) == (
        0, "no instruments for syndr (never synced? `portico instruments sync`)\n", "")

    # The read token may not sync: refused by the service, one line on stderr, nothing synced.
    refused = await instruments(state_file, "sync", "--token-env", "PORTICO_TEST_READ_TOKEN",
                                env={"PORTICO_TEST_READ_TOKEN": refdata.tokens["read"]})
    assert (refused.returncode, refused.stdout) == (1, ""), refused.stderr
    assert refused.stderr.startswith(f"portico instruments sync: PERMISSION_DENIED from {refdata.target}: ")
    assert refused.stderr.count("\n") == 1
    assert (await instruments(state_file, "list")).stdout == before.stdout

    # The admin token (the state file's tokens.admin, taken for `sync` by default) syncs them all.
    expected = active_instruments(sim)
    assert len(expected) > 5  # several pages at --page-size 5
    synced = await instruments(state_file, "sync")
    assert (synced.returncode, synced.stderr) == (0, "")
    n = len(expected)
    assert synced.stdout == f"synced {n} instrument(s) from syndr: {n} added, 0 updated, 0 deactivated\n"

    # Every page is read: each of the simulator's instruments once, in symbol order, of its kind.
    listed = await instruments(state_file, "list", "--page-size", "5")
    assert (listed.returncode, listed.stderr) == (0, "")
    rows = table_rows(listed.stdout)
    assert [row[0] for row in rows] == sorted(expected)
    assert {row[0]: row[1] for row in rows} == expected
    assert {row[-1] for row in rows} == {"yes"}

    # The table shows the service's decimal strings as they are (the same as --json's), and they are the venue's.
    as_json = await instruments(state_file, "list", "--json")
    assert (as_json.returncode, as_json.stderr) == (0, "")
    documents = {d["symbol"]: d for d in map(json.loads, as_json.stdout.splitlines())}
    assert list(documents) == sorted(expected)
    for symbol, _kind, _pair, tick, amount_increment, min_amount, *_ in rows:
        document = documents[symbol]
        assert [tick, amount_increment, min_amount] == [
            document["price_increment"], document["amount_increment"], document["min_trade_amount"]]
        venue = sim.engine.instrument(symbol)
        assert [Decimal(tick), Decimal(amount_increment), Decimal(min_amount)] == [
            venue.tick_size, venue.contract_size, venue.min_trade_amount]

    # A delisted instrument turns inactive on the next sync; the filters reach the service.
    sim.delist("BTC-PERP")
    resynced = await instruments(state_file, "sync", "--symbol", "ETH-PERP")
    assert resynced.stdout == "synced 1 instrument(s) from syndr: 0 added, 0 updated, 0 deactivated\n"
    resynced = await instruments(state_file, "sync")
    assert resynced.stdout == f"synced {n - 1} instrument(s) from syndr: 0 added, 0 updated, 1 deactivated\n"
    inactive = await instruments(state_file, "list", "--inactive-only")
    assert [(row[0], row[-1]) for row in table_rows(inactive.stdout)] == [("BTC-PERP", "no")]
    options = await instruments(state_file, "list", "--kind", "option", "--active-only")
    assert [row[0] for row in table_rows(options.stdout)] == sorted(
        name for name, kind in expected.items() if kind == "option")


async def test_show_prints_a_record_and_an_unknown_symbol_is_not_found(sim: Simulator, refdata: RunningRefdata,
                                                                       state_file: Path) -> None:
    assert (await instruments(state_file, "sync")).returncode == 0
    name = next(i.name for i in sim.engine.instruments() if i.kind.value == "option" and i.is_active)
    shown = await instruments(state_file, "show", name)
    assert (shown.returncode, shown.stderr) == (0, "")
    fields = dict(line.split(maxsplit=1) for line in shown.stdout.splitlines())
    assert (fields["symbol"], fields["venue"], fields["type"], fields["active"]) == (name, "syndr", "option", "true")
    assert fields["strike_price"] == name.split("-")[2]
    assert fields["venue_instrument_id"] == str(sim.engine.instrument(name).id)

    unknown = await instruments(state_file, "show", "NO-SUCH-PERP")
    assert (unknown.returncode, unknown.stdout) == (1, "")
    assert unknown.stderr == (f"portico instruments show: NOT_FOUND from {refdata.target}: "
                              "syndr has no instrument 'NO-SUCH-PERP' [INSTRUMENT_NOT_FOUND]\n")


async def test_sync_and_show_take_a_symbol_the_same_way(sim: Simulator, refdata: RunningRefdata,
                                                        state_file: Path) -> None:
    # Before, `show` stripped its symbol and `sync` did not: `sync --symbol " ETH-PERP"` failed with
    # `syndr does not list ETH-PERP` (the error's text with its spaces collapsed), naming a symbol syndr lists.
    synced = await instruments(state_file, "sync", "--symbol", " ETH-PERP", "--symbol", "BTC-PERP\t")
    assert (synced.returncode, synced.stderr) == (0, "")
    assert synced.stdout == "synced 2 instrument(s) from syndr: 2 added, 0 updated, 0 deactivated\n"
    shown = await instruments(state_file, "show", " ETH-PERP ")
    assert (shown.returncode, shown.stderr) == (0, "")

    # Spaces inside a symbol are the symbol's: both commands send them, and the error shows them as sent.
    unknown = await instruments(state_file, "sync", "--symbol", "ETH  PERP")
    assert (unknown.returncode, unknown.stdout) == (1, "")
    assert unknown.stderr == (f"portico instruments sync: INVALID_ARGUMENT from {refdata.target}: "
                              "symbols: syndr does not list ETH  PERP [UNKNOWN_SYMBOL]\n")
    unknown = await instruments(state_file, "show", "ETH  PERP")
    assert (unknown.returncode, unknown.stdout) == (1, "")
    assert unknown.stderr == (f"portico instruments show: NOT_FOUND from {refdata.target}: "
                              "syndr has no instrument 'ETH  PERP' [INSTRUMENT_NOT_FOUND]\n")
