"""EIP-712 (``eth_signTypedData_v4``) hashing, strict and fast.

The signer hashes every order it signs, thousands a second, and it must never
sign something other than what the caller meant. So this module:

* validates the whole typed-data object and names the offending element in
  :class:`TypedDataError` (``message.price``, ``types.Order[3].type``, ...), so
  the gRPC layer can answer ``INVALID_ARGUMENT`` with the field;
* is stricter than eth-account where eth-account guesses (truthy values as
  bools, text as bytes, short ``bytesN`` padded, missing fields as zero, array
  lengths unchecked, non-canonical ``EIP712Domain``), and produces the same
  digest as ``eth_account.messages.encode_typed_data(full_message=...)`` for
  everything it accepts;
* compiles each distinct ``types`` definition once (type hashes and per-field
  encoders, in a small bounded cache) and caches domain separators, so the
  per-call work is encoding the message fields and two keccak calls.

Only pycryptodome is needed (for keccak-256).
"""

from __future__ import annotations

import importlib
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

from Crypto.Hash import keccak as _keccak

__all__ = [
    "MAX_DEPTH",
    "MAX_ENCODED_TYPES",
    "MAX_TYPES",
    "TypedDataError",
    "TypedDataHash",
    "checksum_encode",
    "hash_typed_data",
    "keccak256",
]


def _keccak256_portable(data: bytes) -> bytes:
    return _keccak.new(digest_bits=256, data=data).digest()


def _make_fast_keccak256() -> Callable[[bytes], bytes] | None:
    """Keccak-256 straight on pycryptodome's C state, one state per thread.

    ``keccak.new(...).digest()`` spends ~4 us of its ~5 us allocating and
    wrapping a fresh state; an order needs two hashes, so reusing a state
    roughly halves the time to hash an order. This relies on pycryptodome's
    private raw-library handle, so it is used only on the cffi backend and
    only if it reproduces the public implementation at import; otherwise
    the portable path is used.
    """
    try:
        raw_api: Any = importlib.import_module("Crypto.Util._raw_api")
        lib: Any = getattr(_keccak, "_raw_keccak_lib")  # noqa: B009 - private, absent from the stubs
        if raw_api.backend != "cffi":
            return None
        init, reset, absorb, squeeze = lib.keccak_init, lib.keccak_reset, lib.keccak_absorb, lib.keccak_digest
        destroy, ffi = lib.keccak_destroy, raw_api.ffi
    except (ImportError, AttributeError):
        return None
    local = threading.local()

    def new_state() -> tuple[Any, Any, Any]:
        holder = ffi.new("void **")
        if init(holder, 64, 24):  # capacity 2 * 32 bytes, 24 rounds: Keccak-256
            raise RuntimeError("keccak_init failed")
        out = ffi.new("uint8_t[32]")
        return ffi.gc(holder[0], destroy), out, ffi.buffer(out)

    def keccak256_fast(data: bytes) -> bytes:
        # Take the thread's state out while using it, so that a re-entrant
        # call (a signal handler, a finalizer) gets a fresh one instead of
        # corrupting this one.
        held = getattr(local, "state", None) or new_state()
        local.state = None
        state, out, view = held
        if type(data) is not bytes:
            data = bytes(data)
        if reset(state) or absorb(state, data, len(data)) or squeeze(state, out, 32, 1):
            raise RuntimeError("keccak failed")
        digest: bytes = view[:]
        local.state = held
        return digest

    try:
        for probe in (b"", b"abc", bytes(range(256)) * 3):
            if keccak256_fast(probe) != _keccak256_portable(probe):
                return None
    except Exception:  # any surprise from the private API: use the portable path
        return None
    return keccak256_fast


_keccak256_impl: Final = _make_fast_keccak256() or _keccak256_portable


def keccak256(data: bytes) -> bytes:
    """Return the Keccak-256 digest (Ethereum's hash, not NIST SHA3-256)."""
    return _keccak256_impl(data)


class TypedDataError(ValueError):
    """Typed data rejected; ``field`` is the path of the offending element.

    The path uses the JSON names, e.g. ``message.from.wallet``,
    ``message.items[2]``, ``types.Order[3].type``, ``domain.chainId``,
    ``primaryType``, so callers can report exactly what to fix.
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True, slots=True)
class TypedDataHash:
    """What a signer needs to know about a typed-data object: the policy
    inputs (primary type, domain name, chain id, verifying contract) and the
    hashes, with ``digest`` being the 32 bytes that get signed."""

    primary_type: str
    domain_name: str | None
    chain_id: int | None
    verifying_contract: str | None
    domain_separator: bytes
    struct_hash: bytes
    digest: bytes
    message: Mapping[str, Any]


class _Invalid(Exception):
    """Internal: a value failed validation; ``path`` is built innermost first
    while the exception unwinds, so the happy path never formats paths."""

    def __init__(self, reason: str, segment: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path: list[str] = [] if segment is None else [segment]

    def field(self, root: str) -> str:
        return root + "".join(reversed(self.path))


# (value, depth) -> 32-byte word; depth only matters to arrays and structs.
_Encoder = Callable[[Any, int], bytes]

_TOP_KEYS: Final = ("types", "primaryType", "domain", "message")
_TOP_KEY_SET: Final = frozenset(_TOP_KEYS)
_DOMAIN_TYPE: Final = "EIP712Domain"
# The EIP-712 domain fields, in the only order the spec (and eth-account,
# which ignores the declared order) uses.
_DOMAIN_FIELDS: Final[tuple[tuple[str, str], ...]] = (
    ("name", "string"),
    ("version", "string"),
    ("chainId", "uint256"),
    ("verifyingContract", "address"),
    ("salt", "bytes32"),
)
_DOMAIN_FIELD_TYPES: Final = dict(_DOMAIN_FIELDS)
_DOMAIN_ORDER: Final = {name: i for i, (name, _) in enumerate(_DOMAIN_FIELDS)}

_IDENT_RE: Final = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*\Z")
_FIELD_TYPE_RE: Final = re.compile(r"([A-Za-z_$][A-Za-z0-9_$]*)((?:\[(?:[1-9][0-9]*)?\])*)\Z")
_ARRAY_DIM_RE: Final = re.compile(r"\[([0-9]*)\]")
_DEC_RE: Final = re.compile(r"-?[0-9]+\Z")
_HEX_INT_RE: Final = re.compile(r"0x[0-9a-fA-F]+\Z")
_HEX_BYTES_RE: Final = re.compile(r"0x(?:[0-9a-fA-F]{2})*\Z")
_ADDRESS_RE: Final = re.compile(r"0x[0-9a-fA-F]{40}\Z")

MAX_DEPTH: Final = 64
"""Deepest nesting of structs and arrays accepted in a message; real typed
data nests a few levels, and a bound keeps recursive types from exhausting
the stack."""

MAX_TYPES: Final = 256
"""Most struct types accepted in ``types``."""

MAX_ENCODED_TYPES: Final = 1024 * 1024
"""Cap on the summed encodeType strings of all structs (an Order's is 250
bytes): a dependency chain makes that sum grow with its square."""

_ZERO_WORD: Final = bytes(32)
_ONE_WORD: Final = (1).to_bytes(32, "big")
_ADDRESS_PAD: Final = bytes(12)


def _int_text(value: int) -> str:
    """An int for an error message: huge ones (which str() may even refuse) by size."""
    return str(value) if value.bit_length() <= 264 else f"<{value.bit_length()}-bit integer>"


def _describe(value: Any) -> str:
    """Short, bounded description of a bad value for error messages."""
    text = _int_text(value) if isinstance(value, int) else repr(value)
    if len(text) > 48:
        text = text[:45] + "..."
    return f"{text} ({type(value).__name__})"


# --------------------------------------------------------------------------
# Atomic types
# --------------------------------------------------------------------------


def _coerce_int(value: Any) -> int:
    """Integers as eth-account accepts them: int, decimal string, 0x-hex string."""
    if isinstance(value, bool):
        raise _Invalid(f"expected an integer, got a boolean {_describe(value)}")
    if isinstance(value, int):
        return int(value)
    if isinstance(value, str):
        try:
            if _DEC_RE.match(value):
                return int(value, 10)
            if _HEX_INT_RE.match(value):
                return int(value, 16)
        except ValueError:  # more digits than int() will parse: far out of range
            raise _Invalid("integer string is too long") from None
        raise _Invalid(f"expected an integer, a decimal string or a 0x-hex string, got {_describe(value)}")
    if isinstance(value, float):
        raise _Invalid(f"expected an integer, got a float {_describe(value)}")
    raise _Invalid(f"expected an integer, got {_describe(value)}")


def _uint_encoder(bits: int) -> _Encoder:
    limit = 1 << bits

    def encode_uint(value: Any, depth: int = 0) -> bytes:
        if type(value) is not int:
            value = _coerce_int(value)
        if 0 <= value < limit:
            return value.to_bytes(32, "big")  # type: ignore[no-any-return]
        if value < 0:
            raise _Invalid(f"negative value {_int_text(value)} for uint{bits}")
        raise _Invalid(f"value {_int_text(value)} out of range for uint{bits}")

    return encode_uint


def _int_encoder(bits: int) -> _Encoder:
    half = 1 << (bits - 1)

    def encode_int(value: Any, depth: int = 0) -> bytes:
        if type(value) is not int:
            value = _coerce_int(value)
        if -half <= value < half:
            return value.to_bytes(32, "big", signed=True)  # type: ignore[no-any-return]
        raise _Invalid(f"value {_int_text(value)} out of range for int{bits}")

    return encode_int


def _encode_bool(value: Any, depth: int = 0) -> bytes:
    if value is True:
        return _ONE_WORD
    if value is False:
        return _ZERO_WORD
    raise _Invalid(f"expected a boolean, got {_describe(value)}")


def _raw_bytes(value: Any) -> bytes:
    if isinstance(value, str):
        if _HEX_BYTES_RE.match(value):
            return bytes.fromhex(value[2:])
        raise _Invalid(f"expected 0x-prefixed hex with an even number of digits, got {_describe(value)}")
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    raise _Invalid(f"expected a 0x-hex string, got {_describe(value)}")


def _encode_dynamic_bytes(value: Any, depth: int = 0) -> bytes:
    return keccak256(_raw_bytes(value))


def _fixed_bytes_encoder(size: int) -> _Encoder:
    pad = bytes(32 - size)

    def encode_fixed_bytes(value: Any, depth: int = 0) -> bytes:
        raw = _raw_bytes(value)
        if len(raw) != size:
            raise _Invalid(f"expected exactly {size} bytes for bytes{size}, got {len(raw)}")
        return raw + pad

    return encode_fixed_bytes


def _encode_string(value: Any, depth: int = 0) -> bytes:
    if not isinstance(value, str):
        raise _Invalid(f"expected a string, got {_describe(value)}")
    try:
        return keccak256(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise _Invalid("string is not valid Unicode (lone surrogate)") from None


def checksum_encode(raw: bytes) -> str:
    """EIP-55 mixed-case form of a 20-byte address."""
    if len(raw) != 20:
        raise ValueError(f"an address is 20 bytes, got {len(raw)}")
    lower = raw.hex()
    mask = keccak256(lower.encode("ascii")).hex()[:40]
    return "0x" + "".join(c.upper() if m in "89abcdef" else c for c, m in zip(lower, mask, strict=True))


@lru_cache(maxsize=4096)
def _address_word(text: str) -> bytes:
    """Validate a 0x address string (cached: the same few accounts and
    contracts appear in every order, and EIP-55 costs a keccak)."""
    if not _ADDRESS_RE.match(text):
        raise _Invalid(f"expected a 0x-prefixed 20-byte hex address, got {_describe(text)}")
    body = text[2:]
    raw = bytes.fromhex(body)
    if body != body.lower() and body != body.upper() and checksum_encode(raw) != text:
        raise _Invalid(f"mixed-case address {text} fails its EIP-55 checksum")
    return _ADDRESS_PAD + raw


def _encode_address(value: Any, depth: int = 0) -> bytes:
    if isinstance(value, str):
        return _address_word(value)
    if isinstance(value, bytes | bytearray):
        if len(value) != 20:
            raise _Invalid(f"expected 20 address bytes, got {len(value)}")
        return _ADDRESS_PAD + bytes(value)
    raise _Invalid(f"expected a 0x-hex address string, got {_describe(value)}")


def _build_atomic_encoders() -> dict[str, _Encoder]:
    encoders: dict[str, _Encoder] = {
        "bool": _encode_bool,
        "address": _encode_address,
        "string": _encode_string,
        "bytes": _encode_dynamic_bytes,
    }
    for bits in range(8, 257, 8):
        encoders[f"uint{bits}"] = _uint_encoder(bits)
        encoders[f"int{bits}"] = _int_encoder(bits)
    for size in range(1, 33):
        encoders[f"bytes{size}"] = _fixed_bytes_encoder(size)
    return encoders


_ATOMIC: Final = _build_atomic_encoders()


def _array_encoder(element: _Encoder, length: int | None) -> _Encoder:
    def encode_array(value: Any, depth: int = 0) -> bytes:
        if depth >= MAX_DEPTH:
            raise _Invalid(f"nested more than {MAX_DEPTH} levels deep")
        if not isinstance(value, list | tuple):
            raise _Invalid(f"expected an array, got {_describe(value)}")
        if length is not None and len(value) != length:
            raise _Invalid(f"expected an array of exactly {length} elements, got {len(value)}")
        parts: list[bytes] = []
        append = parts.append
        index = 0
        try:
            for index, item in enumerate(value):  # noqa: B007 - index is read in the handler
                append(element(item, depth + 1))
        except _Invalid as exc:
            exc.path.append(f"[{index}]")
            raise
        return keccak256(b"".join(parts))

    return encode_array


# --------------------------------------------------------------------------
# Structs and compiled type sets
# --------------------------------------------------------------------------


class _Struct:
    """One struct type: its type hash and (name, encoder) per field."""

    __slots__ = ("field_names", "fields", "name", "type_hash")

    def __init__(self, name: str, type_hash: bytes) -> None:
        self.name = name
        self.type_hash = type_hash
        self.fields: tuple[tuple[str, _Encoder], ...] = ()
        self.field_names: frozenset[str] = frozenset()

    def hash(self, value: Any, depth: int = 0) -> bytes:
        """hashStruct(value): keccak(typeHash ‖ encodeData(value))."""
        if depth >= MAX_DEPTH:
            raise _Invalid(f"nested more than {MAX_DEPTH} levels deep")
        if type(value) is not dict and not isinstance(value, Mapping):
            raise _Invalid(f"expected an object of type {self.name}, got {_describe(value)}")
        parts = [self.type_hash]
        append = parts.append
        name = ""
        try:
            for name, encode in self.fields:
                append(encode(value[name], depth + 1))
        except KeyError:
            if name in value:
                raise
            raise _Invalid(f"missing field {name!r} of {self.name}", "." + name) from None
        except _Invalid as exc:
            exc.path.append("." + name)
            raise
        if len(value) != len(self.fields):
            for key in value:
                if key not in self.field_names:
                    raise _Invalid(f"unknown field {key!r} for {self.name}", f".{key}")
        return keccak256(b"".join(parts))


@dataclass(frozen=True, slots=True)
class _Compiled:
    structs: Mapping[str, _Struct]
    domain: _Struct | None


def _split_field_type(type_str: str) -> tuple[str, list[int | None]]:
    match = _FIELD_TYPE_RE.match(type_str)
    if match is None:
        raise ValueError(type_str)
    dims = [int(d) if d else None for d in _ARRAY_DIM_RE.findall(match.group(2))]
    return match.group(1), dims


def _dependencies(name: str, refs: Mapping[str, set[str]]) -> set[str]:
    """Struct types ``name`` refers to, directly or not (itself excluded)."""
    deps: set[str] = set()
    stack = [name]
    while stack:
        for ref in refs[stack.pop()]:
            if ref != name and ref not in deps:
                deps.add(ref)
                stack.append(ref)
    return deps


def _type_hashes(definitions: Mapping[str, list[tuple[str, str]]]) -> dict[str, bytes]:
    """keccak(encodeType) of every struct: itself, then its dependencies sorted by name."""
    encoded = {
        name: f"{name}({','.join(f'{ftype} {fname}' for fname, ftype in fields)})"
        for name, fields in definitions.items()
    }
    refs = {
        name: {base for _, ftype in fields if (base := _split_field_type(ftype)[0]) in definitions}
        for name, fields in definitions.items()
    }
    deps = {name: _dependencies(name, refs) for name in definitions}
    # A long dependency chain makes the total grow with its square: refuse
    # before building megabytes of type strings.
    total = sum(len(encoded[name]) + sum(len(encoded[d]) for d in deps[name]) for name in definitions)
    if total > MAX_ENCODED_TYPES:
        raise TypedDataError("types", f"type definitions expand to more than {MAX_ENCODED_TYPES} bytes")
    return {
        name: keccak256("".join(encoded[t] for t in [name, *sorted(deps[name])]).encode("utf-8"))
        for name in definitions
    }


def _parse_definitions(types: Any) -> dict[str, list[tuple[str, str]]]:
    """Check the shape of ``types`` and return {type: [(field, type), ...]}."""
    if not isinstance(types, Mapping):
        raise TypedDataError("types", f"expected an object, got {_describe(types)}")
    if len(types) > MAX_TYPES:
        raise TypedDataError("types", f"more than {MAX_TYPES} types")
    definitions: dict[str, list[tuple[str, str]]] = {}
    for type_name, fields in types.items():
        if not isinstance(type_name, str) or not _IDENT_RE.match(type_name):
            raise TypedDataError("types", f"invalid type name {_describe(type_name)}")
        where = f"types.{type_name}"
        if type_name in _ATOMIC:
            raise TypedDataError(where, f"{type_name!r} is an atomic type and cannot be redefined")
        if not isinstance(fields, list | tuple):
            raise TypedDataError(where, f"expected an array of fields, got {_describe(fields)}")
        parsed: list[tuple[str, str]] = []
        seen: set[str] = set()
        for i, field in enumerate(fields):
            at = f"{where}[{i}]"
            if not isinstance(field, Mapping):
                raise TypedDataError(at, f"expected an object {{name, type}}, got {_describe(field)}")
            for key in ("name", "type"):
                if key not in field:
                    raise TypedDataError(f"{at}.{key}", "missing")
            for key in field:
                if key not in ("name", "type"):
                    raise TypedDataError(f"{at}.{key}", "unknown key in a field definition")
            field_name, field_type = field["name"], field["type"]
            if not isinstance(field_name, str) or not _IDENT_RE.match(field_name):
                raise TypedDataError(f"{at}.name", f"invalid field name {_describe(field_name)}")
            if field_name in seen:
                raise TypedDataError(f"{at}.name", f"duplicate field {field_name!r} in {type_name}")
            seen.add(field_name)
            if not isinstance(field_type, str) or not _FIELD_TYPE_RE.match(field_type):
                raise TypedDataError(f"{at}.type", f"invalid type {_describe(field_type)}")
            parsed.append((field_name, field_type))
        definitions[type_name] = parsed
    return definitions


def _check_references(definitions: Mapping[str, list[tuple[str, str]]]) -> None:
    for type_name, fields in definitions.items():
        for i, (_, field_type) in enumerate(fields):
            base = _split_field_type(field_type)[0]
            if base == _DOMAIN_TYPE:
                raise TypedDataError(f"types.{type_name}[{i}].type", "EIP712Domain cannot be used as a field type")
            if base not in _ATOMIC and base not in definitions:
                raise TypedDataError(f"types.{type_name}[{i}].type", f"unknown type {base!r}")


def _check_domain_definition(fields: list[tuple[str, str]]) -> None:
    """EIP712Domain must use the spec's names, types and order: eth-account
    hashes the canonical form whatever is declared, so anything else would
    make the digest depend on the implementation."""
    previous = -1
    for i, (field_name, field_type) in enumerate(fields):
        at = f"types.{_DOMAIN_TYPE}[{i}]"
        position = _DOMAIN_ORDER.get(field_name)
        if position is None:
            raise TypedDataError(f"{at}.name", f"{field_name!r} is not an EIP-712 domain field")
        if position <= previous:
            raise TypedDataError(
                f"{at}.name",
                "domain fields must follow the order name, version, chainId, verifyingContract, salt",
            )
        previous = position
        if field_type != _DOMAIN_FIELD_TYPES[field_name]:
            raise TypedDataError(f"{at}.type", f"domain field {field_name!r} must be {_DOMAIN_FIELD_TYPES[field_name]}")


def _field_encoder(field_type: str, structs: Mapping[str, _Struct]) -> _Encoder:
    base, dims = _split_field_type(field_type)
    encoder = _ATOMIC.get(base) or structs[base].hash
    for length in dims:
        encoder = _array_encoder(encoder, length)
    return encoder


def _compile(types: Any) -> _Compiled:
    """Validate a ``types`` object and build its struct encoders."""
    definitions = _parse_definitions(types)
    _check_references(definitions)
    if _DOMAIN_TYPE in definitions:
        _check_domain_definition(definitions[_DOMAIN_TYPE])
    structs = {name: _Struct(name, type_hash) for name, type_hash in _type_hashes(definitions).items()}
    for name, fields in definitions.items():
        struct = structs[name]
        struct.fields = tuple((fname, _field_encoder(ftype, structs)) for fname, ftype in fields)
        struct.field_names = frozenset(fname for fname, _ in fields)
    domain = structs.pop(_DOMAIN_TYPE, None)
    return _Compiled(structs=structs, domain=domain)


# Compiled ``types`` definitions. A bucket is keyed by the tuple of type names
# (cheap to build) and holds (private copy of the definition, compiled) pairs;
# a hit needs ``types == copy``. Dict equality is exact here: a valid
# definition holds only strings, and no non-string compares equal to one, so
# a hit is always an input that compiled cleanly before (~0.6 us for an
# Order, against ~4 us to build a hashable key of the whole definition).
_TYPES_CACHE: dict[tuple[Any, ...], list[tuple[dict[str, list[dict[str, str]]], _Compiled]]] = {}
_TYPES_CACHE_BUCKETS: Final = 128
_TYPES_CACHE_PER_BUCKET: Final = 4
# Only definitions of a usual size are cached (an Order with its domain: 16 fields, ~200 characters). A cached
# field costs ~0.7 kB: 512 entries of 500 fields held ~190 MB that any caller could fill; now ~12 MB at most.
_TYPES_CACHE_MAX_FIELDS: Final = 32
_TYPES_CACHE_MAX_CHARS: Final = 2048


def _compiled_types(types: Any) -> _Compiled:
    if type(types) is not dict:
        return _compile(types)  # validates and raises, or compiles an unusual mapping uncached
    names = tuple(types)
    for copy, compiled in _TYPES_CACHE.get(names, ()):
        if types == copy:
            return compiled
    compiled = _compile(types)
    if (sum(len(fields) for fields in types.values()) > _TYPES_CACHE_MAX_FIELDS
            or sum(len(name) + sum(len(f["name"]) + len(f["type"]) for f in fields)
                   for name, fields in types.items()) > _TYPES_CACHE_MAX_CHARS):
        return compiled  # unusually large: not worth the memory
    copy = {name: [{"name": f["name"], "type": f["type"]} for f in fields] for name, fields in types.items()}
    bucket = _TYPES_CACHE.setdefault(names, [])
    bucket.insert(0, (copy, compiled))
    del bucket[_TYPES_CACHE_PER_BUCKET:]
    while len(_TYPES_CACHE) > _TYPES_CACHE_BUCKETS:
        try:  # oldest bucket first; another thread may be trimming too
            _TYPES_CACHE.pop(next(iter(_TYPES_CACHE)), None)
        except (RuntimeError, StopIteration):
            break
    return compiled


@lru_cache(maxsize=64)
def _inferred_domain(names: tuple[str, ...]) -> _Struct:
    definition = {_DOMAIN_TYPE: [{"name": n, "type": _DOMAIN_FIELD_TYPES[n]} for n in names]}
    domain = _compile(definition).domain
    assert domain is not None  # _compile returns the EIP712Domain it was given
    return domain


# --------------------------------------------------------------------------
# Domain separator
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _DomainInfo:
    separator: bytes
    name: str | None
    chain_id: int | None
    verifying_contract: str | None


_DOMAIN_CACHE: dict[Any, _DomainInfo] = {}
_DOMAIN_CACHE_SIZE: Final = 256


def _hash_domain(struct: _Struct, domain: Mapping[str, Any]) -> _DomainInfo:
    try:
        separator = struct.hash(domain)
    except _Invalid as exc:
        raise TypedDataError(exc.field("domain"), exc.reason) from None
    contract = domain.get("verifyingContract")
    return _DomainInfo(
        separator=separator,
        name=domain.get("name"),
        chain_id=_coerce_int(domain["chainId"]) if "chainId" in domain else None,
        verifying_contract=None if contract is None else checksum_encode(_encode_address(contract)[12:]),
    )


def _domain_info(compiled: _Compiled, domain: Any) -> _DomainInfo:
    if not isinstance(domain, Mapping):
        raise TypedDataError("domain", f"expected an object, got {_describe(domain)}")
    struct = compiled.domain
    if struct is None:
        for name in domain:
            if name not in _DOMAIN_ORDER:
                raise TypedDataError(f"domain.{name}", "not an EIP-712 domain field")
        struct = _inferred_domain(tuple(sorted(domain, key=_DOMAIN_ORDER.__getitem__)))
    try:
        # (type, value) so that e.g. True and 1 never share an entry.
        key: Any = (struct, tuple((k, type(v), v) for k, v in domain.items()))
        info = _DOMAIN_CACHE.get(key)
    except TypeError:  # unhashable value: hash without caching
        key, info = None, None
    if info is None:
        info = _hash_domain(struct, domain)
        if key is not None and all(len(v) <= 256 for v in domain.values() if isinstance(v, str | bytes)):
            if len(_DOMAIN_CACHE) >= _DOMAIN_CACHE_SIZE:
                _DOMAIN_CACHE.clear()
            _DOMAIN_CACHE[key] = info
    return info


# --------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------


def _check_top_level(data: Any) -> None:
    if not isinstance(data, Mapping):
        raise TypedDataError("typedData", f"expected an object, got {_describe(data)}")
    for key in _TOP_KEYS:
        if key not in data:
            raise TypedDataError(key, "missing")
    for key in data:
        if key not in _TOP_KEY_SET:
            raise TypedDataError(str(key), "unknown top-level key")


def hash_typed_data(data: Mapping[str, Any]) -> TypedDataHash:
    """Validate an ``eth_signTypedData_v4`` object and compute its digest.

    ``data`` is the decoded JSON ``{types, primaryType, domain, message}``.
    When ``types`` has no ``EIP712Domain`` it is inferred from the domain's
    keys, as eth-account does. Raises :class:`TypedDataError` naming the
    offending field.
    """
    if type(data) is not dict or data.keys() != _TOP_KEY_SET:
        _check_top_level(data)
    compiled = _compiled_types(data["types"])

    primary_type = data["primaryType"]
    if not isinstance(primary_type, str):
        raise TypedDataError("primaryType", f"expected a string, got {_describe(primary_type)}")
    struct = compiled.structs.get(primary_type)
    if struct is None:
        if primary_type == _DOMAIN_TYPE:
            raise TypedDataError("primaryType", "EIP712Domain cannot be the primary type")
        raise TypedDataError("primaryType", f"type {primary_type!r} is not defined in types")

    domain = _domain_info(compiled, data["domain"])

    message = data["message"]
    try:
        struct_hash = struct.hash(message)
    except _Invalid as exc:
        raise TypedDataError(exc.field("message"), exc.reason) from None
    except RecursionError:
        raise TypedDataError("message", "nested too deeply") from None

    return TypedDataHash(
        primary_type=primary_type,
        domain_name=domain.name,
        chain_id=domain.chain_id,
        verifying_contract=domain.verifying_contract,
        domain_separator=domain.separator,
        struct_hash=struct_hash,
        digest=keccak256(b"\x19\x01" + domain.separator + struct_hash),
        message=message,
    )
