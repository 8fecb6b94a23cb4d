"""The order journal: every order the execution service signs, durably, before the venue hears of it.

Two backends behind one interface, chosen by `open_journal` (a PostgreSQL DSN
wins over a SQLite path), on the shared layer of `portico.runtime.sqlstore`:

- `SqliteOrderJournal`: one connection, used on the event loop's own thread
  (`SqliteWorker(inline=True)`: each statement is one indexed row, cheaper
  than two thread hand-offs), WAL journal, checkpoints on a thread of their
  own. Every write is its own committed transaction; `synchronous=NORMAL` (the
  default) keeps every committed write through a process crash, FULL also
  through a power loss (an fsync per commit).
- `PostgresOrderJournal`: psycopg 3 async pool, autocommit: each statement is
  its own transaction.

The journal has one writer: the execution process holds the store's writer
lock (`runtime.sqlstore`) from `start` to `aclose`, and a second process
opening the same journal is refused at start (`WriterLockHeld`). Idempotency
leans on it: only one process can know which of its orders are in flight.
Should PostgreSQL drop the lock's session, new orders are refused
(UNAVAILABLE, `JOURNAL_WRITER_LOCK_LOST`) until the lock is held again.

One row per (venue, account, client_order_id), which is UNIQUE: `insert` stores
nothing when the key exists and returns the stored entry, so of several
processes (or tasks) journaling the same client id exactly one wins, and every
caller learns which (compare the salt or the fingerprint). Rows are never
deleted. `update` only changes what the venue says about an order (state,
order id, venue order, rejection, attempts); the intent, salt and signed
request are written once. Accounts and ids are compared exactly as given (the
service passes checksummed addresses); text compares bytewise on both backends
(`COLLATE "C"` in PostgreSQL), so listings sort alike. "Oldest first" is
insertion order (`seq`), not the wall clock. Decimals are stored as strings
in the intent JSON and the salt (a uint256) as decimal TEXT: both round-trip
exactly. The version table is `execution_schema_version`, so the journal can
share a PostgreSQL database with reference data.

Beside the orders, `deadman_firings` keeps when each account's dead-man's
switch last fired (one row per venue and account, the latest firing): an
order of unknown outcome placed before it is never sent again, also after a
restart (see `orders.OrderManager.deadman_fired`).
"""

from __future__ import annotations

import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Collection, Sequence
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import orjson

from portico.execution.model import UNRESOLVED_STATES, JournalEntry, OrderIntent, OrderState
from portico.runtime.errors import Unavailable
from portico.runtime.sqlstore import (
    Migration,
    PostgresWriterLock,
    Schema,
    SqliteWorker,
    SqliteWriterLock,
    now_ms,
    open_postgres_pool,
)

if TYPE_CHECKING:
    from portico.runtime.sqlstore import PostgresPool

__all__ = [
    "MIGRATIONS",
    "SCHEMA",
    "OrderJournal",
    "PostgresOrderJournal",
    "SqliteOrderJournal",
    "open_journal",
]

# Append new steps at the end with the next version number; never edit a released step.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        version=1,
        description="orders table, unique per (venue, account, client_order_id)",
        sqlite=(
            """CREATE TABLE orders (
                seq             INTEGER PRIMARY KEY AUTOINCREMENT,
                venue           TEXT    NOT NULL,
                account         TEXT    NOT NULL,
                client_order_id TEXT    NOT NULL,
                symbol          TEXT    NOT NULL,
                state           TEXT    NOT NULL,
                order_id        TEXT    NOT NULL DEFAULT '',
                salt            TEXT    NOT NULL,
                fingerprint     TEXT    NOT NULL,
                intent          TEXT    NOT NULL,
                request         BLOB    NOT NULL,
                venue_order     BLOB    NOT NULL DEFAULT x'',
                reject_code     INTEGER NOT NULL DEFAULT 0,
                reject_reason   TEXT    NOT NULL DEFAULT '',
                timestamp_ms    INTEGER NOT NULL,
                expiration_ms   INTEGER NOT NULL,
                signer_address  TEXT    NOT NULL,
                attempts        INTEGER NOT NULL,
                created_ms      INTEGER NOT NULL,
                updated_ms      INTEGER NOT NULL,
                UNIQUE (venue, account, client_order_id)
            )""",
            "CREATE INDEX orders_order_id ON orders (venue, account, order_id)",
            "CREATE INDEX orders_salt ON orders (venue, account, salt)",
            "CREATE INDEX orders_state ON orders (state, venue, account)",
        ),
        postgres=(
            """CREATE TABLE orders (
                seq             BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                venue           TEXT COLLATE "C" NOT NULL,
                account         TEXT COLLATE "C" NOT NULL,
                client_order_id TEXT COLLATE "C" NOT NULL,
                symbol          TEXT COLLATE "C" NOT NULL,
                state           TEXT    NOT NULL,
                order_id        TEXT COLLATE "C" NOT NULL DEFAULT '',
                salt            TEXT COLLATE "C" NOT NULL,
                fingerprint     TEXT    NOT NULL,
                intent          JSON    NOT NULL,
                request         BYTEA   NOT NULL,
                venue_order     BYTEA   NOT NULL DEFAULT '',
                reject_code     BIGINT  NOT NULL DEFAULT 0,
                reject_reason   TEXT    NOT NULL DEFAULT '',
                timestamp_ms    BIGINT  NOT NULL,
                expiration_ms   BIGINT  NOT NULL,
                signer_address  TEXT    NOT NULL,
                attempts        INTEGER NOT NULL,
                created_ms      BIGINT  NOT NULL,
                updated_ms      BIGINT  NOT NULL,
                UNIQUE (venue, account, client_order_id)
            )""",
            "CREATE INDEX orders_order_id ON orders (venue, account, order_id)",
            "CREATE INDEX orders_salt ON orders (venue, account, salt)",
            "CREATE INDEX orders_state ON orders (state, venue, account)",
        ),
    ),
    Migration(
        version=2,
        description="deadman_firings: when each account's dead-man's switch last fired",
        sqlite=(
            """CREATE TABLE deadman_firings (
                venue    TEXT    NOT NULL,
                account  TEXT    NOT NULL,
                fired_ms INTEGER NOT NULL,
                PRIMARY KEY (venue, account)
            )""",
        ),
        postgres=(
            """CREATE TABLE deadman_firings (
                venue    TEXT COLLATE "C" NOT NULL,
                account  TEXT COLLATE "C" NOT NULL,
                fired_ms BIGINT NOT NULL,
                PRIMARY KEY (venue, account)
            )""",
        ),
    ),
)
SCHEMA = Schema("the order journal", MIGRATIONS, version_table="execution_schema_version")

_INSERT_COLUMNS = ("venue, account, client_order_id, symbol, state, order_id, salt, fingerprint, intent, request, "
                   "venue_order, reject_code, reject_reason, timestamp_ms, expiration_ms, signer_address, attempts, "
                   "created_ms, updated_ms")
# What `_entry` decodes, in order (PostgreSQL reads the JSON as text: psycopg would parse it otherwise).
_SELECT_SQLITE = ("intent, salt, timestamp_ms, expiration_ms, signer_address, request, state, order_id, venue_order, "
                  "reject_code, reject_reason, created_ms, updated_ms, attempts, fingerprint")
_SELECT_POSTGRES = _SELECT_SQLITE.replace("intent,", "intent::text,", 1)
_KEY = "venue = {p} AND account = {p} AND client_order_id = {p}"
# `updated_ms` never goes backwards, even if the clock does.
_UPDATE_SET = ("state = {p}, order_id = {p}, venue_order = {p}, reject_code = {p}, reject_reason = {p}, "
               "attempts = {p}, updated_ms = {greatest}(updated_ms, {p})")


def _insert_row(entry: JournalEntry, at_ms: int) -> tuple[Any, ...]:
    intent = entry.intent
    return (intent.venue, intent.account, intent.client_order_id, intent.symbol, entry.state.value, entry.order_id,
            str(entry.salt), entry.fingerprint, _intent_text(entry), bytes(entry.request),
            bytes(entry.venue_order), entry.reject_code, entry.reject_reason, entry.timestamp_ms,
            entry.expiration_ms, entry.signer_address, entry.attempts, at_ms, at_ms)


def _update_params(entry: JournalEntry, at_ms: int) -> tuple[Any, ...]:
    return (entry.state.value, entry.order_id, bytes(entry.venue_order), entry.reject_code, entry.reject_reason,
            entry.attempts, at_ms, *entry.key)


# What an insert or update returns on the order path, instead of the whole row decoded again: an insert
# that wrote its row stored exactly the caller's entry, so only the times are new; an update writes only
# the venue fields, and the rest of the caller's entry is the stored one when these immutable columns
# match it (they always do in the service; otherwise the stored row is read and returned).
_INSERTED = "created_ms, updated_ms"
_UPDATED_SQLITE = ("intent, salt, timestamp_ms, expiration_ms, signer_address, request, fingerprint, created_ms, "
                   "updated_ms")
_UPDATED_POSTGRES = _UPDATED_SQLITE.replace("intent,", "intent::text,", 1)


def _inserted(entry: JournalEntry, row: Sequence[Any]) -> JournalEntry:
    created_ms, updated_ms = row
    return replace(entry, created_ms=created_ms, updated_ms=updated_ms)


def _updated(entry: JournalEntry, row: Sequence[Any]) -> JournalEntry | None:
    """The updated entry if the caller's immutable fields are the stored ones; None if not (read the row)."""
    intent, salt, timestamp_ms, expiration_ms, signer_address, request, fingerprint, created_ms, updated_ms = row
    if (salt != str(entry.salt) or timestamp_ms != entry.timestamp_ms or expiration_ms != entry.expiration_ms
            or signer_address != entry.signer_address or bytes(request) != entry.request
            or fingerprint != entry.fingerprint or intent != _intent_text(entry)):
        return None
    return replace(entry, created_ms=created_ms, updated_ms=updated_ms)


def _intent_text(entry: JournalEntry) -> str:
    return orjson.dumps(entry.intent.to_json()).decode()


def _entry(row: Sequence[Any]) -> JournalEntry:
    (intent, salt, timestamp_ms, expiration_ms, signer_address, request, state, order_id, venue_order, reject_code,
     reject_reason, created_ms, updated_ms, attempts, fingerprint) = row
    return JournalEntry(intent=OrderIntent.from_json(orjson.loads(intent)), salt=int(salt), timestamp_ms=timestamp_ms,
                        expiration_ms=expiration_ms, signer_address=signer_address, request=bytes(request),
                        state=OrderState(state), order_id=order_id, venue_order=bytes(venue_order),
                        reject_code=reject_code, reject_reason=reject_reason, created_ms=created_ms,
                        updated_ms=updated_ms, attempts=attempts, fingerprint=fingerprint)


def _where(p: str, *, venue: str | None = None, account: str | None = None, symbol: str | None = None,
           states: Collection[OrderState] | None = None) -> tuple[str, list[Any]]:
    """A WHERE clause (never empty) and its parameters; `p` is the backend's placeholder."""
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (("venue", venue), ("account", account), ("symbol", symbol)):
        if value is not None:
            clauses.append(f"{column} = {p}")
            params.append(value)
    if states is not None:
        values = sorted({OrderState(state).value for state in states})
        if not values:
            clauses.append("FALSE")
        else:
            clauses.append(f"state IN ({', '.join([p] * len(values))})")
            params.extend(values)
    return " AND ".join(clauses) or "TRUE", params


def _validate_limit(limit: int | None) -> None:
    if limit is not None and limit < 0:
        raise ValueError("limit must not be negative")


# --------------------------------------------------------------------------------------------------------------
# The interface


class OrderJournal(ABC):
    """Where orders are remembered; see the module docstring for the guarantees."""

    @abstractmethod
    async def start(self) -> None:
        """Connect, and create or migrate the schema (raises SchemaVersionError on a newer database)."""

    @abstractmethod
    async def aclose(self) -> None:
        """Release the connections (and the SQLite worker thread)."""

    @abstractmethod
    async def insert(self, entry: JournalEntry) -> JournalEntry:
        """Journal `entry` unless its key exists; return the entry as stored (the earlier one if it existed).

        `created_ms` and `updated_ms` are set to now; the caller's values are ignored.
        """

    @abstractmethod
    async def get(self, venue: str, account: str, client_order_id: str) -> JournalEntry | None:
        """The entry of a client order id."""

    @abstractmethod
    async def find_order(self, venue: str, account: str, order_id: str) -> JournalEntry | None:
        """The entry of a venue order id (None for an empty id: unsent orders have none)."""

    @abstractmethod
    async def find_salt(self, venue: str, account: str, salt: int) -> JournalEntry | None:
        """The entry whose signed request carries `salt`."""

    @abstractmethod
    async def update(self, entry: JournalEntry) -> JournalEntry:
        """Store the venue's side of `entry` (state, order id, venue order, rejection, attempts) under its key.

        `updated_ms` becomes now; intent, salt, request, signer and times stay as first journaled. Returns
        the entry as stored; KeyError if the key was never journaled.
        """

    @abstractmethod
    async def unresolved(self, venue: str | None = None, account: str | None = None,
                         symbol: str | None = None) -> list[JournalEntry]:
        """PENDING and UNKNOWN entries (optionally of one venue, account, symbol), oldest first."""

    @abstractmethod
    async def entries(self, venue: str, account: str, *, states: Collection[OrderState] | None = None,
                      symbol: str | None = None, limit: int | None = None) -> list[JournalEntry]:
        """An account's entries, oldest first: at most `limit`, in `states` and on `symbol` if given."""

    @abstractmethod
    async def accounts(self, states: Collection[OrderState]) -> list[tuple[str, str]]:
        """The (venue, account) pairs with at least one entry in `states`, sorted."""

    @abstractmethod
    async def count(self, venue: str | None = None, account: str | None = None) -> int:
        """How many entries (of a venue, of an account)."""

    @abstractmethod
    async def record_deadman_firing(self, venue: str, account: str, fired_ms: int) -> None:
        """The dead-man's switch of (venue, account) fired at `fired_ms` (epoch ms); an earlier time than the one
        kept is ignored (only the latest firing matters). `account` is stored as given."""

    @abstractmethod
    async def deadman_firings(self) -> dict[tuple[str, str], int]:
        """(venue, account) -> when its dead-man's switch last fired (epoch ms)."""

    async def __aenter__(self) -> OrderJournal:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()


def open_journal(*, sqlite_path: Path | None, dsn: str | None, synchronous: str = "NORMAL") -> OrderJournal:
    """The journal the configuration asks for (a DSN wins); call `start()` before use."""
    if dsn:
        return PostgresOrderJournal(dsn)
    if sqlite_path is not None:
        return SqliteOrderJournal(sqlite_path, synchronous=synchronous)
    raise ValueError("an order journal needs a PostgreSQL DSN or a SQLite path")


# --------------------------------------------------------------------------------------------------------------
# SQLite

_Q = "?"
_SQLITE_INSERT = (f"INSERT INTO orders ({_INSERT_COLUMNS}) VALUES ({', '.join([_Q] * 19)}) "  # noqa: S608 (constants)
                  f"ON CONFLICT (venue, account, client_order_id) DO NOTHING RETURNING {_INSERTED}")
_SQLITE_GET = f"SELECT {_SELECT_SQLITE} FROM orders WHERE {_KEY.format(p=_Q)}"  # noqa: S608 (constants)
_SQLITE_UPDATE = (f"UPDATE orders SET {_UPDATE_SET.format(p=_Q, greatest='MAX')} "  # noqa: S608 (constants)
                  f"WHERE {_KEY.format(p=_Q)} RETURNING {_UPDATED_SQLITE}")
_SQLITE_RECORD_FIRING = ("INSERT INTO deadman_firings (venue, account, fired_ms) VALUES (?, ?, ?) "
                         "ON CONFLICT (venue, account) DO UPDATE SET fired_ms = MAX(fired_ms, excluded.fired_ms)")


class SqliteOrderJournal(OrderJournal):
    """SQLite in WAL mode, every write its own committed transaction.

    Run inline on the event loop (see `SqliteWorker`): every statement touches one indexed row, the
    execution process is the file's only writer, and a thread hand-off per call cost more than the
    statements themselves on the order path (measured by tests/bench/bench_execution.py). The busy
    timeout is short for the same reason: another writer would be a misconfiguration, not a wait.
    """

    def __init__(self, path: Path, *, busy_timeout_s: float = 2.0, synchronous: str = "NORMAL"):
        self._worker = SqliteWorker(path, SCHEMA, label="SqliteOrderJournal", busy_timeout_s=busy_timeout_s,
                                    synchronous=synchronous, inline=True)
        self._writer = SqliteWriterLock(path, role="the order journal")

    async def start(self) -> None:
        self._writer.acquire()
        try:
            await self._worker.start()
        except BaseException:
            self._writer.release()
            raise

    async def aclose(self) -> None:
        try:
            await self._worker.aclose()
        finally:
            self._writer.release()

    async def insert(self, entry: JournalEntry) -> JournalEntry:
        return await self._worker.call(self._insert, entry)

    @staticmethod
    def _insert(db: sqlite3.Connection, entry: JournalEntry) -> JournalEntry:
        # One statement, so atomic; fetchall finishes it (and commits it) before returning.
        rows = db.execute(_SQLITE_INSERT, _insert_row(entry, now_ms())).fetchall()
        if rows:
            return _inserted(entry, rows[0])
        row = db.execute(_SQLITE_GET, entry.key).fetchone()  # the key existed: the stored entry won
        return _entry(row)

    async def get(self, venue: str, account: str, client_order_id: str) -> JournalEntry | None:
        return await self._worker.call(self._one, _SQLITE_GET, (venue, account, client_order_id))

    async def find_order(self, venue: str, account: str, order_id: str) -> JournalEntry | None:
        if not order_id:
            return None
        return await self._worker.call(
            self._one, f"SELECT {_SELECT_SQLITE} FROM orders "  # noqa: S608 (constants)
            "WHERE venue = ? AND account = ? AND order_id = ? ORDER BY seq LIMIT 1", (venue, account, order_id))

    async def find_salt(self, venue: str, account: str, salt: int) -> JournalEntry | None:
        return await self._worker.call(
            self._one, f"SELECT {_SELECT_SQLITE} FROM orders "  # noqa: S608 (constants)
            "WHERE venue = ? AND account = ? AND salt = ? ORDER BY seq LIMIT 1", (venue, account, str(salt)))

    @staticmethod
    def _one(db: sqlite3.Connection, query: str, params: Sequence[Any]) -> JournalEntry | None:
        row = db.execute(query, params).fetchone()
        return None if row is None else _entry(row)

    async def update(self, entry: JournalEntry) -> JournalEntry:
        return await self._worker.call(self._update, entry)

    @staticmethod
    def _update(db: sqlite3.Connection, entry: JournalEntry) -> JournalEntry:
        # One statement: atomic. fetchall: the statement is finished (and its write committed) when this returns.
        rows = db.execute(_SQLITE_UPDATE, _update_params(entry, now_ms())).fetchall()
        if not rows:
            raise KeyError(entry.key)
        return _updated(entry, rows[0]) or _entry(db.execute(_SQLITE_GET, entry.key).fetchone())

    async def unresolved(self, venue: str | None = None, account: str | None = None,
                         symbol: str | None = None) -> list[JournalEntry]:
        where, params = _where(_Q, venue=venue, account=account, symbol=symbol, states=UNRESOLVED_STATES)
        return await self._worker.call(self._many, where, params, None)

    async def entries(self, venue: str, account: str, *, states: Collection[OrderState] | None = None,
                      symbol: str | None = None, limit: int | None = None) -> list[JournalEntry]:
        _validate_limit(limit)
        where, params = _where(_Q, venue=venue, account=account, symbol=symbol, states=states)
        return await self._worker.call(self._many, where, params, limit)

    @staticmethod
    def _many(db: sqlite3.Connection, where: str, params: list[Any],
              limit: int | None) -> list[JournalEntry]:
        query = f"SELECT {_SELECT_SQLITE} FROM orders WHERE {where} ORDER BY seq"  # noqa: S608 (built from constants)
        if limit is not None:
            query += " LIMIT ?"
            params = [*params, limit]
        return [_entry(row) for row in db.execute(query, params)]

    async def accounts(self, states: Collection[OrderState]) -> list[tuple[str, str]]:
        where, params = _where(_Q, states=states)
        return await self._worker.call(self._accounts, where, params)

    @staticmethod
    def _accounts(db: sqlite3.Connection, where: str, params: list[Any]) -> list[tuple[str, str]]:
        query = f"SELECT DISTINCT venue, account FROM orders WHERE {where} ORDER BY venue, account"  # noqa: S608
        return [(row[0], row[1]) for row in db.execute(query, params)]

    async def count(self, venue: str | None = None, account: str | None = None) -> int:
        where, params = _where(_Q, venue=venue, account=account)
        return await self._worker.call(self._count, where, params)

    @staticmethod
    def _count(db: sqlite3.Connection, where: str, params: list[Any]) -> int:
        found: int = db.execute(f"SELECT COUNT(*) FROM orders WHERE {where}", params).fetchone()[0]  # noqa: S608
        return found

    async def record_deadman_firing(self, venue: str, account: str, fired_ms: int) -> None:
        await self._worker.call(self._record_firing, (venue, account, fired_ms))

    @staticmethod
    def _record_firing(db: sqlite3.Connection, params: tuple[str, str, int]) -> None:
        db.execute(_SQLITE_RECORD_FIRING, params)

    async def deadman_firings(self) -> dict[tuple[str, str], int]:
        return await self._worker.call(self._firings)

    @staticmethod
    def _firings(db: sqlite3.Connection) -> dict[tuple[str, str], int]:
        return {(venue, account): fired_ms
                for venue, account, fired_ms in db.execute("SELECT venue, account, fired_ms FROM deadman_firings")}


# --------------------------------------------------------------------------------------------------------------
# PostgreSQL

_P = "%s"
_PG_INSERT = (f"INSERT INTO orders ({_INSERT_COLUMNS}) "  # noqa: S608 (constants)
              f"VALUES ({', '.join([_P] * 8)}, %s::json, {', '.join([_P] * 10)}) "
              f"ON CONFLICT (venue, account, client_order_id) DO NOTHING RETURNING {_INSERTED}")
_PG_GET = f"SELECT {_SELECT_POSTGRES} FROM orders WHERE {_KEY.format(p=_P)}"  # noqa: S608 (constants)
_PG_UPDATE = (f"UPDATE orders SET {_UPDATE_SET.format(p=_P, greatest='GREATEST')} "  # noqa: S608 (constants)
              f"WHERE {_KEY.format(p=_P)} RETURNING {_UPDATED_POSTGRES}")
_PG_RECORD_FIRING = ("INSERT INTO deadman_firings (venue, account, fired_ms) VALUES (%s, %s, %s) "
                     "ON CONFLICT (venue, account) DO UPDATE "
                     "SET fired_ms = GREATEST(deadman_firings.fired_ms, EXCLUDED.fired_ms)")


class PostgresOrderJournal(OrderJournal):
    """PostgreSQL through a psycopg 3 async connection pool (autocommit: every statement commits)."""

    def __init__(self, dsn: str, *, min_size: int = 1, max_size: int = 8, connect_timeout_s: float = 10.0,
                 writer_check_s: float = 5.0):
        self._dsn = dsn
        self._min_size = min_size
        self._max_size = max_size
        self._connect_timeout_s = connect_timeout_s
        self._pool: PostgresPool | None = None
        self._writer = PostgresWriterLock(dsn, name="execution-journal", role="the order journal",
                                          check_s=writer_check_s, connect_timeout_s=connect_timeout_s)

    async def start(self) -> None:
        if self._pool is not None:
            return
        await self._writer.acquire()
        try:
            self._pool = await open_postgres_pool(self._dsn, SCHEMA, name="portico-execution-journal",
                                                  min_size=self._min_size, max_size=self._max_size,
                                                  connect_timeout_s=self._connect_timeout_s)
        except BaseException:
            await self._writer.release()
            raise

    def _started(self) -> PostgresPool:
        if self._pool is None:
            raise RuntimeError("PostgresOrderJournal.start() was not awaited (or the journal is closed)")
        return self._pool

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        try:
            if pool is not None:
                await pool.close()
        finally:
            await self._writer.release()

    async def _fetch(self, query: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        async with self._started().connection() as conn:
            cursor = await conn.execute(query, params)
            return await cursor.fetchall()

    async def _one(self, query: str, params: Sequence[Any]) -> JournalEntry | None:
        rows = await self._fetch(query, params)
        return _entry(rows[0]) if rows else None

    async def insert(self, entry: JournalEntry) -> JournalEntry:
        # On a conflict with an insert still in flight, PostgreSQL waits for it to commit and then does nothing:
        # the SELECT after (a new statement, so a new snapshot) sees the winner.
        if not self._writer.held:  # another process may be the writer now: no new order from this one
            raise Unavailable("the order journal's writer lock was lost; new orders wait until it is held again",
                              reason="JOURNAL_WRITER_LOCK_LOST")
        rows = await self._fetch(_PG_INSERT, _insert_row(entry, now_ms()))
        if rows:
            return _inserted(entry, rows[0])
        stored = await self._one(_PG_GET, entry.key)
        if stored is None:  # rows are never deleted
            raise RuntimeError(f"journal entry {entry.key} neither inserted nor found")
        return stored

    async def get(self, venue: str, account: str, client_order_id: str) -> JournalEntry | None:
        return await self._one(_PG_GET, (venue, account, client_order_id))

    async def find_order(self, venue: str, account: str, order_id: str) -> JournalEntry | None:
        if not order_id:
            return None
        return await self._one(f"SELECT {_SELECT_POSTGRES} FROM orders "  # noqa: S608 (constants)
                               "WHERE venue = %s AND account = %s AND order_id = %s ORDER BY seq LIMIT 1",
                               (venue, account, order_id))

    async def find_salt(self, venue: str, account: str, salt: int) -> JournalEntry | None:
        return await self._one(f"SELECT {_SELECT_POSTGRES} FROM orders "  # noqa: S608 (constants)
                               "WHERE venue = %s AND account = %s AND salt = %s ORDER BY seq LIMIT 1",
                               (venue, account, str(salt)))

    async def update(self, entry: JournalEntry) -> JournalEntry:
        rows = await self._fetch(_PG_UPDATE, _update_params(entry, now_ms()))
        if not rows:
            raise KeyError(entry.key)
        updated = _updated(entry, rows[0])
        if updated is None:
            updated = await self._one(_PG_GET, entry.key)
        if updated is None:  # rows are never deleted
            raise RuntimeError(f"journal entry {entry.key} updated but not found")
        return updated

    async def unresolved(self, venue: str | None = None, account: str | None = None,
                         symbol: str | None = None) -> list[JournalEntry]:
        where, params = _where(_P, venue=venue, account=account, symbol=symbol, states=UNRESOLVED_STATES)
        return await self._many(where, params, None)

    async def entries(self, venue: str, account: str, *, states: Collection[OrderState] | None = None,
                      symbol: str | None = None, limit: int | None = None) -> list[JournalEntry]:
        _validate_limit(limit)
        where, params = _where(_P, venue=venue, account=account, symbol=symbol, states=states)
        return await self._many(where, params, limit)

    async def _many(self, where: str, params: list[Any], limit: int | None) -> list[JournalEntry]:
        query = f"SELECT {_SELECT_POSTGRES} FROM orders WHERE {where} ORDER BY seq"  # noqa: S608 (built from constants)
        if limit is not None:
            query += " LIMIT %s"
            params = [*params, limit]
        return [_entry(row) for row in await self._fetch(query, params)]

    async def accounts(self, states: Collection[OrderState]) -> list[tuple[str, str]]:
        where, params = _where(_P, states=states)
        rows = await self._fetch(
            f"SELECT DISTINCT venue, account FROM orders WHERE {where} ORDER BY venue, account", params)  # noqa: S608
        return [(row[0], row[1]) for row in rows]

    async def count(self, venue: str | None = None, account: str | None = None) -> int:
        where, params = _where(_P, venue=venue, account=account)
        rows = await self._fetch(f"SELECT COUNT(*) FROM orders WHERE {where}", params)  # noqa: S608
        found: int = rows[0][0]
        return found

    async def record_deadman_firing(self, venue: str, account: str, fired_ms: int) -> None:
        async with self._started().connection() as conn:
            await conn.execute(_PG_RECORD_FIRING, (venue, account, fired_ms))

    async def deadman_firings(self) -> dict[tuple[str, str], int]:
        rows = await self._fetch("SELECT venue, account, fired_ms FROM deadman_firings", ())
        return {(venue, account): fired_ms for venue, account, fired_ms in rows}
