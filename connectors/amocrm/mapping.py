"""CDR -> amoCRM v4 payloads and amoCRM responses -> our types. Pure: no I/O, no clock.

Field names and codes follow reference/crm-contracts.md §1.4-1.8.
"""

from __future__ import annotations

from typing import Any

from connectors.base import Contact, digits, last_digits
from core.records import Cdr, Disposition

__all__ = ["CALL_STATUS", "call_status", "to_call", "to_unsorted_sip", "to_missed_task",
           "to_call_event", "contacts_from", "matching_contact", "search_query"]

# call_status codes of POST /api/v4/calls (amoCRM calls-api; SDK accepts 1..8).
CALL_STATUS = {
    "left_message": 1, "call_back_later": 2, "not_available": 3, "talked": 4,
    "wrong_number": 5, "not_reached": 6, "busy": 7, "undefined": 8,
}

MATCH_DIGITS = 10
"""amoCRM matches calls to entities "by the last 10 digits of the number"."""


def call_status(cdr: Cdr) -> int:
    """MikoPBX's mapping: answered -> 4 (разговор состоялся), unanswered -> 6, busy -> 7."""
    if cdr.disposition is Disposition.ANSWERED:
        return CALL_STATUS["talked"]
    if cdr.disposition is Disposition.BUSY:
        return CALL_STATUS["busy"]
    if cdr.sip_code in (404, 484, 604):  # Not Found / Address Incomplete: a bad number
        return CALL_STATUS["wrong_number"]
    return CALL_STATUS["not_reached"]


def _seconds(ms: int) -> int:
    return int(round(ms / 1000))


def search_query(phone: str) -> str:
    """The ``query`` for a phone: its last 10 digits match +7…, 8… and bare forms alike."""
    return last_digits(phone, MATCH_DIGITS)


def to_call(cdr: Cdr, *, phone: str, user: str | None, source: str,
            link: str | None) -> dict[str, Any]:
    """One item of POST /api/v4/calls; ``uniq`` = call id so a resend is the same call."""
    item: dict[str, Any] = {
        "uniq": cdr.call_id,
        "direction": "outbound" if cdr.direction == "outbound" else "inbound",
        "duration": _seconds(cdr.talk_ms),
        "source": source,
        "phone": digits(phone),
        "call_status": call_status(cdr),
        "created_at": int(cdr.started_at.timestamp()),
        "request_id": cdr.call_id,
    }
    if link:
        item["link"] = link
    if user:
        # Without created_by amoCRM's stats show the call as made by a robot.
        item["call_responsible"] = int(user)
        item["created_by"] = int(user)
    return item


def to_unsorted_sip(cdr: Cdr, *, phone: str, user: str | None, source: str,
                    link: str | None) -> dict[str, Any]:
    """One item of POST /api/v4/leads/unsorted/sip: an incoming lead with its contact."""
    metadata: dict[str, Any] = {
        "is_call_event_needed": True,
        "uniq": cdr.call_id,
        "duration": _seconds(cdr.talk_ms),
        "service_code": source,
        "phone": digits(phone),
        "called_at": int(cdr.started_at.timestamp()),
        "from": phone,
    }
    if link:
        metadata["link"] = link
    if user and cdr.disposition is Disposition.ANSWERED:
        metadata["call_responsible"] = int(user)  # MikoPBX: only for answered calls
    return {
        "source_name": source,
        "source_uid": cdr.call_id,
        "created_at": int(cdr.started_at.timestamp()),
        "request_id": cdr.call_id,
        "metadata": metadata,
        "_embedded": {
            "leads": [{"name": f"Звонок с {phone}"}],
            "contacts": [{"name": phone, "custom_fields_values": [
                {"field_code": "PHONE", "values": [{"value": phone, "enum_code": "WORK"}]}]}],
        },
    }


def to_missed_task(cdr: Cdr, *, phone: str, entity_type: str, entity_id: str,
                   responsible: str, complete_till: int) -> dict[str, Any]:
    """One item of POST /api/v4/tasks: type 1 (Звонок), entity_type plural as documented."""
    return {
        "text": f"Перезвонить: пропущенный вызов с {phone}",
        "complete_till": complete_till,
        "task_type_id": 1,
        "responsible_user_id": int(responsible),
        "entity_type": entity_type,
        "entity_id": int(entity_id),
        "request_id": f"missed-{cdr.call_id}",
    }


def to_call_event(phone: str, users: list[str]) -> dict[str, Any]:
    """POST /api/v2/events body; without ``users`` amoCRM notifies everybody."""
    item: dict[str, Any] = {"type": "phone_call", "phone_number": phone}
    if users:
        item["users"] = [int(u) for u in users]
    return {"add": [item]}


UNSORTED = "unsorted_lead"
"""Contact.entity_type of an incoming lead we created: its metadata already carries the
call, and its contact takes no call until a user accepts the lead."""


def call_notes_with(body: dict[str, Any], uniq: str) -> list[int]:
    """Ids of call notes (``call_in``/``call_out``) whose ``params.uniq`` is ``uniq``."""
    notes = (body.get("_embedded") or {}).get("notes") or []
    return [int(n["id"]) for n in notes if (n.get("params") or {}).get("uniq") == uniq]


def _phones(contact: dict[str, Any]) -> list[str]:
    out = []
    for cf in contact.get("custom_fields_values") or []:
        if cf.get("field_code") == "PHONE":
            out += [str(v.get("value", "")) for v in cf.get("values") or []]
    return out


def contacts_from(body: dict[str, Any]) -> list[dict[str, Any]]:
    return list((body.get("_embedded") or {}).get("contacts") or [])


def matching_contact(body: dict[str, Any], phone: str) -> Contact | None:
    """``query`` is full-text, not a phone match: keep the first contact whose number matches."""
    want = last_digits(phone, MATCH_DIGITS)
    for raw in contacts_from(body):
        if raw.get("is_unsorted"):
            continue  # an incoming lead's contact is not usable until the lead is accepted
        if any(last_digits(p, MATCH_DIGITS) == want for p in _phones(raw)):
            leads = (raw.get("_embedded") or {}).get("leads") or []
            responsible = raw.get("responsible_user_id")
            return Contact(crm="amocrm", id=str(raw["id"]), name=raw.get("name", ""),
                           responsible_user_id=str(responsible) if responsible else None,
                           lead_ids=tuple(str(lead["id"]) for lead in leads))
    return None
