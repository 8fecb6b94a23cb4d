"""One way to build, run and stop a Portico grpc.aio server.

    server = GrpcServer(settings, domain="signer.portico", method_scopes=SCOPES)
    signer_service_pb2_grpc.add_SignerServiceServicer_to_server(servicer, server.grpc)
    await server.start(["portico.signer.v1.SignerService"])
    await server.run_until_signalled()

Every server gets the standard health service (with Watch) and reflection,
the interceptor pipeline (tracing, auth, undecodable requests as
INVALID_ARGUMENT, error mapping), optional TLS or
mTLS, and a graceful stop on SIGTERM/SIGINT: health turns NOT_SERVING first,
then in-flight calls get `PORTICO_SHUTDOWN_GRACE_SECONDS` to finish.

Health tells liveness and readiness apart. `LIVENESS_SERVICE` ("liveness") is
SERVING from the moment the server listens until it starts to stop: the
process is up and its event loop answers (a wedged loop answers nothing, and
the probe times out). The overall status "" and each service's own name are
readiness: a service that must wait before it takes traffic (execution for
its reconciliation, market data for its venue) starts with `serving=False`
and reports `set_ready(True)` when it may, so a venue outage leaves it alive
but unready, never restarted for it. Kubernetes' liveness and startup probes
ask for `LIVENESS_SERVICE`, readiness probes for the service's name.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from portico.runtime.auth import TokenAuthenticator
from portico.runtime.config import ConfigError, setting
from portico.runtime.interceptors import ServerInterceptor
from portico.runtime.lifecycle import ListenError
from portico.runtime.tls_files import check_ca, check_key_pair, check_readable

__all__ = ["LIVENESS_SERVICE", "GrpcServer", "ServerSettings", "TlsFiles"]

log = logging.getLogger("portico.server")

_SCOPE = "gRPC services"  # not the REST gateway, which has its own (PORTICO_GATEWAY_*)

LISTEN_ADDR = setting(
    "PORTICO_LISTEN_ADDR", "",
    "host:port (port 0 to 65535) to serve gRPC on; default `127.0.0.1:<the service's port>`.", scope=_SCOPE)
TLS_CERT_FILE = setting("PORTICO_TLS_CERT_FILE", "", "Server certificate (PEM). With the key file, turns TLS on.",
                        scope=_SCOPE)
TLS_KEY_FILE = setting("PORTICO_TLS_KEY_FILE", "",
                       "Server private key (PEM, unencrypted; checked against the certificate at start).", scope=_SCOPE)
TLS_CLIENT_CA_FILE = setting(
    "PORTICO_TLS_CLIENT_CA_FILE", "",
    "CA bundle (PEM) for client certificates; when set, clients must present one (mTLS).", scope=_SCOPE)
SHUTDOWN_GRACE = setting(
    "PORTICO_SHUTDOWN_GRACE_SECONDS", "10", "On SIGTERM, how long in-flight calls may run before they are cancelled.",
    scope=_SCOPE)
MAX_MESSAGE_BYTES = setting("PORTICO_MAX_MESSAGE_BYTES", "4194304",
                            "Largest request or response message accepted (1024 to 2147483647).",
                            scope=_SCOPE)


@dataclass(frozen=True)
class TlsFiles:
    """Server TLS material; `client_ca` set means mutual TLS."""

    cert: Path
    key: Path
    client_ca: Path | None = None


@dataclass(frozen=True)
class ServerSettings:
    """How a server listens and stops."""

    listen_addr: str
    tls: TlsFiles | None = None
    shutdown_grace_s: float = 10.0
    max_message_bytes: int = 4 * 1024 * 1024

    @classmethod
    def from_env(cls, env: Mapping[str, str], default_port: int) -> ServerSettings:
        cert, key, client_ca = (s.get_path(env) for s in (TLS_CERT_FILE, TLS_KEY_FILE, TLS_CLIENT_CA_FILE))
        if (cert is None) != (key is None):
            raise ConfigError(f"{TLS_CERT_FILE.name} and {TLS_KEY_FILE.name} must be set together")
        if client_ca is not None and cert is None:
            raise ConfigError(f"{TLS_CLIENT_CA_FILE.name} needs {TLS_CERT_FILE.name} and {TLS_KEY_FILE.name}")
        tls = TlsFiles(cert, key, client_ca) if cert is not None and key is not None else None
        if tls is not None:
            _check_tls(tls)
        return cls(
            listen_addr=_listen_addr(LISTEN_ADDR.get_str(env) or f"127.0.0.1:{default_port}"),
            tls=tls,
            shutdown_grace_s=SHUTDOWN_GRACE.get_float(env, minimum=0),
            # gRPC takes channel options as C ints: a larger value is an OverflowError when the server is built.
            max_message_bytes=MAX_MESSAGE_BYTES.get_int(env, minimum=1024, maximum=2**31 - 1),
        )


def _listen_addr(value: str) -> str:
    """`value` if it is host:port; gRPC itself reads "127.0.0.1" as port 443 and port 99999 as 34463."""
    host, _, port = value.rpartition(":")
    # An IPv6 host needs its brackets: gRPC reads "::1" as [::1]:443 and "::1:50051" as a host with no port.
    bracketed = host.startswith("[") and host.endswith("]") and ":" in host and "]" not in host[:-1]
    plain = not any(c in host for c in ":[]")
    if not (host and (plain or bracketed) and port.isascii() and port.isdigit() and int(port) <= 65535):
        raise ConfigError(f"{LISTEN_ADDR.name} must be host:port with a port from 0 to 65535, an IPv6 host in "
                          f"brackets ([::1]:50051) (got {value!r})")
    return value


def _check_tls(tls: TlsFiles) -> None:
    """Refuse TLS files gRPC cannot use, naming the variable: gRPC itself only says "Failed to bind to address"."""
    check_readable(((TLS_CERT_FILE, tls.cert), (TLS_KEY_FILE, tls.key), (TLS_CLIENT_CA_FILE, tls.client_ca)))
    check_key_pair(TLS_CERT_FILE, tls.cert, TLS_KEY_FILE, tls.key)
    if tls.client_ca is not None:
        check_ca(TLS_CLIENT_CA_FILE, tls.client_ca)


# How long past the grace period `GrpcServer.stop` waits for gRPC to report the server stopped.
STOP_SLACK_S = 10.0

# The grpc.health.v1 service name that reports liveness, not readiness: SERVING while the server listens and its
# event loop answers, whatever the service is waiting for; NOT_SERVING once it stops. Not a gRPC service of its
# own (reflection does not list it), only a name health answers for; the manifests' liveness probes ask for it.
LIVENESS_SERVICE = "liveness"


class GrpcServer:
    """A grpc.aio server with health, reflection and the Portico interceptors."""

    def __init__(self, settings: ServerSettings, *, domain: str, authenticator: TokenAuthenticator,
                 method_scopes: Mapping[str, str]):
        self.settings = settings
        self.health = health_aio.HealthServicer()
        self.grpc = grpc.aio.server(
            interceptors=[ServerInterceptor(domain=domain, authenticator=authenticator, method_scopes=method_scopes)],
            options=[
                ("grpc.max_receive_message_length", settings.max_message_bytes),
                ("grpc.max_send_message_length", settings.max_message_bytes),
                ("grpc.keepalive_time_ms", 30_000),
                ("grpc.keepalive_timeout_ms", 10_000),
                ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
                ("grpc.keepalive_permit_without_calls", 1),
                # Off, so that a second server on a taken port fails loudly.
                ("grpc.so_reuseport", 0),
            ],
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc)
        self._services: list[str] = []
        self.port = 0
        self._stopping: asyncio.Event | None = None
        self._stopped = False

    async def start(self, service_names: Sequence[str], *, serving: bool = True) -> int:
        """Bind, start serving and mark every service SERVING; return the port.

        `serving=False` reports the overall status and every service NOT_SERVING
        until `set_ready` (or `set_serving`) says otherwise: a service with work to
        finish before it takes traffic. `LIVENESS_SERVICE` is SERVING either way.
        """
        if LIVENESS_SERVICE in service_names:
            raise ValueError(f"{LIVENESS_SERVICE!r} is the runtime's liveness status, not a service name")
        self._services = list(service_names)
        reflection.enable_server_reflection(
            [*self._services, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
            self.grpc,
        )
        tls = self.settings.tls
        try:
            if tls is None:
                self.port = self.grpc.add_insecure_port(self.settings.listen_addr)
            else:
                credentials = grpc.ssl_server_credentials(
                    [(tls.key.read_bytes(), tls.cert.read_bytes())],
                    root_certificates=tls.client_ca.read_bytes() if tls.client_ca else None,
                    require_client_auth=tls.client_ca is not None,
                )
                self.port = self.grpc.add_secure_port(self.settings.listen_addr, credentials)
        except RuntimeError:  # gRPC's "Failed to bind"; its own log line says why (address in use, say)
            self.port = 0
        if self.port == 0:
            raise ListenError(f"cannot listen on {self.settings.listen_addr} ({LISTEN_ADDR.name}): the address is "
                              "in use or not this host's")
        await self.grpc.start()
        await self.health.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        await self.set_ready(serving)
        log.info("serving", extra={"listen": self.settings.listen_addr, "port": self.port, "ready": serving,
                                   "tls": tls is not None, "mtls": bool(tls and tls.client_ca)})
        return self.port

    async def set_ready(self, ready: bool) -> None:
        """Report the overall status and every service's as ready (SERVING) or not; liveness is untouched."""
        for name in ("", *self._services):
            await self.set_serving(name, ready)

    async def set_serving(self, service: str, serving: bool) -> None:
        """Report one service's readiness alone (`set_ready` sets the overall status and every service's)."""
        if service == LIVENESS_SERVICE:
            raise ValueError(f"{LIVENESS_SERVICE!r} is the runtime's own: it follows the server, not the service")
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        await self.health.set(service, status)

    async def stop(self, grace_s: float | None = None) -> None:
        """Go NOT_SERVING (liveness included), then drain in-flight calls for up to the grace period; idempotent.

        From here health answers only watches already open: new calls, probes included, are refused.
        """
        if self._stopped:
            return
        self._stopped = True
        grace = self.settings.shutdown_grace_s if grace_s is None else grace_s
        await self.health.enter_graceful_shutdown()
        log.info("draining", extra={"grace_s": grace})
        try:
            # gRPC's own shutdown has been seen to never finish (once in a CI run: a TLS server just after
            # clients failed their handshakes). The calls are cancelled at the grace period's end either way;
            # what is bounded here is the wait for gRPC's core to report itself done.
            await asyncio.wait_for(self.grpc.stop(grace), timeout=grace + STOP_SLACK_S)
        except TimeoutError:
            log.error("gRPC server did not report its shutdown done; going on without it",
                      extra={"waited_s": grace + STOP_SLACK_S})
            return
        log.info("stopped")

    async def run_until_signalled(self, on_shutdown: Callable[[], Awaitable[None]] | None = None) -> None:
        """Serve until SIGTERM or SIGINT, then stop gracefully and run `on_shutdown`."""
        loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stopping.set)
        try:
            await self._stopping.wait()
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
        await self.stop()
        if on_shutdown is not None:
            await on_shutdown()
