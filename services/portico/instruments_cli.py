"""`portico instruments`: list, show and sync instruments through the reference-data service, in a terminal.

    portico instruments list [--venue syndr] [--kind perpetual|future|option|spot ...]
                             [--contract-type linear_perpetual ...] [--base ETH ...] [--quote USD ...]
                             [--active-only | --inactive-only] [--json]
    portico instruments show ETH-PERP [--json]
    portico instruments sync [--symbol ETH-PERP ...]

`list` reads every page of `ListInstruments` and prints one aligned table:
symbol, kind, base/quote, tick size, amount increment, minimum amount, contract
multiplier, expiry, strike, option type and whether the instrument is active.
Each filter flag takes one or more values (any of them matches) and the flags
combine with AND, as the service's `InstrumentFilter`. `show` prints every
field of one instrument (`GetInstrument`), one per line, including the native
venue fields and the change history. With `--json` both print one JSON object
per instrument and line (proto field names, enums by name, timestamps in RFC
3339, int64 as strings) for scripts. `sync` asks the service to fetch the
venue's instruments now (all of them, or the `--symbol`s) and prints how many
were synced, added, updated and deactivated, and how many the venue listed
but the service could not read, left out (only if any: the service's log
names them). Decimals are printed as the
service's decimal strings, never through floats.

The reference-data address and the bearer token (`read`; `admin` for `sync`)
come from the `portico up` state file unless `--target` and `--token-env` say
otherwise.

Exit codes: 0 done, 1 the call failed, e.g. an unknown symbol (NOT_FOUND) or a
token without `admin` for `sync` (PERMISSION_DENIED) (one line on stderr: gRPC
status, message, ErrorInfo reason), 2 bad arguments or no state file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TextIO

import grpc
from google.protobuf import json_format
from google.protobuf.descriptor import EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from portico.connection import (
    TLS_HELP,
    ConfigError,
    Connection,
    PagingError,
    StateFile,
    add_connection_arguments,
    connection,
    describe_rpc_error,
    read_pages,
    timeout_seconds,
)
from portico.enum_labels import enum_label
from portico.refdata.v1 import instrument_pb2
from portico.refdata.v1 import reference_data_service_pb2 as pb
from portico.refdata.v1 import reference_data_service_pb2_grpc as pb_grpc
from portico.runtime.client import bearer

__all__ = [
    "CONTRACT_TYPES",
    "KINDS",
    "UsageError",
    "add_arguments",
    "check_arguments",
    "instrument_filter",
    "render_instrument",
    "render_instruments",
    "render_json",
    "render_sync",
    "run",
]

SERVICE = "refdata"
NAME = "portico instruments"
LIST_PAGE_SIZE = 500
MAX_PAGE_SIZE = 1000  # the service's own cap on a page


def _enum_value(enum: EnumDescriptor, number: int) -> str:
    """An enum value without its type's prefix, in lower case (`CONTRACT_TYPE_PUT_OPTION` -> `put_option`).

    `-` when unset; the number itself for a value newer than this client.
    """
    return "-" if number == 0 else enum_label(enum, number).lower()


def _enum_names(enum: EnumDescriptor) -> dict[str, int]:
    """The specified values of an enum by their short name (`option` for INSTRUMENT_TYPE_OPTION)."""
    return {_enum_value(enum, v.number): v.number for v in enum.values if v.number != 0}


KINDS = _enum_names(instrument_pb2.InstrumentType.DESCRIPTOR)
CONTRACT_TYPES = _enum_names(instrument_pb2.ContractType.DESCRIPTOR)


class UsageError(Exception):
    """The arguments do not make a request; the message says why."""


# --- arguments ----------------------------------------------------------------------------------------------------


def _choice(names: dict[str, int], what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = names.get(text.strip().lower())
        if value is None:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}: choose from {', '.join(names)}")
        return value

    return parse


def _currency(text: str) -> str:
    value = text.strip().upper()
    if not value:
        raise argparse.ArgumentTypeError("a currency must not be empty")
    return value


def _page_size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 < value <= MAX_PAGE_SIZE:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_PAGE_SIZE}")
    return value


def _common(parser: argparse.ArgumentParser, scope: str, default_timeout: float) -> None:
    add_connection_arguments(parser, service=SERVICE, what="reference-data service", scope=scope)
    parser.add_argument("--venue", default="syndr", help="venue (syndr)")
    parser.add_argument("--timeout", type=timeout_seconds, default=default_timeout, metavar="SECONDS",
                        help=f"deadline of each call ({default_timeout:g})")
    parser.set_defaults(scope=scope)


def add_arguments(instruments_parser: argparse.ArgumentParser) -> None:
    """The sub-commands of `portico instruments`: list, show, sync."""
    instruments_parser.epilog = TLS_HELP
    sub = instruments_parser.add_subparsers(dest="instruments_command", required=True, metavar="{list,show,sync}")

    listing = sub.add_parser("list", help="list instruments (every page), as a table", allow_abbrev=False)
    listing.add_argument("--kind", dest="kinds", type=_choice(KINDS, "an instrument kind"), nargs="+",
                         action="extend", default=[], metavar="KIND",
                         help=f"only these kinds ({', '.join(KINDS)})")
    listing.add_argument("--contract-type", dest="contract_types", type=_choice(CONTRACT_TYPES, "a contract type"),
                         nargs="+", action="extend", default=[], metavar="TYPE",
                         help=f"only these contract types ({', '.join(CONTRACT_TYPES)})")
    listing.add_argument("--base", dest="base_currencies", type=_currency, nargs="+", action="extend", default=[],
                         metavar="CURRENCY", help="only these (normalised) base currencies, e.g. ETH")
    listing.add_argument("--quote", dest="quote_currencies", type=_currency, nargs="+", action="extend", default=[],
                         metavar="CURRENCY", help="only these (normalised) quote currencies, e.g. USD")
    active = listing.add_mutually_exclusive_group()
    active.add_argument("--active-only", dest="active", action="store_const", const=True,
                        help="only instruments that can be traded now")
    active.add_argument("--inactive-only", dest="active", action="store_const", const=False,
                        help="only instruments the venue no longer lists")
    listing.add_argument("--json", action="store_true", help="one JSON object per instrument and line")
    listing.add_argument("--page-size", type=_page_size, default=LIST_PAGE_SIZE, metavar="N",
                         help=f"instruments per ListInstruments call ({LIST_PAGE_SIZE}); every page is read")
    _common(listing, "read", 15.0)

    show = sub.add_parser("show", help="every field of one instrument", allow_abbrev=False)
    show.add_argument("symbol", help="venue symbol, e.g. ETH-PERP")
    show.add_argument("--json", action="store_true", help="the instrument as one JSON object")
    _common(show, "read", 15.0)

    sync = sub.add_parser("sync", help="fetch the venue's instruments now (needs the admin token)",
                          allow_abbrev=False)
    sync.add_argument("--symbol", dest="symbols", nargs="+", action="extend", default=[], metavar="SYMBOL",
                      help="only these symbols (default: every instrument of the venue; a subset never deactivates)")
    _common(sync, "admin", 60.0)


def check_arguments(args: argparse.Namespace) -> None:
    """Rules argparse cannot express; UsageError names the one broken."""
    if not args.venue.strip():
        raise UsageError("--venue must not be empty")
    if args.instruments_command == "show" and not args.symbol.strip():
        raise UsageError("the symbol must not be empty")
    if args.instruments_command == "sync" and any(not symbol.strip() for symbol in args.symbols):
        raise UsageError("--symbol must not be empty")


def instrument_filter(args: argparse.Namespace) -> instrument_pb2.InstrumentFilter:
    """The `InstrumentFilter` of `portico instruments list` (an empty filter matches everything)."""
    flt = instrument_pb2.InstrumentFilter(base_currencies=args.base_currencies, quote_currencies=args.quote_currencies,
                                          types=args.kinds, contract_types=args.contract_types)
    if args.active is not None:
        flt.active = args.active
    return flt


# --- rendering (pure) ---------------------------------------------------------------------------------------------


def _time(stamp: Timestamp) -> str:
    return stamp.ToJsonString()


def _kind(instrument: instrument_pb2.Instrument) -> str:
    kind = _enum_value(instrument_pb2.InstrumentType.DESCRIPTOR, instrument.type)
    return (instrument.venue_kind or "-") if kind == "-" else kind


def _pair(instrument: instrument_pb2.Instrument) -> str:
    if instrument.base_currency and instrument.quote_currency:
        return f"{instrument.base_currency}/{instrument.quote_currency}"
    return instrument.underlying or "-"


def _optional(message: Message, name: str) -> str:
    """An optional string field as given, `-` when unset or empty."""
    return (str(getattr(message, name)) or "-") if message.HasField(name) else "-"


TABLE_HEADER = ("SYMBOL", "KIND", "BASE/QUOTE", "TICK SIZE", "AMOUNT INCR", "MIN AMOUNT", "MULTIPLIER", "EXPIRY",
                "STRIKE", "OPTION", "ACTIVE")
_NUMERIC_COLUMNS = {3, 4, 5, 6, 8}


def _row(instrument: instrument_pb2.Instrument) -> tuple[str, ...]:
    return (instrument.symbol, _kind(instrument), _pair(instrument), instrument.price_increment or "-",
            instrument.amount_increment or "-", instrument.min_trade_amount or "-",
            _optional(instrument, "contract_multiplier"),
            _time(instrument.expiry) if instrument.HasField("expiry") else "-",
            _optional(instrument, "strike_price"),
            _enum_value(instrument_pb2.OptionType.DESCRIPTOR, instrument.option_type),
            "yes" if instrument.active else "no")


def render_instruments(instruments: Sequence[instrument_pb2.Instrument], *,
                       empty: str = "no instruments") -> list[str]:
    """An aligned table in the service's order (text columns left, numbers right), or the `empty` line."""
    if not instruments:
        return [empty]
    rows = [_row(i) for i in instruments]
    widths = [max(len(row[i]) for row in (TABLE_HEADER, *rows)) for i in range(len(TABLE_HEADER))]

    def line(row: Sequence[str]) -> str:
        cells = [cell.rjust(widths[i]) if i in _NUMERIC_COLUMNS else cell.ljust(widths[i])
                 for i, cell in enumerate(row)]
        return "  ".join(cells).rstrip()

    return [line(TABLE_HEADER), *(line(row) for row in rows)]


def _value(field: FieldDescriptor, value: Any) -> str:
    """One (non-repeated) value of `field` as text: strings as given, enums short, timestamps RFC 3339."""
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        if isinstance(value, Timestamp):
            return _time(value)
        return json_format.MessageToJson(value, preserving_proto_field_name=True, indent=None)
    if field.type == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        return _enum_value(field.enum_type, value)
    if field.type == FieldDescriptor.TYPE_BOOL:
        return "true" if value else "false"
    return str(value) or "-"


def _set_fields(message: Message) -> str:
    """The fields a sub-message sets, as `name value` pairs."""
    return "  ".join(f"{field.name} {_value(field, value)}" for field, value in message.ListFields())


def render_instrument(instrument: instrument_pb2.Instrument) -> list[str]:
    """Every field of the instrument, in the contract's order, as `name  value` lines ("-" when not set).

    Repeated fields (the change history) give one line per entry, `changes[i]`,
    with the values that entry sets; `changes  none` when there are none.
    """
    message: Message = instrument
    rows: list[tuple[str, str]] = []
    for field in instrument.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        if field.is_repeated:
            entries = [_set_fields(v) if field.type == FieldDescriptor.TYPE_MESSAGE else _value(field, v)
                       for v in value]
            rows.extend((f"{field.name}[{i}]", entry) for i, entry in enumerate(entries))
            if not entries:
                rows.append((field.name, "none"))
        elif field.has_presence and not message.HasField(field.name):
            rows.append((field.name, "-"))
        else:
            rows.append((field.name, _value(field, value)))
    width = max(len(label) for label, _ in rows)
    return [f"{label.ljust(width)}  {value}".rstrip() for label, value in rows]


def render_json(instrument: instrument_pb2.Instrument) -> str:
    """The instrument as one line of JSON: proto field names, every field (unset optional ones left out)."""
    document = json_format.MessageToDict(instrument, preserving_proto_field_name=True,
                                         always_print_fields_with_no_presence=True)
    return json.dumps(document, ensure_ascii=False)


def render_sync(reply: pb.SyncInstrumentsResponse) -> str:
    """One line with the counts of a sync; instruments skipped as unreadable are named only when there are."""
    line = (f"synced {reply.synced} instrument(s) from {reply.venue}: {reply.added} added, {reply.updated} updated, "
            f"{reply.deactivated} deactivated")
    if reply.skipped:
        line += f"; {reply.skipped} skipped as unreadable (left out, so inactive: see the service's log)"
    return line


# --- running ------------------------------------------------------------------------------------------------------


async def list_instruments(stub: pb_grpc.ReferenceDataServiceStub, venue: str, flt: instrument_pb2.InstrumentFilter,
                           metadata: tuple[tuple[str, str]], *, page_size: int,
                           call_timeout: float) -> list[instrument_pb2.Instrument]:
    """Every instrument matching `flt`, reading page after page until `next_page_token` is empty (PagingError for
    a server that repeats a page token or lists more than MAX_LIST_PAGES pages)."""
    async def list_page(page_token: str) -> pb.ListInstrumentsResponse:
        page: pb.ListInstrumentsResponse = await stub.ListInstruments(pb.ListInstrumentsRequest(
            venue=venue, filter=flt, page_size=page_size, page_token=page_token),
            metadata=metadata, timeout=call_timeout)
        return page

    instruments: list[instrument_pb2.Instrument] = []
    async for page in read_pages(list_page, what="instruments"):
        instruments.extend(page.instruments)
    return instruments


def _print(lines: Iterable[str], out: TextIO) -> None:
    for text in lines:
        print(text, file=out)
    out.flush()


async def _call(args: argparse.Namespace, connection: Connection, out: TextIO) -> int:
    metadata = bearer(connection.token)
    async with connection.channel() as channel:
        stub = pb_grpc.ReferenceDataServiceStub(channel)
        command = args.instruments_command
        if command == "sync":
            reply = await stub.SyncInstruments(pb.SyncInstrumentsRequest(venue=args.venue,
                                                                         symbols=[s.strip() for s in args.symbols]),
                                               metadata=metadata, timeout=args.timeout)
            _print([render_sync(reply)], out)
            return 0
        if command == "show":
            found = await stub.GetInstrument(pb.GetInstrumentRequest(venue=args.venue, symbol=args.symbol.strip()),
                                             metadata=metadata, timeout=args.timeout)
            _print([render_json(found.instrument)] if args.json else render_instrument(found.instrument), out)
            return 0
        flt = instrument_filter(args)
        instruments = await list_instruments(stub, args.venue, flt, metadata, page_size=args.page_size,
                                             call_timeout=args.timeout)
        if args.json:
            _print((render_json(i) for i in instruments), out)
        else:
            empty = ("no instruments match the filter" if flt.ListFields() else
                     f"no instruments for {args.venue} (never synced? `portico instruments sync`)")
            _print(render_instruments(instruments, empty=empty), out)
        return 0


def run(args: argparse.Namespace, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run one `portico instruments` command; the exit code (0 done, 1 call failed, 2 usage/config)."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    try:
        check_arguments(args)
        resolved = connection(args, service=SERVICE, scope=args.scope, state=StateFile(args.state_file))
    except (UsageError, ConfigError) as exc:
        print(f"{NAME}: {exc}", file=err, flush=True)
        return 2
    try:
        return asyncio.run(_call(args, resolved, out))
    except grpc.aio.AioRpcError as exc:
        print(f"{NAME} {args.instruments_command}: {describe_rpc_error(exc, resolved.target)}", file=err,
              flush=True)
        return 1
    except PagingError as exc:
        print(f"{NAME} {args.instruments_command}: {resolved.target} {exc}", file=err, flush=True)
        return 1
    except KeyboardInterrupt:
        return 130
