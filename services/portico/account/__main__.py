"""`python -m portico.account` / `portico-account`: run the account service."""

from __future__ import annotations

from portico.account.service import AccountApp
from portico.account.settings import AccountSettings
from portico.runtime.main import run_service


def main() -> None:
    run_service("account", AccountSettings.from_env, AccountApp)


if __name__ == "__main__":
    main()
