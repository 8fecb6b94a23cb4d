"""The signer end to end: real gRPC server, real OpenBao, the signer's own Vault policy."""

from __future__ import annotations

import asyncio
import copy
import io
import json
import logging
import os
import secrets
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from tests.support.openbao import OpenBaoDevServer
from tests.support.ports import free_port
from tests.support.signer import RunningSigner, running_signer, stub

from portico.runtime.client import bearer, open_channel
from portico.runtime.errors import error_info
from portico.runtime.secp256k1 import address_from_private_key, recover_address
from portico.runtime.signing_keys import KeyAdmin, KeyAdminError, KeyPaths, KeyPolicy
from portico.runtime.sqlstore import WriterLockHeld
from portico.runtime.vault import VaultSession, VaultSettings
from portico.signer.v1 import signer_service_pb2 as pb
from portico.venues.syndr import typed_data as syndr

REPO = Path(__file__).resolve().parents[2]
ORDERBOOK = "0x" + "ab" * 20
KEYS_MANAGER = "0x" + "cd" * 20
RUN = secrets.token_hex(3)  # the session's Vault is shared: key ids are unique per run
ORDER_KEY = f"order-{RUN}"
RAW_KEY = f"raw-{RUN}"
MAINNET_KEY = f"mainnet-{RUN}"
NO_POLICY_KEY = f"nopolicy-{RUN}"
ORDER_KEY_HEX = "0x" + secrets.token_hex(32)
ORDER_ADDRESS = address_from_private_key(bytes.fromhex(ORDER_KEY_HEX[2:]))
SYNDR_POLICY = KeyPolicy.build(primary_types=["Order", "SignKey"], domain_names=["Syndr"], chain_ids=[421614])


def order(salt: int, *, price: str = "3000.5", amount: str = "0.1", account: str | None = None) -> dict[str, Any]:
    return syndr.order_typed_data(
        verifying_contract=ORDERBOOK, account=account or "0x" + "12" * 20, instrument_id=3, is_buy=True,
        order_type=0, time_in_force=0, post_only=False, reduce_only=False, price=Decimal(price),
        amount=Decimal(amount), salt=salt, expiration=1_900_000_000_000, timestamp=1_800_000_000_000)


def typed_request(key_id: str, data: dict[str, Any] | str) -> pb.SignRequest:
    text = data if isinstance(data, str) else json.dumps(data)
    return pb.SignRequest(key_id=key_id, typed_data_json=text)


@pytest.fixture(scope="module")
async def signer_vault_token(openbao: OpenBaoDevServer) -> str:
    """A token bound to the signer's own policy file, as `portico up` and Kubernetes use it."""
    client = openbao.client()
    client.sys.create_or_update_policy("signer", (REPO / "deploy" / "vault" / "signer.hcl").read_text())
    return str(client.auth.token.create(policies=["signer"], ttl="1h")["auth"]["client_token"])


@pytest.fixture(scope="module")
async def admin(openbao: OpenBaoDevServer) -> AsyncIterator[KeyAdmin]:
    async with VaultSession(VaultSettings(addr=openbao.addr, auth_method="token", token=openbao.root_token)) as vault:
        admin = KeyAdmin(vault, KeyPaths())
        await admin.import_key(ORDER_KEY, ORDER_KEY_HEX, SYNDR_POLICY)
        await admin.create(RAW_KEY, KeyPolicy.build(allow_raw_digest=True))
        await admin.create(MAINNET_KEY, KeyPolicy.build(primary_types=["Order"], domain_names=["Syndr"], chain_ids=[1]))
        await admin.create(NO_POLICY_KEY, KeyPolicy())
        yield admin


@pytest.fixture(scope="module")
async def signer(openbao: OpenBaoDevServer, signer_vault_token: str, admin: KeyAdmin,
                 tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningSigner]:
    async with running_signer(openbao.addr, signer_vault_token, tmp_path_factory.mktemp("signer"),
                              env={"PORTICO_SIGNER_KEY_CACHE_SECONDS": "0.3"}) as running:
        yield running


@pytest.fixture
async def channel(signer: RunningSigner) -> AsyncIterator[grpc.aio.Channel]:
    async with open_channel(signer.target) as channel:
        yield channel


async def sign(channel: grpc.aio.Channel, signer: RunningSigner, request: pb.SignRequest,
               scope: str = "trade") -> pb.SignResponse:
    response: pb.SignResponse = await stub(channel).Sign(request, metadata=signer.metadata(scope), timeout=10)
    return response


async def sign_error(channel: grpc.aio.Channel, signer: RunningSigner, request: pb.SignRequest,
                     metadata: Any = None) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub(channel).Sign(request, metadata=signer.metadata() if metadata is None else metadata, timeout=10)
    return caught.value


# --------------------------------------------------------------------------- correctness


async def test_order_signature_is_identical_to_eth_account(channel: grpc.aio.Channel, signer: RunningSigner) -> None:
    data = order(salt=secrets.randbits(64))
    reply = await sign(channel, signer, typed_request(ORDER_KEY, data))
    expected = Account.sign_typed_data(ORDER_KEY_HEX, full_message=data)
    assert reply.signature == bytes(expected.signature)
    assert reply.digest == bytes(expected.message_hash)
    assert reply.address == Account.from_key(ORDER_KEY_HEX).address
    assert recover_address(reply.digest, reply.signature) == reply.address


async def test_sign_key_type_is_signed_and_verifiable(channel: grpc.aio.Channel, signer: RunningSigner) -> None:
    data = syndr.sign_key_typed_data(verifying_contract=KEYS_MANAGER, account="0x" + "34" * 20, nonce=7)
    reply = await sign(channel, signer, typed_request(ORDER_KEY, data))
    assert Account.recover_message(encode_typed_data(full_message=data), signature=reply.signature) == reply.address


async def test_raw_digest_signed_when_policy_allows(channel: grpc.aio.Channel, signer: RunningSigner) -> None:
    digest = secrets.token_bytes(32)
    reply = await sign(channel, signer, pb.SignRequest(key_id=RAW_KEY, digest=digest))
    assert reply.digest == digest
    assert recover_address(digest, reply.signature) == reply.address


# --------------------------------------------------------------------------- policy


@pytest.mark.parametrize(("key", "mutate", "reason"), [
    (ORDER_KEY, lambda d: d["domain"].update(name="NotSyndr"), "DOMAIN_NAME_NOT_ALLOWED"),
    (ORDER_KEY, lambda d: d["domain"].update(chainId=1), "CHAIN_ID_NOT_ALLOWED"),
    (MAINNET_KEY, lambda d: None, "CHAIN_ID_NOT_ALLOWED"),
    (RAW_KEY, lambda d: None, "PRIMARY_TYPE_NOT_ALLOWED"),
    (NO_POLICY_KEY, lambda d: None, "PRIMARY_TYPE_NOT_ALLOWED"),
])
async def test_policy(channel: grpc.aio.Channel, signer: RunningSigner, key: str, mutate: Any,
                      reason: str) -> None:
    data = order(salt=secrets.randbits(64))
    mutate(data)
    error = await sign_error(channel, signer, typed_request(key, data))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    info = error_info(error)
    assert info is not None and info.reason == reason


async def test_register_signing_key_type_denied_for_order_key(channel: grpc.aio.Channel,
                                                               signer: RunningSigner) -> None:
    data = syndr.register_signing_key_typed_data(verifying_contract=KEYS_MANAGER, key="0x" + "56" * 20, nonce=1)
    error = await sign_error(channel, signer, typed_request(ORDER_KEY, data))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    info = error_info(error)
    assert info is not None and info.reason == "PRIMARY_TYPE_NOT_ALLOWED"


async def test_raw_digest_denied_without_policy(channel: grpc.aio.Channel, signer: RunningSigner) -> None:
    error = await sign_error(channel, signer, pb.SignRequest(key_id=ORDER_KEY, digest=b"\x01" * 32))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    info = error_info(error)
    assert info is not None and info.reason == "RAW_DIGEST_NOT_ALLOWED"


async def test_policy_change_takes_effect_after_cache_ttl(channel: grpc.aio.Channel, signer: RunningSigner,
                                                          admin: KeyAdmin) -> None:
    key_id = f"rotating-{RUN}"
    await admin.create(key_id, KeyPolicy.build(primary_types=["Order"], domain_names=["Syndr"], chain_ids=[421614]))
    await sign(channel, signer, typed_request(key_id, order(salt=secrets.randbits(64))))
    await admin.set_policy(key_id, KeyPolicy.build(allow_raw_digest=True))
    await asyncio.sleep(0.5)  # the module's signer caches keys for 0.3 s
    error = await sign_error(channel, signer, typed_request(key_id, order(salt=secrets.randbits(64))))
    info = error_info(error)
    assert info is not None and info.reason == "PRIMARY_TYPE_NOT_ALLOWED"


async def test_unknown_key_is_not_found(channel: grpc.aio.Channel, signer: RunningSigner) -> None:
    error = await sign_error(channel, signer, typed_request(f"missing-{RUN}", order(salt=1)))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    info = error_info(error)
    assert info is not None and info.reason == "KEY_NOT_FOUND"


# --------------------------------------------------------------------------- salt watermark


async def test_salt_reuse_with_other_payload_is_refused(channel: grpc.aio.Channel, signer: RunningSigner) -> None:
    salt = secrets.randbits(64)
    first = await sign(channel, signer, typed_request(ORDER_KEY, order(salt, price="3000")))
    again = await sign(channel, signer, typed_request(ORDER_KEY, order(salt, price="3000")))
    assert again.signature == first.signature  # a retry of the identical payload is fine
    error = await sign_error(channel, signer, typed_request(ORDER_KEY, order(salt, price="3001")))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = error_info(error)
    assert info is not None and info.reason == "SALT_REUSED"


async def test_salt_watermark_is_per_key(channel: grpc.aio.Channel, signer: RunningSigner, admin: KeyAdmin) -> None:
    other = f"other-{RUN}"
    await admin.create(other, SYNDR_POLICY)
    salt = secrets.randbits(64)
    await sign(channel, signer, typed_request(ORDER_KEY, order(salt, price="10")))
    await sign(channel, signer, typed_request(other, order(salt, price="20")))


async def test_concurrent_different_payloads_with_one_salt_sign_once(channel: grpc.aio.Channel,
                                                                      signer: RunningSigner) -> None:
    salt = secrets.randbits(64)
    requests = [typed_request(ORDER_KEY, order(salt, price=str(3000 + i))) for i in range(40)]
    results = await asyncio.gather(*(sign(channel, signer, r) for r in requests), return_exceptions=True)
    signed = [r for r in results if isinstance(r, pb.SignResponse)]
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(signed) == 1
    assert len(refused) == 39
    assert {e.code() for e in refused} == {grpc.StatusCode.FAILED_PRECONDITION}


async def test_concurrent_identical_payloads_all_sign_identically(channel: grpc.aio.Channel,
                                                                   signer: RunningSigner) -> None:
    request = typed_request(ORDER_KEY, order(secrets.randbits(64)))
    results = await asyncio.gather(*(sign(channel, signer, request) for _ in range(40)))
    assert len({r.signature for r in results}) == 1


async def test_salt_watermark_survives_restart(openbao: OpenBaoDevServer, signer_vault_token: str, admin: KeyAdmin,
                                               tmp_path: Path) -> None:
    salt = secrets.randbits(64)
    async with running_signer(openbao.addr, signer_vault_token, tmp_path) as first, \
            open_channel(first.target) as channel:
        await sign(channel, first, typed_request(ORDER_KEY, order(salt, price="1")))
    async with running_signer(openbao.addr, signer_vault_token, tmp_path) as second, \
            open_channel(second.target) as channel:
        error = await sign_error(channel, second, typed_request(ORDER_KEY, order(salt, price="2")))
        info = error_info(error)
        assert info is not None and info.reason == "SALT_REUSED"


async def test_one_private_key_under_two_key_ids_never_signs_one_salt_twice(
        channel: grpc.aio.Channel, signer: RunningSigner, openbao: OpenBaoDevServer, admin: KeyAdmin) -> None:
    """The watermark is the key's, not its name's: a twin id of the same private key (stored straight into
    Vault, as before KeyAdmin refused it) cannot sign a salt the first id signed over another payload."""
    twin = f"twin-{secrets.token_hex(3)}"
    paths = KeyPaths()
    async with VaultSession(VaultSettings(addr=openbao.addr, auth_method="token", token=openbao.root_token)) as vault:
        await vault.write_kv(paths.key(twin), {"private_key": ORDER_KEY_HEX, "address": ORDER_ADDRESS}, cas=0)
        await vault.write_kv(paths.policy(twin), SYNDR_POLICY.to_document())
    salt = secrets.randbits(64)
    first = await sign(channel, signer, typed_request(ORDER_KEY, order(salt, price="1")))
    error = await sign_error(channel, signer, typed_request(twin, order(salt, price="2")))
    info = error_info(error)
    assert info is not None and info.reason == "SALT_REUSED"
    again = await sign(channel, signer, typed_request(twin, order(salt, price="1")))  # the same payload: allowed
    assert (again.signature, again.address) == (first.signature, first.address)
    with pytest.raises(KeyAdminError, match=f"already stored as key {ORDER_KEY}"):  # and no new twins
        await admin.import_key(f"twin-{secrets.token_hex(3)}", ORDER_KEY_HEX, SYNDR_POLICY)


async def test_a_second_signer_on_the_same_ledger_is_refused(openbao: OpenBaoDevServer, signer_vault_token: str,
                                                             tmp_path: Path) -> None:
    """Two signers on one ledger file would each trust their own view of the salts: the second never starts."""
    async with running_signer(openbao.addr, signer_vault_token, tmp_path) as first, \
            open_channel(first.target) as channel:
        with pytest.raises(WriterLockHeld, match=r"the salt ledger .*already has a writer"):
            async with running_signer(openbao.addr, signer_vault_token, tmp_path):
                pass
        # As a process: a clear message and exit status 1, no traceback.
        env = {**os.environ, "PORTICO_LISTEN_ADDR": f"127.0.0.1:{free_port()}", "PORTICO_VAULT_ADDR": openbao.addr,
               "PORTICO_VAULT_TOKEN": signer_vault_token, "PORTICO_AUTH_TOKENS": "[]",
               "PORTICO_SIGNER_WATERMARK_DB": str(tmp_path / "watermarks.sqlite3")}
        second = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "portico.signer"], env=env,
                                         capture_output=True, text=True, timeout=60)
        assert second.returncode == 1
        assert "portico-signer: not started: the salt ledger" in second.stderr
        assert "Traceback" not in second.stderr
        await sign(channel, first, typed_request(ORDER_KEY, order(secrets.randbits(64))))  # the first still signs


async def test_a_ledger_that_cannot_commit_is_unavailable_and_the_retry_signs(channel: grpc.aio.Channel,
                                                                              signer: RunningSigner) -> None:
    """A salt ledger that cannot commit (its write lock held past the busy timeout, a full disk, an I/O error)
    refuses with UNAVAILABLE, the one status worth retrying: nothing was recorded or signed, so a retry signs."""
    request = typed_request(ORDER_KEY, order(secrets.randbits(64)))
    holder = sqlite3.connect(signer.app.settings.watermark_db, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # e.g. an operator's sqlite3 shell, or a long checkpoint
        error = await sign_error(channel, signer, request)
        assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
        info = error_info(error)
        assert info is not None and info.reason == "SALT_LEDGER_UNAVAILABLE"
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    reply = await sign(channel, signer, request)
    assert recover_address(reply.digest, reply.signature) == ORDER_ADDRESS


# --------------------------------------------------------------------------- audit


async def test_every_signature_is_audited_whatever_the_log_level(channel: grpc.aio.Channel, signer: RunningSigner,
                                                                 log_lines: io.StringIO) -> None:
    """PORTICO_LOG_LEVEL=WARNING quiets the service's logs, never its audit trail."""
    logging.getLogger().setLevel(logging.WARNING)  # as configure_logging does; log_lines restores the level
    reply = await sign(channel, signer, typed_request(ORDER_KEY, order(secrets.randbits(64))))
    audited = [json.loads(line) for line in log_lines.getvalue().splitlines() if "portico.signer.audit" in line]
    assert [(line["key_id"], line["digest"]) for line in audited] == [(ORDER_KEY, "0x" + reply.digest.hex())]


async def test_keys_cli_refuses_a_policy_the_signer_would_refuse(channel: grpc.aio.Channel, signer: RunningSigner,
                                                                 admin: KeyAdmin, openbao: OpenBaoDevServer) -> None:
    """The signer reads a policy with a chain id below 1 or an empty name as malformed and then refuses every
    signature of the key (KEY_MALFORMED): `portico signer keys` must not write one, nor create a key with one."""
    key_id = f"cli-policy-{RUN}"
    await admin.create(key_id, SYNDR_POLICY)
    env = {**os.environ, "VAULT_ADDR": openbao.addr, "VAULT_TOKEN": openbao.root_token}
    for args in (["set-policy", key_id, "--primary-type", "Order", "--domain-name", "Syndr", "--chain-id", "0"],
                 ["set-policy", key_id, "--primary-type", "Order", "--domain-name", "", "--chain-id", "421614"],
                 ["create", f"{key_id}-new", "--primary-type", "", "--chain-id", "421614"]):
        done = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "portico.cli", "signer", "keys", *args],
                                       env=env, capture_output=True, text=True, timeout=60, cwd=REPO)
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr
    assert f"{key_id}-new" not in dict(await admin.list_addresses())
    await asyncio.sleep(0.5)  # past the module signer's key cache: the key still signs under its old policy
    await sign(channel, signer, typed_request(key_id, order(secrets.randbits(64))))


# --------------------------------------------------------------------------- bad input


def _bad_typed_data() -> list[tuple[str, str]]:
    base = order(salt=5)
    cases: list[tuple[str, str]] = []

    def variant(field: str, change: Any) -> None:
        data = copy.deepcopy(base)
        change(data)
        cases.append((field, json.dumps(data)))

    variant("typed_data_json.message.price", lambda d: d["message"].update(price="abc"))
    variant("typed_data_json.message.amount", lambda d: d["message"].update(amount=-1))
    variant("typed_data_json.message.salt", lambda d: d["message"].update(salt=2**256))
    variant("typed_data_json.message.isBuy", lambda d: d["message"].update(isBuy="true"))
    variant("typed_data_json.message.account", lambda d: d["message"].update(account="0x1234"))
    variant("typed_data_json.message.price", lambda d: d["message"].update(price=1.5))
    variant("typed_data_json.message", lambda d: d["message"].pop("timestamp"))
    variant("typed_data_json.message", lambda d: d["message"].update(extra=1))
    variant("typed_data_json.primaryType", lambda d: d.update(primaryType="Nope"))
    variant("typed_data_json.types", lambda d: d["types"]["Order"].append({"name": "x", "type": "Missing"}))
    def string_salt(d: dict[str, Any]) -> None:  # a salt declared as a string, and not a number
        d["types"]["Order"] = [{"name": f["name"], "type": "string" if f["name"] == "salt" else f["type"]}
                               for f in d["types"]["Order"]]
        d["message"]["salt"] = "abc"

    variant("typed_data_json.message.salt", string_salt)

    def huge_string_salt(d: dict[str, Any]) -> None:  # a salt whose decimal form Python refuses to write
        string_salt(d)
        d["message"]["salt"] = "0x" + "f" * 4000

    variant("typed_data_json.message.salt", huge_string_salt)
    variant("typed_data_json.message", lambda d: d["message"].update({"\ud800": 1}))  # a lone surrogate as a key
    variant("typed_data_json.message", lambda d: d["message"].update({"k" * 60_000: 1}))  # far beyond a status's size
    variant("typed_data_json.types", lambda d: d["types"]["Order"].append({"name": "x", "type": "T" * 20_000}))
    huge = json.dumps(base).replace('"instrumentId": 3', '"instrumentId": ' + "9" * 5000)
    assert huge != json.dumps(base)
    cases.append(("typed_data_json", huge))  # beyond Python's 4,300-digit integer conversion limit
    cases.append(("typed_data_json", "{not json"))
    cases.append(("typed_data_json", "[1, 2, 3]"))
    cases.append(("typed_data_json", "[" * 100_000 + "]" * 100_000))
    cases.append(("typed_data_json", json.dumps({**base, "padding": "x" * (1024 * 1024)})))
    return cases


@pytest.mark.parametrize(("field", "text"), _bad_typed_data(), ids=lambda v: str(v)[:40])
async def test_malformed_typed_data_is_invalid_argument(channel: grpc.aio.Channel, signer: RunningSigner,
                                                        field: str, text: str) -> None:
    error = await sign_error(channel, signer, typed_request(ORDER_KEY, text))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = error_info(error)
    assert info is not None and info.metadata["field"].startswith(field)
    assert len(error.details() or "") <= 512  # bounded, whatever the input quoted


@pytest.mark.parametrize(("request_", "field"), [
    (pb.SignRequest(key_id=ORDER_KEY), "payload"),
    (pb.SignRequest(key_id=RAW_KEY, digest=b"\x00" * 31), "digest"),
    (pb.SignRequest(key_id=RAW_KEY, digest=b"\x00" * 33), "digest"),
    (pb.SignRequest(key_id="", digest=b"\x00" * 32), "key_id"),
    (pb.SignRequest(key_id="../../sys/seal", digest=b"\x00" * 32), "key_id"),
    (pb.SignRequest(key_id="A" * 65, digest=b"\x00" * 32), "key_id"),
])
async def test_bad_request_fields_are_invalid_argument(channel: grpc.aio.Channel, signer: RunningSigner,
                                                       request_: pb.SignRequest, field: str) -> None:
    error = await sign_error(channel, signer, request_)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = error_info(error)
    assert info is not None and info.metadata["field"] == field


async def test_server_still_serves_after_bad_input(channel: grpc.aio.Channel, signer: RunningSigner) -> None:
    for _field, text in _bad_typed_data():
        with pytest.raises(grpc.aio.AioRpcError):
            await sign(channel, signer, typed_request(ORDER_KEY, text))
    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    await sign(channel, signer, typed_request(ORDER_KEY, order(secrets.randbits(64))))


# --------------------------------------------------------------------------- auth, health, reflection


@pytest.mark.parametrize(("metadata", "code", "reason"), [
    ((), grpc.StatusCode.UNAUTHENTICATED, "TOKEN_MISSING"),
    (bearer("pt_not-a-real-token"), grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID"),
    ((("authorization", "Basic dXNlcjpwYXNz"),), grpc.StatusCode.UNAUTHENTICATED, "TOKEN_MALFORMED"),
    ("read", grpc.StatusCode.PERMISSION_DENIED, "SCOPE_MISSING"),
])
async def test_auth(channel: grpc.aio.Channel, signer: RunningSigner, metadata: Any, code: grpc.StatusCode,
                    reason: str) -> None:
    if metadata == "read":
        metadata = signer.metadata("read")
    error = await sign_error(channel, signer, typed_request(ORDER_KEY, order(secrets.randbits(64))), metadata=metadata)
    assert error.code() == code
    info = error_info(error)
    assert info is not None and info.reason == reason


async def test_health_check_and_watch_need_no_token(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(service="portico.signer.v1.SignerService"))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    watch = health.Watch(health_pb2.HealthCheckRequest(service="portico.signer.v1.SignerService"))
    first = await watch.read()
    assert first.status == health_pb2.HealthCheckResponse.SERVING
    watch.cancel()


async def test_reflection_shows_sign_alone(channel: grpc.aio.Channel) -> None:
    reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = reflect.ServerReflectionInfo()
    await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    listed = await call.read()
    services = {s.name for s in listed.list_services_response.service}
    assert "portico.signer.v1.SignerService" in services
    await call.write(reflection_pb2.ServerReflectionRequest(file_containing_symbol="portico.signer.v1.SignerService"))
    files = await call.read()
    await call.done_writing()
    from google.protobuf import descriptor_pb2

    methods = []
    for raw in files.file_descriptor_response.file_descriptor_proto:
        proto = descriptor_pb2.FileDescriptorProto.FromString(raw)
        for service in proto.service:
            if service.name == "SignerService":
                methods = [m.name for m in service.method]
    assert methods == ["Sign"]
    assert {s for s in services if s.startswith("portico.")} == {"portico.signer.v1.SignerService"}
