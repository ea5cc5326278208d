"""amoCRM OAuth 2.0 as an :class:`httpx.Auth`: Bearer header, refresh before expiry and once on 401.

Mirrors the official PHP client (refresh once on 401, a second 401 is an error) and
MikoPBX (refresh ahead of expiry). amoCRM refresh tokens are single-use, so a refresh
holds a lock and the new pair is saved before it is used.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator

import httpx

from connectors.oauth import RefreshingAuth
from connectors.tokens import Token, TokenStore

__all__ = ["AmoOAuth"]

REFRESH_AHEAD_S = 300.0
"""Refresh this long before ``expires_in`` runs out, so no request is sent with a dying token."""


class AmoOAuth(RefreshingAuth):
    """Usage: ``httpx.Client(base_url=..., auth=AmoOAuth(token_url=..., ..., store=store))``."""

    crm = "amocrm"

    def __init__(self, *, token_url: str, client_id: str, client_secret: str,
                 redirect_uri: str, store: TokenStore,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(store=store, clock=clock)
        self._token_url = token_url
        self._client_id = client_id
        self._client_secret = client_secret
        self._redirect_uri = redirect_uri

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self._stored("no amoCRM token stored: authorise the integration")
        if token.expires_at - REFRESH_AHEAD_S <= self._clock():
            token = yield from self._refresh(token)
        request.headers["Authorization"] = f"Bearer {token.access_token}"
        response = yield request
        if response.status_code == 401:
            token = yield from self._refresh(token)
            request.headers["Authorization"] = f"Bearer {token.access_token}"
            yield request

    def _refresh_request(self, used: Token) -> httpx.Request:
        return httpx.Request("POST", self._token_url, json={
            "client_id": self._client_id,
            "client_secret": self._client_secret,
            "grant_type": "refresh_token",
            "refresh_token": used.refresh_token,
            "redirect_uri": self._redirect_uri,
        })
