"""`AuditLog.signed`: the file's line is written before it returns; the process log's copy follows on the event
loop's next turn (off the answer's path), still carrying the signature's trace id."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from portico.runtime.logs import JsonFormatter
from portico.signer.audit import AuditLog, audit

TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
SPAN_ID = 0xB7AD6B7169203331


class _Lines(logging.Handler):
    """The audit logger's lines as the process log writes them (JSON)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter("signer"))
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


def _sign_in_span(log: AuditLog, key_id: str) -> None:
    span = NonRecordingSpan(SpanContext(trace_id=TRACE_ID, span_id=SPAN_ID, is_remote=False,
                                        trace_flags=TraceFlags(TraceFlags.SAMPLED)))
    with trace.use_span(span):
        log.signed({"key_id": key_id, "digest": "0x" + "ab" * 32})


async def test_the_file_line_comes_first_and_the_log_copy_on_the_next_turn_with_the_trace_id(tmp_path: Path) -> None:
    lines = _Lines()
    audit.addHandler(lines)
    log = AuditLog(tmp_path / "audit.log")
    log.open()
    try:
        _sign_in_span(log, "k1")
        [written] = (tmp_path / "audit.log").read_text().splitlines()
        assert (json.loads(written)["key_id"], json.loads(written)["trace_id"]) == ("k1", f"{TRACE_ID:032x}")
        assert lines.lines == []  # not on the answer's path
        await asyncio.sleep(0)
        [logged] = lines.lines
        assert (logged["msg"], logged["key_id"], logged["trace_id"]) == ("signed", "k1", f"{TRACE_ID:032x}")
    finally:
        log.close()
        audit.removeHandler(lines)


def test_without_a_running_loop_the_log_copy_is_written_at_once() -> None:
    lines = _Lines()
    audit.addHandler(lines)
    try:
        _sign_in_span(AuditLog(None), "k2")
        assert [(line["key_id"], line["trace_id"]) for line in lines.lines] == [("k2", f"{TRACE_ID:032x}")]
    finally:
        audit.removeHandler(lines)
