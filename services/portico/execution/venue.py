"""The venue as the execution service sees it: the accounts' clients (`SyndrAccounts`) and order look-ups.

Look-ups find an order by its salt (unique per signing key and carried in the
venue's order object), which is how an order of unknown outcome is recognised
without trusting labels.
"""

from __future__ import annotations

import time
from typing import Any, Final

from portico.venues.accounts import SyndrAccounts
from portico.venues.syndr import models
from portico.venues.syndr.ratelimit import Priority

__all__ = ["SyndrVenue", "history_until_s", "open_orders", "order_history_page", "user_trades_page"]

HISTORY_PAGE: Final = 500
# How far before an order's signing time its venue record may be (clock skew between us and the venue).
_SKEW_MS: Final = 60_000


class SyndrVenue(SyndrAccounts):
    """The accounts' clients, plus the order look-ups reconciliation and reads need."""

    async def find_by_salt(self, account: str, symbol: str, salt: int, since_ms: int) -> dict[str, Any] | None:
        """The venue's order with this salt on `symbol`, open or closed, created after `since_ms`; None if none."""
        for order in await open_orders(self, account):
            if order.get("instrument_name") == symbol and str(order.get("salt")) == str(salt):
                return order
        offset = 0
        while True:
            page = await order_history_page(self, account, symbol, offset, HISTORY_PAGE)
            for order in page:
                if str(order.get("salt")) == str(salt):
                    return order
            if len(page) < HISTORY_PAGE or _created_ms(page[-1]) < since_ms - _SKEW_MS:
                return None
            offset += len(page)

    async def find_by_id(self, account: str, order_id: str, symbol: str | None) -> dict[str, Any] | None:
        """The venue's order with this id (open first, then history); None if the venue does not know it."""
        for order in await open_orders(self, account):
            if order.get("order_id") == order_id:
                return order
        offset = 0
        while True:
            page = await order_history_page(self, account, symbol, offset, HISTORY_PAGE)
            for order in page:
                if order.get("order_id") == order_id:
                    return order
            if len(page) < HISTORY_PAGE:
                return None
            offset += len(page)


def _created_ms(order: dict[str, Any]) -> int:
    try:
        return int(order.get("creation_timestamp") or 0)
    except (TypeError, ValueError):
        return 0


def _flatten(node: Any) -> list[dict[str, Any]]:
    """get_open_orders nests orders currency -> kind -> instrument -> id; arrays are accepted too."""
    if isinstance(node, list):
        return [o for o in node if isinstance(o, dict)]
    if isinstance(node, dict):
        if "order_id" in node:
            return [node]
        return [o for child in node.values() for o in _flatten(child)]
    return []


async def open_orders(venue: SyndrVenue, account: str, *, priority: Priority | None = None) -> list[dict[str, Any]]:
    """Every open order of the account, as the venue's JSON objects (checked against the typed model)."""
    result = (await venue.call(account, "private/get_open_orders", priority=priority)).result
    orders = _flatten(result)
    models.parse_orders(orders)  # shape check: raises SyndrProtocolError on a malformed answer
    return orders


async def user_trades_page(venue: SyndrVenue, account: str, symbol: str | None, offset: int, count: int,
                           until_s: int) -> list[dict[str, Any]]:
    """One page of the account's fills up to `until_s` (epoch seconds), newest first (all instruments when
    `symbol` is None), with the parameters the document requires (count and the time window), as the
    venue's JSON objects (checked against the typed model)."""
    window = {"count": count, "offset": offset, "start_timestamp": 0, "end_timestamp": until_s, "sort_by": "DESC"}
    if symbol is None:
        method, params = "private/get_user_trades_by_kind", {"kind": "any", **window}
    else:
        method, params = "private/get_user_trades_by_instrument", {"instrument_name": symbol, **window}
    result = (await venue.call(account, method, params)).result
    models.parse_user_trades(result)  # shape check: raises SyndrProtocolError on a malformed answer
    return [t for t in (result if isinstance(result, list) else [result]) if isinstance(t, dict)]


def history_until_s() -> int:
    """The end of an order-history window that holds every order created until now: the venue stamps
    creation with its own clock, so the window reaches the skew allowed between the two clocks past ours."""
    return int(time.time()) + _SKEW_MS // 1000


async def order_history_page(venue: SyndrVenue, account: str, symbol: str | None, offset: int,
                             count: int, until_s: int | None = None) -> list[dict[str, Any]]:
    """One page of the account's orders created up to `until_s` (epoch seconds; default: now, plus the
    clock skew allowed between us and the venue), newest first (all instruments when `symbol` is None), with
    the parameters the document requires (kind, count and the time window)."""
    end_s = until_s if until_s is not None else history_until_s()
    window = {"count": count, "offset": offset, "start_time": 0, "end_time": end_s}
    if symbol is None:
        method, params = "private/get_order_history_by_kind", {"kind": "any", **window}
    else:
        method, params = "private/get_order_history_by_instrument", {"instrument_name": symbol, **window}
    result = (await venue.call(account, method, params)).result
    orders = _flatten(result)
    models.parse_orders(orders)
    return orders
