"""HTTP Basic for a 1C publication, with the login encoded as UTF-8.

1C users often have Cyrillic names; IIS publications answer 401.5 to a cp1251-encoded
login, so the encoding is pinned here rather than left to a default.
"""

from __future__ import annotations

import base64
from collections.abc import Generator

import httpx

__all__ = ["OneCBasicAuth"]


class OneCBasicAuth(httpx.Auth):
    """Usage: ``httpx.Client(base_url=".../odata/standard.odata/", auth=OneCBasicAuth(u, p))``."""

    def __init__(self, user: str, password: str) -> None:
        raw = f"{user}:{password}".encode()
        self._header = "Basic " + base64.b64encode(raw).decode("ascii")

    def __repr__(self) -> str:
        return "OneCBasicAuth(***)"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._header
        yield request
