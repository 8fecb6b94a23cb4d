"""Book consumers for the soak run, in a process of their own (so their CPU does not slow the run's clock).

    SOAK_TOKEN=pt_… python -m tests.soak.consumers --target 127.0.0.1:50052 --count 25   # a `read` token

Each consumer streams `StreamOrderBook` and applies every update (`tests.support.book_consumer.Consumer`:
chains and checksums checked); a stream that ends (the service killed, a cut-off) is opened again and starts
over from its snapshot. On a line `report` on stdin the process waits until no update has arrived for a
moment, prints one JSON document with every consumer's book and figures, and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import grpc

from portico.marketdata.v1 import market_data_service_pb2 as pb
from portico.marketdata.v1 import market_data_service_pb2_grpc as pb_grpc
from portico.runtime.client import bearer, open_channel
from tests.support.book_consumer import Consumer


@dataclass
class Stream:
    consumer: Consumer
    opened: int = 0
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    last_update: float = 0.0


async def follow(stub: pb_grpc.MarketDataServiceStub, token: str, symbol: str, stream: Stream) -> None:
    while True:
        stream.opened += 1
        call = stub.StreamOrderBook(pb.StreamOrderBookRequest(venue="syndr", symbol=symbol,
                                                              depth=stream.consumer.depth), metadata=bearer(token))
        try:
            async for message in call:
                for update in message.updates:
                    stream.consumer.apply(update)
                stream.last_update = time.monotonic()
            stream.errors["END"] += 1
        except grpc.aio.AioRpcError as exc:
            stream.errors[exc.code().name] += 1
        await asyncio.sleep(0.3)


def _report(stream: Stream) -> dict[str, Any]:
    consumer = stream.consumer
    bids, asks = consumer.top() if consumer.book is not None else ([], [])
    return {"sequence": consumer.sequence, "bids": bids, "asks": asks, "updates": consumer.updates,
            "snapshots": consumer.snapshots, "broken": len(consumer.broken), "broken_first": consumer.broken[:3],
            "statuses": len(consumer.statuses), "streams_opened": stream.opened, "stream_errors": dict(stream.errors)}


async def run(target: str, token: str, count: int, depth: int, symbol: str) -> None:
    async with open_channel(target) as channel:
        stub = pb_grpc.MarketDataServiceStub(channel)
        streams = [Stream(Consumer(depth)) for _ in range(count)]
        tasks = [asyncio.create_task(follow(stub, token, symbol, s)) for s in streams]
        loop = asyncio.get_running_loop()
        while (line := await loop.run_in_executor(None, sys.stdin.readline)) and line.strip() != "report":
            pass
        # Settle: the market maker is paused; wait until nothing has moved for a second (at most 30 s).
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and time.monotonic() - max(s.last_update for s in streams) < 1.0:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        print(json.dumps([_report(s) for s in streams]), flush=True)
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True)
    parser.add_argument("--count", type=int, default=25)
    parser.add_argument("--depth", type=int, default=10)
    parser.add_argument("--symbol", default="ETH-PERP")
    args = parser.parse_args()
    asyncio.run(run(args.target, os.environ["SOAK_TOKEN"], args.count, args.depth, args.symbol))


if __name__ == "__main__":
    main()
