"""amoCRM v4 client over an injected :class:`httpx.Client` (base_url = account domain).

    http = httpx.Client(base_url="https://acme.amocrm.ru", auth=AmoOAuth(...))
    amo = AmoCrmClient(http, source="tawag")
    contact = amo.find_contact("+79161234567")
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx

from connectors.amocrm import mapping
from connectors.amocrm.auth import AmoOAuth
from connectors.base import (
    AMOCRM_LIMIT,
    AuthExpired,
    Capabilities,
    Contact,
    Misconfigured,
    Progress,
    RateLimited,
    Rejected,
    RingingCall,
    SlidingWindow,
    TaskRef,
    Throttle,
    Unavailable,
    retry_after_seconds,
)
from connectors.tokens import TokenStore
from core.records import Cdr
from core.settings import Settings

__all__ = ["AmoCrmClient", "build_client"]

CRM = "amocrm"
CLIENT_LIMIT = {"limit": AMOCRM_LIMIT["limit"], "window_s": AMOCRM_LIMIT["window_s"] + 0.05}
"""50 ms of headroom per window for network jitter between our clock and amoCRM's."""
DEFAULT_RETRY_AFTER_S = 1.0
"""amoCRM's 429 carries no documented Retry-After; one second refills the 7 rps bucket."""
BLOCK_WINDOW_S = 600.0
"""A 403 this soon after a 429 is the account/IP block that repeated 429s escalate to
(Kommo Limitations page), not a missing right: it lifts by itself, so it is retried."""
BLOCK_RETRY_S = 60.0


class AmoCrmClient:
    """Contacts by phone, call log, SIP incoming leads, missed-call tasks, call events."""

    name = CRM
    capabilities = Capabilities(screen_pop=True, unknown_lead=True, tasks=True)

    def __init__(self, http: httpx.Client, *, source: str = "tawag",
                 throttle: Throttle | None = None, task_deadline_s: int = 3600,
                 clock: Callable[[], float] = time.time) -> None:
        self._http = http
        self._source = source
        self._throttle = throttle or Throttle(SlidingWindow(**CLIENT_LIMIT))
        self._task_deadline_s = task_deadline_s
        self._clock = clock
        self._limited_at: float | None = None

    # --- requests --------------------------------------------------------------------
    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        self._throttle.acquire()
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise Unavailable(f"amoCRM unreachable: {type(exc).__name__}", crm=CRM) from exc
        if response.status_code == 429:
            self._limited_at = self._clock()
        blocked = (self._limited_at is not None
                   and self._clock() - self._limited_at < BLOCK_WINDOW_S)
        return _check(response, blocked=blocked)

    # --- CrmClient -------------------------------------------------------------------
    def find_contact(self, phone: str) -> Contact | None:
        response = self._request("GET", "/api/v4/contacts", params={
            "query": mapping.search_query(phone), "with": "leads", "limit": 50})
        if response.status_code == 204:  # amoCRM's "no data"
            return None
        return mapping.matching_contact(response.json(), phone)

    def screen_pop(self, call: RingingCall) -> None:
        """A call event for the users it now rings for; amoCRM has no "hide"."""
        if not call.users:
            return  # without ``users`` amoCRM would notify every user of the account
        self._request("POST", "/api/v2/events",
                      json=mapping.to_call_event(call.phone, list(call.users)))

    def create_lead_for_unknown(self, cdr: Cdr, *, phone: str, user: str | None,
                                recording_url: str | None) -> Contact | None:
        """An incoming lead (Неразобранное) whose metadata carries the call itself.

        amoCRM refuses a second incoming lead for a number whose first is still waiting
        for a user's decision (Kommo incoming-leads docs): that call is parked with the
        reason (Rejected), it has no entity to land on until the lead is accepted.
        """
        item = mapping.to_unsorted_sip(cdr, phone=phone, user=user, source=self._source,
                                       link=recording_url)
        body = self._request("POST", "/api/v4/leads/unsorted/sip", json=[item]).json()
        created = body["_embedded"]["unsorted"][0]["_embedded"]
        contact_id = str(created["contacts"][0]["id"])
        return Contact(crm=CRM, id=contact_id, name=phone, responsible_user_id=None,
                       entity_type=mapping.UNSORTED,
                       lead_ids=tuple(str(lead["id"]) for lead in created.get("leads", [])))

    def log_call(self, cdr: Cdr, *, phone: str, user: str | None, contact: Contact | None,
                 recording_url: str | None, progress: Progress) -> None:
        """POST /api/v4/calls once, made idempotent by us: amoCRM's ``uniq`` deduplicates
        nothing ("our API does not regulate the identity of calls", Kommo call-logging
        docs). ``call_sent`` is journalled before the POST; a resend after a lost answer
        first looks for a call note with our ``uniq`` on the entities the call can land
        on, and the created call's id is journalled before the entry is acknowledged."""
        if progress.get("call_logged") or progress.get("call_id"):
            return
        if contact is not None and contact.entity_type == mapping.UNSORTED:
            return  # the incoming lead's metadata is the call; its contact takes none
        if progress.get("call_sent"):
            found = self._call_notes(cdr.call_id, contact)
            if found:
                progress.set("call_id", str(found[0]))
                return
        item = mapping.to_call(cdr, phone=phone, user=user, source=self._source,
                               link=recording_url)
        progress.set("call_sent", True)
        body = self._request("POST", "/api/v4/calls", json=[item]).json()
        errors = body.get("errors") or []
        if errors:
            # amoCRM answers 200 and lists per-item failures (e.g. no entity for the phone).
            raise Rejected("amoCRM did not add the call: " + _details(errors), crm=CRM,
                           status=200, body=errors, code="call_not_added")
        calls = (body.get("_embedded") or {}).get("calls") or [{}]
        progress.set("call_id", str(calls[0].get("id", "")) or "unknown")

    def _call_notes(self, uniq: str, contact: Contact | None) -> list[int]:
        """Call notes with our ``uniq`` where amoCRM attaches calls: the client's leads
        (the single active one wins) and its contact card."""
        if contact is None:
            return []
        places = [("leads", lead) for lead in contact.lead_ids] + [("contacts", contact.id)]
        found: list[int] = []
        for plural, entity_id in places:
            response = self._request("GET", f"/api/v4/{plural}/{entity_id}/notes", params={
                "filter[note_type][]": ["call_in", "call_out"], "limit": 250})
            if response.status_code != 204:
                found += mapping.call_notes_with(response.json(), uniq)
        return found

    def create_missed_call_task(self, cdr: Cdr, *, phone: str, contact: Contact | None,
                                responsible: str | None, progress: Progress) -> TaskRef | None:
        if progress.get("task_id"):
            return TaskRef(crm=CRM, id=progress.get("task_id"), phone=phone)
        if contact is None or responsible is None:
            return None
        if contact.entity_type == mapping.UNSORTED and not contact.lead_ids:
            return None
        entity_type, entity_id = (("leads", contact.lead_ids[0]) if contact.lead_ids
                                  else ("contacts", contact.id))
        ended = cdr.ended_at or cdr.last_event_ts
        deadline = int((ended + timedelta(seconds=self._task_deadline_s)).timestamp())
        item = mapping.to_missed_task(cdr, phone=phone, entity_type=entity_type,
                                      entity_id=entity_id, responsible=responsible,
                                      complete_till=deadline)
        body = self._request("POST", "/api/v4/tasks", json=[item]).json()
        task_id = str(body["_embedded"]["tasks"][0]["id"])
        progress.set("task_id", task_id)
        return TaskRef(crm=CRM, id=task_id, phone=phone)

    def close_task(self, task: TaskRef, *, note: str) -> None:
        self._request("PATCH", f"/api/v4/tasks/{task.id}",
                      json={"is_completed": True, "result": {"text": note}})

    def finish_unplaced(self, crm_call_id: str, *, user: str, progress: Progress) -> None:
        """amoCRM starts no calls through us (no click-to-call contract): nothing to finish."""
        return None


def _details(errors: list[Any]) -> str:
    return "; ".join(str(e.get("detail", e)) if isinstance(e, dict) else str(e)
                     for e in errors)


def _check(response: httpx.Response, *, blocked: bool = False) -> httpx.Response:
    """amoCRM status codes -> ConnectorError (contract §1.2, §1.3, §1.7; amoCRM's error
    reference mirrored in crm-contracts.md [A17]).

    Temporary: 429, 5xx, and a 403 shortly after a 429 (the escalation block). The
    account as a whole: 401 (token), 402 (account not paid) -- an operator's matter, the
    queue waits. Permanent for this request, parked: 400 (validation), 403 without a
    recent 429 (the integration's user lacks the right for this entity), 404.
    """
    status = response.status_code
    if status < 300:
        return response
    if status == 401:
        raise AuthExpired("amoCRM refused the token after a refresh", crm=CRM)
    if status == 429:
        raise RateLimited("amoCRM: too many requests", crm=CRM,
                          retry_after=retry_after_seconds(response.headers, DEFAULT_RETRY_AFTER_S))
    if status == 403 and blocked:
        raise RateLimited("amoCRM: 403 after 429s, the account is blocked for a while",
                          crm=CRM, retry_after=BLOCK_RETRY_S)
    if status == 402:
        raise Misconfigured("amoCRM: 402, the account's subscription has lapsed", crm=CRM)
    if status >= 500:
        raise Unavailable(f"amoCRM: HTTP {status}", crm=CRM)
    body = _body(response)
    detail = body.get("detail", "") if isinstance(body, dict) else ""
    raise Rejected(f"amoCRM refused the request: HTTP {status} {detail}".rstrip(), crm=CRM,
                   status=status, body=body)


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text[:2000]


def build_client(settings: Settings, store: TokenStore, *,
                 transport: httpx.BaseTransport | None = None) -> AmoCrmClient:
    """Wire an :class:`AmoCrmClient` with OAuth from the ``crm_amocrm_*`` settings."""
    auth = AmoOAuth(token_url=settings.crm_amocrm_base_url.rstrip("/") + "/oauth2/access_token",
                    client_id=settings.crm_amocrm_client_id,
                    client_secret=settings.crm_amocrm_client_secret,
                    redirect_uri=settings.crm_amocrm_redirect_uri, store=store)
    http = httpx.Client(base_url=settings.crm_amocrm_base_url, auth=auth, transport=transport,
                        timeout=settings.crm_http_timeout_s)
    return AmoCrmClient(http, source=settings.crm_call_source,
                        task_deadline_s=settings.crm_missed_task_deadline_s)
