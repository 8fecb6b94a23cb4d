"""Tracing is configured by the standard OTEL_* variables."""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

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
    # The OpenTelemetry package's generated gRPC module is unannotated.
    add_servicer = cast(Callable[[trace_service_pb2_grpc.TraceServiceServicer, grpc.Server], None],
                        trace_service_pb2_grpc.add_TraceServiceServicer_to_server)
    add_servicer(Collector(), server)
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
    ({"OTEL_TRACES_EXPORTER": "file", "PORTICO_TRACES_FILE": "/nonexistent-dir/spans.jsonl"},
     "PORTICO_TRACES_FILE: cannot open /nonexistent-dir/spans.jsonl"),
])
def test_bad_exporter_configuration_is_a_clear_error(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        build_tracer_provider("svc", env)


def _remote_parent(sampled: bool) -> Any:
    """An incoming request's context, as the server interceptor extracts it from `traceparent`."""
    flags = "01" if sampled else "00"
    return TraceContextTextMapPropagator().extract({"traceparent": f"00-{'ab' * 16}-{'cd' * 8}-{flags}"})


def test_without_an_exporter_roots_are_not_recorded_but_keep_their_ids() -> None:
    provider = build_tracer_provider("svc", {})
    span = provider.get_tracer("t").start_span("root")
    context = span.get_span_context()
    assert not span.is_recording()
    assert not context.trace_flags.sampled
    assert context.is_valid  # logs still get trace and span ids
    provider.shutdown()


def test_without_an_exporter_a_sampled_callers_trace_is_followed() -> None:
    """Services downstream of this one must still see a sampled parent, or the caller's trace would break."""
    provider = build_tracer_provider("svc", {"OTEL_TRACES_EXPORTER": "none"})
    tracer = provider.get_tracer("t")
    followed = tracer.start_span("child", context=_remote_parent(sampled=True))
    assert followed.is_recording() and followed.get_span_context().trace_flags.sampled
    assert followed.get_span_context().trace_id == int("ab" * 16, 16)
    dropped = tracer.start_span("child", context=_remote_parent(sampled=False))
    assert not dropped.is_recording()
    provider.shutdown()


def test_with_an_exporter_every_root_is_recorded(tmp_path: Path) -> None:
    exported = InMemorySpanExporter()
    for provider in (build_tracer_provider("svc", {}, extra_exporters=[exported]),
                     build_tracer_provider("svc", {"OTEL_TRACES_EXPORTER": "file",
                                                   "PORTICO_TRACES_FILE": str(tmp_path / "s.jsonl")})):
        span = provider.get_tracer("t").start_span("root")
        assert span.is_recording() and span.get_span_context().trace_flags.sampled
        span.end()
        provider.shutdown()
    assert [s.name for s in exported.get_finished_spans()] == ["root"]


@pytest.mark.parametrize(("env", "root_sampled", "sampled_child_recorded"), [
    ({"OTEL_TRACES_SAMPLER": "always_off"}, False, False),
    ({"OTEL_TRACES_SAMPLER": "always_on"}, True, True),
    ({"OTEL_TRACES_SAMPLER": "parentbased_always_off"}, False, True),
    ({"OTEL_TRACES_SAMPLER": "ParentBased_TraceIdRatio", "OTEL_TRACES_SAMPLER_ARG": "0"}, False, True),
    ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "1"}, True, True),
    ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0"}, False, False),
])
def test_an_explicit_sampler_wins_over_the_default(env: dict[str, str], root_sampled: bool,
                                                   sampled_child_recorded: bool) -> None:
    provider = build_tracer_provider("svc", env, extra_exporters=[InMemorySpanExporter()])
    tracer = provider.get_tracer("t")
    assert tracer.start_span("root").is_recording() is root_sampled
    assert tracer.start_span("child", context=_remote_parent(sampled=True)).is_recording() is sampled_child_recorded
    provider.shutdown()


@pytest.mark.parametrize(("env", "needle"), [
    ({"OTEL_TRACES_SAMPLER": "sometimes"}, "OTEL_TRACES_SAMPLER: unknown sampler 'sometimes'"),
    ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "half"}, "OTEL_TRACES_SAMPLER_ARG"),
    ({"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "1.5"}, "from 0 to 1"),
])
def test_bad_sampler_configuration_is_a_clear_error(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        build_tracer_provider("svc", env)
