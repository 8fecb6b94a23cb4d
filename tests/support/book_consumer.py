"""A book consumer as a client must write one: apply every update, check every chain and checksum.

Shared by the market-data tests and the soak run (`tests/soak/`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from portico.marketdata.book import Book, book_checksum
from portico.marketdata.v1 import order_book_pb2

SNAPSHOT, DELTA = order_book_pb2.BOOK_EVENT_TYPE_SNAPSHOT, order_book_pb2.BOOK_EVENT_TYPE_DELTA
RESYNCING, STALE = order_book_pb2.BOOK_EVENT_TYPE_RESYNCING, order_book_pb2.BOOK_EVENT_TYPE_STALE

Side = list[tuple[str, str]]


@dataclass
class Consumer:
    """Applies every message as a client must, and checks every chain and checksum."""

    depth: int
    book: Book | None = None
    sequence: int = 0
    epoch: int = -1
    updates: int = 0
    snapshots: int = 0
    broken: list[str] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)

    def apply(self, update: order_book_pb2.BookUpdate) -> None:
        self.updates += 1
        levels = ([(lv.price, lv.amount) for lv in update.bids], [(lv.price, lv.amount) for lv in update.asks])
        if update.type == SNAPSHOT:
            self.book = Book.from_snapshot(*levels, update.sequence)
            self.sequence, self.epoch = update.sequence, update.epoch
            self.snapshots += 1
        elif update.type == DELTA:
            if self.book is None or update.epoch != self.epoch or update.previous_sequence != self.sequence:
                self.broken.append(f"delta {update.previous_sequence}->{update.sequence} on {self.sequence}")
                return
            self.book.apply(*levels)
            self.sequence = update.sequence
        else:
            self.statuses.append(update.type)
            return
        assert self.book is not None
        if book_checksum(*self.book.top(self.depth)) != update.checksum:
            self.broken.append(f"checksum mismatch at {update.sequence}")

    def top(self) -> tuple[Side, Side]:
        assert self.book is not None
        return self.book.top(self.depth)
