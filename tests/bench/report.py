"""One report from every benchmark's JSON file: `bench-results/report.json` and `bench-results/REPORT.md`.

    python -m tests.bench.report [--dir bench-results]

`make bench` runs it after the benchmarks; it reads only the per-benchmark files (`signer.json`,
`syndr_parse.json`, `sim_engine.json`, `refdata.json`, `marketdata.json`, `execution.json`, `http1.json`,
`grpc_core.json`, `transport_floor.json`, `execution_ab.json` (from `bench_execution --baseline`), and the
soak run's `soak.json` when there is one), so it can be rerun at any time without rerunning anything. A missing file is
reported as not run.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# (key figures, target, met?) for one benchmark's document; met is None when the benchmark has no target.
Summary = tuple[str, str, bool | None]


def _n(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def signer(d: dict[str, Any]) -> Summary:
    rate, half = d["sign_throughput"]["per_second"], d["sign_at_half_max_rate"]["p99_ms"]
    targets = d["targets"]
    return (f"{_n(rate)} signatures/s; p99 {half:.1f} ms at half that rate; "
            f"p50 {d['sign_one_in_flight']['p50_ms']:.2f} ms one in flight",
            f">= {_n(targets['signatures_per_second'])}/s; p99 < {targets['p99_ms_at_half_load']:g} ms at half load",
            rate >= targets["signatures_per_second"] and half < targets["p99_ms_at_half_load"])


def syndr_parse(d: dict[str, Any]) -> Summary:
    typed = d["frames_per_second"]["parse_book_change"]["median"]
    return (f"{_n(typed)} typed book notifications/s on one core "
            f"({d['ratios']['parse_book_change_vs_orjson_decode']:.2f}x a bare orjson decode)",
            f">= {_n(d['target_frames_per_second'])}/s", bool(d["meets_target"]))


def sim_engine(d: dict[str, Any]) -> Summary:
    runs = {(r["instruments"], r["listener"]): r for r in d["market_maker"]}
    small = min(size for size, _ in runs)
    wire = runs.get((small, "wire")) or next(iter(runs.values()))
    engine = d["engine"]
    return (f"market maker {_n(wire['book_changes_per_s'])} book changes/s with wire rendering "
            f"({wire['instruments']} instruments); engine {_n(engine['place_and_cancel_ops_per_s'])} "
            "place/cancel ops/s", "thousands of book changes/s (no numeric target)", None)


def refdata(d: dict[str, Any]) -> Summary:
    t = d["targets"]
    parts, met = [], True
    for backend, r in d["results"].items():
        parts.append(f"{backend}: sync {r['first_sync_s']:.2f} s, re-sync {r['resync_s']:.2f} s, "
                     f"list p99 {r['list_p99_ms']:.1f} ms")
        met &= (r["first_sync_s"] < t["first_sync_s"] and r["resync_s"] < t["resync_s"]
                and r["list_p99_ms"] < t["list_p99_ms"])
    return ("; ".join(parts) + f" ({d['settings']['instruments']:,} instruments)",
            f"sync < {t['first_sync_s']:g} s, re-sync < {t['resync_s']:g} s, list p99 < {t['list_p99_ms']:g} ms", met)


def marketdata(d: dict[str, Any]) -> Summary:
    t = d["targets"]
    cell = next(c["service"] for c in d["cells"] if c["book_changes_per_second"] == 5000 and c["consumers"] == 50)
    met = (t["5000x50_every_update_delivered"] and t["5000x50_p99_below_8ms"] and t["5000x50_p99_within_1.3x_bare"]
           and t["reached_250k_updates_per_s"])
    # The highest rate at which every update was delivered (a cell that conflated delivered snapshots instead).
    clean = [c for c in d["cells"] if c["service"]["conflations"] == 0]
    best = max(clean, key=lambda c: c["service"]["delivered_updates_per_s"])
    return (f"5,000 changes/s x 50 consumers: {_n(cell['delivered_updates_per_s'])} updates/s, "
            f"{_n(cell['conflations'])} conflations, p99 {cell['latency_ms']['p99']:.1f} ms "
            f"({t['5000x50_p99_ratio_to_bare']:.1f}x bare); max without conflation "
            f"{_n(best['service']['delivered_updates_per_s'])} updates/s "
            f"({best['book_changes_per_second']}/s x {best['consumers']})",
            "5,000 x 50: every update, p99 < 8 ms and < 1.3x bare; >= 250,000 updates/s", bool(met))


def execution(d: dict[str, Any]) -> Summary:
    one, loaded, t = d["place_one_in_flight"], d["place_loaded"], d["targets"]
    return (f"added latency p50 {one['added_p50_ms']:.2f} / p99 {one['added_p99_ms']:.2f} ms one in flight; "
            f"{_n(loaded['per_second'])} orders/s loaded",
            f"added p50 < {t['added_p50_ms_one_in_flight']:g} ms, p99 < {t['added_p99_ms_one_in_flight']:g} ms; "
            f">= {_n(t['orders_per_second'])} orders/s", all(d["targets_met"].values()))


def execution_ab(d: dict[str, Any]) -> Summary:
    c = d["comparison"]
    p50, cpu, rate = c["added_p50_ms"], c["execution_cpu_ms_per_call"], c["loaded_per_second"]
    return (f"vs {d['baseline']['revision']}, {p50['turns']} interleaved turns: added p50 x{p50['ratio_median']:.2f} "
            f"(better in {p50['this_tree_better_in_turns']}), execution CPU per order x{cpu['ratio_median']:.2f} "
            f"(better in {cpu['this_tree_better_in_turns']}), orders/s loaded x{rate['ratio_median']:.2f}",
            "(no target: what the changes since the baseline did)", None)


def http1(d: dict[str, Any]) -> Summary:
    rt, over = d["round_trip_us_median"], d["overhead_over_bare_us"]
    return (f"POST round trip {rt['http1']:.0f} us with portico.runtime.http1 vs {rt['aiohttp']:.0f} us with aiohttp "
            f"(bare exchange {rt['bare']:.0f} us; client overhead {over['http1']:.0f} vs {over['aiohttp']:.0f} us)",
            "(no numeric target: the venue client's cost on the order path)", None)


def grpc_core(d: dict[str, Any]) -> Summary:
    rt, ratio = d["round_trip_ms_median"], d["ratio_services_to_defaults"]
    return (f"unary call {rt['services']:.3f} ms with the services' GRPC_EXPERIMENTS vs {rt['grpc_defaults']:.3f} ms "
            f"with gRPC's defaults (ratio {ratio['median']:.2f}; faster in {ratio['services_faster_in_turns']}/"
            f"{ratio['turns']} interleaved turns)", "(no numeric target: justifies runtime/grpc_core.py's default)",
            None)


def transport_floor(d: dict[str, Any]) -> Summary:
    rt, cpu = d["round_trip_ms_median"], d["cpu_ms_per_call"]["abc"]
    return (f"empty handlers in the order path's shape: one gRPC hop {rt['a']:.2f} ms, two {rt['ab']:.2f} ms, two "
            f"and an HTTP call {rt['abc']:.2f} ms (CPU per call {cpu['a']:.2f} / {cpu['b']:.2f} / {cpu['c']:.2f} ms "
            "in the three servers)", "(no numeric target: the transport under execution's figures)", None)


def soak(d: dict[str, Any]) -> Summary:
    books, orders = d["books"], d["orders"]
    services = {name: m for name, m in d["memory"].items() if name != "simulator"}
    grew = [f"{name} +{m['growth_mb']:.1f} MB" for name, m in services.items() if not m["flat"]]
    failed = [name for name, ok in d["checks"].items() if not ok]
    return (f"{d['settings']['minutes']:g} min: {books['equal_to_venue']}/{books['consumers']} books equal to the "
            f"venue, {books['broken']} broken chains; {orders['attempted']:,} orders, "
            f"{len(orders['duplicate_labels'])} duplicates, journal = venue: "
            f"{'yes' if d['checks']['every_journaled_order_final_and_matching_the_venue'] else 'no'}; "
            f"RSS after warm-up: {', '.join(grew) or 'flat'}" + (f" (failed: {', '.join(failed)})" if failed else ""),
            "every check passes (books, duplicates, journal = venue, flat memory)", bool(d["passed"]))


BENCHMARKS: dict[str, Callable[[dict[str, Any]], Summary]] = {
    "signer": signer, "syndr_parse": syndr_parse, "sim_engine": sim_engine, "refdata": refdata,
    "marketdata": marketdata, "execution": execution, "execution_ab": execution_ab, "http1": http1,
    "grpc_core": grpc_core, "transport_floor": transport_floor, "soak": soak,
}


def _when(doc: dict[str, Any], path: Path) -> str:
    """The run's own timestamp, or the file's modification time for benchmarks that do not record one."""
    return str(doc.get("when") or datetime.fromtimestamp(path.stat().st_mtime, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))


def build(directory: Path) -> tuple[dict[str, Any], str]:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    merged: dict[str, Any] = {"generated": now, "benchmarks": {}, "summary": []}
    rows = ["| benchmark | run | key figures | target | met? |", "| --- | --- | --- | --- | --- |"]
    for name, summarise in BENCHMARKS.items():
        path = directory / f"{name}.json"
        if not path.exists():
            merged["summary"].append({"benchmark": name, "run": None, "figures": "not run", "target": "", "met": None})
            rows.append(f"| {name} | not run | | | |")
            continue
        doc = json.loads(path.read_text())
        when = _when(doc, path)
        figures, target, met = summarise(doc)
        merged["benchmarks"][name] = {"file": path.name, "when": when, **doc}
        merged["summary"].append({"benchmark": name, "run": when, "figures": figures, "target": target, "met": met})
        verdict = "n/a" if met is None else ("yes" if met else "**no**")
        rows.append(f"| {name} | {when[:16].replace('T', ' ')} | {figures} | {target} | {verdict} |")
    markdown = "\n".join([
        "# Benchmark report",
        "",
        f"Generated {now} by `python -m tests.bench.report` from the JSON files in `bench-results/` (each row names "
        "when its benchmark last ran; `make bench` reruns them all, `make soak` the soak run). All figures are from "
        "this 2-core machine, with servers and load generators sharing the cores. Details and the reasons behind "
        "each missed target are in the README's *Benchmark results*.",
        "",
        *rows,
        "",
    ])
    return merged, markdown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("bench-results"))
    args = parser.parse_args()
    merged, markdown = build(args.dir)
    (args.dir / "report.json").write_text(json.dumps(merged, indent=2) + "\n")
    (args.dir / "REPORT.md").write_text(markdown)
    print(markdown)


if __name__ == "__main__":
    main()
