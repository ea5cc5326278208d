"""Bitrix24 OAuth as an :class:`httpx.Auth`: ``auth`` in the body, refresh on ``expired_token``.

Bitrix24's documented client logic (settings/oauth/auto-renewal): use the stored access
token; only when a call answers 401 ``expired_token`` refresh at oauth.bitrix.info, save
the new pair (the refresh token is single-use) and repeat the call -- do not refresh
before every call. The token goes in the body, not the query string, so it never shows
up in a logged URL.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Generator

import httpx

from connectors.oauth import RefreshingAuth
from connectors.tokens import Token, TokenStore

__all__ = ["Bitrix24OAuth"]


class Bitrix24OAuth(RefreshingAuth):
    """Usage: ``httpx.Client(base_url="https://portal/rest/", auth=Bitrix24OAuth(...))``."""

    crm = "bitrix24"

    def __init__(self, *, oauth_url: str, client_id: str, client_secret: str,
                 store: TokenStore, clock: Callable[[], float] = time.time) -> None:
        super().__init__(store=store, clock=clock)
        self._oauth_url = oauth_url
        self._client_id = client_id
        self._client_secret = client_secret

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self._stored("no Bitrix24 token stored: install the application")
        response = yield _with_token(request, token)
        if response.status_code == 401 and _error_code(response) == "expired_token":
            token = yield from self._refresh(token)
            yield _with_token(request, token)

    def _refresh_request(self, used: Token) -> httpx.Request:
        return httpx.Request("GET", self._oauth_url, params={
            "grant_type": "refresh_token", "client_id": self._client_id,
            "client_secret": self._client_secret, "refresh_token": used.refresh_token})


def _with_token(request: httpx.Request, token: Token) -> httpx.Request:
    body = json.loads(request.content or b"{}")
    body["auth"] = token.access_token
    headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
    return httpx.Request(request.method, request.url, headers=headers, json=body,
                         extensions=request.extensions)


def _error_code(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error", ""))
    except ValueError:
        return ""
