"""Bitrix24 telephony client over an injected :class:`httpx.Client`.

``base_url`` is ``https://portal/rest/`` with :class:`Bitrix24OAuth` (application), or an
inbound webhook ``https://portal/rest/{user}/{code}/`` without auth.

    b24 = Bitrix24Client(httpx.Client(base_url=..., auth=Bitrix24OAuth(...)))
    b24.screen_pop(RingingCall(call_id, "+79161234567", "inbound", t, users=("1269",)))

One Bitrix24 registration per call: the USER_ID a call is registered with and the
CALL_ID from ``register`` are journalled (:class:`~connectors.bitrix24.registrations.
Registrations`, and the CALL_ID in the delivery's progress), so after a restart the call
log finishes the call the screen-pop registered, and a resend repeats the same dedup key
(``EXTERNAL_CALL_ID`` = our call id, the same USER_ID), which within 30 minutes returns
the same CALL_ID instead of a second call.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from connectors.base import (
    BITRIX24_LIMIT,
    LINKED_CALL_ID,
    AuthExpired,
    Capabilities,
    Contact,
    LeakyBucket,
    Misconfigured,
    Progress,
    RateLimited,
    Rejected,
    RingingCall,
    TaskRef,
    Throttle,
    Unavailable,
)
from connectors.bitrix24 import mapping
from connectors.bitrix24.auth import Bitrix24OAuth
from connectors.bitrix24.registrations import Registrations
from connectors.recording_links import recording_file
from connectors.tokens import TokenStore
from core.records import Cdr
from core.settings import Settings

__all__ = ["Bitrix24Client", "build_client"]

log = logging.getLogger("tawag.connectors")

CRM = "bitrix24"
QUERY_LIMIT_RETRY_S = 1.0
"""MikoPBX sleeps 1 s on QUERY_LIMIT_EXCEEDED: two requests' worth of the 2/s drain."""
CALL_NOT_FOUND = "Call is not found"
WEBHOOK_CAPABILITIES = Capabilities(screen_pop=False, unknown_lead=False, tasks=False,
                                    call_log=False, stores_links=False)
"""What an inbound webhook can do for us: look clients up (searchCrmEntities) only."""
WEBHOOK_WARNING = (
    "Bitrix24 inbound webhook: telephony.externalcall.register/finish are "
    "application-only (WRONG_AUTH_TYPE), so calls, screen-pops and recordings are NOT "
    "written; only clients are looked up for routing. Install Tawag as a local application "
    "(TAWAG_CRM_BITRIX24_CLIENT_ID/_SECRET) to log calls.")
ACCOUNT_CODES = frozenset({
    "WRONG_AUTH_TYPE", "insufficient_scope", "ACCESS_DENIED", "user_access_error",
    "PAYMENT_REQUIRED", "PORTAL_DELETED", "INVALID_REQUEST"})
"""Documented codes that no resend fixes and that hold for every call of the portal
(application-only method on a webhook, missing scope, REST off on the plan, portal closed,
https required): the queue waits for an operator instead of parking every entry
(crm-contracts.md §2.1 system errors [B17], register/finish [B1, B2])."""
TEMPORARY_CODES = frozenset({"INTERNAL_SERVER_ERROR", "ERROR_UNEXPECTED_ANSWER",
                             "OVERLOAD_LIMIT"})
"""Server-side failures and the manual overload block: retried later."""
FINISHED_MEMORY = 10_000
"""Finished calls remembered so a late screen-pop event cannot register them again."""
CLIENT_LIMIT = {"capacity": BITRIX24_LIMIT["capacity"] - 2,
                "drain_per_s": BITRIX24_LIMIT["drain_per_s"]}
"""Two requests of headroom under X=50: the portal's counter starts when our first request
*arrives*, and network jitter can make it see two requests closer than we sent them."""


class Bitrix24Client:
    """register/show/hide/finish/attachRecord and searchCrmEntities for one portal."""

    name = CRM
    # Unknown numbers become leads through register's CRM_CREATE, not a separate call;
    # the contract has no task method, and finish with 304 is Bitrix24's own missed call.
    capabilities = Capabilities(screen_pop=True, unknown_lead=False, tasks=False,
                                stores_links=False)

    def __init__(self, http: httpx.Client, *, throttle: Throttle | None = None,
                 line_number: str = "", wall: Callable[[], float] = time.time,
                 read_recording: Callable[[Cdr], tuple[str, bytes] | None] | None = None,
                 webhook: bool = False, registrations: Registrations | None = None) -> None:
        if webhook:
            # register/finish/externalLine.* "work only in the context of an application":
            # a webhook gets WRONG_AUTH_TYPE (b24restdocs telephony-external-call-register.md,
            # -finish.md), and show/hide/attachRecord need the CALL_ID register returns.
            self.capabilities = WEBHOOK_CAPABILITIES
        self._http = http
        self._wall = wall
        self._read_recording = read_recording
        self._throttle = throttle or Throttle(LeakyBucket(**CLIENT_LIMIT))
        self._line_number = line_number
        self._lock = threading.Lock()
        self._call_locks: dict[str, threading.Lock] = {}
        self._registered = registrations or Registrations()
        """Our call id -> (USER_ID, CALL_ID) of its registration, journalled."""
        self._shown: dict[str, set[str]] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()

    # --- requests --------------------------------------------------------------------
    def call(self, method: str, params: dict[str, Any]) -> Any:
        """One REST method; returns ``result`` or raises a ConnectorError."""
        self._throttle.acquire()
        try:
            response = self._http.post(method, json=params)
        except httpx.TransportError as exc:
            raise Unavailable(f"Bitrix24 unreachable: {type(exc).__name__}", crm=CRM) from exc
        return _result(response, now=self._wall())

    # --- CrmClient -------------------------------------------------------------------
    def find_contact(self, phone: str) -> Contact | None:
        result = self.call("telephony.externalCall.searchCrmEntities", {"PHONE_NUMBER": phone})
        return mapping.contact_from(result or [])

    def screen_pop(self, call: RingingCall) -> None:
        """Register once (SHOW=1 for the first user), then show/hide for the others.

        Never for a call already finished: a register after finish is a *new* Bitrix24
        call (the 30-minute dedup only holds until finish).
        """
        with self._lock_for(call.call_id):
            if call.call_id in self._finished:
                return
            users = list(call.users)
            b24_id = self._registered_id(call.call_id)
            if b24_id is None and users:
                b24_id = self._register(call.call_id, call.phone, users[0], call.direction,
                                        call.started_at, show=True)
                self._mark_shown(call.call_id, [users[0]])
            if b24_id is None:
                return
            self._show_hide(call, b24_id)

    def _show_hide(self, call: RingingCall, b24_id: str) -> None:
        shown = self._shown.get(call.call_id, set())
        new = [u for u in call.users if u not in shown]
        if new:
            self.call("telephony.externalcall.show", {"CALL_ID": b24_id,
                                                      "USER_ID": [int(u) for u in new]})
            self._mark_shown(call.call_id, new)
        hide = [u for u in call.hide_users if u in shown]
        if hide:
            self.call("telephony.externalcall.hide", {"CALL_ID": b24_id,
                                                      "USER_ID": [int(u) for u in hide]})
            with self._lock:
                shown.difference_update(hide)

    def create_lead_for_unknown(self, cdr: Cdr, *, phone: str, user: str | None,
                                recording_url: str | None) -> Contact | None:
        """Not a separate request on Bitrix24: register's ``CRM_CREATE=1`` creates the lead."""
        return None

    def log_call(self, cdr: Cdr, *, phone: str, user: str | None, contact: Contact | None,
                 recording_url: str | None, progress: Progress) -> None:
        if user is None:
            raise Rejected("Bitrix24 needs a USER_ID for register/finish", crm=CRM,
                           body={"error": "NO_USER", "call_id": cdr.call_id})
        with self._lock_for(cdr.call_id):
            # a click-to-call: Bitrix24 registered it before it asked us to place it
            b24_id = (progress.get("b24_call_id") or progress.get(LINKED_CALL_ID)
                      or self._registered_id(cdr.call_id))
            if b24_id is None:
                b24_id = self._register(cdr.call_id, phone, user, cdr.direction,
                                        cdr.started_at.timestamp(), show=False)
            progress.set("b24_call_id", b24_id)
            self._deliver(cdr, b24_id, user, recording_url, progress)

    def _deliver(self, cdr: Cdr, b24_id: str, user: str, recording_url: str | None,
                 progress: Progress) -> None:
        if not progress.get("finished"):
            self._finish(cdr, b24_id, user, progress)
        if recording_url and not progress.get("record_attached"):
            params = self._attach_params(cdr, b24_id, recording_url)
            if params is not None:
                self.call("telephony.externalCall.attachRecord", params)
            progress.set("record_attached", True)
        self._forget(cdr.call_id)

    def _attach_params(self, cdr: Cdr, b24_id: str, url: str) -> dict[str, Any] | None:
        """The file itself when we can read it (the portal needs no route to us); else
        the link, only if it is public https (the portal downloads it and blocks
        non-public addresses); else nothing -- a call without its record beats a
        delivery parked on "Record URL resolves to a non-public address"."""
        found = self._read_recording(cdr) if self._read_recording else None
        if found is not None:
            return mapping.to_attach_file(b24_call_id=b24_id, name=found[0], content=found[1],
                                          call_id=cdr.call_id)
        if mapping.is_public_https(url):
            return mapping.to_attach_record(b24_call_id=b24_id, url=url, call_id=cdr.call_id)
        log.warning("Bitrix24 call %s: recording not on disk and %s is not a public https "
                    "link the portal could fetch; attached nothing", cdr.call_id,
                    url.split("?")[0])
        return None

    def finish_unplaced(self, crm_call_id: str, *, user: str, progress: Progress) -> None:
        """Close a click-to-call that never became a call (the agent did not answer).

        Without a finish the call stays open there (payload: mapping.to_unplaced_finish).
        """
        if progress.get("finished"):
            return
        resent = bool(progress.get("finish_sent"))
        progress.set("finish_sent", True)
        try:
            self.call("telephony.externalcall.finish",
                      mapping.to_unplaced_finish(b24_call_id=crm_call_id, user=user))
        except Rejected as exc:
            if not (resent and CALL_NOT_FOUND in str(exc.body)):
                raise
        progress.set("finished", True)

    def create_missed_call_task(self, cdr: Cdr, *, phone: str, contact: Contact | None,
                                responsible: str | None, progress: Progress) -> TaskRef | None:
        """No task method in the Bitrix24 telephony contract (capabilities.tasks is False)."""
        return None

    def close_task(self, task: TaskRef, *, note: str) -> None:
        """No task method in the Bitrix24 telephony contract (capabilities.tasks is False)."""
        return None

    # --- steps -----------------------------------------------------------------------
    def _registered_id(self, call_id: str) -> str | None:
        known = self._registered.get(call_id)
        return known[1] if known else None

    def _register(self, call_id: str, phone: str, user: str, direction: str | None,
                  started_at: float, *, show: bool) -> str:
        """Register with the USER_ID journalled for the call if any (a register whose
        answer was lost, a restart): the same dedup key, so the same CALL_ID."""
        known = self._registered.get(call_id)
        user = known[0] if known else user
        self._registered.record(call_id, user=user)
        params = mapping.to_register(call_id=call_id, phone=phone, user=user,
                                     direction=direction, show=show,
                                     started_at=datetime.fromtimestamp(started_at, UTC),
                                     line_number=self._line_number)
        b24_id = str(self.call("telephony.externalcall.register", params)["CALL_ID"])
        self._registered.record(call_id, user=user, b24_id=b24_id)
        return b24_id

    def _finish(self, cdr: Cdr, b24_id: str, user: str, progress: Progress) -> None:
        resent = bool(progress.get("finish_sent"))
        progress.set("finish_sent", True)
        try:
            self.call("telephony.externalcall.finish",
                      mapping.to_finish(cdr, b24_call_id=b24_id, user=user))
        except Rejected as exc:
            # A resend after a lost answer: the first finish moved the call to statistics.
            if not (resent and CALL_NOT_FOUND in str(exc.body)):
                raise
        progress.set("finished", True)

    def _lock_for(self, call_id: str) -> threading.Lock:
        """One lock per call: the screen-pop and the call log must not both register."""
        with self._lock:
            return self._call_locks.setdefault(call_id, threading.Lock())

    def _mark_shown(self, call_id: str, users: list[str]) -> None:
        with self._lock:
            self._shown.setdefault(call_id, set()).update(users)

    def _forget(self, call_id: str) -> None:
        self._registered.forget(call_id)
        with self._lock:
            self._shown.pop(call_id, None)
            self._call_locks.pop(call_id, None)
            self._finished[call_id] = None
            while len(self._finished) > FINISHED_MEMORY:
                self._finished.popitem(last=False)


def _result(response: httpx.Response, *, now: float) -> Any:
    """Bitrix24 envelope -> ``result`` or a ConnectorError, by the documented codes
    (contract §2.1 system errors, §2.3 limits):

    - QUERY_LIMIT_EXCEEDED (503): the leaky bucket, retried in a second;
    - OPERATION_TIME_LIMIT (429): the method's 480 s-per-10-min budget is spent; retried
      at ``time.operating_reset_at`` (limits.md), not dropped;
    - expired_token / NO_AUTH_FOUND / 401: credentials;
    - :data:`ACCOUNT_CODES`: Misconfigured, the queue waits for an operator;
    - :data:`TEMPORARY_CODES` and other 5xx: Unavailable;
    - everything else (ERROR_CORE, INVALID_ARGUMENT, attachRecord's empty code, 4xx):
      permanent for this request, parked with the code.
    """
    try:
        body = response.json()
    except ValueError:
        body = {"error": "", "error_description": response.text[:2000]}
    if response.status_code < 300 and "error" not in body:
        return body.get("result")
    code = str(body.get("error", ""))
    text = f"{code} {body.get('error_description', '')}".strip()
    if code == "QUERY_LIMIT_EXCEEDED":
        raise RateLimited("Bitrix24: QUERY_LIMIT_EXCEEDED", crm=CRM,
                          retry_after=QUERY_LIMIT_RETRY_S)
    if code == "OPERATION_TIME_LIMIT":
        raise RateLimited(f"Bitrix24: {text}", crm=CRM,
                          retry_after=_until_reset(body, now))
    if response.status_code == 401 or code in ("expired_token", "NO_AUTH_FOUND"):
        raise AuthExpired(f"Bitrix24 refused the credentials: {code}", crm=CRM)
    if code in ACCOUNT_CODES:
        raise Misconfigured(f"Bitrix24: {text}", crm=CRM)
    if code in TEMPORARY_CODES or response.status_code >= 500:
        raise Unavailable(f"Bitrix24: HTTP {response.status_code} {code}", crm=CRM)
    raise Rejected(f"Bitrix24 refused the request: {text}", crm=CRM,
                   status=response.status_code, body=body, code=code or "EMPTY")


def _until_reset(body: dict[str, Any], now: float) -> float:
    """Seconds until ``time.operating_reset_at`` (unix time), at least one."""
    try:
        reset_at = float((body.get("time") or {})["operating_reset_at"])
    except (KeyError, TypeError, ValueError):
        return 60.0
    return max(1.0, reset_at - now)


def build_client(settings: Settings, store: TokenStore | None, *,
                 transport: httpx.BaseTransport | None = None,
                 state_dir: Path | None = None) -> Bitrix24Client:
    """OAuth application when a token store is given, inbound webhook otherwise; the
    registrations journal lives in ``state_dir`` (default: connectors_dir)."""
    auth = None
    if store is not None:
        auth = Bitrix24OAuth(oauth_url=settings.crm_bitrix24_oauth_url,
                             client_id=settings.crm_bitrix24_client_id,
                             client_secret=settings.crm_bitrix24_client_secret, store=store,
                             rest_base=settings.crm_bitrix24_base_url)
    http = httpx.Client(base_url=settings.crm_bitrix24_base_url, auth=auth, transport=transport,
                        timeout=settings.crm_http_timeout_s)
    if store is None:
        log.warning(WEBHOOK_WARNING)
    wav_dir = settings.recordings_wav_dir
    return Bitrix24Client(http, line_number=settings.crm_bitrix24_line_number,
                          read_recording=lambda cdr: recording_file(wav_dir, cdr.recording),
                          webhook=store is None,
                          registrations=Registrations((state_dir or settings.connectors_dir)
                                                      / "bitrix24-registrations.jsonl"))
