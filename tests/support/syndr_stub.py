"""A small loopback Syndr stand-in for transport tests (not the simulator).

Serves JSON-RPC 2.0 on HTTP `/api/v1` and WebSocket `/ws/api/v1` on a free
127.0.0.1 port, records every request (with HTTP headers), and has knobs to
misbehave on demand: fail the next N HTTP calls (500, a JSON-RPC error, a
hang, a non-JSON body), never answer a WebSocket method, close every socket,
go silent (no answers, no notifications, no pongs: autoping is off and pongs
are sent by hand), and push notifications.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Self

import orjson
from aiohttp import WSMsgType, web

from portico.venues.syndr.constants import (
    API_KEY_HEADER,
    API_SECRET_HEADER,
    HTTP_PATH,
    NOTIFICATION_METHOD_PUBLIC,
    NOTIFICATION_METHOD_USER,
    WS_PATH,
    ErrorCode,
)

FailureKind = Literal["500", "rpc_error", "timeout", "garbage"]


@dataclass(frozen=True)
class HttpRecord:
    method: str
    params: Any
    id: Any
    headers: dict[str, str]  # lower-cased names
    body: bytes = b""  # the request as it arrived


@dataclass(frozen=True)
class WsRecord:
    conn: int
    method: str
    params: Any
    id: Any


@dataclass
class _Failure:
    kind: FailureKind
    code: int
    message: str


@dataclass
class _Conn:
    id: int
    ws: web.WebSocketResponse
    authenticated: bool = False
    silent: bool = False
    channels: set[str] = field(default_factory=set)


def _now_us() -> int:
    return time.time_ns() // 1000


class SyndrStub:
    """`async with SyndrStub() as stub:` then point clients at `stub.http_url` / `stub.ws_url`."""

    def __init__(self, *, api_key: str = "stub-key", api_secret: str = "stub-secret") -> None:  # noqa: S107
        self.api_key = api_key
        self.api_secret = api_secret
        self.http_requests: list[HttpRecord] = []
        self.ws_requests: list[WsRecord] = []
        self.results: dict[str, Any] = {}
        self.held_ws_methods: set[str] = set()
        self.ws_connections = 0
        self.port = 0
        self._failures: list[_Failure] = []
        self._conns: dict[int, _Conn] = {}
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_post(HTTP_PATH, self._http)
        app.router.add_get(WS_PATH, self._ws)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self._release.set()
        for conn in list(self._conns.values()):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.ws.close(), 1.0)
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{HTTP_PATH}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{WS_PATH}"

    # ------------------------------------------------------------------ knobs

    def fail_http(self, count: int, kind: FailureKind, *, code: int = ErrorCode.INTERNAL_ERROR,
                  message: str = "stub failure") -> None:
        """The next `count` HTTP calls fail this way."""
        self._failures.extend(_Failure(kind, code, message) for _ in range(count))

    def hold_ws(self, method: str) -> None:
        """Record WebSocket calls of `method` but never answer them."""
        self.held_ws_methods.add(method)

    async def close_all_websockets(self, code: int = 1012) -> int:
        """Close every live WebSocket (as a venue restart would); return how many."""
        conns = list(self._conns.values())
        await asyncio.gather(*(conn.ws.close(code=code, message=b"stub restart") for conn in conns),
                             return_exceptions=True)
        return len(conns)

    def silence_websockets(self) -> int:
        """Current connections stop sending anything, pongs included; new ones behave."""
        for conn in self._conns.values():
            conn.silent = True
        return len(self._conns)

    async def notify(self, channel: str, data: Any, *, method: str | None = None) -> int:
        """Send a notification to every live, non-silent connection subscribed to `channel`."""
        if method is None:
            method = NOTIFICATION_METHOD_USER if channel.startswith("user.") else NOTIFICATION_METHOD_PUBLIC
        frame = orjson.dumps({"jsonrpc": "2.0", "method": method, "params": {"channel": channel, "data": data}})
        sent = 0
        for conn in list(self._conns.values()):
            if channel in conn.channels and not conn.silent and not conn.ws.closed:
                await conn.ws.send_str(frame.decode())
                sent += 1
        return sent

    def ws_methods(self, conn: int | None = None) -> list[str]:
        return [r.method for r in self.ws_requests if conn is None or r.conn == conn]

    def live_connections(self) -> int:
        return len(self._conns)

    async def wait_until(self, predicate: Callable[[], bool], within_s: float = 5.0) -> None:
        """Poll `predicate` until true (AssertionError after `within_s`)."""
        deadline = time.monotonic() + within_s
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError("condition not reached in time")
            await asyncio.sleep(0.01)

    # ------------------------------------------------------------------ protocol

    def _answer(self, method: str, params: Any, conn: _Conn | None) -> tuple[Any, dict[str, Any] | None]:
        """(result, error) for one call; `conn` is None over HTTP (auth already checked)."""
        if method == "public/auth":
            ok = isinstance(params, dict) and params.get("api_key") == self.api_key \
                and params.get("api_secret") == self.api_secret
            if not ok:
                return None, {"code": ErrorCode.UNAUTHORIZED, "message": "unauthorized"}
            if conn is not None:
                conn.authenticated = True
            return {"status": "connection authenticated", "account": "0x" + "12" * 20}, None
        if method.startswith("private/") and conn is not None and not conn.authenticated:
            return None, {"code": ErrorCode.UNAUTHORIZED, "message": "unauthorized"}
        channels = params.get("channels") if isinstance(params, dict) else None
        if method.endswith("/subscribe") or method.endswith("/unsubscribe"):
            if not isinstance(channels, list):
                return None, {"code": ErrorCode.INVALID_PARAMS, "message": "invalid params"}
            if conn is not None:
                if method.endswith("/subscribe"):
                    conn.channels.update(channels)
                else:
                    conn.channels.difference_update(channels)
            return channels, None
        if method in self.results:
            return self.results[method], None
        return {"method": method, "echo": params}, None

    @staticmethod
    def _envelope(request_id: Any, result: Any, error: dict[str, Any] | None, us_in: int) -> bytes:
        us_out = _now_us()
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id}
        if error is not None:
            body["error"] = error
        else:
            body["result"] = result
        body.update(usIn=us_in, usOut=us_out, usDiff=us_out - us_in)
        return orjson.dumps(body)

    async def _http(self, request: web.Request) -> web.Response:
        us_in = _now_us()
        body = await request.read()
        try:
            message = orjson.loads(body)
        except orjson.JSONDecodeError:
            unparsable = {"code": ErrorCode.PARSE_ERROR, "message": "parse error"}
            return web.Response(body=self._envelope(None, None, unparsable, us_in), content_type="application/json")
        method, params, request_id = message.get("method"), message.get("params"), message.get("id")
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.http_requests.append(HttpRecord(method, params, request_id, headers, body))
        if self._failures:
            failure = self._failures.pop(0)
            if failure.kind == "500":
                return web.Response(status=500, text="internal server error")
            if failure.kind == "garbage":
                return web.Response(status=200, text="<html>not json-rpc</html>", content_type="text/html")
            if failure.kind == "timeout":
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._release.wait(), 30)
                return web.Response(status=503)
            failed = {"code": failure.code, "message": failure.message}
            return web.Response(body=self._envelope(request_id, None, failed, us_in),
                                content_type="application/json")
        if method.startswith("private/") and (headers.get(API_KEY_HEADER) != self.api_key
                                              or headers.get(API_SECRET_HEADER) != self.api_secret):
            refused = {"code": ErrorCode.UNAUTHORIZED, "message": "unauthorized"}
            return web.Response(body=self._envelope(request_id, None, refused, us_in),
                                content_type="application/json")
        result, error = self._answer(method, params, None)
        return web.Response(body=self._envelope(request_id, result, error, us_in), content_type="application/json")

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=False, timeout=1.0)
        await ws.prepare(request)
        self.ws_connections += 1
        conn = _Conn(self.ws_connections, ws)
        self._conns[conn.id] = conn
        try:
            async for msg in ws:
                if msg.type == WSMsgType.PING:
                    if not conn.silent:
                        await ws.pong(msg.data)
                elif msg.type == WSMsgType.TEXT:
                    await self._ws_request(conn, msg.data)
                elif msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                    break
        finally:
            self._conns.pop(conn.id, None)
        return ws

    async def _ws_request(self, conn: _Conn, text: str) -> None:
        us_in = _now_us()
        message = orjson.loads(text)
        method, params, request_id = message.get("method"), message.get("params"), message.get("id")
        self.ws_requests.append(WsRecord(conn.id, method, params, request_id))
        if conn.silent or method in self.held_ws_methods:
            return
        result, error = self._answer(method, params, conn)
        await conn.ws.send_str(self._envelope(request_id, result, error, us_in).decode())
