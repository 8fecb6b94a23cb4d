"""The order journal on both backends: exact round trips, first-insert-wins (also concurrently), one writer
process per journal, updates that never touch the signed request, lookups, listings, reopening and migrations.

PostgreSQL tests run in a fresh database per test (`tests.support.postgres.fresh_database`), skipped only if
nothing listens on 127.0.0.1:5432; SQLite tests in a new file under tmp_path.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from tests.support.postgres import fresh_database, postgres_reachable

from portico.execution import journal as journal_module
from portico.execution.journal import (
    MIGRATIONS,
    SCHEMA,
    OrderJournal,
    PostgresOrderJournal,
    SqliteOrderJournal,
    open_journal,
)
from portico.execution.model import FINAL_STATES, UNRESOLVED_STATES, JournalEntry, OrderIntent, OrderState
from portico.refdata.store import open_store
from portico.runtime.errors import Unavailable
from portico.runtime.sqlstore import Schema, SchemaVersionError, WriterLockHeld, now_ms

VENUE = "syndr"
ALICE = "0x52908400098527886E0F7030069857D2E4169EE7"  # checksummed
BOB = "0x8617E340B3D01FA5F11F306F4090FD50E238070D"
SIGNER = "0xde709f2102306220921060314715629080e2fb77"
BIG_SALT = 2**256 - 12345  # a uint256 far beyond int64


# --------------------------------------------------------------------------------------------------------------
# Backends


@dataclass
class Backend:
    """One database: journals on it, and raw SQL for what the journal's API cannot show."""

    kind: str
    sqlite_path: Path | None = None
    dsn: str | None = None

    def journal(self, synchronous: str = "NORMAL") -> OrderJournal:
        return open_journal(sqlite_path=self.sqlite_path, dsn=self.dsn, synchronous=synchronous)

    async def sql(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if self.kind == "sqlite":
            assert self.sqlite_path is not None
            with sqlite3.connect(self.sqlite_path, isolation_level=None) as raw:
                rows = raw.execute(query.replace("%s", "?"), params).fetchall()
            raw.close()
            return rows
        import psycopg

        assert self.dsn is not None
        async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as conn:
            cursor = await conn.execute(query, params)
            return await cursor.fetchall() if cursor.description else []


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        yield Backend("sqlite", sqlite_path=tmp_path / "execution" / "journal.sqlite3")
        return
    if not postgres_reachable():
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432")
    with fresh_database("portico_journal_test") as dsn:
        yield Backend("postgres", dsn=dsn)


@pytest.fixture
async def journal(backend: Backend) -> AsyncIterator[OrderJournal]:
    async with backend.journal() as opened:
        yield opened


# --------------------------------------------------------------------------------------------------------------
# Entries


def intent(client_order_id: str = "c-1", *, account: str = ALICE, symbol: str = "BTC-PERP", side: str = "buy",
           price: Decimal | None = Decimal("65000.50"), amount: Decimal = Decimal("0.0010"),
           label: str = "") -> OrderIntent:
    return OrderIntent(venue=VENUE, account=account, client_order_id=client_order_id, symbol=symbol, side=side,
                       order_type="limit" if price is not None else "market", time_in_force="GTC",
                       post_only=False, reduce_only=False, price=price, amount=amount, label=label)


def entry(client_order_id: str = "c-1", *, salt: int = 1, state: OrderState = OrderState.PENDING,
          **intent_fields: Any) -> JournalEntry:
    it = intent(client_order_id, **intent_fields)
    request = (b'{"instrument":"%s","salt":"%d","client_order_id":"%s"}'
               % (it.symbol.encode(), salt, client_order_id.encode()))
    return JournalEntry(intent=it, salt=salt, timestamp_ms=1_800_000_000_000, expiration_ms=1_800_000_060_000,
                        signer_address=SIGNER, request=request, state=state)


async def insert_all(journal: OrderJournal, entries: Sequence[JournalEntry]) -> list[JournalEntry]:
    return [await journal.insert(e) for e in entries]


def keys(entries: Sequence[JournalEntry]) -> list[str]:
    return [e.intent.client_order_id for e in entries]


# --------------------------------------------------------------------------------------------------------------
# Round trips and first-insert-wins


async def test_insert_and_get_round_trip_every_field(journal: OrderJournal) -> None:
    original = JournalEntry(
        intent=OrderIntent(venue=VENUE, account=ALICE, client_order_id="ü-1/é", symbol="ETH-27JUN26-4000-C",
                           side="sell", order_type="limit", time_in_force="IOC", post_only=True, reduce_only=True,
                           price=Decimal("12.3400"), amount=Decimal("0.000000000000000001"), label="hedge #7"),
        salt=BIG_SALT, timestamp_ms=1_800_000_000_123, expiration_ms=1_800_000_600_456, signer_address=SIGNER,
        request=bytes(range(256)),  # not even UTF-8
        state=OrderState.UNKNOWN, order_id="0x" + "ab" * 32, venue_order=b'{"order_id":"x","filled":"0.0"}\x00\xff',
        reject_code=-32_000, reject_reason="nonce too low", created_ms=7, updated_ms=8, attempts=3)
    before = now_ms()
    stored = await journal.insert(original)
    after = now_ms()

    assert before <= stored.created_ms <= after  # set by the journal, not the caller
    assert stored.updated_ms == stored.created_ms
    assert stored == original.with_changes(created_ms=stored.created_ms, updated_ms=stored.created_ms)
    assert await journal.get(VENUE, ALICE, "ü-1/é") == stored
    # Exactly, not just numerically equal: trailing zeros and exponents survive.
    assert stored.intent.price is not None
    assert (str(stored.intent.price), str(stored.intent.amount)) == ("12.3400", "1E-18")
    assert stored.salt == BIG_SALT and stored.request == bytes(range(256))
    assert stored.fingerprint == original.intent.fingerprint()


async def test_market_order_and_defaults_round_trip(journal: OrderJournal) -> None:
    original = entry("m-1", price=None, amount=Decimal("5"))
    stored = await journal.insert(original)
    assert stored.intent.price is None and stored.intent.order_type == "market"
    assert (stored.state, stored.order_id, stored.venue_order, stored.reject_code, stored.reject_reason,
            stored.attempts) == (OrderState.PENDING, "", b"", 0, "", 1)
    assert stored == original.with_changes(created_ms=stored.created_ms, updated_ms=stored.updated_ms)


async def test_accounts_are_compared_as_given(journal: OrderJournal) -> None:
    await journal.insert(entry("c-1"))
    assert await journal.get(VENUE, ALICE, "c-1") is not None
    assert await journal.get(VENUE, ALICE.lower(), "c-1") is None
    assert await journal.get(VENUE, ALICE, "C-1") is None
    assert await journal.get("other", ALICE, "c-1") is None


async def test_a_duplicate_insert_returns_the_first_entry_unchanged(journal: OrderJournal) -> None:
    first = await journal.insert(entry("c-1", salt=111))
    await asyncio.sleep(0.005)  # a later created_ms, if the second one were stored
    second = await journal.insert(entry("c-1", salt=222, amount=Decimal("9"), state=OrderState.OPEN))

    assert second == first
    assert (second.salt, second.intent.amount, second.state) == (111, Decimal("0.0010"), OrderState.PENDING)
    assert await journal.get(VENUE, ALICE, "c-1") == first
    assert await journal.count() == 1
    # The same client id on another account is another order.
    other = await journal.insert(entry("c-1", salt=333, account=BOB))
    assert other.salt == 333 and await journal.count() == 2


async def test_concurrent_inserts_of_one_key_store_exactly_one(journal: OrderJournal) -> None:
    candidates = [entry("race", salt=1000 + i) for i in range(20)]
    results = await asyncio.gather(*(journal.insert(c) for c in candidates))

    salts = {r.salt for r in results}
    assert len(salts) == 1 and salts <= {c.salt for c in candidates}
    assert len({r.created_ms for r in results}) == 1
    stored = await journal.get(VENUE, ALICE, "race")
    assert stored is not None and stored.salt in salts
    assert await journal.count() == 1


async def test_a_second_journal_on_the_same_database_is_refused_until_the_first_closes(
        journal: OrderJournal, backend: Backend) -> None:
    """One writer per journal: a second process (here a second journal) is refused at start, not let in to race."""
    stored = await journal.insert(entry("first", salt=1))
    second = backend.journal()
    with pytest.raises(WriterLockHeld, match=r"the order journal .*already has a writer"):
        await second.start()
    assert await journal.insert(entry("still-writing", salt=2))  # the holder is unaffected
    await journal.aclose()
    async with backend.journal() as third:  # the lock went with the first
        assert await third.get(VENUE, ALICE, "first") == stored
        assert await third.count() == 2


async def test_postgres_journal_refuses_new_orders_while_its_writer_lock_is_lost(tmp_path: Path) -> None:
    """The lock's session is killed (as a failover or a network cut would): no new order is journaled until the
    lock is held again, so a replica that took over meanwhile is never raced."""
    if not postgres_reachable():
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432")
    import psycopg

    with fresh_database("portico_journal_lock") as dsn:
        journal = PostgresOrderJournal(dsn, writer_check_s=0.1)
        await journal.start()
        try:
            await journal.insert(entry("before", salt=1))
            async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as admin:
                # Kill the lock's session and take the lock at once, as a replica that took over would.
                cursor = await admin.execute(
                    "SELECT pg_terminate_backend(pid), "
                    "pg_advisory_lock(hashtext('portico-writer'), hashtext('execution-journal')) "
                    "FROM pg_stat_activity WHERE datname = current_database() AND application_name LIKE %s",
                    ("%writer lock%",))
                assert len(await cursor.fetchall()) == 1
                refused = None
                for attempt in range(100):
                    try:
                        await journal.insert(entry(f"during-{attempt}", salt=100 + attempt))
                    except Unavailable as exc:
                        refused = exc
                        break
                    await asyncio.sleep(0.02)
                assert refused is not None and refused.reason == "JOURNAL_WRITER_LOCK_LOST"
                await asyncio.sleep(0.5)  # the journal keeps asking for the lock, and keeps refusing meanwhile
                with pytest.raises(Unavailable):
                    await journal.insert(entry("while-taken", salt=3))
                await admin.execute(
                    "SELECT pg_advisory_unlock(hashtext('portico-writer'), hashtext('execution-journal'))")
                for _ in range(100):  # released: the journal takes it again and journals new orders
                    try:
                        await journal.insert(entry("after", salt=4))
                        break
                    except Unavailable:
                        await asyncio.sleep(0.05)
            assert await journal.get(VENUE, ALICE, "after") is not None
            assert await journal.get(VENUE, ALICE, "while-taken") is None
        finally:
            await journal.aclose()


# --------------------------------------------------------------------------------------------------------------
# Updates


async def test_update_stores_the_venue_side_only(journal: OrderJournal) -> None:
    stored = await journal.insert(entry("c-1", salt=BIG_SALT))
    await asyncio.sleep(0.005)
    changed = stored.with_changes(
        state=OrderState.OPEN, order_id="0xfeed", venue_order=b'{"order_id":"0xfeed","filled_amount":"0.0004"}',
        reject_code=7, reject_reason="partly", attempts=2,
        # none of these may be written by an update:
        salt=5, request=b"re-signed", intent=intent("c-1", amount=Decimal("99")), signer_address="0xother",
        timestamp_ms=1, expiration_ms=2, created_ms=3, fingerprint="f" * 64)
    updated = await journal.update(changed)

    assert updated.updated_ms > stored.created_ms and updated.created_ms == stored.created_ms
    assert updated == stored.with_changes(
        state=OrderState.OPEN, order_id="0xfeed", venue_order=b'{"order_id":"0xfeed","filled_amount":"0.0004"}',
        reject_code=7, reject_reason="partly", attempts=2, updated_ms=updated.updated_ms)
    assert await journal.get(VENUE, ALICE, "c-1") == updated

    final = await journal.update(updated.with_changes(state=OrderState.FILLED, venue_order=b""))
    assert (final.state, final.order_id, final.venue_order) == (OrderState.FILLED, "0xfeed", b"")
    assert final.updated_ms >= updated.updated_ms
    assert await journal.count() == 1


async def test_update_of_a_missing_key_raises_key_error(journal: OrderJournal) -> None:
    await journal.insert(entry("c-1"))
    with pytest.raises(KeyError):
        await journal.update(entry("c-2").with_changes(state=OrderState.OPEN))
    with pytest.raises(KeyError):
        await journal.update(entry("c-1", account=BOB).with_changes(state=OrderState.OPEN))
    assert await journal.count() == 1
    assert await journal.get(VENUE, ALICE, "c-2") is None


# --------------------------------------------------------------------------------------------------------------
# Lookups and listings


async def test_find_order_and_find_salt(journal: OrderJournal) -> None:
    a, b, _ = await insert_all(journal, [entry("a", salt=BIG_SALT), entry("b", salt=2), entry("c", salt=3)])
    await journal.update(b.with_changes(state=OrderState.OPEN, order_id="0xb0b"))

    found = await journal.find_order(VENUE, ALICE, "0xb0b")
    assert found is not None and (found.intent.client_order_id, found.order_id) == ("b", "0xb0b")
    assert await journal.find_order(VENUE, ALICE, "") is None  # unsent orders have no id: never a match
    assert await journal.find_order(VENUE, ALICE, "0xnope") is None
    assert await journal.find_order(VENUE, BOB, "0xb0b") is None

    by_salt = await journal.find_salt(VENUE, ALICE, BIG_SALT)
    assert by_salt == a
    by_salt_b = await journal.find_salt(VENUE, ALICE, 2)
    assert by_salt_b is not None and by_salt_b.intent.client_order_id == "b"
    assert await journal.find_salt(VENUE, ALICE, BIG_SALT + 1) is None
    assert await journal.find_salt(VENUE, BOB, 2) is None
    assert await journal.find_salt("other", ALICE, 3) is None


async def _populate(journal: OrderJournal) -> None:
    """Ten entries over two accounts and two symbols, inserted in this order, then given their states."""
    plan = [("p1", ALICE, "BTC-PERP", OrderState.PENDING), ("o1", ALICE, "ETH-PERP", OrderState.OPEN),
            ("u1", BOB, "BTC-PERP", OrderState.UNKNOWN), ("p2", ALICE, "ETH-PERP", OrderState.PENDING),
            ("f1", ALICE, "BTC-PERP", OrderState.FILLED), ("u2", ALICE, "BTC-PERP", OrderState.UNKNOWN),
            ("r1", BOB, "ETH-PERP", OrderState.REJECTED), ("o2", BOB, "BTC-PERP", OrderState.OPEN),
            ("p3", BOB, "ETH-PERP", OrderState.PENDING), ("c1", ALICE, "ETH-PERP", OrderState.CANCELLED)]
    for i, (cid, account, symbol, _) in enumerate(plan):
        await journal.insert(entry(cid, salt=i + 1, account=account, symbol=symbol))
    # Updated in reverse: "oldest first" must follow insertion, not the last update.
    for cid, account, _, state in reversed(plan):
        stored = await journal.get(VENUE, account, cid)
        assert stored is not None
        if state != OrderState.PENDING:
            await journal.update(stored.with_changes(state=state, order_id=f"id-{cid}"))


async def test_unresolved_filters_and_orders_oldest_first(journal: OrderJournal) -> None:
    await _populate(journal)
    assert keys(await journal.unresolved()) == ["p1", "u1", "p2", "u2", "p3"]
    assert keys(await journal.unresolved(VENUE)) == ["p1", "u1", "p2", "u2", "p3"]
    assert keys(await journal.unresolved("other")) == []
    assert keys(await journal.unresolved(VENUE, ALICE)) == ["p1", "p2", "u2"]
    assert keys(await journal.unresolved(VENUE, BOB)) == ["u1", "p3"]
    assert keys(await journal.unresolved(VENUE, ALICE, "BTC-PERP")) == ["p1", "u2"]
    assert keys(await journal.unresolved(VENUE, BOB, "ETH-PERP")) == ["p3"]
    assert keys(await journal.unresolved(symbol="BTC-PERP")) == ["p1", "u1", "u2"]
    assert all(e.unresolved for e in await journal.unresolved())


async def test_entries_accounts_and_count(journal: OrderJournal) -> None:
    await _populate(journal)
    assert keys(await journal.entries(VENUE, ALICE)) == ["p1", "o1", "p2", "f1", "u2", "c1"]
    assert keys(await journal.entries(VENUE, BOB)) == ["u1", "r1", "o2", "p3"]
    assert keys(await journal.entries(VENUE, ALICE, states={OrderState.OPEN})) == ["o1"]
    assert keys(await journal.entries(VENUE, ALICE, states=FINAL_STATES)) == ["f1", "c1"]
    assert keys(await journal.entries(VENUE, ALICE, states=[OrderState.PENDING, OrderState.FILLED],
                                      symbol="BTC-PERP")) == ["p1", "f1"]
    assert keys(await journal.entries(VENUE, ALICE, symbol="ETH-PERP")) == ["o1", "p2", "c1"]
    assert keys(await journal.entries(VENUE, ALICE, limit=2)) == ["p1", "o1"]
    assert keys(await journal.entries(VENUE, BOB, states=UNRESOLVED_STATES, limit=1)) == ["u1"]
    assert await journal.entries(VENUE, ALICE, limit=0) == []
    assert await journal.entries(VENUE, ALICE, states=()) == []
    assert await journal.entries(VENUE, ALICE.lower()) == []
    with pytest.raises(ValueError, match="negative"):
        await journal.entries(VENUE, ALICE, limit=-1)
    listed = await journal.entries(VENUE, ALICE, states={OrderState.OPEN})
    assert (listed[0].order_id, listed[0].salt) == ("id-o1", 2)

    assert await journal.accounts({OrderState.OPEN}) == [(VENUE, ALICE), (VENUE, BOB)]
    assert await journal.accounts({OrderState.FILLED, OrderState.CANCELLED}) == [(VENUE, ALICE)]
    assert await journal.accounts({OrderState.REJECTED}) == [(VENUE, BOB)]
    assert await journal.accounts({OrderState.EXPIRED}) == []
    assert await journal.accounts(()) == []

    await journal.insert(entry("x", account=BOB))
    assert (await journal.count(), await journal.count(VENUE), await journal.count(VENUE, ALICE),
            await journal.count(VENUE, BOB), await journal.count("other")) == (11, 11, 6, 5, 0)


# --------------------------------------------------------------------------------------------------------------
# Durability and migrations


@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
async def test_survives_close_and_reopen(backend: Backend, synchronous: str) -> None:
    async with backend.journal(synchronous) as journal:
        stored = await journal.insert(entry("keep", salt=BIG_SALT))
        updated = await journal.update(stored.with_changes(state=OrderState.UNKNOWN, attempts=2))
        await journal.insert(entry("other", salt=9))
    with pytest.raises(RuntimeError, match="start"):
        await journal.get(VENUE, ALICE, "keep")

    async with backend.journal(synchronous) as reopened:
        assert await reopened.get(VENUE, ALICE, "keep") == updated
        assert keys(await reopened.unresolved()) == ["keep", "other"]
        assert await reopened.count() == 2
        assert (await reopened.insert(entry("keep", salt=1))).salt == BIG_SALT  # still the first one


async def test_deadman_firings_keep_the_latest_per_account_across_a_reopen(backend: Backend) -> None:
    alice, bob = ALICE.lower(), BOB.lower()
    async with backend.journal() as journal:
        assert await journal.deadman_firings() == {}
        await journal.record_deadman_firing(VENUE, alice, 2_000)
        await journal.record_deadman_firing(VENUE, alice, 1_000)  # an earlier firing does not win
        await journal.record_deadman_firing(VENUE, bob, 1_500)
        await journal.record_deadman_firing(VENUE, bob, 3_000)
        await journal.record_deadman_firing("other", alice, 500)
        assert await journal.deadman_firings() == {(VENUE, alice): 2_000, (VENUE, bob): 3_000, ("other", alice): 500}
    async with backend.journal() as reopened:
        assert await reopened.deadman_firings() == {(VENUE, alice): 2_000, (VENUE, bob): 3_000,
                                                    ("other", alice): 500}


async def test_a_journal_of_the_first_version_is_migrated_keeping_its_orders(
        backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    """A journal written before the dead-man firings were kept (schema version 1) gains their table at start."""
    with monkeypatch.context() as first_version:
        first_version.setattr(journal_module, "SCHEMA", Schema(SCHEMA.what, MIGRATIONS[:1],
                                                               version_table=SCHEMA.version_table))
        async with backend.journal() as old:
            stored = await old.insert(entry("before-2", salt=BIG_SALT))
        assert await backend.sql("SELECT version FROM execution_schema_version") == [(1,)]
    async with backend.journal() as journal:
        assert await backend.sql("SELECT version FROM execution_schema_version ORDER BY version") == [(1,), (2,)]
        assert await journal.get(VENUE, ALICE, "before-2") == stored
        assert await journal.deadman_firings() == {}
        await journal.record_deadman_firing(VENUE, ALICE.lower(), 7)
        assert await journal.deadman_firings() == {(VENUE, ALICE.lower()): 7}


async def test_migrations_are_idempotent(backend: Backend) -> None:
    async with backend.journal() as journal:
        await journal.insert(entry("c-1"))
    versions = await backend.sql("SELECT version, description, applied_at_ms FROM execution_schema_version")
    assert [v[0] for v in versions] == [m.version for m in MIGRATIONS] == [1, 2]
    for _ in range(2):
        async with backend.journal() as again:
            assert await again.count() == 1
    opened = backend.journal()
    await opened.start()
    await opened.start()  # a second start is a no-op
    await opened.aclose()
    await opened.aclose()
    assert await backend.sql("SELECT version, description, applied_at_ms FROM execution_schema_version") == versions


async def test_concurrent_first_starts_migrate_once_and_let_one_writer_in(backend: Backend) -> None:
    journals = [backend.journal() for _ in range(4)]
    try:
        outcomes = await asyncio.gather(*(j.start() for j in journals), return_exceptions=True)
        started = [j for j, outcome in zip(journals, outcomes, strict=True) if outcome is None]
        assert len(started) == 1
        assert all(isinstance(o, WriterLockHeld) for o in outcomes if o is not None)
        assert await backend.sql("SELECT version FROM execution_schema_version") == [(1,), (2,)]
        await started[0].insert(entry("c-1"))
        assert await started[0].count() == 1
    finally:
        for j in journals:
            await j.aclose()


async def test_shares_a_database_with_reference_data(backend: Backend) -> None:
    """Each store keeps its own version table: refdata's version 1 does not hide the journal's."""
    async with open_store(sqlite_path=backend.sqlite_path, dsn=backend.dsn) as store:
        assert await store.count(VENUE) == 0
    async with backend.journal() as journal:
        await journal.insert(entry("c-1"))
        assert await journal.count() == 1
    assert await backend.sql("SELECT version FROM schema_version") == [(1,)]
    assert await backend.sql("SELECT version FROM execution_schema_version") == [(1,), (2,)]


async def test_a_newer_database_is_refused(backend: Backend) -> None:
    async with backend.journal():
        pass
    await backend.sql("INSERT INTO execution_schema_version (version, description, applied_at_ms) "
                      "VALUES (%s, %s, %s)", (SCHEMA.version + 1, "from the future", 0))
    newer = backend.journal()
    with pytest.raises(SchemaVersionError, match=rf"order journal is at schema version {SCHEMA.version + 1}"):
        await newer.start()
    with pytest.raises(RuntimeError, match="start"):
        await newer.count()
    await newer.aclose()


def test_open_journal_picks_the_backend(tmp_path: Path) -> None:
    assert isinstance(open_journal(sqlite_path=tmp_path / "j.sqlite3", dsn=None), SqliteOrderJournal)
    assert isinstance(open_journal(sqlite_path=tmp_path / "j.sqlite3", dsn="dbname=x"), PostgresOrderJournal)
    with pytest.raises(ValueError, match="DSN or a SQLite path"):
        open_journal(sqlite_path=None, dsn=None)
    with pytest.raises(ValueError, match="synchronous"):
        open_journal(sqlite_path=tmp_path / "j.sqlite3", dsn=None, synchronous="OFF")
