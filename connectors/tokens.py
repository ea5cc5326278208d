"""OAuth token pairs and where they are kept between runs.

Both amoCRM and Bitrix24 issue single-use refresh tokens: every refresh returns a new
pair and the old refresh token dies. Losing the new pair means an operator must
re-authorise the integration, so :class:`FileTokenStore` writes it atomically (temp file
+ rename, mode 0600) before the new access token is used.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

__all__ = ["Token", "TokenStore", "MemoryTokenStore", "FileTokenStore"]


@dataclass(frozen=True)
class Token:
    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_at: float
    """Unix time when the access token stops working."""
    client_endpoint: str = ""
    """Bitrix24: the portal's REST base named by the token response (``client_endpoint``),
    where REST calls go; empty: the configured base URL."""
    server_endpoint: str = ""
    """Bitrix24: the OAuth server's REST base named by the token response
    (``server_endpoint``); its ``/oauth/token/`` is where this pair is refreshed."""


class TokenStore(Protocol):
    def load(self) -> Token | None: ...

    def save(self, token: Token) -> None: ...


class MemoryTokenStore:
    """For tests and for a first run seeded from the install step."""

    def __init__(self, token: Token | None = None) -> None:
        self._token = token
        self._lock = threading.Lock()

    def load(self) -> Token | None:
        with self._lock:
            return self._token

    def save(self, token: Token) -> None:
        with self._lock:
            self._token = token


class FileTokenStore:
    """A JSON file holding the current pair, replaced atomically on every refresh."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def load(self) -> Token | None:
        with self._lock:
            try:
                return Token(**json.loads(self.path.read_text()))
            except FileNotFoundError:
                return None

    def save(self, token: Token) -> None:
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".token-")
            try:
                os.fchmod(fd, 0o600)
                with os.fdopen(fd, "w") as out:
                    json.dump(asdict(token), out)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
