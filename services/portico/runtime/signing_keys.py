"""Signing keys in Vault: where they live, what each may sign, and how keys are added.

Layout under a prefix (default `portico/signer`, the signer's `PORTICO_SIGNER_KEY_PREFIX`) of the KV mount:

    <prefix>/keys/<key_id>      {"private_key": "0x…", "address": "0x…"}   + custom metadata {"address"}
    <prefix>/policies/<key_id>  {"primary_types": […], "domain_names": […], "chain_ids": […], "allow_raw_digest": false}

The address is also kept in the key's custom metadata, so listing addresses
never reads a private key. A policy is default-deny: a key with no policy, or
a payload outside its lists, gets PERMISSION_DENIED with a reason saying which
rule failed.

Shared runtime rather than the signer's own code: the signer reads keys
(`portico.signer.keystore`), while the account service adds a new signing key
when it registers one, as do `portico up` and `portico signer keys`. Keys are
created, never overwritten, and no caller here reads a private key back.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from portico.runtime.eip712 import TypedDataHash
from portico.runtime.errors import InvalidArgument, PermissionDenied
from portico.runtime.secp256k1 import address_from_private_key, generate_private_key, parse_private_key
from portico.runtime.vault import VaultAuthError, VaultCasMismatch, VaultNotFound, VaultSession

__all__ = ["KEY_ID_RE", "KeyAdmin", "KeyAdminError", "KeyPaths", "KeyPolicy", "PolicyError", "check_key_id"]

KEY_ID_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")


def check_key_id(key_id: str, field_name: str = "key_id") -> str:
    """Return `key_id` if well formed, else raise INVALID_ARGUMENT."""
    if not KEY_ID_RE.fullmatch(key_id):
        raise InvalidArgument(field_name, "must be 1-64 characters of a-z, 0-9, '_', '.', '-', starting alphanumeric")
    return key_id


@dataclass(frozen=True)
class KeyPaths:
    """Where keys and policies live in the KV mount."""

    prefix: str = "portico/signer"

    @property
    def keys_dir(self) -> str:
        return f"{self.prefix}/keys"

    def key(self, key_id: str) -> str:
        return f"{self.prefix}/keys/{key_id}"

    def policy(self, key_id: str) -> str:
        return f"{self.prefix}/policies/{key_id}"


class PolicyError(ValueError):
    """A stored or supplied policy document is malformed."""


@dataclass(frozen=True, slots=True)
class KeyPolicy:
    """The allow-lists of one key."""

    primary_types: frozenset[str] = frozenset()
    domain_names: frozenset[str] = frozenset()
    chain_ids: frozenset[int] = frozenset()
    allow_raw_digest: bool = False

    @classmethod
    def build(cls, *, primary_types: Iterable[str] = (), domain_names: Iterable[str] = (),
              chain_ids: Iterable[int] = (), allow_raw_digest: bool = False) -> KeyPolicy:
        return cls(frozenset(primary_types), frozenset(domain_names), frozenset(chain_ids), allow_raw_digest)

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> KeyPolicy:
        """Parse the JSON document stored in Vault."""
        def strings(key: str) -> list[str]:
            value = doc.get(key, [])
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise PolicyError(f"policy `{key}` must be a list of non-empty strings")
            return value

        chain_ids = doc.get("chain_ids", [])
        if not isinstance(chain_ids, list) or not all(type(c) is int and c > 0 for c in chain_ids):
            raise PolicyError("policy `chain_ids` must be a list of positive integers")
        raw = doc.get("allow_raw_digest", False)
        if not isinstance(raw, bool):
            raise PolicyError("policy `allow_raw_digest` must be true or false")
        unknown = set(doc) - {"primary_types", "domain_names", "chain_ids", "allow_raw_digest"}
        if unknown:
            raise PolicyError(f"policy has unknown fields: {sorted(unknown)}")
        return cls.build(primary_types=strings("primary_types"), domain_names=strings("domain_names"),
                         chain_ids=chain_ids, allow_raw_digest=raw)

    def to_document(self) -> dict[str, Any]:
        return {
            "primary_types": sorted(self.primary_types),
            "domain_names": sorted(self.domain_names),
            "chain_ids": sorted(self.chain_ids),
            "allow_raw_digest": self.allow_raw_digest,
        }

    def check_typed_data(self, key_id: str, typed: TypedDataHash) -> None:
        """Raise PERMISSION_DENIED unless this key may sign `typed`."""
        if typed.primary_type not in self.primary_types:
            raise PermissionDenied(f"key {key_id} may not sign primary type {typed.primary_type!r}",
                                   reason="PRIMARY_TYPE_NOT_ALLOWED", metadata={"key_id": key_id})
        if typed.domain_name is None or typed.domain_name not in self.domain_names:
            raise PermissionDenied(f"key {key_id} may not sign for domain name {typed.domain_name!r}",
                                   reason="DOMAIN_NAME_NOT_ALLOWED", metadata={"key_id": key_id})
        if typed.chain_id is None or typed.chain_id not in self.chain_ids:
            raise PermissionDenied(f"key {key_id} may not sign for chain id {typed.chain_id}",
                                   reason="CHAIN_ID_NOT_ALLOWED", metadata={"key_id": key_id})

    def check_raw_digest(self, key_id: str) -> None:
        """Raise PERMISSION_DENIED unless this key may sign raw digests."""
        if not self.allow_raw_digest:
            raise PermissionDenied(f"key {key_id} may not sign raw digests", reason="RAW_DIGEST_NOT_ALLOWED",
                                   metadata={"key_id": key_id})


class KeyAdminError(Exception):
    """An admin operation could not be done; the message is safe to print."""


class KeyAdmin:
    """Key administration against Vault (used by the CLI, `portico up` and tests)."""

    def __init__(self, vault: VaultSession, paths: KeyPaths):
        self._vault = vault
        self._paths = paths

    async def create(self, key_id: str, policy: KeyPolicy) -> str:
        """Generate a key inside this process, store it with its policy; return the address."""
        return await self._store(key_id, generate_private_key(), policy)

    async def import_key(self, key_id: str, private_key_hex: str, policy: KeyPolicy) -> str:
        """Store an existing private key with its policy; return the address.

        A private key already stored under another key id is refused: the signer's salt watermarks hold
        per key, and one key under two ids is one more way to get them wrong. (Reading the other keys'
        addresses takes a token that may list key metadata, as the key administrator's does.)
        """
        try:
            private_key = parse_private_key(private_key_hex)
        except ValueError as exc:
            raise KeyAdminError(str(exc)) from None
        address = address_from_private_key(private_key)
        holders = [held for held, stored in await self.list_addresses() if stored.lower() == address.lower()]
        if holders:
            raise KeyAdminError(f"this private key is already stored as key {holders[0]} ({address}); "
                                "one key id per private key")
        return await self._store(key_id, private_key, policy)

    async def _store(self, key_id: str, private_key: bytes, policy: KeyPolicy) -> str:
        if not KEY_ID_RE.fullmatch(key_id):
            raise KeyAdminError(f"invalid key id {key_id!r}: use 1-64 of a-z 0-9 _ . - starting alphanumeric")
        address = address_from_private_key(private_key)
        # Asked first where the token may read metadata: a key administrator may create but not update, so
        # Vault refuses its write to an existing key with a bare "permission denied" before check-and-set
        # could say "exists". (A token that may not read metadata leaves it to the write.)
        with contextlib.suppress(VaultNotFound, VaultAuthError):
            await self._vault.read_kv_metadata(self._paths.key(key_id))
            raise KeyAdminError(f"key {key_id} already exists; keys are never overwritten")
        try:
            await self._vault.write_kv(self._paths.key(key_id), {"private_key": "0x" + private_key.hex(),
                                                                  "address": address}, cas=0)
        except VaultCasMismatch:
            raise KeyAdminError(f"key {key_id} already exists; keys are never overwritten") from None
        await self._vault.write_kv_metadata(self._paths.key(key_id), {"address": address})
        await self.set_policy(key_id, policy, must_exist=False)
        return address

    async def set_policy(self, key_id: str, policy: KeyPolicy, *, must_exist: bool = True) -> None:
        """Replace a key's policy."""
        if must_exist:
            try:
                await self._vault.read_kv_metadata(self._paths.key(key_id))
            except VaultNotFound:
                raise KeyAdminError(f"key {key_id} does not exist") from None
        await self._vault.write_kv(self._paths.policy(key_id), policy.to_document())

    async def list_addresses(self) -> list[tuple[str, str]]:
        """(key id, address) of every key, read from metadata only."""
        rows = []
        for key_id in sorted(await self._vault.list_kv(self._paths.keys_dir)):
            metadata = await self._vault.read_kv_metadata(self._paths.key(key_id))
            rows.append((key_id, metadata.custom_metadata.get("address", "?")))
        return rows
