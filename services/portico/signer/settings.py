"""The signer's configuration (`PORTICO_SIGNER_*`, plus the shared server and Vault variables)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from portico.runtime.config import ConfigError, setting
from portico.runtime.server import ServerSettings
from portico.runtime.vault import VaultSettings

__all__ = ["DEFAULT_PORT", "SignerSettings"]

DEFAULT_PORT = 50055
_SCOPE = "signer"

KEY_PREFIX = setting("PORTICO_SIGNER_KEY_PREFIX", "portico/signer",
                     "KV v2 path prefix of signing keys (`<prefix>/keys/<id>`) and policies.", scope=_SCOPE)
WATERMARK_DB = setting("PORTICO_SIGNER_WATERMARK_DB", "var/signer/watermarks.sqlite3",
                       "SQLite file of the salt watermarks (must persist across restarts).", scope=_SCOPE)
WATERMARK_SYNC = setting(
    "PORTICO_SIGNER_WATERMARK_SYNC", "NORMAL",
    "SQLite `synchronous` of the watermark ledger (WAL): `NORMAL` survives process crashes; `FULL` also power loss, "
    "at an fsync per batch (about a fifth less throughput in tests/bench/bench_signer.py here).", scope=_SCOPE)
WATERMARK_RETENTION = setting(
    "PORTICO_SIGNER_WATERMARK_RETENTION_SECONDS", "3600",
    "How long a salt watermark is kept after its order's `expiration` (the margin for clock skew between signer and "
    "venue); then it is pruned and the salt may sign again. At least 60. Watermarks of payloads without an "
    "expiration are kept for ever.", scope=_SCOPE)
KEY_CACHE_SECONDS = setting("PORTICO_SIGNER_KEY_CACHE_SECONDS", "30",
                            "Longest a loaded key and its policy are used; they are reloaded from Vault in "
                            "the background ahead of that.",
                            scope=_SCOPE)
VAULT_CHECK_SECONDS = setting("PORTICO_SIGNER_VAULT_CHECK_SECONDS", "2",
                              "How often the signer checks that Vault is up, unsealed and accepts its token (readiness "
                              "follows); keys are dropped when it does not.",
                              scope=_SCOPE)
MAX_PAYLOAD_BYTES = setting("PORTICO_SIGNER_MAX_PAYLOAD_BYTES", "65536",
                            "Largest typed-data JSON accepted by `Sign`.", scope=_SCOPE)
AUDIT_LOG = setting("PORTICO_SIGNER_AUDIT_LOG", "",
                    "Also append the audit lines (one per signature) to this file; a signature whose line cannot be "
                    "written is not returned (UNAVAILABLE, AUDIT_UNAVAILABLE).", scope=_SCOPE)


@dataclass(frozen=True)
class SignerSettings:
    """Everything the signer needs to start."""

    server: ServerSettings
    vault: VaultSettings
    key_prefix: str
    watermark_db: Path
    watermark_sync: str
    watermark_retention_s: float
    key_cache_s: float
    vault_check_s: float
    max_payload_bytes: int
    audit_log: Path | None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SignerSettings:
        sync = WATERMARK_SYNC.get_str(env).upper()
        if sync not in ("FULL", "NORMAL"):
            raise ConfigError(f"{WATERMARK_SYNC.name} must be FULL or NORMAL")
        prefix = KEY_PREFIX.get_str(env).strip("/")
        if not prefix:
            raise ConfigError(f"{KEY_PREFIX.name} must not be empty")
        return cls(
            server=ServerSettings.from_env(env, DEFAULT_PORT),
            vault=VaultSettings.from_env(env),
            key_prefix=prefix,
            watermark_db=Path(WATERMARK_DB.get_str(env)),
            watermark_sync=sync,
            watermark_retention_s=WATERMARK_RETENTION.get_float(env, minimum=60),
            key_cache_s=KEY_CACHE_SECONDS.get_float(env, minimum=0),
            vault_check_s=VAULT_CHECK_SECONDS.get_float(env, minimum=0.05),
            max_payload_bytes=MAX_PAYLOAD_BYTES.get_int(env, minimum=256),
            audit_log=AUDIT_LOG.get_path(env),
        )
