"""Following reference data's instrument events from another service (market data, execution).

`WatchInstruments` does not replay: an event published while no watch of ours
is registered (at start-up, or while reconnecting) is never delivered. So
`follow_instruments` reconnects for as long as it runs, and on every
connection it first waits for the stream's initial metadata, which reference
data sends once the watcher is registered (every later event will arrive),
then awaits the consumer's `on_established()`: its catch-up on whatever it
may have missed. Only then are events handed to `on_event`. A catch-up that
fails is retried with the whole connection, so no event is consumed without
one. `on_ended(caught_up)` tells the consumer that a connection is over and
whether it had been caught up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import grpc

from portico.refdata.v1 import reference_data_service_pb2 as refdata_pb
from portico.refdata.v1 import reference_data_service_pb2_grpc as refdata_grpc

__all__ = ["follow_instruments"]

log = logging.getLogger(__name__)


async def follow_instruments(stub: refdata_grpc.ReferenceDataServiceStub, metadata: tuple[tuple[str, str], ...],
                             venue: str, *, watcher: str,
                             on_established: Callable[[], Awaitable[None]],
                             on_event: Callable[[refdata_pb.InstrumentEvent], None],
                             on_ended: Callable[[bool], None] | None = None,
                             established_timeout_s: float = 10.0, retry_s: float = 1.0) -> None:
    """Watch `venue`'s instruments until cancelled; `watcher` names the consumer in the logs."""
    while True:
        call = stub.WatchInstruments(refdata_pb.WatchInstrumentsRequest(venue=venue), metadata=metadata)
        caught_up = False
        try:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for swallows a cancellation that arrives as the
            # metadata does, and the watch would then outlive the service that cancelled it.
            async with asyncio.timeout(established_timeout_s):
                await call.initial_metadata()
            if call.done():  # a call that failed also has (empty) initial metadata: it was never registered
                await call.read()  # raises the call's error
                raise RuntimeError("the watch ended before it was established")
            await on_established()
            caught_up = True
            async for message in call:
                for event in message.events:
                    on_event(event)
            log.warning("reference-data watch ended; reconnecting", extra={"watcher": watcher})
        except grpc.aio.AioRpcError as exc:
            log.warning("reference-data watch ended; retrying",
                        extra={"watcher": watcher, "code": exc.code().name, "caught_up": caught_up})
        except Exception as exc:  # never let the watch die: a later change would go unnoticed
            log.warning("reference-data watch failed; retrying", exc_info=True,
                        extra={"watcher": watcher, "error": repr(exc), "caught_up": caught_up})
        finally:
            call.cancel()
        if on_ended is not None:
            on_ended(caught_up)
        await asyncio.sleep(retry_s)
