"""secp256k1 signing against eth-account and an independent pure-Python
implementation (eth-keys' native backend), plus key and address handling."""

from __future__ import annotations

import random
import secrets

import pytest
from eth_account import Account
from eth_keys.backends.native.main import NativeECCBackend
from eth_keys.main import KeyAPI

from portico.runtime.eip712 import keccak256
from portico.runtime.secp256k1 import (
    SECP256K1_N,
    Secp256k1Key,
    address_from_private_key,
    generate_private_key,
    parse_private_key,
    recover_address,
    sign_digest,
    to_checksum_address,
)

NATIVE = KeyAPI(NativeECCBackend)


def random_key(rng: random.Random) -> bytes:
    return rng.randrange(1, SECP256K1_N).to_bytes(32, "big")


def test_signatures_match_eth_account_and_native_backend() -> None:
    rng = random.Random(27)
    keys = [(1).to_bytes(32, "big"), (SECP256K1_N - 1).to_bytes(32, "big")]
    keys += [random_key(rng) for _ in range(60)]
    for key in keys:
        digest = rng.randbytes(32)
        signature = sign_digest(key, digest)
        assert signature == bytes(Account.unsafe_sign_hash(digest, key).signature)
        native = NATIVE.ecdsa_sign(digest, NATIVE.PrivateKey(key))  # pure Python RFC 6979
        assert signature[:64] == native.to_bytes()[:64]
        assert signature[64] == 27 + native.v


def test_signature_shape_low_s_and_both_parities() -> None:
    rng = random.Random(28)
    seen_v = set()
    for _ in range(200):
        signature = sign_digest(random_key(rng), rng.randbytes(32))
        assert len(signature) == 65
        assert 0 < int.from_bytes(signature[32:64], "big") <= SECP256K1_N // 2
        seen_v.add(signature[64])
    assert seen_v == {27, 28}


def test_signing_is_deterministic() -> None:
    key, digest = keccak256(b"k"), keccak256(b"d")
    assert sign_digest(key, digest) == sign_digest(key, digest)
    assert sign_digest(key, digest) != sign_digest(key, keccak256(b"e"))


def test_loaded_key_signs_like_the_function_and_hides_the_secret() -> None:
    key = keccak256(b"loaded")
    loaded = Secp256k1Key(key)
    digest = keccak256(b"payload")
    assert loaded.sign_digest(digest) == sign_digest(key, digest)
    assert loaded.address == Account.from_key(key).address
    assert key.hex() not in repr(loaded)
    assert key.hex()[:16] not in repr(loaded)


def test_recover_address_round_trip() -> None:
    rng = random.Random(29)
    for _ in range(50):
        key = random_key(rng)
        digest = rng.randbytes(32)
        assert recover_address(digest, sign_digest(key, digest)) == Account.from_key(key).address


def test_recover_address_of_other_digest_differs() -> None:
    key = keccak256(b"x")
    signature = sign_digest(key, keccak256(b"a"))
    assert recover_address(keccak256(b"b"), signature) != Account.from_key(key).address


def test_recover_rejects_high_s_and_non_ethereum_v() -> None:
    key, digest = keccak256(b"y"), keccak256(b"z")
    signature = sign_digest(key, digest)
    r, s, v = signature[:32], int.from_bytes(signature[32:64], "big"), signature[64]
    high_s = r + (SECP256K1_N - s).to_bytes(32, "big") + bytes((55 - v,))  # the malleable twin
    # The twin is a valid ECDSA signature for the same key; chains refuse it, so do we.
    twin = NATIVE.Signature(vrs=(28 - v, int.from_bytes(r, "big"), SECP256K1_N - s))
    assert NATIVE.ecdsa_recover(digest, twin).to_checksum_address() == Account.from_key(key).address
    with pytest.raises(ValueError, match="lower half"):
        recover_address(digest, high_s)
    with pytest.raises(ValueError, match="27 or 28"):
        recover_address(digest, signature[:64] + bytes((v - 27,)))
    with pytest.raises(ValueError):
        recover_address(digest, signature[:64])
    with pytest.raises(ValueError):
        recover_address(digest, bytes(32) + signature[32:])  # r = 0
    with pytest.raises(ValueError):
        recover_address(digest[:31], signature)


def test_sign_digest_rejects_bad_inputs() -> None:
    key = keccak256(b"k")
    with pytest.raises(ValueError, match="32 bytes"):
        sign_digest(key, b"\x01" * 31)
    with pytest.raises(ValueError):
        sign_digest(bytes(32), keccak256(b"d"))
    with pytest.raises(ValueError):
        sign_digest(SECP256K1_N.to_bytes(32, "big"), keccak256(b"d"))
    with pytest.raises(ValueError):
        sign_digest(key[:31], keccak256(b"d"))


def test_address_from_private_key_matches_eth_account() -> None:
    rng = random.Random(30)
    for _ in range(20):
        key = random_key(rng)
        assert address_from_private_key(key) == Account.from_key(key).address
    # keccak("cow") is the EIP-712 example's signer.
    assert address_from_private_key(keccak256(b"cow")) == "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"


EIP55_VECTORS = [
    "0x52908400098527886E0F7030069857D2E4169EE7",
    "0x8617E340B3D01FA5F11F306F4090FD50E238070D",
    "0xde709f2102306220921060314715629080e2fb77",
    "0x27b1fdb04752bbc536007a920d24acb045561c26",
    "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
    "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
    "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
    "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
]


@pytest.mark.parametrize("expected", EIP55_VECTORS)
def test_to_checksum_address_eip55_vectors(expected: str) -> None:
    assert to_checksum_address(expected.lower()) == expected
    assert to_checksum_address("0x" + expected[2:].upper()) == expected
    assert to_checksum_address(expected) == expected
    assert to_checksum_address(bytes.fromhex(expected[2:])) == expected


@pytest.mark.parametrize(
    "bad",
    [
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD",  # one letter's case flipped
        "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beae",
        "5aaeb6053f3e94c9b9a09f33669435e7ef1beaed",
        "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaeg",
        b"\x00" * 19,
    ],
)
def test_to_checksum_address_rejects(bad: str | bytes) -> None:
    with pytest.raises(ValueError):
        to_checksum_address(bad)


def test_generate_private_key_is_valid_and_fresh() -> None:
    keys = {generate_private_key() for _ in range(50)}
    assert len(keys) == 50
    for key in keys:
        assert len(key) == 32
        assert 0 < int.from_bytes(key, "big") < SECP256K1_N
        Secp256k1Key(key)


def test_generate_private_key_rejects_out_of_range_draws(monkeypatch: pytest.MonkeyPatch) -> None:
    draws = iter([bytes(32), SECP256K1_N.to_bytes(32, "big"), b"\xff" * 32, b"\x07" * 32])
    monkeypatch.setattr(secrets, "token_bytes", lambda n: next(draws))
    assert generate_private_key() == b"\x07" * 32


@pytest.mark.parametrize("form", ["{h}", "0x{h}", "0X{h}", "  0x{h}\n", "{H}"])
def test_parse_private_key_forms(form: str) -> None:
    key = keccak256(b"parse me")
    text = form.format(h=key.hex(), H=key.hex().upper())
    assert parse_private_key(text) == key


@pytest.mark.parametrize(
    "text",
    [
        "0x" + "ab" * 31 + "a",  # 63 digits
        "0x" + "ab" * 33,  # 66 digits
        "0x" + "ab" * 31 + "zz",  # not hex
        "0x" + "00" * 32,  # zero
        hex(SECP256K1_N),  # the group order itself
        "0x" + "ab" * 30 + " " + "abc",  # inner whitespace
    ],
)
def test_parse_private_key_errors_never_contain_key_material(text: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_private_key(text)
    message = str(info.value)
    assert "abab" not in message.lower()
    assert text.strip()[2:12].lower() not in message.lower()
    assert info.value.__cause__ is None
    assert info.value.__context__ is None


def test_parse_private_key_rejects_non_strings() -> None:
    with pytest.raises(ValueError):
        parse_private_key(b"\x01" * 32)  # type: ignore[arg-type]
