"""Request bytes that are not the RPC's protobuf message: INVALID_ARGUMENT (reason REQUEST_MALFORMED) naming the
message type, and the field when a string is not UTF-8, told only to callers that may call the method.

gRPC decodes a request before any Portico code runs, and its own answer to a decoder exception is UNKNOWN with
the exception's text ("Unexpected <class 'google.protobuf.message.DecodeError'>: ..."), to anyone, authenticated
or not. These tests send raw bytes to real services (reference data, the signer) and to a runtime server with a
client-streaming method, which no contract has yet.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from opentelemetry.trace import SpanKind
from tests.support.openbao import OpenBaoDevServer
from tests.support.refdata import RunningRefdata, running_refdata
from tests.support.signer import RunningSigner, create_key, make_tokens, running_signer, signer_vault_token

from portico.refdata.v1 import reference_data_service_pb2 as refdata_pb
from portico.runtime.auth import TokenAuthenticator
from portico.runtime.client import bearer, open_channel
from portico.runtime.errors import error_info
from portico.runtime.server import GrpcServer, ServerSettings
from portico.runtime.signing_keys import KeyPolicy
from portico.signer.v1 import signer_service_pb2 as signer_pb
from portico.sim.server import SimConfig, Simulator

REFDATA = "/portico.refdata.v1.ReferenceDataService"
SIGN = "/portico.signer.v1.SignerService/Sign"
RAW = {"request_serializer": lambda b: b, "response_deserializer": lambda b: b}

BAD_UTF8 = b"\x0a\x02\xff\xfe"  # field 1, length-delimited, 2 bytes that are not UTF-8
GARBAGE = b"\xff\xff\xff\xff garbage"  # not a protobuf message at all: a broken wire format


def utf8_field(number: int, value: bytes) -> bytes:
    """One length-delimited field, hand-encoded (lengths under 128)."""
    assert len(value) < 128
    return bytes([number << 3 | 2, len(value)]) + value


def details(error: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str, str | None, dict[str, str]]:
    info = error_info(error)
    return (error.code(), error.details() or "", info.reason if info else None,
            dict(info.metadata) if info else {})


def field_violations(error: grpc.aio.AioRpcError) -> list[str]:
    status = rpc_status.from_call(error)
    bad = error_details_pb2.BadRequest()
    found = [d for d in (status.details if status else []) if d.Is(error_details_pb2.BadRequest.DESCRIPTOR)]
    return [v.field for d in found if d.Unpack(bad) for v in bad.field_violations]


async def refused(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        result = await call if not hasattr(call, "__aiter__") else [m async for m in call]
        pytest.fail(f"the call succeeded: {result!r}")
    return caught.value


# --------------------------------------------------------------------------- reference data: unary and streaming


@pytest.fixture(scope="module")
async def refdata(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningRefdata]:
    async with Simulator(SimConfig(port=0, market_maker=False)) as sim:
        db = {"PORTICO_REFDATA_DB": str(tmp_path_factory.mktemp("refdata") / "instruments.sqlite3")}
        async with running_refdata(sim.http_url, db) as running:
            yield running


@pytest.fixture
async def channel(refdata: RunningRefdata) -> AsyncIterator[grpc.aio.Channel]:
    async with open_channel(refdata.target) as channel:
        yield channel


@pytest.mark.parametrize(("body", "message", "field"), [
    (BAD_UTF8, "venue: not valid UTF-8; the request is not a valid portico.refdata.v1.GetInstrumentRequest",
     "venue"),
    (GARBAGE, "the request is not a valid portico.refdata.v1.GetInstrumentRequest: wire format was corrupt", None),
], ids=["bad-utf8", "garbage"])
async def test_a_unary_request_that_does_not_decode_is_invalid_argument(
        channel: grpc.aio.Channel, refdata: RunningRefdata, spans: Any, body: bytes, message: str,
        field: str | None) -> None:
    error = await refused(channel.unary_unary(f"{REFDATA}/GetInstrument", **RAW)(
        body, metadata=refdata.metadata("read"), timeout=10))
    expected_metadata = {"message_type": "portico.refdata.v1.GetInstrumentRequest"}
    if field is not None:
        expected_metadata["field"] = field
    assert details(error) == (grpc.StatusCode.INVALID_ARGUMENT, message, "REQUEST_MALFORMED", expected_metadata)
    assert error_info(error).domain == "refdata.portico"  # type: ignore[union-attr]
    assert field_violations(error) == ([field] if field else [])
    # The server's span says what happened, as for any Portico error.
    [span] = [s for s in spans.get_finished_spans()
              if s.name.endswith("/GetInstrument") and s.kind == SpanKind.SERVER]
    assert span.attributes["error.reason"] == "REQUEST_MALFORMED"
    # Still serving: a valid call right after succeeds.
    listed = await refdata.stub(channel).ListInstruments(refdata_pb.ListInstrumentsRequest(venue="syndr"),
                                                         metadata=refdata.metadata("read"), timeout=10)
    assert listed.next_page_token == ""


async def test_a_string_that_is_not_utf8_deep_in_a_request_is_named_by_its_path(
        channel: grpc.aio.Channel, refdata: RunningRefdata) -> None:
    # ListInstrumentsRequest{venue: "syndr", filter (2): {quote_currencies (2): ["USD", b"\xc3\x28"]}}
    inner = utf8_field(2, b"USD") + utf8_field(2, b"\xc3\x28")
    body = utf8_field(1, b"syndr") + utf8_field(2, inner)
    assert body[2:7] == b"syndr"
    error = await refused(channel.unary_unary(f"{REFDATA}/ListInstruments", **RAW)(
        body, metadata=refdata.metadata("read"), timeout=10))
    code, text, reason, metadata = details(error)
    assert (code, reason, metadata["field"]) == (grpc.StatusCode.INVALID_ARGUMENT, "REQUEST_MALFORMED",
                                                  "filter.quote_currencies[1]")
    assert text == ("filter.quote_currencies[1]: not valid UTF-8; "
                    "the request is not a valid portico.refdata.v1.ListInstrumentsRequest")
    assert field_violations(error) == ["filter.quote_currencies[1]"]


HEALTH = "/grpc.health.v1.Health"
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"


@pytest.mark.parametrize("body", [BAD_UTF8, GARBAGE], ids=["bad-utf8", "garbage"])
@pytest.mark.parametrize("rpc", ["Check", "Watch", "reflection"])
async def test_health_and_reflection_answer_a_request_that_does_not_decode_with_invalid_argument(
        channel: grpc.aio.Channel, body: bytes, rpc: str) -> None:
    """Public, so no token: the message type is named, never a field (nobody unauthenticated makes the server walk
    the bytes), and not gRPC's UNKNOWN with the decoder's text (before the fix these were left to gRPC)."""
    if rpc == "Check":
        call: Any = channel.unary_unary(f"{HEALTH}/Check", **RAW)(body, timeout=10)
        message_type = "grpc.health.v1.HealthCheckRequest"
    elif rpc == "Watch":
        call = channel.unary_stream(f"{HEALTH}/Watch", **RAW)(body, timeout=10)
        message_type = "grpc.health.v1.HealthCheckRequest"
    else:
        call = channel.stream_stream(REFLECTION, **RAW)(iter([body]), timeout=10)
        message_type = "grpc.reflection.v1alpha.ServerReflectionRequest"
    error = await refused(call)
    code, text, reason, metadata = details(error)
    assert (code, reason, metadata) == (grpc.StatusCode.INVALID_ARGUMENT, "REQUEST_MALFORMED",
                                        {"message_type": message_type}), (code, text)
    assert text.startswith(f"the request is not a valid {message_type}: ")
    assert field_violations(error) == []
    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="liveness"),
                                                            timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING  # still serving


@pytest.mark.parametrize("body", [BAD_UTF8, GARBAGE], ids=["bad-utf8", "garbage"])
async def test_a_server_streaming_request_that_does_not_decode_is_invalid_argument(
        channel: grpc.aio.Channel, refdata: RunningRefdata, body: bytes) -> None:
    error = await refused(channel.unary_stream(f"{REFDATA}/WatchInstruments", **RAW)(
        body, metadata=refdata.metadata("read"), timeout=10))
    code, text, reason, metadata = details(error)
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "REQUEST_MALFORMED")
    assert "the request is not a valid portico.refdata.v1.WatchInstrumentsRequest" in text
    assert metadata["message_type"] == "portico.refdata.v1.WatchInstrumentsRequest"
    # A valid watch right after is registered (its initial metadata comes once it is).
    watch = refdata.stub(channel).WatchInstruments(refdata_pb.WatchInstrumentsRequest(venue="syndr"),
                                                   metadata=refdata.metadata("read"), timeout=10)
    await watch.initial_metadata()
    watch.cancel()


@pytest.mark.parametrize("body", [BAD_UTF8, GARBAGE], ids=["bad-utf8", "garbage"])
@pytest.mark.parametrize(("method", "credentials", "code", "reason"), [
    ("GetInstrument", None, grpc.StatusCode.UNAUTHENTICATED, "TOKEN_MISSING"),
    ("GetInstrument", "pt_not-a-real-token", grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID"),
    ("WatchInstruments", None, grpc.StatusCode.UNAUTHENTICATED, "TOKEN_MISSING"),
    ("SyncInstruments", "read", grpc.StatusCode.PERMISSION_DENIED, "SCOPE_MISSING"),  # needs admin
])
async def test_a_caller_who_may_not_call_the_method_learns_nothing_about_its_request(
        channel: grpc.aio.Channel, refdata: RunningRefdata, body: bytes, method: str, credentials: str | None,
        code: grpc.StatusCode, reason: str) -> None:
    """Authentication and the scope come first: garbage from a stranger is UNAUTHENTICATED, as anything is."""
    if credentials is None:
        metadata: Any = None
    else:
        metadata = refdata.metadata(credentials) if credentials in refdata.tokens else bearer(credentials)
    multicallable = channel.unary_stream if method.startswith("Watch") else channel.unary_unary
    error = await refused(multicallable(f"{REFDATA}/{method}", **RAW)(body, metadata=metadata, timeout=10))
    assert (error.code(), error_info(error).reason) == (code, reason)  # type: ignore[union-attr]
    text = error.details() or ""
    assert "request is not" not in text and "UTF-8" not in text and "DecodeError" not in text, text


async def test_random_bytes_never_get_unknown_or_internal(channel: grpc.aio.Channel, refdata: RunningRefdata) -> None:
    """Whatever the bytes, the answer is the request's own (NOT_FOUND for an instrument nobody listed, or
    INVALID_ARGUMENT from the service's checks) or REQUEST_MALFORMED; never a status gRPC made up."""
    rng = random.Random(20240611)
    rpc = channel.unary_unary(f"{REFDATA}/GetInstrument", **RAW)
    seen: set[str | None] = set()
    for _ in range(300):
        prefix = utf8_field(1, b"syndr") if rng.random() < 0.5 else b""
        body = prefix + rng.randbytes(rng.randrange(1, 40))
        try:
            await rpc(body, metadata=refdata.metadata("read"), timeout=10)
            continue
        except grpc.aio.AioRpcError as error:
            assert error.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT), (body, error)
            info = error_info(error)
            assert info is not None, (body, error.details())
            seen.add(info.reason)
    assert "REQUEST_MALFORMED" in seen


# --------------------------------------------------------------------------- the signer's Sign


RAW_KEY = f"bad-requests-raw-{secrets.token_hex(3)}"


@pytest.fixture(scope="module")
async def signer(openbao: OpenBaoDevServer, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningSigner]:
    token = signer_vault_token(openbao)
    await create_key(openbao, RAW_KEY, KeyPolicy.build(allow_raw_digest=True))
    async with running_signer(openbao.addr, token, tmp_path_factory.mktemp("signer")) as running:
        yield running


@pytest.mark.parametrize(("body", "message"), [
    (BAD_UTF8, "key_id: not valid UTF-8; the request is not a valid portico.signer.v1.SignRequest"),
    (GARBAGE, "the request is not a valid portico.signer.v1.SignRequest: wire format was corrupt"),
], ids=["bad-utf8", "garbage"])
async def test_sign_with_a_request_that_does_not_decode_is_invalid_argument(
        signer: RunningSigner, body: bytes, message: str) -> None:
    async with open_channel(signer.target) as channel:
        error = await refused(channel.unary_unary(SIGN, **RAW)(body, metadata=signer.metadata("trade"), timeout=10))
        code, text, reason, _ = details(error)
        assert (code, text, reason) == (grpc.StatusCode.INVALID_ARGUMENT, message, "REQUEST_MALFORMED")
        assert error_info(error).domain == "signer.portico"  # type: ignore[union-attr]
        # Unauthenticated, the same bytes are only UNAUTHENTICATED.
        error = await refused(channel.unary_unary(SIGN, **RAW)(body, timeout=10))
        assert (error.code(), error_info(error).reason) == (  # type: ignore[union-attr]
            grpc.StatusCode.UNAUTHENTICATED, "TOKEN_MISSING")
        # Still serving: a valid Sign right after succeeds.
        digest = secrets.token_bytes(32)
        reply = await channel.unary_unary(SIGN, request_serializer=signer_pb.SignRequest.SerializeToString,
                                          response_deserializer=signer_pb.SignResponse.FromString)(
            signer_pb.SignRequest(key_id=RAW_KEY, digest=digest), metadata=signer.metadata("trade"), timeout=10)
        assert reply.digest == digest


# --------------------------------------------------------------------------- client-streaming requests


async def count_venues(requests: AsyncIterator[refdata_pb.GetInstrumentRequest],
                       context: grpc.aio.ServicerContext) -> refdata_pb.GetInstrumentRequest:
    venues = [request.venue async for request in requests]
    return refdata_pb.GetInstrumentRequest(venue=",".join(venues))


@pytest.fixture
async def streaming_server() -> AsyncIterator[tuple[GrpcServer, dict[str, str]]]:
    """A runtime server with one client-streaming method that decodes protobuf (no contract has one yet). Made in
    the test's event loop: a synchronous fixture has none after any earlier test's `asyncio.run()`."""
    tokens, config = make_tokens()
    env = {"PORTICO_LISTEN_ADDR": "127.0.0.1:0", "PORTICO_AUTH_TOKENS": config}
    server = GrpcServer(ServerSettings.from_env(env, 0), domain="test.portico",
                        authenticator=TokenAuthenticator.from_env(env), method_scopes={"/test.Upload/Count": "read"})
    handler = grpc.stream_unary_rpc_method_handler(
        count_venues, request_deserializer=refdata_pb.GetInstrumentRequest.FromString,
        response_serializer=refdata_pb.GetInstrumentRequest.SerializeToString)
    server.grpc.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("test.Upload", {"Count": handler})])
    yield server, tokens


async def test_a_streamed_request_message_that_does_not_decode_is_invalid_argument(
        streaming_server: tuple[GrpcServer, dict[str, str]], log_lines: Any) -> None:
    """Each message of a request stream decodes as the servicer reads it; a bad one ends the call with
    INVALID_ARGUMENT (was INTERNAL, logged as an unexpected exception with a traceback)."""
    server, tokens = streaming_server
    port = await server.start(["test.Upload"])
    try:
        async with open_channel(f"127.0.0.1:{port}") as channel:
            count = channel.stream_unary("/test.Upload/Count", **RAW)
            good = utf8_field(1, b"syndr")
            for bad, expected in ((BAD_UTF8, "venue: not valid UTF-8; the request is not a valid "
                                             "portico.refdata.v1.GetInstrumentRequest"),
                                  (GARBAGE, "the request is not a valid portico.refdata.v1.GetInstrumentRequest: "
                                            "wire format was corrupt")):
                error = await refused(count(iter([good, bad, good]), metadata=bearer(tokens["read"]), timeout=10))
                code, text, reason, _ = details(error)
                assert (code, text, reason) == (grpc.StatusCode.INVALID_ARGUMENT, expected, "REQUEST_MALFORMED")
            answer = await count(iter([good, good]), metadata=bearer(tokens["read"]), timeout=10)
            assert refdata_pb.GetInstrumentRequest.FromString(answer).venue == "syndr,syndr"
    finally:
        await server.stop(0)
    assert "unexpected exception" not in log_lines.getvalue()
