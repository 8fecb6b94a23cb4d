"""portico.runtime.sqlstore's transaction helper and database error mapping, on real SQLite and PostgreSQL clients."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from tests.support.ports import free_port

from portico.runtime.sqlstore import database_unavailable, immediate_transaction


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


def test_a_locked_sqlite_database_is_unavailable_and_a_bad_statement_is_not(tmp_path: Path) -> None:
    """Busy is the caller's to retry (UNAVAILABLE); a statement SQLite cannot run is a bug (None: INTERNAL)."""
    path = tmp_path / "store.sqlite3"
    holder = sqlite3.connect(path, isolation_level=None)
    other = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        holder.execute("CREATE TABLE t (x)")
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(sqlite3.OperationalError) as locked:
            other.execute("INSERT INTO t VALUES (1)")
        with pytest.raises(sqlite3.OperationalError) as bad:
            other.execute("SELECT * FROM no_such_table")
    finally:
        holder.close()
        other.close()
    unavailable = database_unavailable(locked.value)
    assert unavailable is not None and unavailable.reason == "DATABASE_UNAVAILABLE"
    assert "locked" not in str(unavailable)  # the driver's text stays out
    assert database_unavailable(bad.value) is None
    assert database_unavailable(ValueError("x")) is None


def test_a_postgresql_server_that_cannot_be_reached_is_unavailable() -> None:
    import psycopg

    port = free_port()  # nothing listens there: refused
    with pytest.raises(psycopg.OperationalError) as refused:
        psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/none", connect_timeout=2)
    unavailable = database_unavailable(refused.value)
    assert unavailable is not None and unavailable.reason == "DATABASE_UNAVAILABLE"
    assert str(port) not in str(unavailable)
