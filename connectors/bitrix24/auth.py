"""Bitrix24 OAuth as an :class:`httpx.Auth`: ``auth`` in the body, refresh on ``expired_token``.

Bitrix24's documented client logic (settings/oauth/auto-renewal): use the stored access
token; only when a call answers 401 ``expired_token`` refresh at oauth.bitrix.info, save
the new pair (the refresh token is single-use) and repeat the call -- do not refresh
before every call. The token goes in the body, not the query string, so it never shows
up in a logged URL.

The token response names where the pair belongs (crm-contracts.md §2.2 [B14, B15]):
``client_endpoint`` is the portal's REST base -- REST calls go there, whatever base URL
was configured (a portal renamed or moved to another domain) -- and ``server_endpoint``
the OAuth server's REST base, whose ``/oauth/token/`` refreshes the pair (a regional or
on-premise OAuth server instead of oauth.bitrix.info). Both are kept with the pair
(:class:`~connectors.tokens.Token`); a pair stored without them uses the configured URLs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Generator

import httpx

from connectors.oauth import RefreshingAuth
from connectors.tokens import Token, TokenStore

__all__ = ["Bitrix24OAuth", "token_url"]


class Bitrix24OAuth(RefreshingAuth):
    """Usage: ``httpx.Client(base_url="https://portal/rest/", auth=Bitrix24OAuth(...))``."""

    crm = "bitrix24"

    def __init__(self, *, oauth_url: str, client_id: str, client_secret: str,
                 store: TokenStore, clock: Callable[[], float] = time.time,
                 rest_base: str = "") -> None:
        super().__init__(store=store, clock=clock)
        self._oauth_url = oauth_url
        self._rest_base = rest_base
        """The configured REST base (``crm_bitrix24_base_url``): what a request's method
        is relative to, before it is sent to the token's ``client_endpoint``."""
        self._client_id = client_id
        self._client_secret = client_secret

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self._stored("no Bitrix24 token stored: install the application")
        response = yield _with_token(self._at_endpoint(request, token), token)
        if response.status_code == 401 and _error_code(response) == "expired_token":
            token = yield from self._refresh(token)
            yield _with_token(self._at_endpoint(request, token), token)

    def _at_endpoint(self, request: httpx.Request, token: Token) -> httpx.Request:
        """The request sent to the token's portal (``client_endpoint``), if it names one."""
        if not token.client_endpoint:
            return request
        url = str(request.url.copy_with(query=None, fragment=None))
        if self._rest_base and url.startswith(self._rest_base):
            method = url[len(self._rest_base):]
        elif "/rest/" in url:
            method = url[url.index("/rest/") + len("/rest/"):]
        else:
            return request
        target = token.client_endpoint.rstrip("/") + "/" + method.lstrip("/")
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in ("host", "content-length")}
        return httpx.Request(request.method, httpx.URL(target, params=request.url.params),
                             headers=headers, content=request.content,
                             extensions=request.extensions)

    def _refresh_request(self, used: Token) -> httpx.Request:
        return httpx.Request("GET", token_url(used.server_endpoint) or self._oauth_url, params={
            "grant_type": "refresh_token", "client_id": self._client_id,
            "client_secret": self._client_secret, "refresh_token": used.refresh_token})


def token_url(server_endpoint: str) -> str:
    """The OAuth server's token URL from its ``server_endpoint``
    (``https://oauth.bitrix.info/rest/`` -> ``https://oauth.bitrix.info/oauth/token/``);
    "" when none is known."""
    if not server_endpoint:
        return ""
    base = server_endpoint.rstrip("/")
    base = base[: -len("/rest")] if base.endswith("/rest") else base
    return base + "/oauth/token/"


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
