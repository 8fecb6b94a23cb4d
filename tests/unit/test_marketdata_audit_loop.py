"""The book audit loop's policy when snapshots fail: what ends a round, what is logged, and how often.

The feeds are stand-ins whose `audit` answers as scripted (the loop only calls that); the real service's audit
against the simulator is in tests/integration/test_marketdata_audit_failures.py.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
from tests.support.waiting import until

from portico.marketdata.feed import FeedSettings, VenueBooks
from portico.venues.syndr.errors import SyndrConnectionError, SyndrHttpError, SyndrTimeout

ROUNDS = 20


class ScriptedFeed:
    """`audit` returns False (not live), True (a snapshot came back) or raises, as told."""

    def __init__(self, outcome: bool | BaseException):
        self.outcome = outcome
        self.audits = 0

    async def audit(self) -> bool:
        self.audits += 1
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome

    async def aclose(self) -> None:
        pass


@pytest.fixture
async def books() -> AsyncIterator[VenueBooks]:
    venue_books = VenueBooks("syndr", None, None, FeedSettings(audit_interval_s=0.001))  # type: ignore[arg-type]
    yield venue_books
    await venue_books.aclose()


async def run_rounds(books: VenueBooks, feeds: dict[str, ScriptedFeed], rounds: int = ROUNDS) -> None:
    books.feeds.update(feeds)  # type: ignore[arg-type]
    first = next(iter(feeds.values()))
    books.start_audits()
    await until(lambda: first.audits >= rounds, timeout_s=30, interval_s=0.001)


def lines(caplog: pytest.LogCaptureFixture, prefix: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith(prefix)]


async def test_a_book_that_is_not_live_does_not_count_as_the_venue_answering_again(
        books: VenueBooks, caplog: pytest.LogCaptureFixture) -> None:
    """The venue is unreachable; the first book is rebuilding (not live), so it asks nothing. Before the fix its
    empty audit counted as a snapshot answered: "resumed" and "paused" were logged every round."""
    caplog.set_level(logging.INFO, "portico.marketdata")
    await run_rounds(books, {"REBUILDING": ScriptedFeed(False),
                             "ETH-PERP": ScriptedFeed(SyndrConnectionError("connection refused"))})
    assert len(lines(caplog, "book audits paused")) == 1
    assert lines(caplog, "book audits resumed") == []
    assert books.audit_rounds_cut >= ROUNDS - 1


async def test_the_venue_answering_again_is_logged_once(books: VenueBooks, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "portico.marketdata")
    feed = ScriptedFeed(SyndrHttpError(503, "service unavailable"))
    await run_rounds(books, {"ETH-PERP": feed}, rounds=5)
    feed.outcome = True
    await run_rounds(books, {"ETH-PERP": feed}, rounds=10)
    assert len(lines(caplog, "book audits paused")) == 1
    assert len(lines(caplog, "book audits resumed")) == 1


@pytest.mark.parametrize("failure", [SyndrTimeout("timed out"), SyndrHttpError(404, "not found"),
                                     ValueError("an answer we cannot read")], ids=["timeout", "4xx", "unexpected"])
async def test_one_books_failure_is_logged_once_and_the_books_after_it_are_still_audited(
        books: VenueBooks, caplog: pytest.LogCaptureFixture, failure: BaseException) -> None:
    """A book whose own snapshot keeps failing (a huge book timing out, say) used to end every round if its error
    was a transport error, so the books after it were never audited again; and an exception that is not the
    venue's (a ValueError from a parser) ended the audit task for good, silently."""
    caplog.set_level(logging.INFO, "portico.marketdata")
    healthy = ScriptedFeed(True)
    await run_rounds(books, {"BIG-PERP": ScriptedFeed(failure), "ETH-PERP": healthy})
    assert healthy.audits >= ROUNDS - 1
    failed = lines(caplog, "audit snapshot failed")
    assert [r.__dict__["symbol"] for r in failed] == ["BIG-PERP"]
    assert books.audit_rounds_cut == 0 and lines(caplog, "book audits paused") == []
    assert books._auditor is not None and not books._auditor.done()
