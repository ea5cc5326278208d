"""Fake 1C:Enterprise OData publication (crm-contracts.md §3, checklist §6).

Basic auth (UTF-8), ``$format=json`` required (Atom otherwise), a ``$filter`` subset
(``eq``, ``and``, ``substringof``), ``$select``, ``odata.metadata``/``value``, ``@Element``
for a key lookup, ``odata.error`` codes 6/9/14, Int64 (LineNumber) as strings, POST and
PATCH of ``Document_ТелефонныйЗвонок``.
"""

from __future__ import annotations

import base64
import re
import threading
import uuid
from typing import Any

from fakes.server import FaultPlan, Reply, Request, json_reply

PREFIX = "/ut/odata/standard.odata/"
INFO = "Catalog_Контрагенты_КонтактнаяИнформация"
PARTIES = "Catalog_Контрагенты"
CALLS = "Document_ТелефонныйЗвонок"
CALL_FIELDS = {"Date", "Входящий", "АбонентКакСвязаться", "АбонентПредставление",
               "АбонентКонтакт", "АбонентКонтакт_Type", "Тема", "Описание", "Ответственный_Key",
               "Автор_Key", "Важность", "Рассмотрено", "РассмотретьПосле", "Комментарий",
               "Предмет", "ВзаимодействиеОснование"}
_EQ = re.compile(r"^(\w+) eq '((?:[^']|'')*)'$")
_SUB = re.compile(r"^substringof\('((?:[^']|'')*)', *(\w+)\)$")
_KEY = re.compile(r"^(\w+)\(guid'([0-9a-f-]{36})'\)$")


def _odata_error(status: int, code: str, text: str) -> Reply:
    return json_reply(status, {"odata.error": {"code": code,
                                               "message": {"lang": "ru", "value": text}}})


class FakeOneC:
    """State for tests: counterparties, contact rows, documents (calls), patches."""

    def __init__(self, *, user: str = "Оператор", password: str = "пароль") -> None:
        self.lock = threading.RLock()
        self.user, self.password = user, password
        self.faults = FaultPlan()
        self.parties: dict[str, dict[str, Any]] = {}
        self.info: list[dict[str, Any]] = []
        self.documents: dict[str, dict[str, Any]] = {}
        self.posts = 0

    def add_party(self, name: str, presentation: str, manager: str,
                  digits_column: str | None = None) -> str:
        """A counterparty with one phone row; ``digits_column=""`` mimics an empty НомерТелефона."""
        with self.lock:
            ref = str(uuid.uuid4())
            self.parties[ref] = {"Ref_Key": ref, "DataVersion": "AAAAAQAAAAA=",
                                 "DeletionMark": False, "Description": name,
                                 "Партнер_Key": str(uuid.uuid4()), "ОсновнойМенеджер_Key": manager}
            number = "".join(ch for ch in presentation if ch.isdigit())
            self.info.append({"Ref_Key": ref, "LineNumber": str(len(self.info) + 1),
                              "Тип": "Телефон", "Представление": presentation,
                              "НомерТелефона": number if digits_column is None else digits_column,
                              "НомерТелефонаБезКодов": number[-7:]})
            return ref

    def handle(self, req: Request) -> Reply:
        with self.lock:
            fault = self.faults.next()
            if fault is not None:
                return fault
            if not self._authorised(req):
                return Reply(401, b"", {"WWW-Authenticate": 'Basic realm="1C"'})
            if not req.path.startswith(PREFIX):
                return Reply(404)
            if req.arg("$format") != "json":
                return Reply(200, b"<?xml version=\"1.0\"?><feed/>",
                             {"Content-Type": "application/atom+xml"})
            resource = req.path[len(PREFIX):]
            if req.method == "GET" and resource in (INFO, CALLS):
                rows = self.info if resource == INFO else list(self.documents.values())
                return self._list(resource, rows, req)
            key = _KEY.match(resource)
            if req.method == "GET" and key and key.group(1) == PARTIES:
                return self._element(PARTIES, self.parties.get(key.group(2)), req)
            if req.method == "POST" and resource == CALLS:
                return self._post_call(req)
            if req.method == "PATCH" and key and key.group(1) == CALLS:
                return self._patch_call(key.group(2), req)
            return _odata_error(400, "6", f"Сегмент пути {resource} не найден!")

    def _authorised(self, req: Request) -> bool:
        header = req.headers.get("authorization", "")
        want = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        return header == f"Basic {want}"

    def _meta(self, name: str) -> str:
        return f"http://127.0.0.1{PREFIX}$metadata#{name}"

    def _list(self, name: str, rows: list[dict[str, Any]], req: Request) -> Reply:
        flt = req.arg("$filter")
        if flt:
            clauses = [c.strip() for c in flt.split(" and ")]
            try:
                rows = [r for r in rows if all(self._match(c, r) for c in clauses)]
            except ValueError:
                return _odata_error(400, "14", "Ошибка при разборе опции запроса $filter")
        selected = self._select(rows, req.arg("$select"))
        if isinstance(selected, Reply):
            return selected
        return json_reply(200, {"odata.metadata": self._meta(name), "value": selected})

    def _match(self, clause: str, row: dict[str, Any]) -> bool:
        if m := _EQ.match(clause):
            return str(row.get(m.group(1), "")) == m.group(2).replace("''", "'")
        if m := _SUB.match(clause):
            return m.group(1).replace("''", "'") in str(row.get(m.group(2), ""))
        raise ValueError(clause)

    def _select(self, rows: list[dict[str, Any]], select: str | None) -> Any:
        if not select:
            return rows
        names = [s.strip() for s in select.split(",")]
        for name in names:
            if rows and name not in rows[0]:
                return _odata_error(400, "6", f"Сегмент пути {name} не найден!")
        return [{n: r.get(n) for n in names} for r in rows]

    def _element(self, name: str, entity: dict[str, Any] | None, req: Request) -> Reply:
        if entity is None:
            return _odata_error(404, "9", "Экземпляр сущности не найден")
        selected = self._select([entity], req.arg("$select"))
        if isinstance(selected, Reply):
            return selected
        return json_reply(200, {"odata.metadata": self._meta(name) + "/@Element", **selected[0]})

    def _post_call(self, req: Request) -> Reply:
        body = req.json() or {}
        unknown = set(body) - CALL_FIELDS
        if unknown:
            return _odata_error(400, "6", f"Сегмент пути {sorted(unknown)[0]} не найден!")
        self.posts += 1
        ref = str(uuid.uuid4())
        doc = {"Ref_Key": ref, "DataVersion": "AAAAAQAAAAA=", "DeletionMark": False,
               "Number": f"00-{len(self.documents) + 1:08d}", "Posted": False,
               "Рассмотрено": False, **body}
        self.documents[ref] = doc
        return json_reply(201, {"odata.metadata": self._meta(CALLS) + "/@Element", **doc})

    def _patch_call(self, ref: str, req: Request) -> Reply:
        doc = self.documents.get(ref)
        if doc is None:
            return _odata_error(404, "9", "Экземпляр сущности не найден")
        doc.update(req.json() or {})
        return json_reply(200, {"odata.metadata": self._meta(CALLS) + "/@Element", **doc})
