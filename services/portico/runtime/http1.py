"""A small keep-alive HTTP/1.1 client for one endpoint: POST a body, get (status, body) back.

Why not aiohttp: the venue's JSON-RPC endpoint is one URL that every order
goes to, and aiohttp's general-purpose client (URL objects, cookie jars,
request/response objects, trace signals) took 142 us per call here against 56
us for the bare exchange, and this client 60 us (bench-results/http1.json,
tests/bench/bench_http1.py). This client
does only what that endpoint needs, on `asyncio.Protocol` with the llhttp
parser (`httptools`, as uvicorn uses) for the response:

* a pool of keep-alive connections, at most `max_connections` in use at once;
  a connection the server closed (or asked to close) is never reused, nor one
  idle for longer than `keepalive_s` (servers drop idle ones; a request written
  just as the server closes would be lost, which for an order means an outcome
  to reconcile);
* responses framed by Content-Length, chunked encoding or connection close (a
  close-framed answer cut by a reset is an error, not a short success); interim
  1xx answers (102 Processing, 103 Early Hints) are skipped, never taken for the
  answer; headers (or a chunked answer's trailers) beyond `MAX_HEADER_BYTES`
  and bodies beyond `max_body_bytes` are refused; a byte after the answer makes
  the connection unusable (it would be read as the next call's answer);
* http:// and https:// (certificates verified against the system store);
* a call that is cancelled or times out closes its connection (its answer may
  still arrive and must not be read as the next call's).

It never retries: whether a POST that got no answer was processed is the
caller's question (a Syndr order may be live).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Mapping
from typing import Final
from urllib.parse import urlsplit

import httptools

__all__ = ["Http1ConnectionError", "Http1Error", "Http1Pool", "Http1ProtocolError"]

DEFAULT_MAX_BODY_BYTES: Final = 64 * 1024 * 1024
MAX_HEADER_BYTES: Final = 64 * 1024  # status line and headers of one answer (and its trailers)


class Http1Error(Exception):
    """The exchange failed; the message names what happened, never the request's content."""


class Http1ConnectionError(Http1Error):
    """The connection could not be made, or was lost before the whole answer arrived."""


class Http1ProtocolError(Http1Error):
    """The server's answer is not valid HTTP/1.1 (or too large)."""


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection: one request at a time, answers parsed as they arrive."""

    def __init__(self, max_body_bytes: int) -> None:
        self._max_body = max_body_bytes
        self._transport: asyncio.WriteTransport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._status = 0
        self._framed = False  # the answer has a Content-Length or is chunked (else the connection's end ends it)
        self._headers_done = False
        self._interim = False  # the message being parsed is a 1xx: the answer still to come
        self._head_bytes = 0  # bytes read since the last body byte of the answer being parsed (head, trailers)
        self._no_body = False  # the read being parsed has brought no body byte and completed no message so far
        self._chunks: list[bytes] = []
        self._size = 0
        self.reusable = False
        self.idle_since = 0.0

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # a stream transport (uvloop's is not a subclass)
        self.reusable = True

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            self._fail(Http1ProtocolError("data from the server while no request was waiting"))
            return
        self._no_body = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(Http1ProtocolError("the server switched protocols"))
            return
        except httptools.HttpParserError as exc:
            self._fail(Http1ProtocolError(f"malformed HTTP response ({type(exc).__name__})"))
            return
        # A read that brought no body byte went to a head, or to a chunked answer's trailers, which the parser
        # collects just as unboundedly; a read that ended an answer is not counted against the next one.
        if self._no_body:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEADER_BYTES:
                self._fail(Http1ProtocolError(f"answer headers larger than {MAX_HEADER_BYTES} bytes"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.reusable = False
        self._transport = None
        if exc is None and self._headers_done and not self._framed:  # framed by the connection's (clean) end
            self.on_message_complete()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(Http1ConnectionError("connection lost before the whole answer arrived"))

    # httptools callbacks

    def on_message_begin(self) -> None:
        if self._waiter is None or self._waiter.done():  # more after the answer: this connection cannot be trusted
            self._fail(Http1ProtocolError("data from the server after its answer"))
            raise Http1ProtocolError("unexpected message")  # stops the parser

    def on_header(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        if lowered == b"content-length" or (lowered == b"transfer-encoding"
                                            and value.rstrip().lower().endswith(b"chunked")):
            self._framed = True

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()
        self._interim = 100 <= self._status < 200  # (101 Switching Protocols is an upgrade: refused above)
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        self._no_body = False
        self._head_bytes = 0
        self._size += len(body)
        if self._size > self._max_body:
            self._fail(Http1ProtocolError(f"answer larger than {self._max_body} bytes"))
            raise Http1ProtocolError("too large")  # stops the parser; the caller already has the error
        self._chunks.append(body)

    def on_message_complete(self) -> None:
        self._no_body = False
        if self._interim:  # a 1xx is not the answer: wait for the one that follows
            self._interim = self._framed = self._headers_done = False
            self._chunks, self._size, self._head_bytes = [], 0, 0
            return
        if not self._parser.should_keep_alive():
            self.reusable = False
        waiter, self._waiter = self._waiter, None
        body, self._chunks, self._size, self._head_bytes = b"".join(self._chunks), [], 0, 0
        self._framed = self._headers_done = False
        if waiter is not None and not waiter.done():
            waiter.set_result((self._status, body))
        if not self.reusable:
            self.close()

    # use

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        if self._transport is None or not self.reusable:
            raise Http1ConnectionError("connection closed")
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(request)
        return await self._waiter

    def _fail(self, exc: Http1Error) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)
        self.close()

    def close(self) -> None:
        self.reusable = False
        if self._transport is not None:
            self._transport.close()


class Http1Pool:
    """Keep-alive connections to one `http(s)://host[:port]/path` URL; `post()` sends to that path."""

    def __init__(self, url: str, *, max_connections: int = 50, connect_timeout_s: float = 5.0,
                 keepalive_s: float = 15.0, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http:// or https:// URL: {url!r}")
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl = (ssl_context or ssl.create_default_context()) if parts.scheme == "https" else None
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host_header = parts.netloc.rsplit("@", 1)[-1]
        self._head = f"POST {path} HTTP/1.1\r\nHost: {host_header}\r\n".encode("ascii")
        self._connect_timeout_s = connect_timeout_s
        self._keepalive_s = keepalive_s
        self._max_body = max_body_bytes
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: list[_Connection] = []
        self._busy: set[_Connection] = set()
        self._closed = False

    async def post(self, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes]:
        """POST `body` with `headers` (Content-Length is added); return (status, body) of the answer."""
        self._require_open()
        request = self._request(body, headers)
        async with self._slots:
            self._require_open()  # closed while this call waited for a slot: it is not sent
            connection = await self._checkout()
            try:
                self._require_open()  # closed while it connected
            except Http1ConnectionError:
                connection.close()
                raise
            self._busy.add(connection)
            try:
                answer = await connection.exchange(request)
            except BaseException:
                connection.close()  # cancelled, timed out or failed: its late answer must not be read as another's
                raise
            finally:
                self._busy.discard(connection)
            if connection.reusable and not self._closed:
                connection.idle_since = time.monotonic()
                self._idle.append(connection)
            else:
                connection.close()
            return answer

    def _require_open(self) -> None:
        if self._closed:
            raise Http1ConnectionError("client is closed")

    def _request(self, body: bytes, headers: Mapping[str, str]) -> bytes:
        lines = [self._head]
        for name, value in headers.items():
            if (name not in _VALID_NAMES and not _is_token(name)) or "\r" in value or "\n" in value:
                raise ValueError(f"header {name!r} is not a valid HTTP header (or one this client writes itself)")
            lines.append(f"{name}: {value}\r\n".encode("latin-1"))
        lines.append(f"Content-Length: {len(body)}\r\n\r\n".encode("ascii"))
        lines.append(body)
        return b"".join(lines)

    async def _checkout(self) -> _Connection:
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if connection.reusable and now - connection.idle_since < self._keepalive_s:
                return connection
            connection.close()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                _, protocol = await loop.create_connection(
                    lambda: _Connection(self._max_body), self._host, self._port, ssl=self._ssl,
                    server_hostname=self._host if self._ssl is not None else None)
        except TimeoutError:
            raise Http1ConnectionError(f"no connection to {self._host}:{self._port} within "
                                       f"{self._connect_timeout_s:g} s") from None
        except (OSError, ssl.SSLError) as exc:
            raise Http1ConnectionError(f"cannot connect to {self._host}:{self._port} "
                                       f"({type(exc).__name__})") from None
        return protocol

    async def __aenter__(self) -> Http1Pool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self, *, drain: bool = False) -> None:
        """Close every connection; calls not yet sent fail with Http1ConnectionError, and so do calls in
        flight, unless `drain`: then those get their answers, and their connections close after."""
        self._closed = True
        for connection in [*self._idle, *([] if drain else self._busy)]:
            connection.close()
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports run their connection_lost


_TOKEN_CHARS: Final = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


_VALID_NAMES: set[str] = set()  # names already checked, so the check is a set look-up on the hot path
# The request's framing is this client's: a second Content-Length, a Transfer-Encoding or a second Host would
# leave the server (or a proxy before it) to choose which one frames or routes the request.
_OWN_NAMES: Final = frozenset({"content-length", "transfer-encoding", "host"})


def _is_token(name: str) -> bool:
    if not name or not all(c in _TOKEN_CHARS for c in name) or name.lower() in _OWN_NAMES:
        return False
    if len(_VALID_NAMES) < 1024:
        _VALID_NAMES.add(name)
    return True
