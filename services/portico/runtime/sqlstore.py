"""What every SQL-backed store shares: versioned migrations, SQLite on one worker thread, a PostgreSQL pool.

A store describes its schema as a `Schema` (an ordered tuple of `Migration`s,
each with its SQLite and PostgreSQL statements) and gets it applied by
`SqliteWorker.start()` or `open_postgres_pool()`:

- Each migration runs in its own transaction together with its row in the
  schema's version table, so a crash leaves the database at a whole version.
- Concurrent first starts (several processes, or several stores in one) migrate
  exactly once: SQLite serialises them on `BEGIN IMMEDIATE` (the file's single
  writer lock), PostgreSQL on a transaction-scoped advisory lock; the version is
  read again under the lock before each step.
- A database at a newer version than the code knows is refused
  (`SchemaVersionError`): running old code on it could corrupt it.
- An up-to-date database costs one read and no lock.

Each schema names its own version table, so stores of different services can
share one PostgreSQL database without their version numbers colliding.

A store with a single writer (the order journal, the salt ledger) holds a
writer lock for as long as it writes: `SqliteWriterLock` (an `flock` beside
the file) or `PostgresWriterLock` (a session advisory lock). A second process
opening the same store is refused at start with `WriterLockHeld`, instead of
two writers silently breaking the store's guarantees.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import re
import socket
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from portico.runtime.errors import Unavailable
from portico.runtime.lifecycle import cancel_and_wait

if TYPE_CHECKING:  # psycopg is imported when a PostgreSQL pool opens: SQLite-only deployments do not need it
    from psycopg import AsyncConnection
    from psycopg_pool import AsyncConnectionPool

    PostgresPool = AsyncConnectionPool[AsyncConnection[tuple[Any, ...]]]

__all__ = [
    "MIGRATION_LOCK",
    "Migration",
    "PostgresWriterLock",
    "Schema",
    "SchemaVersionError",
    "SqliteWorker",
    "SqliteWriterLock",
    "WalCheckpointer",
    "WriterLockHeld",
    "database_unavailable",
    "immediate_transaction",
    "migrate_sqlite",
    "now_ms",
    "open_postgres_pool",
    "pg_scalar",
    "sqlite_schema_version",
]

# SQLite's primary result codes for a database that is there but cannot be used just now (busy or locked by
# another connection, an I/O error, a full disk, a file that cannot be opened): not a bug in the statement.
_SQLITE_TRANSIENT = frozenset({5, 6, 10, 13, 14})  # SQLITE_BUSY, _LOCKED, _IOERR, _FULL, _CANTOPEN


def database_unavailable(exc: BaseException) -> Unavailable | None:
    """UNAVAILABLE (reason DATABASE_UNAVAILABLE) for a database that cannot be reached or used just now, which a
    caller may retry (PostgreSQL down or restarting, the pool waiting for a connection, SQLite locked or out of
    disk); None for anything else, which stays the INTERNAL of a bug. The driver's text is left out: it can name
    hosts, users and statements."""
    if isinstance(exc, sqlite3.OperationalError):
        code = getattr(exc, "sqlite_errorcode", None)
        return _unavailable() if code is not None and code & 0xFF in _SQLITE_TRANSIENT else None
    psycopg = sys.modules.get("psycopg")  # imported only where a PostgreSQL pool was opened
    if psycopg is not None and isinstance(exc, psycopg.OperationalError):  # includes the pool's PoolTimeout
        return _unavailable()
    return None


def _unavailable() -> Unavailable:
    return Unavailable("the database is unavailable just now; retry", reason="DATABASE_UNAVAILABLE")

P = ParamSpec("P")
T = TypeVar("T")

log = logging.getLogger("portico.sqlstore")

# Advisory lock key serialising migrations across processes. Above the int4 range, so it can never collide
# with a key from `hashtext` (an int4), which stores use for their own locks.
MIGRATION_LOCK = 0x706F727469636F  # "portico"

_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*")


class SchemaVersionError(RuntimeError):
    """The database's schema is newer than this code: running on it could corrupt it."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step; each is applied in its own transaction together with its version row."""

    version: int
    description: str
    sqlite: tuple[str, ...]
    postgres: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Schema:
    """A store's migrations, what to call its database in errors, and the table recording its version.

    Append new steps at the end with the next version number; never edit a released step.
    """

    what: str  # "the instrument database": for error messages
    migrations: tuple[Migration, ...]
    version_table: str = "schema_version"

    def __post_init__(self) -> None:
        if [m.version for m in self.migrations] != list(range(1, len(self.migrations) + 1)):
            raise RuntimeError(f"the migrations of {self.what} must be numbered 1, 2, 3, ... in order")
        if not _IDENTIFIER.fullmatch(self.version_table):  # it is spliced into SQL
            raise ValueError(f"bad version table name {self.version_table!r}")

    @property
    def version(self) -> int:
        """The version this code migrates to."""
        return self.migrations[-1].version if self.migrations else 0

    def refuse_newer(self, found: int) -> None:
        if found > self.version:
            raise SchemaVersionError(
                f"{self.what} is at schema version {found}, newer than this code knows ({self.version}): "
                "a newer portico has migrated it; run that version (or restore a backup) instead of downgrading")

    def version_table_sql(self, integer: str) -> str:
        return (f"CREATE TABLE IF NOT EXISTS {self.version_table} (\n"
                "    version       INTEGER PRIMARY KEY,\n"
                "    description   TEXT    NOT NULL,\n"
                f"    applied_at_ms {integer:<7} NOT NULL\n"
                ")")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# --------------------------------------------------------------------------------------------------------------
# SQLite


@contextlib.contextmanager
def immediate_transaction(db: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE: takes the write lock up front, so the reads inside see the last committed write.

    (A deferred transaction that reads, then writes, fails with "database is locked" instead of waiting
    when another connection wrote in between.) A COMMIT that fails is rolled back too: SQLite leaves the
    transaction open after some failed commits (a deferred constraint, SQLITE_BUSY), holding the write lock.
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


class WalCheckpointer:
    """Checkpoints a WAL database from a thread of its own, so the connection that writes never does.

    SQLite's automatic checkpoint runs inside the commit that takes the WAL past 1,000 pages: it
    copies the WAL into the database file and fsyncs both, ~4.5 ms here, and for the stores whose
    writes run on the event loop (the order journal, the signer's salt ledger) that was one order in a
    hundred waiting for it (tests/bench/bench_execution.py's tail). The writer turns the automatic
    checkpoint off (`disable_autocheckpoint`) and this thread runs a PASSIVE checkpoint every
    `interval_s`, which never blocks the writer. A passive checkpoint cannot reset a WAL that is
    written to while it runs, so once the WAL holds more than `restart_frames` frames it runs a
    RESTART checkpoint, which holds the writer for one (by then short) copy: rare, and bounded.
    """

    def __init__(self, path: Path, *, label: str, interval_s: float = 0.2, restart_frames: int = 16_000,
                 busy_timeout_s: float = 5.0):
        self._path = path
        self._label = label
        self._interval_s = interval_s
        self._restart_frames = restart_frames
        self._busy_timeout_s = busy_timeout_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.checkpoints = 0  # completed passes, for tests and curiosity
        self.restarts = 0

    @staticmethod
    def disable_autocheckpoint(db: sqlite3.Connection, *, journal_size_limit: int = 64 * 1024 * 1024) -> None:
        """On the writer's connection: no checkpoint inside its commits; the WAL file is cut back after a reset."""
        db.execute("PRAGMA wal_autocheckpoint=0")
        db.execute(f"PRAGMA journal_size_limit={int(journal_size_limit)}")

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=f"{self._label}-checkpoint", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join()

    def _run(self) -> None:
        db = sqlite3.connect(self._path, isolation_level=None)
        try:
            db.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_s * 1000)}")
            while not self._stop.wait(self._interval_s):
                try:
                    self._checkpoint(db)
                except sqlite3.Error as exc:  # retried next time; the WAL only grows meanwhile
                    log.warning("WAL checkpoint failed", extra={"store": self._label, "error": str(exc)})
        finally:
            db.close()

    def _checkpoint(self, db: sqlite3.Connection) -> None:
        _, wal_frames, _ = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if wal_frames > self._restart_frames:
            busy, _, _ = db.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
            if busy:  # the writer never paused for the busy timeout: try again next time
                log.warning("WAL restart checkpoint timed out", extra={"store": self._label, "frames": wal_frames})
            else:
                self.restarts += 1
        self.checkpoints += 1


def sqlite_schema_version(db: sqlite3.Connection, schema: Schema) -> int | None:
    """The newest version applied to `db` (0 for an empty version table), None before any versioning."""
    exists = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                        (schema.version_table,)).fetchone()
    if exists is None:
        return None
    found: int | None = db.execute(
        f"SELECT MAX(version) FROM {schema.version_table}").fetchone()[0]  # noqa: S608 (checked name)
    return found or 0


def migrate_sqlite(db: sqlite3.Connection, schema: Schema) -> None:
    """Bring `db` to `schema.version`, each step in its own transaction with its version row.

    A database newer than this code is refused (`SchemaVersionError`); one already current takes no lock.
    """
    current = sqlite_schema_version(db, schema)
    if current is not None:
        schema.refuse_newer(current)
        if current == schema.version:
            return  # up to date: not even a lock
    for migration in schema.migrations:
        with immediate_transaction(db):
            db.execute(schema.version_table_sql("INTEGER"))
            current = sqlite_schema_version(db, schema) or 0  # again, under the lock: another process may have
            schema.refuse_newer(current)  # migrated meanwhile
            if current >= migration.version:
                continue
            for statement in migration.sqlite:
                db.execute(statement)
            db.execute(f"INSERT INTO {schema.version_table} "  # noqa: S608 (checked name)
                       "(version, description, applied_at_ms) VALUES (?, ?, ?)",
                       (migration.version, migration.description, now_ms()))


class SqliteWorker:
    """One SQLite connection, opened, used and closed on ONE dedicated thread (a single-thread executor).

    Why: the stdlib `sqlite3` module blocks, so no call may run on the event loop; and a connection must
    only be used by the thread that opened it. One thread also serialises the store's own calls, so the
    store needs no lock of its own. WAL journal: readers (other processes included) are not blocked by a
    writer. `synchronous=NORMAL` survives a process crash; FULL also a power loss, at an fsync per commit.
    The connection is in autocommit mode (`isolation_level=None`): writes that must be atomic use
    `immediate_transaction`.
    """

    def __init__(self, path: Path, schema: Schema, *, label: str, busy_timeout_s: float = 30.0,
                 synchronous: str = "NORMAL", inline: bool = False):
        """`inline=True` runs every call on the caller's (event-loop) thread instead of the worker thread.

        For stores whose every statement is a single indexed row and that are their file's only writer
        (the order journal): a WAL commit with `synchronous=NORMAL` does not fsync and costs tens of
        microseconds, less than the two thread hand-offs a worker call costs on a busy loop. Checkpoints,
        which do fsync, then run on a `WalCheckpointer` thread instead of inside a commit on the loop.
        """
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError("synchronous must be FULL or NORMAL")
        self._inline = inline
        self._started = False
        self._path = path
        self._schema = schema
        self._label = label  # the owning class's name, for errors and the thread's name
        self._busy_timeout_s = busy_timeout_s
        self._synchronous = synchronous
        self._checkpointer = WalCheckpointer(path, label=label) if inline else None
        self._executor: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None  # touched on the worker thread only

    async def start(self) -> None:
        """Open the file (creating its directory) and migrate the schema; a no-op when already started."""
        if self._inline:
            if not self._started:
                try:
                    self._open()
                except BaseException:
                    self._close()
                    raise
                self._started = True
            return
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{self._label}-sqlite")
        try:
            await self._submit(self._open)
        except BaseException:
            await self.aclose()
            raise

    async def call(self, fn: Callable[Concatenate[sqlite3.Connection, P], T], *args: P.args,
                   **kwargs: P.kwargs) -> T:
        """`fn(connection, *args, **kwargs)` on the worker thread."""
        def run() -> T:
            if self._db is None:
                raise RuntimeError(f"the SQLite database of {self._label} is closed")
            return fn(self._db, *args, **kwargs)

        if self._inline:
            if not self._started:
                raise RuntimeError(f"{self._label}.start() was not awaited (or it is closed)")
            return run()
        return await self._submit(run)

    async def _submit(self, fn: Callable[[], T]) -> T:
        if self._executor is None:
            raise RuntimeError(f"{self._label}.start() was not awaited (or it is closed)")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def _open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self._path, isolation_level=None)
        self._db = db
        db.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_s * 1000)}")
        self._enable_wal(db)
        db.execute(f"PRAGMA synchronous={self._synchronous}")
        migrate_sqlite(db, self._schema)
        if self._checkpointer is not None:
            WalCheckpointer.disable_autocheckpoint(db)
            self._checkpointer.start()

    def _enable_wal(self, db: sqlite3.Connection) -> None:
        # Switching a new file to WAL needs an exclusive lock and SQLite does not always wait for it through
        # the busy handler (it returns SQLITE_BUSY at once when waiting could deadlock): when several
        # connections open a new file together, retry until the busy timeout.
        deadline = time.monotonic() + self._busy_timeout_s
        while True:
            try:
                db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.005)

    async def aclose(self) -> None:
        """Close the connection on its thread and let the thread go; idempotent."""
        if self._inline:
            self._close()
            self._started = False
            return
        executor, self._executor = self._executor, None
        if executor is None:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(executor, self._close)
        finally:
            executor.shutdown(wait=False)  # its one thread is idle now and exits by itself

    def _close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
        db, self._db = self._db, None
        if db is not None:
            if self._checkpointer is not None:
                with contextlib.suppress(sqlite3.Error):  # leave a small file behind; a busy one is fine too
                    db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            db.close()


# --------------------------------------------------------------------------------------------------------------
# Single writers


class WriterLockHeld(RuntimeError):
    """Another process is already the writer of this store: this one must not start."""


def _holder_note() -> str:
    return f"pid {os.getpid()} on {socket.gethostname()}"


class SqliteWriterLock:
    """An exclusive `flock` on `<file>.writer-lock`, held for as long as this process writes `<file>`.

    The kernel releases it when the process ends, however it ends (SIGKILL included), so it never outlives
    its holder and needs no expiry; a second process asking for it is refused at once. The lock file names
    its holder, for the error message. (flock is per host: the file must not be on a network filesystem
    shared by several hosts, which SQLite's own locking does not support either.)
    """

    def __init__(self, database: Path, *, role: str):
        self.path = database.with_name(database.name + ".writer-lock")
        self._database = database
        self._role = role
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        if self._fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise WriterLockHeld(f"{self._role} {self._database} already has a writer ({holder}); "
                                 "one process may write it") from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, (_holder_note() + "\n").encode(), 0)
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the only descriptor releases the flock


class PostgresWriterLock:
    """A session advisory lock on a connection of its own, held for as long as this process writes the database.

    PostgreSQL releases it when the session ends. The session turns on TCP keepalives (server and client
    side), so a writer whose host vanished without closing its connection loses the lock within about
    half a minute rather than after the operating system's two hours, and a replacement can start.
    A watch queries the session every `check_s`; once a query fails the lock may be gone, so `held`
    turns False (the store refuses new writes) and the lock is asked for again on a new session until
    it is held again.
    """

    _CLASS = "portico-writer"  # the two-key space, with hashtext(name): never the keys other stores use

    def __init__(self, dsn: str, *, name: str, role: str, check_s: float = 5.0, connect_timeout_s: float = 10.0):
        self._dsn = dsn
        self._name = name
        self._role = role
        self._check_s = check_s
        self._connect_timeout_s = connect_timeout_s
        self._conn: AsyncConnection[tuple[Any, ...]] | None = None
        self._watch: asyncio.Task[None] | None = None

    @property
    def held(self) -> bool:
        return self._conn is not None

    async def acquire(self) -> None:
        """Take the lock or raise WriterLockHeld; then keep watching it."""
        if not await self._try_acquire():
            raise WriterLockHeld(f"{self._role} (PostgreSQL lock {self._name!r}) already has a writer; "
                                 "one process may write it")
        self._watch = asyncio.create_task(self._watch_forever(), name=f"writer-lock-{self._name}")

    async def _try_acquire(self) -> bool:
        from psycopg import AsyncConnection

        conn = await AsyncConnection.connect(
            self._dsn, autocommit=True, connect_timeout=max(1, int(self._connect_timeout_s)),
            keepalives=1, keepalives_idle=10, keepalives_interval=5, keepalives_count=3,
            application_name=f"portico {self._role} writer lock")
        try:
            for setting_sql in ("SET tcp_keepalives_idle = 10", "SET tcp_keepalives_interval = 5",
                                "SET tcp_keepalives_count = 3"):
                await conn.execute(setting_sql)
            if await pg_scalar(conn, "SELECT pg_try_advisory_lock(hashtext(%s), hashtext(%s))",
                               (self._CLASS, self._name)):
                self._conn = conn
                return True
        except BaseException:
            await conn.close()
            raise
        await conn.close()
        return False

    async def _watch_forever(self) -> None:
        while True:
            await asyncio.sleep(self._check_s)
            conn = self._conn
            if conn is not None:
                try:
                    await asyncio.wait_for(conn.execute("SELECT 1"), timeout=self._check_s)
                    continue
                except Exception as exc:
                    self._conn = None
                    log.error("writer lock lost: new writes are refused until it is held again",
                              extra={"store": self._role, "error": type(exc).__name__})
                    with contextlib.suppress(Exception):
                        await conn.close()
            try:
                if await self._try_acquire():
                    log.warning("writer lock held again", extra={"store": self._role})
            except Exception as exc:
                log.debug("writer lock not taken yet", extra={"store": self._role, "error": type(exc).__name__})

    async def release(self) -> None:
        watch, self._watch = self._watch, None
        await cancel_and_wait(watch)
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()  # ending the session releases the lock


# --------------------------------------------------------------------------------------------------------------
# PostgreSQL


async def pg_scalar(conn: AsyncConnection[tuple[Any, ...]], query: str, params: Sequence[Any] = ()) -> Any:
    """The first column of the first row (a RuntimeError if there is no row)."""
    cursor = await conn.execute(query, params)
    row = await cursor.fetchone()
    if row is None:
        raise RuntimeError(f"no row from {query!r}")
    return row[0]


async def open_postgres_pool(dsn: str, schema: Schema, *, name: str, min_size: int = 1, max_size: int = 8,
                             connect_timeout_s: float = 10.0) -> PostgresPool:
    """An open psycopg 3 async pool on `dsn` with `schema` migrated; closed again if either step fails.

    Autocommit connections: transactions are explicit (`conn.transaction()`), so a read is one round trip
    and never leaves a transaction open.
    """
    from psycopg_pool import AsyncConnectionPool

    pool: PostgresPool = AsyncConnectionPool(dsn, min_size=min_size, max_size=max_size, open=False,
                                             kwargs={"autocommit": True}, name=name)
    try:
        await pool.open(wait=True, timeout=connect_timeout_s)
        await _migrate_postgres(pool, schema)
    except BaseException:
        await pool.close()
        raise
    return pool


async def _pg_version(conn: AsyncConnection[tuple[Any, ...]], schema: Schema) -> int | None:
    if not await pg_scalar(conn, "SELECT to_regclass(%s) IS NOT NULL", (schema.version_table,)):
        return None
    found: int = await pg_scalar(
        conn, f"SELECT COALESCE(MAX(version), 0) FROM {schema.version_table}")  # noqa: S608 (checked name)
    return found


async def _migrate_postgres(pool: PostgresPool, schema: Schema) -> None:
    async with pool.connection() as conn:
        current = await _pg_version(conn, schema)
        if current is not None:
            schema.refuse_newer(current)
            if current == schema.version:
                return  # up to date: not even a lock
        for migration in schema.migrations:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
                await conn.execute(schema.version_table_sql("BIGINT"))
                current = await _pg_version(conn, schema) or 0  # again, under the lock
                schema.refuse_newer(current)
                if current >= migration.version:
                    continue
                for statement in migration.postgres:
                    await conn.execute(statement)
                await conn.execute(
                    f"INSERT INTO {schema.version_table} "  # noqa: S608 (checked name)
                    "(version, description, applied_at_ms) VALUES (%s, %s, %s)",
                    (migration.version, migration.description, now_ms()))
