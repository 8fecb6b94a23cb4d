"""The keep-alive HTTP/1.1 client (portico.runtime.http1), and the venue client's reading of its answers, against
a scripted server on loopback.

The server answers each request with whatever bytes the test scripts, so
framing (Content-Length, chunked, connection close), reuse, closes, timeouts
and malformed answers are all exercised over real TCP (and TLS).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from tests.support.certs import CertificateAuthority
from tests.support.waiting import until

from portico.runtime.http1 import Http1ConnectionError, Http1Pool, Http1ProtocolError
from portico.venues.syndr.constants import ErrorCode
from portico.venues.syndr.credentials import ApiCredentials
from portico.venues.syndr.errors import SyndrInvalidRequest, SyndrProtocolError
from portico.venues.syndr.http import SyndrHttpClient

Answer = Callable[[bytes], bytes | None]  # request body -> raw answer bytes (None: close without answering)


def ok(body: bytes, *extra: str) -> bytes:
    head = "".join(f"{h}\r\n" for h in extra)
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{head}\r\n".encode() + body


class ScriptedServer:
    """Reads one HTTP request at a time per connection and writes what `answer` returns."""

    def __init__(self, answer: Answer, *, ssl_context: ssl.SSLContext | None = None):
        self.answer = answer
        self.ssl_context = ssl_context
        self.connections = 0
        self.open_now = 0
        self.most_open = 0
        self.requests: list[tuple[bytes, bytes]] = []  # (head, body)
        self.delay_s = 0.0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> ScriptedServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl_context)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()

    def url(self, scheme: str = "http", path: str = "/api/v1") -> str:
        assert self._server is not None
        host = "localhost" if scheme == "https" else "127.0.0.1"
        return f"{scheme}://{host}:{self._server.sockets[0].getsockname()[1]}{path}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                body = await reader.readexactly(length)
                self.requests.append((head, body))
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                answer = self.answer(body)
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
                if b"Connection: close" in answer:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.open_now -= 1
            self._writers.discard(writer)
            writer.close()


@pytest.fixture
async def echo() -> AsyncIterator[ScriptedServer]:
    async with ScriptedServer(lambda body: ok(b"echo:" + body)) as server:
        yield server


async def test_answers_come_back_and_one_connection_is_kept_alive(echo: ScriptedServer) -> None:
    async with Http1Pool(echo.url()) as pool:
        for i in range(20):
            assert await pool.post(f"n{i}".encode(), {"x-api-key": "k"}) == (200, f"echo:n{i}".encode())
    assert echo.connections == 1
    head = echo.requests[0][0].decode()
    assert head.startswith("POST /api/v1 HTTP/1.1\r\n") and f"Host: {echo.url().split('/')[2]}" in head
    assert "x-api-key: k" in head and "Content-Length: 2" in head


async def test_chunked_and_close_framed_answers_are_read_whole() -> None:
    answers = iter([
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n\r\nbusy, framed by the close",
    ])
    async with ScriptedServer(lambda body: next(answers)) as server:
        async with Http1Pool(server.url()) as pool:
            assert await pool.post(b"a", {}) == (200, b"hello world")
            assert await pool.post(b"b", {}) == (503, b"busy, framed by the close")
        assert server.connections == 1  # the chunked answer left the connection reusable


async def test_a_connection_the_server_closes_is_not_reused() -> None:
    async with ScriptedServer(lambda body: ok(body, "Connection: close")) as server:
        async with Http1Pool(server.url()) as pool:
            for i in range(3):
                assert await pool.post(str(i).encode(), {}) == (200, str(i).encode())
        assert server.connections == 3


async def test_an_idle_connection_closed_by_the_server_is_replaced(echo: ScriptedServer) -> None:
    async with Http1Pool(echo.url()) as pool:
        assert (await pool.post(b"1", {}))[0] == 200
        for writer in list(echo._writers):  # the server drops its idle keep-alive connections
            writer.close()
        await asyncio.sleep(0.05)
        assert await pool.post(b"2", {}) == (200, b"echo:2")
    assert echo.connections == 2


async def test_a_connection_idle_too_long_is_not_reused(echo: ScriptedServer) -> None:
    keepalive_s = 2.0  # seconds: "at once" must stay within it even on a stalled host
    async with Http1Pool(echo.url(), keepalive_s=keepalive_s) as pool:
        assert (await pool.post(b"1", {}))[0] == 200
        assert (await pool.post(b"2", {}))[0] == 200  # at once: the same connection
        assert echo.connections == 1
        [idle] = pool._idle
        # Wait until the pool's own idle clock says it expired, not a sleep just past keepalive_s.
        await until(lambda: time.monotonic() - idle.idle_since >= keepalive_s, timeout_s=20)
        assert await pool.post(b"3", {}) == (200, b"echo:3")  # idle past keepalive_s: a new one
    assert echo.connections == 2


async def test_a_timed_out_call_closes_its_connection_so_its_late_answer_is_never_read(echo: ScriptedServer) -> None:
    async with Http1Pool(echo.url()) as pool:
        echo.delay_s = 0.3
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await pool.post(b"slow", {})
        echo.delay_s = 0
        assert await pool.post(b"next", {}) == (200, b"echo:next")  # not "echo:slow"
        await asyncio.sleep(0.4)  # the server has answered "slow" by now, to a closed connection
        assert echo.open_now == 1  # only the idle connection of "next" is left: the timed-out one was closed
    assert echo.connections == 2


async def test_no_more_connections_than_the_limit(echo: ScriptedServer) -> None:
    echo.delay_s = 0.02
    async with Http1Pool(echo.url(), max_connections=3) as pool:
        answers = await asyncio.gather(*(pool.post(str(i).encode(), {}) for i in range(12)))
    assert answers == [(200, f"echo:{i}".encode()) for i in range(12)]
    assert echo.most_open == 3


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 10000\r\n\r\n" + b"x" * 10000,  # larger than allowed
    b"NOT HTTP AT ALL\r\n\r\n",
])
async def test_oversized_or_malformed_answers_are_protocol_errors(answer: bytes) -> None:
    async with ScriptedServer(lambda body: answer) as server, Http1Pool(server.url(), max_body_bytes=1000) as pool:
        with pytest.raises(Http1ProtocolError):
            await pool.post(b"x", {})


async def test_a_lost_connection_and_a_refused_one_are_connection_errors() -> None:
    async with ScriptedServer(lambda body: None) as server:  # reads the request, closes without a word
        url = server.url()
        async with Http1Pool(url) as pool:
            with pytest.raises(Http1ConnectionError, match="lost"):
                await pool.post(b"x", {})
    pool = Http1Pool(url)  # the server is gone now
    with pytest.raises(Http1ConnectionError, match="cannot connect"):
        await pool.post(b"x", {})


async def test_headers_that_would_inject_lines_are_refused(echo: ScriptedServer) -> None:
    async with Http1Pool(echo.url()) as pool:
        for headers in ({"x-api-key": "k\r\nx-evil: 1"}, {"bad name": "v"}, {"x\nevil": "v"},
                        # the request's framing and target are the client's: a second one smuggles or misroutes
                        {"Content-Length": "0"}, {"transfer-encoding": "chunked"}, {"HOST": "elsewhere"}):
            with pytest.raises(ValueError, match="not a valid HTTP header"):
                await pool.post(b"x", headers)
    assert echo.requests == []


async def test_https_verifies_the_server_certificate(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path, "http1")
    pair = ca.issue("localhost", server=True)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(pair.cert, pair.key)
    async with ScriptedServer(lambda body: ok(b"secure:" + body), ssl_context=server_tls) as server:
        trusted = ssl.create_default_context(cafile=str(ca.cert_path))
        async with Http1Pool(server.url("https"), ssl_context=trusted) as pool:
            assert await pool.post(b"hi", {}) == (200, b"secure:hi")
        untrusted = Http1Pool(server.url("https"))  # the system store does not know this CA
        with pytest.raises(Http1ConnectionError, match="SSL"):
            await untrusted.post(b"hi", {})


async def test_a_closed_pool_refuses_calls(echo: ScriptedServer) -> None:
    pool = Http1Pool(echo.url())
    await pool.aclose()
    with pytest.raises(Http1ConnectionError, match="closed"):
        await pool.post(b"x", {})
    with pytest.raises(ValueError, match="not an http"):
        Http1Pool("ws://127.0.0.1:1/x")


async def test_interim_1xx_answers_are_skipped_never_taken_for_the_answer() -> None:
    """102 Processing and 103 Early Hints come before the answer (servers and CDNs send them unasked): taken for
    it, the real answer would be read as the next call's."""
    interim = b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n"
    async with ScriptedServer(lambda body: interim + ok(b"answer-to:" + body)) as server:
        async with Http1Pool(server.url()) as pool:
            assert await pool.post(b"buy", {}) == (200, b"answer-to:buy")
            assert await pool.post(b"read", {}) == (200, b"answer-to:read")
        assert server.connections == 1


async def test_bytes_after_the_answer_make_the_connection_unusable() -> None:
    """Anything after a complete answer would be read as the next call's answer: that connection is dropped."""
    answers = iter([ok(b"one") + b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nSTALE", ok(b"two")])
    async with ScriptedServer(lambda body: next(answers)) as server:
        async with Http1Pool(server.url()) as pool:
            assert await pool.post(b"1", {}) == (200, b"one")
            await asyncio.sleep(0.05)
            assert await pool.post(b"2", {}) == (200, b"two")
        assert server.connections == 2


async def raw_server(handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any]) -> asyncio.Server:
    return await asyncio.start_server(handler, "127.0.0.1", 0)


def url_of(server: asyncio.Server) -> str:
    return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/api/v1"


async def test_a_close_framed_answer_cut_by_a_reset_is_an_error_and_other_encodings_frame_by_close() -> None:
    """An answer framed by the connection's end is complete only at a clean end, not at a reset; and only a
    Content-Length or a chunked Transfer-Encoding frames it otherwise."""
    answers = iter([(b"HTTP/1.1 200 OK\r\n\r\n" b'{"jsonrpc":"2.0","id":1,"result":{"order_id":"12', True),
                    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\nConnection: close\r\n\r\nwhole body", False)])

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(1)
        answer, reset = next(answers)
        writer.write(answer)
        await writer.drain()
        if reset:  # RST, not FIN: linger 0 on close
            writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        else:
            writer.close()

    server = await raw_server(handler)
    try:
        async with Http1Pool(url_of(server)) as pool:
            with pytest.raises(Http1ConnectionError, match="lost"):
                await pool.post(b"x", {})
            assert await pool.post(b"y", {}) == (200, b"whole body")
    finally:
        server.close()


async def test_a_large_answer_arriving_with_its_headers_is_read_whole() -> None:
    """The header limit counts the head only, not a body that arrives in the same read."""
    body = b"x" * 300_000
    async with ScriptedServer(lambda _: ok(body)) as server, Http1Pool(server.url()) as pool:
        assert await pool.post(b"big", {}) == (200, body)


async def test_a_large_answer_leaves_its_connection_reusable() -> None:
    """The header limit must not count an answer's last read: one over the limit closed every connection it came on."""
    body = b"x" * 300_000
    async with ScriptedServer(lambda _: ok(body)) as server:
        async with Http1Pool(server.url()) as pool:
            for _ in range(3):
                assert await pool.post(b"big", {}) == (200, body)
        assert server.connections == 1


@pytest.mark.parametrize("opening", [
    b"HTTP/1.1 200 OK\r\nX-Junk: ",
    # A chunked answer's trailers are headers too: the parser collects them as it does the head.
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-Junk: ",
], ids=["head", "trailers"])
async def test_endless_headers_are_refused(opening: bytes) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(opening)
        with contextlib.suppress(ConnectionError):
            for _ in range(200):
                writer.write(b"a" * 4096)
                await writer.drain()
        writer.close()

    server = await raw_server(handler)
    try:
        async with Http1Pool(url_of(server)) as pool:
            with pytest.raises(Http1ProtocolError, match="headers larger"):
                await asyncio.wait_for(pool.post(b"x", {}), 10)
    finally:
        server.close()


@pytest.mark.parametrize("drain", [False, True])
async def test_closing_sends_nothing_still_queued_and_draining_lets_calls_on_their_way_finish(
        echo: ScriptedServer, drain: bool) -> None:
    echo.delay_s = 0.3
    pool = Http1Pool(echo.url(), max_connections=1)
    on_its_way = asyncio.ensure_future(pool.post(b"A", {}))
    queued = asyncio.ensure_future(pool.post(b"B", {}))  # waits for the one slot
    await asyncio.sleep(0.1)
    await pool.aclose(drain=drain)
    with pytest.raises(Http1ConnectionError, match="closed"):
        await queued
    if drain:
        assert await on_its_way == (200, b"echo:A")
    else:
        with pytest.raises(Http1ConnectionError):
            await on_its_way
    await asyncio.sleep(0.4)
    assert [body for _, body in echo.requests] == [b"A"]  # B never went out


@pytest.mark.parametrize(("answer_id", "private", "error"), [
    (None, True, SyndrProtocolError),  # a private call: a null id proves nothing about which request it answers
    (None, False, SyndrInvalidRequest),  # a public one: the venue could not read it
    ("1", False, SyndrProtocolError),
    (1.0, False, SyndrProtocolError),
    (True, False, SyndrProtocolError),
    (2, False, SyndrProtocolError),
])
async def test_a_json_rpc_answer_must_carry_the_requests_own_id(answer_id: Any, private: bool,
                                                                 error: type[Exception]) -> None:
    answer = orjson.dumps({"jsonrpc": "2.0", "id": answer_id,
                           "error": {"code": ErrorCode.INVALID_REQUEST, "message": "invalid request"}})
    async with ScriptedServer(lambda body: ok(answer)) as server, \
            SyndrHttpClient(server.url(), credentials=ApiCredentials("key", "secret"), retries=0) as client:
        with pytest.raises(error):
            await client.call("private/buy" if private else "public/get_time", {})
