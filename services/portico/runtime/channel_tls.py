"""TLS and mTLS for the gRPC channels a service opens to the services it calls, by configuration.

`PORTICO_UPSTREAM_TLS_CA_FILE` turns TLS on for every outgoing channel of the process (execution and
account to the signer and reference data, market data and the gateway to reference data, a
command-line tool to the service it calls) and is the only trust for the servers it calls;
`PORTICO_UPSTREAM_TLS_CERT_FILE` / `PORTICO_UPSTREAM_TLS_KEY_FILE` add a client certificate for
servers that require one (`PORTICO_TLS_CLIENT_CA_FILE`); `PORTICO_UPSTREAM_TLS_SERVER_NAME` is the
name checked in the servers' certificates instead of the host of the address dialed. Unusable files
are a `ConfigError` naming the variable at start (exit 2), never a failure of every call later; no
key material is ever in an error.

    tls = ChannelTls.from_env(env)          # None: plaintext, as without the settings
    channel = open_channel(target, tls=tls)
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from portico.runtime.config import ConfigError, setting
from portico.runtime.tls_files import check_ca, check_key_pair, check_readable

__all__ = ["UPSTREAM_TLS_CA_FILE", "UPSTREAM_TLS_CERT_FILE", "UPSTREAM_TLS_KEY_FILE", "UPSTREAM_TLS_SERVER_NAME",
           "ChannelTls"]

_SCOPE = "services calling services, the CLIs"

UPSTREAM_TLS_CA_FILE = setting(
    "PORTICO_UPSTREAM_TLS_CA_FILE", "",
    "CA bundle (PEM) the servers this service calls are checked against (execution and account: the signer and "
    "reference data; market data and the gateway: reference data; a CLI: the service it calls); when set, those gRPC "
    "channels use TLS.",
    scope=_SCOPE)
UPSTREAM_TLS_CERT_FILE = setting(
    "PORTICO_UPSTREAM_TLS_CERT_FILE", "",
    "Client certificate (PEM) presented on those channels, for servers that require one (mTLS); with the key "
    "file and PORTICO_UPSTREAM_TLS_CA_FILE.", scope=_SCOPE)
UPSTREAM_TLS_KEY_FILE = setting(
    "PORTICO_UPSTREAM_TLS_KEY_FILE", "",
    "Private key (PEM, unencrypted) of PORTICO_UPSTREAM_TLS_CERT_FILE's certificate (checked against it at start).",
    scope=_SCOPE)
UPSTREAM_TLS_SERVER_NAME = setting(
    "PORTICO_UPSTREAM_TLS_SERVER_NAME", "",
    "Name checked in the called servers' certificates instead of the host of the address dialed (when dialing by "
    "IP address): it applies to every one of those channels, so each of their certificates must carry it. Unset: "
    "the host dialed.", scope=_SCOPE)

# A DNS name (labels of letters, digits and inner hyphens), as gRPC compares it with the certificate's names.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DNS_NAME = re.compile(rf"(?:{_LABEL}\.)*{_LABEL}\.?")


def _is_server_name(value: str) -> bool:
    """A DNS name or an IPv4/IPv6 address: no port, no brackets, no spaces."""
    if len(value) <= 253 and _DNS_NAME.fullmatch(value):
        return True
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class ChannelTls:
    """TLS for outgoing channels: the CA the servers are checked against, a client certificate (cert, key) for
    mTLS, and the name to check in the servers' certificates (None: the host dialed). Paths only, no key."""

    ca_file: Path
    client_cert: tuple[Path, Path] | None = None
    server_name: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ChannelTls | None:
        """The PORTICO_UPSTREAM_TLS_* settings, checked; None when TLS is off (no CA file set)."""
        ca, cert, key = (s.get_path(env) for s in (UPSTREAM_TLS_CA_FILE, UPSTREAM_TLS_CERT_FILE,
                                                    UPSTREAM_TLS_KEY_FILE))
        server_name = UPSTREAM_TLS_SERVER_NAME.get_str(env) or None
        if (cert is None) != (key is None):
            raise ConfigError(f"{UPSTREAM_TLS_CERT_FILE.name} and {UPSTREAM_TLS_KEY_FILE.name} must be set together")
        if ca is None:
            # Without the CA the channels are plaintext: a client certificate or a name would be silently unused.
            for variable, value in ((UPSTREAM_TLS_CERT_FILE, cert), (UPSTREAM_TLS_SERVER_NAME, server_name)):
                if value is not None:
                    raise ConfigError(f"{variable.name} needs {UPSTREAM_TLS_CA_FILE.name} (without it the channels "
                                      "are plaintext)")
            return None
        if server_name is not None and not _is_server_name(server_name):
            raise ConfigError(f"{UPSTREAM_TLS_SERVER_NAME.name} must be a host name or an IP address, without a "
                              "port")
        tls = cls(ca, (cert, key) if cert is not None and key is not None else None, server_name)
        tls.check()
        return tls

    def check(self) -> None:
        """Refuse files gRPC cannot use, naming the variable (gRPC itself would fail every call, UNAVAILABLE)."""
        cert, key = self.client_cert if self.client_cert is not None else (None, None)
        check_readable(((UPSTREAM_TLS_CA_FILE, self.ca_file), (UPSTREAM_TLS_CERT_FILE, cert),
                        (UPSTREAM_TLS_KEY_FILE, key)))
        check_ca(UPSTREAM_TLS_CA_FILE, self.ca_file)
        if cert is not None and key is not None:
            check_key_pair(UPSTREAM_TLS_CERT_FILE, cert, UPSTREAM_TLS_KEY_FILE, key)

    def credentials(self) -> tuple[bytes, bytes | None, bytes | None]:
        """(root certificates, private key, certificate chain) for `grpc.ssl_channel_credentials`."""
        if self.client_cert is None:
            return self.ca_file.read_bytes(), None, None
        return self.ca_file.read_bytes(), self.client_cert[1].read_bytes(), self.client_cert[0].read_bytes()
