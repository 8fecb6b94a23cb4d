"""Syndr JSON-RPC over one WebSocket: calls, subscriptions, heartbeats, reconnects, book gap detection.

One background task (the *runner*) owns the connection: it connects, sends
`public/auth` when credentials are given, re-subscribes every channel any live
`Subscription` needs, then waits on the *reader* task, which is the only code
that reads the socket. When the connection drops (venue close, network error,
or silence), the runner fails the calls in flight, tells every subscription
(`Disconnected`), and reconnects with bounded, jittered exponential backoff;
once authenticated and re-subscribed it tells them again (`Reconnected`),
before any message of the new connection, so consumers know to resync.

A channel the venue refuses to re-subscribe (a refusal for good, not a rate
limit or internal error, which reconnect) ends every subscription that needs
it with `ChannelRefused(channel, error)` instead of `Reconnected`; the venue
refuses a chunk of channels whole for one bad channel in it, so a refused
chunk is halved until the bad channels stand alone and the rest are
re-subscribed.

Decisions a consumer must know:

* Calls in flight when the connection drops fail with `SyndrConnectionError`:
  the venue may or may not have acted on them (an order may be live).
* A subscription either queues its events for iteration or, given
  `on_event`, hands each one to that callback synchronously as the frame is
  read (no queue, no task switch: for hot consumers that never block).
* Each queued subscription has a bounded queue. A consumer that falls `max_queue`
  events behind is *reset*: its whole backlog (control events included) is
  discarded, it receives one `Overflow(dropped=<messages lost>)` and delivery
  resumes with the message that did not fit (its book-gap trackers restart
  too). Nothing is dropped silently and other
  subscriptions are unaffected. `Overflow`, like `Reconnected`, means "your
  state is stale; re-snapshot".
* On `book.*.raw` channels each subscription checks the change-id chain: when
  a message's `previous_change_id` is not the last `change_id`, it receives
  `GapDetected(channel, gap)` right before that message (which is still
  delivered). The first message after a (re)subscribe, reconnect or overflow
  starts a new chain.
* Silence: we ping every `heartbeat_s`; if no frame at all (data or pong)
  arrives for `silence_timeout_s`, the connection is dropped and replaced.
  A watchdog task checks the time of the last frame, so reading a frame
  arms no timer.
* Every `_YIELD_EVERY` frames the reader lets other tasks run once even if
  more are buffered, so consumers are not starved while it works off a backlog.
* Frames are never logged (the auth frame carries the API secret):
  websockets gets its own logger pinned at INFO.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self, TypeAlias

import orjson
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidURI, WebSocketException
from websockets.uri import parse_uri

from portico.runtime.lifecycle import cancel_and_wait
from portico.venues.syndr.constants import NOTIFICATION_METHODS, WS_PATH, ErrorCode
from portico.venues.syndr.credentials import ApiCredentials
from portico.venues.syndr.errors import (
    SyndrAuthError,
    SyndrConnectionError,
    SyndrError,
    SyndrProtocolError,
    SyndrRateLimited,
    SyndrRpcError,
    SyndrTimeout,
    SyndrVenueFailure,
)
from portico.venues.syndr.http import (
    RpcResult,
    backoff_s,
    parse_response,
    record_error_on_span,
    record_result_on_span,
    with_default_path,
)
from portico.venues.syndr.ratelimit import RateBudget

__all__ = [
    "ChangeIdTracker",
    "ChannelRefused",
    "Disconnected",
    "Gap",
    "GapDetected",
    "Message",
    "Overflow",
    "Reconnected",
    "Subscription",
    "SyndrWebSocket",
    "WsEvent",
    "is_book_raw_channel",
]

log = logging.getLogger("portico.venues.syndr.ws")
tracer = trace.get_tracer("portico.venues.syndr")

# websockets logs every frame at DEBUG, and the auth frame holds the API secret:
# give it a logger of its own that stays at INFO whatever the root level is.
_wire_log = logging.getLogger("portico.venues.syndr.ws.wire")
_wire_log.setLevel(logging.INFO)

DEFAULT_MAX_QUEUE: Final = 10_000
# Channels per (re)subscribe call, so a large resubscribe stays a modest frame.
_SUBSCRIBE_CHUNK: Final = 100
_CLOSE_TIMEOUT_S: Final = 1.0
_MAX_FRAME_BYTES: Final = 16 * 2**20
# The reader yields to other tasks once every this many frames, even with more buffered.
_YIELD_EVERY: Final = 100
# Answers that refuse nothing for good: the venue (or our share of its rate limit) could not serve the call now.
_TRANSIENT: Final = (SyndrRateLimited, SyndrVenueFailure)


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class Gap:
    """A break in a book channel's change-id chain: the venue skipped `expected_previous`'s successor(s)."""

    expected_previous: int
    got_previous: int
    change_id: int


@dataclass(frozen=True, slots=True)
class Message:
    """One notification; `raw` is the whole frame so typed parsing can happen downstream."""

    channel: str
    data: Any
    raw: bytes
    received_ns: int  # time.time_ns() when the frame was read, comparable with venue timestamps


@dataclass(frozen=True, slots=True)
class GapDetected:
    """Delivered right before the message whose `previous_change_id` broke the chain."""

    channel: str
    gap: Gap


@dataclass(frozen=True, slots=True)
class Overflow:
    """The consumer fell behind: its backlog (`dropped` messages) was discarded; treat state as stale."""

    dropped: int


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The connection dropped; messages stop until `Reconnected`."""

    reason: str


@dataclass(frozen=True, slots=True)
class Reconnected:
    """Re-connected, re-authenticated and every channel re-subscribed after `attempt` tries; resync state."""

    attempt: int


@dataclass(frozen=True, slots=True)
class ChannelRefused:
    """The venue refused, on its own, to re-subscribe `channel` after a reconnect (`error` is its answer).

    The last event of every subscription that needs the channel: it has ended (no `Reconnected`, nothing more).
    """

    channel: str
    error: SyndrRpcError


WsEvent: TypeAlias = Message | GapDetected | Overflow | Disconnected | Reconnected | ChannelRefused


def is_book_raw_channel(channel: str) -> bool:
    """`book.{instrument}.{depth}.raw`: the channels that carry a change-id chain."""
    return channel.startswith("book.") and channel.endswith(".raw")


class ChangeIdTracker:
    """Checks one book channel's `change_id` / `previous_change_id` chain."""

    def __init__(self) -> None:
        self._last: int | None = None

    @property
    def last_change_id(self) -> int | None:
        return self._last

    def reset(self) -> None:
        """Forget the chain: the next message starts a new one (after a (re)subscribe or snapshot)."""
        self._last = None

    def check(self, change_id: int, previous_change_id: int | None) -> Gap | None:
        """Record `change_id`; return the `Gap` if `previous_change_id` is not the last one seen.

        The first message after a reset establishes the chain, as does one
        without a `previous_change_id` (a snapshot).
        """
        last, self._last = self._last, change_id
        if last is None or previous_change_id is None or previous_change_id == last:
            return None
        return Gap(last, previous_change_id, change_id)


def _change_ids(data: Any) -> tuple[int, int | None] | None:
    if not isinstance(data, dict):
        return None
    change_id, previous = data.get("change_id"), data.get("previous_change_id")
    if not isinstance(change_id, int) or isinstance(change_id, bool):
        return None
    return change_id, previous if isinstance(previous, int) and not isinstance(previous, bool) else None


# --------------------------------------------------------------------------- subscription


class Subscription:
    """An async iterator of `WsEvent`s for some channels, in arrival order; `close()` to stop.

    With `on_event`, events go to that callback instead, synchronously in the
    reader's task, in the same order (the iterator then only ends).
    """

    def __init__(self, owner: SyndrWebSocket, channels: tuple[str, ...], max_queue: int,
                 on_event: Callable[[WsEvent], None] | None = None) -> None:
        self._owner = owner
        self.channels = channels
        self.max_queue = max_queue
        self.overflows = 0
        self._on_event = on_event
        # Unbounded container, bounded by `_deliver_message`: control events and the
        # end marker must always fit, only messages count against `max_queue`.
        self._queue: asyncio.Queue[WsEvent | None] = asyncio.Queue()
        self._trackers: dict[str, ChangeIdTracker] = {}
        self._detached = False
        self._ended = False
        self._refusal: ChannelRefused | None = None  # why the venue ended it, if it did

    def __repr__(self) -> str:
        return f"Subscription({list(self.channels)!r}, queued={self._queue.qsize()}, closed={self._detached})"

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> WsEvent:
        if self._ended and self._queue.empty():
            raise StopAsyncIteration
        event = await self._queue.get()
        if event is None:
            self._ended = True
            raise StopAsyncIteration
        return event

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    @property
    def closed(self) -> bool:
        return self._detached

    def pending(self) -> int:
        """Events queued and not yet consumed."""
        return self._queue.qsize()

    async def close(self) -> None:
        """Stop delivery, end the iterator, and unsubscribe channels no other subscription needs."""
        await self._owner._release(self)

    # Called by SyndrWebSocket only (same task as the reader, no awaits).

    def _deliver_message(self, channel: str, data: Any, raw: bytes, received_ns: int) -> None:
        if self._detached:
            return
        gap: Gap | None = None
        ids = _change_ids(data) if is_book_raw_channel(channel) else None
        if ids is not None:
            gap = self._trackers.setdefault(channel, ChangeIdTracker()).check(*ids)
        if self._on_event is not None:  # handed over at once: nothing queues, so nothing overflows
            if gap is not None:
                self._hand_over(GapDetected(channel, gap))
            self._hand_over(Message(channel, data, raw, received_ns))
            return
        needed = 2 if gap is not None else 1
        if self._queue.qsize() + needed > self.max_queue:
            dropped = self._discard_backlog()
            self.overflows += 1
            log.warning("subscription %s fell behind: %d messages dropped", list(self.channels), dropped)
            self._queue.put_nowait(Overflow(dropped))
            for tracker in self._trackers.values():
                tracker.reset()
            if ids is not None:  # this message starts the new chain
                self._trackers[channel].check(*ids)
            gap = None
        if gap is not None:
            self._queue.put_nowait(GapDetected(channel, gap))
        self._queue.put_nowait(Message(channel, data, raw, received_ns))

    def _deliver(self, event: Disconnected | Reconnected | ChannelRefused) -> None:
        if self._detached:
            return
        if isinstance(event, Reconnected):
            for tracker in self._trackers.values():
                tracker.reset()
        if self._on_event is not None:
            self._hand_over(event)
        else:
            self._queue.put_nowait(event)

    def _hand_over(self, event: WsEvent) -> None:
        """Call `on_event`; its failure is logged and must not stop delivery to the other subscriptions."""
        assert self._on_event is not None
        try:
            self._on_event(event)
        except Exception:
            log.exception("subscription callback failed on %s", type(event).__name__)

    def _discard_backlog(self) -> int:
        """Empty the queue; return the messages lost (an earlier, unread `Overflow` carries its count over)."""
        dropped = 0
        while not self._queue.empty():
            event = self._queue.get_nowait()
            if isinstance(event, Message):
                dropped += 1
            elif isinstance(event, Overflow):
                dropped += event.dropped
        return dropped

    def _end(self) -> None:
        if not self._detached:
            self._detached = True
            self._queue.put_nowait(None)


# --------------------------------------------------------------------------- client


class SyndrWebSocket:
    """JSON-RPC calls and channel subscriptions over one self-healing WebSocket to Syndr."""

    def __init__(self, url: str, *, credentials: ApiCredentials | None = None, heartbeat_s: float = 10.0,
                 silence_timeout_s: float = 15.0, reconnect_initial_s: float = 0.2, reconnect_max_s: float = 10.0,
                 call_timeout_s: float = 5.0, rate_budget: RateBudget | None = None, compress: bool = True,
                 refresh_credentials: Callable[[], Awaitable[ApiCredentials]] | None = None) -> None:
        """`compress` offers permessage-deflate: worth it for bulky public market data over a WAN; private
        order and position feeds carry small messages, where it only costs CPU at both ends.

        `refresh_credentials` is asked for the account's current key before every re-authentication after
        a reconnect (a rotated key replaces the one this socket started with; the venue would refuse the old
        one for ever); if it fails, the socket keeps the credentials it has."""
        if not 0 < heartbeat_s < silence_timeout_s:
            # Otherwise a quiet but healthy connection would look silent.
            raise ValueError("need 0 < heartbeat_s < silence_timeout_s")
        if not 0 < reconnect_initial_s <= reconnect_max_s:
            raise ValueError("need 0 < reconnect_initial_s <= reconnect_max_s")
        if call_timeout_s <= 0:
            raise ValueError("call_timeout_s must be positive")
        self.url = with_default_path(url, WS_PATH)
        try:
            parse_uri(self.url)  # fail here, not in an endless reconnect loop
        except InvalidURI:
            raise ValueError(f"not a ws:// or wss:// URL: {self.url!r}") from None
        self._credentials = credentials
        self._refresh_credentials = refresh_credentials
        self._heartbeat_s = heartbeat_s
        self._silence_s = silence_timeout_s
        self._reconnect_initial_s = reconnect_initial_s
        self._reconnect_max_s = reconnect_max_s
        self._call_timeout_s = call_timeout_s
        self._budget = rate_budget
        self._compression = "deflate" if compress else None
        self._ids = itertools.count(1)
        self._ws: ClientConnection | None = None
        self._ready = asyncio.Event()  # connected, authenticated, re-subscribed (or closing)
        self._pending: dict[int, asyncio.Future[tuple[dict[str, Any], bytes]]] = {}
        self._subs: list[Subscription] = []
        self._subs_by_channel: dict[str, list[Subscription]] = {}
        self._sub_lock = asyncio.Lock()
        self._cleanups: set[asyncio.Task[None]] = set()  # unsubscribes after a failed or cancelled subscribe
        # Notifications that arrive before a (re)connection is resynced wait here, so
        # `Reconnected` reaches consumers before any message of the new connection.
        self._buffering = True
        self._buffer: list[tuple[str, Any, bytes, int]] = []
        self._last_rx = time.monotonic()
        self._silenced = False  # the current connection was dropped for silence
        self._runner: asyncio.Task[None] | None = None
        self._started: asyncio.Future[None] | None = None
        self._closing = False
        self.reconnects = 0

    def __repr__(self) -> str:
        return (f"SyndrWebSocket({self.url!r}, credentials={self._credentials!r}, connected={self.connected}, "
                f"subscriptions={len(self._subs)})")

    @property
    def connected(self) -> bool:
        """Connected, authenticated and re-subscribed."""
        return self._ready.is_set() and not self._closing

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Connect (retrying with backoff) and authenticate; return once calls can be made.

        Raises the venue's error if it refuses the credentials on the first
        connection. If `start` fails or is cancelled, the client is closed.
        """
        if self._closing:
            raise SyndrConnectionError("client is closed")
        if self._runner is None:
            self._started = asyncio.get_running_loop().create_future()
            self._runner = asyncio.create_task(self._run_guarded(), name=f"syndr-ws {self.url}")
        assert self._started is not None
        try:
            await asyncio.shield(self._started)
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        """Stop reconnecting, close the socket, fail calls in flight and end every subscription."""
        if self._closing:
            return
        self._closing = True
        await cancel_and_wait(self._runner)
        for cleanup in list(self._cleanups):
            await cancel_and_wait(cleanup)
        if self._ws is not None:  # the runner closes it; this covers a runner that never started
            await self._ws.close()
            self._ws = None
        self._fail_pending("client closed")
        for sub in self._subs:
            sub._end()
        self._subs.clear()
        self._subs_by_channel.clear()
        if self._started is not None and not self._started.done():
            self._started.set_exception(SyndrConnectionError("client closed before connecting"))
            self._started.exception()  # retrieved: start() may not be awaiting it
        self._ready.set()  # wake callers waiting for a connection; they see `_closing`

    # ------------------------------------------------------------------ calls

    async def call(self, method: str, params: Mapping[str, Any] | None = None, *,
                   timeout_s: float | None = None) -> RpcResult:
        """Send one JSON-RPC call over the socket and wait for its answer.

        Waits (within the timeout) for a connection if one is being
        re-established; raises `SyndrConnectionError` if none comes or if the
        connection drops before the answer (outcome unknown), `SyndrTimeout`
        if the answer is late.
        """
        if self._closing:
            raise SyndrConnectionError(f"{method}: client is closed")
        if method.startswith("private/") and self._credentials is None:
            raise SyndrAuthError(ErrorCode.UNAUTHORIZED, "no API credentials configured", method=method)
        limit_s = self._call_timeout_s if timeout_s is None else timeout_s
        try:
            async with asyncio.timeout(limit_s):
                await self._ready.wait()
        except TimeoutError:
            raise SyndrConnectionError(f"{method}: not connected within {limit_s:g} s") from None
        ws = self._ws
        if self._closing or ws is None:
            raise SyndrConnectionError(f"{method}: client is closed")
        return await self._call_on(ws, method, params, limit_s)

    async def _call_on(self, ws: ClientConnection, method: str, params: Mapping[str, Any] | None,
                       limit_s: float) -> RpcResult:
        """Budget, span and one request/response on a given connection."""
        if self._budget is not None:  # credits may take up to the timeout; then the venue has its own timeout
            await self._budget.acquire(method, timeout_s=limit_s)
        attributes: dict[str, str | int] = {"rpc.system": "jsonrpc", "rpc.method": method,
                                            "rpc.jsonrpc.version": "2.0", "network.transport": "websocket"}
        with tracer.start_as_current_span(method, kind=SpanKind.CLIENT, attributes=attributes,
                                          record_exception=False, set_status_on_exception=False) as span:
            try:
                request_id = next(self._ids)
                span.set_attribute("rpc.jsonrpc.request_id", str(request_id))
                answer, raw = await self._exchange(ws, method, request_id, params, limit_s)
                result = parse_response(answer, raw, method=method, credentials=self._credentials)
                record_result_on_span(span, result)
                return result
            except SyndrError as exc:
                record_error_on_span(span, exc)
                raise

    async def _exchange(self, ws: ClientConnection, method: str, request_id: int,
                        params: Mapping[str, Any] | None, limit_s: float) -> tuple[dict[str, Any], bytes]:
        future: asyncio.Future[tuple[dict[str, Any], bytes]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        body = orjson.dumps({"jsonrpc": "2.0", "id": request_id, "method": method,
                             "params": dict(params) if params is not None else {}})
        try:
            async with asyncio.timeout(limit_s):
                try:
                    await ws.send(body, text=True)
                except ConnectionClosed:
                    raise SyndrConnectionError(f"{method}: connection closed before sending") from None
                return await future
        except TimeoutError:
            raise SyndrTimeout(f"{method}: no answer within {limit_s:g} s") from None
        finally:
            self._pending.pop(request_id, None)

    def _fail_pending(self, reason: str) -> None:
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(SyndrConnectionError(f"connection lost ({reason}); outcome unknown"))
                future.exception()  # mark retrieved: the caller may have timed out already

    # ------------------------------------------------------------------ subscriptions

    async def subscribe(self, channels: Sequence[str], *, max_queue: int = DEFAULT_MAX_QUEUE,
                        on_event: Callable[[WsEvent], None] | None = None) -> Subscription:
        """Subscribe to `channels` (`private/subscribe` for `user.*`, `public/subscribe` otherwise).

        Channels already subscribed upstream by another `Subscription` are
        shared, not subscribed again. `max_queue` bounds this subscription's
        backlog (see `Overflow`). With `on_event`, every event is passed to it
        synchronously as its frame is read instead of being queued: it must
        return quickly and never block (events of this call may arrive before
        `subscribe` returns).
        """
        if isinstance(channels, str):
            raise TypeError("channels must be a sequence of channel names, not a string")
        wanted = tuple(dict.fromkeys(channels))
        if not wanted:
            raise ValueError("no channels")
        if max_queue < 2:
            raise ValueError("max_queue must be >= 2")
        if self._closing:
            raise SyndrConnectionError("client is closed")
        if self._credentials is None and any(_is_private(c) for c in wanted):
            raise SyndrAuthError(ErrorCode.UNAUTHORIZED, "no API credentials configured", method="private/subscribe")
        sub = Subscription(self, wanted, max_queue, on_event)
        async with self._sub_lock:
            new = [c for c in wanted if not self._subs_by_channel.get(c)]
            # Attach first: notifications can arrive before the subscribe answer.
            self._subs.append(sub)
            for channel in wanted:
                self._subs_by_channel.setdefault(channel, []).append(sub)
            try:
                await self._upstream("subscribe", new)
                if sub._refusal is not None:  # waited for a reconnect whose re-subscribe the venue refused
                    raise sub._refusal.error
            except BaseException:
                self._detach(sub)
                sub._end()
                orphaned = [c for c in wanted if not self._subs_by_channel.get(c)]
                # Cancelled or failed after the request went out (an answer too late, a second chunk refused):
                # the venue may have subscribed them, and would go on streaming them to nobody. Undone in a task
                # of its own: this one may be cancelled, and holds the lock.
                if orphaned and not self._closing:
                    cleanup = asyncio.create_task(self._unsubscribe_orphans(orphaned), name="syndr-ws-unsubscribe")
                    self._cleanups.add(cleanup)
                    cleanup.add_done_callback(self._cleanups.discard)
                raise
        return sub

    async def _release(self, sub: Subscription) -> None:
        if sub.closed:
            return
        orphaned = self._detach(sub)
        sub._end()
        if orphaned and not self._closing:
            await self._unsubscribe_orphans(orphaned)

    async def _unsubscribe_orphans(self, channels: list[str]) -> None:
        """Unsubscribe those of `channels` that no subscription needs (any more) on the live connection."""
        async with self._sub_lock:
            # Someone may have subscribed again while we waited for the lock.
            orphaned = [c for c in channels if not self._subs_by_channel.get(c)]
            if not orphaned or not self.connected:
                return  # not connected: the next connection does not subscribe them (`_resync` sees to it)
            try:
                await self._upstream("unsubscribe", orphaned)
            except SyndrError as exc:
                log.info("unsubscribe of %d channel(s) failed: %s", len(orphaned), exc)

    def _detach(self, sub: Subscription) -> list[str]:
        """Remove `sub` from the routing tables; return the channels nobody needs any more."""
        with contextlib.suppress(ValueError):
            self._subs.remove(sub)
        orphaned: list[str] = []
        for channel in sub.channels:
            subs = self._subs_by_channel.get(channel)
            if subs is None:
                continue
            with contextlib.suppress(ValueError):
                subs.remove(sub)
            if not subs:
                del self._subs_by_channel[channel]
                orphaned.append(channel)
        return orphaned

    async def _upstream(self, action: str, channels: Sequence[str]) -> None:
        for method, group in _by_visibility(action, channels):
            result = await self.call(method, {"channels": group})
            _warn_missing(method, group, result.result)

    # ------------------------------------------------------------------ connection

    async def _run_guarded(self) -> None:
        """`_run`, but a bug in it fails `start()` and ends subscriptions instead of hanging them."""
        try:
            await self._run()
        except Exception as exc:
            log.exception("syndr websocket runner crashed")
            if self._started is not None and not self._started.done():
                self._started.set_exception(SyndrConnectionError(f"websocket runner crashed: {type(exc).__name__}"))
            self._fail_pending("runner crashed")
            for sub in list(self._subs):
                sub._deliver(Disconnected("runner crashed"))
                sub._end()

    async def _run(self) -> None:
        """Connect, resync, serve until the connection drops; repeat until closed.

        The pause before a reconnect grows with the failed attempts since the last connection went live, and
        with the connections in a row that dropped within `reconnect_max_s` of going live (`flaps`): a venue
        that accepts and then drops every connection is not reconnected to at the shortest pause for ever.
        The first failed attempt (connect or resync) of an outage is logged at WARNING, the others at DEBUG: a
        venue away for hours is not one warning per pause per connection; the reconnect is logged at INFO.
        """
        attempt = 0
        flaps = 0
        ever_ready = False
        warned = False  # a failed attempt of this outage was logged at WARNING: the others go to DEBUG
        while not self._closing:
            attempt += 1
            if ever_ready or attempt > 1:
                steps = (attempt if ever_ready else attempt - 1) + flaps
                await asyncio.sleep(backoff_s(steps, self._reconnect_initial_s, self._reconnect_max_s))
            try:
                ws = await connect(self.url, open_timeout=self._call_timeout_s, ping_interval=None,
                                   ping_timeout=None, close_timeout=_CLOSE_TIMEOUT_S, max_size=_MAX_FRAME_BYTES,
                                   compression=self._compression, logger=_wire_log)
            except (OSError, TimeoutError, WebSocketException) as exc:
                log.log(logging.DEBUG if warned else logging.WARNING, "syndr websocket connect attempt %d failed: %s",
                        attempt, _describe(exc))
                warned = True
                continue
            self._ws = ws
            self._buffering = True
            self._buffer.clear()
            self._last_rx = time.monotonic()
            self._silenced = False
            reader = asyncio.create_task(self._read(ws), name="syndr-ws-reader")
            heartbeat = asyncio.create_task(self._heartbeat(ws), name="syndr-ws-heartbeat")
            watchdog = asyncio.create_task(self._watch_silence(ws), name="syndr-ws-silence")
            try:
                try:
                    await self._resync(ws, reconnecting=ever_ready or attempt > 1)
                except _TRANSIENT as exc:
                    log.log(logging.DEBUG if warned else logging.WARNING, "syndr websocket resync failed: %s", exc)
                    warned = True
                    continue
                except SyndrRpcError as exc:
                    if not ever_ready and self._started is not None and not self._started.done():
                        self._started.set_exception(exc)  # e.g. credentials refused: retrying will not help
                        return
                    log.error("syndr websocket resync refused: %s", exc)
                    continue
                except SyndrError as exc:
                    log.log(logging.DEBUG if warned else logging.WARNING, "syndr websocket resync failed: %s", exc)
                    warned = True
                    continue
                if warned and not ever_ready:
                    log.info("syndr websocket connected after %d attempt(s)", attempt)
                self._go_live(attempt if ever_ready else 0)
                ever_ready, attempt, warned = True, 0, False
                live_since = time.monotonic()
                if self._started is not None and not self._started.done():
                    self._started.set_result(None)
                reason = await reader
                flaps = flaps + 1 if time.monotonic() - live_since < self._reconnect_max_s else 0
                log.warning("syndr websocket disconnected: %s", reason)
                for sub in list(self._subs):
                    sub._deliver(Disconnected(reason))
            finally:
                self._ready.clear()
                self._buffering = True
                heartbeat.cancel()
                watchdog.cancel()
                reader.cancel()
                await asyncio.gather(heartbeat, watchdog, reader, return_exceptions=True)
                self._ws = None
                with contextlib.suppress(Exception):
                    await ws.close()

    async def _resync(self, ws: ClientConnection, *, reconnecting: bool = False) -> None:
        """Authenticate (with refreshed credentials after a reconnect), then re-subscribe every channel."""
        if reconnecting and self._credentials is not None and self._refresh_credentials is not None:
            try:
                current = await self._refresh_credentials()
            except Exception as exc:  # Vault away, say: the key we have may still be good
                log.warning("syndr websocket kept its credentials: refreshing them failed (%s)", type(exc).__name__)
            else:
                if current != self._credentials:
                    log.info("syndr websocket re-authenticates with the account's new API key")
                    self._credentials = current
        if self._credentials is not None:
            await self._call_on(ws, "public/auth", self._credentials.auth_params(), self._call_timeout_s)
        subscribed: list[str] = []
        for method, group in _by_visibility("subscribe", list(self._subs_by_channel)):
            await self._resubscribe(ws, method, group, subscribed)
        # Subscriptions closed (or ended by a refusal) meanwhile did not unsubscribe (not connected yet), but the
        # calls above may have subscribed their channels: undo that, until no more were closed while we did (no
        # await after this).
        while released := [c for c in subscribed if not self._subs_by_channel.get(c)]:
            gone = set(released)
            subscribed = [c for c in subscribed if c not in gone]
            for method, group in _by_visibility("unsubscribe", released):
                try:
                    await self._call_on(ws, method, {"channels": group}, self._call_timeout_s)
                except SyndrRpcError as exc:
                    log.info("unsubscribe of %d channel(s) failed: %s", len(group), exc)

    async def _resubscribe(self, ws: ClientConnection, method: str, channels: list[str],
                           subscribed: list[str]) -> None:
        """Subscribe `channels` again on a new connection, adding those the venue took to `subscribed`.

        The venue refuses a call whole when it refuses one channel in it (say its instrument went while we were
        away), so a refused call is halved until each channel it refuses stands alone: the others are subscribed
        again in a few calls, and each subscription that needs a refused channel ends (`ChannelRefused`). A
        failure that refuses nothing for good (rate limit, the venue's internal error) raises: another
        connection tries again, rather than leave the channels silent.
        """
        wanted = [c for c in channels if self._subs_by_channel.get(c)]  # not those nobody needs any more
        if not wanted:
            return
        try:
            result = await self._call_on(ws, method, {"channels": wanted}, self._call_timeout_s)
        except SyndrRpcError as exc:
            if isinstance(exc, _TRANSIENT):
                raise
            if len(wanted) == 1:
                self._refuse(wanted[0], exc)
                return
            half = len(wanted) // 2
            await self._resubscribe(ws, method, wanted[:half], subscribed)
            await self._resubscribe(ws, method, wanted[half:], subscribed)
            return
        subscribed.extend(wanted)
        _warn_missing(method, wanted, result.result)

    def _refuse(self, channel: str, error: SyndrRpcError) -> None:
        """End every subscription that needs `channel`, which the venue refused to subscribe again (no await)."""
        subs = list(self._subs_by_channel.get(channel, ()))
        log.warning("syndr websocket: the venue refused to re-subscribe %s (%s); %d subscription(s) end",
                    channel, error, len(subs))
        event = ChannelRefused(channel, error)
        for sub in subs:
            self._detach(sub)  # its other channels are unsubscribed by `_resync` if nobody else needs them
            sub._refusal = event
            sub._deliver(event)
            sub._end()

    def _go_live(self, reconnect_attempt: int) -> None:
        """Announce `Reconnected`, then release buffered messages, then open for calls (no await between)."""
        if reconnect_attempt:
            self.reconnects += 1
            log.info("syndr websocket reconnected after %d attempt(s)", reconnect_attempt)
            for sub in list(self._subs):
                sub._deliver(Reconnected(reconnect_attempt))
        buffered, self._buffer = self._buffer, []
        self._buffering = False
        for channel, data, raw, received_ns in buffered:
            self._route(channel, data, raw, received_ns)
        self._ready.set()

    async def _read(self, ws: ClientConnection) -> str:
        """Own the socket's receive side until it closes or goes silent; return why it ended."""
        handled = 0
        try:
            while True:
                frame = await ws.recv(decode=False)  # returns without suspending while frames are buffered
                self._last_rx = time.monotonic()
                try:
                    self._on_frame(frame, time.time_ns())
                except Exception:  # a bug in one frame's handling must not kill the connection
                    log.exception("syndr websocket frame handling failed")
                handled += 1
                if handled >= _YIELD_EVERY:  # a backlog: let consumers of what we delivered run once
                    handled = 0
                    await asyncio.sleep(0)
        except ConnectionClosed as exc:
            if self._silenced:
                return f"no frame for {self._silence_s:g} s"
            return _describe(exc)
        finally:
            self._ready.clear()
            self._fail_pending("connection closed")

    async def _watch_silence(self, ws: ClientConnection) -> None:
        """Drop the connection once no frame (data or pong) has arrived for `silence_timeout_s`.

        One task sleeping until the deadline, re-checked against `_last_rx`:
        cheaper than a timeout around every read.
        """
        while True:
            remaining = self._last_rx + self._silence_s - time.monotonic()
            if remaining <= 0:
                self._silenced = True
                ws.transport.abort()  # a silent peer will not complete a close handshake; the reader ends
                return
            await asyncio.sleep(remaining)

    async def _heartbeat(self, ws: ClientConnection) -> None:
        """Ping every `heartbeat_s`; each pong counts as a received frame for silence detection."""
        while True:
            await asyncio.sleep(self._heartbeat_s)
            try:
                pong = asyncio.ensure_future(await ws.ping())
            except ConnectionClosed:
                return
            pong.add_done_callback(self._on_pong)

    def _on_pong(self, pong: asyncio.Future[float]) -> None:
        if not pong.cancelled() and pong.exception() is None:
            self._last_rx = time.monotonic()

    def _on_frame(self, frame: bytes, received_ns: int) -> None:
        try:
            message = orjson.loads(frame)
        except orjson.JSONDecodeError:
            log.warning("syndr websocket: undecodable frame (%d bytes) ignored", len(frame))
            return
        if not isinstance(message, dict):
            log.warning("syndr websocket: non-object frame ignored")
            return
        if message.get("method") in NOTIFICATION_METHODS:
            params = message.get("params")
            channel = params.get("channel") if isinstance(params, dict) else None
            if not isinstance(channel, str) or not isinstance(params, dict):
                log.warning("syndr websocket: notification without channel ignored")
                return
            if self._buffering:
                self._buffer.append((channel, params.get("data"), frame, received_ns))
            else:
                self._route(channel, params.get("data"), frame, received_ns)
            return
        request_id = message.get("id")
        future = self._pending.get(request_id) if isinstance(request_id, int) else None
        if future is not None:
            if not future.done():
                future.set_result((message, frame))
        elif "result" in message or "error" in message:
            log.debug("syndr websocket: answer to unknown or expired request id ignored")
        else:
            log.debug("syndr websocket: unexpected frame ignored")

    def _route(self, channel: str, data: Any, raw: bytes, received_ns: int) -> None:
        subs = self._subs_by_channel.get(channel, ())
        alias = _all_channel_of(channel) if _is_private(channel) else None  # not for every book frame
        if alias is not None and alias in self._subs_by_channel:
            subs = [*subs, *(s for s in self._subs_by_channel[alias] if s not in subs)]
        for sub in subs:
            sub._deliver_message(channel, data, raw, received_ns)


def _all_channel_of(channel: str) -> str | None:
    """The ALL channel whose subscribers also get a frame of a private `user.*` channel named after one
    instrument: the document's user.fills.ALL example names its frame user.fills.ETH-PERP (its
    user.orders.ALL.raw and user.bursts.ALL examples name the ALL channel), so a venue doing so must not leave
    an ALL subscriber without its fills."""
    parts = channel.split(".")
    if len(parts) == 3 and parts[1] in ("fills", "bursts") and parts[2] != "ALL":
        return f"user.{parts[1]}.ALL"
    if len(parts) == 4 and parts[1] == "orders" and parts[3] == "raw" and parts[2] != "ALL":
        return "user.orders.ALL.raw"
    return None


def _is_private(channel: str) -> bool:
    return channel.startswith("user.")


def _by_visibility(action: str, channels: Sequence[str]) -> list[tuple[str, list[str]]]:
    """(method, channel chunk) pairs: `private/<action>` for `user.*`, `public/<action>` for the rest."""
    calls: list[tuple[str, list[str]]] = []
    for prefix, private in (("private", True), ("public", False)):
        group = [c for c in channels if _is_private(c) == private]
        for start in range(0, len(group), _SUBSCRIBE_CHUNK):
            calls.append((f"{prefix}/{action}", group[start:start + _SUBSCRIBE_CHUNK]))
    return calls


def _warn_missing(method: str, requested: Sequence[str], result: Any) -> None:
    """The venue answers with the channels it (un)subscribed; say so if some are missing."""
    if not isinstance(result, list):
        raise SyndrProtocolError(f"{method}: result is not a list of channels")
    missing = set(requested) - set(result)
    if missing:
        log.warning("%s: venue did not confirm %d channel(s): %s", method, len(missing), sorted(missing)[:10])


def _describe(exc: BaseException) -> str:
    """Short, secret-free text for a connection failure."""
    if isinstance(exc, ConnectionClosed):
        if exc.rcvd is not None:
            return f"closed by venue (code {exc.rcvd.code}{', ' + exc.rcvd.reason if exc.rcvd.reason else ''})"
        return "connection lost (no close frame)"
    return f"{type(exc).__name__}: {exc}"[:200]
