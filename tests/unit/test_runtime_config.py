"""Configuration, token config and logs: errors name the variable, never a secret."""

from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path

import pytest
from opentelemetry import trace

from portico.account.settings import AccountSettings
from portico.cli import _all_settings_table
from portico.execution.settings import ExecutionSettings
from portico.runtime.auth import TokenAuthenticator, hash_token, new_token
from portico.runtime.config import ConfigError
from portico.runtime.logs import JsonFormatter
from portico.runtime.server import ServerSettings
from portico.signer.settings import SignerSettings

REPO = Path(__file__).resolve().parents[2]


def test_readme_configuration_table_matches_the_code() -> None:
    readme = (REPO / "README.md").read_text()
    assert _all_settings_table() in readme, "regenerate the README table with `portico config-table`"


def test_every_declared_variable_is_in_the_table() -> None:
    table = _all_settings_table()
    code = "\n".join(p.read_text() for p in (REPO / "services" / "portico").rglob("*.py") if "/v1/" not in str(p))
    for name in set(re.findall(r'"(PORTICO_[A-Z0-9_]+)"', code)) - {"PORTICO_VAULT_"}:  # a prefix
        assert f"`{name}`" in table, name


@pytest.mark.parametrize(("env", "needle"), [
    ({"PORTICO_SHUTDOWN_GRACE_SECONDS": "soon"}, "PORTICO_SHUTDOWN_GRACE_SECONDS"),
    ({"PORTICO_TLS_CERT_FILE": "/x.pem"}, "PORTICO_TLS_KEY_FILE"),
    ({"PORTICO_TLS_CLIENT_CA_FILE": "/ca.pem"}, "PORTICO_TLS_CERT_FILE"),
    ({"PORTICO_MAX_MESSAGE_BYTES": "12"}, "PORTICO_MAX_MESSAGE_BYTES"),
])
def test_server_settings_errors_name_the_variable(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        ServerSettings.from_env(env, 1)


def test_signer_settings_validation() -> None:
    base = {"PORTICO_VAULT_ADDR": "http://127.0.0.1:8200", "PORTICO_VAULT_TOKEN": "s.secret-value"}
    assert SignerSettings.from_env(base).server.listen_addr == "127.0.0.1:50055"
    with pytest.raises(ConfigError, match="PORTICO_SIGNER_WATERMARK_SYNC"):
        SignerSettings.from_env({**base, "PORTICO_SIGNER_WATERMARK_SYNC": "OFF"})
    settings = SignerSettings.from_env(base)
    assert "secret-value" not in repr(settings)


@pytest.mark.parametrize("value", ["1.5", "-0.1", "0.0001", "half"])
@pytest.mark.parametrize(("variable", "settings"), [
    ("PORTICO_EXECUTION_VENUE_RATE_SHARE", ExecutionSettings),
    ("PORTICO_ACCOUNT_VENUE_RATE_SHARE", AccountSettings),
])
def test_venue_rate_share_is_a_usable_share(variable: str, settings: type[ExecutionSettings | AccountSettings],
                                            value: str) -> None:
    base = {"PORTICO_VAULT_ADDR": "http://127.0.0.1:8200", "PORTICO_VAULT_TOKEN": "t", "PORTICO_SERVICE_TOKEN": "t"}
    assert settings.from_env({**base, variable: "0"}).venue_rate_share == 0
    assert settings.from_env({**base, variable: "1"}).venue_rate_share == 1
    with pytest.raises(ConfigError, match=variable):
        settings.from_env({**base, variable: value})


@pytest.mark.parametrize("entries", [
    [{"name": "", "sha256": "0" * 64, "scopes": ["read"]}],
    [{"name": "a", "sha256": "abc", "scopes": ["read"]}],
    [{"name": "a", "sha256": "0" * 64, "scopes": ["root"]}],
    [{"name": "a", "sha256": "0" * 64}],
])
def test_token_config_is_validated(entries: list[dict[str, object]]) -> None:
    with pytest.raises(ConfigError):
        TokenAuthenticator(entries)


def test_token_config_from_env_and_file(tmp_path: Path) -> None:
    token = new_token()
    entry = [{"name": "desk", "sha256": hash_token(token), "scopes": ["read", "trade"]}]
    from_env = TokenAuthenticator.from_env({"PORTICO_AUTH_TOKENS": json.dumps(entry)})
    principal = from_env.authenticate([("authorization", f"Bearer {token}")])
    assert principal.name == "desk" and principal.scopes == {"read", "trade"}
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps(entry))
    assert len(TokenAuthenticator.from_env({"PORTICO_AUTH_TOKENS_FILE": str(path)})) == 1
    with pytest.raises(ConfigError, match="PORTICO_AUTH_TOKENS"):
        TokenAuthenticator.from_env({"PORTICO_AUTH_TOKENS": "{not json"})


def test_json_logs_carry_trace_ids_and_redact_secret_named_fields() -> None:
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter("unit"))
    logger = logging.getLogger("portico.unit-test")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    with trace.get_tracer("unit").start_as_current_span("op") as span:
        logger.info("hello", extra={"api_secret": "s3cr3t", "vault_token": "hvs.x", "key_id": "k1"})
    logger.removeHandler(handler)
    line = json.loads(buffer.getvalue())
    assert line["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert line["key_id"] == "k1"
    assert line["api_secret"] == line["vault_token"] == "[redacted]"
    assert "s3cr3t" not in buffer.getvalue()


def test_event_loop_choice() -> None:
    import asyncio

    import uvloop

    from portico.runtime.main import event_loop_factory, run_in_event_loop

    async def loop_type() -> type:
        return type(asyncio.get_running_loop())

    assert run_in_event_loop(loop_type(), {}) is uvloop.Loop  # the default
    assert run_in_event_loop(loop_type(), {"PORTICO_EVENT_LOOP": "asyncio"}) is not uvloop.Loop
    with pytest.raises(ConfigError, match="PORTICO_EVENT_LOOP must be uvloop or asyncio"):
        event_loop_factory({"PORTICO_EVENT_LOOP": "tokio"})
