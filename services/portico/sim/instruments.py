"""The simulator's instrument catalogue (names follow `portico.venues.syndr.naming`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from portico.venues.syndr.constants import InstrumentKind
from portico.venues.syndr.naming import (
    EXPIRY_HOUR_UTC,
    OptionType,
    expiry_ms,
    fmt_decimal,
    instrument_name,
    parse_instrument_name,
)

__all__ = [
    "DEFAULT_INDEX_PRICES",
    "EXPIRY_HOUR_UTC",
    "Instrument",
    "OptionType",
    "default_catalog",
    "expiry_ms",
    "fmt_decimal",
    "instrument_name",
    "parse_instrument_name",
]

DEFAULT_INDEX_PRICES: dict[str, Decimal] = {
    "ETHUSD": Decimal("3000"),
    "BTCUSD": Decimal("60000"),
    "USDTUSD": Decimal("1"),
    "USDCUSD": Decimal("1"),
    "DAIUSD": Decimal("1"),
}
"""Index prices an engine starts from; the catalogue's strikes sit around them."""


@dataclass(kw_only=True, slots=True)
class Instrument:
    """One tradable instrument, with every field public/get_instrument returns plus its expiry terms."""

    id: int
    name: str
    kind: InstrumentKind
    base_currency: str
    quote_currency: str = "USD"
    tick_size: Decimal
    contract_size: Decimal
    min_trade_amount: Decimal
    maker_commission: Decimal
    taker_commission: Decimal
    max_leverage: Decimal
    max_liquidation_commission: Decimal
    price_index: str
    underlying_name: str
    settlement_period: str
    expiry_ms: int | None = None
    strike: Decimal | None = None
    option_type: OptionType | None = None
    is_active: bool = True

    def to_wire(self) -> dict[str, Any]:
        """The object public/get_instrument returns (and public/get_instruments keys by name)."""
        return {
            "base_currency": self.base_currency,
            "contract_size": fmt_decimal(self.contract_size),
            "id": self.id,
            "is_active": self.is_active,
            "kind": self.kind.value,
            "maker_commission": fmt_decimal(self.maker_commission),
            "max_leverage": fmt_decimal(self.max_leverage),
            "max_liquidation_commission": fmt_decimal(self.max_liquidation_commission),
            "min_trade_amount": fmt_decimal(self.min_trade_amount),
            "name": self.name,
            "price_index": self.price_index,
            "quote_currency": self.quote_currency,
            "settlement_period": self.settlement_period,
            "taker_commission": fmt_decimal(self.taker_commission),
            "tick_size": fmt_decimal(self.tick_size),
            "underlying_name": self.underlying_name,
        }


# --------------------------------------------------------------------------- the default catalogue

# Per base currency: price step, amount step, and the strike grids around DEFAULT_INDEX_PRICES.
_SPECS: dict[str, dict[str, Decimal]] = {
    "ETH": {"tick": Decimal("0.1"), "contract": Decimal("0.001"), "option_contract": Decimal("0.01"),
            "strike_step": Decimal("100"), "extra_strike_step": Decimal("50")},
    "BTC": {"tick": Decimal("0.5"), "contract": Decimal("0.0001"), "option_contract": Decimal("0.001"),
            "strike_step": Decimal("5000"), "extra_strike_step": Decimal("1000")},
}
_EXTRA_STRIKES_PER_SIDE = 25  # extra options: 50 strikes around spot per expiry and base
_OPTION_TYPES: tuple[OptionType, ...] = ("call", "put")


def _perpetual(ident: int, base: str) -> Instrument:
    spec = _SPECS[base]
    return Instrument(
        id=ident, name=f"{base}-PERP", kind=InstrumentKind.PERPETUAL, base_currency=base,
        tick_size=spec["tick"], contract_size=spec["contract"], min_trade_amount=spec["contract"],
        maker_commission=Decimal("-0.000025"), taker_commission=Decimal("0.00025"), max_leverage=Decimal(50),
        max_liquidation_commission=Decimal(5), price_index=f"{base}USD", underlying_name=f"{base}USD",
        settlement_period="perpetual",
    )


def _future(ident: int, base: str, day: date) -> Instrument:
    spec = _SPECS[base]
    return Instrument(
        id=ident, name=instrument_name(base, InstrumentKind.FUTURE, day), kind=InstrumentKind.FUTURE,
        base_currency=base, tick_size=spec["tick"], contract_size=spec["contract"],
        min_trade_amount=spec["contract"], maker_commission=Decimal("0.0001"), taker_commission=Decimal("0.0005"),
        max_leverage=Decimal(20), max_liquidation_commission=Decimal(5), price_index=f"{base}USD",
        underlying_name=f"{base}USD", settlement_period="month", expiry_ms=expiry_ms(day),
    )


def _option(ident: int, base: str, day: date, strike: Decimal, option_type: OptionType, period: str) -> Instrument:
    spec = _SPECS[base]
    return Instrument(
        id=ident, name=instrument_name(base, InstrumentKind.OPTION, day, strike, option_type),
        kind=InstrumentKind.OPTION, base_currency=base, tick_size=spec["tick"],
        contract_size=spec["option_contract"], min_trade_amount=spec["option_contract"],
        maker_commission=Decimal("0.0003"), taker_commission=Decimal("0.0003"), max_leverage=Decimal(1),
        max_liquidation_commission=Decimal(5), price_index=f"{base}USD", underlying_name=f"{base}USD",
        settlement_period=period, expiry_ms=expiry_ms(day), strike=strike, option_type=option_type,
    )


def make_instrument(ident: int, name: str) -> Instrument:
    """A new instrument from its venue name, with the catalogue's terms for its base and kind.

    ValueError for a malformed name or a base currency the simulator has no terms for.
    """
    base, kind, day, strike, option_type = parse_instrument_name(name)
    if base not in _SPECS:
        raise ValueError(f"no terms for base currency {base} (known: {', '.join(sorted(_SPECS))})")
    if kind == InstrumentKind.PERPETUAL:
        return _perpetual(ident, base)
    assert day is not None
    if kind == InstrumentKind.FUTURE:
        return _future(ident, base, day)
    assert strike is not None and option_type is not None
    return _option(ident, base, day, strike, option_type, "month")


def _last_fridays(after: date, count: int) -> list[date]:
    """The last Friday of each month, the first `count` of them strictly after `after`."""
    found: list[date] = []
    year, month = after.year, after.month
    while len(found) < count:
        first_of_next = date(year + month // 12, month % 12 + 1, 1)
        last = first_of_next - timedelta(days=1)
        friday = last - timedelta(days=(last.weekday() - 4) % 7)
        if friday > after:
            found.append(friday)
        year, month = year + month // 12, month % 12 + 1
    return found


def _extra_options(today: date, taken: set[str]) -> Iterator[tuple[str, date, Decimal, OptionType]]:
    """An endless supply of distinct option terms: daily expiries, 50 strikes around spot, calls and puts."""
    offset = 1
    while True:
        day = today + timedelta(days=offset)
        for base, spec in _SPECS.items():
            spot = DEFAULT_INDEX_PRICES[f"{base}USD"]
            step = spec["extra_strike_step"]
            for k in range(-_EXTRA_STRIKES_PER_SIDE, _EXTRA_STRIKES_PER_SIDE):
                strike = spot + step * k
                if strike <= 0:
                    continue
                for option_type in _OPTION_TYPES:
                    name = instrument_name(base, InstrumentKind.OPTION, day, strike, option_type)
                    if name not in taken:
                        yield base, day, strike, option_type
        offset += 1


def default_catalog(extra: int = 0, *, today: date | None = None) -> list[Instrument]:
    """ETH/BTC perpetuals, three monthly futures each and a handful of options, plus `extra` more options.

    Expiries are the last Fridays of the months after `today` (UTC today by
    default: pass it for a catalogue that does not move with the calendar).
    `extra` adds that many distinct options (daily expiries, strikes around
    spot) so a benchmark can reach 10,000 instruments. Ids run from 1.
    """
    if extra < 0:
        raise ValueError("extra must not be negative")
    today = today or datetime.now(UTC).date()
    catalog: list[Instrument] = [_perpetual(1, "ETH"), _perpetual(2, "BTC")]
    expiries = _last_fridays(today, 3)
    for base in ("ETH", "BTC"):
        for day in expiries:
            catalog.append(_future(len(catalog) + 1, base, day))
    eth_strikes = [DEFAULT_INDEX_PRICES["ETHUSD"] + _SPECS["ETH"]["strike_step"] * k for k in (-2, 0, 2)]
    for day in expiries[:2]:
        for strike in eth_strikes:
            for option_type in _OPTION_TYPES:
                catalog.append(_option(len(catalog) + 1, "ETH", day, strike, option_type, "month"))
    btc_strikes = [DEFAULT_INDEX_PRICES["BTCUSD"] + _SPECS["BTC"]["strike_step"] * k for k in (-1, 1)]
    for strike in btc_strikes:
        for option_type in _OPTION_TYPES:
            catalog.append(_option(len(catalog) + 1, "BTC", expiries[0], strike, option_type, "month"))
    if extra:
        taken = {inst.name for inst in catalog}
        supply = _extra_options(today, taken)
        for _ in range(extra):
            base, day, strike, option_type = next(supply)
            catalog.append(_option(len(catalog) + 1, base, day, strike, option_type, "day"))
    return catalog
