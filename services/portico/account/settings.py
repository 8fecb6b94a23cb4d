"""The account service's configuration (`PORTICO_ACCOUNT_*`, plus the shared server and Vault variables)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from portico.account.leases import DEFAULT_TTL_S as LEASE_TTL_S
from portico.runtime.client import SERVICE_TOKEN, ChannelTls
from portico.runtime.config import ConfigError, setting
from portico.runtime.server import ServerSettings
from portico.runtime.vault import VaultSettings
from portico.venues.syndr.settings import SYNDR_HTTP_URL, SYNDR_WS_URL, rate_share

__all__ = ["DEACTIVATE_ATTEMPTS", "DEACTIVATE_PAUSE_S", "DEFAULT_PORT", "AccountSettings", "completion_wait_s"]

DEFAULT_PORT = 50054
_SCOPE = "account"

SIGNER_ADDR = setting("PORTICO_ACCOUNT_SIGNER_ADDR", "127.0.0.1:50055", "host:port of the signer.", scope=_SCOPE)
REFDATA_ADDR = setting("PORTICO_ACCOUNT_REFDATA_ADDR", "127.0.0.1:50051",
                       "host:port of reference data (leverage is checked against the instrument's maximum).",
                       scope=_SCOPE)
SIGNER_KEY_PREFIX = setting("PORTICO_ACCOUNT_SIGNER_KEY_PREFIX", "portico/signer",
                            "KV v2 prefix of the signer's keys, where RegisterSigningKey creates the new key "
                            "(the same as the signer's `PORTICO_SIGNER_KEY_PREFIX`).", scope=_SCOPE)
VENUE_TIMEOUT_MS = setting("PORTICO_ACCOUNT_VENUE_TIMEOUT_MS", "5000",
                           "How long a venue call may take; with PORTICO_VAULT_TIMEOUT at most 30 s (half the "
                           "account lease a signing-key registration holds).", scope=_SCOPE)
CREDENTIALS_CACHE_S = setting("PORTICO_ACCOUNT_CREDENTIALS_CACHE_SECONDS", "30", "Longest venue credentials "
                              "read from Vault are used; they are reloaded in the background ahead of that.",
                              scope=_SCOPE)
VENUE_RATE_SHARE = setting("PORTICO_ACCOUNT_VENUE_RATE_SHARE", "0.15", "Share (0-1) of the venue's rate limit per "
                           "API key this service keeps under (see PORTICO_EXECUTION_VENUE_RATE_SHARE, which shares "
                           "the keys); a call still waiting after the venue timeout is RESOURCE_EXHAUSTED. "
                           "0 turns it off.", scope=_SCOPE)


# CreateApiKey's rollback when Vault did not take the new secret: this many `private/deactivate_api_key` calls,
# DEACTIVATE_PAUSE_S x the attempt apart (the service makes them; the completion wait counts them).
DEACTIVATE_ATTEMPTS = 3
DEACTIVATE_PAUSE_S = 0.2


def completion_wait_s(venue_timeout_s: float, vault_timeout_s: float) -> float:
    """How long shutdown waits for venue changes whose callers went away (`Completions`) before cancelling them:
    the longest such change with the venue and Vault slow to the end of their timeouts. A deployment's
    termination grace must leave room for it (tests/integration/test_deploy.py checks the manifests).

    A Vault call ends within 2x its timeout (VaultSession's deadline); a private venue call within 2x the venue
    timeout (the wait for this process's rate budget, then the call)."""
    vault_call, venue_call = 2 * vault_timeout_s, 2 * venue_timeout_s
    # RegisterSigningKey: no record write starts with less than a Vault timeout left of the lease, so the writes
    # (5 tries) end within the lease plus that; then the lease is released.
    registration = LEASE_TTL_S + vault_timeout_s + vault_call
    # CreateApiKey: the account's record, the venue's create, the secret's write, then the rollback.
    create_api_key = (2 * vault_call + (1 + DEACTIVATE_ATTEMPTS) * venue_call
                      + DEACTIVATE_PAUSE_S * sum(range(1, DEACTIVATE_ATTEMPTS)))
    # SetPortfolioMargin: the account's record, the mode, the toggle, the lease's release.
    portfolio_margin = 2 * vault_call + 2 * venue_call
    return max(registration, create_api_key, portfolio_margin)


@dataclass(frozen=True)
class AccountSettings:
    """Everything the account service needs to start."""

    server: ServerSettings
    vault: VaultSettings
    signer_addr: str
    refdata_addr: str
    signer_key_prefix: str
    service_token: str = field(repr=False)  # a bearer token: never in a repr
    syndr_http_url: str
    syndr_ws_url: str
    venue_timeout_s: float
    credentials_cache_s: float
    venue_rate_share: float
    upstream_tls: ChannelTls | None = None  # PORTICO_UPSTREAM_TLS_*: the signer and reference data channels

    @property
    def completion_wait_s(self) -> float:
        return completion_wait_s(self.venue_timeout_s, self.vault.timeout_s)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> AccountSettings:
        token = SERVICE_TOKEN.get_str(env)
        if not token:
            raise ConfigError(f"{SERVICE_TOKEN.name} is required: the account service calls the signer and "
                              "reference data")
        prefix = SIGNER_KEY_PREFIX.get_str(env).strip("/")
        if not prefix:
            raise ConfigError(f"{SIGNER_KEY_PREFIX.name} must not be empty")
        vault = VaultSettings.from_env(env)
        venue_timeout_s = VENUE_TIMEOUT_MS.get_float(env, minimum=1) / 1000
        if venue_timeout_s + vault.timeout_s > LEASE_TTL_S / 2:
            # A signing-key registration holds the account's lease (account/leases.py) through its venue call and
            # the Vault write after it, and stops short when less than both timeouts are left of it.
            raise ConfigError(f"{VENUE_TIMEOUT_MS.name} ({venue_timeout_s:g} s) and PORTICO_VAULT_TIMEOUT "
                              f"({vault.timeout_s:g} s) must add up to at most {LEASE_TTL_S / 2:g} s, half the "
                              "account lease: longer, and key registrations could not finish within one")
        return cls(
            server=ServerSettings.from_env(env, DEFAULT_PORT),
            vault=vault,
            signer_addr=SIGNER_ADDR.get_str(env),
            refdata_addr=REFDATA_ADDR.get_str(env),
            signer_key_prefix=prefix,
            service_token=token,
            syndr_http_url=SYNDR_HTTP_URL.get_str(env),
            syndr_ws_url=SYNDR_WS_URL.get_str(env),
            venue_timeout_s=venue_timeout_s,
            credentials_cache_s=CREDENTIALS_CACHE_S.get_float(env, minimum=0),
            venue_rate_share=rate_share(VENUE_RATE_SHARE, env),
            upstream_tls=ChannelTls.from_env(env),
        )
