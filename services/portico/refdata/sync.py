"""Syncing a venue's instruments into the store, and telling watchers what changed.

A sync fetches the venue's whole list (Syndr's `public/get_instruments` once
per kind, `perpetual`, `option` and `future`: whether `any` is a value of this
method's `kind` the document leaves unclear, its row reading "perpetual,
option, future, any kind of instrument you want for the list", and a call per
kind works either way; only active instruments are listed, and one marked
`is_active: false` counts as not listed), normalises it, and hands it to the
store, which diffs and writes in one transaction, then publishes the events to
watchers. An instrument the listing carries but this service cannot read (a
required field missing, a field of the wrong type, a malformed number, a name
or currency it cannot normalise) is left out, with a warning naming it and
what was wrong, and the rest synced: to a full sync it is then not listed, so
one known here is deactivated (no trading on terms we cannot read) until a
listing that reads again makes it active; the sync reports how many it
skipped. Once the write has started, a cancelled caller (deadline, disconnect)
does not stop it or its publication: the database and the watchers never
disagree. Syncs of one venue are serialised, fetch included, in this process by
a lock and across processes by the store, so concurrent requests neither
corrupt nor double-count nor commit an older listing over a newer one: the
second one fetches after the first one committed and reports what is left to
change (usually nothing).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Final

from portico.refdata.model import InstrumentRecord
from portico.refdata.normalize import normalize_syndr
from portico.refdata.store import InstrumentEvent, InstrumentStore, SyncOutcome
from portico.runtime.errors import FailedPrecondition, Internal, InvalidArgument, ResourceExhausted, Unavailable
from portico.venues.syndr import models
from portico.venues.syndr.constants import InstrumentKind
from portico.venues.syndr.errors import SyndrError, to_portico_error
from portico.venues.syndr.http import SyndrHttpClient

__all__ = ["EventHub", "InstrumentSyncer", "Listing", "Subscription", "SyndrInstrumentSource", "VenueSource"]

log = logging.getLogger("portico.refdata.sync")


@dataclass(frozen=True, slots=True)
class Listing:
    """A venue's listing as a source read it: the records to sync, and the listed instruments it could not
    read (their names where readable, and what was wrong), which are left out of the sync."""

    records: list[InstrumentRecord]
    unreadable: tuple[models.UnreadableInstrument, ...] = ()


VenueSource = Callable[[], Awaitable[Listing]]


# A failed sync is tried again after this, the pause doubling up to the maximum (or the sync interval).
_RETRY_S: Final = 1.0
_RETRY_MAX_S: Final = 60.0


class SyndrInstrumentSource:
    """Every instrument Syndr lists as active, normalised; an empty listing is an error, not "delist all"."""

    def __init__(self, client: SyndrHttpClient):
        self._client = client

    async def __call__(self) -> Listing:
        """One call per kind, all of which must succeed: a kind missing from the listing would be deactivated.

        An instrument that cannot be read (`parse_instruments_readable`, `normalize_syndr`) is logged and left
        out rather than failing the whole sync: it is then as good as not listed, so a full sync deactivates
        it if it was known, the safe side (no trading on terms we cannot read), and the next listing that
        reads makes it active again. A listing that is not an object or an array fails the sync (a protocol
        error), and so does one with nothing readable and active in it (EMPTY_LISTING).
        """
        listed: dict[str, models.Instrument] = {}
        unreadable: list[models.UnreadableInstrument] = []
        try:
            for kind in InstrumentKind:  # not "any": the document does not clearly make it a value here
                answer = await self._client.call("public/get_instruments", {"kind": kind.value})
                readable, unread = models.parse_instruments_readable(answer.result)
                listed.update(readable)
                unreadable.extend(unread)
        except SyndrError as exc:
            raise _listing_error(exc) from None
        count = len(listed) + len(unreadable)
        records = []
        inactive = 0
        for name, instrument in listed.items():
            if not instrument.is_active:  # listed but not tradable: as good as not listed (a full sync deactivates)
                inactive += 1
                continue
            try:
                records.append(normalize_syndr(instrument))
            except ValueError as exc:  # a name (or currency) we cannot read
                unreadable.append(models.UnreadableInstrument(name=name, error=str(exc)))
        for skipped in unreadable:
            log.warning("skipping an instrument that cannot be read (a full sync deactivates it if known)",
                        extra={"venue": "syndr", "symbol": skipped.name or "(no readable name)",
                               "error": skipped.error})
        if not records and not inactive:
            # Nothing listed, or nothing readable: a glitch far likelier than a venue with no instruments, and a
            # full sync of it would deactivate every instrument (execution refusing every order) until the next.
            raise Unavailable(f"syndr listed no instrument this service can read ({count} listed, "
                              f"{len(unreadable)} unreadable); nothing was changed", reason="EMPTY_LISTING")
        return Listing(records, tuple(unreadable))


def _listing_error(exc: SyndrError) -> Exception:
    """What a failed listing call is to the caller of a sync: the call carried nothing of theirs, so a venue
    refusing it (invalid params, not found, ...) is not their bad request (INVALID_ARGUMENT, a 400 over REST
    saying their venue is invalid) but the venue's listing being unavailable."""
    error = to_portico_error(exc)
    if isinstance(error, ResourceExhausted | Unavailable | Internal):
        return error
    metadata = {k: v for k, v in error.metadata.items() if k != "field"}
    return Unavailable(f"syndr refused to list its instruments: {exc}", reason=error.reason, metadata=metadata)


def _refuse_unreadable(venue: str, symbols: Sequence[str],
                       unreadable: Sequence[models.UnreadableInstrument]) -> None:
    """A sync of named symbols naming one the venue lists but this service cannot read fails, saying so: not
    "not listed" (UNKNOWN_SYMBOL, the caller's mistake), and not a success that leaves its terms unchanged.
    INTERNAL with reason VENUE_PROTOCOL_ERROR, as a listing that cannot be read at all is."""
    why = {u.name: u.error for u in unreadable if u.name is not None}
    named = [s for s in symbols if s in why]
    if named:
        raise Internal(f"{venue} lists {', '.join(named)} but this service cannot read it: "
                       f"{'; '.join(why[s] for s in named)}; nothing was changed", reason="VENUE_PROTOCOL_ERROR",
                       metadata={"venue": venue, "symbols": ",".join(named)})


class Subscription:
    """One watcher's bounded queue, registered with its hub from creation until `close`.

    Registration is eager (not on first iteration) so that a stream can register first and only then tell
    its client it is open: every event published after `EventHub.subscribe` returns is in this queue.
    Iterate it for batches of events, in order.
    """

    def __init__(self, hub: EventHub, venue: str, queue_size: int, batch: int):
        self.venue = venue
        self.queue: asyncio.Queue[InstrumentEvent] = asyncio.Queue(queue_size)
        self.overflowed = False
        self._hub = hub
        self._batch = batch
        self._closed = False

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> list[InstrumentEvent]:
        if self._closed:
            raise StopAsyncIteration
        events = [await self.queue.get()]
        while len(events) < self._batch and not self.queue.empty():
            events.append(self.queue.get_nowait())
        if self.overflowed:
            raise ResourceExhausted("the watcher fell too far behind; watch again and re-list",
                                    reason="WATCHER_TOO_SLOW")
        return events

    def close(self) -> None:
        """Unregister (idempotent); events published from now on no longer reach this queue."""
        if not self._closed:
            self._closed = True
            self._hub._unregister(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventHub:
    """Fan-out of instrument events to WatchInstruments streams, one bounded queue each."""

    def __init__(self, queue_size: int = 100_000):
        self._queue_size = queue_size
        self._watchers: dict[str, set[Subscription]] = {}

    def publish(self, venue: str, events: Sequence[InstrumentEvent]) -> None:
        for watcher in tuple(self._watchers.get(venue, ())):
            for event in events:
                try:
                    watcher.queue.put_nowait(event)
                except asyncio.QueueFull:
                    watcher.overflowed = True  # the stream ends with RESOURCE_EXHAUSTED, never silently short
                    break

    def subscribe(self, venue: str, batch: int = 500) -> Subscription:
        """A watcher of `venue`, registered before this returns; close it (or use `with`) when done."""
        subscription = Subscription(self, venue, self._queue_size, batch)
        self._watchers.setdefault(venue, set()).add(subscription)
        return subscription

    def _unregister(self, subscription: Subscription) -> None:
        watchers = self._watchers.get(subscription.venue)
        if watchers is not None:
            watchers.discard(subscription)
            if not watchers:
                del self._watchers[subscription.venue]

    def watchers(self, venue: str) -> int:
        return len(self._watchers.get(venue, ()))


class InstrumentSyncer:
    """Runs syncs: validates the request, fetches, stores, publishes."""

    def __init__(self, store: InstrumentStore, sources: Mapping[str, VenueSource], hub: EventHub,
                 *, now_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000, served: Iterable[str] = ()):
        """`sources`: the venues this service syncs; `served`: further venues whose stored instruments it
        serves without syncing them (`PORTICO_REFDATA_VENUES` leaves them out)."""
        self._store = store
        self._sources = dict(sources)
        self._served = frozenset(served) | frozenset(self._sources)
        self._hub = hub
        self._now_ms = now_ms
        self._locks = {venue: asyncio.Lock() for venue in self._sources}

    @property
    def venues(self) -> tuple[str, ...]:
        return tuple(self._sources)

    def check_venue(self, venue: str, field: str = "venue") -> str:
        """The canonical venue id, or INVALID_ARGUMENT naming the field."""
        canonical = venue.strip().lower()
        if canonical not in self._served:
            known = ", ".join(sorted(self._served)) or "none"
            raise InvalidArgument(field, f"unknown venue {venue!r} (known: {known})", reason="UNKNOWN_VENUE")
        return canonical

    async def sync(self, venue: str, symbols: Sequence[str] = ()) -> tuple[str, SyncOutcome]:
        canonical = self.check_venue(venue)
        if canonical not in self._sources:
            raise FailedPrecondition(f"this service does not sync {canonical} (PORTICO_REFDATA_VENUES)",
                                     reason="VENUE_NOT_SYNCED", metadata={"venue": canonical})
        full = not symbols
        # The listing is fetched under the venue's locks (this process's, then the store's across processes):
        # a sync that fetched earlier must never commit after one that fetched later, or it would revert the
        # newer terms (a tick size) and deactivate instruments listed in between.
        async with self._locks[canonical], self._store.venue_sync_lock(canonical):
            listing = await self._sources[canonical]()
            records = listing.records
            if symbols:
                by_symbol = {r.symbol: r for r in records}
                unknown = [s for s in symbols if s not in by_symbol]
                _refuse_unreadable(canonical, unknown, listing.unreadable)
                if unknown:
                    raise InvalidArgument("symbols", f"{canonical} does not list {', '.join(unknown)}",
                                          reason="UNKNOWN_SYMBOL", metadata={"symbols": ",".join(unknown)})
                records = [by_symbol[s] for s in dict.fromkeys(symbols)]
            outcome = await self._write(canonical, records, full)
        if full:  # a sync of named symbols fails instead if one cannot be read: it leaves nothing out
            outcome = replace(outcome, skipped=len(listing.unreadable))
        log.info("synced", extra={"venue": canonical, "synced": outcome.synced, "added": outcome.added,
                                  "updated": outcome.updated, "deactivated": outcome.deactivated,
                                  "skipped": outcome.skipped, "full": full})
        return canonical, outcome

    async def _write(self, venue: str, records: Sequence[InstrumentRecord], full: bool) -> SyncOutcome:
        """Store the listing and publish what changed, to the end even if the caller is cancelled meanwhile.

        Once the write has started it may commit whatever happens to the caller (SQLite's runs on the store's
        thread), and a commit whose events were never published would leave watchers (market data, execution)
        on the old terms. So a cancellation waits for the write and its publication, under the venue's locks
        (the next sync still commits after this one), and is raised afterwards.
        """
        write = asyncio.ensure_future(self._store.sync_venue(venue, records, full=full, now_ms=self._now_ms()))
        cancelled = False
        while not write.done():
            try:
                await asyncio.wait((write,))
            except asyncio.CancelledError:
                cancelled = True
        if write.exception() is None:
            self._hub.publish(venue, write.result().events)
        if cancelled:
            raise asyncio.CancelledError
        return write.result()

    async def sync_all(self) -> bool:
        """Sync every venue; one venue failing does not stop the others. True if none failed."""
        synced = True
        for venue in self._sources:
            try:
                await self.sync(venue)
            except Exception as exc:  # logged; `run_every` tries again
                synced = False
                log.warning("sync failed", extra={"venue": venue, "error": str(exc)})
        return synced

    async def run_every(self, interval_s: float, *, failed: bool = False) -> None:
        """Sync every `interval_s` (0: only until a sync succeeds). After a failed sync (`failed`: the one at
        start) the next comes sooner, after `_RETRY_S` doubling up to the interval: a venue that was not up yet
        when the service started must not leave it without instruments for a whole interval."""
        retry_s = _RETRY_S
        while failed or interval_s > 0:
            if failed:
                await asyncio.sleep(min(retry_s, interval_s) if interval_s > 0 else retry_s)
                retry_s = min(retry_s * 2, _RETRY_MAX_S)
            else:
                await asyncio.sleep(interval_s)
                retry_s = _RETRY_S
            failed = not await self.sync_all()
