"""`python -m portico.refdata` / `portico-refdata`: run the reference-data service."""

from __future__ import annotations

import portico.runtime.grpc_core  # noqa: F401  first: gRPC reads its core options at import

# isort: split
from portico.refdata.service import RefdataApp
from portico.refdata.settings import RefdataSettings
from portico.runtime.main import run_service


def main() -> None:
    run_service("refdata", RefdataSettings.from_env, RefdataApp)


if __name__ == "__main__":
    main()
