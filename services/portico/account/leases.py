"""Leases in Vault: one change of an account at a time across every account service process.

Some changes read the venue's state and act on it: a signing-key registration
reads the venue's nonces, registers, then writes the new record to Vault (a
later registration by someone else in between, and the late write puts back a
key the venue no longer accepts); SetPortfolioMargin reads the mode, then
toggles (two at once toggle it back). A lock in memory covers one process, but
two run at once during a rolling update (the Deployment's maxSurge), or when
the Deployment is scaled. So the lock is in Vault, which every process shares
and where the account's record lives.

A lease is one KV v2 secret per (venue, account, change) at
``portico/venues/<venue>/leases/<account, lower case>/<change>``:
``{"holder", "expires_at_ms", "version"}``, never a secret. It is taken
with a check-and-set write on the version read, so of two processes that read
it free (or expired) exactly one write wins. ``version`` is the KV version of
the write that carries it (its cas + 1): the service's Vault policy reads
secrets' data, not their metadata, so the next writer learns there what to
check against (a record out of step with that, written by something else, is
an error naming the path: remove it with `bao kv metadata delete`). Released by
a check-and-set write with no holder; one whose holder died expires; one this
process left behind (its release failed) it takes again at once.

A lease lasts `ttl_s` from just before the write that took it, without
renewal. Its holder calls `check` before each step that must not happen after
another process could have taken it (a venue call, the record's write): when
too little of the lease is left, the step is not taken, so a holder slowed
beyond its lease never acts on or writes over what a later holder did. Other
processes treat it as expired `_CLOCK_SKEW_S` later than it says (their clocks
may differ from the holder's). A process wanting a held lease reads it again
with growing pauses, for at most a lease's length (then UNAVAILABLE, reason
ACCOUNT_BUSY).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from typing import Any, Final

from portico.runtime.errors import Internal, Unavailable
from portico.runtime.vault import VaultCasMismatch, VaultError, VaultNotFound, VaultSession, vault_unavailable

__all__ = ["AccountLeases", "Lease", "lease_path"]

log = logging.getLogger("portico.account.leases")

DEFAULT_TTL_S: Final = 60.0
_CLOCK_SKEW_S: Final = 5.0
_POLL_S: Final = (0.05, 0.5)  # first and longest pause between reads of a lease someone holds
_OUT_OF_STEP_AFTER: Final = 5


def lease_path(venue: str, account: str, change: str) -> str:
    """Where the lease of one kind of change of one account is kept (below the KV mount)."""
    return f"portico/venues/{venue}/leases/{account.lower()}/{change}"


class Lease:
    """A lease this process holds; `check` before each step, `release` at the end."""

    def __init__(self, vault: VaultSession, path: str, version: int, valid_until: float, what: str,
                 on_release: Callable[[Lease], None] | None = None):
        self._vault = vault
        self.path = path
        self.version = version
        self._valid_until = valid_until  # monotonic
        self._what = what
        self._released = False
        self._on_release = on_release

    def remaining_s(self) -> float:
        return self._valid_until - time.monotonic()

    def check(self, needed_s: float, step: str) -> None:
        """Unavailable (reason LEASE_EXPIRED) unless `needed_s` of the lease is left for `step`."""
        if self.remaining_s() < needed_s:
            raise Unavailable(f"{self._what} took too long: it stopped before {step}, as another process may now "
                              "change the account", reason="LEASE_EXPIRED")

    async def release(self) -> None:
        """Free the lease at once (if it is still ours); a failure only leaves it to expire."""
        if self._released:
            return
        self._released = True
        if self._on_release is not None:
            self._on_release(self)
        try:
            await self._vault.write_kv(self.path, _record("", 0, self.version + 1), cas=self.version)
        except VaultCasMismatch:
            log.error("the lease was taken over before it was released", extra={"lease": self.path})
        except VaultError as exc:
            log.warning("releasing the lease failed; it expires on its own", extra={
                "lease": self.path, "error": type(exc).__name__})


class AccountLeases:
    """Takes leases for this process (its holder name: host, process id and a random part)."""

    def __init__(self, vault: VaultSession, *, ttl_s: float = DEFAULT_TTL_S):
        self.vault = vault
        self.ttl_s = ttl_s
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        # Paths of the leases this process holds now. A record naming this process at another path is a leftover
        # (its release failed, or its taking was cancelled after Vault took the write): free to take again at
        # once, instead of this process waiting a lease's length for itself.
        self._holding: dict[str, Lease] = {}

    async def acquire(self, venue: str, account: str, change: str, what: str) -> Lease:
        """Wait for the lease while another process holds it (at most a lease's length), then take it.

        `what` describes the change in errors and logs. Unavailable when Vault cannot be read or written
        (the cause as reason: `vault_unavailable`) or when another process kept the lease all that time
        (ACCOUNT_BUSY)."""
        path = lease_path(venue, account, change)
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self.ttl_s + _CLOCK_SKEW_S
        pause = _POLL_S[0]
        lost: tuple[int, int] = (-1, 0)  # the version check-and-set writes lost on, how many times in a row
        while True:
            try:
                current = await self.vault.read_kv(path)
            except VaultNotFound:
                current = None
            except VaultError as exc:
                raise vault_unavailable(exc, f"take the lease for {what}") from None
            version = 0 if current is None else _version(current, path)
            if current is not None and _held(current) and (current.get("holder") != self.holder
                                                           or path in self._holding):
                if loop.time() >= give_up_at:
                    raise Unavailable(f"another process has been running {what} for longer than a lease lasts; "
                                      "retry", reason="ACCOUNT_BUSY", metadata={"holder": str(current["holder"])})
                await asyncio.sleep(min(pause, max(give_up_at - loop.time(), 0)))
                pause = min(pause * 2, _POLL_S[1])
                continue
            started = time.monotonic()
            expires_at_ms = int((time.time() + self.ttl_s) * 1000)
            try:
                await self.vault.write_kv(path, _record(self.holder, expires_at_ms, version + 1), cas=version)
            except VaultCasMismatch:
                # Another process took it between the read and the write: see who. Losing again and again on a
                # lease read free at one version means its record is out of step with Vault's versions.
                lost = (version, lost[1] + 1 if lost[0] == version else 1)
                if lost[1] >= _OUT_OF_STEP_AFTER:
                    raise Internal(f"the lease at {path} is out of step with its Vault versions: remove it (bao kv "
                                   "metadata delete) if no change of the account is under way",
                                   reason="LEASE_INVALID") from None
                await asyncio.sleep(_POLL_S[0])
                continue
            except VaultError as exc:
                raise vault_unavailable(exc, f"take the lease for {what}") from None
            lease = self._holding[path] = Lease(self.vault, path, version + 1, started + self.ttl_s, what,
                                                self._released)
            return lease

    def _released(self, lease: Lease) -> None:
        if self._holding.get(lease.path) is lease:
            del self._holding[lease.path]


def _record(holder: str, expires_at_ms: int, version: int) -> dict[str, Any]:
    return {"holder": holder, "expires_at_ms": expires_at_ms, "version": version}


def _version(current: dict[str, Any], path: str) -> int:
    version = current.get("version")
    if type(version) is not int or version < 1:
        raise Internal(f"the lease at {path} is not one this service wrote: remove it (bao kv metadata delete) if "
                       "no change of the account is under way", reason="LEASE_INVALID")
    return version


def _held(current: dict[str, Any]) -> bool:
    expires_at_ms = current.get("expires_at_ms")
    if not current.get("holder") or type(expires_at_ms) is not int:
        return False
    return time.time() * 1000 < expires_at_ms + _CLOCK_SKEW_S * 1000
