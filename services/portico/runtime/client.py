"""Channels from one Portico service (or tool) to another.

Every channel carries the client tracing interceptors, so a call continues
the current trace, and optionally a bearer token and TLS/mTLS credentials.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import grpc

from portico.runtime.config import setting
from portico.runtime.interceptors import client_interceptors

__all__ = ["SERVICE_TOKEN", "bearer", "open_channel"]

SERVICE_TOKEN = setting("PORTICO_SERVICE_TOKEN", "", "Bearer token this service presents to other Portico services "
                        "(market data needs scope `read`; execution `read` and `trade`).",
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
    """Open an aio channel to `target` (host:port).

    With `ca_file` the channel uses TLS (and `client_cert` = (cert, key) for
    mTLS) and the token rides as per-call credentials; without TLS the token is
    added to each call's metadata by the caller (`metadata=bearer(token)`),
    since gRPC refuses call credentials on insecure channels.
    """
    channel_options = list((options or {}).items())
    if ca_file is None:
        return grpc.aio.insecure_channel(target, options=channel_options, interceptors=client_interceptors())
    key_pem = cert_pem = None
    if client_cert is not None:
        cert_pem, key_pem = client_cert[0].read_bytes(), client_cert[1].read_bytes()
    credentials = grpc.ssl_channel_credentials(ca_file.read_bytes(), key_pem, cert_pem)
    if token is not None:
        credentials = grpc.composite_channel_credentials(credentials, grpc.metadata_call_credentials(_TokenAuth(token)))
    return grpc.aio.secure_channel(target, credentials, options=channel_options, interceptors=client_interceptors())
