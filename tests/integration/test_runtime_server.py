"""The shared server runtime: error mapping, fail-closed scopes, TLS and mTLS, graceful SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from tests.support.demo_server import build
from tests.support.pki import Pki, make_pki
from tests.support.ports import free_port, taken_port
from tests.support.signer import make_tokens
from tests.support.tcp_proxy import TcpProxy

from portico.runtime.client import KEEPALIVE_OPTIONS, bearer, open_channel
from portico.runtime.errors import error_info
from portico.runtime.server import LIVENESS_SERVICE

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tokens() -> tuple[dict[str, str], str]:
    return make_tokens()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


async def start(env: dict[str, str]) -> tuple[object, str]:
    server = build(env)
    port = await server.start(["test.Demo"])
    return server, f"127.0.0.1:{port}"


@pytest.fixture
async def plain(tokens: tuple[dict[str, str], str]) -> AsyncIterator[str]:
    server, target = await start({"PORTICO_LISTEN_ADDR": "127.0.0.1:0", "PORTICO_AUTH_TOKENS": tokens[1]})
    yield target
    await server.stop(0)  # type: ignore[attr-defined]


async def call(channel: grpc.aio.Channel, method: str, body: bytes, metadata: object = None) -> bytes:
    rpc = channel.unary_unary(method)
    return await rpc(body, metadata=metadata, timeout=10)  # type: ignore[no-any-return]


async def test_invalid_argument_carries_error_info_and_bad_request(plain: str, tokens: tuple[dict[str, str], str]
                                                                   ) -> None:
    async with open_channel(plain) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(channel, "/test.Demo/Fail", b"invalid", bearer(tokens[0]["read"]))
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "price: must be on the tick"
    info = error_info(error)
    assert info is not None
    assert (info.reason, info.domain, info.metadata["field"]) == ("INVALID_ARGUMENT", "test.portico", "price")
    status = rpc_status.from_call(error)
    bad = error_details_pb2.BadRequest()
    assert any(d.Unpack(bad) for d in status.details if d.Is(error_details_pb2.BadRequest.DESCRIPTOR))
    assert bad.field_violations[0].field == "price"


async def test_unavailable_keeps_reason_and_metadata(plain: str, tokens: tuple[dict[str, str], str]) -> None:
    async with open_channel(plain) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(channel, "/test.Demo/Fail", b"unavailable", bearer(tokens[0]["read"]))
    info = error_info(caught.value)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert info is not None and (info.reason, dict(info.metadata)) == ("VENUE_UNREACHABLE", {"venue": "syndr"})


async def test_unexpected_exception_is_internal_without_its_text(plain: str, tokens: tuple[dict[str, str], str],
                                                                 spans: Any) -> None:
    async with open_channel(plain) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(channel, "/test.Demo/Fail", b"boom", bearer(tokens[0]["read"]))
        assert caught.value.code() == grpc.StatusCode.INTERNAL
        assert "deadbeef" not in (caught.value.details() or "")
        assert await call(channel, "/test.Demo/Wait", b"1", bearer(tokens[0]["read"])) == b"1"  # still serving
    exported = "\n".join(span.to_json() for span in spans.get_finished_spans())
    assert "RuntimeError" in exported and "deadbeef" not in exported


async def test_method_without_declared_scope_fails_closed(plain: str, tokens: tuple[dict[str, str], str]) -> None:
    async with open_channel(plain) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(channel, "/test.Demo/Undeclared", b"1", bearer(tokens[0]["admin"]))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    info = error_info(caught.value)
    assert info is not None and info.reason == "SCOPE_UNDECLARED"


async def test_unknown_method_is_unimplemented(plain: str) -> None:
    async with open_channel(plain) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(channel, "/test.Demo/Nope", b"")
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


# --------------------------------------------------------------------------- liveness and readiness

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def statuses(target: str, *services: str) -> list[int]:
    """grpc.health.v1 Check of each service, unauthenticated as a kubelet probe is."""
    async with open_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return [(await stub.Check(health_pb2.HealthCheckRequest(service=s), timeout=5)).status for s in services]


async def test_liveness_is_serving_while_the_service_is_not_ready(tokens: tuple[dict[str, str], str]) -> None:
    """A server started not ready (a service waiting for its venue) is alive: the liveness service answers
    SERVING at once, the overall status and the service's own stay NOT_SERVING until it is ready."""
    server = build({"PORTICO_LISTEN_ADDR": "127.0.0.1:0", "PORTICO_AUTH_TOKENS": tokens[1]})
    port = await server.start(["test.Demo"], serving=False)
    target = f"127.0.0.1:{port}"
    try:
        assert LIVENESS_SERVICE == "liveness"  # what the manifests' liveness probes name
        assert await statuses(target, LIVENESS_SERVICE, "", "test.Demo") == [SERVING, NOT_SERVING, NOT_SERVING]
        await server.set_ready(True)
        assert await statuses(target, LIVENESS_SERVICE, "", "test.Demo") == [SERVING, SERVING, SERVING]
        await server.set_ready(False)  # readiness can be withdrawn again; liveness is not a readiness
        assert await statuses(target, LIVENESS_SERVICE, "", "test.Demo") == [SERVING, NOT_SERVING, NOT_SERVING]
        with pytest.raises(ValueError, match="liveness"):  # no service may report itself dead or alive
            await server.set_serving(LIVENESS_SERVICE, False)
        assert await statuses(target, LIVENESS_SERVICE) == [SERVING]
    finally:
        await server.stop(0)


# --------------------------------------------------------------------------- TLS and mTLS


def tls_env(pki: Pki, tokens: tuple[dict[str, str], str], *, mtls: bool) -> dict[str, str]:
    env = {"PORTICO_LISTEN_ADDR": "127.0.0.1:0", "PORTICO_AUTH_TOKENS": tokens[1],
           "PORTICO_TLS_CERT_FILE": str(pki.server.cert), "PORTICO_TLS_KEY_FILE": str(pki.server.key)}
    if mtls:
        env["PORTICO_TLS_CLIENT_CA_FILE"] = str(pki.ca)
    return env


async def test_tls_server_accepts_a_client_that_trusts_its_ca(pki: Pki, tokens: tuple[dict[str, str], str]) -> None:
    server, target = await start(tls_env(pki, tokens, mtls=False))
    try:
        async with open_channel(target, token=tokens[0]["read"], ca_file=pki.ca) as channel:
            assert await call(channel, "/test.Demo/Wait", b"1") == b"1"
        async with open_channel(target, token=tokens[0]["read"], ca_file=pki.rogue_ca) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call(channel, "/test.Demo/Wait", b"1")
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(0)  # type: ignore[attr-defined]


@pytest.mark.parametrize("client", ["none", "rogue", "good"])
async def test_mtls_requires_a_client_certificate_from_the_right_ca(pki: Pki, tokens: tuple[dict[str, str], str],
                                                                    client: str) -> None:
    server, target = await start(tls_env(pki, tokens, mtls=True))
    cert = {"none": None, "rogue": pki.rogue_client, "good": pki.client}[client]
    client_cert = (cert.cert, cert.key) if cert is not None else None
    try:
        async with open_channel(target, token=tokens[0]["read"], ca_file=pki.ca,
                                client_cert=client_cert) as channel:
            if client == "good":
                assert await call(channel, "/test.Demo/Wait", b"1") == b"1"
            else:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await call(channel, "/test.Demo/Wait", b"1")
                assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(0)  # type: ignore[attr-defined]


async def test_a_client_certificate_without_a_ca_is_refused_rather_than_dropped_for_plaintext(pki: Pki) -> None:
    with pytest.raises(ValueError, match="ca_file"):
        open_channel("127.0.0.1:1", client_cert=(pki.client.cert, pki.client.key))


# --------------------------------------------------------------------------- graceful shutdown


def spawn_demo(tokens: tuple[dict[str, str], str], grace_s: float) -> Iterator[tuple[subprocess.Popen[str], str]]:
    port = free_port()
    env = {**os.environ, "PORTICO_LISTEN_ADDR": f"127.0.0.1:{port}", "PORTICO_AUTH_TOKENS": tokens[1],
           "PORTICO_SHUTDOWN_GRACE_SECONDS": str(grace_s)}
    process = subprocess.Popen([sys.executable, "-m", "tests.support.demo_server"], cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    assert process.stdout.readline().strip() == str(port)
    yield process, f"127.0.0.1:{port}"
    if process.poll() is None:
        process.kill()
    process.wait()


# The draining tests' in-flight call sleeps DRAIN_CALL_MS: the child has that long after SIGTERM to report the
# drain (a slow host may take a while), and the grace outlasts the call by as much again.
DRAIN_CALL_MS = 4000
DRAIN_GRACE_S = 10.0


@pytest.fixture
def demo_process(tokens: tuple[dict[str, str], str]) -> Iterator[tuple[subprocess.Popen[str], str]]:
    yield from spawn_demo(tokens, DRAIN_GRACE_S)


@pytest.fixture
def short_grace_process(tokens: tuple[dict[str, str], str]) -> Iterator[tuple[subprocess.Popen[str], str]]:
    yield from spawn_demo(tokens, 3)


def start_in_flight(channel: grpc.aio.Channel, auth: object) -> Any:
    """A DRAIN_CALL_MS Wait, started now (not in a task that starts it later), so that a call made after it on
    the same connection reaches the server after it: once that one is answered, the server holds this one."""
    return channel.unary_unary("/test.Demo/Wait")(str(DRAIN_CALL_MS).encode(), metadata=auth, timeout=30)


async def test_sigterm_drains_in_flight_calls_and_refuses_new_ones(
        demo_process: tuple[subprocess.Popen[str], str], tokens: tuple[dict[str, str], str]) -> None:
    process, target = demo_process
    auth = bearer(tokens[0]["read"])
    async with open_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
        assert (await watch.read()).status == SERVING  # the connection is up
        in_flight = start_in_flight(channel, auth)
        assert await call(channel, "/test.Demo/Wait", b"1", auth) == b"1"  # ... and the server holds in_flight
        process.send_signal(signal.SIGTERM)
        drained = await asyncio.wait_for(watch.read(), DRAIN_CALL_MS / 1000)  # the child is draining now
        assert drained.status == NOT_SERVING
        watch.cancel()
        assert not in_flight.done()
        with pytest.raises(grpc.aio.AioRpcError):  # new calls are refused while draining
            await call(channel, "/test.Demo/Wait", b"1", auth)
        with pytest.raises(grpc.aio.AioRpcError):
            await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
        assert await in_flight == str(DRAIN_CALL_MS).encode()  # the in-flight call finished normally
    started = time.monotonic()
    assert await asyncio.to_thread(process.wait, 10) == 0
    assert time.monotonic() - started < 5  # nothing left in flight: the grace period is not waited out


async def test_sigterm_turns_liveness_and_readiness_not_serving_while_draining(
        demo_process: tuple[subprocess.Popen[str], str], tokens: tuple[dict[str, str], str]) -> None:
    """Health watches opened before SIGTERM see liveness, the overall status and the service's own go
    NOT_SERVING when the drain starts, while an in-flight call still finishes."""
    process, target = demo_process
    auth = bearer(tokens[0]["read"])
    async with open_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        names = (LIVENESS_SERVICE, "", "test.Demo")
        watches = [health.Watch(health_pb2.HealthCheckRequest(service=name)) for name in names]
        assert [(await w.read()).status for w in watches] == [SERVING] * 3
        in_flight = start_in_flight(channel, auth)
        assert await call(channel, "/test.Demo/Wait", b"1", auth) == b"1"  # the server holds in_flight
        process.send_signal(signal.SIGTERM)
        changed = [await asyncio.wait_for(w.read(), DRAIN_CALL_MS / 1000) for w in watches]
        assert [c.status for c in changed] == [NOT_SERVING] * 3
        assert not in_flight.done()  # still draining
        assert await in_flight == str(DRAIN_CALL_MS).encode()
        for watch in watches:
            watch.cancel()
    assert await asyncio.to_thread(process.wait, 10) == 0


async def test_sigterm_cancels_calls_that_outlive_the_grace_period(
        short_grace_process: tuple[subprocess.Popen[str], str], tokens: tuple[dict[str, str], str]) -> None:
    process, target = short_grace_process
    async with open_channel(target) as channel:
        too_long = asyncio.create_task(call(channel, "/test.Demo/Wait", b"20000", bearer(tokens[0]["read"])))
        await asyncio.sleep(0.3)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        with pytest.raises(grpc.aio.AioRpcError):
            await too_long
    assert await asyncio.to_thread(process.wait, 10) == 0
    assert time.monotonic() - started < 8  # grace is 3 s, not the call's 20 s


async def test_a_stream_to_a_silently_vanished_peer_fails_instead_of_waiting_forever(
        plain: str, tokens: tuple[dict[str, str], str]) -> None:
    """open_channel's keepalive, against the servers' ping policy: accepted while the peer answers, and a
    stalled connection (nothing closed, nothing delivered) ends the stream with UNAVAILABLE."""
    host, port = plain.rsplit(":", 1)
    # The default pings every 30 s; 5.5 s here (the servers accept one every 5 s), so the test is short.
    quick = {"grpc.keepalive_time_ms": 5_500, "grpc.keepalive_timeout_ms": 1_000, "grpc.http2.ping_timeout_ms": 1_000}
    async with TcpProxy(host, int(port)) as proxy, open_channel(proxy.addr, options=quick) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""),
                                                          metadata=bearer(tokens[0]["read"]))
        first = await watch.read()
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        await asyncio.sleep(6.5)  # one ping answered: the server did not object to it (no GOAWAY)
        assert not watch.done()
        proxy.stall()
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await asyncio.wait_for(watch.read(), 15)
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE


def test_channels_ping_by_default() -> None:
    assert KEEPALIVE_OPTIONS["grpc.keepalive_time_ms"] == 30_000
    assert KEEPALIVE_OPTIONS["grpc.http2.ping_timeout_ms"] == KEEPALIVE_OPTIONS["grpc.keepalive_timeout_ms"] == 10_000
    assert KEEPALIVE_OPTIONS["grpc.http2.max_pings_without_data"] == 0  # a quiet watch keeps being pinged


async def test_stop_does_not_wait_forever_for_grpc_to_report_the_server_stopped(
        tokens: tuple[dict[str, str], str], monkeypatch: pytest.MonkeyPatch) -> None:
    """gRPC's shutdown was once seen never to finish; stop() waits the grace period plus STOP_SLACK_S, no more."""
    from portico.runtime import server as server_module

    monkeypatch.setattr(server_module, "STOP_SLACK_S", 0.3)
    server, _ = await start({"PORTICO_LISTEN_ADDR": "127.0.0.1:0", "PORTICO_AUTH_TOKENS": tokens[1]})
    real_stop = server.grpc.stop  # type: ignore[attr-defined]

    async def never_done(grace: float | None) -> None:
        await real_stop(grace)
        await asyncio.Event().wait()  # as if gRPC never reported itself done

    monkeypatch.setattr(server.grpc, "stop", never_done)  # type: ignore[attr-defined]
    started = time.monotonic()
    await asyncio.wait_for(server.stop(0.2), 10)  # type: ignore[attr-defined]
    assert time.monotonic() - started < 3


# --------------------------------------------------------------------------- run_service: configuration errors


# A service as the real ones are built: settings from the environment first, then the app, inside the event
# loop, reads the token list; it prints its port once serving.
RUN_SERVICE = """
import asyncio

import portico.runtime.grpc_core  # noqa: F401
from portico.runtime.auth import TokenAuthenticator
from portico.runtime.main import run_service
from portico.runtime.server import GrpcServer, ServerSettings


class App:
    def __init__(self, settings, env):
        self.server = GrpcServer(settings, domain="test.portico", authenticator=TokenAuthenticator.from_env(env),
                                 method_scopes={})

    async def run(self):
        await self.server.start(["test.Demo"])
        # Printed once run_until_signalled has installed its handlers (it does before its first await): a
        # SIGTERM sent on reading the port must find them.
        asyncio.get_running_loop().call_soon(lambda: print(self.server.port, flush=True))
        await self.server.run_until_signalled()


run_service("demo", lambda env: ServerSettings.from_env(env, 0), App)
"""


def run_service_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PORTICO_", "OTEL_"))}
    return {**env, "PORTICO_LISTEN_ADDR": "127.0.0.1:0", "PORTICO_AUTH_TOKENS": "[]", **overrides}


@pytest.mark.parametrize(("overrides", "message"), [
    ({"PORTICO_AUTH_TOKENS": '["pt_plain"]'}, "PORTICO_AUTH_TOKENS: auth token entry 0 must be an object"),
    ({"PORTICO_AUTH_TOKENS": "{not json"}, "PORTICO_AUTH_TOKENS is not valid JSON (line 1, column 2)"),
    ({"PORTICO_AUTH_TOKENS": "", "PORTICO_AUTH_TOKENS_FILE": "/nonexistent/tokens.json"},
     "PORTICO_AUTH_TOKENS_FILE: cannot read token list (FileNotFoundError)"),
    ({"PORTICO_TLS_CERT_FILE": "/nonexistent/server.pem", "PORTICO_TLS_KEY_FILE": "/nonexistent/server.key"},
     "PORTICO_TLS_CERT_FILE: cannot read /nonexistent/server.pem (No such file or directory)"),
    ({"PORTICO_LISTEN_ADDR": "127.0.0.1:99999"}, "PORTICO_LISTEN_ADDR must be host:port"),
    ({"PORTICO_SHUTDOWN_GRACE_SECONDS": "nan"}, "PORTICO_SHUTDOWN_GRACE_SECONDS must be a finite number"),
    ({"OTEL_TRACES_EXPORTER": "file", "PORTICO_TRACES_FILE": "/nonexistent/spans.jsonl"},
     "PORTICO_TRACES_FILE: cannot open /nonexistent/spans.jsonl"),
])
def test_run_service_reports_a_bad_configuration_in_one_line_and_exits_2(overrides: dict[str, str],
                                                                         message: str) -> None:
    process = subprocess.Popen([sys.executable, "-c", RUN_SERVICE], cwd=REPO, env=run_service_env(**overrides),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:  # it started serving on a configuration it should have refused
        process.kill()
        stdout, stderr = process.communicate()
    assert "Traceback" not in stderr, stderr
    ours = [line for line in stderr.splitlines() if line.startswith("portico-demo")]
    assert len(ours) == 1 and ours[0].startswith(f"portico-demo: configuration error: {message}"), stderr
    assert (process.returncode, stdout) == (2, "")


def test_run_service_serves_until_sigterm_then_exits_0() -> None:
    process = subprocess.Popen([sys.executable, "-c", RUN_SERVICE], cwd=REPO,
                               env=run_service_env(PORTICO_SHUTDOWN_GRACE_SECONDS="1"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        assert int(process.stdout.readline()) > 0
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
        assert process.returncode == 0, stderr
        assert '"msg":"stopped"' in stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_run_service_on_a_port_in_use_says_so_in_one_line_and_exits_1() -> None:
    with taken_port() as port:
        addr = f"127.0.0.1:{port}"
        process = subprocess.Popen([sys.executable, "-c", RUN_SERVICE], cwd=REPO,
                                   env=run_service_env(PORTICO_LISTEN_ADDR=addr),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            stdout, stderr = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:  # it served on a port another socket holds
            process.kill()
            stdout, stderr = process.communicate()
    assert "Traceback" not in stderr, stderr
    ours = [line for line in stderr.splitlines() if line.startswith("portico-demo")]
    assert len(ours) == 1 and ours[0].startswith(f"portico-demo: not started: cannot listen on {addr}"), stderr
    assert "PORTICO_LISTEN_ADDR" in ours[0]
    assert (process.returncode, stdout) == (1, "")
