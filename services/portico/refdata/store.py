"""The instrument database: versioned schema, diffing sync, filtered keyset listing.

Two backends behind one interface, chosen by `open_store` (a PostgreSQL DSN
wins over a SQLite path):

- `SqliteInstrumentStore`: the stdlib `sqlite3` module on ONE dedicated worker
  thread (a single-thread executor), so blocking database calls and the JSON
  decoding never run on the event loop, and the connection is only ever used
  by the thread that opened it. WAL journal: readers in other processes are not
  blocked by a sync.
- `PostgresInstrumentStore`: psycopg 3 async on an `AsyncConnectionPool`
  (autocommit connections; transactions are explicit, so a read is one round
  trip and never leaves a transaction open).

The worker thread, the pool and the migration runner are `portico.runtime.sqlstore`'s, shared with the
other SQL-backed stores.

Schema (see `MIGRATIONS`; versions in `schema_version`): `instruments` has one
row per (venue, symbol); the whole normalised record, change history included,
is the `record` JSON (TEXT in SQLite, `json` in PostgreSQL: never queried
inside, so `jsonb` would only cost a parse on write and a re-serialisation on
read, 3x slower on a 1000-record page). The columns next to it (base, quote,
type, contract type, active, update time) are copies of record fields so that
filters run in SQL on indexes; the JSON is the source of truth and is what the
store returns. History stays in the record rather than a table of its own: it
is small, always read with the record, never queried on its own. Symbols
compare bytewise (PostgreSQL `COLLATE "C"`, SQLite's BINARY), so both
backends and Python's own sort order a venue's symbols alike and keyset pages
are identical. Records are never deleted, only deactivated.

Syncs of one venue are serialised across processes, not just tasks: on
PostgreSQL by `pg_advisory_xact_lock(hashtext(venue))` taken first in the
sync's transaction, on SQLite by `BEGIN IMMEDIATE` (the database's single
writer lock, waited for up to `busy_timeout_s`). The diff is computed inside
that transaction from one bulk SELECT, so a second concurrent sync of the same
data sees the first one's result and reports nothing left to do. On
PostgreSQL `venue_sync_lock` (a session advisory lock in the two-key space)
also covers the fetch of the venue's listing, so that syncs in different
processes commit in the order they fetched.

The store owns the lifecycle fields (`active`, `available_since`,
`available_to`, `changes`, `update_time`): whatever the incoming records carry
there is ignored.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

import orjson

from portico.refdata.model import TRACKED_FIELDS, InstrumentChange, InstrumentFilter, InstrumentRecord
from portico.runtime.sqlstore import (
    Migration,
    Schema,
    SchemaVersionError,
    SqliteWorker,
    immediate_transaction,
    open_postgres_pool,
    pg_scalar,
)

if TYPE_CHECKING:  # psycopg is imported when a PostgreSQL store starts: the SQLite backend does not need it
    from portico.runtime.sqlstore import PostgresPool as _Pool

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "InstrumentEvent",
    "InstrumentStore",
    "Migration",
    "PostgresInstrumentStore",
    "SchemaVersionError",
    "SqliteInstrumentStore",
    "SyncOutcome",
    "open_store",
]

log = logging.getLogger("portico.refdata.store")

EventKind = Literal["added", "updated", "deactivated"]


@dataclass(frozen=True, slots=True)
class InstrumentEvent:
    """One change a sync made, with the record as it was stored."""

    kind: EventKind
    record: InstrumentRecord
    at_ms: int


@dataclass(frozen=True, slots=True)
class SyncOutcome:
    """What one sync did: counts, and the events in symbol order (for watchers). `skipped` (listed instruments
    that could not be read, left out) is the syncer's to fill: the store never sees them."""

    synced: int
    added: int
    updated: int
    deactivated: int
    events: tuple[InstrumentEvent, ...] = ()
    skipped: int = 0


# --------------------------------------------------------------------------------------------------------------
# Schema migrations (applied by `portico.runtime.sqlstore`)


_FILTER_INDEXES = (
    ("instruments_base", "base_currency"),
    ("instruments_quote", "quote_currency"),
    ("instruments_type", "type"),
    ("instruments_contract_type", "contract_type"),
    ("instruments_active", "active"),
)

# Append new steps at the end with the next version number; never edit a released step.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        version=1,
        description="instruments table with indexes for the list filters",
        sqlite=(
            """CREATE TABLE instruments (
                venue          TEXT    NOT NULL,
                symbol         TEXT    NOT NULL,
                base_currency  TEXT    NOT NULL,
                quote_currency TEXT    NOT NULL,
                type           TEXT    NOT NULL,
                contract_type  TEXT,
                active         INTEGER NOT NULL,
                record         TEXT    NOT NULL,
                update_time    INTEGER NOT NULL,
                PRIMARY KEY (venue, symbol)
            )""",
            # (venue, <column>, symbol): equality on the column, then symbols in order for the keyset.
            *(f"CREATE INDEX {name} ON instruments (venue, {column}, symbol)" for name, column in _FILTER_INDEXES),
            # Every filter column in symbol order: IN lists and combined filters are checked on this narrow index
            # and only matching rows are read from the (wide, JSON-carrying) table, instead of scanning the table.
            "CREATE INDEX instruments_listing ON instruments "
            "(venue, symbol, base_currency, quote_currency, type, contract_type, active)",
        ),
        postgres=(
            """CREATE TABLE instruments (
                venue          TEXT COLLATE "C" NOT NULL,
                symbol         TEXT COLLATE "C" NOT NULL,
                base_currency  TEXT    NOT NULL,
                quote_currency TEXT    NOT NULL,
                type           TEXT    NOT NULL,
                contract_type  TEXT,
                active         BOOLEAN NOT NULL,
                record         JSON    NOT NULL,
                update_time    BIGINT  NOT NULL,
                PRIMARY KEY (venue, symbol)
            )""",
            *(f"CREATE INDEX {name} ON instruments (venue, {column}, symbol)" for name, column in _FILTER_INDEXES),
        ),
    ),
)
SCHEMA = Schema("the instrument database", MIGRATIONS)  # checks the numbering; version table `schema_version`
SCHEMA_VERSION = SCHEMA.version


# --------------------------------------------------------------------------------------------------------------
# The diff, shared by both backends


_Row = tuple[str, str, str, str, str, str | None, bool, str, int]


@dataclass(frozen=True, slots=True)
class _Plan:
    rows: tuple[_Row, ...]  # to upsert
    outcome: SyncOutcome


def _check_records(venue: str, records: Sequence[InstrumentRecord]) -> None:
    seen: set[str] = set()
    for record in records:
        if record.venue != venue:
            raise ValueError(f"record {record.symbol!r} belongs to venue {record.venue!r}, not {venue!r}")
        if record.symbol in seen:
            raise ValueError(f"symbol {record.symbol!r} appears twice in one sync")
        seen.add(record.symbol)


def _plan_sync(records: Sequence[InstrumentRecord], stored: Mapping[str, InstrumentRecord], *, full: bool,
               now_ms: int) -> _Plan:
    """The records to write and the events, from the incoming records and the stored ones (same venue)."""
    writes: list[InstrumentRecord] = []
    events: list[InstrumentEvent] = []
    added = updated = deactivated = 0
    for incoming in records:
        old = stored.get(incoming.symbol)
        if old is None:
            new = incoming.with_lifecycle(active=True, available_since=now_ms, available_to=None, changes=(),
                                          update_time=now_ms)
            kind: EventKind = "added"
            added += 1
        else:
            if old.active and old.terms() == incoming.terms():
                continue  # identical and active: no write at all
            previous = {name: getattr(old, name) for name in TRACKED_FIELDS
                        if getattr(old, name) != getattr(incoming, name)}
            changes = (*old.changes, InstrumentChange(until_ms=now_ms, **previous)) if previous else old.changes
            new = incoming.with_lifecycle(active=True, available_since=old.available_since, available_to=None,
                                          changes=changes, update_time=now_ms)
            kind = "updated"
            updated += 1
        writes.append(new)
        events.append(InstrumentEvent(kind, new, now_ms))
    if full:
        listed = {record.symbol for record in records}
        for symbol, old in stored.items():
            if old.active and symbol not in listed:
                new = old.with_lifecycle(active=False, available_to=now_ms, update_time=now_ms)
                writes.append(new)
                events.append(InstrumentEvent("deactivated", new, now_ms))
                deactivated += 1
    events.sort(key=lambda event: event.record.symbol)
    outcome = SyncOutcome(synced=len(records), added=added, updated=updated, deactivated=deactivated,
                          events=tuple(events))
    return _Plan(tuple(_row(record) for record in writes), outcome)


class _DecodeCache:
    """Decoded records, keyed by their exact JSON text (thread-safe LRU).

    `from_json` costs ~20 us a record (nine Decimals, a frozen dataclass of 35 fields): most of a listing's
    time, 20 ms for a 1000-record page, and most of an unchanged re-sync. Records are immutable and the key is
    their whole content, so a hit can never be stale, whoever wrote the row. Writes prime it. About 3 KB an
    entry.
    """

    def __init__(self, size: int):
        self._size = size
        self._items: OrderedDict[str, InstrumentRecord] = OrderedDict()
        self._lock = threading.Lock()  # used from the event loop, the SQLite thread and diffing threads

    def decode(self, text: str) -> InstrumentRecord:
        with self._lock:
            record = self._items.get(text)
            if record is not None:
                self._items.move_to_end(text)
                return record
        record = InstrumentRecord.from_json(orjson.loads(text))
        self.put(text, record)
        return record

    def put(self, text: str, record: InstrumentRecord) -> None:
        with self._lock:
            self._items[text] = record
            self._items.move_to_end(text)
            if len(self._items) > self._size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


_CACHE = _DecodeCache(20_000)  # ~60 MB when full; shared by every store (the key says everything)
_decode = _CACHE.decode
_DECODE_ON_LOOP_MAX = 200  # PostgreSQL rows decoded on the event loop; more go to a thread


def _decode_rows(rows: Iterable[Sequence[Any]]) -> builtins.list[InstrumentRecord]:
    """The records of rows whose first column is the record's JSON text."""
    return [_decode(row[0]) for row in rows]


def _row(record: InstrumentRecord) -> _Row:
    """The `instruments` row of a record (SQLite stores the bool as 0/1 by itself)."""
    text = orjson.dumps(record.to_json()).decode()
    _CACHE.put(text, record)
    return (record.venue, record.symbol, record.base_currency, record.quote_currency, record.type,
            record.contract_type, record.active, text, record.update_time)


_COLUMNS = "venue, symbol, base_currency, quote_currency, type, contract_type, active, record, update_time"
_UPSERT_SET = ("base_currency = excluded.base_currency, quote_currency = excluded.quote_currency, "
               "type = excluded.type, contract_type = excluded.contract_type, active = excluded.active, "
               "record = excluded.record, update_time = excluded.update_time")
_FILTER_COLUMNS = (("base_currencies", "base_currency"), ("quote_currencies", "quote_currency"),
                   ("types", "type"), ("contract_types", "contract_type"))


# PostgreSQL planner statistics are refreshed after a sync that added or deactivated at least this many records
# and at least a tenth of the table. Without them, right after a first sync, the planner guesses a filter matches
# one row, fetches and sorts every match (10k wide rows for `type = option`) and a LIMIT 101 page takes ~8 ms
# instead of ~0.2 ms; autovacuum would only catch up a minute or so later. (SQLite's list query does not depend
# on statistics, see `SqliteInstrumentStore._list`.)
_ANALYZE_MIN_CHANGES = 50


def _worth_analyzing(outcome: SyncOutcome) -> bool:
    return outcome.added + outcome.deactivated >= _ANALYZE_MIN_CHANGES


def _stats_stale(changed: int, rows: int) -> bool:
    return changed * 10 >= rows


def _validate_limit(limit: int) -> None:
    if limit < 0:
        raise ValueError("limit must not be negative")


# --------------------------------------------------------------------------------------------------------------
# The interface


class InstrumentStore(ABC):
    """Where instruments live; see the module docstring for the schema and the concurrency rules."""

    @abstractmethod
    async def start(self) -> None:
        """Connect, and create or migrate the schema (raises SchemaVersionError on a newer database)."""

    @abstractmethod
    async def aclose(self) -> None:
        """Release the connections (and the SQLite worker thread)."""

    @contextlib.asynccontextmanager
    async def venue_sync_lock(self, venue: str) -> AsyncIterator[None]:
        """Held around a whole sync of `venue` (fetching the venue's listing, then `sync_venue`) so that syncs
        in several processes commit in the order they fetched. Within one process `InstrumentSyncer` has its own
        lock; this default (one process per SQLite file) adds nothing."""
        yield

    @abstractmethod
    async def sync_venue(self, venue: str, records: Sequence[InstrumentRecord], *, full: bool,
                         now_ms: int) -> SyncOutcome:
        """Make the stored records of `venue` match `records`, in one transaction serialised per venue.

        `full`: `records` is everything the venue lists, so stored active records it omits are deactivated
        (never deleted). Otherwise only the given symbols are looked at.
        """

    @abstractmethod
    async def get(self, venue: str, symbol: str) -> InstrumentRecord | None:
        """One record, active or not."""

    @abstractmethod
    async def list(self, venue: str, flt: InstrumentFilter, *, limit: int,
                   after_symbol: str | None = None) -> builtins.list[InstrumentRecord]:
        """At most `limit` records matching `flt`, by symbol, strictly after `after_symbol` (keyset paging)."""

    @abstractmethod
    async def count(self, venue: str) -> int:
        """How many records the venue has, inactive ones included."""

    @abstractmethod
    async def venues(self) -> builtins.list[str]:
        """The venues with at least one record, sorted."""

    async def __aenter__(self) -> InstrumentStore:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()


def open_store(*, sqlite_path: Path | None, dsn: str | None) -> InstrumentStore:
    """The store the configuration asks for (a DSN wins); call `start()` before use."""
    if dsn:
        return PostgresInstrumentStore(dsn)
    if sqlite_path is not None:
        return SqliteInstrumentStore(sqlite_path)
    raise ValueError("an instrument store needs a PostgreSQL DSN or a SQLite path")


# --------------------------------------------------------------------------------------------------------------
# SQLite


class SqliteInstrumentStore(InstrumentStore):
    """SQLite on one dedicated worker thread, WAL journal."""

    def __init__(self, path: Path, *, busy_timeout_s: float = 30.0, synchronous: str = "NORMAL"):
        self._worker = SqliteWorker(path, SCHEMA, label="SqliteInstrumentStore", busy_timeout_s=busy_timeout_s,
                                    synchronous=synchronous)

    async def start(self) -> None:
        await self._worker.start()

    async def aclose(self) -> None:
        await self._worker.aclose()

    async def sync_venue(self, venue: str, records: Sequence[InstrumentRecord], *, full: bool,
                         now_ms: int) -> SyncOutcome:
        _check_records(venue, records)
        return await self._worker.call(self._sync, venue, records, full, now_ms)

    @staticmethod
    def _sync(db: sqlite3.Connection, venue: str, records: Sequence[InstrumentRecord], full: bool,
              now_ms: int) -> SyncOutcome:
        with immediate_transaction(db):
            if full:
                cursor = db.execute("SELECT record FROM instruments WHERE venue = ?", (venue,))
            else:  # only the given symbols: one parameter (a JSON array), whatever the number of symbols
                cursor = db.execute(
                    "SELECT record FROM instruments WHERE venue = ? AND symbol IN (SELECT value FROM json_each(?))",
                    (venue, orjson.dumps([r.symbol for r in records]).decode()))
            stored = {record.symbol: record for record in _decode_rows(cursor)}
            plan = _plan_sync(records, stored, full=full, now_ms=now_ms)
            if plan.rows:
                db.executemany(
                    f"INSERT INTO instruments ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "  # noqa: S608 (constants)
                    f"ON CONFLICT (venue, symbol) DO UPDATE SET {_UPSERT_SET}",
                    plan.rows)
        return plan.outcome

    async def get(self, venue: str, symbol: str) -> InstrumentRecord | None:
        return await self._worker.call(self._get, venue, symbol)

    @staticmethod
    def _get(db: sqlite3.Connection, venue: str, symbol: str) -> InstrumentRecord | None:
        row = db.execute("SELECT record FROM instruments WHERE venue = ? AND symbol = ?",
                                   (venue, symbol)).fetchone()
        return None if row is None else _decode(row[0])

    async def list(self, venue: str, flt: InstrumentFilter, *, limit: int,
                   after_symbol: str | None = None) -> builtins.list[InstrumentRecord]:
        _validate_limit(limit)
        if limit == 0:
            return []
        return await self._worker.call(self._list, venue, flt, limit, after_symbol)

    @staticmethod
    def _list(db: sqlite3.Connection, venue: str, flt: InstrumentFilter, limit: int,
              after_symbol: str | None) -> builtins.list[InstrumentRecord]:
        where = ["venue = ?"]
        params: builtins.list[Any] = [venue]
        if after_symbol is not None:
            where.append("symbol > ?")
            params.append(after_symbol)
        for attribute, column in _FILTER_COLUMNS:
            values: tuple[str, ...] = getattr(flt, attribute)
            if values:
                where.append(f"{column} IN ({', '.join('?' * len(values))})")
                params.extend(values)
        if flt.active is not None:
            where.append("active = ?")
            params.append(int(flt.active))
        params.append(limit)
        # The page's rowids first, from an index that holds every column the filter reads (a per-column index for
        # one condition, `instruments_listing` for IN lists and combinations), then only those rows. Asked for
        # the records directly, SQLite walks the primary key and reads every wide row to test the filter.
        query = (f"SELECT record FROM instruments WHERE rowid IN (SELECT rowid FROM instruments "  # noqa: S608
                 f"WHERE {' AND '.join(where)} ORDER BY symbol LIMIT ?) ORDER BY symbol")
        return _decode_rows(db.execute(query, params))

    async def count(self, venue: str) -> int:
        return await self._worker.call(self._scalar, "SELECT COUNT(*) FROM instruments WHERE venue = ?", (venue,))

    @staticmethod
    def _scalar(db: sqlite3.Connection, query: str, params: Sequence[Any]) -> int:
        value: int = db.execute(query, params).fetchone()[0]
        return value

    async def venues(self) -> builtins.list[str]:
        return await self._worker.call(self._venues)

    @staticmethod
    def _venues(db: sqlite3.Connection) -> builtins.list[str]:
        return [row[0] for row in db.execute("SELECT DISTINCT venue FROM instruments ORDER BY venue")]


# --------------------------------------------------------------------------------------------------------------
# PostgreSQL


_SYNC_LOCK_CLASS = "portico-refdata-sync"


class PostgresInstrumentStore(InstrumentStore):
    """PostgreSQL through a psycopg 3 async connection pool."""

    def __init__(self, dsn: str, *, min_size: int = 1, max_size: int = 8, connect_timeout_s: float = 10.0):
        self._dsn = dsn
        self._min_size = min_size
        self._max_size = max_size
        self._connect_timeout_s = connect_timeout_s
        self._pool: _Pool | None = None

    async def start(self) -> None:
        if self._pool is not None:
            return
        self._pool = await open_postgres_pool(self._dsn, SCHEMA, name="portico-refdata", min_size=self._min_size,
                                              max_size=self._max_size, connect_timeout_s=self._connect_timeout_s)

    def _started(self) -> _Pool:
        if self._pool is None:
            raise RuntimeError("PostgresInstrumentStore.start() was not awaited (or the store is closed)")
        return self._pool

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    @contextlib.asynccontextmanager
    async def venue_sync_lock(self, venue: str) -> AsyncIterator[None]:
        """A session advisory lock, in the two-key space (never the one `sync_venue` takes in its transaction),
        held on a pooled connection for the whole sync. Polled with `pg_try_advisory_lock`, never a blocking
        `pg_advisory_lock` a cancelled caller could leave granted on a connection returned to the pool."""
        key = (_SYNC_LOCK_CLASS, venue)
        async with self._started().connection() as conn:
            delay = 0.01
            try:
                while not await pg_scalar(conn, "SELECT pg_try_advisory_lock(hashtext(%s), hashtext(%s))", key):
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 0.25)
            except BaseException:
                await conn.close()  # cancelled mid-query, the lock may be ours: ending the session releases it
                raise
            try:
                yield
            finally:
                try:
                    await conn.execute("SELECT pg_advisory_unlock(hashtext(%s), hashtext(%s))", key)
                except BaseException:
                    await conn.close()  # the session, and with it the lock, ends here; the pool replaces it
                    raise

    async def sync_venue(self, venue: str, records: Sequence[InstrumentRecord], *, full: bool,
                         now_ms: int) -> SyncOutcome:
        _check_records(venue, records)
        async with self._started().connection() as conn, conn.transaction():
            # Serialises syncs of this venue across every process; released at COMMIT/ROLLBACK.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (venue,))
            if full:
                cursor = await conn.execute("SELECT record::text FROM instruments WHERE venue = %s", (venue,))
            else:
                cursor = await conn.execute(
                    "SELECT record::text FROM instruments WHERE venue = %s AND symbol = ANY(%s)",
                    (venue, [r.symbol for r in records]))
            rows = await cursor.fetchall()
            # Decoding, diffing and encoding 10k records is up to ~0.6 s of CPU: off the event loop, as on SQLite.
            plan = await asyncio.to_thread(self._plan, rows, records, full, now_ms)
            if plan.rows:
                async with conn.cursor() as write:
                    await write.executemany(  # pipelined by psycopg: one round trip for the whole batch
                        f"INSERT INTO instruments ({_COLUMNS}) "  # noqa: S608 (constants)
                        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s::json, %s) "
                        f"ON CONFLICT (venue, symbol) DO UPDATE SET {_UPSERT_SET}",
                        plan.rows)
        if _worth_analyzing(plan.outcome):  # after COMMIT: the venue's lock is not held for it
            try:
                await self._analyze(plan.outcome.added + plan.outcome.deactivated)
            except Exception as exc:  # committed: the sync happened and is reported; autovacuum analyzes later
                log.warning("statistics refresh after a sync failed", extra={"venue": venue, "error": repr(exc)})
        return plan.outcome

    async def _analyze(self, changed: int) -> None:
        async with self._started().connection() as conn:
            if _stats_stale(changed, await pg_scalar(conn, "SELECT COUNT(*) FROM instruments")):
                await conn.execute("ANALYZE instruments")  # a table we do not own: a warning, not an error

    @staticmethod
    def _plan(rows: Iterable[tuple[Any, ...]], records: Sequence[InstrumentRecord], full: bool,
              now_ms: int) -> _Plan:
        return _plan_sync(records, {record.symbol: record for record in _decode_rows(rows)}, full=full,
                          now_ms=now_ms)

    async def get(self, venue: str, symbol: str) -> InstrumentRecord | None:
        async with self._started().connection() as conn:
            cursor = await conn.execute("SELECT record::text FROM instruments WHERE venue = %s AND symbol = %s",
                                        (venue, symbol))
            row = await cursor.fetchone()
        return None if row is None else _decode(row[0])

    async def list(self, venue: str, flt: InstrumentFilter, *, limit: int,
                   after_symbol: str | None = None) -> builtins.list[InstrumentRecord]:
        _validate_limit(limit)
        if limit == 0:
            return []
        where = ["venue = %s"]
        params: builtins.list[Any] = [venue]
        if after_symbol is not None:
            where.append("symbol > %s")
            params.append(after_symbol)
        for attribute, column in _FILTER_COLUMNS:
            values: tuple[str, ...] = getattr(flt, attribute)
            if values:
                where.append(f"{column} = ANY(%s)")
                params.append(builtins.list(values))
        if flt.active is not None:
            where.append("active = %s")
            params.append(flt.active)
        params.append(limit)
        query = f"SELECT record::text FROM instruments WHERE {' AND '.join(where)} ORDER BY symbol LIMIT %s"  # noqa: S608
        async with self._started().connection() as conn:
            cursor = await conn.execute(query, params)
            rows = await cursor.fetchall()
        if len(rows) > _DECODE_ON_LOOP_MAX:  # a big page may be ~20 ms of decoding if not cached: not on the loop
            return await asyncio.to_thread(_decode_rows, rows)
        return _decode_rows(rows)

    async def count(self, venue: str) -> int:
        async with self._started().connection() as conn:
            found: int = await pg_scalar(conn, "SELECT COUNT(*) FROM instruments WHERE venue = %s", (venue,))
        return found

    async def venues(self) -> builtins.list[str]:
        async with self._started().connection() as conn:
            cursor = await conn.execute("SELECT DISTINCT venue FROM instruments ORDER BY venue")
            return [row[0] for row in await cursor.fetchall()]
