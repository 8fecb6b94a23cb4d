"""The signer's ledger pruning backs off while its passes keep failing, and logs the failure once.

Before the fix a pass that failed (a full disk, say) was followed by the next after the fixed interval (1 s), each
logging a WARNING, for as long as the failure lasted: over a window of 2.5 s at an interval of 0.05 s, some 50
failed passes and as many warnings. Now the pause doubles from the interval up to a minute while the passes keep
failing, the failure is logged once at WARNING, its end at INFO, and pruning goes on at the interval once a pass
succeeds.

A real SQLite ledger; the persistent failure is SQLite's own: a trigger (added from another connection, as an
operator's shell would) that makes every delete of a watermark fail.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path

import pytest
from tests.support.waiting import until

from portico.signer import watermark
from portico.signer.watermark import SaltLedger

OWNER = "address:0x52908400098527886e0f7030069857d2e4169ee7"
NOW_MS = 1_800_000_000_000
INTERVAL_S = 0.05  # the pauses while failing: 0.05, 0.1, 0.2, 0.4, 0.8, 1.6 s
FAILURES = 6  # the 6th failed pass comes >= 1.6 s after the start with backoff, ~0.3 s at the fixed interval
PASSES = 10  # after recovery: ~0.5 s at the interval, >= 16 s at the pause of the 6th failure (1.6 s) or longer


def execute(path: Path, *statements: str) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        for statement in statements:
            db.execute(statement)
    finally:
        db.close()


def expired_rows(path: Path, count: int) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.executemany(
            "INSERT INTO salt_watermarks (key_id, salt, digest, signed_at, expires_at_ms) VALUES (?, ?, ?, 0, ?)",
            [(OWNER, str(i), i.to_bytes(32, "big"), NOW_MS - 5 * 3_600_000) for i in range(count)])
    finally:
        db.close()


def remaining(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("SELECT count(*) FROM salt_watermarks").fetchone()[0])
    finally:
        db.close()


async def test_failing_prune_passes_back_off_and_log_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=watermark.log.name)
    path = tmp_path / "ledger.sqlite3"
    ledger = SaltLedger(path, prune_interval_s=INTERVAL_S, clock=lambda: NOW_MS / 1000)
    began = time.monotonic()
    await ledger.start()
    try:
        execute(path, "CREATE TRIGGER refuse_prune BEFORE DELETE ON salt_watermarks "
                      "BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END")
        expired_rows(path, 10)
        failed = ledger.prune_stats.failed
        # Wait for a count of failed passes, not a window: a loaded host only makes them later, never sooner.
        await until(lambda: ledger.prune_stats.failed - failed >= FAILURES, timeout_s=20)
        elapsed = time.monotonic() - began
        warnings = [r for r in caplog.records if r.name == watermark.log.name and r.levelno >= logging.WARNING]
        assert elapsed >= 1.5, elapsed  # the pauses doubled: 0.05 + 0.05 + 0.1 + 0.2 + 0.4 + 0.8 s at least
        assert len(warnings) == 1, [r.getMessage() for r in warnings]  # once per outage, not once per pass
        assert remaining(path) == 10

        execute(path, "DROP TRIGGER refuse_prune")  # the failure ends: pruned at the next pass (seconds away)
        await until(lambda: not remaining(path), timeout_s=20)  # the rows are another connection's to count
        assert any(r.getMessage() == "salt ledger prune works again" for r in caplog.records)
        transactions = ledger.prune_stats.transactions
        began = time.monotonic()
        await until(lambda: ledger.prune_stats.transactions - transactions >= PASSES, timeout_s=40)
        elapsed = time.monotonic() - began
        assert elapsed < 8, elapsed  # back at the interval, not at the longest pause (slack for a stalled host)
    finally:
        await ledger.aclose()
