"""Options of gRPC's C core, which it reads once, when `grpc` is first imported.

A service's entry point imports this module before anything that imports
`grpc`, so the defaults below are in the environment in time; an operator's
own `GRPC_EXPERIMENTS` always wins. `run_service` warns when it came too late.

Why the default: grpcio 1.85 moves every TCP read and write of a call through
its EventEngine thread pool, a thread hop each way on top of the hand-off to
the asyncio loop. With the EventEngine client and listener switched off, the
connections go back to gRPC's long-standing epoll poller: a bare unary call
is ~0.1 ms (15 %) faster, in every one of 30 interleaved turns of
tests/bench/bench_grpc_core.py. gRPC prints "Unknown experiment" at import
once a release no longer has these switches; tests/unit/test_grpc_core.py
fails then, so an upgrade revisits this.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping

from portico.runtime.config import setting

__all__ = ["CONFIGURED_IN_TIME", "GRPC_EXPERIMENTS", "configure_grpc_core"]

GRPC_EXPERIMENTS = setting(
    "GRPC_EXPERIMENTS", "-event_engine_client,-event_engine_listener",
    "gRPC core experiments (gRPC's own variable, read when grpc is imported). The default turns off the "
    "EventEngine client and listener: ~0.1 ms (15 %) less per unary call in tests/bench/bench_grpc_core.py. "
    "Set it empty for gRPC's own defaults.", scope="services")


def configure_grpc_core(environ: MutableMapping[str, str] = os.environ) -> bool:
    """Put the defaults into `environ` (set values win); False if grpc was imported already (too late)."""
    environ.setdefault(GRPC_EXPERIMENTS.name, GRPC_EXPERIMENTS.default)
    return "grpc" not in sys.modules


CONFIGURED_IN_TIME = configure_grpc_core()
