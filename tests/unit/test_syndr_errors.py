"""The one table from venue errors to gRPC statuses: every venue code has its status, with the code in ErrorInfo.

A code added to `ErrorCode` fails the first test until its status is decided here.
"""

from __future__ import annotations

import grpc
import pytest

from portico.venues.syndr.constants import ErrorCode
from portico.venues.syndr.errors import (
    SyndrConnectionError,
    SyndrHttpError,
    SyndrProtocolError,
    SyndrRateLimited,
    SyndrTimeout,
    SyndrTransportError,
    outcome_unknown,
    rpc_error_from_object,
    to_portico_error,
)

Code = grpc.StatusCode
EXPECTED: dict[ErrorCode, grpc.StatusCode] = {
    # Requests the venue could not take as sent: nothing was done.
    ErrorCode.PARSE_ERROR: Code.INVALID_ARGUMENT,
    ErrorCode.INVALID_REQUEST: Code.INVALID_ARGUMENT,
    ErrorCode.METHOD_NOT_FOUND: Code.INVALID_ARGUMENT,
    ErrorCode.INVALID_PARAMS: Code.INVALID_ARGUMENT,
    # The venue's own failure: retry (after a write, its outcome is unknown).
    ErrorCode.INTERNAL_ERROR: Code.UNAVAILABLE,
    # Portico's venue credentials refused: for operators to fix.
    ErrorCode.UNAUTHORIZED: Code.PERMISSION_DENIED,
    ErrorCode.FORBIDDEN: Code.PERMISSION_DENIED,
    ErrorCode.TOO_MANY_REQUESTS: Code.RESOURCE_EXHAUSTED,
    ErrorCode.INSTRUMENT_NOT_FOUND: Code.NOT_FOUND,
    ErrorCode.ORDER_NOT_FOUND: Code.NOT_FOUND,
    ErrorCode.API_KEY_NOT_FOUND: Code.NOT_FOUND,
    # Rejections.
    ErrorCode.INSTRUMENT_INACTIVE: Code.FAILED_PRECONDITION,
    ErrorCode.NOT_ENOUGH_FUNDS: Code.FAILED_PRECONDITION,
    ErrorCode.PRICE_NOT_ON_TICK: Code.FAILED_PRECONDITION,
    ErrorCode.AMOUNT_NOT_ON_INCREMENT: Code.FAILED_PRECONDITION,
    ErrorCode.AMOUNT_TOO_SMALL: Code.FAILED_PRECONDITION,
    ErrorCode.POST_ONLY_WOULD_TAKE: Code.FAILED_PRECONDITION,
    ErrorCode.REDUCE_ONLY_WOULD_INCREASE: Code.FAILED_PRECONDITION,
    ErrorCode.NO_LIQUIDITY: Code.FAILED_PRECONDITION,
    ErrorCode.ORDER_EXPIRED: Code.FAILED_PRECONDITION,
    ErrorCode.LEVERAGE_TOO_HIGH: Code.FAILED_PRECONDITION,
    ErrorCode.INVALID_SIGNATURE: Code.FAILED_PRECONDITION,
    ErrorCode.SALT_REUSED: Code.FAILED_PRECONDITION,
    ErrorCode.SIGNING_KEY_NOT_REGISTERED: Code.FAILED_PRECONDITION,
    ErrorCode.NONCE_MISMATCH: Code.FAILED_PRECONDITION,
    ErrorCode.SIGNING_KEY_EXPIRED: Code.FAILED_PRECONDITION,
}


def test_every_venue_code_has_a_decided_status() -> None:
    assert set(EXPECTED) == set(ErrorCode)


@pytest.mark.parametrize("code", list(ErrorCode), ids=lambda c: c.name)
def test_venue_code_maps_to_its_status_with_the_code_in_error_info(code: ErrorCode) -> None:
    error = rpc_error_from_object({"code": int(code), "message": "venue says no"}, method="private/buy")
    status = to_portico_error(error)
    assert status.code == EXPECTED[code]
    assert status.reason == f"VENUE_{code.name}"
    assert status.metadata["venue_code"] == str(int(code)) and status.metadata["venue_message"] == "venue says no"
    assert outcome_unknown(error) is (code == ErrorCode.INTERNAL_ERROR)


@pytest.mark.parametrize(("code", "expected"), [(20001, Code.FAILED_PRECONDITION), (-32000, Code.INVALID_ARGUMENT)])
def test_codes_the_table_does_not_know(code: int, expected: grpc.StatusCode) -> None:
    status = to_portico_error(rpc_error_from_object({"code": code, "message": "new"}))
    assert status.code == expected and status.reason == "VENUE_ERROR" and status.metadata["venue_code"] == str(code)


@pytest.mark.parametrize("error", [SyndrTimeout("x"), SyndrConnectionError("x"), SyndrHttpError(503, "x"),
                                   SyndrHttpError(404, "x")], ids=repr)
def test_no_answer_is_unavailable_and_of_unknown_outcome(error: SyndrTransportError) -> None:
    status = to_portico_error(error)
    assert status.code == Code.UNAVAILABLE and status.reason == "VENUE_UNAVAILABLE"
    assert outcome_unknown(error)


def test_a_garbled_answer_is_internal_and_of_unknown_outcome() -> None:
    error = SyndrProtocolError("private/buy: response is not a JSON-RPC object (HTTP 200)")
    assert to_portico_error(error).code == Code.INTERNAL and outcome_unknown(error)
    with pytest.raises(SyndrProtocolError):
        rpc_error_from_object({"code": "10009", "message": "not an integer code"})


def test_a_call_our_budget_did_not_send_is_resource_exhausted() -> None:
    error = SyndrRateLimited(ErrorCode.TOO_MANY_REQUESTS, "not sent: over the share", method="private/cancel")
    status = to_portico_error(error)
    assert status.code == Code.RESOURCE_EXHAUSTED and status.metadata["venue_code"] == "10028"
    assert not outcome_unknown(error)
