"""Opaque page tokens for list RPCs that page by offset over a venue's answer.

A token carries the offset and a digest of the query that issued it, so a
token from one query (another account, another filter) is refused with
INVALID_ARGUMENT instead of silently paging something else.
"""

from __future__ import annotations

import base64
import hashlib

import orjson

from portico.runtime.errors import InvalidArgument

__all__ = ["DEFAULT_PAGE", "MAX_PAGE", "cursor_from_token", "offset_from_token", "page_size", "page_token",
           "position_from_token"]

DEFAULT_PAGE = 100
MAX_PAGE = 1000


def page_size(value: int, *, default: int = DEFAULT_PAGE, maximum: int = MAX_PAGE) -> int:
    """A request's `page_size`: 0 means the default, above the maximum means the maximum."""
    if value < 0:
        raise InvalidArgument("page_size", "must not be negative")
    return min(value or default, maximum)


def _tag(query: tuple[object, ...]) -> str:
    return hashlib.sha256(repr(query).encode()).hexdigest()[:12]


def page_token(offset: int, query: tuple[object, ...], *, as_of: int | None = None, after: str | None = None) -> str:
    """The token of the page starting at `offset` of `query`.

    `as_of` (a time the first page chose) pins the listing to what existed then, so later pages are
    not shifted by entries added at the top meanwhile. `after` (the last key listed, for a listing
    sorted by a unique key) lets the next page start after it, so entries removed from earlier pages
    meanwhile shift nothing; the offset stays in the token for readers that page by offset.
    """
    data: dict[str, object] = {"o": offset, "q": _tag(query)}
    if as_of is not None:
        data["t"] = as_of
    if after is not None:
        data["k"] = after
    return base64.urlsafe_b64encode(orjson.dumps(data)).decode()


def _decode(token: str, query: tuple[object, ...]) -> tuple[int, int | None, str | None]:
    """(offset, as_of, after) of a token ((0, None, None) for no token); INVALID_ARGUMENT for a token of
    another query."""
    if not token:
        return 0, None, None
    try:
        data = orjson.loads(base64.urlsafe_b64decode(token.encode()))
        offset, as_of, after = data["o"], data.get("t"), data.get("k")
        if data["q"] != _tag(query) or type(offset) is not int or offset < 0:
            raise ValueError
        if as_of is not None and (type(as_of) is not int or as_of < 0):
            raise ValueError
        if after is not None and type(after) is not str:
            raise ValueError
        return int(offset), as_of, after
    except (ValueError, KeyError, TypeError, AttributeError, orjson.JSONDecodeError):
        raise InvalidArgument("page_token", "not a token of this query") from None


def position_from_token(token: str, query: tuple[object, ...]) -> tuple[int, int | None]:
    """(offset, as_of) of a token ((0, None) for no token); INVALID_ARGUMENT for a token of another query."""
    offset, as_of, _ = _decode(token, query)
    return offset, as_of


def cursor_from_token(token: str, query: tuple[object, ...]) -> tuple[str | None, int]:
    """(after, offset) of a token: the last key listed (None for no token, or one that pages by offset only)."""
    offset, _, after = _decode(token, query)
    return after, offset


def offset_from_token(token: str, query: tuple[object, ...]) -> int:
    """The offset a token stands for (0 for no token); INVALID_ARGUMENT for a token of another query."""
    return position_from_token(token, query)[0]
