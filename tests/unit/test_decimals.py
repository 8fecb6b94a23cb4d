from __future__ import annotations

from decimal import Decimal

import pytest

from portico.runtime.decimals import format_decimal, parse_decimal, parse_optional_decimal
from portico.runtime.errors import InvalidArgument


@pytest.mark.parametrize(("text", "value"), [
    ("0", Decimal(0)), ("3114.9", Decimal("3114.9")), ("-0.000025", Decimal("-0.000025")),
    ("0.1", Decimal("0.1")), (".5", Decimal("0.5")), ("115792089237316195423570985008687907853269984665640564039457",
                                                       Decimal("115792089237316195423570985008687907853269984665640564039457")),
])
def test_parses_plain_decimals_exactly(text: str, value: Decimal) -> None:
    assert parse_decimal(text, "price") == value


@pytest.mark.parametrize("text", ["", "NaN", "nan", "Infinity", "-inf", "1e3", "1E-2", " 1", "1 ", "1,5", "0x10",
                                  "+1", "01", "1.", "--1", "1" * 81, "١٢",
                                  # digits of other scripts after an ASCII one (Decimal reads "1\u0660\u0660" as 100)
                                  "1\u0660\u0660", "0.\u0665", "-.\uff15", "1\u0660"])
def test_rejects_malformed_and_non_finite(text: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_decimal(text, "order.price")
    assert caught.value.field == "order.price"
    assert caught.value.metadata["field"] == "order.price"


def test_sign_constraints() -> None:
    with pytest.raises(InvalidArgument, match="greater than zero"):
        parse_decimal("0", "amount", positive=True)
    with pytest.raises(InvalidArgument, match="must not be negative"):
        parse_decimal("-1", "amount", non_negative=True)
    assert parse_decimal("0", "amount", non_negative=True) == 0


def test_optional_and_format() -> None:
    assert parse_optional_decimal("", "price") is None
    assert parse_optional_decimal("2.50", "price") == Decimal("2.5")
    assert format_decimal(Decimal("2.500")) == "2.5"
    assert format_decimal(Decimal("1E+3")) == "1000"
    assert format_decimal(Decimal("-0")) == "0"
    assert format_decimal(Decimal("0.00000001")) == "0.00000001"
    with pytest.raises(ValueError):
        format_decimal(Decimal("NaN"))


@pytest.mark.parametrize("text", ["123456789.1234567890123456789012",  # 31 significant digits
                                  "115792089237316195423570985008687907853269984665640564039457.584007913129639935",
                                  "-0.00000000000000000000000000000000001"])
def test_format_keeps_every_digit(text: str) -> None:
    # Decimal.normalize() rounds to the context's 28 digits: a long price or balance came out changed.
    assert format_decimal(Decimal(text)) == text
    assert format_decimal(Decimal(text + "000")) == text
