"""The signer's client, for the services that have things signed (execution, account).

They call `Sign` over gRPC and never hold a private key; the signer's refusals
come back as their own statuses (UNAVAILABLE, PERMISSION_DENIED, ...).

What the caller reads: the signer's own message when the signer answered (its
statuses carry Portico's ErrorInfo, and its messages never hold key material);
otherwise a fixed text. A status without ErrorInfo was made by gRPC itself (the
connection failed, the deadline passed), and gRPC's text for those names
internal addresses and ports ("failed to connect to all addresses; last error:
UNAVAILABLE: ipv4:10.1.2.3:50055: ..."): that text is logged here instead, once
per outage (until a call succeeds again, or fails with another code), and never
passed on.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import grpc

from portico.runtime.client import bearer
from portico.runtime.errors import FailedPrecondition, Internal, PermissionDenied, Unavailable, error_info
from portico.signer.v1 import signer_service_pb2 as signer_pb
from portico.signer.v1 import signer_service_pb2_grpc as signer_grpc

__all__ = ["SignerClient"]

log = logging.getLogger("portico.signer.client")

# The caller's text for a status gRPC made itself, by code (the rest: "signer call failed").
_TRANSPORT_TEXT = {
    grpc.StatusCode.UNAVAILABLE: "signer unavailable",
    grpc.StatusCode.DEADLINE_EXCEEDED: "signer did not answer in time",
    grpc.StatusCode.CANCELLED: "signer call cancelled",
}


class SignerClient:
    """`Sign(key_id, typed data)` → (0x-hex signature, signer address)."""

    def __init__(self, channel: grpc.aio.Channel, token: str, *, timeout_s: float = 5.0):
        self._stub = signer_grpc.SignerServiceStub(channel)
        self._metadata = bearer(token)
        self._timeout_s = timeout_s
        self._logged: grpc.StatusCode | None = None  # the code of the failure logged since the last answer

    async def sign(self, key_id: str, typed_data: dict[str, Any]) -> tuple[str, str]:
        # stdlib json: uint256 values (18-decimal fixed point) do not fit orjson's 64-bit integers.
        request = signer_pb.SignRequest(key_id=key_id, typed_data_json=json.dumps(typed_data, separators=(",", ":")))
        try:
            reply = await self._stub.Sign(request, metadata=self._metadata, timeout=self._timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc) from None
        self._logged = None  # the signer answers again: the next failure is news
        return "0x" + reply.signature.hex(), reply.address

    def _error(self, exc: grpc.aio.AioRpcError) -> Exception:
        code = exc.code()
        if error_info(exc) is not None:  # the signer's own status: its message is ours to pass on
            return _signer_error(code, f"signer: {exc.details() or code.name}")
        if code != self._logged:  # once per outage (until a call succeeds, or fails otherwise), not once per call
            self._logged = code
            log.warning("signer call failed in gRPC", extra={"code": code.name, "error": (exc.details() or "")[:500]})
        return _signer_error(code, _TRANSPORT_TEXT.get(code, "signer call failed"))


def _signer_error(code: grpc.StatusCode, text: str) -> Exception:
    """The signer's refusal (or the call's failure) as our own status."""
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return Unavailable(text, reason="SIGNER_UNAVAILABLE")
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return PermissionDenied(text, reason="SIGNER_REFUSED")
    if code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND):
        return FailedPrecondition(text, reason="SIGNER_REFUSED")
    return Internal(text, reason="SIGNER_ERROR")
