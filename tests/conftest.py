"""Suite-wide fixtures: one OpenBao dev server, span and log capture."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from portico.runtime.logs import JsonFormatter
from portico.runtime.telemetry import configure_tracing
from tests.support.openbao import OpenBaoDevServer

SPANS = InMemorySpanExporter()
# The global tracer provider can be set once per process: every test shares it.
configure_tracing("portico-tests", {"OTEL_TRACES_EXPORTER": "none"}, extra_exporters=[SPANS])


@pytest.fixture(scope="session")
def openbao() -> Iterator[OpenBaoDevServer]:
    """A real OpenBao dev server for the whole session (tests needing to seal it start their own)."""
    with OpenBaoDevServer() as server:
        yield server


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    SPANS.clear()
    yield SPANS


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """Every log line emitted during the test, as the JSON formatter writes it."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter("test"))
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield buffer
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
