"""The keep-alive HTTP/1.1 client (portico.runtime.http1) against a scripted server on loopback.

The server answers each request with whatever bytes the test scripts, so
framing (Content-Length, chunked, connection close), reuse, closes, timeouts
and malformed answers are all exercised over real TCP (and TLS).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from tests.support.certs import CertificateAuthority

from portico.runtime.http1 import Http1ConnectionError, Http1Pool, Http1ProtocolError

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
    async with Http1Pool(echo.url(), keepalive_s=0.1) as pool:
        assert (await pool.post(b"1", {}))[0] == 200
        assert (await pool.post(b"2", {}))[0] == 200  # at once: the same connection
        await asyncio.sleep(0.2)
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
        for headers in ({"x-api-key": "k\r\nx-evil: 1"}, {"bad name": "v"}, {"x\nevil": "v"}):
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
