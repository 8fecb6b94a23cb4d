"""The signer's payload limit in bytes and `keys import --from-file` errors, end to end: real gRPC server, real
OpenBao, the signer's own Vault policy."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import pytest
from tests.support.openbao import OpenBaoDevServer
from tests.support.signer import RunningSigner, create_key, running_signer, signer_vault_token, stub

from portico.runtime.client import open_channel
from portico.runtime.errors import error_info
from portico.runtime.signing_keys import KeyPolicy
from portico.signer.v1 import signer_service_pb2 as pb
from portico.venues.syndr import typed_data as syndr

REPO = Path(__file__).resolve().parents[2]
KEY = f"review-{secrets.token_hex(3)}"  # the session's Vault is shared
MAX_PAYLOAD = 4096


def order(salt: int) -> dict[str, Any]:
    return syndr.order_typed_data(
        verifying_contract="0x" + "ab" * 20, account="0x" + "12" * 20, instrument_id=3, is_buy=True, order_type=0,
        time_in_force=0, post_only=False, reduce_only=False, price=Decimal("3000"), amount=Decimal("0.1"), salt=salt,
        expiration=1_900_000_000_000, timestamp=1_800_000_000_000)


@pytest.fixture(scope="module")
async def signer(openbao: OpenBaoDevServer, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningSigner]:
    token = signer_vault_token(openbao)
    await create_key(openbao, KEY, KeyPolicy.build(primary_types=["Order"], domain_names=["Syndr"],
                                                   chain_ids=[421614]))
    async with running_signer(openbao.addr, token, tmp_path_factory.mktemp("signer"),
                              env={"PORTICO_SIGNER_MAX_PAYLOAD_BYTES": str(MAX_PAYLOAD)}) as running:
        yield running


@pytest.fixture
async def channel(signer: RunningSigner) -> AsyncIterator[grpc.aio.Channel]:
    async with open_channel(signer.target) as channel:
        yield channel


async def sign_error(channel: grpc.aio.Channel, signer: RunningSigner, text: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub(channel).Sign(pb.SignRequest(key_id=KEY, typed_data_json=text), metadata=signer.metadata(),
                                 timeout=10)
    return caught.value


async def test_the_payload_limit_counts_bytes_not_characters(channel: grpc.aio.Channel,
                                                             signer: RunningSigner) -> None:
    """PORTICO_SIGNER_MAX_PAYLOAD_BYTES is bytes: the limit counted characters, so text of 3-byte characters
    three times the limit was read (and hashed) in full, here to be refused only by the key's policy."""
    data = order(secrets.randbits(64))
    data["domain"]["name"] = "€" * (MAX_PAYLOAD // 2)  # half the limit in characters, 1.5 times it in bytes
    text = json.dumps(data, ensure_ascii=False)
    assert len(text) < MAX_PAYLOAD < len(text.encode())
    error = await sign_error(channel, signer, text)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    info = error_info(error)
    assert info is not None and info.metadata["field"] == "typed_data_json"
    # Within the limit in bytes, non-ASCII text is read as before (and refused here by the policy alone).
    data["domain"]["name"] = "€" * 100
    error = await sign_error(channel, signer, json.dumps(data, ensure_ascii=False))
    info = error_info(error)
    assert info is not None and info.reason == "DOMAIN_NAME_NOT_ALLOWED"


@pytest.mark.parametrize("content", [None, b"\x9f" + secrets.token_bytes(31)], ids=["missing", "binary"])
async def test_keys_import_from_an_unreadable_file_is_a_clear_error(openbao: OpenBaoDevServer, tmp_path: Path,
                                                                    content: bytes | None) -> None:
    """`keys import --from-file` with a file that is missing printed a traceback; one that is not text printed
    the decoder's message, which quotes the file's first byte (a binary key's)."""
    path = tmp_path / "key.bin"
    if content is not None:
        path.write_bytes(content)
    env = {**os.environ, "VAULT_ADDR": openbao.addr, "VAULT_TOKEN": openbao.root_token}
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "portico.cli", "signer", "keys", "import", f"file-{KEY}",
                         "--from-file", str(path)], env=env, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert f"portico signer: cannot read --from-file {path}" in done.stderr or "is not text" in done.stderr
    assert "0x9f" not in done.stderr
