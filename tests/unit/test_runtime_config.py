"""Configuration, token config and logs: errors name the variable, never a secret."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import grpc
import pytest
from opentelemetry import trace

from portico.account.settings import AccountSettings
from portico.cli import _all_settings_table
from portico.execution.settings import ExecutionSettings
from portico.runtime.auth import TokenAuthenticator, hash_token, new_token
from portico.runtime.config import ConfigError
from portico.runtime.errors import Unauthenticated
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
    # Values gRPC would misread or choke on:
    ({"PORTICO_LISTEN_ADDR": "127.0.0.1"}, "PORTICO_LISTEN_ADDR must be host:port"),  # gRPC would bind 443
    ({"PORTICO_LISTEN_ADDR": "127.0.0.1:99999"}, "PORTICO_LISTEN_ADDR must be host:port"),  # gRPC: port 34463
    ({"PORTICO_LISTEN_ADDR": "127.0.0.1:-1"}, "PORTICO_LISTEN_ADDR must be host:port"),  # gRPC: port 65535
    ({"PORTICO_LISTEN_ADDR": ":50051"}, "PORTICO_LISTEN_ADDR must be host:port"),
    ({"PORTICO_LISTEN_ADDR": "nonsense"}, "PORTICO_LISTEN_ADDR must be host:port"),
    ({"PORTICO_MAX_MESSAGE_BYTES": "99999999999"}, "PORTICO_MAX_MESSAGE_BYTES must be at most 2147483647"),
    ({"PORTICO_SHUTDOWN_GRACE_SECONDS": "nan"}, "PORTICO_SHUTDOWN_GRACE_SECONDS must be a finite number"),
    ({"PORTICO_SHUTDOWN_GRACE_SECONDS": "inf"}, "PORTICO_SHUTDOWN_GRACE_SECONDS must be a finite number"),
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


def test_account_timeouts_leave_a_key_registration_room_in_its_lease() -> None:
    """A registration holds the account's 60 s lease through its venue call and the Vault write after it: with
    timeouts adding up to more than half of it, every registration would stop short (LEASE_EXPIRED)."""
    base = {"PORTICO_VAULT_ADDR": "http://127.0.0.1:8200", "PORTICO_VAULT_TOKEN": "t", "PORTICO_SERVICE_TOKEN": "t"}
    assert AccountSettings.from_env({**base, "PORTICO_ACCOUNT_VENUE_TIMEOUT_MS": "25000"}).venue_timeout_s == 25
    with pytest.raises(ConfigError, match=r"PORTICO_ACCOUNT_VENUE_TIMEOUT_MS .* PORTICO_VAULT_TIMEOUT"):
        AccountSettings.from_env({**base, "PORTICO_ACCOUNT_VENUE_TIMEOUT_MS": "40000"})
    with pytest.raises(ConfigError, match="at most 30 s"):
        AccountSettings.from_env({**base, "PORTICO_VAULT_TIMEOUT": "29"})


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


@pytest.fixture
def json_log() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger writing JSON lines (the services' formatter) into a buffer."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter("unit"))
    logger = logging.getLogger("portico.unit-test")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield logger, buffer
    finally:
        logger.removeHandler(handler)


def test_json_logs_carry_trace_ids_and_redact_secret_named_fields(
        json_log: tuple[logging.Logger, io.StringIO]) -> None:
    logger, buffer = json_log
    with trace.get_tracer("unit").start_as_current_span("op") as span:
        logger.info("hello", extra={"api_secret": "s3cr3t", "vault_token": "hvs.x", "key_id": "k1"})
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


@pytest.mark.parametrize("addr", ["0.0.0.0:50051", "[::]:0", "localhost:65535", "127.0.0.1:0"])
def test_listen_addresses_that_grpc_understands_are_accepted(addr: str) -> None:
    assert ServerSettings.from_env({"PORTICO_LISTEN_ADDR": addr}, 1).listen_addr == addr


@pytest.mark.parametrize("addr", ["::1", "::", "::1:50051", "fe80::1:8080", "[::1]x:50051"])
def test_ipv6_listen_addresses_without_brackets_are_refused(addr: str) -> None:
    # gRPC reads an unbracketed "::1" as [::1]:443, and "::1:50051" as an address with no port at all.
    with pytest.raises(ConfigError, match="PORTICO_LISTEN_ADDR"):
        ServerSettings.from_env({"PORTICO_LISTEN_ADDR": addr}, 1)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tests.support.certs import CertificateAuthority

    directory = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority(directory, "ca")
    server, other = ca.issue("server", server=True), ca.issue("other", server=True)
    garbage = directory / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    return {"ca": ca.cert_path, "cert": server.cert, "key": server.key, "other_key": other.key, "garbage": garbage,
            "missing": directory / "missing.pem", "directory": directory}


@pytest.mark.parametrize(("cert", "key", "client_ca", "needle"), [
    ("missing", "key", None, "PORTICO_TLS_CERT_FILE: cannot read"),
    ("cert", "missing", None, "PORTICO_TLS_KEY_FILE: cannot read"),
    ("cert", "directory", None, "PORTICO_TLS_KEY_FILE: cannot read"),
    ("cert", "key", "missing", "PORTICO_TLS_CLIENT_CA_FILE: cannot read"),
    ("garbage", "key", None, "PORTICO_TLS_CERT_FILE does not hold a PEM certificate"),
    ("key", "key", None, "PORTICO_TLS_CERT_FILE does not hold a PEM certificate"),
    ("cert", "garbage", None, "PORTICO_TLS_KEY_FILE is not the unencrypted PEM private key"),
    ("cert", "other_key", None, "PORTICO_TLS_KEY_FILE is not the unencrypted PEM private key"),
    ("cert", "key", "garbage", "PORTICO_TLS_CLIENT_CA_FILE does not hold PEM CA certificates"),
])
def test_unusable_tls_files_are_a_configuration_error(pki: dict[str, Path], cert: str, key: str,
                                                      client_ca: str | None, needle: str) -> None:
    """gRPC itself would only say "Failed to bind to address", at start, or a traceback of a missing file."""
    env = {"PORTICO_TLS_CERT_FILE": str(pki[cert]), "PORTICO_TLS_KEY_FILE": str(pki[key])}
    if client_ca is not None:
        env["PORTICO_TLS_CLIENT_CA_FILE"] = str(pki[client_ca])
    with pytest.raises(ConfigError, match=needle) as caught:
        ServerSettings.from_env(env, 1)
    assert "PRIVATE KEY" not in str(caught.value) and "\n" not in str(caught.value)


def test_usable_tls_files_are_accepted(pki: dict[str, Path]) -> None:
    env = {"PORTICO_TLS_CERT_FILE": str(pki["cert"]), "PORTICO_TLS_KEY_FILE": str(pki["key"]),
           "PORTICO_TLS_CLIENT_CA_FILE": str(pki["ca"])}
    tls = ServerSettings.from_env(env, 1).tls
    assert tls is not None and (tls.cert, tls.key, tls.client_ca) == (pki["cert"], pki["key"], pki["ca"])


# --------------------------------------------------------------------------- client TLS (PORTICO_UPSTREAM_TLS_*)

_CA, _CERT, _KEY, _NAME = ("PORTICO_UPSTREAM_TLS_CA_FILE", "PORTICO_UPSTREAM_TLS_CERT_FILE",
                           "PORTICO_UPSTREAM_TLS_KEY_FILE", "PORTICO_UPSTREAM_TLS_SERVER_NAME")


@pytest.mark.parametrize(("files", "needle"), [
    ({_CA: "missing"}, "PORTICO_UPSTREAM_TLS_CA_FILE: cannot read"),
    ({_CA: "directory"}, "PORTICO_UPSTREAM_TLS_CA_FILE: cannot read"),
    ({_CA: "garbage"}, "PORTICO_UPSTREAM_TLS_CA_FILE does not hold PEM CA certificates"),
    ({_CA: "key"}, "PORTICO_UPSTREAM_TLS_CA_FILE does not hold PEM CA certificates"),
    ({_CA: "ca", _CERT: "cert"}, "PORTICO_UPSTREAM_TLS_CERT_FILE and PORTICO_UPSTREAM_TLS_KEY_FILE must be set "
                                 "together"),
    ({_CA: "ca", _KEY: "key"}, "PORTICO_UPSTREAM_TLS_CERT_FILE and PORTICO_UPSTREAM_TLS_KEY_FILE must be set "
                               "together"),
    ({_CERT: "cert", _KEY: "key"}, "PORTICO_UPSTREAM_TLS_CERT_FILE needs PORTICO_UPSTREAM_TLS_CA_FILE"),
    ({_CA: "ca", _CERT: "missing", _KEY: "key"}, "PORTICO_UPSTREAM_TLS_CERT_FILE: cannot read"),
    ({_CA: "ca", _CERT: "cert", _KEY: "missing"}, "PORTICO_UPSTREAM_TLS_KEY_FILE: cannot read"),
    ({_CA: "ca", _CERT: "garbage", _KEY: "key"}, "PORTICO_UPSTREAM_TLS_CERT_FILE does not hold a PEM certificate"),
    ({_CA: "ca", _CERT: "key", _KEY: "key"}, "PORTICO_UPSTREAM_TLS_CERT_FILE does not hold a PEM certificate"),
    ({_CA: "ca", _CERT: "cert", _KEY: "garbage"}, "PORTICO_UPSTREAM_TLS_KEY_FILE is not the unencrypted PEM private "
                                                  "key of PORTICO_UPSTREAM_TLS_CERT_FILE's certificate"),
    ({_CA: "ca", _CERT: "cert", _KEY: "other_key"}, "PORTICO_UPSTREAM_TLS_KEY_FILE is not the unencrypted PEM "
                                                    "private key"),
])
def test_unusable_upstream_tls_files_are_a_configuration_error(pki: dict[str, Path], files: dict[str, str],
                                                               needle: str) -> None:
    """Refused at start, naming the variable: gRPC would only fail each call, UNAVAILABLE, far from the cause."""
    from portico.runtime.client import ChannelTls

    with pytest.raises(ConfigError, match=re.escape(needle)) as caught:
        ChannelTls.from_env({name: str(pki[which]) for name, which in files.items()})
    assert "PRIVATE KEY" not in str(caught.value) and "\n" not in str(caught.value)
    assert pki["key"].read_text() not in str(caught.value)


@pytest.mark.parametrize("name", ["", " ", "signer portico", "signer.portico\n", "-x", "a" * 254, "[::1]",
                                  "signer.portico:443", "ünï.example"])
def test_an_upstream_server_name_that_is_no_host_name_is_refused(pki: dict[str, Path], name: str) -> None:
    from portico.runtime.client import ChannelTls

    env = {_CA: str(pki["ca"]), _NAME: name}
    if not name:  # unset is no override
        tls = ChannelTls.from_env(env)
        assert tls is not None and tls.server_name is None
        return
    with pytest.raises(ConfigError, match="PORTICO_UPSTREAM_TLS_SERVER_NAME must be"):
        ChannelTls.from_env(env)


def test_an_upstream_server_name_needs_the_ca() -> None:
    from portico.runtime.client import ChannelTls

    with pytest.raises(ConfigError, match="PORTICO_UPSTREAM_TLS_SERVER_NAME needs PORTICO_UPSTREAM_TLS_CA_FILE"):
        ChannelTls.from_env({_NAME: "signer.portico.internal"})


def test_usable_upstream_tls_files_are_accepted(pki: dict[str, Path]) -> None:
    from portico.runtime.client import ChannelTls

    assert ChannelTls.from_env({}) is None  # plaintext, as before
    tls = ChannelTls.from_env({_CA: str(pki["ca"])})
    assert tls is not None and (tls.ca_file, tls.client_cert, tls.server_name) == (pki["ca"], None, None)
    tls = ChannelTls.from_env({_CA: str(pki["ca"]), _CERT: str(pki["cert"]), _KEY: str(pki["key"]),
                               _NAME: "signer.portico.svc.cluster.local"})
    assert tls is not None
    assert (tls.ca_file, tls.client_cert, tls.server_name) == (pki["ca"], (pki["cert"], pki["key"]),
                                                               "signer.portico.svc.cluster.local")
    assert ChannelTls.from_env({_CA: str(pki["ca"]), _NAME: "10.0.0.7"}).server_name == "10.0.0.7"  # type: ignore[union-attr]


def test_every_service_that_calls_another_takes_the_upstream_tls_settings(pki: dict[str, Path]) -> None:
    """Execution, account, market data and the gateway read them (and refuse bad ones) in their own settings."""
    from portico.gateway.__main__ import GatewaySettings
    from portico.marketdata.service import MarketDataSettings
    from portico.runtime.client import ChannelTls

    base = {"PORTICO_VAULT_ADDR": "http://127.0.0.1:8200", "PORTICO_VAULT_TOKEN": "t", "PORTICO_SERVICE_TOKEN": "t",
            "PORTICO_MARKETDATA_REFDATA_ADDR": "127.0.0.1:50051"}
    tls_env = {_CA: str(pki["ca"]), _CERT: str(pki["cert"]), _KEY: str(pki["key"])}
    expected = ChannelTls.from_env(tls_env)
    readers = (ExecutionSettings.from_env, AccountSettings.from_env, MarketDataSettings.from_env,
               GatewaySettings.from_env)
    for from_env in readers:
        assert from_env(base).upstream_tls is None
        assert from_env({**base, **tls_env}).upstream_tls == expected
        with pytest.raises(ConfigError, match="PORTICO_UPSTREAM_TLS_CA_FILE: cannot read"):
            from_env({**base, _CA: str(pki["missing"])})


@pytest.mark.parametrize(("raw", "needle"), [
    ('["pt_abc"]', r"PORTICO_AUTH_TOKENS: auth token entry 0 must be an object"),
    ("[null]", r"PORTICO_AUTH_TOKENS: auth token entry 0 must be an object"),
    ('{"name": "a"}', r"PORTICO_AUTH_TOKENS must be a JSON list"),
    ('[{"name": "a", "sha256": "abc", "scopes": ["read"]}]', r"PORTICO_AUTH_TOKENS: auth token entry 0 \(a\)"),
])
def test_token_config_errors_name_the_variable(raw: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        TokenAuthenticator.from_env({"PORTICO_AUTH_TOKENS": raw})


def test_token_file_errors_name_the_variable(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text('[{"name": "a", "sha256": "0", "scopes": []}]')
    with pytest.raises(ConfigError, match=r"PORTICO_AUTH_TOKENS_FILE: auth token entry 0 \(a\)"):
        TokenAuthenticator.from_env({"PORTICO_AUTH_TOKENS_FILE": str(path)})
    path.write_bytes(b"\xff\xfe[]")  # not UTF-8 (a wrong file mounted): still one line naming the variable
    with pytest.raises(ConfigError, match=r"PORTICO_AUTH_TOKENS_FILE: cannot read token list \(UnicodeDecodeError\)"):
        TokenAuthenticator.from_env({"PORTICO_AUTH_TOKENS_FILE": str(path)})


def test_one_token_configured_twice_is_refused() -> None:
    """Two entries for one token would leave the caller with whichever came last: its scopes, its name."""
    digest = hash_token(new_token())
    entries = [{"name": "desk-read", "sha256": digest, "scopes": ["read"]},
               {"name": "desk-trade", "sha256": digest, "scopes": ["read", "trade"]}]
    with pytest.raises(ConfigError, match=r"entry 1 \(desk-trade\): the same token as `desk-read`"):
        TokenAuthenticator(entries)


def test_several_tokens_each_get_their_own_scopes() -> None:
    reader, trader = new_token(), new_token()
    auth = TokenAuthenticator([{"name": "r", "sha256": hash_token(reader), "scopes": ["read"]},
                               {"name": "t", "sha256": hash_token(trader), "scopes": ["trade"]}])
    assert auth.authenticate([("authorization", f"Bearer {reader}")]).scopes == {"read"}
    assert auth.authenticate([("authorization", f"bearer  {trader} ")]).scopes == {"trade"}


@pytest.mark.parametrize("header", ["Bearer", "Bearer ", "Bearer    ", "Bearer \t", "Basic abc", "pt_abc"])
def test_a_header_without_a_token_is_malformed(header: str) -> None:
    """Even when someone configured the empty token's digest, nothing authenticates without a token."""
    auth = TokenAuthenticator([{"name": "empty", "sha256": hash_token(""), "scopes": ["admin"]}])
    with pytest.raises(Unauthenticated) as caught:
        auth.authenticate([("authorization", header)])
    assert caught.value.reason == "TOKEN_MALFORMED"


def test_json_logs_redact_authorization_and_nested_secret_fields(
        json_log: tuple[logging.Logger, io.StringIO]) -> None:
    logger, buffer = json_log
    logger.info("call", extra={"authorization": "Bearer pt_leak1",
                               "request": {"key_id": "k1", "headers": {"Authorization": "Bearer pt_leak2"},
                                           "vault": {"token": "hvs.leak3"}},
                               "entries": [{"name": "desk", "api_key": "leak4"}]})
    line = json.loads(buffer.getvalue())
    assert "leak" not in buffer.getvalue()
    assert line["authorization"] == "[redacted]"
    assert line["request"] == {"key_id": "k1", "headers": {"Authorization": "[redacted]"},
                               "vault": {"token": "[redacted]"}}
    assert line["entries"] == [{"name": "desk", "api_key": "[redacted]"}]


@pytest.fixture
def text_log() -> Iterator[Callable[[], logging.Logger]]:
    """Configures the services' logging as `PORTICO_LOG_FORMAT=text` does, when called: in the test itself, so its
    handler writes to the stderr that `capsys` captures (that starts with the test, after fixtures)."""
    from portico.runtime.logs import configure_logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level

    def configure() -> logging.Logger:
        configure_logging("unit", {"PORTICO_LOG_FORMAT": "text"})
        return logging.getLogger("portico.unit-test")

    try:
        yield configure
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def test_text_logs_keep_the_extras_and_trace_ids_redacted_as_json_lines_do(
        text_log: Callable[[], logging.Logger], capsys: pytest.CaptureFixture[str]) -> None:
    logger = text_log()
    with trace.get_tracer("unit").start_as_current_span("op") as span:
        logger.warning("dead-man's cancel failed", extra={
            "account": "0xabc", "attempt": 3, "error": "two words", "vault_token": "hvs.leak1",
            "request": {"headers": {"Authorization": "Bearer leak2"}, "key_id": "k1"}})
    line = capsys.readouterr().err.strip()
    assert "WARNING portico.unit-test: dead-man's cancel failed" in line
    assert f"trace_id={format(span.get_span_context().trace_id, '032x')}" in line
    assert "account=0xabc attempt=3 " in line
    assert 'error="two words"' in line  # quoted: a space would make it two fields
    assert "vault_token=[redacted]" in line
    assert '"Authorization":"[redacted]"' in line and '"key_id":"k1"' in line
    assert "leak" not in line


def test_a_text_log_line_keeps_its_traceback_below_it(
        text_log: Callable[[], logging.Logger], capsys: pytest.CaptureFixture[str]) -> None:
    logger = text_log()
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.exception("failed", extra={"account": "0xabc"})
    first, *rest = capsys.readouterr().err.strip().splitlines()
    assert first.endswith("failed account=0xabc")
    assert rest[0].startswith("Traceback") and rest[-1] == "RuntimeError: boom"


def test_a_text_log_line_cannot_be_forged_or_lost_through_an_extra(
        text_log: Callable[[], logging.Logger], capsys: pytest.CaptureFixture[str]) -> None:
    # Extras often carry text from outside (a venue's error message, a symbol): a carriage return or a terminal
    # escape in one would overwrite the line on a terminal or make a fake one; they are escaped, as a newline is.
    logger = text_log()
    logger.warning("order refused", extra={"error": "bad\rWARNING portico.signer: signed", "symbol": "\x1b[2JETH",
                                           "note": "a\u2028b", "ok": "plain"})
    # A structure with keys that are not strings (price levels by Decimal) is shown, not a lost line.
    logger.warning("book", extra={"levels": {Decimal("3000.5"): 2, ("a", 1): 3}})
    captured = capsys.readouterr().err
    lines = captured.splitlines()
    assert len(lines) == 2 and lines[0].endswith("ok=plain"), captured
    assert not any(c in captured for c in "\r\x1b\u2028"), captured
    assert r'error="bad\rWARNING portico.signer: signed"' in lines[0]
    assert r'symbol="\u001b[2JETH"' in lines[0]
    assert lines[1].endswith('book levels={"3000.5":2,"(\'a\', 1)":3}'), lines[1]


def test_a_text_log_line_cannot_be_forged_through_its_message(
        text_log: Callable[[], logging.Logger], capsys: pytest.CaptureFixture[str]) -> None:
    # Messages quote text from outside too (`"syndr websocket resync failed: %s", exc`, a request's path): a
    # newline in it made a second line that looked like the signer's own.
    logger = text_log()
    forged = "refused\n2026-11-22 07:00:00,000 INFO portico.signer.audit: signed key_id=desk-1\r\x1b[2K\u2028"
    logger.warning("syndr websocket resync failed: %s", forged, extra={"account": "0xabc"})
    captured = capsys.readouterr().err
    assert len(captured.splitlines()) == 1, captured
    assert not any(c in captured for c in "\r\x1b\u2028"), captured
    assert (r"resync failed: refused\n2026-11-22 07:00:00,000 INFO portico.signer.audit: signed key_id=desk-1"
            r"\r\x1b[2K\u2028 account=0xabc") in captured


def test_json_logs_keep_a_line_whose_extra_has_keys_json_cannot_name(
        json_log: tuple[logging.Logger, io.StringIO]) -> None:
    """Dicts keyed by Decimal price levels or tuples: the keys become text rather than the line being lost."""
    from decimal import Decimal

    logger, buffer = json_log
    logger.info("book", extra={"levels": {Decimal("2400.5"): "0.1"}, "pairs": {("a", 1): {"api_key": "leak"}}})
    line = json.loads(buffer.getvalue())
    assert line["levels"] == {"2400.5": "0.1"}
    assert line["pairs"] == {"('a', 1)": {"api_key": "[redacted]"}}


class _FailedCall(grpc.RpcError):
    """A failed call as a client sees it: its own status, and the peer's status details in the trailers."""

    def __init__(self, code: grpc.StatusCode, details: str, status_details: bytes):
        self._code, self._details, self._trailers = code, details, (("grpc-status-details-bin", status_details),)

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[tuple[str, bytes], ...]:
        return self._trailers


def test_error_info_of_status_details_that_disagree_or_do_not_decode_is_none() -> None:
    """A proxy that rewrote the code, or garbage in the trailer: the caller gets no reason, not a ValueError."""
    from google.rpc import status_pb2

    from portico.runtime.errors import error_info

    other_code = status_pb2.Status(code=grpc.StatusCode.NOT_FOUND.value[0], message="gone").SerializeToString()
    assert error_info(_FailedCall(grpc.StatusCode.UNAVAILABLE, "gone", other_code)) is None
    assert error_info(_FailedCall(grpc.StatusCode.UNAVAILABLE, "gone", b"\xff\xff not a status")) is None
