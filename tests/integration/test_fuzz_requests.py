"""Seeded request fuzzing of every RPC of reference data, market data, execution, account and the signer's `Sign`.

Each service runs for real, in-process, over a real simulator and OpenBao (the fixtures of `tests.support`).
Requests are built from the proto descriptors: a valid request for the RPC, with one to three fields replaced
by an edge value of the field's type (empty, 10k+ characters, NUL and control characters, malformed decimal
strings, unknown names, integer extremes, unknown enum numbers, huge repeated fields, out-of-range durations
and timestamps, garbage page tokens and well-formed page tokens holding absurd positions), and some wholly
random requests. Every answer must be a status other than INTERNAL and UNKNOWN, unary calls must answer in
time, and every server must still answer its health check afterwards.

`PORTICO_FUZZ_SEED` and `PORTICO_FUZZ_CALLS` (requests per RPC) widen a local run; the committed defaults keep
the file well under a minute.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc
import pytest
from google.protobuf import descriptor as pb_descriptor
from google.protobuf import text_format
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tests.support.account import running_account
from tests.support.execution import ExecutionStack, execution_stack, running_execution
from tests.support.openbao import OpenBaoDevServer

from portico.account.v1 import account_service_pb2, account_service_pb2_grpc
from portico.common.v1 import side_pb2
from portico.execution.v1 import execution_service_pb2, execution_service_pb2_grpc, order_pb2
from portico.marketdata.service import MarketDataApp, MarketDataSettings
from portico.marketdata.v1 import market_data_service_pb2, market_data_service_pb2_grpc
from portico.refdata.service import _query_key, filter_from_proto
from portico.refdata.v1 import reference_data_service_pb2, reference_data_service_pb2_grpc
from portico.runtime.client import bearer, open_channel
from portico.signer.v1 import signer_service_pb2, signer_service_pb2_grpc
from portico.sim.server import SimConfig, Simulator
from portico.venues.syndr import typed_data

SEED = int(os.environ.get("PORTICO_FUZZ_SEED", "20240611"))
CALLS_PER_RPC = int(os.environ.get("PORTICO_FUZZ_CALLS", "150"))
CONCURRENCY = 8
UNARY_TIMEOUT_S = 20.0  # an answer slower than this is a hang
STREAM_WAIT_S = 0.3  # a stream is read this long (its first message or its error), then cancelled
BAD_CODES = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
SYMBOL = "ETH-PERP"

FD = pb_descriptor.FieldDescriptor
if TYPE_CHECKING:
    from google._upb._message import FieldDescriptor as UpbFieldDescriptor

    # What a message's DESCRIPTOR.fields hold, as types-protobuf declares it (pure-Python or upb descriptors).
    AnyFieldDescriptor: TypeAlias = pb_descriptor.FieldDescriptor | UpbFieldDescriptor

# Strings no service should choke on, of every kind the task names.
EDGE_STRINGS: tuple[str, ...] = (
    "", " ", "\t", "\n", "x" * 10_001, "é" * 5_001, "\x00", "a\x00b", "\x01\x02\x1f\x7f", "\u0085\u2028",
    "\ufeff", "\u202e", "💥", "%s%n%x", "' OR 1=1 --", "../../etc/passwd", "${jndi:x}", "null", "{}", "[]",
)
DECIMAL_EDGES: tuple[str, ...] = (
    "NaN", "-NaN", "sNaN", "nan", "Infinity", "-Infinity", "inf", "-0", "0", "0.0", "-1", "+1", "1e999999",
    "1e-999999", "-1e999999", "0x10", " 1", "1 ", "1,000", "٣", "\uff11", "1_000", "1e", ".", "-", "1.", ".5",
    "1e18", "1E+2", "9" * 100, "0." + "0" * 100 + "1", "1" + "0" * 79, "1" * 5000, "0.1", "1", "2", "50",
    "1e-3", "3000.5",
)
NAME_EDGES: tuple[str, ...] = (
    "unknown", "SYNDR", "syndr ", " syndr", "syndr\x00", "0x" + "11" * 20, "0x" + "zz" * 20, "0x",
    "0X" + "AB" * 20, "0x" + "ab" * 21, "ETH-PERP ", "eth-perp", "ETH-PERP\x00", "ETH-1JAN00-100-C",
    "BTC-PERP", "ETH-29DEC99-3000-P", "X" * 300,
)
TOKEN_EDGES: tuple[str, ...] = (
    "AAAA", "////", "====", "!!!!", "eyJvIjoxfQ==", "eyJvIjotMX0=", "e30=", "bnVsbA==", "W10=",
    base64.urlsafe_b64encode(b"[" * 5000).decode(), base64.urlsafe_b64encode(b'{"o": 1e999}').decode(),
    base64.urlsafe_b64encode(b'{"a": 1, "q": 2}').decode(), "A" * 20_000,
)
DECIMAL_FIELDS = frozenset({"amount", "price", "leverage"})
NAME_FIELDS = frozenset({"venue", "account", "symbol", "symbols", "currency", "order_id", "client_order_id", "key_id",
                         "api_key", "name", "label", "base_currencies", "quote_currencies"})
INT32 = (0, 1, -1, 2**31 - 1, -(2**31), 1000, 1001, 5, 10_000)
INT64 = (0, 1, -1, 2**63 - 1, -(2**63), 2**53 + 1)
UINT32 = (0, 1, 2**32 - 1)
UINT64 = (0, 1, 2**64 - 1, 2**63)
ENUM_EXTRA = (0, -1, 99, 2**31 - 1, -(2**31))
DURATION_SECONDS = (0, 1, -1, 59, 3600, 315_576_000_000, -315_576_000_000, 315_576_000_001, 2**63 - 1, -(2**63))
TIMESTAMP_SECONDS = (0, -1, 1_700_000_000, -62_135_596_800, -62_135_596_801, 253_402_300_799, 253_402_300_800,
                     2**63 - 1, -(2**63))
NANOS = (0, 1, -1, 999_999_999, 1_000_000_000, 2**31 - 1, -(2**31))
# Integers a page token may carry that no service ever issued (offsets, times).
TOKEN_INTS: tuple[Any, ...] = (-1, 0, 1, 2**31, 2**63 - 1, 2**63, 2**64, 10**30, 10**400, 1.5, True, None, "1", [])
JSON_EDGES: tuple[Any, ...] = (
    None, True, False, "", -1, 0, 1, 2**255, 2**256 - 1, 2**256, -(2**255) - 1, 10**100, "1e999999", "0x",
    "0x" + "f" * 65, "0x" + "f" * 64, "0xzz", " 1", "1_000", "٣", "-0", "NaN", 1.5, 1e308, float("inf"),
    float("nan"), [], {}, [1, 2], {"a": 1}, "x" * 10_001, "\x00",
)
DEEP_MARK = "<deeply nested>"
SOLIDITY_TYPES = ("uint0", "uint7", "uint257", "uint256", "int256", "int8", "bytes0", "bytes33", "bytes32", "bytes",
                  "string", "bool", "address", "uint256[]", "uint256[2]", "uint256[0]", "uint256[99999999999]",
                  "Order", "Order[]", "Nope", "", "uint256[][][]", "EIP712Domain", "\x00")


PB_MODULES: dict[str, Any] = {
    "ReferenceDataService": reference_data_service_pb2,
    "MarketDataService": market_data_service_pb2,
    "ExecutionService": execution_service_pb2,
    "AccountService": account_service_pb2,
    "SignerService": signer_service_pb2,
}
STATS: dict[tuple[str, str, str], int] = {}


@dataclass
class Failure:
    rpc: str
    request: str
    code: str
    details: str


@dataclass
class Service:
    name: str
    target: str
    stub_class: Any
    descriptor: pb_descriptor.ServiceDescriptor
    metadata: tuple[tuple[str, str], ...]
    valid: Callable[[str], dict[str, Any]]  # method name -> a valid request's fields
    skip: frozenset[str] = frozenset()
    calls: dict[str, int] = field(default_factory=dict)  # per-method call count override


@dataclass
class Suite:
    stack: ExecutionStack
    services: dict[str, Service]
    order_ids: list[str]


def _trim(value: object, limit: int = 160) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"...(+{len(text) - limit})"


def describe(request: Message) -> str:
    fields = {f.name: _trim(text_format.MessageToString(v, as_one_line=True) if isinstance(v, Message) else v, 80)
              for f, v in request.ListFields()}
    return f"{type(request).__name__}({', '.join(f'{k}={v}' for k, v in fields.items())})"


def scalar_edge(rng: random.Random, fd: AnyFieldDescriptor) -> Any:
    t = fd.type
    if t == FD.TYPE_STRING:
        if fd.name in DECIMAL_FIELDS and rng.random() < 0.7:
            return rng.choice(DECIMAL_EDGES)
        if fd.name in NAME_FIELDS and rng.random() < 0.5:
            return rng.choice(NAME_EDGES)
        pool = rng.choice((EDGE_STRINGS, DECIMAL_EDGES, NAME_EDGES, TOKEN_EDGES))
        return rng.choice(pool)
    if t == FD.TYPE_BYTES:
        return rng.choice((b"", b"\x00" * 31, b"\x01" * 32, b"\xff" * 33, os.urandom(32), b"\x00" * 100_000))
    if t in (FD.TYPE_INT32, FD.TYPE_SINT32, FD.TYPE_SFIXED32):
        return rng.choice(INT32)
    if t in (FD.TYPE_INT64, FD.TYPE_SINT64, FD.TYPE_SFIXED64):
        return rng.choice(INT64)
    if t in (FD.TYPE_UINT32, FD.TYPE_FIXED32):
        return rng.choice(UINT32)
    if t in (FD.TYPE_UINT64, FD.TYPE_FIXED64):
        return rng.choice(UINT64)
    if t == FD.TYPE_BOOL:
        return rng.random() < 0.5
    if t == FD.TYPE_ENUM:
        assert fd.enum_type is not None  # set on every enum field
        known = [v.number for v in fd.enum_type.values]
        return rng.choice(known + list(ENUM_EXTRA))
    if t in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT):
        return rng.choice((0.0, -1.0, float("nan"), float("inf"), 1e308))
    raise AssertionError(f"no edge values for {fd.full_name}")


def fill_message(rng: random.Random, msg: Message) -> None:
    """Edge values into some fields of a nested message (Duration, Timestamp, InstrumentFilter)."""
    name = msg.DESCRIPTOR.full_name
    if name in ("google.protobuf.Duration", "google.protobuf.Timestamp"):
        seconds = DURATION_SECONDS if name.endswith("Duration") else TIMESTAMP_SECONDS
        msg.seconds = rng.choice(seconds)  # type: ignore[attr-defined]
        msg.nanos = rng.choice(NANOS)  # type: ignore[attr-defined]
        return
    for fd in msg.DESCRIPTOR.fields:
        if rng.random() < 0.5:
            set_edge(rng, msg, fd)


def set_edge(rng: random.Random, msg: Message, fd: AnyFieldDescriptor) -> None:
    if fd.name == "page_token" and rng.random() < 0.3:
        setattr(msg, fd.name, rng.choice(TOKEN_EDGES))
        return
    if fd.name == "typed_data_json" and rng.random() < 0.7:
        return  # mutated structurally by the caller, from the valid payload
    if fd.is_repeated:
        target = getattr(msg, fd.name)
        del target[:]
        roll = rng.random()
        if fd.type == FD.TYPE_MESSAGE:
            for _ in range(rng.choice((1, 3))):
                fill_message(rng, target.add())
        elif roll < 0.15:
            pass  # empty
        elif roll < 0.35:  # huge
            one = scalar_edge(rng, fd) if fd.type != FD.TYPE_STRING else rng.choice(("ETH-PERP", "A", "\x00", ""))
            target.extend([one] * rng.choice((1_000, 1_001, 20_000)))
        else:
            target.extend(scalar_edge(rng, fd) for _ in range(rng.randint(1, 5)))
        return
    if fd.type == FD.TYPE_MESSAGE:
        fill_message(rng, getattr(msg, fd.name))
        return
    setattr(msg, fd.name, scalar_edge(rng, fd))


def mutate_typed_data(rng: random.Random, valid_json: str) -> str:
    """The valid order typed data with one to three parts replaced by edge values."""
    if rng.random() < 0.05:
        return rng.choice(("[" * 100_000, "{" * 3000, '{"a":' * 3000, "1" * 5000, "[]", "null", '"x"',
                           '{"types": 1}', "{}", "NaN", '{"primaryType": "Order"}'))
    data = json.loads(valid_json)
    for _ in range(rng.randint(1, 3)):
        with contextlib.suppress(TypeError, KeyError, AttributeError, IndexError):  # an earlier step broke it
            _mutate_once(rng, data)
    text = json.dumps(data)
    depth = rng.choice((10, 1200))
    return text.replace(json.dumps(DEEP_MARK), '{"nested": ' * depth + "{}" + "}" * depth)


def _mutate_once(rng: random.Random, data: dict[str, Any]) -> None:
    roll = rng.random()
    if roll < 0.35:
        data["message"][rng.choice([*data["message"], "extra"])] = rng.choice(JSON_EDGES)
    elif roll < 0.5:
        data["domain"][rng.choice([*data["domain"], "salt"])] = rng.choice(JSON_EDGES)
    elif roll < 0.7:
        entries = data["types"][rng.choice(list(data["types"]))]
        if entries:
            entry = rng.choice(entries)
            entry[rng.choice(("type", "type", "name"))] = rng.choice(SOLIDITY_TYPES + JSON_EDGES[:6])
    elif roll < 0.8:
        data["primaryType"] = rng.choice(("EIP712Domain", "", "Nope", "SignKey", "RegisterSigningKey", None, 1))
    elif roll < 0.9:
        data[rng.choice(("types", "domain", "message", "primaryType"))] = rng.choice(JSON_EDGES)
    else:  # a recursive or deeply nested type
        data["types"]["Order"].append({"name": "nested", "type": rng.choice(("Order", "Order[]", "Deep"))})
        data["message"]["nested"] = DEEP_MARK
        data["types"]["Deep"] = [{"name": "nested", "type": "Deep"}]


def forged_token(rng: random.Random, request: Message) -> str | None:
    """A page token in the format the service issues for this very query (so it passes the query check), holding
    positions no service ever issued."""
    f = {fd.name: getattr(request, fd.name) for fd in request.DESCRIPTOR.fields if fd.type != FD.TYPE_MESSAGE}
    optional = {fd.name: (getattr(request, fd.name) if request.HasField(fd.name) else None)
                for fd in request.DESCRIPTOR.fields if fd.has_presence and fd.type == FD.TYPE_STRING}
    kind = type(request).__name__
    if kind == "ListInstrumentsRequest":
        after = rng.choice(("", "\x00", "x" * 10_000, "ETH-PERP", "\U0010ffff", 1, None))
        try:
            flt = filter_from_proto(request.filter)  # type: ignore[attr-defined]
        except Exception:  # a filter the service refuses: no token of it exists
            return None
        return _b64({"a": after, "q": _query_key(request.venue, flt)})  # type: ignore[attr-defined]
    queries: dict[str, tuple[object, ...]] = {
        "ListPositionsRequest": ("positions", f.get("venue"), f.get("account")),
        "ListDepositsRequest": ("deposits", f.get("venue"), f.get("account")),
        "ListApiKeysRequest": ("api-keys", f.get("venue"), f.get("account")),
        "ListOpenOrdersRequest": ("open", f.get("venue"), f.get("account"), optional.get("symbol")),
        "ListOrderHistoryRequest": ("history", f.get("venue"), f.get("account"), optional.get("symbol")),
        "ListFillsRequest": ("fills", f.get("venue"), f.get("account"), optional.get("symbol"),
                             optional.get("order_id")),
    }
    query = queries.get(kind)
    if query is None:
        return None
    data: dict[str, Any] = {"o": rng.choice(TOKEN_INTS), "q": hashlib.sha256(repr(query).encode()).hexdigest()[:12]}
    if rng.random() < 0.6:
        data["t"] = rng.choice(TOKEN_INTS)
    if rng.random() < 0.4:
        data["k"] = rng.choice(("", ":", "1:x", "9" * 20 + ":x", "9" * 21 + ":x", "-1:x", "٣:x", "\x00", 5))
    return _b64(data)


def _b64(data: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode()


def build_request(rng: random.Random, service: Service, method: pb_descriptor.MethodDescriptor,
                  request_class: type[Message]) -> Message:
    valid = service.valid(method.name)
    request = request_class(**valid)
    fields: list[AnyFieldDescriptor] = list(request_class.DESCRIPTOR.fields)
    if rng.random() < 0.1:  # wholly random
        request = request_class()
        chosen = [fd for fd in fields if rng.random() < 0.6]
    else:
        chosen = rng.sample(fields, min(len(fields), rng.choice((1, 1, 2, 3))))
    for fd in chosen:
        set_edge(rng, request, fd)
        if fd.name == "typed_data_json" and request.typed_data_json == valid.get("typed_data_json"):  # type: ignore[attr-defined]
            request.typed_data_json = mutate_typed_data(rng, valid["typed_data_json"])  # type: ignore[attr-defined]
    if "page_token" in request_class.DESCRIPTOR.fields_by_name and rng.random() < 0.3:
        token = forged_token(rng, request)
        if token is not None:
            request.page_token = token  # type: ignore[attr-defined]
    return request


async def call_once(channel: grpc.aio.Channel, service: Service, method: pb_descriptor.MethodDescriptor,
                    request: Message, response_class: type[Message]) -> tuple[grpc.StatusCode, str]:
    path = f"/{service.descriptor.full_name}/{method.name}"
    serialize = type(request).SerializeToString
    if method.server_streaming:
        stream = channel.unary_stream(path, request_serializer=serialize,
                                      response_deserializer=response_class.FromString)(
            request, metadata=service.metadata)
        try:
            async with asyncio.timeout(STREAM_WAIT_S):
                async for _ in stream:
                    break
        except TimeoutError:
            pass  # nothing (yet): a stream that waits for data is fine
        except grpc.aio.AioRpcError as exc:
            return exc.code(), exc.details() or ""
        finally:
            stream.cancel()
        return grpc.StatusCode.OK, ""
    unary = channel.unary_unary(path, request_serializer=serialize, response_deserializer=response_class.FromString)
    try:
        await unary(request, metadata=service.metadata, timeout=UNARY_TIMEOUT_S)
    except grpc.aio.AioRpcError as exc:
        code = exc.code()
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return code, f"no answer within {UNARY_TIMEOUT_S} s (hang)"
        return code, exc.details() or ""
    return grpc.StatusCode.OK, ""


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _nested(depth: int, number: int = 1) -> bytes:
    """An unknown length-delimited field holding itself `depth` deep."""
    body = b""
    for _ in range(depth):
        body = _varint(number << 3 | 2) + _varint(len(body)) + body
    return body


def raw_payloads(rng: random.Random, valid: bytes) -> list[bytes]:
    """Request bytes that are not (quite) the RPC's message: gRPC's own decoder sees them first."""
    return [
        os.urandom(rng.choice((1, 7, 64, 4096))),
        valid[: max(len(valid) - 1, 0)],  # truncated
        valid + b"\x0a",  # a field tag without its length
        b"\x0a\x02\xff\xfe",  # field 1 (a string everywhere here) that is not UTF-8
        b"\x12\x03\xc3\x28a",
        b"\x0a" + _varint(2**40) + b"x",  # a length far past the end
        b"\x08" + b"\xff" * 10 + b"\x01",  # an over-long varint
        _nested(rng.choice((50, 101, 5000)), 999),  # unknown fields nested past protobuf's recursion limit
        _varint(999 << 3 | 3) * 2000,  # unterminated groups
        b"".join(_varint(n << 3 | 0) + b"\x01" for n in range(100, 20_100)),  # 20k unknown fields
        b"\x1a\x05" + b"\xed\xa0\x80ab",  # a surrogate's UTF-8 in field 3
    ]


async def call_raw(channel: grpc.aio.Channel, service: Service, method: pb_descriptor.MethodDescriptor,
                   payload: bytes) -> tuple[grpc.StatusCode, str]:
    path = f"/{service.descriptor.full_name}/{method.name}"
    try:
        if method.server_streaming:
            stream = channel.unary_stream(path)(payload, metadata=service.metadata)
            try:
                async with asyncio.timeout(STREAM_WAIT_S):
                    async for _ in stream:
                        break
            except TimeoutError:
                pass
            finally:
                stream.cancel()
        else:
            await channel.unary_unary(path)(payload, metadata=service.metadata, timeout=UNARY_TIMEOUT_S)
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


async def healthy(target: str) -> bool:
    async with open_channel(target) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="liveness"), timeout=5)
        except grpc.aio.AioRpcError:
            return False
    serving: bool = reply.status == health_pb2.HealthCheckResponse.SERVING
    return serving


async def fuzz_service(service: Service, seed: int, calls_per_rpc: int) -> list[Failure]:
    failures: list[Failure] = []
    pool = PB_MODULES[service.descriptor.name]
    semaphore = asyncio.Semaphore(CONCURRENCY)
    async with open_channel(service.target) as channel:
        for method in service.descriptor.methods:
            if method.name in service.skip:
                continue
            rng = random.Random(f"{seed}:{service.name}:{method.name}")
            request_class = getattr(pool, method.input_type.name)
            response_class = getattr(pool, method.output_type.name)
            requests = [build_request(rng, service, method, request_class)
                        for _ in range(service.calls.get(method.name, calls_per_rpc))]

            async def one(request: Message, method: pb_descriptor.MethodDescriptor = method,
                          response_class: type[Message] = response_class) -> None:
                async with semaphore:
                    code, details = await call_once(channel, service, method, request, response_class)
                STATS[(service.name, method.name, code.name)] = STATS.get((service.name, method.name, code.name), 0) + 1
                if code in BAD_CODES or (code == grpc.StatusCode.DEADLINE_EXCEEDED and not method.server_streaming):
                    failures.append(Failure(method.name, describe(request), code.name, _trim(details, 300)))

            await asyncio.gather(*(one(r) for r in requests))
            valid = request_class(**service.valid(method.name)).SerializeToString()
            for payload in raw_payloads(rng, valid):
                code, details = await call_raw(channel, service, method, payload)
                key = (service.name, method.name + " (raw)", code.name)
                STATS[key] = STATS.get(key, 0) + 1
                if code in BAD_CODES:
                    failures.append(Failure(method.name, f"raw bytes {_trim(payload, 60)}", code.name,
                                            _trim(details, 300)))
            if not await healthy(service.target):
                failures.append(Failure(method.name, "(after the batch)", "HEALTH", "no SERVING liveness answer"))
                return failures
    return failures


# --- the services ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimConfig(port=0, seed=29, book_changes_per_second=5, market_maker_instruments=(SYMBOL,),
                                   rate_limit_capacity=1_000_000, rate_limit_refill_per_s=1_000_000)) as simulator:
        yield simulator


def far_bid(sim: Simulator) -> str:
    bid = sim.engine.book(SYMBOL, 1).bids[0][0]
    tick = sim.engine.instrument(SYMBOL).tick_size
    return str((bid * Decimal("0.8")) // tick * tick)


@contextlib.asynccontextmanager
async def running_marketdata(stack: ExecutionStack) -> AsyncIterator[str]:
    env = {"PORTICO_LISTEN_ADDR": "127.0.0.1:0", "PORTICO_AUTH_TOKENS": stack.auth_config,
           "PORTICO_SYNDR_HTTP_URL": stack.sim.http_url, "PORTICO_SYNDR_WS_URL": stack.sim.ws_url,
           "PORTICO_MARKETDATA_REFDATA_ADDR": stack.refdata_target, "PORTICO_SERVICE_TOKEN": stack.service_token,
           "PORTICO_SHUTDOWN_GRACE_SECONDS": "0.5"}
    app = MarketDataApp(MarketDataSettings.from_env(env), env)
    await app.start()
    try:
        yield f"127.0.0.1:{app.port}"
    finally:
        await app.aclose(grace_s=0.2)


def valid_order_json(stack: ExecutionStack) -> str:
    return json.dumps(typed_data.order_typed_data(
        verifying_contract="0x" + "ab" * 20, account=stack.account.address, instrument_id=3, is_buy=True,
        order_type=0, time_in_force=0, post_only=False, reduce_only=False, price=Decimal("3000.5"),
        amount=Decimal("0.1"), salt=123456789, expiration=1_900_000_000_000, timestamp=1_800_000_000_000))


@pytest.fixture(scope="module")
async def suite(sim: Simulator, openbao: OpenBaoDevServer, tmp_path_factory: pytest.TempPathFactory
                ) -> AsyncIterator[Suite]:
    data_dir = tmp_path_factory.mktemp("fuzz")
    async with execution_stack(sim, openbao, data_dir) as stack, running_execution(stack) as execution, \
            running_account(stack) as account, running_marketdata(stack) as marketdata_target:
        admin = bearer(stack.tokens["admin"])
        order_ids: list[str] = []
        async with open_channel(execution.target) as channel:  # orders to page through, amend and cancel
            stub = execution_service_pb2_grpc.ExecutionServiceStub(channel)
            for i in range(6):
                reply = await stub.PlaceOrder(execution_service_pb2.PlaceOrderRequest(
                    venue="syndr", account=stack.account.address, symbol=SYMBOL, side=side_pb2.SIDE_BUY,
                    type=order_pb2.ORDER_TYPE_LIMIT, price=far_bid(sim), amount="0.1",
                    client_order_id=f"fuzz-setup-{i}"), metadata=admin)
                order_ids.append(reply.order.order_id)
        order_ids, cancellable = order_ids[:3], order_ids[3:]
        address = stack.account.address
        counter = iter(range(10**9))
        typed_json = valid_order_json(stack)
        price = far_bid(sim)

        def refdata_valid(method: str) -> dict[str, Any]:
            valid: dict[str, dict[str, Any]] = {"SyncInstruments": {"venue": "syndr", "symbols": [SYMBOL]},
                                                "GetInstrument": {"venue": "syndr", "symbol": SYMBOL},
                                                "ListInstruments": {"venue": "syndr", "page_size": 2},
                                                "WatchInstruments": {"venue": "syndr"}}
            return valid[method]

        def marketdata_valid(method: str) -> dict[str, Any]:
            base: dict[str, Any] = {"venue": "syndr", "symbol": SYMBOL}
            if method in ("GetOrderBook", "StreamOrderBook"):
                base["depth"] = 5
            if method in ("StreamTickers", "StreamTrades"):
                base = {"venue": "syndr", "symbols": [SYMBOL, "BTC-PERP"]}
            if method == "GetCandles":
                now = int(time.time())
                base.update(resolution=1, start_time=Timestamp(seconds=now - 3600), end_time=Timestamp(seconds=now))
            return base

        def execution_valid(method: str) -> dict[str, Any]:
            base: dict[str, Any] = {"venue": "syndr", "account": address}
            n = next(counter)
            if method == "PlaceOrder":
                base.update(symbol=SYMBOL, side=side_pb2.SIDE_BUY, type=order_pb2.ORDER_TYPE_LIMIT, amount="0.1",
                            price=price, time_in_force=order_pb2.TIME_IN_FORCE_GOOD_TIL_CANCELLED,
                            client_order_id=f"fuzz-{n}", label="fuzz")
            elif method in ("AmendOrder", "GetOrder"):
                base["order_id"] = order_ids[n % len(order_ids)]
                if method == "AmendOrder":
                    base.update(amount="0.2", price=price)
            elif method == "CancelOrder":
                base["order_id"] = cancellable[n % len(cancellable)]
            elif method in ("ListOpenOrders", "ListOrderHistory", "ListFills"):
                base.update(page_size=1)
            elif method == "ArmDeadman":
                base["ttl"] = Duration()  # zero: disarmed (an armed deadman would cancel the setup orders)
            elif method == "CancelAllOrders":
                base["symbol"] = "BTC-PERP"  # keeps the setup orders to page through
            return base

        def account_valid(method: str) -> dict[str, Any]:
            base: dict[str, Any] = {"venue": "syndr", "account": address}
            if method == "ListCollaterals":
                return {"venue": "syndr"}
            if method in ("ListPositions", "ListDeposits", "ListApiKeys"):
                base["page_size"] = 1
            elif method == "GetPortfolioMargin":
                base["currency"] = "USDC"
            elif method == "SetLeverage":
                base.update(symbol=SYMBOL, leverage="2")
            elif method == "CreateApiKey":
                base.update(name="fuzz", scope=1)
            elif method == "DeactivateApiKey":
                base["api_key"] = "no-such-key"
            elif method == "RegisterSigningKey":
                base["account"] = "0x" + "22" * 20  # not held: the fuzzer rotates no key of the stack's account
            return base

        def signer_valid(method: str) -> dict[str, Any]:
            return {"key_id": stack.signing_key_id, "typed_data_json": typed_json}

        def service(name: str, target: str, module: Any, stub_name: str,
                    valid: Callable[[str], dict[str, Any]], **kwargs: Any) -> Service:
            descriptor = module.DESCRIPTOR.services_by_name[stub_name]
            grpc_module = {reference_data_service_pb2: reference_data_service_pb2_grpc,
                           market_data_service_pb2: market_data_service_pb2_grpc,
                           execution_service_pb2: execution_service_pb2_grpc,
                           account_service_pb2: account_service_pb2_grpc,
                           signer_service_pb2: signer_service_pb2_grpc}[module]
            return Service(name, target, getattr(grpc_module, f"{stub_name}Stub"), descriptor, admin, valid,
                           **kwargs)

        services = {
            "refdata": service("refdata", stack.refdata_target, reference_data_service_pb2, "ReferenceDataService",
                               refdata_valid),
            "marketdata": service("marketdata", marketdata_target, market_data_service_pb2, "MarketDataService",
                                  marketdata_valid),
            "execution": service("execution", execution.target, execution_service_pb2, "ExecutionService",
                                 execution_valid),
            "account": service("account", account.target, account_service_pb2, "AccountService", account_valid),
            "signer": service("signer", stack.signer.target, signer_service_pb2, "SignerService", signer_valid,
                              calls={"Sign": CALLS_PER_RPC * 4}),
        }
        yield Suite(stack, services, order_ids)


@pytest.mark.parametrize("name", ["refdata", "marketdata", "execution", "account", "signer"])
async def test_no_request_is_answered_internal_or_unknown(suite: Suite, name: str) -> None:
    service = suite.services[name]
    failures = await fuzz_service(service, SEED, CALLS_PER_RPC)
    if os.environ.get("PORTICO_FUZZ_STATS"):
        for key, count in sorted(STATS.items()):
            if key[0] == name:
                print(*key, count)
    assert await healthy(service.target), f"{name} no longer answers its health check"
    assert not failures, f"{len(failures)} bad answer(s) from {name} (seed {SEED}):\n" + "\n".join(
        f"  {f.rpc}: {f.code} {f.details!r}\n      for {f.request}" for f in failures[:40])



async def test_every_base_request_is_valid(suite: Suite) -> None:
    """The fuzzer mutates valid requests: were they not, it would only ever test the first check."""
    for service in suite.services.values():
        async with open_channel(service.target) as channel:
            for method in service.descriptor.methods:
                pool = PB_MODULES[service.descriptor.name]
                request = getattr(pool, method.input_type.name)(**service.valid(method.name))
                code, details = await call_once(channel, service, method, request,
                                                getattr(pool, method.output_type.name))
                assert code not in BAD_CODES | {grpc.StatusCode.INVALID_ARGUMENT}, (method.name, code, details)
