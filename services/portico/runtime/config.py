"""Configuration from `PORTICO_*` environment variables, documented in one table.

Each variable is declared once as a `Setting` (name, default, description);
the README's configuration table is generated from these declarations
(`portico config-table`) and a test checks the two agree. Reading a bad value
raises `ConfigError` naming the variable, never echoing a secret value.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["SETTINGS", "ConfigError", "Setting", "config_table", "setting"]

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration variable is missing or malformed."""


@dataclass(frozen=True)
class Setting:
    """One documented environment variable."""

    name: str
    default: str
    description: str
    scope: str = "all services"
    secret: bool = False

    def raw(self, env: Mapping[str, str]) -> str:
        return env.get(self.name, self.default)

    def get_str(self, env: Mapping[str, str]) -> str:
        return self.raw(env)

    def get_int(self, env: Mapping[str, str], *, minimum: int | None = None, maximum: int | None = None) -> int:
        return self._parse(env, int, "an integer", minimum, maximum)

    def get_float(self, env: Mapping[str, str], *, minimum: float | None = None) -> float:
        return self._parse(env, _finite_float, "a finite number", minimum, None)

    def get_bool(self, env: Mapping[str, str]) -> bool:
        value = self.raw(env).strip().lower()
        if value in ("1", "true", "yes", "on"):
            return True
        if value in ("", "0", "false", "no", "off"):
            return False
        raise ConfigError(f"{self.name} must be true or false")

    def get_path(self, env: Mapping[str, str]) -> Path | None:
        value = self.raw(env)
        return Path(value) if value else None

    def get_json(self, env: Mapping[str, str]) -> Any:
        value = self.raw(env)
        if not value:
            return None
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{self.name} is not valid JSON (line {exc.lineno}, column {exc.colno})") from None

    def _parse(self, env: Mapping[str, str], kind: Callable[[str], T], what: str, minimum: Any, maximum: Any) -> T:
        value = self.raw(env)
        try:
            parsed = kind(value)
        except ValueError:
            shown = "" if self.secret else f" (got {value!r})"
            raise ConfigError(f"{self.name} must be {what}{shown}") from None
        if minimum is not None and parsed < minimum:
            raise ConfigError(f"{self.name} must be at least {minimum}")
        if maximum is not None and parsed > maximum:
            raise ConfigError(f"{self.name} must be at most {maximum}")
        return parsed


def _finite_float(text: str) -> float:
    """`float(text)`, refusing `nan` and `inf`: as a duration or a share they pass every bound check, then
    break whatever uses them (a timer cannot be set to NaN)."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


SETTINGS: dict[str, Setting] = {}


def setting(name: str, default: str, description: str, *, scope: str = "all services",
            secret: bool = False) -> Setting:
    """Declare (once) and return a documented environment variable."""
    if name in SETTINGS:
        raise RuntimeError(f"setting {name} declared twice")
    declared = Setting(name, default, description, scope, secret)
    SETTINGS[name] = declared
    return declared


def config_table(settings: Mapping[str, Setting] | None = None) -> str:
    """The Markdown configuration table, grouped by who reads each variable."""
    rows = ["| variable | default | used by | meaning |", "| --- | --- | --- | --- |"]
    for item in sorted((settings or SETTINGS).values(), key=lambda s: (s.scope, s.name)):
        default = f"`{item.default}`" if item.default else "(unset)"
        rows.append(f"| `{item.name}` | {default} | {item.scope} | {item.description} |")
    return "\n".join(rows)

