"""The `portico` command: run the suite, administer keys and tokens.

    portico up [--state-file PATH]        start everything on embedded defaults
    portico book ETH-PERP [--depth 10]    watch a live order book (every update checked against its checksum)
    portico trades ETH-PERP               watch the public trade tape
    portico order buy ETH-PERP 0.1 --price 3000   place an order (also: sell, cancel, list)
    portico account [--watch]             the account summary and positions (through the account service)
    portico instruments list              list instruments (also: show, sync) through the reference-data service
    portico sim [--port 8700 ...]         run the Syndr-compatible venue simulator on its own
    portico signer keys create ID ...     manage signing keys in Vault (no gRPC)
    portico token new NAME --scopes ...   mint a bearer token and its config entry
    portico config-table                  print the configuration table (README)
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path

# Nothing of Portico's at import: the console script imports this module before `main` can catch a Ctrl-C, so
# every sub-command's module (gRPC, aiohttp, ...) is imported inside `main`.

__all__ = ["main"]


# Every module that declares settings: importing it registers them for the table.
SETTINGS_MODULES = (
    "portico.runtime.auth",
    "portico.runtime.client",
    "portico.runtime.grpc_core",
    "portico.runtime.logs",
    "portico.runtime.server",
    "portico.runtime.telemetry",
    "portico.runtime.vault",
    "portico.signer.settings",
    "portico.refdata.settings",
    "portico.venues.syndr.settings",
    "portico.gateway.__main__",
    "portico.marketdata.service",
    "portico.execution.settings",
    "portico.account.settings",
    "portico.sim.__main__",
)


def _all_settings_table() -> str:
    from portico.runtime.config import config_table

    for module in SETTINGS_MODULES:
        importlib.import_module(module)
    return config_table()


UP_HELP = """\
Start the Syndr simulator, an OpenBao dev server and every service (signer,
reference data, market data, account, execution, the REST gateway), each as
its own process, provision the demo account, wait until each is SERVING and
print the endpoints. Endpoints, bearer tokens (read, trade, admin) and the demo
account's ids go to the state file (mode 0600; var/up/state.json, or
DATA_DIR/state.json with --data-dir), never to the terminal; logs to
DATA_DIR/logs. Ctrl-C (or SIGTERM, SIGHUP, SIGQUIT), also during start-up,
stops everything and removes the state file.

Exit codes: 0 stopped once up, 1 a component failed to start or died (or a
port is in use), 2 bad options (or the state file describes a suite still
running), 128+N stopped by signal N during start-up."""


COMMANDS = ("up", "book", "trades", "order", "account", "instruments", "sim", "signer", "token", "config-table")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or, given the `command` the user typed, one whose other sub-commands are names and help
    lines only: their modules (the simulator, Vault's client, ...) are not imported, which took most of a
    second of every command's start. An unknown or missing command builds none of them (`portico --help`)."""
    from portico.runtime.auth import SCOPES

    def wanted(*names: str) -> bool:
        return command is None or command in names

    parser = argparse.ArgumentParser(prog="portico", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start Vault (OpenBao dev) and the services with a demo account",
                        description=UP_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    up.add_argument("--state-file", type=Path,
                    help="write endpoints, tokens and demo ids here as JSON (DATA_DIR/state.json)")
    up.add_argument("--data-dir", type=Path, default=Path("var/up"), help="state, logs and databases (var/up)")
    up.add_argument("--host", default="127.0.0.1", help="address every component binds (127.0.0.1)")
    up.add_argument("--vault-port", type=int, default=8200, metavar="PORT", help="OpenBao (Vault API) (8200)")
    up.add_argument("--sim-port", type=int, default=8700, metavar="PORT",
                    help="the Syndr simulator's HTTP + WebSocket port (8700)")
    up.add_argument("--signer-port", type=int, default=50055, metavar="PORT", help="the signer (50055)")
    up.add_argument("--refdata-port", type=int, default=50051, metavar="PORT", help="reference data (50051)")
    up.add_argument("--marketdata-port", type=int, default=50052, metavar="PORT", help="market data (50052)")
    up.add_argument("--execution-port", type=int, default=50053, metavar="PORT", help="execution (50053)")
    up.add_argument("--account-port", type=int, default=50054, metavar="PORT", help="the account service (50054)")
    up.add_argument("--gateway-port", type=int, default=8080, metavar="PORT", help="the REST gateway (8080)")

    book = sub.add_parser("book", help="watch a live order book (verified against the stream's checksums)",
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    trades = sub.add_parser("trades", help="watch the public trade tape",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    if wanted("book", "trades"):
        from portico import terminal

        terminal.add_arguments(book, trades)

    order = sub.add_parser("order", help="place, cancel and list orders (through the execution service)",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    if wanted("order"):
        from portico import order_cli

        order.description = order_cli.__doc__
        order_cli.add_arguments(order)

    account = sub.add_parser("account", help="the account summary and positions (through the account service)",
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    if wanted("account"):
        from portico import account_cli

        account.description = account_cli.__doc__
        account_cli.add_arguments(account)

    instruments = sub.add_parser("instruments", help="list, show and sync instruments (through the reference-data "
                                 "service)", formatter_class=argparse.RawDescriptionHelpFormatter)
    if wanted("instruments"):
        from portico import instruments_cli

        instruments.description = instruments_cli.__doc__
        instruments_cli.add_arguments(instruments)

    sim = sub.add_parser("sim", help="run the Syndr-compatible venue simulator")
    if wanted("sim"):
        from portico.sim import __main__ as sim_main

        sim_main.add_arguments(sim)

    signer = sub.add_parser("signer", help="signer administration (talks to Vault directly)")
    if wanted("signer"):
        from portico.signer import admin

        admin.add_arguments(signer)

    token = sub.add_parser("token", help="bearer tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    new = token_sub.add_parser("new", help="mint a token; prints it once, and the entry for PORTICO_AUTH_TOKENS")
    new.add_argument("name")
    new.add_argument("--scopes", required=True, help=f"comma separated, from {','.join(SCOPES)}")

    sub.add_parser("config-table", help="print the PORTICO_* configuration table as Markdown")
    assert set(sub.choices) == set(COMMANDS)
    return parser


def _command_in(argv: list[str]) -> str:
    """The sub-command `argv` names (its first word: the top level takes no option but --help), or ""."""
    first = next((word for word in argv if not word.startswith("-")), "")
    return first if first in COMMANDS else ""


def main(argv: list[str] | None = None) -> None:
    try:
        try:
            # Inside the try: building the parser imports the command's module, and a Ctrl-C then, or while a
            # command checks its arguments, is the user stopping it, not a crash.
            words = sys.argv[1:] if argv is None else argv
            args = build_parser(_command_in(words)).parse_args(words)
            _dispatch(args)
        finally:
            sys.stdout.flush()  # here, not at exit, so a closed pipe is caught below
    except KeyboardInterrupt:
        raise SystemExit(130) from None  # 128 + SIGINT, as a shell reports a command stopped by Ctrl-C
    except BrokenPipeError:
        # The reader went away (`portico instruments list | head`): stop quietly, as shell tools do, and keep
        # Python from complaining again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(141) from None  # 128 + SIGPIPE, what a shell reports for a piped command cut short


def _dispatch(args: argparse.Namespace) -> None:
    if args.command == "up":
        from portico.up import UpOptions, run_up

        raise SystemExit(run_up(UpOptions(host=args.host, vault_port=args.vault_port, sim_port=args.sim_port,
                                          signer_port=args.signer_port, refdata_port=args.refdata_port,
                                          gateway_port=args.gateway_port, marketdata_port=args.marketdata_port,
                                          execution_port=args.execution_port, account_port=args.account_port,
                                          data_dir=args.data_dir, state_file=args.state_file)))
    if args.command in ("book", "trades"):
        from portico import terminal

        raise SystemExit(terminal.run_book(args) if args.command == "book" else terminal.run_trades(args))
    if args.command == "order":
        from portico import order_cli

        raise SystemExit(order_cli.run(args))
    if args.command == "account":
        from portico import account_cli

        raise SystemExit(account_cli.run(args))
    if args.command == "instruments":
        from portico import instruments_cli

        raise SystemExit(instruments_cli.run(args))
    if args.command == "sim":
        from portico.sim import __main__ as sim_main

        raise SystemExit(sim_main.run(args))
    if args.command == "signer":
        from portico.signer import admin

        raise SystemExit(admin.run(args))
    if args.command == "token":
        from portico.runtime.auth import SCOPES, hash_token, new_token

        scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
        unknown = [s for s in scopes if s not in SCOPES]
        if unknown or not scopes:
            print(f"portico token: scopes must be drawn from {', '.join(SCOPES)}", file=sys.stderr)
            raise SystemExit(2)
        token = new_token()
        print(f"token (shown once): {token}")
        print("config entry:", json.dumps({"name": args.name, "sha256": hash_token(token), "scopes": scopes}))
        return
    if args.command == "config-table":
        print(_all_settings_table())


if __name__ == "__main__":
    main()
