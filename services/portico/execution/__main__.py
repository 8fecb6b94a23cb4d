"""`python -m portico.execution` / `portico-execution`: run the order-execution service."""

from __future__ import annotations

import portico.runtime.grpc_core  # noqa: F401  first: gRPC reads its core options at import

# isort: split
from portico.execution.service import ExecutionApp
from portico.execution.settings import ExecutionSettings
from portico.runtime.main import run_service


def main() -> None:
    run_service("execution", ExecutionSettings.from_env, ExecutionApp)


if __name__ == "__main__":
    main()
