"""The exception tree every service raises, and its mapping to gRPC statuses.

Servicers raise a `PorticoError` subclass; the error interceptor turns it into
the canonical status code plus one `google.rpc.ErrorInfo` (stable `reason`,
`domain` = the service, `metadata`) and, for bad input, a `google.rpc.BadRequest`
naming the field. Anything else becomes INTERNAL with a generic message, so no
exception text (which might carry a secret) reaches a caller.
"""

from __future__ import annotations

from collections.abc import Mapping

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

__all__ = [
    "AlreadyExists",
    "DeadlineExceeded",
    "FailedPrecondition",
    "Internal",
    "InvalidArgument",
    "MalformedRequest",
    "NotFound",
    "PermissionDenied",
    "PorticoError",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "error_info",
    "to_grpc_status",
]


class PorticoError(Exception):
    """A failure with a gRPC status code and a stable machine-readable reason."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    default_reason = "UNKNOWN"

    def __init__(self, message: str, *, reason: str | None = None, metadata: Mapping[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata: dict[str, str] = dict(metadata or {})


class InvalidArgument(PorticoError):
    """Bad input; `field` names the offending request field."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    default_reason = "INVALID_ARGUMENT"

    def __init__(self, field: str, message: str, *, reason: str | None = None,
                 metadata: Mapping[str, str] | None = None):
        super().__init__(f"{field}: {message}", reason=reason, metadata={"field": field, **(metadata or {})})
        self.field = field
        self.description = message


class MalformedRequest(PorticoError):
    """A request whose bytes are not its RPC's protobuf message at all (garbage, a broken wire format): bad input
    with no one field to name. The server interceptor raises it; a string field that is not UTF-8 is named
    instead, as an `InvalidArgument` with this reason."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    default_reason = "REQUEST_MALFORMED"


class NotFound(PorticoError):
    code = grpc.StatusCode.NOT_FOUND
    default_reason = "NOT_FOUND"


class AlreadyExists(PorticoError):
    code = grpc.StatusCode.ALREADY_EXISTS
    default_reason = "ALREADY_EXISTS"


class PermissionDenied(PorticoError):
    code = grpc.StatusCode.PERMISSION_DENIED
    default_reason = "PERMISSION_DENIED"


class Unauthenticated(PorticoError):
    code = grpc.StatusCode.UNAUTHENTICATED
    default_reason = "UNAUTHENTICATED"


class FailedPrecondition(PorticoError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason = "FAILED_PRECONDITION"


class ResourceExhausted(PorticoError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_reason = "RESOURCE_EXHAUSTED"


class Unavailable(PorticoError):
    """A dependency is down; the only status callers should retry."""

    code = grpc.StatusCode.UNAVAILABLE
    default_reason = "UNAVAILABLE"


class DeadlineExceeded(PorticoError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED
    default_reason = "DEADLINE_EXCEEDED"


class Internal(PorticoError):
    code = grpc.StatusCode.INTERNAL
    default_reason = "INTERNAL"


# Bounds on what a status carries. Error texts can quote the caller's input (a field path built from a JSON
# key, a symbol); its trailers must stay far below gRPC's metadata limit (8 KiB by default), or the caller
# gets RESOURCE_EXHAUSTED from gRPC itself instead of this status.
_MESSAGE_CHARS = 512
_TEXT_CHARS = 200
_METADATA_ENTRIES = 8


def _bounded(text: str, limit: int) -> str:
    """`text` as valid UTF-8 (a lone surrogate from JSON input becomes an escape) and at most `limit` chars."""
    clean = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return clean if len(clean) <= limit else clean[:limit - 1] + "…"


def to_grpc_status(error: PorticoError, domain: str) -> grpc.Status:
    """Build the rich status (code, message, ErrorInfo, BadRequest) for `error`, bounded in size."""
    details = []
    info = any_pb2.Any()
    metadata = {_bounded(k, 64): _bounded(v, _TEXT_CHARS) for k, v in list(error.metadata.items())[:_METADATA_ENTRIES]}
    info.Pack(error_details_pb2.ErrorInfo(reason=_bounded(error.reason, _TEXT_CHARS), domain=domain,
                                          metadata=metadata))
    details.append(info)
    if isinstance(error, InvalidArgument):
        bad = any_pb2.Any()
        bad.Pack(error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=_bounded(error.field, _TEXT_CHARS),
                                                        description=_bounded(error.description, _MESSAGE_CHARS))
        ]))
        details.append(bad)
    status = status_pb2.Status(code=error.code.value[0], message=_bounded(error.message, _MESSAGE_CHARS),
                               details=details)
    return rpc_status.to_status(status)


def error_info(error: grpc.aio.AioRpcError | grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    """Extract the ErrorInfo detail of a failed call, for clients and tests.

    None also when the peer's status details do not decode or disagree with the call's own status (a proxy that
    rewrote the code, say): `rpc_status.from_call` raises for those, and a caller asking for the reason must get
    the call's status, not a ValueError of its own.
    """
    try:
        status = rpc_status.from_call(error)
    except (ValueError, DecodeError):
        return None
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None

