"""Reference-data benchmark: syncing 10,000 instruments and filtered listing, on SQLite and PostgreSQL.

    python -m tests.bench.bench_refdata [--out bench-results/refdata.json] [--instruments 10000]

The simulator runs as its own process listing the instruments; the service runs
here and is called over gRPC. For each backend (a fresh database each run):
the full first sync, an unchanged re-sync, and `ListInstruments` latency with a
filter (page of 100) over the synced set. Figures are medians of repeated runs.
Targets: first sync < 3 s, unchanged re-sync < 1.5 s, filtered list p99 < 10 ms.
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
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from portico.refdata.v1 import instrument_pb2
from portico.refdata.v1 import reference_data_service_pb2 as pb
from portico.runtime.client import open_channel
from tests.support.ports import free_port
from tests.support.postgres import fresh_database, postgres_reachable
from tests.support.refdata import running_refdata

REPO = Path(__file__).resolve().parents[2]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(sim_url: str, db_env: dict[str, str], list_calls: int) -> dict[str, float]:
    async with running_refdata(sim_url, db_env) as refdata, open_channel(refdata.target) as channel:
        stub = refdata.stub(channel)
        admin, read = refdata.metadata("admin"), refdata.metadata("read")
        started = time.perf_counter()
        first = await stub.SyncInstruments(pb.SyncInstrumentsRequest(venue="syndr"), metadata=admin, timeout=120)
        first_s = time.perf_counter() - started
        resyncs = []
        for _ in range(3):
            started = time.perf_counter()
            again = await stub.SyncInstruments(pb.SyncInstrumentsRequest(venue="syndr"), metadata=admin, timeout=120)
            resyncs.append(time.perf_counter() - started)
            assert again.added == again.updated == again.deactivated == 0
        flt = instrument_pb2.InstrumentFilter(base_currencies=["ETH"], types=[instrument_pb2.INSTRUMENT_TYPE_OPTION],
                                              active=True)
        latencies = []
        for _ in range(list_calls):
            started = time.perf_counter()
            reply = await stub.ListInstruments(pb.ListInstrumentsRequest(venue="syndr", filter=flt, page_size=100),
                                               metadata=read, timeout=10)
            latencies.append(time.perf_counter() - started)
            assert len(reply.instruments) == 100
    return {"instruments": first.synced, "first_sync_s": first_s, "resync_s": statistics.median(resyncs),
            "list_p50_ms": percentile(latencies, 0.5) * 1e3, "list_p99_ms": percentile(latencies, 0.99) * 1e3}


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    sim = subprocess.Popen([sys.executable, "-m", "portico.sim",  # noqa: ASYNC220 - runs for the whole benchmark "--port", str(port), "--no-market-maker",
                            "--extra-instruments", str(args.instruments - 24)], cwd=REPO,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sim_url = f"http://127.0.0.1:{port}/api/v1"
    try:
        async with httpx.AsyncClient() as client:
            for _ in range(300):
                try:
                    await client.post(sim_url, json={"jsonrpc": "2.0", "id": 1, "method": "public/get_currencies"})
                    break
                except httpx.HTTPError:
                    await asyncio.sleep(0.1)
        results: dict[str, Any] = {}
        with tempfile.TemporaryDirectory() as tmp:
            runs = []
            for i in range(args.repeats):
                runs.append(await measure(sim_url, {"PORTICO_REFDATA_DB": f"{tmp}/run{i}.sqlite3"}, args.list_calls))
            results["sqlite"] = median_of(runs)
        if postgres_reachable():
            runs = []
            for _ in range(args.repeats):
                with fresh_database("portico_bench") as dsn:
                    runs.append(await measure(sim_url, {"PORTICO_REFDATA_DSN": dsn}, args.list_calls))
            results["postgres"] = median_of(runs)
    finally:
        sim.terminate()
        sim.wait(20)
    return {
        "benchmark": "refdata",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "settings": {"instruments": args.instruments, "repeats": args.repeats, "list_calls": args.list_calls,
                     "list_filter": "baseCurrency ETH, type option, active, page of 100"},
        "results": results,
        "targets": {"first_sync_s": 3.0, "resync_s": 1.5, "list_p99_ms": 10.0},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "bench-results" / "refdata.json")
    parser.add_argument("--instruments", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--list-calls", type=int, default=500)
    args = parser.parse_args()
    result = asyncio.run(run(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
