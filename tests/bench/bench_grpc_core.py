"""gRPC core options benchmark: one unary call in flight, gRPC's defaults against the services' GRPC_EXPERIMENTS.

    python -m tests.bench.bench_grpc_core [--turns 30] [--seconds-per-turn 1] [--out bench-results/grpc_core.json]

Two pairs of processes run side by side for the whole benchmark, each a
grpc.aio health server and a grpc.aio client on uvloop (as the services
are): one pair with gRPC's own defaults (`GRPC_EXPERIMENTS` empty), one with
the default of `portico.runtime.grpc_core`. The pairs take turns of
`--seconds-per-turn` (one call in flight, the other pair idle), in
alternating order, so a slow spell of this shared machine falls on both
alike. It reports each side's median over turns of the per-turn median round
trip, and the per-turn ratio (services' options / gRPC's defaults): its
median, its range and in how many turns the services' options were faster.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import uvloop
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tests.bench.turns import answer_turns, end_turns, take_turn
from tests.support.ports import free_port

REPO = Path(__file__).resolve().parents[2]


def serve(port: int) -> None:
    async def main() -> None:
        server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    uvloop.run(main())


def client(port: int) -> None:
    """Answer turns (`tests.bench.turns`) with health `Check` calls."""
    async def main() -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub, request = health_pb2_grpc.HealthStub(channel), health_pb2.HealthCheckRequest()
            await answer_turns(lambda: stub.Check(request, timeout=10))

    uvloop.run(main())


def run(args: argparse.Namespace) -> dict[str, Any]:
    # Imported here, not at the top: importing it sets GRPC_EXPERIMENTS in this process's environment.
    from portico.runtime.grpc_core import GRPC_EXPERIMENTS

    sides = {"grpc_defaults": "", "services": GRPC_EXPERIMENTS.default}
    me = [sys.executable, "-m", "tests.bench.bench_grpc_core"]
    servers, clients = [], {}
    try:
        for name, experiments in sides.items():
            env = {**os.environ, "GRPC_EXPERIMENTS": experiments}
            port = free_port()
            servers.append(subprocess.Popen([*me, "--serve", str(port)], cwd=REPO, env=env))
            time.sleep(1.0)
            clients[name] = subprocess.Popen([*me, "--client", str(port)], cwd=REPO, env=env, text=True,
                                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        medians: dict[str, list[float]] = {name: [] for name in sides}
        calls: dict[str, int] = dict.fromkeys(sides, 0)
        for turn in range(args.turns):
            for name in (list(sides) if turn % 2 == 0 else list(reversed(sides))):
                answer = take_turn(clients[name], args.seconds_per_turn)
                medians[name].append(answer["median_s"] * 1e3)
                calls[name] += answer["calls"]
    finally:
        end_turns(list(clients.values()))
        for proc in servers:
            proc.kill()
            proc.wait()
    base, ours = medians["grpc_defaults"], medians["services"]
    ratios = sorted(b / a for a, b in zip(base, ours, strict=True))
    return {
        "benchmark": "grpc_core",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "grpc": grpc.__version__},
        "settings": {"turns": args.turns, "seconds_per_turn": args.seconds_per_turn, "experiments": sides,
                     "call": "grpc.health.v1.Health/Check, one in flight, grpc.aio on uvloop both sides"},
        "round_trip_ms_median": {name: statistics.median(values) for name, values in medians.items()},
        "calls": calls,
        "ratio_services_to_defaults": {"median": statistics.median(ratios), "min": ratios[0], "max": ratios[-1],
                                       "services_faster_in_turns": sum(1 for r in ratios if r < 1),
                                       "turns": len(ratios)},
        "per_turn_ms": medians,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=30)
    parser.add_argument("--seconds-per-turn", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=REPO / "bench-results" / "grpc_core.json")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--client", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    if args.client:
        client(args.client)
        return
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    r, m = result["ratio_services_to_defaults"], result["round_trip_ms_median"]
    print(f"round trip {m['grpc_defaults']:.3f} ms with gRPC's defaults, {m['services']:.3f} ms with the services' "
          f"options; ratio median {r['median']:.3f} ({r['min']:.3f}-{r['max']:.3f}), services faster in "
          f"{r['services_faster_in_turns']}/{r['turns']} turns -> {args.out}")


if __name__ == "__main__":
    main()
