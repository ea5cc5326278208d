"""The OAuth 2.0 refresh that amoCRM and Bitrix24 share, as an :class:`httpx.Auth` base.

Both CRMs issue single-use refresh tokens: a refresh holds a lock, re-reads the store
(another thread may have refreshed meanwhile) and saves the new pair before it is used.
Subclasses say how a refresh request looks and when to refresh; this module does the rest.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator

import httpx

from connectors.base import AuthExpired
from connectors.tokens import Token, TokenStore

__all__ = ["RefreshingAuth"]


class RefreshingAuth(httpx.Auth):
    """Base of the CRM auths: ``_refresh_request`` builds the vendor's refresh call."""

    requires_response_body = True
    crm = ""
    """Vendor name used in errors (``amocrm``, ``bitrix24``)."""

    def __init__(self, *, store: TokenStore, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock
        self._lock = threading.Lock()
        self.refreshes = 0

    def _refresh_request(self, used: Token) -> httpx.Request:
        raise NotImplementedError

    def _stored(self, missing: str) -> Token:
        token = self._store.load()
        if token is None:
            raise AuthExpired(missing, crm=self.crm)
        return token

    def _refresh(self, used: Token) -> Generator[httpx.Request, httpx.Response, Token]:
        with self._lock:
            current = self._store.load()
            if current is not None and current.access_token != used.access_token:
                return current  # another thread refreshed while we waited
            response = yield self._refresh_request(used)
            if response.status_code != 200:
                raise AuthExpired(f"{self.crm} token refresh failed: HTTP "
                                  f"{response.status_code}", crm=self.crm)
            data = response.json()
            token = Token(access_token=data["access_token"], refresh_token=data["refresh_token"],
                          expires_at=self._clock() + float(data["expires_in"]),
                          client_endpoint=str(data.get("client_endpoint")
                                              or used.client_endpoint),
                          server_endpoint=str(data.get("server_endpoint")
                                              or used.server_endpoint))
            self._store.save(token)
            self.refreshes += 1
            return token
