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

__all__ = ["DEFAULT_PAGE", "MAX_PAGE", "offset_from_token", "page_size", "page_token"]

DEFAULT_PAGE = 100
MAX_PAGE = 1000


def page_size(value: int, *, default: int = DEFAULT_PAGE, maximum: int = MAX_PAGE) -> int:
    """A request's `page_size`: 0 means the default, above the maximum means the maximum."""
    if value < 0:
        raise InvalidArgument("page_size", "must not be negative")
    return min(value or default, maximum)


def _tag(query: tuple[object, ...]) -> str:
    return hashlib.sha256(repr(query).encode()).hexdigest()[:12]


def page_token(offset: int, query: tuple[object, ...]) -> str:
    """The token of the page starting at `offset` of `query`."""
    return base64.urlsafe_b64encode(orjson.dumps({"o": offset, "q": _tag(query)})).decode()


def offset_from_token(token: str, query: tuple[object, ...]) -> int:
    """The offset a token stands for (0 for no token); INVALID_ARGUMENT for a token of another query."""
    if not token:
        return 0
    try:
        data = orjson.loads(base64.urlsafe_b64decode(token.encode()))
        offset = data["o"]
        if data["q"] != _tag(query) or type(offset) is not int or offset < 0:
            raise ValueError
        return int(offset)
    except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
        raise InvalidArgument("page_token", "not a token of this query") from None
