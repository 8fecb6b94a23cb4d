"""The signer records each order's expiration with its salt watermark, and prunes the watermarks of orders the
venue has long refused: real gRPC server, real OpenBao, the signer's own Vault policy."""

from __future__ import annotations

import asyncio
import copy
import json
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import pytest
from tests.support.openbao import OpenBaoDevServer
from tests.support.signer import RunningSigner, create_key, running_signer, signer_vault_token, stub

from portico.runtime.client import open_channel
from portico.runtime.config import ConfigError
from portico.runtime.errors import error_info
from portico.runtime.signing_keys import KeyPolicy
from portico.signer.settings import SignerSettings
from portico.signer.v1 import signer_service_pb2 as pb
from portico.venues.syndr import typed_data as syndr

KEY = f"prune-{secrets.token_hex(3)}"  # the session's Vault is shared
HOUR_MS = 3_600_000


def order(salt: int, expiration: int, *, price: str = "3000") -> dict[str, Any]:
    return syndr.order_typed_data(
        verifying_contract="0x" + "ab" * 20, account="0x" + "12" * 20, instrument_id=3, is_buy=True, order_type=0,
        time_in_force=0, post_only=False, reduce_only=False, price=Decimal(price), amount=Decimal("0.1"), salt=salt,
        expiration=expiration, timestamp=1_800_000_000_000)


def request(data: dict[str, Any]) -> pb.SignRequest:
    return pb.SignRequest(key_id=KEY, typed_data_json=json.dumps(data))


@pytest.fixture(scope="module")
async def signer(openbao: OpenBaoDevServer, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningSigner]:
    token = signer_vault_token(openbao)
    await create_key(openbao, KEY, KeyPolicy.build(primary_types=["Order", "SignKey"], domain_names=["Syndr"],
                                                   chain_ids=[421614]))
    async with running_signer(openbao.addr, token, tmp_path_factory.mktemp("signer")) as running:
        yield running


@pytest.fixture
async def channel(signer: RunningSigner) -> AsyncIterator[grpc.aio.Channel]:
    async with open_channel(signer.target) as channel:
        yield channel


async def sign(channel: grpc.aio.Channel, signer: RunningSigner, data: dict[str, Any]) -> pb.SignResponse:
    response: pb.SignResponse = await stub(channel).Sign(request(data), metadata=signer.metadata(), timeout=10)
    return response


async def refused(channel: grpc.aio.Channel, signer: RunningSigner, data: dict[str, Any]) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await sign(channel, signer, data)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION, caught.value.details()
    info = error_info(caught.value)
    assert info is not None
    reason: str = info.reason
    return reason


def expirations(signer: RunningSigner, salts: list[int]) -> dict[int, int | None]:
    """salt -> the ledger's expires_at_ms, for the salts still in it."""
    db = sqlite3.connect(f"file:{signer.app.settings.watermark_db}?mode=ro", uri=True)
    try:
        found = dict(db.execute("SELECT salt, expires_at_ms FROM salt_watermarks"))
    finally:
        db.close()
    return {salt: found[str(salt)] for salt in salts if str(salt) in found}


async def pruned_by_itself(signer: RunningSigner, salts: list[int], *, within_s: float = 15) -> None:
    """Wait for the signer's background pruning to remove the watermarks of `salts`."""
    deadline = time.monotonic() + within_s
    while (left := expirations(signer, salts)) and time.monotonic() < deadline:  # noqa: ASYNC110 - polls the file
        await asyncio.sleep(0.1)
    assert not left, f"still in the ledger after {within_s} s: {left}"


async def prune_all(signer: RunningSigner) -> int:
    total = 0
    while deleted := await signer.app.ledger.prune():
        total += deleted
    return total


async def test_expired_orders_lose_their_watermarks_and_the_others_keep_them(channel: grpc.aio.Channel,
                                                                             signer: RunningSigner) -> None:
    now_ms = time.time_ns() // 1_000_000
    long_gone, long_gone_s, recent, live, never, forever = (secrets.randbits(64) for _ in range(6))
    await sign(channel, signer, order(long_gone, now_ms - 2 * HOUR_MS))  # refused by the venue for 2 h
    await sign(channel, signer, order(long_gone_s, (now_ms - 2 * HOUR_MS) // 1000))  # the same, in seconds
    await sign(channel, signer, order(recent, now_ms - 10 * 60_000))  # expired 10 minutes ago: within the margin
    await sign(channel, signer, order(live, now_ms + HOUR_MS))
    await sign(channel, signer, order(never, 0))  # 0: the venue never expires it
    await sign(channel, signer, order(forever, 2**256 - 1))
    salts = [long_gone, long_gone_s, recent, live, never, forever]
    assert expirations(signer, salts) == {
        long_gone: now_ms - 2 * HOUR_MS, long_gone_s: (now_ms - 2 * HOUR_MS) // 1000 * 1000,
        recent: now_ms - 10 * 60_000, live: now_ms + HOUR_MS, never: None, forever: None}

    await pruned_by_itself(signer, [long_gone, long_gone_s])
    assert set(expirations(signer, salts)) == {recent, live, never, forever}

    # A salt still watermarked refuses another payload, after the prune as before it.
    for salt, expiration in ((recent, now_ms - 10 * 60_000), (live, now_ms + HOUR_MS), (never, 0),
                             (forever, 2**256 - 1)):
        assert await refused(channel, signer, order(salt, expiration, price="3001")) == "SALT_REUSED"
    # A pruned one signs another payload: the order its first signature made is refused by the venue as expired.
    again = await sign(channel, signer, order(long_gone, now_ms + HOUR_MS, price="3001"))
    assert again.signature
    assert await refused(channel, signer, order(long_gone, now_ms + HOUR_MS, price="3002")) == "SALT_REUSED"


async def test_only_an_order_s_declared_uint256_expiration_counts(channel: grpc.aio.Channel,
                                                                  signer: RunningSigner) -> None:
    """The field must be Syndr's `Order.expiration` (uint256): declared otherwise, or in another primary type, the
    salt's watermark has no expiration and is kept for ever."""
    now_ms = time.time_ns() // 1_000_000
    salt = secrets.randbits(64)
    data = order(salt, now_ms - 5 * HOUR_MS)
    for field in data["types"]["Order"]:
        if field["name"] == "expiration":
            field["type"] = "uint64"
    await sign(channel, signer, data)
    hex_salt = secrets.randbits(64)
    as_hex = copy.deepcopy(order(hex_salt, now_ms - 5 * HOUR_MS))
    as_hex["message"]["expiration"] = hex(as_hex["message"]["expiration"])  # a uint256 may come as 0x-hex
    await sign(channel, signer, as_hex)
    assert expirations(signer, [salt, hex_salt]) == {salt: None, hex_salt: now_ms - 5 * HOUR_MS}
    await prune_all(signer)
    assert expirations(signer, [salt, hex_salt]) == {salt: None}
    assert await refused(channel, signer, {**data, "message": {**data["message"], "price": 1}}) == "SALT_REUSED"


def test_the_retention_is_a_setting_of_at_least_a_minute(tmp_path: Path) -> None:
    env = {"PORTICO_VAULT_ADDR": "http://127.0.0.1:8200", "PORTICO_VAULT_TOKEN": "t",
           "PORTICO_SIGNER_WATERMARK_DB": str(tmp_path / "w.sqlite3")}
    assert SignerSettings.from_env(env).watermark_retention_s == 3600
    assert SignerSettings.from_env({**env, "PORTICO_SIGNER_WATERMARK_RETENTION_SECONDS": "86400"}
                                   ).watermark_retention_s == 86400
    with pytest.raises(ConfigError, match="PORTICO_SIGNER_WATERMARK_RETENTION_SECONDS"):
        SignerSettings.from_env({**env, "PORTICO_SIGNER_WATERMARK_RETENTION_SECONDS": "10"})
