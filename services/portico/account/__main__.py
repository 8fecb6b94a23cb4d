"""`python -m portico.account` / `portico-account`: run the account service."""

from __future__ import annotations

import portico.runtime.grpc_core  # noqa: F401  first: gRPC reads its core options at import

# isort: split
from portico.account.service import AccountApp
from portico.account.settings import AccountSettings
from portico.runtime.main import run_service


def main() -> None:
    run_service("account", AccountSettings.from_env, AccountApp)


if __name__ == "__main__":
    main()
