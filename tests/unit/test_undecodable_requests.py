"""The interceptor's request decoding: what it costs on a request that does not decode, and for whom.

The wire walker that names a string field that is not UTF-8 runs in Python over the request's bytes. gRPC calls
a unary method's deserializer before any interceptor code, for anyone: the walk must wait until the caller is
authorized, and its work is bounded, since the bytes can be as large as the server's message limit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from portico.refdata.v1 import reference_data_service_pb2 as refdata_pb
from portico.runtime import interceptors
from portico.runtime.errors import InvalidArgument, MalformedRequest

LIST = "/portico.refdata.v1.ReferenceDataService/ListInstruments"
BIG = 4 * 1024 * 1024 - 1  # the servers' default message limit


def _deserializer(streaming: bool = False) -> Callable[[bytes], Any]:
    decode = interceptors._guarded(refdata_pb.ListInstrumentsRequest.FromString, LIST, streaming)
    assert decode is not None
    return decode


def test_a_unary_request_that_does_not_decode_is_not_walked_before_the_caller_is_authorized(
        monkeypatch: pytest.MonkeyPatch) -> None:
    walks: list[bytes] = []
    real = interceptors._bad_utf8_field

    def counting(descriptor: Any, data: Any, depth: int, *args: Any) -> str | None:
        if depth == 0:
            walks.append(data)
        return real(descriptor, data, depth, *args)

    monkeypatch.setattr(interceptors, "_bad_utf8_field", counting)
    request = _deserializer()(b"\x0a\x02\xff\xfe")  # venue: not UTF-8
    assert request.__class__ is interceptors._Undecodable
    assert walks == []  # gRPC called the deserializer; nobody is authenticated yet
    error = request.error  # what the wrapped method raises once the caller may call the method
    assert isinstance(error, InvalidArgument) and error.field == "venue"
    assert len(walks) == 1


@pytest.mark.parametrize(("body", "what"), [
    (b"\x78\x01" * (BIG // 2) + b"\xff", "unknown varint fields"),
    (b"\x22\x00" * (BIG // 2) + b"\xff", "empty page tokens"),
    (b"\x12\x00" * (BIG // 2) + b"\xff", "empty filter messages"),
    (b"\x12\x02\x12\x00" * (BIG // 4) + b"\xff", "filters of one empty string"),
])
def test_naming_the_bad_field_of_a_huge_request_is_bounded(body: bytes, what: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A 4 MB request of millions of tiny fields and a broken end: upb refuses it in milliseconds; the walk over
    it took over a second of the event loop (every call of the server stalled), for each such request. The walk
    is bounded in work, counted here as the varints it reads (not in seconds, which a loaded machine stretches):
    at most two per field of its budget, against millions for the whole request."""
    reads = 0
    real = interceptors._varint

    def counting(data: memoryview, pos: int) -> tuple[int, int]:
        nonlocal reads
        reads += 1
        return real(data, pos)

    monkeypatch.setattr(interceptors, "_varint", counting)
    for streaming in (False, True):
        reads = 0
        try:
            error = _deserializer(streaming)(body).error
        except MalformedRequest as raised:
            error = raised
        assert isinstance(error, MalformedRequest), what
        # The budget is 10,000 fields (a few milliseconds of Python); the request holds about two million.
        assert reads <= 20_002, f"{what}: {reads} varints read to refuse one request"


def test_a_bad_string_early_in_a_huge_request_is_still_named() -> None:
    body = b"\x0a\x05syndr" + b"\x12\x04\x12\x02\xc3\x28" + b"\x78\x01" * (BIG // 2 - 8)
    error = _deserializer()(body).error
    assert isinstance(error, InvalidArgument) and error.field == "filter.quote_currencies[0]"


def test_valid_requests_decode_as_before() -> None:
    decode = _deserializer()
    assert decode(b"") == refdata_pb.ListInstrumentsRequest()
    with_unknown = refdata_pb.ListInstrumentsRequest(venue="syndr").SerializeToString() + b"\xf8\x07\x01"
    assert decode(with_unknown).venue == "syndr"
