"""The expiry rule of `check_against_instrument`, at its boundary."""

from __future__ import annotations

from decimal import Decimal

import pytest

from portico.execution.validation import InstrumentRules, check_against_instrument
from portico.runtime.errors import InvalidArgument

EXPIRY_MS = 1_795_000_000_000


def rules(expiry_ms: int | None) -> InstrumentRules:
    return InstrumentRules(symbol="ETH-27NOV26", venue_instrument_id=7, active=True, price_increment=Decimal("0.1"),
                           amount_increment=Decimal("0.01"), min_trade_amount=Decimal("0.01"), max_leverage=None,
                           expiry_ms=expiry_ms)


@pytest.mark.parametrize("now_ms", [EXPIRY_MS, EXPIRY_MS + 1])
def test_at_or_after_expiry_is_refused(now_ms: int) -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_against_instrument(Decimal("3000"), Decimal("0.01"), rules(EXPIRY_MS), now_ms=now_ms)
    assert caught.value.reason == "INSTRUMENT_EXPIRED" and caught.value.field == "symbol"


@pytest.mark.parametrize("expiry_ms", [EXPIRY_MS + 1, None])
def test_before_expiry_or_without_one_passes(expiry_ms: int | None) -> None:
    check_against_instrument(Decimal("3000"), Decimal("0.01"), rules(expiry_ms), now_ms=EXPIRY_MS)
