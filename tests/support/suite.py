"""`portico up`'s own bring-up, in this process, with one service restartable (for the soak run).

A `portico up` child process treats any service exiting as fatal and stops everything, so a run that kills
one service on purpose brings the suite up itself with `portico.up.bring_up` (the same processes, arguments
and environment as `portico up`), remembering how each process was spawned so it can spawn it again:

    suite = RestartableSuite(up_options(tmp_path))
    state = await suite.bring_up()
    pid = await suite.kill_and_restart("execution")   # SIGKILL, the same argv and env again, until SERVING
    ...
    suite.stop()
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from portico import up
from portico.account.service import SERVICE_NAME as ACCOUNT_SERVICE
from portico.execution.service import SERVICE_NAME as EXECUTION_SERVICE
from portico.marketdata.service import SERVICE_NAME as MARKETDATA_SERVICE
from portico.refdata.service import SERVICE_NAME as REFDATA_SERVICE
from portico.signer.service import SERVICE_NAME as SIGNER_SERVICE
from tests.support.portico_up import UpPorts

# The gRPC service name each restartable process reports SERVING for.
HEALTH_NAMES = {"signer": SIGNER_SERVICE, "refdata": REFDATA_SERVICE, "marketdata": MARKETDATA_SERVICE,
                "account": ACCOUNT_SERVICE, "execution": EXECUTION_SERVICE}


def up_options(data_dir: Path, ports: UpPorts | None = None) -> up.UpOptions:
    """`portico up`'s options with every port free (as `tests.support.portico_up.PorticoUp` chooses them)."""
    ports = ports or UpPorts.choose()
    return up.UpOptions(vault_port=ports.vault, sim_port=ports.sim, refdata_port=ports.refdata,
                        marketdata_port=ports.marketdata, execution_port=ports.execution, account_port=ports.account,
                        signer_port=ports.signer, gateway_port=ports.gateway, data_dir=data_dir,
                        state_file=data_dir / "state.json")


class RestartableSuite(up.Suite):
    """`portico.up.Suite` that remembers each process's argv and environment, to spawn one again."""

    def __init__(self, options: up.UpOptions):
        super().__init__(options)
        self.spawned: dict[str, tuple[list[str], dict[str, str]]] = {}

    def spawn(self, name: str, argv: list[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        self.spawned[name] = (list(argv), dict(env))
        return super().spawn(name, argv, env)

    async def bring_up(self) -> dict[str, Any]:
        return await up.bring_up(self)

    def vault_root_token(self) -> str:
        """The dev server's root token (`portico up` keeps it only in the server's environment)."""
        _, env = self.spawned["vault"]
        return str(env["BAO_DEV_ROOT_TOKEN_ID"])

    def pid(self, name: str) -> int:
        return self.processes[name].pid

    async def kill_and_restart(self, name: str, timeout_s: float = 60) -> float:
        """SIGKILL the service, spawn it again exactly as before; seconds until it reports SERVING again."""
        process = self.processes[name]
        started = time.monotonic()
        os.kill(process.pid, signal.SIGKILL)
        await asyncio.to_thread(process.wait)
        argv, env = self.spawned[name]
        self.spawn(name, argv, env)
        await wait_serving(self.state["services"][name], HEALTH_NAMES[name], timeout_s)
        return time.monotonic() - started


async def wait_serving(target: str, service: str, timeout_s: float = 60) -> None:
    """Poll `grpc.health.v1` until `service` at `target` is SERVING."""
    deadline = time.monotonic() + timeout_s
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{service} at {target} not SERVING within {timeout_s} s")
            await asyncio.sleep(0.1)
