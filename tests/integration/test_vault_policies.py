"""The services' Vault policies in deploy/vault/, applied to a real OpenBao: each reaches what it needs, no more.

The README's security claims rest on these files (the signer alone reads keys; execution reads only account
records; the account service and a key administrator may create a new key but not read or change one), so
they are checked against Vault's own enforcement rather than read.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

import hvac
import hvac.exceptions
import pytest
from tests.support.openbao import OpenBaoDevServer

from portico.account.leases import lease_path
from portico.up import VAULT_POLICY_DIR

VENUE_RECORD = "portico/venues/syndr/accounts/0xabc"
API_KEY_SECRET = "portico/venues/syndr/api-keys/0xabc/key-1"
SIGNER_KEY = "portico/signer/keys/desk-1"
SIGNER_KEY_POLICY = "portico/signer/policies/desk-1"


@pytest.fixture(scope="module")
def vault(openbao: OpenBaoDevServer) -> OpenBaoDevServer:
    root = openbao.client()
    for path in (VENUE_RECORD, API_KEY_SECRET, SIGNER_KEY, SIGNER_KEY_POLICY):
        root.secrets.kv.v2.create_or_update_secret(path=path, secret={"v": "1"}, mount_point="secret")
    return openbao


def token_for(vault: OpenBaoDevServer, policy: str) -> hvac.Client:
    name = f"test-{policy}-{secrets.token_hex(3)}"
    vault.write_policy(name, (VAULT_POLICY_DIR / f"{policy}.hcl").read_text())
    token = vault.client().auth.token.create(policies=[name], ttl="5m")["auth"]["client_token"]
    return vault.client(token)


def allowed(action: Callable[[], object]) -> bool:
    try:
        action()
    except hvac.exceptions.Forbidden:
        return False
    return True


def read(client: hvac.Client, path: str) -> Callable[[], object]:
    return lambda: client.secrets.kv.v2.read_secret_version(path=path, mount_point="secret",
                                                             raise_on_deleted_version=True)


def write(client: hvac.Client, path: str) -> Callable[[], object]:
    return lambda: client.secrets.kv.v2.create_or_update_secret(path=path, secret={"v": "2"}, mount_point="secret")


def test_execution_reads_account_records_only(vault: OpenBaoDevServer) -> None:
    execution = token_for(vault, "execution")
    assert allowed(read(execution, VENUE_RECORD))
    assert not allowed(read(execution, API_KEY_SECRET))
    assert not allowed(write(execution, VENUE_RECORD))
    assert not allowed(read(execution, SIGNER_KEY))
    assert not allowed(read(execution, SIGNER_KEY_POLICY))


def test_signer_reads_keys_and_nothing_of_the_venues(vault: OpenBaoDevServer) -> None:
    signer = token_for(vault, "signer")
    assert allowed(read(signer, SIGNER_KEY))
    assert allowed(read(signer, SIGNER_KEY_POLICY))
    assert not allowed(write(signer, SIGNER_KEY))
    assert not allowed(read(signer, VENUE_RECORD))
    assert not allowed(read(signer, API_KEY_SECRET))


def test_key_admin_adds_keys_and_policies_but_never_reads_a_private_key(vault: OpenBaoDevServer) -> None:
    admin = token_for(vault, "key-admin")
    new_key = f"portico/signer/keys/new-{secrets.token_hex(3)}"
    assert allowed(write(admin, new_key))
    assert allowed(lambda: admin.secrets.kv.v2.update_metadata(path=new_key, custom_metadata={"address": "0x1"},
                                                               mount_point="secret"))
    assert allowed(lambda: admin.secrets.kv.v2.read_secret_metadata(path=SIGNER_KEY, mount_point="secret"))
    assert allowed(lambda: admin.secrets.kv.v2.list_secrets(path="portico/signer/keys", mount_point="secret"))
    assert allowed(write(admin, SIGNER_KEY_POLICY))
    assert not allowed(read(admin, SIGNER_KEY))
    assert not allowed(read(admin, new_key))
    assert not allowed(write(admin, SIGNER_KEY))  # exists: keys are never overwritten
    assert not allowed(read(admin, VENUE_RECORD))


def test_account_creates_new_keys_but_never_reads_or_changes_one(vault: OpenBaoDevServer) -> None:
    account = token_for(vault, "account")
    assert allowed(read(account, VENUE_RECORD))
    assert allowed(write(account, VENUE_RECORD))
    assert allowed(write(account, f"portico/venues/syndr/api-keys/0xabc/key-{secrets.token_hex(3)}"))
    assert allowed(write(account, f"portico/signer/keys/new-{secrets.token_hex(3)}"))
    assert not allowed(read(account, SIGNER_KEY))
    assert not allowed(write(account, SIGNER_KEY))  # exists: "create" does not cover it
    assert not allowed(write(account, SIGNER_KEY_POLICY))


def test_account_takes_leases_with_check_and_set_writes_and_execution_cannot(vault: OpenBaoDevServer) -> None:
    """Account leases (account/leases.py) are KV v2 check-and-set writes under portico/venues/<venue>/leases/: the
    first with cas=0 (create), then on the version read (update). Execution takes none and may touch none."""
    path = lease_path("syndr", f"0x{secrets.token_hex(20)}", "signing-key")
    account = token_for(vault, "account")
    kv = account.secrets.kv.v2
    assert allowed(lambda: kv.create_or_update_secret(path=path, secret={"holder": "a"}, cas=0, mount_point="secret"))
    assert allowed(read(account, path))
    assert allowed(lambda: kv.create_or_update_secret(path=path, secret={"holder": ""}, cas=1, mount_point="secret"))
    execution = token_for(vault, "execution")
    assert not allowed(read(execution, path))
    assert not allowed(write(execution, path))
    assert not allowed(write(execution, lease_path("syndr", f"0x{secrets.token_hex(20)}", "signing-key")))
