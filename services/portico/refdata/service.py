"""`portico.refdata.v1.ReferenceDataService`, and the app that wires it to a store and the venues."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Mapping
from decimal import Decimal
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from portico.refdata.model import InstrumentFilter, InstrumentRecord
from portico.refdata.settings import RefdataSettings
from portico.refdata.store import InstrumentEvent, InstrumentStore, open_store
from portico.refdata.sync import EventHub, InstrumentSyncer, SyndrInstrumentSource
from portico.refdata.v1 import instrument_pb2, reference_data_service_pb2, reference_data_service_pb2_grpc
from portico.runtime.auth import TokenAuthenticator
from portico.runtime.decimals import format_decimal
from portico.runtime.errors import InvalidArgument, NotFound
from portico.runtime.lifecycle import GrpcServiceApp, cancel_and_wait
from portico.runtime.server import GrpcServer
from portico.venues.syndr.http import SyndrHttpClient

__all__ = ["SERVICE_NAME", "RefdataApp", "ReferenceDataServicer", "to_proto"]

log = logging.getLogger("portico.refdata")

SERVICE_NAME = reference_data_service_pb2.DESCRIPTOR.services_by_name["ReferenceDataService"].full_name
METHOD_SCOPES = {
    f"/{SERVICE_NAME}/SyncInstruments": "admin",
    f"/{SERVICE_NAME}/GetInstrument": "read",
    f"/{SERVICE_NAME}/ListInstruments": "read",
    f"/{SERVICE_NAME}/WatchInstruments": "read",
}
ERROR_DOMAIN = "refdata.portico"
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_TEXT_CHARS = 256  # a symbol, a currency: far longer than any venue's
MAX_PAGE_TOKEN_CHARS = 2048  # what we issue is a few hundred characters at most
MAX_FILTER_VALUES = 1000  # per filter list: far more than a venue's currencies (SQLite binds at most 250,000)


def check_text(field: str, value: str) -> str:
    """`value`, or INVALID_ARGUMENT naming `field`: databases refuse a NUL (PostgreSQL text cannot hold one)."""
    if "\x00" in value:
        raise InvalidArgument(field, "must not contain a NUL character")
    if len(value) > MAX_TEXT_CHARS:
        raise InvalidArgument(field, f"must be at most {MAX_TEXT_CHARS} characters")
    return value

_TYPE_TO_PROTO = {"spot": instrument_pb2.INSTRUMENT_TYPE_SPOT, "perpetual": instrument_pb2.INSTRUMENT_TYPE_PERPETUAL,
                  "future": instrument_pb2.INSTRUMENT_TYPE_FUTURE, "option": instrument_pb2.INSTRUMENT_TYPE_OPTION}
_TYPE_FROM_PROTO = {v: k for k, v in _TYPE_TO_PROTO.items()}
_CONTRACT_FROM_PROTO = {
    instrument_pb2.ContractType.ValueType(value.number): value.name.removeprefix("CONTRACT_TYPE_").lower()
    for value in instrument_pb2.ContractType.DESCRIPTOR.values if value.number != 0
}
_CONTRACT_TO_PROTO = {v: k for k, v in _CONTRACT_FROM_PROTO.items()}
_OPTION_TO_PROTO = {"call": instrument_pb2.OPTION_TYPE_CALL, "put": instrument_pb2.OPTION_TYPE_PUT}
_EVENT_TO_PROTO = {"added": reference_data_service_pb2.INSTRUMENT_EVENT_TYPE_ADDED,
                   "updated": reference_data_service_pb2.INSTRUMENT_EVENT_TYPE_UPDATED,
                   "deactivated": reference_data_service_pb2.INSTRUMENT_EVENT_TYPE_DEACTIVATED}


def _ts(ms: int) -> Timestamp:
    stamp = Timestamp()
    stamp.FromMilliseconds(ms)
    return stamp


def _dec(value: Decimal | None) -> str:
    return format_decimal(value) if value is not None else ""


def to_proto(record: InstrumentRecord) -> instrument_pb2.Instrument:
    """A normalised record as the contract's `Instrument`."""
    message = instrument_pb2.Instrument(
        symbol=record.symbol, dataset_id=record.dataset_id, venue=record.venue,
        base_currency=record.base_currency, quote_currency=record.quote_currency,
        type=_TYPE_TO_PROTO.get(record.type, instrument_pb2.INSTRUMENT_TYPE_UNSPECIFIED), active=record.active,
        price_increment=_dec(record.price_increment), amount_increment=_dec(record.amount_increment),
        min_trade_amount=_dec(record.min_trade_amount), maker_fee=_dec(record.maker_fee),
        taker_fee=_dec(record.taker_fee),
        contract_type=_CONTRACT_TO_PROTO.get(record.contract_type or "", instrument_pb2.CONTRACT_TYPE_UNSPECIFIED),
        option_type=_OPTION_TO_PROTO.get(record.option_type or "", instrument_pb2.OPTION_TYPE_UNSPECIFIED),
        venue_instrument_id=record.venue_instrument_id, venue_kind=record.venue_kind,
        max_leverage=_dec(record.max_leverage), max_liquidation_commission=_dec(record.max_liquidation_commission),
        price_index=record.price_index, underlying=record.underlying, settlement_period=record.settlement_period,
        venue_base_currency=record.venue_base_currency, venue_quote_currency=record.venue_quote_currency,
    )
    message.available_since.CopyFrom(_ts(record.available_since))
    message.update_time.CopyFrom(_ts(record.update_time))
    if record.available_to is not None:
        message.available_to.CopyFrom(_ts(record.available_to))
    if record.expiry is not None:
        message.expiry.CopyFrom(_ts(record.expiry))
    if record.inverse is not None:
        message.inverse = record.inverse
    if record.quanto is not None:
        message.quanto = record.quanto
    if record.contract_multiplier is not None:
        message.contract_multiplier = _dec(record.contract_multiplier)
    if record.settlement_currency is not None:
        message.settlement_currency = record.settlement_currency
    if record.strike_price is not None:
        message.strike_price = _dec(record.strike_price)
    for change in record.changes:
        entry = message.changes.add()
        entry.until.CopyFrom(_ts(change.until_ms))
        if change.price_increment is not None:
            entry.price_increment = _dec(change.price_increment)
        if change.amount_increment is not None:
            entry.amount_increment = _dec(change.amount_increment)
        if change.contract_multiplier is not None:
            entry.contract_multiplier = _dec(change.contract_multiplier)
    return message


def filter_from_proto(message: instrument_pb2.InstrumentFilter) -> InstrumentFilter:
    """The request's filter, with unspecified enum values, unstorable strings and overlong lists refused."""
    for name, values in (("base_currencies", message.base_currencies), ("quote_currencies", message.quote_currencies),
                         ("types", message.types), ("contract_types", message.contract_types)):
        if len(values) > MAX_FILTER_VALUES:
            raise InvalidArgument(f"filter.{name}", f"must have at most {MAX_FILTER_VALUES} values")
    for name, currencies in (("base_currencies", message.base_currencies),
                             ("quote_currencies", message.quote_currencies)):
        for i, currency in enumerate(currencies):
            check_text(f"filter.{name}[{i}]", currency)
    types = []
    for i, value in enumerate(message.types):
        if value not in _TYPE_FROM_PROTO:
            raise InvalidArgument(f"filter.types[{i}]", "must be a specified instrument type")
        types.append(_TYPE_FROM_PROTO[value])
    contract_types = []
    for i, contract in enumerate(message.contract_types):
        if contract not in _CONTRACT_FROM_PROTO:
            raise InvalidArgument(f"filter.contract_types[{i}]", "must be a specified contract type")
        contract_types.append(_CONTRACT_FROM_PROTO[contract])
    return InstrumentFilter(
        base_currencies=tuple(c.upper() for c in message.base_currencies),
        quote_currencies=tuple(c.upper() for c in message.quote_currencies),
        types=tuple(types), contract_types=tuple(contract_types),
        active=message.active if message.HasField("active") else None,
    )


def _query_key(venue: str, flt: InstrumentFilter) -> str:
    """Ties a page token to the query it came from: the filter as a set of values per field, so the same filter
    sent again in another order or with a value repeated (the same instruments) continues its pages."""
    canonical = json.dumps([venue, sorted(set(flt.base_currencies)), sorted(set(flt.quote_currencies)),
                            sorted(set(flt.types)), sorted(set(flt.contract_types)), flt.active])
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def encode_page_token(after: str, query: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"a": after, "q": query}).encode()).decode()


def decode_page_token(token: str, query: str) -> str | None:
    if not token:
        return None
    if len(token) > MAX_PAGE_TOKEN_CHARS:
        raise InvalidArgument("page_token", "is not a token this service issued")
    try:
        data: Any = json.loads(base64.urlsafe_b64decode(token.encode()))
        after, token_query = data["a"], data["q"]
    except (ValueError, KeyError, TypeError, RecursionError):  # RecursionError: deeply nested JSON
        raise InvalidArgument("page_token", "is not a token this service issued") from None
    if token_query != query or not isinstance(after, str):
        raise InvalidArgument("page_token", "belongs to a different venue or filter")
    if "\x00" in after or len(after) > MAX_TEXT_CHARS or not _is_unicode_text(after):
        raise InvalidArgument("page_token", "is not a token this service issued")
    return after


def _is_unicode_text(value: str) -> bool:
    """False for a string with a lone surrogate: JSON can spell one ("\\ud800"), no database driver stores it."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


class ReferenceDataServicer(reference_data_service_pb2_grpc.ReferenceDataServiceServicer):
    def __init__(self, store: InstrumentStore, syncer: InstrumentSyncer, hub: EventHub):
        self._store = store
        self._syncer = syncer
        self._hub = hub

    async def SyncInstruments(self, request: reference_data_service_pb2.SyncInstrumentsRequest,
                              context: grpc.aio.ServicerContext) -> reference_data_service_pb2.SyncInstrumentsResponse:
        for i, symbol in enumerate(request.symbols):
            if not symbol.strip():
                raise InvalidArgument(f"symbols[{i}]", "must not be empty")
            check_text(f"symbols[{i}]", symbol)
        venue, outcome = await self._syncer.sync(request.venue, list(request.symbols))
        return reference_data_service_pb2.SyncInstrumentsResponse(
            venue=venue, synced=outcome.synced, added=outcome.added, updated=outcome.updated,
            deactivated=outcome.deactivated, skipped=outcome.skipped)

    async def GetInstrument(self, request: reference_data_service_pb2.GetInstrumentRequest,
                            context: grpc.aio.ServicerContext) -> reference_data_service_pb2.GetInstrumentResponse:
        venue = self._syncer.check_venue(request.venue)
        if not request.symbol:
            raise InvalidArgument("symbol", "is required")
        check_text("symbol", request.symbol)
        record = await self._store.get(venue, request.symbol)
        if record is None:
            raise NotFound(f"{venue} has no instrument {request.symbol!r}", reason="INSTRUMENT_NOT_FOUND",
                           metadata={"venue": venue, "symbol": request.symbol})
        return reference_data_service_pb2.GetInstrumentResponse(instrument=to_proto(record))

    async def ListInstruments(self, request: reference_data_service_pb2.ListInstrumentsRequest,
                              context: grpc.aio.ServicerContext) -> reference_data_service_pb2.ListInstrumentsResponse:
        venue = self._syncer.check_venue(request.venue)
        if request.page_size < 0:
            raise InvalidArgument("page_size", "must not be negative")
        size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        flt = filter_from_proto(request.filter)
        query = _query_key(venue, flt)
        after = decode_page_token(request.page_token, query)
        records = await self._store.list(venue, flt, limit=size + 1, after_symbol=after)
        response = reference_data_service_pb2.ListInstrumentsResponse(
            instruments=[to_proto(r) for r in records[:size]])
        if len(records) > size:
            response.next_page_token = encode_page_token(records[size - 1].symbol, query)
        return response

    async def WatchInstruments(self, request: reference_data_service_pb2.WatchInstrumentsRequest,
                               context: grpc.aio.ServicerContext
                               ) -> AsyncIterator[reference_data_service_pb2.WatchInstrumentsResponse]:
        """Initial metadata goes out only once this stream's watcher is registered with the hub: a client
        that has it knows every event published from then on reaches it (and can re-list for the earlier
        ones without a gap)."""
        venue = self._syncer.check_venue(request.venue)
        with self._hub.subscribe(venue) as subscription:
            await context.send_initial_metadata(())
            async for events in subscription:
                yield reference_data_service_pb2.WatchInstrumentsResponse(events=[_event(e) for e in events])


def _event(event: InstrumentEvent) -> reference_data_service_pb2.InstrumentEvent:
    message = reference_data_service_pb2.InstrumentEvent(type=_EVENT_TO_PROTO[event.kind],
                                                         instrument=to_proto(event.record))
    message.event_time.CopyFrom(_ts(event.at_ms))
    return message


class RefdataApp(GrpcServiceApp):
    """The reference-data process: store, venue clients, syncer, gRPC server, scheduled syncs."""

    def __init__(self, settings: RefdataSettings, env: Mapping[str, str]):
        self.settings = settings
        self.store = open_store(sqlite_path=settings.sqlite_path, dsn=settings.dsn)
        self.syndr = SyndrHttpClient(settings.syndr_http_url)
        self.hub = EventHub()
        adapters = {"syndr": SyndrInstrumentSource(self.syndr)}  # every venue this build has an adapter for
        # Only the configured venues are synced (none: the service serves what its database holds).
        self.syncer = InstrumentSyncer(self.store, {venue: adapters[venue] for venue in settings.venues}, self.hub,
                                       served=adapters)
        self.server = GrpcServer(settings.server, domain=ERROR_DOMAIN,
                                 authenticator=TokenAuthenticator.from_env(env), method_scopes=METHOD_SCOPES)
        reference_data_service_pb2_grpc.add_ReferenceDataServiceServicer_to_server(
            ReferenceDataServicer(self.store, self.syncer, self.hub), self.server.grpc)
        self._scheduled: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.store.start()
        synced = await self.syncer.sync_all() if self.settings.sync_on_start else True
        await self.server.start([SERVICE_NAME])
        if self.settings.sync_interval_s > 0 or not synced:  # a failed first sync is retried soon, not next interval
            self._scheduled = asyncio.create_task(
                self.syncer.run_every(self.settings.sync_interval_s, failed=not synced), name="refdata-scheduled-sync")

    async def aclose(self, grace_s: float | None = None) -> None:
        await cancel_and_wait(self._scheduled)
        await self.server.stop(grace_s)
        await self.syndr.aclose()
        await self.store.aclose()
