"""Signer benchmark: signatures/s and latency through gRPC, against a real OpenBao.

    python -m tests.bench.bench_signer [--out bench-results/signer.json] [--seconds 5] [--repeats 3]

The signer runs as its own process, as deployed. Load comes from several
client processes (one Python process cannot drive more than a few thousand
calls/s on its own), each with calls in flight on its own channel. It reports

* closed-loop throughput and latency with `clients x concurrency` in flight;
* open-loop latency at half that throughput (sends on a fixed schedule;
  latency counts from the scheduled time, so queueing is not hidden);
* one call in flight;
* the same closed loop against the bare health `Check` RPC: a baseline of
  what gRPC itself allows here, so the signer shows as a ratio to it;
* the signer process's CPU time per signature, which is steadier than
  wall-clock figures on a shared, noisy machine.

Every order has a fresh salt, so every signature commits a watermark.
Figures are medians over `--repeats` runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from portico.signer.v1 import signer_service_pb2 as pb
from portico.signer.v1 import signer_service_pb2_grpc

REPO = Path(__file__).resolve().parents[2]
SALT_MARK = 987654321987654321


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- client worker (a subprocess)


def order_template(account: str) -> str:
    from portico.venues.syndr import typed_data as syndr

    data = syndr.order_typed_data(
        verifying_contract="0x" + "ab" * 20, account=account, instrument_id=3, is_buy=True, order_type=0,
        time_in_force=0, post_only=False, reduce_only=False, price=Decimal("3000.5"), amount=Decimal("0.1"),
        salt=SALT_MARK, expiration=1_900_000_000_000, timestamp=1_800_000_000_000)
    return json.dumps(data)


async def worker(args: argparse.Namespace) -> None:
    template = order_template(args.account)
    head, tail = template.split(str(SALT_MARK))
    rng = random.Random(os.getpid())
    metadata = (("authorization", f"Bearer {args.token}"),)
    latencies: list[float] = []
    async with grpc.aio.insecure_channel(args.target) as channel:
        signer = signer_service_pb2_grpc.SignerServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        check = health_pb2.HealthCheckRequest()

        async def call() -> None:
            if args.mode == "bare":
                await health.Check(check, timeout=10)
            elif args.mode == "raw":
                await signer.Sign(pb.SignRequest(key_id="bench-raw", digest=rng.randbytes(32)), metadata=metadata,
                                  timeout=10)
            else:
                text = f"{head}{rng.getrandbits(120)}{tail}"
                await signer.Sign(pb.SignRequest(key_id=args.key_id, typed_data_json=text), metadata=metadata,
                                  timeout=10)

        start = time.perf_counter() + 0.2
        stop_at = start + args.seconds
        await asyncio.sleep(0.2)
        if args.rate:
            interval, tasks = 1.0 / args.rate, []

            async def scheduled(at: float) -> None:
                await call()
                latencies.append(time.perf_counter() - at)

            i = 0
            while (at := start + i * interval) < stop_at:
                delay = at - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(scheduled(at)))
                i += 1
            await asyncio.gather(*tasks)
        else:
            async def loop() -> None:
                while time.perf_counter() < stop_at:
                    began = time.perf_counter()
                    await call()
                    latencies.append(time.perf_counter() - began)

            await asyncio.gather(*(loop() for _ in range(args.concurrency)))
        elapsed = time.perf_counter() - start
    print(json.dumps({"latencies": latencies, "elapsed": elapsed}))


# --------------------------------------------------------------------------- orchestration


def load(target: str, token: str, account: str, *, mode: str, clients: int, concurrency: int, seconds: float,
         server_pid: int, rate: float = 0.0) -> dict[str, float]:
    argv = [sys.executable, "-m", "tests.bench.bench_signer", "--worker", "--target", target, "--token", token,
            "--account", account, "--mode", mode, "--concurrency", str(concurrency), "--seconds", str(seconds),
            "--rate", str(rate / clients if rate else 0)]
    cpu_before = cpu_seconds(server_pid)
    procs = [subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, text=True) for _ in range(clients)]
    outputs = [json.loads(p.communicate(timeout=seconds + 60)[0]) for p in procs]
    cpu_used = cpu_seconds(server_pid) - cpu_before
    latencies = [x for out in outputs for x in out["latencies"]]
    elapsed = max(out["elapsed"] for out in outputs)
    return {"per_second": len(latencies) / elapsed, "p50_ms": percentile(latencies, 0.5) * 1e3,
            "p99_ms": percentile(latencies, 0.99) * 1e3, "calls": len(latencies),
            "server_cpu_ms_per_call": cpu_used / max(1, len(latencies)) * 1e3}


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


async def provision(vault_addr: str, root_token: str) -> str:
    from portico.runtime.signing_keys import KeyAdmin, KeyPaths, KeyPolicy
    from portico.runtime.vault import VaultSession, VaultSettings

    async with VaultSession(VaultSettings(addr=vault_addr, auth_method="token", token=root_token)) as session:
        admin = KeyAdmin(session, KeyPaths())
        await admin.create("bench-raw", KeyPolicy.build(allow_raw_digest=True))
        return await admin.create("bench", KeyPolicy.build(
            primary_types=["Order"], domain_names=["Syndr"], chain_ids=[421614]))


def run(args: argparse.Namespace) -> dict[str, Any]:
    from tests.support.openbao import OpenBaoDevServer
    from tests.support.ports import free_port
    from tests.support.signer import make_tokens

    tokens, auth = make_tokens()
    with OpenBaoDevServer() as vault, tempfile.TemporaryDirectory() as tmp:
        account = asyncio.run(provision(vault.addr, vault.root_token))
        port = free_port()
        env = {**os.environ, "PORTICO_LISTEN_ADDR": f"127.0.0.1:{port}", "PORTICO_VAULT_ADDR": vault.addr,
               "PORTICO_VAULT_TOKEN": vault.root_token, "PORTICO_AUTH_TOKENS": auth,
               "PORTICO_SIGNER_WATERMARK_DB": f"{tmp}/wm.sqlite3",
               "PORTICO_LOG_LEVEL": "INFO",  # the audit line per signature is part of the cost
               "PORTICO_SIGNER_WATERMARK_SYNC": args.sync}
        server = subprocess.Popen([sys.executable, "-m", "portico.signer"], env=env, cwd=REPO,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            target = f"127.0.0.1:{port}"
            common = {"server_pid": server.pid}
            deadline = time.monotonic() + 30
            with grpc.insecure_channel(target) as channel:
                while True:
                    try:
                        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
                        break
                    except grpc.RpcError:
                        assert time.monotonic() < deadline, "signer did not start"
                        time.sleep(0.1)

            def go(mode: str, clients: int, concurrency: int, seconds: float,
                   rate: float = 0.0) -> dict[str, float]:
                return load(target, tokens["trade"], account, mode=mode, clients=clients, concurrency=concurrency,
                            seconds=seconds, rate=rate, **common)

            go("sign", args.clients, args.concurrency, 1.0)  # warm-up: key load, caches
            throughput = median_of([go("sign", args.clients, args.concurrency, args.seconds)
                                    for _ in range(args.repeats)])
            baseline = median_of([go("bare", args.clients, args.concurrency, args.seconds)
                                  for _ in range(args.repeats)])
            raw = median_of([go("raw", args.clients, args.concurrency, args.seconds) for _ in range(args.repeats)])
            single = median_of([go("sign", 1, 1, args.seconds / 2) for _ in range(args.repeats)])
            half_rate = throughput["per_second"] / 2
            half = median_of([go("sign", args.clients, 0, args.seconds, rate=half_rate)
                              for _ in range(args.repeats)])
        finally:
            server.terminate()
            server.wait(20)
    return {
        "benchmark": "signer",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "grpc": grpc.__version__},
        "settings": {"clients": args.clients,
                     "concurrency_per_client": args.concurrency, "seconds_per_run": args.seconds,
                     "repeats": args.repeats, "watermark_sync": args.sync},
        "sign_throughput": throughput,
        "bare_grpc_throughput": baseline,
        "raw_digest_sign_throughput": raw,
        "throughput_ratio_to_bare_grpc": throughput["per_second"] / baseline["per_second"],
        "sign_one_in_flight": single,
        "sign_at_half_max_rate": {"target_rate": half_rate, **half},
        "targets": {"signatures_per_second": 3000, "p99_ms_at_half_load": 5.0},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "bench-results" / "signer.json")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--concurrency", type=int, default=16, help="calls in flight per client process")
    parser.add_argument("--sync", choices=["FULL", "NORMAL"], default="NORMAL")
    # worker mode (internal)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    parser.add_argument("--account", help=argparse.SUPPRESS)
    parser.add_argument("--key-id", default="bench", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="sign", help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        asyncio.run(worker(args))
        return
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
