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
                             established_timeout_s: float = 10.0, retry_s: float = 1.0,
                             retry_max_s: float = 30.0) -> None:
    """Watch `venue`'s instruments until cancelled; `watcher` names the consumer in the logs.

    After a connection that failed (or was dropped within `retry_max_s` of being caught up) the next comes after a
    pause doubling from `retry_s` up to `retry_max_s`, so reference data that stays down (or keeps refusing the
    catch-up) is not called every `retry_s` for as long as it lasts. A failure is logged at WARNING once per
    outage (again only if its kind changes), the rest at DEBUG, and the end of an outage at INFO."""
    loop = asyncio.get_running_loop()
    retry_max_s = max(retry_s, retry_max_s)
    pause = retry_s
    logged: str | None = None  # the kind of failure logged at WARNING in this outage (None: none yet)
    while True:
        call = stub.WatchInstruments(refdata_pb.WatchInstrumentsRequest(venue=venue), metadata=metadata)
        caught_up = False
        caught_up_at = 0.0
        try:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for swallows a cancellation that arrives as the
            # metadata does, and the watch would then outlive the service that cancelled it.
            async with asyncio.timeout(established_timeout_s):
                await call.initial_metadata()
            if call.done():  # a call that failed also has (empty) initial metadata: it was never registered
                await call.read()  # raises the call's error
                raise RuntimeError("the watch ended before it was established")
            await on_established()
            caught_up, caught_up_at = True, loop.time()
            if logged is not None:
                log.info("reference-data watch established again", extra={"watcher": watcher})
                logged = None
            async for message in call:
                for event in message.events:
                    on_event(event)
            failure = "ended"
            log.log(logging.WARNING if logged != failure else logging.DEBUG,
                    "reference-data watch ended; reconnecting", extra={"watcher": watcher})
        except grpc.aio.AioRpcError as exc:
            failure = exc.code().name
            log.log(logging.WARNING if logged != failure else logging.DEBUG, "reference-data watch ended; retrying",
                    extra={"watcher": watcher, "code": failure, "caught_up": caught_up})
        except Exception as exc:  # never let the watch die: a later change would go unnoticed
            failure = type(exc).__name__
            log.log(logging.WARNING if logged != failure else logging.DEBUG, "reference-data watch failed; retrying",
                    exc_info=logged != failure, extra={"watcher": watcher, "error": repr(exc), "caught_up": caught_up})
        finally:
            call.cancel()
        logged = failure
        if on_ended is not None:
            on_ended(caught_up)
        if caught_up and loop.time() - caught_up_at >= retry_max_s:  # it was up a good while: a new outage
            pause = retry_s
        await asyncio.sleep(pause)
        pause = min(pause * 2, retry_max_s)
