"""`portico <command>` builds only its own command's arguments: the others' modules (the simulator, Vault's
client) are not imported, which took most of a second of every command's start."""

from __future__ import annotations

import subprocess
import sys

import pytest

from portico import cli

# What each command line must not import: the simulator (aiohttp's server), the signer's admin (hvac).
HEAVY = ("portico.sim.server", "portico.signer.admin", "hvac")
PROBE = """
import sys
from portico.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print("imported:" + ",".join(name for name in {heavy!r} if name in sys.modules), file=sys.stderr)
"""


@pytest.mark.parametrize("argv", [["--help"], ["order", "--help"], ["instruments", "--help"], ["book", "--help"],
                                  ["token", "new", "x", "--scopes", "read"], ["bogus"]])
def test_a_command_does_not_import_the_others(argv: list[str]) -> None:
    done = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), *argv], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.stderr.splitlines()[-1] == "imported:", (argv, done.stderr[-2000:])


def test_the_commands_own_arguments_are_built() -> None:
    parsed = cli.build_parser(cli._command_in(["sim", "--port", "0"])).parse_args(["sim", "--port", "0"])
    assert parsed.command == "sim" and parsed.port == 0
    order = cli.build_parser("order").parse_args(["order", "cancel", "--client-order-id", "c-1"])
    assert order.command == "order"


@pytest.mark.parametrize(("argv", "command"), [(["order", "buy"], "order"), (["--help"], ""), (["bogus"], ""),
                                               (["-h", "sim"], "sim"), ([], "")])
def test_the_command_is_the_first_word(argv: list[str], command: str) -> None:
    assert cli._command_in(argv) == command
