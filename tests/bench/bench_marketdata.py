"""Market-data benchmark: StreamOrderBook fan-out against the simulator, and a bare bridge as the baseline.

    python -m tests.bench.bench_marketdata [--out bench-results/marketdata.json] [--quick] [--profile]

The full grid (1,000 / 5,000 / 10,000 changes/s x 1 / 10 / 50 / 100 consumers,
5 s cells, 2 runs each) takes about 7 minutes on 2 cores, 8 with `--profile`;
`--quick` (1,000 and 5,000/s x 1 and 50 consumers, 3 s cells, 2 runs each) about 2.

Processes, all on 127.0.0.1: the simulator (`python -m portico.sim`, market
maker on ETH-PERP only, its rate set per row through `/admin/market-maker`);
the target, started afresh for every cell, either the market-data service
(`python -m portico.marketdata`) or the bare bridge (`tests/bench/bare_bridge.py`:
the same raw channel forwarded frame by frame, same batching, no book logic);
and a few client processes (this module with `--client`), each holding many
`StreamOrderBook(syndr, ETH-PERP, depth 10)` streams on one channel.

A cell is (book changes/s, consumers, target). Once every stream has its first
SNAPSHOT and a warm-up has passed, the clients count over a common window of
`--seconds`: updates and messages (per second; rates are the median of the
one-second windows), SNAPSHOTs after the first (conflations), DELTAs whose
`previous_sequence`/`epoch` do not chain (broken), status updates, streams cut
off (and reopened), and for every DELTA `now - receive_time` (same machine
clock). Over the same window: the upstream changes the simulator produced
(its `change_id` via `public/get_order_book`), the CPU seconds per second of the
target, simulator and clients (/proc/PID/stat), the machine's busy cores
(/proc/stat) and what of them other processes took, and afterwards the
target's peak RSS (VmHWM). With `--repeats`, figures are medians over the runs
(targets interleaved per cell). The machine is shared: with `--quiet-below
CORES` each run starts once other processes use fewer cores than that, and a
run during which they used more is repeated (twice at most, both targets alike).

The service sends a DELTA only when the top 10 levels move, so at the same
upstream rate it delivers fewer updates than the bridge by design;
`updates_per_change` (delivered per consumer / upstream changes) shows that share.

`--profile` then runs the 5,000/s x 50 consumers cell once more against each
target under `py-spy record --nonblocking` (speedscope files next to the JSON:
`*-profile-service.speedscope.json`, `*-profile-bare.speedscope.json`) and
summarises the event-loop thread's top frames; the bridge's profile shows what
the gRPC send path alone costs.

Targets (reported, not asserted): at 5,000/s x 50 consumers no conflation and
no broken chain, p99 < 8 ms and within 1.3x of the bare baseline; >= 250,000
delivered updates/s somewhere in the grid.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import httpx

from portico.marketdata.v1 import market_data_service_pb2 as pb
from portico.marketdata.v1 import order_book_pb2
from tests.support.binaries import py_spy
from tests.support.ports import free_port
from tests.support.signer import make_tokens

REPO = Path(__file__).resolve().parents[2]
SYMBOL = "ETH-PERP"
DEPTH = 10
NS = 1_000_000_000
CLK_TCK = os.sysconf("SC_CLK_TCK")
METHOD = f"/{pb.DESCRIPTOR.services_by_name['MarketDataService'].full_name}/StreamOrderBook"
SNAPSHOT, DELTA = order_book_pb2.BOOK_EVENT_TYPE_SNAPSHOT, order_book_pb2.BOOK_EVENT_TYPE_DELTA
TOKEN_ENV = "BENCH_MARKETDATA_TOKEN"
TARGETS = ("service", "bare")
FULL_RATES, FULL_CONSUMERS = (1_000, 5_000, 10_000), (1, 10, 50, 100)
QUICK_RATES, QUICK_CONSUMERS = (1_000, 5_000), (1, 50)
PROFILE_CELL = (5_000, 50)


# =========================================================================== client processes


@dataclass
class Window:
    """The measurement window (ns, wall clock) and what the streams of this process saw in it."""

    start: int = 2**63 - 1
    end: int = 2**63 - 1
    updates: list[int] = field(default_factory=list)  # per second of the window
    messages: list[int] = field(default_factory=list)
    latencies: array[int] = field(default_factory=lambda: array("q"))  # ns, one per DELTA
    conflations: int = 0
    broken: int = 0
    statuses: int = 0
    cut_offs: int = 0
    errors: Counter[str] = field(default_factory=Counter)


async def _stream(channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...], window: Window,
                  on_first: asyncio.Event, ready: list[int], streams: int) -> None:
    """One consumer: reads, checks the chain, counts; reopens the stream if it is cut off."""
    call_stream = channel.unary_stream(METHOD, request_serializer=pb.StreamOrderBookRequest.SerializeToString,
                                       response_deserializer=pb.StreamOrderBookResponse.FromString)
    request = pb.StreamOrderBookRequest(venue="syndr", symbol=SYMBOL, depth=DEPTH)
    latencies = window.latencies
    first_ever = True
    while True:
        sequence, epoch, first = -1, -1, True
        call = call_stream(request, metadata=metadata, wait_for_ready=True)
        try:
            async for message in call:
                now = time.time_ns()
                updates = message.updates
                inside = window.start <= now < window.end
                for update in updates:
                    kind = update.type
                    if kind == DELTA:
                        if inside:
                            if update.previous_sequence != sequence or update.epoch != epoch:
                                window.broken += 1
                            received = update.receive_time
                            latencies.append(now - received.seconds * NS - received.nanos)
                        sequence = update.sequence
                    elif kind == SNAPSHOT:
                        if first:
                            first = False
                            if first_ever:
                                first_ever = False
                                ready[0] += 1
                                if ready[0] == streams:
                                    on_first.set()
                        elif inside:
                            window.conflations += 1
                        sequence, epoch = update.sequence, update.epoch
                    elif inside:
                        window.statuses += 1
                if inside:
                    second = (now - window.start) // NS
                    window.updates[second] += len(updates)
                    window.messages[second] += 1
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.CANCELLED:
                return
            if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                window.cut_offs += 1
            else:
                window.errors[exc.code().name] += 1
                await asyncio.sleep(0.1)
            continue
        window.errors["stream ended"] += 1


async def client_main(args: argparse.Namespace) -> None:
    token = os.environ.get(TOKEN_ENV, "")
    metadata = (("authorization", f"Bearer {token}"),)
    window = Window()
    on_first = asyncio.Event()
    ready = [0]
    async with grpc.aio.insecure_channel(args.target) as channel:
        tasks = [asyncio.create_task(_stream(channel, metadata, window, on_first, ready, args.streams))
                 for _ in range(args.streams)]
        await asyncio.wait_for(on_first.wait(), timeout=60)
        print("ready", flush=True)
        command = (await asyncio.to_thread(sys.stdin.readline)).split()
        if len(command) != 3 or command[0] != "measure":
            raise SystemExit(f"unexpected command {command!r}")
        start, end = int(command[1]), int(command[2])
        seconds = (end - start) // NS
        window.updates, window.messages = [0] * seconds, [0] * seconds
        window.start, window.end = start, end
        await asyncio.sleep(max(0.0, (end - time.time_ns()) / NS) + 0.05)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    histogram = Counter(value // 1000 for value in window.latencies)  # microseconds
    result = {"updates": window.updates, "messages": window.messages, "conflations": window.conflations,
              "broken": window.broken, "statuses": window.statuses, "cut_offs": window.cut_offs,
              "errors": dict(window.errors), "latency_us": sorted(histogram.items())}
    await asyncio.to_thread(Path(args.result).write_text, json.dumps(result))


# =========================================================================== measuring processes


def cpu_seconds(pid: int) -> float:
    """utime + stime of a whole process (all threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    total = sum(values[:8])
    return total - values[3] - values[4], total


def percentile(histogram: Sequence[tuple[int, int]], q: float) -> float:
    """The q-quantile of a (value, count) histogram sorted by value."""
    total = sum(count for _, count in histogram)
    if not total:
        return float("nan")
    rank = q * (total - 1)
    seen = 0
    for value, count in histogram:
        seen += count
        if seen > rank:
            return float(value)
    return float(histogram[-1][0])


def read_line(proc: subprocess.Popen[bytes], deadline: float, what: str) -> str:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    line = b""
    while not line.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"{what}: no answer in time")
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            chunk = os.read(fd, 1)
            if not chunk:
                raise RuntimeError(f"{what} exited (status {proc.wait()})")
            line += chunk
    return line.decode().strip()


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def spawn(command: list[str], log: Path, **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start a process of the benchmark from the repository root, its stderr appended to `log`."""
    with log.open("ab") as stderr:
        return subprocess.Popen(command, cwd=REPO, stderr=stderr, **kwargs)


@dataclass
class Sim:
    proc: subprocess.Popen[bytes]
    port: int

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/api/v1"

    def change_id(self, http: httpx.Client) -> int:
        answer = http.post(self.http_url, json={"jsonrpc": "2.0", "id": 1, "method": "public/get_order_book",
                                                "params": {"instrument_name": SYMBOL, "depth": 1}})
        return int(answer.json()["result"]["change_id"])

    def set_rate(self, http: httpx.Client, rate: float) -> None:
        http.post(f"http://127.0.0.1:{self.port}/admin/market-maker",
                  json={"book_changes_per_second": rate}).raise_for_status()


@contextlib.contextmanager
def running_sim(logs: Path, rate: float) -> Iterator[Sim]:
    port = free_port()
    proc = spawn([sys.executable, "-m", "portico.sim", "--port", str(port), "--book-changes-per-second", str(rate),
                  "--market-maker-instruments", SYMBOL], logs / "sim.log", stdout=subprocess.DEVNULL)
    sim = Sim(proc, port)
    try:
        deadline = time.monotonic() + 30
        with httpx.Client(timeout=2) as http:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"the simulator exited (see {logs / 'sim.log'})")
                with contextlib.suppress(httpx.HTTPError):
                    sim.change_id(http)
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError("the simulator did not come up")
                time.sleep(0.2)
        yield sim
    finally:
        stop(proc)


@dataclass
class Settings:
    rates: tuple[int, ...]
    consumers: tuple[int, ...]
    seconds: int
    warmup_s: float
    repeats: int
    client_processes: int
    logs: Path
    linger_ms: float | None = None  # both targets' linger (None: the service's default)
    quiet_below: float | None = None  # wait for, and re-run on, other load above this many cores
    retries: int = 2
    profile_rate: int = 500
    profile_flags: tuple[str, ...] = ("--nonblocking",)


def start_target(kind: str, sim: Sim, settings: Settings, auth: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    log = settings.logs / f"{kind}.log"
    if kind == "service":
        env = {**os.environ, "PORTICO_LISTEN_ADDR": f"127.0.0.1:{port}", "PORTICO_AUTH_TOKENS": auth,
               "PORTICO_SYNDR_HTTP_URL": sim.http_url, "PORTICO_SYNDR_WS_URL": sim.ws_url,
               "PORTICO_LOG_LEVEL": "WARNING", "PORTICO_SHUTDOWN_GRACE_SECONDS": "0.5"}
        if settings.linger_ms is not None:
            env["PORTICO_MARKETDATA_LINGER_MS"] = str(settings.linger_ms)
        proc = spawn([sys.executable, "-m", "portico.marketdata"], log, env=env, stdout=subprocess.DEVNULL)
    else:
        linger = ["--linger-ms", str(settings.linger_ms)] if settings.linger_ms is not None else []
        proc = spawn([sys.executable, "-m", "tests.bench.bare_bridge", "--ws-url", sim.ws_url, "--port", str(port),
                      *linger], log, stdout=subprocess.PIPE)
        try:
            if read_line(proc, time.monotonic() + 30, "bare bridge") != "ready":
                raise RuntimeError("the bare bridge did not report ready")
        except BaseException:
            stop(proc)
            raise
    return proc, f"127.0.0.1:{port}"


def spread(total: int, processes: int) -> list[int]:
    count = max(1, min(total, processes))
    return [total // count + (1 if i < total % count else 0) for i in range(count)]


def run_cell(kind: str, rate: int, consumers: int, sim: Sim, settings: Settings, token: str, auth: str,
             http: httpx.Client, profile_to: Path | None = None) -> dict[str, Any]:
    """One (target, rate, consumers) measurement with fresh target and client processes."""
    target, address = start_target(kind, sim, settings, auth)
    clients: list[subprocess.Popen[bytes]] = []
    work = Path(tempfile.mkdtemp(prefix="bench-md-"))
    try:
        env = {**os.environ, TOKEN_ENV: token}
        for i, streams in enumerate(spread(consumers, settings.client_processes)):
            clients.append(spawn(
                [sys.executable, "-m", "tests.bench.bench_marketdata", "--client", "--target", address,
                 "--streams", str(streams), "--result", str(work / f"client-{i}.json")],
                settings.logs / "clients.log", env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE))
        deadline = time.monotonic() + 60
        for i, client in enumerate(clients):
            if read_line(client, deadline, f"client {i}") != "ready":
                raise RuntimeError(f"client {i} did not report ready")
        time.sleep(settings.warmup_s)
        start = time.time_ns() + NS // 5
        end = start + settings.seconds * NS
        for client in clients:
            assert client.stdin is not None
            client.stdin.write(f"measure {start} {end}\n".encode())
            client.stdin.flush()
        time.sleep(max(0.0, (start - time.time_ns()) / NS))
        watched = {"target": [target.pid], "sim": [sim.proc.pid], "clients": [c.pid for c in clients]}
        cpu0 = {name: sum(cpu_seconds(p) for p in pids) for name, pids in watched.items()}
        busy0, total0 = machine_busy()
        change0, at0 = sim.change_id(http), time.monotonic()
        profiler = None
        if profile_to is not None:
            profiler = spawn(
                [py_spy(), "record", "-p", str(target.pid), "-d", str(settings.seconds), "-r",
                 str(settings.profile_rate), *settings.profile_flags, "-f", "speedscope", "-o", str(profile_to)],
                settings.logs / "py-spy.log", stdout=subprocess.DEVNULL)
        time.sleep(max(0.0, (end - time.time_ns()) / NS))
        change1, at1 = sim.change_id(http), time.monotonic()
        busy1, total1 = machine_busy()
        cpu1 = {name: sum(cpu_seconds(p) for p in pids) for name, pids in watched.items()}
        rss = peak_rss_mb(target.pid)
        if profiler is not None:
            profiler.wait(timeout=60)
        results = []
        for i, client in enumerate(clients):
            if client.wait(timeout=60) != 0:
                raise RuntimeError(f"client {i} failed (status {client.returncode}); see {settings.logs}")
            results.append(json.loads((work / f"client-{i}.json").read_text()))
        if target.poll() is not None:
            raise RuntimeError(f"the {kind} exited during the cell; see {settings.logs}")
    finally:
        for client in clients:
            stop(client)
        stop(target)
        shutil.rmtree(work, ignore_errors=True)
    seconds = settings.seconds
    per_second_updates = [sum(r["updates"][s] for r in results) for s in range(seconds)]
    per_second_messages = [sum(r["messages"][s] for r in results) for s in range(seconds)]
    histogram: Counter[int] = Counter()
    for r in results:
        histogram.update({int(value): count for value, count in r["latency_us"]})
    ordered = sorted(histogram.items())
    upstream = (change1 - change0) / (at1 - at0)
    delivered = statistics.median(per_second_updates)
    errors: Counter[str] = Counter()
    for r in results:
        errors.update(r["errors"])
    cell = {
        "upstream_changes_per_s": upstream,
        "delivered_updates_per_s": delivered,
        "delivered_updates_per_s_mean": sum(per_second_updates) / seconds,
        "messages_per_s": statistics.median(per_second_messages),
        "updates_per_message": sum(per_second_updates) / max(1, sum(per_second_messages)),
        "updates_per_change": delivered / consumers / upstream if upstream else float("nan"),
        "conflations": sum(r["conflations"] for r in results),
        "broken_chains": sum(r["broken"] for r in results),
        "status_updates": sum(r["statuses"] for r in results),
        "cut_offs": sum(r["cut_offs"] for r in results),
        "stream_errors": dict(errors),
        "latency_ms": {name: percentile(ordered, q) / 1000 for name, q in
                       (("p50", 0.5), ("p99", 0.99), ("p999", 0.999))},
        "latency_samples": sum(histogram.values()),
        "target_cpu_s_per_s": (cpu1["target"] - cpu0["target"]) / seconds,
        "target_peak_rss_mb": rss,
        "sim_cpu_s_per_s": (cpu1["sim"] - cpu0["sim"]) / seconds,
        "clients_cpu_s_per_s": (cpu1["clients"] - cpu0["clients"]) / seconds,
        "machine_busy_cores": (busy1 - busy0) / (total1 - total0) * (os.cpu_count() or 1),
        # What the machine's other work took from the two cores meanwhile (other test runs, soaks ...).
        "other_busy_cores": max(0.0, (busy1 - busy0) / (total1 - total0) * (os.cpu_count() or 1)
                                - sum(cpu1[name] - cpu0[name] for name in cpu1) / seconds),
        "client_processes": len(clients),
        "per_second_updates": per_second_updates,
    }
    cell["complete"] = cell["conflations"] == cell["broken_chains"] == cell["cut_offs"] == 0
    return cell


# =========================================================================== the grid


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of the numeric figures over repeated runs (the runs themselves are kept too)."""
    out: dict[str, Any] = {}
    for key, value in runs[0].items():
        if isinstance(value, bool):
            out[key] = all(run[key] for run in runs)
        elif isinstance(value, int | float):
            out[key] = statistics.median(run[key] for run in runs)
        elif isinstance(value, dict) and all(isinstance(v, int | float) for v in value.values()):
            out[key] = {k: statistics.median(run[key][k] for run in runs) for k in value}
    if len(runs) > 1:
        out["runs"] = runs
    else:
        out.update({k: v for k, v in runs[0].items() if k not in out})
    return out


def ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(b) else float("nan")


def wait_for_quiet(limit: float, patience_s: float = 180.0) -> None:
    """Wait (up to `patience_s`) until the machine's busy cores over 2 s drop below `limit` (nothing of ours runs)."""
    deadline = time.monotonic() + patience_s
    while time.monotonic() < deadline:
        busy0, total0 = machine_busy()
        time.sleep(2)
        busy1, total1 = machine_busy()
        if (busy1 - busy0) / (total1 - total0) * (os.cpu_count() or 1) < limit:
            return
    print(f"the machine did not get quiet (< {limit} busy cores) in {patience_s:.0f} s; measuring anyway",
          file=sys.stderr, flush=True)


def measured_run(kind: str, rate: int, consumers: int, sim: Sim, settings: Settings, token: str, auth: str,
                 http: httpx.Client) -> dict[str, Any]:
    """One run; with `quiet_below`, started on a quiet machine and re-run when other work took more meanwhile.

    The machine is shared: a run during someone else's test suite measures them
    as much as us. Every run reports `other_busy_cores`; the retry rule is fixed
    before measuring and applies to both targets alike.
    """
    attempts = 0
    while True:
        attempts += 1
        if settings.quiet_below is not None:
            sim.set_rate(http, 0)  # the simulator's market maker would count as load
            wait_for_quiet(settings.quiet_below)
            sim.set_rate(http, rate)
            time.sleep(0.5)
        run = run_cell(kind, rate, consumers, sim, settings, token, auth, http)
        run["attempts"] = attempts
        if (settings.quiet_below is None or run["other_busy_cores"] <= settings.quiet_below
                or attempts > settings.retries):
            return run
        print(f"{rate:>6}/s x {consumers:>3} {kind:<7} other load {run['other_busy_cores']:.2f} cores; again",
              file=sys.stderr, flush=True)


def run_grid(settings: Settings, sim: Sim, token: str, auth: str) -> list[dict[str, Any]]:
    cells: list[dict[str, Any]] = []
    with httpx.Client(timeout=30) as http:
        for rate in settings.rates:
            sim.set_rate(http, rate)
            for consumers in settings.consumers:
                runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in TARGETS}
                for repeat in range(settings.repeats):
                    order = TARGETS if repeat % 2 == 0 else TARGETS[::-1]
                    for kind in order:
                        started = time.monotonic()
                        run = measured_run(kind, rate, consumers, sim, settings, token, auth, http)
                        runs[kind].append(run)
                        print(f"{rate:>6}/s x {consumers:>3} {kind:<7} "
                              f"delivered {run['delivered_updates_per_s']:>9,.0f}/s  "
                              f"p99 {run['latency_ms']['p99']:7.2f} ms  "
                              f"conflations {run['conflations']:>4}  "
                              f"broken {run['broken_chains']:>3}  cpu {run['target_cpu_s_per_s']:.2f}  "
                              f"busy {run['machine_busy_cores']:.2f} (other {run['other_busy_cores']:.2f}, "
                              f"attempt {run['attempts']})  ({time.monotonic() - started:.1f} s)",
                              file=sys.stderr, flush=True)
                service, bare = median_run(runs["service"]), median_run(runs["bare"])
                cells.append({
                    "book_changes_per_second": rate, "consumers": consumers, "service": service, "bare": bare,
                    "ratio_service_to_bare": {
                        "delivered_updates_per_s": ratio(service["delivered_updates_per_s"],
                                                         bare["delivered_updates_per_s"]),
                        "latency_p99": ratio(service["latency_ms"]["p99"], bare["latency_ms"]["p99"]),
                    },
                })
    return cells


def evaluate(cells: list[dict[str, Any]]) -> dict[str, Any]:
    checks: dict[str, Any] = {}
    key = next((c for c in cells if (c["book_changes_per_second"], c["consumers"]) == PROFILE_CELL), None)
    if key is not None:
        s = key["service"]
        checks["5000x50_every_update_delivered"] = bool(s["complete"])
        checks["5000x50_p99_ms"] = s["latency_ms"]["p99"]
        checks["5000x50_p99_below_8ms"] = s["latency_ms"]["p99"] < 8
        checks["5000x50_p99_ratio_to_bare"] = key["ratio_service_to_bare"]["latency_p99"]
        checks["5000x50_p99_within_1.3x_bare"] = key["ratio_service_to_bare"]["latency_p99"] <= 1.3
    best = max(cells, key=lambda c: c["service"]["delivered_updates_per_s"])
    checks["max_service_delivered_updates_per_s"] = best["service"]["delivered_updates_per_s"]
    checks["max_at"] = f"{best['book_changes_per_second']}/s x {best['consumers']}"
    checks["reached_250k_updates_per_s"] = best["service"]["delivered_updates_per_s"] >= 250_000
    best_bare = max(cells, key=lambda c: c["bare"]["delivered_updates_per_s"])
    checks["max_bare_delivered_updates_per_s"] = best_bare["bare"]["delivered_updates_per_s"]
    checks["max_bare_at"] = f"{best_bare['book_changes_per_second']}/s x {best_bare['consumers']}"
    return checks


# =========================================================================== profile


def summarise_profile(path: Path, seconds: float, top: int = 25) -> dict[str, Any]:
    """Self and inclusive shares of the busiest functions of the event-loop thread in a py-spy speedscope file.

    Shares are of the main thread's sampled non-idle time. Code without Python
    frames (grpc's Cython aio layer, C asyncio task steps) is charged to the
    nearest Python frame, mostly `Handle._run`.
    """
    data = json.loads(path.read_text())
    frames = data["shared"]["frames"]
    threads = {p["name"]: round(sum(p["weights"]) / seconds, 3) for p in data["profiles"]}
    main = next((p for p in data["profiles"] if "MainThread" in p["name"]), data["profiles"][0])
    self_counts: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    components: Counter[str] = Counter()
    total = 0.0
    for stack, weight in zip(main["samples"], main["weights"], strict=True):
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
                if count / total >= 0.002]

    return {"file": str(path), "active_s_per_s_by_thread": threads, "main_thread_samples_s": round(total, 2),
            "self": share(self_counts), "inclusive": share(inclusive), "self_by_component": share(components, 30)}


def _frame_name(frame: dict[str, Any]) -> str:
    file = frame.get("file") or ""
    for marker in ("site-packages/", f"{REPO}/", "services/", "lib/python3.11/"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    return f"{frame['name']} ({file})" if file else str(frame["name"])


_COMPONENTS = (
    ("marketdata/feed.py", "service: feed (views, encode, consumer queues)"),
    ("marketdata/book.py", "service: book (apply, top, diff, checksum)"),
    ("marketdata/service.py", "service: StreamOrderBook loop"),
    ("runtime/interceptors", "service: interceptor"),
    ("venues/syndr/ws.py", "service: syndr websocket client"),
    ("venues/syndr/models", "service: syndr parse"),
    ("bench/bare_bridge", "bridge: forward, encode, queues"),
    ("site-packages/websockets", "websockets library (recv, frames, deflate)"),
    ("site-packages/grpc", "grpc (Python layer)"),
    ("site-packages/google/protobuf", "protobuf (Python layer)"),
    ("opentelemetry", "opentelemetry"),
    ("sortedcontainers", "sortedcontainers"),
    ("asyncio/events.py", "Handle._run self: C/Cython callees (grpc aio send path, task steps)"),
    ("selectors.py", "selector (epoll)"),
    ("asyncio/", "asyncio (Python: queues, locks, timeouts, loop)"),
    ("threading.py", "threads"),
)


def _component(frame: dict[str, Any]) -> str:
    file = frame.get("file") or ""
    for marker, name in _COMPONENTS:
        if marker in file:
            return name
    return "other: " + (Path(file).name if file else str(frame["name"]))


def run_profiles(settings: Settings, sim: Sim, token: str, auth: str, out: Path) -> dict[str, Any]:
    """The profile cell against the service and the bridge, each under py-spy (Python frames, non-blocking)."""
    rate, consumers = PROFILE_CELL
    profiles: dict[str, Any] = {}
    with httpx.Client(timeout=30) as http:
        sim.set_rate(http, rate)
        for kind in TARGETS:
            speedscope = out.with_name(f"{out.stem}-profile-{kind}.speedscope.json")
            cell = run_cell(kind, rate, consumers, sim, settings, token, auth, http, profile_to=speedscope)
            profiles[kind] = {"cell_under_profiler": {k: cell[k] for k in (
                "upstream_changes_per_s", "delivered_updates_per_s", "messages_per_s", "latency_ms",
                "target_cpu_s_per_s", "conflations")},
                **summarise_profile(speedscope, settings.seconds)}
    return profiles


# =========================================================================== report


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Market data: StreamOrderBook fan-out vs bare bridge",
        "",
        f"{report['when']}, {report['machine']}, Python {report['python']}, grpcio {report['grpcio']}. "
        f"{report['settings']['seconds']} s per cell after {report['settings']['warmup_s']} s warm-up, "
        f"{report['settings']['repeats']} run(s) per cell (medians), consumers on "
        f"<= {report['settings']['client_processes']} client processes. Depth 10 on ETH-PERP; "
        "latency = consumer clock - receive_time over DELTAs; CPU = service/bridge process CPU s per s; "
        f"busy = whole machine, cores; other = cores taken by processes outside the benchmark. "
        f"Single-thread speed probe (s, lower is faster): "
        f"{report['speed_probe_s']['start']} at start, {report['speed_probe_s']['end']} at end.",
        "",
        "| changes/s (upstream) | consumers | target | delivered upd/s | msgs/s | upd/msg | upd/change | "
        "conflations | broken | p50 ms | p99 ms | p999 ms | CPU s/s | peak RSS MB | busy | other |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for cell in report["cells"]:
        for kind in TARGETS:
            r = cell[kind]
            lat = r["latency_ms"]
            lines.append(
                f"| {cell['book_changes_per_second']:,} ({r['upstream_changes_per_s']:,.0f}) | {cell['consumers']} "
                f"| {kind} | {r['delivered_updates_per_s']:,.0f} | {r['messages_per_s']:,.0f} "
                f"| {r['updates_per_message']:.1f} | {r['updates_per_change']:.2f} | {r['conflations']:.0f} "
                f"| {r['broken_chains']:.0f} | {lat['p50']:.2f} | {lat['p99']:.2f} | {lat['p999']:.2f} "
                f"| {r['target_cpu_s_per_s']:.2f} | {r['target_peak_rss_mb']:.0f} | {r['machine_busy_cores']:.2f} "
                f"| {r['other_busy_cores']:.2f} |")
    lines += ["", "| changes/s | consumers | service/bare delivered upd/s | service/bare p99 |", "|---|---|---|---|"]
    for cell in report["cells"]:
        ratios = cell["ratio_service_to_bare"]
        lines.append(f"| {cell['book_changes_per_second']:,} | {cell['consumers']} "
                     f"| {ratios['delivered_updates_per_s']:.2f} | {ratios['latency_p99']:.2f} |")
    lines += ["", "Targets (not asserted):", ""]
    lines += [f"- {key}: {value:,.2f}" if isinstance(value, float) and not isinstance(value, bool)
              else f"- {key}: {value}" for key, value in report["targets"].items()]
    for kind, profile in (report.get("profile") or {}).items():
        threads = ", ".join(f"{name}: {value}" for name, value in profile["active_s_per_s_by_thread"].items())
        lines += ["", f"Profile of the {kind} at {PROFILE_CELL[0]:,}/s x {PROFILE_CELL[1]} consumers (py-spy, "
                      f"non-blocking, Python frames; non-idle s/s by thread: {threads}; `{profile['file']}`):", "",
                  "| self % | frame |", "|---|---|"]
        lines += [f"| {row['percent']} | `{row['frame']}` |" for row in profile["self"][:15]]
        lines += ["", "| self % | component |", "|---|---|"]
        lines += [f"| {row['percent']} | {row['frame']} |" for row in profile["self_by_component"]]
        lines += ["", "| inclusive % | frame |", "|---|---|"]
        lines += [f"| {row['percent']} | `{row['frame']}` |" for row in profile["inclusive"][:20]
                  if row["percent"] < 99]
    return "\n".join(lines) + "\n"


def speed_probe() -> float:
    """Seconds for a fixed pure-Python loop (median of 3): this shared VM's single-thread speed drifts."""
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        total = 0
        for i in range(1_000_000):
            total += i
        timings.append(time.perf_counter() - started)
    return round(statistics.median(timings), 4)


def machine() -> str:
    cpus = os.cpu_count() or 1
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = cpus
    return f"{platform.machine()}, {cpus} CPUs ({affinity} usable)"


def main_orchestrate(args: argparse.Namespace) -> None:
    rates = QUICK_RATES if args.quick else FULL_RATES
    consumers = QUICK_CONSUMERS if args.quick else FULL_CONSUMERS
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    logs = Path(tempfile.mkdtemp(prefix="bench-marketdata-logs-"))
    settings = Settings(rates=tuple(args.rates or rates), consumers=tuple(args.consumers or consumers),
                        seconds=args.seconds or (3 if args.quick else 5), warmup_s=args.warmup,
                        repeats=args.repeats, client_processes=args.client_processes, logs=logs,
                        linger_ms=args.linger_ms, quiet_below=args.quiet_below)
    if args.profile:
        py_spy()  # fail before the grid, not after it
    tokens, auth = make_tokens()
    token = tokens["read"]
    print(f"logs in {logs}", file=sys.stderr, flush=True)
    started = time.monotonic()
    report: dict[str, Any] = {
        "benchmark": "marketdata",
        "when": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "machine": machine(),
        "settings": {"rates": settings.rates, "consumers": settings.consumers, "seconds": settings.seconds,
                     "warmup_s": settings.warmup_s, "repeats": settings.repeats,
                     "client_processes": settings.client_processes, "symbol": SYMBOL, "depth": DEPTH,
                     "linger_ms": settings.linger_ms, "quiet_below": settings.quiet_below},
    }
    report["speed_probe_s"] = {"start": speed_probe()}
    with running_sim(logs, settings.rates[0]) as sim:
        report["cells"] = run_grid(settings, sim, token, auth)
        report["targets"] = evaluate(report["cells"])
        if args.profile:
            report["profile"] = run_profiles(settings, sim, token, auth, out)
    report["speed_probe_s"]["end"] = speed_probe()
    if not args.keep_logs:
        shutil.rmtree(logs, ignore_errors=True)  # kept when the run fails, for its processes' stderr
    report["elapsed_s"] = round(time.monotonic() - started, 1)
    out.write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    out.with_suffix(".md").write_text(table)
    print(table)
    print(f"wrote {out} and {out.with_suffix('.md')} in {report['elapsed_s']} s", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench-results/marketdata.json")
    parser.add_argument("--quick", action="store_true", help="1,000 and 5,000/s x 1 and 50 consumers, 3 s cells")
    parser.add_argument("--profile", action="store_true", help="also profile the service at 5,000/s x 50 (py-spy)")
    parser.add_argument("--seconds", type=int, default=0, help="measured seconds per cell (default 5, quick 3)")
    parser.add_argument("--warmup", type=float, default=1.5, help="seconds after every stream is live")
    parser.add_argument("--repeats", type=int, default=2, help="runs per cell and target, interleaved (medians)")
    parser.add_argument("--client-processes", type=int, default=3, help="at most this many client processes")
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' stderr logs after success")
    parser.add_argument("--rates", type=int, nargs="*", help="override the grid's book changes per second")
    parser.add_argument("--consumers", type=int, nargs="*", help="override the grid's consumer counts")
    parser.add_argument("--linger-ms", type=float, default=None,
                        help="both targets' batching linger (default: the service's)")
    parser.add_argument("--quiet-below", type=float, default=None,
                        help="start each run once other processes use fewer cores than this, and re-run (twice at "
                             "most) a run during which they used more")
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--streams", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        asyncio.run(client_main(args))
    else:
        main_orchestrate(args)


if __name__ == "__main__":
    main()
