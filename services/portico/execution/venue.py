"""The venue as the execution service sees it: one HTTP client per account, and order look-ups.

Each account trades with its own API key pair (read from Vault through
`VenueAccountStore`), so each gets its own `SyndrHttpClient`; a rotated key
replaces the client. Look-ups find an order by its salt (unique per signing
key and carried in the venue's order object), which is how an order of
unknown outcome is recognised without trusting labels.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Final

from portico.venues.accounts import VenueAccount, VenueAccountStore
from portico.venues.syndr import models
from portico.venues.syndr.errors import SyndrAuthError
from portico.venues.syndr.http import RpcResult, SyndrHttpClient

__all__ = ["AccountSession", "SyndrVenue", "open_orders", "order_history_page"]

HISTORY_PAGE: Final = 500
# How far before an order's signing time its venue record may be (clock skew between us and the venue).
_SKEW_MS: Final = 60_000


@dataclass(frozen=True)
class AccountSession:
    """An account's record and the HTTP client that carries its credentials."""

    record: VenueAccount
    http: SyndrHttpClient


class SyndrVenue:
    """Per-account HTTP clients, the venue's contract address, and the calls the service makes."""

    def __init__(self, http_url: str, accounts: VenueAccountStore, *, timeout_s: float):
        self._url = http_url
        self._timeout_s = timeout_s
        self.accounts = accounts
        self.public = SyndrHttpClient(http_url, timeout_s=timeout_s)
        self._sessions: dict[str, AccountSession] = {}
        self._orderbook: str | None = None
        self._lock = asyncio.Lock()

    async def session(self, account: str) -> AccountSession:
        """The account's client (NOT_FOUND when Portico holds no credentials for it)."""
        record = await self.accounts.get("syndr", account)
        key = account.lower()
        current = self._sessions.get(key)
        if current is not None and current.record == record:
            return current
        session = AccountSession(record, SyndrHttpClient(self._url, credentials=record.credentials,
                                                         timeout_s=self._timeout_s, retries=0))
        self._sessions[key] = session
        if current is not None:
            await current.http.aclose()
        return session

    def independent_client(self, record: VenueAccount) -> SyndrHttpClient:
        """A client with its own connection pool (the dead-man's switch must not share a stuck one)."""
        return SyndrHttpClient(self._url, credentials=record.credentials, timeout_s=self._timeout_s, retries=0)

    async def call(self, account: str, method: str, params: dict[str, Any] | None = None) -> RpcResult:
        """A private call for `account`; refused credentials are dropped from the cache so a rotation is seen."""
        session = await self.session(account)
        try:
            return await session.http.call(method, params)
        except SyndrAuthError:
            self.accounts.forget("syndr", account)
            raise

    async def orderbook_address(self) -> str:
        """The orderbook contract orders are signed for (`public/get_l3_contracts`, asked once)."""
        if self._orderbook is None:
            async with self._lock:
                if self._orderbook is None:
                    contracts = models.parse_l3_contracts((await self.public.call("public/get_l3_contracts")).result)
                    if not contracts.orderbook_address:
                        raise ValueError("the venue did not name its orderbook contract")
                    self._orderbook = contracts.orderbook_address
        return self._orderbook

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

    async def aclose(self) -> None:
        await self.public.aclose()
        for session in self._sessions.values():
            await session.http.aclose()
        self._sessions.clear()


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


async def open_orders(venue: SyndrVenue, account: str) -> list[dict[str, Any]]:
    """Every open order of the account, as the venue's JSON objects (checked against the typed model)."""
    result = (await venue.call(account, "private/get_open_orders")).result
    orders = _flatten(result)
    models.parse_orders(orders)  # shape check: raises SyndrProtocolError on a malformed answer
    return orders


async def order_history_page(venue: SyndrVenue, account: str, symbol: str | None, offset: int,
                             count: int) -> list[dict[str, Any]]:
    """One page of the account's orders, newest first (all instruments when `symbol` is None)."""
    if symbol is None:
        method, params = "private/get_order_history_by_kind", {"kind": "any", "count": count, "offset": offset}
    else:
        method = "private/get_order_history_by_instrument"
        params = {"instrument_name": symbol, "count": count, "offset": offset}
    result = (await venue.call(account, method, params)).result
    orders = _flatten(result)
    models.parse_orders(orders)
    return orders
