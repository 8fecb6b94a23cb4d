"""`python -m portico.marketdata` / `portico-marketdata`: run the market-data service."""

from __future__ import annotations

import portico.runtime.grpc_core  # noqa: F401  first: gRPC reads its core options at import

# isort: split
from portico.marketdata.service import MarketDataApp, MarketDataSettings
from portico.runtime.main import run_service


def main() -> None:
    run_service("marketdata", MarketDataSettings.from_env, MarketDataApp)


if __name__ == "__main__":
    main()
