"""`python -m portico.signer` / `portico-signer`: run the signer service."""

from __future__ import annotations

import portico.runtime.grpc_core  # noqa: F401  first: gRPC reads its core options at import

# isort: split
import logging

from portico.runtime.logs import JsonFormatter
from portico.runtime.main import run_service
from portico.signer.service import SignerApp
from portico.signer.settings import SignerSettings


def _configure_audit(settings: SignerSettings) -> None:
    """Also write the audit lines to their own file, when one is configured."""
    if settings.audit_log is None:
        return
    settings.audit_log.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(settings.audit_log, encoding="utf-8")
    handler.setFormatter(JsonFormatter("signer"))
    logging.getLogger("portico.signer.audit").addHandler(handler)


def main() -> None:
    run_service("signer", SignerSettings.from_env, SignerApp, prepare=_configure_audit)


if __name__ == "__main__":
    main()
