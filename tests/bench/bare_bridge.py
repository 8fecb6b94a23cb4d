"""A bare WebSocket-to-gRPC bridge: the baseline the market-data benchmark compares the service with.

    python -m tests.bench.bare_bridge --ws-url ws://127.0.0.1:8700/ws/api/v1 --port 50099 [--symbol ETH-PERP]

It does what any fan-out of the venue's raw book channel must do and nothing
more: one WebSocket subscription to `book.SYMBOL.15.raw` (the `websockets`
client with its defaults, as the service's, so permessage-deflate is
negotiated the same way); each frame parsed
once (orjson), turned into one `BookUpdate` (type DELTA, the frame's raw
levels, `sequence`/`previous_sequence` = the venue's change ids, `receive_time`)
and serialised once; the same bytes go to every consumer's bounded queue. Each
`StreamOrderBook` call drains its queue with the service's batching (wait for a
queued update, until the oldest queued one has lingered `linger` since it was
received, send up to `max_batch` updates as one `StreamOrderBookResponse`,
built by concatenating the encoded updates). No
book, no depth filter, no checksum, no auth, no interceptors, no metrics.

A consumer's first update is a SNAPSHOT marker without levels at the last
forwarded change id, so its `previous_sequence` chain can be checked exactly
as against the service; a consumer whose queue overflows loses its backlog
and gets another marker (a benchmark client counts it as a conflation). The
process prints `ready` on stdout once the first frame has been forwarded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import grpc
import orjson
from websockets.asyncio.client import connect

from portico.marketdata.feed import FeedSettings, frame
from portico.marketdata.v1 import market_data_service_pb2 as pb
from portico.marketdata.v1 import order_book_pb2

__all__ = ["Bridge", "main"]

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["MarketDataService"].full_name
SNAPSHOT = order_book_pb2.BOOK_EVENT_TYPE_SNAPSHOT
DELTA = order_book_pb2.BOOK_EVENT_TYPE_DELTA
BookUpdate = order_book_pb2.BookUpdate
PriceLevel = order_book_pb2.PriceLevel
# The same encoding the service uses (pure framing, no book logic), so the baseline batches identically.
encode = frame


class Consumer:
    """One stream: a bounded queue of encoded updates and their receive times."""

    __slots__ = ("bridge", "frames", "received", "wakeup")

    def __init__(self, bridge: Bridge):
        self.bridge = bridge
        self.frames: deque[bytes] = deque()
        self.received: deque[int] = deque()
        self.wakeup = asyncio.Event()

    def push(self, data: bytes, received_ns: int) -> None:
        if len(self.frames) >= self.bridge.settings.max_queue:
            self.bridge.overflows += 1
            self.frames.clear()
            self.received.clear()
            data, received_ns = self.bridge.marker(), time.time_ns()
        self.frames.append(data)
        self.received.append(received_ns)
        self.wakeup.set()

    def take(self) -> tuple[bytes, int]:
        count = min(len(self.frames), self.bridge.settings.max_batch)
        batch = b"".join(self.frames.popleft() for _ in range(count))
        for _ in range(count):
            self.received.popleft()
        if not self.frames:
            self.wakeup.clear()
        return batch, count


class Bridge:
    """The raw channel of one symbol, forwarded frame by frame to every consumer."""

    def __init__(self, ws_url: str, symbol: str, settings: FeedSettings, venue: str = "syndr"):
        self.ws_url = ws_url
        self.symbol = symbol
        self.venue = venue
        self.channel = f"book.{symbol}.15.raw"
        self.settings = settings
        self.consumers: set[Consumer] = set()
        self.last_change_id = 0
        self.frames = 0
        self.overflows = 0
        self.first_frame = asyncio.Event()

    def marker(self) -> bytes:
        return encode(BookUpdate(type=SNAPSHOT, venue=self.venue, symbol=self.symbol,
                                 sequence=self.last_change_id))

    async def run_upstream(self) -> None:
        # The service's client's WebSocket settings: websockets' defaults (permessage-deflate if the venue
        # agrees), no pings, and a 1 s close handshake (the default 10 s would hold up shutdown).
        async with connect(self.ws_url, max_size=None, ping_interval=None, ping_timeout=None,
                           close_timeout=1.0) as ws:
            await ws.send(orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "public/subscribe",
                                        "params": {"channels": [self.channel]}}).decode())
            while True:
                raw = await ws.recv(decode=False)
                received_ns = time.time_ns()
                message = orjson.loads(raw)
                params = message.get("params")
                if params is None or params.get("channel") != self.channel:
                    continue  # the subscribe answer
                self.forward(params["data"], received_ns)

    def forward(self, data: dict[str, Any], received_ns: int) -> None:
        change_id = data["change_id"]
        update = BookUpdate(type=DELTA, venue=self.venue, symbol=self.symbol, sequence=change_id,
                            previous_sequence=data["previous_change_id"],
                            bids=[PriceLevel(price=p, amount=a) for p, a in data["bids"]],
                            asks=[PriceLevel(price=p, amount=a) for p, a in data["asks"]])
        update.venue_time.FromMilliseconds(int(data["timestamp"]))
        update.receive_time.FromNanoseconds(received_ns)
        encoded = encode(update)
        self.last_change_id = change_id
        self.frames += 1
        for consumer in self.consumers:
            consumer.push(encoded, received_ns)
        if not self.first_frame.is_set():
            self.first_frame.set()

    async def stream_order_book(self, request: pb.StreamOrderBookRequest,
                                context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        consumer = Consumer(self)
        self.consumers.add(consumer)
        consumer.push(self.marker(), time.time_ns())
        linger, max_batch = self.settings.linger_s, self.settings.max_batch
        try:
            while True:
                await consumer.wakeup.wait()
                if linger and len(consumer.frames) < max_batch:
                    # Like the service: a batch waits until its oldest update has lingered `linger` since it was
                    # received, so a consumer woken late does not wait the full linger again.
                    wait = linger - (time.time_ns() - consumer.received[0]) / 1e9
                    if wait > 0:
                        await asyncio.sleep(wait)
                batch, count = consumer.take()
                if count:
                    yield batch
        finally:
            self.consumers.discard(consumer)

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(SERVICE_NAME, {
            "StreamOrderBook": grpc.unary_stream_rpc_method_handler(
                self.stream_order_book, request_deserializer=pb.StreamOrderBookRequest.FromString,
                response_serializer=lambda b: b),
        })


async def serve(args: argparse.Namespace) -> None:
    defaults = FeedSettings()
    settings = FeedSettings(linger_s=args.linger_ms / 1000 if args.linger_ms is not None else defaults.linger_s,
                            max_queue=args.max_queue or defaults.max_queue,
                            max_batch=args.max_batch or defaults.max_batch)
    bridge = Bridge(args.ws_url, args.symbol, settings)
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers([bridge.handler()])
    if server.add_insecure_port(f"{args.host}:{args.port}") == 0:
        raise OSError(f"cannot listen on {args.host}:{args.port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    upstream = asyncio.create_task(bridge.run_upstream(), name="bridge-upstream")
    first = asyncio.create_task(bridge.first_frame.wait())
    await asyncio.wait([upstream, first], return_when=asyncio.FIRST_COMPLETED)
    if upstream.done():
        upstream.result()  # the upstream ended before the first frame: raise why
        raise RuntimeError("the upstream closed before its first frame")
    print("ready", flush=True)
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait([upstream, stopping], return_when=asyncio.FIRST_COMPLETED)
    for task in (upstream, stopping):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await server.stop(0)
    print(f"frames={bridge.frames} overflows={bridge.overflows}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ws-url", required=True, help="the venue's WebSocket URL")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--symbol", default="ETH-PERP")
    parser.add_argument("--linger-ms", type=float, default=None, help="default: the service's (FeedSettings)")
    parser.add_argument("--max-queue", type=int, default=None, help="default: the service's (FeedSettings)")
    parser.add_argument("--max-batch", type=int, default=None, help="default: the service's (FeedSettings)")
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
