"""Venue accounts in Vault: the API key pair and the signer key id each account trades with.

One KV v2 secret per (venue, account) at
``portico/venues/<venue>/accounts/<account address, lower case>``:
``{"api_key", "api_secret", "signing_key_id", "signing_key_address", "account_key_id"}``.
Before the account's first signing-key registration the record holds only
``account_key_id``: the signer key of the account itself, which signs
``RegisterSigningKey``.
The account service (and `portico up`) writes it when it registers a
signing key; the execution and account services read it. The signer cannot
read this path and these services cannot read the signer's keys (their
Vault policies in ``deploy/vault/`` say so). The secret never leaves this
module except inside `ApiCredentials`, whose repr hides it.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from portico.runtime.cache import RefreshingCache
from portico.runtime.errors import Internal, InvalidArgument, NotFound, Unavailable
from portico.runtime.secp256k1 import to_checksum_address
from portico.runtime.vault import VaultError, VaultNotFound, VaultSession, vault_unavailable
from portico.venues.syndr import models
from portico.venues.syndr.constants import ErrorCode
from portico.venues.syndr.credentials import ApiCredentials
from portico.venues.syndr.errors import SyndrAuthError, SyndrRpcError
from portico.venues.syndr.http import RpcResult, SyndrHttpClient
from portico.venues.syndr.ratelimit import Priority, RateBudget

__all__ = ["VENUES", "AccountSession", "SyndrAccounts", "VenueAccount", "VenueAccountStore", "account_path",
           "check_account", "check_venue"]

VENUES: Final = ("syndr",)
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


def check_venue(venue: str) -> str:
    """A venue name of a request; INVALID_ARGUMENT naming the field otherwise."""
    if venue not in VENUES:
        raise InvalidArgument("venue", f"unknown venue {venue!r} (known: {', '.join(VENUES)})")
    return venue


def check_account(account: str) -> str:
    """An account address of a request, returned checksummed (journal and Vault key on that form)."""
    if not _ADDRESS.fullmatch(account or ""):
        raise InvalidArgument("account", "must be a 0x-prefixed 20-byte hex address")
    return to_checksum_address(account)

# Venue answers that mean "the credentials or signing key on record are no longer the account's".
_STALE_RECORD_CODES = frozenset({ErrorCode.INVALID_SIGNATURE, ErrorCode.SIGNING_KEY_NOT_REGISTERED,
                                 ErrorCode.SIGNING_KEY_EXPIRED})

# A record the venue refused is dropped (read again from Vault) at most this often: every call in flight with it
# is refused too, and Vault may still hold it (the venue dropped the key before the new record was written), so
# dropping it on each refusal would read Vault once per call.
_REREAD_REFUSED_S: Final = 1.0

ACCOUNTS_ROOT = "portico/venues"


def account_path(venue: str, account: str) -> str:
    """The KV path of one venue account's record."""
    return f"{ACCOUNTS_ROOT}/{venue}/accounts/{account.lower()}"


@dataclass(frozen=True)
class VenueAccount:
    """What a service needs to act for one account at one venue."""

    venue: str
    account: str
    credentials: ApiCredentials = field(repr=True)  # ApiCredentials hides its secret
    signing_key_id: str
    signing_key_address: str
    account_key_id: str = ""


class VenueAccountStore:
    """Reads (used for at most `cache_ttl_s`, reloaded ahead of that, so a rotation is picked up) and writes
    account records."""

    def __init__(self, vault: VaultSession, *, cache_ttl_s: float = 30.0):
        self._vault = vault
        self._cache: RefreshingCache[tuple[str, str], VenueAccount] = RefreshingCache(
            self._load, max_age_s=cache_ttl_s, name="venue-accounts", drop_on=(NotFound,))

    def forget(self, venue: str, account: str) -> None:
        """Drop a cached record (e.g. after the venue refused its credentials)."""
        self._cache.forget((venue, account.lower()))

    async def get(self, venue: str, account: str) -> VenueAccount:
        """The account's record; NOT_FOUND when Portico holds no credentials for it."""
        return await self._cache.get((venue, account.lower()))

    async def aclose(self) -> None:
        await self._cache.aclose()

    async def _load(self, key: tuple[str, str]) -> VenueAccount:
        venue, account = key
        return await self._read(venue, to_checksum_address(account))

    async def read_raw(self, venue: str, account: str) -> dict[str, Any]:
        """The record as stored (possibly only `account_key_id`); NOT_FOUND if Portico knows no such account."""
        try:
            return await self._vault.read_kv(account_path(venue, account))
        except VaultNotFound:
            raise NotFound(f"Portico holds no {venue} account {account}", reason="ACCOUNT_NOT_FOUND",
                           metadata={"venue": venue, "account": account}) from None
        except VaultError as exc:
            raise vault_unavailable(exc, f"read the {venue} account") from None

    async def _read(self, venue: str, account: str) -> VenueAccount:
        data = await self.read_raw(venue, account)
        if "api_key" not in data:
            raise NotFound(f"{venue} account {account} has no signing key registered yet",
                           reason="ACCOUNT_NOT_REGISTERED", metadata={"venue": venue, "account": account})
        try:
            return VenueAccount(venue=venue, account=account,
                                credentials=ApiCredentials(_text(data, "api_key"), _text(data, "api_secret")),
                                signing_key_id=_text(data, "signing_key_id"),
                                signing_key_address=str(data.get("signing_key_address", "")),
                                account_key_id=str(data.get("account_key_id", "")))
        except (KeyError, ValueError):
            raise Internal(f"the {venue} account record of {account} is incomplete",
                               reason="ACCOUNT_RECORD_INVALID") from None

    async def put(self, record: VenueAccount) -> None:
        """Store (a new version of) an account's record."""
        await self._vault.write_kv(account_path(record.venue, record.account), {
            "api_key": record.credentials.api_key, "api_secret": record.credentials.api_secret,
            "signing_key_id": record.signing_key_id, "signing_key_address": record.signing_key_address,
            "account_key_id": record.account_key_id})
        self._cache.put((record.venue, record.account.lower()), record)

    async def put_account_key(self, venue: str, account: str, account_key_id: str) -> None:
        """Record which signer key is the account's own, before its first registration (a new record only)."""
        await self._vault.write_kv(account_path(venue, account), {"account_key_id": account_key_id}, cas=0)


@dataclass(frozen=True)
class AccountSession:
    """An account's record and the HTTP client that carries its credentials."""

    record: VenueAccount
    http: SyndrHttpClient


class SyndrAccounts:
    """Syndr for the accounts Portico acts for: one HTTP client per account, each with its own API key pair.

    A rotated record (new API key or signing key, written by the account service) replaces the client
    once the store's cache expires, or at once when the venue refuses the old credentials or signature.

    With `rate_share` > 0, every client made here for one API key (HTTP, the dead-man's independent one,
    and the WebSocket feeds that ask `budget()`) draws on one `RateBudget` at that share of the venue's
    per-key limit: this process never makes the venue refuse the key, and when callers must wait,
    cancels go first. Processes sharing a key (execution and account) each keep to their own share.
    """

    def __init__(self, http_url: str, store: VenueAccountStore, *, timeout_s: float, rate_share: float = 0.0):
        if not 0 <= rate_share <= 1:
            raise ValueError("rate_share must be between 0 and 1")
        self._url = http_url
        self._timeout_s = timeout_s
        self._rate_share = rate_share
        self._budgets: dict[str, RateBudget] = {}  # by API key; a handful per process (keys rotate rarely)
        self.store = store
        self.public = SyndrHttpClient(http_url, timeout_s=timeout_s)
        self._sessions: dict[str, AccountSession] = {}
        self._dropped: dict[str, tuple[VenueAccount, float]] = {}  # by account: the last refused record dropped
        self._orderbook: str | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    async def session(self, account: str) -> AccountSession:
        """The account's client (NOT_FOUND when Portico holds no credentials for it)."""
        record = await self.store.get("syndr", account)
        if self._closed:  # closing while this call waited: no new client that nobody would close
            raise Unavailable("the venue clients are closed", reason="SHUTTING_DOWN")
        key = account.lower()
        current = self._sessions.get(key)
        if current is not None and current.record == record:
            return current
        session = AccountSession(record, SyndrHttpClient(self._url, credentials=record.credentials,
                                                         timeout_s=self._timeout_s, retries=0,
                                                         rate_budget=self.budget(record)))
        self._sessions[key] = session
        if current is not None:  # calls on their way with the old record still get their answers
            await current.http.aclose(drain=True)
        return session

    def independent_client(self, record: VenueAccount) -> SyndrHttpClient:
        """A client with its own connection pool (e.g. for a dead-man's switch that must not share a stuck one)."""
        return SyndrHttpClient(self._url, credentials=record.credentials, timeout_s=self._timeout_s, retries=0,
                               rate_budget=self.budget(record))

    async def current_record(self, account: str) -> VenueAccount:
        """The account's record as Vault has it now, not as cached: the account service may have rotated its
        key meanwhile (a WebSocket re-authenticating, a dead-man's cancel the old key failed)."""
        self.store.forget("syndr", account)
        return (await self.session(account)).record

    async def current_credentials(self, account: str) -> ApiCredentials:
        """The account's API key as Vault has it now (see `current_record`)."""
        return (await self.current_record(account)).credentials

    def budget(self, record: VenueAccount) -> RateBudget | None:
        """This process's rate budget for the record's API key (None when `rate_share` is 0)."""
        if self._rate_share == 0:
            return None
        key = record.credentials.api_key
        budget = self._budgets.get(key)
        if budget is None:
            budget = self._budgets[key] = RateBudget(safety=self._rate_share)
        return budget

    async def call(self, account: str, method: str, params: dict[str, Any] | orjson.Fragment | None = None, *,
                   priority: Priority | None = None) -> RpcResult:
        """A private call for `account`; a refusal of the record on file drops it from the cache."""
        session = await self.session(account)
        try:
            return await session.http.call(method, params, priority=priority)
        except SyndrAuthError:
            self._drop_refused(account, session.record)
            raise
        except SyndrRpcError as exc:
            if exc.code in _STALE_RECORD_CODES:
                self._drop_refused(account, session.record)
            raise

    def _drop_refused(self, account: str, record: VenueAccount) -> None:
        """Drop the cached record the venue refused, once: not when a newer one is in use already (the refusal
        of a call sent before the rotation), nor again within `_REREAD_REFUSED_S` of dropping it."""
        key = account.lower()
        current = self._sessions.get(key)
        if current is not None and current.record != record:
            return
        now = time.monotonic()
        dropped = self._dropped.get(key)
        if dropped is not None and dropped[0] == record and now - dropped[1] < _REREAD_REFUSED_S:
            return
        self._dropped[key] = (record, now)
        self.store.forget("syndr", account)

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

    async def aclose(self) -> None:
        self._closed = True
        await self.store.aclose()
        await self.public.aclose()
        for session in self._sessions.values():
            await session.http.aclose()
        self._sessions.clear()


def _text(data: dict[str, Any], key: str) -> str:
    """A required field of a record as the non-empty string it must be: `str()` would turn a null secret into the
    credential "None", sent to the venue on every call (KeyError / ValueError: the record is incomplete)."""
    value = data[key]
    if type(value) is not str or not value:
        raise ValueError(key)
    return value
