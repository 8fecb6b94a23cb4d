"""Idempotent order placement, reconciliation, amendments and cancellations.

The rules that keep an order from being placed twice or lost:

1. An intent is signed once. The signed request (salt, times, signature, the
   exact params) is written to the journal *before* the venue is called; a
   retry sends those bytes again, never a newly signed order.
2. The same (venue, account, client_order_id) again returns the journaled
   order (after reconciling it if its outcome is unknown); the same id with a
   different order is ALREADY_EXISTS.
3. Every venue call ends accepted, rejected, or unknown (timeout, dropped
   connection, 5xx, garbled answer). Unknown is journaled as UNKNOWN and the
   caller gets UNAVAILABLE; no new order on that instrument and account is
   sent until it is resolved.
4. Reconciling looks the order up at the venue by its salt (open orders,
   then history). Found: its state is journaled. Not found: the same bytes
   are sent again; the venue accepts a salt once, so the original and the
   resend cannot both become orders. If the signature has expired, the order
   can no longer reach the venue and is journaled REJECTED. Nor is it sent
   again if the account's dead-man's switch fired after it was placed
   (`deadman_fired`): the switch cancelled the account's orders, and a resend
   would put one of a client presumed dead on the book; it is journaled
   REJECTED too.
5. A refusal that is not about the order (our rate budget or the venue's,
   the API key refused before the venue looked at the order) executed
   nothing: a retry with the same client id sends the same bytes again. A key
   refused mid-call is sent again at once with the key Vault holds now (a
   rotation by the account service replaces it).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Final

import orjson

from portico.execution.journal import OrderJournal
from portico.execution.model import JournalEntry, OrderIntent, OrderState
from portico.execution.validation import Instruments, check_against_instrument
from portico.execution.venue import SyndrVenue, open_orders
from portico.runtime.decimals import parse_optional_decimal
from portico.runtime.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, Unavailable
from portico.runtime.lifecycle import cancel_and_wait
from portico.signer.client import SignerClient
from portico.venues.syndr import models, typed_data, wire
from portico.venues.syndr.constants import ErrorCode
from portico.venues.syndr.errors import (
    SyndrAuthError,
    SyndrError,
    SyndrNotFound,
    SyndrProtocolError,
    SyndrRpcError,
    rpc_error_from_object,
    to_portico_error,
)
from portico.venues.syndr.ratelimit import Priority

__all__ = ["DEADMAN_REJECT_REASON", "OrderManager", "order_at_version", "stored_is_newer", "venue_state",
           "venue_version"]

log = logging.getLogger("portico.execution.orders")

_VENUE_STATES: Final = {"open": OrderState.OPEN, "filled": OrderState.FILLED, "cancelled": OrderState.CANCELLED,
                        "rejected": OrderState.REJECTED, "expired": OrderState.EXPIRED}
# Salts are random and below 2^53: sent as JSON numbers (the document's examples keep them to six digits), they
# must read exactly in a venue that parses numbers as IEEE doubles (JavaScript's JSON.parse), or it would check
# the signature over another salt. 53 bits is still ample: a salt only has to be unique among one key's live
# orders, and the signer refuses a reused one (SALT_REUSED) rather than sign it twice.
_SALT_BITS: Final = 53
# Venue answers to an order call that do not say it was refused: the salt is random per order, so "reused"
# means these very bytes already arrived (a resend overtook the first send), and an internal error after
# the call was taken proves nothing. Both are reconciled by salt, not journaled as rejections.
_OUTCOME_UNKNOWN_CODES: Final = frozenset({ErrorCode.SALT_REUSED, ErrorCode.INTERNAL_ERROR})
# Refusals that executed nothing and say nothing about the order: journaled REJECTED, but a retry with the
# same client id sends the same bytes again instead of replaying the refusal for ever.
_RESENDABLE_CODES: Final = frozenset({ErrorCode.TOO_MANY_REQUESTS, ErrorCode.UNAUTHORIZED})
# Order ids whose last journaled venue state is remembered, to skip the private stream's echo of a write just
# made (it arrives within milliseconds); small, so memory stays flat.
_JOURNALED_MEMORY: Final = 5_000
_RECENT_ENTRIES: Final = 256
# Why an order of unknown outcome placed before the account's dead-man's switch fired was not sent again.
DEADMAN_REJECT_REASON: Final = ("not sent again: the dead-man's switch cancelled the account's orders after it "
                                "was placed")


def venue_state(order: dict[str, Any]) -> OrderState:
    """The journal state of a venue order object."""
    return _VENUE_STATES.get(str(order.get("order_state", "")).lower(), OrderState.OPEN)


def _rejection(entry: JournalEntry) -> Exception:
    """The error a rejected order answers with, the first time and on every repeat of its client id."""
    if entry.reject_code:
        error = rpc_error_from_object({"code": entry.reject_code, "message": entry.reject_reason},
                                      method=f"private/{entry.intent.side}")
        return to_portico_error(error)
    return FailedPrecondition(f"order {entry.intent.client_order_id} was rejected: {entry.reject_reason}",
                              reason="ORDER_REJECTED")


class OrderManager:
    """Places, reconciles, amends and cancels orders; the journal is its memory."""

    def __init__(self, journal: OrderJournal, venue: SyndrVenue, signer: SignerClient, instruments: Instruments, *,
                 order_ttl_s: float):
        self.journal = journal
        self.venue = venue
        self.signer = signer
        self.instruments = instruments
        self._order_ttl_ms = int(order_ttl_s * 1000)
        self._inflight: dict[tuple[str, str, str], asyncio.Future[JournalEntry]] = {}
        self._reconciling: dict[tuple[str, str, str], asyncio.Future[None]] = {}
        self.wake_reconciler: Callable[[], None] = lambda: None
        # What the journal holds, mirrored so the hot path asks it less: unresolved entries per
        # (venue, account, symbol), the last venue state journaled per order id, and the entries of the
        # orders journaled most recently (the venue echoes an order within moments of its placement; whole
        # entries for every remembered order id cost megabytes). This process is the journal's only writer
        # (one execution replica per journal, as the README says).
        self._unresolved: dict[tuple[str, str, str], set[tuple[str, str, str]]] = {}
        self._journaled: OrderedDict[str, tuple[Any, ...]] = OrderedDict()
        self._recent: OrderedDict[str, JournalEntry] = OrderedDict()
        # (venue, account in lower case) -> when its dead-man's switch last fired (epoch ms); see `deadman_fired`.
        self._deadman_fired_ms: dict[tuple[str, str], int] = {}
        self._journaling_firings: set[asyncio.Task[None]] = set()

    async def load(self) -> None:
        """Build the in-memory index from the journal (at start, before serving)."""
        self._unresolved.clear()
        for entry in await self.journal.unresolved():
            self._index(entry)
        for (venue, account), fired_ms in (await self.journal.deadman_firings()).items():
            key = (venue, account.lower())  # journaled in lower case; compared so whatever wrote it
            self._deadman_fired_ms[key] = max(fired_ms, self._deadman_fired_ms.get(key, fired_ms))

    async def aclose(self, timeout_s: float = 5.0) -> None:
        """Give the journaling of dead-man firings up to `timeout_s` to finish (before the journal closes)."""
        pending = set(self._journaling_firings)
        if pending:
            _, unfinished = await asyncio.wait(pending, timeout=timeout_s)
            for task in unfinished:
                await cancel_and_wait(task)

    # ------------------------------------------------------------------ the dead-man's switch

    def deadman_fired(self, venue: str, account: str, at_ms: int | None = None) -> None:
        """The account's dead-man's switch fired at `at_ms` (epoch ms; now if None): it is cancelling all the
        account's orders. From now on an order of the account placed (journal `timestamp_ms`) at or before that
        moment is never sent again: reconciled and not found at the venue, or retried with its client id after a
        refusal that executed nothing, it is journaled REJECTED (`DEADMAN_REJECT_REASON`). One the venue lists
        (its lost request did arrive) is journaled as the venue has it, as always. Orders placed after the
        firing (the client is back) are reconciled and sent again as before; a re-arm does not clear the record.

        Only the latest firing per account is kept (an order placed before an earlier firing was placed before
        the latest too). It holds in memory at once, and is journaled in the background (the switch's cancel
        must not wait for a database): a restart reads it back (`load`) before reconciling, so the
        reconciliation at start does not send such an order either. Should journaling it fail (logged), only a
        restart before the order is resolved would forget it.
        """
        key = (venue, account.lower())
        fired_ms = time.time_ns() // 1_000_000 if at_ms is None else at_ms
        self._deadman_fired_ms[key] = max(fired_ms, self._deadman_fired_ms.get(key, fired_ms))
        task = asyncio.create_task(self._journal_firing(*key, fired_ms), name=f"journal-deadman-{key[1]}")
        self._journaling_firings.add(task)
        task.add_done_callback(self._journaling_firings.discard)

    async def _journal_firing(self, venue: str, account: str, fired_ms: int) -> None:
        try:
            await self.journal.record_deadman_firing(venue, account, fired_ms)
        except (Exception, asyncio.CancelledError) as exc:  # cancelled: the journal was too slow at shutdown
            log.error("could not journal the dead-man's firing: a restart before the account's orders of unknown "
                      "outcome are resolved would send them again", extra={"account": account,
                                                                         "error": type(exc).__name__})
            if isinstance(exc, asyncio.CancelledError):
                raise

    def _cancelled_by_deadman(self, entry: JournalEntry) -> bool:
        """True if the account's dead-man's switch fired at or after `entry` was placed."""
        fired_ms = self._deadman_fired_ms.get((entry.intent.venue, entry.intent.account.lower()))
        return fired_ms is not None and entry.timestamp_ms <= fired_ms

    async def _reject_for_deadman(self, entry: JournalEntry) -> JournalEntry:
        log.warning("order not sent again: the dead-man's switch fired after it was placed",
                    extra={"client_order_id": entry.intent.client_order_id, "account": entry.intent.account})
        return await self._record(entry.with_changes(state=OrderState.REJECTED, reject_code=0,
                                                     reject_reason=DEADMAN_REJECT_REASON))

    # ------------------------------------------------------------------ placing

    async def place(self, intent: OrderIntent) -> JournalEntry:
        """Place `intent` once, whatever happens; return its journal entry (raise for rejections)."""
        key = (intent.venue, intent.account, intent.client_order_id)
        running = self._inflight.get(key)
        if running is not None:  # the same id is being placed by another call of this process
            # Wait for it to end however it ends (its caller may have been cancelled, or refused for a reason
            # that is not ours), then answer from the journal, as a call of its own: whatever that answer sends
            # (the same bytes again after a refusal that executed nothing, or a reconciliation's resend) is in
            # `_inflight` while on its way, so another caller waiting here never sends those bytes as well.
            await asyncio.wait({running})
            await self._get(key)  # ORDER_NOT_SENT if the first call journaled nothing
            return await self.place(intent)
        future: asyncio.Future[JournalEntry] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            entry = await self._place_once(intent)
            future.set_result(entry)
            return entry
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters look at the journal, not at this error
            if isinstance(exc, asyncio.CancelledError):  # the caller went away mid-call: settle it in the background
                self.wake_reconciler()
            raise
        finally:
            del self._inflight[key]

    async def _get(self, key: tuple[str, str, str]) -> JournalEntry:
        entry = await self.journal.get(*key)
        if entry is None:  # the first call failed before journaling anything: nothing was sent
            raise Unavailable("the first attempt with this client_order_id failed before sending; retry",
                              reason="ORDER_NOT_SENT")
        return entry

    async def _place_once(self, intent: OrderIntent) -> JournalEntry:
        existing = await self.journal.get(intent.venue, intent.account, intent.client_order_id)
        if existing is not None:
            return await self._repeat(existing, intent)
        rules = await self.instruments.get(intent.venue, intent.symbol)
        check_against_instrument(intent.price, intent.amount, rules)
        await self._require_resolved(intent.venue, intent.account, intent.symbol)
        session = await self.venue.session(intent.account)
        orderbook = await self.venue.orderbook_address()
        salt = secrets.randbits(_SALT_BITS)
        now_ms = time.time_ns() // 1_000_000
        expiration_ms = now_ms + self._order_ttl_ms
        price = intent.price if intent.price is not None else Decimal(0)
        data = typed_data.order_typed_data(
            verifying_contract=orderbook, account=intent.account, instrument_id=rules.venue_instrument_id,
            is_buy=intent.side == "buy", order_type=int(typed_data.OrderType.from_wire(intent.order_type)),
            time_in_force=int(typed_data.TimeInForce.from_wire(intent.time_in_force)), post_only=intent.post_only,
            reduce_only=intent.reduce_only, price=price, amount=intent.amount, salt=salt, expiration=expiration_ms,
            timestamp=now_ms)
        signature, signer_address = await self.signer.sign(session.record.signing_key_id, data)
        params: dict[str, Any] = {
            "instrument_name": intent.symbol, "amount": wire.number(intent.amount), "order_type": intent.order_type,
            "time_in_force": intent.time_in_force, "post_only": intent.post_only, "reduce_only": intent.reduce_only,
            "label": intent.label or intent.client_order_id, "salt": salt, "expiration": expiration_ms,
            "timestamp": now_ms, "signature": signature}
        if intent.price is not None:
            params["price"] = wire.number(intent.price)
        entry = JournalEntry(intent=intent, salt=salt, timestamp_ms=now_ms, expiration_ms=expiration_ms,
                             signer_address=signer_address, request=orjson.dumps(params))
        stored = await self.journal.insert(entry)
        if stored.salt != salt:  # another process journaled this client id first: its order is the order
            return await self._repeat(stored, intent)
        self._index(stored)
        return await self._send(stored)

    async def _repeat(self, entry: JournalEntry, intent: OrderIntent) -> JournalEntry:
        """The answer for a client id seen before."""
        if entry.fingerprint != intent.fingerprint():
            raise AlreadyExists(f"client_order_id {intent.client_order_id!r} was already used for a different order",
                                reason="CLIENT_ORDER_ID_REUSED")
        if entry.unresolved:
            entry = await self._reconcile_serialised(entry)
            if entry.unresolved:
                raise Unavailable(f"order {intent.client_order_id}: outcome at the venue still unknown; retry",
                                  reason="ORDER_OUTCOME_UNKNOWN")
        if entry.state == OrderState.REJECTED and entry.reject_code in _RESENDABLE_CODES \
                and self._cancelled_by_deadman(entry):
            entry = await self._reject_for_deadman(entry)  # the switch fired since: never sent again
        if entry.state == OrderState.REJECTED and entry.reject_code in _RESENDABLE_CODES:
            # Refused for the rate limit (by the venue, or never sent for our own budget) or for the API key:
            # nothing was executed, so a retry sends the same signed bytes again rather than replaying the
            # refusal forever. For the same reason it is sent as a new order is: not while another order on its
            # instrument has an unknown outcome.
            await self._require_resolved(intent.venue, intent.account, intent.symbol)
            return await self._send(await self._record(entry.with_changes(
                state=OrderState.PENDING, attempts=entry.attempts + 1, reject_code=0, reject_reason="")))
        if entry.state == OrderState.REJECTED:
            raise _rejection(entry)
        return entry

    async def _require_resolved(self, venue: str, account: str, symbol: str) -> None:
        """No new order on an instrument while an earlier one's outcome there is unknown."""
        if not self._unresolved.get((venue, account, symbol)):
            return
        for entry in await self.journal.unresolved(venue, account, symbol):
            if entry.key in self._inflight and entry.state == OrderState.PENDING:
                continue  # being sent right now by this process: its outcome is not unknown (yet)
            entry = await self._reconcile_serialised(entry)
            if entry.unresolved:
                raise Unavailable(f"order {entry.intent.client_order_id} on {symbol} has an unknown outcome at the "
                                  "venue; no new order there until it is reconciled", reason="ORDER_OUTCOME_UNKNOWN",
                                  metadata={"client_order_id": entry.intent.client_order_id})

    async def _send(self, entry: JournalEntry) -> JournalEntry:
        """One venue call with the journaled bytes; journal what it ended in."""
        method = f"private/{entry.intent.side}"
        try:
            try:
                result = await self.venue.call(entry.intent.account, method, orjson.Fragment(entry.request))
            except SyndrAuthError as exc:
                if exc.code != ErrorCode.UNAUTHORIZED:
                    raise
                # The venue refused the API key before it looked at the order, and the account's record has been
                # dropped: one resend of the same bytes reads the key Vault holds now (rotated, say).
                entry = await self._record(entry.with_changes(attempts=entry.attempts + 1))
                result = await self.venue.call(entry.intent.account, method, orjson.Fragment(entry.request))
        except SyndrRpcError as exc:
            if exc.code not in _OUTCOME_UNKNOWN_CODES:
                entry = await self._record(entry.with_changes(state=OrderState.REJECTED, reject_code=exc.code,
                                                              reject_reason=exc.venue_message))
                raise to_portico_error(exc) from None
            await self._record(entry.with_changes(state=OrderState.UNKNOWN))
            self.wake_reconciler()  # at once, as after a dropped connection
            log.warning("order outcome unknown", extra={"client_order_id": entry.intent.client_order_id,
                                                        "venue_code": exc.code})
            raise Unavailable(f"venue answered order {entry.intent.client_order_id} with {exc.venue_message} "
                              f"({exc.code}); it is being reconciled: retry with the same client_order_id",
                              reason="ORDER_OUTCOME_UNKNOWN",
                              metadata={"client_order_id": entry.intent.client_order_id}) from None
        except SyndrError as exc:  # transport or protocol: the venue may or may not have the order
            await self._record(entry.with_changes(state=OrderState.UNKNOWN))
            self.wake_reconciler()
            log.warning("order outcome unknown", extra={"client_order_id": entry.intent.client_order_id,
                                                        "error": type(exc).__name__})
            raise Unavailable(f"venue did not answer for order {entry.intent.client_order_id} ({exc}); it is being "
                              "reconciled: retry with the same client_order_id", reason="ORDER_OUTCOME_UNKNOWN",
                              metadata={"client_order_id": entry.intent.client_order_id}) from None
        order = models.order_object(result.result)
        if order is None:
            await self._record(entry.with_changes(state=OrderState.UNKNOWN))
            self.wake_reconciler()
            raise Unavailable(f"venue answered order {entry.intent.client_order_id} without an order; reconciling",
                              reason="ORDER_OUTCOME_UNKNOWN")
        entry = await self.apply_venue_order(entry, order)
        if result.us_in is not None and result.us_out is not None:
            entry = entry.with_changes(venue_timing=(result.us_in, result.us_out,
                                                     result.us_diff if result.us_diff is not None
                                                     else result.us_out - result.us_in))
        return entry

    # ------------------------------------------------------------------ reconciling

    async def reconcile(self, entry: JournalEntry) -> JournalEntry:
        """Resolve an order of unknown outcome if the venue can tell; return the entry as now journaled.

        An order this process is placing right now is not reconciled while its venue call is on the way
        (that would resend its bytes, and the placement itself would then be refused as a reused salt):
        the placement is awaited and the journal read again.
        """
        placing = self._inflight.get(entry.key)
        if placing is not None:
            await asyncio.wait({placing})
            entry = await self._get(entry.key)
            if not entry.unresolved:
                return entry
        return await self._reconcile_serialised(entry)

    async def _reconcile_serialised(self, entry: JournalEntry) -> JournalEntry:
        """One reconciliation per order at a time: a second caller waits for the running one."""
        running = self._reconciling.get(entry.key)
        if running is not None:
            await asyncio.shield(running)
            return await self._get(entry.key)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._reconciling[entry.key] = future
        try:
            return await self._reconcile_once(entry)
        finally:
            del self._reconciling[entry.key]
            future.set_result(None)

    async def _reconcile_once(self, entry: JournalEntry) -> JournalEntry:
        current = await self.journal.get(*entry.key)
        if current is None or not current.unresolved:
            return current or entry
        try:
            found = await self.venue.find_by_salt(current.intent.account, current.intent.symbol, current.salt,
                                                  current.timestamp_ms)
            if found is not None:
                return await self.apply_venue_order(current, found)
            settled = await self.journal.get(*entry.key)
            if settled is not None and not settled.unresolved:
                # Resolved while the venue was read (an amend or cancel by order id found it by the salt the
                # venue listed): an edit has since given the order a new salt, so it is not found by this one.
                return settled
            if time.time_ns() // 1_000_000 >= current.expiration_ms:
                return await self._record(current.with_changes(
                    state=OrderState.REJECTED, reject_reason="never reached the venue before its signature "
                                                             "expired"))
            if self._cancelled_by_deadman(current):
                return await self._reject_for_deadman(current)
            resend = await self._record(current.with_changes(state=OrderState.UNKNOWN,
                                                             attempts=current.attempts + 1))
            try:
                sent = await self._send(resend)
            except Exception:  # a rejection or another unknown outcome: _send journaled which one
                return await self._get(entry.key)
            if sent.state == OrderState.OPEN and self._cancelled_by_deadman(sent):
                return await self._cancel_resent(sent)
            return sent
        except SyndrError as exc:
            log.info("reconcile deferred", extra={"client_order_id": current.intent.client_order_id,
                                                  "error": type(exc).__name__})
            return current

    async def _cancel_resent(self, entry: JournalEntry) -> JournalEntry:
        """Cancel an order just sent again that rests although the account's dead-man's switch fired while the
        resend was on its way: it may have landed after the switch's cancel_all. A failure is logged (the order
        stays journaled OPEN, as the venue has it)."""
        log.warning("the dead-man's switch fired while an order was being sent again: cancelling it",
                    extra={"client_order_id": entry.intent.client_order_id, "account": entry.intent.account})
        try:
            cancelled, _ = await self.cancel(entry.intent.venue, entry.intent.account, entry.order_id, "")
        except NotFound:  # the switch's cancel_all took it
            return await self._get(entry.key)
        except Exception:
            log.exception("cancelling an order sent again after the dead-man's switch fired failed",
                          extra={"client_order_id": entry.intent.client_order_id, "account": entry.intent.account})
            return entry
        return cancelled or entry

    async def reconcile_all(self) -> int:
        """Try every unresolved entry once; return how many are still unresolved."""
        remaining = 0
        for entry in await self.journal.unresolved():
            placing = self._inflight.get(entry.key)
            if placing is not None:
                # A call of this process has it on its way (a new order, or a caller retrying one left unknown):
                # never reconciled beside it, but not counted resolved before it is (readiness at start waits
                # on this count). Its end is awaited; if it left the order unresolved, the next pass has it.
                await asyncio.wait({placing})
                remaining += (await self._get(entry.key)).unresolved
                continue
            try:
                entry = await self._reconcile_serialised(entry)
            except Exception:
                log.exception("reconcile failed", extra={"client_order_id": entry.intent.client_order_id})
            remaining += entry.unresolved
        return remaining

    # ------------------------------------------------------------------ venue order updates

    async def apply_venue_order(self, entry: JournalEntry, order: dict[str, Any]) -> JournalEntry:
        """Journal the venue's latest word on an order of ours, unless a later word is journaled already.

        `entry` may be older than the journal: the order stream can journal a fill while the answer to
        the call that placed the order is still on its way. What this process journaled last for the
        order id is remembered, so the older answer does not overwrite the newer state.
        """
        known = self._journaled.get(str(order.get("order_id", "")))
        if known is not None and stored_is_newer(order_at_version(str(order["order_id"]), known), order):
            return await self._get(entry.key)
        if entry.venue_order and stored_is_newer(orjson.loads(entry.venue_order), order):
            return entry  # an update that raced ahead (e.g. from the order stream) is newer
        return await self._record(entry.with_changes(state=venue_state(order), order_id=str(order["order_id"]),
                                                     venue_order=orjson.dumps(order)))

    async def on_venue_order(self, venue: str, account: str, order: dict[str, Any]) -> JournalEntry | None:
        """An order update from the venue (stream or read): journal it if the order is ours.

        The stream echoes every order just placed; what the journal already holds is not written again,
        but its entry is still returned: a stream consumer needs what only the journal knows (the client id).
        """
        order_id = str(order.get("order_id", ""))
        if self._journaled.get(order_id) == venue_version(order):
            recent = self._recent.get(order_id)
            return recent if recent is not None else await self.journal.find_order(venue, account, order_id)
        entry = await self.journal.find_order(venue, account, str(order.get("order_id", "")))
        if entry is None and order.get("salt") is not None:
            try:
                entry = await self.journal.find_salt(venue, account, int(order["salt"]))
            except (TypeError, ValueError):
                entry = None
        if entry is None:
            return None
        return await self.apply_venue_order(entry, order)

    async def _record(self, entry: JournalEntry) -> JournalEntry:
        stored = await self.journal.update(entry)
        self._index(stored)
        return stored

    def _index(self, entry: JournalEntry) -> None:
        group = self._unresolved.setdefault((entry.intent.venue, entry.intent.account, entry.intent.symbol), set())
        if entry.unresolved:
            group.add(entry.key)
        else:
            group.discard(entry.key)
        if entry.order_id and entry.venue_order:
            self._journaled[entry.order_id] = venue_version(orjson.loads(entry.venue_order))
            self._journaled.move_to_end(entry.order_id)
            if len(self._journaled) > _JOURNALED_MEMORY:
                self._journaled.popitem(last=False)
            self._recent[entry.order_id] = entry
            self._recent.move_to_end(entry.order_id)
            if len(self._recent) > _RECENT_ENTRIES:
                self._recent.popitem(last=False)

    # ------------------------------------------------------------------ finding, amending, cancelling

    async def locate(self, venue: str, account: str, order_id: str, client_order_id: str
                     ) -> tuple[JournalEntry | None, str]:
        """(journal entry if ours, venue order id) for a request naming exactly one of the two ids."""
        if bool(order_id) == bool(client_order_id):
            raise InvalidArgument("order_id", "give exactly one of order_id and client_order_id")
        if client_order_id:
            entry = await self.journal.get(venue, account, client_order_id)
            if entry is None:
                raise NotFound(f"no order with client_order_id {client_order_id!r}", reason="ORDER_NOT_FOUND")
            if entry.unresolved:
                entry = await self.reconcile(entry)
            if not entry.order_id:
                if entry.unresolved:
                    raise Unavailable(f"order {client_order_id}: outcome at the venue still unknown; retry",
                                      reason="ORDER_OUTCOME_UNKNOWN")
                raise FailedPrecondition(f"order {client_order_id} never reached the book ({entry.state})",
                                         reason="ORDER_NOT_AT_VENUE")
            return entry, entry.order_id
        return await self.journal.find_order(venue, account, order_id), order_id

    async def fetch(self, venue: str, account: str, order_id: str, client_order_id: str
                    ) -> tuple[JournalEntry | None, dict[str, Any]]:
        """The venue's current view of one order (journaled if ours)."""
        entry, venue_order_id = await self.locate(venue, account, order_id, client_order_id)
        try:
            order = await self.venue.find_by_id(account, venue_order_id, entry.intent.symbol if entry else None)
        except SyndrError as exc:
            raise to_portico_error(exc) from None
        if order is None:
            raise NotFound(f"the venue has no order {venue_order_id}", reason="ORDER_NOT_FOUND")
        if entry is not None:
            entry = await self.apply_venue_order(entry, order)
        else:  # by order id: ours but journaled UNKNOWN is found by the salt the venue lists, and resolved now
            entry = await self.on_venue_order(venue, account, order)
        return entry, order

    async def amend(self, venue: str, account: str, order_id: str, client_order_id: str, amount: str,
                    price: str) -> tuple[JournalEntry | None, dict[str, Any]]:
        """`private/edit`, re-signed over the new price and amount with a fresh salt (salts sign one payload)."""
        new_amount = parse_optional_decimal(amount, "amount", positive=True)
        new_price = parse_optional_decimal(price, "price", positive=True)
        if new_amount is None and new_price is None:
            raise InvalidArgument("amount", "give a new amount, a new price, or both")
        entry, current = await self.fetch(venue, account, order_id, client_order_id)
        # Spelt as the venue spells them: its edit and cancel examples say "Limit" where its listings say "limit".
        if str(current.get("order_state", "")).lower() != "open":
            raise FailedPrecondition(f"order {current['order_id']} is {current.get('order_state')}, not open",
                                     reason="ORDER_NOT_OPEN")
        order_type = str(current.get("order_type", "")).lower()
        if order_type != "limit":
            raise FailedPrecondition("only limit orders can be amended", reason="ORDER_NOT_LIMIT")
        symbol = str(current.get("instrument_name") or (entry.intent.symbol if entry is not None else ""))
        time_in_force = str(current.get("time_in_force") or (entry.intent.time_in_force if entry is not None
                                                             else "GTC")).upper()
        rules = await self.instruments.get(venue, symbol)
        final_amount = new_amount if new_amount is not None else Decimal(str(current["amount"]))
        final_price = new_price if new_price is not None else Decimal(str(current["price"]))
        check_against_instrument(final_price, final_amount, rules)
        session = await self.venue.session(account)
        salt = secrets.randbits(_SALT_BITS)
        now_ms = time.time_ns() // 1_000_000
        expiration_ms = int(current.get("expiration") or now_ms + self._order_ttl_ms)
        data = typed_data.order_typed_data(
            verifying_contract=await self.venue.orderbook_address(), account=account,
            instrument_id=rules.venue_instrument_id, is_buy=str(current.get("direction", "")).lower() == "buy",
            order_type=int(typed_data.OrderType.from_wire(order_type)),
            time_in_force=int(typed_data.TimeInForce.from_wire(time_in_force)),
            post_only=bool(current.get("post_only")), reduce_only=bool(current.get("reduce_only")),
            price=final_price, amount=final_amount, salt=salt, expiration=expiration_ms, timestamp=now_ms)
        signature, _ = await self.signer.sign(session.record.signing_key_id, data)
        params = {"order_id": current["order_id"], "instrument_name": symbol, "amount": wire.number(final_amount),
                  "price": wire.number(final_price), "time_in_force": time_in_force, "type": order_type,
                  "salt": salt, "expiration": expiration_ms, "timestamp": now_ms, "signature": signature}
        try:
            result = await self.venue.call(account, "private/edit", params)
        except SyndrError as exc:
            raise to_portico_error(exc) from None
        order = _completed(_answered_order("private/edit", result.result), symbol=symbol,
                           time_in_force=time_in_force, salt=salt, expiration_ms=expiration_ms)
        if entry is not None:
            entry = await self.apply_venue_order(entry, order)
        return entry, order

    async def cancel(self, venue: str, account: str, order_id: str, client_order_id: str
                     ) -> tuple[JournalEntry | None, dict[str, Any]]:
        """`private/cancel` of one order; an order of ours is journaled as the venue answered.

        By `order_id`, an order the journal does not know by that id is looked up in the venue's open orders
        first (the cancel needs its instrument); its salt there finds it in the journal when it is ours but
        journaled UNKNOWN (the cancel's answer carries no salt), so it is resolved now, not at the next
        reconciliation.
        """
        entry, venue_order_id = await self.locate(venue, account, order_id, client_order_id)
        listed: dict[str, Any] = {}
        try:
            if entry is None:
                listed = await self._open_order(account, venue_order_id)
            symbol = entry.intent.symbol if entry is not None else str(listed["instrument_name"])
            result = await self.venue.call(account, "private/cancel",
                                           {"instrument_name": symbol, "order_id": venue_order_id})
        except SyndrNotFound:
            raise NotFound(f"the venue has no open order {venue_order_id}", reason="ORDER_NOT_FOUND") from None
        except SyndrError as exc:
            raise to_portico_error(exc) from None
        order = _completed(_answered_order("private/cancel", result.result), symbol=symbol,
                           time_in_force=entry.intent.time_in_force if entry is not None
                           else str(listed.get("time_in_force") or ""), salt=_salt(listed.get("salt")))
        if venue_state(order) == OrderState.OPEN:
            # The venue took the cancel: the order is off the book, whatever state its answer shows (the
            # document's cancel example answers the order as it was, "open"), as for `cancel_all`'s orders.
            order = {**order, "order_state": "cancelled"}
        if entry is None:
            return await self.on_venue_order(venue, account, order), order
        return await self.apply_venue_order(entry, order), order

    async def _open_order(self, account: str, order_id: str) -> dict[str, Any]:
        """An open order this journal does not hold by its id, as the venue lists it."""
        for order in await open_orders(self.venue, account, priority=Priority.CANCEL):
            if order.get("order_id") == order_id:
                return order
        raise NotFound(f"the venue has no open order {order_id}", reason="ORDER_NOT_FOUND")

    async def cancel_all(self, venue: str, account: str, symbol: str | None) -> int:
        """Cancel the account's open orders (on one instrument); return how many were open; journal them.

        Orders there of unknown outcome are reconciled first: one the venue never got is sent again by its
        reconciliation, which after the cancel would leave it resting where the caller cleared everything; sent
        before, it is cancelled with the rest.
        """
        await self._reconcile_in(venue, account, symbol)
        try:
            # The read is part of the cancel: it queues for the rate budget as a cancel does, not as a read.
            before = [o for o in await open_orders(self.venue, account, priority=Priority.CANCEL)
                      if symbol is None or o["instrument_name"] == symbol]
            if symbol is None:
                await self.venue.call(account, "private/cancel_all", {})
            else:
                await self.venue.call(account, "private/cancel_all_by_instrument", {"instrument_name": symbol})
        except SyndrError as exc:
            raise to_portico_error(exc) from None
        for order in before:
            await self.on_venue_order(venue, account, {**order, "order_state": "cancelled"})
        return len(before)

    async def _reconcile_in(self, venue: str, account: str, symbol: str | None) -> None:
        """Try once to resolve the account's orders of unknown outcome (on one instrument) not on their way now.
        A failure (the journal down, say) is logged, never in the way of the cancel that follows."""
        if not any(keys for (v, a, s), keys in self._unresolved.items()
                   if v == venue and a == account and (symbol is None or s == symbol)):
            return
        try:
            for entry in await self.journal.unresolved(venue, account, symbol):
                if entry.key not in self._inflight:
                    await self._reconcile_serialised(entry)
        except Exception:
            log.exception("reconcile before cancelling all failed", extra={"account": account, "symbol": symbol})


def _answered_order(method: str, result: Any) -> dict[str, Any]:
    """The order object of an amend's or a cancel's answer; without one, the protocol error mapped as everywhere."""
    order = models.order_object(result)
    if order is None:
        raise to_portico_error(SyndrProtocolError(f"{method}: the venue answered without an order"))
    return order


def _salt(value: Any) -> int | None:
    """A listed order's salt (a number or a decimal string), if it has one."""
    try:
        return int(value) if value is not None and type(value) is not bool else None
    except (TypeError, ValueError):
        return None


def _completed(order: dict[str, Any], *, symbol: str, time_in_force: str, salt: int | None = None,
               expiration_ms: int | None = None) -> dict[str, Any]:
    """An edit's or a cancel's answer with what the document's examples of those answers leave out filled in
    from the order as we know it (an empty `instrument_name` and `time_in_force`; an edit's `salt` and
    `expiration`), and its `order_type` spelt as the venue's listings spell it ("limit"; the examples: "Limit")."""
    known: dict[str, Any] = {}
    if isinstance(order.get("order_type"), str):
        known["order_type"] = order["order_type"].lower()
    if not order.get("instrument_name"):
        known["instrument_name"] = symbol
    if not order.get("time_in_force") and time_in_force:
        known["time_in_force"] = time_in_force
    if order.get("salt") is None and salt is not None:
        known["salt"] = str(salt)
    if order.get("expiration") is None and expiration_ms is not None:
        known["expiration"] = expiration_ms
    return {**order, **known}


def venue_version(order: dict[str, Any]) -> tuple[Any, ...]:
    """What distinguishes one venue state of an order from the next."""
    return (order.get("last_update_timestamp"), order.get("order_state"), str(order.get("filled_amount")),
            str(order.get("amount")), str(order.get("price")))


def order_at_version(order_id: str, version: tuple[Any, ...]) -> dict[str, Any]:
    """The fields of a `venue_version` that `stored_is_newer` compares, as an order object."""
    last_update_timestamp, order_state, filled_amount, _, _ = version
    return {"order_id": order_id, "last_update_timestamp": last_update_timestamp, "order_state": order_state,
            "filled_amount": filled_amount}


def _comparable(stored: Any, incoming: Any) -> tuple[int, int]:
    """Two orders' update timestamps in one unit. The venue's answers send milliseconds; the user.orders
    example sends seconds (its table says milliseconds): an update in seconds compared raw with an answer in
    milliseconds always looked older, so stream changes were never journaled. When either is in seconds, both
    are compared in seconds, and a tie falls to the state and fill rules."""
    a, b = int(stored or 0), int(incoming or 0)
    if 0 < a < models.SECONDS_BELOW or 0 < b < models.SECONDS_BELOW:
        return models.to_ms(a) // 1000, models.to_ms(b) // 1000
    return models.to_ms(a), models.to_ms(b)


def stored_is_newer(stored: dict[str, Any], incoming: dict[str, Any]) -> bool:
    """True when the journaled venue order is strictly newer than `incoming` (updates may arrive out of order)."""
    if stored.get("order_id") != incoming.get("order_id"):
        return False
    try:
        stored_ts, incoming_ts = _comparable(stored.get("last_update_timestamp"),
                                             incoming.get("last_update_timestamp"))
    except (TypeError, ValueError):
        return False
    if stored_ts != incoming_ts:
        return stored_ts > incoming_ts
    # Same millisecond (or second): a closed state or more filled wins.
    closed = {"filled", "cancelled", "rejected", "expired"}
    if (stored.get("order_state") in closed) != (incoming.get("order_state") in closed):
        return stored.get("order_state") in closed
    try:
        return Decimal(str(stored.get("filled_amount") or 0)) > Decimal(str(incoming.get("filled_amount") or 0))
    except ArithmeticError:
        return False
