"""What a key may sign: EIP-712 primary types, domain names, chain ids, raw digests.

A policy is default-deny: a key with no policy, or a payload outside its
lists, gets PERMISSION_DENIED with a reason saying which rule failed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from portico.runtime.eip712 import TypedDataHash
from portico.runtime.errors import PermissionDenied

__all__ = ["KeyPolicy", "PolicyError"]


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
