"""Generate Python code and type stubs from proto/ into services/.

Run `python scripts/gen_protos.py` after changing a .proto; the drift test
(`tests/unit/test_proto_drift.py`) runs the same generator into a temporary
directory and fails if the committed code differs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
OUT_DIR = ROOT / "services"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def proto_files() -> list[Path]:
    """Every .proto of the contract, in a stable order."""
    return sorted(PROTO_DIR.rglob("*.proto"))


def generate(out_dir: Path) -> list[Path]:
    """Run protoc with the grpc and mypy plugins; return the generated files."""
    bin_dir = Path(sys.executable).parent
    include = resources.files("grpc_tools") / "_proto"
    files = [str(p.relative_to(PROTO_DIR)) for p in proto_files()]
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"--mypy_out=quiet:{out_dir}",
        f"--mypy_grpc_out=quiet:{out_dir}",
        *files,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    generated: list[Path] = []
    for proto in proto_files():
        package_dir = out_dir / proto.parent.relative_to(PROTO_DIR)
        (package_dir / "__init__.py").touch()
        generated.append(package_dir / "__init__.py")
        stem = proto.stem
        generated.extend(package_dir / f"{stem}{suffix}" for suffix in GENERATED_SUFFIXES)
    return sorted(set(generated))


def committed_files(out_dir: Path = OUT_DIR) -> list[Path]:
    """Generated files currently in `out_dir` (what the drift check compares)."""
    found: list[Path] = []
    for v1 in out_dir.glob("portico/*/v1"):
        found.extend(p for p in v1.iterdir() if p.name == "__init__.py" or p.name.endswith(GENERATED_SUFFIXES))
    return sorted(found)


def drift(out_dir: Path = OUT_DIR) -> list[str]:
    """Paths under `out_dir` that differ from, are missing from, or are extra to a fresh generation."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = {p.relative_to(tmp): p.read_bytes() for p in generate(Path(tmp))}
    current = {p.relative_to(out_dir): p.read_bytes() for p in committed_files(out_dir)}
    changed = sorted(str(k) for k in fresh.keys() ^ current.keys())
    changed += sorted(str(k) for k in fresh.keys() & current.keys() if fresh[k] != current[k])
    return changed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if services/ differs from a fresh generation")
    args = parser.parse_args()
    if args.check:
        changed = drift()
        if changed:
            raise SystemExit("generated code drifted from proto/ (run `make protos`):\n  " + "\n  ".join(changed))
        return
    for stale in committed_files():
        stale.unlink()
    generate(OUT_DIR)


if __name__ == "__main__":
    main()
