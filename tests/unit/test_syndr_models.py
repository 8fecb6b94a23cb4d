"""Syndr wire models against every example the API document gives, plus the quirks and failures.

The fixtures are extracted from the document by scripts/extract_syndr_examples.py;
each one must be claimed by a parser in FIXTURES, so a new example in the
document cannot go untested.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from portico.venues.syndr import models as m
from portico.venues.syndr.errors import SyndrNotFound, SyndrProtocolError

RESOURCES = Path(__file__).resolve().parents[1] / "resources" / "syndr"
Parser = Callable[[bytes], object]


def result_of(method: str, expected: type | tuple[type, ...]) -> tuple[Parser, type | tuple[type, ...]]:
    """Parse a response fixture's envelope, then its result with the method's parser."""

    def parse(raw: bytes) -> object:
        return m.parse_result(method, m.parse_rpc_response(raw, where=method).result)

    return parse, expected


def request_of(method: str) -> tuple[Parser, type]:
    def parse(raw: bytes) -> object:
        request = m.parse_request(raw)
        assert request.method == method
        return request

    return parse, m.RpcRequest


def notification_of(expected: type) -> tuple[Parser, type]:
    return m.parse_notification, expected


def envelope(raw: bytes) -> object:
    return m.parse_rpc_response(raw)


FIXTURES: dict[str, tuple[Parser, type | tuple[type, ...]]] = {
    # Generic JSON-RPC envelope examples.
    "jsonrpc.request.json": request_of("public/ticker"),
    "jsonrpc.response.json": (envelope, m.RpcResponse),
    # Public methods.
    "public.auth.request.json": request_of("public/auth"),
    "public.auth.response.json": result_of("public/auth", m.AuthResult),
    "public.register_signing_key.response.json": result_of("public/register_signing_key", m.SigningKeyRegistration),
    "public.get_l3_contracts.request.json": request_of("public/get_l3_contracts"),
    "public.get_all_instrument_names.authentication.request.json": request_of("public/get_all_instrument_names"),
    "public.get_all_instrument_names.request.json": request_of("public/get_all_instrument_names"),
    "public.get_all_instrument_names.response.json": result_of("public/get_all_instrument_names", tuple),
    "public.get_trades.request.json": request_of("public/get_trades"),
    "public.get_trades.response.json": result_of("public/get_trades", tuple),
    "public.get_instruments.request.json": request_of("public/get_instruments"),
    "public.get_instruments.response.json": result_of("public/get_instruments", dict),
    "public.get_instruments_by_currency.request.json": request_of("public/get_instruments_by_currency"),
    "public.get_instruments_by_currency.response.json": result_of("public/get_instruments_by_currency", dict),
    "public.get_instrument.request.json": request_of("public/get_instrument"),
    "public.get_instrument.response.json": result_of("public/get_instrument", m.Instrument),
    "public.get_order_book.request.json": request_of("public/get_order_book"),
    "public.get_order_book.response.json": result_of("public/get_order_book", m.OrderBook),
    "public.get_tradingview_chart_data.request.json": request_of("public/get_tradingview_chart_data"),
    "public.get_tradingview_chart_data.response.json": result_of("public/get_tradingview_chart_data", tuple),
    "public.ticker.request.json": request_of("public/ticker"),
    "public.ticker.response.json": result_of("public/ticker", m.Ticker),
    "public.get_supported_collaterals.request.json": request_of("public/get_supported_collaterals"),
    "public.get_supported_collaterals.response.json": result_of("public/get_supported_collaterals", dict),
    "public.subscribe.request.json": request_of("public/subscribe"),
    "public.subscribe.response.json": result_of("public/subscribe", tuple),
    "public.unsubscribe.request.json": request_of("public/unsubscribe"),
    "public.unsubscribe.response.json": result_of("public/unsubscribe", tuple),
    # Trading.
    "private.buy.request.json": request_of("private/buy"),
    "private.sell.request.json": request_of("private/sell"),
    "private.edit.request.json": request_of("private/edit"),
    "private.edit.response.json": result_of("private/edit", m.Order),
    "private.cancel.request.json": request_of("private/cancel"),
    "private.cancel.response.json": result_of("private/cancel", m.Order),
    "private.cancel_all.request.json": request_of("private/cancel_all"),
    "private.cancel_all.response.json": result_of("private/cancel_all", int),
    "private.cancel_all_by_instrument.request.json": request_of("private/cancel_all_by_instrument"),
    "private.cancel_all_by_instrument.response.json": result_of("private/cancel_all_by_instrument", str),
    "private.update_instrument_leverage.request.json": request_of("private/update_instrument_leverage"),
    "private.update_instrument_leverage.response.json": result_of("private/update_instrument_leverage",
                                                                  m.LeverageUpdate),
    "private.get_open_orders.request.json": request_of("private/get_open_orders"),
    "private.get_open_orders.response.json": result_of("private/get_open_orders", tuple),
    "private.get_positions.request.json": request_of("private/get_positions"),
    "private.get_positions.response.json": result_of("private/get_positions", tuple),
    "private.get_order_history_by_kind.request.json": request_of("private/get_order_history_by_kind"),
    "private.get_order_history_by_kind.response.json": result_of("private/get_order_history_by_kind", tuple),
    "private.get_order_history_by_instrument.request.json": request_of("private/get_order_history_by_instrument"),
    "private.get_order_history_by_instrument.response.json": result_of("private/get_order_history_by_instrument",
                                                                       tuple),
    "private.get_user_trades_by_order.request.json": request_of("private/get_user_trades_by_order"),
    "private.get_user_trades_by_order.response.json": result_of("private/get_user_trades_by_order", tuple),
    "private.get_user_trades_by_instrument.request.json": request_of("private/get_user_trades_by_instrument"),
    "private.get_user_trades_by_instrument.response.json": result_of("private/get_user_trades_by_instrument", tuple),
    "private.get_user_trades_by_kind.request.json": request_of("private/get_user_trades_by_kind"),
    "private.get_user_trades_by_kind.response.json": result_of("private/get_user_trades_by_kind", tuple),
    # Account management.
    "private.get_deposits.request.json": request_of("private/get_deposits"),
    "private.get_deposits.response.json": result_of("private/get_deposits", dict),
    "private.create_api_key.request.json": request_of("private/create_api_key"),
    "private.create_api_key.response.json": result_of("private/create_api_key", m.CreatedApiKey),
    "private.get_api_keys.request.json": request_of("private/get_api_keys"),
    "private.get_api_keys.response.json": result_of("private/get_api_keys", tuple),
    "private.deactivate_api_key.request.json": request_of("private/deactivate_api_key"),
    "private.deactivate_api_key.response.json": result_of("private/deactivate_api_key", m.ApiKeyDeactivation),
    "private.get_portfolio_margin_data.request.json": request_of("private/get_portfolio_margin_data"),
    "private.get_portfolio_margin_data.response.json": result_of("private/get_portfolio_margin_data",
                                                                 m.PortfolioMarginData),
    "private.get_account_summary.request.json": request_of("private/get_account_summary"),
    "private.get_account_summary.response.json": result_of("private/get_account_summary", m.AccountSummary),
    "private.toggle_portfolio_margin.request.json": request_of("private/toggle_portfolio_margin"),
    "private.toggle_portfolio_margin.response.json": result_of("private/toggle_portfolio_margin",
                                                               m.PortfolioMarginToggle),
    "private.subscribe.request.json": request_of("private/subscribe"),
    "private.subscribe.response.json": result_of("private/subscribe", tuple),
    "private.unsubscribe.request.json": request_of("private/unsubscribe"),
    "private.unsubscribe.response.json": result_of("private/unsubscribe", tuple),
    # Channels: the subscription request of each section, then its notification.
    "channel.ticker.subscribe.request.json": request_of("public/subscribe"),
    "channel.ticker.notification.json": notification_of(m.Ticker),
    "channel.book.raw.subscribe.request.json": request_of("public/subscribe"),
    "channel.book.raw.notification.json": notification_of(m.BookChange),
    "channel.book.duration.subscribe.request.json": request_of("public/subscribe"),
    "channel.book.duration.notification.json": notification_of(m.BookChange),
    "channel.trades.raw.subscribe.request.json": request_of("public/subscribe"),
    "channel.trades.raw.notification.json": notification_of(m.Trade),
    "channel.quotes.subscribe.request.json": request_of("public/subscribe"),
    "channel.quotes.notification.json": notification_of(m.Quote),
    "channel.user.fills.subscribe.request.json": request_of("private/subscribe"),
    "channel.user.fills.notification.json": notification_of(m.UserTrade),
    "channel.user.fills.ALL.subscribe.request.json": request_of("private/subscribe"),
    "channel.user.fills.ALL.notification.json": notification_of(m.UserTrade),
    "channel.user.orders.raw.subscribe.request.json": request_of("private/subscribe"),
    "channel.user.orders.raw.notification.json": notification_of(m.OrderUpdate),
    "channel.user.orders.ALL.raw.subscribe.request.json": request_of("private/subscribe"),
    "channel.user.orders.ALL.raw.notification.json": notification_of(m.OrderUpdate),
    "channel.user.positions.subscribe.request.json": request_of("private/subscribe"),
    "channel.user.positions.notification.json": notification_of(m.PositionUpdate),
    "channel.user.bursts.ALL.subscribe.request.json": request_of("private/subscribe"),
    "channel.user.bursts.ALL.notification.json": notification_of(m.Burst),
    "channel.user.bursts.subscribe.request.json": request_of("private/subscribe"),
    "channel.user.bursts.notification.json": notification_of(m.Burst),
    "channel.user.transactions.subscribe.request.json": request_of("private/subscribe"),
    "channel.user.transactions.notification.json": notification_of(m.TransactionUpdate),
}

FIXTURE_FILES = sorted(path.name for path in RESOURCES.glob("*.json"))
TIME_FIELDS = {"timestamp", "time", "creation_timestamp", "last_update_timestamp", "last_updated_time",
               "created_at", "updated_at", "expiration"}


def fixture(name: str) -> bytes:
    return (RESOURCES / name).read_bytes()


def parsed(name: str) -> object:
    parser, _ = FIXTURES[name]
    value = parser(fixture(name))
    return value.data if isinstance(value, m.Notification) else value


def models_in(value: object) -> list[Any]:
    """Every dataclass instance reachable from `value` (through tuples, dicts and mappings)."""
    found: list[Any] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if dataclasses.is_dataclass(item) and not isinstance(item, type):
            found.append(item)
            stack.extend(getattr(item, f.name) for f in dataclasses.fields(item))
        elif isinstance(item, tuple | list):
            stack.extend(item)
        elif isinstance(item, Mapping):
            stack.extend(item.values())
    return found


# --------------------------------------------------------------------------- every fixture


def test_fixtures_exist() -> None:
    assert len(FIXTURE_FILES) >= 90, f"expected the extracted examples in {RESOURCES}"


@pytest.mark.parametrize("name", FIXTURE_FILES)
def test_every_fixture_parses_through_its_model(name: str) -> None:
    assert name in FIXTURES, f"{name} has no parser in FIXTURES: add one"
    parser, expected = FIXTURES[name]
    value = parser(fixture(name))
    if isinstance(value, m.Notification):
        value = value.data
    assert isinstance(value, expected)


def test_no_parser_without_a_fixture() -> None:
    assert set(FIXTURES) <= set(FIXTURE_FILES), sorted(set(FIXTURES) - set(FIXTURE_FILES))


@pytest.mark.parametrize("name", [n for n in FIXTURE_FILES if not n.endswith(".request.json")])
def test_money_is_decimal_and_times_are_int_ms(name: str) -> None:
    for model in models_in(parsed(name)):
        for f in dataclasses.fields(model):
            value = getattr(model, f.name)
            assert not isinstance(value, float), f"{type(model).__name__}.{f.name} is a float"
            if "Decimal" in str(f.type) and value is not None:
                if isinstance(value, tuple):
                    flat = [x for level in value for x in (level if isinstance(level, tuple) else (level,))]
                    assert all(isinstance(x, Decimal) for x in flat), f"{type(model).__name__}.{f.name}"
                elif isinstance(value, Mapping):
                    assert all(isinstance(x, Decimal) for x in value.values()), f"{type(model).__name__}.{f.name}"
                else:
                    assert isinstance(value, Decimal), f"{type(model).__name__}.{f.name} is {value!r}"
            if f.name in TIME_FIELDS and value is not None:
                assert type(value) is int, f"{type(model).__name__}.{f.name} is {value!r}"


def test_models_are_frozen_and_slotted() -> None:
    book = parsed("public.get_order_book.response.json")
    assert isinstance(book, m.OrderBook)
    with pytest.raises(dataclasses.FrozenInstanceError):
        book.mark_price = Decimal(1)  # type: ignore[misc]
    assert not hasattr(book, "__dict__")


def test_every_documented_method_has_a_parser() -> None:
    from portico.venues.syndr.constants import PRIVATE_METHODS, PUBLIC_METHODS

    undocumented = {"public/get_signing_key_nonces"}  # this project's, not the document's
    assert (set(PUBLIC_METHODS) | set(PRIVATE_METHODS)) - undocumented <= set(m.RESULT_PARSERS)


# --------------------------------------------------------------------------- values and the document's quirks


def test_envelope_keeps_microseconds_and_offers_milliseconds() -> None:
    response = m.parse_rpc_response(fixture("public.get_order_book.response.json"))
    assert (response.id, response.us_in, response.us_out, response.us_diff) == (7365, 1732017186722841,
                                                                                1732017186723962, 1121)
    assert response.in_ms == 1732017186722 and response.out_ms == 1732017186723
    assert response.error is None


def test_order_book_levels_and_string_timestamp() -> None:
    book = parsed("public.get_order_book.response.json")
    assert isinstance(book, m.OrderBook)
    assert book.asks == ((Decimal("3114.9"), Decimal("0.821")),)
    assert book.bids == ((Decimal("3110"), Decimal("0.02")),)
    assert book.timestamp == 1732017185737
    assert book.stats is not None and book.stats.price_change == Decimal("3113.2497332785")


def test_trades_iso_timestamps_become_ms() -> None:
    trades = parsed("public.get_trades.response.json")
    assert isinstance(trades, tuple)
    assert trades[0].timestamp == 1731139197282  # "2024-11-09T07:59:57.282Z"
    assert trades[0].price == Decimal("3029.8")


def test_candles_from_json_numbers_are_exact_decimals() -> None:
    candles = parsed("public.get_tradingview_chart_data.response.json")
    assert isinstance(candles, tuple)
    assert candles[0].close == Decimal("2575.1") and str(candles[0].close) == "2575.1"
    assert candles[0].time == 1729682280000 and candles[0].last_updated_time == 1729682280003


def test_instruments_keyed_by_name() -> None:
    instruments = parsed("public.get_instruments.response.json")
    assert isinstance(instruments, dict)
    eth = instruments["ETH-PERP"]
    assert (eth.id, eth.tick_size, eth.maker_commission, eth.is_active) == (3, Decimal("0.1"), Decimal("-0.000025"),
                                                                           True)
    assert m.parse_instruments([orjson.loads(fixture("public.get_instrument.response.json"))["result"]])["ETH-PERP"]


def test_ticker_with_and_without_greeks() -> None:
    ticker = parsed("public.ticker.response.json")
    assert isinstance(ticker, m.Ticker)
    assert ticker.greeks is None and ticker.stats is not None and ticker.stats.volume_24h == Decimal("15589.6814")
    option = m.parse_ticker({"instrument_name": "ETH-27SEP24-2400-C", "timestamp": 1722849361329, "mark_price": "12.5",
                             "delta": "0.41", "vega": "1.2", "best_bid_iv": "0.55", "is_call": True})
    assert option.greeks == m.Greeks(delta=Decimal("0.41"), vega=Decimal("1.2"))
    assert option.best_bid_iv == Decimal("0.55") and option.is_call is True


def test_edit_result_is_unwrapped_and_orders_normalised() -> None:
    order = parsed("private.edit.response.json")
    assert isinstance(order, m.Order)
    assert order.order_id == "e50464e8-16d0-4c3d-aac5-77100359e34e"
    assert (order.price, order.amount, order.unfilled_amount) == (Decimal("2200"), Decimal("1"), Decimal("1"))
    assert order.creation_timestamp == 1702383895830


def test_order_update_seconds_and_numbers() -> None:
    update = parsed("channel.user.orders.raw.notification.json")
    assert isinstance(update, m.OrderUpdate)
    assert update.update_type == "open"
    order = update.order
    assert order.creation_timestamp == 1722419045000  # sent in seconds
    assert order.contract_size == Decimal("0.001") and order.price == Decimal("2500")
    assert order.salt == 78420 and order.creator == "0x83322a4feB99aE47AFC4aA93DD85a4ae71e7B9eB"


def test_order_history_account_alias_and_string_salt() -> None:
    orders = parsed("private.get_order_history_by_kind.response.json")
    assert isinstance(orders, tuple)
    assert orders[0].creator == "0x83322a4feb99ae47afc4aa93dd85a4ae71e7b9eb"
    assert orders[0].salt == 396049 and orders[0].expiration == 1729041366138


def test_open_orders_documented_nesting_is_flattened() -> None:
    order = orjson.loads(fixture("private.cancel.response.json"))["result"]
    nested = {"ETH": {"perpetual": {"ETH-PERP": {order["order_id"]: order}}}}
    orders = m.parse_orders(nested, where="private/get_open_orders")
    assert [o.order_id for o in orders] == [order["order_id"]]


def test_orders_with_their_trades() -> None:
    order = dict(orjson.loads(fixture("private.cancel.response.json"))["result"])
    order["Trades"] = [{"id": "t1", "instrument_name": "ETH-PERP", "price": "2200", "side": "buy", "amount": "0.5",
                        "timestamp": 1702383895830}]
    parsed_order = m.parse_order({"Order": order}, where="private/buy")
    assert parsed_order.trades == (m.Trade(id="t1", instrument_name="ETH-PERP", side="buy", price=Decimal("2200"),
                                           amount=Decimal("0.5"), timestamp=1702383895830),)


def test_user_trades_single_object_and_maker_taker_orders() -> None:
    by_kind = parsed("private.get_user_trades_by_kind.response.json")
    assert isinstance(by_kind, tuple) and len(by_kind) == 1
    trade = by_kind[0]
    assert trade.maker_order is not None and trade.maker_order.order_state == "filled"
    assert trade.taker_order is not None and trade.taker_order.direction == "sell"
    assert trade.expiration == 1729041366119 and trade.salt == 471058
    by_instrument = parsed("private.get_user_trades_by_instrument.response.json")
    assert isinstance(by_instrument, tuple) and by_instrument[0].maker_order is None


def test_user_fills_numbers_and_txn_hash_alias() -> None:
    fill = parsed("channel.user.fills.notification.json")
    assert isinstance(fill, m.UserTrade)
    assert (fill.price, fill.amount, fill.contract_size) == (Decimal("2100"), Decimal("1"), Decimal("0.001"))
    assert fill.tx_hash == "" and fill.expiration == 1722509314000 and fill.instrument_id == 527


def test_positions_and_position_updates() -> None:
    positions = parsed("private.get_positions.response.json")
    assert isinstance(positions, tuple)
    position = positions[0]
    assert (position.size, position.unrealized_pnl, position.trade_fee) == (Decimal("8"), Decimal("3685.46026056"),
                                                                            Decimal("77205000000"))
    assert position.last_update_timestamp == 1731171867595
    update = parsed("channel.user.positions.notification.json")
    assert isinstance(update, m.PositionUpdate)
    assert update.fills_manager == m.FillsManager(latest_size=Decimal(20), latest_average_price=Decimal(12),
                                                  latest_realized_pnl=Decimal(200))
    documented = m.parse_position_update({"instrument_name": "ETH-PERP", "underlying": "ETH",
                                          "instrument_kind": "perpetual",
                                          "updated_position": {"direction": "buy", "size": "2", "average_price": "3000",
                                                               "size_in_base": "0.002", "initial_margin": "60"}})
    assert documented.position is not None
    assert documented.position.instrument_name == "ETH-PERP" and documented.position.size_in_base == Decimal("0.002")


def test_account_data() -> None:
    summary = parsed("private.get_account_summary.response.json")
    assert isinstance(summary, m.AccountSummary)
    assert summary.collateral == {"USDT": Decimal("4000")} and summary.delta_total == {"ETHUSD": Decimal("8")}
    assert summary.updated_at == 915915000  # the example echoes its request's "timestamp" (seconds)
    deposits = parsed("private.get_deposits.response.json")
    assert isinstance(deposits, dict)
    assert deposits["USDT"][0].timestamp == 1729685765000 and deposits["USDT"][0].amount == Decimal("4000")
    margin = parsed("private.get_portfolio_margin_data.response.json")
    assert isinstance(margin, m.PortfolioMarginData) and len(margin.total_loss_array) == 11


def test_api_keys_both_spellings() -> None:
    keys = parsed("private.get_api_keys.response.json")
    assert isinstance(keys, tuple) and len(keys) == 3
    assert keys[0].created_at == 1729167008000 and keys[0].scope == 1
    snake = m.parse_api_keys({"apiKeys": [{"api_key": "k", "scope": 2, "created_at": 1729167008123}]})
    assert snake[0].created_at == 1729167008123


def test_register_signing_key_both_spellings() -> None:
    example = parsed("public.register_signing_key.response.json")
    assert example == m.SigningKeyRegistration(api_key=".....", api_secret=".....", signing_key="0x0..",
                                               tx_hash="0x0...")
    table = m.parse_register_signing_key({"api_key": "k", "api_secret": "s", "signer_public_address": "0xabc",
                                          "tx_hash": "0xdef", "account": "0x1"})
    assert table == m.SigningKeyRegistration(api_key="k", api_secret="s", signing_key="0xabc", tx_hash="0xdef",
                                             account="0x1")


def test_undocumented_results() -> None:
    assert m.parse_l3_contracts({"signing_keys_manager_address": "0xabc"}) == m.L3Contracts(
        signing_keys_manager_address="0xabc")
    contracts = m.parse_l3_contracts({"signing_keys_manager_address": "0xabc", "orderbook_address": "0xdef",
                                      "chain_id": 421614})
    assert contracts.orderbook_address == "0xdef" and contracts.chain_id == 421614
    assert m.parse_currencies(["BTC", "ETH"]) == ("BTC", "ETH")
    assert m.parse_currencies([{"currency": "USDT"}]) == ("USDT",)
    assert m.parse_index_price_names(["BTC/USD", "ETH/USD"]) == ("BTC/USD", "ETH/USD")
    assert m.parse_result("public/get_index_price_names", [{"name": "DAI/USD"}]) == ("DAI/USD",)


def test_book_change_keeps_strings_and_decimals() -> None:
    raw = fixture("channel.book.raw.notification.json")
    change = m.parse_book_change(raw)
    assert change.bids == ((Decimal("2332.6"), Decimal("5")),) and change.asks == ()
    assert change.bids_raw == (("2332.6", "5"),)
    assert (change.type, change.change_id, change.previous_change_id) == ("change", 2, 1)
    assert change.timestamp == 1722850180027 and change.channel == "book.ETH-PERP.15.raw"
    assert m.parse_notification(raw).data == change
    periodic = m.parse_book_change(fixture("channel.book.duration.notification.json"))
    assert periodic.change_id is None and periodic.type is None


def test_book_change_removal_and_spelling() -> None:
    frame = orjson.dumps({"jsonrpc": "2.0", "method": "subscription", "params": {
        "channel": "book.ETH-PERP.15.raw",
        "data": {"type": "change", "bids": [["3110.0", "0"]], "asks": [["3114.9", "0.821"], ["3115", "1e-3"]],
                 "change_id": 7, "previous_change_id": 6, "instrument_name": "ETH-PERP", "timestamp": 1722850180027}}})
    change = m.parse_book_change(frame)
    assert change.bids == ((Decimal("3110.0"), Decimal(0)),)
    assert change.bids_raw == (("3110.0", "0"),)  # the spelling the checksum needs
    assert change.asks[1] == (Decimal("3115"), Decimal("0.001"))
    spelled = orjson.loads(frame)
    spelled["params"]["data"]["asks"] = [["3.1149E+3", "8.21e-1"], ["3115", "1E-03"]]
    assert m.parse_book_change(orjson.dumps(spelled)).asks == ((Decimal("3114.9"), Decimal("0.821")),
                                                                (Decimal(3115), Decimal("0.001")))


def test_notification_numbers_are_exact() -> None:
    frame = (b'{"jsonrpc":"2.0","method":"subscriptions","params":{"channel":"quotes.ETH-PERP","data":'
             b'{"instrument_name":"ETH-PERP","timestamp":1681659457383,"best_bid_price":2093.43999999000123456789,'
             b'"best_ask_price":null}}}')
    quote = m.parse_notification(frame).data
    assert isinstance(quote, m.Quote)
    assert quote.best_bid_price == Decimal("2093.43999999000123456789") and quote.best_ask_price is None
    iv = parsed("channel.quotes.notification.json")
    assert isinstance(iv, m.Quote) and str(iv.best_bid_iv) == "1.1"


def test_both_notification_methods_are_accepted() -> None:
    trade = m.parse_notification(fixture("channel.trades.raw.notification.json"))
    assert trade.method == "subscriptions" and isinstance(trade.data, m.Trade)
    assert trade.data.amount == Decimal("0.1")  # the channel's "size"
    ticker = m.parse_notification(fixture("channel.ticker.notification.json"))
    assert ticker.method == "subscription" and isinstance(ticker.data, m.Ticker)
    assert ticker.data.stats is not None and ticker.data.stats.volume_usd == Decimal("333027.3492")


def test_error_response_unwraps_to_the_mapped_exception() -> None:
    response = m.parse_rpc_response(b'{"jsonrpc":"2.0","id":4,"error":{"code":11044,"message":"order_not_found"}}')
    assert response.error == m.RpcErrorObject(code=11044, message="order_not_found")
    with pytest.raises(SyndrNotFound, match="order_not_found"):
        response.unwrap("private/cancel")


def test_to_ms_scales_by_magnitude() -> None:
    assert m.to_ms(1722419045) == 1722419045000
    assert m.to_ms(1722419045123) == 1722419045123
    assert m.to_ms(1731144056368324) == 1731144056368
    assert m.to_ms(1731144056368324123) == 1731144056368
    assert m.to_ms(0) == 0


# --------------------------------------------------------------------------- failures name what is wrong


def book_frame(data: dict[str, Any], *, method: str = "subscription", channel: str = "book.ETH-PERP.15.raw") -> bytes:
    base = {"type": "change", "bids": [["1", "2"]], "asks": [], "instrument_name": "ETH-PERP",
            "timestamp": "1722850180027", "change_id": 2, "previous_change_id": 1}
    return orjson.dumps({"jsonrpc": "2.0", "method": method, "params": {"channel": channel, "data": base | data}})


@pytest.mark.parametrize(("data", "field"), [
    ({"bids": [["1", 2]]}, "bids"),  # a number, not a decimal string
    ({"bids": [[1.5, "2"]]}, "bids"),
    ({"asks": [["1", "2", "3"]]}, "asks"),
    ({"asks": [["NaN", "2"]]}, "asks"),
    ({"asks": [["1", "-Infinity"]]}, "asks"),
    ({"asks": [["\u0663", "2"]]}, "asks"),  # an Arabic-Indic 3, which Decimal() would take
    ({"asks": [["1_000", "2"]]}, "asks"),
    ({"asks": [["-", "2"]]}, "asks"),
    ({"asks": [["1.2.3", "2"]]}, "asks"),
    ({"asks": [["1", "-2"]]}, "asks"),  # levels are never negative
    ({"bids": [["-1", "2"]]}, "bids"),
    ({"bids": [["+1", "2"]]}, "bids"),
    ({"bids": [["1e999999999", "2"]]}, "bids"),  # Decimal() takes it; formatting it would take a gigabyte
    ({"asks": [["1", "2E100"]]}, "asks"),  # an exponent of at most two digits
    ({"asks": [["1", "2e-"]]}, "asks"),
    ({"bids": [["", "2"]]}, "bids"),
    ({"bids": "oops"}, "bids"),
    ({"bids": None}, "bids"),
    ({"timestamp": "yesterday"}, "timestamp"),
    ({"instrument_name": 5}, "instrument_name"),
    ({"change_id": "two"}, "change_id"),
    ({"change_id": "1" * 5000}, "change_id"),  # int() refuses it (ValueError, not the venue's protocol error)
])
def test_book_change_rejects_malformed_levels(data: dict[str, Any], field: str) -> None:
    with pytest.raises(SyndrProtocolError, match=field):
        m.parse_book_change(book_frame(data))


@pytest.mark.parametrize("token", [b'"' + b"1" * 5000 + b'"', b"1e999999999", b"1e100"])
def test_an_integer_too_long_to_be_one_of_the_venues_is_a_protocol_error(token: bytes) -> None:
    """A 5,000-digit string made int() raise ValueError (past the parser's protocol error, out of the caller's
    handling); an exponent would have built a number of a billion digits."""
    response = orjson.loads(fixture("public.get_order_book.response.json"))
    response["result"]["timestamp"] = orjson.Fragment(token)
    with pytest.raises(SyndrProtocolError, match="timestamp"):
        m.parse_order_book(m.parse_rpc_response(orjson.dumps(response), where="public/get_order_book").result)


def test_book_change_rejects_missing_side_and_wrong_frames() -> None:
    frame = orjson.loads(book_frame({}))
    del frame["params"]["data"]["asks"]
    with pytest.raises(SyndrProtocolError, match="'asks' is missing"):
        m.parse_book_change(orjson.dumps(frame))
    with pytest.raises(SyndrProtocolError, match="method"):
        m.parse_book_change(book_frame({}, method="private/buy"))
    with pytest.raises(SyndrProtocolError, match="channel"):
        m.parse_book_change(book_frame({}, channel="ticker.ETH-PERP"))
    with pytest.raises(SyndrProtocolError, match="JSON"):
        m.parse_book_change(b"{not json")
    with pytest.raises(SyndrProtocolError, match="params"):
        m.parse_book_change(b'{"jsonrpc":"2.0","id":1,"result":[]}')


def without(name: str, *path: str) -> Any:
    """A fixture's result with the field at `path` removed."""
    result = json.loads(fixture(name))["result"]
    node = result
    for key in path[:-1]:
        node = node[int(key)] if isinstance(node, list) else node[key]
    del node[path[-1]]
    return result


@pytest.mark.parametrize(("method", "fixture_name", "path"), [
    ("public/get_instrument", "public.get_instrument.response.json", ("tick_size",)),
    ("public/get_instruments", "public.get_instruments.response.json", ("ETH-PERP", "contract_size")),
    ("public/get_order_book", "public.get_order_book.response.json", ("bids",)),
    ("public/ticker", "public.ticker.response.json", ("mark_price",)),
    ("public/get_trades", "public.get_trades.response.json", ("1", "price")),
    ("public/get_tradingview_chart_data", "public.get_tradingview_chart_data.response.json", ("0", "close")),
    ("public/get_supported_collaterals", "public.get_supported_collaterals.response.json", ("USDC", "decimals")),
    ("private/cancel", "private.cancel.response.json", ("order_id",)),
    ("private/get_positions", "private.get_positions.response.json", ("0", "size")),
    ("private/get_user_trades_by_kind", "private.get_user_trades_by_kind.response.json",
     ("maker_order", "direction")),
    ("private/get_deposits", "private.get_deposits.response.json", ("USDT", "0", "amount")),
    ("private/create_api_key", "private.create_api_key.response.json", ("api_secret",)),
    ("private/get_api_keys", "private.get_api_keys.response.json", ("apiKeys", "2", "scope")),
    ("private/get_account_summary", "private.get_account_summary.response.json", ("equity",)),
    ("private/get_portfolio_margin_data", "private.get_portfolio_margin_data.response.json", ("futures_contingency",)),
    ("private/toggle_portfolio_margin", "private.toggle_portfolio_margin.response.json", ("portfolio_margin_toggle",)),
    ("private/update_instrument_leverage", "private.update_instrument_leverage.response.json", ("success",)),
    ("public/auth", "public.auth.response.json", ("account",)),
])
def test_missing_required_field_names_method_and_field(method: str, fixture_name: str, path: tuple[str, ...]) -> None:
    with pytest.raises(SyndrProtocolError, match=rf"^{method}.*'{path[-1]}' is missing"):
        m.parse_result(method, without(fixture_name, *path))


@pytest.mark.parametrize(("method", "result", "field"), [
    ("public/get_instrument", {"tick_size": 0.1}, "name"),
    ("public/ticker", {"instrument_name": "ETH-PERP", "timestamp": 1, "mark_price": "NaN"}, "mark_price"),
    ("public/ticker", {"instrument_name": "ETH-PERP", "timestamp": 1, "mark_price": True}, "mark_price"),
    ("public/ticker", {"instrument_name": "ETH-PERP", "timestamp": "soon", "mark_price": "1"}, "timestamp"),
    ("public/ticker", {"instrument_name": "ETH-PERP", "timestamp": -5, "mark_price": "1"}, "timestamp"),
    ("private/get_positions", [{"instrument_name": "X", "direction": "buy", "size": "1 000", "average_price": "1"}],
     "size"),
    ("private/get_account_summary", {"equity": "1", "available_balance": "1", "initial_margin": "1",
                                     "maintenance_margin": "1", "collateral": {"USDT": "lots"}}, "collateral.USDT"),
    ("public/get_instrument", [], "expected an object"),
    ("public/get_trades", {"id": "x"}, "instrument_name"),
    ("public/get_all_instrument_names", ["ETH-PERP", 3], r"result\[1\]"),
    ("private/cancel_all", None, "result"),
    ("private/update_instrument_leverage", {"success": 2}, "success"),
    ("public/auth", {"status": "ok", "account": ["0x1"]}, "account"),
])
def test_wrong_types_name_the_field(method: str, result: Any, field: str) -> None:
    with pytest.raises(SyndrProtocolError, match=field):
        m.parse_result(method, result)


def test_unknown_method_and_extra_fields() -> None:
    with pytest.raises(SyndrProtocolError, match="private/teleport"):
        m.parse_result("private/teleport", {})
    result = json.loads(fixture("private.create_api_key.response.json"))["result"] | {"brand_new": [1, 2]}
    assert m.parse_created_api_key(result).account.startswith("0x")


@pytest.mark.parametrize(("frame", "message"), [
    (b'{"jsonrpc":"2.0","id":1}', "'result' is missing"),
    (b'{"jsonrpc":"1.0","id":1,"result":1}', "jsonrpc"),
    (b'{"jsonrpc":"2.0","id":[1],"result":1}', "'id'"),
    (b'{"jsonrpc":"2.0","id":1,"error":{"message":"x"}}', "'code' is missing"),
    (b'{"jsonrpc":"2.0","id":1,"result":NaN}', "NaN"),
    (b"[1, 2", "not valid JSON"),
    (b"[]", "expected an object"),
])
def test_malformed_envelopes(frame: bytes, message: str) -> None:
    with pytest.raises(SyndrProtocolError, match=message):
        m.parse_rpc_response(frame)


@pytest.mark.parametrize(("frame", "message"), [
    (b'{"jsonrpc":"2.0","method":"subscription","params":{"channel":"weather.today","data":{}}}', "weather.today"),
    (b'{"jsonrpc":"2.0","method":"public/ticker","params":{"channel":"ticker.ETH-PERP","data":{}}}', "method"),
    (b'{"jsonrpc":"2.0","method":"subscription","params":{"channel":7,"data":{}}}', "channel"),
    (b'{"jsonrpc":"2.0","method":"subscription","params":{"channel":"ticker.ETH-PERP"}}', "'data' is missing"),
    (b'{"jsonrpc":"2.0","method":"subscription","params":{"channel":"ticker.ETH-PERP","data":{"timestamp":1}}}',
     "ticker.ETH-PERP.*instrument_name"),
    (b'{"jsonrpc":"2.0","method":"subscriptions","params":{"channel":"user.orders.ALL.raw","data":{"order":{}}}}',
     "user.orders.ALL.raw.*update_type"),
    (b'{"jsonrpc":"2.0","method":"subscriptions","params":{"channel":"user.bursts.ALL","data":'
     b'{"instrument_name":"ETH-PERP","sequence":"first","tx_hash":"0x1"}}}', "sequence"),
    (b'{"jsonrpc":"2.0","method":"subscription"}', "params"),
    (b"\xff", "JSON"),
])
def test_malformed_notifications(frame: bytes, message: str) -> None:
    with pytest.raises(SyndrProtocolError, match=message):
        m.parse_notification(frame)


@pytest.mark.parametrize("value", ["1e999999", "1E-999999", "0e999999", "1" * 101, 10 ** 101, 1e300, 5e-324])
def test_decimals_out_of_any_plausible_range_are_protocol_errors(value: object) -> None:
    # "1e999999" is a valid JSON number; printed as a plain decimal (format_decimal) it is a megabyte.
    with pytest.raises(SyndrProtocolError, match=r"'bids\[0\]\[0\]' is not a decimal number in range") as caught:
        m.parse_order_book({"instrument_name": "ETH-PERP", "timestamp": 1, "change_id": 1,
                            "bids": [[value, "1"]], "asks": []})
    assert len(str(caught.value)) < 200


@pytest.mark.parametrize(("bids", "where"), [([["-1", "1"]], r"bids\[0\]"), ([["1", "1"], ["2", -3]], r"bids\[1\]")])
def test_a_snapshot_level_below_zero_is_a_protocol_error(bids: list[list[object]], where: str) -> None:
    with pytest.raises(SyndrProtocolError, match=rf"field '{where}' has a negative price or amount"):
        m.parse_order_book({"instrument_name": "ETH-PERP", "timestamp": 1, "change_id": 1, "bids": bids, "asks": []})


def test_decimals_at_the_edge_of_the_range_are_exact() -> None:
    wei = "115792089237316195423570985008687907853269984665640564039457.584007913129639935"
    book = m.parse_order_book({"instrument_name": "ETH-PERP", "timestamp": 1, "change_id": 1,
                               "bids": [[wei, "1e-18"]], "asks": [[1e20, 12345678901234567890]]})
    assert book.bids == ((Decimal(wei), Decimal("1e-18")),)
    assert book.asks == ((Decimal("1e20"), Decimal(12345678901234567890)),)


def test_an_answer_naming_its_order_as_the_buy_table_does_is_read() -> None:
    """private/buy's and private/sell's tables call it `Order`; the simulator sends `order`: both are read."""
    from portico.venues.syndr.models import order_object

    order = {"order_id": "0xabc", "order_state": "open"}
    assert order_object({"Order": order, "Trades": []}) is order
    assert order_object({"order": order, "trades": []}) is order
    assert order_object({"status": "success", "result": order}) is order  # private/edit's wrapper
    assert order_object({"trades": []}) is None and order_object("ok") is None


def test_decimals_go_out_as_exact_json_numbers() -> None:
    """Never through a float (0.1000000000000000001 would be 0.1), past 64 bits too (orjson's own integers stop
    there), and without an exponent."""
    from portico.venues.syndr import wire

    params = {"amount": wire.number(Decimal("0.1000000000000000001")), "price": wire.number(Decimal("2400.50")),
              "big": wire.number(Decimal("18446744073709551616")), "small": wire.number(Decimal("1E-8")),
              "salt": 18446744073709551615, "post_only": False, "label": "c-1"}
    assert orjson.dumps(params) == (b'{"amount":0.1000000000000000001,"price":2400.5,"big":18446744073709551616,'
                                    b'"small":0.00000001,"salt":18446744073709551615,"post_only":false,'
                                    b'"label":"c-1"}')


@pytest.mark.parametrize("secret", [["s3cr3t-part", "two"], {"value": "s3cr3t-part"}, 123456789012345])
def test_a_secret_sent_as_another_type_is_refused_without_its_value(secret: Any) -> None:
    # An error's text goes to logs and callers; a secret the venue sent in an unexpected shape must stay out.
    with pytest.raises(SyndrProtocolError) as refused:
        m.parse_created_api_key({"account": "0xabc", "api_key": "k", "api_secret": secret})
    assert "api_secret" in str(refused.value)
    assert "s3cr3t" not in str(refused.value) and "123456789012345" not in str(refused.value)


@pytest.mark.parametrize("fixture_name", ["channel.user.orders.raw.notification.json",
                                          "channel.user.orders.ALL.raw.notification.json"])
@pytest.mark.parametrize("condition", [0, 1, 2.5])
def test_an_order_update_with_the_tables_numeric_trigger_condition_is_read(fixture_name: str, condition: Any) -> None:
    """The user.orders tables type `trigger_condition` as a number (the examples send ""): an order update that
    follows the table must not be dropped as malformed (it was: "field 'trigger_condition' is not a string").

    8925 (user.orders.{instrument_name}.raw): > > trigger_condition number Any other condition for order creation
                                              trigger apart from trigger price
    9201 (user.orders.ALL.raw):               (the same row)
    """
    frame = json.loads(fixture(fixture_name))
    frame["params"]["data"]["order"]["trigger_condition"] = condition
    update = m.parse_notification(json.dumps(frame).encode()).data
    assert isinstance(update, m.OrderUpdate)
    assert update.order.trigger_condition == str(condition)
    assert update.order.order_id == "cd1f2039-61af-4569-b637-69c8309251ef"
    as_documented = m.parse_notification(fixture(fixture_name)).data
    assert isinstance(as_documented, m.OrderUpdate) and as_documented.order.trigger_condition == ""
    # An HTTP answer is decoded by orjson, whose numbers are int or float.
    http_order = orjson.loads(json.dumps(frame["params"]["data"]["order"]))
    assert m.parse_order(http_order, where="private/get_order_history_by_kind").trigger_condition == str(condition)


def test_a_created_api_key_without_its_account_keeps_the_secret_received() -> None:
    """The venue shows a secret once: an answer missing only `account` must still be read (it was a protocol
    error, and the created key stayed active with its secret held by nobody)."""
    created = m.parse_created_api_key({"api_key": "po-key", "api_secret": "s3cret"})
    assert (created.api_key, created.api_secret, created.account) == ("po-key", "s3cret", "")
    assert "s3cret" not in repr(created)
    with pytest.raises(SyndrProtocolError, match="api_secret"):
        m.parse_created_api_key({"api_key": "po-key", "account": "0xabc"})
