"""The signer's audit file fails closed: no signature leaves without its line in `PORTICO_SIGNER_AUDIT_LOG`.

Real gRPC server, real OpenBao, the signer's own Vault policy. A full disk is `/dev/full` (every write fails
with ENOSPC, whoever the tests run as; root ignores a read-only mode, so permissions could not stand in for it).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tests.support.openbao import OpenBaoDevServer
from tests.support.ports import free_port
from tests.support.signer import create_key, make_tokens, running_signer, signer_vault_token, stub
from tests.support.suite import wait_serving

from portico.runtime.client import bearer, open_channel
from portico.runtime.errors import error_info
from portico.runtime.secp256k1 import recover_address
from portico.runtime.signing_keys import KeyPolicy
from portico.signer.service import SERVICE_NAME
from portico.signer.v1 import signer_service_pb2 as pb
from portico.venues.syndr import typed_data as syndr

REPO = Path(__file__).resolve().parents[2]
KEY = f"audit-{secrets.token_hex(3)}"  # the session's Vault is shared
FULL = Path("/dev/full")
OUTAGE = "audit log cannot be written; refusing to return signatures"
RECOVERED = "audit log writable again; signing"

pytestmark = pytest.mark.skipif(not FULL.exists(), reason="needs /dev/full (Linux)")


def order_request(salt: int, price: str = "3000") -> pb.SignRequest:
    data = syndr.order_typed_data(
        verifying_contract="0x" + "ab" * 20, account="0x" + "12" * 20, instrument_id=3, is_buy=True, order_type=0,
        time_in_force=0, post_only=False, reduce_only=False, price=Decimal(price), amount=Decimal("0.1"), salt=salt,
        expiration=1_900_000_000_000, timestamp=1_800_000_000_000)
    return pb.SignRequest(key_id=KEY, typed_data_json=json.dumps(data))


@pytest.fixture(scope="module")
async def vault_token(openbao: OpenBaoDevServer) -> str:
    token = signer_vault_token(openbao)
    await create_key(openbao, KEY, KeyPolicy.build(primary_types=["Order"], domain_names=["Syndr"],
                                                   chain_ids=[421614]))
    return token


async def sign_error(channel: grpc.aio.Channel, metadata: Any, request: pb.SignRequest) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub(channel).Sign(request, metadata=metadata, timeout=10)
    return caught.value


def assert_audit_unavailable(error: grpc.aio.AioRpcError, request: pb.SignRequest, path: Path) -> None:
    assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
    info = error_info(error)
    assert info is not None and info.reason == "AUDIT_UNAVAILABLE"
    assert info.domain == "signer.portico"
    said = f"{error.details()} {error.trailing_metadata()}"
    salt = str(json.loads(request.typed_data_json)["message"]["salt"])
    for private in (str(path), path.name, KEY, salt):  # the target, the key, the payload: none of them
        assert private not in said


def audit_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_a_signature_whose_audit_line_cannot_be_written_is_not_returned_until_it_can(
        openbao: OpenBaoDevServer, vault_token: str, tmp_path: Path, log_lines: io.StringIO) -> None:
    """Disk full: UNAVAILABLE/AUDIT_UNAVAILABLE and no signature, a warning once per outage, the server up and
    healthy; once the file is writable again the same request signs (its salt's watermark allows the same
    payload again), without a restart, and the outage's end is logged with the number of signatures withheld."""
    audit_path = tmp_path / "audit" / "signer-audit.log"
    audit_path.parent.mkdir()
    audit_path.symlink_to(FULL)  # the file as the signer opens it: every write fails with ENOSPC
    async with running_signer(openbao.addr, vault_token, tmp_path,
                              env={"PORTICO_SIGNER_AUDIT_LOG": str(audit_path)}) as signer, \
            open_channel(signer.target) as channel:
        salt = secrets.randbits(64)
        request = order_request(salt)
        for attempt in (request, request, order_request(secrets.randbits(64))):
            assert_audit_unavailable(await sign_error(channel, signer.metadata(), attempt), attempt, audit_path)
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        logged = log_lines.getvalue()
        assert '"msg":"signed"' not in logged  # no audit line anywhere for a signature that did not leave
        assert logged.count(OUTAGE) == 1  # once per outage, not once per call
        [warning] = [json.loads(line) for line in logged.splitlines() if OUTAGE in line]
        assert (warning["level"], warning["logger"], warning["error"]) == ("WARNING", "portico.signer", "ENOSPC")

        audit_path.unlink()  # space again: the target is a file that can be written (created by the next open)
        reply = await stub(channel).Sign(request, metadata=signer.metadata(), timeout=10)
        assert recover_address(reply.digest, reply.signature) == reply.address
        again = await stub(channel).Sign(order_request(secrets.randbits(64)), metadata=signer.metadata(), timeout=10)

        # The salt was watermarked when the audit failed: the same payload signs, another one under it is refused.
        info = error_info(await sign_error(channel, signer.metadata(), order_request(salt, price="3001")))
        assert info is not None and info.reason == "SALT_REUSED"

    assert [(line["msg"], line["digest"]) for line in audit_lines(audit_path)] == [
        ("signed", "0x" + reply.digest.hex()), ("signed", "0x" + again.digest.hex())]
    logged = log_lines.getvalue()
    assert logged.count(OUTAGE) == 1
    [recovered] = [json.loads(line) for line in logged.splitlines() if RECOVERED in line]
    assert (recovered["level"], recovered["withheld"]) == ("INFO", 3)
    assert logged.count('"msg":"signed"') == 2


async def test_the_audit_file_holds_the_line_the_log_holds(openbao: OpenBaoDevServer, vault_token: str,
                                                          tmp_path: Path, log_lines: io.StringIO) -> None:
    """The file's line is the audit logger's JSON line, as `JsonFormatter("signer")` writes it (the same fields
    as on stderr), one per signature, appended to what the file held."""
    audit_path = tmp_path / "logs" / "audit.log"  # its directory is made at start
    async with running_signer(openbao.addr, vault_token, tmp_path,
                              env={"PORTICO_SIGNER_AUDIT_LOG": str(audit_path)}) as signer, \
            open_channel(signer.target) as channel:
        audit_path.write_text('{"earlier":"line"}\n')  # e.g. a previous run's: appended to, never truncated
        salt = secrets.randbits(64)
        reply = await stub(channel).Sign(order_request(salt), metadata=signer.metadata(), timeout=10)
    earlier, line = audit_lines(audit_path)
    assert earlier == {"earlier": "line"}
    [logged] = [json.loads(text) for text in log_lines.getvalue().splitlines() if '"msg":"signed"' in text]
    assert line == {**logged, "service": "signer"}  # the test's log formatter names its service "test"
    assert list(line) == ["ts", "level", "service", "logger", "msg", "trace_id", "span_id", "key_id", "caller",
                          "primary_type", "digest", "address", "salt"]
    assert (line["level"], line["logger"], line["msg"]) == ("INFO", "portico.signer.audit", "signed")
    assert (line["key_id"], line["caller"], line["primary_type"]) == (KEY, "test-trade", "Order")
    assert (line["digest"], line["address"], line["salt"]) == ("0x" + reply.digest.hex(), reply.address, str(salt))


@pytest.fixture
def signer_process(openbao: OpenBaoDevServer, vault_token: str,
                   tmp_path: Path) -> Iterator[tuple[str, dict[str, str], Path]]:
    """`python -m portico.signer` (the real entry point) with its audit file on a full disk."""
    tokens, auth_config = make_tokens()
    port = free_port()
    env = {**os.environ, "PORTICO_LISTEN_ADDR": f"127.0.0.1:{port}", "PORTICO_VAULT_ADDR": openbao.addr,
           "PORTICO_VAULT_TOKEN": vault_token, "PORTICO_AUTH_TOKENS": auth_config, "PORTICO_LOG_LEVEL": "WARNING",
           "PORTICO_SIGNER_WATERMARK_DB": str(tmp_path / "watermarks.sqlite3"),
           "PORTICO_SIGNER_AUDIT_LOG": str(FULL)}
    stderr = tmp_path / "stderr.log"
    with stderr.open("wb") as sink:
        process = subprocess.Popen([sys.executable, "-m", "portico.signer"], cwd=REPO, env=env,
                                   stdout=subprocess.DEVNULL, stderr=sink)
    try:
        yield f"127.0.0.1:{port}", tokens, stderr
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def test_the_signer_process_returns_no_signature_its_audit_file_cannot_hold(
        signer_process: tuple[str, dict[str, str], Path]) -> None:
    """Through `python -m portico.signer`: a full audit disk refuses every signature, warns once, stays up."""
    target, tokens, stderr = signer_process
    await wait_serving(target, SERVICE_NAME)
    async with open_channel(target) as channel:
        for _ in range(2):
            request = order_request(secrets.randbits(64))
            assert_audit_unavailable(await sign_error(channel, bearer(tokens["trade"]), request), request, FULL)
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
        assert health.status == health_pb2.HealthCheckResponse.SERVING
    await asyncio.sleep(0.2)  # the process's stderr is a file: its lines are there once written
    logged = stderr.read_text()
    assert logged.count(OUTAGE) == 1, logged
    assert '"msg":"signed"' not in logged
    assert "Traceback" not in logged


async def test_an_audit_file_that_cannot_be_opened_stops_the_start(openbao: OpenBaoDevServer, vault_token: str,
                                                                   tmp_path: Path) -> None:
    """A path that cannot be opened for appending is a configuration error: exit status 2, one plain line."""
    (tmp_path / "a-file").write_text("")
    env = {**os.environ, "PORTICO_LISTEN_ADDR": f"127.0.0.1:{free_port()}", "PORTICO_VAULT_ADDR": openbao.addr,
           "PORTICO_VAULT_TOKEN": vault_token, "PORTICO_AUTH_TOKENS": "[]",
           "PORTICO_SIGNER_WATERMARK_DB": str(tmp_path / "watermarks.sqlite3"),
           "PORTICO_SIGNER_AUDIT_LOG": str(tmp_path / "a-file" / "audit.log")}  # under a file: no such directory
    done = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "portico.signer"], cwd=REPO, env=env,
                                   capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "portico-signer: configuration error: PORTICO_SIGNER_AUDIT_LOG=" in done.stderr
    assert "Traceback" not in done.stderr
