"""Pruning the salt ledger: a watermark outlives its order's expiration by the retention margin, then goes;
watermarks without an expiration, and every row of a ledger written before expirations were kept, stay."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest
from tests.support.waiting import until

from portico.runtime.sqlstore import SchemaVersionError, SqliteWriterLock
from portico.signer.watermark import SaltLedger, SaltReused

ADDRESS = "0x52908400098527886E0F7030069857D2E4169EE7"
OWNER = "address:" + ADDRESS.lower()
HOUR_MS = 3_600_000
NOW_MS = 1_800_000_000_000


class Clock:
    """A settable `time.time`."""

    def __init__(self, ms: int = NOW_MS):
        self.ms = ms

    def __call__(self) -> float:
        return self.ms / 1000


def digest(n: int) -> bytes:
    return n.to_bytes(32, "big")


def rows(path: Path) -> dict[str, int | None]:
    """salt -> expires_at_ms of every row."""
    db = sqlite3.connect(path)
    try:
        return {salt: expires for salt, expires in db.execute("SELECT salt, expires_at_ms FROM salt_watermarks")}
    finally:
        db.close()


def insert_expired(path: Path, count: int, *, first_salt: int = 10_000, expires_at_ms: int = NOW_MS - 5 * HOUR_MS,
                   owner: str = OWNER) -> None:
    """`count` rows whose order expired long ago, as claims would have written them."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO salt_watermarks (key_id, salt, digest, signed_at, expires_at_ms) VALUES (?, ?, ?, 0, ?)",
            [(owner, str(first_salt + i), digest(first_salt + i), expires_at_ms + i) for i in range(count)])
        db.execute("COMMIT")
    finally:
        db.close()


async def started(path: Path, clock: Clock, **kwargs: float) -> SaltLedger:
    ledger = SaltLedger(path, clock=clock, **kwargs)  # type: ignore[arg-type]
    await ledger.start()
    return ledger


async def test_prune_removes_rows_expired_past_the_retention_and_keeps_the_others(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    ledger = await started(path, Clock(), retention_s=3600)
    try:
        await ledger.claim("k", ADDRESS, 1, digest(1), expires_at_ms=NOW_MS - 2 * HOUR_MS)  # gone: 1 h past margin
        await ledger.claim("k", ADDRESS, 2, digest(2), expires_at_ms=NOW_MS - HOUR_MS // 2)  # within the margin
        await ledger.claim("k", ADDRESS, 3, digest(3), expires_at_ms=NOW_MS + HOUR_MS)  # not expired yet
        await ledger.claim("k", ADDRESS, 4, digest(4))  # no expiration (another primary type): for ever
        await ledger.claim("k", ADDRESS, 5, digest(5), expires_at_ms=2**256 - 1)  # "never": for ever
        assert rows(path) == {"1": NOW_MS - 2 * HOUR_MS, "2": NOW_MS - HOUR_MS // 2, "3": NOW_MS + HOUR_MS,
                              "4": None, "5": None}

        assert await ledger.prune() == 1
        assert await ledger.prune() == 0
        assert set(rows(path)) == {"2", "3", "4", "5"}

        await ledger.claim("k", ADDRESS, 1, digest(100))  # the pruned salt: its order is long refused by the venue
        for salt in (2, 3, 4, 5):  # every other salt still refuses another payload
            with pytest.raises(SaltReused):
                await ledger.claim("k", ADDRESS, salt, digest(100 + salt))
            await ledger.claim("k", ADDRESS, salt, digest(salt))  # and allows its own again
    finally:
        await ledger.aclose()


async def test_a_retention_past_sqlites_integers_prunes_nothing_and_keeps_pruning(tmp_path: Path) -> None:
    """PORTICO_SIGNER_WATERMARK_RETENTION_SECONDS has no maximum (1e16 s: "keep them all"): its cutoff lies before
    any SQLite integer. A pass must then delete nothing and keep running, not raise OverflowError from the loop's
    callback (a traceback, and no pass was ever scheduled again)."""
    path = tmp_path / "ledger.sqlite3"
    ledger = await started(path, Clock(), retention_s=1e16, prune_interval_s=0.01)
    try:
        await ledger.claim("k", ADDRESS, 1, digest(1), expires_at_ms=1)
        assert await ledger.prune() == 0
        passes = ledger.prune_stats.transactions
        # Background passes go on (two: one was scheduled again after another); no fixed window on a loaded host.
        await until(lambda: ledger.prune_stats.transactions >= passes + 2, timeout_s=20)
        assert ledger.prune_stats.rows == 0
        assert set(rows(path)) == {"1"}
    finally:
        await ledger.aclose()


async def test_a_reused_salt_of_an_unexpired_order_is_refused_after_pruning(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    clock = Clock()
    ledger = await started(path, clock, prune_batch=50)
    try:
        await ledger.claim("k", ADDRESS, 7, digest(7), expires_at_ms=NOW_MS + 10 * 60_000)  # a 10-minute order
        await ledger.aclose()
        insert_expired(path, 120)
        ledger = await started(path, clock, prune_batch=50)
        while await ledger.prune():
            pass
        assert set(rows(path)) == {"7"}
        with pytest.raises(SaltReused):
            await ledger.claim("k", ADDRESS, 7, digest(8), expires_at_ms=NOW_MS + 10 * 60_000)
        clock.ms = NOW_MS + 10 * 60_000 + HOUR_MS - 1  # expired, but not by the whole margin yet
        assert await ledger.prune() == 0
        with pytest.raises(SaltReused):
            await ledger.claim("k", ADDRESS, 7, digest(8))
        clock.ms += 2  # now it has
        assert await ledger.prune() == 1
        await ledger.claim("k", ADDRESS, 7, digest(8), expires_at_ms=clock.ms + 60_000)
    finally:
        await ledger.aclose()


async def test_each_prune_transaction_deletes_at_most_a_batch_and_the_background_drains_the_rest(
        tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    ledger = await started(path, Clock())
    await ledger.claim("k", ADDRESS, 1, digest(1), expires_at_ms=NOW_MS + HOUR_MS)
    await ledger.aclose()
    insert_expired(path, 350)

    ledger = await started(path, Clock(), prune_batch=100, prune_interval_s=3600)  # no background pass in this test
    try:
        assert await ledger.prune() == 100  # one transaction: the batch, not the 350 due
        assert len(rows(path)) == 251
        assert (ledger.prune_stats.transactions, ledger.prune_stats.largest) == (1, 100)
    finally:
        await ledger.aclose()

    # By itself, in the background: several transactions of at most a batch each, between which the loop runs.
    ledger = await started(path, Clock(), prune_batch=100, prune_interval_s=0.05)
    try:
        ticks = 0
        deadline = time.monotonic() + 10
        while len(rows(path)) > 1 and time.monotonic() < deadline:
            await asyncio.sleep(0)  # the loop gets a turn between prune transactions
            ticks += 1
        assert set(rows(path)) == {"1"}
        stats = ledger.prune_stats
        assert stats.rows == 250
        assert stats.largest == 100
        assert stats.transactions >= 3
        assert ticks > stats.transactions
    finally:
        await ledger.aclose()


async def test_a_prune_pass_never_waits_for_a_lock_another_connection_holds(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    ledger = await started(path, Clock(), prune_interval_s=3600)
    try:
        await ledger.claim("k", ADDRESS, 1, digest(1), expires_at_ms=NOW_MS - 5 * HOUR_MS)
        holder = sqlite3.connect(path, isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")  # an operator's sqlite3 shell, say
            began = time.monotonic()
            assert await ledger.prune() == 0
            assert time.monotonic() - began < 0.5  # not the claims' 2 s busy timeout, on the event loop
            assert ledger.prune_stats.skipped == 1
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert await ledger.prune() == 1
    finally:
        await ledger.aclose()


# --------------------------------------------------------------------------- a ledger from before pruning

# The schema and the writes of the ledger before expirations were recorded, verbatim (services/portico/signer/
# watermark.py as of commit f751b4a): one table, no version table.
ORIGINAL_SCHEMA = """
CREATE TABLE IF NOT EXISTS salt_watermarks (
    key_id     TEXT    NOT NULL,
    salt       TEXT    NOT NULL,
    digest     BLOB    NOT NULL,
    signed_at  REAL    NOT NULL,
    PRIMARY KEY (key_id, salt)
) WITHOUT ROWID;
"""
ORIGINAL_INSERT = "INSERT OR IGNORE INTO salt_watermarks (key_id, salt, digest, signed_at) VALUES (?, ?, ?, ?)"


def original_ledger(path: Path) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(ORIGINAL_SCHEMA)
        db.execute("BEGIN IMMEDIATE")
        db.execute(ORIGINAL_INSERT, (OWNER, "1", digest(1), 1_700_000_000.0))
        db.execute(ORIGINAL_INSERT, (OWNER, "2", digest(2), 1_700_000_000.0))
        db.execute(ORIGINAL_INSERT, ("k-old", "3", digest(3), 1_600_000_000.0))  # a row from before address owners
        db.execute("COMMIT")
    finally:
        db.close()


async def test_a_ledger_written_by_the_original_code_migrates_and_keeps_every_row(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    original_ledger(path)
    ledger = SaltLedger(path)
    await ledger.start()
    try:
        db = sqlite3.connect(path)
        versions = [v for (v,) in db.execute("SELECT version FROM salt_ledger_version ORDER BY version")]
        db.close()
        assert versions == [1, 2]
        assert rows(path) == {"1": None, "2": None, "3": None}
    finally:
        await ledger.aclose()
    clock = Clock(NOW_MS + 100 * 365 * 24 * HOUR_MS)  # a century on: still nothing of theirs is due
    ledger = await started(path, clock)
    try:
        assert await ledger.prune() == 0
        assert set(rows(path)) == {"1", "2", "3"}
        with pytest.raises(SaltReused):
            await ledger.claim("k", ADDRESS, 1, digest(9))
        with pytest.raises(SaltReused):
            await ledger.claim("k-old", ADDRESS, 3, digest(9))  # the key-id row is still checked
        await ledger.claim("k", ADDRESS, 2, digest(2))  # the identical payload: allowed, as before
        await ledger.claim("k", ADDRESS, 4, digest(4), expires_at_ms=NOW_MS)
    finally:
        await ledger.aclose()

    # Opened again: already migrated, nothing changes; and the original code could still write to it.
    ledger = await started(path, clock)
    await ledger.aclose()
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute(ORIGINAL_INSERT, (OWNER, "5", digest(5), 1_700_000_000.0))
    finally:
        db.close()
    assert rows(path) == {"1": None, "2": None, "3": None, "4": NOW_MS, "5": None}


async def test_a_ledger_newer_than_this_code_is_refused(tmp_path: Path) -> None:
    from portico.signer.watermark import SCHEMA

    path = tmp_path / "ledger.sqlite3"
    ledger = await started(path, Clock())
    await ledger.aclose()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("INSERT INTO salt_ledger_version VALUES (?, 'from the future', 0)", (SCHEMA.version + 1,))
    db.close()
    with pytest.raises(SchemaVersionError, match="the salt ledger"):
        await started(path, Clock())
    lock = SqliteWriterLock(path, role="a test")  # the refused start let its writer lock go
    lock.acquire()
    lock.release()
