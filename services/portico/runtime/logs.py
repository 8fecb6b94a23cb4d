"""Structured logs that carry the current trace and span ids.

One format for every service (configured by `PORTICO_LOG_LEVEL` and
`PORTICO_LOG_FORMAT`). Extra fields passed with `logger.info(..., extra={...})`
become JSON keys (or `key=value` after a text line's message); any whose name
suggests a secret (at any depth of a dict or list value) is replaced by
`[redacted]` as a last line of defence (the first is not logging secrets).
"""

from __future__ import annotations

import functools
import json
import logging
import re
import sys
import time
from collections.abc import Mapping
from typing import Any

import orjson
from opentelemetry import trace

from portico.runtime.config import ConfigError, setting

__all__ = ["JsonFormatter", "configure_logging"]

LOG_LEVEL = setting("PORTICO_LOG_LEVEL", "INFO", "Log level: DEBUG, INFO, WARNING, ERROR.")
LOG_FORMAT = setting("PORTICO_LOG_FORMAT", "json", "`json` (one object a line, with trace ids and fields) or "
                     "`text` (a line for people: the same trace ids and fields as `key=value`).")

_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime", "taskName"}
_SECRET_NAME = re.compile(r"(secret|token|password|passphrase|private|credential|api_?key|authorization|seed|mnemonic)",
                          re.IGNORECASE)
REDACTED = "[redacted]"
_ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS


@functools.lru_cache(maxsize=1024)
def _is_extra(key: str) -> bool:
    return key not in _STANDARD_ATTRS and not key.startswith("_")


@functools.lru_cache(maxsize=1024)
def _is_secret_name(key: str) -> bool:
    return _SECRET_NAME.search(key) is not None


def _redacted(value: Any) -> Any:
    """`value`, with the secret-named keys of the dicts in it (at any depth) redacted, and every key made text (a
    Decimal price level or a tuple as a key would otherwise cost the whole line: JSON keys are strings)."""
    if isinstance(value, dict):
        return {key: REDACTED if _is_secret_name(key) else _redacted(item)
                for key, item in ((k if isinstance(k, str) else str(k), v) for k, v in value.items())}
    if isinstance(value, list | tuple):
        return [_redacted(item) for item in value]
    return value


def _context(record: logging.LogRecord) -> dict[str, Any]:
    """What a line says beyond its message: the trace it belongs to and the record's extras, redacted."""
    fields: dict[str, Any] = {}
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        fields["trace_id"] = format(span_context.trace_id, "032x")
        fields["span_id"] = format(span_context.span_id, "016x")
    for key, value in record.__dict__.items():
        if _is_extra(key):
            fields[key] = REDACTED if _is_secret_name(key) else _redacted(value)
    return fields


class JsonFormatter(logging.Formatter):
    """Render a record as one JSON object with trace context and extras."""

    def __init__(self, service: str):
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
            **_context(record),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        # orjson: a log line is written on hot paths (the signer's audit line per signature), and it is
        # several times faster; the stdlib takes what orjson refuses (integers beyond 64 bits).
        try:
            return orjson.dumps(entry, default=str, option=_ORJSON_OPTIONS).decode()
        except (orjson.JSONEncodeError, TypeError):
            return json.dumps(entry, default=str, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """A line for people: time, level, logger and message, then the same trace ids and extras as the JSON
    lines (`key=value`, redacted alike), which say which account, order or key the message is about."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        # The message may quote text from outside (`"resync failed: %s", exc` with a venue's error text, a
        # request path): escaped as the extras are, a newline in it can neither forge a line nor hide one.
        line = super().formatMessage(record)
        return line if line.isprintable() else "".join(c if c.isprintable() else _escaped(c) for c in line)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = _context(record)
        if not fields:
            return line
        text = " ".join(f"{key}={_text(value)}" for key, value in fields.items())
        head, newline, rest = line.partition("\n")  # a traceback stays below the line it belongs to
        return f"{head} {text}{newline}{rest}"


def _text(value: Any) -> str:
    """A value as `key=value` shows it: JSON for structures, quoted where a space, quote or `=` would blur it, or
    where a control character (a newline, a carriage return, a terminal escape) would forge or hide a line."""
    if isinstance(value, dict | list):
        return json.dumps(_str_keys(value), default=str, separators=(",", ":"))
    shown = str(value)
    return json.dumps(shown) if not shown.isprintable() or not shown or any(c in shown for c in ' "=') else shown


def _escaped(char: str) -> str:
    """A character that is not printable as its escape (`\\n`, `\\x1b`, `\\u2028`)."""
    return char.encode("unicode_escape").decode("ascii")


def _str_keys(value: Any) -> Any:
    """`value` with the keys of its dicts (at any depth) as strings: `json` refuses a Decimal's or a tuple's."""
    if isinstance(value, dict):
        return {key if isinstance(key, str) else str(key): _str_keys(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_str_keys(item) for item in value]
    return value


def configure_logging(service: str, env: Mapping[str, str]) -> None:
    """Send this process's logs to stderr in the configured format."""
    level = LOG_LEVEL.get_str(env).upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigError(f"{LOG_LEVEL.name} must be DEBUG, INFO, WARNING or ERROR")
    fmt = LOG_FORMAT.get_str(env)
    if fmt not in ("json", "text"):
        raise ConfigError(f"{LOG_FORMAT.name} must be json or text")
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
