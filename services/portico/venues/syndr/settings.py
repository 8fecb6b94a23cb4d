"""Where Syndr is: the venue endpoints every service that talks to it reads."""

from __future__ import annotations

from portico.runtime.config import setting

__all__ = ["SYNDR_HTTP_URL", "SYNDR_WS_URL"]

SYNDR_HTTP_URL = setting("PORTICO_SYNDR_HTTP_URL", "http://127.0.0.1:8700/api/v1",
                         "Syndr's JSON-RPC HTTP endpoint (the simulator by default).",
                         scope="services using Syndr")
SYNDR_WS_URL = setting("PORTICO_SYNDR_WS_URL", "ws://127.0.0.1:8700/ws/api/v1",
                       "Syndr's JSON-RPC WebSocket endpoint (the simulator by default).",
                       scope="services using Syndr")
