"""Signing-key registration: a new key in Vault, two signatures by the signer, the venue's call, the new record.

The steps, as the Syndr document's "API Key Setup" script has them, with no
private key ever in this process:

1. The signer's admin path (`portico.runtime.signing_keys.KeyAdmin`, writing to Vault
   directly, not over gRPC) creates the new signing key with a policy that
   allows exactly `Order` and `SignKey` for Syndr's domain. This service's
   Vault policy may create signer keys but never read them.
2. The venue's nonces for (account, new key).
3. The signer signs `SignKey` with the new key and `RegisterSigningKey` with
   the account's own key (whose policy allows only that), over gRPC.
4. `public/register_signing_key`; the venue answers with an API key pair.
5. The account's record in Vault gets the new API key pair and signing key id,
   where the execution service reads them (its cache drops the old record when
   the venue refuses it). The secret goes nowhere else.

If the venue refuses, the new key stays unused in Vault (harmless, and
logged). If Vault cannot take the new record after the venue accepted, the
write is retried; the venue shows an API secret once, so failing here is loud.

One registration of an account at a time, across processes too: steps 1-5
hold the account's lease (`leases`), so a registration by another process
cannot come between this one's venue call and its record, and the record Vault
ends with names the key the venue registered last. A registration that took
so long that its lease could have passed to another process stops before the
venue's call, or before writing the record (logged as needing a new
registration, as when Vault does not take it).

From step 4 on the work runs to its end whatever happens to the RPC (a client
deadline, a disconnect, the server's shutdown grace running out): it is a task
of `Completions`, awaited under `asyncio.shield`, so the venue's new API key
pair always reaches Vault (or the failure is logged). When the venue's answer
is lost (transport failure, its internal error, an unreadable answer) the
outcome is unknown: the venue may use the new key while Vault names the old
one, so that is logged as an error asking for a new registration.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from portico.account.leases import AccountLeases, Lease
from portico.runtime.errors import FailedPrecondition, PorticoError, Unavailable
from portico.runtime.signing_keys import KeyAdmin, KeyAdminError, KeyPaths, KeyPolicy
from portico.runtime.vault import VaultError, VaultSession, vault_unavailable
from portico.signer.client import SignerClient
from portico.venues.accounts import SyndrAccounts, VenueAccount
from portico.venues.syndr import models, typed_data
from portico.venues.syndr.credentials import ApiCredentials
from portico.venues.syndr.errors import SyndrError, outcome_unknown

__all__ = ["Completions", "Registration", "SigningKeyRegistrar"]

T = TypeVar("T")

log = logging.getLogger("portico.account.registration")

_RECORD_WRITE_ATTEMPTS = 5
SIGNING_KEY_POLICY = KeyPolicy.build(primary_types=[typed_data.ORDER_PRIMARY_TYPE, typed_data.SIGN_KEY_PRIMARY_TYPE],
                                     domain_names=[typed_data.SYNDR_DOMAIN_NAME],
                                     chain_ids=[typed_data.SYNDR_CHAIN_ID])


class Completions:
    """Work that must run to its end once started, whatever happens to the RPC that started it.

    Between a venue call that changes something (a new API key pair, a registered signing key, a toggled
    margin mode) and what must follow it (Vault storing the secret, a rollback, the answer read), a cancelled
    caller must not stop the work half-way. `run` starts the work as a task and waits for it under
    `asyncio.shield`: cancelling the caller (gRPC deadline, disconnect, the end of the shutdown grace) leaves
    the task running; its result or failure is then logged. `aclose`, once the server has stopped, waits for
    what is still running, then cancels it, loudly.
    """

    def __init__(self) -> None:
        self._tasks: dict[asyncio.Task[Any], str] = {}  # task -> what it does (for logs: never a secret)
        self._abandoned: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    async def run(self, work: Coroutine[Any, Any, T], what: str, *, release: asyncio.Lock | None = None) -> T:
        """Run `work` to its end and return its result; `release`, a lock the caller holds, is handed over
        to the work and released when it ends (so the next caller waits for the work, not for this caller)."""
        task = asyncio.create_task(work, name=f"account: {what}")
        self._tasks[task] = what
        task.add_done_callback(self._finished)
        if release is not None:
            task.add_done_callback(lambda _: release.release())
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done():
                self._abandoned.add(task)
                log.warning("the caller went away; the work goes on to its end", extra={"work": what})
            raise

    def _finished(self, task: asyncio.Task[Any]) -> None:
        what = self._tasks.pop(task, "?")
        abandoned = task in self._abandoned
        self._abandoned.discard(task)
        if task.cancelled():
            log.error("work cancelled before its end: check that the venue and Vault agree", extra={"work": what})
            return
        exc = task.exception()  # retrieved here even when the caller has gone
        if not abandoned:
            return  # the caller has the result or the error
        if exc is None:
            log.info("work finished after its caller went away", extra={"work": what})
        else:
            log.error("work failed after its caller went away", extra={
                "work": what, "error": type(exc).__name__,
                "detail": exc.message if isinstance(exc, PorticoError) else ""})

    async def aclose(self, timeout_s: float) -> None:
        """Wait up to `timeout_s` for unfinished work, then cancel what is left."""
        if not self._tasks:
            return
        log.warning("waiting for unfinished work", extra={"work": sorted(self._tasks.values()),
                                                          "timeout_s": timeout_s})
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)


@dataclass(frozen=True)
class _Signed:
    """Everything `public/register_signing_key` needs, made before the call."""

    venue: str
    account: str
    account_key_id: str
    key_id: str
    key_address: str
    expires_at: int
    key_signature: str
    account_signature: str


@dataclass(frozen=True)
class Registration:
    """What a registration produced (the API secret stays in Vault)."""

    record: VenueAccount
    expires_at: int  # seconds since the epoch; SIGNING_KEY_NEVER_EXPIRES for never


class SigningKeyRegistrar:
    """Registers a new signing key for an account Portico holds the account key of."""

    def __init__(self, vault: VaultSession, key_paths: KeyPaths, signer: SignerClient, accounts: SyndrAccounts,
                 completions: Completions, leases: AccountLeases, *, venue_timeout_s: float):
        self._admin = KeyAdmin(vault, key_paths)
        self._signer = signer
        self._accounts = accounts
        self._completions = completions
        self._leases = leases
        self._vault_timeout_s = vault.settings.timeout_s
        self._venue_timeout_s = venue_timeout_s
        self._locks: dict[str, asyncio.Lock] = {}

    async def register(self, venue: str, account: str, validity_s: float | None) -> Registration:
        # One rotation at a time per account: in this process (the lock: its callers queue here) and across
        # processes (the lease in Vault).
        what = f"signing-key registration for {account}"
        # NOT_FOUND for an account Portico does not hold before a lock or a lease (in Vault) is kept for it.
        await self._accounts.store.read_raw(venue, account)
        lock = self._locks.setdefault(account.lower(), asyncio.Lock())
        await lock.acquire()
        try:
            lease = await self._leases.acquire(venue, account, "signing-key", f"a {what}")
        except BaseException:
            lock.release()
            raise
        try:
            signed = await self._prepare(venue, account, validity_s)
        except BaseException:
            await self._completions.run(lease.release(), f"releasing the lease of a {what}", release=lock)
            raise
        # From the venue's call on, nothing may stop half-way; the lock and lease are held until the work ends.
        return await self._completions.run(self._complete(signed, lease), what, release=lock)

    async def _prepare(self, venue: str, account: str, validity_s: float | None) -> _Signed:
        """Steps 1-3: cancellable (at worst an unused signing key is left in Vault)."""
        stored = await self._accounts.store.read_raw(venue, account)
        account_key_id = str(stored.get("account_key_id") or "")
        if not account_key_id:
            raise FailedPrecondition(f"Portico holds no account key for {account}: a signing key cannot be "
                                     "registered for it", reason="ACCOUNT_KEY_UNKNOWN")
        key_id = f"{venue}-{account.lower()[2:12]}-{int(time.time())}-{secrets.token_hex(3)}"
        try:
            key_address = await self._admin.create(key_id, SIGNING_KEY_POLICY)
        except KeyAdminError as exc:
            raise FailedPrecondition(f"cannot create the signing key: {exc}", reason="SIGNING_KEY_CREATE_FAILED") \
                from None
        except VaultError as exc:
            raise vault_unavailable(exc, "create the signing key") from None
        log.info("signing key created", extra={"account": account, "key_id": key_id, "address": key_address})

        public = self._accounts.public
        contracts = models.parse_l3_contracts((await public.call("public/get_l3_contracts")).result)
        manager = contracts.signing_keys_manager_address
        nonces = (await public.call("public/get_signing_key_nonces",
                                    {"account": account, "signing_key": key_address})).result
        expires_at = (typed_data.SIGNING_KEY_NEVER_EXPIRES if validity_s is None
                      else int(time.time() + validity_s))
        sign_key = typed_data.sign_key_typed_data(verifying_contract=manager, account=account,
                                                  nonce=int(nonces["verify_signing_key_nonce"]))
        register_key = typed_data.register_signing_key_typed_data(
            verifying_contract=manager, key=key_address, expires_at=expires_at,
            nonce=int(nonces["signing_key_register_nonce"]))
        key_signature, _ = await self._signer.sign(key_id, sign_key)
        account_signature, signed_by = await self._signer.sign(account_key_id, register_key)
        if signed_by.lower() != account.lower():
            raise FailedPrecondition(f"signer key {account_key_id} is not the key of {account}",
                                     reason="ACCOUNT_KEY_MISMATCH")
        return _Signed(venue=venue, account=account, account_key_id=account_key_id, key_id=key_id,
                       key_address=key_address, expires_at=expires_at, key_signature=key_signature,
                       account_signature=account_signature)

    async def _complete(self, signed: _Signed, lease: Lease) -> Registration:
        """Steps 4-5, run to their end whatever happens to the caller (see `Completions`); then the lease goes."""
        try:
            return await self._register(signed, lease)
        finally:
            await lease.release()

    async def _register(self, signed: _Signed, lease: Lease) -> Registration:
        account = signed.account
        # The venue's call, then at least one write of the record, within the lease.
        lease.check(self._venue_timeout_s + self._vault_timeout_s, "public/register_signing_key")
        try:
            result = (await self._accounts.public.call("public/register_signing_key", {
                "account": account, "signerPublicAddress": signed.key_address, "expiresAt": str(signed.expires_at),
                "signingKeySignature": signed.key_signature, "accountSignature": signed.account_signature})).result
            registered = models.parse_register_signing_key(result)
        except SyndrError as exc:
            if not outcome_unknown(exc):
                raise  # the venue refused: nothing changed there
            log.error("public/register_signing_key outcome unknown: the venue may now accept only the new signing "
                      "key while Vault still names the previous one (and the API key pair it issued is lost); "
                      "a re-registration is needed: call RegisterSigningKey again for this account", extra={
                          "account": account, "key_id": signed.key_id, "address": signed.key_address,
                          "error": type(exc).__name__})
            raise Unavailable("the venue's answer to the signing-key registration was lost: it may have "
                              "registered the new key; call RegisterSigningKey again",
                              reason="REGISTRATION_OUTCOME_UNKNOWN") from None
        record = VenueAccount(venue=signed.venue, account=account,
                              credentials=ApiCredentials(registered.api_key, registered.api_secret),
                              signing_key_id=signed.key_id, signing_key_address=signed.key_address,
                              account_key_id=signed.account_key_id)
        await self._store(record, lease)
        log.info("signing key registered", extra={"account": account, "key_id": signed.key_id,
                                                  "api_key": registered.api_key})
        return Registration(record, signed.expires_at)

    async def _store(self, record: VenueAccount, lease: Lease) -> None:
        for attempt in range(1, _RECORD_WRITE_ATTEMPTS + 1):
            if lease.remaining_s() < self._vault_timeout_s:  # another process may take the lease and register
                log.error("the venue registered the new signing key, but its lease ran out before Vault took the "
                          "new credentials; a re-registration is needed: call RegisterSigningKey again for this "
                          "account", extra={"account": record.account, "key_id": record.signing_key_id,
                                            "attempt": attempt})
                raise Unavailable("the venue registered the key but it took too long to store the new credentials "
                                  "(another registration may follow); register again", reason="LEASE_EXPIRED")
            try:
                await self._accounts.store.put(record)
                return
            except VaultError as exc:
                log.error("storing the new venue credentials failed", extra={
                    "account": record.account, "attempt": attempt, "error": type(exc).__name__})
                if attempt == _RECORD_WRITE_ATTEMPTS:
                    raise Unavailable("the venue registered the key but Vault did not take the new credentials; "
                                      "register again once Vault is back", reason="VAULT_UNAVAILABLE") from None
                await asyncio.sleep(0.2 * attempt)
