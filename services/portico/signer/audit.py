"""The signer's audit trail: no signature leaves the signer without its line in the audit file.

Every signature is recorded as one line (`portico.signer.audit`, message `signed`: key id, caller, primary type,
digest, address, salt, trace id). The line goes to the process's log (stderr, through the root logger's handler,
in `PORTICO_LOG_FORMAT`), on the event loop's turn after the answer, and, when `PORTICO_SIGNER_AUDIT_LOG` is set,
to that file as a JSON line, formatted by the same `JsonFormatter("signer")`, before the answer.

The file is the audit record, and it fails closed. It is written here rather than by a `logging.FileHandler`
because a handler swallows its write errors (`Handler.handleError` prints a traceback and carries on): with the
file's disk full or the file unwritable, the signer went on returning signatures with no record. A handler
whose `handleError` re-raises would work too, but it is global state (a handler on a process-wide logger, shared
by every `SignerApp` in a process and left behind by one that closes) and its lock and buffered stream add
nothing here. So `SignerServicer.Sign` calls `AuditLog.signed` after signing and before answering:

- the line is encoded and appended with one `os.write` to a file opened `O_APPEND` (no Python buffer: the bytes
  are in the kernel when `signed` returns, which is what `flush` guaranteed; no fsync per line, as before);
- if that fails (ENOSPC, EIO, EROFS, a file that cannot be opened again), `signed` raises UNAVAILABLE
  (`AUDIT_UNAVAILABLE`) and `Sign` answers that instead of the signature; nothing goes to stderr as `signed`;
- the file is closed on a failure and opened again by the next signature, so signing resumes as soon as the
  target is writable again (space freed, a filesystem remounted, a file or directory put back), without a
  restart; a line torn by a partial write is ended before the next one, which starts on a line of its own;
- a warning (`portico.signer`, stderr) says so once per outage, not once per call, and an info line when it is
  writable again, with the number of signatures withheld meanwhile.

A retry works: the signature was computed and its salt's watermark committed before the audit line failed, but
the salt ledger allows the same payload (same digest) to be signed again under its salt, and the signature is
deterministic, so a caller that retries the same request once the file is writable gets the same signature,
audited then. A different payload under that salt stays refused (SALT_REUSED), as it must.

The stderr line stays best effort, as every log line (a logging handler reports its own write errors and
carries on): a deployment that must not sign unaudited sets `PORTICO_SIGNER_AUDIT_LOG`. A path that cannot be
opened at start stops the start (a configuration error). Cost per signature: the same JSON formatting as before
plus one `write(2)`, no lock, no Python buffer, no thread hop: ~50 us against ~60 us for the `FileHandler` it
replaces (medians, both with the stderr line, on a loaded 2-core host).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from portico.runtime.config import ConfigError
from portico.runtime.errors import Unavailable
from portico.runtime.logs import JsonFormatter

__all__ = ["AuditLog", "audit"]

log = logging.getLogger("portico.signer")
audit = logging.getLogger("portico.signer.audit")
# Every signature is audited, whatever PORTICO_LOG_LEVEL says: the root's level (WARNING, say) must not drop
# the audit lines, to stderr or to PORTICO_SIGNER_AUDIT_LOG (a logger's own level decides before any handler).
audit.setLevel(logging.INFO)

_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)


def _audit_unavailable() -> Unavailable:
    # No path, key id, digest or error text: the operator reads those in the signer's own log.
    return Unavailable("the signer cannot write its audit log now; no signature was returned, retry",
                       reason="AUDIT_UNAVAILABLE")


def _error_name(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, type(exc).__name__)


class AuditLog:
    """One line per signature: to stderr as every log line, and appended to `path` (if set) before it may leave."""

    def __init__(self, path: Path | None, *, service: str = "signer"):
        self.path = path
        self._formatter = JsonFormatter(service)
        self._fd: int | None = None
        self._torn = False  # the last failed write left part of a line: end it before the next one
        self._withheld = 0  # signatures refused in the current outage (0: no outage)

    def open(self) -> None:
        """Open the file at start: a path that cannot be opened for appending is a configuration error."""
        if self.path is None or self._fd is not None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, _FLAGS, 0o666)
        except OSError as exc:
            raise ConfigError(f"PORTICO_SIGNER_AUDIT_LOG={self.path} cannot be opened for appending: "
                              f"{exc.strerror or _error_name(exc)}") from None

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def signed(self, fields: Mapping[str, Any]) -> None:
        """Record one signature: appended to the file (Unavailable AUDIT_UNAVAILABLE if it cannot be), then logged.

        Call it before the signature is returned, on the event loop's thread (it is not locked). The file's line
        is written before this returns; the log's copy, best effort as every log line, is handed to the log on
        the loop's next turn (in this context, so with this trace id), just after the answer has left, rather
        than delaying it: formatting a line and writing it to stderr is a sizeable part of a signature's time.
        Without a running loop it is logged at once.
        """
        record = audit.makeRecord(audit.name, logging.INFO, "(unknown file)", 0, "signed", (), None,
                                  extra=dict(fields))
        if self.path is not None:
            self._append((self._formatter.format(record) + "\n").encode("utf-8"))
        if audit.isEnabledFor(logging.INFO):
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                audit.handle(record)
            else:
                loop.call_soon(audit.handle, record)

    def _append(self, line: bytes) -> None:
        path = self.path
        assert path is not None
        ended = 1 if self._torn else 0  # the newline that ends a torn line, first
        if ended:
            line = b"\n" + line
        written = 0
        try:
            if self._fd is None:
                self._fd = os.open(path, _FLAGS, 0o666)
            while written < len(line):  # a regular file takes it all at once, unless the disk fills meanwhile
                written += os.write(self._fd, line[written:])
        except OSError as exc:
            if written:
                self._torn = written > ended
            self._failed(exc)
            raise _audit_unavailable() from None
        self._torn = False
        if self._withheld:
            log.info("audit log writable again; signing", extra={"path": str(path), "withheld": self._withheld})
            self._withheld = 0

    def _failed(self, exc: OSError) -> None:
        fd, self._fd = self._fd, None  # opened again by the next signature: the target may come back otherwise
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
        if not self._withheld:  # once per outage, not once per call
            log.warning("audit log cannot be written; refusing to return signatures",
                        extra={"path": str(self.path), "error": _error_name(exc),
                               "detail": (exc.strerror or "")[:200]})
        self._withheld += 1
