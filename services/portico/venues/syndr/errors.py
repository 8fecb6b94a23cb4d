"""What can go wrong talking to Syndr, as one exception hierarchy.

    SyndrError
    ├── SyndrTransportError        no answer: connection refused/reset, timeout, HTTP 5xx.
    │   │                          For a non-idempotent call the outcome is UNKNOWN.
    │   ├── SyndrTimeout
    │   ├── SyndrConnectionError
    │   └── SyndrHttpError         (status)
    ├── SyndrProtocolError         an answer that is not valid JSON-RPC / not the documented shape
    └── SyndrRpcError              the venue answered with a JSON-RPC error object (code, message)
        ├── SyndrInvalidRequest    parse error, invalid request/params, unknown method
        ├── SyndrVenueFailure      the venue's own internal error: not the caller's fault, and after a
        │                          write it does not prove nothing was executed
        ├── SyndrAuthError         unauthorized / forbidden
        ├── SyndrRateLimited       too many requests
        ├── SyndrNotFound          instrument / order / API key not found
        └── SyndrRejected          the venue refused an order or action (funds, post-only, signature, ...)

`to_portico_error` is the one table that turns these into the gRPC status
classes the services return, with the venue's code in ErrorInfo metadata
(`refused_channel_error` for a stream whose channel the venue refused after a
reconnect).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from portico.runtime.errors import (
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    PorticoError,
    ResourceExhausted,
    Unavailable,
)
from portico.venues.syndr.constants import ErrorCode

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

__all__ = [
    "SyndrAuthError",
    "SyndrConnectionError",
    "SyndrError",
    "SyndrHttpError",
    "SyndrInvalidRequest",
    "SyndrNotFound",
    "SyndrProtocolError",
    "SyndrRateLimited",
    "SyndrRejected",
    "SyndrRpcError",
    "SyndrTimeout",
    "SyndrTransportError",
    "SyndrVenueFailure",
    "map_venue_errors",
    "outcome_unknown",
    "refused_channel_error",
    "rpc_error_from_object",
    "to_portico_error",
]


class SyndrError(Exception):
    """Anything that went wrong talking to Syndr."""

    retryable = False


class SyndrTransportError(SyndrError):
    """No (usable) answer arrived; a non-idempotent call may or may not have happened."""

    retryable = True


class SyndrTimeout(SyndrTransportError):
    pass


class SyndrConnectionError(SyndrTransportError):
    pass


class SyndrHttpError(SyndrTransportError):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class SyndrProtocolError(SyndrError):
    """The venue's answer did not have the documented shape."""


class SyndrRpcError(SyndrError):
    """The venue answered with a JSON-RPC error object."""

    def __init__(self, code: int, message: str, data: Any = None, *, method: str = ""):
        super().__init__(f"{method}: {message} ({code})" if method else f"{message} ({code})")
        self.code = code
        self.venue_message = message
        self.data = data
        self.method = method


class SyndrInvalidRequest(SyndrRpcError):
    pass


class SyndrVenueFailure(SyndrRpcError):
    retryable = True


class SyndrAuthError(SyndrRpcError):
    pass


class SyndrRateLimited(SyndrRpcError):
    retryable = True


class SyndrNotFound(SyndrRpcError):
    pass


class SyndrRejected(SyndrRpcError):
    pass


_CLASS_BY_CODE: dict[int, type[SyndrRpcError]] = {
    ErrorCode.PARSE_ERROR: SyndrInvalidRequest,
    ErrorCode.INVALID_REQUEST: SyndrInvalidRequest,
    ErrorCode.METHOD_NOT_FOUND: SyndrInvalidRequest,
    ErrorCode.INVALID_PARAMS: SyndrInvalidRequest,
    ErrorCode.INTERNAL_ERROR: SyndrVenueFailure,
    ErrorCode.UNAUTHORIZED: SyndrAuthError,
    ErrorCode.FORBIDDEN: SyndrAuthError,
    ErrorCode.TOO_MANY_REQUESTS: SyndrRateLimited,
    ErrorCode.INSTRUMENT_NOT_FOUND: SyndrNotFound,
    ErrorCode.ORDER_NOT_FOUND: SyndrNotFound,
    ErrorCode.API_KEY_NOT_FOUND: SyndrNotFound,
}


def rpc_error_from_object(error: Any, *, method: str = "") -> SyndrRpcError:
    """Build the right exception from a JSON-RPC `error` object."""
    if not isinstance(error, dict) or not isinstance(error.get("code"), int):
        raise SyndrProtocolError(f"{method}: malformed JSON-RPC error object")
    code = int(error["code"])
    message = str(error.get("message", ""))
    cls = _CLASS_BY_CODE.get(code, SyndrRejected if code > 0 else SyndrInvalidRequest)
    return cls(code, message, error.get("data"), method=method)


def to_portico_error(error: SyndrError, *, venue: str = "syndr") -> PorticoError:
    """The gRPC status class a service returns for a venue failure (the one table)."""
    if isinstance(error, SyndrRpcError):
        metadata = {"venue": venue, "venue_code": str(error.code), "venue_message": error.venue_message}
        reason = f"VENUE_{ErrorCode(error.code).name}" if error.code in ErrorCode._value2member_map_ \
            else "VENUE_ERROR"
        if isinstance(error, SyndrRateLimited):
            return ResourceExhausted(str(error), reason=reason, metadata=metadata)
        if isinstance(error, SyndrVenueFailure):
            return Unavailable(str(error), reason=reason, metadata=metadata)
        if isinstance(error, SyndrNotFound):
            return NotFound(str(error), reason=reason, metadata=metadata)
        if isinstance(error, SyndrAuthError):
            # Our credentials were refused: the caller cannot fix that; operators must.
            return PermissionDenied(str(error), reason=reason, metadata=metadata)
        if isinstance(error, SyndrInvalidRequest):
            return InvalidArgument("venue", str(error), reason=reason, metadata=metadata)
        return FailedPrecondition(str(error), reason=reason, metadata=metadata)
    if isinstance(error, SyndrTransportError):
        return Unavailable(f"venue {venue} unreachable: {error}", reason="VENUE_UNAVAILABLE",
                           metadata={"venue": venue})
    return Internal(f"venue {venue} answered unexpectedly", reason="VENUE_PROTOCOL_ERROR", metadata={"venue": venue})


def refused_channel_error(channel: str, error: SyndrRpcError, *, venue: str = "syndr") -> PorticoError:
    """What a stream ends with when the venue refused to subscribe its `channel` again after a reconnect.

    NOT_FOUND when the venue no longer knows the channel's instrument, PERMISSION_DENIED when it refused our
    credentials for it, otherwise FAILED_PRECONDITION (the stream was valid when it started: not
    INVALID_ARGUMENT); reason CHANNEL_REFUSED, with the channel and the venue's code and message.
    """
    mapped = to_portico_error(error, venue=venue)
    status = type(mapped) if isinstance(mapped, NotFound | PermissionDenied) else FailedPrecondition
    return status(f"{venue} refused to subscribe {channel} again after a reconnect: {error.venue_message} "
                  f"({error.code}); the stream cannot go on", reason="CHANNEL_REFUSED",
                  metadata={"venue": venue, "channel": channel, "venue_code": str(error.code),
                            "venue_message": error.venue_message})


def outcome_unknown(exc: SyndrError) -> bool:
    """True when a venue write may have happened although no usable answer came back: no answer at all, the
    venue's own internal error (which does not prove nothing was done), or an answer that cannot be read."""
    return isinstance(exc, SyndrTransportError | SyndrVenueFailure | SyndrProtocolError)


def map_venue_errors(method: F) -> F:
    """Decorate a servicer method: a venue failure leaves it as its gRPC status (`to_portico_error`)."""
    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: Any) -> Any:
        try:
            return await method(self, request, context)
        except SyndrError as exc:
            raise to_portico_error(exc) from None
    return cast(F, wrapper)
