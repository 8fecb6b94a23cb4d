"""The command-line tools against services serving TLS and mTLS, through the PORTICO_UPSTREAM_TLS_* variables.

The CLIs read the same variables as the services' own outgoing channels (`ChannelTls.from_env`) when they
resolve their connection, before any call. Real reference data on loopback, a throwaway CA, the CLIs as child
processes; no mocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.support.pki import Pki, make_pki, server_env, upstream_env
from tests.support.portico_up import PORTICO, REPO
from tests.support.refdata import RunningRefdata, database, running_refdata

from portico.cli import build_parser
from portico.connection import TLS_HELP
from portico.sim.server import SimConfig, Simulator

ACCOUNT = "0x" + "ab" * 20
TOKEN_ENV = "PORTICO_TEST_CLI_TOKEN"
UPSTREAM_TLS = ("PORTICO_UPSTREAM_TLS_CA_FILE", "PORTICO_UPSTREAM_TLS_CERT_FILE", "PORTICO_UPSTREAM_TLS_KEY_FILE",
                "PORTICO_UPSTREAM_TLS_SERVER_NAME")
# One command line per CLI (besides `portico instruments`, whose calls this service answers), with what each
# needs so that only the connection is left to resolve: the target and the token (in TOKEN_ENV), an account.
OTHER_CLIS = {
    "portico book": ["book", "ETH-PERP", "--seconds", "20"],
    "portico trades": ["trades", "ETH-PERP", "--seconds", "20"],
    "portico order list": ["order", "list", "--account", ACCOUNT],
    "portico account": ["account", "--account", ACCOUNT],
}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimConfig(port=0, market_maker=False)) as simulator:
        yield simulator


@contextlib.asynccontextmanager
async def tls_refdata(sim: Simulator, tmp_path: Path, pki: Pki, *, mtls: bool) -> AsyncIterator[tuple[Path, str]]:
    """Reference data serving TLS only (mTLS: also asking for a client certificate of the test CA): the state
    file `portico up` would write for it, and its target."""
    with database("sqlite", tmp_path) as db_env:
        async with running_refdata(sim.http_url, db_env, server_env(pki, mtls=mtls)) as refdata:
            yield state_file(refdata, tmp_path), refdata.target


def state_file(refdata: RunningRefdata, tmp_path: Path) -> Path:
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"services": {"refdata": refdata.target}, "tokens": refdata.tokens}))
    return path


async def portico(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`portico ARGS` in a child process with `env` on top of ours, none of our own PORTICO_UPSTREAM_TLS_*
    (in a thread: the service runs on this event loop)."""
    inherited = {name: value for name, value in os.environ.items() if name not in UPSTREAM_TLS}
    return await asyncio.to_thread(subprocess.run, [*PORTICO, *args], cwd=REPO, env={**inherited, **env},
                                   capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("mtls", [False, True], ids=["tls", "mtls"])
async def test_instruments_reach_a_tls_service_with_the_upstream_variables_and_fail_clearly_without(
        sim: Simulator, tmp_path: Path, pki: Pki, mtls: bool) -> None:
    async with tls_refdata(sim, tmp_path, pki, mtls=mtls) as (state, target):
        tls = upstream_env(pki, client_cert=mtls)
        synced = await portico("instruments", "sync", "--state-file", str(state), env=tls)
        assert (synced.returncode, synced.stderr) == (0, "")
        assert synced.stdout.startswith("synced ")
        listed = await portico("instruments", "list", "--state-file", str(state), env=tls)
        assert (listed.returncode, listed.stderr) == (0, "")
        assert listed.stdout.split()[:2] == ["SYMBOL", "KIND"] and "ETH-PERP" in listed.stdout

        # Without the variables the channel is plaintext, which the server refuses: one line naming the target.
        # With the CA alone, an mTLS server refuses the handshake the same way.
        for env in ({}, upstream_env(pki, client_cert=False)) if mtls else ({},):
            refused = await portico("instruments", "list", "--state-file", str(state), env=env)
            assert (refused.returncode, refused.stdout) == (1, ""), refused.stderr
            assert refused.stderr.startswith(f"portico instruments list: UNAVAILABLE from {target}: ")
            assert refused.stderr.count("\n") == 1


async def test_every_cli_opens_its_channel_with_the_upstream_variables(sim: Simulator, tmp_path: Path,
                                                                       pki: Pki) -> None:
    """Dialed at the mTLS reference-data service, which serves none of their RPCs: each CLI gets past the
    handshake (the service's own answer, UNIMPLEMENTED) with the variables, and is refused (UNAVAILABLE)
    without them."""
    async with tls_refdata(sim, tmp_path, pki, mtls=True) as (_, target):
        for env, code in ((upstream_env(pki), "UNIMPLEMENTED"), ({}, "UNAVAILABLE")):
            runs = await asyncio.gather(*(
                portico(*args, "--target", target, "--token-env", TOKEN_ENV, env={TOKEN_ENV: "t", **env})
                for args in OTHER_CLIS.values()))
            for name, done in zip(OTHER_CLIS, runs, strict=True):
                assert done.returncode == 1, (name, done.stderr)
                errors = [line for line in done.stderr.splitlines() if line.startswith(f"{name}: ")]
                assert errors and errors[0].startswith(f"{name}: {code} from {target}: "), (name, done.stderr)


async def test_an_unusable_tls_file_is_exit_2_naming_the_variable_and_never_its_content(
        tmp_path: Path, pki: Pki) -> None:
    """Checked when the connection is resolved, before any call (nothing listens at the target)."""
    not_a_ca = tmp_path / "not-a-ca.pem"
    not_a_ca.write_text("-----BEGIN CERTIFICATE-----\nnot-a-certificate-but-a-secret-1234\n-----END CERTIFICATE-----\n")
    key_text = pki.client.key.read_text()
    key_body = "".join(key_text.splitlines()[1:-1])
    cases = [
        ({"PORTICO_UPSTREAM_TLS_CA_FILE": str(not_a_ca)},
         "PORTICO_UPSTREAM_TLS_CA_FILE does not hold PEM CA certificates"),
        ({"PORTICO_UPSTREAM_TLS_CA_FILE": str(tmp_path / "missing.pem")},
         f"PORTICO_UPSTREAM_TLS_CA_FILE: cannot read {tmp_path / 'missing.pem'} (No such file or directory)"),
        # A private key where the certificate belongs: named, never shown.
        ({**upstream_env(pki), "PORTICO_UPSTREAM_TLS_CERT_FILE": str(pki.client.key)},
         "PORTICO_UPSTREAM_TLS_CERT_FILE does not hold a PEM certificate"),
    ]
    clis = {"portico instruments": ["instruments", "list"], "portico book": OTHER_CLIS["portico book"],
            "portico trades": OTHER_CLIS["portico trades"], "portico order": OTHER_CLIS["portico order list"],
            "portico account": OTHER_CLIS["portico account"]}  # as each names itself in a configuration error
    for env, message in cases:
        runs = await asyncio.gather(*(
            portico(*args, "--target", "127.0.0.1:1", "--token-env", TOKEN_ENV, env={TOKEN_ENV: "t", **env})
            for args in clis.values()))
        for name, done in zip(clis, runs, strict=True):
            assert (done.returncode, done.stdout, done.stderr) == (2, "", f"{name}: {message}\n"), name
            assert "secret-1234" not in done.stderr and key_body[:40] not in done.stderr


def test_the_help_of_every_cli_describes_the_upstream_variables(capsys: pytest.CaptureFixture[str]) -> None:
    commands = [["book"], ["trades"], ["order"], ["order", "buy"], ["order", "list"], ["instruments"],
                ["instruments", "list"], ["instruments", "sync"], ["account"]]
    for command in commands:
        with pytest.raises(SystemExit):
            build_parser().parse_args([*command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert " ".join(TLS_HELP.split()) in text, command
        assert all(variable in text for variable in UPSTREAM_TLS), command
