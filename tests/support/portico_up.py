"""`portico up` as a child process on free ports, for end-to-end tests that need the whole suite.

    up = PorticoUp(tmp_path)
    up.start()
    try:
        state = await up.wait_for_state()      # the state file's JSON, once everything is SERVING
        ...
    finally:
        returncode, out, err = up.stop()       # SIGINT, then wait for a clean shutdown
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from tests.support.ports import free_ports

REPO = Path(__file__).resolve().parents[2]
PORTICO = [sys.executable, "-m", "portico.cli"]


@dataclass(frozen=True)
class UpPorts:
    """One free port per listener `portico up` opens (each field is also the name of its `--<name>-port` flag)."""

    vault: int
    signer: int
    sim: int
    refdata: int
    gateway: int
    marketdata: int
    execution: int
    account: int

    @classmethod
    def choose(cls) -> UpPorts:
        """Distinct free ports for every listener (chosen together, so no two flags are given the same one)."""
        return cls(*free_ports(len(fields(cls))))

    def args(self) -> list[str]:
        return [arg for f in fields(self) for arg in (f"--{f.name}-port", str(getattr(self, f.name)))]

    def all(self) -> tuple[int, ...]:
        return tuple(getattr(self, f.name) for f in fields(self))


def port_open(port: int) -> bool:
    """True when something accepts connections on 127.0.0.1:`port`."""
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


class PorticoUp:
    """`portico up --state-file <tmp>/state.json --data-dir <tmp>/data` with every port free and chosen here."""

    def __init__(self, tmp_path: Path, extra_args: list[str] | None = None) -> None:
        self.state_file = tmp_path / "state.json"
        self.data_dir = tmp_path / "data"
        self.ports = UpPorts.choose()
        self.extra_args = extra_args or []
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [*PORTICO, "up", "--state-file", str(self.state_file), "--data-dir", str(self.data_dir),
             *self.ports.args(), *self.extra_args],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    async def wait_for_state(self, timeout_s: float = 60) -> dict[str, Any]:
        """The state file's document, once `portico up` has written it (it does so when everything is up)."""
        assert self.process is not None, "start() first"
        deadline = time.monotonic() + timeout_s
        while not self.state_file.exists():
            if self.process.poll() is not None:
                raise AssertionError(f"portico up exited with {self.process.returncode}: "
                                     f"{self.process.stderr.read() if self.process.stderr else ''}")
            assert time.monotonic() < deadline, f"portico up wrote no state file within {timeout_s} s"
            await asyncio.sleep(0.1)
        state: dict[str, Any] = json.loads(self.state_file.read_text())
        return state

    def stop(self, timeout_s: float = 40) -> tuple[int, str, str]:
        """Ctrl-C (SIGINT) and wait for the shutdown; (return code, stdout, stderr)."""
        assert self.process is not None, "start() first"
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            out, err = self.process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, err = self.process.communicate()
        return self.process.returncode, out, err
