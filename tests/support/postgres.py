"""A fresh PostgreSQL database per test run, on the machine's server (127.0.0.1:5432, trust auth)."""

from __future__ import annotations

import contextlib
import secrets
import socket
from collections.abc import Iterator

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def postgres_reachable() -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", 5432)) == 0


@contextlib.contextmanager
def fresh_database(prefix: str = "portico_test") -> Iterator[str]:
    """Create a uniquely named database, yield its DSN, drop it afterwards (also on failure)."""
    import psycopg

    name = f"{prefix}_{secrets.token_hex(6)}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
