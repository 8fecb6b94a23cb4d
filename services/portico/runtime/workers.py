"""Serve one port from several processes (`PORTICO_SERVER_PROCESSES`).

Python serves gRPC on one core per process, so a CPU-bound service (the
signer) scales by running N identical worker processes that all bind the same
port with SO_REUSEPORT; the kernel spreads connections across them. Only a
service whose shared state is safe across processes may do this (the signer's
is: keys live in Vault, salt watermarks in SQLite, which arbitrates writers).

The supervisor re-executes the service's own command line for each worker,
forwards SIGTERM/SIGINT to all of them (each drains gracefully), and exits
non-zero if a worker dies on its own, so the orchestrator restarts the pod.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from types import FrameType

from portico.runtime.config import setting

__all__ = ["SERVER_PROCESSES", "is_worker", "supervise"]

SERVER_PROCESSES = setting(
    "PORTICO_SERVER_PROCESSES", "1",
    "Worker processes sharing the port (SO_REUSEPORT); only services that support it (the signer) read it.")
_WORKER_ENV = "PORTICO_WORKER_INDEX"


def is_worker(env: Mapping[str, str]) -> bool:
    return _WORKER_ENV in env


def worker_index(env: Mapping[str, str]) -> int:
    return int(env.get(_WORKER_ENV, "0"))


def supervise(processes: int, argv: list[str] | None = None) -> int:
    """Run `processes` copies of this command as workers; return the exit code."""
    command = [sys.executable, *(argv if argv is not None else sys.orig_argv[1:])]
    children = [subprocess.Popen(command, env={**os.environ, _WORKER_ENV: str(i)}) for i in range(processes)]
    stopping = False

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    while True:
        codes = [child.poll() for child in children]
        if all(code is not None for code in codes):
            return 0 if stopping and all(code == 0 for code in codes) else 1
        if not stopping and any(code is not None for code in codes):
            forward(signal.SIGTERM, None)  # one worker died: stop the rest, let the orchestrator restart us
        time.sleep(0.2)
