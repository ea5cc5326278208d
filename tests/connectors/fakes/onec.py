"""Fake 1C:Enterprise OData publication (crm-contracts.md §3, checklist §6).

Basic auth (UTF-8), ``$format=json`` required (Atom otherwise), a ``$filter`` subset
(``eq``, ``and``, ``substringof``), ``$select``, ``odata.metadata``/``value``, ``@Element``
for a key lookup, ``odata.error`` codes 6/9/14, Int64 (LineNumber) as strings, POST and
PATCH of ``Document_ТелефонныйЗвонок``.

As strict as a real УТ 11 base where the connector could go wrong:

- a literal ``+`` in the query is not a space: 500 «Операция не разрешена в предложении
  "ГДЕ"» (live probe, see :data:`WHERE_REFUSED`);
- ``$metadata`` is an EDMX document of :data:`SCHEMA`, whose fields follow the real УТ 11
  metadata (Romandredan/odata1c-gate ``tests/fixtures/edmx/ut-real.edmx``, summarised in
  crm-contracts.md §3.2): ``Catalog_Контрагенты`` has ``Партнер_Key`` and no manager; the
  partner (``Catalog_Партнеры``) has ``ОсновнойМенеджер_Key``;
- a ``$select``/``$filter``/body field the entity does not have: 400, code 6 «Сегмент пути
  X не найден!» (docs/probes/P4-real-metadata.md), even when no row matches;
- every ``_Key`` is a GUID: another value in a body or a ``guid'…'`` literal is refused.
"""

from __future__ import annotations

import base64
import re
import threading
import uuid
from typing import Any
from xml.sax.saxutils import quoteattr

from fakes.server import FaultPlan, Reply, Request, json_reply

PREFIX = "/ut/odata/standard.odata/"
INFO = "Catalog_Контрагенты_КонтактнаяИнформация"
PARTIES = "Catalog_Контрагенты"
PARTNERS = "Catalog_Партнеры"
CALLS = "Document_ТелефонныйЗвонок"
CALL_FIELDS = {"Date", "Входящий", "АбонентКакСвязаться", "АбонентПредставление",
               "АбонентКонтакт", "АбонентКонтакт_Type", "Тема", "Описание", "Ответственный_Key",
               "Автор_Key", "Важность", "Рассмотрено", "РассмотретьПосле", "Комментарий",
               "Предмет", "ВзаимодействиеОснование"}
_CATALOG = {"Ref_Key": "Edm.Guid", "DataVersion": "Edm.String", "DeletionMark": "Edm.Boolean",
            "Predefined": "Edm.Boolean", "PredefinedDataName": "Edm.String",
            "Description": "Edm.String"}
SCHEMA: dict[str, dict[str, str]] = {
    PARTIES: {**_CATALOG, "НаименованиеПолное": "Edm.String", "ИНН": "Edm.String",
              "КПП": "Edm.String", "ЮрФизЛицо": "Edm.String", "Партнер_Key": "Edm.Guid"},
    INFO: {"Ref_Key": "Edm.Guid", "LineNumber": "Edm.Int64", "Тип": "Edm.String",
           "Вид_Key": "Edm.Guid", "Представление": "Edm.String", "ЗначенияПолей": "Edm.String",
           "Страна": "Edm.String", "Регион": "Edm.String", "Город": "Edm.String",
           "АдресЭП": "Edm.String", "ДоменноеИмяСервера": "Edm.String",
           "НомерТелефона": "Edm.String", "НомерТелефонаБезКодов": "Edm.String",
           "ВидДляСписка_Key": "Edm.Guid", "ДействуетС": "Edm.DateTime",
           "Значение": "Edm.String"},
    PARTNERS: {**_CATALOG, "НаименованиеПолное": "Edm.String",
               "ОсновнойМенеджер_Key": "Edm.Guid", "Клиент": "Edm.Boolean"},
    CALLS: {"Ref_Key": "Edm.Guid", "DataVersion": "Edm.String", "DeletionMark": "Edm.Boolean",
            "Number": "Edm.String", "Posted": "Edm.Boolean", "Date": "Edm.DateTime",
            "Входящий": "Edm.Boolean", "АбонентКакСвязаться": "Edm.String",
            "АбонентПредставление": "Edm.String", "АбонентКонтакт": "Edm.String",
            "АбонентКонтакт_Type": "Edm.String", "Тема": "Edm.String", "Описание": "Edm.String",
            "Ответственный_Key": "Edm.Guid", "Автор_Key": "Edm.Guid", "Важность": "Edm.String",
            "Рассмотрено": "Edm.Boolean", "РассмотретьПосле": "Edm.DateTime",
            "Комментарий": "Edm.String", "Предмет": "Edm.String",
            "ВзаимодействиеОснование": "Edm.String"},
}
WHERE_REFUSED = 'Операция не разрешена в предложении "ГДЕ"'
"""1C's answer to ``$filter=ИНН+eq+'…'``: it does not read ``+`` as a space (live probe of
a УТ 11 base, Romandredan/odata1c-gate tests/unit/test_client1c.py
``test_пробел_в_отборе_уходит_как_percent20_а_не_плюсом``: ``+`` -> 500, ``%20`` -> 200)."""
_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def is_guid(value: Any) -> bool:
    return isinstance(value, str) and bool(_GUID.match(value))


def edmx(schema: dict[str, dict[str, str]]) -> str:
    """``$metadata`` in the shape 1C serves it (EDMX 1.0, DataServiceVersion 3.0)."""
    types, sets = [], []
    for name, props in schema.items():
        keys = ["Ref_Key"] + (["LineNumber"] if "LineNumber" in props else [])
        types.append(f"<EntityType Name={quoteattr(name)}><Key>"
                     + "".join(f"<PropertyRef Name={quoteattr(k)}/>" for k in keys) + "</Key>"
                     + "".join(f"<Property Name={quoteattr(p)} Type={quoteattr(t)} "
                               f'Nullable="{"false" if p in keys else "true"}"/>'
                               for p, t in props.items()) + "</EntityType>")
        sets.append(f"<EntitySet Name={quoteattr(name)} "
                    f"EntityType={quoteattr('StandardODATA.' + name)}/>")
    return ("<?xml version='1.0' encoding='UTF-8'?>"
            '<edmx:Edmx xmlns:edmx="http://schemas.microsoft.com/ado/2007/06/edmx" Version="1.0">'
            '<edmx:DataServices xmlns:m="http://schemas.microsoft.com/ado/2007/08/dataservices/'
            'metadata" m:DataServiceVersion="3.0" m:MaxDataServiceVersion="3.0">'
            '<Schema xmlns="http://schemas.microsoft.com/ado/2009/11/edm" '
            'Namespace="StandardODATA">' + "".join(types)
            + '<EntityContainer Name="EnterpriseV8" m:IsDefaultEntityContainer="true">'
            + "".join(sets) + "</EntityContainer></Schema></edmx:DataServices></edmx:Edmx>")


def _plus_in_query(raw_query: str) -> bool:
    """A literal ``+`` in any query parameter (``%2B`` is a real plus and fine)."""
    return "+" in raw_query


def _odata_error(status: int, code: str, text: str) -> Reply:
    return json_reply(status, {"odata.error": {"code": code,
                                               "message": {"lang": "ru", "value": text}}})


def _unknown(name: str) -> Reply:
    return _odata_error(400, "6", f"Сегмент пути {name} не найден!")


_EQ = re.compile(r"^(\w+) eq '((?:[^']|'')*)'$")
_SUB = re.compile(r"^substringof\('((?:[^']|'')*)', *(\w+)\)$")
_KEY = re.compile(r"^(\w+)\(guid'([^']*)'\)$")


class FakeOneC:
    """State for tests: counterparties, partners, contact rows, documents (calls)."""

    def __init__(self, *, user: str = "Оператор", password: str = "пароль") -> None:
        self.lock = threading.RLock()
        self.user, self.password = user, password
        self.faults = FaultPlan()
        self.schema = {name: dict(props) for name, props in SCHEMA.items()}
        self.parties: dict[str, dict[str, Any]] = {}
        self.partners: dict[str, dict[str, Any]] = {}
        self.info: list[dict[str, Any]] = []
        self.documents: dict[str, dict[str, Any]] = {}
        self.posts = 0
        self.metadata_reads = 0

    def add_party(self, name: str, presentation: str, manager: str,
                  digits_column: str | None = None) -> str:
        """A counterparty with one phone row, its partner owned by ``manager`` (a GUID:
        ``Catalog_Пользователи`` Ref_Key); ``digits_column=""`` mimics an empty
        НомерТелефона."""
        if not is_guid(manager):
            raise ValueError(f"a 1C manager is a Catalog_Пользователи GUID, not {manager!r}")
        with self.lock:
            ref, partner = str(uuid.uuid4()), str(uuid.uuid4())
            self.partners[partner] = {"Ref_Key": partner, "DataVersion": "AAAAAQAAAAA=",
                                      "DeletionMark": False, "Description": name,
                                      "ОсновнойМенеджер_Key": manager, "Клиент": True}
            self.parties[ref] = {"Ref_Key": ref, "DataVersion": "AAAAAQAAAAA=",
                                 "DeletionMark": False, "Description": name,
                                 "Партнер_Key": partner}
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
            resource = req.path[len(PREFIX):]
            if _plus_in_query(req.raw_query):
                # code -1: the processor's own error [code unverified; the text is the probe's]
                return _odata_error(500, "-1", WHERE_REFUSED)
            if req.method == "GET" and resource == "$metadata":
                self.metadata_reads += 1
                return Reply(200, edmx(self.schema).encode(),
                             {"Content-Type": "application/xml;charset=utf-8"})
            if req.arg("$format") != "json":
                return Reply(200, b"<?xml version=\"1.0\"?><feed/>",
                             {"Content-Type": "application/atom+xml"})
            if req.method == "GET" and resource in (INFO, CALLS):
                rows = self.info if resource == INFO else list(self.documents.values())
                return self._list(resource, rows, req)
            key = _KEY.match(resource)
            if key and not is_guid(key.group(2)):
                return _odata_error(400, "14", "Ошибка при разборе опции запроса $filter")
            tables = {PARTIES: self.parties, PARTNERS: self.partners}
            if req.method == "GET" and key and key.group(1) in tables:
                return self._element(key.group(1), tables[key.group(1)].get(key.group(2)), req)
            if req.method == "POST" and resource == CALLS:
                return self._post_call(req)
            if req.method == "PATCH" and key and key.group(1) == CALLS:
                return self._patch_call(key.group(2), req)
            return _unknown(resource)

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
                fields = [self._field(c) for c in clauses]
            except ValueError:
                return _odata_error(400, "14", "Ошибка при разборе опции запроса $filter")
            missing = [f for f in fields if f not in self.schema[name]]
            if missing:
                return _unknown(missing[0])
            rows = [r for r in rows if all(self._match(c, r) for c in clauses)]
        selected = self._select(name, rows, req.arg("$select"))
        if isinstance(selected, Reply):
            return selected
        return json_reply(200, {"odata.metadata": self._meta(name), "value": selected})

    @staticmethod
    def _field(clause: str) -> str:
        if m := _EQ.match(clause):
            return m.group(1)
        if m := _SUB.match(clause):
            return m.group(2)
        raise ValueError(clause)

    @staticmethod
    def _match(clause: str, row: dict[str, Any]) -> bool:
        if m := _EQ.match(clause):
            return str(row.get(m.group(1), "")) == m.group(2).replace("''", "'")
        m = _SUB.match(clause)
        assert m is not None
        return m.group(1).replace("''", "'") in str(row.get(m.group(2), ""))

    def _select(self, name: str, rows: list[dict[str, Any]], select: str | None) -> Any:
        if not select:
            return rows
        names = [s.strip() for s in select.split(",")]
        for field in names:
            if field not in self.schema[name]:
                return _unknown(field)
        return [{n: r.get(n) for n in names} for r in rows]

    def _element(self, name: str, entity: dict[str, Any] | None, req: Request) -> Reply:
        # the query options are parsed before the entity is looked up
        selected = self._select(name, [entity or {}], req.arg("$select"))
        if isinstance(selected, Reply):
            return selected
        if entity is None:
            return _odata_error(404, "9", "Экземпляр сущности не найден")
        return json_reply(200, {"odata.metadata": self._meta(name) + "/@Element", **selected[0]})

    def _refused_body(self, body: dict[str, Any]) -> Reply | None:
        unknown = sorted(set(body) - set(self.schema[CALLS]))
        if unknown:
            return _unknown(unknown[0])
        bad = [k for k, v in body.items() if self.schema[CALLS][k] == "Edm.Guid"
               and not is_guid(v)]
        if bad:  # [text unverified] 1C cannot convert the value to Edm.Guid
            return _odata_error(400, "6", f"Неверное значение свойства {bad[0]}")
        return None

    def _post_call(self, req: Request) -> Reply:
        body = req.json() or {}
        refused = self._refused_body(body)
        if refused is not None:
            return refused
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
        body = req.json() or {}
        refused = self._refused_body(body)
        if refused is not None:
            return refused
        doc.update(body)
        return json_reply(200, {"odata.metadata": self._meta(CALLS) + "/@Element", **doc})
