"""Execution benchmark: `PlaceOrder` until the venue acknowledged, against the simulator and a real OpenBao.

    python -m tests.bench.bench_execution [--out bench-results/execution.json] [--seconds 5] [--repeats 3]
                                          [--clients 2] [--concurrency 8] [--profile]
    python -m tests.bench.bench_execution --baseline REV [--turns 10] [--seconds 2] [--env VAR=VALUE ...]
                                          [--baseline-env VAR=VALUE ...] --out FILE

Every piece runs as its own process, as deployed: the simulator, an OpenBao dev
server, the signer, reference data (synced from the simulator) and the
execution service, all on 127.0.0.1. The simulator is `portico.sim` with its
command-line defaults except two things the command line cannot set: the
per-key rate limit is raised (the venue's 1,000 orders/s per key would
otherwise cap the load phase) and the market maker is quiet (5 book changes/s
on ETH-PERP only), so it does not compete for the CPU. The account is
registered with the simulator and its signing key and venue record are put
into Vault as `tests/support/execution.py` does; each service gets the Vault
token of its policy in `deploy/vault/`.

Orders are limit buys of 0.001 ETH-PERP at half the best bid (on the tick), so
they rest, each with a fresh `client_order_id` (so each is journaled, signed by
the signer and sent to the venue). Between runs every open order is cancelled
(`CancelAllOrders`). Load comes from client processes, each with calls in
flight on its own channel. It reports

* one order in flight: client-observed round trip, the venue's own time
  (`order.venue_timing.us_out - us_in`) and the added latency (round trip
  minus venue time), p50/p99/p999;
* the sustained rate with `clients x concurrency` orders in flight, and the
  same latencies at that load;
* CPU time per order of the execution, signer and simulator processes (from
  /proc), steadier than wall-clock figures on a shared, noisy machine;
* for scale, the bare gRPC health `Check` against the execution server, one
  call in flight and under the same load, and the ratios to it.

`--profile` then runs the load phase (or, with `--profile-one-in-flight`, one
order in flight) once more with `py-spy record` attached to the execution
process (or `--profile-process signer|simulator`; speedscope file:
`--profile-out`) and summarises where its event-loop thread and its SQLite
thread spend their time. `--profile-native` adds the C and Cython frames
(gRPC core, uvloop, SQLite); py-spy then stops the process for each sample.

`--baseline REV` instead compares this tree with another revision of the
services (a temporary `git worktree`), both stacks alive side by side, in
`--turns` interleaved turns (one order in flight, then the load, each for
`--seconds`, the order of the two stacks alternating), so a slow spell of the
shared machine falls on both alike: per-turn ratios (this tree / baseline) and
in how many turns this tree did better. Sequential runs cannot show a
10 % change here, where the host's speed drifts by more than that.
`--env VAR=VALUE` (this tree) and `--baseline-env VAR=VALUE` (the baseline)
add to one side's service environment, so a setting can be compared too:
`--baseline HEAD --env OTEL_TRACES_SAMPLER=always_off` is what recording spans costs.

Targets (reported, not asserted): added latency p50 < 2.5 ms and p99 < 8 ms at
one order in flight; >= 500 orders/s sustained with several in flight.
Figures are medians over `--repeats` runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.binaries import py_spy

REPO = Path(__file__).resolve().parents[2]
SYMBOL = "ETH-PERP"
AMOUNT = "0.001"
SIM_RATE_LIMIT = 1e9  # credits and credits/s: no venue rate limit in the way
SIM_BOOK_CHANGES_PER_S = 5.0
TARGETS = {"added_p50_ms_one_in_flight": 2.5, "added_p99_ms_one_in_flight": 8.0, "orders_per_second": 500.0}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- the simulator (a subprocess)


def run_simulator(argv: list[str]) -> None:
    """`python -m portico.sim` with its own flags, plus a rate limit the command line cannot set."""
    from portico.runtime.logs import configure_logging
    from portico.runtime.main import run_in_event_loop
    from portico.sim import __main__ as sim_main

    parser = argparse.ArgumentParser()
    sim_main.add_arguments(parser)
    config = replace(sim_main.config_from(parser.parse_args(argv)), rate_limit_capacity=SIM_RATE_LIMIT,
                     rate_limit_refill_per_s=SIM_RATE_LIMIT)
    configure_logging("sim", os.environ)
    run_in_event_loop(sim_main._serve(config), os.environ)


# --------------------------------------------------------------------------- client worker (a subprocess)


async def worker(args: argparse.Namespace) -> None:
    from portico.common.v1 import side_pb2
    from portico.execution.v1 import execution_service_pb2 as pb
    from portico.execution.v1 import execution_service_pb2_grpc as pb_grpc
    from portico.execution.v1 import order_pb2

    metadata = (("authorization", f"Bearer {args.token}"),)
    calls: list[tuple[float, float]] = []  # (round trip s, venue s)
    errors: Counter[str] = Counter()
    prefix = f"{args.prefix}-{os.getpid()}"
    counter = iter(range(10**9))
    async with grpc.aio.insecure_channel(args.target) as channel:
        execution = pb_grpc.ExecutionServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        check = health_pb2.HealthCheckRequest()
        await health.Check(check, timeout=10)  # connected before the clock starts

        async def call() -> float:
            if args.mode == "bare":
                await health.Check(check, timeout=10)
                return 0.0
            request = pb.PlaceOrderRequest(venue="syndr", account=args.account, symbol=SYMBOL,
                                           side=side_pb2.SIDE_BUY, type=order_pb2.ORDER_TYPE_LIMIT, amount=AMOUNT,
                                           price=args.price, client_order_id=f"{prefix}-{next(counter)}")
            reply = await execution.PlaceOrder(request, metadata=metadata, timeout=10)
            timing = reply.order.venue_timing
            if reply.order.state != order_pb2.ORDER_STATE_OPEN or not timing.us_in:
                raise RuntimeError(f"unexpected order state {reply.order.state} / timing {timing}")
            return float(timing.us_out - timing.us_in) / 1e6

        delay = args.start_at - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        start = time.perf_counter()
        stop_at = start + args.seconds

        async def loop() -> None:
            while time.perf_counter() < stop_at:
                began = time.perf_counter()
                try:
                    venue = await call()
                except Exception as exc:  # counted and reported, the run goes on
                    name = exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else type(exc).__name__
                    errors[name] += 1
                    continue
                calls.append((time.perf_counter() - began, venue))

        await asyncio.gather(*(loop() for _ in range(args.concurrency)))
        elapsed = time.perf_counter() - start
    print(json.dumps({"calls": calls, "elapsed": elapsed, "errors": dict(errors)}))


# --------------------------------------------------------------------------- orchestration


@dataclass
class Stack:
    """The processes under test and what clients need to call execution."""

    target: str
    token: str
    account: str
    price: str
    pids: dict[str, int]  # execution, signer, simulator


def load(stack: Stack, *, mode: str, clients: int, concurrency: int, seconds: float, tag: str,
         profile_to: Path | None = None, profile_process: str = "execution",
         profile_native: bool = False) -> dict[str, Any]:
    """One run: `clients` processes x `concurrency` calls in flight for `seconds`; latencies and CPU per call."""
    start_at = time.time() + 2.0  # client processes need ~1 s to import and connect
    argv = [sys.executable, "-m", "tests.bench.bench_execution", "--worker", "--target", stack.target,
            "--token", stack.token, "--account", stack.account, "--price", stack.price, "--mode", mode,
            "--concurrency", str(concurrency), "--seconds", str(seconds), "--start-at", str(start_at),
            "--prefix", tag]
    procs = [subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, text=True) for _ in range(clients)]
    try:
        time.sleep(max(0.0, start_at - time.time()))
        cpu_before = {name: cpu_seconds(pid) for name, pid in stack.pids.items()}
        profiler = None
        if profile_to is not None:
            profile_to.unlink(missing_ok=True)  # never summarise an earlier run's file
            profiler = subprocess.Popen([py_spy(), "record", "-p", str(stack.pids[profile_process]), "-d",
                                         str(int(seconds)), "-r", "200", "-f", "speedscope",
                                         # --native has to stop the process for each sample
                                         *(["--native"] if profile_native else ["--nonblocking"]),
                                         "-o", str(profile_to)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        outputs = []
        for p in procs:
            out, _ = p.communicate(timeout=seconds + 60)
            if p.returncode != 0:
                raise RuntimeError(f"client exited with {p.returncode}")
            outputs.append(json.loads(out))
        cpu_used = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in stack.pids.items()}
        if profiler is not None:
            _, complaint = profiler.communicate(timeout=60)
            if profiler.returncode != 0:
                raise RuntimeError(f"py-spy failed: {complaint.decode(errors='replace').strip()}")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    calls = [tuple(c) for out in outputs for c in out["calls"]]
    errors: Counter[str] = Counter()
    for out in outputs:
        errors.update(out["errors"])
    total = [c[0] for c in calls]
    n = max(1, len(calls))
    figures: dict[str, Any] = {
        "per_second": len(calls) / max(out["elapsed"] for out in outputs), "calls": len(calls),
        "errors": sum(errors.values()),
        "p50_ms": percentile(total, 0.5) * 1e3, "p99_ms": percentile(total, 0.99) * 1e3,
        "p999_ms": percentile(total, 0.999) * 1e3,
    }
    if mode == "place":
        venue = [c[1] for c in calls]
        added = [c[0] - c[1] for c in calls]
        figures.update({
            "venue_p50_ms": percentile(venue, 0.5) * 1e3, "venue_p99_ms": percentile(venue, 0.99) * 1e3,
            "added_p50_ms": percentile(added, 0.5) * 1e3, "added_p99_ms": percentile(added, 0.99) * 1e3,
            "added_p999_ms": percentile(added, 0.999) * 1e3,
        })
    for name, used in cpu_used.items():
        figures[f"{name}_cpu_ms_per_call"] = used / n * 1e3
    if errors:
        figures["error_kinds"] = dict(errors)
    return figures


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [k for k, v in runs[0].items() if isinstance(v, int | float)]
    result: dict[str, Any] = {key: statistics.median(run[key] for run in runs) for key in keys}
    kinds: Counter[str] = Counter()
    for run in runs:
        kinds.update(run.get("error_kinds", {}))
    if kinds:
        result["error_kinds_all_runs"] = dict(kinds)
    return result


def cancel_all(stack: Stack) -> int:
    from portico.execution.v1 import execution_service_pb2 as pb
    from portico.execution.v1 import execution_service_pb2_grpc as pb_grpc

    with grpc.insecure_channel(stack.target) as channel:
        reply = pb_grpc.ExecutionServiceStub(channel).CancelAllOrders(
            pb.CancelAllOrdersRequest(venue="syndr", account=stack.account),
            metadata=(("authorization", f"Bearer {stack.token}"),), timeout=120)
    return int(reply.cancelled_count)


class Processes:
    """Service processes started here: logs under `logs`, terminated in reverse order, killed if they linger."""

    def __init__(self, logs: Path):
        self.logs = logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("ab")
        proc = subprocess.Popen(argv, cwd=REPO, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        log.close()
        self.procs[name] = proc
        return proc

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.tail(name)}")

    def tail(self, name: str, lines: int = 30) -> str:
        path = self.logs / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(list(self.procs.values())):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_until(what: str, probe: Any, processes: Processes, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        processes.check_alive()
        try:
            if probe():
                return
        except Exception:  # noqa: S110 - not up yet; retried until the deadline
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not become ready in {timeout_s:g} s")
        time.sleep(0.1)


def serving(target: str, service: str) -> bool:
    with grpc.insecure_channel(target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=1)
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def far_bid(http_url: str) -> str:
    """Half the best bid, on the tick: a buy there rests."""
    def rpc(method: str, params: dict[str, Any]) -> Any:
        reply = httpx.post(http_url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params}, timeout=5)
        return reply.json()["result"]

    tick = Decimal(str(rpc("public/get_instrument", {"instrument_name": SYMBOL})["tick_size"]))
    bid = Decimal(str(rpc("public/get_order_book", {"instrument_name": SYMBOL, "depth": 1})["bids"][0][0]))
    return str((bid / 2 // tick) * tick)


@contextlib.contextmanager
def running_stack(args: argparse.Namespace) -> Iterator[Stack]:
    """Simulator, OpenBao, signer, reference data and execution, each its own process; all stopped on exit."""
    from portico.execution.service import SERVICE_NAME as EXECUTION_SERVICE
    from portico.refdata.service import SERVICE_NAME as REFDATA_SERVICE
    from portico.signer.service import SERVICE_NAME as SIGNER_SERVICE
    from portico.sim.server import Simulator
    from tests.support.execution import EXECUTION_POLICY, SIGNER_POLICY, provision_account
    from tests.support.openbao import OpenBaoDevServer
    from tests.support.ports import free_ports
    from tests.support.signer import make_tokens

    tokens, auth = make_tokens()
    with OpenBaoDevServer() as vault, tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        processes = Processes(data)
        try:
            sim_port, signer_port, refdata_port, execution_port = free_ports(4)
            sim_http = f"http://127.0.0.1:{sim_port}/api/v1"
            sim_ws = f"ws://127.0.0.1:{sim_port}/ws/api/v1"
            quiet = {"PORTICO_LOG_LEVEL": "WARNING"}
            processes.spawn("simulator", [sys.executable, "-m", "tests.bench.bench_execution", "--simulator",
                                          "--port", str(sim_port), "--market-maker-instruments", SYMBOL,
                                          "--book-changes-per-second", str(SIM_BOOK_CHANGES_PER_S)], quiet)
            wait_until("the simulator", lambda: bool(far_bid(sim_http)), processes)

            sim_stand_in = cast(Simulator, SimpleNamespace(http_url=sim_http))  # provision_account reads http_url
            account, _ = asyncio.run(provision_account(sim_stand_in, vault, "bench"))
            vault.write_policy("portico-execution", EXECUTION_POLICY)
            vault.write_policy("portico-signer", SIGNER_POLICY)

            def vault_token(policy: str) -> str:
                return str(vault.client().auth.token.create(policies=[policy], ttl="1h")["auth"]["client_token"])

            common = {"PORTICO_AUTH_TOKENS": auth, "PORTICO_SHUTDOWN_GRACE_SECONDS": "1"}
            signer = f"127.0.0.1:{signer_port}"
            processes.spawn("signer", [sys.executable, "-m", "portico.signer"], {
                **common, "PORTICO_LISTEN_ADDR": signer, "PORTICO_VAULT_ADDR": vault.addr,
                "PORTICO_VAULT_AUTH": "token", "PORTICO_VAULT_TOKEN": vault_token("portico-signer"),
                "PORTICO_SIGNER_WATERMARK_DB": str(data / "signer" / "watermarks.sqlite3")})
            refdata = f"127.0.0.1:{refdata_port}"
            processes.spawn("refdata", [sys.executable, "-m", "portico.refdata"], {
                **common, "PORTICO_LISTEN_ADDR": refdata, "PORTICO_REFDATA_DB": str(data / "refdata.sqlite3"),
                "PORTICO_REFDATA_SYNC_ON_START": "true", "PORTICO_SYNDR_HTTP_URL": sim_http})
            wait_until("the signer", lambda: serving(signer, SIGNER_SERVICE), processes)
            wait_until("reference data", lambda: serving(refdata, REFDATA_SERVICE), processes)
            target = f"127.0.0.1:{execution_port}"
            processes.spawn("execution", [sys.executable, "-m", "portico.execution"], {
                **common, "PORTICO_LISTEN_ADDR": target, "PORTICO_VAULT_ADDR": vault.addr,
                "PORTICO_VAULT_AUTH": "token", "PORTICO_VAULT_TOKEN": vault_token("portico-execution"),
                "PORTICO_SERVICE_TOKEN": tokens["trade"], "PORTICO_EXECUTION_SIGNER_ADDR": signer,
                "PORTICO_EXECUTION_REFDATA_ADDR": refdata,
                "PORTICO_EXECUTION_JOURNAL_DB": str(data / "execution" / "journal.sqlite3"),
                "PORTICO_SYNDR_HTTP_URL": sim_http, "PORTICO_SYNDR_WS_URL": sim_ws})
            wait_until("execution", lambda: serving(target, EXECUTION_SERVICE), processes)
            yield Stack(target=target, token=tokens["trade"], account=account.address, price=far_bid(sim_http),
                        pids={name: processes.procs[name].pid for name in ("execution", "signer", "simulator")})
        except BaseException:
            for name in processes.procs:
                print(f"--- {name} log (tail) ---\n{processes.tail(name)}", file=sys.stderr)
            raise
        finally:
            processes.stop()


def run(args: argparse.Namespace) -> dict[str, Any]:
    with running_stack(args) as stack:
        runs = iter(range(10**6))

        def go(mode: str, clients: int, concurrency: int, seconds: float, **kw: Any) -> dict[str, Any]:
            figures = load(stack, mode=mode, clients=clients, concurrency=concurrency, seconds=seconds,
                           tag=f"r{next(runs)}", **kw)
            if mode == "place":
                figures["cancelled_after"] = cancel_all(stack)
            return figures

        # Warm-up: connections (gRPC to signer and refdata, HTTP to the venue), caches, the journal's first pages.
        go("place", 1, 1, 1.0)
        go("place", args.clients, args.concurrency, 1.0)
        single = [go("place", 1, 1, args.seconds) for _ in range(args.repeats)]
        loaded = [go("place", args.clients, args.concurrency, args.seconds) for _ in range(args.repeats)]
        bare_single = [go("bare", 1, 1, args.seconds / 2) for _ in range(args.repeats)]
        bare_loaded = [go("bare", args.clients, args.concurrency, args.seconds / 2) for _ in range(args.repeats)]
        profile = None
        if args.profile:
            speedscope = args.profile_out or Path(tempfile.gettempdir()) / "execution-profile.speedscope.json"
            clients, concurrency = ((1, 1) if args.profile_one_in_flight else (args.clients, args.concurrency))
            under = go("place", clients, concurrency, args.seconds, profile_to=speedscope,
                       profile_process=args.profile_process, profile_native=args.profile_native)
            measured = {k: under[k] for k in ("per_second", "p50_ms", "p99_ms", "execution_cpu_ms_per_call")}
            profile = {"process": args.profile_process, "in_flight": clients * concurrency,
                       "load_under_profiler": measured,
                       **summarise_profile(speedscope, args.seconds)}

    one, many = median_of(single), median_of(loaded)
    bare_one, bare_many = median_of(bare_single), median_of(bare_loaded)
    met = {
        "added_p50_ms_one_in_flight": one["added_p50_ms"] < TARGETS["added_p50_ms_one_in_flight"],
        "added_p99_ms_one_in_flight": one["added_p99_ms"] < TARGETS["added_p99_ms_one_in_flight"],
        "orders_per_second": many["per_second"] >= TARGETS["orders_per_second"],
    }
    result: dict[str, Any] = {
        "benchmark": "execution",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "grpc": grpc.__version__,
                    "loadavg_at_end": os.getloadavg()},
        "settings": {"clients": args.clients, "concurrency_per_client": args.concurrency,
                     "seconds_per_run": args.seconds, "repeats": args.repeats, "symbol": SYMBOL, "amount": AMOUNT,
                     "price": "half the best bid, on the tick (rests)", "sim_rate_limit": "raised (1e9 credits/s)",
                     "sim_book_changes_per_second": SIM_BOOK_CHANGES_PER_S, "journal": "sqlite (NORMAL)",
                     # the services' gRPC core options (portico.runtime.grpc_core); the caller keeps gRPC's own
                     "services_grpc_experiments": os.environ.get("GRPC_EXPERIMENTS", "grpc_core.py default"),
                     "caller_grpc_experiments": os.environ.get("GRPC_EXPERIMENTS", "(gRPC's defaults)"),
                     # no exporter and no sampler set: the services record no spans (runtime/telemetry.py)
                     "services_traces_exporter": os.environ.get("OTEL_TRACES_EXPORTER", "none"),
                     "services_traces_sampler": os.environ.get("OTEL_TRACES_SAMPLER", "(telemetry.py default)")},
        "place_one_in_flight": one,
        "place_loaded": many,
        "bare_health_check_one_in_flight": bare_one,
        "bare_health_check_loaded": bare_many,
        "ratios_to_bare_grpc": {
            "round_trip_p50_one_in_flight": one["p50_ms"] / bare_one["p50_ms"],
            "added_p50_one_in_flight": one["added_p50_ms"] / bare_one["p50_ms"],
            "throughput_loaded": many["per_second"] / bare_many["per_second"],
            "execution_cpu_per_call_loaded": many["execution_cpu_ms_per_call"] / bare_many["execution_cpu_ms_per_call"],
        },
        "runs": {"place_one_in_flight": single, "place_loaded": loaded},
        "targets": TARGETS,
        "targets_met": met,
    }
    if profile is not None:
        result["profile"] = profile
    return result


# --------------------------------------------------------------------------- profile


_COMPONENTS = (
    ("execution/journal.py", "service: journal (SQLite)"),
    ("execution/orders.py", "service: order manager"),
    ("execution/validation.py", "service: validation"),
    ("signer/client.py", "service: signer client"),
    ("execution/venue.py", "service: venue sessions"),
    ("execution/service.py", "service: servicer"),
    ("execution/convert.py", "service: proto conversion"),
    ("execution/", "service: other execution code"),
    ("venues/syndr/typed_data", "service: EIP-712 typed data"),
    ("venues/syndr/http", "service: syndr HTTP client"),
    ("venues/", "service: other venue code"),
    ("runtime/", "service: runtime (auth, interceptors, vault)"),
    ("site-packages/httpx", "httpx"),
    ("site-packages/httpcore", "httpcore"),
    ("site-packages/h11", "h11"),
    ("site-packages/anyio", "anyio"),
    ("site-packages/grpc", "grpc (Python layer)"),
    ("site-packages/google/protobuf", "protobuf (Python layer)"),
    ("opentelemetry", "opentelemetry"),
    ("sqlite3", "sqlite3"),
    ("json/", "stdlib json"),
    ("decimal", "decimal"),
    ("logging/", "logging"),
    ("asyncio/events.py", "Handle._run self: C/Cython callees (grpc aio, task steps)"),
    ("selectors.py", "selector (epoll)"),
    ("asyncio/", "asyncio (Python)"),
    ("concurrent/", "thread pool"),
    ("threading.py", "threads"),
)


def _component(frame: dict[str, Any]) -> str:
    file = frame.get("file") or ""
    for marker, name in _COMPONENTS:
        if marker in file:
            return name
    return "other: " + (Path(file).name if file else str(frame["name"]))


def _frame_name(frame: dict[str, Any]) -> str:
    file = frame.get("file") or ""
    for marker in ("site-packages/", f"{REPO}/", "services/", "lib/python3.11/"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    return f"{frame['name']} ({file}:{frame.get('line', '')})" if file else str(frame["name"])


def summarise_profile(path: Path, seconds: float, top: int = 25) -> dict[str, Any]:
    """Where the execution process's threads spend their time, from a py-spy speedscope file.

    Busy seconds per second for every thread; for the event-loop (main) thread
    and the journal's SQLite thread, self and inclusive shares of their own
    sampled non-idle time. Code without Python frames (grpc's Cython aio layer,
    C asyncio task steps) is charged to the nearest Python frame, mostly
    `Handle._run`.
    """
    data = json.loads(path.read_text())
    frames = data["shared"]["frames"]
    summary: dict[str, Any] = {
        "file": str(path),
        "active_s_per_s_by_thread": {p["name"]: round(sum(p["weights"]) / seconds, 3) for p in data["profiles"]}}
    for label, marker in (("event_loop_thread", "MainThread"), ("sqlite_thread", "sqlite")):
        profile = next((p for p in data["profiles"] if marker in p["name"]), None)
        if profile is not None:
            summary[label] = _thread_summary(profile, frames, top)
    return summary


def _thread_summary(profile: dict[str, Any], frames: list[dict[str, Any]], top: int) -> dict[str, Any]:
    self_counts: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    components: Counter[str] = Counter()
    total = 0.0
    for stack, weight in zip(profile["samples"], profile["weights"], strict=True):
        if not stack:
            continue
        total += weight
        names = [_frame_name(frames[i]) for i in stack]
        self_counts[names[-1]] += weight
        components[_component(frames[stack[-1]])] += weight
        for name in set(names):
            inclusive[name] += weight

    def share(counter: Counter[str], limit: int = top) -> list[dict[str, Any]]:
        return [{"frame": name, "percent": round(100 * count / total, 1)} for name, count in counter.most_common(limit)
                if count / total >= 0.005]

    return {"samples_s": round(total, 2), "self": share(self_counts), "inclusive": share(inclusive, 40),
            "self_by_component": share(components, 30)}


@contextlib.contextmanager
def environment(changes: dict[str, str]) -> Iterator[None]:
    """`changes` in os.environ (which the service processes inherit) for the duration."""
    saved = {name: os.environ.get(name) for name in changes}
    os.environ.update(changes)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def env_pair(text: str) -> tuple[str, str]:
    """`VAR=VALUE` from the command line."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected VAR=VALUE, got {text!r}")
    return name, value


def compare(args: argparse.Namespace) -> dict[str, Any]:
    """This tree against `args.baseline`'s services, interleaved (see the module docstring)."""
    figures = ("added_p50_ms", "added_p99_ms", "execution_cpu_ms_per_call", "signer_cpu_ms_per_call")
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stacks:
        checkout = Path(tmp) / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(checkout), args.baseline], cwd=REPO,
                       check=True)
        stacks.callback(subprocess.run, ["git", "worktree", "remove", "--force", str(checkout)], cwd=REPO, check=False)
        revision = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=checkout, check=True,
                                  capture_output=True, text=True).stdout.strip()
        # Its service processes import the baseline's code.
        with environment({"PYTHONPATH": str(checkout / "services"), **dict(args.baseline_env)}):
            baseline = stacks.enter_context(running_stack(args))
        with environment(dict(args.env)):
            side = {"baseline": baseline, "this_tree": stacks.enter_context(running_stack(args))}
        turns: dict[str, dict[str, list[float]]] = {name: {k: [] for k in (*figures, "loaded_per_second")}
                                                    for name in side}
        for name, stack in side.items():  # warm-up, as run() does
            for clients, concurrency in ((1, 1), (args.clients, args.concurrency)):
                load(stack, mode="place", clients=clients, concurrency=concurrency, seconds=1.0, tag=f"w{name}")
                cancel_all(stack)
        for turn in range(args.turns):
            order = list(side) if turn % 2 == 0 else list(reversed(side))
            for name in order:
                one = load(side[name], mode="place", clients=1, concurrency=1, seconds=args.seconds, tag=f"o{turn}")
                cancel_all(side[name])
                for key in figures:
                    turns[name][key].append(one[key])
            for name in order:
                many = load(side[name], mode="place", clients=args.clients, concurrency=args.concurrency,
                            seconds=args.seconds, tag=f"l{turn}")
                cancel_all(side[name])
                turns[name]["loaded_per_second"].append(many["per_second"])
            print(f"turn {turn + 1}/{args.turns}: " + ", ".join(
                f"{name} added p50 {turns[name]['added_p50_ms'][-1]:.2f} ms, "
                f"{turns[name]['loaded_per_second'][-1]:.0f} orders/s" for name in side), file=sys.stderr)
    comparison = {}
    for key in (*figures, "loaded_per_second"):
        base, ours = turns["baseline"][key], turns["this_tree"][key]
        ratios = sorted(b / a for a, b in zip(base, ours, strict=True))
        better = sum(1 for r in ratios if (r > 1 if key == "loaded_per_second" else r < 1))
        comparison[key] = {"baseline_median": statistics.median(base), "this_tree_median": statistics.median(ours),
                           "ratio_median": statistics.median(ratios), "ratio_min": ratios[0], "ratio_max": ratios[-1],
                           "this_tree_better_in_turns": better, "turns": len(ratios)}
    return {"benchmark": "execution_ab", "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "baseline": {"asked": args.baseline, "revision": revision, "env": dict(args.baseline_env)},
            "this_tree_env": dict(args.env),
            "settings": {"turns": args.turns, "seconds_per_run": args.seconds, "clients": args.clients,
                         "concurrency_per_client": args.concurrency},
            "comparison": comparison, "per_turn": turns}


def main() -> None:
    if sys.argv[1:2] == ["--simulator"]:
        run_simulator(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None,
                        help="bench-results/execution.json (with --baseline: bench-results/execution_ab.json)")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--concurrency", type=int, default=8, help="orders in flight per client process")
    parser.add_argument("--profile", action="store_true", help="one more load run under py-spy")
    parser.add_argument("--profile-one-in-flight", action="store_true",
                        help="profile with one order in flight instead of the load phase")
    parser.add_argument("--profile-process", choices=("execution", "signer", "simulator"), default="execution",
                        help="the process --profile attaches to (default: execution)")
    parser.add_argument("--profile-native", action="store_true",
                        help="py-spy --native: C and Cython frames too (gRPC core, uvloop, SQLite)")
    parser.add_argument("--profile-out", type=Path, default=None,
                        help="speedscope file of --profile (default: execution-profile.speedscope.json in $TMPDIR)")
    parser.add_argument("--baseline", metavar="REV",
                        help="compare with this git revision's services instead, interleaved (see above)")
    parser.add_argument("--turns", type=int, default=10, help="with --baseline: interleaved turns")
    parser.add_argument("--env", type=env_pair, action="append", default=[], metavar="VAR=VALUE",
                        help="with --baseline: add to this tree's service environment")
    parser.add_argument("--baseline-env", type=env_pair, action="append", default=[], metavar="VAR=VALUE",
                        help="with --baseline: add to the baseline's service environment")
    # worker mode (internal)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    parser.add_argument("--account", help=argparse.SUPPRESS)
    parser.add_argument("--price", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="place", help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--prefix", default="bench", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        asyncio.run(worker(args))
        return
    result = compare(args) if args.baseline else run(args)
    args.out = args.out or REPO / "bench-results" / ("execution_ab.json" if args.baseline else "execution.json")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
