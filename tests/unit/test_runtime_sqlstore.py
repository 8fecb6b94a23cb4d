"""portico.runtime.sqlstore's transaction helper on a real SQLite file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from portico.runtime.sqlstore import immediate_transaction


def test_a_transaction_whose_commit_fails_is_rolled_back_and_releases_the_write_lock(tmp_path: Path) -> None:
    """A COMMIT that SQLite refuses (here a deferred foreign key; also SQLITE_BUSY) leaves the transaction open:
    left so, the store's one connection failed every later transaction ("cannot start a transaction within a
    transaction") and kept the file's write lock from every other writer."""
    path = tmp_path / "store.sqlite3"
    db = sqlite3.connect(path, isolation_level=None)
    other = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
        db.execute("CREATE TABLE child (parent INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)")
        with pytest.raises(sqlite3.IntegrityError), immediate_transaction(db):
            db.execute("INSERT INTO child VALUES (1)")  # refused only at COMMIT
        assert not db.in_transaction
        other.execute("INSERT INTO parent VALUES (2)")  # the write lock is free again
        with immediate_transaction(db):  # and the connection takes transactions again
            db.execute("INSERT INTO parent VALUES (1)")
        assert db.execute("SELECT COUNT(*) FROM child").fetchone() == (0,)
        assert db.execute("SELECT COUNT(*) FROM parent").fetchone() == (2,)
    finally:
        other.close()
        db.close()
