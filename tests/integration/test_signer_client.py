"""`SignerClient`, as execution and account use it: the signer's own refusals pass on with their message; gRPC's
own text for a failed call, which names internal addresses, is logged (once) and never passed on."""

from __future__ import annotations

import asyncio
import logging
import secrets
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from tests.support.openbao import OpenBaoDevServer
from tests.support.ports import free_port
from tests.support.signer import create_key, make_tokens, running_signer, signer_vault_token

from portico.runtime.client import open_channel
from portico.runtime.errors import FailedPrecondition, PorticoError, Unavailable
from portico.runtime.signing_keys import KeyPolicy
from portico.signer.client import SignerClient
from portico.venues.syndr import typed_data as syndr

KEY = f"client-{secrets.token_hex(3)}"


def order(salt: int, price: str = "3000") -> dict[str, Any]:
    return syndr.order_typed_data(
        verifying_contract="0x" + "ab" * 20, account="0x" + "12" * 20, instrument_id=3, is_buy=True, order_type=0,
        time_in_force=0, post_only=False, reduce_only=False, price=Decimal(price), amount=Decimal("0.1"), salt=salt,
        expiration=1_900_000_000_000, timestamp=1_800_000_000_000)


def client_logs(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "portico.signer.client"]


async def test_a_signer_that_cannot_be_reached_is_unavailable_without_its_address(
        caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()  # nothing listens there: the connection is refused
    async with open_channel(f"127.0.0.1:{port}") as channel:
        client = SignerClient(channel, "pt_unused", timeout_s=5)
        with caplog.at_level(logging.WARNING, logger="portico.signer.client"):
            errors: list[PorticoError] = []
            for _ in range(3):
                with pytest.raises(Unavailable) as caught:
                    await client.sign(KEY, order(1))
                errors.append(caught.value)
    for error in errors:
        assert (error.reason, error.message) == ("SIGNER_UNAVAILABLE", "signer unavailable")
        assert str(port) not in str(error) and "127.0.0.1" not in str(error)
    logged = client_logs(caplog)
    assert len(logged) == 1, [r.getMessage() for r in logged]  # once, not once per call
    assert str(port) in logged[0].__dict__["error"]  # the detail stays in the log, for the operator


async def test_the_signer_s_own_refusal_passes_on_and_each_outage_is_logged_once(
        openbao: OpenBaoDevServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    token = signer_vault_token(openbao)
    address = await create_key(openbao, KEY, KeyPolicy.build(primary_types=["Order"], domain_names=["Syndr"],
                                                             chain_ids=[421614]))
    port = free_port()
    salt = secrets.randbits(64)
    caplog.set_level(logging.WARNING, logger="portico.signer.client")
    tokens, auth_config = make_tokens()
    async with open_channel(f"127.0.0.1:{port}") as channel:
        client = SignerClient(channel, tokens["trade"])  # one client throughout, as execution holds one
        for _ in range(2):
            with pytest.raises(Unavailable):  # not started yet
                await client.sign(KEY, order(salt))
        assert len(client_logs(caplog)) == 1, [r.__dict__.get("error") for r in client_logs(caplog)]
        async with running_signer(openbao.addr, token, tmp_path, env={"PORTICO_LISTEN_ADDR": f"127.0.0.1:{port}",
                                                                      "PORTICO_AUTH_TOKENS": auth_config}):
            deadline = asyncio.get_running_loop().time() + 20
            while True:  # the channel backs off (about a second) after the refused connection
                try:
                    signature, signed_by = await client.sign(KEY, order(salt))
                    break
                except Unavailable:
                    if asyncio.get_running_loop().time() > deadline:
                        raise
                    await asyncio.sleep(0.2)
            assert signed_by == address and signature.startswith("0x")
            caplog.clear()
            with pytest.raises(FailedPrecondition) as caught:
                await client.sign(KEY, order(salt, price="3001"))
            assert caught.value.reason == "SIGNER_REFUSED"
            assert caught.value.message.startswith(f"signer: salt {salt} was already signed over a different payload")
            assert not client_logs(caplog)  # the signer answered: nothing of gRPC's to log
        # The signer is gone: a new outage, news again, so logged once more; still no address for the caller.
        for _ in range(3):
            with pytest.raises(Unavailable) as failed:
                await client.sign(KEY, order(salt))
            assert str(port) not in str(failed.value)
    assert len(client_logs(caplog)) == 1, [r.__dict__.get("error") for r in client_logs(caplog)]
