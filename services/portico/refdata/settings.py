"""The reference-data service's configuration (`PORTICO_REFDATA_*`, plus the shared variables)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from portico.runtime.config import ConfigError, setting
from portico.runtime.server import ServerSettings
from portico.venues.syndr.settings import SYNDR_HTTP_URL

__all__ = ["DEFAULT_PORT", "RefdataSettings"]

DEFAULT_PORT = 50051
_SCOPE = "refdata"

DB_PATH = setting("PORTICO_REFDATA_DB", "var/refdata/instruments.sqlite3",
                  "SQLite file of the instrument database (used unless a PostgreSQL DSN is set).", scope=_SCOPE)
DSN = setting("PORTICO_REFDATA_DSN", "", "PostgreSQL DSN of the instrument database, e.g. "
              "`postgresql://portico@db/portico`; when set, SQLite is not used.", scope=_SCOPE, secret=True)
SYNC_ON_START = setting("PORTICO_REFDATA_SYNC_ON_START", "false",
                        "Sync every configured venue once at start, before reporting SERVING.", scope=_SCOPE)
SYNC_INTERVAL = setting("PORTICO_REFDATA_SYNC_INTERVAL_SECONDS", "0",
                        "Re-sync every configured venue this often (0: only on request).", scope=_SCOPE)
VENUES = setting("PORTICO_REFDATA_VENUES", "syndr", "Venues this service syncs, comma separated; empty: it only "
                 "serves what its database holds (SyncInstruments is FAILED_PRECONDITION).", scope=_SCOPE)


@dataclass(frozen=True)
class RefdataSettings:
    server: ServerSettings
    sqlite_path: Path
    dsn: str | None
    sync_on_start: bool
    sync_interval_s: float
    venues: tuple[str, ...]
    syndr_http_url: str

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RefdataSettings:
        venues = tuple(v.strip().lower() for v in VENUES.get_str(env).split(",") if v.strip())
        unknown = [v for v in venues if v != "syndr"]
        if unknown:
            raise ConfigError(f"{VENUES.name}: no adapter for {', '.join(unknown)} (known: syndr)")
        return cls(
            server=ServerSettings.from_env(env, DEFAULT_PORT),
            sqlite_path=Path(DB_PATH.get_str(env)),
            dsn=DSN.get_str(env) or None,
            sync_on_start=SYNC_ON_START.get_bool(env),
            sync_interval_s=SYNC_INTERVAL.get_float(env, minimum=0),
            venues=venues,
            syndr_http_url=SYNDR_HTTP_URL.get_str(env),
        )
