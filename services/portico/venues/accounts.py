"""Venue accounts in Vault: the API key pair and the signer key id each account trades with.

One KV v2 secret per (venue, account) at
``portico/venues/<venue>/accounts/<account address, lower case>``:
``{"api_key", "api_secret", "signing_key_id", "signing_key_address"}``.
The account service (and `portico up`) writes it when it registers a
signing key; the execution and account services read it. The signer cannot
read this path and these services cannot read the signer's keys (their
Vault policies in ``deploy/vault/`` say so). The secret never leaves this
module except inside `ApiCredentials`, whose repr hides it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from portico.runtime.errors import Internal, NotFound, Unavailable
from portico.runtime.vault import VaultError, VaultNotFound, VaultSession
from portico.venues.syndr.credentials import ApiCredentials

__all__ = ["VenueAccount", "VenueAccountStore", "account_path"]

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


class VenueAccountStore:
    """Reads (cached for `cache_ttl_s`, so a rotation is picked up) and writes account records."""

    def __init__(self, vault: VaultSession, *, cache_ttl_s: float = 30.0):
        self._vault = vault
        self._ttl = cache_ttl_s
        self._cache: dict[tuple[str, str], tuple[float, VenueAccount]] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    def forget(self, venue: str, account: str) -> None:
        """Drop a cached record (e.g. after the venue refused its credentials)."""
        self._cache.pop((venue, account.lower()), None)

    async def get(self, venue: str, account: str) -> VenueAccount:
        """The account's record; NOT_FOUND when Portico holds no credentials for it."""
        key = (venue, account.lower())
        cached = self._cache.get(key)
        if cached is not None and time.monotonic() - cached[0] < self._ttl:
            return cached[1]
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            cached = self._cache.get(key)
            if cached is not None and time.monotonic() - cached[0] < self._ttl:
                return cached[1]
            record = await self._read(venue, account)
            self._cache[key] = (time.monotonic(), record)
            return record

    async def _read(self, venue: str, account: str) -> VenueAccount:
        try:
            data = await self._vault.read_kv(account_path(venue, account))
        except VaultNotFound:
            raise NotFound(f"no {venue} credentials for account {account}", reason="ACCOUNT_NOT_FOUND",
                           metadata={"venue": venue, "account": account}) from None
        except VaultError as exc:
            raise Unavailable(f"Vault unavailable reading the {venue} account ({type(exc).__name__})",
                              reason="VAULT_UNAVAILABLE") from None
        try:
            return VenueAccount(venue=venue, account=account,
                                credentials=ApiCredentials(str(data["api_key"]), str(data["api_secret"])),
                                signing_key_id=str(data["signing_key_id"]),
                                signing_key_address=str(data.get("signing_key_address", "")))
        except (KeyError, ValueError):
            raise Internal(f"the {venue} account record of {account} is incomplete",
                               reason="ACCOUNT_RECORD_INVALID") from None

    async def put(self, record: VenueAccount) -> None:
        """Store (a new version of) an account's record."""
        await self._vault.write_kv(account_path(record.venue, record.account), {
            "api_key": record.credentials.api_key, "api_secret": record.credentials.api_secret,
            "signing_key_id": record.signing_key_id, "signing_key_address": record.signing_key_address})
        self._cache[(record.venue, record.account.lower())] = (time.monotonic(), record)
