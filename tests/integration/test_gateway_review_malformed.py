"""Requests aiohttp refuses itself, around the gateway's handlers: what reaches the gateway's log.

A request line or header over 8,190 bytes is answered by aiohttp's HTTP parser (400, text/plain, quoting the
line's first 100 bytes back to the caller) before any middleware runs, so it is not in the gateway's JSON
shape; what the gateway controls is its log, which must never hold a caller's bearer token.
"""

from __future__ import annotations

import asyncio
import gzip
import logging

import pytest
from tests.support.gateway import serving

TOKEN = "pt_" + "S3cretT0ken" * 4  # the shape of a Portico token, to look for in the log


async def _raw(url: str, request: bytes) -> tuple[int, str]:
    """Send `request` as is; the status and the whole answer."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        answer = (await asyncio.wait_for(reader.read(), 10)).decode("latin-1")
    finally:
        writer.close()
    return int(answer.split()[1]), answer


async def test_an_oversized_authorization_header_keeps_the_token_out_of_the_log(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with serving("127.0.0.1:1") as url:  # nothing is called: the parser refuses the request first
        header = f"Bearer {TOKEN}{'x' * 9000}"
        status, _ = await _raw(url, (f"GET /v1/instruments/syndr/ETH-PERP HTTP/1.1\r\nHost: gw\r\n"
                                     f"Authorization: {header}\r\nConnection: close\r\n\r\n").encode())
    assert status == 400
    refused = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert refused, "aiohttp logs the refusal"
    for record in refused:
        assert record.levelno == logging.WARNING and record.exc_info is None
        assert "LineTooLong" in record.getMessage()
    assert TOKEN not in caplog.text


async def test_an_oversized_request_line_is_a_warning_without_a_traceback(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with serving("127.0.0.1:1") as url:
        status, answer = await _raw(url, (f"GET /v1/instruments/syndr/{'a' * 9000} HTTP/1.1\r\nHost: gw\r\n"
                                          "Connection: close\r\n\r\n").encode())
    assert status == 400 and "text/plain" in answer  # aiohttp's own answer, before any middleware (README)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "Traceback" not in caplog.text


async def test_a_body_that_does_not_decode_is_answered_and_logged_as_a_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    body = b"this is not gzip" * 10
    async with serving("127.0.0.1:1") as url:
        status, answer = await _raw(url, (
            f"POST /api/v3/market/instrument/sync HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode() + body)
        # and one that does decode still works as before (refused for its content, not its encoding)
        good = gzip.compress(b'{"symbols": []}')
        good_status, good_answer = await _raw(url, (
            f"POST /api/v3/market/instrument/sync HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: {len(good)}\r\n"
            "Connection: close\r\n\r\n").encode() + good)
    assert status == 400 and '"success":false' in answer
    assert good_status == 400 and "venue is required" in good_answer
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert "Traceback" not in caplog.text and TOKEN not in caplog.text
