"""CDR / ringing call -> Bitrix24 telephony parameters, results -> our types. Pure.

Parameter names, TYPE codes and STATUS_CODE table: reference/crm-contracts.md §2.4-2.8.
"""

from __future__ import annotations

import base64
import ipaddress
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from connectors.base import Contact
from core.records import Cdr, Disposition

__all__ = ["TYPE_OUTGOING", "TYPE_INCOMING", "call_type", "status_code", "to_register",
           "to_finish", "to_unplaced_finish", "to_attach_record", "to_attach_file",
           "is_public_https", "contact_from"]

TYPE_OUTGOING = 1
TYPE_INCOMING = 2

# SIP final codes that the finish STATUS_CODE table names one to one.
_SIP_STATUS = {403: "403", 404: "404", 480: "480", 484: "484", 486: "486", 503: "503",
               402: "402", 423: "423", 603: "603"}


def call_type(direction: str | None) -> int:
    return TYPE_OUTGOING if direction == "outbound" else TYPE_INCOMING


def status_code(cdr: Cdr) -> str:
    """``200`` talked, ``304`` missed (incoming), ``603-S`` cancelled outgoing, SIP codes as is."""
    if cdr.disposition is Disposition.ANSWERED:
        return "200"
    if cdr.disposition is Disposition.BUSY:
        return "486"
    if cdr.disposition in (Disposition.NO_ANSWER, Disposition.CANCELLED):
        return "603-S" if cdr.direction == "outbound" else "304"
    return _SIP_STATUS.get(cdr.sip_code or 0, "OTHER")


def iso_with_tz(ts: datetime) -> str:
    """CALL_START_DATE must be ISO-8601 *with* a time zone, or register fails."""
    return ts.astimezone(UTC).isoformat(timespec="seconds")


def to_register(*, call_id: str, phone: str, user: str, direction: str | None,
                started_at: datetime, show: bool, line_number: str = "") -> dict[str, Any]:
    """register: EXTERNAL_CALL_ID = our call id, so a resend within 30 min is the same call."""
    params: dict[str, Any] = {
        "USER_ID": int(user),
        "PHONE_NUMBER": phone,
        "TYPE": call_type(direction),
        "CALL_START_DATE": iso_with_tz(started_at),
        # Unknown numbers become a lead; Bitrix24 only creates one when nothing matched.
        "CRM_CREATE": 1 if direction != "outbound" else 0,
        "SHOW": 1 if show else 0,
        "EXTERNAL_CALL_ID": call_id,
    }
    if line_number:
        params["LINE_NUMBER"] = line_number
    return params


def to_finish(cdr: Cdr, *, b24_call_id: str, user: str) -> dict[str, Any]:
    """finish: USER_ID is who talked (answered) or the responsible (missed)."""
    return {
        "CALL_ID": b24_call_id,
        "USER_ID": int(user),
        "DURATION": int(round(cdr.talk_ms / 1000)),
        "STATUS_CODE": status_code(cdr),
        "ADD_TO_CHAT": 0,
    }


def to_unplaced_finish(*, b24_call_id: str, user: str) -> dict[str, Any]:
    """finish of a click-to-call never placed: ``603-S``, the contract's "cancelled" code,
    the one an unanswered outgoing call gets (:func:`status_code`)."""
    return {
        "CALL_ID": b24_call_id,
        "USER_ID": int(user),
        "DURATION": 0,
        "STATUS_CODE": "603-S",
        "FAILED_REASON": "the agent's phone did not answer",
        "ADD_TO_CHAT": 0,
    }


def _file_name(call_id: str, source: str) -> str:
    """``<call id>.mp3|wav``: Bitrix24 only accepts those two extensions."""
    ext = "wav" if source.split("?")[0].lower().endswith(".wav") else "mp3"
    return "".join(ch if ch.isalnum() else "-" for ch in call_id) + "." + ext


def to_attach_record(*, b24_call_id: str, url: str, call_id: str) -> dict[str, Any]:
    """attachRecord by URL: the *portal* downloads it, so it must be public (https)."""
    return {"CALL_ID": b24_call_id, "FILENAME": _file_name(call_id, url), "RECORD_URL": url}


def to_attach_file(*, b24_call_id: str, name: str, content: bytes,
                   call_id: str) -> dict[str, Any]:
    """attachRecord with the file itself (``FILENAME`` + base64 ``FILE_CONTENT``):
    works with a recordings server the portal cannot reach (attach-record docs)."""
    return {"CALL_ID": b24_call_id, "FILENAME": _file_name(call_id, name),
            "FILE_CONTENT": base64.b64encode(content).decode("ascii")}


def is_public_https(url: str) -> bool:
    """Bitrix24 blocks RECORD_URLs that resolve to non-public addresses; plain http and
    loopback/private hosts can never work."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme != "https" or not host or host == "localhost":
        return False
    try:
        return ipaddress.ip_address(host).is_global
    except ValueError:
        return "." in host  # a DNS name; whether it resolves publicly is the portal's call


def contact_from(result: list[dict[str, Any]]) -> Contact | None:
    """First entity of searchCrmEntities with its ASSIGNED_BY_ID (the manager)."""
    if not result:
        return None
    first = result[0]
    assigned = first.get("ASSIGNED_BY_ID")
    return Contact(crm="bitrix24", id=str(first["CRM_ENTITY_ID"]), name=first.get("NAME", ""),
                   responsible_user_id=str(assigned) if assigned else None,
                   entity_type=str(first.get("CRM_ENTITY_TYPE", "CONTACT")).lower())
