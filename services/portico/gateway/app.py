"""`portico-gateway`: the HTTP/JSON edge of the source documents, in front of the gRPC services.

    POST /api/v3/market/instrument/sync          the sync document: {venue, symbols?} -> {data, success, errno, error}
    GET  /v1/instruments/{exchange}/{symbol}     the metadata document's single-instrument endpoint
    GET  /v1/instruments/{exchange}?filter=...   its filter endpoint (url-encoded JSON filter, the only parameter)
    GET  /healthz                                liveness for HTTP probes

Enum values newer than this gateway's compiled proto (reference data deployed
first, as a rolling deploy does) render as `unknown_<number>`, never an error.
Any unexpected failure is a 500 with the gateway's JSON error body; its
traceback goes to the log, never to the caller.

The gateway holds no credentials of its own: it forwards the caller's
`Authorization: Bearer` token to the gRPC services, whose scopes decide
(`admin` for sync, `read` for instruments). gRPC statuses become HTTP codes
through one table, `HTTP_STATUS`; a RESOURCE_EXHAUSTED from gRPC itself (no
ErrorInfo: a reply over the receive limit, say) is a 502, not a 429.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import grpc
import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError
from google.protobuf.timestamp_pb2 import Timestamp

from portico.refdata.v1 import instrument_pb2
from portico.refdata.v1 import reference_data_service_pb2 as refdata_pb2
from portico.refdata.v1 import reference_data_service_pb2_grpc as refdata_grpc
from portico.runtime.errors import error_info

__all__ = ["HTTP_STATUS", "Gateway", "instrument_json"]

log = logging.getLogger("portico.gateway")


class _MalformedRequests(logging.Filter):
    """aiohttp's own log of a request it refused itself, as one warning line without the exception's text.

    A request line or header over 8,190 bytes, or a body its Content-Encoding does not decode, is answered by
    aiohttp (400) before or around our handlers, and logged by it as an ERROR with a traceback whose message
    quotes the offending line: for an oversized `Authorization` header, the caller's bearer token. The
    caller's mistake is a warning naming the error's class, never its text.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, (HttpProcessingError, RequestPayloadError)):
            record.msg, record.args = "%s: refused a malformed HTTP request (%s)", (record.getMessage(),
                                                                                   type(error).__name__)
            record.exc_info, record.exc_text, record.stack_info = None, None, None
            record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
        return True


# On the logger aiohttp's server writes to (filters of a logger see only its own records, so not on a parent).
logging.getLogger("aiohttp.server").addFilter(_MalformedRequests())

# The one table from gRPC status to HTTP status.
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
_HTTP_TITLES = {400: "Invalid request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found",
                405: "Method not allowed", 409: "Conflict", 429: "Too many requests", 499: "Cancelled",
                501: "Not implemented", 413: "Request too large", 502: "Bad gateway", 503: "Service unavailable",
                504: "Timeout", 500: "Internal error"}
# What callers read for an UNAVAILABLE or DEADLINE_EXCEEDED the service did not raise itself (no ErrorInfo):
# gRPC's own text for those names internal addresses.
_UNAVAILABLE_DETAIL = {503: "reference data unavailable", 504: "reference data did not answer in time"}
# What callers read for a RESOURCE_EXHAUSTED without ErrorInfo (a 502): gRPC's own limit, not a rate limit of ours.
_GRPC_EXHAUSTED_DETAIL = "reference data's answer exceeded a gRPC limit"
SYNC_PATH = "/api/v3/market/instrument/sync"
CALL_TIMEOUT_S = 30.0
MAX_BODY_BYTES = 64 * 1024
# The filter endpoint answers with every page of ListInstruments: LIST_PAGE_SIZE per call, at most
# MAX_LIST_PAGES calls (100,000 instruments). A backend that repeats a page token, or lists past the
# limit, is a bad upstream (502), not a reason to loop forever or grow without bound.
LIST_PAGE_SIZE = 1000
MAX_LIST_PAGES = 100
# Printable ASCII only: gRPC's core refuses anything else in metadata (failing the call and leaking memory).
_BEARER = re.compile(r"Bearer +([\x21-\x7E]+)", re.IGNORECASE | re.ASCII)
# Portico's tokens are 46 characters. Metadata over gRPC's 8 KiB soft limit is refused at random with
# RESOURCE_EXHAUSTED (a 429 that lists the call's metadata), so a token is refused well below it.
MAX_TOKEN_CHARS = 4096
_FILTER_KEYS = {"baseCurrency", "quoteCurrency", "type", "contractType", "active"}
_TYPES = {"spot": instrument_pb2.INSTRUMENT_TYPE_SPOT, "perpetual": instrument_pb2.INSTRUMENT_TYPE_PERPETUAL,
          "future": instrument_pb2.INSTRUMENT_TYPE_FUTURE, "option": instrument_pb2.INSTRUMENT_TYPE_OPTION}
_TYPE_NAMES: dict[int, str] = {instrument_pb2.INSTRUMENT_TYPE_UNSPECIFIED: "unknown",
                               **{v: k for k, v in _TYPES.items()}}
_CONTRACT_TYPES = {v.name.removeprefix("CONTRACT_TYPE_").lower(): v.number
                   for v in instrument_pb2.ContractType.DESCRIPTOR.values if v.number != 0}
_CONTRACT_NAMES = {v: k for k, v in _CONTRACT_TYPES.items()}
_OPTION_NAMES: dict[int, str] = {instrument_pb2.OPTION_TYPE_CALL: "call", instrument_pb2.OPTION_TYPE_PUT: "put"}
# Reference data names a bad filter value by its proto field; the caller sent the document's key.
_FILTER_FIELD = re.compile(r"filter\.(base_currencies|quote_currencies|types|contract_types)\b")
_REST_FILTER_FIELDS = {"base_currencies": "baseCurrency", "quote_currencies": "quoteCurrency", "types": "type",
                       "contract_types": "contractType"}


def _enum_name(names: dict[int, str], number: int) -> str:
    """The document's name of an enum value; `unknown_<number>` for one newer than this gateway's proto.

    proto3 enums are open: reference data deployed before the gateway may send numbers the gateway's compiled
    proto does not define. They render stably and keep the number, rather than failing the request.
    """
    return names.get(number) or f"unknown_{number}"


class HttpError(Exception):
    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status = status
        self.detail = detail


def _iso(stamp: Timestamp) -> str:
    """ISO 8601 with milliseconds and Z, as the metadata document writes dates."""
    return stamp.ToDatetime().strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.nanos // 1_000_000:03d}Z"


def _number(text: str) -> Any:
    """A decimal string written as an exact JSON number (the document's numbers; never a float)."""
    Decimal(text)  # refuses anything that is not a decimal
    return orjson.Fragment(text.encode())


def instrument_json(message: instrument_pb2.Instrument) -> dict[str, Any]:
    """The metadata document's record (camelCase, its sample's types), plus Syndr's native fields."""
    record: dict[str, Any] = {
        "id": message.symbol,
        "datasetId": message.dataset_id,
        "exchange": message.venue,
        "baseCurrency": message.base_currency,
        "quoteCurrency": message.quote_currency,
        "type": _enum_name(_TYPE_NAMES, message.type),
        "active": message.active,
        "availableSince": _iso(message.available_since),
    }
    if message.HasField("available_to"):
        record["availableTo"] = _iso(message.available_to)
    if message.HasField("expiry"):
        record["expiry"] = _iso(message.expiry)
    record.update({
        "priceIncrement": _number(message.price_increment),
        "amountIncrement": _number(message.amount_increment),
        "minTradeAmount": _number(message.min_trade_amount),
        "makerFee": _number(message.maker_fee),
        "takerFee": _number(message.taker_fee),
    })
    if message.HasField("inverse"):
        record["inverse"] = message.inverse
    if message.contract_type:
        record["contractType"] = _enum_name(_CONTRACT_NAMES, message.contract_type)
    if message.HasField("contract_multiplier"):
        record["contractMultiplier"] = _number(message.contract_multiplier)
    if message.HasField("quanto") and message.quanto:
        record["quanto"] = True
    if message.HasField("settlement_currency"):
        record["settlementCurrency"] = message.settlement_currency
    if message.HasField("strike_price"):
        record["strikePrice"] = _number(message.strike_price)
    if message.option_type:
        record["optionType"] = _enum_name(_OPTION_NAMES, message.option_type)
    if message.changes:
        changes = []
        for change in message.changes:
            entry: dict[str, Any] = {"until": _iso(change.until)}
            if change.HasField("price_increment"):
                entry["priceIncrement"] = _number(change.price_increment)
            if change.HasField("amount_increment"):
                entry["amountIncrement"] = _number(change.amount_increment)
            if change.HasField("contract_multiplier"):
                entry["contractMultiplier"] = _number(change.contract_multiplier)
            changes.append(entry)
        record["changes"] = changes
    record.update({
        "venueInstrumentId": message.venue_instrument_id,
        "venueKind": message.venue_kind,
        "maxLeverage": _number(message.max_leverage) if message.max_leverage else None,
        "priceIndex": message.price_index,
        "underlying": message.underlying,
        "settlementPeriod": message.settlement_period,
    })
    return record


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _error(error: HttpError) -> web.Response:
    """A failure of the metadata document's endpoints (and of any route without an envelope of its own)."""
    return _json({"error": f"{_HTTP_TITLES.get(error.status, 'Error')}: {error.detail}"}, error.status)


@web.middleware
async def _unexpected_errors(request: web.Request,
                             handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """Any exception a handler did not answer itself: a JSON 500 without its text (which goes to the log).

    aiohttp's own HTTP errors (404 for a path without a route, 405 for a method a route does not take) are
    answered in the same JSON shape, in the sync document's envelope on its path; a 405 keeps its `Allow`.
    """
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if isinstance(exc, web.HTTPMethodNotAllowed):
            detail = f"{request.method} (allowed: {', '.join(sorted(exc.allowed_methods))})"
        elif isinstance(exc, web.HTTPNotFound):
            detail = "no such endpoint"
        else:
            detail = exc.text or exc.reason
        error = HttpError(exc.status, detail)
        response = _envelope_error(error) if request.path == SYNC_PATH else _error(error)
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return _error(HttpError(500, "internal error"))


def _envelope_error(error: HttpError) -> web.Response:
    """A failure in the sync document's envelope."""
    return _json({"data": None, "success": False, "errno": error.status,
                  "error": f"{_HTTP_TITLES.get(error.status, 'Error')}: {error.detail}"}, error.status)


def _one_or_many(value: Any, key: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    raise HttpError(400, f"filter.{key} must be a string or a non-empty list of strings")


def filter_message(raw: str | None) -> instrument_pb2.InstrumentFilter:
    """The document's url-encoded JSON filter as the contract's InstrumentFilter."""
    message = instrument_pb2.InstrumentFilter()
    if not raw:
        return message
    try:
        # aiohttp has already url-decoded the query string. orjson, not json: it refuses lone surrogates and
        # nesting deeper than 1024 with a ValueError, where json accepts the one and overflows the stack on the other.
        data = orjson.loads(raw)
    except ValueError:
        raise HttpError(400, "filter must be url-encoded JSON") from None
    if not isinstance(data, dict):
        raise HttpError(400, "filter must be a JSON object")
    unknown = set(data) - _FILTER_KEYS
    if unknown:
        raise HttpError(400, f"unknown filter fields: {', '.join(sorted(unknown))}")
    if "baseCurrency" in data:
        message.base_currencies.extend(_one_or_many(data["baseCurrency"], "baseCurrency"))
    if "quoteCurrency" in data:
        message.quote_currencies.extend(_one_or_many(data["quoteCurrency"], "quoteCurrency"))
    for value in _one_or_many(data["type"], "type") if "type" in data else []:
        if value not in _TYPES:
            raise HttpError(400, f"filter.type: unknown type {value!r}")
        message.types.append(_TYPES[value])
    for value in _one_or_many(data["contractType"], "contractType") if "contractType" in data else []:
        if value not in _CONTRACT_TYPES:
            raise HttpError(400, f"filter.contractType: unknown contract type {value!r}")
        message.contract_types.append(instrument_pb2.ContractType.ValueType(_CONTRACT_TYPES[value]))
    if "active" in data:
        if not isinstance(data["active"], bool):
            raise HttpError(400, "filter.active must be true or false")
        message.active = data["active"]
    return message


class Gateway:
    """The aiohttp application, calling reference data over a gRPC channel."""

    def __init__(self, refdata: grpc.aio.Channel):
        self._refdata = refdata_grpc.ReferenceDataServiceStub(refdata)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[_unexpected_errors])
        app.router.add_post(SYNC_PATH, self._sync)
        app.router.add_get("/v1/instruments/{exchange}/{symbol}", self._instrument)
        app.router.add_get("/v1/instruments/{exchange}", self._instruments)
        app.router.add_get("/healthz", self._health)
        return app

    @staticmethod
    def _metadata(request: web.Request) -> tuple[tuple[str, str], ...]:
        header = request.headers.get("Authorization")
        if not header:
            raise HttpError(401, "missing bearer token")
        match = _BEARER.fullmatch(header)
        if match is None:
            raise HttpError(401, "authorization must be `Bearer <token>`")
        if len(match[1]) > MAX_TOKEN_CHARS:
            raise HttpError(401, f"the bearer token is longer than {MAX_TOKEN_CHARS} characters")
        return (("authorization", f"Bearer {match[1]}"),)

    async def _call(self, request: web.Request, rpc: Callable[..., Awaitable[Any]], message: Any) -> Any:
        try:
            return await rpc(message, metadata=self._metadata(request), timeout=CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            status = HTTP_STATUS.get(exc.code(), 500)
            info = error_info(exc)
            if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and info is None:
                # Not our service's rate limit (that carries ErrorInfo) but gRPC's own: a reply over the
                # channel's receive limit, say. A bad upstream; gRPC's text is neither answered nor logged (for a
                # metadata limit it lists the call's metadata, the caller's bearer token with it).
                log.error("a call to reference data failed in gRPC itself with RESOURCE_EXHAUSTED (%s)",
                          request.path)
                raise HttpError(502, _GRPC_EXHAUSTED_DETAIL) from None
            if status in _UNAVAILABLE_DETAIL and info is None:
                detail = _UNAVAILABLE_DETAIL[status]
            elif status < 500 or status in _UNAVAILABLE_DETAIL:
                detail = exc.details() or (info.reason if info else "")
            else:
                detail = "internal error"
            raise HttpError(status, detail) from None

    async def _health(self, request: web.Request) -> web.Response:
        return _json({"status": "ok"})

    async def _sync(self, request: web.Request) -> web.Response:
        """The sync document, envelope and all: every answer, even a failure, is in its envelope."""
        try:
            return await self._sync_reply(request)
        except HttpError as error:
            return _envelope_error(error)
        except web.HTTPException as exc:  # aiohttp's own, e.g. 413 for a body over MAX_BODY_BYTES
            return _envelope_error(HttpError(exc.status, exc.text or exc.reason))
        except Exception:
            log.exception("sync request failed")
            return _envelope_error(HttpError(500, "internal error"))

    async def _sync_reply(self, request: web.Request) -> web.Response:
        try:
            raw = await request.read()
        except (web.RequestPayloadError, ConnectionResetError):
            # Not ours to log: gzip or deflate that does not decode, a chunked body or one shorter than its
            # Content-Length (the caller gone, then).
            raise HttpError(400, "the body could not be read: is it what its Content-Encoding says, and whole?"
                            ) from None
        try:
            # orjson on the bytes: JSON is UTF-8 whatever charset the request claims, and orjson refuses lone
            # surrogates and deep nesting with a ValueError.
            body = orjson.loads(raw)
        except ValueError:
            raise HttpError(400, "body must be JSON: {venue, symbols?}") from None
        if not isinstance(body, dict) or not isinstance(body.get("venue"), str) or not body["venue"]:
            raise HttpError(400, "venue is required")
        symbols = body.get("symbols")
        if symbols is not None and (not isinstance(symbols, list) or not all(isinstance(s, str) for s in symbols)):
            raise HttpError(400, "symbols must be a list of strings")
        reply = await self._call(request, self._refdata.SyncInstruments, refdata_pb2.SyncInstrumentsRequest(
            venue=body["venue"], symbols=symbols or []))
        return _json({"data": {"venue": reply.venue, "synced": reply.synced, "added": reply.added,
                               "updated": reply.updated, "deactivated": reply.deactivated,
                               "skipped": reply.skipped},
                      "success": True, "errno": 0, "error": None})

    async def _instrument(self, request: web.Request) -> web.Response:
        try:
            reply = await self._call(request, self._refdata.GetInstrument, refdata_pb2.GetInstrumentRequest(
                venue=request.match_info["exchange"], symbol=request.match_info["symbol"]))
        except HttpError as error:
            return _error(error)
        return _json(instrument_json(reply.instrument))

    async def _instruments(self, request: web.Request) -> web.Response:
        """Every page of ListInstruments as one JSON list, as the document's filter endpoint answers."""
        try:
            # Only `filter`, once: a misspelt or repeated parameter ignored would widen the answer unnoticed.
            unknown = sorted(set(request.query) - {"filter"})
            if unknown:
                raise HttpError(400, f"unknown query parameter: {', '.join(unknown)} (only filter)")
            if len(request.query.getall("filter", [])) > 1:
                raise HttpError(400, "filter given more than once")
            flt = filter_message(request.query.get("filter"))
            venue = request.match_info["exchange"]
            records: list[dict[str, Any]] = []
            token = ""
            seen: set[str] = set()
            for _ in range(MAX_LIST_PAGES):
                try:
                    reply = await self._call(request, self._refdata.ListInstruments,
                                             refdata_pb2.ListInstrumentsRequest(venue=venue, filter=flt,
                                                                                page_size=LIST_PAGE_SIZE,
                                                                                page_token=token))
                except HttpError as error:
                    if error.status == 400:  # name the filter's key as the caller wrote it, not the proto field
                        error.detail = _FILTER_FIELD.sub(lambda m: f"filter.{_REST_FILTER_FIELDS[m[1]]}",
                                                         error.detail)
                    raise
                records.extend(instrument_json(i) for i in reply.instruments)
                token = reply.next_page_token
                if not token:
                    return _json(records)
                if token in seen:
                    log.error("reference data repeated a page token listing %r (page %d)", venue, len(seen) + 1)
                    raise HttpError(502, "reference data repeated a page token")
                seen.add(token)
            log.error("reference data listed more than %d pages for %r", MAX_LIST_PAGES, venue)
            raise HttpError(502, f"reference data listed more than {MAX_LIST_PAGES} pages")
        except HttpError as error:
            return _error(error)
