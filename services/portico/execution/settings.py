"""The execution service's configuration (`PORTICO_EXECUTION_*`, plus the shared server and Vault variables)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from portico.runtime.client import SERVICE_TOKEN, ChannelTls
from portico.runtime.config import ConfigError, setting
from portico.runtime.server import ServerSettings
from portico.runtime.vault import VaultSettings
from portico.venues.syndr.settings import SYNDR_HTTP_URL, SYNDR_WS_URL, rate_share

__all__ = ["DEFAULT_PORT", "ExecutionSettings"]

DEFAULT_PORT = 50053
_SCOPE = "execution"

JOURNAL_DB = setting("PORTICO_EXECUTION_JOURNAL_DB", "var/execution/journal.sqlite3",
                     "SQLite file of the order journal (must persist across restarts).", scope=_SCOPE)
JOURNAL_DSN = setting("PORTICO_EXECUTION_JOURNAL_DSN", "", "PostgreSQL DSN of the order journal; wins over the "
                      "SQLite file.", scope=_SCOPE, secret=True)
JOURNAL_SYNC = setting("PORTICO_EXECUTION_JOURNAL_SYNC", "NORMAL", "SQLite `synchronous` of the journal (WAL): "
                       "`NORMAL` survives process crashes, `FULL` also power loss.", scope=_SCOPE)
SIGNER_ADDR = setting("PORTICO_EXECUTION_SIGNER_ADDR", "127.0.0.1:50055", "host:port of the signer.", scope=_SCOPE)
REFDATA_ADDR = setting("PORTICO_EXECUTION_REFDATA_ADDR", "127.0.0.1:50051",
                       "host:port of reference data, which every order is checked against.", scope=_SCOPE)
ORDER_TTL_S = setting("PORTICO_EXECUTION_ORDER_TTL_SECONDS", "86400",
                      "Signed orders expire at the venue this long after signing: one still resting then is taken "
                      "off the book (the venue's `expiration`: \"after which trade will expire if not executed\").",
                      scope=_SCOPE)
VENUE_TIMEOUT_MS = setting("PORTICO_EXECUTION_VENUE_TIMEOUT_MS", "5000", "How long a venue call may take before its "
                           "outcome is treated as unknown.", scope=_SCOPE)
RECONCILE_S = setting("PORTICO_EXECUTION_RECONCILE_SECONDS", "1", "How often orders of unknown outcome are "
                      "reconciled against the venue.", scope=_SCOPE)
INSTRUMENT_CACHE_S = setting("PORTICO_EXECUTION_INSTRUMENT_CACHE_SECONDS", "10", "Longest an instrument read from "
                             "reference data is used (reloaded in the background ahead of that). A change reference "
                             "data publishes applies at once: the service watches it.", scope=_SCOPE)
CREDENTIALS_CACHE_S = setting("PORTICO_EXECUTION_CREDENTIALS_CACHE_SECONDS", "30", "Longest venue credentials read "
                              "from Vault are used; they are reloaded in the background ahead of that.", scope=_SCOPE)
VENUE_RATE_SHARE = setting("PORTICO_EXECUTION_VENUE_RATE_SHARE", "0.8", "Share (0-1) of the venue's rate limit per "
                           "API key (Syndr: 1,000 order calls or 200 reads a second) this service keeps under, so "
                           "the venue never refuses the key; waiting calls go cancels first, and one still waiting "
                           "after the venue timeout is not sent (RESOURCE_EXHAUSTED). The account service uses the "
                           "same keys with its own share: keep the two at or under 1. 0 turns it off.", scope=_SCOPE)


@dataclass(frozen=True)
class ExecutionSettings:
    """Everything the execution service needs to start."""

    server: ServerSettings
    vault: VaultSettings
    journal_db: Path
    journal_dsn: str | None
    journal_sync: str
    signer_addr: str
    refdata_addr: str
    service_token: str = field(repr=False)  # a bearer token: never in a repr
    syndr_http_url: str
    syndr_ws_url: str
    order_ttl_s: float
    venue_timeout_s: float
    reconcile_s: float
    instrument_cache_s: float
    credentials_cache_s: float
    venue_rate_share: float
    upstream_tls: ChannelTls | None = None  # PORTICO_UPSTREAM_TLS_*: the signer and reference data channels

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ExecutionSettings:
        sync = JOURNAL_SYNC.get_str(env).upper()
        if sync not in ("FULL", "NORMAL"):
            raise ConfigError(f"{JOURNAL_SYNC.name} must be FULL or NORMAL")
        token = SERVICE_TOKEN.get_str(env)
        if not token:
            raise ConfigError(f"{SERVICE_TOKEN.name} is required: execution calls the signer and reference data")
        return cls(
            server=ServerSettings.from_env(env, DEFAULT_PORT),
            vault=VaultSettings.from_env(env),
            journal_db=Path(JOURNAL_DB.get_str(env)),
            journal_dsn=JOURNAL_DSN.get_str(env) or None,
            journal_sync=sync,
            signer_addr=SIGNER_ADDR.get_str(env),
            refdata_addr=REFDATA_ADDR.get_str(env),
            service_token=token,
            syndr_http_url=SYNDR_HTTP_URL.get_str(env),
            syndr_ws_url=SYNDR_WS_URL.get_str(env),
            order_ttl_s=ORDER_TTL_S.get_float(env, minimum=1),
            venue_timeout_s=VENUE_TIMEOUT_MS.get_float(env, minimum=1) / 1000,
            reconcile_s=RECONCILE_S.get_float(env, minimum=0.05),
            instrument_cache_s=INSTRUMENT_CACHE_S.get_float(env, minimum=0),
            credentials_cache_s=CREDENTIALS_CACHE_S.get_float(env, minimum=0),
            venue_rate_share=rate_share(VENUE_RATE_SHARE, env),
            upstream_tls=ChannelTls.from_env(env),
        )
