"""The simulator's instrument naming (the document's "Naming" section) and its default catalogue."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from portico.sim.instruments import (
    Instrument,
    default_catalog,
    expiry_ms,
    fmt_decimal,
    instrument_name,
    parse_instrument_name,
)
from portico.venues.syndr.constants import InstrumentKind

TODAY = date(2026, 11, 21)


@pytest.mark.parametrize(("parts", "name"), [
    (("ETH", InstrumentKind.PERPETUAL, None, None, None), "ETH-PERP"),
    (("BTC", InstrumentKind.PERPETUAL, None, None, None), "BTC-PERP"),
    (("BTC", InstrumentKind.FUTURE, date(2026, 12, 27), None, None), "BTC-27DEC26"),
    (("BTC", InstrumentKind.FUTURE, date(2026, 8, 5), None, None), "BTC-5AUG26"),
    (("ETH", InstrumentKind.OPTION, date(2026, 12, 27), Decimal(2400), "call"), "ETH-27DEC26-2400-C"),
    (("BTC", InstrumentKind.OPTION, date(2016, 8, 5), Decimal(580), "put"), "BTC-5AUG16-580-P"),
    (("ETH", InstrumentKind.OPTION, date(2027, 1, 1), Decimal("0.5"), "put"), "ETH-1JAN27-0.5-P"),
    (("ETH", InstrumentKind.OPTION, date(2027, 1, 31), Decimal("2400.50"), "call"), "ETH-31JAN27-2400.5-C"),
])
def test_names_round_trip(parts: tuple[str, InstrumentKind, date | None, Decimal | None, str | None],
                          name: str) -> None:
    assert instrument_name(*parts) == name
    base, kind, expiry, strike, option_type = parse_instrument_name(name)
    assert (base, kind, expiry, option_type) == (parts[0], parts[1], parts[2], parts[4])
    assert strike == parts[3]
    assert instrument_name(base, kind, expiry, strike, option_type) == name


def test_the_documents_examples_parse() -> None:
    assert parse_instrument_name("BTC-25MAR16") == ("BTC", InstrumentKind.FUTURE, date(2016, 3, 25), None, None)
    assert parse_instrument_name("BTC-25MAR16-420-C") == (
        "BTC", InstrumentKind.OPTION, date(2016, 3, 25), Decimal(420), "call")
    assert parse_instrument_name("ETH-9NOV24-2450-P")[3:] == (Decimal(2450), "put")
    assert instrument_name("ETH", "option", date(2024, 9, 27), Decimal(2400), "C") == "ETH-27SEP24-2400-C"


@pytest.mark.parametrize("name", [
    "", "ETH", "PERP", "-PERP", "eth-PERP", "ETH-perp", "ETH-PERP-1", "ETH--PERP", "ETH-PERP-2400-C",
    "ETH-05AUG26", "ETH-0AUG26", "ETH-32JAN26", "ETH-30FEB26", "ETH-29FEB27", "ETH-5Aug26", "ETH-5AUG2026",
    "ETH-5AUG6", "ETH-5XYZ26", "ETH-AUG26", "ETH-5AUG26-", "ETH-5AUG26-2400", "ETH-5AUG26-2400-X",
    "ETH-5AUG26-2400-c", "ETH-5AUG26-0-C", "ETH-5AUG26-02400-C", "ETH-5AUG26-2400.50-C", "ETH-5AUG26-2400.-C",
    "ETH-5AUG26--C", "ETH-5AUG26-1e3-C", "ETH-5AUG26--2400-C", "ETH-5AUG26-2400-C-X", "ETH 5AUG26", "ÉTH-PERP",
])
def test_malformed_names_are_rejected(name: str) -> None:
    with pytest.raises(ValueError, match=r"instrument name|strike"):
        parse_instrument_name(name)


def test_leap_day_is_a_date() -> None:
    assert parse_instrument_name("ETH-29FEB28")[2] == date(2028, 2, 29)


@pytest.mark.parametrize(("args", "message"), [
    (("eth", InstrumentKind.PERPETUAL), "upper-case"),
    (("ETH", InstrumentKind.PERPETUAL, date(2026, 1, 1)), "perpetual has no"),
    (("ETH", InstrumentKind.FUTURE), "needs an expiry"),
    (("ETH", InstrumentKind.FUTURE, date(2026, 1, 1), Decimal(1)), "future has no"),
    (("ETH", InstrumentKind.OPTION, date(2026, 1, 1)), "positive strike"),
    (("ETH", InstrumentKind.OPTION, date(2026, 1, 1), Decimal(0), "call"), "positive strike"),
    (("ETH", InstrumentKind.OPTION, date(2026, 1, 1), Decimal(100), "straddle"), "call or put"),
    (("ETH", InstrumentKind.FUTURE, date(2100, 1, 1)), "year out of range"),
])
def test_instrument_name_refuses_impossible_parts(args: tuple[object, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        instrument_name(*args)  # type: ignore[arg-type]


def test_expiry_is_eight_utc() -> None:
    assert expiry_ms(date(2026, 12, 25)) == int(datetime(2026, 12, 25, 8, tzinfo=UTC).timestamp() * 1000)


@pytest.mark.parametrize(("value", "text"), [
    (Decimal("0.1"), "0.1"), (Decimal("-0.000025"), "-0.000025"), (Decimal("2200"), "2200"),
    (Decimal("2200.00"), "2200"), (Decimal("2.2E+3"), "2200"), (Decimal("0E-8"), "0"), (Decimal("-0"), "0"),
    (Decimal("1E-10"), "0.0000000001"), (Decimal("3114.90"), "3114.9"),
])
def test_decimals_render_as_the_document_writes_them(value: Decimal, text: str) -> None:
    assert fmt_decimal(value) == text


def test_to_wire_is_exactly_get_instruments_shape() -> None:
    eth = default_catalog(today=TODAY)[0]
    assert eth.to_wire() == {
        "base_currency": "ETH", "contract_size": "0.001", "id": 1, "is_active": True, "kind": "perpetual",
        "maker_commission": "-0.000025", "max_leverage": "50", "max_liquidation_commission": "5",
        "min_trade_amount": "0.001", "name": "ETH-PERP", "price_index": "ETHUSD", "quote_currency": "USD",
        "settlement_period": "perpetual", "taker_commission": "0.00025", "tick_size": "0.1",
        "underlying_name": "ETHUSD",
    }
    option = next(i for i in default_catalog(today=TODAY) if i.kind is InstrumentKind.OPTION)
    wire = option.to_wire()
    assert set(wire) == set(eth.to_wire())
    assert all(isinstance(wire[k], str) for k in wire if k not in ("id", "is_active"))


def test_default_catalog_has_every_kind_with_consistent_terms() -> None:
    catalog = default_catalog(today=TODAY)
    names = [i.name for i in catalog]
    assert names[:2] == ["ETH-PERP", "BTC-PERP"]
    assert [i.id for i in catalog] == list(range(1, len(catalog) + 1))
    kinds = {kind: [i for i in catalog if i.kind is kind] for kind in InstrumentKind}
    assert len(kinds[InstrumentKind.PERPETUAL]) == 2
    assert len(kinds[InstrumentKind.FUTURE]) == 6
    assert len(kinds[InstrumentKind.OPTION]) >= 8
    assert {i.option_type for i in kinds[InstrumentKind.OPTION]} == {"call", "put"}
    assert {i.base_currency for i in catalog} == {"ETH", "BTC"}
    for inst in catalog:
        _check_consistent(inst)
    for future in kinds[InstrumentKind.FUTURE]:
        _, _, day, _, _ = parse_instrument_name(future.name)
        assert day is not None and day > TODAY and day.weekday() == 4  # last Fridays


def _check_consistent(inst: Instrument) -> None:
    base, kind, day, strike, option_type = parse_instrument_name(inst.name)
    assert (base, kind, strike, option_type) == (inst.base_currency, inst.kind, inst.strike, inst.option_type)
    assert inst.expiry_ms == (expiry_ms(day) if day else None)
    assert inst.price_index == inst.underlying_name == f"{base}USD"
    assert inst.quote_currency == "USD" and inst.is_active
    assert inst.tick_size > 0 and inst.contract_size > 0 and inst.max_leverage >= 1
    assert inst.min_trade_amount % inst.contract_size == 0
    if kind is InstrumentKind.PERPETUAL:
        assert inst.settlement_period == "perpetual"
    else:
        assert inst.settlement_period in ("month", "day")


def test_extra_reaches_ten_thousand_distinct_valid_instruments() -> None:
    base = default_catalog(today=TODAY)
    big = default_catalog(10_000 - len(base), today=TODAY)
    assert len(big) == 10_000
    assert len({i.name for i in big}) == 10_000
    assert len({i.id for i in big}) == 10_000
    assert [i.name for i in big[:len(base)]] == [i.name for i in base]
    for inst in big[len(base):]:
        assert inst.kind is InstrumentKind.OPTION
        assert instrument_name(*parse_instrument_name(inst.name)) == inst.name
    _check_consistent(big[-1])


def test_catalog_is_deterministic_for_a_day() -> None:
    assert default_catalog(50, today=TODAY) == default_catalog(50, today=TODAY)
    assert default_catalog(today=TODAY) != default_catalog(today=date(2027, 3, 1))
    with pytest.raises(ValueError, match="negative"):
        default_catalog(-1)
