"""Where a terminal command (`portico book`, `portico order`, ...) connects, and with which token.

Each command talks to one service. Its address comes from `--target`, else from
the `portico up` state file (`services.<service>`); its bearer token from the
environment variable named by `--token-env`, else from the state file
(`tokens.<scope>`). There is deliberately no working `--token`:
command-line arguments are visible to every user through `ps`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
from pathlib import Path
from typing import Any

import grpc

from portico.runtime.errors import error_info

__all__ = [
    "DEFAULT_STATE_FILE",
    "ConfigError",
    "StateFile",
    "add_connection_arguments",
    "connection",
    "describe_rpc_error",
]

DEFAULT_STATE_FILE = Path("var/up/state.json")  # where `portico up` writes it by default
# What a bearer token can be in gRPC metadata: printable ASCII, no spaces. Anything else fails inside grpc
# with an opaque error, so it is refused here, with a message that never repeats the token.
_TOKEN = re.compile(r"[\x21-\x7e]+")


class ConfigError(Exception):
    """The target, token or another default could not be found; the message is safe to print."""


class RefuseToken(argparse.Action):
    """`--token` exists only to explain why it is refused."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        parser.error("--token is not accepted: command-line arguments are visible to everyone through `ps`; "
                     "use --token-env VAR or the state file")


def positive_float(text: str) -> float:
    """argparse type: a finite number above zero (seconds, rates)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError("must be a positive number")
    return value


def timeout_seconds(text: str) -> float:
    """argparse type: a call timeout, above zero and under an hour."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value < 3600:
        raise argparse.ArgumentTypeError("must be between 0 and 3600 seconds")
    return value


def add_connection_arguments(parser: argparse.ArgumentParser, *, service: str, what: str, scope: str) -> None:
    """`--state-file`, `--target`, `--token-env` (and a refused `--token`) for a command that calls `service`.

    `what` names the service for people ("market-data service"); `scope` is the
    token the command takes from the state file by default. Abbreviations are
    turned off so that `--token X` cannot be taken as `--token-env X`.
    """
    parser.allow_abbrev = False
    parser.add_argument("--token", action=RefuseToken, help=argparse.SUPPRESS)
    parser.add_argument("--state-file", type=Path,
                        help=f"`portico up` state file with the {what} address and tokens ({DEFAULT_STATE_FILE})")
    parser.add_argument("--target", metavar="HOST:PORT",
                        help=f"{what} address (default: services.{service} in the state file)")
    parser.add_argument("--token-env", metavar="VAR",
                        help=f"take the bearer token (scope {scope}) from this environment variable "
                             f"(default: tokens.{scope} in the state file)")


class StateFile:
    """The `portico up` state file, read once and only when a value is actually needed."""

    def __init__(self, path: Path | None = None):
        self.path = path or DEFAULT_STATE_FILE
        self._document: Any = None
        self._loaded = False

    def document(self) -> Any:
        if not self._loaded:
            try:
                text = self.path.read_text()
            except FileNotFoundError:
                raise ConfigError(f"no state file at {self.path}: start `portico up`, pass --state-file, "
                                  f"or pass --target and --token-env") from None
            except OSError as exc:
                raise ConfigError(f"cannot read {self.path}: {exc.strerror}") from None
            try:
                self._document = json.loads(text)
            except ValueError:
                raise ConfigError(f"{self.path} is not a JSON document") from None
            self._loaded = True
        return self._document

    def value(self, *path: str) -> str:
        """The non-empty string at `path` (e.g. "services", "marketdata"), or ConfigError naming it."""
        value = self.document()
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{self.path} has no {'.'.join(path)}")
        return value


def connection(args: argparse.Namespace, *, service: str, scope: str,
               state: StateFile | None = None) -> tuple[str, str]:
    """The target and bearer token: `--target` and `--token-env` first, else the state file.

    A blank `--target` or `--token-env` is an error, not "absent": falling back to the state file would call a
    service or use a token the user did not choose.
    """
    state = state or StateFile(args.state_file)
    for flag, value in (("--target", args.target), ("--token-env", args.token_env)):
        if value is not None and not value.strip():
            raise ConfigError(f"{flag} must not be empty")
    target: str = args.target or state.value("services", service)
    if args.token_env:
        token = os.environ.get(args.token_env, "").strip()
        if not token:
            raise ConfigError(f"environment variable {args.token_env} is not set or empty")
        source = f"environment variable {args.token_env}"
    else:
        token = state.value("tokens", scope).strip()
        source = f"tokens.{scope} in {state.path}"
    if not _TOKEN.fullmatch(token):
        raise ConfigError(f"the token from {source} is not a bearer token: only printable ASCII without spaces")
    return target, token


def describe_rpc_error(error: grpc.aio.AioRpcError, target: str) -> str:
    """One readable line for a failed call: code, the server's message, and its reason when it gives one."""
    details = " ".join((error.details() or "").split()) or "no details"
    try:
        info = error_info(error)
    except Exception:  # a malformed status detail must not hide the error itself
        info = None
    reason = f" [{info.reason}]" if info is not None and info.reason else ""
    return f"{error.code().name} from {target}: {details}{reason}"
