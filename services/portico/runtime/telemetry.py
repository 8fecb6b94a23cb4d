"""OpenTelemetry tracing configured by the standard `OTEL_*` variables.

`OTEL_TRACES_EXPORTER` picks the exporter(s), comma separated: `otlp` (to
`OTEL_EXPORTER_OTLP_ENDPOINT`), `console`, `file` (JSON lines to
`PORTICO_TRACES_FILE`, for tests and local debugging) or `none`. Unlike the
OTel SDK default, unset means `none`, so a laptop without a collector does not
log export failures. `OTEL_SERVICE_NAME` overrides the service name.

`OTEL_TRACES_SAMPLER` (and `OTEL_TRACES_SAMPLER_ARG`) work as in the SDK.
Unset, the sampler depends on whether the process exports anything: with an
exporter it is the SDK's `parentbased_always_on`; with none it is
`parentbased_always_off`. A span nobody exports is not worth recording: a
recorded root span costs about 17 us against 7 us unrecorded, and an order's
spans came to 5-10 % of execution's and the signer's CPU per order in
interleaved runs of tests/bench/bench_execution.py. Yet a caller's sampled
trace stays whole: a sampled parent is still followed, so the services
downstream of this one keep recording their part. Unsampled spans still carry
trace and span ids, so logs stay correlated.
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
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider, sampling
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

from portico.runtime.config import ConfigError, setting

__all__ = ["FileSpanExporter", "build_sampler", "build_tracer_provider", "configure_tracing"]

TRACES_FILE = setting(
    "PORTICO_TRACES_FILE", "", "File that `OTEL_TRACES_EXPORTER=file` appends spans to, one JSON object a line.")
OTEL_TRACES_EXPORTER = setting(
    "OTEL_TRACES_EXPORTER", "none", "Standard OTel variable: `otlp`, `console`, `file` or `none` (comma separated).")
OTEL_TRACES_SAMPLER = setting(
    "OTEL_TRACES_SAMPLER", "", "Standard OTel variable: `always_on`, `always_off`, `traceidratio`, "
    "`parentbased_always_on`, `parentbased_always_off` or `parentbased_traceidratio`. Unset: "
    "`parentbased_always_on` in a process with an exporter, `parentbased_always_off` in one without (it records "
    "nothing it would only throw away, but follows a caller's sampled trace).")
OTEL_TRACES_SAMPLER_ARG = setting(
    "OTEL_TRACES_SAMPLER_ARG", "", "Standard OTel variable: the ratio (0 to 1) of the `traceidratio` samplers; "
    "unset means 1.")
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
    """A tracer provider with the exporters `OTEL_TRACES_EXPORTER` names, sampled as the module docstring says."""
    name = OTEL_SERVICE_NAME.get_str(env) or service_name
    kinds = (kind.strip() for kind in OTEL_TRACES_EXPORTER.get_str(env).split(","))
    processors: list[SpanProcessor] = [_processor(kind, env) for kind in kinds if kind not in ("", "none")]
    processors += [SimpleSpanProcessor(exporter) for exporter in extra_exporters]
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: name}),
                              sampler=build_sampler(env, exporting=bool(processors)))
    for processor in processors:
        provider.add_span_processor(processor)
    return provider


def _processor(kind: str, env: Mapping[str, str]) -> SpanProcessor:
    if kind == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return BatchSpanProcessor(OTLPSpanExporter())
    if kind == "console":
        return SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stdout))
    if kind == "file":
        path = TRACES_FILE.get_path(env)
        if path is None:
            raise ConfigError(f"OTEL_TRACES_EXPORTER=file needs {TRACES_FILE.name}")
        try:
            exporter = FileSpanExporter(path)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise ConfigError(f"{TRACES_FILE.name}: cannot open {path} ({reason})") from None
        return SimpleSpanProcessor(exporter)
    raise ConfigError(f"OTEL_TRACES_EXPORTER: unknown exporter {kind!r} (otlp, console, file, none)")


def build_sampler(env: Mapping[str, str], *, exporting: bool) -> sampling.Sampler:
    """`OTEL_TRACES_SAMPLER`'s sampler; unset, parent-based with roots sampled only when spans go somewhere."""
    choice = OTEL_TRACES_SAMPLER.get_str(env).strip().lower()
    if not choice:
        return sampling.ParentBased(sampling.ALWAYS_ON if exporting else sampling.ALWAYS_OFF)
    fixed = {"always_on": sampling.ALWAYS_ON, "always_off": sampling.ALWAYS_OFF,
             "parentbased_always_on": sampling.ParentBased(sampling.ALWAYS_ON),
             "parentbased_always_off": sampling.ParentBased(sampling.ALWAYS_OFF)}
    if choice in fixed:
        return fixed[choice]
    if choice in ("traceidratio", "parentbased_traceidratio"):
        text = OTEL_TRACES_SAMPLER_ARG.get_str(env).strip() or "1"
        try:
            ratio = float(text)  # a probability, not money: float is the SDK's own type for it
        except ValueError:
            ratio = -1.0
        if not 0.0 <= ratio <= 1.0:
            raise ConfigError(f"{OTEL_TRACES_SAMPLER_ARG.name} must be a number from 0 to 1 (got {text!r})")
        ratio_sampler = sampling.TraceIdRatioBased(ratio)
        return ratio_sampler if choice == "traceidratio" else sampling.ParentBased(ratio_sampler)
    raise ConfigError(f"{OTEL_TRACES_SAMPLER.name}: unknown sampler {choice!r} (always_on, always_off, traceidratio, "
                      "parentbased_always_on, parentbased_always_off, parentbased_traceidratio)")
