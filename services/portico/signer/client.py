"""The signer's client, for the services that have things signed (execution, account).

They call `Sign` over gRPC and never hold a private key; the signer's refusals
come back as their own statuses (UNAVAILABLE, PERMISSION_DENIED, ...).
"""

from __future__ import annotations

import json
from typing import Any

import grpc

from portico.runtime.client import bearer
from portico.runtime.errors import FailedPrecondition, Internal, PermissionDenied, Unavailable
from portico.signer.v1 import signer_service_pb2 as signer_pb
from portico.signer.v1 import signer_service_pb2_grpc as signer_grpc

__all__ = ["SignerClient"]


class SignerClient:
    """`Sign(key_id, typed data)` → (0x-hex signature, signer address)."""

    def __init__(self, channel: grpc.aio.Channel, token: str, *, timeout_s: float = 5.0):
        self._stub = signer_grpc.SignerServiceStub(channel)
        self._metadata = bearer(token)
        self._timeout_s = timeout_s

    async def sign(self, key_id: str, typed_data: dict[str, Any]) -> tuple[str, str]:
        # stdlib json: uint256 values (18-decimal fixed point) do not fit orjson's 64-bit integers.
        request = signer_pb.SignRequest(key_id=key_id, typed_data_json=json.dumps(typed_data, separators=(",", ":")))
        try:
            reply = await self._stub.Sign(request, metadata=self._metadata, timeout=self._timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise _signer_error(exc) from None
        return "0x" + reply.signature.hex(), reply.address


def _signer_error(exc: grpc.aio.AioRpcError) -> Exception:
    """The signer's refusal as our own status; its message is ours to pass on (it never carries key material)."""
    code = exc.code()
    text = f"signer: {exc.details() or code.name}"
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return Unavailable(text, reason="SIGNER_UNAVAILABLE")
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return PermissionDenied(text, reason="SIGNER_REFUSED")
    if code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND):
        return FailedPrecondition(text, reason="SIGNER_REFUSED")
    return Internal(text, reason="SIGNER_ERROR")
