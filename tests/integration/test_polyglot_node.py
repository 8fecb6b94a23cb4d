"""The contracts work from Node.js: tests/polyglot/node/client.mjs against `portico up`.

The client loads proto/ at run time with @grpc/proto-loader and talks to the services with
@grpc/grpc-js (both npm devDependencies, installed by `make install`): it lists instruments,
streams a book checking every delta's chain and checksum, and rests and cancels an order.
Node and those packages are part of the project's install, so their absence fails this test.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest
from tests.support.portico_up import REPO, PorticoUp

from portico.venues.syndr.http import SyndrHttpClient

CLIENT = REPO / "tests" / "polyglot" / "node" / "client.mjs"
NODE_PACKAGES = ("@grpc/grpc-js", "@grpc/proto-loader")
INSTALL_HINT = "run `make install` (it runs `npm install` from package.json / package-lock.json)"


def _node() -> str:
    """The `node` executable (18 or newer), and the npm packages the client imports; a failure says what to do."""
    node = shutil.which("node")
    if node is None:
        pytest.fail(f"`node` (Node.js 18+) is not on PATH: the polyglot test needs it; install Node.js, then "
                    f"{INSTALL_HINT}")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    major = re.match(r"v(\d+)\.", version)
    if major is None or int(major.group(1)) < 18:
        pytest.fail(f"`node --version` says {version!r}; the polyglot test needs Node.js 18 or newer")
    missing = [name for name in NODE_PACKAGES if not (REPO / "node_modules" / name / "package.json").exists()]
    if missing:
        pytest.fail(f"npm packages missing from {REPO / 'node_modules'}: {', '.join(missing)}; {INSTALL_HINT}")
    return node


async def test_node_client_lists_streams_places_and_cancels(tmp_path: Path) -> None:
    node = _node()  # before starting anything: a missing toolchain fails fast
    up = PorticoUp(tmp_path)
    up.start()
    try:
        state = await up.wait_for_state()
        client = await asyncio.to_thread(
            subprocess.run, [node, str(CLIENT), str(up.state_file), "--book-seconds", "3"],
            cwd=REPO, capture_output=True, text=True, timeout=60)
        assert client.returncode == 0, f"client.mjs failed:\n{client.stderr}\n{client.stdout}"
        summary = json.loads(client.stdout)

        assert summary["without_token"] == "UNAUTHENTICATED"
        instruments = summary["instruments"]
        assert instruments["listed"] > 0 and "ETH-PERP" in instruments["symbols"]
        perp = instruments["ETH-PERP"]

        book = summary["book"]
        assert book["updates"] > 0 and book["snapshots"] >= 1 and book["deltas"] > 0, book
        assert (book["broken_chains"], book["checksum_mismatches"], book["problems"]) == (0, 0, []), book
        assert Decimal(book["best_bid"]) < Decimal(book["best_ask"])

        order = summary["order"]
        assert order["placed_state"] == "ORDER_STATE_OPEN" and order["open_before_cancel"] is True, order
        assert order["cancelled_state"] == "ORDER_STATE_CANCELLED" and order["open_after_cancel"] is False, order
        assert order["echoed_client_order_id"] == order["client_order_id"] and order["order_id"]
        assert Decimal(order["amount"]) == Decimal(perp["min_trade_amount"])
        price, tick = Decimal(order["price"]), Decimal(perp["price_increment"])
        assert price % tick == 0 and price < Decimal(book["best_bid"])

        # The venue agrees: nothing rests at the order's price any more (the market maker quotes near the mark).
        async with SyndrHttpClient(state["simulator"]["http"]) as venue:
            venue_book = (await venue.call("public/get_order_book",
                                           {"instrument_name": "ETH-PERP", "depth": 10_000})).result
        assert all(Decimal(bid_price) != price for bid_price, _ in venue_book["bids"]), venue_book["bids"]
    finally:
        returncode, _, err = up.stop()
    assert returncode == 0, err
