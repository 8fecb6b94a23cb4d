"""Syndr JSON-RPC over HTTP POST: one pooled client, spans, safe retries, one error hierarchy.

Why these choices:

* `portico.runtime.http1`, a keep-alive HTTP/1.1 client for one URL, not a
  general-purpose one: on the order path every call counts; httpx was the
  largest single cost in the execution benchmark's profile, and aiohttp's
  client still spent ~90 us per call where the exchange itself takes ~55 us.

* Retries are only for `public/*` reads (idempotent). A private call that got
  no answer may or may not have happened at the venue (an order may be live),
  so it is never re-sent here; the caller sees a `SyndrTransportError` and must
  reconcile. `public/register_signing_key` changes state, so it is not retried
  either.
* Each call is one CLIENT span named after the method, and the W3C
  `traceparent` goes out with the request so the venue (or the simulator) can
  join the trace. Params and credentials never go on spans: params carry
  signatures and order details, headers carry the API secret.
* Exception messages are built here from the method name, the HTTP status and
  the venue's error text (with the key and secret scrubbed); transport
  exceptions are not chained, so nothing of the request leaks through them.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self
from urllib.parse import urlsplit, urlunsplit

import orjson
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from portico.runtime.http1 import Http1Error, Http1Pool
from portico.venues.syndr.constants import HTTP_PATH, ErrorCode
from portico.venues.syndr.credentials import ApiCredentials
from portico.venues.syndr.errors import (
    SyndrAuthError,
    SyndrConnectionError,
    SyndrError,
    SyndrHttpError,
    SyndrProtocolError,
    SyndrRateLimited,
    SyndrRpcError,
    SyndrTimeout,
    SyndrTransportError,
    rpc_error_from_object,
)
from portico.venues.syndr.ratelimit import Priority, RateBudget

__all__ = ["RpcResult", "SyndrHttpClient", "is_retryable_method", "parse_response", "with_default_path"]

# Only `traceparent` leaves for the venue: OTel's default propagators also send baggage, which holds what our
# callers put in their metadata (theirs to share inside, not with an outside party).
_TRACE_CONTEXT: Final = TraceContextTextMapPropagator()

log = logging.getLogger("portico.venues.syndr.http")
tracer = trace.get_tracer("portico.venues.syndr")

# Methods under `public/` that change state at the venue: never re-sent.
_NON_IDEMPOTENT_PUBLIC: Final = frozenset({"public/register_signing_key"})
_BACKOFF_BASE_S: Final = 0.05
_BACKOFF_MAX_S: Final = 1.0
# Longest venue error text kept in an exception message.
_MAX_DETAIL: Final = 300


@dataclass(frozen=True, slots=True)
class RpcResult:
    """A JSON-RPC `result` with the venue's server-side timings (microseconds) and the raw answer."""

    result: Any
    us_in: int | None
    us_out: int | None
    us_diff: int | None
    raw: bytes


def is_retryable_method(method: str) -> bool:
    """True for idempotent reads, the only calls a transport failure may repeat."""
    return method.startswith("public/") and method not in _NON_IDEMPOTENT_PUBLIC


def with_default_path(url: str, path: str) -> str:
    """`url` unchanged when it names a path, else with `path` appended (so a bare host works)."""
    parts = urlsplit(url)
    if parts.path in ("", "/"):
        return urlunsplit(parts._replace(path=path))
    return url


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def parse_response(answer: Any, raw: bytes, *, method: str, credentials: ApiCredentials | None = None) -> RpcResult:
    """Turn a decoded JSON-RPC response into an `RpcResult`, or raise the matching `SyndrError`."""
    if not isinstance(answer, dict):
        raise SyndrProtocolError(f"{method}: response is not a JSON object")
    error = answer.get("error")
    if error is not None:
        if isinstance(error, dict) and credentials is not None:
            error = dict(error)
            for key in ("message", "data"):
                if isinstance(error.get(key), str):
                    error[key] = credentials.scrub(error[key])[:_MAX_DETAIL]
        raise rpc_error_from_object(error, method=method)
    if "result" not in answer:
        raise SyndrProtocolError(f"{method}: response has neither result nor error")
    us_in, us_out = _int_or_none(answer.get("usIn")), _int_or_none(answer.get("usOut"))
    us_diff = _int_or_none(answer.get("usDiff"))
    if us_diff is None and us_in is not None and us_out is not None:
        us_diff = us_out - us_in
    return RpcResult(answer["result"], us_in, us_out, us_diff, raw)


def record_result_on_span(span: trace.Span, result: RpcResult) -> None:
    """The venue's timings as span attributes (only those it sent)."""
    for name, value in (("syndr.us_in", result.us_in), ("syndr.us_out", result.us_out),
                        ("syndr.us_diff", result.us_diff)):
        if value is not None:
            span.set_attribute(name, value)


def record_error_on_span(span: trace.Span, error: BaseException) -> None:
    """Error status plus the venue's code; the exception text is ours and secret-free."""
    if isinstance(error, SyndrRpcError):
        span.set_attribute("rpc.jsonrpc.error_code", error.code)
        span.set_attribute("rpc.jsonrpc.error_message", error.venue_message)
    span.set_attribute("error.type", type(error).__name__)
    span.set_status(Status(StatusCode.ERROR, str(error)))


def backoff_s(attempt: int, base_s: float, max_s: float) -> float:
    """Exponential backoff with jitter (50-100 % of the step), so clients do not retry in lockstep.

    The exponent is capped (the step reached `max_s` long before): uncapped, the 1,025th attempt of a long
    outage raised OverflowError (a WebSocket reconnecting for two hours ended every subscription)."""
    step: float = min(max_s, base_s * (2 ** min(max(0, attempt - 1), 64)))
    return step * random.uniform(0.5, 1.0)


class SyndrHttpClient:
    """JSON-RPC 2.0 over HTTP POST to Syndr, over one pool of keep-alive connections (opened on first use)."""

    def __init__(self, base_url: str, *, credentials: ApiCredentials | None = None, timeout_s: float = 5.0,
                 max_connections: int = 50, retries: int = 2, rate_budget: RateBudget | None = None) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        if retries < 0:
            raise ValueError("retries must be >= 0")
        self.url = with_default_path(base_url, HTTP_PATH)
        self._credentials = credentials
        self._timeout_s = timeout_s
        self._retries = retries
        self._budget = rate_budget
        self._ids = itertools.count(1)
        self._closed = False
        parts = urlsplit(self.url)
        self._server_attrs: dict[str, str | int] = {"server.address": parts.hostname or ""}
        if parts.port is not None:
            self._server_attrs["server.port"] = parts.port
        self._max_connections = max_connections
        self._session: Http1Pool | None = None  # bound to the running loop, so made on first call

    def __repr__(self) -> str:
        return f"SyndrHttpClient({self.url!r}, credentials={self._credentials!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self, *, drain: bool = False) -> None:
        """Close the connection pool; later calls raise `SyndrConnectionError`. With `drain`, calls already
        on their way still get their answers (a client replaced by a new one must not make them unknown)."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.aclose(drain=drain)

    def _pool(self) -> Http1Pool:
        if self._session is None:
            self._session = Http1Pool(self.url, max_connections=self._max_connections,
                                      connect_timeout_s=self._timeout_s)
        return self._session

    async def call(self, method: str, params: Mapping[str, Any] | orjson.Fragment | None = None, *,
                   timeout_s: float | None = None, priority: Priority | None = None) -> RpcResult:
        """Send one JSON-RPC call and return its result; raise a `SyndrError` otherwise.

        `params` may be a JSON object already serialised (`orjson.Fragment`): its bytes are sent as they are (an
        order's journaled request, sent again byte for byte).

        `priority` overrides the method's own class in the rate budget's queue (see `RateBudget`).

        `public/*` reads are retried (up to `retries` times, jittered backoff) on
        connection errors, timeouts and HTTP 5xx; nothing else is. Retries stay within
        `timeout_s` (the client's by default) from the call's start: an attempt that
        used it up is not repeated, and a retry gets only what is left of it.
        """
        if self._closed:
            raise SyndrConnectionError(f"{method}: client is closed")
        private = method.startswith("private/")
        if private and self._credentials is None:
            raise SyndrAuthError(ErrorCode.UNAUTHORIZED, "no API credentials configured", method=method)
        attempts = 1 + (self._retries if is_retryable_method(method) else 0)
        limit_s = self._timeout_s if timeout_s is None else timeout_s
        body_params = params if isinstance(params, orjson.Fragment) else dict(params) if params is not None else {}
        attributes: dict[str, str | int] = {"rpc.system": "jsonrpc", "rpc.method": method,
                                            "rpc.jsonrpc.version": "2.0", **self._server_attrs}
        with tracer.start_as_current_span(method, kind=SpanKind.CLIENT, attributes=attributes,
                                          record_exception=False, set_status_on_exception=False) as span:
            deadline, attempt_s = time.monotonic() + limit_s, limit_s  # no loop look-up on the order path
            try:
                for attempt in range(1, attempts + 1):
                    try:
                        return await self._attempt(span, method, body_params, private, attempt_s, priority)
                    except SyndrTransportError as exc:
                        delay = backoff_s(attempt, _BACKOFF_BASE_S, _BACKOFF_MAX_S)
                        attempt_s = deadline - time.monotonic() - delay  # what a retry would have left
                        if (attempt >= attempts or (isinstance(exc, SyndrHttpError) and exc.status < 500)
                                or attempt_s <= 0):
                            raise
                        span.add_event("retry", {"attempt": attempt, "error.type": type(exc).__name__})
                        log.info("syndr %s failed (%s), retry %d/%d in %.0f ms", method, exc, attempt,
                                 attempts - 1, delay * 1000)
                        await asyncio.sleep(delay)
                raise AssertionError("unreachable")  # pragma: no cover
            except SyndrError as exc:
                record_error_on_span(span, exc)
                raise

    async def _attempt(self, span: trace.Span, method: str, params: dict[str, Any] | orjson.Fragment, private: bool,
                       limit_s: float, priority: Priority | None) -> RpcResult:
        """One POST: budget, headers, send, classify the answer."""
        if self._budget is not None:  # credits may take up to the timeout; then the venue has its own timeout
            await self._budget.acquire(method, priority=priority, timeout_s=limit_s)
        request_id = next(self._ids)
        span.set_attribute("rpc.jsonrpc.request_id", str(request_id))
        body = orjson.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        headers: dict[str, str] = {"content-type": "application/json", "accept": "application/json"}
        _TRACE_CONTEXT.inject(headers)  # the current context is this call's span; baggage is not the venue's
        if private:
            assert self._credentials is not None
            headers.update(self._credentials.headers())
        if self._closed:
            raise SyndrConnectionError(f"{method}: client is closed")
        try:
            async with asyncio.timeout(limit_s):
                status, raw = await self._pool().post(body, headers)
        except TimeoutError:
            raise SyndrTimeout(f"{method}: no answer within {limit_s:g} s") from None
        except Http1Error as exc:
            raise SyndrConnectionError(f"{method}: {exc} talking to {self.url}") from None
        span.set_attribute("http.response.status_code", status)
        if status >= 500:
            raise SyndrHttpError(status, f"{method}: HTTP {status} from venue")
        try:
            answer = orjson.loads(raw)
        except orjson.JSONDecodeError:
            answer = None
        if isinstance(answer, dict) and (answer.get("error") is not None or "result" in answer):
            if not _answers(answer, request_id, private):
                raise SyndrProtocolError(f"{method}: response id does not match request id")
            result = parse_response(answer, raw, method=method, credentials=self._credentials)
            record_result_on_span(span, result)
            return result
        if status == 429:
            raise SyndrRateLimited(ErrorCode.TOO_MANY_REQUESTS, "too_many_requests (HTTP 429)", method=method)
        if status >= 400:
            raise SyndrHttpError(status, f"{method}: HTTP {status} from venue")
        raise SyndrProtocolError(f"{method}: response is not a JSON-RPC object (HTTP {status})")


def _answers(answer: dict[str, Any], request_id: int, private: bool) -> bool:
    """Whether `answer` is the answer to request `request_id`: the same integer id. JSON-RPC answers a request
    it could not read with a null id; that is taken for a public call, but for a private one it proves
    nothing about which request it answers, so it reads as an unusable answer (outcome unknown)."""
    answer_id = answer.get("id")
    if type(answer_id) is int:
        return answer_id == request_id
    error = answer.get("error")
    return (answer_id is None and not private and isinstance(error, dict)
            and error.get("code") in (ErrorCode.PARSE_ERROR, ErrorCode.INVALID_REQUEST))
