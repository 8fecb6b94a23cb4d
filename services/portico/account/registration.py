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
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass

from portico.runtime.errors import FailedPrecondition, Unavailable
from portico.runtime.signing_keys import KeyAdmin, KeyAdminError, KeyPaths, KeyPolicy
from portico.runtime.vault import VaultError, VaultSession
from portico.signer.client import SignerClient
from portico.venues.accounts import SyndrAccounts, VenueAccount
from portico.venues.syndr import models, typed_data
from portico.venues.syndr.credentials import ApiCredentials

__all__ = ["Registration", "SigningKeyRegistrar"]

log = logging.getLogger("portico.account.registration")

_RECORD_WRITE_ATTEMPTS = 5
SIGNING_KEY_POLICY = KeyPolicy.build(primary_types=[typed_data.ORDER_PRIMARY_TYPE, typed_data.SIGN_KEY_PRIMARY_TYPE],
                                     domain_names=[typed_data.SYNDR_DOMAIN_NAME],
                                     chain_ids=[typed_data.SYNDR_CHAIN_ID])


@dataclass(frozen=True)
class Registration:
    """What a registration produced (the API secret stays in Vault)."""

    record: VenueAccount
    expires_at: int  # seconds since the epoch; SIGNING_KEY_NEVER_EXPIRES for never


class SigningKeyRegistrar:
    """Registers a new signing key for an account Portico holds the account key of."""

    def __init__(self, vault: VaultSession, key_paths: KeyPaths, signer: SignerClient, accounts: SyndrAccounts):
        self._admin = KeyAdmin(vault, key_paths)
        self._signer = signer
        self._accounts = accounts
        self._locks: dict[str, asyncio.Lock] = {}

    async def register(self, venue: str, account: str, validity_s: float | None) -> Registration:
        async with self._locks.setdefault(account.lower(), asyncio.Lock()):  # one rotation at a time per account
            return await self._register(venue, account, validity_s)

    async def _register(self, venue: str, account: str, validity_s: float | None) -> Registration:
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
            raise Unavailable(f"Vault unavailable creating the signing key ({type(exc).__name__})",
                              reason="VAULT_UNAVAILABLE") from None
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
        result = (await public.call("public/register_signing_key", {
            "account": account, "signerPublicAddress": key_address, "expiresAt": str(expires_at),
            "signingKeySignature": key_signature, "accountSignature": account_signature})).result
        registered = models.parse_register_signing_key(result)
        record = VenueAccount(venue=venue, account=account,
                              credentials=ApiCredentials(registered.api_key, registered.api_secret),
                              signing_key_id=key_id, signing_key_address=key_address, account_key_id=account_key_id)
        await self._store(record)
        log.info("signing key registered", extra={"account": account, "key_id": key_id,
                                                  "api_key": registered.api_key})
        return Registration(record, expires_at)

    async def _store(self, record: VenueAccount) -> None:
        for attempt in range(1, _RECORD_WRITE_ATTEMPTS + 1):
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
