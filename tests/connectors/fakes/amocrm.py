"""Fake amoCRM v4 account (crm-contracts.md §1, checklist §6).

OAuth with single-use refresh tokens and 86400 s access tokens; Bearer check with the
problem+json 401; a 7 req/s token bucket answering 429 with an *empty* body (the PHP SDK
only recognises a non-JSON 429); contacts ``query`` search (204 when nothing matches);
``POST /api/v4/calls`` matched on the last 10 digits with per-item ``errors``;
``/leads/unsorted/sip``; ``/tasks`` (plural entity_type, strict); ``/api/v2/events`` 202.

As strict as a real account where the connector could go wrong:

- ``uniq`` deduplicates nothing: "our API does not regulate the identity of calls"
  (Kommo call-logging docs, developers.kommo.com/docs/call-logging); every POST adds a
  call note (``call_in``/``call_out`` with ``params.uniq``) readable at
  ``GET /api/v4/{leads|contacts}/{id}/notes?filter[note_type][]=call_in``;
- an incoming (unsorted) lead's contact is not usable until the lead is accepted: calls
  for its number find no entity, and a second incoming lead for a number whose incoming
  lead is still pending is refused (Kommo incoming-leads docs,
  developers.kommo.com/docs/incoming-leads) [error shape unverified];
- a 403 problem+json for a request the integration's user has no right to
  (:attr:`FakeAmoCrm.forbidden` phones).
"""

from __future__ import annotations

import itertools
import secrets
import threading
import time
from typing import Any

from fakes.server import FaultPlan, Reply, Request, json_reply

HAL = "application/hal+json"
PROBLEM = "application/problem+json"
UNAUTHORIZED = {"title": "Unauthorized", "type": "https://httpstatus.es/401", "status": 401,
                "detail": "Unauthorized"}
ACCOUNT_ID = 28805383
NOT_A_CHOICE = "The value you selected is not a valid choice."
MISSING = "This field is missing."


def _digits(value: Any) -> str:
    return "".join(ch for ch in str(value) if ch.isdigit())


def _problem(status: int, detail: str, **extra: Any) -> Reply:
    titles = {400: "Bad Request", 404: "Not Found"}
    body = {"title": titles.get(status, "Error"), "type": f"https://httpstatus.es/{status}",
            "status": status, "detail": detail, **extra}
    return json_reply(status, body, PROBLEM)


def _validation(request_id: str, path: str, detail: str) -> Reply:
    return _problem(400, "Request validation failed", **{"validation-errors": [
        {"request_id": request_id, "errors": [
            {"code": "NotSupportedChoice", "path": path, "detail": detail}]}]})


class FakeAmoCrm:
    """State for tests: contacts, leads, calls, call_posts, tasks, notifications."""

    def __init__(self, *, client_id: str = "amo-client", client_secret: str = "amo-secret",
                 rate_per_s: float = 7.0) -> None:
        self.lock = threading.RLock()
        self.client_id, self.client_secret = client_id, client_secret
        self.rate_per_s = rate_per_s
        self.notes: list[dict[str, Any]] = []
        self.forbidden: set[str] = set()
        """Last 10 digits of numbers whose calls answer 403 (no rights)."""
        self.faults = FaultPlan()
        self.ids = itertools.count(1000)
        self.access: dict[str, float] = {}
        self.refresh: set[str] = set()
        self.contacts: dict[int, dict[str, Any]] = {}
        self.leads: dict[int, dict[str, Any]] = {}
        self.calls: list[dict[str, Any]] = []
        self.call_posts: list[str] = []
        self.tasks: dict[int, dict[str, Any]] = {}
        self.notifications: list[dict[str, Any]] = []
        self.unsorted: list[dict[str, Any]] = []
        self.too_many = 0
        self.requests: list[str] = []
        self._bucket = (rate_per_s, time.monotonic())

    # --- test set-up -----------------------------------------------------------------
    def issue_tokens(self, ttl: float = 86400) -> tuple[str, str, float]:
        with self.lock:
            access, refresh = "eyJ" + secrets.token_hex(16), "def502" + secrets.token_hex(16)
            self.access[access] = time.time() + ttl
            self.refresh.add(refresh)
            return access, refresh, time.time() + ttl

    def expire_tokens(self) -> None:
        with self.lock:
            self.access = {k: 0.0 for k in self.access}

    def add_contact(self, name: str, phone: str, responsible: int,
                    lead_ids: tuple[int, ...] = (), unsorted: bool = False) -> int:
        with self.lock:
            cid = next(self.ids)
            self.contacts[cid] = {
                "id": cid, "name": name, "responsible_user_id": responsible, "group_id": 0,
                "is_deleted": False, "is_unsorted": unsorted, "account_id": ACCOUNT_ID,
                "custom_fields_values": [{"field_id": 3, "field_name": "Телефон",
                                          "field_code": "PHONE", "field_type": "multitext",
                                          "values": [{"value": phone, "enum_id": 1,
                                                      "enum_code": "WORK"}]}],
                "_links": {"self": {"href": f"/api/v4/contacts/{cid}"}},
                "_embedded": {"tags": [], "companies": [],
                              "leads": [{"id": lid} for lid in lead_ids]},
            }
            for lid in lead_ids:
                self.leads[lid] = {"id": lid, "contact_id": cid}
            return cid

    # --- HTTP ------------------------------------------------------------------------
    def handle(self, req: Request) -> Reply:
        with self.lock:
            self.requests.append(f"{req.method} {req.path}")
            fault = self.faults.next()
            if fault is not None:
                return fault
            if req.path == "/oauth2/access_token":
                return self._token(req)
            if not self._authorised(req):
                return json_reply(401, UNAUTHORIZED, PROBLEM)
            if not self._take_token():
                self.too_many += 1
                return Reply(429)  # empty body, as the official SDK expects
            route = {("GET", "/api/v4/contacts"): self._contacts,
                     ("POST", "/api/v4/calls"): self._calls,
                     ("POST", "/api/v4/leads/unsorted/sip"): self._unsorted,
                     ("POST", "/api/v4/tasks"): self._add_tasks,
                     ("POST", "/api/v2/events"): self._events}.get((req.method, req.path))
            if route is not None:
                return route(req)
            if req.method == "PATCH" and req.path.startswith("/api/v4/tasks/"):
                return self._patch_task(req, req.path.rsplit("/", 1)[1])
            parts = req.path.strip("/").split("/")
            if req.method == "GET" and len(parts) == 5 and parts[4] == "notes" and \
                    parts[2] in ("leads", "contacts") and parts[3].isdigit():
                return self._notes(parts[2], int(parts[3]), req)
            return _problem(404, "Not found")

    def _take_token(self) -> bool:
        tokens, at = self._bucket
        now = time.monotonic()
        tokens = min(self.rate_per_s, tokens + (now - at) * self.rate_per_s)
        ok = tokens >= 1
        self._bucket = (tokens - 1 if ok else tokens, now)
        return ok

    def _authorised(self, req: Request) -> bool:
        header = req.headers.get("authorization", "")
        if not header.startswith("Bearer "):
            return False
        return self.access.get(header[7:], 0.0) > time.time()

    def _token(self, req: Request) -> Reply:
        data = req.json() or {}
        if data.get("client_id") != self.client_id or \
                data.get("client_secret") != self.client_secret:
            return _problem(400, "Client authentication failed")
        if data.get("grant_type") != "refresh_token" or \
                data.get("refresh_token") not in self.refresh:
            return _problem(400, "Refresh token is invalid")
        self.refresh.discard(data["refresh_token"])  # single use
        access, refresh, _ = self.issue_tokens()
        return json_reply(200, {"token_type": "Bearer", "expires_in": 86400,
                                "server_time": int(time.time()), "access_token": access,
                                "refresh_token": refresh})

    # --- contacts ---------------------------------------------------------------------
    def _phones(self, contact: dict[str, Any]) -> list[str]:
        return [str(v["value"]) for cf in contact["custom_fields_values"]
                if cf["field_code"] == "PHONE" for v in cf["values"]]

    def _contacts(self, req: Request) -> Reply:
        query = req.arg("query") or ""
        limit = min(int(req.arg("limit") or 50), 250)
        found = [c for c in self.contacts.values()
                 if query in c["name"] or any(query in p or query in _digits(p)
                                              for p in self._phones(c))][:limit]
        if not found:
            return Reply(204)
        return json_reply(200, {"_page": 1, "_links": {"self": {"href": "/api/v4/contacts"}},
                                "_embedded": {"contacts": found}}, HAL)

    def find_by_phone(self, phone: Any, *, unsorted: bool = False) -> dict[str, Any] | None:
        """The contact with this number; an unsorted one only when asked for."""
        want = _digits(phone)[-10:]
        for c in self.contacts.values():
            if c["is_unsorted"] == unsorted and \
                    any(_digits(p)[-10:] == want for p in self._phones(c)):
                return c
        return None

    def accept_unsorted(self, contact_id: int) -> None:
        """A user accepts the incoming lead: its contact becomes an ordinary one."""
        with self.lock:
            self.contacts[contact_id]["is_unsorted"] = False

    # --- calls -------------------------------------------------------------------------
    def _calls(self, req: Request) -> Reply:
        items = req.json()
        if not isinstance(items, list):
            return _problem(400, "Request body must be an array")
        done, errors = [], []
        for n, item in enumerate(items):
            rid = str(item.get("request_id", n))
            for name in ("direction", "duration", "source", "phone"):
                if name not in item:
                    return _validation(rid, name, "This field is missing.")
            if item.get("call_status") is not None and item["call_status"] not in range(1, 9):
                return _validation(rid, "call_status", NOT_A_CHOICE)
            if item.get("uniq"):
                self.call_posts.append(item["uniq"])
            if _digits(item["phone"])[-10:] in self.forbidden:
                return _problem(403, "Access denied")
            contact = self.find_by_phone(item["phone"])
            if contact is None:
                errors.append({"request_id": rid, "status": 404, "title": "Not Found",
                               "detail": "Entity not found"})
                continue
            leads = contact["_embedded"]["leads"]
            etype, eid = ("lead", leads[0]["id"]) if len(leads) == 1 else ("contact", contact["id"])
            call = {**item, "id": next(self.ids), "entity_type": etype, "entity_id": eid}
            self.calls.append(call)
            self.notes.append({"id": call["id"], "entity_id": eid, "entity_type": etype + "s",
                               "note_type": "call_out" if item["direction"] == "outbound"
                               else "call_in", "created_at": int(time.time()),
                               "params": {k: item.get(k) for k in (
                                   "uniq", "duration", "source", "link", "phone")}})
            done.append({"id": call["id"], "entity_id": eid, "entity_type": etype,
                         "account_id": ACCOUNT_ID, "request_id": rid,
                         "_embedded": {"entity": {"id": eid, "_links": {"self": {"href": ""}}}}})
        return json_reply(200, {"_total_items": len(done), "errors": errors,
                                "_embedded": {"calls": done}}, HAL)

    def _unsorted(self, req: Request) -> Reply:
        out = []
        for n, item in enumerate(req.json()):
            meta = item.get("metadata") or {}
            for name in ("source_name", "source_uid"):
                if name not in item:
                    return _validation(str(item.get("request_id", n)), name, MISSING)
            phone = str(meta.get("phone", ""))
            if self.find_by_phone(phone, unsorted=True) is not None:
                return _validation(str(item.get("request_id", n)), "metadata.phone",
                                   "An incoming lead for this number is awaiting a decision")
            contact_id = self.add_contact(phone, phone, responsible=0, unsorted=True)
            lead_id = next(self.ids)
            self.leads[lead_id] = {"id": lead_id, "contact_id": contact_id, "unsorted": True}
            self.contacts[contact_id]["_embedded"]["leads"] = [{"id": lead_id}]
            self.unsorted.append(item)
            uid = secrets.token_hex(30)
            out.append({"uid": uid, "account_id": ACCOUNT_ID,
                        "request_id": str(item.get("request_id", n)),
                        "_links": {"self": {"href": f"/api/v4/leads/unsorted/{uid}"}},
                        "_embedded": {
                            "contacts": [{"id": contact_id, "_links": {"self": {
                                "href": f"/api/v4/contacts/{contact_id}"}}}],
                            "leads": [{"id": lead_id, "_links": {"self": {
                                "href": f"/api/v4/leads/{lead_id}"}}}],
                            "companies": []}})
        return json_reply(200, {"_total_items": len(out), "_embedded": {"unsorted": out}}, HAL)

    def _notes(self, plural: str, entity_id: int, req: Request) -> Reply:
        types = req.query.get("filter[note_type][]") or req.query.get("filter[note_type]") or []
        found = [n for n in self.notes if n["entity_type"] == plural
                 and n["entity_id"] == entity_id and (not types or n["note_type"] in types)]
        if not found:
            return Reply(204)
        return json_reply(200, {"_page": 1, "_embedded": {"notes": found}}, HAL)

    # --- tasks -------------------------------------------------------------------------
    def _add_tasks(self, req: Request) -> Reply:
        out = []
        for n, item in enumerate(req.json()):
            rid = str(item.get("request_id", n))
            for name in ("text", "complete_till", "responsible_user_id"):
                if not item.get(name):
                    return _validation(rid, name, "This field is missing.")
            if item.get("entity_type") not in (None, "leads", "contacts", "companies", "customers"):
                return _validation(rid, "entity_type", NOT_A_CHOICE)
            task = {**item, "id": next(self.ids), "is_completed": False, "result": {}}
            self.tasks[task["id"]] = task
            out.append({"id": task["id"], "request_id": rid,
                        "_links": {"self": {"href": f"/api/v4/tasks/{task['id']}"}}})
        return json_reply(200, {"_links": {"self": {"href": "/api/v4/tasks"}},
                                "_embedded": {"tasks": out}}, HAL)

    def _patch_task(self, req: Request, raw_id: str) -> Reply:
        task = self.tasks.get(int(raw_id)) if raw_id.isdigit() else None
        if task is None:
            return _problem(404, "Task not found")
        task.update(req.json())
        return json_reply(200, {"id": task["id"], "updated_at": int(time.time())}, HAL)

    def _events(self, req: Request) -> Reply:
        for item in (req.json() or {}).get("add", []):
            if item.get("type") != "phone_call":
                return _validation("0", "type", "The value you selected is not a valid choice.")
            self.notifications.append({**item, "at": time.time()})
        return json_reply(202, {})
