"""WAL checkpoints off the writer: the journal's and the ledger's commits never copy the WAL themselves.

Real SQLite files in a temporary directory: a writer with the automatic
checkpoint off writes continuously while `WalCheckpointer` works from its
thread; the WAL must stay bounded and every row must be in the database.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from portico.runtime.sqlstore import WalCheckpointer


def writer(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, payload BLOB NOT NULL)")
    WalCheckpointer.disable_autocheckpoint(db, journal_size_limit=1024 * 1024)
    return db


def wal_frames(db: sqlite3.Connection) -> int:
    """Frames in the WAL now (a PASSIVE checkpoint of zero pages reports it without changing anything)."""
    return int(db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1])


def test_the_writer_never_checkpoints_by_itself(tmp_path: Path) -> None:
    db = writer(tmp_path / "quiet.sqlite3")
    assert db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    for _ in range(3000):  # ~3,000 frames: SQLite's default would have checkpointed twice
        db.execute("INSERT INTO t (payload) VALUES (?)", (b"x" * 200,))
    # Every commit's frames are still in the WAL: nothing was checkpointed and restarted while writing.
    assert wal_frames(db) >= 3000
    db.close()


def test_continuous_writes_keep_a_bounded_wal_and_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "busy.sqlite3"
    db = writer(path)
    checkpointer = WalCheckpointer(path, label="test", interval_s=0.02, restart_frames=400)
    checkpointer.start()
    largest = 0
    rows = 4000  # a count, not a duration: a slow host must not weaken the test (it once wrote 2,370 in 2 s)
    try:
        # Thousands of commits a second, several times the journal's load, with no pause long enough for a
        # passive checkpoint (~ms) to finish between two of them: on its own it would never reset the WAL.
        for written in range(1, rows + 1):
            db.execute("INSERT INTO t (payload) VALUES (?)", (b"y" * 300,))
            time.sleep(0.0002)
            if written % 200 == 0:
                largest = max(largest, (path.parent / (path.name + "-wal")).stat().st_size)
    finally:
        checkpointer.stop()
    # Bounded by the restart threshold (plus what arrives while a restart waits), not by the rows written.
    assert largest < 4 * 400 * 4096, (largest, rows)
    assert checkpointer.checkpoints > 10 and checkpointer.restarts >= 1
    reader = sqlite3.connect(path)
    assert reader.execute("SELECT COUNT(*) FROM t").fetchone()[0] == rows
    reader.close()
    db.close()


def test_stop_ends_the_thread_promptly(tmp_path: Path) -> None:
    path = tmp_path / "stop.sqlite3"
    writer(path).close()
    checkpointer = WalCheckpointer(path, label="test", interval_s=60)
    checkpointer.start()
    began = time.monotonic()
    checkpointer.stop()
    assert time.monotonic() - began < 5
    assert not [t for t in threading.enumerate() if t.name == "test-checkpoint"]
