"""Interleaved turns between client processes, for benchmarks that compare setups on a noisy machine.

Each side's client process runs `answer_turns`: for every line `seconds` it reads on stdin, it makes calls one
at a time for that long and prints the median round trip as a JSON line. The driver hands out turns with
`take_turn`, alternating or rotating the order, so a slow spell of the shared machine falls on every side alike.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

WARM_UP_CALLS = 300


async def answer_turns(call: Callable[[], Awaitable[Any]]) -> None:
    """Warm up, then answer each `seconds` line on stdin with {"median_s", "calls"} for calls made that long."""
    for _ in range(WARM_UP_CALLS):
        await call()
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        times: list[float] = []
        end = time.perf_counter() + float(line)
        while time.perf_counter() < end:
            began = time.perf_counter()
            await call()
            times.append(time.perf_counter() - began)
        print(json.dumps({"median_s": statistics.median(times), "calls": len(times)}), flush=True)


def take_turn(client: subprocess.Popen[str], seconds: float) -> dict[str, Any]:
    """One turn of `client` (running `answer_turns`): its answer."""
    assert client.stdin is not None and client.stdout is not None
    client.stdin.write(f"{seconds}\n")
    client.stdin.flush()
    answer: dict[str, Any] = json.loads(client.stdout.readline())
    return answer


def end_turns(clients: list[subprocess.Popen[str]]) -> None:
    """Close the clients' stdin (their loops end) and wait for them."""
    for client in clients:
        if client.stdin is not None:
            client.stdin.close()
        client.wait(timeout=30)
