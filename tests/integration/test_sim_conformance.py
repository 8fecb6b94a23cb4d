"""Conformance: the document's example requests, sent to the simulator, answer in the document's shapes.

Every `*.request.json` with a `*.response.json` beside it (extracted from the
Syndr document by scripts/extract_syndr_examples.py) is sent to a running
simulator, with the example's placeholders (order ids, API keys, account) swapped
for live ones. The answer's `result` must have the example's shape: every key
the example has, with the same JSON type (the simulator may add keys). Objects
keyed by data (instrument names, currencies, order ids) are compared value to
value. Each documented deviation is listed in DEVIATIONS with its reason.
"""

from __future__ import annotations

import asyncio
import copy
import json
import secrets
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from tests.support.syndr_account import SyndrAccount, register, sign

from portico.sim.server import SimConfig, Simulator
from portico.venues.syndr import models, typed_data
from portico.venues.syndr.constants import ErrorCode
from portico.venues.syndr.errors import SyndrInvalidRequest, SyndrRejected
from portico.venues.syndr.http import SyndrHttpClient
from portico.venues.syndr.ws import Message, SyndrWebSocket

RESOURCES = Path(__file__).resolve().parents[1] / "resources" / "syndr"
# `jsonrpc.*` is the document's generic envelope example, with no concrete method to send.
PAIRS = sorted(p.name.removesuffix(".request.json") for p in RESOURCES.glob("*.request.json")
               if (RESOURCES / p.name.replace(".request.json", ".response.json")).exists()
               and not p.name.startswith("jsonrpc."))

# Objects whose keys are data, per method: paths ("$" = result) compared value to value.
KEYED_BY_DATA = {
    "public.get_instruments": ["$"],
    "public.get_instruments_by_currency": ["$"],
    "public.get_supported_collaterals": ["$"],
    "private.get_deposits": ["$"],
    "private.get_open_orders": ["$", "$.*", "$.*.*", "$.*.*.*"],
    "private.get_account_summary": ["$.collateral", "$.delta_total"],
}

# Where the simulator knowingly differs from an example, and why.
DEVIATIONS: dict[str, dict[str, str]] = {
    "private.get_api_keys": {
        "$.apiKeys[].api_secret": "secrets are shown once, at creation; a venue that lists them leaks them",
    },
    "private.get_open_orders": {
        "$": "the example is an empty list; the response table documents the nested "
             "currency -> kind -> instrument -> order id object, which is what the simulator answers",
    },
    "private.get_user_trades_by_instrument": {
        "$": "the example is one object; the table says a list of trades, which the simulator answers",
    },
    "private.get_user_trades_by_kind": {
        "$": "the example is one object; the table says a list of trades, which the simulator answers",
    },
}


def kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if value is None:
        return "null"
    if isinstance(value, int | float | Decimal):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def mismatches(doc: Any, sim: Any, path: str, keyed: list[str], *, require_items: bool = True) -> list[str]:
    """Where `sim` lacks something `doc` has, or has it with another JSON type.

    With `require_items` off, an empty array where the example has items is not a
    difference (a notification may legitimately change one side of a book only).
    """
    found: list[str] = []
    if kind_of(doc) != kind_of(sim):
        return [f"{path}: example is {kind_of(doc)}, simulator gives {kind_of(sim)}"]
    if isinstance(doc, dict):
        if any(_matches(path, pattern) for pattern in keyed):
            if doc and sim:
                found += mismatches(next(iter(doc.values())), next(iter(sim.values())), f"{path}.*", keyed,
                                    require_items=require_items)
            elif doc:
                found.append(f"{path}: example has entries, simulator has none")
            return found
        for key, value in doc.items():
            if key not in sim:
                found.append(f"{path}.{key}: missing")
            else:
                found += mismatches(value, sim[key], f"{path}.{key}", keyed, require_items=require_items)
    elif isinstance(doc, list) and doc:
        if sim:
            found += mismatches(doc[0], sim[0], f"{path}[]", keyed, require_items=require_items)
        elif require_items:
            found.append(f"{path}: example has items, simulator has none")
    return found


def _matches(path: str, pattern: str) -> bool:
    parts, wanted = path.split("."), pattern.split(".")
    return len(parts) == len(wanted) and all(w in ("*", p) for p, w in zip(parts, wanted, strict=True))


def load(name: str) -> Any:
    return json.loads((RESOURCES / f"{name}.json").read_text())


class Scenario:
    """Live values to put where the examples have placeholders."""

    def __init__(self, sim: Simulator, account: SyndrAccount, http: SyndrHttpClient, public: SyndrHttpClient):
        self.sim = sim
        self.account = account
        self.http = http
        self.public = public

    async def setup(self) -> None:
        book = models.parse_order_book((await self.public.call("public/get_order_book",
                                                               {"instrument_name": "ETH-PERP"})).result)
        best_bid, best_ask = book.best_bid_price, book.best_ask_price
        assert best_bid is not None and best_ask is not None, "the market maker quotes both sides"
        self.best_bid: Decimal = best_bid
        self.best_ask: Decimal = best_ask
        taker = (await self.http.call("private/buy", self.account.order(
            "ETH-PERP", "buy", "0.01", str(self.best_ask), time_in_force="IOC"))).result["order"]
        self.filled_order_id = taker["order_id"]
        option = next(n for n in self.account.instrument_ids if n.startswith("ETH-") and n.endswith("-C"))
        tick = models.parse_instrument((await self.public.call("public/get_instrument",
                                                               {"instrument_name": option})).result).tick_size
        for _ in range(2):  # the example pages with offset 1
            resting = (await self.http.call("private/buy", self.account.order(option, "buy", "1", str(tick),
                                                                              post_only=True))).result["order"]
            await self.http.call("private/cancel", {"instrument_name": option, "order_id": resting["order_id"]})
        self.sim.engine.deposit(self.account.address, "USDT", Decimal("4000"))

    async def resting_order(self) -> dict[str, Any]:
        result = (await self.http.call("private/buy", self.account.order(
            "ETH-PERP", "buy", "0.01", str(self.best_bid - 100), post_only=True))).result
        return dict(result["order"])

    async def params(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        now_s = int(time.time())
        if name in ("private.cancel",):
            params["order_id"] = (await self.resting_order())["order_id"]
            params["instrument_name"] = "ETH-PERP"
        elif name == "private.edit":
            order = models.parse_order(await self.resting_order())
            params = self.account.edit(order, "0.02", str(self.best_bid - 101))
        elif name == "private.get_user_trades_by_order":
            params["order-id"] = self.filled_order_id
        elif name == "private.deactivate_api_key":
            created = (await self.http.call("private/create_api_key", {"scope": 2})).result
            params = {"api-key": created["api_key"], "api_secret": created["api_secret"]}
        elif name == "private.get_portfolio_margin_data":
            params["from"] = self.account.address
        elif name in ("private.cancel_all", "private.cancel_all_by_instrument"):
            await self.resting_order()
        elif name == "public.get_tradingview_chart_data":
            params.update({"from": (now_s - 3600) * 1000, "to": (now_s + 60) * 1000})
        for key in ("start_time", "end_time"):
            if key in params:
                params[key] = now_s - 86400 if key == "start_time" else now_s + 60
        name_param = params.get("instrument_name")
        if isinstance(name_param, str) and name_param not in self.account.instrument_ids:
            params["instrument_name"] = "ETH-PERP"
        return params


@pytest.fixture(scope="module")
async def scenario() -> AsyncIterator[Scenario]:
    async with Simulator(SimConfig(port=0, seed=5, book_changes_per_second=300)) as sim, \
            SyndrHttpClient(sim.http_url) as public:
        account = await register(public)
        async with SyndrHttpClient(sim.http_url, credentials=account.credentials) as http:
            scenario = Scenario(sim, account, http, public)
            await scenario.setup()
            yield scenario


WS_ONLY = {"public.auth", "public.subscribe", "public.unsubscribe", "private.subscribe", "private.unsubscribe"}


@pytest.mark.parametrize("name", PAIRS)
async def test_example_request_gets_the_example_shape(scenario: Scenario, name: str) -> None:
    request = load(f"{name}.request")
    example = load(f"{name}.response")
    params = await scenario.params(name, copy.deepcopy(request.get("params") or {}))
    method = request["method"]
    if name in WS_ONLY:
        async with SyndrWebSocket(scenario.sim.ws_url, credentials=scenario.account.credentials) as ws:
            await ws.start()
            if method == "public/auth":
                params = {"api_key": scenario.account.credentials.api_key,
                          "api_secret": scenario.account.credentials.api_secret}
            if method.endswith("/unsubscribe"):
                await ws.call(method.replace("unsubscribe", "subscribe"), params)
            answer = await ws.call(method, params)
    else:
        client = scenario.http if method.startswith("private/") else scenario.public
        answer = await client.call(method, params)
    allowed = DEVIATIONS.get(name, {})
    found = [m for m in mismatches(example["result"], answer.result, "$", KEYED_BY_DATA.get(name, []))
             if m.split(":")[0] not in allowed]
    assert not found, "\n".join(found)
    assert answer.us_in is not None and answer.us_out is not None and answer.us_diff == answer.us_out - answer.us_in


def test_every_documented_method_has_a_conformance_case() -> None:
    from portico.venues.syndr.constants import PRIVATE_METHODS, PUBLIC_METHODS

    covered = {load(f"{name}.request")["method"] for name in PAIRS}
    # No example response in the document: buy/sell ("{}" / none), register_signing_key's request,
    # and the methods the document only names (currencies, index names, l3 contracts) or this project adds.
    uncovered_by_document = {"private/buy", "private/sell", "public/register_signing_key", "public/get_currencies",
                             "public/get_index_price_names", "public/get_l3_contracts",
                             "public/get_signing_key_nonces"}
    assert set(PUBLIC_METHODS) | set(PRIVATE_METHODS) - uncovered_by_document <= covered | uncovered_by_document


# --------------------------------------------------------------------------- notifications

NOTIFICATION_CHANNELS = {
    "channel.book.raw": "book.ETH-PERP.15.raw",
    "channel.book.duration": "book.ETH-PERP.15.100ms",
    "channel.ticker": "ticker.ETH-PERP",
    "channel.trades.raw": "trades.ETH-PERP.raw",
    "channel.quotes": "quotes.ETH-PERP",
    "channel.user.fills": "user.fills.ETH-PERP",
    "channel.user.fills.ALL": "user.fills.ALL",
    "channel.user.orders.raw": "user.orders.ETH-PERP.raw",
    "channel.user.orders.ALL.raw": "user.orders.ALL.raw",
    "channel.user.positions": "user.positions",
    "channel.user.transactions": "user.transactions",
    "channel.user.bursts": "user.bursts.ETH-PERP",
    "channel.user.bursts.ALL": "user.bursts.ALL",
}

# Where the simulator's notifications knowingly differ from an example, and why.
_AS_STRING = "a decimal string, so that no price or amount ever passes through a float"
_ORDER_DECIMALS = ("price", "average_price", "trigger_price", "original_amount", "amount", "unfilled_amount",
                   "filled_amount", "contract_size", "salt")
NOTIFICATION_DEVIATIONS: dict[str, dict[str, str]] = {
    # The example is for ETH-PERP, but the table says these are "only for option".
    "channel.quotes": {
        **{f"$.best_{side}_{greek}": "only for options, as the table says"
           for side in ("bid", "ask") for greek in ("iv", "delta")},
        **{f"$.best_{side}_{what}": f"{_AS_STRING} (example and table say number)"
           for side in ("bid", "ask") for what in ("price", "amount")},
    },
    # user.fills: the table says string for price and amount (the example shows numbers).
    **{name: {f"$.{p}": _AS_STRING for p in ("price", "amount", "contract_size", "salt")}
       for name in ("channel.user.fills", "channel.user.fills.ALL")},
    # user.orders: the example shows numbers; the order tables of buy/edit/cancel say string.
    **{name: {f"$.order.{p}": _AS_STRING for p in _ORDER_DECIMALS}
       for name in ("channel.user.orders.raw", "channel.user.orders.ALL.raw")},
    "channel.user.positions": {f"$.fills_manager.{p}": _AS_STRING
                               for p in ("latest_size", "latest_average_price", "latest_realized_pnl")},
    # The channels' tables type the timestamp as a number (the examples show a string): the table is followed.
    **{name: {"$.timestamp": "the table says integer / number milliseconds"}
       for name in ("channel.ticker", "channel.book.raw", "channel.book.duration")},
}


async def test_every_channel_notifies_in_the_example_shape(scenario: Scenario) -> None:
    async with SyndrWebSocket(scenario.sim.ws_url, credentials=scenario.account.credentials) as ws:
        await ws.start()
        subscriptions = {name: await ws.subscribe([channel]) for name, channel in NOTIFICATION_CHANNELS.items()}
        await scenario.http.call("private/buy", scenario.account.order(
            "ETH-PERP", "buy", "0.01", str(scenario.best_ask + 50), time_in_force="IOC"))
        scenario.sim.notifier.burst(scenario.account.address, "ETH-PERP")
        problems: list[str] = []
        for name, subscription in subscriptions.items():
            example = load(f"{name}.notification")
            event = await asyncio.wait_for(anext(subscription), 5)
            if not isinstance(event, Message):  # the only event with `data`
                problems.append(f"{name}: first event is {event!r}")
                continue
            allowed = NOTIFICATION_DEVIATIONS.get(name, {})
            problems += [f"{name} {m}" for m in mismatches(example["params"]["data"], event.data, "$", [],
                                                           require_items=False)
                         if m.split(":")[0] not in allowed]
            sent_method = json.loads(event.raw)["method"]
            if sent_method != example["method"]:
                problems.append(f"{name}: envelope method {sent_method!r}, example {example['method']!r}")
    assert not problems, "\n".join(problems)


async def test_user_trades_honour_the_documents_count_offset_and_window(scenario: Scenario) -> None:
    """count / offset / start_timestamp / end_timestamp of get_user_trades_* (seconds), as the examples send them."""
    call = scenario.http.call
    for _ in range(2):  # two fills of our own against the market maker
        await call("private/buy", scenario.account.order("ETH-PERP", "buy", "0.01", order_type="market",
                                                         time_in_force="IOC"))
    window = {"start_timestamp": 0, "end_timestamp": int(time.time()) + 1}
    everything = (await call("private/get_user_trades_by_kind",
                             {"kind": "any", "sort_by": "DESC", "count": 1000, **window})).result
    assert len(everything) >= 2
    first = (await call("private/get_user_trades_by_kind",
                        {"kind": "any", "sort_by": "DESC", "count": 1, **window})).result
    second = (await call("private/get_user_trades_by_kind",
                         {"kind": "any", "sort_by": "DESC", "count": 1, "offset": 1, **window})).result
    assert [t["id"] for t in first + second] == [t["id"] for t in everything[:2]]
    for method, extra in (("private/get_user_trades_by_kind", {"kind": "any"}),
                          ("private/get_user_trades_by_instrument", {"instrument_name": "ETH-PERP"})):
        for required in ("count", "start_timestamp", "end_timestamp"):  # the document marks them required
            params = {**extra, "count": 10, **window}
            del params[required]
            with pytest.raises(SyndrInvalidRequest, match=required):
                await call(method, params)
    long_ago = (await call("private/get_user_trades_by_instrument", {
        "instrument_name": "ETH-PERP", "count": 10, "start_timestamp": 1731222656, "end_timestamp": 1732000257})).result
    assert long_ago == []


# --------------------------------------------------------------------------- table rows the examples do not show
#
# The seeds' README: "the parameter and response tables after each example are what matter". Each test below
# quotes the rows (line numbers of /work/shared/seeds/002_1080faa2c7e60ae3.txt; its arrows written `>`) the simulator
# once missed.


def _signed_order(account: SyndrAccount, price: str, *, expiration: int, salt: int) -> dict[str, Any]:
    """private/buy params for a post-only ETH-PERP buy with this exact `expiration`, signed by the account."""
    now_ms = int(time.time() * 1000)
    data = typed_data.order_typed_data(
        verifying_contract=account.orderbook_address, account=account.address,
        instrument_id=account.instrument_ids["ETH-PERP"], is_buy=True, order_type=int(typed_data.OrderType.LIMIT),
        time_in_force=int(typed_data.TimeInForce.GTC), post_only=True, reduce_only=False, price=Decimal(price),
        amount=Decimal("0.01"), salt=salt, expiration=expiration, timestamp=now_ms)
    return {"order_type": "limit", "time_in_force": "GTC", "post_only": True, "reduce_only": False,
            "instrument_name": "ETH-PERP", "amount": "0.01", "price": price, "timestamp": now_ms,
            "expiration": expiration, "salt": salt, "signature": sign(account.signing_key, data)}


async def test_an_order_expiration_is_in_milliseconds_only(scenario: Scenario) -> None:
    """`expiration` is epoch milliseconds, never seconds read by magnitude.

    8396 (user.fills):    > expiration number time in milliseconds after which trade will expire if not executed
    8922 (user.orders):   > > expiration number The timestamp of the order creation(milliseconds since the Unix epoch)
    2349 / 2586 (private/buy and private/sell examples): "expiration": 1718133868572 / 1708698000000
    4327, 4809 (order history and user trades examples): "expiration": 1729041366138 / 1729041366119
    (Only the user.orders / user.fills *examples* show seconds, e.g. 1722505445; their tables say milliseconds.)
    An expiration an hour ahead written in seconds is, in milliseconds, in January 1970: the order is expired.
    """
    price = str(scenario.best_bid - 100)
    in_seconds = int(time.time()) + 3600
    with pytest.raises(SyndrRejected) as refused:
        await scenario.http.call("private/buy", _signed_order(scenario.account, price, expiration=in_seconds,
                                                              salt=secrets.randbits(64)))
    assert refused.value.code == ErrorCode.ORDER_EXPIRED
    in_ms = int(time.time() * 1000) + 3_600_000
    placed = (await scenario.http.call("private/buy", _signed_order(scenario.account, price, expiration=in_ms,
                                                                    salt=secrets.randbits(64)))).result["order"]
    assert (placed["order_state"], placed["expiration"]) == ("open", in_ms)
    await scenario.http.call("private/cancel", {"instrument_name": "ETH-PERP", "order_id": placed["order_id"]})


async def test_channel_timestamps_are_the_tables_integers(scenario: Scenario) -> None:
    """The channels' timestamps are JSON numbers, as their tables type them (the examples show strings).

    7200 (ticker.{instrument_name}):           > timestamp integer Timestamp of ticker in milliseconds
    7457 (book.{instrument_name}.15.raw):      > timestamp number Timestamp of ticker in milliseconds
    7682 (book.{instrument_name}.15.duration): > timestamp integer Timestamp of ticker in milliseconds
    The methods' tables type theirs as strings, and so they stay:
    1929 (public/ticker):         timestamp string The timestamp of the server response.
    1516 (public/get_order_book): > timestamp string The timestamp of the market data.
    """
    channels = ("ticker.ETH-PERP", "book.ETH-PERP.15.raw", "book.ETH-PERP.15.100ms")
    async with SyndrWebSocket(scenario.sim.ws_url) as ws:
        await ws.start()
        subscriptions = {channel: await ws.subscribe([channel]) for channel in channels}
        await scenario.resting_order()  # a book change, hence a ticker change, whatever the market maker does
        for channel, subscription in subscriptions.items():
            event = await asyncio.wait_for(anext(subscription), 5)
            assert isinstance(event, Message), f"{channel}: first event is {event!r}"
            stamp = json.loads(event.raw)["params"]["data"]["timestamp"]
            assert type(stamp) is int and stamp > 10**12, f"{channel}: timestamp {stamp!r}"
    for method in ("public/ticker", "public/get_order_book"):
        stamp = (await scenario.public.call(method, {"instrument_name": "ETH-PERP"})).result["timestamp"]
        assert type(stamp) is str and stamp.isdigit(), f"{method}: timestamp {stamp!r}"


async def test_user_trades_by_order_takes_the_documents_order_id_parameter(scenario: Scenario) -> None:
    """The order is named `order-id`, with a hyphen, in the table and in all five examples; `order_id` is not it.

    4779 (private/get_user_trades_by_order): order-id true string id of the order
    """
    trades = (await scenario.http.call("private/get_user_trades_by_order",
                                       {"order-id": scenario.filled_order_id})).result
    assert [t["incoming_order_id"] for t in trades] == [scenario.filled_order_id]
    with pytest.raises(SyndrInvalidRequest, match="order-id"):
        await scenario.http.call("private/get_user_trades_by_order", {"order_id": scenario.filled_order_id})


async def test_portfolio_margin_data_requires_the_tables_from(scenario: Scenario) -> None:
    """`from` is required: the simulator used to default it to the caller's account.

    6337 (private/get_portfolio_margin_data): from true string account address of the account
    6338:                                     currency true string currency in which portfolio margin needs to be ...
    """
    with pytest.raises(SyndrInvalidRequest, match="from"):
        await scenario.http.call("private/get_portfolio_margin_data", {"currency": "ETH"})
    answer = (await scenario.http.call("private/get_portfolio_margin_data",
                                       {"from": scenario.account.address, "currency": "ETH"})).result
    assert set(answer) >= {"future_loss_array", "futures_contingency", "options_contingency", "options_loss_array",
                           "total_loss_array"}


async def test_account_summary_requires_the_tables_timestamp(scenario: Scenario) -> None:
    """`timestamp` is required: the simulator used to default it to 0 (and the account service left it out).

    6535 (private/get_account_summary): timestamp true integer Current time in seconds
    """
    with pytest.raises(SyndrInvalidRequest, match="timestamp"):
        await scenario.http.call("private/get_account_summary", {})
    answer = (await scenario.http.call("private/get_account_summary", {"timestamp": int(time.time())})).result
    assert "equity" in answer


async def test_update_instrument_leverage_takes_the_tables_parameters(scenario: Scenario) -> None:
    """`instrument_id` and `updated_leverage` are required, and the leverage is an integer; the simulator used to
    take `instrument_name` / `leverage` instead (names the document never gives) and a fractional leverage string.

    3725: | `instrument_id`     | true         | string   | The unique ID of the instrument to update. |
    3726: | `updated_leverage`  | true         | integer  | The new leverage value to set for the instrument. |
    3588 (the example): "instrument_id": "1", "updated_leverage": 10
    """
    call = scenario.http.call
    ident = scenario.account.instrument_ids["ETH-PERP"]
    with pytest.raises(SyndrInvalidRequest, match="instrument_id"):
        await call("private/update_instrument_leverage", {"instrument_name": "ETH-PERP", "updated_leverage": 5})
    with pytest.raises(SyndrInvalidRequest, match="updated_leverage"):
        await call("private/update_instrument_leverage", {"instrument_id": str(ident), "leverage": 5})
    with pytest.raises(SyndrInvalidRequest, match="updated_leverage"):
        await call("private/update_instrument_leverage", {"instrument_id": str(ident), "updated_leverage": "5.0"})
    for instrument_id in (str(ident), ident):  # the example's string, and the id as get_instruments types it
        answer = await call("private/update_instrument_leverage",
                            {"instrument_id": instrument_id, "updated_leverage": 10})
        assert answer.result == {"success": 1}


async def test_api_keys_carry_the_tables_created_at_and_updated_at(scenario: Scenario) -> None:
    """The table names the key's times `created_at` / `updated_at` (integers); the example `createdAt` / `updatedAt`.
    Where the two disagree the simulator answers with both, as for public/register_signing_key; it gave only the
    example's.

    5989 (private/get_api_keys): >> created_at integer timestamp when api key was created
    5991:                        >> updated_at integer last updated timestamp of the api key.
    """
    keys = (await scenario.http.call("private/get_api_keys", {})).result["apiKeys"]
    assert keys
    for key in keys:
        for table, example in (("created_at", "createdAt"), ("updated_at", "updatedAt")):
            assert type(key.get(table)) is int, f"{table} missing or not an integer: {key.get(table)!r}"
            assert key[table] == key[example]


async def test_deactivate_api_key_without_the_key_is_an_invalid_request(scenario: Scenario) -> None:
    """The key to deactivate is a required parameter: leaving it out is INVALID_PARAMS naming it, as for any
    required parameter, not "api key not found" (the simulator looked up a key of None).

    6159 (private/deactivate_api_key): api-key true string api-key which needs to be deactivated
    6160:                              api_secret true string secret related to the given api key
    """
    created = (await scenario.http.call("private/create_api_key", {"scope": 2})).result
    with pytest.raises(SyndrInvalidRequest, match="api-key") as refused:
        await scenario.http.call("private/deactivate_api_key", {"api_secret": created["api_secret"]})
    assert refused.value.code == ErrorCode.INVALID_PARAMS
    await scenario.http.call("private/deactivate_api_key",
                             {"api-key": created["api_key"], "api_secret": created["api_secret"]})


async def test_supported_collaterals_answer_the_documents_get_on_the_method_path(scenario: Scenario) -> None:
    """All five examples of public/get_supported_collaterals send the JSON-RPC request with GET to the method's own
    path; the simulator answered that with 404.

    1938: curl --location --request GET 'https://dev-api.syndr.trade/api/v1/public/get_supported_collaterals' \\
    1961: response = requests.request("GET", url, headers=headers, data=payload)
    The request's method must be the path's: another one is refused, never run under the wrong name.
    """
    import aiohttp

    url = f"http://{scenario.sim.config.host}:{scenario.sim.port}/api/v1/public/get_supported_collaterals"
    body = json.dumps({"jsonrpc": "2.0", "id": 7365, "method": "public/get_supported_collaterals", "params": {}})
    async with aiohttp.ClientSession() as session:
        async with session.get(url, data=body, headers={"Content-Type": "application/json"}) as response:
            assert response.status == 200
            answer = await response.json()
        assert answer["id"] == 7365 and set(answer["result"]) >= {"USDT", "USDC", "DAI"}
        assert answer["result"] == (await scenario.public.call("public/get_supported_collaterals")).result
        other = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "public/get_instruments", "params": {"kind": "any"}})
        async with session.get(url, data=other, headers={"Content-Type": "application/json"}) as response:
            refused = await response.json()
    assert refused["error"]["code"] == ErrorCode.INVALID_REQUEST and "result" not in refused


async def test_register_signing_key_answers_what_the_documents_script_reads(scenario: Scenario) -> None:
    """The document's API Key Setup script posts snake_case params and reads five fields of the result; the table
    lists four of them and the simulator answered without `account`.

    325-329 (the script's params): "account", "signer_public_address", "expires_at" (a string),
                                   "signing_key_signature", "account_signature"
    362-366 (what it reads): response_data["result"].get("account"), .get("api_key"), .get("api_secret"),
                             .get("signer_public_address"), .get("tx_hash")
    458-461 (the table): api_key, api_secret, signer_public_address, tx_hash
    """
    from portico.runtime.secp256k1 import Secp256k1Key, generate_private_key

    account_key, signing_key = Secp256k1Key(generate_private_key()), Secp256k1Key(generate_private_key())
    public = scenario.public
    manager = models.parse_l3_contracts((await public.call("public/get_l3_contracts")).result)
    nonces = (await public.call("public/get_signing_key_nonces",
                                {"account": account_key.address, "signing_key": signing_key.address})).result
    expires_at = typed_data.SIGNING_KEY_NEVER_EXPIRES
    sign_key = typed_data.sign_key_typed_data(verifying_contract=manager.signing_keys_manager_address,
                                              account=account_key.address, nonce=nonces["verify_signing_key_nonce"])
    register_key = typed_data.register_signing_key_typed_data(
        verifying_contract=manager.signing_keys_manager_address, key=signing_key.address, expires_at=expires_at,
        nonce=nonces["signing_key_register_nonce"])
    result = (await public.call("public/register_signing_key", {
        "account": account_key.address, "signer_public_address": signing_key.address, "expires_at": str(expires_at),
        "signing_key_signature": sign(signing_key, sign_key), "account_signature": sign(account_key, register_key),
    })).result
    read = ("account", "api_key", "api_secret", "signer_public_address", "tx_hash")
    missing = [key for key in read if not (isinstance(result.get(key), str) and result[key])]
    assert not missing, f"the result lacks {missing}"  # names only: the result holds a secret
    assert result["account"].lower() == account_key.address.lower()
    assert result["signer_public_address"].lower() == signing_key.address.lower()
