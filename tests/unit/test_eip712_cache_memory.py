"""The compiled-types cache stays small whatever callers send: it is shared by every `Sign` call."""

from __future__ import annotations

import gc
import tracemalloc
from typing import Any

from portico.runtime.eip712 import hash_typed_data


def _large_definition(i: int, j: int, fields: int) -> dict[str, Any]:
    """A valid typed-data object with `fields` array fields, unique per (i, j)."""
    names = [f"f{k}" for k in range(fields - 1)] + [f"g{j}"]
    return {
        "types": {
            "EIP712Domain": [{"name": "name", "type": "string"}],
            f"T{i}": [{"name": name, "type": "uint256[]"} for name in names],
        },
        "primaryType": f"T{i}",
        "domain": {"name": "x"},
        "message": {name: [] for name in names},
    }


def test_large_distinct_types_do_not_fill_memory() -> None:
    """Before the fix every definition of up to 512 fields was cached, 512 of them: ~0.7 kB a field, so a caller
    sending distinct 100-field definitions made the signer hold ~37 MB (500 fields: ~190 MB) for good."""
    payloads = [_large_definition(i, j, 100) for i in range(128) for j in range(4)]  # every bucket, every slot
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for data in payloads:
            hash_typed_data(data)
        gc.collect()
        retained = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert retained < 8 * 1024 * 1024, f"{retained / 1e6:.1f} MB retained"


def test_an_order_sized_definition_is_still_cached() -> None:
    """The cache keeps serving the usual definitions: a second hash of one reuses its compiled form."""
    from portico.runtime import eip712

    data = _large_definition(10_000, 0, 16)
    hash_typed_data(data)
    assert any(data["types"] == copy for copy, _ in eip712._TYPES_CACHE.get(tuple(data["types"]), ()))
