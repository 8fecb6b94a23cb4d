"""The signer's signing keys, read from Vault (layout: `portico.runtime.signing_keys`) lazily and cached.

Each key is used for a short time and reloaded in the background ahead of
that. The cache is dropped whenever Vault goes away (sealed, unreachable, or
refusing the signer's token) and refilled lazily when it is back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from portico.runtime.cache import RefreshingCache
from portico.runtime.errors import FailedPrecondition, NotFound
from portico.runtime.secp256k1 import Secp256k1Key, parse_private_key
from portico.runtime.signing_keys import KeyPaths, KeyPolicy, PolicyError
from portico.runtime.vault import VaultError, VaultNotFound, VaultSession, vault_unavailable

__all__ = ["KeyStore", "LoadedKey"]

@dataclass(slots=True)
class LoadedKey:
    """A key ready to sign; its private part never leaves this object."""

    key_id: str
    address: str
    policy: KeyPolicy
    _key: Secp256k1Key = field(repr=False)

    def sign(self, digest: bytes) -> bytes:
        return self._key.sign_digest(digest)


class KeyStore:
    """Loads keys and policies from Vault on first use; uses each for at most `cache_ttl_s`, reloading it in
    the background ahead of that (so signing does not wait for Vault while keys are in use)."""

    def __init__(self, vault: VaultSession, paths: KeyPaths, *, cache_ttl_s: float = 30.0):
        self._vault = vault
        self._paths = paths
        self._cache: RefreshingCache[str, LoadedKey] = RefreshingCache(
            self._load, max_age_s=cache_ttl_s, name="signing-keys", drop_on=(NotFound, FailedPrecondition))

    def clear(self) -> None:
        """Forget every cached key (Vault went away or refuses the signer)."""
        self._cache.clear()

    def __len__(self) -> int:
        return len(self._cache)

    async def get(self, key_id: str) -> LoadedKey:
        return await self._cache.get(key_id)

    async def aclose(self) -> None:
        self._cache.clear()
        await self._cache.aclose()

    async def _load(self, key_id: str) -> LoadedKey:
        try:
            secret = await self._vault.read_kv(self._paths.key(key_id))
        except VaultNotFound:
            raise NotFound(f"signing key {key_id} does not exist", reason="KEY_NOT_FOUND",
                           metadata={"key_id": key_id}) from None
        except VaultError as exc:
            raise vault_unavailable(exc, f"read key {key_id}") from None
        try:
            policy_doc = await self._vault.read_kv(self._paths.policy(key_id))
        except VaultNotFound:
            policy_doc = {}
        except VaultError as exc:
            raise vault_unavailable(exc, f"read the policy of key {key_id}") from None
        try:
            private_key = parse_private_key(str(secret.get("private_key", "")))
            policy = KeyPolicy.from_document(policy_doc)
        except (ValueError, PolicyError) as exc:
            raise FailedPrecondition(f"key {key_id} is malformed in Vault: {exc}", reason="KEY_MALFORMED",
                                     metadata={"key_id": key_id}) from None
        key = Secp256k1Key(private_key)
        return LoadedKey(key_id, key.address, policy, key)
