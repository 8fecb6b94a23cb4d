"""The order path's transport floor: its three hops with none of Portico's work in them.

    python -m tests.bench.bench_transport_floor [--turns 10] [--seconds-per-turn 1] \
        [--out bench-results/transport_floor.json]

`PlaceOrder` crosses three hops: the caller to execution (gRPC), execution to
the signer (gRPC) and execution to the venue (HTTP/1.1). This runs the same
shape with empty handlers, each piece its own process on uvloop with the
services' gRPC core options (`runtime/grpc_core.py`):

* B: a grpc.aio server echoing its request (the signer's place);
* C: an aiohttp server echoing a POST (the simulator's HTTP side);
* A: a grpc.aio server whose handler, by mode, returns at once (`a`), calls
  B (`ab`), or calls B and then C with `runtime/http1.py` (`abc`, the order
  path's shape); one A per mode;
* a grpc.aio client per mode, one call of 400 bytes in flight.

The modes take turns of `--seconds-per-turn` in rotating order, so a slow
spell of the shared machine falls on all alike. It reports, per mode, the
median over turns of the per-turn median round trip, and the CPU per call of
A, B and C (from /proc): what `bench_execution`'s figures for execution, the
signer and the simulator can be set against. No target: it tells how much of
the order path's latency is transport, and so what the services' own work
adds on top.
"""

from __future__ import annotations

import argparse
import asyncio
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

from tests.bench.bench_execution import cpu_seconds
from tests.bench.turns import answer_turns, end_turns, take_turn
from tests.support.ports import free_ports

REPO = Path(__file__).resolve().parents[2]
MODES = ("a", "ab", "abc")
PAYLOAD = b"x" * 400  # about a PlaceOrder request


def _bytes(message: bytes) -> bytes:
    return message


def _grpc_server(port: int, handler: Any) -> grpc.aio.Server:
    import portico.runtime.grpc_core  # noqa: F401 (sets the services' GRPC_EXPERIMENTS before gRPC starts)

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "floor.Hop", {"Call": grpc.unary_unary_rpc_method_handler(handler, _bytes, _bytes)}),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    return server


def serve_echo(port: int) -> None:
    async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request

    async def main() -> None:
        server = _grpc_server(port, echo)
        await server.start()
        await server.wait_for_termination()

    uvloop.run(main())


def serve_http(port: int) -> None:
    from aiohttp import web

    async def echo(request: web.Request) -> web.Response:
        return web.Response(body=await request.read(), content_type="application/json")

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/api/v1", echo)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await asyncio.Event().wait()

    uvloop.run(main())


def serve_front(port: int, mode: str, echo_port: int, http_port: int) -> None:
    from portico.runtime.http1 import Http1Pool

    async def main() -> None:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{echo_port}")
        hop = channel.unary_unary("/floor.Hop/Call", request_serializer=_bytes, response_deserializer=_bytes)
        http = Http1Pool(f"http://127.0.0.1:{http_port}/api/v1")
        headers = {"content-type": "application/json"}

        async def call(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            if "b" in mode:
                await hop(request, timeout=10)
            if "c" in mode:
                await http.post(request, headers)
            return request

        server = _grpc_server(port, call)
        await server.start()
        await server.wait_for_termination()

    uvloop.run(main())


def client(port: int) -> None:
    """Answer turns (`tests.bench.turns`) with calls to A."""
    import portico.runtime.grpc_core  # noqa: F401

    async def main() -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary("/floor.Hop/Call", request_serializer=_bytes, response_deserializer=_bytes)
            await answer_turns(lambda: call(PAYLOAD, timeout=10))

    uvloop.run(main())


def run(args: argparse.Namespace) -> dict[str, Any]:
    me = [sys.executable, "-m", "tests.bench.bench_transport_floor"]
    procs: list[subprocess.Popen[str]] = []

    def spawn(*role: str, piped: bool = False) -> subprocess.Popen[str]:
        proc = subprocess.Popen([*me, *role], cwd=REPO, text=True, stdin=subprocess.PIPE if piped else None,
                                stdout=subprocess.PIPE if piped else None)
        procs.append(proc)
        return proc

    echo_port, http_port, *front_ports = free_ports(2 + len(MODES))
    echo, http = spawn("--serve-echo", str(echo_port)), spawn("--serve-http", str(http_port))
    fronts, clients = {}, {}
    try:
        for mode, port in zip(MODES, front_ports, strict=True):
            fronts[mode] = spawn("--serve-front", str(port), mode, str(echo_port), str(http_port))
            time.sleep(1.0)
            clients[mode] = spawn("--client", str(port), piped=True)
        medians: dict[str, list[float]] = {mode: [] for mode in MODES}
        cpu: dict[str, dict[str, float]] = {mode: {"a": 0.0, "b": 0.0, "c": 0.0} for mode in MODES}
        calls = dict.fromkeys(MODES, 0)
        for turn in range(args.turns):
            order = MODES[turn % len(MODES):] + MODES[:turn % len(MODES)]
            for mode in order:
                pids = {"a": fronts[mode].pid, "b": echo.pid, "c": http.pid}
                before = {k: cpu_seconds(pid) for k, pid in pids.items()}
                answer = take_turn(clients[mode], args.seconds_per_turn)
                for k, pid in pids.items():
                    cpu[mode][k] += cpu_seconds(pid) - before[k]
                medians[mode].append(answer["median_s"] * 1e3)
                calls[mode] += answer["calls"]
    finally:
        end_turns(list(clients.values()))
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return {
        "benchmark": "transport_floor",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "grpc": grpc.__version__},
        "settings": {"turns": args.turns, "seconds_per_turn": args.seconds_per_turn, "payload_bytes": len(PAYLOAD),
                     "modes": {"a": "client -> A", "ab": "client -> A -> B (gRPC)",
                               "abc": "client -> A -> B (gRPC), then A -> C (HTTP/1.1): the order path's shape"}},
        "round_trip_ms_median": {mode: statistics.median(values) for mode, values in medians.items()},
        "cpu_ms_per_call": {mode: {k: v * 1e3 / calls[mode] for k, v in cpu[mode].items()} for mode in MODES},
        "calls": calls,
        "per_turn_ms": medians,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--seconds-per-turn", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=REPO / "bench-results" / "transport_floor.json")
    parser.add_argument("--serve-echo", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve-http", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve-front", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--client", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_echo:
        serve_echo(args.serve_echo)
    elif args.serve_http:
        serve_http(args.serve_http)
    elif args.serve_front:
        port, mode, echo_port, http_port = args.serve_front
        serve_front(int(port), mode, int(echo_port), int(http_port))
    elif args.client:
        client(args.client)
    else:
        result = run(args)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        rt, cpu = result["round_trip_ms_median"], result["cpu_ms_per_call"]["abc"]
        print(f"round trip: a {rt['a']:.3f} ms, ab {rt['ab']:.3f} ms, abc {rt['abc']:.3f} ms; CPU per call in abc: "
              f"A {cpu['a']:.3f}, B {cpu['b']:.3f}, C {cpu['c']:.3f} ms -> {args.out}")


if __name__ == "__main__":
    main()
