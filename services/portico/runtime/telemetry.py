"""OpenTelemetry tracing configured by the standard `OTEL_*` variables.

`OTEL_TRACES_EXPORTER` picks the exporter(s), comma separated: `otlp` (to
`OTEL_EXPORTER_OTLP_ENDPOINT`), `console`, `file` (JSON lines to
`PORTICO_TRACES_FILE`, for tests and local debugging) or `none`. Unlike the
OTel SDK default, unset means `none`, so a laptop without a collector does not
log export failures. `OTEL_SERVICE_NAME` overrides the service name.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

from portico.runtime.config import ConfigError, setting

__all__ = ["FileSpanExporter", "build_tracer_provider", "configure_tracing"]

TRACES_FILE = setting(
    "PORTICO_TRACES_FILE", "", "File that `OTEL_TRACES_EXPORTER=file` appends spans to, one JSON object a line.")
OTEL_TRACES_EXPORTER = setting(
    "OTEL_TRACES_EXPORTER", "none", "Standard OTel variable: `otlp`, `console`, `file` or `none` (comma separated).")
OTEL_SERVICE_NAME = setting("OTEL_SERVICE_NAME", "", "Standard OTel variable: overrides the service name on spans.")
OTEL_EXPORTER_OTLP_ENDPOINT = setting(
    "OTEL_EXPORTER_OTLP_ENDPOINT", "",
    "Standard OTel variable: OTLP/gRPC collector endpoint, e.g. `http://otel-collector:4317`.")


class FileSpanExporter(SpanExporter):
    """Append finished spans as JSON lines; safe across threads."""

    def __init__(self, path: Path):
        self._lock = threading.Lock()
        self._file: IO[str] = path.open("a", encoding="utf-8")

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(json.dumps(json.loads(span.to_json()), separators=(",", ":")) + "\n" for span in spans)
        with self._lock:
            self._file.write(lines)
            self._file.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            self._file.close()


def configure_tracing(service_name: str, env: Mapping[str, str],
                      extra_exporters: Sequence[SpanExporter] = ()) -> TracerProvider:
    """Install and return the global tracer provider for this process."""
    provider = build_tracer_provider(service_name, env, extra_exporters)
    trace.set_tracer_provider(provider)
    return provider


def build_tracer_provider(service_name: str, env: Mapping[str, str],
                          extra_exporters: Sequence[SpanExporter] = ()) -> TracerProvider:
    """A tracer provider with the exporters `OTEL_TRACES_EXPORTER` names."""
    name = OTEL_SERVICE_NAME.get_str(env) or service_name
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: name}))
    for kind in (k.strip() for k in OTEL_TRACES_EXPORTER.get_str(env).split(",")):
        if kind in ("", "none"):
            continue
        if kind == "otlp":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        elif kind == "console":
            provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stdout)))
        elif kind == "file":
            path = TRACES_FILE.get_path(env)
            if path is None:
                raise ConfigError(f"OTEL_TRACES_EXPORTER=file needs {TRACES_FILE.name}")
            provider.add_span_processor(SimpleSpanProcessor(FileSpanExporter(path)))
        else:
            raise ConfigError(f"OTEL_TRACES_EXPORTER: unknown exporter {kind!r} (otlp, console, file, none)")
    for exporter in extra_exporters:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider
