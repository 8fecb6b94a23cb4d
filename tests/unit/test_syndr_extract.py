"""The Syndr example fixtures are exactly what the extractor makes of the API document.

If this fails after editing the extractor or the document, re-run
`python scripts/extract_syndr_examples.py` and review the diff of
tests/resources/syndr/ (its README lists what was normalised or left out).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "extract_syndr_examples.py"
RESOURCES = REPO / "tests" / "resources" / "syndr"
# shared/ sits beside the checkout (as on developers' machines and in CI).
SEED = Path(os.environ.get("SYNDR_SEED", Path(__file__).resolve().parents[3] / "shared" / "seeds"
                           / "002_1080faa2c7e60ae3.txt"))


def load_extractor() -> ModuleType:
    spec = importlib.util.spec_from_file_location("extract_syndr_examples", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def extractor() -> ModuleType:
    return load_extractor()


@pytest.mark.skipif(not SEED.is_file(), reason=f"the Syndr API document is not at {SEED} (set SYNDR_SEED)")
def test_rerunning_the_extractor_reproduces_the_committed_files(tmp_path: Path) -> None:
    out = tmp_path / "syndr"
    run = subprocess.run([sys.executable, str(SCRIPT), "--seed", str(SEED), "--out", str(out)],
                         capture_output=True, text=True, check=False, timeout=120)
    assert run.returncode == 0, run.stderr
    made = {path.name: path.read_bytes() for path in out.iterdir()}
    committed = {path.name: path.read_bytes() for path in RESOURCES.iterdir() if path.is_file()}
    assert sorted(made) == sorted(committed), "fixture files added or removed: re-run the extractor"
    changed = sorted(name for name in made if made[name] != committed[name])
    assert not changed, f"fixtures differ from a fresh extraction: {changed}"


def test_readme_reports_what_could_not_be_recovered() -> None:
    readme = (RESOURCES / "README.md").read_text(encoding="utf-8")
    recovered = readme.split("## Examples that could not be recovered")[1].split("##")[0]
    for what in ("`private/buy`", "`private/sell`", "`public/register_signing_key` request", "<ANY_PRIVATE_METHOD>"):
        assert what in recovered


def test_normalise_fixes_only_what_is_mechanical(extractor: ModuleType) -> None:
    text = '{\n  "a": "x // not a comment, ]",  // a comment\n  "b": [1, 2,],\n  "c": <API_KEY>,\n}'
    fixed, fixes = extractor.normalise(text)
    assert extractor.load_json(fixed) == {"a": "x // not a comment, ]", "b": [1, 2], "c": "<API_KEY>"}
    assert fixes == ["removed // comment", "removed trailing comma", "quoted placeholder <API_KEY>"]
    assert extractor.normalise('{"a": "1,}"}') == ('{"a": "1,}"}', [])


def test_numbers_are_written_back_as_spelled(extractor: ModuleType) -> None:
    assert extractor.render(extractor.load_json('{"p": 2575.1, "q": 0.001, "n": 1731144056368324}')) == (
        '{\n  "p": 2575.1,\n  "q": 0.001,\n  "n": 1731144056368324\n}\n')
    with pytest.raises(extractor.ExtractError):
        extractor.load_json('{"p": 2575.10}')


def test_channel_fixture_names(extractor: ModuleType) -> None:
    assert extractor.channel_slug("book.{instrument_name}.15.raw") == "book.raw"
    assert extractor.channel_slug("user.orders.ALL.raw") == "user.orders.ALL.raw"
    assert extractor.channel_slug("user.bursts.{instrument.name}") == "user.bursts"
    assert extractor.channel_slug("ticker.{instrument_name}") == "ticker"


def test_scan_finds_requests_responses_and_gaps(extractor: ModuleType) -> None:
    document = "\n".join([
        "public/get_order_book",
        "  --data '{",
        '    "jsonrpc": "2.0", "id": 1, "method": "public/get_order_book",',
        '    "params": {"instrument_name": "ETH-PERP",}',
        "  }'",
        "An example of the response",
        "{",
        '  "jsonrpc": "2.0", "id": 1, "result": {"bids": []}',
        "}",
        "private/sell",
        "An example of the response",
        "",
        "Response",
    ])
    examples, missing = extractor.scan(document.splitlines())
    extractor.assign_names(examples)
    assert [(ex.name, ex.fixes) for ex in examples] == [
        ("public.get_order_book.request", ["removed trailing comma"]),
        ("public.get_order_book.response", []),
    ]
    assert [(ex.line, ex.section.name, ex.problem) for ex in missing] == [
        (11, "private/sell", "no example follows the heading")]
