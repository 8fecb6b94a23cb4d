"""One trace across the suite: `portico up` with every process exporting spans to one file, one order placed.

The client (this test) opens a span and calls execution's `PlaceOrder` through `open_channel` (which adds the
client tracing interceptors); execution has the signer sign the order (a client span in execution, a server span
in the signer process) and sends `private/buy` to the venue. Every service process appends its spans to the same
JSON-lines file (`OTEL_TRACES_EXPORTER=file`, `PORTICO_TRACES_FILE`, passed through `portico up` to each service,
each naming itself with its own `OTEL_SERVICE_NAME`); the test's own spans come from the in-memory exporter.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tests.support.portico_up import PorticoUp
from tests.support.waiting import until

from portico.common.v1 import side_pb2
from portico.execution.v1 import execution_service_pb2 as pb
from portico.execution.v1 import execution_service_pb2_grpc as pb_grpc
from portico.execution.v1 import order_pb2
from portico.runtime.client import bearer, open_channel
from portico.venues.syndr import models
from portico.venues.syndr.http import SyndrHttpClient

PLACE = "portico.execution.v1.ExecutionService/PlaceOrder"
SIGN = "portico.signer.v1.SignerService/Sign"


def _read_spans(path: Path) -> list[dict[str, Any]]:
    """Every span in the file; each line must be one whole JSON object (several processes append to it, each
    span with one `write` to a file opened for appending, so lines cannot interleave)."""
    spans = []
    *lines, _being_written = path.read_text().split("\n")  # a last line without its newline is still being written
    for number, line in enumerate(lines, 1):
        try:
            spans.append(json.loads(line))
        except ValueError:
            pytest.fail(f"line {number} of the traces file is not one JSON object (interleaved writes?): "
                        f"{line[:200]!r}")
    return spans


def _service(span: dict[str, Any]) -> str:
    return str(span["resource"]["attributes"]["service.name"])


async def test_one_order_is_one_trace_across_client_execution_signer_and_venue(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spans: InMemorySpanExporter) -> None:
    traces_file = tmp_path / "spans.jsonl"
    # `portico up` passes its environment to every service process ({**os.environ, **env}).
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "file")
    monkeypatch.setenv("PORTICO_TRACES_FILE", str(traces_file))
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    up = PorticoUp(tmp_path)
    up.start()
    try:
        state = await up.wait_for_state()
        async with SyndrHttpClient(state["simulator"]["http"]) as venue:
            book = (await venue.call("public/get_order_book", {"instrument_name": "ETH-PERP", "depth": 1})).result
            instruments = models.parse_instruments((await venue.call("public/get_instruments", {"kind": "any"})).result)
        tick = instruments["ETH-PERP"].tick_size
        price = (Decimal(book["best_bid_price"]) * Decimal("0.8") / tick).to_integral_value() * tick  # rests
        request = pb.PlaceOrderRequest(
            venue="syndr", account=state["demo"]["account"], symbol="ETH-PERP", side=side_pb2.SIDE_BUY,
            type=order_pb2.ORDER_TYPE_LIMIT, amount="0.1", price=str(price), client_order_id="suite-trace-1")
        spans.clear()
        tracer = trace.get_tracer("tests.suite_trace")
        async with open_channel(state["services"]["execution"]) as channel:
            with tracer.start_as_current_span("test place order") as root:
                reply = await pb_grpc.ExecutionServiceStub(channel).PlaceOrder(
                    request, metadata=bearer(state["tokens"]["trade"]), timeout=20)
        assert reply.order.state == order_pb2.ORDER_STATE_OPEN
        trace_id = f"0x{root.get_span_context().trace_id:032x}"

        def exported() -> list[dict[str, Any]]:
            found = _read_spans(traces_file) if traces_file.exists() else []
            return [s for s in found if s["context"]["trace_id"] == trace_id]

        # Server spans are exported when they end, just after the reply is sent: give them a moment.
        await until(lambda: any(s["name"] == PLACE and s["kind"] == "SpanKind.SERVER" for s in exported()), 10)
        from_services = exported()
    finally:
        returncode, _, err = up.stop()
    assert returncode == 0, err

    mine = [json.loads(s.to_json()) for s in spans.get_finished_spans()]
    in_trace = {s["context"]["span_id"]: s for s in [*mine, *from_services] if s["context"]["trace_id"] == trace_id}

    def only(name: str, kind: str, service: str) -> dict[str, Any]:
        found: list[dict[str, Any]] = [
            s for s in in_trace.values()
            if s["name"] == name and s["kind"] == f"SpanKind.{kind}" and _service(s) == service]
        assert len(found) == 1, (name, kind, service, sorted((s["name"], _service(s)) for s in in_trace.values()))
        return found[0]

    test_root = only("test place order", "INTERNAL", "portico-tests")
    client_call = only(PLACE, "CLIENT", "portico-tests")
    place = only(PLACE, "SERVER", "portico-execution")
    sign_client = only(SIGN, "CLIENT", "portico-execution")
    sign_server = only(SIGN, "SERVER", "portico-signer")
    venue_call = only("private/buy", "CLIENT", "portico-execution")

    def chain(span: dict[str, Any]) -> list[str]:
        """Span ids from `span` up to the root, following parent ids within the trace."""
        ids = [span["context"]["span_id"]]
        while (parent := in_trace[ids[-1]]["parent_id"]) is not None:
            assert parent in in_trace, f"{in_trace[ids[-1]]['name']} has a parent outside the exported trace"
            ids.append(parent)
        return ids

    ident = {name: s["context"]["span_id"] for name, s in (
        ("root", test_root), ("client", client_call), ("place", place), ("sign_client", sign_client))}
    assert client_call["parent_id"] == ident["root"] and test_root["parent_id"] is None
    assert place["parent_id"] == ident["client"]  # across the process boundary
    assert sign_server["parent_id"] == ident["sign_client"]  # across the next one
    assert chain(sign_server)[-3:] == [ident["place"], ident["client"], ident["root"]]
    assert chain(venue_call)[-3:] == [ident["place"], ident["client"], ident["root"]]
    attributes = venue_call["attributes"]
    assert int(attributes["syndr.us_in"]) <= int(attributes["syndr.us_out"])
    assert place["status"]["status_code"] == "UNSET" or place["status"]["status_code"] == "OK"
    # Every service process wrote to the file under its own name (none inherited another's).
    assert {_service(s) for s in _read_spans(traces_file)} >= {"portico-execution", "portico-signer",
                                                                 "portico-refdata", "portico-account"}
