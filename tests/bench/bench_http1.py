"""HTTP client benchmark: one JSON-RPC-sized POST round trip on loopback, three clients, one server.

    python -m tests.bench.bench_http1 [--calls 3000] [--repeats 5] [--out bench-results/http1.json]

One process on uvloop: an aiohttp server answering a Syndr-sized order
response, and, one call in flight, each of

* `aiohttp`: an `aiohttp.ClientSession` POST (what SyndrHttpClient used);
* `http1`: `portico.runtime.http1.Http1Pool.post` (what it uses now);
* `bare`: hand-written request bytes on one asyncio stream, reading the
  answer by its Content-Length: the floor, nothing a client could skip.

Client and server share the process (and core), so the figures are the sum of
both sides' CPU per call; the server's part is the same for all three. It
reports the median round trip of each (median over `--repeats` runs of
`--calls` calls each, the first tenth of each run left out as warm-up) and
each client's overhead above the bare exchange.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import uvloop
from aiohttp import web

from portico.runtime.http1 import Http1Pool

HEADERS = {"content-type": "application/json", "accept": "application/json",
           "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
           "x-api-key": "0123456789abcdef", "x-api-secret": "0123456789abcdef0123456789abcdef"}
REQUEST = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "private/buy", "params": {
    "instrument_name": "ETH-PERP", "amount": "0.001", "price": "1500.5", "order_type": "limit", "salt": 2**63,
    "signature": "0x" + "ab" * 65, "label": "client-order-0001"}})
ANSWER = orjson.dumps({"jsonrpc": "2.0", "id": 1, "usIn": 1, "usOut": 2, "usDiff": 1, "result": {"order": {
    "order_id": "0x" + "cd" * 32, "order_state": "open", "instrument_name": "ETH-PERP", "amount": 0.001,
    "price": 1500.5, "filled_amount": 0, "direction": "buy", "label": "client-order-0001", "salt": str(2**63)}}})


async def _answer(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=ANSWER, content_type="application/json")


async def _timed(call: Any, calls: int) -> float:
    times = []
    for _ in range(calls):
        began = time.perf_counter_ns()
        await call()
        times.append(time.perf_counter_ns() - began)
    return statistics.median(times[calls // 10:]) / 1e3


async def measure(calls: int, repeats: int) -> dict[str, Any]:
    app = web.Application()
    app.router.add_post("/api/v1", _answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}/api/v1"
    runs: dict[str, list[float]] = {"aiohttp": [], "http1": [], "bare": []}
    session = aiohttp.ClientSession()
    pool = Http1Pool(url)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (f"POST /api/v1 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in HEADERS.items())
            + f"Content-Length: {len(REQUEST)}\r\n\r\n").encode()

    async def with_aiohttp() -> None:
        async with session.post(url, data=REQUEST, headers=HEADERS) as response:
            assert await response.read() == ANSWER

    async def with_http1() -> None:
        assert await pool.post(REQUEST, HEADERS) == (200, ANSWER)

    async def bare() -> None:
        writer.write(head + REQUEST)
        answer_head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":", 1)[1]) for line in answer_head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        assert await reader.readexactly(length) == ANSWER

    try:
        for _ in range(repeats):  # interleaved, so a noisy moment hits all three alike
            runs["aiohttp"].append(await _timed(with_aiohttp, calls))
            runs["http1"].append(await _timed(with_http1, calls))
            runs["bare"].append(await _timed(bare, calls))
    finally:
        await session.close()
        await pool.aclose()
        writer.close()
        await runner.cleanup()
    medians = {name: statistics.median(values) for name, values in runs.items()}
    return {
        "round_trip_us_median": medians,
        "overhead_over_bare_us": {name: medians[name] - medians["bare"] for name in ("aiohttp", "http1")},
        "ratio_http1_to_aiohttp": medians["http1"] / medians["aiohttp"],
        "runs_us": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("bench-results/http1.json"))
    args = parser.parse_args()
    figures = uvloop.run(measure(args.calls, args.repeats))
    result = {"benchmark": "http1", "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "machine": {"python": platform.python_version(), "aiohttp": aiohttp.__version__},
              "settings": {"calls": args.calls, "repeats": args.repeats, "request_bytes": len(REQUEST),
                           "answer_bytes": len(ANSWER)}, **figures}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("round_trip_us_median", "overhead_over_bare_us",
                                              "ratio_http1_to_aiohttp")}, indent=2))


if __name__ == "__main__":
    main()
