"""The one `main()` every service runs: configure from the environment, serve, shut down cleanly."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

from portico.runtime.config import ConfigError
from portico.runtime.logs import configure_logging
from portico.runtime.telemetry import configure_tracing

__all__ = ["Service", "run_service"]

S = TypeVar("S")


class Service(Protocol):
    async def run(self) -> None: ...


def run_service(name: str, settings_from_env: Callable[[Mapping[str, str]], S],
                build: Callable[[S, Mapping[str, str]], Service],
                prepare: Callable[[S], Any] | None = None) -> None:
    """Configure logs, tracing and settings from the environment, then serve until SIGTERM.

    A configuration error exits with status 2 and a message naming the variable.
    The app is built inside the event loop, since grpc.aio objects bind to it.
    """
    env = dict(os.environ)
    try:
        configure_logging(name, env)
        provider = configure_tracing(f"portico-{name}", env)
        settings = settings_from_env(env)
        if prepare is not None:
            prepare(settings)
    except (ConfigError, ValueError) as exc:
        print(f"portico-{name}: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None

    async def serve() -> None:
        await build(settings, env).run()

    try:
        asyncio.run(serve())
    finally:
        provider.shutdown()
