"""`python -m portico.signer` / `portico-signer`: run the signer service."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from portico.runtime.config import ConfigError
from portico.runtime.logs import configure_logging
from portico.runtime.telemetry import configure_tracing
from portico.signer.service import SignerApp
from portico.signer.settings import SignerSettings


def main() -> None:
    env = dict(os.environ)
    try:
        configure_logging("signer", env)
        provider = configure_tracing("portico-signer", env)
        settings = SignerSettings.from_env(env)
    except (ConfigError, ValueError) as exc:
        print(f"portico-signer: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    _configure_audit(settings)
    try:
        asyncio.run(_serve(settings, env))
    finally:
        provider.shutdown()


async def _serve(settings: SignerSettings, env: dict[str, str]) -> None:
    # grpc.aio objects bind to the running loop, so the app is built inside it.
    await SignerApp(settings, env).run()


def _configure_audit(settings: SignerSettings) -> None:
    if settings.audit_log is None:
        return
    from portico.runtime.logs import JsonFormatter

    settings.audit_log.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(settings.audit_log, encoding="utf-8")
    handler.setFormatter(JsonFormatter("signer"))
    logging.getLogger("portico.signer.audit").addHandler(handler)


if __name__ == "__main__":
    main()
