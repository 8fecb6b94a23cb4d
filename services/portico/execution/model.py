"""The execution service's own vocabulary: an order intent, and its journal entry.

An `OrderIntent` is what a caller asked for, normalised (decimals, venue
words). A `JournalEntry` is the intent plus everything needed to send it
again byte for byte (salt, times, signature, the exact request params) and
what the venue made of it. The journal stores entries; the placement logic
decides their states.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from decimal import Context, Decimal
from enum import StrEnum
from typing import Any, Final

import orjson

__all__ = ["FINAL_STATES", "UNRESOLVED_STATES", "JournalEntry", "OrderIntent", "OrderState"]

# `normalize()` rounds to its context's precision: the default 28 digits made two orders that differ past the
# 28th significant digit one fingerprint. Prices and amounts are at most 80 characters (`runtime.decimals`),
# so this precision keeps every digit (and gives the same text as before for anything of 28 digits or fewer).
_EXACT: Final = Context(prec=1000)


class OrderState(StrEnum):
    """Where an order stands, as the journal records it."""

    PENDING = "PENDING"  # signed and journaled; the venue call has not finished
    UNKNOWN = "UNKNOWN"  # the venue call ended without an answer; must be reconciled
    OPEN = "OPEN"  # resting at the venue, possibly partly filled
    FILLED = "FILLED"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"  # the venue refused it (or it provably never reached the venue)
    EXPIRED = "EXPIRED"


UNRESOLVED_STATES = frozenset({OrderState.PENDING, OrderState.UNKNOWN})
FINAL_STATES = frozenset({OrderState.FILLED, OrderState.CANCELLED, OrderState.REJECTED, OrderState.EXPIRED})


@dataclass(frozen=True, slots=True)
class OrderIntent:
    """A new order as the caller asked for it, in the venue's words (`buy`, `limit`, `GTC`)."""

    venue: str
    account: str  # checksummed address
    client_order_id: str
    symbol: str
    side: str  # "buy" | "sell"
    order_type: str  # "limit" | "market"
    time_in_force: str  # "GTC" | "IOC" | "FOK"
    post_only: bool
    reduce_only: bool
    price: Decimal | None  # None for market orders
    amount: Decimal
    label: str = ""

    def fingerprint(self) -> str:
        """A digest of everything that defines the order: the same client id with another one is refused."""
        fields = [self.venue, self.account.lower(), self.client_order_id, self.symbol, self.side, self.order_type,
                  self.time_in_force, str(self.post_only), str(self.reduce_only),
                  "" if self.price is None else format(self.price.normalize(_EXACT), "f"),
                  format(self.amount.normalize(_EXACT), "f"), self.label]
        return hashlib.sha256("\x1f".join(fields).encode()).hexdigest()

    def to_json(self) -> dict[str, Any]:
        return {"venue": self.venue, "account": self.account, "client_order_id": self.client_order_id,
                "symbol": self.symbol, "side": self.side, "order_type": self.order_type,
                "time_in_force": self.time_in_force, "post_only": self.post_only, "reduce_only": self.reduce_only,
                "price": None if self.price is None else str(self.price), "amount": str(self.amount),
                "label": self.label}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OrderIntent:
        return cls(venue=data["venue"], account=data["account"], client_order_id=data["client_order_id"],
                   symbol=data["symbol"], side=data["side"], order_type=data["order_type"],
                   time_in_force=data["time_in_force"], post_only=bool(data["post_only"]),
                   reduce_only=bool(data["reduce_only"]),
                   price=None if data["price"] is None else Decimal(data["price"]), amount=Decimal(data["amount"]),
                   label=data.get("label", ""))


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One order's durable record: the signed request as sent, and the venue's latest word on it.

    `request` is the exact JSON of the `private/buy|sell` params; a retry sends
    these bytes again (same salt, same signature), never a re-signed order.
    `venue_order` is the venue's latest order object (JSON) once known.
    """

    intent: OrderIntent
    salt: int
    timestamp_ms: int
    expiration_ms: int
    signer_address: str
    request: bytes
    state: OrderState = OrderState.PENDING
    order_id: str = ""
    venue_order: bytes = b""
    reject_code: int = 0
    reject_reason: str = ""
    created_ms: int = 0
    updated_ms: int = 0
    attempts: int = 1  # venue calls made with `request` (the first send counts)
    fingerprint: str = field(default="")
    # The venue's (usIn, usOut, usDiff) of the call that produced this state; not journaled.
    venue_timing: tuple[int, int, int] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not self.fingerprint:
            object.__setattr__(self, "fingerprint", self.intent.fingerprint())

    @property
    def key(self) -> tuple[str, str, str]:
        """(venue, account, client_order_id): unique in the journal."""
        return self.intent.venue, self.intent.account, self.intent.client_order_id

    @property
    def unresolved(self) -> bool:
        return self.state in UNRESOLVED_STATES

    def venue_order_json(self) -> dict[str, Any] | None:
        return orjson.loads(self.venue_order) if self.venue_order else None

    def with_changes(self, **changes: Any) -> JournalEntry:
        return replace(self, **changes)
