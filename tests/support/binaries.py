"""Command-line tools the tests and benchmarks run: the copy installed in this virtual environment first."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

__all__ = ["installed_binary", "py_spy"]


def installed_binary(name: str) -> str | None:
    """`name` beside this interpreter (installed from the project's dependencies), else on PATH, else None."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)


def py_spy() -> str:
    """py-spy for the benchmarks' --profile (not a project dependency)."""
    path = installed_binary("py-spy")
    if path is None:
        raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
    return path
