"""`vault_unavailable`: the one mapping of a Vault failure to the caller's status, shared by every service."""

from __future__ import annotations

import grpc
import pytest

from portico.runtime.vault import (
    VaultAuthError,
    VaultCasMismatch,
    VaultError,
    VaultSealed,
    VaultUnavailable,
    vault_unavailable,
)


@pytest.mark.parametrize(("error", "reason"), [
    (VaultSealed("vault at http://10.0.0.7:8200 sealed", status=503), "VAULT_SEALED"),
    (VaultUnavailable("connection refused to http://10.0.0.7:8200", status=None), "VAULT_UNAVAILABLE"),
    (VaultAuthError("permission denied", status=403), "VAULT_PERMISSION_DENIED"),
    (VaultCasMismatch("cas", status=400), "VAULT_ERROR"),
    (VaultError("tls handshake failed"), "VAULT_ERROR"),
])
def test_each_cause_has_its_reason_and_the_text_names_only_the_operation(error: VaultError, reason: str) -> None:
    status = vault_unavailable(error, "read the syndr account")
    assert status.code == grpc.StatusCode.UNAVAILABLE and status.reason == reason
    assert "read the syndr account" in str(status)
    assert str(error) not in str(status)  # Vault's own words (addresses, paths) stay in the logs
