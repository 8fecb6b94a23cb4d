"""`python -m portico.signer` / `portico-signer`: run the signer service."""

from __future__ import annotations

import portico.runtime.grpc_core  # noqa: F401  first: gRPC reads its core options at import

# isort: split
from portico.runtime.main import run_service
from portico.signer.service import SignerApp
from portico.signer.settings import SignerSettings


def main() -> None:
    # The audit file (PORTICO_SIGNER_AUDIT_LOG) is the app's own (portico.signer.audit.AuditLog), opened at start.
    run_service("signer", SignerSettings.from_env, SignerApp)


if __name__ == "__main__":
    main()
