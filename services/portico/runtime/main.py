"""The one `main()` every service runs: configure from the environment, serve, shut down cleanly."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Protocol, TypeVar

from portico.runtime.config import ConfigError, setting
from portico.runtime.lifecycle import ListenError
from portico.runtime.logs import configure_logging
from portico.runtime.sqlstore import WriterLockHeld
from portico.runtime.telemetry import configure_tracing

__all__ = ["EVENT_LOOP", "Service", "event_loop_factory", "run_in_event_loop", "run_service"]

S = TypeVar("S")
T = TypeVar("T")

EVENT_LOOP = setting(
    "PORTICO_EVENT_LOOP", "uvloop", "Event loop of services and the simulator: `uvloop` (libuv; a third less CPU "
    "per order than `asyncio` in tests/bench/bench_execution.py) or `asyncio` (the standard library's).",
    scope="services, simulator")


def event_loop_factory(env: Mapping[str, str]) -> Callable[[], asyncio.AbstractEventLoop]:
    """The loop `PORTICO_EVENT_LOOP` asks for (ConfigError naming the variable otherwise)."""
    choice = EVENT_LOOP.get_str(env).strip().lower()
    if choice == "asyncio":
        return asyncio.new_event_loop
    if choice == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    raise ConfigError(f"{EVENT_LOOP.name} must be uvloop or asyncio (got {choice!r})")


def run_in_event_loop(main: Coroutine[Any, Any, T], env: Mapping[str, str]) -> T:
    """`asyncio.run(main)` on the configured loop."""
    factory = event_loop_factory(env)
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


class Service(Protocol):
    async def run(self) -> None: ...


def run_service(name: str, settings_from_env: Callable[[Mapping[str, str]], S],
                build: Callable[[S, Mapping[str, str]], Service],
                prepare: Callable[[S], Any] | None = None) -> None:
    """Configure logs, tracing and settings from the environment, then serve until SIGTERM.

    A configuration error exits with status 2 and a message naming the variable; a store that another
    process already writes (`WriterLockHeld`) exits with status 1 and a message naming the store, as does a
    listen address that cannot be bound (`ListenError`).
    The app is built inside the event loop, since grpc.aio objects bind to it.
    """
    env = dict(os.environ)
    try:
        configure_logging(name, env)
        provider = configure_tracing(f"portico-{name}", env)
        settings = settings_from_env(env)
        event_loop_factory(env)  # a bad choice is a configuration error, before anything starts
        if prepare is not None:
            prepare(settings)
    except (ConfigError, ValueError) as exc:
        print(f"portico-{name}: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    grpc_core = sys.modules.get("portico.runtime.grpc_core")  # imported first by the entry point, if at all
    if grpc_core is None or not grpc_core.CONFIGURED_IN_TIME:
        logging.getLogger("portico.runtime").warning(
            "gRPC core defaults not applied: import portico.runtime.grpc_core before grpc in the entry point")

    async def serve() -> None:
        await build(settings, env).run()

    try:
        run_in_event_loop(serve(), env)
    except ConfigError as exc:  # found while building or starting the app (e.g. its token list): as above
        print(f"portico-{name}: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except WriterLockHeld as exc:  # a second process on a single-writer store: refuse, plainly
        logging.getLogger("portico.runtime").error("not started: store has a writer already")
        print(f"portico-{name}: not started: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except ListenError as exc:  # its port taken (another instance, say): one line, not a traceback
        logging.getLogger("portico.runtime").error("not started: cannot listen")
        print(f"portico-{name}: not started: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    finally:
        provider.shutdown()
