"""Syndr API key pair, shaped so the secret cannot leak by accident.

The secret is excluded from `repr`/`str` (and so from log lines and exception
messages that format the object); code that needs it reads the attribute
explicitly, in the two places the wire format asks for it (HTTP headers,
`public/auth` params).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from portico.venues.syndr.constants import API_KEY_HEADER, API_SECRET_HEADER

__all__ = ["ApiCredentials"]


@dataclass(frozen=True)
class ApiCredentials:
    """An API key and its secret for one Syndr account."""

    api_key: str
    api_secret: str = field(repr=False)

    def __post_init__(self) -> None:
        # Name the field, never the value: these messages end up in logs.
        if not isinstance(self.api_key, str) or not self.api_key:
            raise ValueError("api_key must be a non-empty string")
        if not isinstance(self.api_secret, str) or not self.api_secret:
            raise ValueError("api_secret must be a non-empty string")

    def headers(self) -> dict[str, str]:
        """The headers a private HTTP call carries."""
        return {API_KEY_HEADER: self.api_key, API_SECRET_HEADER: self.api_secret}

    def auth_params(self) -> dict[str, str]:
        """The params of the WebSocket `public/auth` call."""
        return {"api_key": self.api_key, "api_secret": self.api_secret}

    def scrub(self, text: str) -> str:
        """`text` with the key and secret blanked, for venue messages that might echo them."""
        for value in (self.api_secret, self.api_key):
            if value in text:
                text = text.replace(value, "***")
        return text
