"""The normalised instrument record, as the instruments metadata document defines it.

One `InstrumentRecord` per (venue, symbol): every field of the metadata
document (normalised base/quote, type, contract type, expiry, strike,
increments, fees, contract multiplier, change history) plus the venue-native
fields Syndr gives. Money-like values are `Decimal`; times are epoch
milliseconds. The store keeps records as JSON (`to_json` / `from_json`), the
gRPC service converts them to `portico.refdata.v1.Instrument`, the REST edge
to the document's camelCase shape.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from decimal import Decimal
from typing import Any

__all__ = ["CONTRACT_TYPES", "INSTRUMENT_TYPES", "TRACKED_FIELDS", "InstrumentChange", "InstrumentFilter",
           "InstrumentRecord"]

INSTRUMENT_TYPES: tuple[str, ...] = ("spot", "perpetual", "future", "option")
CONTRACT_TYPES: tuple[str, ...] = (
    "move", "linear_future", "inverse_future", "quanto_future", "linear_perpetual", "inverse_perpetual",
    "quanto_perpetual", "put_option", "call_option", "turbo_put_option", "turbo_call_option", "spread",
    "interest_rate_swap", "repo", "index",
)

_DECIMAL_FIELDS = frozenset({"price_increment", "amount_increment", "min_trade_amount", "maker_fee", "taker_fee",
                             "contract_multiplier", "strike_price", "max_leverage", "max_liquidation_commission"})
# Fields a sync does not compare: they describe the record's life, not the venue's terms.
_LIFECYCLE_FIELDS = frozenset({"active", "available_since", "available_to", "changes", "update_time"})
# Changes to these are kept in `changes` (the metadata document's history).
TRACKED_FIELDS: tuple[str, ...] = ("price_increment", "amount_increment", "contract_multiplier")


@dataclass(frozen=True, slots=True)
class InstrumentChange:
    """Values that held until `until_ms`; only the fields that changed are set."""

    until_ms: int
    price_increment: Decimal | None = None
    amount_increment: Decimal | None = None
    contract_multiplier: Decimal | None = None


@dataclass(frozen=True, slots=True)
class InstrumentRecord:
    """One instrument, normalised (field names follow the metadata document in snake_case)."""

    venue: str
    symbol: str  # `id` in the metadata document
    dataset_id: str
    base_currency: str
    quote_currency: str
    type: str  # spot | perpetual | future | option
    active: bool
    available_since: int
    price_increment: Decimal
    amount_increment: Decimal
    min_trade_amount: Decimal
    maker_fee: Decimal
    taker_fee: Decimal
    available_to: int | None = None
    expiry: int | None = None
    inverse: bool | None = None
    contract_type: str | None = None
    contract_multiplier: Decimal | None = None
    quanto: bool | None = None
    settlement_currency: str | None = None
    strike_price: Decimal | None = None
    option_type: str | None = None  # call | put
    changes: tuple[InstrumentChange, ...] = ()
    # Venue-native fields.
    venue_instrument_id: int = 0
    venue_kind: str = ""
    max_leverage: Decimal | None = None
    max_liquidation_commission: Decimal | None = None
    price_index: str = ""
    underlying: str = ""
    settlement_period: str = ""
    venue_base_currency: str = ""
    venue_quote_currency: str = ""
    update_time: int = 0

    def terms(self) -> dict[str, Any]:
        """What a sync compares: everything but the record's lifecycle fields."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _LIFECYCLE_FIELDS}

    def with_lifecycle(self, **changes: Any) -> InstrumentRecord:
        return replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict: decimals as strings."""
        data = asdict(self)
        for name in _DECIMAL_FIELDS:
            if data[name] is not None:
                data[name] = str(data[name])
        data["changes"] = [
            {k: (str(v) if isinstance(v, Decimal) else v) for k, v in change.items() if v is not None}
            for change in data["changes"]
        ]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> InstrumentRecord:
        values = dict(data)
        for name in _DECIMAL_FIELDS:
            if values.get(name) is not None:
                values[name] = Decimal(values[name])
        values["changes"] = tuple(
            InstrumentChange(
                until_ms=int(c["until_ms"]),
                **{k: Decimal(c[k]) for k in TRACKED_FIELDS if c.get(k) is not None},
            )
            for c in values.get("changes", ())
        )
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


@dataclass(frozen=True, slots=True)
class InstrumentFilter:
    """The metadata document's filter: each list matches any of its values; all conditions must hold."""

    base_currencies: tuple[str, ...] = ()
    quote_currencies: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    contract_types: tuple[str, ...] = ()
    active: bool | None = None

    def matches(self, record: InstrumentRecord) -> bool:
        return ((not self.base_currencies or record.base_currency in self.base_currencies)
                and (not self.quote_currencies or record.quote_currency in self.quote_currencies)
                and (not self.types or record.type in self.types)
                and (not self.contract_types or record.contract_type in self.contract_types)
                and (self.active is None or record.active == self.active))
