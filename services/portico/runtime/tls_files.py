"""Checks of TLS files at start, shared by servers (`server.py`) and outgoing channels (`channel_tls.py`).

gRPC itself only fails later and vaguely ("Failed to bind to address", or every call UNAVAILABLE), so each
file is checked when the settings are read, and a bad one is a `ConfigError` naming its variable. Only the
form is checked (readable, PEM, the key belongs to the certificate), not strength, which is gRPC's TLS
library's business. No error ever carries a file's content.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from pathlib import Path

from portico.runtime.config import ConfigError, Setting

__all__ = ["check_ca", "check_key_pair", "check_readable"]


def _context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # the form is checked here, not the strength
    return context


def check_readable(files: Iterable[tuple[Setting, Path | None]]) -> None:
    """Each set file can be opened."""
    for variable, path in files:
        if path is None:
            continue
        try:
            path.open("rb").close()
        except OSError as exc:
            raise ConfigError(f"{variable.name}: cannot read {path} ({exc.strerror or type(exc).__name__})") from None


def check_ca(variable: Setting, path: Path) -> None:
    """`path` holds PEM CA certificates."""
    try:  # ssl.SSLError is an OSError; its text says nothing more useful than ours
        _context().load_verify_locations(path)
    except OSError:
        raise ConfigError(f"{variable.name} does not hold PEM CA certificates") from None


def check_key_pair(cert_variable: Setting, cert: Path, key_variable: Setting, key: Path) -> None:
    """`cert` holds a PEM certificate and `key` is its unencrypted PEM private key."""
    context = _context()
    try:
        context.load_verify_locations(cert)
    except OSError:
        raise ConfigError(f"{cert_variable.name} does not hold a PEM certificate") from None
    try:
        context.load_cert_chain(cert, key, password=b"")  # a password, so OpenSSL never prompts for one
    except OSError:
        raise ConfigError(f"{key_variable.name} is not the unencrypted PEM private key of "
                          f"{cert_variable.name}'s certificate") from None
