"""Channels from one Portico service (or tool) to another.

Every channel carries the client tracing interceptors, so a call continues
the current trace, and optionally a bearer token and TLS/mTLS credentials.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import grpc

from portico.runtime.channel_tls import ChannelTls
from portico.runtime.config import setting
from portico.runtime.interceptors import TracedChannel

__all__ = ["KEEPALIVE_OPTIONS", "SERVICE_TOKEN", "ChannelTls", "bearer", "open_channel"]

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
    tls: ChannelTls | None = None,
    ca_file: Path | None = None,
    client_cert: tuple[Path, Path] | None = None,
    options: Mapping[str, int | str] | None = None,
) -> grpc.aio.Channel:
    """Open an aio channel to `target` (host:port), with keepalive pings (`options` may override them).

    With `tls` (a service's `ChannelTls.from_env(env)`, the PORTICO_UPSTREAM_TLS_* settings) or `ca_file` the
    channel uses TLS (and `client_cert` = (cert, key) for mTLS; `tls.server_name` is the name checked in the
    server's certificate instead of the target's host) and the token rides as per-call credentials; without
    TLS the token is added to each call's metadata by the caller (`metadata=bearer(token)`), since gRPC refuses
    call credentials on insecure channels. The services pass their token in each call's metadata either way.
    """
    channel_options: dict[str, int | str] = {**KEEPALIVE_OPTIONS, **(options or {})}
    if tls is not None and (ca_file is not None or client_cert is not None):
        raise ValueError("pass the TLS settings as tls or as ca_file and client_cert, not both")
    if ca_file is None and client_cert is not None:  # it would silently go in plaintext, without the certificate
        raise ValueError("a client certificate needs ca_file: without it the channel is plaintext")
    if tls is None and ca_file is not None:
        tls = ChannelTls(ca_file, client_cert)
    if tls is None:
        return TracedChannel(grpc.aio.insecure_channel(target, options=list(channel_options.items())))
    if tls.server_name is not None:
        # The name both sent as SNI and checked against the certificate's names.
        channel_options["grpc.ssl_target_name_override"] = tls.server_name
    credentials = grpc.ssl_channel_credentials(*tls.credentials())
    if token is not None:
        credentials = grpc.composite_channel_credentials(credentials, grpc.metadata_call_credentials(_TokenAuth(token)))
    return TracedChannel(grpc.aio.secure_channel(target, credentials, options=list(channel_options.items())))
