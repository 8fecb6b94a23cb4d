"""Strict reading of JSON-RPC params: a wrong type or value is INVALID_PARAMS naming the parameter."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from portico.sim.errors import RpcFailure
from portico.venues.syndr.constants import ErrorCode

__all__ = ["Params"]

_MISSING = object()


class Params:
    """Typed access to a request's `params` object."""

    def __init__(self, raw: Any):
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            raise RpcFailure(ErrorCode.INVALID_PARAMS, "params must be an object")
        self.raw: Mapping[str, Any] = raw

    def _get(self, name: str, default: Any) -> Any:
        value = self.raw.get(name, _MISSING)
        if value is _MISSING or value is None:
            if default is _MISSING:
                raise RpcFailure(ErrorCode.INVALID_PARAMS, f"missing parameter {name}")
            return default
        return value

    @staticmethod
    def _bad(name: str, what: str) -> RpcFailure:
        return RpcFailure(ErrorCode.INVALID_PARAMS, f"{name} must be {what}")

    def text(self, name: str, default: Any = _MISSING, *, choices: tuple[str, ...] = ()) -> Any:
        value = self._get(name, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, str):
            raise self._bad(name, "a string")
        if len(value) > 256:
            raise self._bad(name, "at most 256 characters")
        if choices and value not in choices:
            raise self._bad(name, f"one of {', '.join(choices)}")
        return value

    def number(self, name: str, default: Any = _MISSING) -> Any:
        value = self._get(name, default)
        if value is default and default is not _MISSING:
            return value
        if isinstance(value, bool) or not isinstance(value, int | str | Decimal):
            raise self._bad(name, "a number or decimal string")
        try:
            number = value if isinstance(value, Decimal) else Decimal(str(value))
        except InvalidOperation:
            raise self._bad(name, "a number or decimal string") from None
        if not number.is_finite():
            raise self._bad(name, "finite")
        return number

    def integer(self, name: str, default: Any = _MISSING, *, minimum: int | None = None,
                digits: bool = False) -> Any:
        """A JSON integer, as the document's tables type these parameters (and its examples send them).

        A string of digits is refused (the venue types them; an adapter that sent one would pass here and fail
        there) unless `digits`: a parameter the document types as a string holding an integer (`instrument_id`).
        """
        value = self._get(name, default)
        if value is default and default is not _MISSING:
            return value
        if isinstance(value, bool):
            raise self._bad(name, "an integer")
        if isinstance(value, Decimal) and value == value.to_integral_value():
            value = int(value)
        if digits and isinstance(value, str) and value.isascii() and value.isdigit():
            value = int(value)
        if not isinstance(value, int):
            raise self._bad(name, "an integer")
        if minimum is not None and value < minimum:
            raise self._bad(name, f"at least {minimum}")
        return value

    def flag(self, name: str, default: Any = _MISSING) -> Any:
        value = self._get(name, default)
        if not isinstance(value, bool):
            raise self._bad(name, "true or false")
        return value

    def strings(self, name: str) -> list[str]:
        value = self._get(name, _MISSING)
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise self._bad(name, "a non-empty list of strings")
        if len(value) > 500:
            raise self._bad(name, "at most 500 entries")
        return value
