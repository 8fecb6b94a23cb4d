"""The `portico` command as a desk engineer meets it on day one: Ctrl-C, a damaged state file, blank
arguments and `--help`. None of these needs a running suite."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from tests.support.portico_up import PORTICO, REPO

from portico import cli

UNREACHABLE = ["--target", "127.0.0.1:1", "--token-env", "PORTICO_REVIEW_TOKEN"]
ENV = {**os.environ, "PORTICO_REVIEW_TOKEN": "pt_review"}


def portico(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PORTICO, *args], env=ENV, capture_output=True, text=True, timeout=60, cwd=REPO)


@pytest.mark.parametrize("command", [["instruments", "list"], ["order", "list"], ["account"],
                                     ["book", "ETH-PERP", "--seconds", "1"]])
def test_a_state_file_that_is_not_text_is_one_line_and_exit_2(tmp_path: Path, command: list[str]) -> None:
    state = tmp_path / "state.json"
    state.write_bytes(b"\xff\xfe\x00garbage")  # a truncated copy, a binary file passed by mistake
    done = portico(*command, "--state-file", str(state))
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [f"portico {command[0]}: {state} is not a JSON document"]


def test_ctrl_c_while_the_command_starts_or_waits_is_exit_130_without_a_traceback() -> None:
    # A Ctrl-C while the command starts (importing its module) or waits for a service that accepted the
    # connection and never answers is the user changing their mind, not a crash.
    with socket.create_server(("127.0.0.1", 0)) as silent:  # listens; never accepts, never answers
        target = f"127.0.0.1:{silent.getsockname()[1]}"
        process = subprocess.Popen([*PORTICO, "instruments", "list", "--target", target, "--token-env",
                                    "PORTICO_REVIEW_TOKEN"], env=ENV, cwd=REPO,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(0.4)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    assert "Traceback" not in err, err
    assert process.returncode == 130, (process.returncode, err)


def test_ctrl_c_anywhere_in_a_command_is_exit_130(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_dispatch", interrupted)
    try:
        cli.main(["instruments", "list"])
    except SystemExit as exited:
        assert exited.code == 130
    except KeyboardInterrupt:  # caught here, or it would stop the test session
        pytest.fail("a KeyboardInterrupt escaped `portico` (Python prints a traceback)")
    else:
        pytest.fail("main returned")


@pytest.mark.parametrize("args", [["book", ""], ["book", "  "], ["trades", "ETH-PERP", ""],
                                  ["book", "ETH-PERP", "--venue", " "]])
def test_book_and_trades_refuse_a_blank_argument_before_any_call(args: list[str]) -> None:
    done = portico(*args, *UNREACHABLE, "--seconds", "1")
    assert done.returncode == 2, done.stderr
    assert "UNAVAILABLE" not in done.stderr and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"portico {args[0]}: ") and "must not be empty" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(("command", "expected"), [
    (["up"], ["Exit codes:", "state file", "Ctrl-C", "(8080)", "(50051)"]),
    (["book"], ["Exit codes:", "checksum", "doubles as a consistency", "--seconds", "PORTICO_UPSTREAM_TLS_CA_FILE"]),
    (["trades"], ["Exit codes:", "newest first", "PORTICO_UPSTREAM_TLS_CA_FILE"]),
])
def test_help_says_what_the_readme_says(capsys: pytest.CaptureFixture[str], command: list[str],
                                        expected: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.build_parser().parse_args([*command, "--help"])
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # as one line: the help is wrapped
    for phrase in expected:
        assert phrase in text, phrase
