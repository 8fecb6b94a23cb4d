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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from portico.runtime.errors import FailedPrecondition, Unavailable
from portico.runtime.sqlstore import SqliteWriterLock, WalCheckpointer

__all__ = ["SaltLedger", "SaltReused"]

log = logging.getLogger("portico.signer")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS salt_watermarks (
    key_id     TEXT    NOT NULL,
    salt       TEXT    NOT NULL,
    digest     BLOB    NOT NULL,
    signed_at  REAL    NOT NULL,
    PRIMARY KEY (key_id, salt)
) WITHOUT ROWID;
"""


class SaltReused(FailedPrecondition):
    """The salt was already used by this key for a different payload."""

    default_reason = "SALT_REUSED"


@dataclass(slots=True)
class _Claim:
    key_id: str
    address: str
    salt: str
    digest: bytes
    future: asyncio.Future[None]

    @property
    def owner(self) -> str:
        """The ledger's name for the claim's key: its address (':' never occurs in a key id)."""
        return "address:" + self.address.lower()


def _ledger_unavailable() -> Unavailable:
    return Unavailable("the salt ledger cannot record the salt now; nothing was signed, retry",
                       reason="SALT_LEDGER_UNAVAILABLE")


class SaltLedger:
    """A durable map (key id, salt) -> digest with group commit."""

    def __init__(self, path: Path, *, synchronous: str = "NORMAL"):
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError("synchronous must be FULL or NORMAL")
        self._path = path
        self._synchronous = synchronous
        self._db: sqlite3.Connection | None = None
        self._pending: list[_Claim] = []
        self._legacy = False
        self._checkpointer = WalCheckpointer(path, label="salt-ledger")
        self._writer = SqliteWriterLock(path, role="the salt ledger")

    async def start(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._writer.acquire()
        try:
            db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self._synchronous}")
            db.execute("PRAGMA busy_timeout=2000")  # only another process (an operator's sqlite3 shell) can hold it
            db.execute(_SCHEMA)
            WalCheckpointer.disable_autocheckpoint(db)
            # Rows under key ids (a ledger from before address owners): claims are checked against them too.
            # Asked as two ranges of the primary key (';' follows ':'), not a scan of a ledger of any size.
            self._legacy = db.execute(
                "SELECT 1 FROM salt_watermarks WHERE key_id < 'address:' OR key_id >= 'address;' LIMIT 1"
            ).fetchone() is not None
        except BaseException:
            self._writer.release()
            raise
        self._db = db
        self._checkpointer.start()

    async def claim(self, key_id: str, address: str, salt: int, digest: bytes) -> None:
        """Record that `key_id` (whose key signs as `address`) signs `digest` under `salt`, or raise SaltReused."""
        if self._db is None:
            raise RuntimeError("SaltLedger.start() was not awaited")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append(_Claim(key_id, address, str(salt), digest, future))
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
                    "INSERT OR IGNORE INTO salt_watermarks (key_id, salt, digest, signed_at) VALUES (?, ?, ?, ?)",
                    (claim.owner, claim.salt, claim.digest, now))
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

    async def aclose(self) -> None:
        if self._pending:
            self._flush()
        self._checkpointer.stop()
        if self._db is not None:
            db, self._db = self._db, None
            with contextlib.suppress(sqlite3.Error):
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            db.close()
        self._writer.release()
