"""The contracts: generated code matches proto/, buf lint passes, no breaking change against the baseline."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path
from typing import Protocol, cast

import pytest

REPO = Path(__file__).resolve().parents[2]
BUF = REPO / "node_modules" / ".bin" / "buf"
# The commit that first published the v1 contracts; `buf breaking` compares against it.
BASELINE = (REPO / "proto" / "BREAKING_BASELINE").read_text().strip()


class GenProtos(Protocol):
    """What these tests use of scripts/gen_protos.py, loaded from its path."""

    def drift(self, out_dir: Path = ...) -> list[str]: ...


def _gen() -> GenProtos:
    spec = importlib.util.spec_from_file_location("gen_protos", REPO / "scripts" / "gen_protos.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return cast(GenProtos, module)


def test_generated_code_matches_protos() -> None:
    assert _gen().drift() == []


def test_drift_check_detects_an_edit(tmp_path: Path) -> None:
    gen = _gen()
    copy = tmp_path / "services"
    shutil.copytree(REPO / "services" / "portico", copy / "portico",
                    ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / "portico" / "signer" / "v1" / "signer_service_pb2.py"
    target.write_text(target.read_text() + "\n# hand edit\n")
    (copy / "portico" / "refdata" / "v1" / "instrument_pb2.pyi").unlink()
    assert gen.drift(copy) == ["portico/refdata/v1/instrument_pb2.pyi", "portico/signer/v1/signer_service_pb2.py"]


@pytest.fixture(scope="module")
def buf() -> str:
    assert BUF.exists(), "buf is installed by `make install` (npm ci)"
    return str(BUF)


def test_buf_lint_passes(buf: str) -> None:
    result = subprocess.run([buf, "lint"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_buf_lint_catches_a_violation(buf: str, tmp_path: Path) -> None:
    shutil.copy(REPO / "buf.yaml", tmp_path / "buf.yaml")
    shutil.copytree(REPO / "proto", tmp_path / "proto")
    bad = tmp_path / "proto" / "portico" / "signer" / "v1" / "bad.proto"
    bad.write_text('syntax = "proto3";\npackage portico.signer.v1;\nenum color { RED = 0; }\n')
    result = subprocess.run([buf, "lint"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode != 0
    assert "ENUM_PASCAL_CASE" in result.stdout + result.stderr or "PascalCase" in result.stdout + result.stderr


def _has_baseline() -> bool:
    probe = subprocess.run(["git", "cat-file", "-e", f"{BASELINE}^{{commit}}"], cwd=REPO, capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _has_baseline(), reason="the baseline commit is not in this clone (shallow?)")
def test_no_breaking_change_against_baseline(buf: str) -> None:
    result = subprocess.run([buf, "breaking", "--against", f".git#ref={BASELINE}"], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
