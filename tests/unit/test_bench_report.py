"""`make bench` runs every benchmark of tests/bench/ and the report summarises each of them."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from tests.bench import report

REPO = Path(__file__).resolve().parents[2]


def test_make_bench_runs_every_benchmark_then_the_report() -> None:
    makefile = (REPO / "Makefile").read_text()
    recipe = makefile.split("\nbench: install\n", 1)[1].split("\n\n", 1)[0]
    ran = re.findall(r"-m tests\.bench\.bench_(\w+) --out bench-results/(\w+)\.json", recipe)
    modules = sorted(p.stem.removeprefix("bench_") for p in (REPO / "tests" / "bench").glob("bench_*.py"))
    assert sorted(name for name, _ in ran) == modules
    assert all(name == out for name, out in ran)
    assert set(modules) <= set(report.BENCHMARKS)
    assert recipe.rstrip().endswith("-m tests.bench.report")


def test_the_report_summarises_the_committed_results(tmp_path: Path) -> None:
    for path in (REPO / "bench-results").glob("*.json"):
        if path.stem in report.BENCHMARKS:
            shutil.copy(path, tmp_path)
    merged, markdown = report.build(tmp_path)
    names = [row["benchmark"] for row in merged["summary"]]
    assert names == list(report.BENCHMARKS)
    for row in merged["summary"]:
        assert (row["run"] is None) == (row["benchmark"] not in merged["benchmarks"])
        assert f"| {row['benchmark']} |" in markdown
    json.dumps(merged)  # serialisable as written
