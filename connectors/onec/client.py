"""1C OData client over an injected :class:`httpx.Client` (base ``.../odata/standard.odata/``).

    onec = OneCClient(httpx.Client(base_url=url, auth=OneCBasicAuth(user, password)))
    contact = onec.find_contact("+74951234567")

1C has no push channel for a screen-pop over HTTP (that needs a vendor extension in the
thin client), and no "incoming lead" object in the standard OData composition; those
capabilities are off, not faked. A missed call is a ``ТелефонныйЗвонок`` left
``Рассмотрено = false`` for its responsible; a callback marks it reviewed.
"""

from __future__ import annotations

from typing import Any

import httpx

from connectors.base import (
    AuthExpired,
    Capabilities,
    Contact,
    Progress,
    Rejected,
    RingingCall,
    TaskRef,
    Unavailable,
)
from connectors.onec import mapping
from connectors.onec.auth import OneCBasicAuth
from core.records import Cdr
from core.settings import Settings

__all__ = ["OneCClient", "build_client"]

CRM = "onec"
FIRST_REQUEST_TIMEOUT_S = 60.0
"""The first request after idle starts a 1C session and can take more than 30 s."""


class OneCClient:
    """Counterparty lookup by phone and call documents for one 1C publication."""

    name = CRM
    capabilities = Capabilities(screen_pop=False, unknown_lead=False, tasks=True)

    def __init__(self, http: httpx.Client, *, manager_field: str = "ОсновнойМенеджер_Key",
                 timezone: str = "Europe/Moscow") -> None:
        self._http = http
        self._manager_field = manager_field
        self._tz = timezone

    # --- requests --------------------------------------------------------------------
    def _request(self, method: str, path: str, params: dict[str, str] | None = None,
                 **kwargs: Any) -> Any:
        # Without $format=json the standard interface answers Atom XML.
        query = {"$format": "json", **(params or {})}
        try:
            response = self._http.request(method, path, params=query, **kwargs)
        except httpx.TransportError as exc:
            raise Unavailable(f"1C unreachable: {type(exc).__name__}", crm=CRM) from exc
        return _body(response)

    def _rows(self, entity_set: str, flt: str, select: str) -> list[dict[str, Any]]:
        body = self._request("GET", entity_set, {"$filter": flt, "$select": select})
        return list(body.get("value") or [])

    # --- CrmClient -------------------------------------------------------------------
    def find_contact(self, phone: str) -> Contact | None:
        select = "Ref_Key,LineNumber,Представление,НомерТелефона"
        rows = self._rows(mapping.CONTACT_INFO, mapping.phone_filter(phone), select)
        if not rows:
            rows = self._rows(mapping.CONTACT_INFO, mapping.fuzzy_phone_filter(phone), select)
        if not rows:
            return None
        fields = f"Ref_Key,Description,Партнер_Key,{self._manager_field}"
        entity = self._request("GET", mapping.counterparty_path(rows[0]["Ref_Key"]),
                               {"$select": fields})
        return mapping.contact_from(entity, self._manager_field)

    def screen_pop(self, call: RingingCall) -> None:
        """Not available over OData (capabilities.screen_pop is False)."""
        return None

    def create_lead_for_unknown(self, cdr: Cdr, *, phone: str, user: str | None,
                                recording_url: str | None) -> Contact | None:
        """Not available over the standard OData composition (capabilities.unknown_lead)."""
        return None

    def log_call(self, cdr: Cdr, *, phone: str, user: str | None, contact: Contact | None,
                 recording_url: str | None, progress: Progress) -> None:
        if progress.get("doc_ref"):
            return
        if progress.get("doc_sent"):
            # The last POST may have been stored although its answer was lost.
            found = self._rows(mapping.CALLS, mapping.marker_filter(cdr.call_id), "Ref_Key")
            if found:
                progress.set("doc_ref", found[0]["Ref_Key"])
                return
        progress.set("doc_sent", True)
        body = mapping.to_phone_call(cdr, phone=phone, contact=contact, responsible=user,
                                     recording_url=recording_url, tz=self._tz)
        created = self._request("POST", mapping.CALLS, json=body)
        progress.set("doc_ref", created["Ref_Key"])

    def create_missed_call_task(self, cdr: Cdr, *, phone: str, contact: Contact | None,
                                responsible: str | None, progress: Progress) -> TaskRef | None:
        """The unreviewed call document is the task; it exists once log_call ran."""
        ref = progress.get("doc_ref")
        return TaskRef(crm=CRM, id=ref, phone=phone) if ref else None

    def close_task(self, task: TaskRef, *, note: str) -> None:
        self._request("PATCH", f"{mapping.CALLS}(guid'{task.id}')",
                      json={"Рассмотрено": True, "Описание": note})

    def finish_unplaced(self, crm_call_id: str, *, user: str, progress: Progress) -> None:
        """1C starts no calls through us (no click-to-call contract): nothing to finish."""
        return None


def _body(response: httpx.Response) -> Any:
    """OData status + ``odata.error`` -> result or ConnectorError (contract §3.1)."""
    try:
        body = response.json() if response.content else {}
    except ValueError:
        body = {"raw": response.text[:2000]}
    status = response.status_code
    if status < 300:
        return body
    if status == 401:
        raise AuthExpired("1C refused the login/password", crm=CRM)
    if status >= 500:
        raise Unavailable(f"1C: HTTP {status}", crm=CRM)
    raise Rejected(f"1C refused the request: HTTP {status}", crm=CRM, status=status, body=body)


def build_client(settings: Settings, *,
                 transport: httpx.BaseTransport | None = None) -> OneCClient:
    http = httpx.Client(base_url=settings.crm_onec_base_url, transport=transport,
                        auth=OneCBasicAuth(settings.crm_onec_user, settings.crm_onec_password),
                        timeout=max(settings.crm_http_timeout_s, FIRST_REQUEST_TIMEOUT_S))
    return OneCClient(http, manager_field=settings.crm_onec_manager_field,
                      timezone=settings.crm_onec_timezone)
