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
    Misconfigured,
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
                 manager_owner: str = mapping.PARTNERS,
                 timezone: str = "Europe/Moscow") -> None:
        self._http = http
        self._manager_field = manager_field
        self._manager_owner = manager_owner
        self._tz = timezone
        self._checked = False

    # --- start-up check ----------------------------------------------------------------
    def check_schema(self) -> None:
        """Read ``$metadata`` once and refuse settings the base cannot serve.

        A real 1C answers 400 to a ``$select`` of a field its configuration lacks (the
        default manager field lives on the partner in УТ 11, not on the counterparty),
        so every lookup would fail; better to say so at start, naming the field.
        """
        try:
            response = self._http.get("$metadata")
        except httpx.TransportError as exc:
            raise Unavailable(f"1C unreachable: {type(exc).__name__}", crm=CRM) from exc
        if response.status_code >= 300:
            _body(response, write=False)
        try:
            schema = mapping.schema_from_edmx(response.content)
        except ValueError as exc:
            raise Misconfigured(f"1C $metadata unreadable ({exc}): is crm_onec_base_url the "
                                ".../odata/standard.odata/ of the publication?", crm=CRM) from exc
        missing = mapping.missing_fields(
            schema, mapping.required_fields(self._manager_owner, self._manager_field))
        if missing:
            raise Misconfigured(
                "1C $metadata lacks " + ", ".join(missing) + ": publish them in the OData "
                "composition or set TAWAG_CRM_ONEC_MANAGER_OWNER / _MANAGER_FIELD to where "
                "this configuration keeps the manager", crm=CRM)
        self._checked = True

    def _ensure_checked(self) -> None:
        if not self._checked:
            self.check_schema()

    # --- requests --------------------------------------------------------------------
    def _request(self, method: str, path: str, params: dict[str, str] | None = None,
                 **kwargs: Any) -> Any:
        # Without $format=json the standard interface answers Atom XML.
        self._ensure_checked()
        query = {"$format": "json", **(params or {})}
        try:
            response = self._http.request(method, f"{path}?{mapping.query_string(query)}",
                                          **kwargs)
        except httpx.TransportError as exc:
            raise Unavailable(f"1C unreachable: {type(exc).__name__}", crm=CRM) from exc
        return _body(response, write=method != "GET")

    def _rows(self, entity_set: str, flt: str, select: str) -> list[dict[str, Any]]:
        body = self._request("GET", entity_set, {"$filter": flt, "$select": select})
        return list(body.get("value") or [])

    # --- CrmClient -------------------------------------------------------------------
    def find_contact(self, phone: str) -> Contact | None:
        row = self._contact_row(phone)
        if row is None:
            return None
        direct = self._manager_owner == mapping.COUNTERPARTIES
        fields = "Ref_Key,Description," + (self._manager_field if direct
                                           else mapping.PARTNER_FIELD)
        entity = self._request("GET", mapping.counterparty_path(row["Ref_Key"]),
                               {"$select": fields})
        if direct:
            return mapping.contact_from(entity, entity.get(self._manager_field))
        partner = mapping.reference(entity.get(mapping.PARTNER_FIELD))
        manager = None
        if partner is not None:
            owner = self._request("GET", mapping.entity_path(self._manager_owner, partner),
                                  {"$select": f"Ref_Key,{self._manager_field}"})
            manager = owner.get(self._manager_field)
        return mapping.contact_from(entity, manager)

    def _contact_row(self, phone: str) -> dict[str, Any] | None:
        """Exact НомерТелефона; then the short number re-checked on 10 digits (catches
        "+7 (495) 123-45-67" whose digits column is empty); then the presentation."""
        select = ",".join(mapping.CONTACT_INFO_FIELDS[:2] + ("Представление", "НомерТелефона"))
        rows = self._rows(mapping.CONTACT_INFO, mapping.phone_filter(phone), select)
        if not rows:
            rows = [r for r in self._rows(mapping.CONTACT_INFO,
                                          mapping.short_number_filter(phone), select)
                    if mapping.same_number(r, phone)]
        if not rows:
            rows = self._rows(mapping.CONTACT_INFO, mapping.fuzzy_phone_filter(phone), select)
        return rows[0] if rows else None

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
        self._request("PATCH", mapping.entity_path(mapping.CALLS, task.id),
                      json={"Рассмотрено": True, "Описание": note})

    def finish_unplaced(self, crm_call_id: str, *, user: str, progress: Progress) -> None:
        """1C starts no calls through us (no click-to-call contract): nothing to finish."""
        return None


def _body(response: httpx.Response, *, write: bool) -> Any:
    """OData status + ``odata.error`` -> result or ConnectorError (contract §3.1).

    Permanent: 4xx (codes 6 unknown field, 9 not found, 14 bad $filter), and a 500 that
    carries 1C's own ``odata.error`` on a write -- the document's handlers refused this
    payload (e.g. a business rule, «Не удалось записать»), and resending the same body
    gets the same 500 (a production writer met exactly that: crm-contracts.md §3.3).
    Temporary: 502/503/504, a 500 without ``odata.error`` (IIS or proxy page) and 500s
    on reads (the base itself is failing: every lookup would).
    """
    try:
        body = response.json() if response.content else {}
    except ValueError:
        body = {"raw": response.text[:2000]}
    status = response.status_code
    if status < 300:
        return body
    if status == 401:
        raise AuthExpired("1C refused the login/password", crm=CRM)
    refused = isinstance(body, dict) and "odata.error" in body
    if status == 500 and write and refused:
        raise Rejected(f"1C refused the document: {_message(body)}", crm=CRM, status=status,
                       body=body)
    if status >= 500:
        raise Unavailable(f"1C: HTTP {status} {_message(body)}".rstrip(), crm=CRM)
    raise Rejected(f"1C refused the request: HTTP {status} {_message(body)}".rstrip(), crm=CRM,
                   status=status, body=body)


def _message(body: Any) -> str:
    try:
        return str(body["odata.error"]["message"]["value"])
    except (KeyError, TypeError):
        return ""


def build_client(settings: Settings, *,
                 transport: httpx.BaseTransport | None = None) -> OneCClient:
    http = httpx.Client(base_url=settings.crm_onec_base_url, transport=transport,
                        auth=OneCBasicAuth(settings.crm_onec_user, settings.crm_onec_password),
                        timeout=max(settings.crm_http_timeout_s, FIRST_REQUEST_TIMEOUT_S))
    return OneCClient(http, manager_field=settings.crm_onec_manager_field,
                      manager_owner=settings.crm_onec_manager_owner,
                      timezone=settings.crm_onec_timezone)
