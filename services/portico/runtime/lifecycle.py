"""Lifecycles every service shares: start, serve until SIGTERM, drain, close; and stopping tasks."""

from __future__ import annotations

import abc
import asyncio
import contextlib
import gc
import os
import sys
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from portico.runtime.server import GrpcServer

__all__ = [
    "GrpcServiceApp",
    "ListenError",
    "cancel_and_wait",
    "freeze_startup_objects",
    "wait_event",
    "with_parent_death_signal",
]



class ListenError(OSError):
    """A server cannot listen on its address (taken, or not this host's): `run_service` exits 1 saying so."""


def freeze_startup_objects() -> None:
    """Keep what start-up built (modules, descriptors, servers, caches) out of the collector's full passes.

    It lives as long as the process; left in the oldest generation, every full collection walks it
    again, a pause of milliseconds on the request path now and then.
    """
    gc.collect()
    gc.freeze()


async def wait_event(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait until `event` is set or `timeout_s` passes; True if it was set.

    Not `asyncio.wait_for`: on Python 3.11 it drops a cancellation that arrives in
    the same loop iteration as the event, so a loop built on it can outlive the
    `cancel_and_wait` that stops it (seen as a shutdown that never ended).
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await event.wait()
    return event.is_set()


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel a background task and wait until it has finished (None is fine).

    A cancellation of the caller that arrives while it waits is passed on; the task's own is not. The caller may
    already be being cancelled (cleaning up in an `except BaseException` or `finally` of a cancelled task): only
    a request that arrived during this wait counts, or the first such clean-up step would stop all the others
    (it did: a feed whose start was cancelled left its WebSocket reconnecting for ever).
    """
    if task is None:
        return
    current = asyncio.current_task()
    requested = current.cancelling() if current is not None else 0
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        if current is not None and current.cancelling() > requested:
            raise  # the caller itself was cancelled meanwhile: that is not ours to swallow


class GrpcServiceApp(abc.ABC):
    """A service process built around one `GrpcServer`: subclasses start and close their parts.

    `start` makes the server listen as soon as nothing but bounded work (opening stores, a first try at
    Vault) stands before it. What may take unbounded time, the venue above all, is waited for after
    that with the server started `serving=False` and `set_ready(True)` once done, in `start` itself
    (market data) or in the background (execution): liveness (`LIVENESS_SERVICE`) never waits for it.
    """

    server: GrpcServer

    @property
    def port(self) -> int:
        return self.server.port

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def aclose(self, grace_s: float | None = None) -> None: ...

    async def run(self) -> None:
        """Start, serve until SIGTERM/SIGINT, drain in-flight calls, and close.

        A signal that comes while `start` still waits (market data for its venue) ends the process at once,
        as before: it is not ready, so no traffic reaches it and nothing is in flight to drain.
        """
        await self.start()
        freeze_startup_objects()
        try:
            await self.server.run_until_signalled()
        finally:
            await self.aclose(grace_s=0)


# Run as `python -I -S -c _DEATH_SIGNAL_LAUNCHER signum parent-pid argv...`: asks Linux for the signal, which
# survives exec, then becomes the command. Exits 1 if the parent died before it asked (no signal would come).
_DEATH_SIGNAL_LAUNCHER = (
    "import ctypes, os, sys\n"
    "signum, parent = int(sys.argv[1]), int(sys.argv[2])\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signum, 0, 0, 0)  # PR_SET_PDEATHSIG\n"
    "if os.getppid() != parent:\n"
    "    sys.exit(1)\n"
    "os.execvp(sys.argv[3], sys.argv[3:])\n"
)


def with_parent_death_signal(argv: Sequence[str], signum: int) -> list[str]:
    """`argv`, run so that Linux sends it `signum` when this process dies (unchanged where it cannot).

    Covers what no finalizer or signal handler can: the spawning process SIGKILLed (or OOM-killed), which would
    leave its children running, holding their ports, with their pids recorded nowhere. A small launcher asks for
    the signal and then execs `argv` (same pid), rather than a `preexec_fn`: Python code between fork and exec is
    not safe while other threads run (gRPC's, say, which also logs a warning at every such fork). Linux ties the
    signal to the death of the *thread* that spawned the child, so only the main thread's children get it.
    """
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return list(argv)
    return [sys.executable, "-I", "-S", "-c", _DEATH_SIGNAL_LAUNCHER, str(int(signum)), str(os.getpid()), *argv]
