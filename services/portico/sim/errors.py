"""The simulator's way to answer a call with a JSON-RPC error object."""

from __future__ import annotations

from portico.venues.syndr.constants import ERROR_MESSAGES, ErrorCode

__all__ = ["RpcFailure"]


class RpcFailure(Exception):
    """Answer the current call with `{"code": code, "message": message}`."""

    def __init__(self, code: ErrorCode, detail: str = ""):
        self.code = code
        self.message = ERROR_MESSAGES.get(code, code.name.lower())
        if detail:
            self.message = f"{self.message}: {detail}"
        super().__init__(self.message)
