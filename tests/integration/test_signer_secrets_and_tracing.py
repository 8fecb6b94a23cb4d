"""No key material or credential in any response, log line or span; one trace from client to signer."""

from __future__ import annotations

import io
import json
import secrets
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from tests.support.openbao import OpenBaoDevServer
from tests.support.signer import RunningSigner, running_signer, stub

from portico.runtime.client import bearer, open_channel
from portico.runtime.signing_keys import KeyAdmin, KeyPaths, KeyPolicy
from portico.runtime.vault import VaultSession, VaultSettings
from portico.signer.v1 import signer_service_pb2 as pb
from portico.venues.syndr import typed_data as syndr

REPO = Path(__file__).resolve().parents[2]
RUN = secrets.token_hex(3)
KEY = f"scan-{RUN}"


@pytest.fixture(scope="module")
async def setup(openbao: OpenBaoDevServer, tmp_path_factory: pytest.TempPathFactory
                ) -> AsyncIterator[tuple[RunningSigner, list[str]]]:
    client = openbao.client()
    client.sys.create_or_update_policy("signer", (REPO / "deploy" / "vault" / "signer.hcl").read_text())
    vault_token = str(client.auth.token.create(policies=["signer"], ttl="1h")["auth"]["client_token"])
    async with VaultSession(VaultSettings(addr=openbao.addr, auth_method="token", token=openbao.root_token)) as vault:
        await KeyAdmin(vault, KeyPaths()).create(KEY, KeyPolicy.build(
            primary_types=["Order"], domain_names=["Syndr"], chain_ids=[421614]))
        private_key = (await vault.read_kv(KeyPaths().key(KEY)))["private_key"]
    async with running_signer(openbao.addr, vault_token, tmp_path_factory.mktemp("scan")) as signer:
        forbidden = [private_key.removeprefix("0x").lower(), vault_token, openbao.root_token,
                     *signer.tokens.values()]
        yield signer, forbidden


def order_json(salt: int, price: str = "100") -> str:
    return json.dumps(syndr.order_typed_data(
        verifying_contract="0x" + "ab" * 20, account="0x" + "12" * 20, instrument_id=2, is_buy=True, order_type=0,
        time_in_force=0, post_only=False, reduce_only=False, price=Decimal(price), amount=Decimal("1"), salt=salt,
        expiration=1_900_000_000_000, timestamp=1_800_000_000_000))


async def test_no_secret_in_responses_logs_or_spans(setup: tuple[RunningSigner, list[str]], log_lines: io.StringIO,
                                                    spans: InMemorySpanExporter) -> None:
    signer, forbidden = setup
    seen: list[str] = []
    async with open_channel(signer.target) as channel:
        signer_stub = stub(channel)
        salt = secrets.randbits(64)
        attempts = [
            (pb.SignRequest(key_id=KEY, typed_data_json=order_json(salt)), signer.metadata()),
            (pb.SignRequest(key_id=KEY, typed_data_json=order_json(salt, "101")), signer.metadata()),  # salt reuse
            (pb.SignRequest(key_id=KEY, digest=b"\x02" * 32), signer.metadata()),  # policy
            (pb.SignRequest(key_id=KEY, typed_data_json="{bad"), signer.metadata()),  # bad input
            (pb.SignRequest(key_id=KEY, typed_data_json=order_json(1)), bearer("pt_wrong")),  # auth
            (pb.SignRequest(key_id=KEY, typed_data_json=order_json(2)), signer.metadata("read")),  # scope
            (pb.SignRequest(key_id=f"absent-{RUN}", digest=b"\x03" * 32), signer.metadata()),  # not found
        ]
        for request, metadata in attempts:
            try:
                reply = await signer_stub.Sign(request, metadata=metadata, timeout=10)
                seen.append(reply.SerializeToString().hex() + str(reply))
            except grpc.aio.AioRpcError as exc:
                seen.append(f"{exc.code()} {exc.details()} {exc.trailing_metadata()} {exc.debug_error_string()}")
    assert len(seen) == len(attempts)
    seen.append(log_lines.getvalue())
    seen.extend(span.to_json() for span in spans.get_finished_spans())
    assert log_lines.getvalue().count('"msg":"signed"') == 1  # one audit line, for the one signature
    everything = "\n".join(seen).lower()
    for secret in forbidden:
        assert secret.lower() not in everything


async def test_one_trace_from_client_through_signer(setup: tuple[RunningSigner, list[str]], log_lines: io.StringIO,
                                                    spans: InMemorySpanExporter) -> None:
    signer, _ = setup
    tracer = trace.get_tracer("tests")
    with tracer.start_as_current_span("place-order") as root:
        async with open_channel(signer.target) as channel:
            await stub(channel).Sign(pb.SignRequest(key_id=KEY, typed_data_json=order_json(secrets.randbits(64))),
                                     metadata=signer.metadata(), timeout=10)
    trace_id = root.get_span_context().trace_id
    finished = [s for s in spans.get_finished_spans() if s.context.trace_id == trace_id]
    by_kind = {s.kind: s for s in finished if s.name == "portico.signer.v1.SignerService/Sign"}
    client_span, server_span = by_kind[SpanKind.CLIENT], by_kind[SpanKind.SERVER]
    assert client_span.parent is not None and client_span.parent.span_id == root.get_span_context().span_id
    assert server_span.parent is not None and server_span.parent.span_id == client_span.context.span_id
    assert server_span.attributes is not None
    assert server_span.attributes["rpc.service"] == "portico.signer.v1.SignerService"
    assert server_span.attributes["rpc.grpc.status_code"] == 0
    assert server_span.attributes["enduser.id"] == "test-trade"
    audit = [json.loads(line) for line in log_lines.getvalue().splitlines() if '"msg":"signed"' in line]
    assert len(audit) == 1
    line = audit[0]
    assert line["trace_id"] == format(trace_id, "032x")
    assert line["key_id"] == KEY
    assert line["caller"] == "test-trade"
    assert line["primary_type"] == "Order"
    assert line["digest"].startswith("0x") and len(line["digest"]) == 66
