"""EIP-712 hashing against the spec's vectors and eth-account, plus every
validation rule and the Syndr typed-data builders."""

from __future__ import annotations

import copy
import random
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import pytest
from eth_account import Account
from eth_account._utils.encode_typed_data.encoding_and_hashing import hash_domain, hash_struct
from eth_account.messages import _hash_eip191_message, encode_typed_data
from eth_utils.address import to_checksum_address as eth_checksum

from portico.runtime import eip712
from portico.runtime.eip712 import TypedDataError, TypedDataHash, hash_typed_data, keccak256
from portico.runtime.secp256k1 import SECP256K1_N, recover_address, sign_digest
from portico.venues.syndr import typed_data as syndr
from portico.venues.syndr.typed_data import (
    OrderType,
    TimeInForce,
    from_fixed,
    order_typed_data,
    register_signing_key_typed_data,
    sign_key_typed_data,
    to_fixed,
)

# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

DOMAIN_TYPE = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]
ORDERBOOK = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
KEYS_MANAGER = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"
ACCOUNT = "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"


def eth_digest(full: dict[str, Any]) -> bytes:
    """The digest eth-account signs for a full typed-data object."""
    return bytes(_hash_eip191_message(encode_typed_data(full_message=copy.deepcopy(full))))


def eth_signature(key: bytes, full: dict[str, Any]) -> bytes:
    return bytes(Account.sign_typed_data(key, full_message=copy.deepcopy(full)).signature)


def random_key(rng: random.Random) -> bytes:
    return (rng.randrange(1, SECP256K1_N)).to_bytes(32, "big")


def field_of(data: Any) -> str:
    with pytest.raises(TypedDataError) as info:
        hash_typed_data(data)
    return info.value.field


def mail() -> dict[str, Any]:
    """The example of the EIP-712 specification."""
    return {
        "types": {
            "EIP712Domain": copy.deepcopy(DOMAIN_TYPE),
            "Person": [{"name": "name", "type": "string"}, {"name": "wallet", "type": "address"}],
            "Mail": [
                {"name": "from", "type": "Person"},
                {"name": "to", "type": "Person"},
                {"name": "contents", "type": "string"},
            ],
        },
        "primaryType": "Mail",
        "domain": {
            "name": "Ether Mail",
            "version": "1",
            "chainId": 1,
            "verifyingContract": "0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC",
        },
        "message": {
            "from": {"name": "Cow", "wallet": "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"},
            "to": {"name": "Bob", "wallet": "0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB"},
            "contents": "Hello, Bob!",
        },
    }


def mail_v4(with_group: bool = False) -> dict[str, Any]:
    """MetaMask's eth_signTypedData_v4 example: arrays of structs and addresses."""
    types: dict[str, Any] = {
        "EIP712Domain": copy.deepcopy(DOMAIN_TYPE),
        "Mail": [
            {"name": "from", "type": "Person"},
            {"name": "to", "type": "Person[]"},
            {"name": "contents", "type": "string"},
        ],
        "Person": [{"name": "name", "type": "string"}, {"name": "wallets", "type": "address[]"}],
    }
    if with_group:
        types["Group"] = [{"name": "name", "type": "string"}, {"name": "members", "type": "Person[]"}]
    return {
        "types": types,
        "primaryType": "Mail",
        "domain": mail()["domain"],
        "message": {
            "from": {
                "name": "Cow",
                "wallets": [
                    "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826",
                    "0xDeaDbeefdEAdbeefdEadbEEFdeadbeEFdEaDbeeF",
                ],
            },
            "to": [
                {
                    "name": "Bob",
                    "wallets": [
                        "0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB",
                        "0xB0BdaBea57B0BDABeA57b0bdABEA57b0BDabEa57",
                        "0xB0B0b0b0b0b0B000000000000000000000000000",
                    ],
                }
            ],
            "contents": "Hello, Bob!",
        },
    }


def kitchen_sink() -> dict[str, Any]:
    """Every atomic kind, fixed and nested arrays, a recursive struct, a salted domain."""
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
                {"name": "salt", "type": "bytes32"},
            ],
            "Bag": [
                {"name": "flag", "type": "bool"},
                {"name": "small", "type": "int8"},
                {"name": "big", "type": "int256"},
                {"name": "u16", "type": "uint16"},
                {"name": "blob", "type": "bytes"},
                {"name": "word", "type": "bytes32"},
                {"name": "tag", "type": "bytes4"},
                {"name": "text", "type": "string"},
                {"name": "pair", "type": "uint256[2]"},
                {"name": "grid", "type": "int16[][3]"},
                {"name": "names", "type": "string[]"},
                {"name": "tree", "type": "Node"},
                {"name": "empty", "type": "bytes[]"},
            ],
            "Node": [{"name": "value", "type": "uint256"}, {"name": "children", "type": "Node[]"}],
        },
        "primaryType": "Bag",
        "domain": {
            "name": "Sink",
            "version": "2",
            "chainId": 10,
            "verifyingContract": "0x1111111111111111111111111111111111111111",
            "salt": "0x" + "ab" * 32,
        },
        "message": {
            "flag": True,
            "small": -128,
            "big": -(2**255),
            "u16": "0xffff",
            "blob": "0x00ff10",
            "word": "0x" + "01" * 32,
            "tag": "0xdeadbeef",
            "text": "Grüße, 世界 🚀",
            "pair": [0, 2**256 - 1],
            "grid": [[1, -2], [], [32767, -32768, "-5"]],
            "names": ["a", "", "ccc"],
            "tree": {
                "value": 1,
                "children": [
                    {"value": 2, "children": []},
                    {"value": "3", "children": [{"value": 4, "children": []}]},
                ],
            },
            "empty": [],
        },
    }


def syndr_order(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "verifying_contract": ORDERBOOK,
        "account": ACCOUNT,
        "instrument_id": 7,
        "is_buy": True,
        "order_type": OrderType.LIMIT,
        "time_in_force": TimeInForce.GTC,
        "post_only": False,
        "reduce_only": False,
        "price": Decimal("3500.25"),
        "amount": Decimal("0.001"),
        "salt": 647684,
        "expiration": 1718133868572,
        "timestamp": 1718133867572,
    }
    fields.update(overrides)
    return order_typed_data(**fields)


# --------------------------------------------------------------------------
# keccak
# --------------------------------------------------------------------------


def test_keccak256_known_vectors() -> None:
    assert keccak256(b"").hex() == "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
    assert keccak256(b"abc").hex() == "4e03657aea45a94fc7d47ba826c8d667c0d1e6e33a64a036ec44f58fa12d6c45"


def test_keccak256_fast_path_matches_portable_path() -> None:
    rng = random.Random(712)
    for size in [*range(0, 300), 1000, 4096, 100_000]:
        data = rng.randbytes(size)
        assert keccak256(data) == eip712._keccak256_portable(data)
    assert keccak256(b"abc") == keccak256(b"abc")  # a reused state carries nothing over
    assert keccak256(bytearray(b"abc")) == keccak256(memoryview(b"abc")) == keccak256(b"abc")  # type: ignore[arg-type]


def test_keccak256_is_thread_safe() -> None:
    inputs = [random.Random(i).randbytes(i % 300) for i in range(2000)]
    expected = [eip712._keccak256_portable(data) for data in inputs]
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(3):
            assert list(pool.map(keccak256, inputs)) == expected


# --------------------------------------------------------------------------
# golden vectors
# --------------------------------------------------------------------------


def test_spec_mail_example_matches_the_eip() -> None:
    result = hash_typed_data(mail())
    assert result.domain_separator.hex() == "f2cee375fa42b42143804025fc449deafd50cc031ca257e0b194a650a912090f"
    assert result.struct_hash.hex() == "c52c0ee5d84264471806290a3f2c4cecfc5490626bf912d01f240d7a274b371e"
    assert result.digest.hex() == "be609aee343fb3c4b28e1df9e632fca64fcfaede20f02e86244efddf30957bd2"
    signature = sign_digest(keccak256(b"cow"), result.digest)
    assert signature.hex() == (
        "4355c47d63924e8a72e509b65029052eb6c299d53a04e167c5775fd466751c9d"
        "07299936d304c153f6443dfa05f40ff007d72911b6f72307f996231605b91562"
        "1c"
    )
    assert result.digest == eth_digest(mail())


def test_metamask_v4_example_matches_eth_sig_util_and_ignores_unused_types() -> None:
    # eth-sig-util's published v4 hash, computed with the unused `Group` type present.
    expected = "a85c2e2b118698e88db68a8105b794a8cc7cec074e89ef991cb4f5f533819cc2"
    assert hash_typed_data(mail_v4(with_group=True)).digest.hex() == expected
    assert hash_typed_data(mail_v4()).digest.hex() == expected
    assert eth_digest(mail_v4()).hex() == expected


GENERIC_CASES = {
    "mail": mail,
    "mail_v4": mail_v4,
    "kitchen_sink": kitchen_sink,
}


@pytest.mark.parametrize("name", sorted(GENERIC_CASES))
def test_generic_examples_match_eth_account_digest_and_signature(name: str) -> None:
    data = GENERIC_CASES[name]()
    key = keccak256(name.encode())
    result = hash_typed_data(data)
    assert result.digest == eth_digest(data)
    assert result.domain_separator == bytes(hash_domain(data["domain"]))
    types = {k: v for k, v in data["types"].items() if k != "EIP712Domain"}
    assert result.struct_hash == bytes(hash_struct(data["primaryType"], types, data["message"]))
    signature = sign_digest(key, result.digest)
    assert signature == eth_signature(key, data)
    assert recover_address(result.digest, signature) == Account.from_key(key).address


def test_domain_inferred_when_eip712domain_absent_like_eth_account() -> None:
    for keys in (("name",), ("chainId", "name"), ("verifyingContract", "version", "salt"), ()):
        data = kitchen_sink()
        del data["types"]["EIP712Domain"]
        data["domain"] = {k: data["domain"][k] for k in keys}
        assert hash_typed_data(data).digest == eth_digest(data), keys


def test_mutually_recursive_types_follow_encode_type_rules() -> None:
    types = {
        "A": [{"name": "bs", "type": "B[]"}, {"name": "x", "type": "uint256"}],
        "B": [{"name": "as", "type": "A[]"}, {"name": "y", "type": "uint8"}],
    }
    message: dict[str, Any] = {"bs": [{"as": [{"bs": [], "x": 5}], "y": 1}, {"as": [], "y": 2}], "x": 9}
    data = {"types": copy.deepcopy(types), "primaryType": "A", "domain": {"name": "R"}, "message": message}
    result = hash_typed_data(data)
    # eth-account cannot pick a primary type here, so use its struct hashing directly.
    assert result.struct_hash == bytes(hash_struct("A", types, message))
    assert result.domain_separator == bytes(hash_domain({"name": "R"}))
    hash_b = hash_typed_data({**data, "primaryType": "B", "message": message["bs"][0]}).struct_hash
    assert hash_b == bytes(hash_struct("B", types, message["bs"][0]))


def test_string_and_hex_integers_hash_like_ints() -> None:
    base = hash_typed_data(syndr_order()).digest
    data = syndr_order()
    data["message"]["price"] = str(data["message"]["price"])
    data["message"]["salt"] = hex(data["message"]["salt"])
    data["domain"]["chainId"] = "421614"
    assert hash_typed_data(data).digest == base
    assert eth_digest(data) == base


def test_address_case_does_not_change_digest() -> None:
    base = hash_typed_data(syndr_order()).digest
    for transform in (str.lower, lambda a: "0x" + a[2:].upper()):
        data = syndr_order()
        data["message"]["account"] = transform(data["message"]["account"])
        data["domain"]["verifyingContract"] = transform(data["domain"]["verifyingContract"])
        assert hash_typed_data(data).digest == base


def test_result_carries_policy_inputs() -> None:
    data = syndr_order()
    data["domain"]["verifyingContract"] = ORDERBOOK.lower()
    data["domain"]["chainId"] = hex(421614)
    result = hash_typed_data(data)
    assert isinstance(result, TypedDataHash)
    assert result.primary_type == "Order"
    assert result.domain_name == "Syndr"
    assert result.chain_id == 421614
    assert result.verifying_contract == ORDERBOOK  # EIP-55 form, whatever case came in
    assert result.message is data["message"]
    assert result.digest == keccak256(b"\x19\x01" + result.domain_separator + result.struct_hash)
    bare = hash_typed_data({"types": {"T": []}, "primaryType": "T", "domain": {}, "message": {}})
    assert (bare.domain_name, bare.chain_id, bare.verifying_contract) == (None, None, None)


# --------------------------------------------------------------------------
# Syndr types
# --------------------------------------------------------------------------


def test_syndr_order_matches_eth_account() -> None:
    data = syndr_order()
    assert data["types"]["Order"] == [
        {"name": "account", "type": "address"},
        {"name": "instrumentId", "type": "uint256"},
        {"name": "isBuy", "type": "bool"},
        {"name": "orderType", "type": "uint8"},
        {"name": "timeInForce", "type": "uint8"},
        {"name": "postOnly", "type": "bool"},
        {"name": "reduceOnly", "type": "bool"},
        {"name": "price", "type": "uint256"},
        {"name": "amount", "type": "uint256"},
        {"name": "salt", "type": "uint256"},
        {"name": "expiration", "type": "uint256"},
        {"name": "timestamp", "type": "uint256"},
    ]
    assert data["domain"] == {
        "name": "Syndr",
        "version": "1",
        "chainId": 421614,
        "verifyingContract": ORDERBOOK,
    }
    assert data["message"]["price"] == 3500250000000000000000
    assert data["message"]["amount"] == 1000000000000000
    key = keccak256(b"syndr order")
    result = hash_typed_data(data)
    assert result.digest == eth_digest(data)
    assert sign_digest(key, result.digest) == eth_signature(key, data)


def test_sign_key_matches_the_seed_script() -> None:
    # The seed's structured_data, built the way its script builds it.
    account_key = keccak256(b"account")
    signing_key = keccak256(b"signing key")
    account = Account.from_key(account_key).address
    seed_structured = {
        "types": {
            "EIP712Domain": copy.deepcopy(DOMAIN_TYPE),
            "SignKey": [{"name": "account", "type": "address"}, {"name": "nonce", "type": "uint256"}],
        },
        "primaryType": "SignKey",
        "domain": {"name": "Syndr", "version": "1", "chainId": 421614, "verifyingContract": KEYS_MANAGER},
        "message": {"account": account, "nonce": 3},
    }
    ours = sign_key_typed_data(verifying_contract=KEYS_MANAGER.lower(), account=account.lower(), nonce=3)
    assert ours == seed_structured
    digest = hash_typed_data(ours).digest
    assert digest == eth_digest(seed_structured)
    signature = sign_digest(signing_key, digest)
    assert signature == bytes(
        Account.sign_message(encode_typed_data(full_message=seed_structured), signing_key).signature
    )
    assert recover_address(digest, signature) == Account.from_key(signing_key).address


def test_register_signing_key_matches_the_seed_script() -> None:
    account_key = keccak256(b"account")
    signer = Account.from_key(keccak256(b"signing key")).address
    max_uint256 = int("0xffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff", 16)
    seed_structured = {
        "types": {
            "EIP712Domain": copy.deepcopy(DOMAIN_TYPE),
            "RegisterSigningKey": [
                {"name": "key", "type": "address"},
                {"name": "expiresAt", "type": "uint256"},
                {"name": "nonce", "type": "uint256"},
            ],
        },
        "primaryType": "RegisterSigningKey",
        "domain": {"name": "Syndr", "version": "1", "chainId": 421614, "verifyingContract": KEYS_MANAGER},
        "message": {"key": signer, "expiresAt": max_uint256, "nonce": 0},
    }
    ours = register_signing_key_typed_data(verifying_contract=KEYS_MANAGER, key=signer, nonce=0)
    assert ours == seed_structured
    digest = hash_typed_data(ours).digest
    assert digest == eth_digest(seed_structured)
    assert sign_digest(account_key, digest) == eth_signature(account_key, seed_structured)
    dated = register_signing_key_typed_data(verifying_contract=KEYS_MANAGER, key=signer, expires_at=17, nonce=2)
    assert hash_typed_data(dated).digest == eth_digest(dated) != digest


def random_decimal(rng: random.Random) -> tuple[Decimal, int]:
    """A Decimal with 0..18 places and the fixed-point integer it must become."""
    places = rng.randrange(0, 19)
    units = rng.randrange(0, 10 ** rng.randrange(1, 30))
    return Decimal(f"{units}E-{places}"), units * 10 ** (18 - places)


def test_random_syndr_orders_match_eth_account() -> None:
    rng = random.Random(421614)
    for _ in range(300):
        key = random_key(rng)
        account = eth_checksum("0x" + rng.randbytes(20).hex())
        price, price_fixed = random_decimal(rng)
        amount, amount_fixed = random_decimal(rng)
        data = syndr_order(
            verifying_contract="0x" + rng.randbytes(20).hex(),
            account=account.lower() if rng.random() < 0.5 else account,
            instrument_id=rng.randrange(2**256),
            is_buy=rng.random() < 0.5,
            order_type=rng.choice(list(OrderType)),
            time_in_force=rng.choice(list(TimeInForce)),
            post_only=rng.random() < 0.5,
            reduce_only=rng.random() < 0.5,
            price=price,
            amount=amount,
            salt=rng.randrange(2 ** rng.choice((8, 64, 256))),
            expiration=rng.randrange(2**64),
            timestamp=rng.randrange(2**64),
        )
        assert data["message"]["price"] == price_fixed
        assert data["message"]["amount"] == amount_fixed
        digest = hash_typed_data(data).digest
        assert digest == eth_digest(data)
        signature = sign_digest(key, digest)
        assert signature == bytes(Account.sign_message(encode_typed_data(full_message=data), key).signature)


# --------------------------------------------------------------------------
# random schemas
# --------------------------------------------------------------------------


def _random_atomic(rng: random.Random) -> str:
    kind = rng.choice(["uint", "int", "bytesN", "bytes", "string", "bool", "address"])
    if kind in ("uint", "int"):
        return f"{kind}{8 * rng.randrange(1, 33)}"
    if kind == "bytesN":
        return f"bytes{rng.randrange(1, 33)}"
    return kind


def _random_value(rng: random.Random, type_: str, types: dict[str, Any], depth: int = 0) -> Any:
    if type_.endswith("]"):
        inner, _, dim = type_[:-1].rpartition("[")
        length = int(dim) if dim else rng.randrange(0, 4)
        return [_random_value(rng, inner, types, depth + 1) for _ in range(length)]
    if type_ in types:
        return {f["name"]: _random_value(rng, f["type"], types, depth + 1) for f in types[type_]}
    if type_.startswith("uint"):
        value = rng.randrange(2 ** int(type_[4:]))
        return rng.choice([value, str(value), hex(value)])
    if type_.startswith("int"):
        bits = int(type_[3:])
        value = rng.randrange(-(2 ** (bits - 1)), 2 ** (bits - 1))
        return rng.choice([value, str(value)])
    if type_ == "bytes":
        return "0x" + rng.randbytes(rng.randrange(0, 70)).hex()
    if type_.startswith("bytes"):
        return "0x" + rng.randbytes(int(type_[5:])).hex()
    if type_ == "string":
        return "".join(rng.choice("ab Zé中😀") for _ in range(rng.randrange(0, 12)))
    if type_ == "bool":
        return rng.random() < 0.5
    address = eth_checksum("0x" + rng.randbytes(20).hex())
    return rng.choice([address, address.lower()])


def _random_schema(rng: random.Random) -> dict[str, Any]:
    count = rng.randrange(1, 5)
    names = [f"S{i}" for i in range(count)]
    types: dict[str, Any] = {}
    for i, name in enumerate(names):
        fields = []
        # Only later structs may be referenced, and each one is, so S0 is the single root.
        later = names[i + 1 :]
        must = [n for n in later if not any(n in f["type"] for t in types.values() for f in t)]
        for j in range(rng.randrange(1, 6)):
            if later and ((j == 0 and must) or rng.random() < 0.3):
                base = must.pop(0) if must else rng.choice(later)
            else:
                base = _random_atomic(rng)
            for _ in range(rng.choice([0, 0, 0, 1, 1, 2])):
                base += rng.choice(["[]", f"[{rng.randrange(1, 4)}]"])
            fields.append({"name": f"f{j}", "type": base})
        for n in must:
            fields.append({"name": f"g_{n}", "type": n})
        types[name] = fields
    return types


def test_random_schemas_match_eth_account() -> None:
    rng = random.Random(2024)
    for _ in range(200):
        types = _random_schema(rng)
        data = {
            "types": types,
            "primaryType": "S0",
            "domain": {"name": "Rand", "chainId": rng.randrange(1, 2**64)},
            "message": _random_value(rng, "S0", types),
        }
        assert hash_typed_data(data).digest == eth_digest(data), data


# --------------------------------------------------------------------------
# caching must never change a result
# --------------------------------------------------------------------------


def test_type_cache_sees_in_place_changes() -> None:
    data = syndr_order()
    first = hash_typed_data(data).digest
    data["types"]["Order"][3]["type"] = "uint16"  # same names, different definition
    changed = hash_typed_data(data).digest
    assert changed != first
    assert changed == eth_digest(data)
    data["types"]["Order"][3]["type"] = "uint8"
    assert hash_typed_data(data).digest == first


def test_type_cache_does_not_accept_what_validation_rejects() -> None:
    hash_typed_data(syndr_order())
    data = syndr_order()
    data["types"]["Order"][0]["internalType"] = "address"
    assert field_of(data) == "types.Order[0].internalType"


def test_domain_cache_distinguishes_true_from_one() -> None:
    domain: dict[str, Any] = {"chainId": 1}
    data = {"types": {"T": []}, "primaryType": "T", "domain": domain, "message": {}}
    hash_typed_data(data)
    domain["chainId"] = True
    assert field_of(data) == "domain.chainId"
    domain["chainId"] = 1.0
    assert field_of(data) == "domain.chainId"


def test_domain_cache_sees_value_changes() -> None:
    a = hash_typed_data(syndr_order()).domain_separator
    b = hash_typed_data(syndr_order(verifying_contract=KEYS_MANAGER)).domain_separator
    assert a != b
    assert b == bytes(hash_domain(syndr_order(verifying_contract=KEYS_MANAGER)["domain"]))


# --------------------------------------------------------------------------
# validation: one test per rule, each naming the field
# --------------------------------------------------------------------------


def test_top_level_must_be_an_object() -> None:
    assert field_of(["types"]) == "typedData"


@pytest.mark.parametrize("key", ["types", "primaryType", "domain", "message"])
def test_missing_top_level_key(key: str) -> None:
    data = syndr_order()
    del data[key]
    assert field_of(data) == key


def test_extra_top_level_key() -> None:
    assert field_of({**syndr_order(), "signature": "0x"}) == "signature"


def test_types_must_be_an_object() -> None:
    assert field_of({**syndr_order(), "types": [1]}) == "types"


def test_type_fields_must_be_an_array() -> None:
    data = syndr_order()
    data["types"]["Order"] = {"name": "account", "type": "address"}
    assert field_of(data) == "types.Order"


def test_field_definition_must_be_an_object() -> None:
    data = syndr_order()
    data["types"]["Order"][2] = ["isBuy", "bool"]
    assert field_of(data) == "types.Order[2]"


def test_field_definition_missing_type() -> None:
    data = syndr_order()
    del data["types"]["Order"][3]["type"]
    assert field_of(data) == "types.Order[3].type"


def test_field_definition_extra_key() -> None:
    data = syndr_order()
    data["types"]["Order"][1]["internalType"] = "uint256"
    assert field_of(data) == "types.Order[1].internalType"


@pytest.mark.parametrize("bad", ["uint256[", "uint 256", "uint256[0]", "uint256[01]", "", 5])
def test_malformed_field_type(bad: Any) -> None:
    data = syndr_order()
    data["types"]["Order"][7]["type"] = bad
    assert field_of(data) == "types.Order[7].type"


@pytest.mark.parametrize(
    "bad", ["uint", "int", "uint7", "uint264", "int0", "bytes0", "bytes33", "Price", "EIP712Domain"]
)
def test_unknown_type_reference(bad: str) -> None:
    data = syndr_order()
    data["types"]["Order"][7]["type"] = bad
    assert field_of(data) == "types.Order[7].type"


def test_unknown_type_inside_array_reference() -> None:
    data = mail_v4()
    data["types"]["Mail"][1]["type"] = "Persons[]"
    assert field_of(data) == "types.Mail[1].type"


@pytest.mark.parametrize("bad", ["", "1abc", "a-b", 7])
def test_invalid_field_name(bad: Any) -> None:
    data = syndr_order()
    data["types"]["Order"][4]["name"] = bad
    assert field_of(data) == "types.Order[4].name"


def test_duplicate_field_name() -> None:
    data = syndr_order()
    data["types"]["Order"][4]["name"] = "orderType"
    assert field_of(data) == "types.Order[4].name"


def test_invalid_type_name() -> None:
    data = syndr_order()
    data["types"]["Bad Name"] = []
    assert field_of(data) == "types"


def test_too_many_types() -> None:
    data = syndr_order()
    for i in range(eip712.MAX_TYPES):
        data["types"][f"T{i}"] = []
    assert field_of(data) == "types"


def test_quadratic_type_expansion_is_refused() -> None:
    # A chain of structs: each encodeType repeats every later definition.
    count, width = 250, 30
    types: dict[str, Any] = {
        f"T{i}": [{"name": "next", "type": f"T{i + 1}[]"}]
        + [{"name": f"f{j}", "type": "uint256"} for j in range(width)]
        for i in range(count)
    }
    types[f"T{count}"] = []
    message = {"next": [], **{f"f{j}": 0 for j in range(width)}}
    data = {"types": types, "primaryType": "T0", "domain": {}, "message": message}
    with pytest.raises(TypedDataError, match="expand to more than") as info:
        hash_typed_data(data)
    assert info.value.field == "types"


def test_atomic_type_cannot_be_redefined() -> None:
    data = syndr_order()
    data["types"]["uint256"] = [{"name": "x", "type": "bool"}]
    assert field_of(data) == "types.uint256"


def test_primary_type_must_be_a_string() -> None:
    assert field_of({**syndr_order(), "primaryType": ["Order"]}) == "primaryType"


def test_primary_type_must_be_defined() -> None:
    assert field_of({**syndr_order(), "primaryType": "Orders"}) == "primaryType"


def test_primary_type_cannot_be_the_domain() -> None:
    assert field_of({**syndr_order(), "primaryType": "EIP712Domain"}) == "primaryType"


def test_domain_definition_must_be_in_canonical_order() -> None:
    data = syndr_order()
    domain_type = data["types"]["EIP712Domain"]
    domain_type[0], domain_type[2] = domain_type[2], domain_type[0]
    assert field_of(data) == "types.EIP712Domain[1].name"  # chainId, then version: out of order


def test_domain_definition_must_use_canonical_types() -> None:
    data = syndr_order()
    data["types"]["EIP712Domain"][2]["type"] = "uint64"
    assert field_of(data) == "types.EIP712Domain[2].type"


def test_domain_definition_rejects_unknown_fields() -> None:
    data = syndr_order()
    data["types"]["EIP712Domain"].append({"name": "owner", "type": "address"})
    data["domain"]["owner"] = ACCOUNT
    assert field_of(data) == "types.EIP712Domain[4].name"


def test_domain_must_be_an_object() -> None:
    assert field_of({**syndr_order(), "domain": "Syndr"}) == "domain"


def test_domain_missing_declared_field() -> None:
    data = syndr_order()
    del data["domain"]["chainId"]
    assert field_of(data) == "domain.chainId"


def test_domain_field_not_declared() -> None:
    data = syndr_order()
    data["domain"]["salt"] = "0x" + "00" * 32
    assert field_of(data) == "domain.salt"


def test_inferred_domain_rejects_unknown_keys() -> None:
    data = syndr_order()
    del data["types"]["EIP712Domain"]
    data["domain"]["owner"] = ACCOUNT
    assert field_of(data) == "domain.owner"


@pytest.mark.parametrize("bad", [-1, 2**256, 421614.0, "421614.0", "chain", True, None])
def test_domain_chain_id_validated(bad: Any) -> None:
    data = syndr_order()
    data["domain"]["chainId"] = bad
    assert field_of(data) == "domain.chainId"


def test_message_must_be_an_object() -> None:
    assert field_of({**syndr_order(), "message": [1, 2]}) == "message"


def test_message_missing_field() -> None:
    data = syndr_order()
    del data["message"]["price"]
    assert field_of(data) == "message.price"


def test_message_unknown_field() -> None:
    data = syndr_order()
    data["message"]["label"] = "x"
    assert field_of(data) == "message.label"


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("orderType", 256),  # uint8 overflow
        ("orderType", -1),  # negative uint
        ("price", -5),
        ("price", 2**256),
        ("price", "-5"),  # negative decimal string for a uint
        ("price", True),  # bool is not an integer
        ("price", 1.0),  # floats are never accepted, even integral ones
        ("price", 1.5),
        ("price", "1.5"),  # non-integral string
        ("price", "1e18"),
        ("price", " 12"),
        ("price", "0x"),
        ("price", "0xzz"),
        ("price", None),
        ("price", [1]),
        ("salt", "0x1" + "0" * 64),  # hex beyond uint256
        ("salt", "9" * 5000),  # longer than int() parses
        ("salt", "0x" + "f" * 5000),  # parses, but too big even to print
    ],
)
def test_uint_rules(field: str, bad: Any) -> None:
    data = syndr_order()
    data["message"][field] = bad
    assert field_of(data) == f"message.{field}"


def test_huge_integers_are_reported_not_printed() -> None:
    data = syndr_order()
    data["message"]["salt"] = -(2**20000)  # str() of this raises in Python >= 3.11
    with pytest.raises(TypedDataError, match="20001-bit integer") as info:
        hash_typed_data(data)
    assert info.value.field == "message.salt"


@pytest.mark.parametrize(
    ("type_", "good", "bad"),
    [
        ("int8", [-128, 127, "-128", "0x7f"], [-129, 128, "0x80", "-0x1", False]),
        ("int256", [-(2**255), 2**255 - 1], [-(2**255) - 1, 2**255]),
        ("uint16", [0, 65535, "65535", "0xFFFF", "-0"], [65536, -1, "-1", "0x10000"]),
    ],
)
def test_integer_ranges(type_: str, good: list[Any], bad: list[Any]) -> None:
    def data(value: Any) -> dict[str, Any]:
        return {
            "types": {"T": [{"name": "v", "type": type_}]},
            "primaryType": "T",
            "domain": {},
            "message": {"v": value},
        }

    for value in good:
        assert hash_typed_data(data(value)).digest == eth_digest(data(value)), value
    for value in bad:
        assert field_of(data(value)) == "message.v", value


@pytest.mark.parametrize(
    "bad",
    [
        "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD827",  # mixed case, bad EIP-55 checksum
        "0xcd2a3d9f938e13cd947ec05abc7fe734df8dd82",  # 19.5 bytes
        "0xcd2a3d9f938e13cd947ec05abc7fe734df8dd82600",  # 21 bytes
        "cd2a3d9f938e13cd947ec05abc7fe734df8dd826",  # no 0x
        "0Xcd2a3d9f938e13cd947ec05abc7fe734df8dd826",
        "0xcd2a3d9f938e13cd947ec05abc7fe734df8dd8zz",
        "0xcd2a3d9f938e13cd947ec05abc7fe734df8dd8 6",
        1234,
        None,
    ],
)
def test_address_rules(bad: Any) -> None:
    data = syndr_order()
    data["message"]["account"] = bad
    assert field_of(data) == "message.account"


@pytest.mark.parametrize("bad", [1, 0, "true", "false", None, "0x01"])
def test_bool_accepts_only_json_booleans(bad: Any) -> None:
    data = syndr_order()
    data["message"]["isBuy"] = bad
    assert field_of(data) == "message.isBuy"


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("word", "0x" + "01" * 31),  # short bytes32 is not padded
        ("word", "0x" + "01" * 33),
        ("tag", "0xdeadbe"),
        ("tag", "deadbeef"),  # no 0x
        ("tag", "0xdeadbeeg"),
        ("tag", 0xDEADBEEF),
        ("blob", "0x123"),  # odd number of digits
        ("blob", "hello"),  # text is not bytes
        ("blob", None),
    ],
)
def test_bytes_rules(field: str, bad: Any) -> None:
    data = kitchen_sink()
    data["message"][field] = bad
    assert field_of(data) == f"message.{field}"


@pytest.mark.parametrize("bad", [5, None, b"text", ["t"]])
def test_string_rules(bad: Any) -> None:
    data = kitchen_sink()
    data["message"]["text"] = bad
    assert field_of(data) == "message.text"


def test_string_with_lone_surrogate() -> None:
    data = kitchen_sink()
    data["message"]["text"] = "\ud800"
    assert field_of(data) == "message.text"


def test_fixed_array_length_checked() -> None:
    data = kitchen_sink()
    data["message"]["pair"] = [1, 2, 3]
    assert field_of(data) == "message.pair"
    data["message"]["pair"] = [1]
    assert field_of(data) == "message.pair"


def test_nested_fixed_array_length_checked() -> None:
    data = kitchen_sink()
    data["message"]["grid"] = [[1], [2]]
    assert field_of(data) == "message.grid"


def test_array_must_be_an_array() -> None:
    data = kitchen_sink()
    data["message"]["names"] = "abc"
    assert field_of(data) == "message.names"


def test_array_element_error_names_the_index() -> None:
    data = kitchen_sink()
    data["message"]["grid"][2][1] = 40000
    assert field_of(data) == "message.grid[2][1]"
    data = kitchen_sink()
    data["message"]["names"][1] = 7
    assert field_of(data) == "message.names[1]"


def test_nested_struct_errors_name_the_path() -> None:
    data = mail()
    del data["message"]["from"]["wallet"]
    assert field_of(data) == "message.from.wallet"
    data = mail()
    data["message"]["to"]["nickname"] = "B"
    assert field_of(data) == "message.to.nickname"
    data = mail()
    data["message"]["to"] = "Bob"
    assert field_of(data) == "message.to"
    data = mail_v4()
    data["message"]["to"][0]["wallets"][2] = "0xB0B0b0b0b0b0B000000000000000000000000001"
    assert field_of(data) == "message.to[0].wallets[2]"


def test_recursive_struct_error_path() -> None:
    data = kitchen_sink()
    data["message"]["tree"]["children"][1]["children"][0]["value"] = -1
    assert field_of(data) == "message.tree.children[1].children[0].value"


def _chain(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {"value": depth, "children": []}
    for level in range(depth):
        node = {"value": level, "children": [node]}
    return node


NODE_TYPES = {"Node": [{"name": "value", "type": "uint256"}, {"name": "children", "type": "Node[]"}]}


def test_deep_but_bounded_recursion_hashes_like_eth_account() -> None:
    message = _chain(20)
    data = {"types": copy.deepcopy(NODE_TYPES), "primaryType": "Node", "domain": {}, "message": message}
    assert hash_typed_data(data).struct_hash == bytes(hash_struct("Node", NODE_TYPES, message))


@pytest.mark.parametrize("depth", [eip712.MAX_DEPTH, 5000])
def test_pathologically_deep_message_is_a_typed_data_error(depth: int) -> None:
    data = {"types": copy.deepcopy(NODE_TYPES), "primaryType": "Node", "domain": {}, "message": _chain(depth)}
    with pytest.raises(TypedDataError, match="levels deep") as info:
        hash_typed_data(data)
    assert info.value.field.startswith("message.children[0].children[0]")


def test_error_is_a_value_error_with_readable_message() -> None:
    data = syndr_order()
    data["message"]["orderType"] = 300
    with pytest.raises(ValueError, match=r"message\.orderType: .*300.*uint8"):
        hash_typed_data(data)


# --------------------------------------------------------------------------
# Syndr builders: fixed point and validation
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fixed"),
    [
        ("0", 0),
        ("-0", 0),
        ("1", 10**18),
        ("0.000000000000000001", 1),
        ("3500.25", 3500250000000000000000),
        ("1.50000000000000000000", 1500000000000000000),  # trailing zeros beyond 18 places are exact
        ("1E+3", 1000 * 10**18),
        ("115792089237316195423570985008687907853269984665640564039457.584007913129639935", 2**256 - 1),
    ],
)
def test_to_fixed_exact(text: str, fixed: int) -> None:
    assert to_fixed(Decimal(text)) == fixed


@pytest.mark.parametrize(
    "text",
    [
        "0.0000000000000000001",
        "1.0000000000000000001",
        "-1",
        "-0.5",
        "NaN",
        "Infinity",
        "1E-1000000",
        "1E+1000000",
        "115792089237316195423570985008687907853269984665640564039457.584007913129639936",
    ],
)
def test_to_fixed_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="price"):
        to_fixed(Decimal(text), field="price")


def test_to_fixed_rejects_floats() -> None:
    with pytest.raises(TypeError):
        to_fixed(1.5)  # type: ignore[arg-type]


def test_from_fixed_round_trips() -> None:
    assert str(from_fixed(1500000000000000000)) == "1.5"
    assert str(from_fixed(3500 * 10**18)) == "3500"
    assert str(from_fixed(1)) == "1E-18"
    assert from_fixed(0) == 0
    rng = random.Random(18)
    for _ in range(500):
        value = rng.randrange(2 ** rng.randrange(1, 257))
        assert to_fixed(from_fixed(value)) == value
    with pytest.raises(ValueError):
        from_fixed(-1)


@pytest.mark.parametrize(
    ("override", "name"),
    [
        ({"price": Decimal("0.0000000000000000001")}, "price"),
        ({"amount": Decimal("-1")}, "amount"),
        ({"account": "0x1234"}, "account"),
        ({"verifying_contract": "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD827"}, "verifying_contract"),
        ({"order_type": 7}, "order_type"),
        ({"order_type": True}, "order_type"),
        ({"time_in_force": 9}, "time_in_force"),
        ({"is_buy": 1}, "is_buy"),
        ({"salt": -1}, "salt"),
        ({"instrument_id": 2**256}, "instrument_id"),
        ({"timestamp": 1.5}, "timestamp"),
    ],
)
def test_order_builder_names_bad_parameters(override: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        syndr_order(**override)


def test_order_builder_returns_independent_json_shaped_copies() -> None:
    first = syndr_order()
    first["types"]["Order"][0]["type"] = "bytes32"
    first["types"]["EIP712Domain"].clear()
    second = syndr_order()
    assert second["types"]["Order"][0]["type"] == "address"
    assert len(second["types"]["EIP712Domain"]) == 4
    assert type(second["types"]["Order"]) is list
    assert type(second["types"]["Order"][0]) is dict
    with pytest.raises(TypeError):
        syndr.ORDER_TYPES["Order"] = []  # type: ignore[index]


def test_order_type_and_time_in_force_codes_and_wire_names() -> None:
    assert [(m.wire, int(m)) for m in OrderType] == [("limit", 0), ("market", 1)]
    assert [(m.wire, int(m)) for m in TimeInForce] == [("GTC", 0), ("IOC", 1), ("FOK", 2)]
    assert OrderType.from_wire("limit") is OrderType.LIMIT
    assert TimeInForce.from_wire("IOC") is TimeInForce.IOC
    with pytest.raises(ValueError):
        OrderType.from_wire("stop")
    market = syndr_order(order_type=OrderType.MARKET, time_in_force=TimeInForce.IOC)
    assert (market["message"]["orderType"], market["message"]["timeInForce"]) == (1, 1)
    assert type(market["message"]["orderType"]) is int
