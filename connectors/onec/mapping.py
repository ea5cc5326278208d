"""CDR -> ``Document_ТелефонныйЗвонок`` and OData rows -> Contact. Pure.

Entity sets, field names and literal syntax: reference/crm-contracts.md §3.1-3.3.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from connectors.base import Contact, digits, last_digits
from core.records import Cdr, Disposition

__all__ = ["CALLS", "CONTACT_INFO", "COUNTERPARTIES", "EMPTY_REF", "phone_filter",
           "fuzzy_phone_filter", "marker", "marker_filter", "counterparty_path",
           "to_phone_call", "contact_from", "local_time"]

CALLS = "Document_ТелефонныйЗвонок"
CONTACT_INFO = "Catalog_Контрагенты_КонтактнаяИнформация"
COUNTERPARTIES = "Catalog_Контрагенты"
EMPTY_REF = "00000000-0000-0000-0000-000000000000"
MARKER_PREFIX = "tawag:"
"""Written into Комментарий so a resent POST can first look for the document it made."""


def phone_filter(phone: str) -> str:
    """Exact match on НомерТелефона (digits only, so no quote can break the literal)."""
    return f"Тип eq 'Телефон' and НомерТелефона eq '{digits(phone)}'"


def fuzzy_phone_filter(phone: str) -> str:
    """НомерТелефона is empty on some real rows; real connectors fall back to the last 10."""
    return f"Тип eq 'Телефон' and substringof('{last_digits(phone, 10)}', Представление)"


def marker(call_id: str) -> str:
    return MARKER_PREFIX + call_id


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def marker_filter(call_id: str) -> str:
    return f"Комментарий eq {_quote(marker(call_id))}"


def counterparty_path(ref: str) -> str:
    return f"{COUNTERPARTIES}(guid'{ref}')"


def local_time(ts: datetime, tz: str) -> str:
    """1C OData dates are the base's local time without a zone."""
    return ts.astimezone(ZoneInfo(tz)).replace(tzinfo=None).isoformat(timespec="seconds")


def _description(cdr: Cdr, recording_url: str | None) -> str:
    # БСП has no duration or recording attribute: they go into Описание.
    text = f"Длительность {round(cdr.talk_ms / 1000)} с. Итог: {cdr.disposition.value}."
    return text + (f" Запись: {recording_url}" if recording_url else "")


def to_phone_call(cdr: Cdr, *, phone: str, contact: Contact | None, responsible: str | None,
                  recording_url: str | None, tz: str) -> dict[str, Any]:
    """POST body; a missed call stays Рассмотрено=false for its responsible: that is the task."""
    incoming = cdr.direction != "outbound"
    missed = cdr.disposition is not Disposition.ANSWERED
    body: dict[str, Any] = {
        "Date": local_time(cdr.started_at, tz),
        "Входящий": incoming,
        "АбонентКакСвязаться": phone,
        "АбонентПредставление": contact.name if contact else phone,
        "Тема": ("Пропущенный" if missed else "") + (" входящий" if incoming else " исходящий")
        + " звонок",
        "Описание": _description(cdr, recording_url),
        "Важность": "Высокая" if missed and incoming else "Обычная",
        "Рассмотрено": not (missed and incoming),
        "Комментарий": marker(cdr.call_id),
    }
    body["Тема"] = body["Тема"].strip().capitalize()
    if contact is not None:
        body["АбонентКонтакт"] = contact.id
        body["АбонентКонтакт_Type"] = f"StandardODATA.{COUNTERPARTIES}"
    if responsible:
        body["Ответственный_Key"] = responsible
    return body


def contact_from(entity: dict[str, Any], manager_field: str) -> Contact:
    manager = entity.get(manager_field)
    return Contact(crm="onec", id=str(entity["Ref_Key"]), name=entity.get("Description", ""),
                   responsible_user_id=manager if manager and manager != EMPTY_REF else None,
                   entity_type="counterparty")
