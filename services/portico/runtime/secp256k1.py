"""Ethereum-style secp256k1 signatures over 32-byte digests (coincurve).

Signatures are 65 bytes ``r ‖ s ‖ v`` with ``v`` in {27, 28}, deterministic
(RFC 6979) and low-s, exactly what eth-account produces for the same key and
digest, so venues that verify with ``ecrecover`` / OpenZeppelin ``ECDSA``
accept them and the simulator can verify them the same way.

``sign_digest`` builds a coincurve key per call (~40 us of public-key
derivation on top of a ~25 us signature); code that signs repeatedly with one
key (the signer service) should hold a :class:`Secp256k1Key` instead.

Nothing here ever puts key material into an exception message or a repr.
"""

from __future__ import annotations

import re
import secrets
from functools import lru_cache
from typing import Final

import coincurve

from portico.runtime.eip712 import checksum_encode, keccak256

__all__ = [
    "SECP256K1_N",
    "Secp256k1Key",
    "address_from_private_key",
    "generate_private_key",
    "parse_private_key",
    "recover_address",
    "sign_digest",
    "to_checksum_address",
]

SECP256K1_N: Final = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_HALF_N: Final = SECP256K1_N // 2
_KEY_HEX_RE: Final = re.compile(r"[0-9a-fA-F]{64}\Z")
_ADDRESS_RE: Final = re.compile(r"0x[0-9a-fA-F]{40}\Z")


def _check_private_key(private_key: bytes) -> None:
    if not isinstance(private_key, bytes | bytearray):
        raise TypeError("private key must be bytes")
    if len(private_key) != 32:
        raise ValueError(f"private key must be 32 bytes, got {len(private_key)}")
    if not 0 < int.from_bytes(private_key, "big") < SECP256K1_N:
        raise ValueError("private key is not a valid secp256k1 scalar (zero or not below the curve order)")


def _check_digest(digest: bytes) -> None:
    if not isinstance(digest, bytes | bytearray) or len(digest) != 32:
        raise ValueError("digest must be exactly 32 bytes")


def _address_of(public_key: coincurve.PublicKey) -> str:
    return checksum_encode(keccak256(public_key.format(compressed=False)[1:])[12:])


class Secp256k1Key:
    """A loaded private key: derive the public key and address once, then
    sign many digests at libsecp256k1 speed."""

    __slots__ = ("_key", "address")

    def __init__(self, private_key: bytes) -> None:
        _check_private_key(private_key)
        self._key = coincurve.PrivateKey(bytes(private_key))
        self.address: str = _address_of(self._key.public_key)

    def sign_digest(self, digest: bytes) -> bytes:
        """Sign a 32-byte digest as ``r ‖ s ‖ v`` (65 bytes, v in {27, 28})."""
        _check_digest(digest)
        signature = self._key.sign_recoverable(bytes(digest), hasher=None)
        recovery_id = signature[64]
        if recovery_id > 1:  # r overflowed the group order: probability ~2**-127
            raise ValueError("signature not representable with v in {27, 28}")
        return signature[:64] + bytes((27 + recovery_id,))

    def __repr__(self) -> str:
        return f"Secp256k1Key(address={self.address})"


def sign_digest(private_key: bytes, digest: bytes) -> bytes:
    """Sign a 32-byte digest with a raw 32-byte key; see :class:`Secp256k1Key`
    for repeated signing with one key."""
    return Secp256k1Key(private_key).sign_digest(digest)


def recover_address(digest: bytes, signature: bytes) -> str:
    """Recover the EIP-55 address that produced ``signature`` over ``digest``.

    Accepts what on-chain verifiers (OpenZeppelin ``ECDSA.recover``) accept:
    65 bytes, ``v`` of 27 or 28, low ``s``; anything else raises ValueError,
    so the simulator rejects exactly what the chain would.
    """
    _check_digest(digest)
    if not isinstance(signature, bytes | bytearray) or len(signature) != 65:
        raise ValueError("signature must be 65 bytes r || s || v")
    v = signature[64]
    if v not in (27, 28):
        raise ValueError(f"signature v must be 27 or 28, got {v}")
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:64], "big")
    if not 0 < r < SECP256K1_N or not 0 < s <= _HALF_N:
        raise ValueError("signature r/s out of range (s must be in the lower half of the curve order)")
    try:
        public_key = coincurve.PublicKey.from_signature_and_message(
            bytes(signature[:64]) + bytes((v - 27,)), bytes(digest), hasher=None
        )
    except ValueError:
        raise ValueError("signature does not recover to a public key") from None
    return _address_of(public_key)


def address_from_private_key(private_key: bytes) -> str:
    """EIP-55 address of a raw 32-byte private key."""
    return Secp256k1Key(private_key).address


@lru_cache(maxsize=4096)
def _checksum_text(address: str) -> str:
    if not _ADDRESS_RE.match(address):
        raise ValueError(f"expected a 0x-prefixed 20-byte hex address, got {address[:48]!r}")
    body = address[2:]
    result = checksum_encode(bytes.fromhex(body))
    if body != body.lower() and body != body.upper() and result != address:
        raise ValueError(f"mixed-case address {address} fails its EIP-55 checksum")
    return result


def to_checksum_address(address: str | bytes) -> str:
    """EIP-55 form of an address given as 20 bytes or a 0x-hex string.

    All-lowercase and all-uppercase strings are accepted as they are; a
    mixed-case string must already carry a valid checksum (it is most
    likely a typo otherwise), unlike eth-utils which re-checksums silently.
    """
    if isinstance(address, str):
        return _checksum_text(address)
    if isinstance(address, bytes | bytearray):
        if len(address) != 20:
            raise ValueError(f"an address is 20 bytes, got {len(address)}")
        return checksum_encode(bytes(address))
    raise TypeError(f"address must be str or bytes, got {type(address).__name__}")


def generate_private_key() -> bytes:
    """A fresh private key from the OS CSPRNG (``secrets``), rejection-sampled
    into the valid scalar range 1..n-1."""
    while True:
        candidate = secrets.token_bytes(32)
        if 0 < int.from_bytes(candidate, "big") < SECP256K1_N:
            return candidate


def parse_private_key(hex_str: str) -> bytes:
    """Parse a 32-byte private key from hex (with or without ``0x``).

    Errors describe the problem only; they never echo the input, which may
    be a real key pasted with a typo.
    """
    if not isinstance(hex_str, str):
        raise ValueError("private key must be given as a hex string")
    text = hex_str.strip()
    if text[:2] in ("0x", "0X"):
        text = text[2:]
    if not _KEY_HEX_RE.match(text):
        raise ValueError(f"private key must be 64 hex digits (optionally 0x-prefixed), got {len(text)} characters")
    key = bytes.fromhex(text)
    if not 0 < int.from_bytes(key, "big") < SECP256K1_N:
        raise ValueError("private key is not a valid secp256k1 scalar (zero or not below the curve order)")
    return key
