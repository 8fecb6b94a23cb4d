"""Salt watermarks: one (key, salt) never signs two different payloads.

This is the order-signing analogue of a validator's slashing protection. A
Syndr order's `salt` makes it unique at the venue; if the same salt were ever
signed over two different orders, either could be replayed in place of the
other. So before a signature leaves the signer, the (key, salt, digest)
triple is committed to a SQLite ledger: a different digest under a known salt
is refused with FAILED_PRECONDITION, the identical digest is allowed (a retry
re-signs the same payload and gets the same, deterministic signature).

"The key" is the private key, not its name: one private key can be stored
under two key ids, and its two ids must not sign one salt twice. So a claim
is recorded under `address:<signing address>` (a name no key id can have; the
`key_id` column holds the owner). A ledger written before that holds rows
under key ids: while any is left, each claim is also checked (read only)
against its key id's row, so those salts stay protected.

Claims are group-committed on the event loop's own thread: every claim made
during one loop iteration goes into one transaction, run by a callback at the
end of that iteration. Measured here, handing each batch to a worker thread
cost more CPU (two cross-thread wakeups per batch) than the commit itself,
which is one WAL append plus, with `synchronous=FULL`, one fsync (~0.15 ms).
One ledger file belongs to one signer process (SQLite would arbitrate several,
but its lock waits would then stall the event loop): the ledger holds the
file's writer lock (`runtime.sqlstore.SqliteWriterLock`), so a second signer
on the same file is refused at start. WAL checkpoints (which
fsync) run on a `WalCheckpointer` thread, not inside a commit on the loop.

Pruning. A watermark only has to outlive the signature it protects. A Syndr
`Order` carries `expiration`, after which the venue refuses the order (and
cancels it if it rests), so a replay of its signature is harmless after it.
Each claim records that time (`expires_at_ms`, NULL when the payload names
none: other primary types, an expiration of 0, raw digests); rows whose
expiration lies more than `retention_s` (clock skew between signer and venue,
an hour by default) in the past are deleted in the background, so the ledger
holds about one TTL-plus-retention of orders instead of growing for ever. Rows
without an expiration, older ledgers' rows included, are kept for ever. Once a
row is gone its salt may sign another payload, which is safe because the
first signature is then of an order the venue refuses as expired. (Syndr's
document does not say the venue refuses a salt it has seen; the simulator does,
per account and in memory, so the signer does not lean on it.)

The pruning runs on the event loop like the commits, in short transactions
of at most `prune_batch` rows (deleting a row costs ~10 us here, its page being
a random one of a large table): a second writer on a thread would hold
SQLite's one write lock for as long, and the loop's commit would then wait in
SQLite's busy handler, which sleeps in steps of 1, 2, 5 ms... on the loop. A
pass never waits for the lock (another connection holding it skips the pass),
and while a backlog lasts the passes take at most ~5% of the loop's time.

The schema is versioned (`salt_ledger_version`, `portico.runtime.sqlstore.Schema`):
version 1 is the table as ledgers held it before versioning, so an existing
ledger opens as version 1 and migrates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from portico.runtime.errors import FailedPrecondition, Unavailable
from portico.runtime.sqlstore import (
    Migration,
    Schema,
    SqliteWriterLock,
    WalCheckpointer,
    migrate_sqlite,
)

__all__ = ["DEFAULT_RETENTION_S", "PRUNE_BATCH", "SCHEMA", "PruneStats", "SaltLedger", "SaltReused"]

log = logging.getLogger("portico.signer")

DEFAULT_RETENTION_S = 3600.0
"""How long a watermark outlives its order's expiration: the margin for clock skew between signer and venue."""
PRUNE_BATCH = 100
"""Most rows one prune transaction deletes (about 1 ms of the event loop here)."""
PRUNE_INTERVAL_S = 1.0
"""Pause between prune passes once nothing more is due."""
_PRUNE_SHARE = 0.05  # while a backlog lasts: the pruning's share of the loop's time, at most
_PRUNE_MIN_GAP_S = 0.01
_PRUNE_RETRY_MAX_S = 60.0  # while passes keep failing: the pause doubles from the interval up to this
_BUSY_TIMEOUT_MS = 2000  # only another process (an operator's sqlite3 shell) can hold the lock
_NEVER = 1 << 63  # an expiration past SQLite's INTEGER (a uint256 "never", say) is no expiration

SCHEMA = Schema(
    what="the salt ledger",
    version_table="salt_ledger_version",
    migrations=(
        # Exactly the table of ledgers from before versioning: on those this is a no-op, and they become version 1.
        Migration(1, "salt watermarks: (owner, salt) -> digest", sqlite=(
            """CREATE TABLE IF NOT EXISTS salt_watermarks (
    key_id     TEXT    NOT NULL,
    salt       TEXT    NOT NULL,
    digest     BLOB    NOT NULL,
    signed_at  REAL    NOT NULL,
    PRIMARY KEY (key_id, salt)
) WITHOUT ROWID""",), postgres=()),
        # Old rows keep NULL: kept for ever. The index holds only rows that will expire, oldest first.
        Migration(2, "the expiration of each watermark's payload, for pruning", sqlite=(
            "ALTER TABLE salt_watermarks ADD COLUMN expires_at_ms INTEGER",
            "CREATE INDEX salt_watermarks_by_expiry ON salt_watermarks (expires_at_ms) "
            "WHERE expires_at_ms IS NOT NULL",
        ), postgres=()),
    ),
)

# One prune transaction: the oldest `limit` expired rows, found on the expiry index, deleted by primary key.
_PRUNE_SQL = ("DELETE FROM salt_watermarks WHERE (key_id, salt) IN ("
              "SELECT key_id, salt FROM salt_watermarks WHERE expires_at_ms < ? ORDER BY expires_at_ms LIMIT ?)")


class SaltReused(FailedPrecondition):
    """The salt was already used by this key for a different payload."""

    default_reason = "SALT_REUSED"


@dataclass(slots=True)
class PruneStats:
    """What the pruning has done since start, for tests and curiosity."""

    transactions: int = 0  # prune transactions committed
    rows: int = 0  # watermarks deleted
    largest: int = 0  # most rows one transaction deleted: never more than the batch
    skipped: int = 0  # passes that found the write lock held by another connection
    failed: int = 0  # passes that failed otherwise (retried after a pause doubling up to a minute)


@dataclass(slots=True)
class _Claim:
    key_id: str
    address: str
    salt: str
    digest: bytes
    expires_at_ms: int | None
    future: asyncio.Future[None]

    @property
    def owner(self) -> str:
        """The ledger's name for the claim's key: its address (':' never occurs in a key id)."""
        return "address:" + self.address.lower()


def _ledger_unavailable() -> Unavailable:
    return Unavailable("the salt ledger cannot record the salt now; nothing was signed, retry",
                       reason="SALT_LEDGER_UNAVAILABLE")


class SaltLedger:
    """A durable map (key id, salt) -> digest with group commit, pruned once a payload's expiration is long past."""

    def __init__(self, path: Path, *, synchronous: str = "NORMAL", retention_s: float = DEFAULT_RETENTION_S,
                 prune_batch: int = PRUNE_BATCH, prune_interval_s: float = PRUNE_INTERVAL_S,
                 clock: Callable[[], float] = time.time):
        """`clock` (seconds since the epoch, as `time.time`) is what pruning compares expirations with."""
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError("synchronous must be FULL or NORMAL")
        if retention_s < 0 or prune_batch < 1 or prune_interval_s <= 0:
            raise ValueError("retention_s must be >= 0, prune_batch >= 1 and prune_interval_s > 0")
        self._path = path
        self._synchronous = synchronous
        self._retention_ms = int(retention_s * 1000)
        self._prune_batch = prune_batch
        self._prune_interval_s = prune_interval_s
        self._clock = clock
        self._db: sqlite3.Connection | None = None
        self._pending: list[_Claim] = []
        self._legacy = False
        self._prune_timer: asyncio.TimerHandle | None = None
        self._prune_failures = 0  # passes in a row that failed
        self.prune_stats = PruneStats()
        self._checkpointer = WalCheckpointer(path, label="salt-ledger")
        self._writer = SqliteWriterLock(path, role="the salt ledger")

    async def start(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._writer.acquire()
        try:
            # On a thread: migrating a large ledger reads all of it once (an index build), ~0.1 s per million rows.
            db = await asyncio.to_thread(self._open)
        except BaseException:
            self._writer.release()
            raise
        self._db = db
        self._checkpointer.start()
        self._schedule_prune(self._prune_interval_s)

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self._synchronous}")
            db.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
            migrate_sqlite(db, SCHEMA)
            WalCheckpointer.disable_autocheckpoint(db)
            # Rows under key ids (a ledger from before address owners): claims are checked against them too.
            # Asked as two ranges of the primary key (';' follows ':'), not a scan of a ledger of any size.
            self._legacy = db.execute(
                "SELECT 1 FROM salt_watermarks WHERE key_id < 'address:' OR key_id >= 'address;' LIMIT 1"
            ).fetchone() is not None
        except BaseException:
            db.close()
            raise
        return db

    async def claim(self, key_id: str, address: str, salt: int, digest: bytes, *,
                    expires_at_ms: int | None = None) -> None:
        """Record that `key_id` (whose key signs as `address`) signs `digest` under `salt`, or raise SaltReused.

        `expires_at_ms` (epoch ms) is when the venue stops accepting the signed payload; the watermark is pruned
        `retention_s` after it. None (or a time past SQLite's integers): kept for ever.
        """
        if self._db is None:
            raise RuntimeError("SaltLedger.start() was not awaited")
        if expires_at_ms is not None and not 0 <= expires_at_ms < _NEVER:
            expires_at_ms = None
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append(_Claim(key_id, address, str(salt), digest, expires_at_ms, future))
        await future

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        try:
            reused = self._commit(batch)
        except Exception as exc:  # the database failed: nobody in this batch may sign
            # Locked past the busy timeout, disk full, an I/O error: nothing in the batch was signed, and sending
            # the same request again is safe (it signs, or is refused as SALT_REUSED if a different payload took
            # the salt meanwhile). UNAVAILABLE says so; INTERNAL would tell the caller not to retry.
            transient = isinstance(exc, sqlite3.OperationalError)
            if transient:
                log.warning("salt ledger cannot commit; refusing to sign",
                            extra={"error": str(exc)[:200], "claims": len(batch)})
            for claim in batch:
                if not claim.future.done():
                    claim.future.set_exception(_ledger_unavailable() if transient else exc)
            return
        for claim, was_reused in zip(batch, reused, strict=True):
            if claim.future.done():  # the caller went away; the watermark stands anyway
                continue
            if was_reused:
                claim.future.set_exception(SaltReused(
                    f"salt {claim.salt} was already signed over a different payload by key {claim.key_id} or by "
                    f"another key id holding the same key ({claim.address})",
                    metadata={"key_id": claim.key_id, "salt": claim.salt}))
            else:
                claim.future.set_result(None)

    def _commit(self, batch: list[_Claim]) -> list[bool]:
        """Insert the batch in one transaction; True where the salt was reused."""
        db = self._db
        if db is None:
            raise RuntimeError("salt ledger closed")
        reused: list[bool] = []
        now = time.time()
        db.execute("BEGIN IMMEDIATE")
        try:
            for claim in batch:
                cursor = db.execute(
                    "INSERT OR IGNORE INTO salt_watermarks (key_id, salt, digest, signed_at, expires_at_ms) "
                    "VALUES (?, ?, ?, ?, ?)", (claim.owner, claim.salt, claim.digest, now, claim.expires_at_ms))
                owners = ([] if cursor.rowcount == 1 else [claim.owner]) + ([claim.key_id] if self._legacy else [])
                refused = any(bytes(row[0]) != claim.digest for owner in owners for row in db.execute(
                    "SELECT digest FROM salt_watermarks WHERE key_id = ? AND salt = ?", (owner, claim.salt)))
                if refused and cursor.rowcount == 1:  # the refused digest is recorded under no owner
                    db.execute("DELETE FROM salt_watermarks WHERE key_id = ? AND salt = ?", (claim.owner, claim.salt))
                reused.append(refused)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return reused

    # ------------------------------------------------------------------ pruning

    async def prune(self) -> int:
        """One prune transaction now (what the background runs every pass): the number of rows deleted.

        At most `prune_batch` rows, oldest expiration first, each expired more than `retention_s` ago by the
        clock. 0 when nothing is due, or when another connection holds the write lock (a pass never waits).
        """
        if self._db is None:
            raise RuntimeError("SaltLedger.start() was not awaited (or it is closed)")
        return self._prune_once(self._db) or 0

    def _prune_once(self, db: sqlite3.Connection) -> int | None:
        """Delete up to a batch of expired rows in one transaction; None if the write lock was busy."""
        # A retention past SQLite's integers (the setting has no maximum) is a cutoff before every expiration.
        cutoff_ms = max(-_NEVER, int(self._clock() * 1000) - self._retention_ms)
        db.execute("PRAGMA busy_timeout=0")  # never wait for the lock on the loop: skip this pass instead
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            self.prune_stats.skipped += 1
            return None
        finally:
            db.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        try:
            deleted = db.execute(_PRUNE_SQL, (cutoff_ms, self._prune_batch)).rowcount
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        stats = self.prune_stats
        stats.transactions += 1
        stats.rows += deleted
        stats.largest = max(stats.largest, deleted)
        return deleted

    def _schedule_prune(self, delay_s: float) -> None:
        self._prune_timer = asyncio.get_running_loop().call_later(delay_s, self._prune_pass)

    def _prune_pass(self) -> None:
        self._prune_timer = None
        db = self._db
        if db is None:
            return
        started = time.perf_counter()
        try:
            deleted = self._prune_once(db)
        except sqlite3.Error as exc:  # a full disk, say: the rows wait for a later pass
            self.prune_stats.failed += 1
            self._prune_failures += 1
            # The pause doubles while the passes keep failing, and the failure is logged once (not every second).
            pause = min(self._prune_interval_s * 2 ** min(self._prune_failures - 1, 32),
                        max(self._prune_interval_s, _PRUNE_RETRY_MAX_S))
            log.log(logging.WARNING if self._prune_failures == 1 else logging.DEBUG,
                    "salt ledger prune failed; retrying later",
                    extra={"error": str(exc)[:200], "failures": self._prune_failures, "retry_in_s": pause})
            self._schedule_prune(pause)
            return
        if self._prune_failures:
            log.info("salt ledger prune works again", extra={"failures": self._prune_failures})
            self._prune_failures = 0
        if deleted is not None and deleted >= self._prune_batch:  # more are due: next batch soon, loop first
            self._schedule_prune(max(_PRUNE_MIN_GAP_S, (time.perf_counter() - started) * (1 / _PRUNE_SHARE - 1)))
        else:
            self._schedule_prune(self._prune_interval_s)

    async def aclose(self) -> None:
        if self._prune_timer is not None:
            self._prune_timer.cancel()
            self._prune_timer = None
        if self._pending:
            self._flush()
        self._checkpointer.stop()
        if self._db is not None:
            db, self._db = self._db, None
            with contextlib.suppress(sqlite3.Error):
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            db.close()
        self._writer.release()
