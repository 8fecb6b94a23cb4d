"""An order book that applies Syndr's raw changes, and the checksum consumers verify.

Levels are keyed by `Decimal` price (for ordering) but keep the venue's own
decimal strings, because the checksum is computed from the strings exactly as
the venue sent them:

    checksum = CRC32( "b:" + "|".join(f"{price}:{amount}" for the top bids, best first)
                    + "#a:" + "|".join(f"{price}:{amount}" for the top asks, best first) )

over the stream's depth. `book_checksum` is that function; a consumer holding the
same top levels gets the same number. An amount of "0" in a change removes the level.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from decimal import Decimal
from itertools import islice

from sortedcontainers import SortedDict

__all__ = ["Book", "Level", "book_checksum", "side_text", "top_diff"]

Level = tuple[str, str]  # (price, amount) as the venue's decimal strings


def side_text(levels: Iterable[Level]) -> str:
    """One side's part of the checksum text; a view keeps it per side and redoes only the side that moved."""
    return "|".join(f"{p}:{a}" for p, a in levels)


def book_checksum(bids: Iterable[Level], asks: Iterable[Level]) -> int:
    """The stream's checksum of the given top levels (best first on each side)."""
    return zlib.crc32(f"b:{side_text(bids)}#a:{side_text(asks)}".encode())


class Book:
    """Both sides of one instrument's book, at the venue's `change_id`."""

    __slots__ = ("asks", "bids", "change_id")

    def __init__(self) -> None:
        # Bids keyed by negated price so that iteration is best (highest) first.
        self.bids: SortedDict = SortedDict()
        self.asks: SortedDict = SortedDict()
        self.change_id = 0

    @classmethod
    def from_snapshot(cls, bids: Iterable[Level], asks: Iterable[Level], change_id: int) -> Book:
        book = cls()
        book.apply(bids, asks)
        book.change_id = change_id
        return book

    def apply(self, bids: Iterable[Level], asks: Iterable[Level]) -> tuple[Decimal | None, Decimal | None]:
        """Set each level's new total amount ("0" removes it); return the best key touched on each side.

        Keys are the sides' sort keys (negated prices for bids). A depth view
        compares them with its worst shown level to skip changes that cannot
        reach its top (see `Book.top_side`).
        """
        best_bid: Decimal | None = None
        best_ask: Decimal | None = None
        side = self.bids
        for price, amount in bids:
            key = -Decimal(price)
            if Decimal(amount) == 0:
                side.pop(key, None)
            else:
                side[key] = (price, amount)
            if best_bid is None or key < best_bid:
                best_bid = key
        side = self.asks
        for price, amount in asks:
            key = Decimal(price)
            if Decimal(amount) == 0:
                side.pop(key, None)
            else:
                side[key] = (price, amount)
            if best_ask is None or key < best_ask:
                best_ask = key
        return best_bid, best_ask

    def top(self, depth: int) -> tuple[list[Level], list[Level]]:
        """The best `depth` levels of each side, best first."""
        return list(islice(self.bids.values(), depth)), list(islice(self.asks.values(), depth))

    @staticmethod
    def top_side(side: SortedDict, depth: int) -> tuple[list[Level], Decimal | None]:
        """One side's best `depth` levels, and the key of the last of them if the side has that many.

        A change whose best key is beyond that edge cannot alter these levels.
        """
        keys = side.keys()[:depth]
        return [side[key] for key in keys], (keys[-1] if len(keys) == depth else None)

    def crossed(self) -> bool:
        """True if the best bid is at or above the best ask (a broken book)."""
        if not self.bids or not self.asks:
            return False
        return bool(-self.bids.keys()[0] >= self.asks.keys()[0])

    def __len__(self) -> int:
        return len(self.bids) + len(self.asks)


def top_diff(old: Sequence[Level], new: Sequence[Level]) -> list[Level]:
    """The level changes turning one side's old top into its new top ("0" for levels that left).

    Removals come first: a venue may spell a price it already holds differently ("2400" then "2400.0"), which
    is the same level to a consumer keying its book by value, as `Book` does; its new spelling set before the
    old one's removal would be removed with it.
    """
    old_map = dict(old)
    new_map = dict(new)
    changes = [(price, "0") for price in old_map if price not in new_map]
    changes.extend((price, amount) for price, amount in new if old_map.get(price) != amount)
    return changes
