"""CDR -> ``Document_ТелефонныйЗвонок`` and OData rows -> Contact. Pure.

Entity sets, field names and literal syntax: reference/crm-contracts.md §3.1-3.3.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import datetime
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from connectors.base import Contact, digits, last_digits
from core.records import Cdr, Disposition

__all__ = ["CALLS", "CALL_FIELDS", "CONTACT_INFO", "COUNTERPARTIES", "EMPTY_REF", "PARTNERS",
           "contact_from", "counterparty_path", "entity_path", "fuzzy_phone_filter", "is_guid",
           "local_time", "marker", "marker_filter", "missing_fields", "phone_filter",
           "query_string", "reference", "required_fields", "same_number", "schema_from_edmx",
           "short_number_filter", "to_phone_call"]

CALLS = "Document_ТелефонныйЗвонок"
CONTACT_INFO = "Catalog_Контрагенты_КонтактнаяИнформация"
COUNTERPARTIES = "Catalog_Контрагенты"
PARTNERS = "Catalog_Партнеры"
"""УТ 11 / КА 2 / ERP: the manager is the partner's ``ОсновнойМенеджер``; the counterparty
(legal entity) only points at its partner through ``Партнер_Key`` (real УТ 11 metadata:
Romandredan/odata1c-gate ``tests/fixtures/edmx/ut-real.edmx``)."""
PARTNER_FIELD = "Партнер_Key"
CONTACT_INFO_FIELDS = ("Ref_Key", "LineNumber", "Тип", "Представление", "НомерТелефона",
                       "НомерТелефонаБезКодов")
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                   r"[0-9a-fA-F]{12}$")
EMPTY_REF = "00000000-0000-0000-0000-000000000000"
CALL_FIELDS = ("Date", "Входящий", "АбонентКакСвязаться", "АбонентПредставление",
               "АбонентКонтакт", "АбонентКонтакт_Type", "Тема", "Описание", "Важность",
               "Рассмотрено", "Комментарий", "Ответственный_Key")
"""What :func:`to_phone_call` may write (БСП ``ТелефонныйЗвонок``, crm-contracts.md §3.3)."""
MARKER_PREFIX = "tawag:"
"""Written into Комментарий so a resent POST can first look for the document it made."""


VALUE_SAFE = "$',()"
"""Kept as is in a query value: OData literal syntax (``guid'…'``, ``substringof(…)``)."""


def query_string(params: dict[str, str]) -> str:
    """``$filter`` etc. with spaces as ``%20``, never ``+``.

    httpx's ``params=`` (like HTML forms) writes a space as ``+``; 1C takes the ``+``
    literally and answers 500 «Операция не разрешена в предложении "ГДЕ"» (live УТ 11
    probe: Romandredan/odata1c-gate, tests/unit/test_client1c.py,
    ``test_пробел_в_отборе_уходит_как_percent20_а_не_плюсом``).
    """
    return "&".join(quote(k, safe="$") + "=" + quote(str(v), safe=VALUE_SAFE)
                    for k, v in params.items())


def is_guid(value: Any) -> bool:
    """1C references (``…_Key``, ``Ref_Key``) are GUIDs; anything else is refused."""
    return isinstance(value, str) and bool(_GUID.match(value))


def schema_from_edmx(xml: bytes | str) -> dict[str, set[str]]:
    """``$metadata`` (EDMX) -> entity type name -> its property names."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise ValueError(f"not an EDMX document: {exc}") from exc
    out: dict[str, set[str]] = {}
    for node in root.iter():
        if node.tag.rsplit("}", 1)[-1] != "EntityType":
            continue
        out[node.get("Name", "")] = {p.get("Name", "") for p in node
                                     if p.tag.rsplit("}", 1)[-1] == "Property"}
    return out


def required_fields(manager_owner: str, manager_field: str) -> dict[str, set[str]]:
    """Every entity and field this connector reads or writes, for the start-up check."""
    need: dict[str, set[str]] = {
        CONTACT_INFO: set(CONTACT_INFO_FIELDS),
        COUNTERPARTIES: {"Ref_Key", "Description"},
        CALLS: set(CALL_FIELDS),
    }
    if manager_owner != COUNTERPARTIES:
        need[COUNTERPARTIES].add(PARTNER_FIELD)
    need.setdefault(manager_owner, {"Ref_Key"}).add(manager_field)
    return need


def missing_fields(schema: dict[str, set[str]], need: dict[str, set[str]]) -> list[str]:
    """``Entity.Field`` (or ``Entity``) names the base does not publish, sorted."""
    out = []
    for entity, fields in need.items():
        if entity not in schema:
            out.append(entity)
            continue
        out += [f"{entity}.{f}" for f in sorted(fields - schema[entity])]
    return sorted(out)


def entity_path(entity_set: str, ref: str) -> str:
    if not is_guid(ref):
        raise ValueError(f"not a 1C reference: {ref!r}")
    return f"{entity_set}(guid'{ref}')"


def phone_filter(phone: str) -> str:
    """Exact match on НомерТелефона (digits only, so no quote can break the literal)."""
    return f"Тип eq 'Телефон' and НомерТелефона eq '{digits(phone)}'"


def short_number_filter(phone: str) -> str:
    """НомерТелефонаБезКодов (the number without country and area code, e.g. ``1234567``
    for "+7 (495) 123-45-67"); matches are re-checked on the last 10 digits."""
    return f"Тип eq 'Телефон' and НомерТелефонаБезКодов eq '{last_digits(phone, 7)}'"


def same_number(row: dict[str, Any], phone: str) -> bool:
    """A contact row whose НомерТелефона or Представление ends in the same 10 digits."""
    want = last_digits(phone, 10)
    return any(last_digits(str(row.get(f) or ""), 10) == want
               for f in ("НомерТелефона", "Представление"))


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
    return entity_path(COUNTERPARTIES, ref)


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
    if reference(responsible):
        body["Ответственный_Key"] = responsible
    return body


def reference(value: Any) -> str | None:
    """A filled 1C reference, or None for the empty one (all zeros) or a non-GUID."""
    return value if is_guid(value) and value != EMPTY_REF else None


def contact_from(entity: dict[str, Any], manager: str | None) -> Contact:
    return Contact(crm="onec", id=str(entity["Ref_Key"]), name=entity.get("Description", ""),
                   responsible_user_id=reference(manager), entity_type="counterparty")
