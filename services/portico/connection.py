"""Where a terminal command (`portico book`, `portico order`, ...) connects, and with which token.

Each command talks to one service. Its address comes from `--target`, else from
the `portico up` state file (`services.<service>`); its bearer token from the
environment variable named by `--token-env`, else from the state file
(`tokens.<scope>`). There is deliberately no working `--token`:
command-line arguments are visible to every user through `ps`. The channel is
plaintext unless the PORTICO_UPSTREAM_TLS_* variables the services use for their
own outgoing channels are set (`ChannelTls.from_env`): a deployment with TLS on
is then reached the same way by a service and by a person at a terminal.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import grpc

from portico.runtime.channel_tls import ChannelTls
from portico.runtime.client import open_channel
from portico.runtime.config import ConfigError as SettingError
from portico.runtime.errors import error_info

__all__ = [
    "DEFAULT_STATE_FILE",
    "MAX_LIST_PAGES",
    "TLS_HELP",
    "ConfigError",
    "Connection",
    "PagingError",
    "StateFile",
    "add_connection_arguments",
    "connection",
    "default_account",
    "describe_rpc_error",
    "read_pages",
]

DEFAULT_STATE_FILE = Path("var/up/state.json")  # where `portico up` writes it by default
# What a bearer token can be in gRPC metadata: printable ASCII, no spaces. Anything else fails inside grpc
# with an opaque error, so it is refused here, with a message that never repeats the token.
_TOKEN = re.compile(r"[\x21-\x7e]+")
# A listing reads page after page until `next_page_token` is empty, but at most this many pages (5 million
# entries at the commands' default page size of 500); a server that repeats a page token, or lists past this,
# is an error (as the gateway's 502), not a command that loops or grows forever.
MAX_LIST_PAGES = 10_000
# The epilog of every command that calls a service (`--help`). Wrapped by hand: `portico order`, `instruments`
# and `account` print theirs raw (RawDescriptionHelpFormatter), the others re-fill it.
TLS_HELP = """\
TLS: set PORTICO_UPSTREAM_TLS_CA_FILE (the CA the service's certificate is
checked against) to call over TLS; PORTICO_UPSTREAM_TLS_CERT_FILE and
PORTICO_UPSTREAM_TLS_KEY_FILE add a client certificate (mTLS), and
PORTICO_UPSTREAM_TLS_SERVER_NAME is the name checked in the certificate when
dialing by IP address. Unset: plaintext."""


class ConfigError(Exception):
    """The target, token or another default could not be found; the message is safe to print."""


class PagingError(Exception):
    """A server's paging that would never end (a page token repeated, too many pages).

    The message is safe to print and reads after the server's address: "<target> repeated a page token ...".
    """


class _Page(Protocol):
    @property
    def next_page_token(self) -> str: ...


PageT = TypeVar("PageT", bound=_Page)


async def read_pages(fetch: Callable[[str], Awaitable[PageT]], *, what: str) -> AsyncIterator[PageT]:
    """Every page of a listing: `fetch(page_token)` from "" until a page's `next_page_token` is empty.

    A token seen before (the same one again, or a longer cycle) or more than MAX_LIST_PAGES pages raise
    PagingError naming `what` ("open orders"), after the page that gave it.
    """
    token = ""
    seen: set[str] = set()
    for _ in range(MAX_LIST_PAGES):
        page = await fetch(token)
        yield page
        token = page.next_page_token
        if not token:
            return
        if token in seen:
            raise PagingError(f"repeated a page token listing {what} (after {len(seen) + 1} pages)")
        seen.add(token)
    raise PagingError(f"listed more than {MAX_LIST_PAGES} pages of {what}")


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
    turned off so that `--token X` cannot be taken as `--token-env X`. The help's
    epilog is TLS_HELP.
    """
    parser.allow_abbrev = False
    parser.epilog = TLS_HELP
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
                raw = self.path.read_bytes()  # bytes: json.loads reads UTF-8 (or -16/-32) whatever the locale says
            except FileNotFoundError:
                raise ConfigError(f"no state file at {self.path}: start `portico up`, pass --state-file, "
                                  f"or pass --target and --token-env") from None
            except OSError as exc:
                raise ConfigError(f"cannot read {self.path}: {exc.strerror}") from None
            try:
                self._document = json.loads(raw)
            except ValueError:  # UnicodeDecodeError included: bytes that are no text at all
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


@dataclass(frozen=True)
class Connection:
    """Where a command calls, with which bearer token, and over which TLS (None: plaintext).

    The token goes in each call's metadata (`bearer(connection.token)`), over TLS as over plaintext, as the
    services send theirs.
    """

    target: str
    token: str = field(repr=False)
    tls: ChannelTls | None = None

    def channel(self) -> grpc.aio.Channel:
        """A new channel to the target, TLS or mTLS when `tls` says so."""
        return open_channel(self.target, tls=self.tls)


def connection(args: argparse.Namespace, *, service: str, scope: str,
               state: StateFile | None = None) -> Connection:
    """The target and bearer token (`--target` and `--token-env` first, else the state file) and the TLS settings.

    A blank `--target` or `--token-env` is an error, not "absent": falling back to the state file would call a
    service or use a token the user did not choose. The PORTICO_UPSTREAM_TLS_* files are read and checked here,
    before any call, so a bad one is a ConfigError naming its variable rather than every call UNAVAILABLE.
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
    try:
        tls = ChannelTls.from_env(os.environ)
    except SettingError as exc:  # the runtime's own error, already naming the variable and never a file's content
        raise ConfigError(str(exc)) from None
    return Connection(target, token, tls)


def default_account(account: str | None, state: StateFile) -> str:
    """`--account` if given, else `demo.account` from the state file.

    Without a state file, the usual advice (pass --target and --token-env) is beside the point when those were
    passed: what is missing then is the account.
    """
    if account is not None:
        return account
    if not state.path.exists():
        raise ConfigError(f"no --account given, and no state file at {state.path} to take demo.account from: "
                          "pass --account 0x... (or --state-file)")
    return state.value("demo", "account")


# In an error line: a run of whitespace with a line break or tab in it (one space instead), and the control
# characters left after that (shown escaped: a terminal would act on ESC).
_BREAKS = re.compile(r"[^\S ]+")  # split on; the spaces next to a break go with it (linear, no backtracking)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def describe_rpc_error(error: grpc.aio.AioRpcError, target: str) -> str:
    """One readable line for a failed call: code, the server's message, and its reason when it gives one.

    The message keeps its spaces (a symbol with two spaces in it is shown with two); a line break or tab, with
    the whitespace around it, reads as one space, and other control characters are shown escaped (`\\x1b`).
    """
    details = " ".join(p for p in (part.strip(" ") for part in _BREAKS.split(error.details() or "")) if p)
    details = _CONTROL.sub(lambda m: m[0].encode("unicode_escape").decode("ascii"), details) or "no details"
    try:
        info = error_info(error)
    except Exception:  # a malformed status detail must not hide the error itself
        info = None
    reason = f" [{info.reason}]" if info is not None and info.reason else ""
    return f"{error.code().name} from {target}: {details}{reason}"
