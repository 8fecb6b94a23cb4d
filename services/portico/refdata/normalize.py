"""Syndr's instrument records, normalised into the metadata document's shape.

What Syndr gives (`public/get_instruments`) and what this module decides:

- base and quote: Syndr already uses the common symbols (`ETH`, `BTC`, `USD`);
  aliases such as `XBT` are mapped anyway, so other venues' habits cannot leak in.
- type and contract type: Syndr's derivatives are quote-margined, amounts are in
  the base currency and PnL is in USD, so perpetuals and futures are *linear*;
  options are `call_option` / `put_option` from the name's `C` / `P`.
- expiry and strike: parsed from the name (`BTC-27DEC26`, `ETH-27DEC26-2400-C`);
  expiries are at 08:00 UTC on the named day.
- price increment = `tick_size`; amount increment = `contract_size` (Syndr's
  "minimum size of the instrument which is tradable"); contract multiplier = 1,
  because one unit of amount is one unit of the base currency.
- settlement currency: the quote currency (USD), as for every linear contract.
- every native field is kept (`venue_instrument_id`, kind, max leverage, price
  index, underlying, settlement period, the venue's own base and quote).
"""

from __future__ import annotations

from decimal import Decimal

from portico.refdata.model import InstrumentRecord
from portico.venues.syndr import models
from portico.venues.syndr.constants import InstrumentKind
from portico.venues.syndr.naming import expiry_ms, parse_instrument_name

__all__ = ["normalize_currency", "normalize_syndr"]

VENUE = "syndr"
_CURRENCY_ALIASES = {"XBT": "BTC", "UST": "USDT", "USDTE": "USDT"}
_LINEAR = {InstrumentKind.PERPETUAL: "linear_perpetual", InstrumentKind.FUTURE: "linear_future"}
_TYPES = {InstrumentKind.PERPETUAL: "perpetual", InstrumentKind.FUTURE: "future", InstrumentKind.OPTION: "option"}


def normalize_currency(symbol: str) -> str:
    upper = symbol.upper()
    return _CURRENCY_ALIASES.get(upper, upper)


def normalize_syndr(instrument: models.Instrument) -> InstrumentRecord:
    """One Syndr instrument as a normalised record (lifecycle fields are the store's to set).

    Raises ValueError for a name that is not a Syndr instrument name.
    """
    base_from_name, kind, day, strike, option_type = parse_instrument_name(instrument.name)
    base = normalize_currency(instrument.base_currency or base_from_name)
    quote = normalize_currency(instrument.quote_currency)
    contract_type = _LINEAR.get(kind) or f"{option_type}_option"
    return InstrumentRecord(
        venue=VENUE,
        symbol=instrument.name,
        dataset_id=instrument.name,
        base_currency=base,
        quote_currency=quote,
        type=_TYPES[kind],
        active=instrument.is_active,
        available_since=0,
        price_increment=instrument.tick_size,
        amount_increment=instrument.contract_size,
        min_trade_amount=instrument.min_trade_amount,
        maker_fee=instrument.maker_commission,
        taker_fee=instrument.taker_commission,
        expiry=expiry_ms(day) if day is not None else None,
        inverse=False,
        contract_type=contract_type,
        contract_multiplier=Decimal(1),
        settlement_currency=quote,
        strike_price=strike,
        option_type=option_type,
        venue_instrument_id=instrument.id,
        venue_kind=instrument.kind,
        max_leverage=instrument.max_leverage,
        max_liquidation_commission=instrument.max_liquidation_commission,
        price_index=instrument.price_index or "",
        underlying=instrument.underlying_name or "",
        settlement_period=instrument.settlement_period or "",
        venue_base_currency=instrument.base_currency,
        venue_quote_currency=instrument.quote_currency,
    )
