"""Tracing is configured by the standard OTEL_* variables."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from portico.runtime.config import ConfigError
from portico.runtime.telemetry import build_tracer_provider


def test_file_exporter_writes_one_json_span_per_line(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    provider = build_tracer_provider("portico-x", {"OTEL_TRACES_EXPORTER": "file", "PORTICO_TRACES_FILE": str(path),
                                                   "OTEL_SERVICE_NAME": "renamed"})
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("outer"), tracer.start_as_current_span("inner"):
        pass
    provider.shutdown()
    spans = [json.loads(line) for line in path.read_text().splitlines()]
    assert [s["name"] for s in spans] == ["inner", "outer"]
    assert spans[0]["parent_id"] == spans[1]["context"]["span_id"]
    assert spans[0]["resource"]["attributes"]["service.name"] == "renamed"


def test_console_and_none_and_default(capfd: pytest.CaptureFixture[str]) -> None:
    console = build_tracer_provider("svc", {"OTEL_TRACES_EXPORTER": "console"})
    with console.get_tracer("t").start_as_current_span("shown"):
        pass
    console.shutdown()
    assert '"name": "shown"' in capfd.readouterr().out
    for env in ({"OTEL_TRACES_EXPORTER": "none"}, {}):
        quiet = build_tracer_provider("svc", env)
        with quiet.get_tracer("t").start_as_current_span("hidden"):
            pass
        quiet.shutdown()
        assert "hidden" not in capfd.readouterr().out


def test_otlp_exporter_sends_to_the_standard_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    received: list[str] = []

    class Collector(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request: Any, context: Any) -> Any:
            received.extend(span.name for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans)
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Collector(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
        provider = build_tracer_provider("svc", {"OTEL_TRACES_EXPORTER": "otlp"})
        with provider.get_tracer("t").start_as_current_span("exported"):
            pass
        provider.force_flush()
        provider.shutdown()
    finally:
        server.stop(0)
    assert received == ["exported"]


@pytest.mark.parametrize(("env", "needle"), [
    ({"OTEL_TRACES_EXPORTER": "jaeger"}, "unknown exporter"),
    ({"OTEL_TRACES_EXPORTER": "file"}, "PORTICO_TRACES_FILE"),
])
def test_bad_exporter_configuration_is_a_clear_error(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        build_tracer_provider("svc", env)
