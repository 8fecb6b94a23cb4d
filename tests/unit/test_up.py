"""`portico up` without the suite: the Vault command line, file modes, option checks, signals."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.portico_up import REPO, UpPorts
from tests.support.ports import taken_port

from portico import up


class Spawned(Exception):
    """Raised by a stand-in `Suite.spawn`: nothing may start."""


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def options(tmp_path: Path, **changes: object) -> up.UpOptions:
    """Options on free ports, everything under `tmp_path`."""
    ports = UpPorts.choose()
    base = up.UpOptions(vault_port=ports.vault, sim_port=ports.sim, signer_port=ports.signer,
                        refdata_port=ports.refdata, marketdata_port=ports.marketdata, account_port=ports.account,
                        execution_port=ports.execution, gateway_port=ports.gateway, data_dir=tmp_path / "data",
                        state_file=tmp_path / "state.json")
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


async def test_the_vault_root_token_is_not_on_the_command_line(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    spawned: dict[str, tuple[list[str], dict[str, str]]] = {}

    def spawn(self: up.Suite, name: str, argv: list[str], env: dict[str, str]) -> None:
        spawned[name] = (argv, dict(env))
        raise Spawned

    monkeypatch.setattr(up.Suite, "spawn", spawn)
    with pytest.raises(Spawned):
        await up._start_vault(up.Suite(options(tmp_path)))
    argv, env = spawned["vault"]
    assert not any("root-token" in arg for arg in argv)  # a command line is visible to everyone through `ps`
    token = env["BAO_DEV_ROOT_TOKEN_ID"]  # the variable `bao server -dev -help` documents
    assert token.startswith("root-") and not any(token in arg for arg in argv)


def test_logs_are_owner_only_even_when_an_earlier_run_left_them_open(tmp_path: Path) -> None:
    suite = up.Suite(options(tmp_path))
    suite.logs_dir.mkdir(parents=True)
    suite.logs_dir.chmod(0o755)
    earlier = suite.logs_dir / "vault.log"
    earlier.write_text("earlier run\n")
    earlier.chmod(0o644)
    old_umask = os.umask(0)
    try:
        for name in ("vault", "simulator"):
            suite.spawn(name, [sys.executable, "-c", "print('Root Token: x')"], {}).wait(timeout=30)
    finally:
        os.umask(old_umask)
    assert mode(suite.logs_dir) == 0o700
    assert {path.name: mode(path) for path in suite.logs_dir.iterdir()} == {"vault.log": 0o600, "simulator.log": 0o600}
    assert earlier.read_text() == "earlier run\nRoot Token: x\n"


def test_the_state_file_is_0600_whatever_waits_at_the_old_temporary_name(tmp_path: Path) -> None:
    state = {"tokens": {"read": "secret"}}
    planted = tmp_path / "state.json.tmp"
    planted.touch()
    planted.chmod(0o666)
    path = tmp_path / "state.json"
    up._write_state(path, state)
    assert mode(path) == 0o600 and json.loads(path.read_text()) == state

    target = tmp_path / "elsewhere"
    target.write_text("untouched")
    planted.unlink()
    planted.symlink_to(target)
    up._write_state(path, state)
    assert not path.is_symlink() and mode(path) == 0o600 and json.loads(path.read_text()) == state
    assert target.read_text() == "untouched"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "state.json", "state.json.tmp"]


def test_a_failed_state_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    (tmp_path / "state.json").mkdir()
    with pytest.raises(OSError):
        up._write_state(tmp_path / "state.json", {"tokens": {}})
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_only_address_in_use_means_a_port_is_taken() -> None:
    with taken_port() as port:
        assert not up._port_free("127.0.0.1", port)
    with pytest.raises(up.UpError, match=r"cannot listen on no-such-host\.invalid:8700"):
        up._port_free("no-such-host.invalid", 8700)


@pytest.mark.parametrize(("changes", "message"), [
    ({"sim_port": 70000}, "--sim-port 70000 is not a port number (1-65535)"),
    ({"gateway_port": 0}, "--gateway-port 0 is not a port number"),
    ({"host": "no-such-host.invalid"}, "--host 'no-such-host.invalid': cannot listen on"),
    ({"data_dir": Path("/dev/null/x")}, "--data-dir /dev/null/x: cannot create it"),
    ({"state_file": Path("/dev/null/x/state.json")}, "--state-file /dev/null/x/state.json: cannot create its"),
])
def test_bad_options_exit_2_before_anything_starts(changes: dict[str, object], message: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(up.Suite, "spawn", lambda *_: pytest.fail("spawned despite bad options"))
    assert up.run_up(options(tmp_path, **changes)) == 2
    assert capsys.readouterr().err.startswith(f"portico up: {message}")


def test_more_bad_options_exit_2_before_anything_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(up.Suite, "spawn", lambda *_: pytest.fail("spawned despite bad options"))
    (tmp_path / "a-dir").mkdir()
    assert up.run_up(options(tmp_path, state_file=tmp_path / "a-dir")) == 2
    assert capsys.readouterr().err == f"portico up: --state-file {tmp_path / 'a-dir'} is a directory\n"
    (tmp_path / "a-file").touch()
    assert up.run_up(options(tmp_path, data_dir=tmp_path / "a-file")) == 2
    assert "cannot create it: File exists" in capsys.readouterr().err
    same = options(tmp_path)
    assert up.run_up(dataclasses.replace(same, gateway_port=same.vault_port)) == 2
    assert "is given to --vault-port and --gateway-port" in capsys.readouterr().err
    assert not (tmp_path / "state.json").exists()


def test_a_port_in_use_fails_before_anything_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(up.Suite, "spawn", lambda *_: pytest.fail("spawned although the gateway port is taken"))
    with taken_port() as port:
        assert up.run_up(options(tmp_path, gateway_port=port)) == 1
    assert f"port 127.0.0.1:{port} for gateway is in use (choose --gateway-port)" in capsys.readouterr().err


# `portico up` whose start-up never ends by itself: it starts one child, says which, and waits.
SLOW_START = """
import asyncio, sys
from collections.abc import Iterator
from pathlib import Path
from portico import up

async def slow_bring_up(suite):
    child = suite.spawn("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"], {})
    Path(sys.argv[1]).write_text(str(child.pid))
    await asyncio.sleep(30)
    raise up.UpError("start-up was not interrupted")

up.bring_up = slow_bring_up
sys.exit(up.run_up(up.UpOptions(data_dir=Path(sys.argv[2]))))
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@contextlib.contextmanager
def slow_start(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """`portico up` (SLOW_START) with its first child started: (the process, the child's pid); both killed after."""
    pid_file = tmp_path / "child.pid"
    process = subprocess.Popen([sys.executable, "-c", SLOW_START, str(pid_file), str(tmp_path / "data")], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    child = 0
    try:
        deadline = time.monotonic() + 30
        while not pid_file.exists() or not pid_file.read_text():
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.05)
        child = int(pid_file.read_text())
        yield process, child
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        if child and _running(child):
            os.kill(child, signal.SIGKILL)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT])
def test_a_signal_during_start_up_stops_what_started(signum: signal.Signals, tmp_path: Path) -> None:
    with slow_start(tmp_path) as (process, child):
        process.send_signal(signum)
        out, err = process.communicate(timeout=20)
        assert process.returncode == 128 + signum, err
        assert out == "Stopping...\n" and err == ""
        assert not _alive(child)  # stopped and reaped, not orphaned


def test_a_state_file_left_by_an_earlier_run_is_gone_before_anything_starts(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    # An earlier `portico up` that was killed (or crashed) left its state file: services and tokens that no longer
    # exist. Scripts wait for the file to appear and the commands read it, so it must not be there while this run
    # starts, nor after this run fails to start.
    opts = options(tmp_path)
    assert opts.state_file is not None
    opts.state_file.write_text(json.dumps({"services": {"execution": "127.0.0.1:1"}, "tokens": {"trade": "stale"}}))
    seen: list[bool] = []

    async def failing_simulator(suite: up.Suite) -> dict[str, str]:
        assert opts.state_file is not None
        seen.append(opts.state_file.exists())
        raise up.UpError("the simulator did not become ready in time")

    monkeypatch.setattr(up, "_start_simulator", failing_simulator)
    assert up.run_up(opts) == 1
    assert capsys.readouterr().err == "portico up: the simulator did not become ready in time\n"
    assert seen == [False] and not opts.state_file.exists()


def test_a_state_file_is_left_alone_when_the_options_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    # A port in use may be the running suite this state file describes: nothing is touched then.
    monkeypatch.setattr(up.Suite, "spawn", lambda *_: pytest.fail("spawned although a port is taken"))
    with taken_port() as port:
        opts = options(tmp_path, execution_port=port)
        assert opts.state_file is not None
        opts.state_file.write_text("{}")
        assert up.run_up(opts) == 1
    assert "is in use" in capsys.readouterr().err and opts.state_file.read_text() == "{}"


@pytest.mark.parametrize("recorded", ["services", "gateway", "simulator", "vault"])
def test_a_state_file_of_a_suite_still_running_on_other_ports_is_left_alone(
        recorded: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # A second `portico up` on other ports but the same state file (the default one under the same --data-dir, say):
    # this run's ports are free, yet the file describes a suite that is running and whose tokens still work; it
    # stays, and nothing starts. (Before, it was deleted, and the running suite's tokens were lost.)
    monkeypatch.setattr(up.Suite, "spawn", lambda *_: pytest.fail("spawned over a running suite's state file"))
    with socket.socket() as running:
        running.bind(("127.0.0.1", 0))
        running.listen()
        address = f"127.0.0.1:{running.getsockname()[1]}"
        state: dict[str, str | dict[str, str]] = {"services": {"refdata": "127.0.0.1:1"},
                                                  "tokens": {"trade": "still-good"}}
        if recorded == "services":
            state["services"] = {"refdata": "127.0.0.1:1", "execution": address}
        elif recorded == "gateway":
            state["gateway"] = f"http://{address}"
        elif recorded == "simulator":
            state["simulator"] = {"http": f"http://{address}/api/v1", "ws": f"ws://{address}/ws/api/v1"}
        else:
            state["vault"] = {"addr": f"http://{address}"}
        opts = options(tmp_path)
        assert opts.state_file is not None
        text = json.dumps(state)
        opts.state_file.write_text(text)
        assert up.run_up(opts) == 2
    err = capsys.readouterr().err
    assert "still running" in err and address in err, err
    assert opts.state_file.read_text() == text


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie waits for whichever process adopted it to reap it)."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat_line.rpartition(")")[2].split()[0] != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_children_stop_when_portico_up_is_killed(tmp_path: Path) -> None:
    # SIGKILL (kill -9, the OOM killer) leaves `portico up` no chance to stop what it started. Its children run in
    # sessions of their own, so before, they ran on: every port taken (the next `portico up` refused to start) and
    # no record of their pids anywhere. Now each child is sent SIGTERM when `portico up` dies.
    with slow_start(tmp_path) as (process, child):
        process.kill()
        process.communicate(timeout=20)
        deadline = time.monotonic() + 10
        while _running(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _running(child), "a child of the killed `portico up` is still running"
