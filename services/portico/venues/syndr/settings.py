"""Where Syndr is: the venue endpoints every service that talks to it reads."""

from __future__ import annotations

from collections.abc import Mapping

from portico.runtime.config import ConfigError, Setting, setting
from portico.venues.syndr.constants import RateLimit

__all__ = ["SYNDR_HTTP_URL", "SYNDR_WS_URL", "rate_share"]

SYNDR_HTTP_URL = setting("PORTICO_SYNDR_HTTP_URL", "http://127.0.0.1:8700/api/v1",
                         "Syndr's JSON-RPC HTTP endpoint (the simulator by default).",
                         scope="services using Syndr")
SYNDR_WS_URL = setting("PORTICO_SYNDR_WS_URL", "ws://127.0.0.1:8700/ws/api/v1",
                       "Syndr's JSON-RPC WebSocket endpoint (the simulator by default).",
                       scope="services using Syndr")


def rate_share(variable: Setting, env: Mapping[str, str]) -> float:
    """A service's share of the venue's per-API-key rate limit: a number from 0 (no client-side limit) to 1."""
    share = variable.get_float(env, minimum=0)
    if share > 1:
        raise ConfigError(f"{variable.name} must be between 0 and 1 (a share of the venue's limit), got {share:g}")
    smallest = max(RateLimit.MATCHING_ENGINE_COST, RateLimit.OTHER_COST) / RateLimit.CAPACITY
    if 0 < share < smallest:
        raise ConfigError(f"{variable.name} must be 0 or at least {smallest:g} (a smaller share holds no call)")
    return share
