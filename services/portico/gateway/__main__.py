"""`python -m portico.gateway` / `portico-gateway`: serve the REST edge until SIGTERM."""

from __future__ import annotations

import portico.runtime.grpc_core  # noqa: F401  first: gRPC reads its core options at import

# isort: split
import asyncio
import re
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import web

from portico.gateway.app import Gateway
from portico.runtime.client import ChannelTls, open_channel
from portico.runtime.config import ConfigError, setting
from portico.runtime.main import run_service

LISTEN = setting("PORTICO_GATEWAY_LISTEN_ADDR", "127.0.0.1:8080", "host:port the REST gateway serves HTTP on.",
                 scope="gateway")
REFDATA_ADDR = setting("PORTICO_REFDATA_ADDR", "127.0.0.1:50051", "host:port of the reference-data gRPC service.",
                       scope="gateway")


@dataclass(frozen=True)
class GatewaySettings:
    host: str
    port: int
    refdata_addr: str
    upstream_tls: ChannelTls | None = None  # PORTICO_UPSTREAM_TLS_*: the reference-data channel

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> GatewaySettings:
        """Refuses a port out of range (the socket would take it modulo 65536) and an unbracketed IPv6 host."""
        value = LISTEN.get_str(env)
        host, _, port = value.rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        elif ":" in host:
            host = ""  # IPv6 without brackets: which colon ends the host is a guess
        if not host or not re.fullmatch(r"[0-9]{1,5}", port) or int(port) > 65535:
            raise ConfigError(f"{LISTEN.name} must be host:port or [ipv6]:port, with a port from 0 (any free port) "
                              f"to 65535 (got {value!r})")
        return cls(host, int(port), REFDATA_ADDR.get_str(env), ChannelTls.from_env(env))


class GatewayApp:
    def __init__(self, settings: GatewaySettings, env: Mapping[str, str]):
        self.settings = settings

    async def run(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        async with open_channel(self.settings.refdata_addr, tls=self.settings.upstream_tls) as refdata:
            runner = web.AppRunner(Gateway(refdata).app(), access_log=None)
            await runner.setup()
            try:
                try:
                    await web.TCPSite(runner, self.settings.host, self.settings.port).start()
                except OSError as exc:  # the port in use, an address not on this host: one line, not a traceback
                    print(f"portico-gateway: not started: cannot listen on {self.settings.host}:{self.settings.port}"
                          f" ({LISTEN.name}): {exc.strerror or exc}", file=sys.stderr, flush=True)
                    raise SystemExit(1) from None
                await stop.wait()
            finally:
                await runner.cleanup()  # finishes in-flight requests


def main() -> None:
    run_service("gateway", GatewaySettings.from_env, GatewayApp)


if __name__ == "__main__":
    main()
