"""The salt ledger's ownership rules on a real SQLite file: one private key, whatever its ids, signs a salt once;
a ledger written when rows were kept per key id keeps protecting those salts."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from portico.signer.watermark import SaltLedger, SaltReused

ADDRESS = "0x52908400098527886E0F7030069857D2E4169EE7"
OTHER = "0x8617E340B3D01FA5F11F306F4090FD50E238070D"


async def test_two_ids_of_one_key_share_its_salts_and_other_keys_do_not(tmp_path: Path) -> None:
    ledger = SaltLedger(tmp_path / "ledger.sqlite3")
    await ledger.start()
    try:
        await ledger.claim("k1", ADDRESS, 7, b"\x01" * 32)
        with pytest.raises(SaltReused):
            await ledger.claim("k2", ADDRESS, 7, b"\x02" * 32)  # the same key under another id
        await ledger.claim("k2", ADDRESS, 7, b"\x01" * 32)  # the same payload again: allowed
        await ledger.claim("k3", OTHER, 7, b"\x02" * 32)  # another key: its own salts
    finally:
        await ledger.aclose()


async def test_rows_kept_per_key_id_by_an_older_ledger_still_protect_their_salts(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    ledger = SaltLedger(path)
    await ledger.start()
    await ledger.aclose()
    with sqlite3.connect(path) as db:  # what a ledger from before address owners held
        db.execute("INSERT INTO salt_watermarks (key_id, salt, digest, signed_at) VALUES ('k1', '9', ?, 0)",
                   (b"\x01" * 32,))
    db.close()
    ledger = SaltLedger(path)
    await ledger.start()
    try:
        with pytest.raises(SaltReused):
            await ledger.claim("k1", ADDRESS, 9, b"\x02" * 32)
        await ledger.claim("k1", ADDRESS, 9, b"\x01" * 32)
        await ledger.claim("k1", ADDRESS, 10, b"\x02" * 32)
    finally:
        await ledger.aclose()
    with sqlite3.connect(path) as db:
        owners = sorted(row[0] for row in db.execute("SELECT key_id FROM salt_watermarks WHERE salt = '9'"))
    db.close()
    assert owners == ["address:" + ADDRESS.lower(), "k1"]  # the refused digest was recorded under no owner
