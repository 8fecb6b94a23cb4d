"""The simulator's network face: Syndr's JSON-RPC 2.0 over HTTP POST and WebSocket.

One aiohttp application serves the document's paths (`/api/v1` for HTTP,
`/ws/api/v1` and the document's `/api/v1/ws/api/v1` for WebSocket) and an
admin interface under `/admin/` (instrument edits, fault knobs, the request
log). Calls run against the pure matching core (`engine.py`); its events are
turned into the document's notifications and fanned out to subscribed
connections, each through its own bounded outbound queue, so one slow client
never stalls the venue (it is disconnected instead, as venues do).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from portico.runtime.lifecycle import cancel_and_wait
from portico.sim.errors import RpcFailure
from portico.sim.faults import Faults
from portico.sim.params import Params
from portico.sim.ratelimit import CreditBuckets
from portico.sim.security import ApiKey, Security
from portico.venues.syndr.constants import (
    API_KEY_HEADER,
    API_SECRET_HEADER,
    HTTP_PATH,
    HTTP_PATH_ALIASES,
    WS_PATH,
    WS_PATH_ALIASES,
    ErrorCode,
    RateLimit,
)

__all__ = ["CallContext", "Connection", "SimConfig", "Simulator"]

log = logging.getLogger("portico.sim")

JSON_CONTENT_TYPE = "application/json"


@dataclass
class SimConfig:
    """How the simulator runs; `port=0` picks a free port."""

    host: str = "127.0.0.1"
    port: int = 8700
    seed: int = 7
    book_changes_per_second: float = 200.0  # market-maker activity across all instruments
    market_maker: bool = True
    market_maker_instruments: tuple[str, ...] | None = None  # None: the market maker works every instrument
    catalog_extra: int = 0  # extra generated instruments (e.g. 10,000 for a sync benchmark)
    default_collateral: Decimal = Decimal("1000000")  # USDT credited to an account when it registers
    # bearer token for /admin/ (None: open, for loopback development)
    admin_token: str | None = field(default=None, repr=False)
    max_frame_bytes: int = 256 * 1024
    rate_limit_capacity: float = RateLimit.CAPACITY
    rate_limit_refill_per_s: float = RateLimit.REFILL_PER_S
    outbound_queue: int = 20_000  # frames a WebSocket client may fall behind before it is disconnected
    request_log_size: int = 100_000


@dataclass
class CallContext:
    """Who is calling, over what."""

    transport: str  # "http" or "ws"
    us_in: int
    api_key: ApiKey | None = None
    connection: Connection | None = None


@dataclass
class LoggedRequest:
    """One call as the venue saw it (for tests asserting what was or was not sent)."""

    method: str
    transport: str
    api_key: str | None
    params: dict[str, Any]
    at: float = field(default_factory=time.time)


class Connection:
    """One WebSocket client: its authentication, subscriptions and outbound queue."""

    def __init__(self, ws: web.WebSocketResponse, sim: Simulator):
        self.ws = ws
        self.sim = sim
        self.api_key: ApiKey | None = None
        self.channels: set[str] = set()
        self._out: asyncio.Queue[str] = asyncio.Queue(maxsize=sim.config.outbound_queue)
        self._writer = asyncio.create_task(self._write_loop(), name="sim-ws-writer")
        self.closed = False

    @property
    def account(self) -> str | None:
        return self.api_key.account if self.api_key else None

    def send(self, frame: str) -> None:
        """Queue a frame; a client that falls too far behind is disconnected."""
        if self.closed:
            return
        try:
            self._out.put_nowait(frame)
        except asyncio.QueueFull:
            log.warning("disconnecting a websocket client that fell behind")
            asyncio.ensure_future(self.close(code=1008, message="slow consumer"))  # noqa: RUF006 - tracked by close()

    async def _write_loop(self) -> None:
        faults = self.sim.faults
        held: str | None = None  # a frame held back to be reordered after the next one
        try:
            while True:
                frame = await self._out.get()
                if faults.silent:
                    continue
                if faults.delay_ms:
                    await asyncio.sleep(faults.delay_ms / 1000)
                if held is None and faults.roll(self.sim.rng, faults.reorder_rate) and '"method"' in frame[:40]:
                    held = frame
                    continue
                await self.ws.send_str(frame)
                if held is not None:
                    await self.ws.send_str(held)
                    held = None
        except (ConnectionResetError, RuntimeError, asyncio.CancelledError):
            return

    async def close(self, *, code: int = 1000, message: str = "") -> None:
        if self.closed:
            return
        self.closed = True
        self.sim.unsubscribe_all(self)
        await cancel_and_wait(self._writer)
        with contextlib.suppress(Exception):
            await self.ws.close(code=code, message=message.encode())


Handler = Callable[["Simulator", Params, CallContext], Any]


@dataclass(frozen=True)
class Method:
    handler: Handler
    private: bool


def _now_us() -> int:
    return time.time_ns() // 1000


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def dumps(obj: Any) -> str:
    return orjson.dumps(obj, default=_json_default).decode()


def _error(code: ErrorCode | int, message: str, request_id: Any, us_in: int) -> dict[str, Any]:
    us_out = _now_us()
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": int(code), "message": message},
            "usIn": us_in, "usOut": us_out, "usDiff": us_out - us_in}


MAX_NESTING = 64


def _nesting(text: str) -> int:
    """Deepest bracket nesting outside strings."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _redact(params: Any) -> dict[str, Any]:
    if not isinstance(params, dict):
        return {}
    return {k: ("[redacted]" if "secret" in k.lower() else v) for k, v in params.items()}


class Simulator:
    """A Syndr-compatible venue: matching core, security, faults and the JSON-RPC server."""

    def __init__(self, config: SimConfig | None = None):
        from portico.sim import methods
        from portico.sim.engine import Engine
        from portico.sim.instruments import default_catalog
        from portico.sim.market_maker import MarketMaker

        self.config = config or SimConfig()
        self.rng = random.Random(self.config.seed)
        seeded = random.Random(self.config.seed)
        self.orderbook_address = "0x" + seeded.randbytes(20).hex()
        self.signing_keys_manager_address = "0x" + seeded.randbytes(20).hex()
        from portico.runtime.secp256k1 import to_checksum_address

        self.orderbook_address = to_checksum_address(self.orderbook_address)
        self.signing_keys_manager_address = to_checksum_address(self.signing_keys_manager_address)
        self.engine = Engine(default_catalog(self.config.catalog_extra), now_ms=lambda: time.time_ns() // 1_000_000,
                             rng=random.Random(self.config.seed + 1))
        self.security = Security(orderbook_address=self.orderbook_address,
                                 signing_keys_manager_address=self.signing_keys_manager_address)
        self.market_maker = MarketMaker(self.engine, rng=random.Random(self.config.seed + 2),
                                        changes_per_second=self.config.book_changes_per_second,
                                        instruments=(list(self.config.market_maker_instruments)
                                                     if self.config.market_maker_instruments is not None else None))
        self.faults = Faults()
        self.buckets = CreditBuckets(capacity=self.config.rate_limit_capacity,
                                     refill_per_s=self.config.rate_limit_refill_per_s)
        self.methods: dict[str, Method] = methods.registry()
        self.requests: deque[LoggedRequest] = deque(maxlen=self.config.request_log_size)
        self.connections: set[Connection] = set()
        self._subscribers: dict[str, set[Connection]] = {}
        self.notifier = methods.Notifier(self)
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.port = 0

    # ------------------------------------------------------------------ lifecycle

    @property
    def http_url(self) -> str:
        return f"http://{self.config.host}:{self.port}{HTTP_PATH}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.config.host}:{self.port}{WS_PATH}"

    @property
    def admin_url(self) -> str:
        return f"http://{self.config.host}:{self.port}/admin"

    def build_app(self) -> web.Application:
        from portico.sim import admin

        app = web.Application(client_max_size=self.config.max_frame_bytes)
        for path in HTTP_PATH_ALIASES:
            app.router.add_post(path, self._handle_http)
        # Every example of public/get_supported_collaterals sends the JSON-RPC request with GET to the method's
        # own path (`GET <host>/api/v1/public/get_supported_collaterals`); the request's method must be the path's.
        app.router.add_get(HTTP_PATH + "/{method:(?:public|private)/[a-z_]+}", self._handle_http)
        for path in WS_PATH_ALIASES:
            app.router.add_get(path, self._handle_ws)
        admin.add_routes(app, self)
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.build_app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self.config.port
        self.engine.subscribe(self.notifier.on_event)
        if self.config.market_maker:
            self.market_maker.seed()  # books start two-sided, not empty
        self._tasks.append(asyncio.create_task(self.notifier.periodic(), name="sim-periodic"))
        if self.config.market_maker:
            self._tasks.append(asyncio.create_task(self._market_maker_loop(), name="sim-market-maker"))
        log.info("simulator listening", extra={"http": self.http_url, "ws": self.ws_url})

    async def stop(self) -> None:
        for task in self._tasks:
            await cancel_and_wait(task)
        self._tasks.clear()
        await self.close_websockets(code=1001, message="venue shutting down")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _market_maker_loop(self) -> None:
        interval = 0.01
        budget = 0.0
        last = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            rate = self.market_maker.changes_per_second
            # Owed changes beyond a tenth of a second's worth are dropped: a step slower than the time it stands
            # for (a busy machine) must not make the next one longer still, or the venue's loop never gets back.
            budget = min(budget + (now - last) * rate, max(rate * 0.1, 1.0))
            last = now
            whole = int(budget)
            if whole:
                budget -= whole
                try:
                    self.market_maker.step(time.time_ns() // 1_000_000, whole)
                except Exception:  # a market-maker bug must not take the venue down
                    log.exception("market maker step failed")

    # ------------------------------------------------------------------ admin operations

    _DECIMAL_FIELDS = frozenset({"tick_size", "contract_size", "min_trade_amount", "maker_commission",
                                 "taker_commission", "max_leverage", "max_liquidation_commission"})

    def _typed_fields(self, fields: dict[str, Any]) -> dict[str, Any]:
        typed: dict[str, Any] = {}
        for key, value in fields.items():
            if key in self._DECIMAL_FIELDS:
                try:
                    typed[key] = Decimal(str(value))
                except ArithmeticError:
                    raise ValueError(f"{key} must be a decimal") from None
                if not typed[key].is_finite() or (key != "maker_commission" and typed[key] <= 0
                                                  and key != "taker_commission"):
                    raise ValueError(f"{key} must be a positive decimal")
            else:
                typed[key] = value
        return typed

    def add_instrument(self, name: str, **fields: Any) -> Any:
        """List a new instrument named as the venue names them; optional terms override the defaults."""
        from portico.sim.instruments import make_instrument

        ident = max((i.id for i in self.engine.instruments()), default=0) + 1
        instrument = make_instrument(ident, name)
        self.engine.add_instrument(instrument)
        if fields:
            return self.engine.update_instrument(name, **self._typed_fields(fields))
        return self.engine.instrument(name)

    def update_instrument(self, name: str, **fields: Any) -> Any:
        """Change an instrument's terms (tick size, contract size, ...)."""
        if not fields:
            raise ValueError("nothing to change")
        return self.engine.update_instrument(name, **self._typed_fields(fields))

    def delist(self, name: str) -> Any:
        """Stop listing an instrument: inactive, its open orders cancelled."""
        self.engine.delist(name)
        return self.engine.instrument(name)

    def open_account(self, address: str, collateral: dict[str, Decimal]) -> None:
        self.engine.open_account(address, collateral)

    # ------------------------------------------------------------------ subscriptions

    def subscribe(self, connection: Connection, key: str) -> None:
        self._subscribers.setdefault(key, set()).add(connection)
        connection.channels.add(key)

    def unsubscribe(self, connection: Connection, key: str) -> None:
        subscribers = self._subscribers.get(key)
        if subscribers is not None:
            subscribers.discard(connection)
            if not subscribers:
                del self._subscribers[key]
        connection.channels.discard(key)

    def unsubscribe_all(self, connection: Connection) -> None:
        for key in list(connection.channels):
            self.unsubscribe(connection, key)
        self.connections.discard(connection)

    def has_subscribers(self, key: str) -> bool:
        return key in self._subscribers

    def publish(self, key: str, frame: str) -> None:
        for connection in tuple(self._subscribers.get(key, ())):
            connection.send(frame)

    async def close_websockets(self, *, code: int = 1012, message: str = "venue restart") -> int:
        """Fault knob: drop every WebSocket connection; returns how many were closed."""
        connections = list(self.connections)
        for connection in connections:
            await connection.close(code=code, message=message)
        return len(connections)

    # ------------------------------------------------------------------ dispatch

    def execute(self, request: Any, ctx: CallContext) -> tuple[dict[str, Any], bool]:
        """Run one JSON-RPC request; return (its response, response dropped?).

        Every request is answered, one without an `id` too (with `"id": null`): the document says the API
        "always responds with a JSON object", and a request's effect must never go unreported.
        """
        us_in = ctx.us_in
        if not isinstance(request, dict):
            return _error(ErrorCode.INVALID_REQUEST, "invalid request: expected a JSON object", None, us_in), False
        request_id = request.get("id")
        if isinstance(request_id, bool) or not (request_id is None or isinstance(request_id, int | str)):
            return _error(ErrorCode.INVALID_REQUEST, "invalid request: id must be a number or string", None,
                          us_in), False
        method_name = request.get("method")
        if request.get("jsonrpc") != "2.0" or not isinstance(method_name, str):
            return _error(ErrorCode.INVALID_REQUEST, "invalid request: jsonrpc must be \"2.0\" and method a string",
                          request_id, us_in), False
        params_raw = request.get("params")
        key = ctx.api_key or (ctx.connection.api_key if ctx.connection else None)
        self.requests.append(LoggedRequest(method_name, ctx.transport, key.api_key if key else None,
                                           _redact(params_raw)))
        try:
            if self.faults.roll(self.rng, self.faults.fail_rate):
                raise RpcFailure(ErrorCode.INTERNAL_ERROR, "simulated failure")
            if isinstance(params_raw, dict) and params_raw.get("instrument_name") in self.faults.unknown_instruments:
                raise RpcFailure(ErrorCode.INSTRUMENT_NOT_FOUND, str(params_raw["instrument_name"]))
            method = self.methods.get(method_name)
            if method is None:
                raise RpcFailure(ErrorCode.METHOD_NOT_FOUND, method_name)
            if method.private:
                if key is None:
                    raise RpcFailure(ErrorCode.UNAUTHORIZED, "private method needs an authenticated API key")
                self.security.authorize(key, method_name)
                self.buckets.charge(key.api_key, method_name)
                ctx.api_key = key
            result = method.handler(self, Params(params_raw), ctx)
        except RpcFailure as failure:
            return _error(failure.code, failure.message, request_id, us_in), False
        except Exception as exc:
            from portico.sim.engine import EngineError

            if isinstance(exc, EngineError):
                return _error(exc.code, exc.message, request_id, us_in), False
            log.exception("simulator method failed", extra={"method": method_name})
            return _error(ErrorCode.INTERNAL_ERROR, "internal error", request_id, us_in), False
        dropped = self.faults.roll(self.rng, self.faults.drop_response_rate)
        us_out = _now_us()
        return {"jsonrpc": "2.0", "id": request_id, "result": result, "usIn": us_in, "usOut": us_out,
                "usDiff": us_out - us_in}, dropped

    @staticmethod
    def decode(body: bytes | str) -> Any:
        """Parse a request with floats kept exact (`parse_float=Decimal`).

        Nesting deeper than MAX_NESTING is refused before parsing, so the answer
        to a nested-JSON bomb does not depend on the interpreter's recursion limit.
        """
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        if text.count("[") + text.count("{") > MAX_NESTING and _nesting(text) > MAX_NESTING:
            raise ValueError("nested too deeply")
        return json.loads(text, parse_float=Decimal)

    # ------------------------------------------------------------------ HTTP

    async def _handle_http(self, request: web.Request) -> web.StreamResponse:
        us_in = _now_us()
        if not self.faults.http_5xx_method and self.faults.take_http_5xx(self.rng):
            return web.Response(status=503, text="service unavailable (simulated)")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._json_response(_error(ErrorCode.INVALID_REQUEST, "request too large", None, us_in))
        try:
            payload = self.decode(body)
        except (ValueError, RecursionError):
            return self._json_response(_error(ErrorCode.PARSE_ERROR, "parse error", None, us_in))
        path_method = request.match_info.get("method")
        if path_method is not None and (not isinstance(payload, dict) or payload.get("method") != path_method):
            request_id = payload.get("id") if isinstance(payload, dict) else None
            if isinstance(request_id, bool) or not isinstance(request_id, int | str):
                request_id = None
            return self._json_response(_error(ErrorCode.INVALID_REQUEST, f"invalid request: the method must be "
                                              f"the path's, {path_method}", request_id, us_in))
        if (self.faults.http_5xx_method and isinstance(payload, dict)
                and payload.get("method") == self.faults.http_5xx_method and self.faults.take_http_5xx(self.rng)):
            return web.Response(status=503, text="service unavailable (simulated)")
        hold_s = self.faults.take_http_hold(payload.get("method") if isinstance(payload, dict) else None)
        if hold_s:
            await asyncio.sleep(hold_s)
        ctx = CallContext("http", us_in)
        headers = request.headers
        if API_KEY_HEADER in headers or API_SECRET_HEADER in headers:
            try:
                ctx.api_key = self.security.authenticate(headers.get(API_KEY_HEADER), headers.get(API_SECRET_HEADER))
            except RpcFailure as failure:
                request_id = payload.get("id") if isinstance(payload, dict) else None
                return self._json_response(_error(failure.code, failure.message, request_id, us_in))
        response, dropped = self.execute(payload, ctx)
        if dropped:
            # The call happened; the caller never hears about it.
            if request.transport is not None:
                request.transport.abort()
            raise ConnectionResetError("response dropped (simulated)")
        return self._json_response(response)

    @staticmethod
    def _json_response(response: dict[str, Any]) -> web.Response:
        return web.Response(body=dumps(response).encode(), content_type=JSON_CONTENT_TYPE)

    # ------------------------------------------------------------------ WebSocket

    async def _handle_ws(self, request: web.Request) -> web.StreamResponse:
        # autoping is off so that the `silent` fault can also withhold pongs.
        ws = web.WebSocketResponse(autoping=False, max_msg_size=self.config.max_frame_bytes * 4)
        await ws.prepare(request)
        connection = Connection(ws, self)
        self.connections.add(connection)
        try:
            async for message in ws:
                if message.type == WSMsgType.PING:
                    if not self.faults.silent:
                        await ws.pong(message.data)
                    continue
                if message.type == WSMsgType.TEXT:
                    self._on_ws_text(connection, message.data)
                elif message.type == WSMsgType.BINARY:
                    connection.send(dumps(_error(ErrorCode.INVALID_REQUEST, "binary frames are not accepted", None,
                                                 _now_us())))
                elif message.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                    break
        finally:
            await connection.close()
        return ws

    def _on_ws_text(self, connection: Connection, text: str) -> None:
        us_in = _now_us()
        if len(text) > self.config.max_frame_bytes:
            connection.send(dumps(_error(ErrorCode.INVALID_REQUEST, "frame too large", None, us_in)))
            return
        try:
            payload = self.decode(text)
        except (ValueError, RecursionError):
            connection.send(dumps(_error(ErrorCode.PARSE_ERROR, "parse error", None, us_in)))
            return
        response, dropped = self.execute(payload, CallContext("ws", us_in, connection=connection))
        if not dropped:
            connection.send(dumps(response))
