"""Channels from one Portico service (or tool) to another.

Every channel carries the client tracing interceptors, so a call continues
the current trace, and optionally a bearer token and TLS/mTLS credentials.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import grpc

from portico.runtime.config import setting
from portico.runtime.interceptors import TracedChannel

__all__ = ["KEEPALIVE_OPTIONS", "SERVICE_TOKEN", "bearer", "open_channel"]

# A peer that vanished without closing the connection (its node gone, a NAT or load-balancer entry dropped)
# would leave a long-lived stream (market data's reference-data watch, execution's calls to the signer)
# waiting forever: while a call is open, gRPC pings it every 30 s and gives up after 10 s without an answer
# (grpcio 1.85 times a keepalive ping out by `ping_timeout_ms`, 60 s by default, not by `keepalive_timeout_ms`:
# both are set). Servers accept pings every 5 s (runtime/server.py); no cap on pings between data frames,
# since a watch may be quiet for hours.
KEEPALIVE_OPTIONS: Mapping[str, int] = {
    "grpc.keepalive_time_ms": 30_000,
    "grpc.keepalive_timeout_ms": 10_000,
    "grpc.http2.ping_timeout_ms": 10_000,
    "grpc.http2.max_pings_without_data": 0,
}

SERVICE_TOKEN = setting("PORTICO_SERVICE_TOKEN", "", "Bearer token this service presents to other Portico services "
                        "(market data needs scope `read`; execution and account `read` and `trade`).",
                        scope="services calling services", secret=True)


def bearer(token: str) -> tuple[tuple[str, str]]:
    """Call metadata carrying a bearer token."""
    return (("authorization", f"Bearer {token}"),)


class _TokenAuth(grpc.AuthMetadataPlugin):
    def __init__(self, token: str):
        self._metadata = bearer(token)

    def __call__(self, context: grpc.AuthMetadataContext, callback: grpc.AuthMetadataPluginCallback) -> None:
        callback(self._metadata, None)


def open_channel(
    target: str,
    *,
    token: str | None = None,
    ca_file: Path | None = None,
    client_cert: tuple[Path, Path] | None = None,
    options: Mapping[str, int | str] | None = None,
) -> grpc.aio.Channel:
    """Open an aio channel to `target` (host:port), with keepalive pings (`options` may override them).

    With `ca_file` the channel uses TLS (and `client_cert` = (cert, key) for
    mTLS) and the token rides as per-call credentials; without TLS the token is
    added to each call's metadata by the caller (`metadata=bearer(token)`),
    since gRPC refuses call credentials on insecure channels.
    """
    channel_options = list({**KEEPALIVE_OPTIONS, **(options or {})}.items())
    if ca_file is None:
        return TracedChannel(grpc.aio.insecure_channel(target, options=channel_options))
    key_pem = cert_pem = None
    if client_cert is not None:
        cert_pem, key_pem = client_cert[0].read_bytes(), client_cert[1].read_bytes()
    credentials = grpc.ssl_channel_credentials(ca_file.read_bytes(), key_pem, cert_pem)
    if token is not None:
        credentials = grpc.composite_channel_credentials(credentials, grpc.metadata_call_credentials(_TokenAuth(token)))
    return TracedChannel(grpc.aio.secure_channel(target, credentials, options=channel_options))
