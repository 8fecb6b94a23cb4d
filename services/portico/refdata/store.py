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
data sees the first one's result and reports nothing left to do.

The store owns the lifecycle fields (`active`, `available_since`,
`available_to`, `changes`, `update_time`): whatever the incoming records carry
there is ignored.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import functools
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar

import orjson

from portico.refdata.model import TRACKED_FIELDS, InstrumentChange, InstrumentFilter, InstrumentRecord

if TYPE_CHECKING:  # psycopg is imported when a PostgreSQL store starts: the SQLite backend does not need it
    from psycopg import AsyncConnection
    from psycopg_pool import AsyncConnectionPool

    _Pool = AsyncConnectionPool[AsyncConnection[tuple[Any, ...]]]

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

P = ParamSpec("P")
T = TypeVar("T")

EventKind = Literal["added", "updated", "deactivated"]


@dataclass(frozen=True, slots=True)
class InstrumentEvent:
    """One change a sync made, with the record as it was stored."""

    kind: EventKind
    record: InstrumentRecord
    at_ms: int


@dataclass(frozen=True, slots=True)
class SyncOutcome:
    """What one sync did: counts, and the events in symbol order (for watchers)."""

    synced: int
    added: int
    updated: int
    deactivated: int
    events: tuple[InstrumentEvent, ...] = ()


class SchemaVersionError(RuntimeError):
    """The database's schema is newer than this code: running on it could corrupt it."""


# --------------------------------------------------------------------------------------------------------------
# Schema migrations


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step; each is applied in its own transaction together with its `schema_version` row."""

    version: int
    description: str
    sqlite: tuple[str, ...]
    postgres: tuple[str, ...]


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
SCHEMA_VERSION = MIGRATIONS[-1].version

_VERSION_TABLE_SQLITE = """CREATE TABLE IF NOT EXISTS schema_version (
    version       INTEGER PRIMARY KEY,
    description   TEXT    NOT NULL,
    applied_at_ms INTEGER NOT NULL
)"""
_VERSION_TABLE_POSTGRES = """CREATE TABLE IF NOT EXISTS schema_version (
    version       INTEGER PRIMARY KEY,
    description   TEXT    NOT NULL,
    applied_at_ms BIGINT  NOT NULL
)"""
# Advisory lock key serialising migrations across processes. Above the int4 range, so it can never collide
# with a venue's lock key (`hashtext` is an int4).
_MIGRATION_LOCK = 0x706F727469636F  # "portico"


def _check_migrations(migrations: Sequence[Migration]) -> None:
    if [m.version for m in migrations] != list(range(1, len(migrations) + 1)):
        raise RuntimeError("refdata migrations must be numbered 1, 2, 3, ... in order")


_check_migrations(MIGRATIONS)


def _refuse_newer(found: int) -> None:
    if found > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"the instrument database is at schema version {found}, newer than this code knows "
            f"({SCHEMA_VERSION}): a newer portico has migrated it; run that version (or restore a backup) "
            "instead of downgrading")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


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
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError("synchronous must be FULL or NORMAL")
        self._path = path
        self._busy_timeout_ms = int(busy_timeout_s * 1000)
        self._synchronous = synchronous
        self._executor: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None  # opened, used and closed on the worker thread only

    async def _call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        if self._executor is None:
            raise RuntimeError("SqliteInstrumentStore.start() was not awaited (or the store is closed)")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the SQLite instrument store is closed")
        return self._db

    async def start(self) -> None:
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="refdata-sqlite")
        try:
            await self._call(self._open)
        except BaseException:
            await self.aclose()
            raise

    def _open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: no implicit transactions; every write below is in an explicit BEGIN IMMEDIATE.
        db = sqlite3.connect(self._path, isolation_level=None)
        self._db = db
        db.execute(f"PRAGMA busy_timeout={self._busy_timeout_ms}")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={self._synchronous}")
        self._migrate(db)

    @staticmethod
    def _version(db: sqlite3.Connection) -> int | None:
        exists = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'").fetchone()
        if exists is None:
            return None
        found: int | None = db.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
        return found or 0

    def _migrate(self, db: sqlite3.Connection) -> None:
        current = self._version(db)
        if current is not None:
            _refuse_newer(current)
            if current == SCHEMA_VERSION:
                return  # up to date: not even a lock
        for migration in MIGRATIONS:
            with self._transaction(db):
                db.execute(_VERSION_TABLE_SQLITE)
                current = self._version(db) or 0  # again, under the lock: another process may have migrated
                _refuse_newer(current)
                if current >= migration.version:
                    continue
                for statement in migration.sqlite:
                    db.execute(statement)
                db.execute("INSERT INTO schema_version (version, description, applied_at_ms) VALUES (?, ?, ?)",
                           (migration.version, migration.description, _now_ms()))

    @staticmethod
    @contextlib.contextmanager
    def _transaction(db: sqlite3.Connection) -> Iterator[None]:
        """BEGIN IMMEDIATE: takes the write lock up front, so the reads inside see the last committed sync."""
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    async def aclose(self) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(executor, self._close)
        finally:
            executor.shutdown(wait=False)  # its one thread is idle now and exits by itself

    def _close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()

    async def sync_venue(self, venue: str, records: Sequence[InstrumentRecord], *, full: bool,
                         now_ms: int) -> SyncOutcome:
        _check_records(venue, records)
        return await self._call(self._sync, venue, records, full, now_ms)

    def _sync(self, venue: str, records: Sequence[InstrumentRecord], full: bool, now_ms: int) -> SyncOutcome:
        db = self._conn()
        with self._transaction(db):
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
        return await self._call(self._get, venue, symbol)

    def _get(self, venue: str, symbol: str) -> InstrumentRecord | None:
        row = self._conn().execute("SELECT record FROM instruments WHERE venue = ? AND symbol = ?",
                                   (venue, symbol)).fetchone()
        return None if row is None else _decode(row[0])

    async def list(self, venue: str, flt: InstrumentFilter, *, limit: int,
                   after_symbol: str | None = None) -> builtins.list[InstrumentRecord]:
        _validate_limit(limit)
        if limit == 0:
            return []
        return await self._call(self._list, venue, flt, limit, after_symbol)

    def _list(self, venue: str, flt: InstrumentFilter, limit: int,
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
        return _decode_rows(self._conn().execute(query, params))

    async def count(self, venue: str) -> int:
        return await self._call(self._scalar, "SELECT COUNT(*) FROM instruments WHERE venue = ?", (venue,))

    def _scalar(self, query: str, params: Sequence[Any]) -> int:
        value: int = self._conn().execute(query, params).fetchone()[0]
        return value

    async def venues(self) -> builtins.list[str]:
        return await self._call(self._venues)

    def _venues(self) -> builtins.list[str]:
        return [row[0] for row in self._conn().execute("SELECT DISTINCT venue FROM instruments ORDER BY venue")]


# --------------------------------------------------------------------------------------------------------------
# PostgreSQL


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
        from psycopg_pool import AsyncConnectionPool

        pool = AsyncConnectionPool(self._dsn, min_size=self._min_size, max_size=self._max_size, open=False,
                                   kwargs={"autocommit": True}, name="portico-refdata")
        try:
            await pool.open(wait=True, timeout=self._connect_timeout_s)
            await self._migrate(pool)
        except BaseException:
            await pool.close()
            raise
        self._pool = pool

    @staticmethod
    async def _scalar(conn: AsyncConnection[tuple[Any, ...]], query: str, params: Sequence[Any] = ()) -> Any:
        cursor = await conn.execute(query, params)
        row = await cursor.fetchone()
        if row is None:
            raise RuntimeError(f"no row from {query!r}")
        return row[0]

    @classmethod
    async def _version(cls, conn: AsyncConnection[tuple[Any, ...]]) -> int | None:
        if not await cls._scalar(conn, "SELECT to_regclass('schema_version') IS NOT NULL"):
            return None
        found: int = await cls._scalar(conn, "SELECT COALESCE(MAX(version), 0) FROM schema_version")
        return found

    async def _migrate(self, pool: _Pool) -> None:
        async with pool.connection() as conn:
            current = await self._version(conn)
            if current is not None:
                _refuse_newer(current)
                if current == SCHEMA_VERSION:
                    return  # up to date: not even a lock
            for migration in MIGRATIONS:
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                    await conn.execute(_VERSION_TABLE_POSTGRES)
                    current = await self._version(conn) or 0  # again, under the lock
                    _refuse_newer(current)
                    if current >= migration.version:
                        continue
                    for statement in migration.postgres:
                        await conn.execute(statement)
                    await conn.execute(
                        "INSERT INTO schema_version (version, description, applied_at_ms) VALUES (%s, %s, %s)",
                        (migration.version, migration.description, _now_ms()))

    def _started(self) -> _Pool:
        if self._pool is None:
            raise RuntimeError("PostgresInstrumentStore.start() was not awaited (or the store is closed)")
        return self._pool

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

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
            async with self._started().connection() as conn:
                changed = plan.outcome.added + plan.outcome.deactivated
                if _stats_stale(changed, await self._scalar(conn, "SELECT COUNT(*) FROM instruments")):
                    await conn.execute("ANALYZE instruments")  # a table we do not own: a warning, not an error
        return plan.outcome

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
            found: int = await self._scalar(conn, "SELECT COUNT(*) FROM instruments WHERE venue = %s", (venue,))
        return found

    async def venues(self) -> builtins.list[str]:
        async with self._started().connection() as conn:
            cursor = await conn.execute("SELECT DISTINCT venue FROM instruments ORDER BY venue")
            return [row[0] for row in await cursor.fetchall()]
